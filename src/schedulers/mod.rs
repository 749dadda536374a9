//! Noise schedulers of diffusers 0.42.1, reproduced, on one design.
//!
//! * [`SchedulerAlgorithm`] ([`algorithm`]) is what one scheduler implements: its config type, its
//!   own `set_timesteps` and `step` arguments, and the algorithm. Each lives in one file.
//! * [`registry`] lists them, one line each; everything that needs "every scheduler" reads it:
//!   [`Scheduler`] (the dynamic scheduler a pipeline holds), `from_pretrained`'s dispatch on
//!   `_class_name`, `_compatibles`, the Python classes and the CLI's `--scheduler` values.
//! * Shared math has its own modules: [`betas`] (training schedules), [`timesteps`] (spacings),
//!   [`sigmas`] (Karras / exponential / beta σ, σ↔t, the LMS coefficient), [`edm`] (EDM and
//!   consistency-model preconditioning), `dpm_common` (DPM-Solver's α/σ/λ, shared by the
//!   DPM-Solvers, DEIS and UniPC), [`common`] (clipping, thresholding, linear combinations, checks),
//!   [`noise`] (where a stochastic step's noise comes from, including one generator per image).
//!
//! The schedulers: DDPM, DDIM, PNDM, DPM-Solver multistep and singlestep, DEIS, UniPC, Euler, Euler
//! ancestral, Heun, LMS, KDPM2 (+ ancestral), EDM Euler, consistency models (CMStochasticIterative),
//! ScoreSdeVe and RePaint; `docs/schedulers.md` lists them and how to add one.
//!
//! ```no_run
//! use candle_unet2d::rng::Generator;
//! use candle_unet2d::schedulers::{Args, Noise, Scheduler, StepInput};
//! # use candle_unet2d::candle_core;
//! # fn model(x: &candle_core::Tensor, t: f64) -> candle_unet2d::Result<candle_core::Tensor> { Ok(x.clone()) }
//! # fn main() -> candle_unet2d::Result<()> {
//! let mut scheduler = Scheduler::from_pretrained("path/to/pipeline")?;
//! scheduler.set_timesteps(50)?;
//! let mut generator = Generator::from_seed(0);
//! let device = candle_core::Device::Cpu;
//! let mut x = generator.randn_tensor(&[1, 3, 32, 32], &device)?;
//! x = x.affine(scheduler.init_noise_sigma(), 0.0)?;
//! let args = Args::new(); // scheduler-specific step arguments by name, e.g. `eta` for DDIM
//! for t in scheduler.timesteps().to_vec() {
//!     let eps = model(&scheduler.scale_model_input(&x, t)?, t)?;
//!     let input = StepInput::new(&eps, t, &x).with_noise(Noise::Generator(&mut generator));
//!     x = scheduler.step(input, &args)?.prev_sample;
//! }
//! # Ok(()) }
//! ```
//!
//! Numerics: the training tables (βₜ, ᾱₜ, σ) hold the float32 values diffusers keeps (see
//! [`betas::NoiseSchedule`]); every coefficient derived from them is computed in f64; tensor math
//! runs in f32 (f64 for f64 inputs) and results are cast back to the sample's dtype. diffusers does
//! that scalar arithmetic in float32, which near t = 0 and for η = 1 loses up to ~1e-4 relative to
//! cancellation; this crate's steps are the exact values.
//!
//! Randomness: a stochastic step draws from its [`Noise`] source: the `variance_noise` given, one
//! generator, or one generator per image (torch.randn's CPU stream, so a seeded run matches diffusers
//! with `generator=torch.Generator().manual_seed(seed)`, or a list of them). Schedulers own no random
//! source: a stochastic step without one is an error. Deterministic steps never advance a generator.

use std::path::Path;

use candle_core::Tensor;
use serde_json::Value;

use crate::error::{Error, Result};

pub mod algorithm;
pub mod args;
pub mod betas;
pub mod common;
pub mod config;
pub mod consistency;
pub mod ddim;
pub mod ddpm;
pub mod deis;
mod dpm_common;
pub mod dpm_solver;
pub mod dpm_solver_singlestep;
mod dynamic;
pub mod edm;
pub mod edm_euler;
pub mod euler_ancestral;
pub mod euler_discrete;
pub mod heun;
pub mod kdpm2;
pub mod kdpm2_ancestral;
pub mod lms;
pub mod noise;
pub mod pndm;
pub mod registry;
pub mod repaint;
pub mod score_sde_ve;
pub mod sigmas;
pub mod timesteps;
pub mod unipc;

pub use algorithm::{
    MethodInput, MethodSpec, NoArgs, SamplingLoop, SchedulerAlgorithm, SchedulerConfig, SchedulerOutput, StepInput,
    TensorArgs, TimestepType, TimestepsSpec,
};
pub use args::Args;
pub use config::{
    AlgorithmType, BetaSchedule, DdimConfig, DdpmConfig, DpmSolverMultistepConfig, FinalSigmasType, PredictionType,
    SolverType, TimestepSpacing, VarianceType,
};
pub use consistency::{CmStochasticIterativeScheduler, ConsistencyConfig};
pub use ddim::{DdimScheduler, DdimStepArgs};
pub use ddpm::DdpmScheduler;
pub use deis::{DeisConfig, DeisMultistepScheduler};
pub use dpm_solver::DpmSolverMultistepScheduler;
pub use dpm_solver_singlestep::{DpmSolverSinglestepConfig, DpmSolverSinglestepScheduler};
pub use edm_euler::{EdmEulerConfig, EdmEulerScheduler, EdmEulerStepArgs, SigmaSchedule};
pub use euler_ancestral::{EulerAncestralDiscreteConfig, EulerAncestralDiscreteScheduler};
pub use euler_discrete::{
    EulerDiscreteConfig, EulerDiscreteScheduler, EulerStepArgs, EulerTimestepType, InterpolationType,
};
pub use heun::{HeunDiscreteConfig, HeunDiscreteScheduler, HeunTimestepArgs};
pub use kdpm2::{Kdpm2Config, Kdpm2DiscreteScheduler, Kdpm2TimestepArgs};
pub use kdpm2_ancestral::{Kdpm2AncestralConfig, Kdpm2AncestralDiscreteScheduler};
pub use lms::{LmsDiscreteConfig, LmsDiscreteScheduler, LmsStepArgs};
pub use noise::Noise;
pub use pndm::{PndmConfig, PndmScheduler};
pub use registry::SchedulerKind;
pub use repaint::{RePaintConfig, RePaintScheduler, RePaintStepArgs, RePaintTimestepArgs};
pub use score_sde_ve::{ScoreSdeVeConfig, ScoreSdeVeScheduler, ScoreSdeVeTimestepArgs};
pub use unipc::{UniPcConfig, UniPcMultistepScheduler};

use dynamic::DynScheduler;

/// Any registered scheduler, chosen at run time (what a pipeline holds). Its calls take
/// scheduler-specific arguments by name ([`Args`]); [`Scheduler::downcast_ref`] reaches the
/// concrete type and its typed API.
#[derive(Debug)]
pub struct Scheduler(Box<dyn DynScheduler>);

impl Clone for Scheduler {
    fn clone(&self) -> Self {
        Scheduler(self.0.clone_box())
    }
}

impl Scheduler {
    /// Wraps a concrete scheduler.
    pub fn new<S: SchedulerAlgorithm>(scheduler: S) -> Self {
        Scheduler(Box::new(scheduler))
    }

    /// Loads `dir/scheduler_config.json` (or `dir/scheduler/scheduler_config.json` for a pipeline
    /// folder) and builds the scheduler its `_class_name` names.
    pub fn from_pretrained(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_json(&config::read_config_json(dir.as_ref())?)
    }

    /// Builds the scheduler a config object's `_class_name` names.
    pub fn from_json(value: &Value) -> Result<Self> {
        let name = match value.get("_class_name") {
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(Error::config(
                    "_class_name",
                    format!("must be a string, got {other}; supported: {}", SchedulerKind::supported_list()),
                ))
            }
            None => {
                return Err(Error::config(
                    "_class_name",
                    format!(
                        "missing, so the scheduler class is unknown (use from_json_as); supported: {}",
                        SchedulerKind::supported_list()
                    ),
                ))
            }
        };
        Self::from_json_as(SchedulerKind::from_class_name(name)?, value)
    }

    /// Builds a `kind` scheduler from any scheduler's config, ignoring what `kind` does not use (as
    /// `DDIMScheduler.from_config(ddpm.config)`).
    pub fn from_json_as(kind: SchedulerKind, value: &Value) -> Result<Self> {
        kind.build(value)
    }

    /// Loads a folder's scheduler config and builds a `kind` scheduler from it, whatever its class.
    pub fn from_pretrained_as(kind: SchedulerKind, dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_json_as(kind, &config::read_config_json(dir.as_ref())?)
    }

    /// Which scheduler this is.
    pub fn kind(&self) -> SchedulerKind {
        self.0.kind()
    }

    /// The concrete scheduler, if it is an `S`.
    pub fn downcast_ref<S: SchedulerAlgorithm>(&self) -> Option<&S> {
        self.0.as_any().downcast_ref()
    }

    /// The concrete scheduler, mutably, if it is an `S`.
    pub fn downcast_mut<S: SchedulerAlgorithm>(&mut self) -> Option<&mut S> {
        self.0.as_any_mut().downcast_mut()
    }

    /// The full config with `_class_name` set (diffusers' `.config`).
    pub fn config_json(&self) -> Value {
        self.0.config_json()
    }

    /// `num_train_timesteps` of the config.
    pub fn num_train_timesteps(&self) -> usize {
        self.0.num_train_timesteps()
    }

    /// Model evaluations per step (diffusers' `order`).
    pub fn order(&self) -> usize {
        self.0.order()
    }

    /// The standard deviation of the initial noise.
    pub fn init_noise_sigma(&self) -> f64 {
        self.0.init_noise_sigma()
    }

    /// ᾱₜ of the training schedule, for schedulers that have one.
    pub fn alphas_cumprod(&self) -> Option<&[f64]> {
        self.0.alphas_cumprod()
    }

    /// σ of the inference schedule (and the final one), for σ-space schedulers.
    pub fn sigmas(&self) -> Option<&[f64]> {
        self.0.sigmas()
    }

    /// Sets `num_inference_steps` timesteps with the scheduler's default arguments.
    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        self.set_timesteps_with(TimestepsSpec::Count(num_inference_steps), &Args::new())
    }

    /// Sets the inference schedule: a count, explicit timesteps or explicit σ, with the scheduler's
    /// own `set_timesteps` arguments by name.
    pub fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, args: &Args) -> Result<()> {
        self.0.set_timesteps_with(spec, args)
    }

    /// The timesteps to step through, one `step` call each.
    pub fn timesteps(&self) -> &[f64] {
        self.0.timesteps()
    }

    /// Integer or fractional timesteps (int64 or float32 in diffusers).
    pub fn timestep_type(&self) -> TimestepType {
        self.0.timestep_type()
    }

    /// The `num_inference_steps` of the last `set_timesteps`.
    pub fn num_inference_steps(&self) -> Option<usize> {
        self.0.num_inference_steps()
    }

    /// The model input for `timestep` (the identity for schedulers that do not scale it).
    pub fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        self.0.scale_model_input(sample, timestep)
    }

    /// Checks `step` arguments without stepping (before a run's first model call, say).
    pub fn check_step_args(&self, args: &Args) -> Result<()> {
        self.0.check_step_args(args)
    }

    /// One step, with the scheduler's own arguments by name.
    pub fn step(&mut self, input: StepInput<'_>, args: &Args) -> Result<SchedulerOutput> {
        self.0.step(input, args)
    }

    /// Calls a scheduler-specific method ([`SchedulerKind::methods`]) by name.
    pub fn call_method(&mut self, name: &str, input: MethodInput<'_>, args: &Args) -> Result<SchedulerOutput> {
        self.0.call_method(name, input, args)
    }
}

impl<S: SchedulerAlgorithm> From<S> for Scheduler {
    fn from(scheduler: S) -> Self {
        Scheduler::new(scheduler)
    }
}
