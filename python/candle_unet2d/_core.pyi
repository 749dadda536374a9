"""The compiled part of candle_unet2d (Rust, via PyO3). Import from ``candle_unet2d`` instead."""

import os
from collections.abc import Sequence
from typing import Any, Literal, final, overload

import numpy as np
import numpy.typing as npt
from typing_extensions import TypeAlias

from ._outputs import FrozenDict, UNet2DOutput

__all__ = ["WITH_CUDA", "UNet2DModel", "__version__", "_panic_for_tests"]

__version__: str
WITH_CUDA: bool
"""Whether this build can use CUDA devices."""

_DType: TypeAlias = str | Any
"""``"float32"``/``"fp32"``, ``"float16"``/``"fp16"``/``"half"``, ``"bfloat16"``/``"bf16"``, a torch dtype
such as ``torch.float16``, or a numpy dtype."""

_Timestep: TypeAlias = int | float | np.generic | npt.NDArray[Any] | Any
"""An int or float (made an integer as diffusers does: floats truncate toward zero), or a numpy array /
torch tensor of shape ``[]``, ``[1]`` or ``[batch]`` whose values are used as given."""

_ClassLabels: TypeAlias = npt.ArrayLike | Sequence[int] | Sequence[float] | Any

@final
class UNet2DModel:
    """diffusers' ``UNet2DModel`` (DDPM, DDIM, NCSN++, consistency models), computing with candle.

    Immutable after loading; safe to call from several threads at once (the GIL is released while
    loading and computing).
    """

    @staticmethod
    def from_pretrained(
        path: str | os.PathLike[str],
        subfolder: str | None = None,
        variant: str | None = None,
        device: str | Any | None = None,
        dtype: _DType | None = None,
        torch_dtype: _DType | None = None,
    ) -> UNet2DModel:
        """Loads a model folder as diffusers saved it.

        Args:
            path: the model folder (``config.json`` + ``diffusion_pytorch_model.safetensors``, a sharded
                index, or a ``.bin``), a pipeline folder (its ``unet/`` is used), or a Hub id already in
                the local Hugging Face cache.
            subfolder: a folder inside ``path``, e.g. ``"unet"``.
            variant: the weights variant, e.g. ``"fp16"`` for ``diffusion_pytorch_model.fp16.safetensors``.
            device: ``"cpu"`` (``None``, the default), ``"cuda"`` or ``"cuda:N"``, or a ``torch.device``.
            dtype: the dtype the model computes in (``None``, the default: float32); weights are converted.
            torch_dtype: the same as ``dtype``, under diffusers' name; give one of the two.

        Raises:
            ModelNotFoundError: (a ``FileNotFoundError``) the folder, subfolder, config or weights are missing.
            ConfigError: (a ``ValueError``) ``config.json`` is invalid.
            WeightsError: (a ``ValueError``) the weights do not fit the config.
            InvalidArgumentError: (a ``ValueError``) a bad argument, e.g. an unknown dtype name.
            UnsupportedError: (a ``RuntimeError``) the device cannot be used by this build.
        """

    @overload
    def __call__(
        self,
        sample: npt.NDArray[np.floating[Any]],
        timestep: _Timestep,
        class_labels: _ClassLabels | None = None,
        return_dict: Literal[True] = True,
    ) -> UNet2DOutput[npt.NDArray[Any]]: ...
    @overload
    def __call__(
        self,
        sample: npt.NDArray[np.floating[Any]],
        timestep: _Timestep,
        class_labels: _ClassLabels | None = None,
        *,
        return_dict: Literal[False],
    ) -> tuple[npt.NDArray[Any]]: ...
    @overload
    def __call__(
        self,
        sample: Any,
        timestep: _Timestep,
        class_labels: _ClassLabels | None = None,
        return_dict: bool = True,
    ) -> UNet2DOutput[Any] | tuple[Any]: ...
    @overload
    def forward(
        self,
        sample: npt.NDArray[np.floating[Any]],
        timestep: _Timestep,
        class_labels: _ClassLabels | None = None,
        return_dict: Literal[True] = True,
    ) -> UNet2DOutput[npt.NDArray[Any]]: ...
    @overload
    def forward(
        self,
        sample: npt.NDArray[np.floating[Any]],
        timestep: _Timestep,
        class_labels: _ClassLabels | None = None,
        *,
        return_dict: Literal[False],
    ) -> tuple[npt.NDArray[Any]]: ...
    @overload
    def forward(
        self,
        sample: Any,
        timestep: _Timestep,
        class_labels: _ClassLabels | None = None,
        return_dict: bool = True,
    ) -> UNet2DOutput[Any] | tuple[Any]:
        """Runs the UNet, as diffusers' ``UNet2DModel.forward``.

        Args:
            sample: ``[batch, in_channels, height, width]``, a float16/32/64 numpy array (any strides or
                order) or torch tensor (any device). Height and width must be multiples of
                ``2 ** (len(block_out_channels) - 1)``.
            timestep: see ``_Timestep``: Python/numpy scalars become an integer exactly as in diffusers
                (``torch.tensor([t], dtype=torch.long)``); arrays and tensors keep their values.
            class_labels: for class-conditional models: integer class ids ``[batch]``
                (``num_class_embeds``), float timesteps ``[batch]`` (``class_embed_type="timestep"``) or
                embeddings ``[batch, time_embed_dim]`` (``"identity"``); numpy, torch or a list.
            return_dict: return a ``UNet2DOutput`` (default) or a 1-tuple.

        Returns:
            The output ``[batch, out_channels, height, width]``: for numpy input a numpy array of the
            model's dtype (float32 for a bfloat16 model); for torch input a tensor of the model's dtype
            on the input's device.

        Raises:
            InvalidArgumentError: (a ``ValueError``) wrong shape, dtype, timestep or class labels.
            InternalError: (a ``RuntimeError``) a failure inside the computation.
        """

    @property
    def config(self) -> FrozenDict:
        """The config (read-only dict with attribute access): ``config.json``'s fields with diffusers'
        defaults filled in, plus ``_class_name`` and ``_name_or_path``."""

    @property
    def dtype(self) -> Literal["float32", "float16", "bfloat16"]:
        """The dtype the model computes in."""

    @property
    def device(self) -> str:
        """The device the weights live on: ``"cpu"`` or ``"cuda:N"``."""

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """The number of weights, as diffusers' ``ModelMixin.num_parameters``."""

def _panic_for_tests(message: str) -> None:
    """Panics in Rust; the panic must reach Python as ``InternalError``. Not part of the API."""
