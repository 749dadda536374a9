//! The crate's error type: one variant per kind of failure, each message naming what is wrong and where.

use std::path::PathBuf;

/// Everything that can go wrong when loading or running a model, a scheduler or a pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is missing, of the wrong type, or out of range.
    #[error("invalid config: `{field}`: {reason}")]
    InvalidConfig { field: String, reason: String },

    /// A file could not be parsed as JSON.
    #[error("cannot parse {path}: {reason}")]
    ConfigParse { path: PathBuf, reason: String },

    /// An argument passed to a call (input tensor, timestep, class labels, option) is not acceptable.
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument { name: String, reason: String },

    /// A path (model folder, weights file, config) does not exist.
    #[error("not found: {what}")]
    NotFound { what: String },

    /// A weights file is malformed, or holds a tensor that does not fit the model.
    #[error("bad weights in {path}: {reason}")]
    Weights { path: PathBuf, reason: String },

    /// A tensor the model needs is missing from the weights.
    #[error("missing tensor `{name}` (expected shape {expected:?}) in {path}")]
    MissingTensor { name: String, expected: Vec<usize>, path: PathBuf },

    /// A tensor in the weights has a different shape than the model needs.
    #[error("tensor `{name}` in {path} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch { name: String, expected: Vec<usize>, found: Vec<usize>, path: PathBuf },

    /// The requested device or dtype cannot be used by this build.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// An I/O error, with the path it happened on.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// A valid request that needs more memory than the limit allows (see [`crate::memory_budget`]):
    /// refused before allocating, since a failed allocation aborts the process.
    #[error(
        "too large: {what} would need {} of memory, more than the limit of {} ({limit_source})",
        crate::memory_budget::format_bytes(*needed),
        crate::memory_budget::format_bytes(u128::from(*limit))
    )]
    TooLarge { what: String, needed: u128, limit: u64, limit_source: String },

    /// A sampling run stopped by its step callback (a service's cancellation, Ctrl-C) after `step`
    /// of its `total` steps.
    #[error("cancelled after step {step} of {total}")]
    Cancelled { step: usize, total: usize },

    /// A Hub download failed: the repository, revision or file does not exist (or is private), the
    /// cache lacks it while offline, the server is not a Hub, or the transfer failed.
    #[error("{0}")]
    Hub(#[from] crate::hub::HubError),

    /// An error raised by candle while computing. The message leaves out the Rust backtrace candle
    /// attaches when `RUST_BACKTRACE` is set (it belongs in a bug report, not in an error line).
    #[error("{}", candle_message(.0))]
    Candle(#[from] candle_core::Error),
}

/// A candle error's message without the backtraces candle attaches when `RUST_BACKTRACE` is set.
pub fn candle_message(err: &candle_core::Error) -> String {
    match err {
        candle_core::Error::WithBacktrace { inner, .. } => candle_message(inner),
        candle_core::Error::Context { inner, context } => format!("{context}: {}", candle_message(inner)),
        candle_core::Error::WithPath { inner, path } => format!("{}: {}", path.display(), candle_message(inner)),
        other => other.to_string(),
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidConfig`].
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig { field: field.into(), reason: reason.into() }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn argument(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { name: name.into(), reason: reason.into() }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
