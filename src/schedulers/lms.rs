//! `LMSDiscreteScheduler`: the linear multistep method in σ space (k-diffusion's `sample_lms`), as
//! diffusers 0.42.1's `scheduling_lms_discrete.py` implements it.
//!
//! Each step integrates the Lagrange polynomial through the last `order` derivatives
//! `(x − x₀)/σ` over [σᵢ, σᵢ₊₁]. diffusers integrates each coefficient numerically with
//! `scipy.integrate.quad`; the integrand is a polynomial, so here it is integrated exactly (the
//! value quad approximates; diffusers evaluates the integrand in float32, ~1e-7 relative away).
//!
//! Supported: every config key diffusers accepts (`use_karras_sigmas` / `use_exponential_sigmas` /
//! `use_beta_sigmas`, `timestep_spacing`, `steps_offset`, all three prediction types) and the step
//! argument `order` ([`LmsStepArgs`], default 4; the first steps use what history there is).
//!
//! Differences from diffusers: a step or `scale_model_input` before `set_timesteps` is an error
//! (diffusers uses the 1000-step schedule its constructor sets, which
//! [`LmsDiscreteScheduler::timesteps`] shows until then); after the first step the timestep must be
//! the schedule's next one; `order` 0 is refused (diffusers then returns the sample unchanged);
//! `leading`/`trailing` spacing with more steps than training timesteps is refused; a failed step
//! leaves the derivative history untouched.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::algorithm::{
    NoArgs, SchedulerAlgorithm, SchedulerConfig, SchedulerOutput, StepInput, TimestepType, TimestepsSpec,
};
use super::betas::round_f32;
use super::common::{check_step_tensors, compute_dtype, lin_comb, require_timesteps};
use super::config::{validate_steps_offset, BetaSchedule, PredictionType, TimestepSpacing};
use super::euler_discrete::family::{self, SigmaConversion, StepIndex, TrainSigmas};
use super::sigmas as sigma_math;

/// `LMSDiscreteScheduler`'s config, with diffusers' defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LmsDiscreteConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    #[serde(deserialize_with = "family::null_as_false")]
    pub use_karras_sigmas: bool,
    #[serde(deserialize_with = "family::null_as_false")]
    pub use_exponential_sigmas: bool,
    #[serde(deserialize_with = "family::null_as_false")]
    pub use_beta_sigmas: bool,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
}

impl Default for LmsDiscreteConfig {
    fn default() -> Self {
        LmsDiscreteConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
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

impl LmsDiscreteConfig {
    fn conversion(&self) -> Result<SigmaConversion> {
        SigmaConversion::from_flags(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)
    }
}

impl SchedulerConfig for LmsDiscreteConfig {
    fn validate(&self) -> Result<()> {
        family::validate_schedule(
            self.num_train_timesteps,
            self.beta_start,
            self.beta_end,
            self.beta_schedule,
            self.trained_betas.as_deref(),
            "LMSDiscreteScheduler",
        )?;
        validate_steps_offset(self.steps_offset)?;
        self.conversion()?.check_train_timesteps(self.num_train_timesteps)
    }

    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
}

/// `LMSDiscreteScheduler.step`'s own argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LmsStepArgs {
    /// How many past derivatives the multistep formula uses (≥ 1; fewer on the first steps).
    pub order: usize,
}

impl Default for LmsStepArgs {
    fn default() -> Self {
        LmsStepArgs { order: 4 }
    }
}

/// diffusers' `LMSDiscreteScheduler`.
#[derive(Clone, Debug)]
pub struct LmsDiscreteScheduler {
    config: LmsDiscreteConfig,
    alphas_cumprod: Vec<f64>,
    train: TrainSigmas,
    timesteps: Vec<f64>,
    /// σ at each timestep and the final 0 (float32 values).
    sigmas: Vec<f64>,
    num_inference_steps: Option<usize>,
    index: StepIndex,
    /// The latest derivatives, oldest first (at most the last step's `order`).
    derivatives: Vec<Tensor>,
}

impl LmsDiscreteScheduler {
    /// The index of the next step (None until the first `scale_model_input` or `step` of a run).
    pub fn step_index(&self) -> Option<usize> {
        self.index.step_index
    }

    /// Starts the next run at index `begin_index` of the schedule (diffusers' `set_begin_index`).
    /// Reset by `set_timesteps`.
    pub fn set_begin_index(&mut self, begin_index: usize) {
        self.index.begin_index = Some(begin_index);
    }

    /// diffusers' `get_lms_coefficient(order, t, current_order)`, integrated exactly.
    pub fn lms_coefficient(&self, order: usize, t: usize, current_order: usize) -> Result<f64> {
        sigma_math::lms_coefficient(&self.sigmas, order, t, current_order)
    }

    fn schedule(&self, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
        let c = &self.config;
        family::check_count(n, c.num_train_timesteps, c.timestep_spacing)?;
        let timesteps = sigma_math::sigma_timesteps(c.timestep_spacing, c.num_train_timesteps, n, c.steps_offset);
        let interpolated = sigma_math::interp_sigmas(&timesteps, &self.train.sigmas)?;
        let (timesteps, mut sigmas) =
            match c.conversion()?.convert(&interpolated, n, None, None, &self.train.log_sigmas)? {
                Some((sigmas, timesteps)) => (timesteps, sigmas),
                None => (timesteps, interpolated),
            };
        sigmas.push(0.0);
        Ok((timesteps.into_iter().map(round_f32).collect(), sigmas.into_iter().map(round_f32).collect()))
    }

    fn install(&mut self, (timesteps, sigmas): (Vec<f64>, Vec<f64>), num_inference_steps: Option<usize>) {
        self.timesteps = timesteps;
        self.sigmas = sigmas;
        self.num_inference_steps = num_inference_steps;
        self.index = StepIndex::default();
        self.derivatives.clear();
    }
}

impl SchedulerAlgorithm for LmsDiscreteScheduler {
    const CLASS_NAME: &'static str = "LMSDiscreteScheduler";
    const SHORT_NAME: &'static str = "lms";
    const SUMMARY: &'static str = "linear multistep (order 4 by default): smooth results in about 50 steps";
    const DEFAULT_STEPS: usize = 50;
    const STEP_PARAMS: &'static [&'static str] = &["order", "return_dict"];
    const SET_TIMESTEPS_PARAMS: &'static [&'static str] = &["num_inference_steps", "device"];

    type Config = LmsDiscreteConfig;
    type TimestepArgs = NoArgs;
    type StepArgs = LmsStepArgs;

    fn new(config: LmsDiscreteConfig) -> Result<Self> {
        config.validate()?;
        let alphas_cumprod = family::alphas_cumprod(
            config.beta_schedule,
            config.beta_start,
            config.beta_end,
            config.num_train_timesteps,
            config.trained_betas.as_deref(),
            false,
        )?;
        let train = TrainSigmas::new(&alphas_cumprod);
        let n = config.num_train_timesteps;
        let mut s = LmsDiscreteScheduler {
            config,
            alphas_cumprod,
            train,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            num_inference_steps: None,
            index: StepIndex::default(),
            derivatives: Vec::new(),
        };
        // diffusers' constructor calls set_timesteps(num_train_timesteps): show that schedule, but
        // a step still needs set_timesteps
        let schedule = s.schedule(n)?;
        s.install(schedule, None);
        Ok(s)
    }

    fn config(&self) -> &LmsDiscreteConfig {
        &self.config
    }

    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, _args: &NoArgs) -> Result<()> {
        match spec {
            TimestepsSpec::Count(n) => {
                let schedule = self.schedule(n)?;
                self.install(schedule, Some(n));
                Ok(())
            }
            TimestepsSpec::Timesteps(_) => Err(Error::argument(
                "timesteps",
                "LMSDiscreteScheduler does not take custom timesteps (as in diffusers); give num_inference_steps",
            )),
            TimestepsSpec::Sigmas(_) => Err(Error::argument(
                "sigmas",
                "LMSDiscreteScheduler does not take custom sigmas (as in diffusers); give num_inference_steps",
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

    /// One LMS step: `x + Σₖ cₖ·dₖ` over the newest derivatives dₖ (newest first), with
    /// `min(step + 1, order)` coefficients.
    fn step(&mut self, input: StepInput<'_>, args: &LmsStepArgs) -> Result<SchedulerOutput> {
        let StepInput { model_output, timestep, sample, .. } = input;
        require_timesteps(self.num_inference_steps)?;
        if args.order == 0 {
            return Err(Error::argument("order", "must be at least 1, got 0"));
        }
        check_step_tensors(model_output, sample)?;
        let i = self.index.resolve(&self.timesteps, timestep, false)?;
        let sigma = self.sigmas[i];

        let out_dtype = sample.dtype();
        let dtype = compute_dtype(out_dtype);
        let x = sample.to_dtype(dtype)?;
        let model_output = model_output.to_dtype(dtype)?;
        let x0 = family::pred_original(self.config.prediction_type, &x, &model_output, sigma, sigma)?;
        let derivative = lin_comb(&[(&x, 1.0 / sigma), (&x0, -1.0 / sigma)])?;

        let mut derivatives = self.derivatives.clone();
        derivatives.push(derivative);
        // diffusers drops one entry per step, so a smaller `order` later keeps a longer history,
        // which the zip below then truncates
        if derivatives.len() > args.order {
            derivatives.remove(0);
        }
        let order = (i + 1).min(args.order);
        let coeffs = (0..order).map(|k| self.lms_coefficient(order, i, k)).collect::<Result<Vec<f64>>>()?;
        let history: Vec<Tensor> =
            derivatives.iter().rev().map(|d| d.to_dtype(dtype)).collect::<candle_core::Result<_>>()?;
        let mut terms: Vec<(&Tensor, f64)> = vec![(&x, 1.0)];
        terms.extend(history.iter().zip(&coeffs).map(|(d, &c)| (d, c)));
        let prev = lin_comb(&terms)?;
        let out = SchedulerOutput::with_original(prev.to_dtype(out_dtype)?, x0.to_dtype(out_dtype)?);
        self.derivatives = derivatives;
        self.index.advance(i);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    #[test]
    fn schedule_and_errors() {
        let mut s = LmsDiscreteScheduler::new(Default::default()).unwrap();
        assert_eq!(s.timesteps().len(), 1000, "diffusers' constructor schedule");
        let x = Tensor::ones((1, 3), DType::F32, &Device::Cpu).unwrap();
        let args = LmsStepArgs::default();
        assert!(s.step(StepInput::new(&x, 999.0, &x), &args).is_err(), "before set_timesteps");
        assert!(s.set_timesteps(0).is_err());
        assert!(s.set_timesteps_with(TimestepsSpec::Timesteps(&[5.0]), &NoArgs {}).is_err());
        assert!(s.set_timesteps_with(TimestepsSpec::Sigmas(&[5.0, 0.0]), &NoArgs {}).is_err());
        s.set_timesteps(5).unwrap();
        assert_eq!(s.sigmas().unwrap().len(), 6);
        let ts = s.timesteps().to_vec();
        assert!(s.step(StepInput::new(&x, ts[0], &x), &LmsStepArgs { order: 0 }).is_err());
        let bad = Tensor::ones((1, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&bad, ts[0], &x), &args).is_err());
        assert!(s.step(StepInput::new(&x, 1.5, &x), &args).is_err());
        for &t in &ts {
            s.step(StepInput::new(&x, t, &x), &args).unwrap();
        }
        assert_eq!(s.derivatives.len(), 4);
        assert!(s.step(StepInput::new(&x, ts[4], &x), &args).is_err(), "past the end");
        assert_eq!(s.derivatives.len(), 4, "a failed step keeps the history");
        assert!(LmsDiscreteScheduler::new(LmsDiscreteConfig {
            use_beta_sigmas: true,
            use_karras_sigmas: true,
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn lms_integrates_a_constant_derivative_exactly() {
        // ε constant ⇒ the derivative is constant and every order gives x + ε·(σ_next − σ)
        let mut s = LmsDiscreteScheduler::new(Default::default()).unwrap();
        s.set_timesteps(6).unwrap();
        let ts = s.timesteps().to_vec();
        let sig = s.sigmas().unwrap().to_vec();
        let eps = Tensor::full(0.5f32, (1, 2), &Device::Cpu).unwrap();
        let mut x = Tensor::full(100f32, (1, 2), &Device::Cpu).unwrap();
        let mut want = 100.0;
        for (i, &t) in ts.iter().enumerate() {
            x = s.step(StepInput::new(&eps, t, &x), &LmsStepArgs::default()).unwrap().prev_sample;
            want += 0.5 * (sig[i + 1] - sig[i]);
            let got = x.to_vec2::<f32>().unwrap()[0][0] as f64;
            assert!((got - want).abs() < 1e-3, "step {i}: {got} vs {want}");
        }
    }
}
