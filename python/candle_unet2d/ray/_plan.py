"""What a sampling job is, checked on the driver before anything reaches the cluster: the model, the
scheduler as plain data, the class label of every image, and a key that names the run's outputs."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._core import DiffusionPipeline, SchedulerMixin
from .._errors import InvalidArgumentError
from .._pipelines import UNet2DPipeline

# Generators take seeds as unsigned 64-bit integers, as torch's do.
_SEED_LIMIT = 1 << 64


@dataclass(frozen=True)
class Plan:
    """One job: image ``i`` uses ``Generator().manual_seed(seed + i)`` and ``labels.label(i)``."""

    model: str
    num_images: int
    seed: int
    labels: Labels
    scheduler_class: str
    scheduler_config: dict[str, Any]
    num_inference_steps: int | None
    batch_size: int

    def run_key(self) -> str:
        """What an image depends on besides its index, hashed: files written under another key are
        not this run's and are recomputed on resume."""
        identity = {
            "model": self.model,
            "model_files": _model_fingerprint(self.model),
            "scheduler_class": self.scheduler_class,
            "scheduler_config": {k: v for k, v in self.scheduler_config.items() if not k.startswith("_")},
            "num_inference_steps": self.num_inference_steps,
            "seed": self.seed,
            "labels": self.labels.describe(),
        }
        text = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def image_meta(self, index: int, run_key: str) -> dict[str, Any]:
        """What image ``index`` is: the identity its PNG carries and a resumed run checks."""
        labels = self.labels.of([index])
        label = None if labels is None else labels[0]
        return {"index": index, "seed": self.seed + index, "class_label": label, "run": run_key}


@dataclass(frozen=True)
class Labels:
    """The class label of each image: none, one for all, one per image, or ``index % classes``."""

    mode: str  # "none", "constant", "list", "modulo"
    value: int = 0
    values: tuple[int, ...] = ()

    def of(self, indices: Sequence[int] | np.ndarray) -> list[int] | None:
        if self.mode == "none":
            return None
        if self.mode == "constant":
            return [self.value] * len(indices)
        if self.mode == "modulo":
            return [int(i) % self.value for i in indices]
        return [self.values[int(i)] for i in indices]

    def describe(self) -> Any:
        return {"mode": self.mode, "value": self.value, "values_sha": _sha(self.values)}


def _sha(values: Sequence[int]) -> str:
    return hashlib.sha256(np.asarray(values, dtype=np.int64).tobytes()).hexdigest()[:16]


def _model_fingerprint(model: str) -> Any:
    """The model folder's files by name, size and modification time (a Hub id: just the id), so
    that replacing the weights invalidates earlier outputs."""
    if not os.path.isdir(model):
        return model
    entries = []
    for root, _dirs, files in os.walk(model):
        for name in sorted(files):
            path = os.path.join(root, name)
            stat = os.stat(path)
            entries.append((os.path.relpath(path, model), stat.st_size, stat.st_mtime_ns))
    return sorted(entries)


def _positive_int(value: Any, name: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise InvalidArgumentError(f"{name}: must be an int ≥ 1, got {value!r}")
    return int(value)


def make_plan(
    model: str | os.PathLike[str],
    num_images: Any,
    *,
    seed: Any,
    class_labels: Any,
    scheduler: Any,
    num_inference_steps: Any,
    batch_size: Any,
) -> tuple[Plan, DiffusionPipeline]:
    """Checks every argument and loads the pipeline once on the driver (memory-mapped weights: cheap),
    so a bad argument or model is a named error here, not a failed job on the cluster."""
    count = _positive_int(num_images, "num_images")
    assert count is not None
    batch = _positive_int(batch_size, "batch_size")
    assert batch is not None
    steps = _positive_int(num_inference_steps, "num_inference_steps", allow_none=True)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidArgumentError(f"seed: must be an int ≥ 0, got {seed!r}")
    if int(seed) + count > _SEED_LIMIT:
        raise InvalidArgumentError(f"seed: {seed} + num_images {count} passes the largest seed, 2**64 - 1")
    model_path = os.fspath(model)
    pipe = UNet2DPipeline.from_pretrained(model_path)
    scheduler_class, scheduler_config = _scheduler(scheduler, pipe)
    labels = _labels(class_labels, count, pipe.unet.config)
    plan = Plan(
        model=os.path.abspath(model_path) if os.path.isdir(model_path) else model_path,
        num_images=count,
        seed=int(seed),
        labels=labels,
        scheduler_class=scheduler_class,
        scheduler_config=scheduler_config,
        num_inference_steps=steps,
        batch_size=batch,
    )
    return plan, pipe


def _scheduler(scheduler: Any, pipe: DiffusionPipeline) -> tuple[str, dict[str, Any]]:
    """The scheduler as (class name, config), which every worker rebuilds with ``from_config``."""

    if scheduler is None:
        current = pipe.scheduler
        return type(current).__name__, dict(current.config)
    if isinstance(scheduler, SchedulerMixin):
        return type(scheduler).__name__, dict(scheduler.config)
    if isinstance(scheduler, str):
        # As diffusers' swap: the new class from the model's own scheduler config.
        built = _scheduler_class(scheduler).from_config(pipe.scheduler.config)
        return scheduler, dict(built.config)
    if isinstance(scheduler, dict) or hasattr(scheduler, "keys"):
        config = dict(scheduler)
        name = config.get("_class_name")
        if not isinstance(name, str):
            raise InvalidArgumentError("scheduler: a config dict must name its class in '_class_name'")
        _scheduler_class(name)
        return name, config
    raise InvalidArgumentError(
        f"scheduler: must be None, a scheduler class name, a scheduler or its config, got {type(scheduler).__name__}"
    )


def _scheduler_class(name: str) -> type[SchedulerMixin]:
    """The package's scheduler class called ``name``."""
    import candle_unet2d

    cls = getattr(candle_unet2d, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        known = ", ".join(sorted(candle_unet2d._schedulers.__all__))
        raise InvalidArgumentError(f"scheduler: {name!r} is not a scheduler class; one of {known}")
    return cls


def _labels(class_labels: Any, count: int, config: Any) -> Labels:
    classes = config.get("num_class_embeds")
    conditional = classes is not None or config.get("class_embed_type") is not None
    if class_labels is None:
        if classes is not None:
            return Labels("modulo", value=int(classes))
        if conditional:
            raise InvalidArgumentError(
                f"class_labels: the model is class-conditional (class_embed_type={config.get('class_embed_type')!r}); "
                "give an int or one per image"
            )
        return Labels("none")
    if not conditional:
        raise InvalidArgumentError("class_labels: the model is not class-conditional; pass None")

    def check(label: Any, where: str) -> int:
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise InvalidArgumentError(f"class_labels{where}: must be an int, got {label!r}")
        if classes is not None and not 0 <= int(label) < int(classes):
            raise InvalidArgumentError(
                f"class_labels{where}: {label} is not a class of this model (0 … {int(classes) - 1})"
            )
        return int(label)

    if isinstance(class_labels, (int, np.integer)) and not isinstance(class_labels, bool):
        return Labels("constant", value=check(class_labels, ""))
    if isinstance(class_labels, (str, bytes)) or not hasattr(class_labels, "__len__"):
        raise InvalidArgumentError(f"class_labels: must be None, an int or a list of ints, got {class_labels!r}")
    values = list(class_labels)
    if len(values) != count:
        raise InvalidArgumentError(f"class_labels: {len(values)} labels for num_images={count}; give one per image")
    return Labels("list", values=tuple(check(v, f"[{i}]") for i, v in enumerate(values)))
