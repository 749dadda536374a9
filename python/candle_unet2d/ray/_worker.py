"""The Ray Data actor: loads the pipeline once, then samples batches of image indices."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .._errors import UNet2DError
from ._output import image_path, write_png
from ._plan import Plan


def sample_indices(pipe: Any, plan: Plan, indices: np.ndarray, labels: list[int] | None) -> np.ndarray:
    """Images ``indices`` of the job as uint8 NHWC, one generator per image: image ``i`` is what
    ``pipe(batch_size=1, generator=[Generator().manual_seed(seed + i)], …)`` gives, bit for bit, in
    any batch (the per-image loop runs with batch-invariant kernels)."""
    from .._core import Generator

    generators = [Generator().manual_seed(plan.seed + int(i)) for i in indices]
    output = pipe(
        batch_size=len(indices),
        generator=generators,
        num_inference_steps=plan.num_inference_steps,
        output_type="uint8",
        class_labels=labels,
    )
    return np.asarray(output.images)


class ImageSampler:
    """A callable class for ``Dataset.map_batches``: Ray Data starts ``concurrency`` of them, each
    loading the model once.

    A load error is kept and raised by the first batch: raised from ``__init__`` it would be an actor
    that never starts, which Ray Data may retry; raised from a batch it fails the job with the
    library's own exception."""

    def __init__(
        self, plan: Plan, threads: int | None, output_dir: str | None, run_key: str, device: str = "cpu"
    ) -> None:
        if threads is not None:
            # Read when the compute threads start, at the first computation (not yet in this process).
            os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
        self._plan = plan
        self._output_dir = output_dir
        self._run_key = run_key
        self._error: UNet2DError | None = None
        self._pipe: Any = None
        try:
            import candle_unet2d
            from candle_unet2d import UNet2DPipeline

            pipe = UNet2DPipeline.from_pretrained(plan.model, device=device)
            pipe.scheduler = getattr(candle_unet2d, plan.scheduler_class).from_config(plan.scheduler_config)
            pipe.set_progress_bar_config(disable=True)
            self._pipe = pipe
        except UNet2DError as error:
            self._error = error

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._error is not None:
            raise self._error
        indices = np.asarray(batch["id"], dtype=np.int64)
        labels = self._plan.labels.of(indices)
        images = sample_indices(self._pipe, self._plan, indices, labels)
        rows: dict[str, np.ndarray] = {
            "index": indices,
            "seed": np.asarray([self._plan.seed + int(i) for i in indices], dtype=np.uint64),
            "class_label": np.asarray(labels if labels is not None else [None] * len(indices), dtype=object),
        }
        if self._output_dir is None:
            rows["image"] = images
            return rows
        files: list[str] = []
        hashes: list[str] = []
        for i, image in zip(indices, images):
            path = image_path(self._output_dir, int(i))
            hashes.append(write_png(path, image, self._plan.image_meta(int(i), self._run_key)))
            files.append(os.path.relpath(path, self._output_dir))
        rows["file"] = np.asarray(files, dtype=object)
        rows["sha256"] = np.asarray(hashes, dtype=object)
        return rows
