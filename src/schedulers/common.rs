//! Tensor helpers the schedulers share: the working dtype, shape checks, x₀ clipping and dynamic
//! thresholding, linear combinations with f64 coefficients, and timestep checks.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// What DDPM and DDIM share beyond [`shared_scheduler_methods`]: the ᾱ and timestep accessors,
/// `set_timesteps` (the
/// `timestep_spacing` schedule), ᾱ at a training timestep and the clipping/thresholding of x₀.
macro_rules! ddpm_ddim_methods {
    () => {
        /// βₜ of the training schedule.
        pub fn betas(&self) -> &[f64] {
            &self.schedule.betas
        }

        /// The `timestep_spacing` schedule of `set_timesteps(n)`.
        fn spaced_timesteps(&self, num_inference_steps: usize) -> $crate::error::Result<Vec<f64>> {
            $crate::schedulers::timesteps::check_num_inference_steps(
                num_inference_steps,
                self.config.num_train_timesteps,
            )?;
            Ok($crate::schedulers::timesteps::ddpm_ddim_timesteps(
                self.config.timestep_spacing,
                self.config.num_train_timesteps,
                num_inference_steps,
                self.config.steps_offset,
            )
            .into_iter()
            .map(|t| t as f64)
            .collect())
        }

        fn alpha_prod(&self, t: i64) -> $crate::error::Result<f64> {
            usize::try_from(t).ok().and_then(|i| self.schedule.alphas_cumprod.get(i).copied()).ok_or_else(|| {
                $crate::error::Error::argument(
                    "timestep",
                    format!("{t} is outside the training range [0, {})", self.config.num_train_timesteps),
                )
            })
        }

        /// x₀ dynamically thresholded (`thresholding`), else clipped (`clip_sample`), else unchanged.
        fn clip_or_threshold(&self, x0: candle_core::Tensor) -> $crate::error::Result<candle_core::Tensor> {
            let c = &self.config;
            if c.thresholding {
                $crate::schedulers::common::threshold_sample(&x0, c.dynamic_thresholding_ratio, c.sample_max_value)
            } else if c.clip_sample {
                $crate::schedulers::common::clip(&x0, c.clip_sample_range)
            } else {
                Ok(x0)
            }
        }
    };
}

pub(crate) use ddpm_ddim_methods;

/// How a call's timestep is compared with the schedule's entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepMatch {
    /// Exactly (the DPM-Solver family's integer schedules).
    Exact,
    /// At float32 precision, as diffusers compares against its float32 timestep tensor.
    Float32,
}

impl TimestepMatch {
    fn same(self, ours: f64, given: f64) -> bool {
        match self {
            TimestepMatch::Exact => ours == given,
            TimestepMatch::Float32 => (ours as f32) == (given as f32),
        }
    }
}

/// diffusers' `_step_index` / `index_for_timestep`: the index a call at `timestep` works at. That is
/// `current` (the step index, else the `set_begin_index` one), or on a run's first call the
/// occurrence of `timestep` in the schedule: the first, or with `second_occurrence` the second of a
/// repeated timestep (Heun's first-order entry). Errors when the run is over or `timestep` is not
/// the schedule's entry at that index.
///
/// diffusers takes the second match of a repeated timestep for every scheduler (meant for img2img
/// runs that start mid-schedule), which makes a full run overflow its σ table on the last step;
/// a fresh run starts at the first match here unless the scheduler's own layout needs the second.
/// diffusers also ignores the timestep after the first step; here it must be the schedule's next.
pub fn resolve_step_index(
    timesteps: &[f64],
    current: Option<usize>,
    timestep: f64,
    matching: TimestepMatch,
    second_occurrence: bool,
) -> Result<usize> {
    let len = timesteps.len();
    let index = match current {
        Some(i) => i,
        None => {
            let mut matches =
                timesteps.iter().enumerate().filter(|(_, t)| matching.same(**t, timestep)).map(|(i, _)| i);
            let first = matches.next().ok_or_else(|| {
                Error::argument("timestep", format!("{timestep} is not in the scheduler's timesteps {timesteps:?}"))
            })?;
            if second_occurrence {
                matches.next().unwrap_or(first)
            } else {
                first
            }
        }
    };
    if index >= len {
        return Err(Error::argument(
            "timestep",
            format!("all {len} steps of the schedule are done: call set_timesteps to start again"),
        ));
    }
    if !matching.same(timesteps[index], timestep) {
        return Err(Error::argument(
            "timestep",
            format!("expected timestep {} (step {index} of {len}), got {timestep}", timesteps[index]),
        ));
    }
    Ok(index)
}

/// The inference step count `set_timesteps` stored, or the error of a step taken before it.
pub fn require_timesteps(num_inference_steps: Option<usize>) -> Result<usize> {
    num_inference_steps.ok_or_else(|| {
        Error::argument("timestep", "the scheduler has no timesteps yet: call set_timesteps before step")
    })
}

/// The dtype the step math runs in: f64 for f64 inputs, f32 for everything else (f16/bf16 are upcast).
pub fn compute_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Checks that a tensor argument is a float tensor.
pub fn check_float(name: &str, t: &Tensor) -> Result<()> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        Err(Error::argument(name, format!("must be a float tensor, got {:?}", t.dtype())))
    }
}

/// The checks every step starts with: both tensors are float tensors and the model output has the
/// sample's shape. Returns that shape.
pub fn check_step_tensors(model_output: &Tensor, sample: &Tensor) -> Result<Vec<usize>> {
    check_float("sample", sample)?;
    check_float("model_output", model_output)?;
    let shape = sample.dims().to_vec();
    check_shape("model_output", model_output, &shape)?;
    Ok(shape)
}

/// Checks that `t` has exactly the shape `expected` (the sample's).
pub fn check_shape(name: &str, t: &Tensor, expected: &[usize]) -> Result<()> {
    if t.dims() != expected {
        return Err(Error::argument(name, format!("has shape {:?} but the sample has shape {:?}", t.dims(), expected)));
    }
    Ok(())
}

/// A timestep that must be a training-step index (`[0, num_train_timesteps)`, integral).
pub fn train_index(timestep: f64, num_train_timesteps: usize) -> Result<i64> {
    if timestep.fract() != 0.0 || !(0.0..num_train_timesteps as f64).contains(&timestep) {
        return Err(Error::argument(
            "timestep",
            format!("{timestep} is not a training timestep (an integer in [0, {num_train_timesteps}))"),
        ));
    }
    Ok(timestep as i64)
}

/// `Σ cᵢ·tᵢ` with f64 coefficients (every tensor has the same shape and dtype).
pub fn lin_comb(terms: &[(&Tensor, f64)]) -> Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for (t, c) in terms {
        let term = t.affine(*c, 0.0)?;
        acc = Some(match acc {
            None => term,
            Some(a) => (a + term)?,
        });
    }
    acc.ok_or_else(|| Error::argument("terms", "empty linear combination"))
}

/// Clamps x₀ to `[−range, range]` (`clip_sample`).
pub fn clip(x: &Tensor, range: f64) -> Result<Tensor> {
    Ok(x.clamp(-range, range)?)
}

/// diffusers' `_threshold_sample` (Imagen's dynamic thresholding): per batch item, `s` is the
/// `ratio`-quantile of |x₀| (linear interpolation, as `torch.quantile`), clamped to `[1, max_value]`;
/// x₀ is clamped to `[−s, s]` and divided by `s`. The quantile is computed on the CPU.
pub fn threshold_sample(x: &Tensor, ratio: f64, max_value: f64) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    if dims.len() < 2 {
        return Err(Error::argument(
            "sample",
            format!("dynamic thresholding needs a batched tensor [B, C, …], got shape {dims:?}"),
        ));
    }
    let batch = dims[0];
    let per_item: usize = dims[1..].iter().product();
    if batch == 0 || per_item == 0 {
        return Ok(x.clone());
    }
    let flat = x.reshape((batch, per_item))?;
    let rows = flat.to_dtype(DType::F64)?.to_device(&Device::Cpu)?.to_vec2::<f64>()?;
    let mut s = Vec::with_capacity(batch);
    for row in rows {
        let mut abs: Vec<f64> = row.iter().map(|v| v.abs()).collect();
        let q = if abs.iter().any(|v| v.is_nan()) { f64::NAN } else { quantile(&mut abs, ratio) };
        // torch.clamp(s, min=1, max=max_value)
        s.push(q.max(1.0).min(max_value));
    }
    let s = Tensor::from_vec(s, (batch, 1), &Device::Cpu)?.to_dtype(x.dtype())?.to_device(x.device())?;
    let out = flat.broadcast_maximum(&s.neg()?)?.broadcast_minimum(&s)?.broadcast_div(&s)?;
    Ok(out.reshape(dims)?)
}

/// `torch.quantile(values, q)` with linear interpolation (values must be free of NaN).
fn quantile(values: &mut [f64], q: f64) -> f64 {
    let n = values.len();
    values.sort_by(|a, b| a.total_cmp(b));
    let rank = q * (n - 1) as f64;
    let below = rank.floor();
    let above = rank.ceil().min((n - 1) as f64);
    let lo = values[below as usize];
    let hi = values[above as usize];
    let w = rank - below;
    // torch's lerp: the formula switches at w = 0.5 for accuracy.
    if w < 0.5 {
        lo + w * (hi - lo)
    } else {
        hi - (hi - lo) * (1.0 - w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        assert!((quantile(&mut v, 0.5) - 2.5).abs() < 1e-12);
        let mut v = vec![1.0, 2.0, 3.0, 4.0, 5.0];
        assert!((quantile(&mut v, 0.995) - 4.98).abs() < 1e-12);
    }

    #[test]
    fn thresholding_clamps_and_scales() -> Result<()> {
        let x = Tensor::new(&[[[-3.0f32, 0.5], [2.0, 1.0]], [[0.1, 0.2], [0.3, -0.4]]], &Device::Cpu)?;
        // item 0: |x| = [3, .5, 2, 1] → 0.5-quantile = 1.5 → s = min(max(1.5, 1), 2) = 1.5
        let y = threshold_sample(&x, 0.5, 2.0)?.to_vec3::<f32>()?;
        assert!((y[0][0][0] + 1.0).abs() < 1e-6);
        assert!((y[0][0][1] - 0.5 / 1.5).abs() < 1e-6);
        // item 1: quantile < 1 → s = 1: plain clipping
        assert!((y[1][1][1] + 0.4).abs() < 1e-6);
        Ok(())
    }
}
