//! The interface one scheduler implements, [`SchedulerAlgorithm`], and the types its calls take.
//!
//! A scheduler is a config type ([`SchedulerConfig`]: what `scheduler_config.json` holds), typed
//! arguments for `set_timesteps` and `step` beyond the common ones (parsed by name from what a caller
//! passes, so bindings and the CLI need no per-scheduler code), and the algorithm. Everything else —
//! the dynamic [`super::Scheduler`], `from_pretrained`, the Python classes, the CLI's `--scheduler`
//! values — comes from its [`super::registry`] line.
//!
//! Timesteps are `f64` throughout: the discrete schedulers' integer timesteps are exact in an `f64`,
//! and the σ-space ones (Euler, Heun, EDM, consistency models) use fractional ones.
//! [`SchedulerAlgorithm::timestep_type`] says which, for callers that show them (numpy's int64 or
//! float32, as diffusers keeps them).

use std::fmt::Debug;

use candle_core::Tensor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

use super::config::{parse_config, to_json_with_class};
use super::noise::Noise;

/// A scheduler's config: diffusers' `register_to_config` arguments, with diffusers' defaults.
pub trait SchedulerConfig: Serialize + DeserializeOwned + Default + Clone + Debug + Send + Sync + 'static {
    /// Checks every value; the error names the first bad field.
    fn validate(&self) -> Result<()>;

    /// `num_train_timesteps`.
    fn num_train_timesteps(&self) -> usize;

    /// Parses a config object as diffusers' `from_config` reads it (foreign and `_`-prefixed keys
    /// ignored, `_use_default_values` honoured) and validates it.
    fn parse(value: &Value) -> Result<Self> {
        let config: Self = parse_config(value)?;
        config.validate()?;
        Ok(config)
    }
}

/// The sampling loop a scheduler needs (`crate::pipeline` runs each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SamplingLoop {
    /// Denoise once per timestep: DDPM, DDIM, PNDM, the DPM-Solvers, Euler, consistency models, ….
    Standard,
    /// ScoreSdeVe: `correct_steps` Langevin corrector steps, then a predictor step, per timestep.
    PredictorCorrector,
    /// RePaint: denoise known and unknown regions together, with jumps back up the schedule.
    Inpainting,
}

/// How `set_timesteps` lays out the schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum TimestepsSpec<'a> {
    /// `num_inference_steps` spaced by the config (`timestep_spacing`, σ schedules, …).
    Count(usize),
    /// Explicit timesteps, descending (diffusers' `timesteps=[…]`), where the scheduler allows them.
    Timesteps(&'a [f64]),
    /// Explicit σ, descending (diffusers' `sigmas=[…]`), where the scheduler allows them.
    Sigmas(&'a [f64]),
}

/// Whether a scheduler's timesteps are integers (int64 in diffusers) or fractional (float32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimestepType {
    /// Training-step indices: diffusers keeps them as int64.
    Integer,
    /// Fractional timesteps (σ-space schedulers): diffusers keeps them as float32.
    Float,
}

/// A scheduler method beyond `step` (ScoreSdeVe's `step_pred` / `step_correct`, RePaint's
/// `undo_step`), by diffusers' name and positional parameters, so bindings can expose it without
/// knowing the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodSpec {
    /// diffusers' method name.
    pub name: &'static str,
    /// Its positional parameters in diffusers' order: tensors by name, and `timestep`.
    pub params: &'static [&'static str],
    /// diffusers returns the sample itself rather than an output object (RePaint's `undo_step`).
    pub returns_sample: bool,
}

/// Named tensor arguments of a call beyond the model output and sample (RePaint's `original_image`
/// and `mask`).
#[derive(Clone, Copy, Debug, Default)]
pub struct TensorArgs<'a>(pub &'a [(&'a str, &'a Tensor)]);

impl<'a> TensorArgs<'a> {
    /// The tensor called `name`, if given.
    pub fn get(&self, name: &str) -> Option<&'a Tensor> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }

    /// The tensor called `name`, or an error saying `what` needs it.
    pub fn require(&self, name: &str, what: &str) -> Result<&'a Tensor> {
        self.get(name).ok_or_else(|| Error::argument(name, format!("{what} needs `{name}`")))
    }

    /// The names given.
    pub fn names(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().map(|(n, _)| *n)
    }
}

/// The inputs of one `step`: the model's output for `sample` at `timestep`, the noise source of a
/// stochastic step, and any scheduler-specific tensors.
#[derive(Debug)]
pub struct StepInput<'a> {
    pub model_output: &'a Tensor,
    pub timestep: f64,
    pub sample: &'a Tensor,
    pub noise: Noise<'a>,
    pub tensors: TensorArgs<'a>,
}

impl<'a> StepInput<'a> {
    /// A step with no noise source and no extra tensors.
    pub fn new(model_output: &'a Tensor, timestep: f64, sample: &'a Tensor) -> Self {
        StepInput { model_output, timestep, sample, noise: Noise::None, tensors: TensorArgs::default() }
    }

    /// The same step drawing its noise from `noise`.
    pub fn with_noise(mut self, noise: Noise<'a>) -> Self {
        self.noise = noise;
        self
    }

    /// The same step with extra named tensors.
    pub fn with_tensors(mut self, tensors: &'a [(&'a str, &'a Tensor)]) -> Self {
        self.tensors = TensorArgs(tensors);
        self
    }
}

/// The inputs of a [`MethodSpec`] call: named tensors, the timestep where the method takes one, and
/// the noise source.
#[derive(Debug)]
pub struct MethodInput<'a> {
    pub tensors: TensorArgs<'a>,
    pub timestep: Option<f64>,
    pub noise: Noise<'a>,
}

impl<'a> MethodInput<'a> {
    /// The timestep, or an error saying `what` needs one.
    pub fn require_timestep(&self, what: &str) -> Result<f64> {
        self.timestep.ok_or_else(|| Error::argument("timestep", format!("{what} needs a timestep")))
    }
}

/// What a step returns (diffusers' `SchedulerOutput` and its variants): the fields the diffusers
/// scheduler returns are `Some`.
#[derive(Clone, Debug)]
pub struct SchedulerOutput {
    /// x_{t−1}: the next sample, in the sample's dtype.
    pub prev_sample: Tensor,
    /// The x₀ estimate of this step (after clipping/thresholding).
    pub pred_original_sample: Option<Tensor>,
    /// The mean of x_{t−1} before noise is added (ScoreSdeVe's `prev_sample_mean`).
    pub prev_sample_mean: Option<Tensor>,
}

impl SchedulerOutput {
    /// An output with `prev_sample` only.
    pub fn sample(prev_sample: Tensor) -> Self {
        SchedulerOutput { prev_sample, pred_original_sample: None, prev_sample_mean: None }
    }

    /// An output with `prev_sample` and `pred_original_sample`.
    pub fn with_original(prev_sample: Tensor, pred_original_sample: Tensor) -> Self {
        SchedulerOutput { prev_sample, pred_original_sample: Some(pred_original_sample), prev_sample_mean: None }
    }

    /// The fields diffusers' output has, in its order (`return_dict=False`'s tuple).
    pub fn fields(&self) -> Vec<(&'static str, &Tensor)> {
        let mut fields = vec![("prev_sample", &self.prev_sample)];
        if let Some(mean) = &self.prev_sample_mean {
            fields.push(("prev_sample_mean", mean));
        }
        if let Some(x0) = &self.pred_original_sample {
            fields.push(("pred_original_sample", x0));
        }
        fields
    }
}

/// Arguments for schedulers whose call takes none beyond the common ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// One scheduler: diffusers' class of the same [`Self::CLASS_NAME`].
///
/// Implementations follow diffusers' numerics (training tables in float32 as diffusers keeps them,
/// scalar coefficients in f64, tensor math in f32, or f64 for f64 inputs) and are stricter where
/// diffusers fails late or silently: a step before `set_timesteps`, a timestep not in the schedule,
/// or shapes that do not match are errors naming the argument, and a failed step leaves the state
/// unchanged.
pub trait SchedulerAlgorithm: Clone + Debug + Send + Sync + 'static {
    /// diffusers' class name (`_class_name`).
    const CLASS_NAME: &'static str;
    /// The short name the CLI offers (`--scheduler euler`).
    const SHORT_NAME: &'static str;
    /// One line for the CLI's help: what it is and when to use it.
    const SUMMARY: &'static str;
    /// `num_inference_steps` when a caller gives none.
    const DEFAULT_STEPS: usize;
    /// Whether it is in diffusers' `KarrasDiffusionSchedulers`, the family whose members are each
    /// other's `_compatibles` (they all read a DDPM-style config).
    const KARRAS_FAMILY: bool = true;
    /// `step`'s parameters after `(model_output, timestep, sample)` in diffusers' positional order
    /// (its own arguments, `generator`, `variance_noise`, `return_dict`, extra tensors), so bindings
    /// accept positional calls as diffusers does.
    const STEP_PARAMS: &'static [&'static str] = &["generator", "return_dict"];
    /// `set_timesteps`' parameters in diffusers' positional order.
    const SET_TIMESTEPS_PARAMS: &'static [&'static str] = &["num_inference_steps", "device", "timesteps"];
    /// The sampling loop that drives it: the standard one (`x = step(model(scale_model_input(x, t),
    /// t), t, x)` per timestep) for most; ScoreSdeVe's predictor-corrector and RePaint's inpainting
    /// loop for those two.
    const SAMPLING_LOOP: SamplingLoop = SamplingLoop::Standard;
    /// Tensors `step` takes by name beyond the model output and sample.
    const STEP_TENSORS: &'static [&'static str] = &[];
    /// Methods beyond `step` (see [`Self::call_method`]).
    const METHODS: &'static [MethodSpec] = &[];

    /// The config (`scheduler_config.json`).
    type Config: SchedulerConfig;
    /// `set_timesteps`' own arguments (RePaint's `jump_length`, …), by name.
    type TimestepArgs: DeserializeOwned + Default + Clone + Debug + Send + Sync;
    /// `step`'s own arguments (DDIM's `eta`, Euler's `s_churn`, …), by name.
    type StepArgs: DeserializeOwned + Default + Clone + Debug + Send + Sync;

    /// Builds the scheduler from a config (which it validates).
    fn new(config: Self::Config) -> Result<Self>;

    /// The config it was built from.
    fn config(&self) -> &Self::Config;

    /// Lays out the inference schedule and resets any per-run state.
    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, args: &Self::TimestepArgs) -> Result<()>;

    /// The timesteps to step through, in order (second-order schedulers repeat entries: one `step`
    /// call per entry). Before `set_timesteps` whatever diffusers shows then.
    fn timesteps(&self) -> &[f64];

    /// The `num_inference_steps` of the last `set_timesteps`.
    fn num_inference_steps(&self) -> Option<usize>;

    /// One step from `input.sample` at `input.timestep`, given the model's output there.
    fn step(&mut self, input: StepInput<'_>, args: &Self::StepArgs) -> Result<SchedulerOutput>;

    /// From a config object, ignoring keys this scheduler does not use (as `Cls.from_config`).
    fn from_json(value: &Value) -> Result<Self> {
        Self::new(Self::Config::parse(value)?)
    }

    /// From `dir/scheduler_config.json` or `dir/scheduler/scheduler_config.json`.
    fn from_pretrained(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::from_json(&super::config::read_config_json(dir.as_ref())?)
    }

    /// The full config with `_class_name` and `_diffusers_version` (diffusers' `.config`).
    fn config_json(&self) -> Value {
        to_json_with_class(self.config(), Self::CLASS_NAME)
    }

    /// `set_timesteps(num_inference_steps)` with default arguments.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        super::timesteps::check_inference_count(num_inference_steps)?;
        self.set_timesteps_with(TimestepsSpec::Count(num_inference_steps), &Self::TimestepArgs::default())
    }

    /// Model evaluations per step (diffusers' `order`).
    fn order(&self) -> usize {
        1
    }

    /// The standard deviation of the initial noise.
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// Integer or fractional timesteps.
    fn timestep_type(&self) -> TimestepType {
        TimestepType::Integer
    }

    /// σ at each timestep and the final one, for σ-space schedulers.
    fn sigmas(&self) -> Option<&[f64]> {
        None
    }

    /// ᾱₜ of the training schedule, for schedulers that have one.
    fn alphas_cumprod(&self) -> Option<&[f64]> {
        None
    }

    /// The model input for `timestep` (σ-space schedulers divide by `√(σ² + 1)`); the identity by
    /// default. Takes `&mut self` because diffusers' schedulers settle their step index here.
    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        let _ = timestep;
        Ok(sample.clone())
    }

    /// Calls the method `name` of [`Self::METHODS`] with `args` (its own arguments, by name).
    fn call_method(&mut self, name: &str, input: MethodInput<'_>, args: &Value) -> Result<SchedulerOutput> {
        let _ = (input, args);
        Err(Error::argument("method", format!("{} has no method `{name}`", Self::CLASS_NAME)))
    }
}
