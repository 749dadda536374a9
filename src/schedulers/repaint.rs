//! `RePaintScheduler`: inpainting with a DDPM-trained model (Lugmayr et al., 2022, "RePaint:
//! Inpainting using Denoising Diffusion Probabilistic Models"), as diffusers 0.42.1's
//! `scheduling_repaint.py` implements it.
//!
//! The schedule goes down and, every `jump_length` steps, back up again `jump_n_sample − 1` times
//! ("resampling"). The RePaintPipeline loop walks it, stepping down with [`SchedulerAlgorithm::step`]
//! and up with [`RePaintScheduler::undo_step`]:
//!
//! ```text
//! x = randn;  set_timesteps(n, jump_length, jump_n_sample);  t_last = timesteps[0] + 1
//! for t in timesteps:
//!     if t < t_last: x = step(model(x, t), t, x, original_image=…, mask=…).prev_sample
//!     else:          x = undo_step(x, t_last)
//!     t_last = t
//! ```
//!
//! `step` takes the tensors `original_image` (the known image, in the model's range) and `mask`
//! (1 keeps the known pixel, 0 inpaints it; fractional values blend), each broadcast to the sample's
//! shape as torch broadcasts (a `[B, 1, H, W]` or `[H, W]` mask, say). Its unknown region is a DDIM
//! step with `eta` (the config's, or the step argument `eta`, which is what the pipeline's
//! `scheduler.eta = eta` sets); its known region is the original image noised to the previous
//! timestep. Each step draws ONE noise tensor, used for both: the known region's noise and, for
//! `t > 0` and `eta > 0`, the unknown region's variance noise (diffusers reuses it, see its comment on
//! formulas 7 and 8) — so a step draws even with `eta = 0`, and a generator stream matches
//! diffusers'. `undo_step` draws `num_train_timesteps / num_inference_steps` noises, one per
//! training step it re-noises.
//!
//! Differences from diffusers, all on inputs diffusers does not handle or handles silently:
//! * a step, or `undo_step`, before `set_timesteps` is an error (diffusers fails with a TypeError);
//! * the timestep must be one of the schedule's (diffusers indexes its tables with anything, negative
//!   values from the end);
//! * `original_image` and `mask` must broadcast to the sample's shape (torch would broadcast the
//!   result to a larger shape);
//! * `jump_length = 0` is an argument error (diffusers: `range()` ValueError); more steps than
//!   `num_train_timesteps` are clamped, as diffusers does;
//! * an `eta` so large that `1 − ᾱ_prev − σ_t²` is negative is an error (diffusers returns NaN);
//! * `trained_betas` are read as float32 (diffusers keeps a numpy array's float64 and cannot take the
//!   list a JSON config holds); `beta_schedule: laplace` is refused, as diffusers refuses it here.
//!
//! Numerics: βₜ and ᾱₜ are diffusers' float32 tables ([`NoiseSchedule`]); coefficients in f64, tensor
//! math in f32 (f64 for f64 input), results in the sample's dtype.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

use super::algorithm::{
    MethodInput, MethodSpec, SamplingLoop, SchedulerAlgorithm, SchedulerConfig, SchedulerOutput, StepInput,
    TimestepsSpec,
};
use super::args::Args;
use super::betas::NoiseSchedule;
use super::common::{check_float, check_step_tensors, compute_dtype, lin_comb, require_timesteps, train_index};
use super::config::{json_float, validate_common, BetaSchedule};
use super::noise::Noise;

/// The longest jump schedule `set_timesteps` lays out.
pub const MAX_SCHEDULE_LEN: usize = 10_000_000;

/// `RePaintScheduler`'s config, with diffusers' defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RePaintConfig {
    /// The training diffusion steps.
    pub num_train_timesteps: usize,
    /// β₀ of the `linear` / `scaled_linear` / `sigmoid` schedules.
    #[serde(with = "json_float")]
    pub beta_start: f64,
    /// β_{N−1} of those schedules.
    #[serde(with = "json_float")]
    pub beta_end: f64,
    /// The training schedule: `linear`, `scaled_linear`, `squaredcos_cap_v2` or `sigmoid`.
    pub beta_schedule: BetaSchedule,
    /// η of the unknown region's DDIM step (0: deterministic, 1: DDPM-like); a step's `eta`
    /// argument overrides it.
    #[serde(with = "json_float")]
    pub eta: f64,
    /// Explicit betas (one per training step) instead of `beta_schedule`.
    pub trained_betas: Option<Vec<f64>>,
    /// Clamp the predicted x₀ to [−1, 1].
    pub clip_sample: bool,
}

impl Default for RePaintConfig {
    fn default() -> Self {
        RePaintConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            eta: 0.0,
            trained_betas: None,
            clip_sample: true,
        }
    }
}

impl SchedulerConfig for RePaintConfig {
    fn validate(&self) -> Result<()> {
        // RePaint has no thresholding: its values are passed as valid constants.
        validate_common(
            self.num_train_timesteps,
            self.beta_start,
            self.beta_end,
            self.trained_betas.as_deref(),
            0.995,
            1.0,
        )?;
        if self.trained_betas.is_none() && matches!(self.beta_schedule, BetaSchedule::Laplace | BetaSchedule::Exp) {
            return Err(Error::config(
                "beta_schedule",
                "`laplace` and `exp` are not implemented for RePaintScheduler (as in diffusers); use linear, scaled_linear, \
                 squaredcos_cap_v2 or sigmoid",
            ));
        }
        check_eta(self.eta, Error::config)
    }

    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
}

fn check_eta(eta: f64, err: fn(&'static str, String) -> Error) -> Result<()> {
    if !(eta.is_finite() && eta >= 0.0) {
        return Err(err("eta", format!("must be a finite number ≥ 0, got {eta}")));
    }
    Ok(())
}

/// `set_timesteps`' own arguments (diffusers' defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RePaintTimestepArgs {
    /// Steps taken back up in one jump ("j" in the paper); at least 1.
    pub jump_length: usize,
    /// How many times each jump point is passed going down ("r" in the paper): it jumps back up
    /// `jump_n_sample − 1` times (0 and 1 mean no jumps).
    pub jump_n_sample: usize,
}

impl Default for RePaintTimestepArgs {
    fn default() -> Self {
        RePaintTimestepArgs { jump_length: 10, jump_n_sample: 10 }
    }
}

/// `step`'s own arguments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RePaintStepArgs {
    /// η for this step instead of the config's (the pipeline's `scheduler.eta = eta`).
    pub eta: Option<f64>,
}

/// diffusers' `RePaintScheduler`.
#[derive(Clone, Debug)]
pub struct RePaintScheduler {
    config: RePaintConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    num_inference_steps: Option<usize>,
}

/// diffusers' jump schedule over `0 … n−1` (before scaling to training timesteps): down one at a
/// time, and at every multiple `j` of `jump_length` below `n − jump_length`, `jump_n_sample − 1` times
/// up `jump_length` steps and down again.
pub fn jump_schedule(n: usize, jump_length: usize, jump_n_sample: usize) -> Result<Vec<usize>> {
    if jump_length == 0 {
        return Err(Error::argument("jump_length", "must be at least 1, got 0"));
    }
    let jumps_per_point = jump_n_sample.saturating_sub(1);
    let points = if n > jump_length { (n - jump_length).div_ceil(jump_length) } else { 0 };
    let len = points
        .checked_mul(jumps_per_point)
        .and_then(|v| v.checked_mul(2 * jump_length))
        .and_then(|v| v.checked_add(n))
        .filter(|&len| len <= MAX_SCHEDULE_LEN)
        .ok_or_else(|| {
            Error::argument(
                "jump_n_sample",
                format!(
                    "the jump schedule for {n} steps, jump_length {jump_length} and jump_n_sample {jump_n_sample} \
                     would have more than {MAX_SCHEDULE_LEN} entries"
                ),
            )
        })?;
    // jumps[j]: the jumps left at point j (diffusers' dict over range(0, n - jump_length, jump_length)).
    let mut jumps = vec![0usize; n];
    if n > jump_length {
        for j in (0..n - jump_length).step_by(jump_length) {
            jumps[j] = jumps_per_point;
        }
    }
    let mut timesteps = Vec::with_capacity(len);
    let mut t = n;
    while t >= 1 {
        t -= 1;
        timesteps.push(t);
        if jumps[t] > 0 {
            jumps[t] -= 1;
            for _ in 0..jump_length {
                t += 1;
                timesteps.push(t);
            }
        }
    }
    Ok(timesteps)
}

impl RePaintScheduler {
    /// βₜ of the training schedule.
    pub fn betas(&self) -> &[f64] {
        &self.schedule.betas
    }

    /// The training steps one inference step spans (`num_train_timesteps // num_inference_steps`).
    fn stride(&self) -> Result<usize> {
        Ok(self.config.num_train_timesteps / require_timesteps(self.num_inference_steps)?)
    }

    /// `timestep` as a training index that is in the schedule.
    fn scheduled_index(&self, timestep: f64) -> Result<usize> {
        let t = train_index(timestep, self.config.num_train_timesteps)? as usize;
        if !self.timesteps.contains(&(t as f64)) {
            return Err(Error::argument("timestep", format!("{t} is not one of the scheduler's timesteps")));
        }
        Ok(t)
    }

    /// Re-noises `sample` from `timestep` up by one inference step (diffusers' `undo_step`): for
    /// each of the `k = num_train_timesteps / num_inference_steps` training steps `t + i`,
    /// `x ← √(1 − β_{t+i})·x + √β_{t+i}·z`, a fresh z drawn from `noise` each time (in that order).
    /// `Noise::Given` takes the `k` draws stacked, shape `[k, …sample]` (or the sample's shape when
    /// `k = 1`). `timestep` is the schedule's entry before the jump up (the pipeline's `t_last`).
    pub fn undo_step(&self, sample: &Tensor, timestep: f64, mut noise: Noise<'_>) -> Result<Tensor> {
        let k = self.stride()?;
        check_float("sample", sample)?;
        let t = self.scheduled_index(timestep)?;
        if t + k > self.config.num_train_timesteps {
            return Err(Error::argument(
                "timestep",
                format!(
                    "undo_step from {t} re-noises training steps {t}…{} but the last is {}",
                    t + k - 1,
                    self.config.num_train_timesteps - 1
                ),
            ));
        }
        let shape = sample.dims().to_vec();
        // Given noise: one draw per training step, stacked on a new first dim.
        let given = match &noise {
            Noise::Given(g) => {
                check_float("variance_noise", g)?;
                let mut stacked = vec![k];
                stacked.extend_from_slice(&shape);
                if g.dims() == stacked.as_slice() {
                    Some(*g)
                } else if k == 1 {
                    None
                } else {
                    return Err(Error::argument(
                        "variance_noise",
                        format!(
                            "undo_step draws {k} noises (one per training step): give them stacked, shape \
                             {stacked:?}, not {:?}",
                            g.dims()
                        ),
                    ));
                }
            }
            _ => None,
        };
        let out_dtype = sample.dtype();
        let dtype = compute_dtype(out_dtype);
        let mut x = sample.to_dtype(dtype)?;
        for i in 0..k {
            let beta = self.schedule.betas[t + i];
            let z = match given {
                Some(g) => g.get(i)?.to_device(x.device())?.to_dtype(dtype)?,
                None => noise.draw(&shape, x.device(), dtype, "RePaintScheduler.undo_step")?,
            };
            x = lin_comb(&[(&x, (1.0 - beta).sqrt()), (&z, beta.sqrt())])?;
        }
        Ok(x.to_dtype(out_dtype)?)
    }
}

/// `t` (a known-region tensor) on the sample's device and compute dtype, broadcast to `shape`.
fn broadcast_to(name: &str, t: &Tensor, shape: &[usize], like: &Tensor) -> Result<Tensor> {
    check_float(name, t)?;
    let t = t.to_device(like.device())?.to_dtype(like.dtype())?;
    t.broadcast_as(shape).map_err(|_| {
        Error::argument(
            name,
            format!("has shape {:?}, which does not broadcast to the sample's shape {shape:?}", t.dims()),
        )
    })
}

impl SchedulerAlgorithm for RePaintScheduler {
    const CLASS_NAME: &'static str = "RePaintScheduler";
    const SHORT_NAME: &'static str = "repaint";
    const SUMMARY: &'static str =
        "RePaint inpainting (needs original_image and mask; jumps back with undo_step), ~250 steps";
    const DEFAULT_STEPS: usize = 250;
    const SAMPLING_LOOP: SamplingLoop = SamplingLoop::Inpainting;
    const STEP_PARAMS: &'static [&'static str] = &["original_image", "mask", "generator", "return_dict"];
    const SET_TIMESTEPS_PARAMS: &'static [&'static str] =
        &["num_inference_steps", "jump_length", "jump_n_sample", "device"];
    const KARRAS_FAMILY: bool = false;
    const STEP_TENSORS: &'static [&'static str] = &["original_image", "mask"];
    const METHODS: &'static [MethodSpec] =
        &[MethodSpec { name: "undo_step", params: &["sample", "timestep"], returns_sample: true }];

    type Config = RePaintConfig;
    type TimestepArgs = RePaintTimestepArgs;
    type StepArgs = RePaintStepArgs;

    fn new(config: RePaintConfig) -> Result<Self> {
        config.validate()?;
        let schedule = NoiseSchedule::new(
            config.beta_schedule,
            config.beta_start,
            config.beta_end,
            config.num_train_timesteps,
            config.trained_betas.as_deref(),
            false,
        )?;
        let timesteps = (0..config.num_train_timesteps).rev().map(|t| t as f64).collect();
        Ok(RePaintScheduler { config, schedule, timesteps, num_inference_steps: None })
    }

    fn config(&self) -> &RePaintConfig {
        &self.config
    }

    /// diffusers' `set_timesteps(n, jump_length, jump_n_sample)`: `n` is clamped to
    /// `num_train_timesteps`, and the jump schedule is scaled by `num_train_timesteps // n`.
    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, args: &RePaintTimestepArgs) -> Result<()> {
        let n = match spec {
            TimestepsSpec::Count(n) => n,
            TimestepsSpec::Timesteps(_) => {
                return Err(Error::argument(
                    "timesteps",
                    "RePaintScheduler does not take custom timesteps (as in diffusers); give num_inference_steps",
                ))
            }
            TimestepsSpec::Sigmas(_) => return Err(Error::argument("sigmas", "RePaintScheduler does not take sigmas")),
        };
        if n == 0 {
            return Err(Error::argument("num_inference_steps", "must be at least 1, got 0"));
        }
        let n = n.min(self.config.num_train_timesteps);
        let stride = self.config.num_train_timesteps / n;
        let schedule = jump_schedule(n, args.jump_length, args.jump_n_sample)?;
        self.timesteps = schedule.into_iter().map(|t| (t * stride) as f64).collect();
        self.num_inference_steps = Some(n);
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

    /// One step down (diffusers' `RePaintScheduler.step`), from `sample` at `timestep` given the
    /// model's noise prediction, with `input.tensors` `original_image` and `mask` (1 keeps the known
    /// pixel). Draws one noise tensor from `input.noise` (always; see the module doc). Returns
    /// `prev_sample` and `pred_original_sample`.
    fn step(&mut self, input: StepInput<'_>, args: &RePaintStepArgs) -> Result<SchedulerOutput> {
        let StepInput { model_output, timestep, sample, mut noise, tensors } = input;
        let eta = args.eta.unwrap_or(self.config.eta);
        check_eta(eta, Error::argument)?;
        let stride = self.stride()?;
        let t = self.scheduled_index(timestep)?;
        let shape = check_step_tensors(model_output, sample)?;
        let original_image = tensors.require("original_image", "RePaintScheduler.step")?;
        let mask = tensors.require("mask", "RePaintScheduler.step")?;

        let out_dtype = sample.dtype();
        let dtype = compute_dtype(out_dtype);
        let x = sample.to_dtype(dtype)?;
        let original_image = broadcast_to("original_image", original_image, &shape, &x)?;
        let mask = broadcast_to("mask", mask, &shape, &x)?;
        let model_output = model_output.to_dtype(dtype)?;

        // 1. alphas, betas
        let prev_t = t as i64 - stride as i64;
        let alpha_prod_t = self.schedule.alphas_cumprod[t];
        let alpha_prod_t_prev = if prev_t >= 0 { self.schedule.alphas_cumprod[prev_t as usize] } else { 1.0 };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;

        // 4. σ_t(η) (DDIM formula 16), checked before anything is drawn
        let variance = (beta_prod_t_prev / beta_prod_t) * (1.0 - alpha_prod_t / alpha_prod_t_prev);
        let std_dev_t = eta * variance.sqrt();
        let dir_var = 1.0 - alpha_prod_t_prev - std_dev_t * std_dev_t;
        if dir_var < 0.0 {
            return Err(Error::argument(
                "eta",
                format!(
                    "{eta} is too large at timestep {t}: 1 − ᾱ_prev − σ_t² = {dir_var} is negative (σ_t = η·{})",
                    variance.sqrt()
                ),
            ));
        }

        // 2.–3. predicted x₀ (DDPM formula 15), clipped
        let mut pred_original =
            lin_comb(&[(&x, 1.0), (&model_output, -beta_prod_t.sqrt())])?.affine(1.0 / alpha_prod_t.sqrt(), 0.0)?;
        if self.config.clip_sample {
            pred_original = pred_original.clamp(-1.0, 1.0)?;
        }

        // One draw, used for the variance (5.) and for the known region (8.), as diffusers does.
        let z = noise.draw(&shape, x.device(), dtype, "RePaintScheduler.step")?;

        // 5.–7. the unknown region: DDIM formula 12
        let mut unknown_terms = vec![(&pred_original, alpha_prod_t_prev.sqrt()), (&model_output, dir_var.sqrt())];
        if t > 0 && eta > 0.0 {
            unknown_terms.push((&z, std_dev_t));
        }
        let unknown = lin_comb(&unknown_terms)?;
        // 8. the known region: the original noised to the previous timestep (paper formula 8a)
        let known = lin_comb(&[(&original_image, alpha_prod_t_prev.sqrt()), (&z, beta_prod_t_prev.sqrt())])?;
        // 9. mask · known + (1 − mask) · unknown
        let prev = (mask.mul(&known)? + mask.affine(-1.0, 1.0)?.mul(&unknown)?)?;

        Ok(SchedulerOutput::with_original(prev.to_dtype(out_dtype)?, pred_original.to_dtype(out_dtype)?))
    }

    fn call_method(&mut self, name: &str, input: MethodInput<'_>, args: &Value) -> Result<SchedulerOutput> {
        let what = format!("RePaintScheduler.{name}");
        if name != "undo_step" {
            return Err(Error::argument(
                "method",
                format!("RePaintScheduler has no method `{name}` (it has undo_step)"),
            ));
        }
        if let Value::Object(map) = args {
            Args::from(map.clone()).parse::<super::algorithm::NoArgs>(&what)?;
        }
        let sample = input.tensors.require("sample", &what)?;
        let timestep = input.require_timestep(&what)?;
        Ok(SchedulerOutput::sample(self.undo_step(sample, timestep, input.noise)?))
    }
}

#[cfg(test)]
mod tests {
    //! Expected values: diffusers 0.42.1 on torch 2.15 (CPU, float32), printed by
    //! `/work/notes/sched-family-reference.py` (kept beside the lead's notes): deterministic inputs
    //! `det(k, shape, scale)[i] = f32(scale·sin(0.7·(k·numel + i + 1)))`, the noise injected by
    //! replacing diffusers' `randn_tensor` with a queue of `det` tensors (here `Noise::Given`), or
    //! drawn from `torch.Generator().manual_seed(seed)` (here [`Generator::from_seed`]).

    use candle_core::{DType, Device};

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

    fn timesteps_of(n: usize, jump_length: usize, jump_n_sample: usize) -> Vec<f64> {
        let mut s = RePaintScheduler::new(RePaintConfig::default()).unwrap();
        s.set_timesteps_with(TimestepsSpec::Count(n), &RePaintTimestepArgs { jump_length, jump_n_sample }).unwrap();
        s.timesteps().to_vec()
    }

    fn ints(v: &[usize]) -> Vec<f64> {
        v.iter().map(|&t| t as f64).collect()
    }

    #[test]
    fn jump_schedules_match_diffusers() {
        assert_eq!(
            timesteps_of(10, 3, 2),
            ints(&[
                900, 800, 700, 600, 700, 800, 900, 800, 700, 600, 500, 400, 300, 400, 500, 600, 500, 400, 300, 200,
                100, 0, 100, 200, 300, 200, 100, 0
            ])
        );
        assert_eq!(
            timesteps_of(7, 3, 3),
            ints(&[
                852, 710, 568, 426, 568, 710, 852, 710, 568, 426, 568, 710, 852, 710, 568, 426, 284, 142, 0, 142, 284,
                426, 284, 142, 0, 142, 284, 426, 284, 142, 0
            ])
        );
        let mut s = RePaintScheduler::new(RePaintConfig::default()).unwrap();
        s.set_timesteps(25).unwrap(); // jump_length 10, jump_n_sample 10
        assert_eq!(s.timesteps().len(), 385);
        assert_eq!(
            &s.timesteps()[..16],
            &ints(&[960, 920, 880, 840, 800, 760, 720, 680, 640, 600, 560, 520, 480, 440, 400, 440])[..]
        );
        // more steps than training steps are clamped, as diffusers does
        s.set_timesteps_with(TimestepsSpec::Count(2000), &RePaintTimestepArgs { jump_length: 10, jump_n_sample: 1 })
            .unwrap();
        assert_eq!((s.timesteps().len(), s.num_inference_steps()), (1000, Some(1000)));
        assert_eq!(s.timesteps()[0], 999.0);
    }

    fn small() -> RePaintScheduler {
        let config = RePaintConfig {
            num_train_timesteps: 20,
            beta_schedule: BetaSchedule::SquaredcosCapV2,
            ..Default::default()
        };
        let mut s = RePaintScheduler::new(config).unwrap();
        s.set_timesteps_with(TimestepsSpec::Count(10), &RePaintTimestepArgs { jump_length: 3, jump_n_sample: 2 })
            .unwrap();
        s
    }

    fn mask() -> Tensor {
        Tensor::from_vec(vec![1.0f32, 0.0, 0.25, 0.0], (1, 1, 2, 2), &Device::Cpu).unwrap()
    }

    #[test]
    fn steps_match_diffusers() -> Result<()> {
        let shape = [2, 1, 2, 2];
        let mut s = small();
        let (x, m, img, z) = (det(0, &shape, 1.5), det(1, &shape, 0.8), det(2, &shape, 0.9), det(3, &shape, 1.0));
        let mask = mask(); // broadcast over the batch
        let tensors = [("original_image", &img), ("mask", &mask)];
        #[rustfmt::skip]
        let cases: [(f64, f64, [f64; 8], [f64; 8]); 4] = [
            (0.0, 8.0,
             [-0.9883934855461121, 1.1266306638717651, 1.0846394300460815, 0.4235425591468811, 1.171268343925476, -1.0036216974258423, -0.9506531357765198, -0.9018429517745972],
             [1.0, 1.0, 1.0, 0.07269957661628723, -0.9170377254486084, -1.0, -1.0, -0.5742650032043457]),
            (0.5, 8.0,
             [-0.9883934855461121, 0.998371958732605, 1.0721113681793213, 0.5262494087219238, 1.171268343925476, -0.8404494524002075, -0.8938114047050476, -0.9490819573402405],
             [1.0, 1.0, 1.0, 0.07269957661628723, -0.9170377254486084, -1.0, -1.0, -0.5742650032043457]),
            (0.5, 0.0,
             [-0.5563234090805054, 1.0, 0.9006531834602356, 0.4431343078613281, 0.7611721754074097, -1.0, -0.8359660506248474, -0.8803929090499878],
             [0.969004213809967, 1.0, 1.0, 0.4431343078613281, -0.55120450258255, -1.0, -1.0, -0.8803929090499878]),
            (1.0, 4.0,
             [-0.7770900726318359, 0.9266581535339355, 0.9692947268486023, 0.4799960255622864, 0.9799489378929138, -0.8477047681808472, -0.8269355297088623, -0.8657311797142029],
             [1.0, 1.0, 1.0, 0.2554188668727875, -0.680214524269104, -1.0, -1.0, -0.6959506869316101]),
        ];
        for (eta, t, prev, x0) in cases {
            let input = StepInput::new(&m, t, &x).with_noise(Noise::Given(&z)).with_tensors(&tensors);
            let out = s.step(input, &RePaintStepArgs { eta: Some(eta) })?;
            assert_close(&out.prev_sample, &prev, &format!("eta {eta} t {t} prev"));
            assert_close(out.pred_original_sample.as_ref().unwrap(), &x0, &format!("eta {eta} t {t} x0"));
        }
        // undo_step from 4: two training steps (20 / 10), two draws, given stacked
        let zz = Tensor::stack(&[det(4, &shape, 1.0), det(5, &shape, 1.0)], 0)?;
        let undone = s.undo_step(&x, 4.0, Noise::Given(&zz))?;
        #[rustfmt::skip]
        assert_close(&undone, &[0.5872940421104431, 0.9181133508682251, 0.8171296715736389, 0.33183708786964417, -0.3095235824584961, -0.8053104877471924, -0.9223473072052002, -0.605589747428894], "undo");
        // one draw given for two is refused (reusing it would match no generator)
        let e = s.undo_step(&x, 4.0, Noise::Given(&z)).unwrap_err().to_string();
        assert!(e.contains("[2, 2, 1, 2, 2]"), "{e}");
        // f64 in, f64 out
        let x64 = x.to_dtype(DType::F64)?;
        assert_eq!(s.undo_step(&x64, 4.0, Noise::Given(&zz))?.dtype(), DType::F64);
        Ok(())
    }

    /// The RePaintPipeline loop (step down, undo_step up) through the dynamic scheduler, with a
    /// linear stand-in model `ε = 0.3·x − 0.2·image` and every draw from one seeded generator: the
    /// generator stream is consumed as diffusers consumes it (one draw per step, one per re-noised
    /// training step).
    #[test]
    fn inpainting_loop_matches_diffusers() -> Result<()> {
        let shape = [2, 1, 2, 2];
        let config = RePaintConfig { num_train_timesteps: 20, beta_start: 0.001, beta_end: 0.2, ..Default::default() };
        let mut scheduler = Scheduler::new(RePaintScheduler::new(config)?);
        let img = det(2, &shape, 0.9);
        let mask = mask();
        let mut g = Generator::from_seed(7);
        let mut x = g.randn_tensor(&shape, &Device::Cpu)?;
        let timestep_args = Args::new().with("jump_length", 3).with("jump_n_sample", 2);
        scheduler.set_timesteps_with(TimestepsSpec::Count(10), &timestep_args)?;
        let step_args = Args::new().with("eta", 0.3);
        let timesteps = scheduler.timesteps().to_vec();
        let mut t_last = timesteps[0] + 1.0;
        for t in timesteps {
            if t < t_last {
                let eps = lin_comb(&[(&x, 0.3), (&img, -0.2)])?;
                let tensors = [("original_image", &img), ("mask", &mask)];
                let input = StepInput::new(&eps, t, &x).with_noise(Noise::Generator(&mut g)).with_tensors(&tensors);
                x = scheduler.step(input, &step_args)?.prev_sample;
            } else {
                let tensors = [("sample", &x)];
                let input = MethodInput {
                    tensors: TensorArgs(&tensors),
                    timestep: Some(t_last),
                    noise: Noise::Generator(&mut g),
                };
                x = scheduler.call_method("undo_step", input, &Args::new())?.prev_sample;
            }
            t_last = t;
        }
        #[rustfmt::skip]
        assert_close(&x, &[-0.5563234090805054, -0.6370548605918884, 0.7583111524581909, -0.674132227897644, 0.7611721754074097, -0.3003693222999573, -0.13284209370613098, -0.9836898446083069], "loop");
        Ok(())
    }

    #[test]
    fn refuses_what_cannot_work() -> Result<()> {
        let shape = [1, 1, 2, 2];
        let (x, m, img) = (det(0, &shape, 1.0), det(1, &shape, 1.0), det(2, &shape, 1.0));
        let mask = mask();
        let tensors = [("original_image", &img), ("mask", &mask)];
        let step = |s: &mut RePaintScheduler, t: f64, tensors: &[(&str, &Tensor)], eta: Option<f64>| {
            let input = StepInput::new(&m, t, &x).with_noise(Noise::Given(&x)).with_tensors(tensors);
            s.step(input, &RePaintStepArgs { eta })
        };
        let mut s = RePaintScheduler::new(RePaintConfig::default())?;
        assert_eq!(s.timesteps().len(), 1000);
        // before set_timesteps
        assert!(step(&mut s, 999.0, &tensors, None).is_err());
        assert!(s.undo_step(&x, 0.0, Noise::Given(&x)).is_err());
        assert!(s.set_timesteps(0).is_err());
        let e = s
            .set_timesteps_with(TimestepsSpec::Count(10), &RePaintTimestepArgs { jump_length: 0, jump_n_sample: 2 })
            .unwrap_err()
            .to_string();
        assert!(e.contains("jump_length"), "{e}");
        let huge = RePaintTimestepArgs { jump_length: 1, jump_n_sample: usize::MAX };
        assert!(s.set_timesteps_with(TimestepsSpec::Count(100), &huge).is_err());
        assert!(s.set_timesteps_with(TimestepsSpec::Timesteps(&[10.0]), &Default::default()).is_err());
        s.set_timesteps_with(TimestepsSpec::Count(10), &RePaintTimestepArgs { jump_length: 3, jump_n_sample: 2 })?;
        // not in the schedule, not a training timestep
        assert!(step(&mut s, 901.0, &tensors, None).is_err());
        assert!(step(&mut s, 950.0, &tensors, None).is_err());
        assert!(step(&mut s, -100.0, &tensors, None).is_err());
        // missing or mis-shaped tensors
        let e = step(&mut s, 900.0, &tensors[..1], None).unwrap_err().to_string();
        assert!(e.contains("mask"), "{e}");
        let wide = det(3, &[1, 1, 2, 3], 1.0);
        let e = step(&mut s, 900.0, &[("original_image", &img), ("mask", &wide)], None).unwrap_err().to_string();
        assert!(e.contains("mask") && e.contains("broadcast"), "{e}");
        let int_mask = mask.to_dtype(DType::U8)?;
        assert!(step(&mut s, 900.0, &[("original_image", &img), ("mask", &int_mask)], None).is_err());
        // eta
        assert!(step(&mut s, 900.0, &tensors, Some(-0.5)).is_err());
        let e = step(&mut s, 900.0, &tensors, Some(50.0)).unwrap_err().to_string();
        assert!(e.contains("eta"), "{e}");
        // no noise source (a step always draws, even with eta = 0)
        let input = StepInput::new(&m, 900.0, &x).with_tensors(&tensors);
        assert!(s.step(input, &RePaintStepArgs::default()).is_err());
        // a mask given as [H, W] broadcasts
        let hw = mask.reshape((2, 2))?;
        let a = step(&mut s, 900.0, &[("original_image", &img), ("mask", &hw)], None)?.prev_sample;
        let b = step(&mut s, 900.0, &tensors, None)?.prev_sample;
        assert_eq!(a.flatten_all()?.to_vec1::<f32>()?, b.flatten_all()?.to_vec1::<f32>()?);
        // the dynamic scheduler refuses stray tensors and arguments
        let mut dynamic = Scheduler::new(s);
        let extra = [("original_image", &img), ("mask", &mask), ("sample_mean", &x)];
        let input = StepInput::new(&m, 900.0, &x).with_noise(Noise::Given(&x)).with_tensors(&extra);
        assert!(dynamic.step(input, &Args::new()).is_err());
        let input = StepInput::new(&m, 900.0, &x).with_noise(Noise::Given(&x)).with_tensors(&tensors);
        let e = dynamic.step(input, &Args::new().with("etta", 0.1)).unwrap_err().to_string();
        assert!(e.contains("etta"), "{e}");
        let e =
            dynamic.set_timesteps_with(TimestepsSpec::Count(10), &Args::new().with("jump", 3)).unwrap_err().to_string();
        assert!(e.contains("jump_length"), "{e}");
        Ok(())
    }

    #[test]
    fn config_defaults_and_validation() {
        let c = RePaintConfig::parse(
            &serde_json::json!({"_class_name": "RePaintScheduler", "eta": 0.5, "steps_offset": 1}),
        )
        .unwrap();
        assert_eq!(c, RePaintConfig { eta: 0.5, ..Default::default() });
        let s = RePaintScheduler::new(RePaintConfig::default()).unwrap();
        assert_eq!(s.config_json()["beta_schedule"], "linear");
        // sigmoid is accepted (it is in diffusers' RePaint), laplace is not
        assert!(RePaintConfig::parse(&serde_json::json!({"beta_schedule": "sigmoid"})).is_ok());
        for (bad, field) in [
            (serde_json::json!({"beta_schedule": "laplace"}), "beta_schedule"),
            (serde_json::json!({"eta": -1.0}), "eta"),
            (serde_json::json!({"num_train_timesteps": 0}), "num_train_timesteps"),
            (serde_json::json!({"num_train_timesteps": 3, "trained_betas": [0.1, 0.2]}), "trained_betas"),
        ] {
            let e = RePaintConfig::parse(&bad).unwrap_err();
            assert!(matches!(&e, Error::InvalidConfig { field: f, .. } if f == field), "{bad}: {e}");
        }
    }
}
