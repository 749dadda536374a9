"""Type stubs of the scheduler classes ``_schedulers.py`` builds from the registry (a test keeps this list
equal to it)."""

from typing import Any, final

from ._core import SchedulerMixin, _GeneratorArg, _Timestep1

__all__ = [
    "CMStochasticIterativeScheduler",
    "DDIMScheduler",
    "DDPMScheduler",
    "DEISMultistepScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "EDMEulerScheduler",
    "EulerAncestralDiscreteScheduler",
    "EulerDiscreteScheduler",
    "HeunDiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "LMSDiscreteScheduler",
    "PNDMScheduler",
    "RePaintScheduler",
    "ScoreSdeVeScheduler",
    "UniPCMultistepScheduler",
]

@final
class DDPMScheduler(SchedulerMixin):
    """diffusers' ``DDPMScheduler``: ancestral DDPM sampling (1000 steps by default)."""

@final
class DDIMScheduler(SchedulerMixin):
    """diffusers' ``DDIMScheduler``: DDIM: deterministic with eta 0."""

@final
class DPMSolverMultistepScheduler(SchedulerMixin):
    """diffusers' ``DPMSolverMultistepScheduler``: DPM-Solver / DPM-Solver++ multistep."""

@final
class PNDMScheduler(SchedulerMixin):
    """diffusers' ``PNDMScheduler``: pseudo numerical methods (PRK then PLMS)."""

@final
class EulerDiscreteScheduler(SchedulerMixin):
    """diffusers' ``EulerDiscreteScheduler``: Euler's method in σ space (Karras et al.)."""

@final
class EulerAncestralDiscreteScheduler(SchedulerMixin):
    """diffusers' ``EulerAncestralDiscreteScheduler``: ancestral Euler in σ space."""

@final
class HeunDiscreteScheduler(SchedulerMixin):
    """diffusers' ``HeunDiscreteScheduler``: Heun's second-order method in σ space."""

@final
class KDPM2DiscreteScheduler(SchedulerMixin):
    """diffusers' ``KDPM2DiscreteScheduler``: DPM-Solver-2 (k-diffusion)."""

@final
class KDPM2AncestralDiscreteScheduler(SchedulerMixin):
    """diffusers' ``KDPM2AncestralDiscreteScheduler``: ancestral DPM-Solver-2 (k-diffusion)."""

@final
class LMSDiscreteScheduler(SchedulerMixin):
    """diffusers' ``LMSDiscreteScheduler``: linear multistep in σ space."""

@final
class DEISMultistepScheduler(SchedulerMixin):
    """diffusers' ``DEISMultistepScheduler``: DEIS multistep."""

@final
class UniPCMultistepScheduler(SchedulerMixin):
    """diffusers' ``UniPCMultistepScheduler``: UniPC predictor-corrector."""

@final
class DPMSolverSinglestepScheduler(SchedulerMixin):
    """diffusers' ``DPMSolverSinglestepScheduler``: DPM-Solver singlestep."""

@final
class EDMEulerScheduler(SchedulerMixin):
    """diffusers' ``EDMEulerScheduler``: EDM's Euler sampler (Karras et al. 2022)."""

@final
class CMStochasticIterativeScheduler(SchedulerMixin):
    """diffusers' ``CMStochasticIterativeScheduler``: consistency models' multistep sampler."""

@final
class ScoreSdeVeScheduler(SchedulerMixin):
    """diffusers' ``ScoreSdeVeScheduler``: the variance-exploding SDE's predictor-corrector (NCSN++)."""

    def step_pred(
        self,
        model_output: Any,
        timestep: _Timestep1,
        sample: Any,
        generator: _GeneratorArg = None,
        return_dict: bool = True,
    ) -> Any:
        """diffusers' ``step_pred``."""

    def step_correct(
        self, model_output: Any, sample: Any, generator: _GeneratorArg = None, return_dict: bool = True
    ) -> Any:
        """diffusers' ``step_correct``."""

@final
class RePaintScheduler(SchedulerMixin):
    """diffusers' ``RePaintScheduler``: RePaint inpainting with jumps."""

    def undo_step(self, sample: Any, timestep: _Timestep1, generator: _GeneratorArg = None) -> Any:
        """diffusers' ``undo_step``: noise the sample back up one step of the jump schedule; returns it, of
        ``sample``'s type."""
