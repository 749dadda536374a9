//! `DPMSolverMultistepScheduler`: DPM-Solver / DPM-Solver++ (Lu et al., 2022), as diffusers 0.42.1's
//! `scheduling_dpmsolver_multistep.py` implements it.
//!
//! Supported: `algorithm_type` `dpmsolver++` (default), `dpmsolver`, `sde-dpmsolver++`, `sde-dpmsolver`;
//! `solver_order` 1–3 (the SDE-DPMSolver has no third-order formula, as in diffusers, so
//! `sde-dpmsolver` with order 3 is rejected); `solver_type` midpoint/heun; `lower_order_final`,
//! `euler_at_final`; `use_karras_sigmas`, `use_lu_lambdas`, `use_exponential_sigmas`;
//! `final_sigmas_type` zero/sigma_min; `lambda_min_clipped`; `timestep_spacing`; `steps_offset`;
//! prediction types epsilon/sample/v_prediction; thresholding; `variance_type` learned/learned_range
//! (the predicted-variance channels are dropped); `rescale_betas_zero_snr`.
//! Not supported (rejected by the config): `use_beta_sigmas`, `use_flow_sigmas` / `flow_prediction`.
//!
//! The scheduler is stateful like diffusers': it keeps the last `solver_order` converted model outputs,
//! the step index and the count of lower-order steps taken; [`DpmSolverMultistepScheduler::set_timesteps`]
//! resets them. Stricter than diffusers: a step whose timestep is not the schedule's next one, or a
//! step after the last, is an error (diffusers ignores the timestep after the first step); a failed step
//! leaves the state untouched. When the first step's timestep appears several times in the schedule
//! (Karras σ with the cosine schedule repeat timesteps), the run starts at its first occurrence;
//! diffusers takes the second and then fails with an IndexError on the last step.
//! `sde-*` steps need `variance_noise` or a `generator`.

use candle_core::Tensor;

use crate::error::{Error, Result};

use super::algorithm::{NoArgs, SchedulerAlgorithm, SchedulerOutput, StepInput, TimestepsSpec};
use super::betas::{linspace, round_f32, NoiseSchedule};
use super::common::{
    check_float, check_shape, compute_dtype, lin_comb, require_timesteps, threshold_sample, train_index,
};
use super::config::{
    AlgorithmType, BetaSchedule, DpmSolverMultistepConfig, FinalSigmasType, PredictionType, SolverType,
};
use super::dpm_common::{
    alpha_sigma, drop_variance_channels, exponential_sigmas, karras_sigmas, lambda_of, resolve_step_index, sigma_to_t,
    TrainTables,
};
use super::timesteps::{check_num_inference_steps, dpm_timesteps, round_half_even};

/// diffusers' `DPMSolverMultistepScheduler`.
#[derive(Clone, Debug)]
pub struct DpmSolverMultistepScheduler {
    config: DpmSolverMultistepConfig,
    schedule: NoiseSchedule,
    /// √((1 − ᾱₜ)/ᾱₜ) over the training timesteps.
    train_sigmas: Vec<f64>,
    /// λₜ = log αₜ − log σₜ over the training timesteps.
    train_lambdas: Vec<f64>,
    timesteps: Vec<f64>,
    /// σ at each inference timestep, plus the final σ (len = timesteps + 1 once set).
    sigmas: Vec<f64>,
    num_inference_steps: Option<usize>,
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

impl DpmSolverMultistepScheduler {
    fn build(config: DpmSolverMultistepConfig) -> Result<Self> {
        config.validate()?;
        if config.algorithm_type == AlgorithmType::SdeDpmSolver && config.solver_order == 3 {
            return Err(Error::config(
                "solver_order",
                "sde-dpmsolver has no third-order update (as in diffusers); use solver_order 1 or 2",
            ));
        }
        let mut schedule = config.noise_schedule()?;
        if config.rescale_betas_zero_snr {
            if let Some(last) = schedule.alphas_cumprod.last_mut() {
                *last = 2f64.powi(-24);
            }
        }
        let TrainTables { sigmas: train_sigmas, lambdas: train_lambdas, .. } =
            TrainTables::new(&schedule.alphas_cumprod);
        let timesteps = (0..config.num_train_timesteps).rev().map(|t| t as f64).collect();
        let solver_order = config.solver_order;
        Ok(DpmSolverMultistepScheduler {
            config,
            schedule,
            train_sigmas,
            train_lambdas,
            timesteps,
            sigmas: Vec::new(),
            num_inference_steps: None,
            model_outputs: vec![None; solver_order],
            lower_order_nums: 0,
            step_index: None,
            begin_index: None,
        })
    }

    /// The index of the next step (None until the first step after `set_timesteps`).
    pub fn step_index(&self) -> Option<usize> {
        self.step_index
    }

    /// How many lower-order warm-up steps have been taken (capped at `solver_order`).
    pub fn lower_order_nums(&self) -> usize {
        self.lower_order_nums
    }

    /// Starts the next run at index `begin_index` of the schedule (diffusers' `set_begin_index`, for
    /// img2img-style partial runs). Reset by `set_timesteps`.
    pub fn set_begin_index(&mut self, begin_index: usize) {
        self.begin_index = Some(begin_index);
    }

    /// Sets `num_inference_steps` timesteps (and their σ) and resets the solver state.
    fn set_spaced_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        check_num_inference_steps(num_inference_steps, self.config.num_train_timesteps)?;
        let big_n = self.config.num_train_timesteps;
        // searchsorted(flip(lambda_t), lambda_min_clipped): λ is decreasing in t
        let clipped_idx = self.train_lambdas.iter().filter(|l| **l < self.config.lambda_min_clipped).count();
        let last_timestep = big_n - clipped_idx;
        let timesteps = dpm_timesteps(
            self.config.timestep_spacing,
            big_n,
            last_timestep,
            num_inference_steps,
            self.config.steps_offset,
        );
        if timesteps.is_empty() {
            return Err(Error::config(
                "lambda_min_clipped",
                format!("leaves no timesteps to sample (lambda_min_clipped = {})", self.config.lambda_min_clipped),
            ));
        }
        let (timesteps, sigmas) = self.sigmas_for(timesteps, num_inference_steps)?;
        self.install(timesteps, sigmas);
        Ok(())
    }

    /// Sets custom timesteps (diffusers' `set_timesteps(timesteps=[…])`), each in
    /// `[0, num_train_timesteps)`; not allowed with Karras, Lu or exponential sigmas.
    fn set_custom_timesteps(&mut self, timesteps: &[f64]) -> Result<()> {
        if timesteps.is_empty() {
            return Err(Error::argument("timesteps", "must not be empty"));
        }
        let c = &self.config;
        if c.use_karras_sigmas || c.use_lu_lambdas || c.use_exponential_sigmas {
            return Err(Error::argument(
                "timesteps",
                "custom timesteps cannot be used with use_karras_sigmas, use_lu_lambdas or use_exponential_sigmas",
            ));
        }
        let n = c.num_train_timesteps;
        let timesteps = timesteps
            .iter()
            .map(|&t| {
                train_index(t, n).map_err(|_| {
                    Error::argument(
                        "timesteps",
                        format!("custom timestep {t} is not a training timestep (an integer in [0, {n}))"),
                    )
                })
            })
            .collect::<Result<Vec<i64>>>()?;
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| self.train_sigmas[t as usize]).collect();
        sigmas.push(self.final_sigma());
        self.install(timesteps, sigmas);
        Ok(())
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

    /// The σ schedule for `timesteps` (or the Karras/Lu/exponential σ and their timesteps), with the
    /// final σ appended.
    fn sigmas_for(&self, timesteps: Vec<i64>, n: usize) -> Result<(Vec<i64>, Vec<f64>)> {
        let c = &self.config;
        let train = &self.train_sigmas;
        let big_n = train.len();
        let converted = c.use_karras_sigmas || c.use_lu_lambdas || c.use_exponential_sigmas;
        if converted && big_n < 2 {
            return Err(Error::config(
                "num_train_timesteps",
                "Karras, Lu and exponential sigmas need at least 2 training timesteps",
            ));
        }
        // np.log of the float32 σ table is a float32 log
        let log_sigmas: Vec<f64> = train.iter().map(|s| round_f32(s.ln())).collect();
        // in_sigmas = flip(sigmas): sigma_min is σ at t = 0, sigma_max σ at t = N − 1
        let (sigma_min, sigma_max) = (train[0], train[big_n - 1]);
        let ramp = linspace(0.0, 1.0, n);
        let (mut sigmas, round): (Vec<f64>, bool) = if c.use_karras_sigmas {
            (karras_sigmas(sigma_min, sigma_max, n), c.beta_schedule != BetaSchedule::SquaredcosCapV2)
        } else if c.use_lu_lambdas {
            let (lmin, lmax) = (log_sigmas[0], log_sigmas[big_n - 1]);
            let s = ramp.iter().map(|r| (lmax + r * (lmin - lmax)).exp()).collect();
            (s, c.beta_schedule != BetaSchedule::SquaredcosCapV2)
        } else if c.use_exponential_sigmas {
            (exponential_sigmas(sigma_min, sigma_max, n), false)
        } else {
            // np.interp(timesteps, arange(N), sigmas): integer timesteps, clamped to the ends
            let s = timesteps.iter().map(|&t| train[t.clamp(0, big_n as i64 - 1) as usize]).collect();
            (s, false)
        };
        let timesteps = if converted {
            sigmas
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_sigmas);
                    // torch's float → int64 conversion truncates
                    (if round { round_half_even(t) } else { t }) as i64
                })
                .collect()
        } else {
            timesteps
        };
        sigmas.push(self.final_sigma());
        Ok((timesteps, sigmas))
    }

    /// Installs a new schedule and resets the solver state. σ are stored at float32 precision, as
    /// diffusers stores them (`astype(np.float32)`).
    fn install(&mut self, timesteps: Vec<i64>, sigmas: Vec<f64>) {
        let sigmas = sigmas.into_iter().map(round_f32).collect();
        self.num_inference_steps = Some(timesteps.len());
        self.timesteps = timesteps.into_iter().map(|t| t as f64).collect();
        self.sigmas = sigmas;
        self.model_outputs = vec![None; self.config.solver_order];
        self.lower_order_nums = 0;
        self.step_index = None;
        self.begin_index = None;
    }

    /// The step index this call works at: the current one, or on the first step the `set_begin_index`
    /// one or the index of `timestep` in the schedule.
    fn resolve_step_index(&self, timestep: f64) -> Result<usize> {
        resolve_step_index(&self.timesteps, self.step_index, self.begin_index, timestep)
    }

    /// diffusers' `convert_model_output`: x₀ for the `++` algorithms, ε for the others. Also returns
    /// the x₀ estimate for [`SchedulerOutput::pred_original_sample`].
    fn convert_model_output(&self, model_output: &Tensor, x: &Tensor, sigma: f64) -> Result<(Tensor, Tensor)> {
        let c = &self.config;
        let (alpha_t, sigma_t) = alpha_sigma(sigma);
        let threshold = |x0: &Tensor| -> Result<Tensor> {
            if c.thresholding {
                threshold_sample(x0, c.dynamic_thresholding_ratio, c.sample_max_value)
            } else {
                Ok(x0.clone())
            }
        };
        if c.algorithm_type.is_data_prediction() {
            let x0 = match c.prediction_type {
                PredictionType::Epsilon => {
                    lin_comb(&[(x, 1.0), (model_output, -sigma_t)])?.affine(1.0 / alpha_t, 0.0)?
                }
                PredictionType::Sample => model_output.clone(),
                PredictionType::VPrediction => lin_comb(&[(x, alpha_t), (model_output, -sigma_t)])?,
            };
            let x0 = threshold(&x0)?;
            Ok((x0.clone(), x0))
        } else {
            let eps = match c.prediction_type {
                PredictionType::Epsilon => model_output.clone(),
                PredictionType::Sample => {
                    lin_comb(&[(x, 1.0), (model_output, -alpha_t)])?.affine(1.0 / sigma_t, 0.0)?
                }
                PredictionType::VPrediction => lin_comb(&[(model_output, alpha_t), (x, sigma_t)])?,
            };
            let x0 = lin_comb(&[(x, 1.0), (&eps, -sigma_t)])?.affine(1.0 / alpha_t, 0.0)?;
            if c.thresholding {
                let x0 = threshold(&x0)?;
                let eps = lin_comb(&[(x, 1.0), (&x0, -alpha_t)])?.affine(1.0 / sigma_t, 0.0)?;
                Ok((eps, x0))
            } else {
                Ok((eps, x0))
            }
        }
    }

    /// One multistep DPM-Solver step (diffusers' `DPMSolverMultistepScheduler.step`).
    ///
    /// The first step after `set_timesteps` may be at any timestep of the schedule (or at the
    /// `set_begin_index` one); later steps must follow the schedule. The `sde-*` algorithms draw
    /// from `input.noise`.
    fn step_impl(&mut self, input: StepInput<'_>) -> Result<SchedulerOutput> {
        let StepInput { model_output, timestep, sample, mut noise, .. } = input;
        require_timesteps(self.num_inference_steps)?;
        check_float("sample", sample)?;
        check_float("model_output", model_output)?;
        let step_index = self.resolve_step_index(timestep)?;
        let c = self.config.clone();
        let shape = sample.dims().to_vec();

        // drop predicted-variance channels
        let model_output = drop_variance_channels(model_output, &shape, c.variance_type)?;
        check_shape("model_output", &model_output, &shape)?;

        let n = self.timesteps.len();
        let lower_order_final = step_index == n - 1
            && (c.euler_at_final || (c.lower_order_final && n < 15) || c.final_sigmas_type == FinalSigmasType::Zero);
        let lower_order_second = step_index + 2 == n && c.lower_order_final && n < 15;

        let out_dtype = sample.dtype();
        let dtype = compute_dtype(out_dtype);
        let x = sample.to_dtype(dtype)?;
        let model_output = model_output.to_dtype(dtype)?;
        let (m0, pred_original) = self.convert_model_output(&model_output, &x, self.sigmas[step_index])?;

        let noise = if c.algorithm_type.is_stochastic() {
            Some(noise.draw(&shape, x.device(), dtype, "an SDE-DPMSolver step")?)
        } else {
            None
        };

        let order = c.solver_order;
        let history = |k: usize| -> Result<Tensor> {
            // k = 1: the previous output, k = 2: the one before
            self.model_outputs[order - k]
                .as_ref()
                .ok_or_else(|| Error::argument("timestep", "missing model output history"))?
                .to_dtype(dtype)
                .map_err(Error::from)
        };
        let prev = if order == 1 || self.lower_order_nums < 1 || lower_order_final {
            self.first_order_update(&m0, &x, noise.as_ref(), step_index)?
        } else if order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.second_order_update(&m0, &history(1)?, &x, noise.as_ref(), step_index)?
        } else {
            self.third_order_update(&m0, &history(1)?, &history(2)?, &x, noise.as_ref(), step_index)?
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
        self.step_index = Some(step_index + 1);
        // diffusers' DPM-Solver output has no x₀ estimate
        let _ = pred_original;
        Ok(SchedulerOutput::sample(prev_sample))
    }

    fn noise_term(noise: Option<&Tensor>) -> Result<&Tensor> {
        noise.ok_or_else(|| Error::argument("variance_noise", "an SDE step needs noise"))
    }

    /// (α, σ, λ) at index `j` of the inference σ schedule.
    fn point(&self, j: usize) -> (f64, f64, f64) {
        let (alpha, sigma) = alpha_sigma(self.sigmas[j]);
        (alpha, sigma, lambda_of(alpha, sigma))
    }

    /// First-order update (DDIM-equivalent).
    fn first_order_update(&self, m: &Tensor, x: &Tensor, noise: Option<&Tensor>, i: usize) -> Result<Tensor> {
        let (alpha_t, sigma_t, lambda_t) = self.point(i + 1);
        let (alpha_s, sigma_s, lambda_s) = self.point(i);
        let h = lambda_t - lambda_s;
        match self.config.algorithm_type {
            AlgorithmType::DpmSolverPlusPlus => {
                lin_comb(&[(x, sigma_t / sigma_s), (m, -(alpha_t * ((-h).exp() - 1.0)))])
            }
            AlgorithmType::DpmSolver => lin_comb(&[(x, alpha_t / alpha_s), (m, -(sigma_t * (h.exp() - 1.0)))]),
            AlgorithmType::SdeDpmSolverPlusPlus => lin_comb(&[
                (x, sigma_t / sigma_s * (-h).exp()),
                (m, alpha_t * (1.0 - (-2.0 * h).exp())),
                (Self::noise_term(noise)?, sigma_t * (1.0 - (-2.0 * h).exp()).sqrt()),
            ]),
            AlgorithmType::SdeDpmSolver => lin_comb(&[
                (x, alpha_t / alpha_s),
                (m, -2.0 * (sigma_t * (h.exp() - 1.0))),
                (Self::noise_term(noise)?, sigma_t * ((2.0 * h).exp() - 1.0).sqrt()),
            ]),
        }
    }

    /// Second-order multistep update.
    fn second_order_update(
        &self,
        m0: &Tensor,
        m1: &Tensor,
        x: &Tensor,
        noise: Option<&Tensor>,
        i: usize,
    ) -> Result<Tensor> {
        let (alpha_t, sigma_t, lambda_t) = self.point(i + 1);
        let (alpha_s0, sigma_s0, lambda_s0) = self.point(i);
        let (_, _, lambda_s1) = self.point(i - 1);
        let (h, h_0) = (lambda_t - lambda_s0, lambda_s0 - lambda_s1);
        let r0 = h_0 / h;
        let d0 = m0;
        let d1 = (m0 - m1)?.affine(1.0 / r0, 0.0)?;
        let midpoint = self.config.solver_type == SolverType::Midpoint;
        match self.config.algorithm_type {
            AlgorithmType::DpmSolverPlusPlus => {
                let e = (-h).exp() - 1.0;
                let c1 = if midpoint { -0.5 * (alpha_t * e) } else { alpha_t * (e / h + 1.0) };
                lin_comb(&[(x, sigma_t / sigma_s0), (d0, -(alpha_t * e)), (&d1, c1)])
            }
            AlgorithmType::DpmSolver => {
                let e = h.exp() - 1.0;
                let c1 = if midpoint { -0.5 * (sigma_t * e) } else { -(sigma_t * (e / h - 1.0)) };
                lin_comb(&[(x, alpha_t / alpha_s0), (d0, -(sigma_t * e)), (&d1, c1)])
            }
            AlgorithmType::SdeDpmSolverPlusPlus => {
                let e = 1.0 - (-2.0 * h).exp();
                let c1 = if midpoint { 0.5 * (alpha_t * e) } else { alpha_t * (e / (-2.0 * h) + 1.0) };
                lin_comb(&[
                    (x, sigma_t / sigma_s0 * (-h).exp()),
                    (d0, alpha_t * e),
                    (&d1, c1),
                    (Self::noise_term(noise)?, sigma_t * e.sqrt()),
                ])
            }
            AlgorithmType::SdeDpmSolver => {
                let e = h.exp() - 1.0;
                let c1 = if midpoint { -(sigma_t * e) } else { -2.0 * (sigma_t * (e / h - 1.0)) };
                lin_comb(&[
                    (x, alpha_t / alpha_s0),
                    (d0, -2.0 * (sigma_t * e)),
                    (&d1, c1),
                    (Self::noise_term(noise)?, sigma_t * ((2.0 * h).exp() - 1.0).sqrt()),
                ])
            }
        }
    }

    /// Third-order multistep update.
    fn third_order_update(
        &self,
        m0: &Tensor,
        m1: &Tensor,
        m2: &Tensor,
        x: &Tensor,
        noise: Option<&Tensor>,
        i: usize,
    ) -> Result<Tensor> {
        let (alpha_t, sigma_t, lambda_t) = self.point(i + 1);
        let (alpha_s0, sigma_s0, lambda_s0) = self.point(i);
        let (_, _, lambda_s1) = self.point(i - 1);
        let (_, _, lambda_s2) = self.point(i - 2);
        let (h, h_0, h_1) = (lambda_t - lambda_s0, lambda_s0 - lambda_s1, lambda_s1 - lambda_s2);
        let (r0, r1) = (h_0 / h, h_1 / h);
        let d0 = m0;
        let d1_0 = (m0 - m1)?.affine(1.0 / r0, 0.0)?;
        let d1_1 = (m1 - m2)?.affine(1.0 / r1, 0.0)?;
        let diff = (&d1_0 - &d1_1)?;
        let d1 = (&d1_0 + diff.affine(r0 / (r0 + r1), 0.0)?)?;
        let d2 = diff.affine(1.0 / (r0 + r1), 0.0)?;
        match self.config.algorithm_type {
            AlgorithmType::DpmSolverPlusPlus => {
                let e = (-h).exp() - 1.0;
                lin_comb(&[
                    (x, sigma_t / sigma_s0),
                    (d0, -(alpha_t * e)),
                    (&d1, alpha_t * (e / h + 1.0)),
                    (&d2, -(alpha_t * ((e + h) / (h * h) - 0.5))),
                ])
            }
            AlgorithmType::DpmSolver => {
                let e = h.exp() - 1.0;
                lin_comb(&[
                    (x, alpha_t / alpha_s0),
                    (d0, -(sigma_t * e)),
                    (&d1, -(sigma_t * (e / h - 1.0))),
                    (&d2, -(sigma_t * ((e - h) / (h * h) - 0.5))),
                ])
            }
            AlgorithmType::SdeDpmSolverPlusPlus => {
                let e = 1.0 - (-2.0 * h).exp();
                lin_comb(&[
                    (x, sigma_t / sigma_s0 * (-h).exp()),
                    (d0, alpha_t * e),
                    (&d1, alpha_t * (e / (-2.0 * h) + 1.0)),
                    (&d2, alpha_t * ((e - 2.0 * h) / ((2.0 * h) * (2.0 * h)) - 0.5)),
                    (Self::noise_term(noise)?, sigma_t * e.sqrt()),
                ])
            }
            AlgorithmType::SdeDpmSolver => {
                Err(Error::config("solver_order", "sde-dpmsolver has no third-order update; use solver_order 1 or 2"))
            }
        }
    }
}

impl SchedulerAlgorithm for DpmSolverMultistepScheduler {
    const CLASS_NAME: &'static str = "DPMSolverMultistepScheduler";
    const SHORT_NAME: &'static str = "dpmpp";
    const SUMMARY: &'static str = "DPM-Solver++ (multistep, 2nd order by default): good in about 20 steps";
    const DEFAULT_STEPS: usize = 20;
    const STEP_PARAMS: &'static [&'static str] = &["generator", "variance_noise", "return_dict"];
    const SET_TIMESTEPS_PARAMS: &'static [&'static str] = &["num_inference_steps", "device", "mu", "timesteps"];

    type Config = DpmSolverMultistepConfig;
    type TimestepArgs = NoArgs;
    type StepArgs = NoArgs;

    fn new(config: DpmSolverMultistepConfig) -> Result<Self> {
        Self::build(config)
    }

    fn config(&self) -> &DpmSolverMultistepConfig {
        &self.config
    }

    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, _args: &NoArgs) -> Result<()> {
        match spec {
            TimestepsSpec::Count(n) => self.set_spaced_timesteps(n),
            TimestepsSpec::Timesteps(ts) => self.set_custom_timesteps(ts),
            TimestepsSpec::Sigmas(_) => {
                Err(Error::argument("sigmas", "DPMSolverMultistepScheduler does not take sigmas"))
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

    fn step(&mut self, input: StepInput<'_>, _args: &NoArgs) -> Result<SchedulerOutput> {
        self.step_impl(input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn karras_schedule_is_descending_and_reset() {
        let config = DpmSolverMultistepConfig { use_karras_sigmas: true, ..Default::default() };
        let mut s = DpmSolverMultistepScheduler::build(config).unwrap();
        s.set_timesteps(10).unwrap();
        assert_eq!(s.timesteps().len(), 10);
        assert_eq!(s.sigmas.len(), 11);
        assert!(s.timesteps().windows(2).all(|w| w[0] >= w[1]));
        assert_eq!(s.timesteps()[0], 999.0);
        assert_eq!(*s.sigmas.last().unwrap(), 0.0);
    }
}
