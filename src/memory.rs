//! Hints to the operating system about how large buffers are used (`madvise`). Each is a hint only:
//! where it is not supported, or refused, nothing changes.

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

/// Asks for transparent huge pages behind a large, freshly allocated (not yet touched) buffer: prepared
/// weights are written once at load, and faulting them in 2 MiB at a time instead of 4 KiB saves most
/// of the page faults.
pub(crate) fn advise_huge_pages(buffer: &mut [f32]) {
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
