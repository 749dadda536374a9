"""``unet2d serve`` (the installed console script) against the Python pipelines: every served image is
what ``UNet2DPipeline``/``DDPMPipeline`` give for ``batch_size=1``, ``class_labels=[label_i]`` and
``generator=[Generator().manual_seed(seed + i)]``, whatever the server batched it with."""

from __future__ import annotations

import base64
import io
import json
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from candle_unet2d import DDIMScheduler, DDPMPipeline, Generator, UNet2DPipeline

from conftest import DIGITS16

STEPS = 5


def unet2d_script() -> str:
    beside = Path(sys.executable).parent / ("unet2d.exe" if sys.platform == "win32" else "unet2d")
    found = str(beside) if beside.exists() else shutil.which("unet2d")
    assert found, "the package did not install the unet2d console script"
    return found


# The server is on loopback: never through an HTTP(S)_PROXY the environment may set.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Server:
    """A ``unet2d serve`` on a free loopback port."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [unet2d_script(), "serve", "--host", "127.0.0.1", "--port", "0", "--log", "warn", *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        stdout = self.process.stdout
        assert stdout is not None
        lines: list[str] = []
        # A thread, so that the wait for the address line has a timeout.
        reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=60)
        assert lines, "the server printed no address line within 60 s"
        assert lines[0].startswith("listening on http://"), f"unexpected first line: {lines[0]!r}"
        self.url = lines[0].strip().removeprefix("listening on ")

    def post(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"{self.url}/v1/images", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with _DIRECT.open(request, timeout=120) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = Server("--max-batch", "16", "--batch-wait", "200ms")
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(timeout=30)


def expected(pipe: Any, seed: int, label: int, steps: int) -> np.ndarray:
    """The pipeline's batch of one, ``output_type="np"``: float NHWC in [0, 1]."""
    out = pipe(
        batch_size=1,
        class_labels=[label],
        num_inference_steps=steps,
        generator=[Generator().manual_seed(seed)],
        output_type="np",
    )
    return np.asarray(out.images)[0]


def to_uint8(images: np.ndarray) -> np.ndarray:
    return np.round(images * 255).clip(0, 255).astype(np.uint8)


def test_concurrent_requests_equal_the_python_pipeline(server: Server) -> None:
    pipe = DDPMPipeline.from_pretrained(str(DIGITS16))
    ddim = UNet2DPipeline(pipe.unet, DDIMScheduler.from_config(pipe.scheduler.config))
    bodies = [
        {
            "num_images": 1 + i % 2,
            "seed": 500 + 7 * i,
            "class_labels": [(i + j) % 10 for j in range(1 + i % 2)],
            "scheduler": "ddim",
            "num_inference_steps": STEPS,
            "format": "npy" if i % 4 == 0 else "png",
        }
        for i in range(8)
    ]
    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(server.post, bodies))
    for body, (status, answer) in zip(bodies, replies):
        assert status == 200, answer
        for i, image in enumerate(answer["images"]):
            seed, label = body["seed"] + i, body["class_labels"][i]
            assert (image["index"], image["seed"], image["class_label"]) == (i, seed, label)
            want = expected(ddim, seed, label, STEPS)
            data = base64.b64decode(image["data"])
            if body["format"] == "npy":
                got = np.load(io.BytesIO(data))
                assert got.shape == want.shape == (16, 16, 1)
                np.testing.assert_array_equal(got, want)  # batch-invariant kernels: bit for bit
            else:
                got_png = np.asarray(Image.open(io.BytesIO(data)))
                np.testing.assert_array_equal(got_png, to_uint8(want)[..., 0])


def test_the_model_scheduler_is_ddpmpipeline(server: Server) -> None:
    pipe = DDPMPipeline.from_pretrained(str(DIGITS16))
    status, answer = server.post({"seed": 3, "class_labels": 6, "num_inference_steps": 4})
    assert status == 200, answer
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["images"][0]["data"]))))
    np.testing.assert_array_equal(got, to_uint8(expected(pipe, 3, 6, 4))[..., 0])


def test_errors_are_json_and_sigterm_exits_0() -> None:
    running = Server()
    try:
        status, answer = running.post({"scheduler": "nope"})
        assert status == 400
        assert answer["error"]["code"] == "invalid_scheduler"
        assert "ddim" in answer["error"]["message"]
        status, answer = running.post({"class_labels": 11})
        assert (status, answer["error"]["code"]) == (400, "invalid_class_labels")
    finally:
        assert running.stop() == 0
