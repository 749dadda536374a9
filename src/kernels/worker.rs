//! Running a whole forward on a rayon worker thread, with the calling thread's kernel settings.
//!
//! **Why.** A forward is a few hundred parallel kernel calls with short sequential stretches between
//! them. Called from a thread outside the pool, each call is injected into the pool and the caller
//! sleeps on a latch until it is done, so every call pays two cross-thread wake-ups (the worker's and
//! the caller's), and with 2 threads the caller's core sits idle during the call. Run from a worker,
//! the calls split by work stealing (`join`) and the thread that started them takes part: cifar10-32 at
//! batch 1 went from 47 to 43.5 ms per forward (2-core Xeon VM, AVX-512, back-to-back forwards).
//!
//! The kernels read two per-thread settings, which the worker must see too: the forced instruction-set
//! level ([`Isa::run_at`]) and the batch-invariant scope ([`batch_invariant`]).

use super::batch_invariance::{batch_invariant, is_active};
use super::isa::Isa;

/// Runs `f` on a worker of the current rayon pool (the calling thread itself when it already is one),
/// under this thread's forced level and batch-invariant scope.
pub(crate) fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let (forced, invariant) = (Isa::forced(), is_active());
    rayon::scope(move |_| {
        let run = move || if invariant { batch_invariant(f) } else { f() };
        match forced {
            // `run_at` accepted it on the calling thread, so the CPU has it.
            Some(isa) => isa.force(run),
            None => run(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::choice_batch;

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
}
