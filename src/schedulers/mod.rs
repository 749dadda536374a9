//! Noise schedulers of diffusers 0.42.1, reproduced: `DDPMScheduler`, `DDIMScheduler` and
//! `DPMSolverMultistepScheduler`, with their configs (`scheduler_config.json`), beta schedules and
//! timestep spacings.
//!
//! [`Scheduler`] is the common interface (an enum over the three), built from a model or pipeline
//! folder with [`Scheduler::from_pretrained`] (dispatching on `_class_name`) or converted from another
//! scheduler's config with [`Scheduler::from_json_as`] (as `DDIMScheduler.from_config(ddpm.config)`).
//! Each concrete scheduler has the same methods and can be used directly.
//!
//! ```no_run
//! use candle_unet2d::rng::Generator;
//! use candle_unet2d::schedulers::{Scheduler, StepOptions};
//! # use candle_unet2d::candle_core;
//! # fn model(x: &candle_core::Tensor, t: i64) -> candle_unet2d::Result<candle_core::Tensor> { Ok(x.clone()) }
//! # fn main() -> candle_unet2d::Result<()> {
//! let mut scheduler = Scheduler::from_pretrained("path/to/pipeline")?;
//! scheduler.set_timesteps(50)?;
//! let mut generator = Generator::from_seed(0);
//! let device = candle_core::Device::Cpu;
//! let mut x = generator.randn_tensor(&[1, 3, 32, 32], &device)?;
//! x = x.affine(scheduler.init_noise_sigma(), 0.0)?;
//! for t in scheduler.timesteps().to_vec() {
//!     let eps = model(&scheduler.scale_model_input(&x, t)?, t)?;
//!     let opts = StepOptions { generator: Some(&mut generator), ..Default::default() };
//!     x = scheduler.step(&eps, t, &x, opts)?.prev_sample;
//! }
//! # Ok(()) }
//! ```
//!
//! Numerics: the training tables (βₜ, ᾱₜ, DPM-Solver's σ) hold the float32 values diffusers keeps
//! (see [`betas::NoiseSchedule`]); every coefficient derived from them is computed in f64; tensor math
//! runs in f32 (f64 for f64 inputs) and results are cast back to the sample's dtype. diffusers does
//! that scalar arithmetic in float32, which near t = 0 and for η = 1 loses up to ~1e-4 relative to
//! cancellation; this crate's steps are the exact values (diffusers run in float64 on its own
//! float32 tables gives the same numbers to ~1e-6).
//!
//! Randomness: stochastic steps (DDPM with `t > 0`, DDIM with `eta > 0`, the `sde-` DPM-Solvers) add
//! `StepOptions::variance_noise` when given, else draw a tensor of the sample's shape from
//! `StepOptions::generator` with [`Generator::randn_tensor`] (torch.randn's CPU stream, so a seeded run
//! matches diffusers with `generator=torch.Generator().manual_seed(seed)`). Schedulers own no random
//! source: a stochastic step with neither is an error. Deterministic steps never advance the generator.

use std::path::Path;

use candle_core::Tensor;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::rng::Generator;

pub mod betas;
mod common;
pub mod config;
pub mod ddim;
pub mod ddpm;
pub mod dpm_solver;
pub mod edm;
pub mod sigmas;
pub mod timesteps;

pub use config::{
    AlgorithmType, BetaSchedule, DdimConfig, DdpmConfig, DpmSolverMultistepConfig, FinalSigmasType, PredictionType,
    SolverType, TimestepSpacing, VarianceType,
};
pub use ddim::DdimScheduler;
pub use ddpm::DdpmScheduler;
pub use dpm_solver::DpmSolverMultistepScheduler;

/// Per-step options of [`Scheduler::step`].
#[derive(Debug, Default)]
pub struct StepOptions<'a> {
    /// DDIM's η (0: deterministic, 1: DDPM-like). Ignored by DDPM and DPM-Solver.
    pub eta: f64,
    /// Where stochastic steps draw their noise from when `variance_noise` is not given.
    pub generator: Option<&'a mut Generator>,
    /// The noise to add in a stochastic step (shaped like the sample), instead of drawing it.
    pub variance_noise: Option<&'a Tensor>,
}

/// What a step returns.
#[derive(Clone, Debug)]
pub struct SchedulerOutput {
    /// x_{t−1}: the next sample, in the sample's dtype.
    pub prev_sample: Tensor,
    /// The x₀ estimate of this step (after clipping/thresholding).
    pub pred_original_sample: Option<Tensor>,
}

/// The supported scheduler classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `DDPMScheduler`.
    Ddpm,
    /// `DDIMScheduler`.
    Ddim,
    /// `DPMSolverMultistepScheduler`.
    DpmSolverMultistep,
}

impl SchedulerKind {
    /// Every supported kind.
    pub const ALL: [SchedulerKind; 3] = [SchedulerKind::Ddpm, SchedulerKind::Ddim, SchedulerKind::DpmSolverMultistep];

    /// diffusers' class name (`_class_name` in configs).
    pub fn class_name(self) -> &'static str {
        match self {
            SchedulerKind::Ddpm => "DDPMScheduler",
            SchedulerKind::Ddim => "DDIMScheduler",
            SchedulerKind::DpmSolverMultistep => "DPMSolverMultistepScheduler",
        }
    }

    /// The kind of a diffusers class name.
    pub fn from_class_name(name: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|k| k.class_name() == name).ok_or_else(|| {
            Error::config(
                "_class_name",
                format!("unsupported scheduler class `{name}`; supported: {}", Self::supported_list()),
            )
        })
    }

    fn supported_list() -> String {
        Self::ALL.map(|k| k.class_name()).join(", ")
    }
}

impl std::fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.class_name())
    }
}

impl std::str::FromStr for SchedulerKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::from_class_name(s)
    }
}

/// One of the supported schedulers.
#[derive(Clone, Debug)]
pub enum Scheduler {
    Ddpm(DdpmScheduler),
    Ddim(DdimScheduler),
    DpmSolverMultistep(DpmSolverMultistepScheduler),
}

macro_rules! dispatch {
    ($self:expr, $s:ident => $body:expr) => {
        match $self {
            Scheduler::Ddpm($s) => $body,
            Scheduler::Ddim($s) => $body,
            Scheduler::DpmSolverMultistep($s) => $body,
        }
    };
}

impl Scheduler {
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
        Ok(match kind {
            SchedulerKind::Ddpm => Scheduler::Ddpm(DdpmScheduler::from_json(value)?),
            SchedulerKind::Ddim => Scheduler::Ddim(DdimScheduler::from_json(value)?),
            SchedulerKind::DpmSolverMultistep => {
                Scheduler::DpmSolverMultistep(DpmSolverMultistepScheduler::from_json(value)?)
            }
        })
    }

    /// Loads a folder's scheduler config and builds a `kind` scheduler from it, whatever its class.
    pub fn from_pretrained_as(kind: SchedulerKind, dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_json_as(kind, &config::read_config_json(dir.as_ref())?)
    }

    /// Which scheduler this is.
    pub fn kind(&self) -> SchedulerKind {
        dispatch!(self, s => s.kind())
    }

    /// The full config with `_class_name` set (diffusers' `.config`).
    pub fn config_json(&self) -> Value {
        dispatch!(self, s => s.config_json())
    }

    /// `num_train_timesteps` of the config.
    pub fn num_train_timesteps(&self) -> usize {
        dispatch!(self, s => s.num_train_timesteps())
    }

    /// Model evaluations per step (diffusers' `order`; 1 for all three).
    pub fn order(&self) -> usize {
        dispatch!(self, s => s.order())
    }

    /// σ of the initial noise (1 for all three).
    pub fn init_noise_sigma(&self) -> f64 {
        dispatch!(self, s => s.init_noise_sigma())
    }

    /// ᾱₜ of the training schedule.
    pub fn alphas_cumprod(&self) -> &[f64] {
        dispatch!(self, s => s.alphas_cumprod())
    }

    /// Sets the inference schedule (and resets DPM-Solver's history).
    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        dispatch!(self, s => s.set_timesteps(num_inference_steps))
    }

    /// The timesteps to step through, descending.
    pub fn timesteps(&self) -> &[i64] {
        dispatch!(self, s => s.timesteps())
    }

    /// Scales the model input for timestep `t` (the identity for these schedulers).
    pub fn scale_model_input(&self, sample: &Tensor, timestep: i64) -> Result<Tensor> {
        dispatch!(self, s => s.scale_model_input(sample, timestep))
    }

    /// One reverse step from `sample` at `timestep`, given the model's output there.
    pub fn step(
        &mut self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
        opts: StepOptions<'_>,
    ) -> Result<SchedulerOutput> {
        dispatch!(self, s => s.step(model_output, timestep, sample, opts))
    }
}

impl From<DdpmScheduler> for Scheduler {
    fn from(s: DdpmScheduler) -> Self {
        Scheduler::Ddpm(s)
    }
}

impl From<DdimScheduler> for Scheduler {
    fn from(s: DdimScheduler) -> Self {
        Scheduler::Ddim(s)
    }
}

impl From<DpmSolverMultistepScheduler> for Scheduler {
    fn from(s: DpmSolverMultistepScheduler) -> Self {
        Scheduler::DpmSolverMultistep(s)
    }
}
