//! Hints to the operating system and the C allocator about how large buffers are used (`madvise`,
//! `mallopt`). Each is a hint only: where it is not supported, or refused, nothing changes.

/// Drops the memory-mapped pages wholly inside `bytes` from this process's resident set, once the
/// tensor they hold has been copied out. Without it every page of the file stays resident until the
/// store is dropped, so a load would peak at the file plus the model built from it.
///
/// `bytes` must borrow from a read-only file mapping (never from heap memory, whose released pages
/// would read back as zeros).
pub(crate) fn release_mapped_pages(bytes: &[u8]) {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
        // SAFETY: the range lies inside the read-only file mapping `bytes` borrows from, which nothing
        // ever writes. MADV_DONTNEED only unmaps those pages from this process; the next read of them
        // faults the same file contents back in, so every reference into the mapping keeps seeing the
        // same bytes.
        unsafe { advise_whole_units(bytes.as_ptr() as usize, bytes.len(), page, libc::MADV_DONTNEED) };
    }
    #[cfg(not(unix))]
    let _ = bytes;
}

/// `len` float32 values inside a read-only file mapping that is shared (an `Arc`) with every other
/// `MappedF32` of the same file: a weight handed out by the loader without a copy, read when the layer
/// first runs, and then released ([`MappedF32::release`]). The file must not be truncated or rewritten
/// in place while any of them lives (see docs/errors-and-safety.md, "Files").
#[derive(Clone)]
pub(crate) struct MappedF32 {
    map: std::sync::Arc<memmap2::Mmap>,
    /// Byte offset of the first value in the mapping.
    offset: usize,
    len: usize,
}

impl std::fmt::Debug for MappedF32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedF32").field("offset", &self.offset).field("len", &self.len).finish()
    }
}

impl MappedF32 {
    /// The `len` floats at byte `offset` of `map`; `None` unless they lie inside it at a 4-byte aligned
    /// address, on a little-endian machine (the file's byte order).
    pub(crate) fn new(map: std::sync::Arc<memmap2::Mmap>, offset: usize, len: usize) -> Option<Self> {
        let end = len.checked_mul(4).and_then(|bytes| bytes.checked_add(offset))?;
        let aligned = (map.as_ptr() as usize).wrapping_add(offset).is_multiple_of(std::mem::align_of::<f32>());
        (cfg!(target_endian = "little") && end <= map.len() && aligned).then_some(Self { map, offset, len })
    }

    pub(crate) fn as_slice(&self) -> &[f32] {
        let bytes = &self.map[self.offset..self.offset + 4 * self.len];
        // SAFETY: `new` checked that the range lies inside the mapping, 4-byte aligned; every bit
        // pattern is a valid f32 (little-endian, as safetensors stores it); the `Arc` keeps the mapping.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), self.len) }
    }

    /// Drops the values' pages from this process's resident set (they read back from the file).
    pub(crate) fn release(&self) {
        release_mapped_pages(&self.map[self.offset..self.offset + 4 * self.len]);
    }
}

/// Asks for transparent huge pages behind a large, freshly allocated (not yet touched) buffer: prepared
/// weights are written once at load, and faulting them in 2 MiB at a time instead of 4 KiB saves most
/// of the page faults. The buffer must not have been written yet (a `vec![0.0; n]` has: calloc clears
/// reused heap memory, faulting every page in at 4 KiB before the advice), so callers pass the spare
/// capacity of a `Vec::with_capacity` (see [`filled_by`]).
fn advise_huge_pages<T>(buffer: &mut [T]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE_PAGE: usize = 2 << 20;
        let (start, len) = (buffer.as_mut_ptr() as usize, std::mem::size_of_val(buffer));
        // SAFETY: the range lies inside `buffer`, which we hold mutably; MADV_HUGEPAGE changes how the
        // kernel backs those pages, never their contents.
        unsafe { advise_whole_units(start, len, HUGE_PAGE, libc::MADV_HUGEPAGE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buffer;
}

/// A vector of `len` elements, every one of which `fill` writes (it gets the uninitialised buffer, after
/// the huge-page advice). Prepared weights are overwritten whole, so zeroing them first (`vec![0.0; n]`)
/// only doubled a load's memory traffic: about a quarter of `from_pretrained`'s instructions were
/// `memset`.
///
/// # Safety
/// `fill` must initialise every element of the slice it is given.
pub(crate) unsafe fn filled_by<T>(len: usize, fill: impl FnOnce(&mut [std::mem::MaybeUninit<T>])) -> Vec<T> {
    let mut data = Vec::with_capacity(len);
    let spare = &mut data.spare_capacity_mut()[..len];
    advise_huge_pages(spare);
    fill(spare);
    // SAFETY: `fill` initialised all `len` elements (the caller's promise), within the capacity.
    unsafe { data.set_len(len) };
    data
}

/// `madvise(advice)` on the whole `unit`-aligned units inside `[start, start + len)`; nothing when
/// there are none (or `unit` is 0).
///
/// # Safety
/// `advice` must leave every live reference into the range seeing the same contents.
#[cfg(unix)]
unsafe fn advise_whole_units(start: usize, len: usize, unit: usize, advice: libc::c_int) {
    if unit == 0 {
        return;
    }
    let (first, end) = (start.next_multiple_of(unit), (start + len) / unit * unit);
    if end > first {
        // SAFETY: per the caller; the range is inside the caller's buffer.
        unsafe { libc::madvise(first as *mut libc::c_void, end - first, advice) };
    }
}

/// The environment variable that, set to `0`, leaves the C allocator's handling of large blocks as
/// the process had it (see [`reuse_large_allocations`]).
pub const REUSE_ENV: &str = "CANDLE_UNET2D_REUSE_MEMORY";

/// Makes glibc's `malloc` serve large blocks from its heap, so that a freed activation is reused by
/// the next one instead of being unmapped and mapped again (once per process, CPU models only).
///
/// **Why.** By default glibc `mmap`s every block above a threshold that grows to at most 32 MiB and
/// `munmap`s it on free. A UNet forward allocates and frees a few hundred activations, and at
/// celebahq-256 most are larger than that: every one came back as fresh pages the kernel had to
/// fault in and zero, about a third of the forward's time (3.8 s against 2.5 s with the blocks
/// reused, `examples/time_forward`). Peak memory does not change (the same blocks are live at the
/// peak); freed blocks stay in the process for reuse until it exits, as they would with jemalloc or
/// mimalloc. This is only part of the cure: glibc still trims and deletes its per-thread arenas'
/// heaps once they are free, so the rayon workers' blocks kept coming back as fresh pages (15 000
/// faults per cifar10-32 batch-8 forward). [`crate::ReusingAllocator`], which the CLI and the Python
/// extension install, keeps the blocks itself; this stays for programs that keep the system
/// allocator. Left alone where the user has tuned malloc (`MALLOC_MMAP_THRESHOLD_`, or
/// `mmap_threshold` in `GLIBC_TUNABLES`) or set `CANDLE_UNET2D_REUSE_MEMORY=0`; other C libraries are
/// not touched.
pub(crate) fn reuse_large_allocations() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if !leave_malloc_alone(|name| std::env::var(name).ok()) {
            set_mmap_threshold();
        }
    });
}

/// Whether the environment (`var`) says the user tuned malloc or asked us not to.
fn leave_malloc_alone(var: impl Fn(&str) -> Option<String>) -> bool {
    var("MALLOC_MMAP_THRESHOLD_").is_some()
        || var("GLIBC_TUNABLES").is_some_and(|t| t.contains("mmap_threshold"))
        || var(REUSE_ENV).is_some_and(|v| v.trim() == "0")
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_mmap_threshold() {
    // 1 GiB: every activation of the models this crate runs comes from the heap; a block larger than
    // that is still mapped on its own.
    // SAFETY: mallopt only changes the allocator's tuning parameters; it is thread-safe.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mmap_threshold() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malloc_is_left_alone_where_the_user_tuned_it_or_opted_out() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert!(!leave_malloc_alone(env(&[])));
        assert!(!leave_malloc_alone(env(&[(REUSE_ENV, "1"), ("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")])));
        assert!(leave_malloc_alone(env(&[(REUSE_ENV, "0")])));
        assert!(leave_malloc_alone(env(&[("MALLOC_MMAP_THRESHOLD_", "65536")])));
        assert!(leave_malloc_alone(env(&[("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")])));
    }
}
