//! `UniPCMultistepScheduler`: the unified predictor–corrector framework (Zhao et al., 2023), as
//! diffusers 0.42.1's `scheduling_unipc_multistep.py` implements it.
//!
//! Each step first corrects the sample the previous step predicted (UniC, using this step's model
//! output and the previous step's converted output), then predicts the next sample (UniP). Supported:
//! `solver_type` bh1/bh2 (`midpoint`, `heun`, `logrho` read as bh2, as diffusers does), `predict_x0`
//! (data or noise prediction), `solver_order` (1–8), `lower_order_final`, `disable_corrector`
//! (step indices whose correction is skipped), `use_karras_sigmas` / `use_exponential_sigmas` (with
//! the config's `sigma_min` / `sigma_max` bounds when given), `final_sigmas_type` zero/sigma_min,
//! `timestep_spacing`, `steps_offset`, `rescale_betas_zero_snr`, thresholding and the prediction types
//! epsilon/sample/v_prediction. The predictor's and corrector's small linear systems are solved in f64.
//!
//! Not supported (refused by the config): `solver_p` (another scheduler object as predictor; a config
//! file cannot hold one), `use_beta_sigmas`, `use_flow_sigmas` / `flow_prediction`, and so
//! `shift_terminal` (diffusers allows it only with flow sigmas) and `use_dynamic_shifting` (its `mu`
//! only shifts flow sigmas); `flow_shift` and `time_shift_type` are carried as is.
//!
//! Stateful like diffusers (converted outputs, the last sample, the order of the last prediction,
//! the step index); stricter in the same ways as [`super::DpmSolverMultistepScheduler`].

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

use super::algorithm::{NoArgs, SchedulerAlgorithm, SchedulerConfig, SchedulerOutput, StepInput, TimestepsSpec};
use super::betas::{round_f32, NoiseSchedule};
use super::common::{check_step_tensors, compute_dtype, lin_comb, require_timesteps, threshold_sample};
use super::config::{
    json_float, validate_classic_beta_schedule, validate_common, validate_steps_offset, BetaSchedule, FinalSigmasType,
    PredictionType, TimestepSpacing,
};
use super::dpm_common::{
    converted_sigmas, data_prediction, history, interpolated_sigmas, noise_prediction, point, resolve_step_index,
    sigma_schedule, SigmaSchedule, TrainTables,
};
use super::timesteps::{check_num_inference_steps, dpm_timesteps};

/// The largest `solver_order` accepted: the Vandermonde systems of higher orders are numerically
/// meaningless in float32 sampling.
const MAX_SOLVER_ORDER: usize = 8;

/// UniPC's B(h): `bh1` (B(h) = h, for unconditional sampling) or `bh2` (B(h) = eʰ − 1, guided).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum UniPcSolverType {
    /// B(h) = h.
    #[serde(rename = "bh1")]
    Bh1,
    /// B(h) = eʰ − 1 (the default).
    #[serde(rename = "bh2", alias = "midpoint", alias = "heun", alias = "logrho")]
    Bh2,
}

/// `UniPCMultistepScheduler`'s config, with diffusers' defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UniPcConfig {
    pub num_train_timesteps: usize,
    #[serde(with = "json_float")]
    pub beta_start: f64,
    #[serde(with = "json_float")]
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub solver_order: usize,
    pub prediction_type: PredictionType,
    pub thresholding: bool,
    #[serde(with = "json_float")]
    pub dynamic_thresholding_ratio: f64,
    #[serde(with = "json_float")]
    pub sample_max_value: f64,
    /// Run the solver on the data prediction x₀ (else on ε).
    pub predict_x0: bool,
    pub solver_type: UniPcSolverType,
    /// Lower the order over the last steps (`min(order, steps left)`).
    pub lower_order_final: bool,
    /// Step indices whose corrector is skipped (the corrector at step `i` corrects step `i − 1`'s
    /// prediction; diffusers checks `i − 1` against this list).
    pub disable_corrector: Vec<i64>,
    /// Refused unless null: another scheduler as the predictor.
    pub solver_p: Option<Value>,
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
    pub final_sigmas_type: FinalSigmasType,
    pub rescale_betas_zero_snr: bool,
    /// Refused when true (see the module docs).
    pub use_dynamic_shifting: bool,
    pub time_shift_type: String,
    /// The Karras / exponential schedule's smallest σ (default: σ at training timestep 0).
    pub sigma_min: Option<f64>,
    /// The Karras / exponential schedule's largest σ (default: σ at the last training timestep).
    pub sigma_max: Option<f64>,
    /// Refused unless null (flow sigmas only).
    pub shift_terminal: Option<f64>,
}

impl Default for UniPcConfig {
    fn default() -> Self {
        UniPcConfig {
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
            predict_x0: true,
            solver_type: UniPcSolverType::Bh2,
            lower_order_final: true,
            disable_corrector: Vec::new(),
            solver_p: None,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            final_sigmas_type: FinalSigmasType::Zero,
            rescale_betas_zero_snr: false,
            use_dynamic_shifting: false,
            time_shift_type: "exponential".to_string(),
            sigma_min: None,
            sigma_max: None,
            shift_terminal: None,
        }
    }
}

impl UniPcConfig {
    fn sigma_schedule(&self) -> Result<SigmaSchedule> {
        sigma_schedule(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)
    }
}

impl SchedulerConfig for UniPcConfig {
    fn validate(&self) -> Result<()> {
        validate_common(
            self.num_train_timesteps,
            self.beta_start,
            self.beta_end,
            self.trained_betas.as_deref(),
            self.dynamic_thresholding_ratio,
            self.sample_max_value,
        )?;
        validate_classic_beta_schedule(self.beta_schedule, self.trained_betas.is_some(), "UniPCMultistepScheduler")?;
        validate_steps_offset(self.steps_offset)?;
        if !(1..=MAX_SOLVER_ORDER).contains(&self.solver_order) {
            return Err(Error::config(
                "solver_order",
                format!("must be between 1 and {MAX_SOLVER_ORDER}, got {}", self.solver_order),
            ));
        }
        self.sigma_schedule()?;
        if self.use_flow_sigmas {
            return Err(Error::config(
                "use_flow_sigmas",
                "flow-matching sigmas are not supported by this implementation",
            ));
        }
        if self.shift_terminal.is_some() {
            return Err(Error::config("shift_terminal", "is only supported with use_flow_sigmas (as in diffusers)"));
        }
        if self.use_dynamic_shifting {
            return Err(Error::config(
                "use_dynamic_shifting",
                "dynamic shifting only applies to flow-matching sigmas, which are not supported",
            ));
        }
        if matches!(&self.solver_p, Some(v) if !v.is_null()) {
            return Err(Error::config(
                "solver_p",
                "an external predictor scheduler is not supported; leave solver_p null",
            ));
        }
        for (name, v) in [("sigma_min", self.sigma_min), ("sigma_max", self.sigma_max)] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(Error::config(name, format!("must be a positive number, got {v}")));
                }
            }
        }
        Ok(())
    }

    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
}

/// diffusers' `UniPCMultistepScheduler`.
#[derive(Clone, Debug)]
pub struct UniPcMultistepScheduler {
    config: UniPcConfig,
    schedule: NoiseSchedule,
    tables: TrainTables,
    timesteps: Vec<f64>,
    /// σ at each inference timestep, plus the final σ.
    sigmas: Vec<f64>,
    num_inference_steps: Option<usize>,
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
    /// The sample the last prediction started from (after its correction).
    last_sample: Option<Tensor>,
    /// The order of the last prediction, which its correction uses.
    this_order: usize,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

/// Solves the `n × n` system `a·x = b` (Gaussian elimination with partial pivoting; `torch.linalg.solve`).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Result<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .ok_or_else(|| Error::argument("timestep", "empty UniPC system"))?;
        if a[pivot][col] == 0.0 {
            return Err(Error::argument(
                "timestep",
                "UniPC's coefficient system is singular (repeated σ in the schedule)",
            ));
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (upper, lower) = a.split_at_mut(col + 1);
        let pivot_row = &upper[col];
        for (offset, row) in lower.iter_mut().enumerate() {
            let f = row[col] / pivot_row[col];
            for (v, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *v -= f * p;
            }
            b[col + 1 + offset] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Ok(x)
}

/// The quantities both UniP and UniC build from h and the history's r_k: (h·φ₁ = e^ĥ − 1, B(h),
/// the rows R and right-hand side b of the order conditions).
struct Coefficients {
    h_phi_1: f64,
    b_h: f64,
    r: Vec<Vec<f64>>,
    b: Vec<f64>,
}

impl UniPcMultistepScheduler {
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
                s.push(match c.final_sigmas_type {
                    FinalSigmasType::Zero => 0.0,
                    FinalSigmasType::SigmaMin => self.tables.sigma_min(),
                });
                (timesteps, s)
            }
            kind => {
                let t = &self.tables;
                let sigma_min = c.sigma_min.unwrap_or(t.sigma_min());
                let sigma_max = c.sigma_max.unwrap_or(t.sigmas[big_n - 1]);
                let (ts, mut s) =
                    converted_sigmas(kind, &t.log_sigmas, sigma_min, sigma_max, n, kind == SigmaSchedule::Karras)?;
                // sigma_min here is the last converted σ
                s.push(match c.final_sigmas_type {
                    FinalSigmasType::Zero => 0.0,
                    FinalSigmasType::SigmaMin => s[s.len() - 1],
                });
                (ts, s)
            }
        };
        sigmas.iter_mut().for_each(|s| *s = round_f32(*s));
        self.num_inference_steps = Some(timesteps.len());
        self.timesteps = timesteps.into_iter().map(|t| t as f64).collect();
        self.sigmas = sigmas;
        self.model_outputs = vec![None; self.config.solver_order];
        self.lower_order_nums = 0;
        self.last_sample = None;
        self.this_order = 0;
        self.step_index = None;
        self.begin_index = None;
        Ok(())
    }

    /// diffusers' `convert_model_output`: x₀ (thresholded when configured) with `predict_x0`, else ε.
    fn convert_model_output(&self, model_output: &Tensor, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let c = &self.config;
        let (alpha_t, sigma_t, _) = point(sigma);
        if c.predict_x0 {
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

    /// h·φ_k, B(h) and the order conditions for `order` with the history ratios `rks` (the last is 1).
    fn coefficients(&self, h: f64, rks: &[f64], order: usize) -> Coefficients {
        let hh = if self.config.predict_x0 { -h } else { h };
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial_i = 1.0;
        let b_h = match self.config.solver_type {
            UniPcSolverType::Bh1 => hh,
            UniPcSolverType::Bh2 => hh.exp_m1(),
        };
        let mut r = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            r.push(rks.iter().map(|rk| rk.powi(i as i32 - 1)).collect());
            b.push(h_phi_k * factorial_i / b_h);
            factorial_i *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial_i;
        }
        Coefficients { h_phi_1, b_h, r, b }
    }

    /// x_t − (α or σ)·B(h)·Σ ρ_k D_k with `x_t_` the first-order part.
    fn finish(
        &self,
        x: &Tensor,
        m0: &Tensor,
        terms: &[(&Tensor, f64)],
        t: usize,
        s0: usize,
        coeffs: &Coefficients,
    ) -> Result<Tensor> {
        let (alpha_t, sigma_t, _) = point(self.sigmas[t]);
        let (alpha_s0, sigma_s0, _) = point(self.sigmas[s0]);
        let (x_coeff, scale) =
            if self.config.predict_x0 { (sigma_t / sigma_s0, alpha_t) } else { (alpha_t / alpha_s0, sigma_t) };
        let mut all: Vec<(&Tensor, f64)> = vec![(x, x_coeff), (m0, -scale * coeffs.h_phi_1)];
        all.extend(terms.iter().map(|(d, rho)| (*d, -scale * coeffs.b_h * rho)));
        lin_comb(&all)
    }

    /// λ at index `j` of the σ schedule.
    fn lambda(&self, j: usize) -> f64 {
        point(self.sigmas[j]).2
    }

    /// diffusers' `multistep_uni_p_bh_update`: the UniP prediction from index `i` to `i + 1`;
    /// `outputs` ends with this step's converted output.
    fn predict(
        &self,
        outputs: &[Option<Tensor>],
        x: &Tensor,
        i: usize,
        order: usize,
        dtype: candle_core::DType,
    ) -> Result<Tensor> {
        let m0 = history(outputs, 1)?.to_dtype(dtype)?;
        let lambda_s0 = self.lambda(i);
        let h = self.lambda(i + 1) - lambda_s0;
        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for k in 1..order {
            let mk = history(outputs, k + 1)?.to_dtype(dtype)?;
            let rk = (self.lambda(i - k) - lambda_s0) / h;
            rks.push(rk);
            d1s.push((mk - &m0)?.affine(1.0 / rk, 0.0)?);
        }
        rks.push(1.0);
        let coeffs = self.coefficients(h, &rks, order);
        let rhos_p = match order {
            1 => Vec::new(),
            2 => vec![0.5],
            _ => {
                let m = order - 1;
                let a = coeffs.r[..m].iter().map(|row| row[..m].to_vec()).collect();
                solve(a, coeffs.b[..m].to_vec())?
            }
        };
        let terms: Vec<(&Tensor, f64)> = d1s.iter().zip(&rhos_p).map(|(d, r)| (d, *r)).collect();
        self.finish(x, &m0, &terms, i + 1, i, &coeffs)
    }

    /// diffusers' `multistep_uni_c_bh_update`: UniC's correction of the sample `this_sample` the
    /// previous step predicted (from `last_sample` at index `i − 1` to `i`), given this step's
    /// converted output `model_t`; `outputs` is the history before this step.
    #[allow(clippy::too_many_arguments)]
    fn correct(
        &self,
        outputs: &[Option<Tensor>],
        model_t: &Tensor,
        last_sample: &Tensor,
        i: usize,
        order: usize,
        dtype: candle_core::DType,
    ) -> Result<Tensor> {
        let m0 = history(outputs, 1)?.to_dtype(dtype)?;
        let lambda_s0 = self.lambda(i - 1);
        let h = self.lambda(i) - lambda_s0;
        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for k in 1..order {
            let mk = history(outputs, k + 1)?.to_dtype(dtype)?;
            let rk = (self.lambda(i - (k + 1)) - lambda_s0) / h;
            rks.push(rk);
            d1s.push((mk - &m0)?.affine(1.0 / rk, 0.0)?);
        }
        rks.push(1.0);
        let coeffs = self.coefficients(h, &rks, order);
        let rhos_c = if order == 1 { vec![0.5] } else { solve(coeffs.r.clone(), coeffs.b.clone())? };
        let d1_t = (model_t - &m0)?;
        let mut terms: Vec<(&Tensor, f64)> = d1s.iter().zip(&rhos_c).map(|(d, r)| (d, *r)).collect();
        terms.push((&d1_t, rhos_c[order - 1]));
        let last_sample = last_sample.to_dtype(dtype)?;
        self.finish(&last_sample, &m0, &terms, i, i - 1, &coeffs)
    }
}

impl SchedulerAlgorithm for UniPcMultistepScheduler {
    const CLASS_NAME: &'static str = "UniPCMultistepScheduler";
    const SHORT_NAME: &'static str = "unipc";
    const SUMMARY: &'static str = "UniPC (multistep predictor-corrector): good in 10-20 steps";
    const DEFAULT_STEPS: usize = 20;
    const STEP_PARAMS: &'static [&'static str] = &["return_dict"];
    const SET_TIMESTEPS_PARAMS: &'static [&'static str] = &["num_inference_steps", "device", "sigmas", "mu"];

    type Config = UniPcConfig;
    type TimestepArgs = NoArgs;
    type StepArgs = NoArgs;

    fn new(config: UniPcConfig) -> Result<Self> {
        config.validate()?;
        let mut schedule = NoiseSchedule::new(
            config.beta_schedule,
            config.beta_start,
            config.beta_end,
            config.num_train_timesteps,
            config.trained_betas.as_deref(),
            config.rescale_betas_zero_snr,
        )?;
        if config.rescale_betas_zero_snr {
            // diffusers: alphas_cumprod[-1] = 2**-24, so σ and λ stay finite
            if let Some(last) = schedule.alphas_cumprod.last_mut() {
                *last = 2f64.powi(-24);
            }
        }
        let tables = TrainTables::new(&schedule.alphas_cumprod);
        let timesteps = (0..config.num_train_timesteps).rev().map(|t| t as f64).collect();
        let solver_order = config.solver_order;
        Ok(UniPcMultistepScheduler {
            config,
            schedule,
            tables,
            timesteps,
            sigmas: Vec::new(),
            num_inference_steps: None,
            model_outputs: vec![None; solver_order],
            lower_order_nums: 0,
            last_sample: None,
            this_order: 0,
            step_index: None,
            begin_index: None,
        })
    }

    fn config(&self) -> &UniPcConfig {
        &self.config
    }

    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, _args: &NoArgs) -> Result<()> {
        match spec {
            TimestepsSpec::Count(n) => self.set_spaced_timesteps(n),
            TimestepsSpec::Timesteps(_) => Err(Error::argument(
                "timesteps",
                "UniPCMultistepScheduler does not take custom timesteps (as in diffusers); give num_inference_steps",
            )),
            TimestepsSpec::Sigmas(_) => Err(Error::argument(
                "sigmas",
                "UniPCMultistepScheduler takes sigmas only with use_flow_sigmas, which is not supported",
            )),
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

    /// One UniPC step (diffusers' `UniPCMultistepScheduler.step`): correct the previous prediction
    /// (unless disabled for it), then predict the next sample.
    fn step(&mut self, input: StepInput<'_>, _args: &NoArgs) -> Result<SchedulerOutput> {
        let StepInput { model_output, timestep, sample, .. } = input;
        require_timesteps(self.num_inference_steps)?;
        check_step_tensors(model_output, sample)?;
        let i = resolve_step_index(&self.timesteps, self.step_index, self.begin_index, timestep)?;
        let c = &self.config;
        let out_dtype = sample.dtype();
        let dtype = compute_dtype(out_dtype);
        let x = sample.to_dtype(dtype)?;
        let m_conv = self.convert_model_output(&model_output.to_dtype(dtype)?, &x, self.sigmas[i])?;

        let use_corrector = i > 0 && !c.disable_corrector.contains(&(i as i64 - 1)) && self.last_sample.is_some();
        let x = match (&self.last_sample, use_corrector) {
            (Some(last), true) => self.correct(&self.model_outputs, &m_conv, last, i, self.this_order, dtype)?,
            _ => x,
        };

        let mut outputs = self.model_outputs.clone();
        outputs.rotate_left(1);
        if let Some(last) = outputs.last_mut() {
            *last = Some(m_conv);
        }
        let order = c.solver_order;
        let this_order = if c.lower_order_final { order.min(self.timesteps.len() - i) } else { order };
        let this_order = this_order.min(self.lower_order_nums + 1);
        let prev = self.predict(&outputs, &x, i, this_order, dtype)?;
        let prev_sample = prev.to_dtype(out_dtype)?;

        // commit the state only once everything succeeded
        self.model_outputs = outputs;
        self.this_order = this_order;
        self.last_sample = Some(x);
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
    fn solve_matches_a_known_system() {
        let x = solve(vec![vec![2.0, 1.0], vec![1.0, 3.0]], vec![3.0, 5.0]).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12, "{x:?}");
        assert!(solve(vec![vec![1.0, 1.0], vec![1.0, 1.0]], vec![1.0, 2.0]).is_err());
    }

    #[test]
    fn config_refuses_what_cannot_work() {
        let parse = |v: serde_json::Value| UniPcConfig::parse(&v);
        assert_eq!(parse(serde_json::json!({"solver_type": "midpoint"})).unwrap().solver_type, UniPcSolverType::Bh2);
        assert!(parse(serde_json::json!({"solver_type": "x"})).is_err());
        assert!(parse(serde_json::json!({"solver_p": {"_class_name": "DDIMScheduler"}})).is_err());
        assert!(parse(serde_json::json!({"solver_p": null})).is_ok());
        assert!(parse(serde_json::json!({"shift_terminal": 0.1})).is_err());
        assert!(parse(serde_json::json!({"use_beta_sigmas": true})).is_err());
        assert!(parse(serde_json::json!({"solver_order": 0})).is_err());
        assert!(parse(serde_json::json!({"sigma_min": -1.0})).is_err());
    }

    #[test]
    fn steps_follow_the_schedule() {
        let config = UniPcConfig { solver_order: 3, use_exponential_sigmas: true, ..Default::default() };
        let mut s = UniPcMultistepScheduler::new(config).unwrap();
        assert!(s.set_timesteps(0).is_err());
        assert!(s.set_timesteps(1001).is_err());
        assert!(s.set_timesteps_with(TimestepsSpec::Sigmas(&[1.0]), &NoArgs {}).is_err());
        let x = Tensor::ones((1, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&x, 999.0, &x), &NoArgs {}).is_err(), "before set_timesteps");
        s.set_timesteps(8).unwrap();
        assert_eq!(*s.sigmas.last().unwrap(), 0.0);
        let t0 = s.timesteps()[0];
        let bad = Tensor::zeros((2, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&bad, t0, &x), &NoArgs {}).is_err());
        assert_eq!(s.step_index(), None);
        let mut sample = x.clone();
        for t in s.timesteps().to_vec() {
            let eps = sample.affine(0.1, 0.0).unwrap();
            sample = s.step(StepInput::new(&eps, t, &sample), &NoArgs {}).unwrap().prev_sample;
        }
        let v = sample.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|v| v.is_finite()), "{v:?}");
    }
}
