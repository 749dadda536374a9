"""Sampling many images across a Ray cluster with Ray Data (``pip install 'candle-unet2d[ray]'``).

>>> from candle_unet2d.ray import sample_images
>>> ds = sample_images("path/to/pipeline", 50_000, seed=0, output_dir="fid-samples")  # doctest: +SKIP

Image ``i`` is exactly ``UNet2DPipeline.from_pretrained(model)(batch_size=1, class_labels=[label_i],
num_inference_steps=N, generator=[Generator().manual_seed(seed + i)], output_type="np")`` converted to
uint8 as the ``"pil"`` output is, whatever the number of workers, the batch size or the order in which
batches run: each image has its own generator, and the library computes an image of a batch as it
computes a batch of one (``candle_unet2d.batch_invariant`` in Rust), on any thread count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import InvalidArgumentError, UNet2DError
from ._output import image_path, read_manifest, read_png, verify, write_manifest
from ._plan import Plan, make_plan
from ._worker import ImageSampler

if TYPE_CHECKING:
    import ray.data

__all__ = ["sample_images"]

# Blocks of indices at most: past this a block holds several batches (Ray's per-block overhead stays
# small next to sampling them).
_MAX_BLOCKS = 4096


def sample_images(
    model: str | os.PathLike[str],
    num_images: int,
    *,
    seed: int = 0,
    class_labels: int | list[int] | None = None,
    scheduler: Any = None,
    num_inference_steps: int | None = None,
    batch_size: int = 16,
    concurrency: int | None = None,
    num_cpus_per_worker: float | None = None,
    num_gpus_per_worker: float | None = None,
    output_dir: str | os.PathLike[str] | None = None,
) -> ray.data.Dataset:
    """Samples ``num_images`` images with Ray Data; rows ``{"index", "seed", "class_label", "image"}``
    (``image`` uint8 HWC).

    Args:
        model: a pipeline folder, a bare UNet folder or a Hub id, readable on every worker.
        num_images: how many images (≥ 1).
        seed: image ``i`` uses the generator seeded ``seed + i``.
        class_labels: for a class-conditional model, ``None`` (image ``i`` gets ``i % num_class_embeds``),
            one int for every image, or one per image.
        scheduler: ``None`` (the model's), a scheduler class name (built from the model's scheduler
            config, as diffusers' ``from_config`` swap), a scheduler, or a scheduler config dict.
        num_inference_steps: the steps (``None``: the scheduler's usual count).
        batch_size: images per batch on a worker.
        concurrency: the number of workers (Ray Data actors); default: as many as the cluster's CPUs
            allow at ``num_cpus_per_worker`` each.
        num_cpus_per_worker: CPUs Ray reserves per worker (default 1), also its compute threads.
        num_gpus_per_worker: GPUs Ray reserves per worker (default none); with one, the worker samples
            on ``"cuda"`` (the GPU Ray gives it), which needs the CUDA build of the wheel. Images are
            then what that GPU computes, not the CPU's bit for bit.
        output_dir: writes ``images/{index:06d}.png`` and ``manifest.parquet`` there and returns the
            dataset of the whole folder; a second run keeps the images that verify and computes the rest.

    Without ``output_dir`` the dataset is lazy: the sampling runs when it is consumed
    (``take_all``, ``iter_batches``, ``write_parquet``…), and a worker's error then reaches the caller
    as Ray's ``RayTaskError`` that is also an instance of the library's error class. With it, the
    sampling runs in this call and a worker's error is raised as itself.

    Raises:
        InvalidArgumentError: a bad argument (named), before anything is sent to the cluster.
        ModelNotFoundError, ConfigError, WeightsError: the model does not load (on the driver, or on a
            worker: the worker's error is raised here).
    """
    return _run(
        model,
        num_images,
        seed=seed,
        class_labels=class_labels,
        scheduler=scheduler,
        num_inference_steps=num_inference_steps,
        batch_size=batch_size,
        concurrency=concurrency,
        num_cpus_per_worker=num_cpus_per_worker,
        num_gpus_per_worker=num_gpus_per_worker,
        output_dir=output_dir,
    )[0]


@dataclass(frozen=True)
class RunSummary:
    """What a run into an output folder did, for the command's last line."""

    computed: int
    kept: int
    workers: int


def _run(
    model: str | os.PathLike[str],
    num_images: int,
    *,
    seed: int,
    class_labels: int | list[int] | None,
    scheduler: Any,
    num_inference_steps: int | None,
    batch_size: int,
    concurrency: int | None,
    num_cpus_per_worker: float | None,
    output_dir: str | os.PathLike[str] | None,
    num_gpus_per_worker: float | None = None,
) -> tuple[ray.data.Dataset, RunSummary]:
    """``sample_images``, also saying what it did."""
    import ray

    plan, _pipe = make_plan(
        model,
        num_images,
        seed=seed,
        class_labels=class_labels,
        scheduler=scheduler,
        num_inference_steps=num_inference_steps,
        batch_size=batch_size,
    )
    del _pipe  # checked; the workers load their own
    if num_cpus_per_worker is not None and (
        isinstance(num_cpus_per_worker, bool)
        or not isinstance(num_cpus_per_worker, (int, float))
        or not num_cpus_per_worker > 0
    ):
        raise InvalidArgumentError(f"num_cpus_per_worker: must be a number > 0, got {num_cpus_per_worker!r}")
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise InvalidArgumentError(f"concurrency: must be an int ≥ 1, got {concurrency!r}")
    if num_gpus_per_worker is not None and (
        isinstance(num_gpus_per_worker, bool)
        or not isinstance(num_gpus_per_worker, (int, float))
        or not num_gpus_per_worker >= 0
    ):
        raise InvalidArgumentError(f"num_gpus_per_worker: must be a number ≥ 0, got {num_gpus_per_worker!r}")
    if not ray.is_initialized():
        ray.init()
    cpus = float(num_cpus_per_worker or 1)
    cluster_cpus = float(ray.cluster_resources().get("CPU", 1))  # type: ignore[no-untyped-call]
    workers = concurrency or max(1, int(cluster_cpus // cpus))
    threads = max(1, int(cpus))
    gpus = float(num_gpus_per_worker or 0)
    run_key = plan.run_key()

    if output_dir is None:
        dataset = _sample(_indices(range(plan.num_images), plan), plan, workers, (cpus, gpus), threads, None, run_key)
        return dataset, RunSummary(computed=plan.num_images, kept=0, workers=workers)

    out = os.path.abspath(os.fspath(output_dir))
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    kept = _verified(out, plan, run_key)
    todo = [i for i in range(plan.num_images) if i not in kept]
    if todo:
        pending = _indices(todo, plan)
        new_rows = _collect(_sample(pending, plan, workers, (cpus, gpus), threads, out, run_key))
    else:
        new_rows = []
    rows = list(kept.values()) + new_rows
    write_manifest(out, rows, run_key)
    return _read_folder(out, rows), RunSummary(computed=len(new_rows), kept=len(kept), workers=workers)


def _indices(indices: Any, plan: Plan) -> ray.data.Dataset:
    """The image indices as an in-memory dataset (no read tasks, which would wait for the CPUs the
    workers hold), one block per batch so that every worker gets work."""
    import ray.data

    items = [{"id": int(i)} for i in indices]
    blocks = max(1, min(-(-len(items) // plan.batch_size), _MAX_BLOCKS))
    return ray.data.from_items(items, override_num_blocks=blocks)


def _sample(
    source: ray.data.Dataset,
    plan: Plan,
    workers: int,
    resources: tuple[float, float],
    threads: int,
    out: str | None,
    run_key: str,
) -> ray.data.Dataset:
    """``source``'s indices sampled by ``workers`` actors holding ``resources`` (CPUs, GPUs) each."""
    import ray.data

    dataset = source.map_batches(
        ImageSampler,
        fn_constructor_args=(plan, threads, out, run_key, "cuda" if resources[1] > 0 else "cpu"),
        batch_size=plan.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=resources[0],
        num_gpus=resources[1] or None,
        # The compute threads read this when they start; the same value for every worker process.
        runtime_env={"env_vars": {"RAYON_NUM_THREADS": str(threads)}},
    )
    # A worker's error reaches the caller as the library's exception (Ray's wrapper is also an instance
    # of it), not as Ray Data's generic UserCodeException; set on this dataset only.
    dataset.context.raise_original_map_exception = True
    return dataset


def _collect(dataset: ray.data.Dataset) -> list[dict[str, Any]]:
    """Runs the job; a worker's library error is raised as itself, not as Ray's wrapper."""
    try:
        rows = dataset.take_all()
    except Exception as error:
        # Ray's RayTaskError keeps the worker's exception as `cause`: raise that, not the wrapper.
        cause = getattr(error, "cause", None)
        if isinstance(cause, UNet2DError):
            raise cause from error
        raise
    return [
        {
            "index": int(r["index"]),
            "seed": int(r["seed"]),
            "class_label": None if r["class_label"] is None else int(r["class_label"]),
            "file": str(r["file"]),
            "sha256": str(r["sha256"]),
        }
        for r in rows
    ]


def _verified(out: str, plan: Plan, run_key: str) -> dict[int, dict[str, Any]]:
    """The images already in ``out`` that are this run's and whole, as manifest rows."""
    manifest = read_manifest(out)
    kept: dict[int, dict[str, Any]] = {}
    for index in range(plan.num_images):
        path = image_path(out, index)
        if not os.path.exists(path):
            continue
        expected = plan.image_meta(index, run_key)
        listed = manifest.get(index)
        digest = verify(path, expected, listed["sha256"] if listed else None)
        if digest is not None:
            row = {k: expected[k] for k in ("index", "seed", "class_label")}
            kept[index] = {**row, "file": os.path.relpath(path, out), "sha256": digest}
    return kept


def _read_folder(out: str, rows: list[dict[str, Any]]) -> ray.data.Dataset:
    """The folder's images as the dataset ``sample_images`` returns, read lazily from the PNGs."""
    import numpy as np
    import ray.data

    rows = sorted(rows, key=lambda r: r["index"])
    items = [{"index": r["index"], "seed": r["seed"], "class_label": r["class_label"], "file": r["file"]} for r in rows]

    def load(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = np.stack([read_png(os.path.join(out, str(f))) for f in batch["file"]])
        return {
            "index": batch["index"],
            "seed": batch["seed"],
            "class_label": batch["class_label"],
            "image": images,
        }

    return ray.data.from_items(items).map_batches(load, batch_format="numpy")
