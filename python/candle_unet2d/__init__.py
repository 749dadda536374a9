"""diffusers' ``UNet2DModel`` on candle (Rust): load a diffusers model folder, run it on numpy or torch.

>>> from candle_unet2d import UNet2DModel
>>> model = UNet2DModel.from_pretrained("google/ddpm-cifar10-32")  # doctest: +SKIP
>>> eps = model(sample, 999).sample  # doctest: +SKIP
"""

from ._core import WITH_CUDA, UNet2DModel, __version__
from ._errors import (
    ConfigError,
    InternalError,
    InvalidArgumentError,
    ModelNotFoundError,
    ReadError,
    UNet2DError,
    UnsupportedError,
    WeightsError,
)
from ._outputs import FrozenDict, UNet2DOutput

__all__ = [
    "WITH_CUDA",
    "ConfigError",
    "FrozenDict",
    "InternalError",
    "InvalidArgumentError",
    "ModelNotFoundError",
    "ReadError",
    "UNet2DError",
    "UNet2DModel",
    "UNet2DOutput",
    "UnsupportedError",
    "WeightsError",
    "__version__",
]
