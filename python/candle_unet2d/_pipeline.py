"""Pure-Python helpers of the pipelines: the progress bar, the conversion to PIL images, and RePaint's
image and mask preprocessing.

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

from ._errors import InvalidArgumentError

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


def _check_torch() -> None:
    """Raises ``ImportError`` naming ``pip install torch`` when torch is missing (``output_type="pt"``)."""
    try:
        importlib.import_module("torch")
    except ImportError as e:
        raise ImportError('output_type="pt" needs torch: pip install torch (or pass output_type="np")') from e


def _is_pil(obj: Any) -> bool:
    return type(obj).__module__.startswith("PIL.")


def _as_float_array(obj: Any, name: str) -> npt.NDArray[np.float32]:
    """A numpy array, torch tensor or nested list as a float32 numpy array (uint8 refused: not a range
    the model works in)."""
    if type(obj).__module__.startswith("torch"):
        obj = obj.detach().cpu().float().numpy()
    array = np.asarray(obj)
    if array.dtype == np.uint8:
        wanted = "in [-1, 1]: x / 127.5 - 1" if name == "image" else "0 or 1"
        raise InvalidArgumentError(f"invalid argument `{name}`: uint8 values; give floats ({wanted}), or a PIL image")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise InvalidArgumentError(f"invalid argument `{name}`: expected numbers, got an array of {array.dtype}")
    return array.astype(np.float32)


def _pil_list(obj: Any) -> list[Any] | None:
    """``obj`` as a list of PIL images, if it is one or a list of them."""
    if _is_pil(obj):
        return [obj]
    if isinstance(obj, (list, tuple)) and obj and all(_is_pil(o) for o in obj):
        return list(obj)
    return None


def _preprocess_image(image: Any, channels: int) -> npt.NDArray[np.float32]:
    """RePaint's ``image`` as float32 ``[B, C, H, W]`` in ``[-1, 1]``: PIL images (mode ``L`` for a
    1-channel model, ``RGB`` for 3) scaled from ``[0, 255]``, or an array / tensor already in the
    model's range (``[C, H, W]`` gets a batch dimension)."""
    images = _pil_list(image)
    if images is not None:
        mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels)
        arrays = []
        for i, im in enumerate(images):
            if im.mode != mode:
                raise InvalidArgumentError(
                    f"invalid argument `image`: image {i} has mode {im.mode!r}; this model takes {channels}-channel "
                    f"images, mode {mode!r} (convert with image.convert({mode!r}))"
                )
            if im.size != images[0].size:
                raise InvalidArgumentError(
                    f"invalid argument `image`: image {i} is {im.size[0]}×{im.size[1]}, image 0 is "
                    f"{images[0].size[0]}×{images[0].size[1]}: give images of one size"
                )
            a = np.asarray(im, dtype=np.float32) / 255.0
            arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        return (np.stack(arrays) * 2.0 - 1.0).astype(np.float32)
    array = _as_float_array(image, "image")
    if array.ndim == 3:
        array = array[None]
    lo, hi = (float(np.nanmin(array)), float(np.nanmax(array))) if array.size else (0.0, 0.0)
    if not (-1.0001 <= lo and hi <= 1.0001):
        raise InvalidArgumentError(
            f"invalid argument `image`: values must be in [-1, 1] (the model's range), found [{lo:g}, {hi:g}]; "
            "from [0, 1] use 2 * x - 1, from [0, 255] x / 127.5 - 1"
        )
    return array


def _preprocess_mask(mask: Any) -> npt.NDArray[np.float32]:
    """RePaint's ``mask_image`` as float32 with 1 = keep, 0 = inpaint: PIL images converted to grayscale
    and thresholded at half intensity, as diffusers' ``_preprocess_mask`` (white keeps), giving
    ``[N, 1, H, W]``; arrays / tensors as given, ``[H, W]`` and ``[N, H, W]`` given a channel axis."""
    masks = _pil_list(mask)
    if masks is not None:
        arrays = [(np.asarray(m.convert("L"), dtype=np.float32) / 255.0 >= 0.5).astype(np.float32) for m in masks]
        if any(a.shape != arrays[0].shape for a in arrays):
            raise InvalidArgumentError("invalid argument `mask_image`: give masks of one size")
        return np.stack(arrays)[:, None]
    array = _as_float_array(mask, "mask_image")
    if array.ndim == 2:
        return array[None, None]
    if array.ndim == 3:
        return array[:, None]
    return array


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
