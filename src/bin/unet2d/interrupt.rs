//! Ctrl-C: the first SIGINT only sets a flag, which the sampling loop's step callback reads, so a run
//! stops after its current step and the command exits with 130 (128 + SIGINT, what shells expect)
//! having written nothing. The handler is installed with `SA_RESETHAND`: a second Ctrl-C gets the
//! default action and kills the process at once (a step of a large model can take long). Outputs
//! are only ever written whole (temporary file + rename, `files.rs`), so even that leaves no
//! truncated image.
//!
//! `libc` rather than a crate such as `ctrlc`: the crate already depends on it, and a handler that
//! stores to an atomic is all that is needed (async-signal-safe, no thread).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the SIGINT handler.
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Exit code of a run stopped by Ctrl-C.
pub const EXIT_CODE: u8 = 130;

/// Installs the SIGINT handler (a no-op where there is no SIGINT: Ctrl-C then kills as usual).
pub fn install() {
    #[cfg(unix)]
    unix::install();
}

/// Whether Ctrl-C was pressed since [`install`].
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// A run stopped by Ctrl-C; `main` prints it as the one `error:` line and exits with [`EXIT_CODE`].
#[derive(Debug)]
pub struct Interrupted {
    /// The step the run had finished and the steps it had, or `None` before sampling started.
    pub after: Option<(usize, usize)>,
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.after {
            Some((step, total)) => write!(f, "interrupted after step {step} of {total}; nothing written"),
            None => write!(f, "interrupted before sampling; nothing written"),
        }
    }
}

impl std::error::Error for Interrupted {}

/// A sampling run's result for the command: [`Interrupted`] when the loop stopped because of
/// Ctrl-C, else the result, its error with `context`.
pub fn check<T>(result: candle_unet2d::Result<T>, context: impl FnOnce() -> String) -> anyhow::Result<T> {
    match result {
        Ok(value) => Ok(value),
        Err(candle_unet2d::Error::Cancelled { step, total }) if requested() => {
            Err(Interrupted { after: Some((step, total)) }.into())
        }
        Err(other) => Err(anyhow::Error::new(other).context(context())),
    }
}

/// Fails with [`Interrupted`] if Ctrl-C came before sampling started (while loading the model).
pub fn bail_if_requested() -> anyhow::Result<()> {
    if requested() {
        return Err(Interrupted { after: None }.into());
    }
    Ok(())
}

#[cfg(unix)]
mod unix {
    use super::REQUESTED;
    use std::sync::atomic::Ordering;

    extern "C" fn on_sigint(_signal: libc::c_int) {
        // Only an atomic store: anything more is not async-signal-safe.
        REQUESTED.store(true, Ordering::SeqCst);
    }

    pub fn install() {
        // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the handler only stores to an
        // atomic; sigaction with a null old-action pointer is sound.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
            // SA_RESETHAND: the second Ctrl-C kills. SA_RESTART: no EINTR in reads and writes.
            action.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            // A failure leaves Ctrl-C's default action (it kills): nothing worse than without us.
            let _ = libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
        }
    }
}
