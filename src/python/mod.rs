//! Python bindings (`candle_unet2d._core`), built with `--features python` by maturin.
//!
//! Bindings only: argument conversion ([`arrays`], the loading arguments in [`args`], the Hub keywords in
//! [`hub_args`]), the exception mapping and the GIL-releasing call
//! helper ([`errors`]), and the `UNet2DModel` class ([`model`]). The package `candle_unet2d` re-exports
//! these with the pure-Python pieces (exception classes, `UNet2DOutput`, `FrozenDict`).
//!
//! Also: `Generator`, `randn`, `manual_seed` and `default_generator` ([`rng`]); `SchedulerMixin`, the
//! base of every scheduler class, and the registry the package builds the classes from ([`schedulers`]);
//! `UNet2DPipeline` ([`pipeline`]); and the `unet2d` command for the console script ([`cli`], with the
//! `cli` feature), with their pure-Python helpers (`SchedulerOutput`,
//! `ImagePipelineOutput`, the progress bar and PIL conversion in `candle_unet2d/_pipeline.py`).

mod args;
mod arrays;
#[cfg(feature = "cli")]
mod cli;
mod config_values;
mod errors;
mod hub_args;
mod model;
mod pipeline;
mod rng;
mod sampling;
mod schedulers;

use pyo3::prelude::*;

/// The extension's Rust allocations (activations, weights) go through the block-reusing allocator
/// (see `ReusingAllocator`); Python's and numpy's own are untouched.
#[global_allocator]
static ALLOCATOR: crate::ReusingAllocator = crate::ReusingAllocator::new();

/// The compiled part of `candle_unet2d`.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("WITH_CUDA", cfg!(feature = "cuda"))?;
    m.add_class::<model::PyUNet2DModel>()?;
    m.add_class::<rng::PyGenerator>()?;
    m.add("default_generator", rng::default_generator(m.py())?.clone_ref(m.py()))?;
    m.add_function(wrap_pyfunction!(rng::manual_seed, m)?)?;
    m.add_function(wrap_pyfunction!(rng::randn, m)?)?;
    m.add_class::<schedulers::PySchedulerMixin>()?;
    m.add_function(wrap_pyfunction!(schedulers::scheduler_classes, m)?)?;
    m.add_class::<pipeline::PyDiffusionPipeline>()?;
    m.add_function(wrap_pyfunction!(cpu_isa, m)?)?;
    #[cfg(feature = "cli")]
    m.add_function(wrap_pyfunction!(cli::run_cli, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    Ok(())
}

/// The instruction-set level the CPU kernels use: `"avx512"`, `"avx2"` or `"scalar"` (the CPU's best,
/// or lower when `CANDLE_UNET2D_ISA` says so).
#[pyfunction]
fn cpu_isa() -> &'static str {
    crate::kernels::isa::Isa::active().name()
}

/// Panics inside the bindings' call helper, to test that a Rust panic reaches Python as
/// `InternalError` (and nothing else). Not part of the API.
#[pyfunction]
fn _panic_for_tests(py: Python<'_>, message: String) -> PyResult<()> {
    errors::run_detached(py, move || -> crate::Result<()> { panic!("{message}") })
}
