//! The `unet2d` command inside the extension module, for the package's console script
//! (`candle_unet2d._cli:main`): a pip install gets the same program as `cargo install`, compiled
//! from the same files (`src/bin/unet2d/`), without a Rust toolchain and without a second binary
//! in the wheel.

use std::ffi::OsString;

use pyo3::prelude::*;

#[path = "../bin/unet2d/app.rs"]
mod app;

/// Runs `unet2d` with `args` (the program name first) and returns its exit code. The GIL is released
/// for the whole run: the command uses no Python object, and other Python threads may go on.
#[pyfunction]
pub(crate) fn run_cli(py: Python<'_>, args: Vec<OsString>) -> u8 {
    py.detach(move || app::main(args))
}
