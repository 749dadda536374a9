//! `CMStochasticIterativeScheduler`: multistep consistency sampling (Song et al., 2023, Algorithm 1),
//! as diffusers 0.42.1's `scheduling_consistency_models.py` implements it.
//!
//! Each step maps the sample to the model's clean estimate with the boundary-condition scalings
//! (`c_skip = σ_d² / ((σ − σ_min)² + σ_d²)`, `c_out = (σ − σ_min)·σ_d / √(σ² + σ_d²)`, so σ = σ_min
//! returns the sample), clamps it to [−1, 1] with `clip_denoised`, and re-noises it to the next σ
//! with `s_noise`-scaled fresh noise: `x₀ + z·√(σ̂² − σ_min²)`, σ̂ the next σ clamped to
//! [σ_min, σ_max]. Like diffusers, every step of a multistep schedule draws noise (the last one too,
//! where it is scaled by ≈ 0), and a one-step schedule draws none.
//!
//! `set_timesteps` takes a count (`N // n`-spaced training steps) or explicit `timesteps`
//! (diffusers' `timesteps=[…]`: strictly descending integer training steps, the first below
//! `num_train_timesteps`). Either way the training steps only place σ on the Karras ramp
//! (`ramp = timesteps[::-1] / (N − 1)`, so the first σ is σ_max whatever the first timestep), and
//! the timesteps become `sigma_to_t(σ) = 250·log(σ + 1e-44)` of the float64 σ: float timesteps,
//! kept in float64 as diffusers keeps them, while σ are stored as float32.
//!
//! Differences from diffusers, all on inputs it does not handle: `num_train_timesteps` < 2 is refused
//! (the ramp divides by N − 1); negative or fractional custom timesteps are refused (diffusers
//! truncates fractions and extrapolates the ramp); `step` / `scale_model_input` before
//! `set_timesteps`, after the last timestep, or with a timestep other than the schedule's next one
//! are errors (diffusers uses the constructor's σ, or ignores the timestep after the first call).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::algorithm::TimestepsSpec;
use super::algorithm::{NoArgs, SchedulerAlgorithm, SchedulerConfig, SchedulerOutput, StepInput, TimestepType};
use super::betas::{linspace, round_f32};
use super::common::{check_float, compute_dtype, lin_comb, require_timesteps};
use super::edm::{c_out, c_skip, cm_boundary_scalings, cm_karras_sigmas, cm_sigma_to_t};
use super::edm_euler::{validate_edm_sigmas, validate_train_timesteps};
use super::kdpm2::{resolve_step_index, step_tensors};
use super::sigmas::karras_sigmas_from_ramp;

/// `CMStochasticIterativeScheduler`'s config, with diffusers' defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsistencyConfig {
    pub num_train_timesteps: usize,
    #[serde(with = "super::config::json_float")]
    pub sigma_min: f64,
    #[serde(with = "super::config::json_float")]
    pub sigma_max: f64,
    #[serde(with = "super::config::json_float")]
    pub sigma_data: f64,
    #[serde(with = "super::config::json_float")]
    pub s_noise: f64,
    #[serde(with = "super::config::json_float")]
    pub rho: f64,
    pub clip_denoised: bool,
}

impl Default for ConsistencyConfig {
    fn default() -> Self {
        ConsistencyConfig {
            num_train_timesteps: 40,
            sigma_min: 0.002,
            sigma_max: 80.0,
            sigma_data: 0.5,
            s_noise: 1.0,
            rho: 7.0,
            clip_denoised: true,
        }
    }
}

impl SchedulerConfig for ConsistencyConfig {
    fn validate(&self) -> Result<()> {
        validate_edm_sigmas(self.sigma_min, self.sigma_max, self.sigma_data, self.rho)?;
        validate_train_timesteps(self.num_train_timesteps, 2)?;
        if !self.s_noise.is_finite() {
            return Err(Error::config("s_noise", format!("must be a finite number, got {}", self.s_noise)));
        }
        Ok(())
    }

    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
}

/// diffusers' `sigma_to_t`: `1000 · ¼ · log(σ + 1e-44)` in float64.
pub fn sigma_to_t(sigma: f64) -> f64 {
    cm_sigma_to_t(sigma)
}

/// diffusers' `CMStochasticIterativeScheduler`.
#[derive(Clone, Debug)]
pub struct CmStochasticIterativeScheduler {
    config: ConsistencyConfig,
    timesteps: Vec<f64>,
    /// σ of each timestep and σ_min after them (float32 values once set; the constructor's are f64).
    sigmas: Vec<f64>,
    num_inference_steps: Option<usize>,
    custom_timesteps: bool,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

impl CmStochasticIterativeScheduler {
    /// The index of the next step (None until the first after `set_timesteps`).
    pub fn step_index(&self) -> Option<usize> {
        self.step_index
    }

    /// Starts the next run at index `begin_index` (diffusers' `set_begin_index`). Reset by
    /// `set_timesteps`.
    pub fn set_begin_index(&mut self, begin_index: usize) {
        self.begin_index = Some(begin_index);
    }

    /// Whether the last `set_timesteps` took explicit timesteps (diffusers' `custom_timesteps`).
    pub fn custom_timesteps(&self) -> bool {
        self.custom_timesteps
    }

    /// diffusers' `get_scalings_for_boundary_condition(σ)`: `(c_skip, c_out)`.
    pub fn scalings_for_boundary_condition(&self, sigma: f64) -> (f64, f64) {
        cm_boundary_scalings(sigma, self.config.sigma_min, self.config.sigma_data)
    }

    /// diffusers' `get_scalings(σ)`: EDM's `(c_skip, c_out)` without the boundary shift.
    pub fn scalings(&self, sigma: f64) -> (f64, f64) {
        (c_skip(sigma, self.config.sigma_data), c_out(sigma, self.config.sigma_data))
    }

    /// Lays out σ and timesteps for descending training steps `train_steps`.
    fn install(&mut self, train_steps: &[i64], custom: bool) {
        let c = &self.config;
        let sigmas = cm_karras_sigmas(train_steps, c.num_train_timesteps, c.sigma_min, c.sigma_max, c.rho);
        self.timesteps = sigmas.iter().map(|&s| sigma_to_t(s)).collect();
        self.sigmas = sigmas.into_iter().map(round_f32).collect();
        self.sigmas.push(round_f32(self.config.sigma_min));
        self.custom_timesteps = custom;
        self.step_index = None;
        self.begin_index = None;
    }

    fn set_custom(&mut self, timesteps: &[f64]) -> Result<()> {
        let big_n = self.config.num_train_timesteps;
        if timesteps.is_empty() {
            return Err(Error::argument("timesteps", "must not be empty"));
        }
        if timesteps.windows(2).any(|w| w[1] >= w[0]) {
            return Err(Error::argument("timesteps", "must be in descending order (as diffusers requires)"));
        }
        if timesteps[0] >= big_n as f64 {
            return Err(Error::argument(
                "timesteps",
                format!("must start before num_train_timesteps ({big_n}), got {}", timesteps[0]),
            ));
        }
        if let Some(bad) = timesteps.iter().find(|t| t.fract() != 0.0 || **t < 0.0) {
            return Err(Error::argument(
                "timesteps",
                format!("{bad} is not a training timestep (an integer in [0, {big_n}))"),
            ));
        }
        let steps: Vec<i64> = timesteps.iter().map(|&t| t as i64).collect();
        self.install(&steps, true);
        self.num_inference_steps = Some(steps.len());
        Ok(())
    }

    fn set_count(&mut self, n: usize) -> Result<()> {
        let big_n = self.config.num_train_timesteps;
        if n == 0 {
            return Err(Error::argument("num_inference_steps", "must be at least 1, got 0"));
        }
        if n > big_n {
            return Err(Error::argument(
                "num_inference_steps",
                format!(
                    "{n} cannot be larger than num_train_timesteps ({big_n}): the model was trained on only \
                     {big_n} timesteps"
                ),
            ));
        }
        let step_ratio = (big_n / n) as i64;
        let steps: Vec<i64> = (0..n as i64).rev().map(|i| i * step_ratio).collect();
        self.install(&steps, false);
        self.num_inference_steps = Some(n);
        Ok(())
    }
}

impl SchedulerAlgorithm for CmStochasticIterativeScheduler {
    const CLASS_NAME: &'static str = "CMStochasticIterativeScheduler";
    const SHORT_NAME: &'static str = "consistency";
    const SUMMARY: &'static str = "Consistency-model sampling (for consistency-distilled models): 1 to a few steps";
    const DEFAULT_STEPS: usize = 1;
    const KARRAS_FAMILY: bool = false;

    type Config = ConsistencyConfig;
    type TimestepArgs = NoArgs;
    type StepArgs = NoArgs;

    fn new(config: ConsistencyConfig) -> Result<Self> {
        config.validate()?;
        let mut s = CmStochasticIterativeScheduler {
            config,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            num_inference_steps: None,
            custom_timesteps: false,
            step_index: None,
            begin_index: None,
        };
        // the constructor's table: the ramp linspace(0, 1, N), σ kept in f64, no final σ_min
        let c = &s.config;
        let sigmas =
            karras_sigmas_from_ramp(&linspace(0.0, 1.0, c.num_train_timesteps), c.sigma_min, c.sigma_max, c.rho);
        s.timesteps = sigmas.iter().map(|&v| sigma_to_t(v)).collect();
        s.sigmas = sigmas;
        Ok(s)
    }

    fn config(&self) -> &ConsistencyConfig {
        &self.config
    }

    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, _args: &NoArgs) -> Result<()> {
        match spec {
            TimestepsSpec::Count(n) => self.set_count(n),
            TimestepsSpec::Timesteps(ts) => self.set_custom(ts),
            TimestepsSpec::Sigmas(_) => Err(Error::argument(
                "sigmas",
                "CMStochasticIterativeScheduler does not take sigmas (as in diffusers); give timesteps or \
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
        self.config.sigma_max
    }

    fn timestep_type(&self) -> TimestepType {
        TimestepType::Float
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    /// `sample / √(σ² + σ_data²)` at this timestep's σ; settles the step index on a run's first call,
    /// as diffusers does.
    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        require_timesteps(self.num_inference_steps)?;
        check_float("sample", sample)?;
        let index = resolve_step_index(&self.timesteps, self.step_index, self.begin_index, timestep)?;
        let sigma = self.sigmas[index];
        let sd = self.config.sigma_data;
        let dtype = compute_dtype(sample.dtype());
        let scaled = sample.to_dtype(dtype)?.affine(1.0 / (sigma * sigma + sd * sd).sqrt(), 0.0)?;
        self.step_index = Some(index);
        Ok(scaled.to_dtype(sample.dtype())?)
    }

    /// One consistency step (diffusers' `CMStochasticIterativeScheduler.step`): the boundary-condition
    /// denoised sample, clipped with `clip_denoised`, re-noised to the next σ. A multistep schedule
    /// draws the noise from `input.noise` at every step; a one-step schedule draws none.
    fn step(&mut self, input: StepInput<'_>, _args: &NoArgs) -> Result<SchedulerOutput> {
        let StepInput { model_output, timestep, sample, mut noise, .. } = input;
        require_timesteps(self.num_inference_steps)?;
        let (model_output, x, shape, out_dtype) = step_tensors(model_output, sample)?;
        let s = resolve_step_index(&self.timesteps, self.step_index, self.begin_index, timestep)?;
        let c = &self.config;
        let sigma = self.sigmas[s];
        // as diffusers: the next σ, or the last one once the index reaches num_train_timesteps
        let sigma_next =
            if s + 1 < c.num_train_timesteps { self.sigmas[s + 1] } else { self.sigmas[self.sigmas.len() - 1] };
        let (c_skip, c_out) = self.scalings_for_boundary_condition(sigma);
        let mut denoised = lin_comb(&[(&model_output, c_out), (&x, c_skip)])?;
        if c.clip_denoised {
            denoised = denoised.clamp(-1.0, 1.0)?;
        }
        let prev = if self.timesteps.len() > 1 {
            let z = noise.draw(&shape, x.device(), x.dtype(), "a multistep consistency-model step")?;
            let sigma_hat = sigma_next.clamp(c.sigma_min, c.sigma_max);
            let scale = c.s_noise * (sigma_hat * sigma_hat - c.sigma_min * c.sigma_min).max(0.0).sqrt();
            lin_comb(&[(&denoised, 1.0), (&z, scale)])?
        } else {
            denoised
        };
        let out = SchedulerOutput::sample(prev.to_dtype(out_dtype)?);
        self.step_index = Some(s + 1);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::super::noise::Noise;
    use super::*;

    fn scheduler() -> CmStochasticIterativeScheduler {
        CmStochasticIterativeScheduler::new(ConsistencyConfig::default()).unwrap()
    }

    #[test]
    fn schedules() {
        let mut s = scheduler();
        assert_eq!(s.timesteps().len(), 40);
        s.set_timesteps(4).unwrap();
        assert_eq!(s.sigmas().unwrap().len(), 5);
        assert_eq!(s.sigmas().unwrap()[0], 80.0);
        assert_eq!(s.sigmas().unwrap()[4], round_f32(0.002));
        assert!((s.timesteps()[0] - 250.0 * 80f64.ln()).abs() < 1e-9);
        // explicit timesteps: [22, 0] as ConsistencyModelPipeline's example passes them
        s.set_timesteps_with(TimestepsSpec::Timesteps(&[22.0, 0.0]), &NoArgs {}).unwrap();
        assert!(s.custom_timesteps());
        assert_eq!(s.timesteps().len(), 2);
        // diffusers 0.42.1: timesteps (float64) and σ (float32)
        assert!((s.timesteps()[0] - 1095.5066586684702).abs() < 1e-9);
        assert!((s.timesteps()[1] - 80.94948482281791).abs() < 1e-9);
        assert_eq!(s.sigmas().unwrap(), &[80.0, 1.3823679685592651, 0.0020000000949949026]);
    }

    #[test]
    fn refusals() {
        let mut s = scheduler();
        let x = Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&x, 1095.5, &x), &NoArgs {}).is_err());
        assert!(s.set_timesteps(0).is_err());
        assert!(s.set_timesteps(41).is_err());
        let spec = |ts: &'static [f64]| TimestepsSpec::Timesteps(ts);
        for bad in [&[0.0, 22.0][..], &[22.0, 22.0], &[40.0, 0.0], &[22.5, 0.0], &[3.0, -1.0], &[]] {
            assert!(s.set_timesteps_with(spec(bad), &NoArgs {}).is_err(), "{bad:?}");
        }
        assert!(s.set_timesteps_with(TimestepsSpec::Sigmas(&[1.0]), &NoArgs {}).is_err());
        s.set_timesteps(2).unwrap();
        let ts = s.timesteps().to_vec();
        assert!(s.step(StepInput::new(&x, ts[1], &x), &NoArgs {}).is_err());
        let y = Tensor::ones((1, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&y, ts[0], &x), &NoArgs {}).is_err());
        // a multistep schedule needs noise at every step
        assert!(s.step(StepInput::new(&x, ts[0], &x), &NoArgs {}).is_err());
        assert_eq!(s.step_index(), None);
        let z = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        for &t in &ts {
            s.step(StepInput::new(&x, t, &x).with_noise(Noise::Given(&z)), &NoArgs {}).unwrap();
        }
        assert!(s.step(StepInput::new(&x, ts[1], &x).with_noise(Noise::Given(&z)), &NoArgs {}).is_err());
        assert!(CmStochasticIterativeScheduler::new(ConsistencyConfig {
            num_train_timesteps: 1,
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn one_step_draws_nothing_and_clips() {
        let mut s = scheduler();
        s.set_timesteps(1).unwrap();
        let x = Tensor::new(&[[10.0f32, -10.0]], &Device::Cpu).unwrap();
        let t = s.timesteps()[0];
        let scaled = s.scale_model_input(&x, t).unwrap().to_vec2::<f32>().unwrap();
        assert!((scaled[0][0] as f64 - 10.0 / (6400.25f64).sqrt()).abs() < 1e-6);
        let out = s.step(StepInput::new(&x, t, &x), &NoArgs {}).unwrap().prev_sample.to_vec2::<f32>().unwrap();
        assert_eq!(out, vec![vec![1.0, -1.0]]);
        // the boundary condition: σ = σ_min returns the sample
        let (c_skip, c_out) = s.scalings_for_boundary_condition(0.002);
        assert_eq!((c_skip, c_out), (1.0, 0.0));
    }
}
