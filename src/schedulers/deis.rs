//! `DEISMultistepScheduler`: diffusion exponential integrator sampler (Zhang & Chen, 2022), the
//! log-ρ multistep variant diffusers 0.42.1's `scheduling_deis_multistep.py` implements.
//!
//! Supported: `solver_order` 1–3, `algorithm_type` `deis` (`dpmsolver`/`dpmsolver++` are read as
//! `deis` and anything else refused, as diffusers does), `solver_type` `logrho` (`midpoint`, `heun`,
//! `bh1`, `bh2` read as `logrho`, as diffusers does), `lower_order_final` (below 15 steps, as in
//! diffusers), `use_karras_sigmas` / `use_exponential_sigmas`, `timestep_spacing`, `steps_offset`,
//! prediction types epsilon/sample/v_prediction and thresholding. The final σ is diffusers': σ at
//! training timestep 0 for the interpolated schedule, the last converted σ repeated for Karras /
//! exponential σ (so that last step returns its sample unchanged, as in diffusers).
//! Not supported (refused by the config): `use_beta_sigmas`, `use_flow_sigmas` / `flow_prediction`;
//! `flow_shift`, `use_dynamic_shifting` and `time_shift_type` only matter with flow sigmas and are
//! carried as is.
//!
//! Stateful like diffusers (the last `solver_order` converted outputs, the step index, the count of
//! lower-order steps); stricter in the same ways as [`super::DpmSolverMultistepScheduler`]: the
//! timestep must be the schedule's next one, `num_inference_steps ≤ num_train_timesteps`, and a failed
//! step leaves the state untouched.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::algorithm::{NoArgs, SchedulerAlgorithm, SchedulerConfig, SchedulerOutput, StepInput, TimestepsSpec};
use super::betas::{round_f32, NoiseSchedule};
use super::common::{check_step_tensors, compute_dtype, lin_comb, require_timesteps, threshold_sample};
use super::config::{
    json_float, validate_classic_beta_schedule, validate_common, validate_steps_offset, BetaSchedule, PredictionType,
    TimestepSpacing,
};
use super::dpm_common::{
    converted_sigmas, data_prediction, history, interpolated_sigmas, point, resolve_step_index, sigma_schedule,
    SigmaSchedule, TrainTables,
};
use super::timesteps::{check_num_inference_steps, dpm_timesteps};

/// DEIS's algorithm: only `deis` (diffusers rewrites `dpmsolver` and `dpmsolver++` to it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DeisAlgorithmType {
    /// The exponential integrator on ε.
    #[serde(rename = "deis", alias = "dpmsolver", alias = "dpmsolver++")]
    Deis,
}

/// DEIS's solver: only `logrho` (diffusers rewrites `midpoint`, `heun`, `bh1`, `bh2` to it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DeisSolverType {
    /// Polynomial extrapolation in log ρ.
    #[serde(rename = "logrho", alias = "midpoint", alias = "heun", alias = "bh1", alias = "bh2")]
    LogRho,
}

/// `DEISMultistepScheduler`'s config, with diffusers' defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeisConfig {
    pub num_train_timesteps: usize,
    #[serde(with = "json_float")]
    pub beta_start: f64,
    #[serde(with = "json_float")]
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    /// 1, 2 or 3.
    pub solver_order: usize,
    pub prediction_type: PredictionType,
    pub thresholding: bool,
    #[serde(with = "json_float")]
    pub dynamic_thresholding_ratio: f64,
    #[serde(with = "json_float")]
    pub sample_max_value: f64,
    pub algorithm_type: DeisAlgorithmType,
    pub solver_type: DeisSolverType,
    /// First-order final steps when there are fewer than 15 steps.
    pub lower_order_final: bool,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    /// Refused: not supported.
    pub use_beta_sigmas: bool,
    /// Refused: not supported.
    pub use_flow_sigmas: bool,
    #[serde(with = "json_float")]
    pub flow_shift: f64,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub use_dynamic_shifting: bool,
    pub time_shift_type: String,
}

impl Default for DeisConfig {
    fn default() -> Self {
        DeisConfig {
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
            algorithm_type: DeisAlgorithmType::Deis,
            solver_type: DeisSolverType::LogRho,
            lower_order_final: true,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            use_dynamic_shifting: false,
            time_shift_type: "exponential".to_string(),
        }
    }
}

impl DeisConfig {
    fn sigma_schedule(&self) -> Result<SigmaSchedule> {
        sigma_schedule(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)
    }
}

impl SchedulerConfig for DeisConfig {
    fn validate(&self) -> Result<()> {
        validate_common(
            self.num_train_timesteps,
            self.beta_start,
            self.beta_end,
            self.trained_betas.as_deref(),
            self.dynamic_thresholding_ratio,
            self.sample_max_value,
        )?;
        validate_classic_beta_schedule(self.beta_schedule, self.trained_betas.is_some(), "DEISMultistepScheduler")?;
        validate_steps_offset(self.steps_offset)?;
        if !(1..=3).contains(&self.solver_order) {
            return Err(Error::config("solver_order", format!("must be 1, 2 or 3, got {}", self.solver_order)));
        }
        self.sigma_schedule()?;
        if self.use_flow_sigmas {
            return Err(Error::config(
                "use_flow_sigmas",
                "flow-matching sigmas are not supported by this implementation",
            ));
        }
        Ok(())
    }

    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
}

/// diffusers' `DEISMultistepScheduler`.
#[derive(Clone, Debug)]
pub struct DeisMultistepScheduler {
    config: DeisConfig,
    schedule: NoiseSchedule,
    tables: TrainTables,
    timesteps: Vec<f64>,
    /// σ at each inference timestep, plus the final σ.
    sigmas: Vec<f64>,
    num_inference_steps: Option<usize>,
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

impl DeisMultistepScheduler {
    /// The index of the next step (None until the first step after `set_timesteps`).
    pub fn step_index(&self) -> Option<usize> {
        self.step_index
    }

    /// Starts the next run at index `begin_index` of the schedule (diffusers' `set_begin_index`).
    /// Reset by `set_timesteps`.
    pub fn set_begin_index(&mut self, begin_index: usize) {
        self.begin_index = Some(begin_index);
    }

    fn set_spaced_timesteps(&mut self, n: usize) -> Result<()> {
        let c = &self.config;
        let big_n = c.num_train_timesteps;
        check_num_inference_steps(n, big_n)?;
        let timesteps = dpm_timesteps(c.timestep_spacing, big_n, big_n, n, c.steps_offset);
        let (timesteps, mut sigmas) = match c.sigma_schedule()? {
            SigmaSchedule::Interpolated => {
                let mut s = interpolated_sigmas(&timesteps, &self.tables.sigmas);
                s.push(self.tables.sigma_min());
                (timesteps, s)
            }
            kind => {
                let t = &self.tables;
                let (ts, mut s) = converted_sigmas(
                    kind,
                    &t.log_sigmas,
                    t.sigma_min(),
                    t.sigmas[big_n - 1],
                    n,
                    kind == SigmaSchedule::Karras,
                )?;
                // diffusers repeats the last converted σ as the final one
                s.push(s[s.len() - 1]);
                (ts, s)
            }
        };
        sigmas.iter_mut().for_each(|s| *s = round_f32(*s));
        self.num_inference_steps = Some(timesteps.len());
        self.timesteps = timesteps.into_iter().map(|t| t as f64).collect();
        self.sigmas = sigmas;
        self.model_outputs = vec![None; self.config.solver_order];
        self.lower_order_nums = 0;
        self.step_index = None;
        self.begin_index = None;
        Ok(())
    }

    /// diffusers' `convert_model_output`: ε, through x₀ (thresholded when configured).
    fn convert_model_output(&self, model_output: &Tensor, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let c = &self.config;
        let (alpha_t, sigma_t, _) = point(sigma);
        let x0 = data_prediction(c.prediction_type, model_output, x, alpha_t, sigma_t)?;
        let x0 =
            if c.thresholding { threshold_sample(&x0, c.dynamic_thresholding_ratio, c.sample_max_value)? } else { x0 };
        Ok(lin_comb(&[(x, 1.0), (&x0, -alpha_t)])?.affine(1.0 / sigma_t, 0.0)?)
    }

    /// ρ = σₜ/αₜ at index `j` of the σ schedule, with αₜ.
    fn rho(&self, j: usize) -> (f64, f64) {
        let (alpha, sigma, _) = point(self.sigmas[j]);
        (sigma / alpha, alpha)
    }

    fn first_order_update(&self, m0: &Tensor, x: &Tensor, i: usize) -> Result<Tensor> {
        let (alpha_t, sigma_t, lambda_t) = point(self.sigmas[i + 1]);
        let (alpha_s, _, lambda_s) = point(self.sigmas[i]);
        let h = lambda_t - lambda_s;
        lin_comb(&[(x, alpha_t / alpha_s), (m0, -(sigma_t * (h.exp() - 1.0)))])
    }

    fn second_order_update(&self, m0: &Tensor, m1: &Tensor, x: &Tensor, i: usize) -> Result<Tensor> {
        let (rho_t, alpha_t) = self.rho(i + 1);
        let (rho_s0, alpha_s0) = self.rho(i);
        let (rho_s1, _) = self.rho(i - 1);
        let ind = |t: f64, b: f64, c: f64| t * (-c.ln() + t.ln() - 1.0) / (b.ln() - c.ln());
        let coef1 = ind(rho_t, rho_s0, rho_s1) - ind(rho_s0, rho_s0, rho_s1);
        let coef2 = ind(rho_t, rho_s1, rho_s0) - ind(rho_s0, rho_s1, rho_s0);
        lin_comb(&[(x, alpha_t / alpha_s0), (m0, alpha_t * coef1), (m1, alpha_t * coef2)])
    }

    fn third_order_update(&self, m0: &Tensor, m1: &Tensor, m2: &Tensor, x: &Tensor, i: usize) -> Result<Tensor> {
        let (rho_t, alpha_t) = self.rho(i + 1);
        let (rho_s0, alpha_s0) = self.rho(i);
        let (rho_s1, _) = self.rho(i - 1);
        let (rho_s2, _) = self.rho(i - 2);
        let ind = |t: f64, b: f64, c: f64, d: f64| {
            let (lt, lb, lc, ld) = (t.ln(), b.ln(), c.ln(), d.ln());
            let numerator = t * (lc * (ld - lt + 1.0) - ld * lt + ld + lt * lt - 2.0 * lt + 2.0);
            numerator / ((lb - lc) * (lb - ld))
        };
        let coef1 = ind(rho_t, rho_s0, rho_s1, rho_s2) - ind(rho_s0, rho_s0, rho_s1, rho_s2);
        let coef2 = ind(rho_t, rho_s1, rho_s2, rho_s0) - ind(rho_s0, rho_s1, rho_s2, rho_s0);
        let coef3 = ind(rho_t, rho_s2, rho_s0, rho_s1) - ind(rho_s0, rho_s2, rho_s0, rho_s1);
        lin_comb(&[(x, alpha_t / alpha_s0), (m0, alpha_t * coef1), (m1, alpha_t * coef2), (m2, alpha_t * coef3)])
    }
}

impl SchedulerAlgorithm for DeisMultistepScheduler {
    const CLASS_NAME: &'static str = "DEISMultistepScheduler";
    const SHORT_NAME: &'static str = "deis";
    const SUMMARY: &'static str = "DEIS (multistep exponential integrator, 2nd/3rd order): good in about 20-25 steps";
    const DEFAULT_STEPS: usize = 25;
    const STEP_PARAMS: &'static [&'static str] = &["return_dict"];
    const SET_TIMESTEPS_PARAMS: &'static [&'static str] = &["num_inference_steps", "device", "mu"];

    type Config = DeisConfig;
    type TimestepArgs = NoArgs;
    type StepArgs = NoArgs;

    fn new(config: DeisConfig) -> Result<Self> {
        config.validate()?;
        let schedule = NoiseSchedule::new(
            config.beta_schedule,
            config.beta_start,
            config.beta_end,
            config.num_train_timesteps,
            config.trained_betas.as_deref(),
            false,
        )?;
        let tables = TrainTables::new(&schedule.alphas_cumprod);
        let timesteps = (0..config.num_train_timesteps).rev().map(|t| t as f64).collect();
        let solver_order = config.solver_order;
        Ok(DeisMultistepScheduler {
            config,
            schedule,
            tables,
            timesteps,
            sigmas: Vec::new(),
            num_inference_steps: None,
            model_outputs: vec![None; solver_order],
            lower_order_nums: 0,
            step_index: None,
            begin_index: None,
        })
    }

    fn config(&self) -> &DeisConfig {
        &self.config
    }

    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, _args: &NoArgs) -> Result<()> {
        match spec {
            TimestepsSpec::Count(n) => self.set_spaced_timesteps(n),
            TimestepsSpec::Timesteps(_) => Err(Error::argument(
                "timesteps",
                "DEISMultistepScheduler does not take custom timesteps (as in diffusers); give num_inference_steps",
            )),
            TimestepsSpec::Sigmas(_) => Err(Error::argument("sigmas", "DEISMultistepScheduler does not take sigmas")),
        }
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn alphas_cumprod(&self) -> Option<&[f64]> {
        Some(&self.schedule.alphas_cumprod)
    }

    /// One multistep DEIS step (diffusers' `DEISMultistepScheduler.step`).
    fn step(&mut self, input: StepInput<'_>, _args: &NoArgs) -> Result<SchedulerOutput> {
        let StepInput { model_output, timestep, sample, .. } = input;
        require_timesteps(self.num_inference_steps)?;
        check_step_tensors(model_output, sample)?;
        let i = resolve_step_index(&self.timesteps, self.step_index, self.begin_index, timestep)?;
        let c = &self.config;
        let n = self.timesteps.len();
        let lower_order_final = i == n - 1 && c.lower_order_final && n < 15;
        let lower_order_second = i + 2 == n && c.lower_order_final && n < 15;

        let out_dtype = sample.dtype();
        let dtype = compute_dtype(out_dtype);
        let x = sample.to_dtype(dtype)?;
        let m0 = self.convert_model_output(&model_output.to_dtype(dtype)?, &x, self.sigmas[i])?;
        let order = c.solver_order;
        let hist = |k: usize| -> Result<Tensor> { Ok(history(&self.model_outputs, k)?.to_dtype(dtype)?) };
        let prev = if order == 1 || self.lower_order_nums < 1 || lower_order_final {
            self.first_order_update(&m0, &x, i)?
        } else if order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.second_order_update(&m0, &hist(1)?, &x, i)?
        } else {
            self.third_order_update(&m0, &hist(1)?, &hist(2)?, &x, i)?
        };
        let prev_sample = prev.to_dtype(out_dtype)?;

        // commit the state only once everything succeeded
        self.model_outputs.rotate_left(1);
        if let Some(last) = self.model_outputs.last_mut() {
            *last = Some(m0);
        }
        if self.lower_order_nums < order {
            self.lower_order_nums += 1;
        }
        self.step_index = Some(i + 1);
        Ok(SchedulerOutput::sample(prev_sample))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn config_refuses_what_diffusers_refuses() {
        let parse = |v: serde_json::Value| DeisConfig::parse(&v);
        assert_eq!(
            parse(serde_json::json!({"algorithm_type": "dpmsolver++"})).unwrap().algorithm_type,
            DeisAlgorithmType::Deis
        );
        assert!(parse(serde_json::json!({"algorithm_type": "sde-dpmsolver++"})).is_err());
        assert_eq!(parse(serde_json::json!({"solver_type": "bh2"})).unwrap().solver_type, DeisSolverType::LogRho);
        assert!(parse(serde_json::json!({"solver_type": "unknown"})).is_err());
        assert!(parse(serde_json::json!({"solver_order": 4})).is_err());
        assert!(parse(serde_json::json!({"use_karras_sigmas": true, "use_exponential_sigmas": true})).is_err());
        assert!(parse(serde_json::json!({"use_flow_sigmas": true})).is_err());
    }

    #[test]
    fn schedules_and_errors() {
        let mut s = DeisMultistepScheduler::new(DeisConfig { use_karras_sigmas: true, ..Default::default() }).unwrap();
        assert!(s.set_timesteps(0).is_err());
        assert!(s.set_timesteps(1001).is_err());
        assert!(s.set_timesteps_with(TimestepsSpec::Timesteps(&[10.0]), &NoArgs {}).is_err());
        let x = Tensor::zeros((1, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&x, 999.0, &x), &NoArgs {}).is_err(), "before set_timesteps");
        s.set_timesteps(10).unwrap();
        assert_eq!(s.sigmas.len(), 11);
        assert_eq!(s.sigmas[9], s.sigmas[10], "the last Karras σ is repeated");
        assert_eq!(s.timesteps()[0], 999.0);
        assert!(s.step(StepInput::new(&x, 998.0, &x), &NoArgs {}).is_err(), "not in the schedule");
        let bad = Tensor::zeros((1, 2, 2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&bad, 999.0, &x), &NoArgs {}).is_err());
        assert_eq!(s.step_index(), None, "failed steps leave the state untouched");
        for t in s.timesteps().to_vec() {
            let out = s.step(StepInput::new(&x, t, &x), &NoArgs {}).unwrap();
            assert_eq!(out.prev_sample.dims(), x.dims());
        }
        assert!(s.step(StepInput::new(&x, 0.0, &x), &NoArgs {}).is_err(), "after the last step");
    }
}
