"""Small pure-Python containers returned by the compiled model: ``UNet2DOutput`` and ``FrozenDict``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, NoReturn, TypeVar

__all__ = ["FrozenDict", "UNet2DOutput"]

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
