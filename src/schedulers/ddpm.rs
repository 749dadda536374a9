//! `DDPMScheduler`: the ancestral sampler of Ho et al. (2020), as diffusers 0.42.1's
//! `scheduling_ddpm.py` implements it.
//!
//! Differences from diffusers, all on inputs diffusers does not handle:
//! * [`DdpmScheduler::step`] before [`DdpmScheduler::set_timesteps`] is an error (diffusers falls back
//!   to the full 1000-step schedule);
//! * `variance_noise` can be injected (diffusers' DDPM has no such argument); a step with `t > 0` needs
//!   either it or a `generator` (there is no hidden global random source);
//! * `variance_type: fixed_large_log` uses `exp(½·log βₜ) = √βₜ` as the standard deviation (diffusers
//!   takes the square root of `log βₜ`, which is negative, and returns NaN).

use candle_core::Tensor;

use crate::error::{Error, Result};

use super::algorithm::{NoArgs, SchedulerAlgorithm, SchedulerOutput, StepInput, TimestepsSpec};
use super::betas::NoiseSchedule;
use super::common::{
    check_float, check_shape, compute_dtype, ddpm_ddim_methods, lin_comb, require_timesteps, train_index,
};
use super::config::{DdpmConfig, PredictionType, VarianceType};

/// diffusers' `DDPMScheduler`.
#[derive(Clone, Debug)]
pub struct DdpmScheduler {
    config: DdpmConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    num_inference_steps: Option<usize>,
}

impl DdpmScheduler {
    ddpm_ddim_methods!();

    /// Sets custom timesteps (diffusers' `set_timesteps(timesteps=[…])`): strictly descending
    /// training timesteps.
    fn set_custom_timesteps(&mut self, timesteps: &[f64]) -> Result<()> {
        if timesteps.is_empty() {
            return Err(Error::argument("timesteps", "must not be empty"));
        }
        if timesteps.windows(2).any(|w| w[1] >= w[0]) {
            return Err(Error::argument("timesteps", "custom timesteps must be in strictly descending order"));
        }
        let n = self.config.num_train_timesteps;
        if let Some(bad) = timesteps.iter().find(|t| train_index(**t, n).is_err()) {
            return Err(Error::argument(
                "timesteps",
                format!("custom timestep {bad} is not a training timestep (an integer in [0, {n}))"),
            ));
        }
        self.timesteps = timesteps.to_vec();
        self.num_inference_steps = Some(timesteps.len());
        Ok(())
    }

    /// The timestep after `timestep` in the schedule (−1 after the last one).
    pub fn previous_timestep(&self, timestep: i64) -> Result<i64> {
        let index = self.timesteps.iter().position(|&t| t == timestep as f64).ok_or_else(|| {
            Error::argument("timestep", format!("{timestep} is not in the scheduler's timesteps {:?}", self.timesteps))
        })?;
        Ok(self.timesteps.get(index + 1).map_or(-1, |&t| t as i64))
    }
}

impl SchedulerAlgorithm for DdpmScheduler {
    const CLASS_NAME: &'static str = "DDPMScheduler";
    const SHORT_NAME: &'static str = "ddpm";
    const SUMMARY: &'static str = "ancestral DDPM sampling; as trained, best with 1000 steps";
    const DEFAULT_STEPS: usize = 1000;

    type Config = DdpmConfig;
    type TimestepArgs = NoArgs;
    type StepArgs = NoArgs;

    fn new(config: DdpmConfig) -> Result<Self> {
        config.validate()?;
        let schedule = config.noise_schedule()?;
        let timesteps = (0..config.num_train_timesteps).rev().map(|t| t as f64).collect();
        Ok(DdpmScheduler { config, schedule, timesteps, num_inference_steps: None })
    }

    fn config(&self) -> &DdpmConfig {
        &self.config
    }

    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, _args: &NoArgs) -> Result<()> {
        match spec {
            TimestepsSpec::Count(n) => {
                self.timesteps = self.spaced_timesteps(n)?;
                self.num_inference_steps = Some(n);
                Ok(())
            }
            TimestepsSpec::Timesteps(ts) => self.set_custom_timesteps(ts),
            TimestepsSpec::Sigmas(_) => Err(Error::argument("sigmas", "DDPMScheduler does not take sigmas")),
        }
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    fn alphas_cumprod(&self) -> Option<&[f64]> {
        Some(&self.schedule.alphas_cumprod)
    }

    /// One reverse step x_t → x_{t−1} (diffusers' `DDPMScheduler.step`).
    ///
    /// `model_output` is the model's prediction for `sample` at `timestep` (with twice the sample's
    /// channels on dim 1 for `variance_type: learned*`, split as diffusers does). For `timestep > 0` the
    /// step adds noise from `input.noise`.
    fn step(&mut self, input: StepInput<'_>, _args: &NoArgs) -> Result<SchedulerOutput> {
        let StepInput { model_output, timestep, sample, mut noise, .. } = input;
        let timestep = train_index(timestep, self.config.num_train_timesteps)?;
        require_timesteps(self.num_inference_steps)?;
        check_float("sample", sample)?;
        check_float("model_output", model_output)?;
        let t = timestep;
        let prev_t = self.previous_timestep(t)?;
        let alpha_prod_t = self.alpha_prod(t)?;
        let alpha_prod_t_prev = if prev_t >= 0 { self.alpha_prod(prev_t)? } else { 1.0 };

        let shape = sample.dims().to_vec();
        let variance_type = self.config.variance_type;
        let (model_output, predicted_variance) = if variance_type.is_learned() {
            let mut doubled = shape.clone();
            if doubled.len() >= 2 {
                doubled[1] *= 2;
            }
            if shape.len() < 2 || model_output.dims() != doubled.as_slice() {
                return Err(Error::argument(
                    "model_output",
                    format!(
                        "variance_type `{}` needs the predicted variance as extra channels: expected shape \
                         {doubled:?} (twice the sample's channels), got {:?}",
                        variance_type.as_str(),
                        model_output.dims()
                    ),
                ));
            }
            let chunks = model_output.chunk(2, 1)?;
            (chunks[0].clone(), Some(chunks[1].clone()))
        } else {
            check_shape("model_output", model_output, &shape)?;
            (model_output.clone(), None)
        };

        let out_dtype = sample.dtype();
        let dtype = compute_dtype(out_dtype);
        let x = sample.to_dtype(dtype)?;
        let model_output = model_output.to_dtype(dtype)?;

        // 1. alphas, betas
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
        let current_beta_t = 1.0 - current_alpha_t;

        // 2. predicted x₀ (formula 15)
        let pred_original = match self.config.prediction_type {
            PredictionType::Epsilon => {
                lin_comb(&[(&x, 1.0), (&model_output, -beta_prod_t.sqrt())])?.affine(1.0 / alpha_prod_t.sqrt(), 0.0)?
            }
            PredictionType::Sample => model_output.clone(),
            PredictionType::VPrediction => {
                lin_comb(&[(&x, alpha_prod_t.sqrt()), (&model_output, -beta_prod_t.sqrt())])?
            }
        };

        // 3. clip or threshold x₀
        let pred_original = self.clip_or_threshold(pred_original)?;

        // 4.–5. posterior mean (formula 7)
        let x0_coeff = alpha_prod_t_prev.sqrt() * current_beta_t / beta_prod_t;
        let xt_coeff = current_alpha_t.sqrt() * beta_prod_t_prev / beta_prod_t;
        let mut prev = lin_comb(&[(&pred_original, x0_coeff), (&x, xt_coeff)])?;

        // 6. noise
        if t > 0 {
            let noise = noise.draw(&shape, x.device(), dtype, "a DDPM step with timestep > 0")?;
            // β̃ₜ, clamped as diffusers does before taking logs
            let variance = ((1.0 - alpha_prod_t_prev) / (1.0 - alpha_prod_t) * current_beta_t).max(1e-20);
            let scaled = match variance_type {
                VarianceType::FixedSmall => noise.affine(variance.sqrt(), 0.0)?,
                VarianceType::FixedSmallLog => noise.affine((0.5 * variance.ln()).exp(), 0.0)?,
                VarianceType::FixedLarge => noise.affine(current_beta_t.sqrt(), 0.0)?,
                VarianceType::FixedLargeLog => noise.affine((0.5 * current_beta_t.ln()).exp(), 0.0)?,
                VarianceType::Learned => {
                    let pv = predicted_variance_or_err(&predicted_variance)?.to_dtype(dtype)?;
                    (pv.sqrt()? * &noise)?
                }
                VarianceType::LearnedRange => {
                    let pv = predicted_variance_or_err(&predicted_variance)?.to_dtype(dtype)?;
                    let min_log = variance.ln();
                    let max_log = current_beta_t.ln();
                    // frac·max_log + (1 − frac)·min_log with frac = (v + 1) / 2
                    let log_var = pv.affine((max_log - min_log) / 2.0, (max_log + min_log) / 2.0)?;
                    (log_var.affine(0.5, 0.0)?.exp()? * &noise)?
                }
            };
            prev = (prev + scaled)?;
        }

        Ok(SchedulerOutput::with_original(prev.to_dtype(out_dtype)?, pred_original.to_dtype(out_dtype)?))
    }
}

fn predicted_variance_or_err(pv: &Option<Tensor>) -> Result<&Tensor> {
    pv.as_ref().ok_or_else(|| Error::argument("model_output", "missing the predicted variance channels"))
}
