"""Shared by the Python tests: where the fixtures are, how to load a case, and the tolerance check.

The fixtures are the ones the Rust tests use (``tests/fixtures/unet2d/<case>/``, made by diffusers 0.42.1,
see ``shared/reference/make_fixtures.py``): a model folder as diffusers wrote it, ``expected.safetensors``
(``sample``, ``timestep``, optional ``class_labels``, and diffusers' float64 ``output``) and ``case.json``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
UNET2D_FIXTURES = FIXTURES / "unet2d"

# max|ours − expected| ≤ TOLERANCE · max(1, max|expected|): the project's fixture tolerance.
TOLERANCE = 1e-4


def case_dirs() -> list[Path]:
    """Every ``tests/fixtures/unet2d/<case>`` folder, sorted."""
    return sorted(p for p in UNET2D_FIXTURES.iterdir() if p.is_dir())


@dataclass
class Case:
    """One fixture case: its folder, ``case.json`` and the arrays of ``expected.safetensors``."""

    path: Path
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def variant(self) -> str | None:
        return "fp16" if self.meta["weights_format"] == "fp16" else None

    def timestep(self) -> Any:
        """The timestep exactly as diffusers was called with it (see ``case.json``'s ``timestep_kind``)."""
        t = self.arrays["timestep"]
        kind = self.meta["timestep_kind"]
        if kind == "int":
            return int(t.reshape(-1)[0])
        if kind == "float":
            return float(t.reshape(-1)[0])  # diffusers truncates it to an integer; so must we
        if kind == "tensor0d":
            return np.asarray(t).reshape(())
        if kind == "tensor1d":
            return np.asarray(t).reshape(-1)
        raise AssertionError(f"{self.name}: unknown timestep_kind {kind!r}")


def load_case(path: Path) -> Case:
    meta = json.loads((path / "case.json").read_text())
    return Case(path=path, meta=meta, arrays=load_file(str(path / "expected.safetensors")))


def max_abs_diff(actual: Any, expected: Any) -> tuple[float, float]:
    """``max|actual − expected|`` and the scale ``max(1, max|expected|)`` it is judged against."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"shapes differ: {a.shape} vs {e.shape}"
    return float(np.max(np.abs(a - e))), max(1.0, float(np.max(np.abs(e))))


def assert_close(actual: Any, expected: Any, rel: float = TOLERANCE, what: str = "") -> None:
    """Asserts ``max|actual − expected| ≤ rel · max(1, max|expected|)``."""
    diff, scale = max_abs_diff(actual, expected)
    assert np.isfinite(diff), f"{what}: non-finite values"
    assert diff <= rel * scale, f"{what}: max abs diff {diff:.3e} > {rel:.1e} × {scale:.3g}"


@pytest.fixture(params=case_dirs(), ids=lambda p: p.name)
def case(request: pytest.FixtureRequest) -> Case:
    return load_case(request.param)


# --- schedulers, random numbers, pipeline ---------------------------------------------------------------

RNG_FIXTURE = FIXTURES / "rng" / "torch_randn.safetensors"
SCHEDULER_FIXTURES = FIXTURES / "schedulers"
PIPELINE_FIXTURES = FIXTURES / "pipeline"
# The shipped class-conditional digits model (a diffusers pipeline folder: model_index.json, unet/, scheduler/).
DIGITS16 = Path(__file__).resolve().parents[2] / "models" / "digits16"


def scheduler_case_dirs() -> list[Path]:
    """Every ``tests/fixtures/schedulers/<case>`` folder (``case.json``, ``scheduler_config.json``,
    ``trajectory.safetensors``), sorted."""
    return sorted(p for p in SCHEDULER_FIXTURES.iterdir() if (p / "case.json").is_file())


def pipeline_cases() -> list[Path]:
    """Every ``tests/fixtures/pipeline/<case>.json`` (with its ``<case>.safetensors``), sorted."""
    return sorted(PIPELINE_FIXTURES.glob("*.json"))


def assert_gil_released(work: Callable[[int], object], min_seconds: float = 0.05) -> None:
    """Checks that `work` lets other Python threads run while it computes.

    A thread that wakes every millisecond cannot run while the GIL is held: if `work` kept it, that
    thread would pause for the whole call; released, its longest pause stays far shorter. `work(scale)`
    runs a workload growing with `scale`, doubled until one call lasts `min_seconds` (fast machines).
    """
    scale = 1
    while True:
        duration, longest_pause = _longest_pause_during(lambda s=scale: work(s))
        if duration >= min_seconds or scale >= 1024:
            break
        scale *= 2
    assert duration >= min_seconds, f"work({scale}) still took only {duration * 1e3:.1f} ms"
    assert longest_pause < 0.5 * duration, f"the other thread paused {longest_pause:.3f}s of {duration:.3f}s"


def _longest_pause_during(call: Callable[[], object]) -> tuple[float, float]:
    ticks: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    thread = threading.Thread(target=tick)
    thread.start()
    try:
        time.sleep(0.02)
        start = time.perf_counter()
        call()
        end = time.perf_counter()
    finally:
        stop.set()
        thread.join()
    inside = [t for t in ticks if start <= t <= end]
    return end - start, float(np.diff([start, *inside, end]).max())
