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

// The API: what a program builds on (semver applies).
pub mod config;
pub mod device;
pub mod error;
pub mod hub;
pub mod loading;
pub mod pipeline;
pub mod rng;
pub mod saving;
pub mod schedulers;
pub mod service;
pub mod stats;

// Internals that the benchmarks, examples and tests reach into; not part of the API (no semver).
#[doc(hidden)]
pub mod kernels;
#[doc(hidden)]
pub mod memory_budget;
#[doc(hidden)]
pub mod profile;

// The model's parts, behind `UNet2DModel`.
mod attention;
mod blocks;
mod embeddings;
mod files;
mod fir;
mod forward_memory;
mod layers;
mod memory;
#[cfg(feature = "python")]
mod python;
mod random_init;
mod resnet;
mod reusing_allocator;
mod unet;

/// The candle version this crate is built on, for building tensors without a version mismatch.
pub use candle_core;
pub use config::UNet2DConfig;
pub use error::{Error, Result};
pub use kernels::batch_invariant;
pub use kernels::isa::{Isa, ISA_ENV};
pub use loading::{LoadOptions, LoadReport};
pub use memory_budget::MEMORY_LIMIT_ENV;
pub use random_init::InitOptions;
pub use reusing_allocator::{ReusingAllocator, LARGE_BLOCK};
pub use saving::{IncompatibleKeys, SaveOptions};
pub use unet::{Timestep, UNet2DModel};
