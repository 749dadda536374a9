//! `ScoreSdeVeScheduler`: the variance-exploding SDE sampler of Song et al. (2021, "Score-Based
//! Generative Modeling through Stochastic Differential Equations"), as diffusers 0.42.1's
//! `scheduling_sde_ve.py` implements it, for NCSN++ models (whose UNet takes σ as its timestep).
//!
//! diffusers' class has no `step`: a run alternates the corrector [`ScoreSdeVeScheduler::step_correct`]
//! (Langevin steps, `correct_steps` per timestep) and the predictor
//! [`ScoreSdeVeScheduler::step_pred`] (reverse diffusion), both drawing noise. They are
//! [`SchedulerAlgorithm::METHODS`] for the dynamic scheduler and typed methods for Rust callers;
//! [`SchedulerAlgorithm::step`] is an error naming them. The ScoreSdeVePipeline loop is
//!
//! ```text
//! x = randn · init_noise_sigma;  set_timesteps(n)
//! for (i, t) in timesteps:       σ = sigmas[i]
//!     repeat correct_steps:      x = step_correct(model(x, σ), x).prev_sample
//!     out = step_pred(model(x, σ), t, x);  x = out.prev_sample
//! image = out.prev_sample_mean
//! ```
//!
//! Differences from diffusers, all on inputs diffusers does not handle or handles silently:
//! * diffusers' pipeline calls `set_timesteps(n)` and then `set_sigmas(n)`; here
//!   [`SchedulerAlgorithm::set_timesteps_with`] lays out both (the timesteps, the `sigmas` the model is
//!   given and the `discrete_sigmas` the predictor steps between), taking `set_timesteps`'
//!   `sampling_eps` and `set_sigmas`' `sigma_min` / `sigma_max` overrides as [`ScoreSdeVeTimestepArgs`];
//! * the constructor lays out the `num_train_timesteps` schedule as diffusers' does (that is what
//!   [`SchedulerAlgorithm::timesteps`] shows then), but stepping before `set_timesteps` is an error,
//!   as for every scheduler of this crate;
//! * `step_pred`'s timestep must be one of the schedule's (diffusers maps any float to an index and
//!   fails with an IndexError, or silently wraps around, outside `[0, 1]`);
//! * a corrector step whose `model_output` is zero everywhere is an error (diffusers divides by its
//!   norm and returns NaN/∞);
//! * the config refuses `sigma_min > sigma_max` (the predictor's `√(σ² − σ_prev²)` would be NaN) and a
//!   `sampling_eps` outside `[0, 1]` (the timesteps would index outside the σ table).
//!
//! Numerics: the timesteps and both σ tables are the float32 values diffusers computes (the same
//! float32 operations; `discrete_sigmas` may differ from torch's vectorised `exp` by one float32 ulp),
//! and the predictor's σ index is computed in float32 (`(t · (n − 1)).long()`) as diffusers does, since
//! it truncates. Tensor math runs in f32 (f64 for f64 input), coefficients in f64.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

use super::algorithm::{
    MethodInput, MethodSpec, NoArgs, SamplingLoop, SchedulerAlgorithm, SchedulerConfig, SchedulerOutput, StepInput,
    TimestepType, TimestepsSpec,
};
use super::args::Args;
use super::betas::{round_f32, torch_linspace_f32};
use super::common::{check_step_tensors, compute_dtype, lin_comb, require_timesteps};
use super::config::{json_float, MAX_TRAIN_TIMESTEPS};
use super::noise::Noise;
use super::timesteps::check_inference_count;

/// `ScoreSdeVeScheduler`'s config, with diffusers' defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScoreSdeVeConfig {
    /// The training diffusion steps; also the schedule the constructor lays out.
    pub num_train_timesteps: usize,
    /// The corrector's signal-to-noise ratio: its step size is `2·(snr·‖z‖/‖s‖)²`.
    #[serde(with = "json_float")]
    pub snr: f64,
    /// The smallest σ (at t = `sampling_eps`); should match the data's scale.
    #[serde(with = "json_float")]
    pub sigma_min: f64,
    /// The largest σ (at t = 1), also the initial noise's standard deviation.
    #[serde(with = "json_float")]
    pub sigma_max: f64,
    /// The last continuous timestep: the schedule runs from 1 down to it.
    #[serde(with = "json_float")]
    pub sampling_eps: f64,
    /// Corrector steps before each predictor step (read by the pipeline).
    pub correct_steps: usize,
}

impl Default for ScoreSdeVeConfig {
    fn default() -> Self {
        ScoreSdeVeConfig {
            num_train_timesteps: 2000,
            snr: 0.15,
            sigma_min: 0.01,
            sigma_max: 1348.0,
            sampling_eps: 1e-5,
            correct_steps: 1,
        }
    }
}

impl SchedulerConfig for ScoreSdeVeConfig {
    fn validate(&self) -> Result<()> {
        let n = self.num_train_timesteps;
        if n == 0 {
            return Err(Error::config("num_train_timesteps", "must be at least 1, got 0"));
        }
        if n > MAX_TRAIN_TIMESTEPS {
            return Err(Error::config(
                "num_train_timesteps",
                format!("{n} is larger than the supported maximum {MAX_TRAIN_TIMESTEPS}"),
            ));
        }
        if !(self.snr.is_finite() && self.snr >= 0.0) {
            return Err(Error::config("snr", format!("must be a finite number ≥ 0, got {}", self.snr)));
        }
        check_sigma_range(self.sigma_min, self.sigma_max, Error::config)?;
        check_sampling_eps(self.sampling_eps, Error::config)
    }

    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
}

/// σ bounds the σ tables can be built from: positive, finite, `sigma_min ≤ sigma_max` (else the
/// predictor's `√(σ² − σ_prev²)` is NaN). `err` makes a config or an argument error.
fn check_sigma_range(sigma_min: f64, sigma_max: f64, err: fn(&'static str, String) -> Error) -> Result<()> {
    for (name, v) in [("sigma_min", sigma_min), ("sigma_max", sigma_max)] {
        if !(v.is_finite() && v > 0.0) {
            return Err(err(name, format!("must be a positive number, got {v}")));
        }
    }
    if sigma_min > sigma_max {
        return Err(err(
            "sigma_min",
            format!("{sigma_min} is larger than sigma_max ({sigma_max}); σ must grow from sigma_min to sigma_max"),
        ));
    }
    Ok(())
}

/// `sampling_eps` in `[0, 1]`: the timesteps `linspace(1, eps, n)` then map to σ-table indices
/// `t·(n − 1)` inside the table.
fn check_sampling_eps(eps: f64, err: fn(&'static str, String) -> Error) -> Result<()> {
    if !(0.0..=1.0).contains(&eps) {
        return Err(err("sampling_eps", format!("must be in [0, 1] (the schedule runs from 1 down to it), got {eps}")));
    }
    Ok(())
}

fn argument_error(name: &'static str, reason: String) -> Error {
    Error::argument(name, reason)
}

/// `set_timesteps`' own arguments: diffusers' `set_timesteps(n, sampling_eps)` and
/// `set_sigmas(n, sigma_min, sigma_max, sampling_eps)` overrides, each defaulting to the config's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoreSdeVeTimestepArgs {
    /// The last timestep (instead of the config's `sampling_eps`).
    pub sampling_eps: Option<f64>,
    /// The smallest σ (instead of the config's `sigma_min`).
    pub sigma_min: Option<f64>,
    /// The largest σ (instead of the config's `sigma_max`).
    pub sigma_max: Option<f64>,
}

/// diffusers' `ScoreSdeVeScheduler`.
#[derive(Clone, Debug)]
pub struct ScoreSdeVeScheduler {
    config: ScoreSdeVeConfig,
    /// `linspace(1, sampling_eps, n)` in float32.
    timesteps: Vec<f64>,
    /// `sigma_min · (sigma_max/sigma_min)^t` at each timestep (the model's σ input), float32.
    sigmas: Vec<f64>,
    /// `exp(linspace(ln sigma_min, ln sigma_max, n))`, float32: the σ the predictor steps between.
    discrete_sigmas: Vec<f64>,
    num_inference_steps: Option<usize>,
}

/// The three tables of `set_timesteps(n, eps)` + `set_sigmas(n, sigma_min, sigma_max)`, with
/// diffusers' float32 operations.
fn layout(n: usize, eps: f64, sigma_min: f64, sigma_max: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let timesteps = torch_linspace_f32(1.0, eps, n);
    // `sigma_min * (sigma_max / sigma_min) ** t` on a float32 t: torch's pow and mul in float32.
    let (smin, ratio) = (sigma_min as f32, (sigma_max / sigma_min) as f32);
    let sigmas = timesteps.iter().map(|&t| (smin * ratio.powf(t as f32)) as f64).collect();
    let discrete_sigmas =
        torch_linspace_f32(sigma_min.ln(), sigma_max.ln(), n).into_iter().map(|l| round_f32(l.exp())).collect();
    (timesteps, sigmas, discrete_sigmas)
}

impl ScoreSdeVeScheduler {
    /// σ at each timestep: what the model is given (`sigmas[i]` for `timesteps[i]`).
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// The geometric σ table the predictor steps between (diffusers' `discrete_sigmas`).
    pub fn discrete_sigmas(&self) -> &[f64] {
        &self.discrete_sigmas
    }

    /// Corrector steps per timestep (the config's `correct_steps`).
    pub fn correct_steps(&self) -> usize {
        self.config.correct_steps
    }

    /// The predictor (diffusers' `step_pred`): one reverse-diffusion step from `sample` at the
    /// continuous `timestep` (one of [`SchedulerAlgorithm::timesteps`]), given the model's score
    /// estimate `model_output`. With σ and σ_prev the `discrete_sigmas` at index `⌊t·(n−1)⌋` and the
    /// one before (0 at index 0), and g² = σ² − σ_prev²:
    /// `prev_sample_mean = sample + g²·model_output` and `prev_sample = prev_sample_mean + g·z`,
    /// z drawn from `noise`. Returns both (`prev_sample`, `prev_sample_mean`).
    pub fn step_pred(
        &self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        mut noise: Noise<'_>,
    ) -> Result<SchedulerOutput> {
        let n = require_timesteps(self.num_inference_steps)?;
        let shape = check_step_tensors(model_output, sample)?;
        if !self.timesteps.contains(&round_f32(timestep)) {
            return Err(Error::argument(
                "timestep",
                format!("{timestep} is not one of the scheduler's timesteps (linspace(1, sampling_eps, {n}))"),
            ));
        }
        // diffusers: `(timestep * (len(self.timesteps) - 1)).long()` on float32 tensors; the product
        // is rounded to float32 before the truncation, which decides the index.
        let index = (timestep as f32 * (n - 1) as f32) as i64;
        let index = usize::try_from(index).ok().filter(|&i| i < n).ok_or_else(|| {
            Error::argument("timestep", format!("{timestep} maps to σ index {index}, outside [0, {n})"))
        })?;
        let sigma = self.discrete_sigmas[index];
        let adjacent = if index == 0 { 0.0 } else { self.discrete_sigmas[index - 1] };
        let g2 = sigma * sigma - adjacent * adjacent;
        let diffusion = g2.sqrt();

        let out_dtype = sample.dtype();
        let dtype = compute_dtype(out_dtype);
        let x = sample.to_dtype(dtype)?;
        let model_output = model_output.to_dtype(dtype)?;
        let z = noise.draw(&shape, x.device(), dtype, "ScoreSdeVeScheduler.step_pred")?;

        // drift = −g²·model_output; the mean subtracts it because dt is a negative step.
        let mean = lin_comb(&[(&x, 1.0), (&model_output, g2)])?;
        let prev = lin_comb(&[(&mean, 1.0), (&z, diffusion)])?;
        Ok(SchedulerOutput {
            prev_sample: prev.to_dtype(out_dtype)?,
            pred_original_sample: None,
            prev_sample_mean: Some(mean.to_dtype(out_dtype)?),
        })
    }

    /// The corrector (diffusers' `step_correct`): one Langevin step on `sample` given the model's
    /// score estimate `model_output`. With z drawn from `noise` and the batch means of the per-image
    /// norms ‖z‖ and ‖model_output‖, the step size is `ε = 2·(snr·‖z‖/‖model_output‖)²` and
    /// `prev_sample = sample + ε·model_output + √(2ε)·z`. Returns `prev_sample` only, as diffusers.
    pub fn step_correct(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        mut noise: Noise<'_>,
    ) -> Result<SchedulerOutput> {
        require_timesteps(self.num_inference_steps)?;
        let shape = check_step_tensors(model_output, sample)?;
        if shape.is_empty() {
            return Err(Error::argument("sample", "must be batched ([B, …]): the corrector takes per-image norms"));
        }
        let out_dtype = sample.dtype();
        let dtype = compute_dtype(out_dtype);
        let x = sample.to_dtype(dtype)?;
        let model_output = model_output.to_dtype(dtype)?;
        let grad_norm = mean_item_norm(&model_output)?;
        if !(grad_norm > 0.0 && grad_norm.is_finite()) {
            return Err(Error::argument(
                "model_output",
                format!(
                    "its mean per-image norm is {grad_norm}: the corrector's step size 2·(snr·‖z‖/‖model_output‖)² \
                     needs a finite, nonzero model output"
                ),
            ));
        }
        let z = noise.draw(&shape, x.device(), dtype, "ScoreSdeVeScheduler.step_correct")?;
        let noise_norm = mean_item_norm(&z)?;
        let r = self.config.snr * noise_norm / grad_norm;
        let step_size = r * r * 2.0;
        let prev = lin_comb(&[(&x, 1.0), (&model_output, step_size), (&z, (step_size * 2.0).sqrt())])?;
        Ok(SchedulerOutput::sample(prev.to_dtype(out_dtype)?))
    }
}

/// `torch.norm(t.reshape(B, -1), dim=-1).mean()`, computed in `t`'s dtype, as a scalar.
fn mean_item_norm(t: &Tensor) -> Result<f64> {
    let batch = t.dims()[0];
    if batch == 0 {
        return Ok(f64::NAN);
    }
    let rows = t.reshape((batch, ()))?;
    let norms = rows.sqr()?.sum(1)?.sqrt()?;
    Ok(norms.mean_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// The method's own arguments: none (errors name any given).
fn no_args(args: &Value, what: &str) -> Result<()> {
    match args {
        Value::Object(map) => Args::from(map.clone()).parse::<NoArgs>(what).map(drop),
        Value::Null => Ok(()),
        other => Err(Error::argument("arguments", format!("{what}: expected arguments by name, got {other}"))),
    }
}

impl SchedulerAlgorithm for ScoreSdeVeScheduler {
    const CLASS_NAME: &'static str = "ScoreSdeVeScheduler";
    const SHORT_NAME: &'static str = "score_sde_ve";
    const SUMMARY: &'static str =
        "variance-exploding SDE predictor-corrector (NCSN++ models; step_pred/step_correct, ~2000 steps)";
    const DEFAULT_STEPS: usize = 2000;
    const SAMPLING_LOOP: SamplingLoop = SamplingLoop::PredictorCorrector;
    const SET_TIMESTEPS_PARAMS: &'static [&'static str] = &["num_inference_steps", "sampling_eps", "device"];
    const KARRAS_FAMILY: bool = false;
    const METHODS: &'static [MethodSpec] = &[
        MethodSpec { name: "step_pred", params: &["model_output", "timestep", "sample"], returns_sample: false },
        MethodSpec { name: "step_correct", params: &["model_output", "sample"], returns_sample: false },
    ];

    type Config = ScoreSdeVeConfig;
    type TimestepArgs = ScoreSdeVeTimestepArgs;
    type StepArgs = NoArgs;

    fn new(config: ScoreSdeVeConfig) -> Result<Self> {
        config.validate()?;
        // diffusers' constructor runs set_sigmas(num_train_timesteps), which sets the timesteps too.
        let (timesteps, sigmas, discrete_sigmas) =
            layout(config.num_train_timesteps, config.sampling_eps, config.sigma_min, config.sigma_max);
        Ok(ScoreSdeVeScheduler { config, timesteps, sigmas, discrete_sigmas, num_inference_steps: None })
    }

    fn config(&self) -> &ScoreSdeVeConfig {
        &self.config
    }

    /// diffusers' `set_timesteps(n, sampling_eps)` followed by `set_sigmas(n, sigma_min, sigma_max)`.
    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, args: &ScoreSdeVeTimestepArgs) -> Result<()> {
        let n =
            match spec {
                TimestepsSpec::Count(n) => n,
                TimestepsSpec::Timesteps(_) => return Err(Error::argument(
                    "timesteps",
                    "ScoreSdeVeScheduler does not take custom timesteps (as in diffusers); give num_inference_steps",
                )),
                TimestepsSpec::Sigmas(_) => {
                    return Err(Error::argument(
                        "sigmas",
                        "ScoreSdeVeScheduler does not take custom sigmas; give num_inference_steps (and sigma_min / \
                     sigma_max)",
                    ))
                }
            };
        check_inference_count(n)?;
        let c = &self.config;
        let eps = args.sampling_eps.unwrap_or(c.sampling_eps);
        let sigma_min = args.sigma_min.unwrap_or(c.sigma_min);
        let sigma_max = args.sigma_max.unwrap_or(c.sigma_max);
        check_sampling_eps(eps, argument_error)?;
        check_sigma_range(sigma_min, sigma_max, argument_error)?;
        let (timesteps, sigmas, discrete_sigmas) = layout(n, eps, sigma_min, sigma_max);
        self.timesteps = timesteps;
        self.sigmas = sigmas;
        self.discrete_sigmas = discrete_sigmas;
        self.num_inference_steps = Some(n);
        Ok(())
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

    /// σ at each timestep (one per timestep: there is no final σ).
    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    /// diffusers' ScoreSdeVeScheduler has no `step`: this is always an error naming the methods.
    fn step(&mut self, _input: StepInput<'_>, _args: &NoArgs) -> Result<SchedulerOutput> {
        Err(Error::argument(
            "method",
            "ScoreSdeVeScheduler has no `step` (as in diffusers): call `step_correct(model_output, sample)` \
             (the corrector, `correct_steps` times per timestep) and then `step_pred(model_output, timestep, \
             sample)` (the predictor)",
        ))
    }

    fn call_method(&mut self, name: &str, input: MethodInput<'_>, args: &Value) -> Result<SchedulerOutput> {
        let what = format!("ScoreSdeVeScheduler.{name}");
        match name {
            "step_pred" => {
                no_args(args, &what)?;
                let model_output = input.tensors.require("model_output", &what)?;
                let sample = input.tensors.require("sample", &what)?;
                let timestep = input.require_timestep(&what)?;
                self.step_pred(model_output, timestep, sample, input.noise)
            }
            "step_correct" => {
                no_args(args, &what)?;
                if input.timestep.is_some() {
                    return Err(Error::argument("timestep", format!("{what} takes no timestep")));
                }
                let model_output = input.tensors.require("model_output", &what)?;
                let sample = input.tensors.require("sample", &what)?;
                self.step_correct(model_output, sample, input.noise)
            }
            _ => Err(Error::argument(
                "method",
                format!("ScoreSdeVeScheduler has no method `{name}` (it has step_pred and step_correct)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Expected values: diffusers 0.42.1 on torch 2.15 (CPU, float32), printed by
    //! `/work/notes/sched-family-reference.py` (kept beside the lead's notes): the same deterministic
    //! inputs `det(k, shape, scale)[i] = f32(scale·sin(0.7·(k·numel + i + 1)))`, the noise injected
    //! by replacing diffusers' `randn_tensor` with a queue of `det` tensors (here `Noise::Given`), or
    //! drawn from `torch.Generator().manual_seed(seed)` (here [`Generator::from_seed`]).

    use candle_core::Device;

    use super::*;
    use crate::rng::Generator;
    use crate::schedulers::{Scheduler, TensorArgs};

    fn det(k: usize, shape: &[usize], scale: f64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| (scale * (0.7 * (k * n + i + 1) as f64).sin()) as f32).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn assert_close(got: &Tensor, want: &[f64], what: &str) {
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let tol = 1e-4 * w.abs().max(1.0);
            assert!((*g as f64 - w).abs() <= tol, "{what}[{i}]: got {g}, diffusers {w}");
        }
    }

    fn fixture_config() -> ScoreSdeVeConfig {
        ScoreSdeVeConfig { num_train_timesteps: 2000, sigma_max: 50.0, snr: 0.16, ..Default::default() }
    }

    fn f32_eq(got: &[f64], want: &[f64]) -> bool {
        got.len() == want.len() && got.iter().zip(want).all(|(g, w)| *g as f32 == *w as f32)
    }

    /// Within one float32 ulp (torch's vectorised `exp` is not always correctly rounded).
    fn within_ulp(got: &[f64], want: &[f64]) -> bool {
        got.len() == want.len()
            && got
                .iter()
                .zip(want)
                .all(|(g, w)| ((*g as f32).to_bits() as i64 - (*w as f32).to_bits() as i64).abs() <= 1)
    }

    #[test]
    fn layout_matches_diffusers() -> Result<()> {
        let mut s = ScoreSdeVeScheduler::new(fixture_config())?;
        assert_eq!(s.timesteps().len(), 2000, "the constructor lays out num_train_timesteps, as diffusers'");
        assert_eq!(s.num_inference_steps(), None);
        assert_eq!(s.init_noise_sigma(), 50.0);
        assert_eq!(s.timestep_type(), TimestepType::Float);
        s.set_timesteps(5)?;
        assert!(f32_eq(
            s.timesteps(),
            &[1.0, 0.7500025033950806, 0.5000050067901611, 0.2500075101852417, 9.999999747378752e-06]
        ));
        assert!(f32_eq(
            ScoreSdeVeScheduler::sigmas(&s),
            &[50.0, 5.94616174697876, 0.7071369290351868, 0.08409501612186432, 0.010000851936638355]
        ));
        assert!(within_ulp(
            s.discrete_sigmas(),
            &[0.009999999776482582, 0.08408962935209274, 0.7071069478988647, 5.946036338806152, 50.000003814697266]
        ));
        // set_timesteps(4, sampling_eps=0.1) + set_sigmas(4, sigma_min=0.5, sigma_max=20)
        let args = ScoreSdeVeTimestepArgs { sampling_eps: Some(0.1), sigma_min: Some(0.5), sigma_max: Some(20.0) };
        s.set_timesteps_with(TimestepsSpec::Count(4), &args)?;
        assert!(f32_eq(s.timesteps(), &[1.0, 0.7000000476837158, 0.3999999761581421, 0.10000000149011612]));
        assert!(f32_eq(
            ScoreSdeVeScheduler::sigmas(&s),
            &[20.0, 6.613206386566162, 2.1867239475250244, 0.7230627536773682]
        ));
        assert!(within_ulp(s.discrete_sigmas(), &[0.5, 1.709976077079773, 5.8480353355407715, 20.0]));
        Ok(())
    }

    #[test]
    fn single_steps_match_diffusers() -> Result<()> {
        let shape = [2, 1, 1, 2];
        let mut s = ScoreSdeVeScheduler::new(fixture_config())?;
        s.set_timesteps(5)?;
        let (x, m, z) = (det(0, &shape, 3.0), det(1, &shape, 0.5), det(2, &shape, 1.0));
        let ts = s.timesteps().to_vec();

        let out = s.step_pred(&m, ts[1], &x, Noise::Given(&z))?;
        assert_close(
            &out.prev_sample,
            &[-4.081416606903076, -8.354445457458496, -8.698248863220215, -4.951128959655762],
            "pred t1",
        );
        let mean = out.prev_sample_mean.as_ref().unwrap();
        assert_close(
            mean,
            &[-4.180683135986328, -12.233190536499023, -14.532238006591797, -9.996545791625977],
            "pred t1 mean",
        );
        assert!(out.pred_original_sample.is_none());
        assert_eq!(out.fields().iter().map(|f| f.0).collect::<Vec<_>>(), ["prev_sample", "prev_sample_mean"]);

        // the last timestep: σ index 0, σ_prev = 0
        let out = s.step_pred(&m, ts[4], &x, Noise::Given(&z))?;
        assert_close(
            &out.prev_sample,
            &[1.9328036308288574, 2.9628753662109375, 2.5994606018066406, 1.0134788751602173],
            "pred t4",
        );
        assert_close(
            out.prev_sample_mean.as_ref().unwrap(),
            &[1.9326355457305908, 2.956305503845215, 2.589578866958618, 1.0049328804016113],
            "pred t4 mean",
        );

        let out = s.step_correct(&m, &x, Noise::Given(&z))?;
        assert_close(
            &out.prev_sample,
            &[1.9114904403686523, 3.270662546157837, 3.091590642929077, 1.458495855331421],
            "correct",
        );
        assert!(out.prev_sample_mean.is_none());

        // f64 input stays f64
        let out = s.step_correct(&m.to_dtype(DType::F64)?, &x.to_dtype(DType::F64)?, Noise::Given(&z))?;
        assert_eq!(out.prev_sample.dtype(), DType::F64);
        Ok(())
    }

    /// The ScoreSdeVePipeline loop (two corrector steps and the predictor per timestep) on a tiny
    /// batch, with the exact score of N(0, 1) data as the "model" (−x/(1 + σ²)) and every draw from
    /// one seeded generator, through the dynamic scheduler's methods.
    #[test]
    fn predictor_corrector_loop_matches_diffusers() -> Result<()> {
        let shape = [2, 1, 1, 2];
        let config = ScoreSdeVeConfig { correct_steps: 2, ..fixture_config() };
        let mut scheduler = Scheduler::new(ScoreSdeVeScheduler::new(config)?);
        let mut g = Generator::from_seed(3);
        let mut x = g.randn_tensor(&shape, &Device::Cpu)?.affine(scheduler.init_noise_sigma(), 0.0)?;
        scheduler.set_timesteps(4)?;
        let correct_steps = scheduler.downcast_ref::<ScoreSdeVeScheduler>().unwrap().correct_steps();
        let mut mean = None;
        for (i, t) in scheduler.timesteps().to_vec().into_iter().enumerate() {
            let sigma = scheduler.sigmas().unwrap()[i];
            let score = |x: &Tensor| x.affine(-1.0 / (1.0 + sigma * sigma), 0.0);
            for _ in 0..correct_steps {
                let m = score(&x)?;
                let tensors = [("model_output", &m), ("sample", &x)];
                let input =
                    MethodInput { tensors: TensorArgs(&tensors), timestep: None, noise: Noise::Generator(&mut g) };
                x = scheduler.call_method("step_correct", input, &Args::new())?.prev_sample;
            }
            let m = score(&x)?;
            let tensors = [("model_output", &m), ("sample", &x)];
            let input =
                MethodInput { tensors: TensorArgs(&tensors), timestep: Some(t), noise: Noise::Generator(&mut g) };
            let out = scheduler.call_method("step_pred", input, &Args::new())?;
            x = out.prev_sample;
            mean = out.prev_sample_mean;
        }
        assert_close(
            &x,
            &[-5.678586006164551, 2.1371891498565674, -1.5294586420059204, 1.2349402904510498],
            "loop prev",
        );
        assert_close(
            &mean.unwrap(),
            &[-5.677489280700684, 2.1336593627929688, -1.525011658668518, 1.2444490194320679],
            "loop mean",
        );
        Ok(())
    }

    #[test]
    fn refuses_what_cannot_work() -> Result<()> {
        let shape = [1, 1, 2, 2];
        let (x, m) = (det(0, &shape, 1.0), det(1, &shape, 1.0));
        let mut s = ScoreSdeVeScheduler::new(fixture_config())?;
        let t0 = s.timesteps()[0];
        // before set_timesteps
        assert!(s.step_pred(&m, t0, &x, Noise::Given(&x)).is_err());
        assert!(s.step_correct(&m, &x, Noise::Given(&x)).is_err());
        let e = s.set_timesteps(0).unwrap_err().to_string();
        assert!(e.contains("num_inference_steps"), "{e}");
        s.set_timesteps(10)?;
        // `step` is not diffusers' API here
        let e = s.step(StepInput::new(&m, t0, &x), &NoArgs {}).unwrap_err().to_string();
        assert!(e.contains("step_pred") && e.contains("step_correct"), "{e}");
        // a timestep not in the schedule
        let e = s.step_pred(&m, 0.123, &x, Noise::Given(&x)).unwrap_err().to_string();
        assert!(e.contains("timestep"), "{e}");
        // no noise source
        let e = s.step_pred(&m, t0, &x, Noise::None).unwrap_err().to_string();
        assert!(e.contains("generator"), "{e}");
        // shapes, dtypes
        let small = det(2, &[1, 1, 2, 1], 1.0);
        assert!(s.step_pred(&small, t0, &x, Noise::Given(&x)).is_err());
        assert!(s.step_correct(&m, &x, Noise::Given(&small)).is_err());
        let ints = x.to_dtype(DType::U32)?;
        assert!(s.step_correct(&m, &ints, Noise::Given(&x)).is_err());
        // a zero model output has no corrector step size
        let e = s.step_correct(&x.zeros_like()?, &x, Noise::Given(&x)).unwrap_err().to_string();
        assert!(e.contains("model_output"), "{e}");
        // custom schedules and bad overrides
        assert!(s.set_timesteps_with(TimestepsSpec::Timesteps(&[1.0, 0.5]), &Default::default()).is_err());
        let bad = ScoreSdeVeTimestepArgs { sampling_eps: Some(1.5), ..Default::default() };
        assert!(s.set_timesteps_with(TimestepsSpec::Count(4), &bad).is_err());
        let bad = ScoreSdeVeTimestepArgs { sigma_min: Some(100.0), ..Default::default() };
        let e = s.set_timesteps_with(TimestepsSpec::Count(4), &bad).unwrap_err().to_string();
        assert!(e.contains("sigma_min"), "{e}");
        assert_eq!(s.timesteps().len(), 10, "a failed set_timesteps leaves the schedule");
        // dynamic scheduler: unknown methods, tensors and arguments
        let mut dynamic = Scheduler::new(s);
        let tensors = [("model_output", &m), ("sample", &x)];
        let input = MethodInput { tensors: TensorArgs(&tensors), timestep: None, noise: Noise::Given(&x) };
        assert!(dynamic.call_method("step_pred", input, &Args::new()).is_err(), "step_pred needs a timestep");
        let input = MethodInput { tensors: TensorArgs(&tensors), timestep: None, noise: Noise::Given(&x) };
        let e = dynamic.call_method("step_correct", input, &Args::new().with("snr", 0.2)).unwrap_err().to_string();
        assert!(e.contains("snr"), "{e}");
        let tensors = [("model_output", &m), ("sample", &x), ("mask", &x)];
        let input = MethodInput { tensors: TensorArgs(&tensors), timestep: None, noise: Noise::Given(&x) };
        assert!(dynamic.call_method("step_correct", input, &Args::new()).is_err());
        Ok(())
    }

    #[test]
    fn config_defaults_and_validation() {
        let c =
            ScoreSdeVeConfig::parse(&serde_json::json!({"_class_name": "ScoreSdeVeScheduler", "snr": 0.16})).unwrap();
        assert_eq!(c, ScoreSdeVeConfig { snr: 0.16, ..Default::default() });
        let s = ScoreSdeVeScheduler::new(c).unwrap();
        assert_eq!(s.config_json()["_class_name"], "ScoreSdeVeScheduler");
        assert_eq!(s.config_json()["sigma_max"], 1348.0);
        for (bad, field) in [
            (serde_json::json!({"num_train_timesteps": 0}), "num_train_timesteps"),
            (serde_json::json!({"snr": -1.0}), "snr"),
            (serde_json::json!({"sigma_min": 0.0}), "sigma_min"),
            (serde_json::json!({"sigma_max": "Infinity"}), "sigma_max"),
            (serde_json::json!({"sigma_min": 10.0, "sigma_max": 1.0}), "sigma_min"),
            (serde_json::json!({"sampling_eps": -0.1}), "sampling_eps"),
            (serde_json::json!({"correct_steps": -1}), "correct_steps"),
        ] {
            let e = ScoreSdeVeConfig::parse(&bad).unwrap_err();
            assert!(matches!(&e, Error::InvalidConfig { field: f, .. } if f == field), "{bad}: {e}");
        }
    }
}
