//! `DDIMScheduler`: denoising diffusion implicit models (Song et al., 2020), as diffusers 0.42.1's
//! `scheduling_ddim.py` implements it, with `eta`, `use_clipped_model_output`, `set_alpha_to_one`,
//! clipping/thresholding, the three prediction types and `variance_noise` injection
//! ([`DdimStepArgs`] are `step`'s own arguments).
//!
//! As in diffusers, the previous timestep is always `t − num_train_timesteps / num_inference_steps`
//! (whatever the spacing), and any timestep in `[0, num_train_timesteps)` may be stepped. A step with
//! `eta > 0` needs a noise source; with `eta = 0` none is used and a generator does not advance.

use serde::Deserialize;

use crate::error::{Error, Result};

use super::algorithm::{NoArgs, SchedulerAlgorithm, SchedulerOutput, StepInput, TimestepsSpec};
use super::betas::NoiseSchedule;
use super::common::{check_step_tensors, compute_dtype, ddpm_ddim_methods, lin_comb, require_timesteps, train_index};
use super::config::{DdimConfig, PredictionType};

/// diffusers' `DDIMScheduler`.
#[derive(Clone, Debug)]
pub struct DdimScheduler {
    config: DdimConfig,
    schedule: NoiseSchedule,
    final_alpha_cumprod: f64,
    timesteps: Vec<f64>,
    num_inference_steps: Option<usize>,
}

/// `DDIMScheduler.step`'s own arguments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdimStepArgs {
    /// η: the weight of the added noise (0: deterministic DDIM, 1: DDPM-like).
    pub eta: f64,
    /// Re-derive ε from the clipped/thresholded x₀ (as Glide does).
    pub use_clipped_model_output: bool,
}

impl DdimScheduler {
    ddpm_ddim_methods!();

    /// ᾱ used after the last step: 1 with `set_alpha_to_one`, else ᾱ₀.
    pub fn final_alpha_cumprod(&self) -> f64 {
        self.final_alpha_cumprod
    }
}

impl SchedulerAlgorithm for DdimScheduler {
    const CLASS_NAME: &'static str = "DDIMScheduler";
    const SHORT_NAME: &'static str = "ddim";
    const SUMMARY: &'static str = "DDIM: deterministic with eta 0, good in about 50 steps";
    const DEFAULT_STEPS: usize = 50;
    const STEP_PARAMS: &'static [&'static str] =
        &["eta", "use_clipped_model_output", "generator", "variance_noise", "return_dict"];
    const SET_TIMESTEPS_PARAMS: &'static [&'static str] = &["num_inference_steps", "device"];

    type Config = DdimConfig;
    type TimestepArgs = NoArgs;
    type StepArgs = DdimStepArgs;

    fn new(config: DdimConfig) -> Result<Self> {
        config.validate()?;
        let schedule = config.noise_schedule()?;
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { schedule.alphas_cumprod[0] };
        let timesteps = (0..config.num_train_timesteps).rev().map(|t| t as f64).collect();
        Ok(DdimScheduler { config, schedule, final_alpha_cumprod, timesteps, num_inference_steps: None })
    }

    fn config(&self) -> &DdimConfig {
        &self.config
    }

    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, _args: &NoArgs) -> Result<()> {
        match spec {
            TimestepsSpec::Count(n) => {
                self.timesteps = self.spaced_timesteps(n)?;
                self.num_inference_steps = Some(n);
                Ok(())
            }
            TimestepsSpec::Timesteps(_) => Err(Error::argument(
                "timesteps",
                "DDIMScheduler does not take custom timesteps (as in diffusers); give num_inference_steps",
            )),
            TimestepsSpec::Sigmas(_) => Err(Error::argument("sigmas", "DDIMScheduler does not take sigmas")),
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

    /// One DDIM step x_t → x_{t−Δ} (diffusers' `DDIMScheduler.step`).
    ///
    /// `args.eta` weighs the added noise; with `eta > 0` it comes from `input.noise`. With
    /// `args.use_clipped_model_output`, ε is re-derived from the clipped/thresholded x₀.
    fn step(&mut self, input: StepInput<'_>, args: &DdimStepArgs) -> Result<SchedulerOutput> {
        let StepInput { model_output, timestep, sample, mut noise, .. } = input;
        let use_clipped_model_output = args.use_clipped_model_output;
        let num_inference_steps = require_timesteps(self.num_inference_steps)?;
        let eta = args.eta;
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(Error::argument("eta", format!("must be a finite number ≥ 0, got {eta}")));
        }
        let timestep = train_index(timestep, self.config.num_train_timesteps)?;
        let shape = check_step_tensors(model_output, sample)?;

        // 1. previous step value
        let prev_timestep = timestep - (self.config.num_train_timesteps / num_inference_steps) as i64;
        // 2. alphas, betas
        let alpha_prod_t = self.alpha_prod(timestep)?;
        let alpha_prod_t_prev =
            if prev_timestep >= 0 { self.alpha_prod(prev_timestep)? } else { self.final_alpha_cumprod };
        let beta_prod_t = 1.0 - alpha_prod_t;

        let out_dtype = sample.dtype();
        let dtype = compute_dtype(out_dtype);
        let x = sample.to_dtype(dtype)?;
        let model_output = model_output.to_dtype(dtype)?;

        // 3. predicted x₀ and ε (formula 12)
        let (pred_original, pred_epsilon) = match self.config.prediction_type {
            PredictionType::Epsilon => {
                let x0 = lin_comb(&[(&x, 1.0), (&model_output, -beta_prod_t.sqrt())])?
                    .affine(1.0 / alpha_prod_t.sqrt(), 0.0)?;
                (x0, model_output.clone())
            }
            PredictionType::Sample => {
                let eps = lin_comb(&[(&x, 1.0), (&model_output, -alpha_prod_t.sqrt())])?
                    .affine(1.0 / beta_prod_t.sqrt(), 0.0)?;
                (model_output.clone(), eps)
            }
            PredictionType::VPrediction => {
                let x0 = lin_comb(&[(&x, alpha_prod_t.sqrt()), (&model_output, -beta_prod_t.sqrt())])?;
                let eps = lin_comb(&[(&model_output, alpha_prod_t.sqrt()), (&x, beta_prod_t.sqrt())])?;
                (x0, eps)
            }
        };

        // 4. clip or threshold x₀
        let pred_original = self.clip_or_threshold(pred_original)?;

        // 5. σ_t(η) (formula 16)
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let variance = (beta_prod_t_prev / beta_prod_t) * (1.0 - alpha_prod_t / alpha_prod_t_prev);
        let std_dev_t = eta * variance.sqrt();

        let pred_epsilon = if use_clipped_model_output {
            lin_comb(&[(&x, 1.0), (&pred_original, -alpha_prod_t.sqrt())])?.affine(1.0 / beta_prod_t.sqrt(), 0.0)?
        } else {
            pred_epsilon
        };

        // 6.–7. direction pointing to x_t, and x_{t−1} without noise
        let dir_coeff = (1.0 - alpha_prod_t_prev - std_dev_t * std_dev_t).sqrt();
        let mut prev = lin_comb(&[(&pred_original, alpha_prod_t_prev.sqrt()), (&pred_epsilon, dir_coeff)])?;

        if eta > 0.0 {
            let noise = noise.draw(&shape, x.device(), dtype, "a DDIM step with eta > 0")?;
            prev = (prev + noise.affine(std_dev_t, 0.0)?)?;
        }

        Ok(SchedulerOutput::with_original(prev.to_dtype(out_dtype)?, pred_original.to_dtype(out_dtype)?))
    }
}
