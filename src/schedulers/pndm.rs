//! `PNDMScheduler`: pseudo numerical methods for diffusion models (Liu et al., 2022), as diffusers
//! 0.42.1's `scheduling_pndm.py` implements it: a pseudo Runge–Kutta warm-up (PRK, three steps of four
//! model evaluations each) followed by the pseudo linear multistep method (PLMS, up to fourth order),
//! or PLMS alone with `skip_prk_steps` (what Stable Diffusion configs use).
//!
//! The timesteps are diffusers' list with its repeated entries (PRK evaluates each step at its start,
//! twice at its midpoint and at its end; PLMS without PRK evaluates the first step twice), and `step`
//! is called once per entry; `order` is 1, as diffusers reports it. The state is diffusers': the
//! history `ets` of model outputs at PLMS/PRK step starts, the call `counter`, the PRK accumulator and
//! the sample the current step started from.
//!
//! Stricter than diffusers: each call's timestep must be the schedule's next entry (diffusers uses
//! whatever it is given, with its counter), `num_inference_steps` must be at most
//! `num_train_timesteps` (diffusers accepts more and repeats timesteps), PRK needs at least 4 steps
//! (diffusers fails with a numpy broadcast error), and a schedule whose timesteps fall beyond the
//! training range (a large `steps_offset`) is refused by `set_timesteps` (diffusers fails with an IndexError mid-run). A failed
//! step leaves the state untouched. Prediction types: `epsilon` and `v_prediction` (diffusers refuses
//! `sample`, so does the config here).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::algorithm::{NoArgs, SchedulerAlgorithm, SchedulerConfig, SchedulerOutput, StepInput, TimestepsSpec};
use super::betas::NoiseSchedule;
use super::common::{check_step_tensors, compute_dtype, lin_comb, require_timesteps};
use super::config::{
    json_float, validate_classic_beta_schedule, validate_common, validate_steps_offset, BetaSchedule, PredictionType,
    TimestepSpacing,
};
use super::timesteps::{check_num_inference_steps, ddpm_ddim_timesteps};

/// The number of PRK warm-up steps' evaluations per step (`pndm_order`).
const PNDM_ORDER: usize = 4;

/// `PNDMScheduler`'s config, with diffusers' defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PndmConfig {
    pub num_train_timesteps: usize,
    #[serde(with = "json_float")]
    pub beta_start: f64,
    #[serde(with = "json_float")]
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    /// PLMS from the first step, without the Runge–Kutta warm-up.
    pub skip_prk_steps: bool,
    /// ᾱ after the last step: 1, or ᾱ₀.
    pub set_alpha_to_one: bool,
    /// `epsilon` or `v_prediction`.
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
}

impl Default for PndmConfig {
    fn default() -> Self {
        PndmConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            skip_prk_steps: false,
            set_alpha_to_one: false,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
        }
    }
}

impl SchedulerConfig for PndmConfig {
    fn validate(&self) -> Result<()> {
        // PNDM has no thresholding: the shared check gets the (valid) defaults for those values
        validate_common(
            self.num_train_timesteps,
            self.beta_start,
            self.beta_end,
            self.trained_betas.as_deref(),
            0.995,
            1.0,
        )?;
        validate_classic_beta_schedule(self.beta_schedule, self.trained_betas.is_some(), "PNDMScheduler")?;
        validate_steps_offset(self.steps_offset)?;
        if self.prediction_type == PredictionType::Sample {
            return Err(Error::config(
                "prediction_type",
                "`sample` is not supported by PNDMScheduler (as in diffusers); use epsilon or v_prediction",
            ));
        }
        Ok(())
    }

    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
}

/// diffusers' `PNDMScheduler`.
#[derive(Clone, Debug)]
pub struct PndmScheduler {
    config: PndmConfig,
    schedule: NoiseSchedule,
    final_alpha_cumprod: f64,
    /// The PRK entries of the schedule (empty with `skip_prk_steps`).
    prk_timesteps: Vec<i64>,
    /// The full schedule: PRK entries, then PLMS entries.
    timesteps: Vec<f64>,
    num_inference_steps: Option<usize>,
    /// Model outputs at the start of each step (PRK) or each PLMS call but the second.
    ets: Vec<Tensor>,
    /// Calls taken since `set_timesteps`.
    counter: usize,
    /// The PRK accumulator (`cur_model_output`), None for diffusers' 0.
    cur_model_output: Option<Tensor>,
    /// The sample the current PRK step (or the first PLMS step) started from.
    cur_sample: Option<Tensor>,
}

/// What one call computes, committed to the state once it succeeded.
struct Update {
    ets_push: Option<Tensor>,
    ets_keep_last: Option<usize>,
    cur_model_output: Option<Option<Tensor>>,
    cur_sample: Option<Option<Tensor>>,
}

impl PndmScheduler {
    /// The calls taken since `set_timesteps` (diffusers' `counter`).
    pub fn counter(&self) -> usize {
        self.counter
    }

    /// The model-output history (diffusers' `ets`).
    pub fn ets(&self) -> &[Tensor] {
        &self.ets
    }

    /// ᾱ used after the last step: 1 with `set_alpha_to_one`, else ᾱ₀.
    pub fn final_alpha_cumprod(&self) -> f64 {
        self.final_alpha_cumprod
    }

    /// The schedule of `set_timesteps(n)`: (PRK entries, PLMS entries), as diffusers builds them.
    fn build_timesteps(&self, n: usize) -> Result<(Vec<i64>, Vec<i64>)> {
        let c = &self.config;
        let big_n = c.num_train_timesteps;
        check_num_inference_steps(n, big_n)?;
        // `_timesteps`, ascending
        let mut base = ddpm_ddim_timesteps(c.timestep_spacing, big_n, n, c.steps_offset);
        base.reverse();
        let (prk, plms): (Vec<i64>, Vec<i64>) = if c.skip_prk_steps {
            // concat(_ts[:-1], _ts[-2:-1], _ts[-1:])[::-1]: the first step is evaluated twice
            let mut plms: Vec<i64> = base[..base.len() - 1].to_vec();
            if base.len() >= 2 {
                plms.push(base[base.len() - 2]);
            }
            plms.push(base[base.len() - 1]);
            plms.reverse();
            (Vec::new(), plms)
        } else {
            if n < PNDM_ORDER {
                return Err(Error::argument(
                    "num_inference_steps",
                    format!(
                        "PNDM's Runge-Kutta warm-up needs at least {PNDM_ORDER} steps, got {n} \
                         (or set skip_prk_steps in the config)"
                    ),
                ));
            }
            let half = (big_n / n / 2) as i64;
            // repeat(_ts[-4:], 2) + tile([0, half], 4), then [:-1].repeat(2)[1:-1] reversed
            let last4 = &base[base.len() - PNDM_ORDER..];
            let pairs: Vec<i64> = last4.iter().flat_map(|&t| [t, t + half]).collect();
            let doubled: Vec<i64> = pairs[..pairs.len() - 1].iter().flat_map(|&t| [t, t]).collect();
            let mut prk = doubled[1..doubled.len() - 1].to_vec();
            prk.reverse();
            let mut plms = base[..base.len() - 3].to_vec();
            plms.reverse();
            (prk, plms)
        };
        if let Some(t) = prk.iter().chain(&plms).find(|t| !(0..big_n as i64).contains(*t)) {
            return Err(Error::argument(
                "num_inference_steps",
                format!(
                    "{n} steps with timestep_spacing `{}` and steps_offset {} give timestep {t}, outside the \
                     training range [0, {big_n})",
                    c.timestep_spacing.as_str(),
                    c.steps_offset
                ),
            ));
        }
        Ok((prk, plms))
    }

    /// ᾱ at a training timestep, or the final ᾱ for a negative one.
    fn alpha_prod(&self, t: i64) -> Result<f64> {
        if t < 0 {
            return Ok(self.final_alpha_cumprod);
        }
        self.schedule.alphas_cumprod.get(t as usize).copied().ok_or_else(|| {
            Error::argument(
                "timestep",
                format!("{t} is outside the training range [0, {})", self.config.num_train_timesteps),
            )
        })
    }

    /// diffusers' `_get_prev_sample`: x_{t−δ} from x_t by formula (9) of the PNDM paper.
    fn prev_sample(&self, sample: &Tensor, timestep: i64, prev_timestep: i64, model_output: &Tensor) -> Result<Tensor> {
        let alpha_prod_t = self.alpha_prod(timestep)?;
        let alpha_prod_t_prev = self.alpha_prod(prev_timestep)?;
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let model_output = match self.config.prediction_type {
            PredictionType::VPrediction => {
                lin_comb(&[(model_output, alpha_prod_t.sqrt()), (sample, beta_prod_t.sqrt())])?
            }
            _ => model_output.clone(),
        };
        let sample_coeff = (alpha_prod_t_prev / alpha_prod_t).sqrt();
        let denom = alpha_prod_t * beta_prod_t_prev.sqrt() + (alpha_prod_t * beta_prod_t * alpha_prod_t_prev).sqrt();
        lin_comb(&[(sample, sample_coeff), (&model_output, -(alpha_prod_t_prev - alpha_prod_t) / denom)])
    }

    /// diffusers' `step_prk`: call `counter` of the Runge–Kutta warm-up.
    fn step_prk(&self, model_output: &Tensor, timestep: i64, sample: &Tensor) -> Result<(Tensor, Update)> {
        let n = require_timesteps(self.num_inference_steps)?;
        let counter = self.counter;
        let diff_to_prev = if counter % 2 == 1 { 0 } else { (self.config.num_train_timesteps / n / 2) as i64 };
        let prev_timestep = timestep - diff_to_prev;
        let step_start = self.prk_timesteps[counter / 4 * 4];
        let mut update = Update { ets_push: None, ets_keep_last: None, cur_model_output: None, cur_sample: None };
        let accumulate = |acc: &Option<Tensor>, weight: f64| -> Result<Tensor> {
            let term = model_output.affine(weight, 0.0)?;
            Ok(match acc {
                Some(a) => (a + term)?,
                None => term,
            })
        };
        let (model_output, cur_sample) = match counter % 4 {
            0 => {
                update.cur_model_output = Some(Some(accumulate(&self.cur_model_output, 1.0 / 6.0)?));
                update.ets_push = Some(model_output.clone());
                update.cur_sample = Some(Some(sample.clone()));
                (model_output.clone(), sample.clone())
            }
            1 | 2 => {
                update.cur_model_output = Some(Some(accumulate(&self.cur_model_output, 1.0 / 3.0)?));
                (model_output.clone(), self.cur_sample.clone().unwrap_or_else(|| sample.clone()))
            }
            _ => {
                let combined = accumulate(&self.cur_model_output, 1.0 / 6.0)?;
                update.cur_model_output = Some(None);
                (combined, self.cur_sample.clone().unwrap_or_else(|| sample.clone()))
            }
        };
        let prev = self.prev_sample(&cur_sample, step_start, prev_timestep, &model_output)?;
        Ok((prev, update))
    }

    /// diffusers' `step_plms`: one linear multistep call.
    fn step_plms(&self, model_output: &Tensor, timestep: i64, sample: &Tensor) -> Result<(Tensor, Update)> {
        let n = require_timesteps(self.num_inference_steps)?;
        if !self.config.skip_prk_steps && self.ets.len() < 3 {
            return Err(Error::argument(
                "timestep",
                "PNDM's linear multistep steps can only run after the 12 Runge-Kutta warm-up calls",
            ));
        }
        let ratio = (self.config.num_train_timesteps / n) as i64;
        let counter = self.counter;
        let mut update = Update { ets_push: None, ets_keep_last: None, cur_model_output: None, cur_sample: None };
        let (mut timestep, mut prev_timestep) = (timestep, timestep - ratio);
        // the history as diffusers has it after this call's append
        let mut ets: Vec<&Tensor> = self.ets.iter().collect();
        if counter != 1 {
            let keep = ets.len().min(3);
            ets.drain(..ets.len() - keep);
            ets.push(model_output);
            update.ets_keep_last = Some(3);
            update.ets_push = Some(model_output.clone());
        } else {
            // the first step's second evaluation: redo the step from its start
            prev_timestep = timestep;
            timestep += ratio;
        }
        let mut sample = sample.clone();
        let e = |k: usize| ets[ets.len() - k];
        let model_output = if ets.len() == 1 && counter == 0 {
            update.cur_sample = Some(Some(sample.clone()));
            model_output.clone()
        } else if ets.len() == 1 && counter == 1 {
            sample = self.cur_sample.clone().ok_or_else(|| {
                Error::argument("timestep", "PNDM's second call has no first-step sample: call set_timesteps again")
            })?;
            update.cur_sample = Some(None);
            lin_comb(&[(model_output, 0.5), (e(1), 0.5)])?
        } else if ets.len() == 2 {
            lin_comb(&[(e(1), 1.5), (e(2), -0.5)])?
        } else if ets.len() == 3 {
            lin_comb(&[(e(1), 23.0 / 12.0), (e(2), -16.0 / 12.0), (e(3), 5.0 / 12.0)])?
        } else {
            lin_comb(&[(e(1), 55.0 / 24.0), (e(2), -59.0 / 24.0), (e(3), 37.0 / 24.0), (e(4), -9.0 / 24.0)])?
        };
        let prev = self.prev_sample(&sample, timestep, prev_timestep, &model_output)?;
        Ok((prev, update))
    }
}

impl SchedulerAlgorithm for PndmScheduler {
    const CLASS_NAME: &'static str = "PNDMScheduler";
    const SHORT_NAME: &'static str = "pndm";
    const SUMMARY: &'static str = "PNDM / PLMS (linear multistep, Stable Diffusion's original sampler): about 50 steps";
    const DEFAULT_STEPS: usize = 50;
    const STEP_PARAMS: &'static [&'static str] = &["return_dict"];
    const SET_TIMESTEPS_PARAMS: &'static [&'static str] = &["num_inference_steps", "device"];

    type Config = PndmConfig;
    type TimestepArgs = NoArgs;
    type StepArgs = NoArgs;

    fn new(config: PndmConfig) -> Result<Self> {
        config.validate()?;
        let schedule = NoiseSchedule::new(
            config.beta_schedule,
            config.beta_start,
            config.beta_end,
            config.num_train_timesteps,
            config.trained_betas.as_deref(),
            false,
        )?;
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { schedule.alphas_cumprod[0] };
        Ok(PndmScheduler {
            config,
            schedule,
            final_alpha_cumprod,
            prk_timesteps: Vec::new(),
            // diffusers' `timesteps` is None before set_timesteps
            timesteps: Vec::new(),
            num_inference_steps: None,
            ets: Vec::new(),
            counter: 0,
            cur_model_output: None,
            cur_sample: None,
        })
    }

    fn config(&self) -> &PndmConfig {
        &self.config
    }

    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, _args: &NoArgs) -> Result<()> {
        let n = match spec {
            TimestepsSpec::Count(n) => n,
            TimestepsSpec::Timesteps(_) => {
                return Err(Error::argument(
                    "timesteps",
                    "PNDMScheduler does not take custom timesteps (as in diffusers); give num_inference_steps",
                ))
            }
            TimestepsSpec::Sigmas(_) => return Err(Error::argument("sigmas", "PNDMScheduler does not take sigmas")),
        };
        let (prk, plms) = self.build_timesteps(n)?;
        self.timesteps = prk.iter().chain(&plms).map(|&t| t as f64).collect();
        self.prk_timesteps = prk;
        self.num_inference_steps = Some(n);
        self.ets.clear();
        self.counter = 0;
        self.cur_model_output = None;
        self.cur_sample = None;
        Ok(())
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

    /// One PRK or PLMS call (diffusers' `PNDMScheduler.step`, which picks by its counter). The
    /// timestep must be the schedule's next entry.
    fn step(&mut self, input: StepInput<'_>, _args: &NoArgs) -> Result<SchedulerOutput> {
        let StepInput { model_output, timestep, sample, .. } = input;
        require_timesteps(self.num_inference_steps)?;
        check_step_tensors(model_output, sample)?;
        let len = self.timesteps.len();
        let Some(&expected) = self.timesteps.get(self.counter) else {
            return Err(Error::argument(
                "timestep",
                format!("all {len} calls of the schedule are done: call set_timesteps to start again"),
            ));
        };
        if timestep != expected {
            return Err(Error::argument(
                "timestep",
                format!("expected timestep {expected} (call {} of {len}), got {timestep}", self.counter),
            ));
        }
        let t = expected as i64;

        let out_dtype = sample.dtype();
        let dtype = compute_dtype(out_dtype);
        let x = sample.to_dtype(dtype)?;
        let model_output = model_output.to_dtype(dtype)?;
        let (prev, update) = if self.counter < self.prk_timesteps.len() && !self.config.skip_prk_steps {
            self.step_prk(&model_output, t, &x)?
        } else {
            self.step_plms(&model_output, t, &x)?
        };
        let prev_sample = prev.to_dtype(out_dtype)?;

        // commit the state only once everything succeeded
        if let Some(keep) = update.ets_keep_last {
            let drop = self.ets.len().saturating_sub(keep);
            self.ets.drain(..drop);
        }
        if let Some(e) = update.ets_push {
            self.ets.push(e);
        }
        if let Some(m) = update.cur_model_output {
            self.cur_model_output = m;
        }
        if let Some(s) = update.cur_sample {
            self.cur_sample = s;
        }
        self.counter += 1;
        Ok(SchedulerOutput::sample(prev_sample))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn scheduler(skip_prk_steps: bool) -> PndmScheduler {
        PndmScheduler::new(PndmConfig { skip_prk_steps, ..Default::default() }).unwrap()
    }

    #[test]
    fn timesteps_repeat_as_in_diffusers() {
        let mut s = scheduler(true);
        s.set_timesteps(5).unwrap();
        assert_eq!(s.timesteps(), &[800.0, 600.0, 600.0, 400.0, 200.0, 0.0]);
        let mut s = scheduler(false);
        s.set_timesteps(5).unwrap();
        assert_eq!(
            s.timesteps(),
            &[800.0, 700.0, 700.0, 600.0, 600.0, 500.0, 500.0, 400.0, 400.0, 300.0, 300.0, 200.0, 200.0, 0.0]
        );
        assert_eq!(s.order(), 1);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let mut s = scheduler(false);
        assert!(s.set_timesteps(0).is_err());
        assert!(s.set_timesteps(3).is_err());
        assert!(s.set_timesteps(1001).is_err());
        assert!(s.set_timesteps_with(TimestepsSpec::Timesteps(&[10.0]), &NoArgs {}).is_err());
        let x = Tensor::zeros((1, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&x, 800.0, &x), &NoArgs {}).is_err(), "before set_timesteps");
        s.set_timesteps(5).unwrap();
        assert!(s.step(StepInput::new(&x, 700.0, &x), &NoArgs {}).is_err(), "not the next timestep");
        let bad = Tensor::zeros((1, 2, 2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&bad, 800.0, &x), &NoArgs {}).is_err(), "shape");
        let ints = Tensor::zeros((1, 2, 2, 2), DType::U32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&ints, 800.0, &x), &NoArgs {}).is_err(), "dtype");
        assert_eq!(s.counter(), 0, "failed steps leave the state untouched");
        for t in s.timesteps().to_vec() {
            s.step(StepInput::new(&x, t, &x), &NoArgs {}).unwrap();
        }
        assert!(s.step(StepInput::new(&x, 0.0, &x), &NoArgs {}).is_err(), "after the last");
        let sample = PndmConfig { prediction_type: PredictionType::Sample, ..Default::default() };
        assert!(PndmScheduler::new(sample).is_err());
        let offset = PndmConfig { steps_offset: 100, ..Default::default() };
        assert!(PndmScheduler::new(offset).unwrap().set_timesteps(10).is_err(), "timestep 1000 beyond N − 1");
    }
}
