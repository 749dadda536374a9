"""The compiled part of candle_unet2d (Rust, via PyO3). Import from ``candle_unet2d`` instead."""

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, final, overload

import numpy as np
import numpy.typing as npt
from typing_extensions import Self, TypeAlias, disjoint_base

from ._outputs import FrozenDict, ImagePipelineOutput, IncompatibleKeys, UNet2DOutput

__all__ = [
    "WITH_CUDA",
    "DiffusionPipeline",
    "Generator",
    "SchedulerMixin",
    "UNet2DModel",
    "__version__",
    "_panic_for_tests",
    "cpu_isa",
    "default_generator",
    "manual_seed",
    "randn",
    "run_cli",
    "scheduler_classes",
]

__version__: str
WITH_CUDA: bool
"""Whether this build can use CUDA devices."""

def cpu_isa() -> str:
    """The instruction-set level the CPU kernels use: ``"avx512"``, ``"avx2"`` or ``"scalar"`` (the CPU's
    best, or lower when the ``CANDLE_UNET2D_ISA`` environment variable says so)."""

def run_cli(args: list[str]) -> int:
    """Runs the ``unet2d`` command line ``args`` (the program name first) inside this process and returns
    its exit code; what the ``unet2d`` console script calls."""

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

    Load one with ``from_pretrained``, or make a freshly initialised one with ``UNet2DModel(**config)`` /
    ``from_config``. Safe to call from several threads at once (the GIL is released while loading and
    computing). ``load_state_dict`` and ``to`` change the model in place, as for a torch module: a call
    already running finishes with the weights it started with; a pipeline whose ``unet`` this is
    computes with the new weights from its next call on, as in diffusers.
    """

    def __new__(cls, **config: Any) -> Self:
        """A freshly initialised model, as diffusers' ``UNet2DModel(**config)``: the keywords are its
        constructor's (``sample_size``, ``in_channels``, ``block_out_channels=(32, 64)``, ...), each
        defaulting to diffusers' default. The model computes in float32 on the CPU (``to`` changes that).

        The weights are initialised with torch's default layer initialisation (diffusers overrides none of
        it for ``UNet2DModel``): convolution and linear weights and biases ``U(-1/sqrt(fan_in),
        1/sqrt(fan_in))`` (``kaiming_uniform_(a=sqrt(5))``), group norms weight 1 and bias 0,
        ``nn.Embedding`` tables ``N(0, 1)``, the Fourier time projection ``randn * 16``. The seed is one
        draw from ``candle_unet2d.default_generator``: call ``candle_unet2d.manual_seed(n)`` first for a
        reproducible model, as ``torch.manual_seed(n)`` is for diffusers. The distributions are torch's,
        the values are not (each tensor draws from its own stream, seeded from the seed and its name).

        Raises:
            InvalidArgumentError: (a ``ValueError``) a keyword that is not a ``UNet2DModel`` argument.
            ConfigError: (a ``ValueError``) a value of the wrong type, or a config that does not describe
                a valid model (e.g. channels not divisible by ``norm_num_groups``).
        """

    @overload
    @staticmethod
    def from_config(
        config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        return_unused_kwargs: Literal[False] = False,
        **kwargs: Any,
    ) -> UNet2DModel: ...
    @overload
    @staticmethod
    def from_config(
        config: Mapping[str, Any] | str | os.PathLike[str] | None,
        return_unused_kwargs: Literal[True],
        **kwargs: Any,
    ) -> tuple[UNet2DModel, dict[str, Any]]: ...
    @overload
    @staticmethod
    def from_config(
        config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        *,
        return_unused_kwargs: Literal[True],
        **kwargs: Any,
    ) -> tuple[UNet2DModel, dict[str, Any]]:
        """A freshly initialised model (see ``__init__``) from a config, as diffusers' ``from_config``.

        Args:
            config: a dict, ``model.config``, or what ``load_config`` returns. Keys starting with ``_``
                (``_class_name``, ``_diffusers_version``, ``_name_or_path``) are metadata and ignored; keys
                listed in ``_use_default_values`` take the default; other keys ``UNet2DModel`` does not
                take are ignored with a warning, as diffusers does. A path is read with ``load_config``
                (diffusers' deprecated form).
            return_unused_kwargs: return ``(model, unused)`` instead, as diffusers: ``unused`` holds the
                config's keys the model does not take, the keywords it does not take (then not an error),
                and the config's other keys that did not become arguments (``_class_name``,
                ``_name_or_path``, …).
            kwargs: config keys that replace the config's (e.g. ``in_channels=1``).

        Raises:
            InvalidArgumentError: (a ``ValueError``) a keyword in ``kwargs`` that is not a ``UNet2DModel``
                argument (diffusers ignores it silently) unless ``return_unused_kwargs``, or a config that
                is not a dict.
            ConfigError: (a ``ValueError``) the config does not describe a valid model.
        """

    @staticmethod
    def load_config(
        pretrained_model_name_or_path: str | os.PathLike[str], subfolder: str | None = None
    ) -> dict[str, Any]:
        """The ``config.json`` of a model folder (or a pipeline folder's ``unet/``, a Hub id in the local
        cache, or the path of a config file) as a dict, every key as written, as diffusers'
        ``load_config``. ``UNet2DModel.from_config(UNet2DModel.load_config(path))`` is a fresh model of
        that architecture.

        Raises:
            ModelNotFoundError: (a ``FileNotFoundError``) no such folder or ``config.json``.
            ConfigError: (a ``ValueError``) the file is not a JSON object.
        """

    @overload
    @staticmethod
    def from_pretrained(
        path: str | os.PathLike[str],
        subfolder: str | None = None,
        variant: str | None = None,
        device: str | Any | None = None,
        dtype: _DType | None = None,
        torch_dtype: _DType | None = None,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
        force_download: bool | None = None,
        token: str | bool | None = None,
        proxies: None = None,
        resume_download: bool | None = None,
        use_safetensors: bool | None = None,
        low_cpu_mem_usage: bool | None = None,
        device_map: Literal["cpu"] | None = None,
        output_loading_info: Literal[True],
    ) -> tuple[UNet2DModel, dict[str, list[Any]]]: ...
    @overload
    @staticmethod
    def from_pretrained(
        path: str | os.PathLike[str],
        subfolder: str | None = None,
        variant: str | None = None,
        device: str | Any | None = None,
        dtype: _DType | None = None,
        torch_dtype: _DType | None = None,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
        force_download: bool | None = None,
        token: str | bool | None = None,
        proxies: None = None,
        resume_download: bool | None = None,
        use_safetensors: bool | None = None,
        low_cpu_mem_usage: bool | None = None,
        device_map: Literal["cpu"] | None = None,
        output_loading_info: Literal[False] = False,
    ) -> UNet2DModel:
        """Loads a model folder as diffusers saved it, or downloads one from the Hugging Face Hub.

        Args:
            path: the model folder (``config.json`` + ``diffusion_pytorch_model.safetensors``, a sharded
                index, or a ``.bin``), a pipeline folder (its ``unet/`` is used), or a Hub id
                (``"org/name"``): only its ``config.json`` and the one weights file read are downloaded,
                into the Hugging Face cache (``HF_ENDPOINT``, ``HF_HUB_CACHE``, ``HF_TOKEN``,
                ``HF_HUB_OFFLINE`` apply), with a tqdm bar when tqdm is installed.
            subfolder: a folder inside ``path``, e.g. ``"unet"``.
            variant: the weights variant, e.g. ``"fp16"`` for ``diffusion_pytorch_model.fp16.safetensors``.
            device: ``"cpu"`` (``None``, the default), ``"cuda"`` or ``"cuda:N"``, or a ``torch.device``.
            dtype: the dtype the model computes in (``None``, the default: float32); weights are converted.
            torch_dtype: the same as ``dtype``, under diffusers' name; give one of the two.
            revision: the Hub revision of a Hub id: a branch, tag or commit id (``None``: ``"main"``).
            cache_dir: the Hub cache folder (``None``: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
                ``~/.cache/huggingface/hub``), shared with huggingface_hub.
            local_files_only: use the cache only, as ``HF_HUB_OFFLINE=1`` does.
            force_download: download the files again even when cached.
            token: the Hub token: a str; ``True`` or ``None`` (the default) for ``$HF_TOKEN`` or the
                token ``huggingface-cli login`` saved; ``False`` for none.
            proxies: must be ``None``; set ``HTTPS_PROXY`` instead.
            resume_download: ignored (deprecated in huggingface_hub; downloads always resume).
            use_safetensors: ``None`` reads safetensors when present, else ``.bin``; ``True`` only
                safetensors; ``False`` prefers ``.bin``.
            low_cpu_mem_usage: ignored (the weights are memory-mapped either way).
            device_map: ``None`` or ``"cpu"`` only; use ``device`` to choose where the model runs.
            output_loading_info: also return diffusers' loading info (all lists empty: a load that
                misses or leaves over a tensor fails).

        Any other keyword raises ``InvalidArgumentError`` naming it.

        Raises:
            ModelNotFoundError: (a ``FileNotFoundError``) the folder, subfolder, config or weights are missing.
            ModelNotFoundError: (a ``FileNotFoundError``) also: a Hub repository that does not exist or is
                private without a token, an unknown revision, a missing file, or, offline, a repository
                not in the cache (the message lists what the cache holds).
            DownloadError: (an ``OSError``) the Hub cannot be reached (and the cache cannot stand in),
                the server is not a Hub, or a transfer broke or arrived corrupt.
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
            TooLargeError: (a ``MemoryError``) the sample is too large for memory (estimated before any
                compute; the limit is the available memory, or ``CANDLE_UNET2D_MEMORY_LIMIT``).
            InternalError: (a ``RuntimeError``) a bug in candle_unet2d.
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

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        is_main_process: bool = True,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = None,
        push_to_hub: bool = False,
    ) -> None:
        """Saves the model as diffusers' ``save_pretrained`` does, for ``from_pretrained`` (this
        package's or diffusers') to load.

        Writes ``config.json`` (diffusers' keys and formatting) and
        ``diffusion_pytorch_model[.{variant}].safetensors`` in the model's dtype, or, past
        ``max_shard_size``, shards ``diffusion_pytorch_model-00001-of-0000N.safetensors`` and
        ``diffusion_pytorch_model.safetensors.index.json``. Shards of an earlier save that are not
        overwritten are removed. Every file is written atomically. The GIL is released while saving.

        Args:
            save_directory: the folder to save into; created if missing.
            is_main_process: ``False`` writes the weights only (no ``config.json``, nothing removed),
                as diffusers does on the other processes of a distributed run.
            safe_serialization: must be ``True``: only safetensors is written.
            variant: a weights variant name, e.g. ``"fp16"`` (the file name only; the dtype saved is
                the model's).
            max_shard_size: the largest shard, in bytes (an int) or as ``"10GB"``, ``"5MB"``,
                ``"500KB"`` (powers of 1000).
            push_to_hub: must be ``False``: nothing is uploaded.

        Raises:
            InvalidArgumentError: (a ``ValueError``) ``safe_serialization=False``, a bad variant or
                size, or ``save_directory`` is a file.
            UnsupportedError: (a ``RuntimeError``) ``push_to_hub=True``.
            WeightsError: (a ``ValueError``) the checkpoint the model was loaded from has changed
                since, so its weights cannot be read back.
            ReadError: (an ``OSError``) a file could not be written.
        """

    def state_dict(self) -> dict[str, npt.NDArray[Any]]:
        """Every weight under diffusers' names (``to_q``, not the legacy ``query``), in the order of
        diffusers' ``state_dict()``, as numpy arrays of the model's dtype (float32 or float16; float32
        for a bfloat16 model), with diffusers' shapes: the values the model computes with.

        Raises:
            WeightsError: (a ``ValueError``) the checkpoint the model was loaded from has changed
                since, so its weights cannot be read back.
            TooLargeError: (a ``MemoryError``) the weights do not fit in the memory available.
        """

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> IncompatibleKeys:
        """Loads weights by name, in place, as torch's ``Module.load_state_dict``.

        Args:
            state_dict: names (diffusers' current ones, as ``state_dict()`` gives them) to numpy arrays,
                torch tensors (any device or dtype) or anything ``numpy.asarray`` takes, e.g. a diffusers
                model's ``state_dict()``. Values are converted to the model's dtype.
            strict: ``True``: the names must be exactly the model's. ``False``: tensors not given keep
                their values and names the model does not have are ignored.
            assign: must be ``False`` (the model keeps its dtype and device).

        Returns:
            ``IncompatibleKeys(missing_keys, unexpected_keys)``, as torch (both empty after a strict load).

        Raises:
            InvalidArgumentError: (a ``ValueError``; torch raises ``RuntimeError``) with ``strict``, a
                missing or unexpected name; in both modes, a shape that is not the model's. The message
                lists every one; the model is unchanged.
            UnsupportedError: (a ``RuntimeError``) ``assign=True``.
            TooLargeError: (a ``MemoryError``) the new weights do not fit in memory.

        The model keeps an in-memory safetensors image of the new weights (their size in the model's
        dtype), from which ``state_dict`` and ``save_pretrained`` read them back exactly.
        """

    def to(
        self,
        *args: Any,
        device: str | int | Any | None = None,
        dtype: _DType | None = None,
        non_blocking: bool = False,
    ) -> Self:
        """Moves and/or converts the model in place and returns it, as torch's ``Module.to``:
        ``to("cuda")``, ``to(torch.float16)``, ``to("cpu", torch.float32)``, ``to(dtype=np.float16)``,
        ``to(device=torch.device("cuda", 1))``, ``to(tensor)`` (its device and dtype). Devices: a str,
        a ``torch.device`` or a CUDA index; dtypes: a name (``"float16"``), a torch or numpy dtype.
        Converting rounds as torch does (float32 -> float16 -> float32 keeps float16's precision); the
        model then saves in its new dtype. ``non_blocking`` is accepted and ignored.

        Raises:
            InvalidArgumentError: (a ``ValueError``) an unknown device or dtype (e.g. float64).
            UnsupportedError: (a ``RuntimeError``) bfloat16 on the CPU, or CUDA in a build without it.
        """

    def half(self) -> Self:
        """``to(dtype=float16)``."""

    def float(self) -> Self:
        """``to(dtype=float32)``."""

    def cpu(self) -> Self:
        """``to("cpu")``."""

    def cuda(self, device: int | str | Any | None = None) -> Self:
        """``to("cuda:N")`` (``device``: an index, ``"cuda:N"`` or a ``torch.device``; default 0)."""

    def eval(self) -> Self:
        """Returns the model: it always runs in inference mode (for drop-in code)."""

    def train(self, mode: bool = True) -> Self:
        """``train(False)`` is ``eval()``. ``train()`` / ``train(True)`` raises ``UnsupportedError``:
        candle_unet2d runs inference only."""

    def requires_grad_(self, requires_grad: bool = True) -> Self:
        """``requires_grad_(False)`` returns the model (no gradients are ever computed);
        ``requires_grad_(True)`` raises ``UnsupportedError``."""

    def parameters(self, recurse: bool = True) -> Iterator[npt.NDArray[Any]]:
        """The weights as numpy arrays, as torch's ``Module.parameters()``: the values of
        ``state_dict()`` (the model has no buffers), read once when called."""

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, npt.NDArray[Any]]]:
        """``(name, array)`` pairs, as torch's ``Module.named_parameters()`` (names prefixed with
        ``prefix + "."`` when given)."""

    @property
    def training(self) -> bool:
        """Always ``False``: inference only."""

def _panic_for_tests(message: str) -> None:
    """Panics in Rust; the panic must reach Python as ``InternalError``. Not part of the API."""

# --- random numbers -------------------------------------------------------------------------------------

@final
class Generator:
    """A random generator reproducing ``torch.Generator()`` on the CPU: seeded alike, it draws exactly the
    numbers torch draws (``randn``, the pipeline's initial noise, stochastic scheduler steps), and its state
    advances alike, so ``Generator().manual_seed(s)`` here gives diffusers' images for
    ``torch.Generator().manual_seed(s)``.

    Safe to share between threads (draws are serialised). ``copy.copy`` / ``copy.deepcopy`` snapshot the
    state.
    """

    def __new__(cls, device: str | Any | None = None) -> Self:
        """A generator in the state of a fresh ``torch.Generator()`` (seed 67280421310721).

        Args:
            device: ``"cpu"`` (or ``None``): the numbers are torch's CPU stream; other devices raise
                ``InvalidArgumentError``.
        """

    def manual_seed(self, seed: int) -> Self:
        """Seeds the generator, as ``torch.Generator.manual_seed``, and returns it (for chaining).

        ``seed`` is an int in ``[-2**63, 2**64)``; negative seeds wrap modulo ``2**64`` as in torch.
        """

    def initial_seed(self) -> int:
        """The seed last set, as ``torch.Generator.initial_seed``."""

    def seed(self) -> int:
        """Seeds the generator from a non-deterministic source and returns the seed."""

    @property
    def device(self) -> Literal["cpu"]:
        """Always ``"cpu"``."""

    def __copy__(self) -> Generator: ...
    def __deepcopy__(self, memo: Any, /) -> Generator: ...

default_generator: Generator
"""The generator used when none is given (``randn``, scheduler steps, the pipeline), as torch's default
CPU generator: it starts in the state of a fresh ``torch.Generator()`` and advances with every draw."""

def manual_seed(seed: int) -> Generator:
    """Seeds ``default_generator`` and returns it, as ``torch.manual_seed``."""

def randn(
    *size: int | Sequence[int], generator: Generator | Sequence[Generator] | None = None
) -> npt.NDArray[np.float32]:
    """``torch.randn(*size, generator=generator)`` as a float32 numpy array: the same numbers, and the
    generator advances as torch's does.

    ``randn(2, 3)``, ``randn((2, 3))`` and ``randn([2, 3])`` are the same; ``randn(())`` is a 0-d array.
    Without ``generator``, ``default_generator`` is used. A list of generators is diffusers' ``randn_tensor``:
    item ``i`` of the first dimension comes from generator ``i`` (one per item).

    Raises:
        InvalidArgumentError: (a ``ValueError``) a bad shape (negative, not ints) or generator.
        TooLargeError: (a ``MemoryError``) the array would not fit in memory.
    """

# --- schedulers -----------------------------------------------------------------------------------------

_Timestep1: TypeAlias = int | float | np.integer[Any] | np.floating[Any] | npt.NDArray[Any] | Any
"""One timestep of ``scheduler.timesteps``: a number, a numpy scalar, or a one-element numpy array / torch
tensor."""

_GeneratorArg: TypeAlias = Generator | Sequence[Generator] | None
"""One generator, or a list with one per image (image ``i`` draws from generator ``i``, as diffusers)."""

def scheduler_classes() -> list[tuple[str, str, str, int, list[tuple[str, list[str]]], list[str]]]:
    """The scheduler registry: per class ``(class name, CLI name, summary, default steps, [(method,
    [positional parameters])], [compatible class names])``; ``candle_unet2d`` builds its classes from it."""

@disjoint_base
class SchedulerMixin:
    """What the schedulers share (diffusers' ``SchedulerMixin`` and ``ConfigMixin``).

    Not constructed directly: use a scheduler class (``DDPMScheduler``, ``EulerDiscreteScheduler``, …).
    ``SchedulerMixin.from_pretrained`` / ``from_config`` build whichever class the config's ``_class_name``
    names. Safe to share between threads (steps are serialised); the GIL is released while stepping.
    """

    _class_name: str
    _compatibles: list[str]

    def __new__(cls, **kwargs: Any) -> Self:
        """Builds the scheduler from config values, diffusers' defaults for the rest:
        ``DDPMScheduler(beta_schedule="squaredcos_cap_v2")``.

        Raises:
            InvalidArgumentError: (a ``ValueError``) a keyword that is not a config key, or ``SchedulerMixin``
                itself.
            ConfigError: (a ``ValueError``) an invalid value.
        """

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        subfolder: str | None = None,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
        force_download: bool | None = None,
        token: str | bool | None = None,
        proxies: None = None,
        resume_download: bool | None = None,
        **kwargs: Any,
    ) -> Self:
        """Loads ``scheduler_config.json``, as diffusers' ``from_pretrained``.

        Args:
            path: a folder holding ``scheduler_config.json``, a pipeline folder (its ``scheduler/`` is
                used), the JSON file itself, or a Hub id (``"org/name"``), whose scheduler config alone is
                downloaded into the Hugging Face cache.
            subfolder: a folder inside ``path``, e.g. ``"scheduler"``.
            revision: the Hub revision of a Hub id: a branch, tag or commit id (``None``: ``"main"``).
            cache_dir: the Hub cache folder (``None``: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
                ``~/.cache/huggingface/hub``), shared with huggingface_hub.
            local_files_only: use the cache only, as ``HF_HUB_OFFLINE=1`` does.
            force_download: download the files again even when cached.
            token: the Hub token: a str; ``True`` or ``None`` (the default) for ``$HF_TOKEN`` or the
                token ``huggingface-cli login`` saved; ``False`` for none.
            proxies: must be ``None``; set ``HTTPS_PROXY`` instead.
            resume_download: ignored (deprecated in huggingface_hub; downloads always resume).
            **kwargs: config values overriding the file's, e.g. ``timestep_spacing="trailing"``.

        Raises:
            ModelNotFoundError: (a ``FileNotFoundError``) the folder or config is missing.
            ModelNotFoundError: (a ``FileNotFoundError``) also: a Hub repository that does not exist or is
                private without a token, an unknown revision, a missing file, or, offline, a repository
                not in the cache (the message lists what the cache holds).
            DownloadError: (an ``OSError``) the Hub cannot be reached (and the cache cannot stand in),
                the server is not a Hub, or a transfer broke or arrived corrupt.
            ConfigError: (a ``ValueError``) the config is invalid, or names an unsupported class.
        """

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | SchedulerMixin | None = None, **kwargs: Any) -> Self:
        """Builds the scheduler from a config, as diffusers' ``from_config``:
        ``EulerDiscreteScheduler.from_config(pipe.scheduler.config)``.

        Args:
            config: a dict, a ``FrozenDict`` (another scheduler's ``.config``), or a scheduler. Keys this
                class does not use are ignored (and kept in the new ``.config``, as diffusers does).
            **kwargs: config values to override, e.g. ``use_karras_sigmas=True``; a keyword that no config
                key takes is ignored with a ``UserWarning``.

        Raises:
            ConfigError: (a ``ValueError``) an invalid value, or (for ``SchedulerMixin``) no
                ``_class_name``.
            InvalidArgumentError: (a ``ValueError``) ``config`` is not a dict, or nests lists or dicts
                more than 32 deep (e.g. a list that contains itself).
        """

    @property
    def config(self) -> FrozenDict:
        """The config (read-only dict with attribute access): every config value with diffusers' defaults
        filled in, plus ``_class_name`` and ``_diffusers_version``."""

    @property
    def compatibles(self) -> list[type[SchedulerMixin]]:
        """The classes that can be built from this one's config (diffusers' ``compatibles``)."""

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        *args: Any,
        timesteps: Sequence[float] | npt.NDArray[Any] | None = None,
        sigmas: Sequence[float] | npt.NDArray[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Sets the inference schedule (and resets the scheduler's per-run state), as diffusers.

        Args:
            num_inference_steps: the number of steps, laid out by the config.
            *args: further positional arguments in the diffusers class's order (``device``, which is
                ignored; RePaint's ``jump_length``, …).
            timesteps: explicit descending timesteps, where the scheduler takes them.
            sigmas: explicit descending σ, where the scheduler takes them.
            **kwargs: the scheduler's own arguments by name (``device`` is accepted and ignored).

        Raises:
            InvalidArgumentError: (a ``ValueError``) none or several of the three given, 0 steps, more steps
                than training timesteps, custom timesteps the scheduler refuses (unsorted, duplicated, out of
                range), or an argument the scheduler does not take.
        """

    @property
    def timesteps(self) -> npt.NDArray[np.int64] | npt.NDArray[np.float32]:
        """The timesteps to step through, one ``step`` call each (a copy): int64 for discrete schedulers,
        float32 for σ-space ones, as diffusers keeps them."""

    @property
    def sigmas(self) -> npt.NDArray[np.float32] | None:
        """σ at each timestep plus the final one, for σ-space schedulers; ``None`` for the others."""

    @property
    def num_inference_steps(self) -> int | None:
        """The number of steps set by ``set_timesteps``; ``None`` before."""

    @property
    def init_noise_sigma(self) -> float:
        """The standard deviation of the initial noise (1 for the discrete schedulers, σ_max-like for
        σ-space ones): multiply the initial noise by it."""

    @property
    def order(self) -> int:
        """Model evaluations per step (2 for Heun and KDPM2)."""

    @property
    def alphas_cumprod(self) -> npt.NDArray[np.float32] | None:
        """ᾱₜ of the training schedule, ``[num_train_timesteps]``; ``None`` for schedulers without one."""

    def __len__(self) -> int:
        """``num_train_timesteps``."""

    def scale_model_input(self, sample: Any, timestep: _Timestep1 | None = None) -> Any:
        """The model input for ``timestep``: σ-space schedulers divide by √(σ² + 1), the others return
        ``sample``'s values unchanged; of ``sample``'s type, dtype and device."""

    def step(
        self,
        model_output: Any,
        timestep: _Timestep1,
        sample: Any,
        *args: Any,
        generator: _GeneratorArg = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        """One step from ``sample`` at ``timestep``, given the model's output there (diffusers' ``step``;
        the GIL is released meanwhile).

        Args:
            model_output: the model's prediction for ``scale_model_input(sample, timestep)`` (numpy array,
                torch tensor or list), shaped like ``sample`` (twice its channels for
                ``variance_type="learned*"``).
            timestep: one of ``timesteps``, in order for the multistep and second-order schedulers.
            sample: x_t, ``[batch, channels, height, width]``, float16/32/64.
            *args: further positional arguments in the diffusers class's order (DDIM's ``eta``, Euler's
                ``s_churn``, RePaint's ``original_image`` and ``mask``, …).
            generator: where stochastic steps draw their noise: one generator, or a list with one per image;
                without it and without ``variance_noise``, ``default_generator``. Deterministic steps never
                advance it.
            return_dict: return a ``SchedulerOutput`` (default) or diffusers' tuple.
            **kwargs: the scheduler's own arguments by name (``eta=``, ``s_churn=``, ``variance_noise=``,
                …); an argument it does not take is an error listing the ones it does.

        Returns:
            a ``SchedulerOutput`` (``prev_sample`` and, where diffusers' class returns them,
            ``pred_original_sample`` / ``prev_sample_mean``) of ``sample``'s type, dtype and device.

        Raises:
            InvalidArgumentError: (a ``ValueError``) a shape mismatch, a timestep not in ``timesteps``, no
                ``set_timesteps`` yet, an unknown or ill-typed argument, ``generator`` together with
                ``variance_noise``, a list of generators whose length is not the batch size.
        """

    def _call_method(self, method: str, *args: Any, **kwargs: Any) -> Any: ...
    def __copy__(self) -> Self: ...
    def __deepcopy__(self, memo: Any, /) -> Self: ...

# --- pipeline -------------------------------------------------------------------------------------------

@disjoint_base
class DiffusionPipeline:
    """The base class of every pipeline (``DDPMPipeline``, ``DDIMPipeline``, ``PNDMPipeline``,
    ``ScoreSdeVePipeline``, ``ConsistencyModelPipeline``, ``RePaintPipeline``, ``UNet2DPipeline``): a UNet
    and a scheduler that sample images, as diffusers' pipelines.

    The whole sampling loop runs in Rust with the GIL released; once per step the progress bar (tqdm when
    installed, else a one-line bar on stderr) is updated, ``callback_on_step_end`` is called, and Ctrl-C
    stops the run.
    """

    _class_name: str

    def __new__(cls, unet: UNet2DModel, scheduler: SchedulerMixin) -> Self:
        """``Cls(unet=…, scheduler=…)``: ``DDIMPipeline`` and ``PNDMPipeline`` rebuild the scheduler as their
        own scheduler class from its config, as diffusers' do.

        Raises:
            InvalidArgumentError: on ``DiffusionPipeline`` itself, or when the scheduler cannot run the
                class's loop (``ScoreSdeVePipeline`` needs ``ScoreSdeVeScheduler``, …).
        """

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        device: str | Any | None = None,
        dtype: _DType | None = None,
        variant: str | None = None,
        torch_dtype: _DType | None = None,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
        force_download: bool | None = None,
        token: str | bool | None = None,
        proxies: None = None,
        resume_download: bool | None = None,
        use_safetensors: bool | None = None,
        low_cpu_mem_usage: bool | None = None,
        device_map: Literal["cpu"] | None = None,
    ) -> Self:
        """Loads a diffusers pipeline folder (``model_index.json``, ``unet/``, ``scheduler/``), or a bare
        UNet folder with the ``scheduler_config.json`` beside it (else diffusers' default ``DDPMScheduler``).

        On ``DiffusionPipeline`` itself, returns the class ``model_index.json`` names (without one, the
        pipeline the scheduler's loop needs: ``ScoreSdeVePipeline``, ``RePaintPipeline``, else
        ``UNet2DPipeline``); on a subclass, that class.

        Args:
            pretrained_model_name_or_path: the folder, or a Hub id (``"org/name"``): its
                ``model_index.json``, the UNet's config and chosen weights and the scheduler config are
                downloaded into the Hugging Face cache (nothing else).
            device: ``"cpu"`` (``None``, the default), ``"cuda"`` or ``"cuda:N"``, or a ``torch.device``.
            dtype: the dtype the UNet computes in (``None``, the default: float32).
            variant: the weights variant, e.g. ``"fp16"``.
            torch_dtype: the same as ``dtype``, under diffusers' name; give one of the two.
            revision: the Hub revision of a Hub id: a branch, tag or commit id (``None``: ``"main"``).
            cache_dir: the Hub cache folder (``None``: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
                ``~/.cache/huggingface/hub``), shared with huggingface_hub.
            local_files_only: use the cache only, as ``HF_HUB_OFFLINE=1`` does.
            force_download: download the files again even when cached.
            token: the Hub token: a str; ``True`` or ``None`` (the default) for ``$HF_TOKEN`` or the
                token ``huggingface-cli login`` saved; ``False`` for none.
            proxies: must be ``None``; set ``HTTPS_PROXY`` instead.
            resume_download: ignored (deprecated in huggingface_hub; downloads always resume).
            use_safetensors: ``None`` reads safetensors when present, else ``.bin``; ``True`` only
                safetensors; ``False`` prefers ``.bin``.
            low_cpu_mem_usage: ignored (the weights are memory-mapped either way).
            device_map: ``None`` or ``"cpu"`` only; use ``device`` to choose where the model runs.

        Any other keyword raises ``InvalidArgumentError`` naming it.

        Raises:
            ModelNotFoundError: (a ``FileNotFoundError``) the folder, config or weights are missing.
            ModelNotFoundError: (a ``FileNotFoundError``) also: a Hub repository that does not exist or is
                private without a token, an unknown revision, a missing file, or, offline, a repository
                not in the cache (the message lists what the cache holds).
            DownloadError: (an ``OSError``) the Hub cannot be reached (and the cache cannot stand in),
                the server is not a Hub, or a transfer broke or arrived corrupt.
            ConfigError: (a ``ValueError``) a config is invalid or names an unsupported scheduler.
            UnsupportedError: (a ``RuntimeError``) ``model_index.json`` names a pipeline class this package
                does not have, or the device cannot be used by this build.
            WeightsError: (a ``ValueError``) the weights do not fit the config.
        """

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        safe_serialization: bool = True,
        variant: str | None = None,
        push_to_hub: bool = False,
    ) -> None:
        """Writes the pipeline as diffusers does: ``model_index.json``, ``unet/`` (config and safetensors
        weights) and ``scheduler/scheduler_config.json``; diffusers' ``DiffusionPipeline.from_pretrained``
        loads it. ``safe_serialization=False`` and ``push_to_hub=True`` are refused."""

    @property
    def unet(self) -> UNet2DModel:
        """The UNet (sharing the pipeline's weights)."""

    @property
    def scheduler(self) -> SchedulerMixin:
        """The scheduler; assign another one to sample with it:
        ``pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)``."""

    @scheduler.setter
    def scheduler(self, value: SchedulerMixin) -> None: ...
    @property
    def components(self) -> dict[str, Any]:
        """``{"scheduler": …, "unet": …}``, as diffusers' ``components``."""

    @property
    def config(self) -> FrozenDict:
        """What ``model_index.json`` holds: ``_class_name``, ``_diffusers_version``, and each component's
        library and class."""

    @property
    def name_or_path(self) -> str | None:
        """The folder the pipeline was loaded from (``None`` when built from objects)."""

    @property
    def device(self) -> str:
        """The device the UNet computes on."""

    @property
    def dtype(self) -> Literal["float32", "float16", "bfloat16"]:
        """The dtype the UNet computes in."""

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """Options for the progress bar, as diffusers: keywords for tqdm (``disable=True`` turns it off,
        ``desc="..."`` labels it)."""

    def _sample(
        self,
        *,
        batch_size: int | None = None,
        num_inference_steps: int | None = None,
        timesteps: Sequence[float] | Any | None = None,
        class_labels: int | Sequence[int] | npt.NDArray[np.integer[Any]] | Any | None = None,
        generator: Generator | Sequence[Generator] | None = None,
        latents: Any | None = None,
        eta: float | None = None,
        use_clipped_model_output: bool | None = None,
        image: Any | None = None,
        mask_image: Any | None = None,
        jump_length: int | None = None,
        jump_n_sample: int | None = None,
        output_type: str | None = None,
        return_dict: bool | None = None,
        callback_on_step_end: Any | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
        progress: bool | None = None,
    ) -> ImagePipelineOutput[Any] | tuple[Any]:
        """Samples with the class's loop (the subclasses' ``__call__`` call this by keyword).

        Args:
            batch_size: the number of images (default 1, or the number of ``class_labels``; inpainting
                takes it from ``image``).
            num_inference_steps: the steps (default: the class's, e.g. 1000 for DDPM, 50 for DDIM).
            timesteps: explicit timesteps, descending, for schedulers that take them (consistency models'
                ``[22, 0]``).
            class_labels: an int for every image, or one per image, for class-conditional models.
            generator: a ``Generator``, or one per image (each image is then what a batch of one gives).
            latents: the initial noise ``[B, C, H, W]`` instead of drawing it.
            eta: DDIM's and RePaint's η.
            use_clipped_model_output: DDIM's.
            image: RePaint's image to inpaint.
            mask_image: RePaint's mask, 1 keeps a pixel.
            jump_length: RePaint's jump length.
            jump_n_sample: RePaint's jumps per point.
            output_type: ``"pil"`` (default), ``"np"`` (float32 NHWC in [0, 1]), ``"pt"`` (a torch tensor,
                NCHW) or ``"uint8"``.
            return_dict: an ``ImagePipelineOutput`` (default) or a one-tuple.
            callback_on_step_end: ``callback(pipe, step, timestep, callback_kwargs) -> dict`` after each
                step; ``callback_kwargs["latents"]`` is the sample (numpy, or torch when the latents were),
                and a returned ``"latents"`` replaces it. An exception raised in it stops sampling and
                propagates.
            callback_on_step_end_tensor_inputs: the tensors given to the callback: ``["latents"]``.
            progress: show the progress bar (default True).

        Raises:
            InvalidArgumentError: (a ``ValueError``) an argument is wrong; the message names it.
            TooLargeError: (a ``MemoryError``) the batch would not fit in memory.
            KeyboardInterrupt: Ctrl-C, within one step.
        """
