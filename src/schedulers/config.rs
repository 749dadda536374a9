//! Scheduler configurations: what diffusers writes to `scheduler_config.json`, with diffusers' defaults
//! for every field, parsed with serde and validated.
//!
//! As diffusers' `ConfigMixin.from_config` does, parsing ignores keys a scheduler does not use (so one
//! scheduler's config can build another kind), ignores `_`-prefixed keys (`_class_name`,
//! `_diffusers_version`, …) and honours `_use_default_values` (keys listed there fall back to defaults).
//! Type errors name the offending field (through `serde_path_to_error`), and [`DdpmConfig::validate`]
//! and friends reject values diffusers would refuse or that cannot work.
//!
//! Python's `json` writes `-inf` as the bare token `-Infinity` (DPMSolver's `lambda_min_clipped`
//! defaults to it); [`parse_json_text`] accepts those tokens, and float fields accept the strings
//! `"Infinity"`, `"-Infinity"` and `"NaN"`. [`DdpmConfig::to_json`] and friends write a non-finite float
//! as such a string, since `serde_json::Value` cannot hold one.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

use super::betas::NoiseSchedule;

/// The diffusers release whose schedulers these configs and algorithms mirror.
pub const DIFFUSERS_VERSION: &str = "0.42.1";

/// The largest `num_train_timesteps` accepted (schedules are tables of this length; real models use ≤ 4000).
pub const MAX_TRAIN_TIMESTEPS: usize = 1_000_000;

/// How the betas (per-step noise variances) of the training schedule are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BetaSchedule {
    /// `linspace(beta_start, beta_end, N)`.
    #[serde(rename = "linear")]
    Linear,
    /// `linspace(sqrt(beta_start), sqrt(beta_end), N)²` (latent diffusion).
    #[serde(rename = "scaled_linear")]
    ScaledLinear,
    /// The Glide / improved-DDPM cosine schedule (`betas_for_alpha_bar`, capped at 0.999).
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
    /// GeoDiff's sigmoid schedule (DDPMScheduler only, as in diffusers).
    #[serde(rename = "sigmoid")]
    Sigmoid,
    /// The laplace `alpha_bar` schedule (DDPMScheduler only, as in diffusers).
    #[serde(rename = "laplace")]
    Laplace,
    /// `betas_for_alpha_bar` with ᾱ(t) = exp(−12t) (HeunDiscreteScheduler only, as in diffusers).
    #[serde(rename = "exp")]
    Exp,
}

impl BetaSchedule {
    /// The name diffusers uses in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            BetaSchedule::Linear => "linear",
            BetaSchedule::ScaledLinear => "scaled_linear",
            BetaSchedule::SquaredcosCapV2 => "squaredcos_cap_v2",
            BetaSchedule::Sigmoid => "sigmoid",
            BetaSchedule::Laplace => "laplace",
            BetaSchedule::Exp => "exp",
        }
    }
}

/// What the model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PredictionType {
    /// The noise ε.
    #[serde(rename = "epsilon")]
    Epsilon,
    /// The clean sample x₀.
    #[serde(rename = "sample")]
    Sample,
    /// The velocity v = √ᾱ·ε − √(1−ᾱ)·x₀ (Imagen Video, section 2.4).
    #[serde(rename = "v_prediction")]
    VPrediction,
}

impl PredictionType {
    /// The name diffusers uses in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            PredictionType::Epsilon => "epsilon",
            PredictionType::Sample => "sample",
            PredictionType::VPrediction => "v_prediction",
        }
    }
}

/// How inference timesteps are picked from the training range (Table 2 of "Common Diffusion Noise
/// Schedules and Sample Steps are Flawed").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TimestepSpacing {
    /// Evenly spaced from 0 to N−1, rounded.
    #[serde(rename = "linspace")]
    Linspace,
    /// Multiples of `N / n` starting at 0, plus `steps_offset`.
    #[serde(rename = "leading")]
    Leading,
    /// Multiples of `N / n` counted down from N, minus one.
    #[serde(rename = "trailing")]
    Trailing,
}

impl TimestepSpacing {
    /// The name diffusers uses in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            TimestepSpacing::Linspace => "linspace",
            TimestepSpacing::Leading => "leading",
            TimestepSpacing::Trailing => "trailing",
        }
    }
}

/// The variance of DDPM's reverse step (and, for the `learned*` kinds, whether the model predicts it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum VarianceType {
    /// The posterior variance β̃ₜ.
    #[serde(rename = "fixed_small")]
    FixedSmall,
    /// β̃ₜ through its log (same values; rl-diffuser).
    #[serde(rename = "fixed_small_log")]
    FixedSmallLog,
    /// βₜ.
    #[serde(rename = "fixed_large")]
    FixedLarge,
    /// βₜ through its log (Glide's max_log).
    #[serde(rename = "fixed_large_log")]
    FixedLargeLog,
    /// The model predicts the variance itself in its second half of channels.
    #[serde(rename = "learned")]
    Learned,
    /// The model predicts an interpolation between log β̃ₜ and log βₜ (improved DDPM).
    #[serde(rename = "learned_range")]
    LearnedRange,
}

impl VarianceType {
    /// The name diffusers uses in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            VarianceType::FixedSmall => "fixed_small",
            VarianceType::FixedSmallLog => "fixed_small_log",
            VarianceType::FixedLarge => "fixed_large",
            VarianceType::FixedLargeLog => "fixed_large_log",
            VarianceType::Learned => "learned",
            VarianceType::LearnedRange => "learned_range",
        }
    }

    /// Whether the model output carries a predicted variance (twice the sample's channels).
    pub fn is_learned(self) -> bool {
        matches!(self, VarianceType::Learned | VarianceType::LearnedRange)
    }
}

/// DPM-Solver's algorithm. `deis` is read as `dpmsolver++`, as diffusers does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AlgorithmType {
    /// DPM-Solver on the noise prediction (deprecated in diffusers; needs `final_sigmas_type: sigma_min`).
    #[serde(rename = "dpmsolver")]
    DpmSolver,
    /// DPM-Solver++ on the data prediction (the default).
    #[serde(rename = "dpmsolver++", alias = "deis")]
    DpmSolverPlusPlus,
    /// Stochastic DPM-Solver (deprecated in diffusers; needs `final_sigmas_type: sigma_min`).
    #[serde(rename = "sde-dpmsolver")]
    SdeDpmSolver,
    /// Stochastic DPM-Solver++.
    #[serde(rename = "sde-dpmsolver++")]
    SdeDpmSolverPlusPlus,
}

impl AlgorithmType {
    /// The name diffusers uses in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            AlgorithmType::DpmSolver => "dpmsolver",
            AlgorithmType::DpmSolverPlusPlus => "dpmsolver++",
            AlgorithmType::SdeDpmSolver => "sde-dpmsolver",
            AlgorithmType::SdeDpmSolverPlusPlus => "sde-dpmsolver++",
        }
    }

    /// Whether the solver works on the data prediction x₀ (the `++` variants).
    pub fn is_data_prediction(self) -> bool {
        matches!(self, AlgorithmType::DpmSolverPlusPlus | AlgorithmType::SdeDpmSolverPlusPlus)
    }

    /// Whether each step adds fresh noise (the `sde-` variants).
    pub fn is_stochastic(self) -> bool {
        matches!(self, AlgorithmType::SdeDpmSolver | AlgorithmType::SdeDpmSolverPlusPlus)
    }
}

/// DPM-Solver's second-order formula. `logrho`, `bh1`, `bh2` are read as `midpoint`, as diffusers does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SolverType {
    /// The midpoint formula (recommended).
    #[serde(rename = "midpoint", alias = "logrho", alias = "bh1", alias = "bh2")]
    Midpoint,
    /// Heun's formula.
    #[serde(rename = "heun")]
    Heun,
}

impl SolverType {
    /// The name diffusers uses in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            SolverType::Midpoint => "midpoint",
            SolverType::Heun => "heun",
        }
    }
}

/// The σ appended after the last inference timestep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FinalSigmasType {
    /// σ = 0: the last step lands on the clean sample.
    #[serde(rename = "zero")]
    Zero,
    /// σ of training timestep 0.
    #[serde(rename = "sigma_min")]
    SigmaMin,
}

impl FinalSigmasType {
    /// The name diffusers uses in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            FinalSigmasType::Zero => "zero",
            FinalSigmasType::SigmaMin => "sigma_min",
        }
    }
}

/// `DDPMScheduler`'s config, with diffusers' defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DdpmConfig {
    pub num_train_timesteps: usize,
    #[serde(with = "json_float")]
    pub beta_start: f64,
    #[serde(with = "json_float")]
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub variance_type: VarianceType,
    pub clip_sample: bool,
    pub prediction_type: PredictionType,
    pub thresholding: bool,
    #[serde(with = "json_float")]
    pub dynamic_thresholding_ratio: f64,
    #[serde(with = "json_float")]
    pub clip_sample_range: f64,
    #[serde(with = "json_float")]
    pub sample_max_value: f64,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub rescale_betas_zero_snr: bool,
}

impl Default for DdpmConfig {
    fn default() -> Self {
        DdpmConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            variance_type: VarianceType::FixedSmall,
            clip_sample: true,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            clip_sample_range: 1.0,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
        }
    }
}

/// `DDIMScheduler`'s config, with diffusers' defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DdimConfig {
    pub num_train_timesteps: usize,
    #[serde(with = "json_float")]
    pub beta_start: f64,
    #[serde(with = "json_float")]
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub clip_sample: bool,
    pub set_alpha_to_one: bool,
    pub steps_offset: i64,
    pub prediction_type: PredictionType,
    pub thresholding: bool,
    #[serde(with = "json_float")]
    pub dynamic_thresholding_ratio: f64,
    #[serde(with = "json_float")]
    pub clip_sample_range: f64,
    #[serde(with = "json_float")]
    pub sample_max_value: f64,
    pub timestep_spacing: TimestepSpacing,
    pub rescale_betas_zero_snr: bool,
}

impl Default for DdimConfig {
    fn default() -> Self {
        DdimConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            clip_sample: true,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            clip_sample_range: 1.0,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            rescale_betas_zero_snr: false,
        }
    }
}

/// `DPMSolverMultistepScheduler`'s config, with diffusers' defaults.
///
/// Every field diffusers saves is kept (so [`DpmSolverMultistepConfig::to_json`] is complete), but
/// `use_beta_sigmas` and `use_flow_sigmas` (with `prediction_type: flow_prediction`) are not
/// implemented and are rejected by [`DpmSolverMultistepConfig::validate`]; `flow_shift`,
/// `use_dynamic_shifting` and `time_shift_type` only matter with flow sigmas and are carried as is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DpmSolverMultistepConfig {
    pub num_train_timesteps: usize,
    #[serde(with = "json_float")]
    pub beta_start: f64,
    #[serde(with = "json_float")]
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub solver_order: usize,
    pub prediction_type: PredictionType,
    pub thresholding: bool,
    #[serde(with = "json_float")]
    pub dynamic_thresholding_ratio: f64,
    #[serde(with = "json_float")]
    pub sample_max_value: f64,
    pub algorithm_type: AlgorithmType,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_lu_lambdas: bool,
    pub use_flow_sigmas: bool,
    #[serde(with = "json_float")]
    pub flow_shift: f64,
    pub final_sigmas_type: FinalSigmasType,
    #[serde(with = "json_float")]
    pub lambda_min_clipped: f64,
    /// `learned`/`learned_range`: the model output carries predicted-variance channels, which are
    /// dropped. Other values (a DDPM config's `fixed_small`, …) are kept but mean "none", as in diffusers.
    pub variance_type: Option<VarianceType>,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub rescale_betas_zero_snr: bool,
    pub use_dynamic_shifting: bool,
    pub time_shift_type: String,
}

impl Default for DpmSolverMultistepConfig {
    fn default() -> Self {
        DpmSolverMultistepConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            solver_order: 2,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            algorithm_type: AlgorithmType::DpmSolverPlusPlus,
            solver_type: SolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_lu_lambdas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            final_sigmas_type: FinalSigmasType::Zero,
            lambda_min_clipped: f64::NEG_INFINITY,
            variance_type: None,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
            use_dynamic_shifting: false,
            time_shift_type: "exponential".to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// The checks every scheduler shares: the training schedule and the x₀ clipping/thresholding values.
pub fn validate_common(
    num_train_timesteps: usize,
    beta_start: f64,
    beta_end: f64,
    trained_betas: Option<&[f64]>,
    dynamic_thresholding_ratio: f64,
    sample_max_value: f64,
) -> Result<()> {
    if num_train_timesteps == 0 {
        return Err(Error::config("num_train_timesteps", "must be at least 1, got 0"));
    }
    if num_train_timesteps > MAX_TRAIN_TIMESTEPS {
        return Err(Error::config(
            "num_train_timesteps",
            format!("{num_train_timesteps} is larger than the supported maximum {MAX_TRAIN_TIMESTEPS}"),
        ));
    }
    for (name, v) in [("beta_start", beta_start), ("beta_end", beta_end)] {
        if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
            return Err(Error::config(name, format!("must be a number in [0, 1], got {v}")));
        }
    }
    if let Some(betas) = trained_betas {
        if betas.len() != num_train_timesteps {
            return Err(Error::config(
                "trained_betas",
                format!("has {} values but num_train_timesteps is {num_train_timesteps}", betas.len()),
            ));
        }
        if let Some((i, b)) = betas.iter().enumerate().find(|(_, b)| !(b.is_finite() && (0.0..=1.0).contains(*b))) {
            return Err(Error::config(
                "trained_betas",
                format!("value {i} is {b}; every beta must be a number in [0, 1]"),
            ));
        }
    }
    if !(dynamic_thresholding_ratio > 0.0 && dynamic_thresholding_ratio <= 1.0) {
        return Err(Error::config(
            "dynamic_thresholding_ratio",
            format!("must be in (0, 1], got {dynamic_thresholding_ratio}"),
        ));
    }
    if !(sample_max_value.is_finite() && sample_max_value > 0.0) {
        return Err(Error::config("sample_max_value", format!("must be a positive number, got {sample_max_value}")));
    }
    Ok(())
}

/// The methods every config has alike, over the fields all three share under the same names (the
/// training schedule and the x₀ thresholding values).
macro_rules! shared_config_methods {
    ($($config:ty),*) => {$(
        impl $config {
            /// Parses (ignoring foreign and `_`-prefixed keys) and validates.
            pub fn from_json(value: &Value) -> Result<Self> {
                let config: Self = parse_config(value)?;
                config.validate()?;
                Ok(config)
            }

            /// [`validate_common`] on this config's values.
            fn validate_common(&self) -> Result<()> {
                validate_common(
                    self.num_train_timesteps,
                    self.beta_start,
                    self.beta_end,
                    self.trained_betas.as_deref(),
                    self.dynamic_thresholding_ratio,
                    self.sample_max_value,
                )
            }

            /// The training schedule (βₜ, ᾱₜ) these values describe, with diffusers' float32 tables.
            pub(crate) fn noise_schedule(&self) -> Result<NoiseSchedule> {
                NoiseSchedule::new(
                    self.beta_schedule,
                    self.beta_start,
                    self.beta_end,
                    self.num_train_timesteps,
                    self.trained_betas.as_deref(),
                    self.rescale_betas_zero_snr,
                )
            }
        }
    )*};
}

shared_config_methods!(DdpmConfig, DdimConfig, DpmSolverMultistepConfig);

pub fn validate_steps_offset(steps_offset: i64) -> Result<()> {
    if steps_offset < 0 {
        return Err(Error::config("steps_offset", format!("must be ≥ 0, got {steps_offset}")));
    }
    Ok(())
}

pub fn validate_clip_range(clip_sample_range: f64) -> Result<()> {
    if !(clip_sample_range.is_finite() && clip_sample_range > 0.0) {
        return Err(Error::config("clip_sample_range", format!("must be a positive number, got {clip_sample_range}")));
    }
    Ok(())
}

/// DDIM and DPM-Solver know only the three classic beta schedules (diffusers raises otherwise).
pub fn validate_classic_beta_schedule(schedule: BetaSchedule, trained: bool, class_name: &str) -> Result<()> {
    if trained {
        return Ok(());
    }
    match schedule {
        BetaSchedule::Linear | BetaSchedule::ScaledLinear | BetaSchedule::SquaredcosCapV2 => Ok(()),
        other => Err(Error::config(
            "beta_schedule",
            format!(
                "`{}` is not implemented for {class_name} (diffusers supports it only in DDPMScheduler); \
                 use linear, scaled_linear or squaredcos_cap_v2",
                other.as_str()
            ),
        )),
    }
}

impl DdpmConfig {
    /// Checks every value; the error names the first bad field.
    pub fn validate(&self) -> Result<()> {
        self.validate_common()?;
        if self.trained_betas.is_none() && self.beta_schedule == BetaSchedule::Exp {
            return Err(Error::config(
                "beta_schedule",
                "`exp` is not implemented for DDPMScheduler (diffusers has it only in HeunDiscreteScheduler)",
            ));
        }
        validate_clip_range(self.clip_sample_range)?;
        validate_steps_offset(self.steps_offset)
    }

    /// The full config as diffusers' `.config` shows it, with `_class_name` and `_diffusers_version`.
    pub fn to_json(&self) -> Value {
        to_json_with_class(self, "DDPMScheduler")
    }
}

impl DdimConfig {
    /// Checks every value; the error names the first bad field.
    pub fn validate(&self) -> Result<()> {
        self.validate_common()?;
        validate_classic_beta_schedule(self.beta_schedule, self.trained_betas.is_some(), "DDIMScheduler")?;
        validate_clip_range(self.clip_sample_range)?;
        validate_steps_offset(self.steps_offset)
    }

    /// The full config as diffusers' `.config` shows it, with `_class_name` and `_diffusers_version`.
    pub fn to_json(&self) -> Value {
        to_json_with_class(self, "DDIMScheduler")
    }
}

impl DpmSolverMultistepConfig {
    /// Checks every value; the error names the first bad field.
    pub fn validate(&self) -> Result<()> {
        self.validate_common()?;
        validate_classic_beta_schedule(
            self.beta_schedule,
            self.trained_betas.is_some(),
            "DPMSolverMultistepScheduler",
        )?;
        validate_steps_offset(self.steps_offset)?;
        if !(1..=3).contains(&self.solver_order) {
            return Err(Error::config("solver_order", format!("must be 1, 2 or 3, got {}", self.solver_order)));
        }
        let sigma_kinds = [self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas];
        if sigma_kinds.iter().filter(|b| **b).count() > 1 {
            return Err(Error::config(
                "use_karras_sigmas",
                "only one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas can be true",
            ));
        }
        if self.use_beta_sigmas {
            return Err(Error::config(
                "use_beta_sigmas",
                "beta sigmas are not supported by this implementation (they need scipy's beta ppf)",
            ));
        }
        if self.use_flow_sigmas {
            return Err(Error::config(
                "use_flow_sigmas",
                "flow-matching sigmas are not supported by this implementation",
            ));
        }
        if !self.algorithm_type.is_data_prediction() && self.final_sigmas_type == FinalSigmasType::Zero {
            return Err(Error::config(
                "final_sigmas_type",
                format!(
                    "`zero` is not supported with algorithm_type `{}`; use `sigma_min`",
                    self.algorithm_type.as_str()
                ),
            ));
        }
        if self.lambda_min_clipped.is_nan() {
            return Err(Error::config("lambda_min_clipped", "must be a number (or -Infinity), got NaN"));
        }
        // `variance_type` other than learned/learned_range (e.g. a DDPM config's `fixed_small`) is
        // accepted and means "no predicted variance", as in diffusers.
        Ok(())
    }

    /// The full config as diffusers' `.config` shows it, with `_class_name` and `_diffusers_version`.
    /// `lambda_min_clipped = -inf` appears as the string `"-Infinity"`.
    pub fn to_json(&self) -> Value {
        to_json_with_class(self, "DPMSolverMultistepScheduler")
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing and loading
// ---------------------------------------------------------------------------------------------

/// Deserializes a config object as diffusers' `extract_init_dict` would read it: keys listed in
/// `_use_default_values` and `_`-prefixed keys are dropped, unknown keys are ignored, missing keys take
/// their defaults. A type error names the field (`Error::InvalidConfig`).
pub fn parse_config<T: DeserializeOwned>(value: &Value) -> Result<T> {
    let Value::Object(map) = value else {
        return Err(Error::config("config", format!("expected a JSON object, got {}", json_kind(value))));
    };
    let use_defaults: Vec<String> = match map.get("_use_default_values") {
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    };
    let filtered: serde_json::Map<String, Value> = map
        .iter()
        .filter(|(k, _)| !k.starts_with('_') && !use_defaults.iter().any(|d| d == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serde_path_to_error::deserialize(Value::Object(filtered)).map_err(|e| {
        let path = e.path().to_string();
        let field = if path.is_empty() || path == "." { "config".to_string() } else { path };
        Error::config(field, e.into_inner().to_string())
    })
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub fn to_json_with_class<T: Serialize>(config: &T, class_name: &str) -> Value {
    // Serializing these plain structs into a `Value` cannot fail (string keys, non-finite floats
    // written as strings); fall back to an empty object rather than panic.
    let mut value = serde_json::to_value(config).unwrap_or(Value::Object(Default::default()));
    if let Value::Object(map) = &mut value {
        map.insert("_class_name".into(), Value::String(class_name.into()));
        map.insert("_diffusers_version".into(), Value::String(DIFFUSERS_VERSION.into()));
    }
    value
}

/// Parses JSON text as Python's `json` writes it: the bare tokens `NaN`, `Infinity` and `-Infinity`
/// (outside strings) are read as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`, which the float
/// fields of the configs accept. `path` only labels the error (`Error::ConfigParse`).
pub fn parse_json_text(text: &str, path: &Path) -> Result<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Ok(v),
        Err(first) => {
            let quoted = quote_non_finite_tokens(text);
            if quoted == text {
                return Err(Error::ConfigParse { path: path.to_path_buf(), reason: first.to_string() });
            }
            serde_json::from_str::<Value>(&quoted)
                .map_err(|_| Error::ConfigParse { path: path.to_path_buf(), reason: first.to_string() })
        }
    }
}

/// Wraps the bare tokens `NaN`, `Infinity`, `-Infinity` that appear outside JSON strings in quotes.
fn quote_non_finite_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
            out.push(c);
            rest = &rest[1..];
            continue;
        }
        let mut matched = false;
        for token in ["-Infinity", "Infinity", "NaN"] {
            if rest.starts_with(token) {
                out.push('"');
                out.push_str(token);
                out.push('"');
                rest = &rest[token.len()..];
                matched = true;
                break;
            }
        }
        if !matched {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Finds the scheduler config of `dir`: `dir/scheduler_config.json`, or `dir/scheduler/scheduler_config.json`
/// for a diffusers pipeline folder. `dir` may also be the JSON file itself.
pub fn find_config_file(dir: &Path) -> Result<PathBuf> {
    // Anything that is not a folder is the file itself: reading it says what it is if it is no
    // regular file (a FIFO, a device).
    if crate::files::exists(dir) && !dir.is_dir() {
        return Ok(dir.to_path_buf());
    }
    if !dir.exists() {
        return Err(Error::NotFound { what: format!("scheduler folder {}", dir.display()) });
    }
    // Anything at these names counts as found: reading it then says what it is if it is not a file.
    let direct = dir.join("scheduler_config.json");
    if crate::files::exists(&direct) {
        return Ok(direct);
    }
    let nested = dir.join("scheduler").join("scheduler_config.json");
    if crate::files::exists(&nested) {
        return Ok(nested);
    }
    Err(Error::NotFound {
        what: format!(
            "scheduler_config.json in {} (looked for {} and {})",
            dir.display(),
            direct.display(),
            nested.display()
        ),
    })
}

/// The `scheduler_config.json` that `SchedulerMixin.from_pretrained(path, subfolder=…)` reads:
/// `path` is a folder (its `subfolder`, else itself or its `scheduler/`), the JSON file itself, or
/// a Hub id, whose scheduler config alone is downloaded (see [`crate::hub`]).
pub fn locate_config_file(path: &Path, subfolder: Option<&str>, hub: &crate::hub::HubOptions) -> Result<PathBuf> {
    let subfolder = subfolder.filter(|s| !s.is_empty());
    let wanted = crate::hub::Wanted::Scheduler { subfolder: subfolder.map(str::to_string) };
    let Some(mut dir) = crate::hub::locate(path, &wanted, hub)? else {
        return Err(Error::NotFound { what: format!("scheduler folder {}", path.display()) });
    };
    if let Some(sub) = subfolder {
        let nested = dir.join(sub);
        if !nested.is_dir() {
            return Err(Error::NotFound { what: format!("subfolder {sub:?} in {}", path.display()) });
        }
        dir = nested;
    }
    find_config_file(&dir)
}

/// Reads the scheduler config of `dir` (see [`find_config_file`]) as a JSON object.
pub fn read_config_json(dir: &Path) -> Result<Value> {
    let path = find_config_file(dir)?;
    let text = crate::files::read_json_text(&path)?;
    let value = parse_json_text(&text, &path)?;
    if !value.is_object() {
        return Err(Error::ConfigParse { path, reason: format!("expected a JSON object, got {}", json_kind(&value)) });
    }
    Ok(value)
}

/// (De)serializes an `f64` as a JSON number, or as `"Infinity"`, `"-Infinity"`, `"NaN"` when it is
/// not finite (the tokens Python's `json` writes, quoted by [`parse_json_text`]).
pub(crate) mod json_float {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("Infinity")
        } else {
            s.serialize_str("-Infinity")
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        d.deserialize_any(FloatVisitor)
    }

    struct FloatVisitor;

    impl Visitor<'_> for FloatVisitor {
        type Value = f64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number (or \"Infinity\", \"-Infinity\", \"NaN\")")
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
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
    use super::*;

    #[test]
    fn python_non_finite_tokens_are_read() {
        let text = r#"{"lambda_min_clipped": -Infinity, "x": [NaN, Infinity], "s": "NaN -Infinity \" Infinity"}"#;
        let v = parse_json_text(text, Path::new("t.json")).unwrap();
        assert_eq!(v["lambda_min_clipped"], "-Infinity");
        assert_eq!(v["x"][0], "NaN");
        assert_eq!(v["x"][1], "Infinity");
        assert_eq!(v["s"], "NaN -Infinity \" Infinity");
        let c: DpmSolverMultistepConfig = parse_config(&v).unwrap();
        assert_eq!(c.lambda_min_clipped, f64::NEG_INFINITY);
        assert!(parse_json_text("{\"a\": Infinit}", Path::new("t.json")).is_err());
    }

    #[test]
    fn type_errors_name_the_field() {
        let e = parse_config::<DdpmConfig>(&serde_json::json!({"beta_start": "small"})).unwrap_err();
        assert!(matches!(&e, Error::InvalidConfig { field, .. } if field == "beta_start"), "{e}");
        let e = parse_config::<DdpmConfig>(&serde_json::json!({"trained_betas": [0.1, "x"]})).unwrap_err();
        assert!(matches!(&e, Error::InvalidConfig { field, .. } if field.starts_with("trained_betas")), "{e}");
    }
}

macro_rules! scheduler_config {
    ($($config:ty),*) => {$(
        impl super::algorithm::SchedulerConfig for $config {
            fn validate(&self) -> Result<()> {
                <$config>::validate(self)
            }

            fn num_train_timesteps(&self) -> usize {
                self.num_train_timesteps
            }
        }
    )*};
}

scheduler_config!(DdpmConfig, DdimConfig, DpmSolverMultistepConfig);
