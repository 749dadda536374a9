//! `DPMSolverSinglestepScheduler`: singlestep DPM-Solver / DPM-Solver++ (Lu et al., 2022), as diffusers
//! 0.42.1's `scheduling_dpmsolver_singlestep.py` implements it.
//!
//! The schedule is cut into groups of 1, 2 or 3 steps (`get_order_list`, see
//! [`DpmSolverSinglestepScheduler::order_list`]); each group is one k-th order update from the
//! sample at its start, the intermediate steps' samples only serving as model inputs. Supported:
//! `solver_order` 1–3, `algorithm_type` `dpmsolver++` (default), `dpmsolver` and `sde-dpmsolver++`
//! (`deis` read as `dpmsolver++`; `sde-dpmsolver` is refused, as 0.42.1 does), `solver_type`
//! midpoint/heun (`logrho`, `bh1`, `bh2` read as midpoint), `lower_order_final`, `use_karras_sigmas`
//! / `use_exponential_sigmas`, `final_sigmas_type` zero/sigma_min, `lambda_min_clipped`, custom
//! `timesteps`, prediction types epsilon/sample/v_prediction, thresholding (data prediction) and
//! `variance_type` learned/learned_range (the predicted-variance channels are dropped).
//!
//! As diffusers, `set_timesteps` turns `lower_order_final` on in the config when the step count is
//! not a multiple of `solver_order` or the final σ is zero (diffusers' `register_to_config`).
//! Not supported (refused by the config): `use_beta_sigmas`, `use_flow_sigmas` / `flow_prediction`,
//! and thresholding with `dpmsolver` (diffusers indexes its tables with a missing timestep there and
//! fails). `flow_shift`, `use_dynamic_shifting` and `time_shift_type` only matter with flow sigmas and
//! are carried as is. `sde-dpmsolver++` steps need `variance_noise` or a `generator`.
//!
//! Stricter than diffusers in the same ways as [`super::DpmSolverMultistepScheduler`].

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::algorithm::{NoArgs, SchedulerAlgorithm, SchedulerConfig, SchedulerOutput, StepInput, TimestepsSpec};
use super::betas::{round_f32, NoiseSchedule};
use super::common::{check_float, check_shape, compute_dtype, lin_comb, require_timesteps, threshold_sample};
use super::config::{
    json_float, validate_classic_beta_schedule, validate_common, AlgorithmType, BetaSchedule, FinalSigmasType,
    PredictionType, SolverType, TimestepSpacing, VarianceType,
};
use super::dpm_common::{
    converted_sigmas, custom_train_timesteps, data_prediction, drop_variance_channels, history, interpolated_sigmas,
    noise_prediction, point, resolve_step_index, sigma_schedule, SigmaSchedule, TrainTables,
};
use super::timesteps::{check_num_inference_steps, dpm_timesteps};

/// `DPMSolverSinglestepScheduler`'s config, with diffusers' defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DpmSolverSinglestepConfig {
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
    pub algorithm_type: AlgorithmType,
    pub solver_type: SolverType,
    /// Lower-order groups at the end (turned on by `set_timesteps` where diffusers does).
    pub lower_order_final: bool,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    /// Refused: not supported.
    pub use_beta_sigmas: bool,
    /// Refused: not supported.
    pub use_flow_sigmas: bool,
    #[serde(with = "json_float")]
    pub flow_shift: f64,
    pub final_sigmas_type: FinalSigmasType,
    /// Timesteps whose λ is below this are cut from the noisy end of the schedule.
    #[serde(with = "json_float")]
    pub lambda_min_clipped: f64,
    /// `learned`/`learned_range`: the model output carries predicted-variance channels, which are
    /// dropped. Other values mean "none", as in diffusers.
    pub variance_type: Option<VarianceType>,
    pub use_dynamic_shifting: bool,
    pub time_shift_type: String,
}

impl Default for DpmSolverSinglestepConfig {
    fn default() -> Self {
        DpmSolverSinglestepConfig {
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
            algorithm_type: AlgorithmType::DpmSolverPlusPlus,
            solver_type: SolverType::Midpoint,
            lower_order_final: false,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            final_sigmas_type: FinalSigmasType::Zero,
            lambda_min_clipped: f64::NEG_INFINITY,
            variance_type: None,
            use_dynamic_shifting: false,
            time_shift_type: "exponential".to_string(),
        }
    }
}

impl DpmSolverSinglestepConfig {
    fn sigma_schedule(&self) -> Result<SigmaSchedule> {
        sigma_schedule(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)
    }
}

impl SchedulerConfig for DpmSolverSinglestepConfig {
    fn validate(&self) -> Result<()> {
        validate_common(
            self.num_train_timesteps,
            self.beta_start,
            self.beta_end,
            self.trained_betas.as_deref(),
            self.dynamic_thresholding_ratio,
            self.sample_max_value,
        )?;
        validate_classic_beta_schedule(
            self.beta_schedule,
            self.trained_betas.is_some(),
            "DPMSolverSinglestepScheduler",
        )?;
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
        if self.algorithm_type == AlgorithmType::SdeDpmSolver {
            return Err(Error::config(
                "algorithm_type",
                "`sde-dpmsolver` is not implemented for DPMSolverSinglestepScheduler (as in diffusers); \
                 use dpmsolver++, dpmsolver or sde-dpmsolver++",
            ));
        }
        if !self.algorithm_type.is_data_prediction() && self.final_sigmas_type == FinalSigmasType::Zero {
            return Err(Error::config(
                "final_sigmas_type",
                format!(
                    "`zero` is not supported with algorithm_type `{}`; use `sigma_min`",
                    self.algorithm_type.as_str()
                ),
            ));
        }
        if self.algorithm_type == AlgorithmType::DpmSolver && self.thresholding {
            return Err(Error::config(
                "thresholding",
                "thresholding with algorithm_type `dpmsolver` fails in diffusers' singlestep scheduler; \
                 use dpmsolver++ (data prediction) to threshold",
            ));
        }
        if self.lambda_min_clipped.is_nan() {
            return Err(Error::config("lambda_min_clipped", "must be a number (or -Infinity), got NaN"));
        }
        Ok(())
    }

    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
}

/// diffusers' `DPMSolverSinglestepScheduler`.
#[derive(Clone, Debug)]
pub struct DpmSolverSinglestepScheduler {
    config: DpmSolverSinglestepConfig,
    schedule: NoiseSchedule,
    tables: TrainTables,
    timesteps: Vec<f64>,
    /// σ at each inference timestep, plus the final σ.
    sigmas: Vec<f64>,
    num_inference_steps: Option<usize>,
    /// The order of the update at each step.
    order_list: Vec<usize>,
    model_outputs: Vec<Option<Tensor>>,
    /// The sample the current group started from (diffusers' `self.sample`).
    sample: Option<Tensor>,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

impl DpmSolverSinglestepScheduler {
    /// The index of the next step (None until the first step after `set_timesteps`).
    pub fn step_index(&self) -> Option<usize> {
        self.step_index
    }

    /// Starts the next run at index `begin_index` of the schedule (diffusers' `set_begin_index`).
    /// Reset by `set_timesteps`.
    pub fn set_begin_index(&mut self, begin_index: usize) {
        self.begin_index = Some(begin_index);
    }

    /// The update order of each step (diffusers' `order_list`, from `get_order_list`).
    pub fn order_list(&self) -> &[usize] {
        &self.order_list
    }

    /// diffusers' `get_order_list(steps)`: groups `[1, 2, 3]` (or `[1, 2]`), with lower-order groups
    /// at the end under `lower_order_final`, and a first-order last step when the final σ is zero.
    fn get_order_list(&self, steps: usize) -> Vec<usize> {
        let c = &self.config;
        let repeat = |pattern: &[usize], times: usize| -> Vec<usize> {
            pattern.iter().copied().cycle().take(pattern.len() * times).collect()
        };
        let mut orders = match (c.lower_order_final, c.solver_order) {
            (true, 3) => match steps % 3 {
                0 => [repeat(&[1, 2, 3], (steps / 3).saturating_sub(1)), vec![1, 2, 1]].concat(),
                1 => [repeat(&[1, 2, 3], steps / 3), vec![1]].concat(),
                _ => [repeat(&[1, 2, 3], steps / 3), vec![1, 2]].concat(),
            },
            (true, 2) => {
                if steps.is_multiple_of(2) {
                    [repeat(&[1, 2], (steps / 2).saturating_sub(1)), vec![1, 1]].concat()
                } else {
                    [repeat(&[1, 2], steps / 2), vec![1]].concat()
                }
            }
            (false, 3) => repeat(&[1, 2, 3], steps / 3),
            (false, 2) => repeat(&[1, 2], steps / 2),
            _ => vec![1; steps],
        };
        if c.final_sigmas_type == FinalSigmasType::Zero {
            if let Some(last) = orders.last_mut() {
                *last = 1;
            }
        }
        orders
    }

    fn final_sigma(&self) -> f64 {
        match self.config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => {
                let a0 = self.schedule.alphas_cumprod[0];
                ((1.0 - a0) / a0).sqrt()
            }
        }
    }

    /// Installs `timesteps` with their σ (final σ appended) and resets the run, turning
    /// `lower_order_final` on where diffusers does.
    fn install(&mut self, timesteps: Vec<i64>, mut sigmas: Vec<f64>) {
        sigmas.push(self.final_sigma());
        let n = timesteps.len();
        let c = &mut self.config;
        if !c.lower_order_final && (!n.is_multiple_of(c.solver_order) || c.final_sigmas_type == FinalSigmasType::Zero) {
            c.lower_order_final = true;
        }
        self.order_list = self.get_order_list(n);
        self.num_inference_steps = Some(n);
        self.timesteps = timesteps.into_iter().map(|t| t as f64).collect();
        self.sigmas = sigmas.into_iter().map(round_f32).collect();
        self.model_outputs = vec![None; self.config.solver_order];
        self.sample = None;
        self.step_index = None;
        self.begin_index = None;
    }

    fn set_spaced_timesteps(&mut self, n: usize) -> Result<()> {
        let c = &self.config;
        let big_n = c.num_train_timesteps;
        check_num_inference_steps(n, big_n)?;
        let last_timestep = big_n - self.tables.clipped_count(c.lambda_min_clipped);
        let timesteps = dpm_timesteps(TimestepSpacing::Linspace, big_n, last_timestep, n, 0);
        if last_timestep == 0 || timesteps.is_empty() {
            return Err(Error::config(
                "lambda_min_clipped",
                format!("leaves no timesteps to sample (lambda_min_clipped = {})", c.lambda_min_clipped),
            ));
        }
        let (timesteps, sigmas) = match c.sigma_schedule()? {
            SigmaSchedule::Interpolated => {
                let s = interpolated_sigmas(&timesteps, &self.tables.sigmas);
                (timesteps, s)
            }
            kind => {
                let t = &self.tables;
                converted_sigmas(
                    kind,
                    &t.log_sigmas,
                    t.sigma_min(),
                    t.sigmas[big_n - 1],
                    n,
                    kind == SigmaSchedule::Karras,
                )?
            }
        };
        self.install(timesteps, sigmas);
        Ok(())
    }

    /// diffusers' `set_timesteps(timesteps=[…])`: training timesteps (not with Karras or
    /// exponential σ).
    fn set_custom_timesteps(&mut self, timesteps: &[f64]) -> Result<()> {
        if self.config.sigma_schedule()? != SigmaSchedule::Interpolated {
            return Err(Error::argument(
                "timesteps",
                "custom timesteps cannot be used with use_karras_sigmas or use_exponential_sigmas",
            ));
        }
        let timesteps = custom_train_timesteps(timesteps, self.config.num_train_timesteps)?;
        let sigmas = interpolated_sigmas(&timesteps, &self.tables.sigmas);
        self.install(timesteps, sigmas);
        Ok(())
    }

    /// diffusers' `convert_model_output`: x₀ for the `++` algorithms, ε for `dpmsolver`.
    fn convert_model_output(&self, model_output: &Tensor, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let c = &self.config;
        let (alpha_t, sigma_t, _) = point(sigma);
        if c.algorithm_type.is_data_prediction() {
            let x0 = data_prediction(c.prediction_type, model_output, x, alpha_t, sigma_t)?;
            if c.thresholding {
                threshold_sample(&x0, c.dynamic_thresholding_ratio, c.sample_max_value)
            } else {
                Ok(x0)
            }
        } else {
            noise_prediction(c.prediction_type, model_output, x, alpha_t, sigma_t)
        }
    }

    fn noise_term(noise: Option<&Tensor>) -> Result<&Tensor> {
        noise.ok_or_else(|| Error::argument("variance_noise", "an SDE step needs noise"))
    }

    /// First-order update from index `s` to `t` (DDIM-equivalent).
    fn first_order_update(&self, m: &Tensor, x: &Tensor, noise: Option<&Tensor>, s: usize, t: usize) -> Result<Tensor> {
        let (alpha_t, sigma_t, lambda_t) = point(self.sigmas[t]);
        let (alpha_s, sigma_s, lambda_s) = point(self.sigmas[s]);
        let h = lambda_t - lambda_s;
        match self.config.algorithm_type {
            AlgorithmType::DpmSolver => lin_comb(&[(x, alpha_t / alpha_s), (m, -(sigma_t * (h.exp() - 1.0)))]),
            AlgorithmType::SdeDpmSolverPlusPlus => lin_comb(&[
                (x, sigma_t / sigma_s * (-h).exp()),
                (m, alpha_t * (1.0 - (-2.0 * h).exp())),
                (Self::noise_term(noise)?, sigma_t * (1.0 - (-2.0 * h).exp()).sqrt()),
            ]),
            _ => lin_comb(&[(x, sigma_t / sigma_s), (m, -(alpha_t * ((-h).exp() - 1.0)))]),
        }
    }

    /// Singlestep second-order update: from the group start `i − 1` to `i + 1`, with the outputs at
    /// `i − 1` (m1) and `i` (m0).
    fn second_order_update(
        &self,
        m0: &Tensor,
        m1: &Tensor,
        x: &Tensor,
        noise: Option<&Tensor>,
        i: usize,
    ) -> Result<Tensor> {
        let (alpha_t, sigma_t, lambda_t) = point(self.sigmas[i + 1]);
        let (_, _, lambda_s0) = point(self.sigmas[i]);
        let (alpha_s1, sigma_s1, lambda_s1) = point(self.sigmas[i - 1]);
        let (h, h_0) = (lambda_t - lambda_s1, lambda_s0 - lambda_s1);
        let r0 = h_0 / h;
        let d0 = m1;
        let d1 = (m0 - m1)?.affine(1.0 / r0, 0.0)?;
        let midpoint = self.config.solver_type == SolverType::Midpoint;
        match self.config.algorithm_type {
            AlgorithmType::DpmSolver => {
                let e = h.exp() - 1.0;
                let c1 = if midpoint { -0.5 * (sigma_t * e) } else { -(sigma_t * (e / h - 1.0)) };
                lin_comb(&[(x, alpha_t / alpha_s1), (d0, -(sigma_t * e)), (&d1, c1)])
            }
            AlgorithmType::SdeDpmSolverPlusPlus => {
                let e = 1.0 - (-2.0 * h).exp();
                let c1 = if midpoint { 0.5 * (alpha_t * e) } else { alpha_t * (e / (-2.0 * h) + 1.0) };
                lin_comb(&[
                    (x, sigma_t / sigma_s1 * (-h).exp()),
                    (d0, alpha_t * e),
                    (&d1, c1),
                    (Self::noise_term(noise)?, sigma_t * e.sqrt()),
                ])
            }
            _ => {
                let e = (-h).exp() - 1.0;
                let c1 = if midpoint { -0.5 * (alpha_t * e) } else { alpha_t * (e / h + 1.0) };
                lin_comb(&[(x, sigma_t / sigma_s1), (d0, -(alpha_t * e)), (&d1, c1)])
            }
        }
    }

    /// Singlestep third-order update: from the group start `i − 2` to `i + 1`, with the outputs at
    /// `i − 2` (m2), `i − 1` (m1) and `i` (m0).
    #[allow(clippy::too_many_arguments)]
    fn third_order_update(
        &self,
        m0: &Tensor,
        m1: &Tensor,
        m2: &Tensor,
        x: &Tensor,
        noise: Option<&Tensor>,
        i: usize,
    ) -> Result<Tensor> {
        let (alpha_t, sigma_t, lambda_t) = point(self.sigmas[i + 1]);
        let (_, _, lambda_s0) = point(self.sigmas[i]);
        let (_, _, lambda_s1) = point(self.sigmas[i - 1]);
        let (alpha_s2, sigma_s2, lambda_s2) = point(self.sigmas[i - 2]);
        let (h, h_0, h_1) = (lambda_t - lambda_s2, lambda_s0 - lambda_s2, lambda_s1 - lambda_s2);
        let (r0, r1) = (h_0 / h, h_1 / h);
        let d0 = m2;
        let d1_0 = (m1 - m2)?.affine(1.0 / r1, 0.0)?;
        let d1_1 = (m0 - m2)?.affine(1.0 / r0, 0.0)?;
        let d1 = lin_comb(&[(&d1_0, r0 / (r0 - r1)), (&d1_1, -r1 / (r0 - r1))])?;
        let d2 = lin_comb(&[(&d1_1, 2.0 / (r0 - r1)), (&d1_0, -2.0 / (r0 - r1))])?;
        let midpoint = self.config.solver_type == SolverType::Midpoint;
        match self.config.algorithm_type {
            AlgorithmType::DpmSolver => {
                let e = h.exp() - 1.0;
                let x_coeff = alpha_t / alpha_s2;
                if midpoint {
                    lin_comb(&[(x, x_coeff), (d0, -(sigma_t * e)), (&d1_1, -(sigma_t * (e / h - 1.0)))])
                } else {
                    lin_comb(&[
                        (x, x_coeff),
                        (d0, -(sigma_t * e)),
                        (&d1, -(sigma_t * (e / h - 1.0))),
                        (&d2, -(sigma_t * ((e - h) / (h * h) - 0.5))),
                    ])
                }
            }
            AlgorithmType::SdeDpmSolverPlusPlus => {
                let e = 1.0 - (-2.0 * h).exp();
                let x_coeff = sigma_t / sigma_s2 * (-h).exp();
                let noise = (Self::noise_term(noise)?, sigma_t * e.sqrt());
                if midpoint {
                    lin_comb(&[(x, x_coeff), (d0, alpha_t * e), (&d1_1, alpha_t * (e / (-2.0 * h) + 1.0)), noise])
                } else {
                    let m2h = -2.0 * h;
                    lin_comb(&[
                        (x, x_coeff),
                        (d0, alpha_t * e),
                        (&d1, alpha_t * (e / m2h + 1.0)),
                        (&d2, alpha_t * ((e + m2h) / (m2h * m2h) - 0.5)),
                        noise,
                    ])
                }
            }
            _ => {
                let e = (-h).exp() - 1.0;
                let x_coeff = sigma_t / sigma_s2;
                if midpoint {
                    lin_comb(&[(x, x_coeff), (d0, -(alpha_t * e)), (&d1_1, alpha_t * (e / h + 1.0))])
                } else {
                    lin_comb(&[
                        (x, x_coeff),
                        (d0, -(alpha_t * e)),
                        (&d1, alpha_t * (e / h + 1.0)),
                        (&d2, -(alpha_t * ((e + h) / (h * h) - 0.5))),
                    ])
                }
            }
        }
    }
}

impl SchedulerAlgorithm for DpmSolverSinglestepScheduler {
    const CLASS_NAME: &'static str = "DPMSolverSinglestepScheduler";
    const SHORT_NAME: &'static str = "dpm_single";
    const SUMMARY: &'static str = "DPM-Solver++ singlestep (2nd/3rd order groups): good in about 20 steps";
    const DEFAULT_STEPS: usize = 20;
    const SET_TIMESTEPS_PARAMS: &'static [&'static str] = &["num_inference_steps", "device", "mu", "timesteps"];

    type Config = DpmSolverSinglestepConfig;
    type TimestepArgs = NoArgs;
    type StepArgs = NoArgs;

    fn new(config: DpmSolverSinglestepConfig) -> Result<Self> {
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
        let mut s = DpmSolverSinglestepScheduler {
            config,
            schedule,
            tables,
            timesteps,
            sigmas: Vec::new(),
            num_inference_steps: None,
            order_list: Vec::new(),
            model_outputs: vec![None; solver_order],
            sample: None,
            step_index: None,
            begin_index: None,
        };
        s.order_list = s.get_order_list(s.config.num_train_timesteps);
        Ok(s)
    }

    fn config(&self) -> &DpmSolverSinglestepConfig {
        &self.config
    }

    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, _args: &NoArgs) -> Result<()> {
        match spec {
            TimestepsSpec::Count(n) => self.set_spaced_timesteps(n),
            TimestepsSpec::Timesteps(ts) => self.set_custom_timesteps(ts),
            TimestepsSpec::Sigmas(_) => {
                Err(Error::argument("sigmas", "DPMSolverSinglestepScheduler does not take sigmas"))
            }
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

    /// One singlestep DPM-Solver step (diffusers' `DPMSolverSinglestepScheduler.step`): a step of
    /// order k updates from the sample at its group's start. `sde-dpmsolver++` draws from
    /// `input.noise`.
    fn step(&mut self, input: StepInput<'_>, _args: &NoArgs) -> Result<SchedulerOutput> {
        let StepInput { model_output, timestep, sample, mut noise, .. } = input;
        require_timesteps(self.num_inference_steps)?;
        check_float("sample", sample)?;
        check_float("model_output", model_output)?;
        let shape = sample.dims().to_vec();
        let i = resolve_step_index(&self.timesteps, self.step_index, self.begin_index, timestep)?;
        let c = &self.config;
        let model_output = drop_variance_channels(model_output, &shape, c.variance_type)?;
        check_shape("model_output", &model_output, &shape)?;

        let out_dtype = sample.dtype();
        let dtype = compute_dtype(out_dtype);
        let x = sample.to_dtype(dtype)?;
        let m = self.convert_model_output(&model_output.to_dtype(dtype)?, &x, self.sigmas[i])?;
        let mut outputs = self.model_outputs.clone();
        outputs.rotate_left(1);
        if let Some(last) = outputs.last_mut() {
            *last = Some(m);
        }
        let noise = if c.algorithm_type.is_stochastic() {
            Some(noise.draw(&shape, x.device(), dtype, "an SDE-DPMSolver++ step")?)
        } else {
            None
        };
        // a group started mid-way (set_begin_index) runs at the order its history allows
        let mut order = self.order_list.get(i).copied().unwrap_or(1);
        while order > 1 && outputs[outputs.len() - order].is_none() {
            order -= 1;
        }
        let group_start = if order == 1 {
            x.clone()
        } else {
            self.sample
                .as_ref()
                .ok_or_else(|| Error::argument("timestep", "missing the sample of the group's first step"))?
                .to_dtype(dtype)?
        };
        let hist = |k: usize| -> Result<&Tensor> { history(&outputs, k) };
        let prev = match order {
            1 => self.first_order_update(hist(1)?, &group_start, noise.as_ref(), i, i + 1)?,
            2 => self.second_order_update(hist(1)?, hist(2)?, &group_start, noise.as_ref(), i)?,
            _ => self.third_order_update(hist(1)?, hist(2)?, hist(3)?, &group_start, noise.as_ref(), i)?,
        };
        let prev_sample = prev.to_dtype(out_dtype)?;

        // commit the state only once everything succeeded
        self.model_outputs = outputs;
        if order == 1 {
            self.sample = Some(x);
        }
        self.step_index = Some(i + 1);
        Ok(SchedulerOutput::sample(prev_sample))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn orders(solver_order: usize, lower_order_final: bool, final_zero: bool, steps: usize) -> Vec<usize> {
        let config = DpmSolverSinglestepConfig {
            solver_order,
            lower_order_final,
            final_sigmas_type: if final_zero { FinalSigmasType::Zero } else { FinalSigmasType::SigmaMin },
            ..Default::default()
        };
        DpmSolverSinglestepScheduler::new(config).unwrap().get_order_list(steps)
    }

    #[test]
    fn order_lists_match_diffusers() {
        assert_eq!(orders(3, true, true, 7), vec![1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(orders(3, true, true, 6), vec![1, 2, 3, 1, 2, 1]);
        assert_eq!(orders(3, true, false, 8), vec![1, 2, 3, 1, 2, 3, 1, 2]);
        assert_eq!(orders(2, true, false, 6), vec![1, 2, 1, 2, 1, 1]);
        assert_eq!(orders(2, false, false, 6), vec![1, 2, 1, 2, 1, 2]);
        assert_eq!(orders(3, true, true, 1), vec![1]);
    }

    #[test]
    fn set_timesteps_turns_lower_order_final_on() {
        let mut s = DpmSolverSinglestepScheduler::new(DpmSolverSinglestepConfig::default()).unwrap();
        assert!(!s.config().lower_order_final);
        s.set_timesteps(20).unwrap();
        assert!(s.config().lower_order_final);
        assert_eq!(*s.order_list().last().unwrap(), 1);
    }

    #[test]
    fn config_and_arguments_are_checked() {
        let parse = |v: serde_json::Value| DpmSolverSinglestepConfig::parse(&v);
        assert!(parse(serde_json::json!({"algorithm_type": "sde-dpmsolver"})).is_err());
        assert!(parse(serde_json::json!({"algorithm_type": "dpmsolver"})).is_err(), "zero final σ");
        assert!(parse(serde_json::json!({"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"})).is_ok());
        assert!(parse(serde_json::json!({"solver_order": 4})).is_err());
        assert_eq!(
            parse(serde_json::json!({"algorithm_type": "deis"})).unwrap().algorithm_type,
            AlgorithmType::DpmSolverPlusPlus
        );

        let mut s = DpmSolverSinglestepScheduler::new(DpmSolverSinglestepConfig::default()).unwrap();
        assert!(s.set_timesteps(0).is_err());
        assert!(s.set_timesteps(1001).is_err());
        assert!(s.set_timesteps_with(TimestepsSpec::Timesteps(&[999.0, 1000.0]), &NoArgs {}).is_err());
        let x = Tensor::ones((1, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&x, 999.0, &x), &NoArgs {}).is_err(), "before set_timesteps");
        s.set_timesteps_with(TimestepsSpec::Timesteps(&[999.0, 600.0, 300.0, 100.0]), &NoArgs {}).unwrap();
        assert_eq!(s.timesteps(), &[999.0, 600.0, 300.0, 100.0]);
        assert!(s.step(StepInput::new(&x, 500.0, &x), &NoArgs {}).is_err());
        for t in s.timesteps().to_vec() {
            s.step(StepInput::new(&x, t, &x), &NoArgs {}).unwrap();
        }
        assert!(s.step(StepInput::new(&x, 100.0, &x), &NoArgs {}).is_err(), "after the last step");

        let sde =
            DpmSolverSinglestepConfig { algorithm_type: AlgorithmType::SdeDpmSolverPlusPlus, ..Default::default() };
        let mut s = DpmSolverSinglestepScheduler::new(sde).unwrap();
        s.set_timesteps(4).unwrap();
        let t0 = s.timesteps()[0];
        assert!(s.step(StepInput::new(&x, t0, &x), &NoArgs {}).is_err(), "SDE without noise");
        assert_eq!(s.step_index(), None);
    }
}
