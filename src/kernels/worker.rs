//! Running a whole forward on a rayon worker thread, with the calling thread's kernel settings, and
//! the pool's other workers kept awake for its duration.
//!
//! **Why on a worker.** A forward is a few hundred parallel kernel calls with short sequential stretches
//! between them. Called from a thread outside the pool, each call is injected into the pool and the
//! caller sleeps on a latch until it is done, so every call pays two cross-thread wake-ups (the
//! worker's and the caller's), and with 2 threads the caller's core sits idle during the call. Run from
//! a worker, the calls split by work stealing (`join`) and the thread that started them takes part:
//! cifar10-32 at batch 1 went from 47 to 43.5 ms per forward (2-core Xeon VM, AVX-512, back to back).
//!
//! **Why keep the others awake.** Between two calls an idle rayon worker spins for a few microseconds,
//! then sleeps on a futex; the next call wakes it again. On a virtual machine a sleeping vCPU halts,
//! and waking it is a trip through the hypervisor that costs more the longer the machine was idle: a
//! cifar10-32 batch-1 forward took 38.5 ms back to back and 58–60 ms after 250 ms of idle (2-core
//! Xeon VM). ONNX Runtime's and OpenMP's pools spin between ops for the same reason. So for the length
//! of a forward every other worker runs a *keeper*: a loop that takes the pool's pending jobs
//! ([`rayon::yield_now`]) and otherwise spins, until the forward is done. Measured on that VM: 36 ms
//! back to back, 40–46 ms after the idle gap. The cost is the spinning cores' time while a forward runs,
//! which it would mostly use anyway.
//!
//! **Why it cannot deadlock.** A thread that waits inside a forward (for a job another thread stole)
//! runs other pending jobs meanwhile, and one of them may be a keeper, of this forward or another
//! running concurrently. A keeper only returns when its forward is done, so one started above a
//! suspended forward would hold that forward's thread until another forward ends, and two such could
//! wait on each other. A keeper therefore returns at once on a thread that has a forward in progress
//! ([`IN_FORWARD`]); it keeps only threads with nothing of their own to resume. The forward marks
//! itself done when it returns or panics (a drop guard), so its keepers always stop.
//!
//! The kernels read two per-thread settings, which the worker must see too: the forced instruction-set
//! level ([`Isa::run_at`]) and the batch-invariant scope ([`batch_invariant`]).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use super::batch_invariance::{batch_invariant, is_active};
use super::isa::Isa;

thread_local! {
    /// Forwards in progress on this thread's stack (more than one when a worker waiting inside one
    /// picked up another caller's).
    static IN_FORWARD: Cell<usize> = const { Cell::new(0) };
}

/// Runs `f` on a worker of the current rayon pool (the calling thread itself when it already is one),
/// under this thread's forced level and batch-invariant scope, with the pool's other workers kept
/// awake until it returns.
pub(crate) fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let (forced, invariant) = (Isa::forced(), is_active());
    let done = AtomicBool::new(false);
    let done = &done;
    rayon::scope(move |scope| {
        for _ in 1..rayon::current_num_threads() {
            scope.spawn(move |_| keep_awake(done));
        }
        let _forward = ForwardGuard::enter(done);
        let run = move || if invariant { batch_invariant(f) } else { f() };
        match forced {
            // `run_at` accepted it on the calling thread, so the CPU has it.
            Some(isa) => isa.force(run),
            None => run(),
        }
    })
}

/// A keeper: runs the pool's pending jobs, or spins, until `done` (see the module doc).
fn keep_awake(done: &AtomicBool) {
    if IN_FORWARD.get() > 0 {
        return;
    }
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            // The OS's yield rather than a pause: it keeps the core awake all the same, and where
            // the pool has more threads than cores it hands the core to a thread with work.
            std::thread::yield_now();
        }
    }
}

/// Marks this thread as running a forward, and the forward done when dropped (on return or panic).
struct ForwardGuard<'a> {
    done: &'a AtomicBool,
}

impl<'a> ForwardGuard<'a> {
    fn enter(done: &'a AtomicBool) -> Self {
        IN_FORWARD.set(IN_FORWARD.get() + 1);
        Self { done }
    }
}

impl Drop for ForwardGuard<'_> {
    fn drop(&mut self) {
        IN_FORWARD.set(IN_FORWARD.get() - 1);
        self.done.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::choice_batch;
    use rayon::prelude::*;

    #[test]
    fn the_worker_sees_the_callers_level_and_scope() {
        let outside = std::thread::current().id();
        let seen = on_worker(|| (std::thread::current().id(), Isa::active(), choice_batch(8)));
        assert_ne!(seen.0, outside, "ran on the calling thread, not a worker");
        assert_eq!((seen.1, seen.2), (Isa::active(), 8));
        for isa in Isa::ALL.into_iter().filter(|isa| isa.is_supported()) {
            let (level, batch) =
                isa.run_at(|| batch_invariant(|| on_worker(|| (Isa::active(), choice_batch(8))))).unwrap();
            assert_eq!((level, batch), (isa, 1), "{isa}");
        }
        // Already on a worker: runs in place.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        pool.install(|| {
            let here = std::thread::current().id();
            assert_eq!(on_worker(|| std::thread::current().id()), here);
        });
    }

    /// A forward's shape: many short parallel calls with sequential work between them.
    fn forward_like(seed: u64) -> u64 {
        (0..40u64)
            .map(|call| {
                let parallel: u64 = (0..64u64).into_par_iter().map(|i| (i * 31 + call + seed) % 97).sum();
                parallel + (0..200u64).fold(seed, |a, i| a.wrapping_mul(6364136223846793005).wrapping_add(i)) % 7
            })
            .sum()
    }

    #[test]
    fn concurrent_forwards_with_their_keepers_all_finish() {
        // Several callers at once on the global pool: threads waiting inside one forward pick up other
        // forwards' keepers and jobs, which must neither deadlock nor change a result. A watchdog turns
        // a deadlock into a failure instead of a hung test run.
        let expected: Vec<u64> = (0..6).map(forward_like).collect();
        let (sender, receiver) = std::sync::mpsc::channel();
        for caller in 0..6u64 {
            let sender = sender.clone();
            std::thread::spawn(move || {
                let results: Vec<u64> = (0..100).map(|_| on_worker(|| forward_like(caller))).collect();
                sender.send((caller, results)).unwrap();
            });
        }
        drop(sender);
        for _ in 0..6 {
            let (caller, results) = receiver
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("concurrent forwards did not finish within 60 s (deadlock?)");
            assert!(results.iter().all(|&r| r == expected[caller as usize]), "caller {caller}");
        }
    }

    #[test]
    fn a_panicking_forward_stops_its_keepers_and_propagates() {
        let caught = std::panic::catch_unwind(|| on_worker(|| panic!("forward failed")));
        assert!(caught.is_err());
        // The pool is still usable: no keeper was left spinning on the panicked forward.
        assert_eq!(on_worker(|| forward_like(3)), forward_like(3));
    }
}
