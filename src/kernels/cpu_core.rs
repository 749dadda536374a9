//! What the instruction-set flags do not say about the core, where a kernel's best choice depends on it.
//!
//! Today one fact: whether the core executes each 512-bit instruction as two 256-bit halves. AMD's
//! Zen 4 does (its FMA units are 256 bits wide), so its AVX-512 kernels are bound by arithmetic as
//! AVX2's are, where Intel's cores and AMD's Zen 5, with 512-bit units, are bound by reading the
//! weights. The Winograd tile choice follows that bound (`conv2d::winograd`'s `f4_min_tiles`): on a
//! 2-core Zen 4, 256 → 256 channels at 16×16 and batch 1 take 0.52 ms at F(4×4) against 0.71 ms at
//! F(2×2), where a 2-core Xeon measured F(4×4) the slower one.
//!
//! Read from CPUID, not measured, so that a machine always makes the same choice (the tile size
//! changes how an output rounds).

use std::sync::OnceLock;

/// Whether this CPU runs AVX-512 instructions as two 256-bit halves (false without AVX-512).
pub(crate) fn avx512_in_halves() -> bool {
    static IN_HALVES: OnceLock<bool> = OnceLock::new();
    *IN_HALVES.get_or_init(|| {
        let (vendor, family) = vendor_and_family();
        splits_avx512(&vendor, family) && crate::kernels::isa::Isa::Avx512.is_supported()
    })
}

/// AMD family 0x19 is Zen 3 and Zen 4, and only Zen 4 has AVX-512; Zen 5 (family 0x1A) has full-width
/// units (its laptop parts split them, but this errs towards the choice of the wider cores).
fn splits_avx512(vendor: &[u8; 12], family: u32) -> bool {
    vendor == b"AuthenticAMD" && family == 0x19
}

/// The CPUID vendor string and display family (base family, plus the extended family when the base is 0xF).
#[cfg(target_arch = "x86_64")]
fn vendor_and_family() -> ([u8; 12], u32) {
    // Leaves 0 and 1 exist on every x86-64 CPU.
    let (leaf0, leaf1) = (std::arch::x86_64::__cpuid(0), std::arch::x86_64::__cpuid(1));
    let mut vendor = [0u8; 12];
    for (chunk, register) in vendor.chunks_exact_mut(4).zip([leaf0.ebx, leaf0.edx, leaf0.ecx]) {
        chunk.copy_from_slice(&register.to_le_bytes());
    }
    (vendor, display_family(leaf1.eax))
}

#[cfg(not(target_arch = "x86_64"))]
fn vendor_and_family() -> ([u8; 12], u32) {
    ([0; 12], 0)
}

fn display_family(eax: u32) -> u32 {
    let base = (eax >> 8) & 0xF;
    if base == 0xF {
        base + ((eax >> 20) & 0xFF)
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_decodes_amd_and_intel_signatures() {
        // CPUID(1).EAX of a Zen 4 EPYC (family 0x19, model 0x11), a Zen 5 EPYC (0x1A) and a Sapphire
        // Rapids Xeon (family 6).
        assert_eq!(display_family(0x00A1_0F11), 0x19);
        assert_eq!(display_family(0x00B0_0F21), 0x1A);
        assert_eq!(display_family(0x0008_06F8), 6);
    }

    #[test]
    fn only_amd_family_0x19_splits() {
        assert!(splits_avx512(b"AuthenticAMD", 0x19));
        assert!(!splits_avx512(b"AuthenticAMD", 0x1A));
        assert!(!splits_avx512(b"GenuineIntel", 0x19));
        assert!(!splits_avx512(b"GenuineIntel", 6));
    }
}
