//! `EDMEulerScheduler`: the Euler sampler in the EDM formulation (Karras et al., 2022), as diffusers
//! 0.42.1's `scheduling_edm_euler.py` implements it, with its preconditioning (`c_in`, `c_noise`,
//! `c_skip`, `c_out`: [`EdmEulerScheduler::precondition_inputs`], [`EdmEulerScheduler::precondition_noise`],
//! [`EdmEulerScheduler::precondition_outputs`]) and the stochastic churn of Algorithm 2
//! ([`EdmEulerStepArgs`]: `s_churn`, `s_tmin`, `s_tmax`, `s_noise`).
//!
//! Supported: `sigma_schedule` karras (σ from the ramp in float64, with `rho`) / exponential (float32
//! `torch.linspace` of log σ, as diffusers), `sigma_min` / `sigma_max` / `sigma_data`,
//! `prediction_type` epsilon / v_prediction, `final_sigmas_type` zero / sigma_min, and `step`'s
//! optional `pred_original_sample` tensor (used instead of the preconditioned model output). The
//! timesteps are `precondition_noise(σ) = ¼·log σ` of the float32 σ, float32 as in diffusers.
//!
//! `set_timesteps(sigmas=[…])` is diffusers' too, which despite the name takes the *ramp* the σ are
//! computed from (values in [0, 1], ascending; the exponential schedule uses only its length); it
//! is refused unless it is one.
//!
//! Differences from diffusers, all on inputs it does not handle: `prediction_type: sample` is refused
//! by the config (diffusers raises at the first step); `step` / `scale_model_input` before
//! `set_timesteps`, after the last timestep, or with a timestep other than the schedule's next one
//! are errors (diffusers steps with the constructor's schedule, or ignores the timestep after the
//! first call); a fresh run starts at the first occurrence of its timestep (diffusers takes the
//! second when it repeats). A step with churn (`gamma > 0`) needs a noise source; without churn
//! none is drawn. f64 samples are stepped in f64 (diffusers casts to float32).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::algorithm::NoArgs;
use super::algorithm::{SchedulerAlgorithm, SchedulerConfig, SchedulerOutput, StepInput, TimestepType, TimestepsSpec};
use super::betas::round_f32;
use super::common::{check_float, check_shape, compute_dtype, lin_comb, require_timesteps};
use super::config::{FinalSigmasType, PredictionType, MAX_TRAIN_TIMESTEPS};
use super::edm::{
    c_in, c_out, c_skip, edm_exponential_sigmas, edm_karras_sigmas, edm_ramp, edm_train_ramp, precondition_noise,
};
use super::kdpm2::{resolve_step_index, step_tensors};

/// How EDMEuler spaces σ between `sigma_max` and `sigma_min`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SigmaSchedule {
    /// `(σ_max^{1/ρ} + ramp·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ` (EDM's schedule).
    #[serde(rename = "karras")]
    Karras,
    /// Evenly spaced in log σ.
    #[serde(rename = "exponential")]
    Exponential,
}

impl SigmaSchedule {
    /// The name diffusers uses in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            SigmaSchedule::Karras => "karras",
            SigmaSchedule::Exponential => "exponential",
        }
    }
}

/// `EDMEulerScheduler`'s config, with diffusers' defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EdmEulerConfig {
    #[serde(with = "super::config::json_float")]
    pub sigma_min: f64,
    #[serde(with = "super::config::json_float")]
    pub sigma_max: f64,
    #[serde(with = "super::config::json_float")]
    pub sigma_data: f64,
    pub sigma_schedule: SigmaSchedule,
    pub num_train_timesteps: usize,
    pub prediction_type: PredictionType,
    #[serde(with = "super::config::json_float")]
    pub rho: f64,
    pub final_sigmas_type: FinalSigmasType,
}

impl Default for EdmEulerConfig {
    fn default() -> Self {
        EdmEulerConfig {
            sigma_min: 0.002,
            sigma_max: 80.0,
            sigma_data: 0.5,
            sigma_schedule: SigmaSchedule::Karras,
            num_train_timesteps: 1000,
            prediction_type: PredictionType::Epsilon,
            rho: 7.0,
            final_sigmas_type: FinalSigmasType::Zero,
        }
    }
}

/// Checks `0 < σ_min < σ_max` (finite), `σ_data > 0` and `ρ > 0`, the values the EDM and
/// consistency-model schedules need.
pub(crate) fn validate_edm_sigmas(sigma_min: f64, sigma_max: f64, sigma_data: f64, rho: f64) -> Result<()> {
    if !(sigma_min.is_finite() && sigma_min > 0.0) {
        return Err(Error::config("sigma_min", format!("must be a positive number, got {sigma_min}")));
    }
    if !(sigma_max.is_finite() && sigma_max > sigma_min) {
        return Err(Error::config(
            "sigma_max",
            format!("must be a finite number larger than sigma_min ({sigma_min}), got {sigma_max}"),
        ));
    }
    if !(sigma_data.is_finite() && sigma_data > 0.0) {
        return Err(Error::config("sigma_data", format!("must be a positive number, got {sigma_data}")));
    }
    if !(rho.is_finite() && rho > 0.0) {
        return Err(Error::config("rho", format!("must be a positive number, got {rho}")));
    }
    Ok(())
}

/// Checks `1 ≤ num_train_timesteps ≤ MAX_TRAIN_TIMESTEPS`.
pub(crate) fn validate_train_timesteps(n: usize, min: usize) -> Result<()> {
    if n < min {
        return Err(Error::config("num_train_timesteps", format!("must be at least {min}, got {n}")));
    }
    if n > MAX_TRAIN_TIMESTEPS {
        return Err(Error::config(
            "num_train_timesteps",
            format!("{n} is larger than the supported maximum {MAX_TRAIN_TIMESTEPS}"),
        ));
    }
    Ok(())
}

impl SchedulerConfig for EdmEulerConfig {
    fn validate(&self) -> Result<()> {
        validate_edm_sigmas(self.sigma_min, self.sigma_max, self.sigma_data, self.rho)?;
        validate_train_timesteps(self.num_train_timesteps, 1)?;
        if self.prediction_type == PredictionType::Sample {
            return Err(Error::config(
                "prediction_type",
                "`sample` is not supported by EDMEulerScheduler (as in diffusers); use epsilon or v_prediction",
            ));
        }
        Ok(())
    }

    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
}

/// `EDMEulerScheduler.step`'s own arguments (Algorithm 2's churn), with diffusers' defaults.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdmEulerStepArgs {
    /// The total churn: each step raises σ by `γ = min(s_churn / n, √2 − 1)` first (0: deterministic).
    #[serde(with = "super::config::json_float")]
    pub s_churn: f64,
    /// Churn only where `s_tmin ≤ σ`.
    #[serde(with = "super::config::json_float")]
    pub s_tmin: f64,
    /// Churn only where `σ ≤ s_tmax` (default +∞).
    #[serde(with = "super::config::json_float")]
    pub s_tmax: f64,
    /// The scale of the churn noise.
    #[serde(with = "super::config::json_float")]
    pub s_noise: f64,
}

impl Default for EdmEulerStepArgs {
    fn default() -> Self {
        EdmEulerStepArgs { s_churn: 0.0, s_tmin: 0.0, s_tmax: f64::INFINITY, s_noise: 1.0 }
    }
}

impl EdmEulerStepArgs {
    fn validate(&self) -> Result<()> {
        if !(self.s_churn.is_finite() && self.s_churn >= 0.0) {
            return Err(Error::argument("s_churn", format!("must be a finite number ≥ 0, got {}", self.s_churn)));
        }
        if !self.s_noise.is_finite() {
            return Err(Error::argument("s_noise", format!("must be a finite number, got {}", self.s_noise)));
        }
        for (name, v) in [("s_tmin", self.s_tmin), ("s_tmax", self.s_tmax)] {
            if v.is_nan() {
                return Err(Error::argument(name, "must be a number (or ±Infinity), got NaN"));
            }
        }
        Ok(())
    }
}

/// diffusers' `EDMEulerScheduler`.
#[derive(Clone, Debug)]
pub struct EdmEulerScheduler {
    config: EdmEulerConfig,
    timesteps: Vec<f64>,
    /// σ of each timestep and the final one (float32 values).
    sigmas: Vec<f64>,
    num_inference_steps: Option<usize>,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

impl EdmEulerScheduler {
    /// The index of the next step (None until the first after `set_timesteps`).
    pub fn step_index(&self) -> Option<usize> {
        self.step_index
    }

    /// Starts the next run at index `begin_index` (diffusers' `set_begin_index`). Reset by
    /// `set_timesteps`.
    pub fn set_begin_index(&mut self, begin_index: usize) {
        self.begin_index = Some(begin_index);
    }

    /// diffusers' `precondition_inputs`: `sample · c_in(σ)`, the model input.
    pub fn precondition_inputs(&self, sample: &Tensor, sigma: f64) -> Result<Tensor> {
        check_float("sample", sample)?;
        let dtype = compute_dtype(sample.dtype());
        Ok(sample.to_dtype(dtype)?.affine(c_in(sigma, self.config.sigma_data), 0.0)?.to_dtype(sample.dtype())?)
    }

    /// diffusers' `precondition_noise`: `c_noise = ¼·log σ` (in float32, as diffusers computes it on
    /// a float32 σ), the timestep the model is given.
    pub fn precondition_noise(&self, sigma: f64) -> f64 {
        precondition_noise(sigma)
    }

    /// diffusers' `precondition_outputs`: the denoised sample `c_skip(σ)·sample + c_out(σ)·model_output`
    /// (`c_out` negated for `v_prediction`).
    pub fn precondition_outputs(&self, sample: &Tensor, model_output: &Tensor, sigma: f64) -> Result<Tensor> {
        let (model_output, x, _, out_dtype) = step_tensors(model_output, sample)?;
        Ok(self.denoise(&x, &model_output, sigma)?.to_dtype(out_dtype)?)
    }

    fn denoise(&self, x: &Tensor, model_output: &Tensor, sigma: f64) -> Result<Tensor> {
        let sd = self.config.sigma_data;
        let c_out = if self.config.prediction_type == PredictionType::VPrediction {
            -c_out(sigma, sd)
        } else {
            c_out(sigma, sd)
        };
        lin_comb(&[(x, c_skip(sigma, sd)), (model_output, c_out)])
    }

    /// σ for `ramp` under the configured schedule (f64 Karras, or float32 exponential), as float32
    /// values.
    fn sigmas_for(&self, ramp: &[f64]) -> Vec<f64> {
        let c = &self.config;
        let sigmas = match c.sigma_schedule {
            SigmaSchedule::Karras => edm_karras_sigmas(ramp, c.sigma_min, c.sigma_max, c.rho),
            // float32 throughout in diffusers; only the ramp's length matters
            SigmaSchedule::Exponential => edm_exponential_sigmas(ramp.len(), c.sigma_min, c.sigma_max),
        };
        sigmas.into_iter().map(round_f32).collect()
    }

    /// Installs σ (float32 values) and their timesteps, appends the final σ and resets the run.
    fn install(&mut self, sigmas: Vec<f64>) {
        self.timesteps = sigmas.iter().map(|&s| self.precondition_noise(s)).collect();
        let last = match self.config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => sigmas.last().copied().unwrap_or(0.0),
        };
        self.sigmas = sigmas;
        self.sigmas.push(last);
        self.step_index = None;
        self.begin_index = None;
    }
}

impl SchedulerAlgorithm for EdmEulerScheduler {
    const CLASS_NAME: &'static str = "EDMEulerScheduler";
    const SHORT_NAME: &'static str = "edm_euler";
    const SUMMARY: &'static str = "EDM Euler (Karras et al. 2022 preconditioning, optional churn): about 50 steps";
    const DEFAULT_STEPS: usize = 50;
    const STEP_PARAMS: &'static [&'static str] =
        &["s_churn", "s_tmin", "s_tmax", "s_noise", "generator", "return_dict", "pred_original_sample"];
    const SET_TIMESTEPS_PARAMS: &'static [&'static str] = &["num_inference_steps", "device", "sigmas"];
    const KARRAS_FAMILY: bool = false;
    const STEP_TENSORS: &'static [&'static str] = &["pred_original_sample"];

    type Config = EdmEulerConfig;
    type TimestepArgs = NoArgs;
    type StepArgs = EdmEulerStepArgs;

    fn new(config: EdmEulerConfig) -> Result<Self> {
        config.validate()?;
        let mut s = EdmEulerScheduler {
            config,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            num_inference_steps: None,
            step_index: None,
            begin_index: None,
        };
        // the constructor's schedule: the ramp arange(N + 1) / N (stepping still needs set_timesteps)
        let sigmas = s.sigmas_for(&edm_train_ramp(s.config.num_train_timesteps));
        s.install(sigmas);
        Ok(s)
    }

    fn config(&self) -> &EdmEulerConfig {
        &self.config
    }

    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, _args: &NoArgs) -> Result<()> {
        let ramp = match spec {
            TimestepsSpec::Count(0) => {
                return Err(Error::argument("num_inference_steps", "must be at least 1, got 0"));
            }
            TimestepsSpec::Count(n) => edm_ramp(n),
            TimestepsSpec::Sigmas(ramp) => {
                if ramp.is_empty() {
                    return Err(Error::argument("sigmas", "must not be empty"));
                }
                if let Some(bad) = ramp.iter().find(|r| !(0.0..=1.0).contains(*r)) {
                    return Err(Error::argument(
                        "sigmas",
                        format!(
                            "EDMEulerScheduler's `sigmas` are the ramp σ is computed from (as in diffusers): \
                             values in [0, 1], got {bad}"
                        ),
                    ));
                }
                if ramp.windows(2).any(|w| w[1] <= w[0]) {
                    return Err(Error::argument(
                        "sigmas",
                        "EDMEulerScheduler's `sigmas` are the ramp σ is computed from: strictly ascending values",
                    ));
                }
                ramp.to_vec()
            }
            TimestepsSpec::Timesteps(_) => {
                return Err(Error::argument(
                    "timesteps",
                    "EDMEulerScheduler does not take custom timesteps (as in diffusers); give num_inference_steps",
                ));
            }
        };
        let sigmas = self.sigmas_for(&ramp);
        self.install(sigmas);
        self.num_inference_steps = Some(ramp.len());
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    fn init_noise_sigma(&self) -> f64 {
        (self.config.sigma_max * self.config.sigma_max + 1.0).sqrt()
    }

    fn timestep_type(&self) -> TimestepType {
        TimestepType::Float
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    /// `precondition_inputs(sample, σ)` at this timestep's σ; settles the step index on a run's
    /// first call, as diffusers does.
    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        require_timesteps(self.num_inference_steps)?;
        let index = resolve_step_index(&self.timesteps, self.step_index, self.begin_index, timestep)?;
        let scaled = self.precondition_inputs(sample, self.sigmas[index])?;
        self.step_index = Some(index);
        Ok(scaled)
    }

    /// One Euler step from σ to the next σ (diffusers' `EDMEulerScheduler.step`), after raising σ to
    /// `σ̂ = σ·(1 + γ)` with fresh noise when `args.s_churn` applies. The optional tensor
    /// `pred_original_sample` replaces the preconditioned model output as the denoised estimate.
    fn step(&mut self, input: StepInput<'_>, args: &EdmEulerStepArgs) -> Result<SchedulerOutput> {
        let StepInput { model_output, timestep, sample, mut noise, tensors } = input;
        args.validate()?;
        require_timesteps(self.num_inference_steps)?;
        let (model_output, mut x, shape, out_dtype) = step_tensors(model_output, sample)?;
        let given_x0 = match tensors.get("pred_original_sample") {
            Some(t) => {
                check_float("pred_original_sample", t)?;
                check_shape("pred_original_sample", t, &shape)?;
                Some(t.to_dtype(x.dtype())?)
            }
            None => None,
        };
        let s = resolve_step_index(&self.timesteps, self.step_index, self.begin_index, timestep)?;
        let sigma = self.sigmas[s];
        let churn = (args.s_tmin..=args.s_tmax).contains(&sigma);
        let gamma = if churn { (args.s_churn / (self.sigmas.len() - 1) as f64).min(2f64.sqrt() - 1.0) } else { 0.0 };
        let sigma_hat = sigma * (gamma + 1.0);
        if gamma > 0.0 {
            let z = noise.draw(&shape, x.device(), x.dtype(), "an EDM Euler step with s_churn > 0")?;
            x = lin_comb(&[(&x, 1.0), (&z, args.s_noise * (sigma_hat * sigma_hat - sigma * sigma).sqrt())])?;
        }
        let x0 = match given_x0 {
            Some(x0) => x0,
            None => self.denoise(&x, &model_output, sigma_hat)?,
        };
        let d = (&x - &x0)?.affine(1.0 / sigma_hat, 0.0)?;
        let dt = self.sigmas[s + 1] - sigma_hat;
        let prev = lin_comb(&[(&x, 1.0), (&d, dt)])?;
        let out = SchedulerOutput::with_original(prev.to_dtype(out_dtype)?, x0.to_dtype(out_dtype)?);
        self.step_index = Some(s + 1);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::super::noise::Noise;
    use super::*;

    fn scheduler(config: EdmEulerConfig) -> EdmEulerScheduler {
        EdmEulerScheduler::new(config).unwrap()
    }

    #[test]
    fn schedules_and_timesteps() {
        let mut s = scheduler(EdmEulerConfig::default());
        assert_eq!(s.timesteps().len(), 1001);
        s.set_timesteps(20).unwrap();
        let sig = s.sigmas().unwrap();
        assert_eq!(sig.len(), 21);
        assert_eq!(sig[0], 80.0);
        assert_eq!(sig[19], round_f32(0.002));
        assert_eq!(sig[20], 0.0);
        assert_eq!(s.timesteps()[0], round_f32(0.25 * round_f32(80f64.ln())));
        let mut e = scheduler(EdmEulerConfig {
            sigma_schedule: SigmaSchedule::Exponential,
            final_sigmas_type: FinalSigmasType::SigmaMin,
            ..Default::default()
        });
        e.set_timesteps(5).unwrap();
        let sig = e.sigmas().unwrap();
        assert!((sig[0] - 80.0).abs() < 1e-4 && (sig[4] - 0.002).abs() < 1e-8);
        assert_eq!(sig[5], sig[4]);
        // the ramp form of `sigmas`
        s.set_timesteps_with(TimestepsSpec::Sigmas(&[0.0, 0.5, 1.0]), &NoArgs {}).unwrap();
        assert_eq!(s.sigmas().unwrap().len(), 4);
        assert!(s.set_timesteps_with(TimestepsSpec::Sigmas(&[80.0, 1.0]), &NoArgs {}).is_err());
        assert!(s.set_timesteps_with(TimestepsSpec::Sigmas(&[0.5, 0.2]), &NoArgs {}).is_err());
        assert!(s.set_timesteps_with(TimestepsSpec::Timesteps(&[1.0]), &NoArgs {}).is_err());
        assert!(s.set_timesteps(0).is_err());
    }

    #[test]
    fn churn_draws_noise_and_plain_steps_do_not() {
        let mut s = scheduler(EdmEulerConfig::default());
        let x = Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&x, 0.0, &x), &EdmEulerStepArgs::default()).is_err());
        s.set_timesteps(4).unwrap();
        let ts = s.timesteps().to_vec();
        let churn = EdmEulerStepArgs { s_churn: 1.0, ..Default::default() };
        let e = s.step(StepInput::new(&x, ts[0], &x), &churn).unwrap_err();
        assert!(e.to_string().contains("generator"), "{e}");
        assert_eq!(s.step_index(), None);
        let z = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        s.step(StepInput::new(&x, ts[0], &x).with_noise(Noise::Given(&z)), &churn).unwrap();
        // no churn outside [s_tmin, s_tmax]: no source needed
        let out_of_range = EdmEulerStepArgs { s_churn: 1.0, s_tmax: 1e-3, ..Default::default() };
        s.step(StepInput::new(&x, ts[1], &x), &out_of_range).unwrap();
        // a given x₀ replaces the preconditioned output
        let x0 = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let tensors = [("pred_original_sample", &x0)];
        let out = s.step(StepInput::new(&x, ts[2], &x).with_tensors(&tensors), &EdmEulerStepArgs::default()).unwrap();
        let want = 1.0 + (s.sigmas[3] - s.sigmas[2]) / s.sigmas[2];
        let got = out.prev_sample.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        let bad = Tensor::zeros((1, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&bad, ts[3], &x), &EdmEulerStepArgs::default()).is_err());
        assert!(s.step(StepInput::new(&x, ts[0], &x), &EdmEulerStepArgs::default()).is_err());
        assert!(s
            .step(StepInput::new(&x, ts[3], &x), &EdmEulerStepArgs { s_churn: -1.0, ..Default::default() })
            .is_err());
    }

    #[test]
    fn preconditioning_matches_the_formulas() {
        let s = scheduler(EdmEulerConfig::default());
        let x = Tensor::new(&[2.0f32], &Device::Cpu).unwrap();
        let m = Tensor::new(&[1.0f32], &Device::Cpu).unwrap();
        let sigma = 3.0f64;
        let y = s.precondition_inputs(&x, sigma).unwrap().to_vec1::<f32>().unwrap()[0] as f64;
        assert!((y - 2.0 / (9.25f64).sqrt()).abs() < 1e-6);
        let d = s.precondition_outputs(&x, &m, sigma).unwrap().to_vec1::<f32>().unwrap()[0] as f64;
        assert!((d - (0.25 / 9.25 * 2.0 + 1.5 / 9.25f64.sqrt())).abs() < 1e-6);
        assert!((s.precondition_noise(sigma) - 0.25 * 3f64.ln()).abs() < 1e-6);
        assert!(EdmEulerScheduler::new(EdmEulerConfig { sigma_min: 0.0, ..Default::default() }).is_err());
        assert!(EdmEulerScheduler::new(EdmEulerConfig {
            prediction_type: PredictionType::Sample,
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn schedules_match_diffusers() {
        // diffusers 0.42.1's set_timesteps(7): (config, timesteps, sigmas)
        let cases = [
            (
                EdmEulerConfig { sigma_schedule: SigmaSchedule::Exponential, ..Default::default() },
                vec![
                    1.0955066680908203,
                    0.6539802551269531,
                    0.21245378255844116,
                    -0.2290726602077484,
                    -0.6705991625785828,
                    -1.1121256351470947,
                    -1.553652048110962,
                ],
                vec![
                    80.0,
                    13.6798095703125,
                    2.339214324951172,
                    0.40000003576278687,
                    0.06839902698993683,
                    0.011696068570017815,
                    0.001999999862164259,
                    0.0,
                ],
            ),
            (
                EdmEulerConfig { final_sigmas_type: FinalSigmasType::SigmaMin, rho: 5.0, ..Default::default() },
                vec![
                    1.0955066680908203,
                    0.89727783203125,
                    0.6615777015686035,
                    0.3708590269088745,
                    -0.00864279642701149,
                    -0.5562490224838257,
                    -1.553652048110962,
                ],
                vec![
                    80.0,
                    36.20188903808594,
                    14.10191822052002,
                    4.408066272735596,
                    0.9660195708274841,
                    0.10806785523891449,
                    0.0020000000949949026,
                    0.0020000000949949026,
                ],
            ),
        ];
        for (config, t, sig) in cases {
            let mut s = scheduler(config);
            s.set_timesteps(7).unwrap();
            for (a, b) in s.timesteps().iter().zip(&t).chain(s.sigmas().unwrap().iter().zip(&sig)) {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "ours {a}, diffusers {b}");
            }
            assert_eq!((s.timesteps().len(), s.sigmas().unwrap().len()), (t.len(), sig.len()));
        }
    }
}
