//! Python bindings (`candle_unet2d._core`), built with `--features python` by maturin.
//!
//! Bindings only: argument conversion ([`arrays`]), the exception mapping and the GIL-releasing call
//! helper ([`errors`]), and the `UNet2DModel` class ([`model`]). The package `candle_unet2d` re-exports
//! these with the pure-Python pieces (exception classes, `UNet2DOutput`, `FrozenDict`).

mod arrays;
mod errors;
mod model;

use pyo3::prelude::*;

/// The compiled part of `candle_unet2d`.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("WITH_CUDA", cfg!(feature = "cuda"))?;
    m.add_class::<model::PyUNet2DModel>()?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    Ok(())
}

/// Panics inside the bindings' call helper, to test that a Rust panic reaches Python as
/// `InternalError` (and nothing else). Not part of the API.
#[pyfunction]
fn _panic_for_tests(py: Python<'_>, message: String) -> PyResult<()> {
    errors::run_detached(py, move || -> crate::Result<()> { panic!("{message}") })
}
