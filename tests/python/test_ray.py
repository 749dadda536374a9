"""``candle_unet2d.ray``: sampling on a local Ray cluster (``ray.init(num_cpus=2)``, once for the module).

Image ``i`` must be the single-process pipeline's batch of one, bit for bit, whatever the workers and
the batch size; an output folder resumes; bad input is a named error on the driver."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from candle_unet2d import (
    DDIMScheduler,
    Generator,
    InvalidArgumentError,
    ModelNotFoundError,
    UNet2DPipeline,
)

from conftest import DIGITS16

ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")

STEPS = 4
SEED = 1234


@pytest.fixture(scope="module", autouse=True)
def local_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield
    ray.shutdown()


def reference(index: int, label: int) -> np.ndarray:
    """The spec's reference: a batch of one in this process, ``"np"`` output made uint8 as ``"pil"`` is."""
    pipe = UNet2DPipeline.from_pretrained(DIGITS16)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        batch_size=1,
        class_labels=[label],
        num_inference_steps=STEPS,
        generator=[Generator().manual_seed(SEED + index)],
        output_type="np",
    )
    return np.asarray((np.asarray(out.images)[0] * 255).round().astype(np.uint8))


def run(**kwargs: Any) -> list[dict[str, Any]]:
    from candle_unet2d.ray import sample_images

    args: dict[str, Any] = {"seed": SEED, "scheduler": "DDIMScheduler", "num_inference_steps": STEPS}
    args.update(kwargs)
    rows = sample_images(DIGITS16, **args).take_all()
    return sorted(rows, key=lambda r: r["index"])


def test_images_do_not_depend_on_workers_or_batch_size() -> None:
    one = run(num_images=10, batch_size=8, concurrency=1, num_cpus_per_worker=2)
    two = run(num_images=10, batch_size=5, concurrency=2, num_cpus_per_worker=1)
    assert [r["index"] for r in one] == list(range(10))
    assert [r["index"] for r in two] == list(range(10))
    for a, b in zip(one, two):
        assert a["seed"] == b["seed"] == SEED + a["index"]
        assert a["class_label"] == b["class_label"] == a["index"] % 10
        assert a["image"].dtype == np.uint8
        assert a["image"].shape == (16, 16, 1)
        assert np.array_equal(a["image"], b["image"]), f"image {a['index']} differs between the runs"
    for row in one:
        assert np.array_equal(row["image"], reference(row["index"], row["class_label"])), row["index"]


def test_output_folder_resumes(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "samples"
    first = run(num_images=7, batch_size=3, concurrency=2, output_dir=out, class_labels=4)
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [m["index"] for m in manifest] == list(range(7))
    hashes = {m["index"]: m["sha256"] for m in manifest}
    assert all(m["class_label"] == 4 for m in manifest)
    for row in first:
        assert np.array_equal(row["image"], reference(row["index"], 4))

    # An interrupted run: images lost, one truncated, the manifest gone.
    (out / "images" / "000002.png").unlink()
    (out / "images" / "000005.png").unlink()
    data = (out / "images" / "000003.png").read_bytes()
    (out / "images" / "000003.png").write_bytes(data[: len(data) // 2])
    (out / "manifest.parquet").unlink()
    stamp = {i: os.stat(out / "images" / f"{i:06d}.png").st_mtime_ns for i in (0, 1, 4, 6)}

    second = run(num_images=7, batch_size=3, concurrency=2, output_dir=out, class_labels=4)
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [m["index"] for m in manifest] == list(range(7)), "every index exactly once"
    assert {m["index"]: m["sha256"] for m in manifest} == hashes
    for i, ns in stamp.items():
        assert os.stat(out / "images" / f"{i:06d}.png").st_mtime_ns == ns, f"image {i} was recomputed"
    for a, b in zip(first, second):
        assert np.array_equal(a["image"], b["image"])

    # Another run's files (another seed) are not kept.
    third = run(num_images=7, batch_size=3, concurrency=2, output_dir=out, class_labels=4, seed=SEED + 1)
    assert np.array_equal(third[0]["image"], first[1]["image"]), "seed + 1's image 0 is seed's image 1"
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [m["index"] for m in manifest] == list(range(7))
    # Every file was rewritten: each carries its run's seed.
    assert not {m["sha256"] for m in manifest} & set(hashes.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_images": 0}, "num_images"),
        ({"num_images": -3}, "num_images"),
        ({"num_images": 4, "class_labels": [1, 2]}, "one per image"),
        ({"num_images": 2, "class_labels": [1, 10]}, "not a class"),
        ({"num_images": 2, "class_labels": 12}, "not a class"),
        ({"num_images": 2, "batch_size": 0}, "batch_size"),
        ({"num_images": 2, "scheduler": "NoSuchScheduler"}, "not a scheduler"),
        ({"num_images": 2, "seed": -1}, "seed"),
        ({"num_images": 2, "concurrency": 0}, "concurrency"),
        ({"num_images": 2, "num_cpus_per_worker": 0}, "num_cpus_per_worker"),
        ({"num_images": 2, "num_gpus_per_worker": -1}, "num_gpus_per_worker"),
    ],
)
def test_bad_input_is_a_named_error(kwargs: dict[str, Any], message: str) -> None:
    from candle_unet2d.ray import sample_images

    with pytest.raises(InvalidArgumentError, match=message):
        sample_images(DIGITS16, **kwargs)


def test_a_model_that_does_not_load_on_the_workers(tmp_path: Path) -> None:
    from candle_unet2d.ray import sample_images

    with pytest.raises(ModelNotFoundError):
        sample_images(tmp_path / "missing", 2)
    # The driver loads it; by the time the workers do, the weights are gone.
    model = tmp_path / "digits"
    shutil.copytree(DIGITS16, model)
    ds = sample_images(model, 2, num_inference_steps=2, scheduler="DDIMScheduler")
    (model / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    # Consumed by the caller, the lazy dataset fails with the library's error (Ray's wrapper is one).
    with pytest.raises(ModelNotFoundError, match="diffusion_pytorch_model"):
        ds.take_all()
    # Run by sample_images (an output folder), the library's error itself reaches the caller.
    with pytest.raises(ModelNotFoundError, match="diffusion_pytorch_model"):
        sample_images(model, 2, output_dir=tmp_path / "out")


def test_the_command_writes_a_folder_and_a_summary(tmp_path: Path) -> None:
    import subprocess
    import sys

    import pyarrow.parquet as pq

    command = [sys.executable, "-m", "candle_unet2d.ray", "--model", str(DIGITS16), "--address", "auto"]
    args = ["--num-images", "3", "--steps", "2", "--scheduler", "DDIMScheduler", "--out", str(tmp_path / "o")]
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert "3 images in" in last, last
    assert "3 sampled, 0 kept" in last, last
    assert "images/s on" in last, last
    assert [r["index"] for r in pq.read_table(tmp_path / "o" / "manifest.parquet").to_pylist()] == [0, 1, 2]
    again = subprocess.run([*command, *args], capture_output=True, text=True, timeout=300, check=False)
    assert "0 sampled, 3 kept" in again.stdout, again.stdout

    bad = subprocess.run(
        [*command, "--num-images", "0", "--out", str(tmp_path / "b")], capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("error: num_images"), bad.stderr
