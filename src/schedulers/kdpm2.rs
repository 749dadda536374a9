//! `KDPM2DiscreteScheduler`: the DPM-Solver-2 sampler of Karras et al. (2022, Algorithm 2 with the
//! midpoint taken in log σ), as diffusers 0.42.1's `scheduling_k_dpm_2_discrete.py` implements it.
//! The σ-table machinery here is shared with [`super::kdpm2_ancestral`].
//!
//! Each inference step is two model calls: `set_timesteps(n)` lays out `2n − 1` timesteps — the
//! first σ's, then for every later σ the timestep of the log-midpoint σ ("interpolated") followed by
//! the σ's own — exactly as diffusers' `timesteps`, and `step` is called once per entry. The first
//! call of a pair (an Euler step to the midpoint) keeps the sample; the second (the midpoint's
//! derivative applied to the kept sample) consumes it. As in diffusers the last entry is a lone
//! first-order call that lands on σ = 0. Supported: `beta_schedule` linear / scaled_linear /
//! squaredcos_cap_v2 or `trained_betas`; `use_karras_sigmas`, `use_exponential_sigmas`,
//! `use_beta_sigmas` (at most one); `prediction_type` epsilon / v_prediction; `timestep_spacing`
//! linspace / leading / trailing with `steps_offset`; `set_timesteps`' own `num_train_timesteps`.
//!
//! Timesteps are float32 values (float64 under Karras / exponential / beta σ, as diffusers keeps
//! them); the σ tables are diffusers' float32 tables, their arithmetic reproduced in float32 where
//! diffusers does it in torch float32 (the log-midpoints and their timesteps).
//!
//! Differences from diffusers, all on inputs it does not handle:
//! * `prediction_type: sample` is refused by the config (diffusers raises `NotImplementedError` at
//!   the first step;
//! * `step` or `scale_model_input` before `set_timesteps` is an error (diffusers uses the
//!   constructor's `num_train_timesteps`-step schedule), as is a step after the last entry or with a
//!   timestep other than the schedule's next one (diffusers ignores the timestep after the first
//!   call); a failed step leaves the state unchanged;
//! * a fresh run starts at the first occurrence of its timestep (diffusers takes the second when it
//!   repeats; [`Kdpm2DiscreteScheduler::set_begin_index`] starts anywhere);
//! * `timestep_spacing: leading` with more steps than training timesteps is refused (every
//!   timestep would be `steps_offset`).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::algorithm::TimestepsSpec;
use super::algorithm::{NoArgs, SchedulerAlgorithm, SchedulerConfig, SchedulerOutput, StepInput, TimestepType};
use super::betas::{round_f32, NoiseSchedule};
use super::common::{
    check_float, check_shape, check_step_tensors, compute_dtype, lin_comb, require_timesteps, TimestepMatch,
};
use super::config::{validate_classic_beta_schedule, validate_common, BetaSchedule, PredictionType, TimestepSpacing};
use super::sigmas::{
    beta_sigmas, exponential_sigmas, interp_sigmas, karras_sigmas, log_sigmas, sigma_timesteps, sigma_to_t,
    sigma_to_t_f32, train_sigmas, Float32Path, BETA_SIGMAS_ALPHA, BETA_SIGMAS_BETA, KARRAS_RHO,
};
use super::timesteps::round_half_even;

/// `KDPM2DiscreteScheduler`'s config (also `KDPM2AncestralDiscreteScheduler`'s), with diffusers'
/// defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Kdpm2Config {
    pub num_train_timesteps: usize,
    #[serde(with = "super::config::json_float")]
    pub beta_start: f64,
    #[serde(with = "super::config::json_float")]
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
}

impl Default for Kdpm2Config {
    fn default() -> Self {
        Kdpm2Config {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
        }
    }
}

impl Kdpm2Config {
    /// Checks the values for `class_name` (the error names the first bad field).
    pub(crate) fn validate_for(&self, class_name: &str) -> Result<()> {
        validate_common(
            self.num_train_timesteps,
            self.beta_start,
            self.beta_end,
            self.trained_betas.as_deref(),
            0.995,
            1.0,
        )?;
        validate_classic_beta_schedule(self.beta_schedule, self.trained_betas.is_some(), class_name)?;
        if self.steps_offset < 0 {
            return Err(Error::config("steps_offset", format!("must be ≥ 0, got {}", self.steps_offset)));
        }
        let kinds = [self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas];
        if kinds.iter().filter(|b| **b).count() > 1 {
            return Err(Error::config(
                "use_karras_sigmas",
                "only one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas can be true",
            ));
        }
        if self.prediction_type == PredictionType::Sample {
            return Err(Error::config(
                "prediction_type",
                format!("`sample` is not implemented for {class_name} (as in diffusers); use epsilon or v_prediction"),
            ));
        }
        if kinds.iter().any(|b| *b) && self.num_train_timesteps < 2 {
            return Err(Error::config(
                "num_train_timesteps",
                "Karras, exponential and beta sigmas need at least 2 training timesteps",
            ));
        }
        Ok(())
    }

    /// The training schedule (βₜ, ᾱₜ), with diffusers' float32 tables.
    pub(crate) fn noise_schedule(&self) -> Result<NoiseSchedule> {
        NoiseSchedule::new(
            self.beta_schedule,
            self.beta_start,
            self.beta_end,
            self.num_train_timesteps,
            self.trained_betas.as_deref(),
            false,
        )
    }
}

impl SchedulerConfig for Kdpm2Config {
    fn validate(&self) -> Result<()> {
        self.validate_for("KDPM2DiscreteScheduler")
    }

    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
}

/// `set_timesteps`' own arguments of both KDPM2 schedulers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Kdpm2TimestepArgs {
    /// The training range the timesteps are spaced over (`None` or 0: the config's, as diffusers'
    /// `num_train_timesteps or self.config.num_train_timesteps`).
    pub num_train_timesteps: Option<usize>,
}

/// torch's float32 `start.lerp(end, 0.5)` (`end − (end − start)·0.5`), as its CPU kernel computes
/// it for weights ≥ 0.5.
fn lerp_half_f32(start: f64, end: f64) -> f64 {
    round_f32(end - round_f32(end - start) * 0.5)
}

/// `exp(lerp(log a, log b, 0.5))` in float32: the log-midpoint of two float32 σ (0 when either is 0,
/// NaN where torch's gives NaN).
fn log_midpoint_f32(a: f64, b: f64) -> f64 {
    let (la, lb) = (round_f32(a.ln()), round_f32(b.ln()));
    round_f32(lerp_half_f32(la, lb).exp())
}

/// `cat([x[:1], x[1:].repeat_interleave(2), x[-1:]])`.
fn interleave_repeat(x: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(2 * x.len());
    out.push(x[0]);
    for &v in &x[1..] {
        out.push(v);
        out.push(v);
    }
    out.push(x[x.len() - 1]);
    out
}

/// The tables of one KDPM2 / KDPM2Ancestral `set_timesteps`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Kdpm2Tables {
    /// The 2n − 1 timesteps, one `step` call each.
    pub timesteps: Vec<f64>,
    /// σ repeated as diffusers lays them out (2n + 2 values, ending in 0, 0).
    pub sigmas: Vec<f64>,
    /// The interpolated σ, laid out like `sigmas` (entry 0 is NaN in the plain KDPM2, as in diffusers).
    pub sigmas_interpol: Vec<f64>,
    /// The ancestral noise σ (`sigmas_up`), laid out like `sigmas` (ancestral only).
    pub sigmas_up: Vec<f64>,
    /// The ancestral target σ (`sigmas_down`), laid out like `sigmas` (ancestral only).
    pub sigmas_down: Vec<f64>,
}

/// Builds the KDPM2 tables for `n` steps over a training range of `big_n` (diffusers'
/// `set_timesteps(n, num_train_timesteps=big_n)`).
pub(crate) fn build_tables(
    config: &Kdpm2Config,
    alphas_cumprod: &[f64],
    n: usize,
    big_n: usize,
    ancestral: bool,
) -> Result<Kdpm2Tables> {
    if n == 0 {
        return Err(Error::argument("num_inference_steps", "must be at least 1, got 0"));
    }
    if config.timestep_spacing == TimestepSpacing::Leading && n > big_n {
        return Err(Error::argument(
            "num_inference_steps",
            format!(
                "{n} is larger than num_train_timesteps ({big_n}): with `leading` spacing every timestep \
                 would be the same"
            ),
        ));
    }
    let train = train_sigmas(alphas_cumprod);
    let log_sigmas = log_sigmas(&train);
    let mut timesteps = sigma_timesteps(config.timestep_spacing, big_n, n, config.steps_offset);
    let mut sigmas = interp_sigmas(&timesteps, &train)?;
    let converted = config.use_karras_sigmas || config.use_exponential_sigmas || config.use_beta_sigmas;
    if converted {
        // `_convert_to_*` take σ_min and σ_max from the interpolated σ (not the training table)
        let (sigma_max, sigma_min) = (sigmas[0], sigmas[sigmas.len() - 1]);
        sigmas = if config.use_karras_sigmas {
            karras_sigmas(sigma_min, sigma_max, n, KARRAS_RHO)
        } else if config.use_exponential_sigmas {
            exponential_sigmas(sigma_min, sigma_max, n)
        } else {
            beta_sigmas(sigma_min, sigma_max, n, BETA_SIGMAS_ALPHA, BETA_SIGMAS_BETA)?
        };
        // float64 timesteps, rounded (half to even) for Karras only, as diffusers
        timesteps = sigmas
            .iter()
            .map(|&s| sigma_to_t(s, &log_sigmas).map(|t| if config.use_karras_sigmas { round_half_even(t) } else { t }))
            .collect::<Result<_>>()?;
    }
    // np.concatenate([sigmas, [0.0]]).astype(np.float32)
    let mut sigmas: Vec<f64> = sigmas.into_iter().map(round_f32).collect();
    sigmas.push(0.0);
    let len = sigmas.len();

    let (interpol, up, down) = if ancestral {
        // sigmas_next = roll(-1) with a final 0; up/down split of the next σ, in float32
        let r = round_f32;
        let mut up = Vec::with_capacity(len);
        let mut down = Vec::with_capacity(len);
        for i in 0..len {
            let s = sigmas[i];
            let next = if i + 1 < len { sigmas[i + 1] } else { 0.0 };
            let next2 = r(next * next);
            let s2 = r(s * s);
            let u = r(r(r(next2 * r(s2 - next2)) / s2).sqrt());
            let d = if i + 1 < len { r(r(next2 - r(u * u)).sqrt()) } else { 0.0 };
            up.push(u);
            down.push(d);
        }
        let mut interpol: Vec<f64> = (0..len).map(|i| log_midpoint_f32(sigmas[i], down[i])).collect();
        for v in interpol.iter_mut().skip(len.saturating_sub(2)) {
            *v = 0.0;
        }
        (interpol, up, down)
    } else {
        // sigmas.log().lerp(sigmas.roll(1).log(), 0.5).exp()
        let interpol = (0..len).map(|i| log_midpoint_f32(sigmas[i], sigmas[(i + len - 1) % len])).collect();
        (interpol, Vec::new(), Vec::new())
    };

    let timesteps_interpol: Vec<f64> =
        interpol.iter().map(|&s| sigma_to_t_f32(s, &log_sigmas, Float32Path::Torch)).collect::<Result<_>>()?;
    // KDPM2 pairs σ_i with the midpoint before it (interpol[1..n]); the ancestral one pairs σ_{i+1}
    // with the midpoint after σ_i (interpol[0..n−1]).
    let interp_slice = if ancestral { &timesteps_interpol[..len - 2] } else { &timesteps_interpol[1..len - 1] };
    let mut all = Vec::with_capacity(2 * timesteps.len());
    all.push(timesteps[0]);
    for (ti, t) in interp_slice.iter().zip(&timesteps[1..]) {
        all.push(*ti);
        all.push(*t);
    }
    Ok(Kdpm2Tables {
        timesteps: all,
        sigmas: interleave_repeat(&sigmas),
        sigmas_interpol: interleave_repeat(&interpol),
        sigmas_up: if ancestral { interleave_repeat(&up) } else { Vec::new() },
        sigmas_down: if ancestral { interleave_repeat(&down) } else { Vec::new() },
    })
}

/// The step index a call at `timestep` works at: the current one, or on a run's first call the
/// `begin_index` or the first occurrence of `timestep` (compared at float32 precision, for callers
/// that hold the timesteps as float32 as diffusers' tensors do). See
/// [`common::resolve_step_index`](super::common::resolve_step_index).
pub(crate) fn resolve_step_index(
    timesteps: &[f64],
    step_index: Option<usize>,
    begin_index: Option<usize>,
    timestep: f64,
) -> Result<usize> {
    super::common::resolve_step_index(timesteps, step_index.or(begin_index), timestep, TimestepMatch::Float32, false)
}

/// The model output and sample of a step, checked (float tensors of one shape) and in the compute
/// dtype: `(model_output, sample, shape, out_dtype)`.
pub(crate) fn step_tensors(
    model_output: &Tensor,
    sample: &Tensor,
) -> Result<(Tensor, Tensor, Vec<usize>, candle_core::DType)> {
    let shape = check_step_tensors(model_output, sample)?;
    let out_dtype = sample.dtype();
    let dtype = compute_dtype(out_dtype);
    Ok((model_output.to_dtype(dtype)?, sample.to_dtype(dtype)?, shape, out_dtype))
}

/// x₀ from the model output at `sigma` (KDPM2's `epsilon` / `v_prediction` formulas).
pub(crate) fn kdpm2_x0(
    prediction_type: PredictionType,
    x: &Tensor,
    model_output: &Tensor,
    sigma: f64,
) -> Result<Tensor> {
    match prediction_type {
        PredictionType::Epsilon => lin_comb(&[(x, 1.0), (model_output, -sigma)]),
        PredictionType::VPrediction => {
            let s2 = sigma * sigma + 1.0;
            lin_comb(&[(model_output, -sigma / s2.sqrt()), (x, 1.0 / s2)])
        }
        PredictionType::Sample => Err(Error::config("prediction_type", "`sample` is not implemented for KDPM2")),
    }
}

/// `(x − x₀) / σ`.
pub(crate) fn derivative(x: &Tensor, x0: &Tensor, sigma: f64) -> Result<Tensor> {
    Ok((x - x0)?.affine(1.0 / sigma, 0.0)?)
}

/// diffusers' `init_noise_sigma` of both KDPM2 schedulers: max σ for linspace / trailing spacing,
/// else `√(max σ² + 1)`.
pub(crate) fn kdpm2_init_noise_sigma(spacing: TimestepSpacing, sigmas: &[f64]) -> f64 {
    let max = sigmas.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
        TimestepSpacing::Leading => round_f32((max * max + 1.0).sqrt()),
    }
}

/// diffusers' `KDPM2DiscreteScheduler`.
#[derive(Clone, Debug)]
pub struct Kdpm2DiscreteScheduler {
    config: Kdpm2Config,
    schedule: NoiseSchedule,
    tables: Kdpm2Tables,
    num_inference_steps: Option<usize>,
    step_index: Option<usize>,
    begin_index: Option<usize>,
    /// The sample kept by a pair's first call (diffusers' `self.sample`).
    sample: Option<Tensor>,
}

impl Kdpm2DiscreteScheduler {
    /// The index of the next call (None until the first after `set_timesteps`).
    pub fn step_index(&self) -> Option<usize> {
        self.step_index
    }

    /// Starts the next run at entry `begin_index` of the timesteps (diffusers' `set_begin_index`, for
    /// img2img-style partial runs). Reset by `set_timesteps`.
    pub fn set_begin_index(&mut self, begin_index: usize) {
        self.begin_index = Some(begin_index);
    }

    /// Whether the next call is the first of a pair (diffusers' `state_in_first_order`).
    pub fn state_in_first_order(&self) -> bool {
        self.sample.is_none()
    }

    /// The interpolated σ, laid out like [`SchedulerAlgorithm::sigmas`].
    pub fn sigmas_interpol(&self) -> &[f64] {
        &self.tables.sigmas_interpol
    }

    fn install(&mut self, n: usize, big_n: usize) -> Result<()> {
        let tables = build_tables(&self.config, &self.schedule.alphas_cumprod, n, big_n, false)?;
        self.tables = tables;
        self.sample = None;
        self.step_index = None;
        self.begin_index = None;
        Ok(())
    }

    /// σ of the call at `index` (the model input's scaling).
    fn input_sigma(&self, index: usize) -> f64 {
        if self.sample.is_none() {
            self.tables.sigmas[index]
        } else {
            self.tables.sigmas_interpol[index]
        }
    }
}

impl SchedulerAlgorithm for Kdpm2DiscreteScheduler {
    const CLASS_NAME: &'static str = "KDPM2DiscreteScheduler";
    const SHORT_NAME: &'static str = "kdpm2";
    const SUMMARY: &'static str = "KDPM2 (DPM-Solver-2, two model calls per step): good in about 25 steps";
    const DEFAULT_STEPS: usize = 25;
    const STEP_PARAMS: &'static [&'static str] = &["return_dict"];
    const SET_TIMESTEPS_PARAMS: &'static [&'static str] = &["num_inference_steps", "device", "num_train_timesteps"];

    type Config = Kdpm2Config;
    type TimestepArgs = Kdpm2TimestepArgs;
    type StepArgs = NoArgs;

    fn new(config: Kdpm2Config) -> Result<Self> {
        config.validate()?;
        let schedule = config.noise_schedule()?;
        let big_n = config.num_train_timesteps;
        let mut s = Kdpm2DiscreteScheduler {
            config,
            schedule,
            tables: Kdpm2Tables::default(),
            num_inference_steps: None,
            step_index: None,
            begin_index: None,
            sample: None,
        };
        // diffusers' constructor runs set_timesteps(num_train_timesteps); what it shows before the
        // first set_timesteps comes from there (stepping still needs set_timesteps).
        s.install(big_n, big_n)?;
        Ok(s)
    }

    fn config(&self) -> &Kdpm2Config {
        &self.config
    }

    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, args: &Kdpm2TimestepArgs) -> Result<()> {
        match spec {
            TimestepsSpec::Count(n) => {
                let big_n = args.num_train_timesteps.filter(|&v| v > 0).unwrap_or(self.config.num_train_timesteps);
                self.install(n, big_n)?;
                self.num_inference_steps = Some(n);
                Ok(())
            }
            TimestepsSpec::Timesteps(_) => Err(Error::argument(
                "timesteps",
                "KDPM2DiscreteScheduler does not take custom timesteps (as in diffusers); give num_inference_steps",
            )),
            TimestepsSpec::Sigmas(_) => Err(Error::argument(
                "sigmas",
                "KDPM2DiscreteScheduler does not take custom sigmas (as in diffusers); give num_inference_steps",
            )),
        }
    }

    fn timesteps(&self) -> &[f64] {
        &self.tables.timesteps
    }

    fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    fn order(&self) -> usize {
        2
    }

    fn init_noise_sigma(&self) -> f64 {
        kdpm2_init_noise_sigma(self.config.timestep_spacing, &self.tables.sigmas)
    }

    fn timestep_type(&self) -> TimestepType {
        TimestepType::Float
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.tables.sigmas)
    }

    fn alphas_cumprod(&self) -> Option<&[f64]> {
        Some(&self.schedule.alphas_cumprod)
    }

    /// `sample / √(σ² + 1)` with σ of this call (the pair's σ, or its midpoint on the second call);
    /// settles the step index on a run's first call, as diffusers does.
    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        require_timesteps(self.num_inference_steps)?;
        check_float("sample", sample)?;
        let index = resolve_step_index(&self.tables.timesteps, self.step_index, self.begin_index, timestep)?;
        self.step_index = Some(index);
        let sigma = self.input_sigma(index);
        let dtype = compute_dtype(sample.dtype());
        Ok(sample.to_dtype(dtype)?.affine(1.0 / (sigma * sigma + 1.0).sqrt(), 0.0)?.to_dtype(sample.dtype())?)
    }

    /// One call of a KDPM2 pair (diffusers' `KDPM2DiscreteScheduler.step`): the first call steps to
    /// the log-midpoint σ and keeps the sample, the second applies the midpoint's derivative to the
    /// kept sample over the whole step.
    fn step(&mut self, input: StepInput<'_>, _args: &NoArgs) -> Result<SchedulerOutput> {
        let StepInput { model_output, timestep, sample, .. } = input;
        require_timesteps(self.num_inference_steps)?;
        let (model_output, x, shape, out_dtype) = step_tensors(model_output, sample)?;
        let s = resolve_step_index(&self.tables.timesteps, self.step_index, self.begin_index, timestep)?;
        let t = &self.tables;
        let first = self.sample.is_none();
        let (prev, x0, kept) = if first {
            let sigma = t.sigmas[s];
            let sigma_interpol = t.sigmas_interpol[s + 1];
            let x0 = kdpm2_x0(self.config.prediction_type, &x, &model_output, sigma)?;
            let d = derivative(&x, &x0, sigma)?;
            let prev = lin_comb(&[(&x, 1.0), (&d, sigma_interpol - sigma)])?;
            (prev, x0, Some(x))
        } else {
            let kept = self.sample.as_ref().map(|k| k.to_dtype(x.dtype())).transpose()?;
            let kept = kept.ok_or_else(|| Error::argument("sample", "missing the kept sample"))?;
            check_shape("sample", &kept, &shape).map_err(|_| {
                Error::argument(
                    "sample",
                    format!("has shape {shape:?} but the first call of this step had shape {:?}", kept.dims()),
                )
            })?;
            let sigma = t.sigmas[s - 1];
            let sigma_interpol = t.sigmas_interpol[s];
            let sigma_next = t.sigmas[s];
            let x0 = kdpm2_x0(self.config.prediction_type, &x, &model_output, sigma_interpol)?;
            let d = derivative(&x, &x0, sigma_interpol)?;
            let prev = lin_comb(&[(&kept, 1.0), (&d, sigma_next - sigma)])?;
            (prev, x0, None)
        };
        let out = SchedulerOutput::with_original(prev.to_dtype(out_dtype)?, x0.to_dtype(out_dtype)?);
        // commit the state only once everything succeeded
        self.sample = kept;
        self.step_index = Some(s + 1);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    fn scheduler(config: Kdpm2Config) -> Kdpm2DiscreteScheduler {
        Kdpm2DiscreteScheduler::new(config).unwrap()
    }

    #[test]
    fn layout_repeats_sigmas_and_interleaves_timesteps() {
        let mut s = scheduler(Kdpm2Config::default());
        s.set_timesteps(10).unwrap();
        assert_eq!(s.timesteps().len(), 19);
        assert_eq!(s.sigmas().unwrap().len(), 22);
        assert_eq!(s.timesteps()[0], 999.0);
        assert_eq!(s.timesteps()[2], 888.0);
        assert_eq!(*s.timesteps().last().unwrap(), 0.0);
        let sig = s.sigmas().unwrap();
        assert_eq!(sig[1], sig[2]);
        assert_eq!(&sig[19..], &[0.0, 0.0, 0.0]);
        // the interpolated timestep lies between its neighbours
        assert!(s.timesteps()[1] < 999.0 && s.timesteps()[1] > 888.0);
        assert_eq!(s.init_noise_sigma(), sig[0]);
    }

    #[test]
    fn karras_and_exponential_schedules() {
        for config in [
            Kdpm2Config { use_karras_sigmas: true, ..Default::default() },
            Kdpm2Config { use_exponential_sigmas: true, ..Default::default() },
        ] {
            let mut s = scheduler(config);
            s.set_timesteps(8).unwrap();
            assert_eq!(s.timesteps().len(), 15);
            let sig = s.sigmas().unwrap();
            assert!(sig[..sig.len() - 3].windows(2).all(|w| w[0] >= w[1]));
        }
        let e = Kdpm2DiscreteScheduler::new(Kdpm2Config {
            use_karras_sigmas: true,
            use_exponential_sigmas: true,
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("only one of"), "{e}");
    }

    #[test]
    fn refuses_what_cannot_work() {
        let mut s = scheduler(Kdpm2Config::default());
        assert!(s.set_timesteps(0).is_err());
        let x = Tensor::zeros((1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        // before set_timesteps
        assert!(s.step(StepInput::new(&x, 999.0, &x), &NoArgs {}).is_err());
        assert!(s.scale_model_input(&x, 999.0).is_err());
        s.set_timesteps(4).unwrap();
        // not in the schedule
        let e = s.step(StepInput::new(&x, 998.5, &x), &NoArgs {}).unwrap_err();
        assert!(e.to_string().contains("not in the scheduler's timesteps"), "{e}");
        // shapes, dtypes
        let y = Tensor::zeros((1, 2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&y, 999.0, &x), &NoArgs {}).is_err());
        let i = Tensor::zeros((1, 2, 2), DType::U32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&i, 999.0, &x), &NoArgs {}).is_err());
        assert_eq!(s.step_index(), None, "a failed step leaves the state untouched");
        // a full run, then one call too many
        let ts = s.timesteps().to_vec();
        for (k, &t) in ts.iter().enumerate() {
            assert_eq!(s.state_in_first_order(), k % 2 == 0);
            s.scale_model_input(&x, t).unwrap();
            s.step(StepInput::new(&x, t, &x), &NoArgs {}).unwrap();
        }
        assert!(s.step(StepInput::new(&x, 0.0, &x), &NoArgs {}).is_err());
        // leading with more steps than training timesteps, prediction_type sample
        let mut s = scheduler(Kdpm2Config {
            timestep_spacing: TimestepSpacing::Leading,
            num_train_timesteps: 10,
            ..Default::default()
        });
        assert!(s.set_timesteps(11).is_err());
        assert!(Kdpm2DiscreteScheduler::new(Kdpm2Config {
            prediction_type: PredictionType::Sample,
            ..Default::default()
        })
        .is_err());
        assert!(Kdpm2DiscreteScheduler::new(Kdpm2Config {
            beta_schedule: BetaSchedule::Sigmoid,
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn wrong_timestep_mid_run_is_an_error() {
        let mut s = scheduler(Kdpm2Config::default());
        s.set_timesteps(3).unwrap();
        let x = Tensor::ones((1, 1, 2), DType::F32, &Device::Cpu).unwrap();
        let ts = s.timesteps().to_vec();
        s.step(StepInput::new(&x, ts[0], &x), &NoArgs {}).unwrap();
        let e = s.step(StepInput::new(&x, ts[2], &x), &NoArgs {}).unwrap_err();
        assert!(e.to_string().contains("expected timestep"), "{e}");
        assert_eq!(s.step_index(), Some(1));
        assert!(!s.state_in_first_order());
    }

    /// `(timesteps, sigmas, init_noise_sigma)` of diffusers 0.42.1's `set_timesteps(7)`.
    fn check(s: &dyn Fn() -> (Vec<f64>, Vec<f64>, f64), t: &[f64], sig: &[f64], init: f64) {
        let (ot, os, oi) = s();
        assert_eq!(ot.len(), t.len());
        assert_eq!(os.len(), sig.len());
        for (a, b) in ot.iter().zip(t).chain(os.iter().zip(sig)) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "ours {a}, diffusers {b}");
        }
        assert!((oi - init).abs() <= 1e-6 * init, "init_noise_sigma {oi} vs {init}");
    }

    #[test]
    fn schedules_match_diffusers() {
        let run = |config: Kdpm2Config| {
            move || {
                let mut s = scheduler(config.clone());
                s.set_timesteps(7).unwrap();
                (s.timesteps().to_vec(), s.sigmas().unwrap().to_vec(), s.init_noise_sigma())
            }
        };
        check(
            &run(Kdpm2Config { use_karras_sigmas: true, ..Default::default() }),
            &[
                999.0,
                934.0441284179688,
                865.0,
                780.9264526367188,
                689.0,
                574.3299560546875,
                449.0,
                299.67010498046875,
                171.0,
                71.36421203613281,
                24.0,
                4.2216644287109375,
                0.0,
            ],
            &[
                25.146116256713867,
                11.730278015136719,
                11.730278015136719,
                4.984373569488525,
                4.984373569488525,
                1.879543423652649,
                1.879543423652649,
                0.6050326228141785,
                0.6050326228141785,
                0.15634845197200775,
                0.15634845197200775,
                0.02916753478348255,
                0.02916753478348255,
                0.0,
                0.0,
                0.0,
            ],
            25.146116256713867,
        );
        check(
            &run(Kdpm2Config { timestep_spacing: TimestepSpacing::Leading, steps_offset: 1, ..Default::default() }),
            &[
                853.0,
                784.5291137695312,
                711.0,
                642.2647094726562,
                569.0,
                499.22503662109375,
                427.0,
                354.8348693847656,
                285.0,
                207.53302001953125,
                143.0,
                20.926288604736328,
                1.0,
            ],
            &[
                11.021533966064453,
                5.495543003082275,
                5.495543003082275,
                2.9957756996154785,
                2.9957756996154785,
                1.7320983409881592,
                1.7320983409881592,
                1.0058012008666992,
                1.0058012008666992,
                0.5177922248840332,
                0.5177922248840332,
                0.04139329865574837,
                0.04139329865574837,
                0.0,
                0.0,
                0.0,
            ],
            11.06680679321289,
        );
    }
}
