"""diffusers' pipeline classes for ``UNet2DModel``, each a ``DiffusionPipeline`` (the Rust class) whose
``__call__`` has diffusers' signature, defaults and positional order and forwards to
``DiffusionPipeline._sample``, which runs the crate's sampling loops in Rust.

The class's ``_class_name`` tells the Rust side which pipeline it is (its registry, ``PipelineKind``):
what the constructor does to the scheduler (``DDIMPipeline`` rebuilds it as ``DDIMScheduler``), which
loop runs, the default step count. Beyond diffusers, every pipeline takes ``class_labels`` for
class-conditional models, ``latents``, and ``callback_on_step_end``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._core import DiffusionPipeline
from ._errors import InvalidArgumentError

if TYPE_CHECKING:
    from ._core import Generator
    from ._outputs import ImagePipelineOutput

    _Result = ImagePipelineOutput[Any] | tuple[Any]
    _Generators = Generator | Sequence[Generator] | None
    _StepCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any] | None] | None

__all__ = [
    "ConsistencyModelPipeline",
    "DDIMPipeline",
    "DDPMPipeline",
    "PNDMPipeline",
    "RePaintPipeline",
    "ScoreSdeVePipeline",
    "UNet2DPipeline",
]


class DDPMPipeline(DiffusionPipeline):
    """diffusers' ``DDPMPipeline``: ancestral sampling with the pipeline's scheduler (any scheduler of
    the standard loop: DDPM, DDIM, Euler, DPM-Solver, …)."""

    _class_name = "DDPMPipeline"
    __module__ = "candle_unet2d"

    def __call__(
        self,
        batch_size: int = 1,
        generator: _Generators = None,
        num_inference_steps: int = 1000,
        output_type: str = "pil",
        return_dict: bool = True,
        *,
        class_labels: Any = None,
        latents: Any = None,
        callback_on_step_end: _StepCallback = None,
        callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
    ) -> _Result:
        return self._sample(
            batch_size=batch_size,
            generator=generator,
            num_inference_steps=num_inference_steps,
            output_type=output_type,
            return_dict=return_dict,
            class_labels=class_labels,
            latents=latents,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )


class DDIMPipeline(DiffusionPipeline):
    """diffusers' ``DDIMPipeline``: its constructor rebuilds the scheduler as ``DDIMScheduler`` from its
    config; ``eta`` 0 is deterministic DDIM, 1 DDPM-like."""

    _class_name = "DDIMPipeline"
    __module__ = "candle_unet2d"

    def __call__(
        self,
        batch_size: int = 1,
        generator: _Generators = None,
        eta: float = 0.0,
        num_inference_steps: int = 50,
        use_clipped_model_output: bool | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        *,
        class_labels: Any = None,
        latents: Any = None,
        callback_on_step_end: _StepCallback = None,
        callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
    ) -> _Result:
        return self._sample(
            batch_size=batch_size,
            generator=generator,
            eta=eta,
            num_inference_steps=num_inference_steps,
            use_clipped_model_output=use_clipped_model_output,
            output_type=output_type,
            return_dict=return_dict,
            class_labels=class_labels,
            latents=latents,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )


class PNDMPipeline(DiffusionPipeline):
    """diffusers' ``PNDMPipeline``: its constructor rebuilds the scheduler as ``PNDMScheduler``."""

    _class_name = "PNDMPipeline"
    __module__ = "candle_unet2d"

    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 50,
        generator: _Generators = None,
        output_type: str = "pil",
        return_dict: bool = True,
        *,
        class_labels: Any = None,
        latents: Any = None,
        callback_on_step_end: _StepCallback = None,
        callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
    ) -> _Result:
        return self._sample(
            batch_size=batch_size,
            num_inference_steps=num_inference_steps,
            generator=generator,
            output_type=output_type,
            return_dict=return_dict,
            class_labels=class_labels,
            latents=latents,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )


class ScoreSdeVePipeline(DiffusionPipeline):
    """diffusers' ``ScoreSdeVePipeline``: NCSN++ predictor-corrector sampling with ``ScoreSdeVeScheduler``
    (``correct_steps`` corrector steps, then a predictor step, per timestep; σ is the UNet's timestep).
    The images are the last predictor mean clamped to ``[0, 1]``, NCSN++'s range."""

    _class_name = "ScoreSdeVePipeline"
    __module__ = "candle_unet2d"

    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 2000,
        generator: _Generators = None,
        output_type: str = "pil",
        return_dict: bool = True,
        *,
        class_labels: Any = None,
        latents: Any = None,
        callback_on_step_end: _StepCallback = None,
        callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
    ) -> _Result:
        return self._sample(
            batch_size=batch_size,
            num_inference_steps=num_inference_steps,
            generator=generator,
            output_type=output_type,
            return_dict=return_dict,
            class_labels=class_labels,
            latents=latents,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )


class ConsistencyModelPipeline(DiffusionPipeline):
    """diffusers' ``ConsistencyModelPipeline``: one step, or explicit ``timesteps`` (e.g. ``[22, 0]``),
    with ``CMStochasticIterativeScheduler``. A class-conditional model needs ``class_labels`` (diffusers
    would draw them from torch's global random state, which makes runs irreproducible)."""

    _class_name = "ConsistencyModelPipeline"
    __module__ = "candle_unet2d"

    def __call__(
        self,
        batch_size: int = 1,
        class_labels: Any = None,
        num_inference_steps: int = 1,
        timesteps: Sequence[float] | None = None,
        generator: _Generators = None,
        latents: Any = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback: Callable[[int, Any, Any], None] | None = None,
        callback_steps: int = 1,
        *,
        callback_on_step_end: _StepCallback = None,
        callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
    ) -> _Result:
        if callback is not None:
            if callback_on_step_end is not None:
                raise InvalidArgumentError(
                    "invalid argument `callback`: give callback or callback_on_step_end, not both"
                )
            callback_on_step_end = _legacy_callback(callback, callback_steps)
        return self._sample(
            batch_size=batch_size,
            class_labels=class_labels,
            num_inference_steps=num_inference_steps,
            timesteps=timesteps,
            generator=generator,
            latents=latents,
            output_type=output_type,
            return_dict=return_dict,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )


class RePaintPipeline(DiffusionPipeline):
    """diffusers' ``RePaintPipeline``: inpaints ``image`` where ``mask_image`` is 0 (1 keeps a pixel),
    going back up the schedule ``jump_n_sample - 1`` times every ``jump_length`` steps, with
    ``RePaintScheduler``. ``image``: PIL images (mode ``L`` or ``RGB`` as the model's channels), or an
    array / tensor ``[B, C, H, W]`` in ``[-1, 1]``; ``mask_image``: PIL (white keeps) or an array / tensor
    of 0s and 1s. Beyond diffusers, ``class_labels`` reach class-conditional models."""

    _class_name = "RePaintPipeline"
    __module__ = "candle_unet2d"

    def __call__(
        self,
        image: Any,
        mask_image: Any,
        num_inference_steps: int = 250,
        eta: float = 0.0,
        jump_length: int = 10,
        jump_n_sample: int = 10,
        generator: _Generators = None,
        output_type: str = "pil",
        return_dict: bool = True,
        *,
        class_labels: Any = None,
        callback_on_step_end: _StepCallback = None,
        callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
    ) -> _Result:
        return self._sample(
            image=image,
            mask_image=mask_image,
            num_inference_steps=num_inference_steps,
            eta=eta,
            jump_length=jump_length,
            jump_n_sample=jump_n_sample,
            generator=generator,
            output_type=output_type,
            return_dict=return_dict,
            class_labels=class_labels,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )


class UNet2DPipeline(DiffusionPipeline):
    """The general pipeline: the loop its scheduler needs (standard, ScoreSdeVe's predictor-corrector,
    RePaint's inpainting) with every argument those take, and the scheduler's usual step count."""

    _class_name = "UNet2DPipeline"
    __module__ = "candle_unet2d"

    def __call__(
        self,
        batch_size: int | None = None,
        num_inference_steps: int | None = None,
        class_labels: Any = None,
        generator: _Generators = None,
        latents: Any = None,
        eta: float = 0.0,
        output_type: str = "pil",
        return_dict: bool = True,
        progress: bool = True,
        *,
        timesteps: Sequence[float] | None = None,
        image: Any = None,
        mask_image: Any = None,
        jump_length: int | None = None,
        jump_n_sample: int | None = None,
        callback_on_step_end: _StepCallback = None,
        callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
    ) -> _Result:
        return self._sample(
            batch_size=batch_size,
            num_inference_steps=num_inference_steps,
            class_labels=class_labels,
            generator=generator,
            latents=latents,
            eta=eta,
            output_type=output_type,
            return_dict=return_dict,
            progress=progress,
            timesteps=timesteps,
            image=image,
            mask_image=mask_image,
            jump_length=jump_length,
            jump_n_sample=jump_n_sample,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )


def _legacy_callback(callback: Callable[[int, Any, Any], None], steps: Any) -> _StepCallback:
    """diffusers' older ``callback(step, timestep, latents)`` every ``callback_steps`` steps, as a
    ``callback_on_step_end``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise InvalidArgumentError(
            "invalid argument `callback_steps`: must be a positive integer, "
            f"got {steps!r} of type {type(steps).__name__}"
        )

    def on_step_end(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if i % steps == 0:
            callback(i, t, kwargs["latents"])
        return {}

    return on_step_end
