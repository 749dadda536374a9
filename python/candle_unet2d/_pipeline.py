"""Pure-Python helpers of ``UNet2DPipeline``: the progress bar and the conversion to PIL images.

The sampling loop runs in Rust with the GIL released; once per step it takes the GIL to call
``_ProgressBar.update``. The bar is tqdm's (``tqdm.auto``) when tqdm is installed, else a one-line bar
on stderr.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from PIL.Image import Image

__all__: list[str] = []

_PILLOW_HINT = 'output_type="pil" needs Pillow: pip install pillow (or pass output_type="np" or "uint8")'


def _check_pillow() -> None:
    """Raises ``ImportError`` naming ``pip install pillow`` when Pillow is missing."""
    try:
        import PIL.Image  # noqa: F401
    except ImportError as e:
        raise ImportError(_PILLOW_HINT) from e


def _numpy_to_pil(images: npt.NDArray[np.uint8]) -> list[Image]:
    """uint8 ``[batch, height, width, channels]`` as PIL images, as diffusers' ``numpy_to_pil``: one
    channel gives ``"L"`` images, three ``"RGB"``, four ``"RGBA"``."""
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError(_PILLOW_HINT) from e
    if images.shape[-1] == 1:
        return [Image.fromarray(np.ascontiguousarray(image[:, :, 0])) for image in images]
    return [Image.fromarray(np.ascontiguousarray(image)) for image in images]


class _ProgressBar:
    """Sampling progress: ``update(step, total)`` after each step, ``close()`` at the end.

    ``config`` holds ``UNet2DPipeline.set_progress_bar_config`` keywords: tqdm's (``disable=True`` turns
    the bar off, ``desc=`` labels it); the plain bar uses ``disable`` and ``desc``.
    """

    _WIDTH = 25
    _REDRAW_S = 0.1

    def __init__(self, enabled: bool, config: Mapping[str, Any] | None = None) -> None:
        self._config = dict(config or {})
        self._enabled = bool(enabled) and not self._config.get("disable", False)
        self._bar: Any = None
        self._plain = False
        self._done = 0
        self._start = 0.0
        self._last_draw = 0.0

    def update(self, step: int, total: int) -> None:
        if not self._enabled:
            return
        if self._bar is None and not self._plain:
            self._start = time.monotonic()
            try:
                # Imported by name: tqdm is optional and untyped.
                tqdm = importlib.import_module("tqdm.auto").tqdm
            except ImportError:
                self._plain = True
            else:
                self._bar = tqdm(total=total, **self._config)
        if self._bar is not None:
            self._bar.update(step - self._done)
            self._done = step
            return
        self._done = step
        now = time.monotonic()
        if step < total and now - self._last_draw < self._REDRAW_S:
            return
        self._last_draw = now
        self._draw(step, total, now - self._start)

    def _draw(self, step: int, total: int, elapsed: float) -> None:
        frac = step / total if total else 1.0
        filled = int(frac * self._WIDTH)
        bar = "█" * filled + " " * (self._WIDTH - filled)
        rate = f"{step / elapsed:.2f} it/s" if elapsed > 0 else "? it/s"
        desc = self._config.get("desc")
        prefix = f"{desc}: " if desc else ""
        sys.stderr.write(f"\r{prefix}{frac * 100:3.0f}%|{bar}| {step}/{total} [{elapsed:.1f}s, {rate}]")
        sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._plain and self._done > 0:
            sys.stderr.write("\n")
            sys.stderr.flush()
        self._plain = False
        self._enabled = False
