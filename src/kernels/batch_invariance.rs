//! Batch-invariant kernel choices: inside [`batch_invariant`], every kernel computes each image exactly
//! as it would in a batch of one, so an image's result does not depend on what it is batched with.
//!
//! Outside it the convolution picks its algorithm from the whole call's tile count (the direct
//! kernel below one vector of tiles, F(4×4) Winograd from the level's `F4_MIN_TILES`), which is what is fastest,
//! but F(2×2), F(4×4) and the direct kernel round differently: at AVX-512 on a Xeon a 16×16 map runs F(2×2) at
//! batch 1 and F(4×4) at batch 8, and the same image comes out a few ulps apart. Sampling with one generator per
//! image (`pipeline::sample_per_image`), the HTTP service's dynamic batching and the Ray workers promise
//! that image `i` equals the batch-of-one run, bit for bit; they run inside this scope. The other
//! kernels (linear, group norm, attention, the 1×1 and strided convolutions) do not depend on the
//! batch at all, and the thread count never changes a result.

use std::cell::Cell;

thread_local! {
    /// Whether the current thread is inside [`batch_invariant`]. Per thread because the kernels choose
    /// on the thread that calls them (candle runs custom ops on the caller's thread).
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with batch-invariant kernel choices on this thread (nesting is fine; the previous setting
/// comes back afterwards, also when `f` panics).
pub fn batch_invariant<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ACTIVE.with(|a| a.set(self.0));
        }
    }
    let _restore = Restore(ACTIVE.with(|a| a.replace(true)));
    f()
}

/// Whether this thread is inside [`batch_invariant`].
pub(crate) fn is_active() -> bool {
    ACTIVE.with(Cell::get)
}

/// The batch size a kernel should choose its algorithm for: 1 inside [`batch_invariant`].
pub(crate) fn choice_batch(batch: usize) -> usize {
    if is_active() {
        1
    } else {
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_and_restored() {
        assert_eq!(choice_batch(8), 8);
        batch_invariant(|| {
            assert_eq!(choice_batch(8), 1);
            batch_invariant(|| assert_eq!(choice_batch(4), 1));
            assert_eq!(choice_batch(8), 1);
        });
        assert_eq!(choice_batch(8), 8);
        let caught = std::panic::catch_unwind(|| batch_invariant(|| panic!("inside")));
        assert!(caught.is_err());
        assert_eq!(choice_batch(8), 8);
    }
}
