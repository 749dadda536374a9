//! `DDIMScheduler`: denoising diffusion implicit models (Song et al., 2020), as diffusers 0.42.1's
//! `scheduling_ddim.py` implements it, with `eta`, `use_clipped_model_output`, `set_alpha_to_one`,
//! clipping/thresholding, the three prediction types and `variance_noise` injection.
//!
//! As in diffusers, the previous timestep is always `t − num_train_timesteps / num_inference_steps`
//! (whatever the spacing), and any timestep in `[0, num_train_timesteps)` may be stepped. A step with
//! `eta > 0` needs `variance_noise` or a `generator`; with `eta = 0` neither is used and the generator
//! does not advance.

use std::path::Path;

use candle_core::Tensor;
use serde_json::Value;

use crate::error::{Error, Result};

use super::betas::NoiseSchedule;
use super::common::{
    check_float, check_noise_sources, check_shape, clip, compute_dtype, lin_comb, step_noise, threshold_sample,
};
use super::config::{read_config_json, DdimConfig, PredictionType};
use super::timesteps::{check_num_inference_steps, ddpm_ddim_timesteps};
use super::{SchedulerKind, SchedulerOutput, StepOptions};

/// diffusers' `DDIMScheduler`.
#[derive(Clone, Debug)]
pub struct DdimScheduler {
    config: DdimConfig,
    schedule: NoiseSchedule,
    final_alpha_cumprod: f64,
    timesteps: Vec<i64>,
    num_inference_steps: Option<usize>,
}

impl DdimScheduler {
    /// Builds the scheduler from a validated config.
    pub fn new(config: DdimConfig) -> Result<Self> {
        config.validate()?;
        let schedule = NoiseSchedule::new(
            config.beta_schedule,
            config.beta_start,
            config.beta_end,
            config.num_train_timesteps,
            config.trained_betas.as_deref(),
            config.rescale_betas_zero_snr,
        )?;
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { schedule.alphas_cumprod[0] };
        let timesteps = (0..config.num_train_timesteps as i64).rev().collect();
        Ok(DdimScheduler { config, schedule, final_alpha_cumprod, timesteps, num_inference_steps: None })
    }

    /// From a config object (foreign and `_`-prefixed keys ignored, as `DDIMScheduler.from_config`).
    pub fn from_json(value: &Value) -> Result<Self> {
        Self::new(DdimConfig::from_json(value)?)
    }

    /// From `dir/scheduler_config.json` or `dir/scheduler/scheduler_config.json`.
    pub fn from_pretrained(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_json(&read_config_json(dir.as_ref())?)
    }

    /// The parsed config.
    pub fn config(&self) -> &DdimConfig {
        &self.config
    }

    /// The full config with `_class_name` (diffusers' `.config`).
    pub fn config_json(&self) -> Value {
        self.config.to_json()
    }

    /// [`SchedulerKind::Ddim`].
    pub fn kind(&self) -> SchedulerKind {
        SchedulerKind::Ddim
    }

    /// `num_train_timesteps` of the config.
    pub fn num_train_timesteps(&self) -> usize {
        self.config.num_train_timesteps
    }

    /// Model evaluations per step (diffusers' `order`): 1.
    pub fn order(&self) -> usize {
        1
    }

    /// σ of the initial noise: 1.
    pub fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// βₜ of the training schedule.
    pub fn betas(&self) -> &[f64] {
        &self.schedule.betas
    }

    /// ᾱₜ of the training schedule.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.schedule.alphas_cumprod
    }

    /// ᾱ used after the last step: 1 with `set_alpha_to_one`, else ᾱ₀.
    pub fn final_alpha_cumprod(&self) -> f64 {
        self.final_alpha_cumprod
    }

    /// The number of inference steps set by the last `set_timesteps`, if any.
    pub fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    /// The timesteps to step through, descending (before `set_timesteps`: all training timesteps,
    /// as diffusers shows them, though stepping needs `set_timesteps`).
    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// The identity: DDIM does not scale the model input.
    pub fn scale_model_input(&self, sample: &Tensor, _timestep: i64) -> Result<Tensor> {
        Ok(sample.clone())
    }

    /// Sets `num_inference_steps` timesteps spaced by `timestep_spacing`.
    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        check_num_inference_steps(num_inference_steps, self.config.num_train_timesteps)?;
        self.timesteps = ddpm_ddim_timesteps(
            self.config.timestep_spacing,
            self.config.num_train_timesteps,
            num_inference_steps,
            self.config.steps_offset,
        );
        self.num_inference_steps = Some(num_inference_steps);
        Ok(())
    }

    fn alpha_prod(&self, t: i64) -> Result<f64> {
        usize::try_from(t).ok().and_then(|i| self.schedule.alphas_cumprod.get(i).copied()).ok_or_else(|| {
            Error::argument(
                "timestep",
                format!("{t} is outside the training range [0, {})", self.config.num_train_timesteps),
            )
        })
    }

    /// One DDIM step x_t → x_{t−Δ} (diffusers' `DDIMScheduler.step` with `use_clipped_model_output=False`).
    ///
    /// `opts.eta` weighs the added noise (0: deterministic DDIM, 1: DDPM-like); with `eta > 0` the noise
    /// is `opts.variance_noise` or a draw from `opts.generator` (one is required).
    pub fn step(
        &self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
        opts: StepOptions<'_>,
    ) -> Result<SchedulerOutput> {
        self.step_with_clipped_model_output(model_output, timestep, sample, opts, false)
    }

    /// [`DdimScheduler::step`] with diffusers' `use_clipped_model_output`: when true, ε is re-derived
    /// from the clipped/thresholded x₀ (as Glide does).
    pub fn step_with_clipped_model_output(
        &self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
        mut opts: StepOptions<'_>,
        use_clipped_model_output: bool,
    ) -> Result<SchedulerOutput> {
        let Some(num_inference_steps) = self.num_inference_steps else {
            return Err(Error::argument(
                "timestep",
                "the scheduler has no timesteps yet: call set_timesteps before step",
            ));
        };
        let eta = opts.eta;
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(Error::argument("eta", format!("must be a finite number ≥ 0, got {eta}")));
        }
        check_noise_sources(&opts)?;
        check_float("sample", sample)?;
        check_float("model_output", model_output)?;
        let shape = sample.dims().to_vec();
        check_shape("model_output", model_output, &shape)?;

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
        let pred_original = if self.config.thresholding {
            threshold_sample(&pred_original, self.config.dynamic_thresholding_ratio, self.config.sample_max_value)?
        } else if self.config.clip_sample {
            clip(&pred_original, self.config.clip_sample_range)?
        } else {
            pred_original
        };

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
            let noise = step_noise(&mut opts, &shape, x.device(), dtype, "a DDIM step with eta > 0")?;
            prev = (prev + noise.affine(std_dev_t, 0.0)?)?;
        }

        Ok(SchedulerOutput {
            prev_sample: prev.to_dtype(out_dtype)?,
            pred_original_sample: Some(pred_original.to_dtype(out_dtype)?),
        })
    }
}
