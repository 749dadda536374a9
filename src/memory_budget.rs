//! How much memory a call may allocate, and checks against it made before anything sized by input is
//! allocated: Rust aborts the process when an allocation fails, so a request that cannot fit must be
//! refused up front, with [`Error::TooLarge`] saying what it needs and what the limit is.
//!
//! The limit is `CANDLE_UNET2D_MEMORY_LIMIT` when it is set (bytes, or a number with a `K`, `M`, `G`
//! or `T` suffix, binary: `64G`), so a user can raise it past what the estimate allows or lower it.
//! Otherwise it is what the system can give now: `MemAvailable` from `/proc/meminfo`, lowered to what
//! the address-space limit (`RLIMIT_AS`, `ulimit -v`) leaves above the process's current size, plus
//! what malloc holds freed inside the process (glibc). Where neither can be read the limit is unknown
//! and only sizes that overflow are refused.

use crate::error::{Error, Result};

/// The environment variable that sets the limit.
pub const MEMORY_LIMIT_ENV: &str = "CANDLE_UNET2D_MEMORY_LIMIT";

/// The memory a call may use, and where that number comes from (for messages).
#[derive(Debug, Clone)]
pub struct Limit {
    pub bytes: u64,
    pub source: String,
}

/// The limit now (see the module docs). Read on every check: available memory changes.
pub fn limit() -> Limit {
    if let Some(value) = std::env::var_os(MEMORY_LIMIT_ENV) {
        let text = value.to_string_lossy();
        if let Some(bytes) = parse_size(&text) {
            return Limit { bytes, source: format!("{MEMORY_LIMIT_ENV}={text}") };
        }
    }
    // Blocks this process freed and malloc keeps for reuse (`memory::reuse_large_allocations`), or
    // `ReusingAllocator` does, are neither available to the system nor new address space, yet a call
    // can use them.
    let reusable = malloc_free_bytes().saturating_add(crate::reusing_allocator::kept_in_process() as u64);
    let available = mem_available().map(|a| a.saturating_add(reusable));
    let address_space = address_space_left().map(|s| s.saturating_add(reusable));
    let hint = format!("set {MEMORY_LIMIT_ENV} to change it");
    match (available, address_space) {
        (Some(a), Some(s)) if s < a => {
            Limit { bytes: s, source: format!("left under the address-space limit; {hint}") }
        }
        (Some(a), _) => Limit { bytes: a, source: format!("available memory; {hint}") },
        (None, Some(s)) => Limit { bytes: s, source: format!("left under the address-space limit; {hint}") },
        (None, None) => Limit { bytes: u64::MAX, source: "unknown".into() },
    }
}

/// Refuses `needed` bytes for `what` when they exceed the [`limit`].
pub fn check(what: impl FnOnce() -> String, needed: u128) -> Result<()> {
    let limit = limit();
    if needed <= u128::from(limit.bytes) {
        return Ok(());
    }
    Err(Error::TooLarge { what: what(), needed, limit: limit.bytes, limit_source: limit.source })
}

/// A vector of `n` copies of `value`, allocated fallibly (after [`check`]): `what` names it in the error.
pub fn filled_vec<T: Clone>(value: T, n: usize, what: &str) -> Result<Vec<T>> {
    let bytes = (n as u128) * std::mem::size_of::<T>() as u128;
    check(|| what.to_string(), bytes)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| too_large_now(what, bytes))?;
    v.resize(n, value);
    Ok(v)
}

/// A copy of `data`, allocated fallibly (after [`check`]).
pub fn copied_vec<T: Copy>(data: impl ExactSizeIterator<Item = T>, what: &str) -> Result<Vec<T>> {
    let n = data.len();
    let bytes = (n as u128) * std::mem::size_of::<T>() as u128;
    check(|| what.to_string(), bytes)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| too_large_now(what, bytes))?;
    v.extend(data);
    Ok(v)
}

/// The error for an allocation the allocator refused although the estimate let it through.
pub fn too_large_now(what: &str, needed: u128) -> Error {
    Error::TooLarge {
        what: what.to_string(),
        needed,
        limit: limit().bytes,
        limit_source: "the allocation failed".into(),
    }
}

/// `bytes` for people: `1.5 GiB`, `12 MiB`, `300 B`.
pub fn format_bytes(bytes: u128) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value >= 1024.0 {
        // Past exabytes: keep the exponent readable.
        return format!("{value:.3e} {}", UNITS[unit]);
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `64G`, `512M`, `1024`: binary units, case-insensitive, an optional trailing `B` or `iB`.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_uppercase();
    let t = t.strip_suffix("IB").or_else(|| t.strip_suffix('B')).unwrap_or(&t);
    let (number, shift) = match t.chars().last()? {
        'K' => (&t[..t.len() - 1], 10),
        'M' => (&t[..t.len() - 1], 20),
        'G' => (&t[..t.len() - 1], 30),
        'T' => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let value: f64 = number.trim().parse().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let bytes = value * (1u64 << shift) as f64;
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Bytes free inside malloc's arenas (glibc's `mallinfo2().fordblks`), 0 where unknown.
fn malloc_free_bytes() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        info.fordblks as u64
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    0
}

/// `MemAvailable` in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// What `RLIMIT_AS` leaves above the current virtual size (`VmSize`), when there is such a limit.
fn address_space_left() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let mut rlim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one rlimit into the struct it is given, which outlives the call.
        if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut rlim) } != 0 || rlim.rlim_cur == libc::RLIM_INFINITY {
            return None;
        }
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmSize:"))?;
        let used = line.split_whitespace().nth(1)?.parse::<u64>().ok()?.checked_mul(1024)?;
        // rlim_t is u64 on 64-bit Linux, u32 elsewhere.
        #[allow(clippy::unnecessary_cast)]
        let cap = rlim.rlim_cur as u64;
        Some(cap.saturating_sub(used))
    }
    #[cfg(not(target_os = "linux"))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("64G"), Some(64 << 30));
        assert_eq!(parse_size("512mib"), Some(512 << 20));
        assert_eq!(parse_size("1.5K"), Some(1536));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-1G"), None);
    }

    #[test]
    fn bytes_format_for_people() {
        assert_eq!(format_bytes(300), "300 B");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert!(format_bytes(u128::MAX).contains("EiB"));
    }

    #[test]
    fn the_limit_is_known_on_linux() {
        if cfg!(target_os = "linux") && std::env::var_os(MEMORY_LIMIT_ENV).is_none() {
            assert!(limit().bytes < u64::MAX);
        }
    }
}
