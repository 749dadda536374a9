//! The loading arguments `UNet2DModel.from_pretrained` and `UNet2DPipeline.from_pretrained` share:
//! the folder path, `device`, and `dtype`/`torch_dtype`.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyString;

use super::arrays::is_torch;
use super::errors::{argument_error, argument_error_from};
use super::model::dtype_string;
use super::rng::type_name;

/// The `path` argument: a str or `os.PathLike`.
pub(crate) fn path_arg(py: Python<'_>, path: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    path.extract().map_err(|e| {
        argument_error_from(py, "path", format!("must be a str or os.PathLike, got {}", type_name(path)), e)
    })
}

/// The `device` argument as a name: a str or a torch device; `"cpu"` when absent or None.
pub(crate) fn device_arg(py: Python<'_>, device: Option<&Bound<'_, PyAny>>) -> PyResult<String> {
    match device.filter(|d| !d.is_none()) {
        None => Ok("cpu".to_string()),
        Some(d) if d.is_instance_of::<PyString>() || is_torch(d) => Ok(d.str()?.to_string()),
        Some(d) => Err(argument_error(
            py,
            "device",
            format!("must be a str such as \"cpu\" or \"cuda:0\", got {}", type_name(d)),
        )),
    }
}

/// The dtype from `dtype` or its alias `torch_dtype` (not both) as a name; `"float32"` when neither
/// is given (or both are None).
pub(crate) fn dtype_arg(
    py: Python<'_>,
    dtype: Option<&Bound<'_, PyAny>>,
    torch_dtype: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    match (dtype.filter(|d| !d.is_none()), torch_dtype.filter(|d| !d.is_none())) {
        (Some(_), Some(_)) => {
            Err(argument_error(py, "dtype", "give dtype or torch_dtype, not both (they are the same option)"))
        }
        (Some(d), None) => dtype_string(d, "dtype"),
        (None, Some(d)) => dtype_string(d, "torch_dtype"),
        (None, None) => Ok("float32".to_string()),
    }
}
