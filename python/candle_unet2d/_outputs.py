"""Small pure-Python containers returned by the compiled code: ``UNet2DOutput``, ``SchedulerOutput``,
``ImagePipelineOutput`` and ``FrozenDict``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, NamedTuple, NoReturn, TypeVar

__all__ = ["FrozenDict", "ImagePipelineOutput", "IncompatibleKeys", "SchedulerOutput", "UNet2DOutput"]

T = TypeVar("T")


class UNet2DOutput(Generic[T]):
    """The output of ``UNet2DModel.forward``, like diffusers' ``UNet2DOutput``.

    ``out.sample``, ``out["sample"]`` and ``out[0]`` are the same array (numpy, or torch when the input
    was a torch tensor) of shape ``[batch, out_channels, height, width]``. ``out.to_tuple()`` is
    ``(sample,)``; iterating yields the field names, as for diffusers' ``BaseOutput``.
    """

    __slots__ = ("sample",)

    def __init__(self, sample: T) -> None:
        self.sample = sample

    def to_tuple(self) -> tuple[T]:
        return (self.sample,)

    def keys(self) -> tuple[str]:
        return ("sample",)

    def values(self) -> tuple[T]:
        return (self.sample,)

    def items(self) -> tuple[tuple[str, T]]:
        return (("sample", self.sample),)

    def __getitem__(self, key: int | str) -> T:
        if isinstance(key, str):
            if key != "sample":
                raise KeyError(key)
            return self.sample
        return self.to_tuple()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return 1

    def __contains__(self, key: object) -> bool:
        return key == "sample"

    def __repr__(self) -> str:
        shape = getattr(self.sample, "shape", None)
        dtype = getattr(self.sample, "dtype", None)
        if shape is None:
            return f"UNet2DOutput(sample={self.sample!r})"
        return f"UNet2DOutput(sample=<{type(self.sample).__name__} shape={tuple(shape)} dtype={dtype}>)"


class IncompatibleKeys(NamedTuple):
    """What ``UNet2DModel.load_state_dict`` returns, like torch's ``_IncompatibleKeys``: the model's
    tensors the state dict lacked (they kept their values) and the state dict's names the model does not
    have (ignored). Both are empty after a ``strict=True`` load, which fails otherwise."""

    missing_keys: list[str]
    unexpected_keys: list[str]

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return f"_IncompatibleKeys(missing_keys={self.missing_keys!r}, unexpected_keys={self.unexpected_keys!r})"

    def __str__(self) -> str:
        return repr(self)


class _Output:
    """What diffusers' ``BaseOutput`` offers, for the outputs with more than one field: attribute, key and
    index access; fields that are ``None`` are left out of ``keys()``, ``to_tuple()`` and indexing, as
    diffusers does."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def keys(self) -> tuple[str, ...]:
        return tuple(k for k in self._fields if getattr(self, k) is not None)

    def values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, k) for k in self.keys())

    def items(self) -> tuple[tuple[str, Any], ...]:
        return tuple((k, getattr(self, k)) for k in self.keys())

    def to_tuple(self) -> tuple[Any, ...]:
        return self.values()

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={_describe(getattr(self, k))}' for k in self._fields)})"


def _describe(value: Any) -> str:
    """An array as ``<ndarray shape=(…) dtype=…>``, a list of images by its length, anything else by repr."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"<{type(value).__name__} shape={tuple(shape)} dtype={getattr(value, 'dtype', None)}>"
    if isinstance(value, list):
        kind = type(value[0]).__name__ if value else "object"
        return f"[{len(value)} × {kind}]"
    return repr(value)


class SchedulerOutput(_Output, Generic[T]):
    """The output of a scheduler's ``step``, like diffusers' ``SchedulerOutput`` and its variants.

    ``prev_sample`` is x_{t-1}, the sample to feed the next step; ``pred_original_sample`` the x_0 estimate
    of this step (after clipping/thresholding) where the diffusers scheduler returns one;
    ``prev_sample_mean`` the mean of x_{t-1} before noise (ScoreSdeVe's ``step_pred``). Fields the
    scheduler does not return are ``None`` and left out of ``keys()`` and ``to_tuple()``. All are of the
    type, dtype and device of the ``sample`` passed in (numpy or torch). ``out[0]``,
    ``out["prev_sample"]`` and ``out.to_tuple()`` work as for diffusers' outputs.
    """

    __slots__ = ("pred_original_sample", "prev_sample", "prev_sample_mean")
    _fields = ("prev_sample", "prev_sample_mean", "pred_original_sample")

    def __init__(
        self, prev_sample: T, pred_original_sample: T | None = None, prev_sample_mean: T | None = None
    ) -> None:
        self.prev_sample = prev_sample
        self.pred_original_sample = pred_original_sample
        self.prev_sample_mean = prev_sample_mean


class ImagePipelineOutput(_Output, Generic[T]):
    """The output of ``UNet2DPipeline.__call__``, like diffusers' ``ImagePipelineOutput``.

    ``images`` is a list of ``PIL.Image.Image`` (``output_type="pil"``), a float32 numpy array
    ``[batch, height, width, channels]`` in ``[0, 1]`` (``"np"``), or the same as uint8 (``"uint8"``).
    """

    __slots__ = ("images",)
    _fields = ("images",)

    def __init__(self, images: T) -> None:
        self.images = images


class FrozenDict(dict):  # type: ignore[type-arg]
    """A read-only dict whose keys are also attributes, like diffusers' ``FrozenDict`` (``model.config``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise TypeError(f"{type(self).__name__} is read-only; cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise TypeError(f"{type(self).__name__} is read-only; cannot delete {name!r}")

    def _readonly(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"{type(self).__name__} is read-only")

    __setitem__ = _readonly
    __delitem__ = _readonly
    clear = _readonly
    pop = _readonly
    popitem = _readonly
    setdefault = _readonly
    update = _readonly
    __ior__ = _readonly

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        return (type(self), (dict(self),))

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"


UNet2DOutput.__module__ = "candle_unet2d"
FrozenDict.__module__ = "candle_unet2d"
SchedulerOutput.__module__ = "candle_unet2d"
ImagePipelineOutput.__module__ = "candle_unet2d"
