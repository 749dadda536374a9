//! # candle-unet2d
//!
//! Hugging Face diffusers' `UNet2DModel` (the 2D UNet of DDPM, DDIM, NCSN++ and consistency models)
//! on [candle], loading exactly what diffusers saves and matching its numbers.
//!
//! ```no_run
//! use candle_unet2d::{candle_core, LoadOptions, UNet2DModel};
//! # fn main() -> candle_unet2d::Result<()> {
//! let model = UNet2DModel::from_pretrained("path/to/unet", &LoadOptions::default())?;
//! let sample = candle_core::Tensor::randn(0f32, 1.0, (1, 3, 32, 32), model.device())?;
//! let eps = model.forward(&sample, 999i64, None)?;
//! # Ok(()) }
//! ```

// Every `unsafe` block says why it is sound (the CPU kernels use SIMD intrinsics and shared buffers).
#![warn(clippy::undocumented_unsafe_blocks)]

// The CLI's files (`src/bin/unet2d/`) name the library `candle_unet2d::`, as a dependent crate does;
// this makes that path work when the Python extension compiles them in (`python::cli`).
#[cfg(all(feature = "python", feature = "cli"))]
extern crate self as candle_unet2d;

pub mod attention;
pub mod blocks;
pub mod config;
pub mod device;
pub mod embeddings;
pub mod error;
pub mod files;
pub mod fir;
pub mod forward_memory;
pub mod kernels;
pub mod layers;
pub mod loading;
mod memory;
pub mod memory_budget;
pub mod pipeline;
pub mod profile;
#[cfg(feature = "python")]
mod python;
pub mod random_init;
pub mod resnet;
pub mod rng;
pub mod saving;
pub mod schedulers;
pub mod service;
pub mod stats;
pub mod unet;

/// The candle version this crate is built on, for building tensors without a version mismatch.
pub use candle_core;
pub use config::UNet2DConfig;
pub use error::{Error, Result};
pub use loading::LoadOptions;
pub use saving::SaveOptions;
pub use unet::{Timestep, UNet2DModel};
