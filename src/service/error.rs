//! Why a request was refused or did not finish. Each error has a stable [`ServiceError::code`] (what
//! a client matches on) and a message that says what to change; an HTTP layer maps
//! [`ServiceError::kind`] to a status.

use std::fmt;
use std::time::Duration;

/// What kind of failure an error is, for a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is wrong; resending it unchanged fails again (HTTP 400).
    InvalidRequest,
    /// The request asks for more than the service's limits allow (HTTP 413).
    TooLarge,
    /// The queue is full: retry later (HTTP 503 with `Retry-After`).
    Overloaded,
    /// The service is stopping and takes no more work (HTTP 503).
    ShuttingDown,
    /// The request's deadline passed before its images were done (HTTP 504).
    TimedOut,
    /// The request was withdrawn (its ticket dropped); nobody is waiting for the answer.
    Cancelled,
    /// Sampling failed: a bug or a resource problem, not the request's fault (HTTP 500).
    Internal,
}

/// A request's failure.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServiceError {
    /// A field of the request is invalid: `field` names it, `message` says what is accepted.
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A field asks for more than the limit.
    TooLarge {
        field: &'static str,
        message: String,
    },
    /// The queue holds `max_queue` requests already.
    QueueFull {
        max_queue: usize,
        retry_after: Duration,
    },
    ShuttingDown,
    TimedOut {
        after: Duration,
    },
    Cancelled,
    /// Sampling failed with this message.
    Failed(String),
}

impl ServiceError {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { field, message: message.into() }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid { .. } => ErrorKind::InvalidRequest,
            Self::TooLarge { .. } => ErrorKind::TooLarge,
            Self::QueueFull { .. } => ErrorKind::Overloaded,
            Self::ShuttingDown => ErrorKind::ShuttingDown,
            Self::TimedOut { .. } => ErrorKind::TimedOut,
            Self::Cancelled => ErrorKind::Cancelled,
            Self::Failed(_) => ErrorKind::Internal,
        }
    }

    /// A short machine-readable code: `invalid_<field>`, `too_many_images`, `queue_full`, ….
    pub fn code(&self) -> String {
        match self {
            Self::Invalid { field, .. } => format!("invalid_{field}"),
            Self::TooLarge { field, .. } => format!("too_large_{field}"),
            Self::QueueFull { .. } => "queue_full".into(),
            Self::ShuttingDown => "shutting_down".into(),
            Self::TimedOut { .. } => "timeout".into(),
            Self::Cancelled => "cancelled".into(),
            Self::Failed(_) => "sampling_failed".into(),
        }
    }

    /// How long a client should wait before retrying, for the errors where retrying helps.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::QueueFull { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid { field, message } | Self::TooLarge { field, message } => write!(f, "`{field}` {message}"),
            Self::QueueFull { max_queue, retry_after } => write!(
                f,
                "the queue is full ({max_queue} requests waiting); retry in {} s",
                retry_after.as_secs_f64().ceil()
            ),
            Self::ShuttingDown => write!(f, "the service is shutting down and takes no new requests"),
            Self::TimedOut { after } => {
                write!(f, "the request did not finish within its timeout of {:.1} s", after.as_secs_f64())
            }
            Self::Cancelled => write!(f, "the request was cancelled"),
            Self::Failed(message) => write!(f, "sampling failed: {message}"),
        }
    }
}

impl std::error::Error for ServiceError {}

/// A service result.
pub type ServiceResult<T> = std::result::Result<T, ServiceError>;
