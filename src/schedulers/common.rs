//! Tensor helpers the schedulers share: the working dtype, shape checks, x₀ clipping and dynamic
//! thresholding, linear combinations with f64 coefficients, and drawing the step noise.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::rng::Generator;

use super::StepOptions;

/// The methods every scheduler has alike: loading from a folder, the config, and the accessors of
/// the training schedule and inference state, and the identity `scale_model_input`. Expands inside
/// the scheduler's `impl` block, whose type has the fields `config` (of type `$config`), `schedule`
/// and `num_inference_steps`; `$name` names the scheduler in the docs.
macro_rules! shared_scheduler_methods {
    ($config:ty, $name:literal) => {
        /// From `dir/scheduler_config.json` or `dir/scheduler/scheduler_config.json`.
        pub fn from_pretrained(dir: impl AsRef<std::path::Path>) -> $crate::error::Result<Self> {
            Self::from_json(&$crate::schedulers::config::read_config_json(dir.as_ref())?)
        }

        /// The parsed config.
        pub fn config(&self) -> &$config {
            &self.config
        }

        /// The full config with `_class_name` (diffusers' `.config`).
        pub fn config_json(&self) -> serde_json::Value {
            self.config.to_json()
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

        /// The number of inference steps set by the last `set_timesteps`, if any.
        pub fn num_inference_steps(&self) -> Option<usize> {
            self.num_inference_steps
        }

        #[doc = concat!("The identity: ", $name, " does not scale the model input.")]
        pub fn scale_model_input(
            &self,
            sample: &candle_core::Tensor,
            _timestep: i64,
        ) -> $crate::error::Result<candle_core::Tensor> {
            Ok(sample.clone())
        }
    };
}

/// What DDPM and DDIM share beyond [`shared_scheduler_methods`]: the ᾱ and timestep accessors,
/// `set_timesteps` (the
/// `timestep_spacing` schedule), ᾱ at a training timestep and the clipping/thresholding of x₀.
macro_rules! ddpm_ddim_methods {
    () => {
        /// ᾱₜ of the training schedule.
        pub fn alphas_cumprod(&self) -> &[f64] {
            &self.schedule.alphas_cumprod
        }

        /// The timesteps to step through, descending (before `set_timesteps`: all training timesteps,
        /// as diffusers shows them, though stepping needs `set_timesteps`).
        pub fn timesteps(&self) -> &[i64] {
            &self.timesteps
        }

        /// Sets `num_inference_steps` timesteps spaced by `timestep_spacing`.
        pub fn set_timesteps(&mut self, num_inference_steps: usize) -> $crate::error::Result<()> {
            $crate::schedulers::timesteps::check_num_inference_steps(
                num_inference_steps,
                self.config.num_train_timesteps,
            )?;
            self.timesteps = $crate::schedulers::timesteps::ddpm_ddim_timesteps(
                self.config.timestep_spacing,
                self.config.num_train_timesteps,
                num_inference_steps,
                self.config.steps_offset,
            );
            self.num_inference_steps = Some(num_inference_steps);
            Ok(())
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

pub(crate) use {ddpm_ddim_methods, shared_scheduler_methods};

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

/// Checks that `t` has exactly the shape `expected` (the sample's).
pub fn check_shape(name: &str, t: &Tensor, expected: &[usize]) -> Result<()> {
    if t.dims() != expected {
        return Err(Error::argument(name, format!("has shape {:?} but the sample has shape {:?}", t.dims(), expected)));
    }
    Ok(())
}

/// Rejects `generator` and `variance_noise` given together (diffusers raises the same for DDIM).
pub fn check_noise_sources(opts: &StepOptions<'_>) -> Result<()> {
    if opts.generator.is_some() && opts.variance_noise.is_some() {
        return Err(Error::argument("variance_noise", "pass either `generator` or `variance_noise`, not both"));
    }
    Ok(())
}

/// The noise of a stochastic step, shaped like the sample, in `dtype` on `device`: `variance_noise`
/// when given (shape-checked), else `generator.randn_tensor(shape)` (torch.randn's float32 stream,
/// like diffusers' `randn_tensor` with a CPU generator). With neither, it is an error: steps never
/// draw from an unseeded source.
pub fn step_noise(
    opts: &mut StepOptions<'_>,
    shape: &[usize],
    device: &Device,
    dtype: DType,
    what: &str,
) -> Result<Tensor> {
    if let Some(noise) = opts.variance_noise {
        check_float("variance_noise", noise)?;
        check_shape("variance_noise", noise, shape)?;
        return Ok(noise.to_device(device)?.to_dtype(dtype)?);
    }
    match opts.generator.as_deref_mut() {
        Some(generator) => Ok(draw_randn(generator, shape, device)?.to_dtype(dtype)?),
        None => Err(Error::argument(
            "generator",
            format!("{what} adds noise: pass a `generator` (seeded) or the `variance_noise` to add"),
        )),
    }
}

/// The one place a scheduler draws random numbers. The draw is the only allocation `randn_tensor`
/// can fail (fallibly, with `try_reserve`): that is a request too large for memory, not a bug.
fn draw_randn(generator: &mut Generator, shape: &[usize], device: &Device) -> Result<Tensor> {
    let bytes = shape.iter().fold(4u128, |n, &d| n.saturating_mul(d as u128));
    crate::memory_budget::check(|| format!("the step's noise of shape {shape:?}"), bytes)?;
    generator
        .randn_tensor(shape, device)
        .map_err(|_| crate::memory_budget::too_large_now(&format!("the step's noise of shape {shape:?}"), bytes))
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
