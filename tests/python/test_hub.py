"""Hub downloads from Python: ``from_pretrained("org/name")`` on a loopback stand-in for the Hub
(``http.server`` on 127.0.0.1, weights redirected to a second server on ``localhost``), with
``HF_ENDPOINT`` / ``HF_HUB_CACHE`` set per test. No test reaches a real network address."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import candle_unet2d
from candle_unet2d import (
    DDPMScheduler,
    DiffusionPipeline,
    DownloadError,
    InvalidArgumentError,
    ModelNotFoundError,
    SchedulerMixin,
    UNet2DModel,
)

from conftest import DIGITS16, UNET2D_FIXTURES

COMMIT = "1" * 40
TOKEN = "hf_secret"


def folder_files(root: Path) -> dict[str, bytes]:
    """The files under ``root`` as repository paths (``unet/config.json``)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass
class FakeHub:
    """The repositories served (id → path → bytes), the private ones, and the requests seen."""

    repos: dict[str, dict[str, bytes]]
    private: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)
    endpoint: str = ""
    cdn: str = ""

    def downloaded(self) -> list[str]:
        """Repository paths whose bytes were fetched (from ``resolve/`` or the CDN)."""
        out = set()
        for r in self.requests:
            method, path = r.split(" ", 1)
            if method != "GET":
                continue
            if "/resolve/" in path:
                out.add(path.split("/resolve/", 1)[1].split("/", 1)[1])
            elif path.startswith("/cdn/"):
                out.add(path.split("/", 3)[3])
        return sorted(out)


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

        def _send(self, status: int, headers: dict[str, str], body: bytes, head: bool) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _error(self, status: int, code: str, head: bool) -> None:
            self._send(status, {"X-Error-Code": code}, b"{}", head)

        def _answer(self, head: bool) -> None:
            hub.requests.append(f"{self.command} {self.path}")
            path = self.path.split("?")[0]
            if path.startswith("/cdn/"):
                sha = path.split("/")[2]
                for files in hub.repos.values():
                    for data in files.values():
                        if hashlib.sha256(data).hexdigest() == sha:
                            self._send(200, {}, data, head)
                            return
                self._send(404, {}, b"", head)
                return
            api = path.startswith("/api/models/")
            rest = path.removeprefix("/api/models/") if api else path.lstrip("/")
            sep = "/revision/" if api else "/resolve/"
            if sep not in rest:
                self._send(404, {}, b"", head)
                return
            repo_id, tail = rest.split(sep, 1)
            files = hub.repos.get(repo_id)
            authorized = self.headers.get("Authorization") == f"Bearer {TOKEN}"
            if files is None or (repo_id in hub.private and not authorized):
                self._error(401, "RepoNotFound", head)
                return
            revision, _, file = tail.partition("/")
            if revision not in ("main", COMMIT):
                self._error(404, "RevisionNotFound", head)
                return
            if api:
                info = {"id": repo_id, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]}
                self._send(200, {"Content-Type": "application/json"}, json.dumps(info).encode(), head)
                return
            data = files.get(file)
            if data is None:
                self._error(404, "EntryNotFound", head)
                return
            sha = hashlib.sha256(data).hexdigest()
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{sha[:40]}"'}
            if file.endswith((".safetensors", ".bin")):
                headers |= {
                    "Location": f"{hub.cdn}/cdn/{sha}/{file}",
                    "X-Linked-Etag": f'"{sha}"',
                    "X-Linked-Size": str(len(data)),
                }
                self._send(302, headers, b"", head)
            else:
                self._send(200, headers, data, head)

    return Handler


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """The fake Hub, serving ``org/ddpm`` (a UNet folder), ``org/digits`` (a pipeline) and
    ``org/private`` (needs ``TOKEN``), with ``HF_ENDPOINT``, ``HF_HUB_CACHE`` and ``HF_HOME`` set."""
    ddpm = folder_files(UNET2D_FIXTURES / "ddpm_default_blocks")
    state = FakeHub(repos={"org/ddpm": ddpm, "org/digits": folder_files(DIGITS16), "org/private": ddpm})
    state.private.add("org/private")
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _handler(state)) for _ in range(2)]
    state.endpoint = f"http://127.0.0.1:{servers[0].server_address[1]}"
    state.cdn = f"http://localhost:{servers[1].server_address[1]}"
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    monkeypatch.setenv("HF_ENDPOINT", state.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    for name in ("HF_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    yield state
    for s in servers:
        s.shutdown()
        s.server_close()


def _out(model: UNet2DModel) -> np.ndarray:
    x = np.ones((1, model.config.in_channels, 16, 16), dtype=np.float32)
    # Class-conditional models (the digits pipeline) get class 3.
    labels = np.array([3]) if model.config.get("num_class_embeds") else None
    return np.asarray(model(x, 10, class_labels=labels).sample)


def test_model_downloads_and_matches_the_local_folder(hub: FakeHub, tmp_path: Path) -> None:
    model = UNet2DModel.from_pretrained("org/ddpm")
    local = UNet2DModel.from_pretrained(UNET2D_FIXTURES / "ddpm_default_blocks")
    np.testing.assert_array_equal(_out(model), _out(local))
    assert hub.downloaded() == ["config.json", "diffusion_pytorch_model.safetensors"]
    snapshot = tmp_path / "cache" / "models--org--ddpm" / "snapshots" / COMMIT
    assert (snapshot / "config.json").is_file()
    assert (tmp_path / "cache" / "models--org--ddpm" / "refs" / "main").read_text() == COMMIT
    # Cached: offline it loads with no request.
    hub.requests.clear()
    UNet2DModel.from_pretrained("org/ddpm", local_files_only=True)
    assert hub.requests == []


def test_the_diffusers_keywords(hub: FakeHub, tmp_path: Path) -> None:
    cache = tmp_path / "elsewhere"
    model, info = UNet2DModel.from_pretrained(
        "org/ddpm",
        revision=COMMIT,
        cache_dir=cache,
        force_download=True,
        token=False,
        use_safetensors=True,
        torch_dtype="float32",
        low_cpu_mem_usage=False,
        device_map="cpu",
        proxies=None,
        resume_download=True,
        output_loading_info=True,
    )
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    assert model.dtype == "float32"
    assert (cache / "models--org--ddpm" / "snapshots" / COMMIT / "config.json").is_file()
    with pytest.raises(InvalidArgumentError, match="device_map"):
        UNet2DModel.from_pretrained("org/ddpm", device_map="auto")
    with pytest.raises(InvalidArgumentError, match="mirror"):
        UNet2DModel.from_pretrained("org/ddpm", mirror="x")
    with pytest.raises(InvalidArgumentError, match="token"):
        UNet2DModel.from_pretrained("org/ddpm", token=3)
    with pytest.raises(ModelNotFoundError, match="revision"):
        UNet2DModel.from_pretrained("org/ddpm", revision="nope")


def test_private_repositories_need_a_token(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelNotFoundError, match="token"):
        UNet2DModel.from_pretrained("org/private")
    UNet2DModel.from_pretrained("org/private", token=TOKEN)
    # token=True is the saved token: HF_TOKEN here.
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    UNet2DModel.from_pretrained("org/private", token=True, force_download=True)
    with pytest.raises(ModelNotFoundError):
        UNet2DModel.from_pretrained("org/private", token=False, force_download=True)


def test_offline_errors_say_what_is_cached(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelNotFoundError, match="has nothing for this repository"):
        UNet2DModel.from_pretrained("org/ddpm", local_files_only=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        DiffusionPipeline.from_pretrained("org/digits")
    assert hub.requests == []


class _WebPage(BaseHTTPRequestHandler):
    """A web server that is not a Hub: every path is a small HTML page."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_server_that_is_not_a_hub(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WebPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(DownloadError, match="did not answer as a Hugging Face Hub"):
            UNet2DModel.from_pretrained("org/ddpm")
    finally:
        server.shutdown()
        server.server_close()
    assert issubclass(DownloadError, OSError)
    assert candle_unet2d.DownloadError is DownloadError


def test_pipeline_downloads_unet_and_scheduler(hub: FakeHub) -> None:
    pipe = DiffusionPipeline.from_pretrained("org/digits", torch_dtype="float32", use_safetensors=True)
    local = DiffusionPipeline.from_pretrained(DIGITS16)
    assert type(pipe) is type(local)
    assert hub.downloaded() == [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    assert dict(pipe.scheduler.config) == dict(local.scheduler.config)
    np.testing.assert_array_equal(_out(pipe.unet), _out(local.unet))
    with pytest.raises(InvalidArgumentError, match="subfolder"):
        DiffusionPipeline.from_pretrained("org/digits", subfolder="unet")


def test_scheduler_downloads_its_config(hub: FakeHub) -> None:
    scheduler = SchedulerMixin.from_pretrained("org/digits", subfolder="scheduler", revision="main")
    assert hub.downloaded() == ["scheduler/scheduler_config.json"]
    local = SchedulerMixin.from_pretrained(DIGITS16, subfolder="scheduler")
    assert type(scheduler) is type(local)
    # Keywords that are not Hub keywords still override config values.
    ddpm = DDPMScheduler.from_pretrained("org/digits", subfolder="scheduler", num_train_timesteps=10, token=False)
    assert ddpm.config["num_train_timesteps"] == 10


class _RecordingBar:
    """Stands in for tqdm: records what the download bars are told."""

    made: ClassVar[list[_RecordingBar]] = []

    def __init__(self, total: int | None = None, initial: int = 0, desc: str = "", **_: Any) -> None:
        self.total, self.n, self.desc, self.closed = total, initial, desc, False
        _RecordingBar.made.append(self)

    def update(self, n: int) -> None:
        self.n += n

    def close(self) -> None:
        self.closed = True


def test_downloads_show_a_tqdm_bar_per_file(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("tqdm.auto")
    module.tqdm = _RecordingBar  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))
    monkeypatch.setitem(sys.modules, "tqdm.auto", module)
    _RecordingBar.made.clear()
    UNet2DModel.from_pretrained("org/ddpm")
    weights = (UNET2D_FIXTURES / "ddpm_default_blocks" / "diffusion_pytorch_model.safetensors").stat().st_size
    bars = {bar.desc: bar for bar in _RecordingBar.made}
    assert set(bars) == {"config.json", "diffusion_pytorch_model.safetensors"}
    bar = bars["diffusion_pytorch_model.safetensors"]
    assert (bar.total, bar.n, bar.closed) == (weights, weights, True)
    # HF_HUB_DISABLE_PROGRESS_BARS turns them off, as in huggingface_hub.
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    _RecordingBar.made.clear()
    UNet2DModel.from_pretrained("org/ddpm", force_download=True)
    assert _RecordingBar.made == []


def test_a_local_load_does_not_import_tqdm(tmp_path: Path) -> None:
    # Importing tqdm took 40-50 ms, more than the whole load: only a download may import it. A fake
    # tqdm on the path records being imported.
    fake = tmp_path / "tqdm"
    fake.mkdir()
    marker = tmp_path / "imported"
    (fake / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (fake / "auto.py").write_text("tqdm = object\n")
    code = "import sys; from candle_unet2d import UNet2DModel; UNet2DModel.from_pretrained(sys.argv[1])"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code, str(DIGITS16 / "unet")], env=env, check=True, timeout=120)
    assert not marker.exists(), "a local from_pretrained imported tqdm"
    # The fake is importable, so the check above could have seen it.
    subprocess.run([sys.executable, "-c", "import tqdm.auto"], env=env, check=True, timeout=60)
    assert marker.exists()
