//! A global allocator that keeps large freed blocks and hands them out again, so that a forward's
//! activations land in memory the process already has instead of pages the kernel must fault in and
//! zero on every forward.
//!
//! **Why.** A UNet forward allocates and frees a few hundred activations of the same sizes, forward
//! after forward. Freed to the C allocator, most of them go back to the kernel: glibc `munmap`s
//! blocks above its mapping threshold and trims or deletes the heaps of its per-thread arenas (the
//! rayon workers allocate from those) once they are free, whatever `mallopt` says
//! (`memory::reuse_large_allocations` raises the threshold, which is not enough). Every reuse is then
//! a page fault per 4 KiB, plus zeroing: measured on a 2-core Xeon VM, about 15 000 faults per
//! cifar10-32 forward at batch 8 and 196 000 (770 MB) per celebahq-256 forward at batch 1. ONNX
//! Runtime keeps an arena for the same reason, and jemalloc and mimalloc keep freed memory too.
//!
//! **What it keeps.** Blocks of at least [`LARGE_BLOCK`] bytes, their sizes rounded up to a quarter
//! of their power of two (so that activations of nearly equal sizes share blocks), handed out again
//! to requests of the same rounded size; smaller ones go straight to the system allocator. The bytes
//! in use plus the bytes kept stay under twice the most this allocator's large blocks ever had in use
//! at once (a request that finds no block of its size first frees the longest-kept ones until that
//! holds): with less room, the blocks a forward frees early were evicted before its later layers
//! asked for them again (about 60 of the 230 large requests of a cifar10-32 batch-8 forward missed
//! when the bound was the high-water mark itself). From the second forward of a shape on, every request finds
//! its block: cifar10-32 at batch 8 and celebahq-256 fault no page in, and celebahq-256 went from
//! 1.10–1.19 s to 0.91–0.93 s per forward with the same peak RSS (1.93 GB; `examples/time_forward`).
//! After a forward the process keeps that memory until [`ReusingAllocator::release`] or its end, as
//! with an arena; the memory limit (`memory_budget`) counts kept blocks as available.
//!
//! **Who installs it.** The Python extension and the `unet2d` binary do. A Rust program chooses its
//! own global allocator; to use this one:
//! ```
//! #[global_allocator]
//! static ALLOCATOR: candle_unet2d::ReusingAllocator = candle_unet2d::ReusingAllocator::new();
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Blocks from this many bytes on are kept for reuse (an activation of 128 channels of 32×32 at
/// batch 1 is 512 KiB; smaller blocks are the C allocator's business, and it reuses them well).
pub const LARGE_BLOCK: usize = 256 << 10;
/// Sizes are rounded up to whole pages, and large blocks page-aligned.
const PAGE: usize = 4096;
/// Blocks kept at most (a forward frees a few dozen distinct sizes); a block freed into a full list
/// replaces the longest-kept one.
const SLOTS: usize = 128;

/// The block a large request gets: its size rounded up to a quarter of its power of two (at most 25%
/// more, and a multiple of the page), so that activations of nearly equal sizes share blocks.
fn block_size(size: usize) -> Option<usize> {
    let step = 1usize << (usize::BITS - 1 - size.leading_zeros()).saturating_sub(2);
    size.checked_next_multiple_of(step.max(PAGE))
}

/// Bytes kept by every instance in this process: memory a call can use although the system does not
/// count it as available (`memory_budget` adds it to the limit).
static KEPT_IN_PROCESS: AtomicUsize = AtomicUsize::new(0);

/// Bytes of large blocks kept for reuse by every `ReusingAllocator` in this process.
pub(crate) fn kept_in_process() -> usize {
    KEPT_IN_PROCESS.load(Ordering::Relaxed)
}

/// See the module doc.
pub struct ReusingAllocator {
    /// Guarded by [`LOCK`].
    state: UnsafeCell<State>,
}

// SAFETY: `state` is only reached through `lock`, which holds the process-wide `LOCK`.
unsafe impl Sync for ReusingAllocator {}

/// The one lock of every instance's state. A spin lock of our own rather than a `Mutex` so that
/// `fork` can hold it: a child forked while another thread held it would otherwise find it locked
/// forever, and hang at its first large allocation. It is taken before a fork and released after it,
/// in the parent and the child (`pthread_atfork`, as glibc does for its own malloc's locks), so the
/// child inherits a consistent state and a free lock. Held for a few list operations at a time.
static LOCK: AtomicBool = AtomicBool::new(false);

fn acquire() {
    let mut spins = 0u32;
    while LOCK.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        spins = spins.saturating_add(1);
    }
}

fn release_lock() {
    LOCK.store(false, Ordering::Release);
}

#[cfg(unix)]
fn fork_safe() {
    extern "C" fn before_fork() {
        acquire();
    }
    extern "C" fn after_fork() {
        release_lock();
    }
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    // SAFETY: the handlers only take and release `LOCK`; registering allocates with the C allocator,
    // never this one, so it may run inside an allocation.
    REGISTERED.call_once(|| unsafe {
        libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork));
    });
}

#[cfg(not(unix))]
fn fork_safe() {}

/// An instance's state while [`LOCK`] is held.
struct Locked<'a> {
    state: &'a mut State,
}

impl Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        self.state
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.state
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        release_lock();
    }
}

/// The kept blocks (oldest first) and the byte counts that bound them.
struct State {
    blocks: [(usize, usize); SLOTS],
    kept: usize,
    kept_bytes: usize,
    live_bytes: usize,
    high_water: usize,
}

impl ReusingAllocator {
    pub const fn new() -> Self {
        let state = State { blocks: [(0, 0); SLOTS], kept: 0, kept_bytes: 0, live_bytes: 0, high_water: 0 };
        Self { state: UnsafeCell::new(state) }
    }

    /// Returns every kept block to the system allocator (for a program that has finished with its
    /// models, or goes idle for long).
    pub fn release(&self) {
        let mut state = self.lock();
        while state.kept > 0 {
            // SAFETY: a kept block was allocated by `System` with its page layout and is not in use.
            unsafe { state.free_oldest() };
        }
    }

    /// Bytes of large blocks kept for reuse, not in use.
    pub fn kept_bytes(&self) -> usize {
        self.lock().kept_bytes
    }

    fn lock(&self) -> Locked<'_> {
        fork_safe();
        acquire();
        // SAFETY: `LOCK` is held until the guard drops, so this is the only reference.
        Locked { state: unsafe { &mut *self.state.get() } }
    }

    /// The page layout of a large request, or `None` for one the system allocator serves directly.
    fn large(layout: Layout) -> Option<Layout> {
        if layout.size() < LARGE_BLOCK || layout.align() > PAGE {
            return None;
        }
        Layout::from_size_align(block_size(layout.size())?, PAGE).ok()
    }

    /// A large block of `layout`'s size: a kept one, or `None` after making room for a new one.
    fn take(&self, layout: Layout) -> Option<*mut u8> {
        let mut state = self.lock();
        let size = layout.size();
        // The most recently kept block of this size: its pages are the likeliest still in cache.
        let found = (0..state.kept).rev().find(|&i| state.blocks[i].1 == size);
        state.live_bytes += size;
        if let Some(i) = found {
            let (ptr, _) = state.blocks[i];
            state.remove(i);
            return Some(ptr as *mut u8);
        }
        while state.kept > 0 && state.live_bytes + state.kept_bytes > 2 * state.high_water {
            // SAFETY: as in `release`.
            unsafe { state.free_oldest() };
        }
        state.high_water = state.high_water.max(state.live_bytes);
        None
    }

    /// A large block for `layout` (`large` its page layout), zeroed when asked: a kept one, or a new
    /// one from the system allocator.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`; `large` is `Self::large(layout)`.
    unsafe fn alloc_large(&self, layout: Layout, large: Layout, zeroed: bool) -> *mut u8 {
        if let Some(ptr) = self.take(large) {
            if zeroed {
                // SAFETY: a kept block of `large.size()` bytes, now the caller's.
                unsafe { ptr.write_bytes(0, layout.size()) };
            }
            return ptr;
        }
        // SAFETY: a valid, non-zero-sized layout. Fresh memory from `calloc` is often untouched
        // mapped pages, so it is not cleared again here.
        let ptr = unsafe {
            if zeroed {
                System.alloc_zeroed(large)
            } else {
                System.alloc(large)
            }
        };
        if ptr.is_null() {
            // A new block could not be had: it is not live after all.
            self.lock().live_bytes -= large.size();
        }
        ptr
    }
}

impl Default for ReusingAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    fn remove(&mut self, i: usize) {
        let size = self.blocks[i].1;
        self.blocks.copy_within(i + 1..self.kept, i);
        self.kept -= 1;
        self.kept_bytes -= size;
        KEPT_IN_PROCESS.fetch_sub(size, Ordering::Relaxed);
    }

    /// # Safety
    /// The oldest kept block came from `System` with its page layout.
    unsafe fn free_oldest(&mut self) {
        let (ptr, size) = self.blocks[0];
        self.remove(0);
        // SAFETY: per the caller; `size` is a non-zero multiple of the page, so the layout is valid.
        unsafe { System.dealloc(ptr as *mut u8, Layout::from_size_align_unchecked(size, PAGE)) };
    }

    /// # Safety
    /// `ptr` came from `System` with the page layout of `size` and is no longer in use.
    unsafe fn keep(&mut self, ptr: *mut u8, size: usize) {
        self.live_bytes -= size;
        if self.kept == SLOTS {
            // SAFETY: as for `free_oldest`.
            unsafe { self.free_oldest() };
        }
        let kept = self.kept;
        self.blocks[kept] = (ptr as usize, size);
        self.kept += 1;
        self.kept_bytes += size;
        KEPT_IN_PROCESS.fetch_add(size, Ordering::Relaxed);
    }
}

// SAFETY: small requests are the system allocator's; a large block is either fresh from it (with the
// page layout recorded by size) or a kept one of exactly that size, handed to one caller at a time
// under the lock, and returned to it with that same layout.
unsafe impl GlobalAlloc for ReusingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(large) = Self::large(layout) else {
            // SAFETY: forwarded as given.
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: per the caller; `large` is this layout's.
        unsafe { self.alloc_large(layout, large, false) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some(large) = Self::large(layout) else {
            // SAFETY: forwarded as given.
            return unsafe { System.alloc_zeroed(layout) };
        };
        // SAFETY: per the caller; `large` is this layout's.
        unsafe { self.alloc_large(layout, large, true) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match Self::large(layout) {
            // SAFETY: the caller's block, allocated by `alloc` with this layout, so large the same way.
            Some(large) => unsafe { self.lock().keep(ptr, large.size()) },
            // SAFETY: forwarded as given.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (Self::large(layout), Self::large(new_layout)) {
            // SAFETY: forwarded as given: both small, so the system allocator's own block.
            (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
            // Still inside the rounded-up block.
            (Some(old), Some(new)) if old.size() == new.size() => ptr,
            _ => {
                // SAFETY: `new_layout` is valid (above); on success the old block's first bytes are
                // copied and it is freed with its own layout, as `GlobalAlloc::realloc` does.
                unsafe {
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(n: usize) -> Layout {
        Layout::array::<f32>(n).unwrap()
    }

    #[test]
    fn a_freed_large_block_is_handed_out_again_for_the_same_size() {
        let a = ReusingAllocator::new();
        let layout = floats(1 << 20);
        // SAFETY: every block is used within its layout and freed once, with that layout.
        unsafe {
            let first = a.alloc(layout);
            first.write_bytes(7, layout.size());
            a.dealloc(first, layout);
            assert_eq!(a.kept_bytes(), layout.size());
            let again = a.alloc(layout);
            assert_eq!(again, first, "the kept block is reused");
            assert_eq!(a.kept_bytes(), 0);
            a.dealloc(again, layout);
            // Zeroed on request, although the kept block held sevens.
            let zeroed = a.alloc_zeroed(layout);
            assert_eq!(zeroed, first);
            assert!(std::slice::from_raw_parts(zeroed, layout.size()).iter().all(|&b| b == 0));
            a.dealloc(zeroed, layout);
        }
        a.release();
        assert_eq!(a.kept_bytes(), 0);
    }

    #[test]
    fn small_blocks_are_not_kept_and_alignment_is_honoured() {
        let a = ReusingAllocator::new();
        // SAFETY: every block is used within its layout and freed once, with that layout.
        unsafe {
            let small = floats(1000);
            let p = a.alloc(small);
            a.dealloc(p, small);
            assert_eq!(a.kept_bytes(), 0);
            for align in [4, 64, PAGE] {
                let layout = Layout::from_size_align(LARGE_BLOCK + 12, align).unwrap();
                let p = a.alloc(layout);
                assert_eq!(p as usize % align, 0, "align {align}");
                a.dealloc(p, layout);
            }
            // Over a page: the system allocator's, never kept.
            let huge_align = Layout::from_size_align(LARGE_BLOCK, 2 * PAGE).unwrap();
            let p = a.alloc(huge_align);
            assert_eq!(p as usize % (2 * PAGE), 0);
            let before = a.kept_bytes();
            a.dealloc(p, huge_align);
            assert_eq!(a.kept_bytes(), before);
        }
        a.release();
    }

    #[test]
    fn live_plus_kept_bytes_stay_under_twice_the_high_water_mark() {
        let a = ReusingAllocator::new();
        // 16 MiB and 12 MiB: sizes of their own class each.
        let (big, other) = (floats(4 << 20), floats(3 << 20));
        let mb = |bytes: usize| bytes >> 20;
        // SAFETY: every block is used within its layout and freed once, with that layout.
        unsafe {
            // The high-water mark: two big blocks live at once (32 MiB).
            let (x, y) = (a.alloc(big), a.alloc(big));
            a.dealloc(x, big);
            a.dealloc(y, big);
            assert_eq!(mb(a.kept_bytes()), 32);
            // New sizes fit beside the kept blocks while live + kept ≤ 64 MiB...
            let (p, q) = (a.alloc(other), a.alloc(other));
            assert_eq!(mb(a.kept_bytes()), 32, "24 MiB live beside 32 kept");
            // ...and the longest-kept block goes when they would not (36 + 32 > 64).
            let r = a.alloc(other);
            assert_eq!(mb(a.kept_bytes()), 16);
            for ptr in [p, q, r] {
                a.dealloc(ptr, other);
            }
            // Both sizes are found again: the kept big block and a 12 MiB one.
            let (u, v) = (a.alloc(big), a.alloc(other));
            assert_eq!(u, y, "the most recently kept big block");
            assert_eq!(mb(a.kept_bytes()), 24);
            a.dealloc(u, big);
            a.dealloc(v, other);
        }
        a.release();
        assert_eq!(a.kept_bytes(), 0);
    }

    #[test]
    fn sizes_round_up_to_a_quarter_of_their_power_of_two() {
        assert_eq!(block_size(LARGE_BLOCK), Some(LARGE_BLOCK));
        assert_eq!(block_size(LARGE_BLOCK + 1), Some(LARGE_BLOCK + LARGE_BLOCK / 4));
        assert_eq!(block_size(12 << 20), Some(12 << 20));
        assert_eq!(block_size((12 << 20) + 1), Some(14 << 20));
        assert_eq!(block_size(usize::MAX), None);
        for size in (LARGE_BLOCK..64 << 20).step_by(999_983) {
            let block = block_size(size).unwrap();
            assert!(block >= size && block - size <= size / 4 && block.is_multiple_of(PAGE), "{size} → {block}");
        }
    }

    #[test]
    fn realloc_keeps_the_contents_across_small_and_large() {
        let a = ReusingAllocator::new();
        // SAFETY: every block is used within its layout and freed once, with that layout.
        unsafe {
            let small = floats(100);
            let p = a.alloc(small) as *mut f32;
            for i in 0..100 {
                *p.add(i) = i as f32;
            }
            let grown = a.realloc(p as *mut u8, small, LARGE_BLOCK * 2 - 100) as *mut f32;
            let grown_layout = Layout::from_size_align(LARGE_BLOCK * 2 - 100, small.align()).unwrap();
            assert!((0..100).all(|i| *grown.add(i) == i as f32));
            // Within the same rounded block: the same pointer.
            let same = a.realloc(grown as *mut u8, grown_layout, LARGE_BLOCK * 2 - 8);
            assert_eq!(same as *mut f32, grown);
            let grown_layout = Layout::from_size_align(LARGE_BLOCK * 2 - 8, small.align()).unwrap();
            let shrunk = a.realloc(same, grown_layout, 400) as *mut f32;
            assert!((0..100).all(|i| *shrunk.add(i) == i as f32));
            a.dealloc(shrunk as *mut u8, Layout::from_size_align(400, small.align()).unwrap());
        }
        a.release();
    }

    #[test]
    fn a_full_list_replaces_its_oldest_block() {
        let a = ReusingAllocator::new();
        let layouts: Vec<Layout> = (0..SLOTS + 3).map(|i| floats((LARGE_BLOCK / 4) + i * PAGE)).collect();
        // SAFETY: every block is used within its layout and freed once, with that layout.
        unsafe {
            let blocks: Vec<*mut u8> = layouts.iter().map(|&l| a.alloc(l)).collect();
            for (&p, &l) in blocks.iter().zip(&layouts) {
                a.dealloc(p, l);
            }
        }
        let total: usize = layouts.iter().skip(3).map(|l| ReusingAllocator::large(*l).unwrap().size()).sum();
        assert_eq!(a.kept_bytes(), total, "the three oldest were freed");
        a.release();
    }

    #[cfg(unix)]
    #[test]
    fn a_child_forked_while_another_thread_allocates_can_allocate() {
        // Threads allocate and free large blocks while this one forks: each child must find the lock
        // free and the state whole, allocate a large block and exit; a hang fails the watchdog.
        static SHARED: ReusingAllocator = ReusingAllocator::new();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..2)
            .map(|i| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let layout = floats((1 << 18) + i * 4096);
                    while !stop.load(Ordering::Relaxed) {
                        // SAFETY: allocated and freed with the same layout.
                        unsafe { SHARED.dealloc(SHARED.alloc(layout), layout) };
                    }
                })
            })
            .collect();
        for _ in 0..20 {
            // SAFETY: the child only allocates, frees and exits (`_exit`: no destructors or atexit).
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let layout = floats(1 << 20);
                // SAFETY: as above.
                let ok = unsafe {
                    let p = SHARED.alloc(layout);
                    let ok = !p.is_null();
                    SHARED.dealloc(p, layout);
                    ok
                };
                // SAFETY: ends the child at once, as above.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            let start = std::time::Instant::now();
            let mut status = 0;
            loop {
                // SAFETY: waits for our own child without blocking.
                let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if done == pid {
                    break;
                }
                if start.elapsed() > std::time::Duration::from_secs(20) {
                    // SAFETY: our own child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    panic!("a forked child hung on the allocator's lock");
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child status {status}");
        }
        stop.store(true, Ordering::Relaxed);
        workers.into_iter().for_each(|w| w.join().unwrap());
        SHARED.release();
    }
}
