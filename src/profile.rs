//! A per-op wall-clock profile of UNet forwards: where the time goes (convolution, group norm,
//! attention, resampling, skip concatenation, residual adds, …), for the next person optimising.
//!
//! Off by default, and then each instrumented op costs one relaxed atomic load. Switch it on with
//! [`set_enabled`] (or `time_forward --profile`), run forwards, then read [`take`]. CPU ops run
//! synchronously on the calling thread (rayon splits them inside), so wall time per op is meaningful
//! there; on CUDA, kernels are queued asynchronously and the figures only show launch overhead.
//!
//! Scopes nest: an op's time excludes the ops timed inside it (the convolution inside an upsampler
//! counts as `conv2d`, the upsampling itself as `upsample`).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<Vec<OpTime>> = Mutex::new(Vec::new());

thread_local! {
    /// Time spent in child scopes, one entry per open scope on this thread.
    static CHILD_TIME: RefCell<Vec<Duration>> = const { RefCell::new(Vec::new()) };
}

/// Accumulated self time of one kind of op.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    pub op: &'static str,
    pub total: Duration,
    pub calls: u64,
}

/// Starts or stops collecting (the totals are kept until [`take`]).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The totals collected so far, largest first, and resets them.
pub fn take() -> Vec<OpTime> {
    let mut totals = std::mem::take(&mut *TOTALS.lock().unwrap_or_else(|e| e.into_inner()));
    totals.sort_by_key(|t| std::cmp::Reverse(t.total));
    totals
}

/// Times `f` as op `op` when profiling is on.
#[inline]
pub(crate) fn time<T>(op: &'static str, f: impl FnOnce() -> T) -> T {
    if !is_enabled() {
        return f();
    }
    CHILD_TIME.with(|c| c.borrow_mut().push(Duration::ZERO));
    let start = Instant::now();
    let out = f();
    let elapsed = start.elapsed();
    let children = CHILD_TIME.with(|c| {
        let mut stack = c.borrow_mut();
        let children = stack.pop().unwrap_or_default();
        if let Some(parent) = stack.last_mut() {
            *parent += elapsed;
        }
        children
    });
    record(op, elapsed.saturating_sub(children));
    out
}

fn record(op: &'static str, took: Duration) {
    let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    match totals.iter_mut().find(|t| t.op == op) {
        Some(t) => {
            t.total += took;
            t.calls += 1;
        }
        None => totals.push(OpTime { op, total: took, calls: 1 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_scopes_count_self_time() {
        set_enabled(true);
        take();
        let start = Instant::now();
        time("outer", || {
            std::thread::sleep(Duration::from_millis(20));
            time("inner", || std::thread::sleep(Duration::from_millis(30)));
        });
        let total = start.elapsed();
        set_enabled(false);
        let totals = take();
        let get = |op| totals.iter().find(|t| t.op == op).unwrap().total;
        // Each scope keeps its own time: outer's self time plus inner's is outer's whole duration.
        assert!(get("inner") >= Duration::from_millis(30));
        assert!(get("outer") >= Duration::from_millis(20));
        assert!(get("outer") + get("inner") <= total);
        time("ignored", || ());
        assert!(take().iter().all(|t| t.op != "ignored"));
    }
}
