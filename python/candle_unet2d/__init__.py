"""diffusers' ``UNet2DModel`` on candle (Rust): load a diffusers model folder, run it on numpy or torch;
diffusers' schedulers (DDPM, DDIM, DPM-Solver, Euler, Heun, UniPC, PNDM, …), torch's CPU random stream, and
diffusers' pipelines (DDPM, DDIM, PNDM, ScoreSdeVe, consistency models, RePaint inpainting).

>>> from candle_unet2d import UNet2DModel
>>> model = UNet2DModel.from_pretrained("google/ddpm-cifar10-32")  # doctest: +SKIP
>>> eps = model(sample, 999).sample  # doctest: +SKIP

>>> from candle_unet2d import DDIMScheduler, Generator, UNet2DPipeline
>>> pipe = UNet2DPipeline.from_pretrained("path/to/pipeline")  # doctest: +SKIP
>>> pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # doctest: +SKIP
>>> images = pipe(batch_size=4, generator=Generator().manual_seed(0)).images  # doctest: +SKIP
"""

from . import _pipelines, _schedulers
from ._core import (
    WITH_CUDA,
    DiffusionPipeline,
    Generator,
    SchedulerMixin,
    UNet2DModel,
    __version__,
    cpu_isa,
    default_generator,
    manual_seed,
    randn,
)
from ._errors import (
    ConfigError,
    DownloadError,
    InternalError,
    InvalidArgumentError,
    ModelNotFoundError,
    ReadError,
    TooLargeError,
    UNet2DError,
    UnsupportedError,
    WeightsError,
)
from ._outputs import FrozenDict, ImagePipelineOutput, IncompatibleKeys, SchedulerOutput, UNet2DOutput
from ._pipelines import *  # noqa: F403  (diffusers' pipeline classes)
from ._schedulers import *  # noqa: F403  (one class per registered scheduler)

__all__ = [
    "WITH_CUDA",
    "ConfigError",
    "DiffusionPipeline",
    "DownloadError",
    "FrozenDict",
    "Generator",
    "ImagePipelineOutput",
    "IncompatibleKeys",
    "InternalError",
    "InvalidArgumentError",
    "ModelNotFoundError",
    "ReadError",
    "SchedulerMixin",
    "SchedulerOutput",
    "TooLargeError",
    "UNet2DError",
    "UNet2DModel",
    "UNet2DOutput",
    "UnsupportedError",
    "WeightsError",
    "__version__",
    "cpu_isa",
    "default_generator",
    "manual_seed",
    "randn",
    *_pipelines.__all__,
    *_schedulers.__all__,
]
