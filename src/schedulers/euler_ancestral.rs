//! `EulerAncestralDiscreteScheduler`: Euler steps down to σ_down plus fresh noise of σ_up (k-diffusion's
//! `sample_euler_ancestral`), as diffusers 0.42.1's `scheduling_euler_ancestral_discrete.py`
//! implements it.
//!
//! Supported: every config key diffusers accepts (`timestep_spacing`, `steps_offset`,
//! `rescale_betas_zero_snr`, `prediction_type` epsilon/v_prediction); every step draws noise (the last
//! one too, with σ_up = 0, as diffusers calls `randn_tensor` on every step), so a step needs
//! `variance_noise` or a generator.
//!
//! Differences from diffusers: `prediction_type: sample` is refused by the config (diffusers raises
//! `NotImplementedError` at the first step); a step or `scale_model_input` before `set_timesteps` is
//! an error; after the first step the timestep must be the schedule's next one; `leading`/`trailing`
//! spacing with more steps than training timesteps is refused; scalar coefficients are f64.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::algorithm::{
    NoArgs, SchedulerAlgorithm, SchedulerConfig, SchedulerOutput, StepInput, TimestepType, TimestepsSpec,
};
use super::betas::round_f32;
use super::common::{check_step_tensors, compute_dtype, lin_comb, require_timesteps};
use super::config::{validate_steps_offset, BetaSchedule, PredictionType, TimestepSpacing};
use super::euler_discrete::family::{self, StepIndex, TrainSigmas};
use super::sigmas as sigma_math;

/// `EulerAncestralDiscreteScheduler`'s config, with diffusers' defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EulerAncestralDiscreteConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub rescale_betas_zero_snr: bool,
}

impl Default for EulerAncestralDiscreteConfig {
    fn default() -> Self {
        EulerAncestralDiscreteConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
        }
    }
}

impl SchedulerConfig for EulerAncestralDiscreteConfig {
    fn validate(&self) -> Result<()> {
        family::validate_schedule(
            self.num_train_timesteps,
            self.beta_start,
            self.beta_end,
            self.beta_schedule,
            self.trained_betas.as_deref(),
            "EulerAncestralDiscreteScheduler",
        )?;
        validate_steps_offset(self.steps_offset)?;
        if self.prediction_type == PredictionType::Sample {
            return Err(Error::config(
                "prediction_type",
                "`sample` is not implemented by EulerAncestralDiscreteScheduler (diffusers raises at the first \
                 step); use epsilon or v_prediction, or EulerDiscreteScheduler",
            ));
        }
        Ok(())
    }

    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
}

/// diffusers' `EulerAncestralDiscreteScheduler`.
#[derive(Clone, Debug)]
pub struct EulerAncestralDiscreteScheduler {
    config: EulerAncestralDiscreteConfig,
    alphas_cumprod: Vec<f64>,
    train: TrainSigmas,
    timesteps: Vec<f64>,
    /// σ at each timestep and the final 0 (float32 values).
    sigmas: Vec<f64>,
    num_inference_steps: Option<usize>,
    index: StepIndex,
}

impl EulerAncestralDiscreteScheduler {
    /// The index of the next step (None until the first `scale_model_input` or `step` of a run).
    pub fn step_index(&self) -> Option<usize> {
        self.index.step_index
    }

    /// Starts the next run at index `begin_index` of the schedule (diffusers' `set_begin_index`).
    /// Reset by `set_timesteps`.
    pub fn set_begin_index(&mut self, begin_index: usize) {
        self.index.begin_index = Some(begin_index);
    }

    fn set_spaced(&mut self, n: usize) -> Result<()> {
        let c = &self.config;
        family::check_count(n, c.num_train_timesteps, c.timestep_spacing)?;
        let timesteps = sigma_math::sigma_timesteps(c.timestep_spacing, c.num_train_timesteps, n, c.steps_offset);
        let mut sigmas = sigma_math::interp_sigmas(&timesteps, &self.train.sigmas)?;
        sigmas.push(0.0);
        self.sigmas = sigmas.into_iter().map(round_f32).collect();
        self.timesteps = timesteps;
        self.num_inference_steps = Some(n);
        self.index = StepIndex::default();
        Ok(())
    }
}

impl SchedulerAlgorithm for EulerAncestralDiscreteScheduler {
    const CLASS_NAME: &'static str = "EulerAncestralDiscreteScheduler";
    const SHORT_NAME: &'static str = "euler_a";
    const SUMMARY: &'static str = "Euler ancestral (adds noise every step): varied samples in 20–50 steps";
    const DEFAULT_STEPS: usize = 50;
    const SET_TIMESTEPS_PARAMS: &'static [&'static str] = &["num_inference_steps", "device"];

    type Config = EulerAncestralDiscreteConfig;
    type TimestepArgs = NoArgs;
    type StepArgs = NoArgs;

    fn new(config: EulerAncestralDiscreteConfig) -> Result<Self> {
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
        let timesteps = (0..config.num_train_timesteps).rev().map(|t| t as f64).collect();
        Ok(EulerAncestralDiscreteScheduler {
            config,
            alphas_cumprod,
            train,
            timesteps,
            sigmas,
            num_inference_steps: None,
            index: StepIndex::default(),
        })
    }

    fn config(&self) -> &EulerAncestralDiscreteConfig {
        &self.config
    }

    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, _args: &NoArgs) -> Result<()> {
        match spec {
            TimestepsSpec::Count(n) => self.set_spaced(n),
            TimestepsSpec::Timesteps(_) => Err(Error::argument(
                "timesteps",
                "EulerAncestralDiscreteScheduler does not take custom timesteps (as in diffusers); give \
                 num_inference_steps",
            )),
            TimestepsSpec::Sigmas(_) => Err(Error::argument(
                "sigmas",
                "EulerAncestralDiscreteScheduler does not take custom sigmas (as in diffusers); give \
                 num_inference_steps",
            )),
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

    /// One ancestral Euler step: to σ_down = √(σ_to² − σ_up²) along the ODE, plus noise of
    /// σ_up = √(σ_to²·(σ_from² − σ_to²)/σ_from²) drawn from `input.noise`.
    fn step(&mut self, input: StepInput<'_>, _args: &NoArgs) -> Result<SchedulerOutput> {
        let StepInput { model_output, timestep, sample, mut noise, .. } = input;
        require_timesteps(self.num_inference_steps)?;
        let shape = check_step_tensors(model_output, sample)?;
        let i = self.index.resolve(&self.timesteps, timestep, false)?;
        let (sigma, sigma_to) = (self.sigmas[i], self.sigmas[i + 1]);
        let sigma_up = (sigma_to * sigma_to * (sigma * sigma - sigma_to * sigma_to) / (sigma * sigma)).sqrt();
        // σ_to² − σ_up² = σ_to⁴/σ², without the cancellation
        let sigma_down = sigma_to * sigma_to / sigma;

        let out_dtype = sample.dtype();
        let dtype = compute_dtype(out_dtype);
        let x = sample.to_dtype(dtype)?;
        let model_output = model_output.to_dtype(dtype)?;
        let x0 = family::pred_original(self.config.prediction_type, &x, &model_output, sigma, sigma)?;
        let derivative = lin_comb(&[(&x, 1.0 / sigma), (&x0, -1.0 / sigma)])?;
        let eps = noise.draw(&shape, x.device(), dtype, "an Euler ancestral step")?;
        let prev = lin_comb(&[(&x, 1.0), (&derivative, sigma_down - sigma), (&eps, sigma_up)])?;
        let out = SchedulerOutput::with_original(prev.to_dtype(out_dtype)?, x0.to_dtype(out_dtype)?);
        self.index.advance(i);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::schedulers::Noise;

    #[test]
    fn config_refuses_sample_prediction() {
        let c = EulerAncestralDiscreteConfig { prediction_type: PredictionType::Sample, ..Default::default() };
        let e = EulerAncestralDiscreteScheduler::new(c).unwrap_err().to_string();
        assert!(e.contains("prediction_type"), "{e}");
        let c = EulerAncestralDiscreteConfig { steps_offset: -1, ..Default::default() };
        assert!(EulerAncestralDiscreteScheduler::new(c).is_err());
    }

    #[test]
    fn schedule_and_errors() {
        let mut s = EulerAncestralDiscreteScheduler::new(Default::default()).unwrap();
        assert!(s.set_timesteps(0).is_err());
        assert!(s.set_timesteps_with(TimestepsSpec::Timesteps(&[10.0]), &NoArgs {}).is_err());
        assert!(s.set_timesteps_with(TimestepsSpec::Sigmas(&[1.0, 0.0]), &NoArgs {}).is_err());
        let x = Tensor::ones((1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&x, 999.0, &x), &NoArgs {}).is_err(), "before set_timesteps");
        s.set_timesteps(4).unwrap();
        assert_eq!(s.timesteps(), &[999.0, 666.0, 333.0, 0.0]);
        assert_eq!(s.sigmas().unwrap().len(), 5);
        assert!(s.step(StepInput::new(&x, 999.0, &x), &NoArgs {}).is_err(), "needs noise");
        assert_eq!(s.step_index(), None);
        let bad = Tensor::ones((1, 2, 3), DType::F32, &Device::Cpu).unwrap();
        let noise = Tensor::zeros((1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&bad, 999.0, &x).with_noise(Noise::Given(&noise)), &NoArgs {}).is_err());
        assert!(s.step(StepInput::new(&x, 500.0, &x).with_noise(Noise::Given(&noise)), &NoArgs {}).is_err());
        for t in s.timesteps().to_vec() {
            s.scale_model_input(&x, t).unwrap();
            s.step(StepInput::new(&x, t, &x).with_noise(Noise::Given(&noise)), &NoArgs {}).unwrap();
        }
        assert_eq!(s.step_index(), Some(4));
    }

    #[test]
    fn ancestral_step_splits_the_variance() {
        // x₀ = 0 (ε = x/σ) and zero noise: the step scales x by σ_down/σ
        let mut s = EulerAncestralDiscreteScheduler::new(Default::default()).unwrap();
        s.set_timesteps(5).unwrap();
        let t = s.timesteps()[1];
        let (sigma, to) = (s.sigmas().unwrap()[1], s.sigmas().unwrap()[2]);
        let x = Tensor::full(2f32, (1, 3), &Device::Cpu).unwrap();
        let eps = x.affine(1.0 / sigma, 0.0).unwrap();
        let zero = Tensor::zeros((1, 3), DType::F32, &Device::Cpu).unwrap();
        s.set_begin_index(1);
        let out = s.step(StepInput::new(&eps, t, &x).with_noise(Noise::Given(&zero)), &NoArgs {}).unwrap();
        let got = out.prev_sample.to_vec2::<f32>().unwrap()[0][0] as f64;
        assert!((got - 2.0 * to * to / (sigma * sigma)).abs() < 1e-5, "{got}");
    }
}
