//! The one place where Rust errors become Python exceptions, and the helper every entry point runs its
//! Rust work through: it releases the GIL, catches panics, and converts errors.
//!
//! The exception classes are defined in Python (`candle_unet2d/_errors.py`) because they subclass two
//! bases (`UNet2DError` and the builtin they resemble, e.g. `ValueError`); they are imported once and
//! cached here. Every crate [`Error`] variant maps to exactly one class:
//!
//! | crate error                                       | Python exception                                        |
//! |---------------------------------------------------|---------------------------------------------------------|
//! | `InvalidConfig`, `ConfigParse`                    | `ConfigError(UNet2DError, ValueError)`                  |
//! | `InvalidArgument`                                 | `InvalidArgumentError(UNet2DError, ValueError)`         |
//! | `NotFound`, `Io` of a missing file                | `ModelNotFoundError(UNet2DError, FileNotFoundError)`    |
//! | `Hub`: repo, revision or file not found, offline  | `ModelNotFoundError(UNet2DError, FileNotFoundError)`    |
//! | `Hub`: unreachable, not a Hub, HTTP, transfer     | `DownloadError(UNet2DError, OSError)`                   |
//! | `Weights`, `MissingTensor`, `ShapeMismatch`       | `WeightsError(UNet2DError, ValueError)`                 |
//! | `Unsupported`                                     | `UnsupportedError(UNet2DError, RuntimeError)`           |
//! | `TooLarge`                                        | `TooLargeError(UNet2DError, MemoryError)`               |
//! | `Io` (other)                                      | `ReadError(UNet2DError, OSError)`                       |
//! | `Candle`, a Rust panic                            | `InternalError(UNet2DError, RuntimeError)`              |

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyException, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::error::{Error, Result};
use crate::hub::HubError;

/// The Python module defining the exception classes.
const ERRORS_MODULE: &str = "candle_unet2d._errors";

/// The exception classes of `candle_unet2d._errors`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ErrorKind {
    Config,
    InvalidArgument,
    ModelNotFound,
    Weights,
    Unsupported,
    TooLarge,
    Read,
    Download,
    Internal,
}

impl ErrorKind {
    fn class_name(self) -> &'static str {
        match self {
            ErrorKind::Config => "ConfigError",
            ErrorKind::InvalidArgument => "InvalidArgumentError",
            ErrorKind::ModelNotFound => "ModelNotFoundError",
            ErrorKind::Weights => "WeightsError",
            ErrorKind::Unsupported => "UnsupportedError",
            ErrorKind::TooLarge => "TooLargeError",
            ErrorKind::Read => "ReadError",
            ErrorKind::Download => "DownloadError",
            ErrorKind::Internal => "InternalError",
        }
    }

    fn cell(self) -> &'static PyOnceLock<Py<PyType>> {
        static CONFIG: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static INVALID_ARGUMENT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static MODEL_NOT_FOUND: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static WEIGHTS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static UNSUPPORTED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static TOO_LARGE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static READ: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static DOWNLOAD: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static INTERNAL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        match self {
            ErrorKind::Config => &CONFIG,
            ErrorKind::InvalidArgument => &INVALID_ARGUMENT,
            ErrorKind::ModelNotFound => &MODEL_NOT_FOUND,
            ErrorKind::Weights => &WEIGHTS,
            ErrorKind::Unsupported => &UNSUPPORTED,
            ErrorKind::TooLarge => &TOO_LARGE,
            ErrorKind::Read => &READ,
            ErrorKind::Download => &DOWNLOAD,
            ErrorKind::Internal => &INTERNAL,
        }
    }

    /// A new exception of this class with `message`.
    pub(crate) fn err(self, py: Python<'_>, message: impl Into<String>) -> PyErr {
        let message = message.into();
        match self.cell().import(py, ERRORS_MODULE, self.class_name()) {
            Ok(class) => PyErr::from_type(class.clone(), message),
            // Only if the package is broken: still raise, and say why the proper class is missing.
            Err(e) => PyRuntimeError::new_err(format!("{message} (and {ERRORS_MODULE} could not be imported: {e})")),
        }
    }
}

/// The exception class for a crate error.
fn kind_of(err: &Error) -> ErrorKind {
    match err {
        Error::InvalidConfig { .. } | Error::ConfigParse { .. } => ErrorKind::Config,
        Error::InvalidArgument { .. } => ErrorKind::InvalidArgument,
        Error::NotFound { .. } => ErrorKind::ModelNotFound,
        Error::Weights { .. } | Error::MissingTensor { .. } | Error::ShapeMismatch { .. } => ErrorKind::Weights,
        Error::Unsupported(_) => ErrorKind::Unsupported,
        Error::TooLarge { .. } => ErrorKind::TooLarge,
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => ErrorKind::ModelNotFound,
        Error::Io { .. } => ErrorKind::Read,
        Error::Hub(hub) => match hub {
            HubError::RepoNotFound { .. }
            | HubError::GatedRepo { .. }
            | HubError::RevisionNotFound { .. }
            | HubError::EntryNotFound { .. }
            | HubError::NotCached { .. } => ErrorKind::ModelNotFound,
            HubError::Unreachable { .. }
            | HubError::NotAHub { .. }
            | HubError::Http { .. }
            | HubError::Transfer { .. }
            | HubError::Corrupt { .. } => ErrorKind::Download,
        },
        // The bindings stop a run by raising the callback's own exception (or KeyboardInterrupt), so
        // a cancellation reaching Python unreplaced is a bug of theirs.
        Error::Candle(_) | Error::Cancelled { .. } => ErrorKind::Internal,
    }
}

/// Converts a crate error into its Python exception; the message is the error's `Display` (for a
/// candle error, without the Rust backtrace candle attaches when `RUST_BACKTRACE` is set).
pub(crate) fn to_py_err(py: Python<'_>, err: Error) -> PyErr {
    kind_of(&err).err(py, err.to_string())
}

/// An `InvalidArgumentError` about argument `name`, worded as the crate's own argument errors.
pub(crate) fn argument_error(py: Python<'_>, name: &str, reason: impl Into<String>) -> PyErr {
    to_py_err(py, Error::argument(name, reason))
}

/// [`argument_error`] caused by a Python exception raised while reading the argument (kept as `__cause__`).
/// A `BaseException` that is not an `Exception` (`KeyboardInterrupt`, `SystemExit`, `GeneratorExit`) is
/// returned as it is: a Ctrl-C while an argument is converted must stay a Ctrl-C, not become a
/// `ValueError` that `except ValueError` would swallow.
pub(crate) fn argument_error_from(py: Python<'_>, name: &str, reason: impl Into<String>, cause: PyErr) -> PyErr {
    if !is_exception(py, &cause) {
        return cause;
    }
    let err = argument_error(py, name, format!("{}: {cause}", reason.into()));
    err.set_cause(py, Some(cause));
    err
}

/// Whether `err` is an `Exception` (as opposed to `KeyboardInterrupt`, `SystemExit` and the other
/// `BaseException`s that only stop a program).
pub(crate) fn is_exception(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyException>(py)
}

/// `err` replaced by `replacement()` unless it is a `BaseException` that must propagate untouched
/// (see [`argument_error_from`]): for conversions that discard the Python error for a clearer message.
pub(crate) fn or_interrupt(py: Python<'_>, err: PyErr, replacement: impl FnOnce() -> PyErr) -> PyErr {
    if is_exception(py, &err) {
        replacement()
    } else {
        err
    }
}

/// Runs an entry point's whole body — argument conversion included, which runs Rust code (rust-numpy,
/// allocation) that could panic — under `catch_unwind`: a panic becomes `InternalError`, never
/// pyo3's `PanicException` (a `BaseException` that `except UNet2DError` would not catch).
pub(crate) fn guarded<T>(py: Python<'_>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(internal_panic(py, &payload)),
    }
}

/// The `InternalError` for a caught panic.
fn internal_panic(py: Python<'_>, payload: &Box<dyn Any + Send>) -> PyErr {
    ErrorKind::Internal
        .err(py, format!("internal error (a bug in candle-unet2d; please report it): {}", panic_message(payload)))
}

/// Runs `f` — pure Rust work: loading, computing — with the GIL released, so other Python threads run
/// meanwhile. Errors become their Python exception; a panic becomes `InternalError` carrying the panic
/// message, so no Rust panic ever reaches Python. Every entry point of the bindings goes through here.
pub(crate) fn run_detached<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce() -> Result<T> + Send,
    T: Send,
{
    match py.detach(move || catch_unwind(AssertUnwindSafe(f))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(to_py_err(py, err)),
        Err(payload) => Err(internal_panic(py, &payload)),
    }
}

/// The message a panic was raised with.
fn panic_message(payload: &Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}
