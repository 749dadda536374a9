//! `EulerDiscreteScheduler`: Euler's method on the probability-flow ODE in σ space (Karras et al.,
//! 2022, Algorithm 2, with its optional "churn"), as diffusers 0.42.1's
//! `scheduling_euler_discrete.py` implements it.
//!
//! Supported: every config key diffusers accepts — `interpolation_type` linear/log_linear,
//! `use_karras_sigmas` / `use_exponential_sigmas` / `use_beta_sigmas`, `sigma_min` / `sigma_max`
//! overrides of those conversions, `timestep_spacing`, `steps_offset`, `prediction_type`
//! epsilon/v_prediction/sample, `timestep_type` discrete/continuous (continuous timesteps
//! `0.25·log σ` with `v_prediction`, as in diffusers), `final_sigmas_type`, `rescale_betas_zero_snr`;
//! `set_timesteps` with a count, explicit `timesteps` or explicit `sigmas`; the step arguments
//! `s_churn`, `s_tmin`, `s_tmax`, `s_noise` ([`EulerStepArgs`]).
//!
//! Differences from diffusers, all on inputs diffusers mishandles:
//! * a step or `scale_model_input` before `set_timesteps` is an error (diffusers uses its
//!   1000-entry construction schedule);
//! * after the first step the timestep must be the schedule's next one (diffusers ignores it);
//! * when the first timestep appears more than once in the schedule, a run starts at its first
//!   occurrence (diffusers takes the second, meant for img2img runs, and then overflows its σ table
//!   on the last step); [`EulerDiscreteScheduler::set_begin_index`] starts elsewhere;
//! * `leading`/`trailing` spacing with more steps than training timesteps is refused (diffusers
//!   then repeats timesteps); custom `timesteps` must be strictly descending within
//!   `[0, num_train_timesteps − 1]`, custom `sigmas` strictly descending and ≥ 0;
//! * scalar coefficients are f64 (diffusers: float32 0-d tensors), which moves results by ~1e-7
//!   relative.
//!
//! This file also holds what the Euler family (Euler, Euler ancestral, Heun, LMS) shares on top of
//! [`super::sigmas`]: the σ conversion choice, the config and argument checks, the step-index
//! bookkeeping and the x₀ estimate (`family`).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::algorithm::TimestepsSpec;
use super::algorithm::{NoArgs, SchedulerAlgorithm, SchedulerConfig, SchedulerOutput, StepInput, TimestepType};
use super::betas::{round_f32, torch_linspace_f32};
use super::common::{check_step_tensors, compute_dtype, lin_comb, require_timesteps};
use super::config::{
    validate_classic_beta_schedule, validate_common, validate_steps_offset, BetaSchedule, FinalSigmasType,
    PredictionType, TimestepSpacing,
};
use super::sigmas as sigma_math;
use family::{SigmaConversion, StepIndex, TrainSigmas};

/// How `set_timesteps(n)` gets σ at the inference timesteps before any Karras/exponential/beta
/// conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum InterpolationType {
    /// σ linearly interpolated in the training table at each timestep (`np.interp`).
    #[serde(rename = "linear")]
    Linear,
    /// `n + 1` σ log-uniform between the training table's ends (torch.linspace in float32), as
    /// diffusers does: the schedule then has one σ more than timesteps.
    #[serde(rename = "log_linear")]
    LogLinear,
}

/// What the model is given as its timestep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EulerTimestepType {
    /// Training-step indices (fractional where σ conversions make them so).
    #[serde(rename = "discrete")]
    Discrete,
    /// `0.25·log σ` (only with `prediction_type: v_prediction`, as in diffusers; otherwise the same as
    /// `discrete`).
    #[serde(rename = "continuous")]
    Continuous,
}

/// `EulerDiscreteScheduler`'s config, with diffusers' defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EulerDiscreteConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: PredictionType,
    pub interpolation_type: InterpolationType,
    #[serde(deserialize_with = "family::null_as_false")]
    pub use_karras_sigmas: bool,
    #[serde(deserialize_with = "family::null_as_false")]
    pub use_exponential_sigmas: bool,
    #[serde(deserialize_with = "family::null_as_false")]
    pub use_beta_sigmas: bool,
    /// Overrides the smallest σ of the Karras/exponential/beta conversions.
    pub sigma_min: Option<f64>,
    /// Overrides the largest σ of the Karras/exponential/beta conversions.
    pub sigma_max: Option<f64>,
    pub timestep_spacing: TimestepSpacing,
    pub timestep_type: EulerTimestepType,
    pub steps_offset: i64,
    pub rescale_betas_zero_snr: bool,
    pub final_sigmas_type: FinalSigmasType,
}

impl Default for EulerDiscreteConfig {
    fn default() -> Self {
        EulerDiscreteConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            interpolation_type: InterpolationType::Linear,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            sigma_min: None,
            sigma_max: None,
            timestep_spacing: TimestepSpacing::Linspace,
            timestep_type: EulerTimestepType::Discrete,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
            final_sigmas_type: FinalSigmasType::Zero,
        }
    }
}

impl EulerDiscreteConfig {
    /// Whether timesteps are `0.25·log σ` (continuous timesteps with v-prediction).
    fn continuous_v(&self) -> bool {
        self.timestep_type == EulerTimestepType::Continuous && self.prediction_type == PredictionType::VPrediction
    }
}

impl SchedulerConfig for EulerDiscreteConfig {
    fn validate(&self) -> Result<()> {
        family::validate_schedule(
            self.num_train_timesteps,
            self.beta_start,
            self.beta_end,
            self.beta_schedule,
            self.trained_betas.as_deref(),
            "EulerDiscreteScheduler",
        )?;
        validate_steps_offset(self.steps_offset)?;
        let conversion =
            SigmaConversion::from_flags(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)?;
        for (name, v) in [("sigma_min", self.sigma_min), ("sigma_max", self.sigma_max)] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(Error::config(name, format!("must be a positive number, got {v}")));
                }
            }
        }
        if let (Some(lo), Some(hi)) = (self.sigma_min, self.sigma_max) {
            if lo > hi {
                return Err(Error::config(
                    "sigma_min",
                    format!("{lo} is larger than sigma_max ({hi}): the schedule would go up"),
                ));
            }
        }
        conversion.check_train_timesteps(self.num_train_timesteps)
    }

    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
}

/// `EulerDiscreteScheduler.step`'s own arguments (Karras et al.'s churn), with diffusers' defaults.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EulerStepArgs {
    /// The amount of churn: γ = min(s_churn / (len(σ) − 1), √2 − 1) where σ ∈ [s_tmin, s_tmax].
    #[serde(deserialize_with = "family::float_arg")]
    pub s_churn: f64,
    /// Churn only where σ ≥ s_tmin.
    #[serde(deserialize_with = "family::float_arg")]
    pub s_tmin: f64,
    /// Churn only where σ ≤ s_tmax (default +∞; `"Infinity"` is accepted).
    #[serde(deserialize_with = "family::float_arg")]
    pub s_tmax: f64,
    /// The scale of the churn noise.
    #[serde(deserialize_with = "family::float_arg")]
    pub s_noise: f64,
}

impl Default for EulerStepArgs {
    fn default() -> Self {
        EulerStepArgs { s_churn: 0.0, s_tmin: 0.0, s_tmax: f64::INFINITY, s_noise: 1.0 }
    }
}

impl EulerStepArgs {
    fn validate(&self) -> Result<()> {
        if !(self.s_churn.is_finite() && self.s_churn >= 0.0) {
            return Err(Error::argument("s_churn", format!("must be a finite number ≥ 0, got {}", self.s_churn)));
        }
        if !self.s_noise.is_finite() {
            return Err(Error::argument("s_noise", format!("must be a finite number, got {}", self.s_noise)));
        }
        for (name, v) in [("s_tmin", self.s_tmin), ("s_tmax", self.s_tmax)] {
            if v.is_nan() {
                return Err(Error::argument(name, "must be a number (±Infinity allowed), got NaN"));
            }
        }
        Ok(())
    }
}

/// diffusers' `EulerDiscreteScheduler`.
#[derive(Clone, Debug)]
pub struct EulerDiscreteScheduler {
    config: EulerDiscreteConfig,
    alphas_cumprod: Vec<f64>,
    train: TrainSigmas,
    timesteps: Vec<f64>,
    /// σ at each timestep and the final one (float32 values), as diffusers' `sigmas`.
    sigmas: Vec<f64>,
    num_inference_steps: Option<usize>,
    index: StepIndex,
}

impl EulerDiscreteScheduler {
    /// The index of the next step (None until the first `scale_model_input` or `step` of a run).
    pub fn step_index(&self) -> Option<usize> {
        self.index.step_index
    }

    /// Starts the next run at index `begin_index` of the schedule (diffusers' `set_begin_index`, for
    /// img2img-style partial runs). Reset by `set_timesteps`.
    pub fn set_begin_index(&mut self, begin_index: usize) {
        self.index.begin_index = Some(begin_index);
    }

    /// Timesteps from σ: `0.25·log σ` for continuous v-prediction, else `given`.
    fn timesteps_for(&self, given: Vec<f64>, sigmas: &[f64]) -> Vec<f64> {
        if self.config.continuous_v() {
            sigmas[..sigmas.len() - 1].iter().map(|&s| sigma_math::continuous_timestep(s)).collect()
        } else {
            given.into_iter().map(round_f32).collect()
        }
    }

    fn install(&mut self, timesteps: Vec<f64>, sigmas: Vec<f64>, num_inference_steps: usize) {
        let sigmas: Vec<f64> = sigmas.into_iter().map(round_f32).collect();
        self.timesteps = self.timesteps_for(timesteps, &sigmas);
        self.sigmas = sigmas;
        self.num_inference_steps = Some(num_inference_steps);
        self.index = StepIndex::default();
    }

    /// `set_timesteps(sigmas=[…])`: σ used as given (float32), timesteps by `_sigma_to_t`.
    fn set_custom_sigmas(&mut self, sigmas: &[f64]) -> Result<()> {
        family::check_custom_sigmas(sigmas)?;
        let sigmas: Vec<f64> = sigmas.iter().map(|&s| round_f32(s)).collect();
        let timesteps = sigmas[..sigmas.len() - 1]
            .iter()
            .map(|&s| sigma_math::sigma_to_t_f32(s, &self.train.log_sigmas, sigma_math::Float32Path::Numpy))
            .collect::<Result<Vec<f64>>>()?;
        let n = sigmas.len() - 1;
        self.install(timesteps, sigmas, n);
        Ok(())
    }

    /// `set_timesteps(n)` or `set_timesteps(timesteps=[…])`.
    fn set_spaced_or_custom(&mut self, timesteps: Option<&[f64]>, count: usize) -> Result<()> {
        let c = &self.config;
        let conversion = SigmaConversion::from_flags(c.use_karras_sigmas, c.use_exponential_sigmas, c.use_beta_sigmas)?;
        let (timesteps, n) = match timesteps {
            Some(ts) => {
                if conversion != SigmaConversion::None {
                    return Err(Error::argument(
                        "timesteps",
                        format!("custom timesteps cannot be used with {} (as in diffusers)", conversion.config_key()),
                    ));
                }
                if c.continuous_v() {
                    return Err(Error::argument(
                        "timesteps",
                        "custom timesteps cannot be used with timestep_type `continuous` and v_prediction \
                         (as in diffusers); give sigmas instead",
                    ));
                }
                family::check_custom_timesteps(ts, c.num_train_timesteps)?;
                (ts.iter().map(|&t| round_f32(t)).collect::<Vec<f64>>(), ts.len())
            }
            None => {
                family::check_count(count, c.num_train_timesteps, c.timestep_spacing)?;
                let ts = sigma_math::sigma_timesteps(c.timestep_spacing, c.num_train_timesteps, count, c.steps_offset);
                (ts, count)
            }
        };
        let train = &self.train;
        let interpolated = match c.interpolation_type {
            InterpolationType::Linear => sigma_math::interp_sigmas(&timesteps, &train.sigmas)?,
            InterpolationType::LogLinear => {
                // torch.linspace(log σ_max, log σ_min, n + 1).exp() in float32
                let (lo, hi) = (train.log_sigmas[0], train.log_sigmas[train.log_sigmas.len() - 1]);
                torch_linspace_f32(hi, lo, n + 1).into_iter().map(|v| round_f32(v.exp())).collect()
            }
        };
        let (mut sigmas, timesteps) =
            match conversion.convert(&interpolated, n, c.sigma_min, c.sigma_max, &train.log_sigmas)? {
                Some((sigmas, timesteps)) => (sigmas, timesteps),
                None => (interpolated, timesteps),
            };
        sigmas.push(match c.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => train.sigmas[0],
        });
        self.install(timesteps, sigmas, n);
        Ok(())
    }

    /// One Euler step (diffusers' `EulerDiscreteScheduler.step`); draws noise only where γ > 0.
    fn step_impl(&mut self, input: StepInput<'_>, args: &EulerStepArgs) -> Result<SchedulerOutput> {
        let StepInput { model_output, timestep, sample, mut noise, .. } = input;
        require_timesteps(self.num_inference_steps)?;
        args.validate()?;
        let shape = check_step_tensors(model_output, sample)?;
        let i = self.index.resolve(&self.timesteps, timestep, false)?;
        let sigma = self.sigmas[i];
        let sigma_next = self.sigmas[i + 1];
        let gamma = if args.s_tmin <= sigma && sigma <= args.s_tmax {
            (args.s_churn / (self.sigmas.len() - 1) as f64).min(2f64.sqrt() - 1.0)
        } else {
            0.0
        };
        let sigma_hat = sigma * (gamma + 1.0);

        let out_dtype = sample.dtype();
        let dtype = compute_dtype(out_dtype);
        let mut x = sample.to_dtype(dtype)?;
        let model_output = model_output.to_dtype(dtype)?;
        if gamma > 0.0 {
            let eps = noise.draw(&shape, x.device(), dtype, "an Euler step with s_churn > 0")?;
            let scale = args.s_noise * (sigma_hat * sigma_hat - sigma * sigma).sqrt();
            x = lin_comb(&[(&x, 1.0), (&eps, scale)])?;
        }
        // diffusers uses σ̂ for ε but σ for v
        let x0 = family::pred_original(self.config.prediction_type, &x, &model_output, sigma_hat, sigma)?;
        let derivative = lin_comb(&[(&x, 1.0 / sigma_hat), (&x0, -1.0 / sigma_hat)])?;
        let prev = lin_comb(&[(&x, 1.0), (&derivative, sigma_next - sigma_hat)])?;
        let out = SchedulerOutput::with_original(prev.to_dtype(out_dtype)?, x0.to_dtype(out_dtype)?);
        self.index.advance(i);
        Ok(out)
    }
}

impl SchedulerAlgorithm for EulerDiscreteScheduler {
    const CLASS_NAME: &'static str = "EulerDiscreteScheduler";
    const SHORT_NAME: &'static str = "euler";
    const SUMMARY: &'static str = "Euler (σ space, deterministic unless s_churn > 0): fast and simple, 20–50 steps";
    const DEFAULT_STEPS: usize = 50;
    const STEP_PARAMS: &'static [&'static str] =
        &["s_churn", "s_tmin", "s_tmax", "s_noise", "generator", "return_dict"];
    const SET_TIMESTEPS_PARAMS: &'static [&'static str] = &["num_inference_steps", "device", "timesteps", "sigmas"];

    type Config = EulerDiscreteConfig;
    type TimestepArgs = NoArgs;
    type StepArgs = EulerStepArgs;

    fn new(config: EulerDiscreteConfig) -> Result<Self> {
        config.validate()?;
        let alphas_cumprod = family::alphas_cumprod(
            config.beta_schedule,
            config.beta_start,
            config.beta_end,
            config.num_train_timesteps,
            config.trained_betas.as_deref(),
            config.rescale_betas_zero_snr,
        )?;
        let train = TrainSigmas::new(&alphas_cumprod);
        // before set_timesteps: the training σ, descending, and 0
        let mut sigmas: Vec<f64> = train.sigmas.iter().rev().copied().collect();
        sigmas.push(0.0);
        let timesteps: Vec<f64> = (0..config.num_train_timesteps).rev().map(|t| t as f64).collect();
        let mut s = EulerDiscreteScheduler {
            config,
            alphas_cumprod,
            train,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            num_inference_steps: None,
            index: StepIndex::default(),
        };
        s.timesteps = s.timesteps_for(timesteps, &sigmas);
        s.sigmas = sigmas;
        Ok(s)
    }

    fn config(&self) -> &EulerDiscreteConfig {
        &self.config
    }

    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, _args: &NoArgs) -> Result<()> {
        match spec {
            TimestepsSpec::Count(n) => self.set_spaced_or_custom(None, n),
            TimestepsSpec::Timesteps(ts) => self.set_spaced_or_custom(Some(ts), 0),
            TimestepsSpec::Sigmas(s) => self.set_custom_sigmas(s),
        }
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    fn init_noise_sigma(&self) -> f64 {
        family::init_noise_sigma(&self.sigmas, self.config.timestep_spacing)
    }

    fn timestep_type(&self) -> TimestepType {
        TimestepType::Float
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn alphas_cumprod(&self) -> Option<&[f64]> {
        Some(&self.alphas_cumprod)
    }

    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        require_timesteps(self.num_inference_steps)?;
        let i = self.index.resolve(&self.timesteps, timestep, false)?;
        let out = family::scale_by_sigma(sample, self.sigmas[i])?;
        self.index.settle(i);
        Ok(out)
    }

    fn step(&mut self, input: StepInput<'_>, args: &EulerStepArgs) -> Result<SchedulerOutput> {
        self.step_impl(input, args)
    }
}

/// What the Euler-family schedulers (Euler, Euler ancestral, Heun, LMS) share: config checks, the
/// training σ table, the inference σ conversions, the step index and the x₀ estimate.
pub(crate) mod family {
    use candle_core::Tensor;
    use serde::de::{self, Deserializer, Visitor};
    use serde::Deserialize;

    use crate::error::{Error, Result};

    use super::super::betas::NoiseSchedule;
    use super::super::common::{check_float, lin_comb, resolve_step_index, TimestepMatch};
    use super::super::config::{BetaSchedule, PredictionType, TimestepSpacing};
    use super::*;

    /// The training schedule checks of the family (classic beta schedules only).
    pub(crate) fn validate_schedule(
        num_train_timesteps: usize,
        beta_start: f64,
        beta_end: f64,
        beta_schedule: BetaSchedule,
        trained_betas: Option<&[f64]>,
        class_name: &str,
    ) -> Result<()> {
        // these schedulers have no thresholding: pass the valid defaults for its checks
        validate_common(num_train_timesteps, beta_start, beta_end, trained_betas, 0.995, 1.0)?;
        validate_classic_beta_schedule(beta_schedule, trained_betas.is_some(), class_name)
    }

    /// ᾱ as diffusers keeps it (float32), with ᾱ_{N−1} = 2⁻²⁴ under `rescale_betas_zero_snr` (as
    /// diffusers sets it, so σ stays finite).
    pub(crate) fn alphas_cumprod(
        schedule: BetaSchedule,
        beta_start: f64,
        beta_end: f64,
        n: usize,
        trained_betas: Option<&[f64]>,
        rescale_betas_zero_snr: bool,
    ) -> Result<Vec<f64>> {
        let mut ac = NoiseSchedule::new(schedule, beta_start, beta_end, n, trained_betas, rescale_betas_zero_snr)?
            .alphas_cumprod;
        if rescale_betas_zero_snr {
            if let Some(last) = ac.last_mut() {
                *last = 2f64.powi(-24);
            }
        }
        Ok(ac)
    }

    /// The training σ table (ascending in t) and its float32 log.
    #[derive(Clone, Debug)]
    pub(crate) struct TrainSigmas {
        pub sigmas: Vec<f64>,
        pub log_sigmas: Vec<f64>,
    }

    impl TrainSigmas {
        pub(crate) fn new(alphas_cumprod: &[f64]) -> Self {
            let sigmas = sigma_math::train_sigmas(alphas_cumprod);
            let log_sigmas = sigma_math::log_sigmas(&sigmas);
            TrainSigmas { sigmas, log_sigmas }
        }
    }

    /// The σ conversion of `use_karras_sigmas` / `use_exponential_sigmas` / `use_beta_sigmas`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum SigmaConversion {
        None,
        Karras,
        Exponential,
        Beta,
    }

    impl SigmaConversion {
        /// The conversion the flags ask for; more than one is refused (as in diffusers).
        pub(crate) fn from_flags(karras: bool, exponential: bool, beta: bool) -> Result<Self> {
            match (karras, exponential, beta) {
                (false, false, false) => Ok(SigmaConversion::None),
                (true, false, false) => Ok(SigmaConversion::Karras),
                (false, true, false) => Ok(SigmaConversion::Exponential),
                (false, false, true) => Ok(SigmaConversion::Beta),
                _ => Err(Error::config(
                    "use_karras_sigmas",
                    "only one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas can be true",
                )),
            }
        }

        pub(crate) fn config_key(self) -> &'static str {
            match self {
                SigmaConversion::None => "no σ conversion",
                SigmaConversion::Karras => "use_karras_sigmas",
                SigmaConversion::Exponential => "use_exponential_sigmas",
                SigmaConversion::Beta => "use_beta_sigmas",
            }
        }

        /// The conversions map σ back to timesteps by interpolating the training table, which
        /// needs two entries.
        pub(crate) fn check_train_timesteps(self, num_train_timesteps: usize) -> Result<()> {
            if self != SigmaConversion::None && num_train_timesteps < 2 {
                return Err(Error::config(
                    self.config_key(),
                    "needs at least 2 training timesteps (σ are mapped back to timesteps by interpolation)",
                ));
            }
            Ok(())
        }

        /// `n` converted σ (from σ_max = `interpolated[0]` down to σ_min = `interpolated[-1]`, or the
        /// overrides) and their fractional timesteps (`_sigma_to_t`); `None` without a conversion.
        pub(crate) fn convert(
            self,
            interpolated: &[f64],
            n: usize,
            sigma_min: Option<f64>,
            sigma_max: Option<f64>,
            log_sigmas: &[f64],
        ) -> Result<Option<(Vec<f64>, Vec<f64>)>> {
            if self == SigmaConversion::None {
                return Ok(None);
            }
            let lo = sigma_min.unwrap_or(interpolated[interpolated.len() - 1]);
            let hi = sigma_max.unwrap_or(interpolated[0]);
            if lo > hi {
                let field = if sigma_min.is_some() { "sigma_min" } else { "sigma_max" };
                return Err(Error::config(
                    field,
                    format!("σ_min {lo} is larger than σ_max {hi}: the converted schedule would go up"),
                ));
            }
            let sigmas = match self {
                SigmaConversion::Karras => sigma_math::karras_sigmas(lo, hi, n, sigma_math::KARRAS_RHO),
                SigmaConversion::Exponential => sigma_math::exponential_sigmas(lo, hi, n),
                SigmaConversion::Beta => {
                    sigma_math::beta_sigmas(lo, hi, n, sigma_math::BETA_SIGMAS_ALPHA, sigma_math::BETA_SIGMAS_BETA)?
                }
                SigmaConversion::None => unreachable!("handled above"),
            };
            let timesteps =
                sigmas.iter().map(|&s| sigma_math::sigma_to_t(s, log_sigmas)).collect::<Result<Vec<f64>>>()?;
            Ok(Some((sigmas, timesteps)))
        }
    }

    /// `1 ≤ n`, and `n ≤ N` for `leading`/`trailing` spacing, which repeat timesteps beyond that
    /// (diffusers does not check; `linspace` spaces any count).
    pub(crate) fn check_count(n: usize, num_train_timesteps: usize, spacing: TimestepSpacing) -> Result<()> {
        if n == 0 {
            return Err(Error::argument("num_inference_steps", "must be at least 1, got 0"));
        }
        if n > num_train_timesteps && spacing != TimestepSpacing::Linspace {
            return Err(Error::argument(
                "num_inference_steps",
                format!(
                    "{n} is larger than num_train_timesteps ({num_train_timesteps}): `{}` spacing would repeat \
                     timesteps; use at most {num_train_timesteps} steps or `linspace` spacing",
                    spacing.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// Custom timesteps: non-empty, strictly descending, within `[0, N − 1]`.
    pub(crate) fn check_custom_timesteps(timesteps: &[f64], num_train_timesteps: usize) -> Result<()> {
        if timesteps.is_empty() {
            return Err(Error::argument("timesteps", "must not be empty"));
        }
        let max = (num_train_timesteps - 1) as f64;
        if let Some(bad) = timesteps.iter().find(|t| !(**t >= 0.0 && **t <= max)) {
            return Err(Error::argument(
                "timesteps",
                format!("custom timestep {bad} is outside the training range [0, {max}]"),
            ));
        }
        if timesteps.windows(2).any(|w| round_f32(w[1]) >= round_f32(w[0])) {
            return Err(Error::argument(
                "timesteps",
                "custom timesteps must be strictly descending (and distinct as float32)",
            ));
        }
        Ok(())
    }

    /// Custom σ (the final one included): at least two, finite, ≥ 0, strictly descending.
    pub(crate) fn check_custom_sigmas(sigmas: &[f64]) -> Result<()> {
        if sigmas.len() < 2 {
            return Err(Error::argument(
                "sigmas",
                format!("needs at least 2 values (each step's σ and the final one), got {}", sigmas.len()),
            ));
        }
        if let Some(bad) = sigmas.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
            return Err(Error::argument("sigmas", format!("every σ must be a finite number ≥ 0, got {bad}")));
        }
        if sigmas.windows(2).any(|w| round_f32(w[1]) >= round_f32(w[0])) {
            return Err(Error::argument(
                "sigmas",
                "custom sigmas must be strictly descending (and distinct as float32), ending with the final σ",
            ));
        }
        Ok(())
    }

    /// diffusers' `init_noise_sigma`: max σ for `linspace`/`trailing`, else `√(max σ² + 1)` (in float32,
    /// as diffusers computes it on its σ tensor).
    pub(crate) fn init_noise_sigma(sigmas: &[f64], spacing: TimestepSpacing) -> f64 {
        let max = sigmas.iter().copied().fold(f64::NEG_INFINITY, f64::max) as f32;
        match spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt() as f64,
        }
    }

    /// `sample / √(σ² + 1)`, in the sample's dtype.
    pub(crate) fn scale_by_sigma(sample: &Tensor, sigma: f64) -> Result<Tensor> {
        check_float("sample", sample)?;
        Ok(sample.affine(1.0 / (sigma * sigma + 1.0).sqrt(), 0.0)?)
    }

    /// The x₀ estimate: `x − σ_eps·ε` (epsilon), `−σ_v/√(σ_v²+1)·v + x/(σ_v²+1)` (v_prediction) or the
    /// output itself (sample). diffusers' Euler uses σ̂ for ε and σ for v, hence two σ.
    pub(crate) fn pred_original(
        prediction_type: PredictionType,
        x: &Tensor,
        model_output: &Tensor,
        sigma_eps: f64,
        sigma_v: f64,
    ) -> Result<Tensor> {
        match prediction_type {
            PredictionType::Epsilon => lin_comb(&[(x, 1.0), (model_output, -sigma_eps)]),
            PredictionType::VPrediction => {
                let s2 = sigma_v * sigma_v + 1.0;
                lin_comb(&[(model_output, -sigma_v / s2.sqrt()), (x, 1.0 / s2)])
            }
            PredictionType::Sample => Ok(model_output.clone()),
        }
    }

    /// diffusers' `_step_index` / `_begin_index`: where the run is in the schedule.
    #[derive(Clone, Copy, Debug, Default)]
    pub(crate) struct StepIndex {
        pub step_index: Option<usize>,
        pub begin_index: Option<usize>,
    }

    impl StepIndex {
        /// The index this call works at: the current one, or on a run's first call the
        /// `set_begin_index` one or that of `timestep` in the schedule. `second_match` takes the
        /// second occurrence of a repeated timestep (Heun's first-order entry), else the first.
        /// Checks that the timestep is the one at that index and that the run is not over. Changes
        /// nothing ([`Self::settle`] and [`Self::advance`] do).
        pub(crate) fn resolve(&self, timesteps: &[f64], timestep: f64, second_match: bool) -> Result<usize> {
            // diffusers compares in float32 (the schedule is a float32 tensor)
            let current = self.step_index.or(self.begin_index);
            resolve_step_index(timesteps, current, timestep, TimestepMatch::Float32, second_match)
        }

        /// Records `index` as the current step (a `scale_model_input` on a run's first call).
        pub(crate) fn settle(&mut self, index: usize) {
            self.step_index = Some(index);
        }

        /// Moves past the step at `index`.
        pub(crate) fn advance(&mut self, index: usize) {
            self.step_index = Some(index + 1);
        }
    }

    /// Reads `null` as `false` (diffusers types the σ flags `bool | None`).
    pub(crate) fn null_as_false<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
        Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
    }

    /// A float argument: a number, or `"Infinity"`, `"-Infinity"`, `"inf"`, `"-inf"`, `"NaN"` (JSON
    /// cannot hold non-finite numbers; `s_tmax` defaults to +∞).
    pub(crate) fn float_arg<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
        d.deserialize_any(FloatArg)
    }

    struct FloatArg;

    impl Visitor<'_> for FloatArg {
        type Value = f64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number (or \"Infinity\", \"-Infinity\")")
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<f64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<f64, E> {
            Ok(v as f64)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<f64, E> {
            Ok(v as f64)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<f64, E> {
            match v {
                "Infinity" | "inf" | "+Infinity" => Ok(f64::INFINITY),
                "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
                "NaN" | "nan" => Ok(f64::NAN),
                other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::schedulers::Noise;

    fn scheduler(config: EulerDiscreteConfig) -> EulerDiscreteScheduler {
        EulerDiscreteScheduler::new(config).unwrap()
    }

    fn tensors() -> (Tensor, Tensor) {
        let x = Tensor::arange(0f32, 8.0, &Device::Cpu).unwrap().reshape((2, 4)).unwrap();
        let e = Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap();
        (x, e)
    }

    #[test]
    fn schedule_matches_diffusers_shapes() {
        let mut s = scheduler(EulerDiscreteConfig::default());
        assert_eq!(s.timesteps().len(), 1000);
        assert!(s.num_inference_steps().is_none());
        s.set_timesteps(10).unwrap();
        assert_eq!(s.timesteps().len(), 10);
        assert_eq!(s.sigmas().unwrap().len(), 11);
        assert_eq!(s.timesteps()[0], 999.0);
        assert_eq!(*s.sigmas().unwrap().last().unwrap(), 0.0);
        // log_linear: n + 1 σ before the final one, as in diffusers
        let mut s =
            scheduler(EulerDiscreteConfig { interpolation_type: InterpolationType::LogLinear, ..Default::default() });
        s.set_timesteps(10).unwrap();
        assert_eq!(s.sigmas().unwrap().len(), 12);
        // continuous v: 0.25·log σ
        let mut s = scheduler(EulerDiscreteConfig {
            timestep_type: EulerTimestepType::Continuous,
            prediction_type: PredictionType::VPrediction,
            ..Default::default()
        });
        s.set_timesteps(5).unwrap();
        let sig = s.sigmas().unwrap()[0];
        assert!((s.timesteps()[0] - 0.25 * sig.ln()).abs() < 1e-6);
    }

    #[test]
    fn init_noise_sigma_depends_on_spacing() {
        let mut s = scheduler(EulerDiscreteConfig::default());
        s.set_timesteps(10).unwrap();
        let max = s.sigmas().unwrap()[0];
        assert_eq!(s.init_noise_sigma(), max);
        let mut s = scheduler(EulerDiscreteConfig { timestep_spacing: TimestepSpacing::Leading, ..Default::default() });
        s.set_timesteps(10).unwrap();
        let max = s.sigmas().unwrap()[0];
        assert!((s.init_noise_sigma() - (max * max + 1.0).sqrt()).abs() < 1e-4);
    }

    #[test]
    fn bad_configs_are_refused() {
        let both = EulerDiscreteConfig { use_karras_sigmas: true, use_exponential_sigmas: true, ..Default::default() };
        assert!(EulerDiscreteScheduler::new(both).is_err());
        let inverted = EulerDiscreteConfig { sigma_min: Some(10.0), sigma_max: Some(1.0), ..Default::default() };
        let e = EulerDiscreteScheduler::new(inverted).unwrap_err().to_string();
        assert!(e.contains("sigma_min"), "{e}");
        let bad = EulerDiscreteConfig { beta_schedule: BetaSchedule::Sigmoid, ..Default::default() };
        assert!(EulerDiscreteScheduler::new(bad).is_err());
        let v = serde_json::json!({"use_karras_sigmas": null, "interpolation_type": "log_linear"});
        let c = EulerDiscreteConfig::parse(&v).unwrap();
        assert!(!c.use_karras_sigmas);
        assert!(EulerDiscreteConfig::parse(&serde_json::json!({"timestep_type": "fractional"})).is_err());
    }

    #[test]
    fn set_timesteps_errors() {
        let mut s = scheduler(EulerDiscreteConfig::default());
        assert!(s.set_timesteps(0).is_err());
        // linspace spaces more steps than training timesteps; leading would repeat them
        s.set_timesteps(1500).unwrap();
        let mut lead =
            scheduler(EulerDiscreteConfig { timestep_spacing: TimestepSpacing::Leading, ..Default::default() });
        assert!(lead.set_timesteps(1001).is_err());
        let none = NoArgs {};
        for bad in [&[10.0, 20.0][..], &[10.0, 10.0], &[1000.0, 10.0], &[-1.0], &[]] {
            let e = s.set_timesteps_with(TimestepsSpec::Timesteps(bad), &none).unwrap_err().to_string();
            assert!(e.contains("timesteps"), "{bad:?}: {e}");
        }
        for bad in [&[1.0][..], &[1.0, 2.0, 0.0], &[3.0, 3.0, 0.0], &[2.0, -1.0], &[f64::NAN, 0.0]] {
            let e = s.set_timesteps_with(TimestepsSpec::Sigmas(bad), &none).unwrap_err().to_string();
            assert!(e.contains("sigmas"), "{bad:?}: {e}");
        }
        let mut k = scheduler(EulerDiscreteConfig { use_karras_sigmas: true, ..Default::default() });
        assert!(k.set_timesteps_with(TimestepsSpec::Timesteps(&[500.0, 100.0]), &none).is_err());
        // custom sigmas and timesteps are accepted
        s.set_timesteps_with(TimestepsSpec::Sigmas(&[14.6, 3.0, 0.5, 0.0]), &none).unwrap();
        assert_eq!(s.timesteps().len(), 3);
        assert_eq!(s.num_inference_steps(), Some(3));
        s.set_timesteps_with(TimestepsSpec::Timesteps(&[900.0, 500.5, 0.0]), &none).unwrap();
        assert_eq!(s.timesteps(), &[900.0, 500.5, 0.0]);
        assert_eq!(s.sigmas().unwrap().len(), 4);
    }

    #[test]
    fn step_errors_leave_state_untouched() {
        let (x, e) = tensors();
        let mut s = scheduler(EulerDiscreteConfig::default());
        let args = EulerStepArgs::default();
        assert!(s.step(StepInput::new(&e, 999.0, &x), &args).is_err(), "before set_timesteps");
        assert!(s.scale_model_input(&x, 999.0).is_err(), "before set_timesteps");
        s.set_timesteps(4).unwrap();
        let ts = s.timesteps().to_vec();
        assert!(s.step(StepInput::new(&e, 123.0, &x), &args).is_err(), "not in schedule");
        let wrong = Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&wrong, ts[0], &x), &args).is_err(), "shape");
        let ints = Tensor::new(&[[1u32; 4]; 2], &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&ints, ts[0], &x), &args).is_err(), "dtype");
        let churn = EulerStepArgs { s_churn: 1.0, ..Default::default() };
        assert!(s.step(StepInput::new(&e, ts[0], &x), &churn).is_err(), "churn needs noise");
        let nan = EulerStepArgs { s_tmin: f64::NAN, ..Default::default() };
        assert!(s.step(StepInput::new(&e, ts[0], &x), &nan).is_err());
        assert_eq!(s.step_index(), None);
        s.step(StepInput::new(&e, ts[0], &x), &args).unwrap();
        assert_eq!(s.step_index(), Some(1));
        assert!(s.step(StepInput::new(&e, ts[2], &x), &args).is_err(), "out of order");
        assert_eq!(s.step_index(), Some(1));
        let noise = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        s.step(StepInput::new(&e, ts[1], &x).with_noise(Noise::Given(&noise)), &churn).unwrap();
        s.step(StepInput::new(&e, ts[2], &x), &args).unwrap();
        s.step(StepInput::new(&e, ts[3], &x), &args).unwrap();
        assert!(s.step(StepInput::new(&e, ts[3], &x), &args).is_err(), "past the end");
    }

    #[test]
    fn euler_step_follows_the_ode() {
        // ε-prediction with ε = x/σ (x₀ = 0): one step scales x by σ_next/σ
        let mut s = scheduler(EulerDiscreteConfig::default());
        s.set_timesteps(5).unwrap();
        let (x, _) = tensors();
        let t = s.timesteps()[0];
        let (sigma, next) = (s.sigmas().unwrap()[0], s.sigmas().unwrap()[1]);
        let scaled = s.scale_model_input(&x, t).unwrap();
        let want = (x.to_vec2::<f32>().unwrap()[1][3] as f64) / (sigma * sigma + 1.0).sqrt();
        assert!((scaled.to_vec2::<f32>().unwrap()[1][3] as f64 - want).abs() < 1e-5);
        let eps = x.affine(1.0 / sigma, 0.0).unwrap();
        let out = s.step(StepInput::new(&eps, t, &x), &EulerStepArgs::default()).unwrap();
        let got = out.prev_sample.to_vec2::<f32>().unwrap()[1][3] as f64;
        assert!((got - 7.0 * next / sigma).abs() < 1e-4, "{got}");
        assert!(out.pred_original_sample.is_some());
    }

    #[test]
    fn step_args_parse_infinity() {
        let args: EulerStepArgs = crate::schedulers::Args::new()
            .with("s_tmax", "Infinity")
            .with("s_churn", 0.5)
            .parse("EulerDiscreteScheduler.step")
            .unwrap();
        assert_eq!(args.s_tmax, f64::INFINITY);
        assert_eq!(args.s_noise, 1.0);
        assert!(crate::schedulers::Args::new().with("eta", 0.5).parse::<EulerStepArgs>("step").is_err());
    }

    #[test]
    fn beta_and_exponential_sigmas_match_diffusers() {
        // EulerDiscreteScheduler(use_beta_sigmas=True, scaled_linear 0.00085–0.012).set_timesteps(6)
        let mut s = scheduler(EulerDiscreteConfig {
            use_beta_sigmas: true,
            beta_schedule: BetaSchedule::ScaledLinear,
            beta_start: 0.00085,
            beta_end: 0.012,
            ..Default::default()
        });
        s.set_timesteps(6).unwrap();
        let sigmas = [
            14.614646911621094,
            12.82177448272705,
            9.324479103088379,
            5.319335460662842,
            1.8220402002334595,
            0.02916753478348255,
            0.0,
        ];
        let timesteps = [999.0, 977.0966796875, 920.731201171875, 808.697021484375, 535.184814453125, 0.0];
        for (a, b) in s.sigmas().unwrap().iter().zip(sigmas) {
            assert!((a - b).abs() <= 1e-6 * b.max(1.0), "{a} vs {b}");
        }
        for (a, b) in s.timesteps().iter().zip(timesteps) {
            assert!((a - b).abs() <= 1e-4, "{a} vs {b}");
        }
        // use_exponential_sigmas with sigma_min/sigma_max overrides and final_sigmas_type sigma_min
        let mut s = scheduler(EulerDiscreteConfig {
            use_exponential_sigmas: true,
            sigma_min: Some(0.1),
            sigma_max: Some(20.0),
            final_sigmas_type: FinalSigmasType::SigmaMin,
            ..Default::default()
        });
        s.set_timesteps(4).unwrap();
        let sigmas = [20.0, 3.419951915740967, 0.5848035216331482, 0.10000000149011612, 0.010001329705119133];
        let timesteps = [768.2537231445312, 498.7767639160156, 166.29617309570312, 26.409259796142578];
        for (a, b) in s.sigmas().unwrap().iter().zip(sigmas) {
            assert!((a - b).abs() <= 1e-6 * b.max(1.0), "{a} vs {b}");
        }
        for (a, b) in s.timesteps().iter().zip(timesteps) {
            assert!((a - b).abs() <= 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn lms_coefficient_integrates_lagrange_exactly() {
        // order 1: ∫ 1 dτ over [σ₀, σ₁]
        let s = [10.0, 7.0, 4.0, 2.0, 0.0];
        assert!((sigma_math::lms_coefficient(&s, 1, 0, 0).unwrap() + 3.0).abs() < 1e-12);
        // order 2 at t = 1: the basis polynomials sum to 1, so the coefficients sum to σ₂ − σ₁
        let c: f64 = (0..2).map(|k| sigma_math::lms_coefficient(&s, 2, 1, k).unwrap()).sum();
        assert!((c + 3.0).abs() < 1e-12);
        // ∫_7^4 (τ − 10)/(7 − 10) dτ = [(τ−10)²/(−6)]_7^4 = (36 − 9)/(−6) = −4.5
        assert!((sigma_math::lms_coefficient(&s, 2, 1, 0).unwrap() + 4.5).abs() < 1e-12);
        assert!(sigma_math::lms_coefficient(&s, 0, 1, 0).is_err());
    }
}
