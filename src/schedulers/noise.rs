//! Where a stochastic step's noise comes from: given outright (`variance_noise`), drawn from one
//! generator for the whole batch, or drawn from one generator per image (diffusers' `generator=[…]`).
//!
//! Draws go through [`Generator::randn_tensor`] (torch.randn's CPU stream). A list of generators
//! draws image `i`'s slice `[1, …]` from generator `i` and stacks them, exactly as diffusers'
//! `randn_tensor` does with a list, so an image's noise does not depend on what it was batched with.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::memory_budget;
use crate::rng::Generator;

use super::common::{check_float, check_shape};

/// The noise source of one scheduler call.
#[derive(Debug, Default)]
#[non_exhaustive]
pub enum Noise<'a> {
    /// None: a call that needs noise is an error (schedulers never draw from a hidden source).
    #[default]
    None,
    /// This tensor, shaped like the sample (diffusers' `variance_noise`).
    Given(&'a Tensor),
    /// Draws of the sample's shape from one generator.
    Generator(&'a mut Generator),
    /// Image `i`'s draws from generator `i` (one per batch item).
    PerImage(&'a mut [Generator]),
}

impl Noise<'_> {
    /// Whether no source was given.
    pub fn is_none(&self) -> bool {
        matches!(self, Noise::None)
    }

    /// A noise tensor of `shape` in `dtype` on `device`. `what` names the call for the error when
    /// there is no source ("a DDPM step with timestep > 0").
    pub fn draw(&mut self, shape: &[usize], device: &Device, dtype: DType, what: &str) -> Result<Tensor> {
        match self {
            Noise::None => Err(Error::argument(
                "generator",
                format!("{what} adds noise: pass a `generator` (seeded) or the `variance_noise` to add"),
            )),
            Noise::Given(noise) => {
                check_float("variance_noise", noise)?;
                check_shape("variance_noise", noise, shape)?;
                Ok(noise.to_device(device)?.to_dtype(dtype)?)
            }
            Noise::Generator(generator) => Ok(randn(generator, shape, device)?.to_dtype(dtype)?),
            Noise::PerImage(generators) => Ok(randn_per_image(generators, shape, device)?.to_dtype(dtype)?),
        }
    }

    /// The same source, reborrowed for a nested call.
    pub fn reborrow(&mut self) -> Noise<'_> {
        match self {
            Noise::None => Noise::None,
            Noise::Given(t) => Noise::Given(t),
            Noise::Generator(g) => Noise::Generator(g),
            Noise::PerImage(gs) => Noise::PerImage(gs),
        }
    }
}

/// `randn_tensor(shape, generator)`: one float32 draw of `shape`, created on the CPU (as diffusers
/// draws CPU-generator noise) and moved to `device`. Too large a request is a `TooLarge` error,
/// checked before anything is allocated.
pub fn randn(generator: &mut Generator, shape: &[usize], device: &Device) -> Result<Tensor> {
    let what = || format!("the noise of shape {shape:?}");
    let bytes = shape.iter().fold(4u128, |n, &d| n.saturating_mul(d as u128));
    memory_budget::check(what, bytes)?;
    let noise =
        generator.randn_tensor(shape, &Device::Cpu).map_err(|_| memory_budget::too_large_now(&what(), bytes))?;
    Ok(noise.to_device(device)?)
}

/// `randn_tensor(shape, generator=[g₀, g₁, …])`: image `i` (a `[1, …]` slice) drawn from generator
/// `i`, concatenated on dim 0. There must be exactly one generator per batch item.
pub fn randn_per_image(generators: &mut [Generator], shape: &[usize], device: &Device) -> Result<Tensor> {
    let Some((&batch, rest)) = shape.split_first() else {
        return Err(Error::argument("generator", "a list of generators needs a batched shape [B, …]"));
    };
    if generators.len() != batch {
        return Err(Error::argument(
            "generator",
            format!("{} generators for a batch of {batch}: give one per image", generators.len()),
        ));
    }
    let mut item = Vec::with_capacity(shape.len());
    item.push(1);
    item.extend_from_slice(rest);
    let parts = generators.iter_mut().map(|g| randn(g, &item, device)).collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}
