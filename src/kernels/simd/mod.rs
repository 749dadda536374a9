//! The 16-float vector the convolution kernels are written over, one implementation per instruction
//! set, and the vector-friendly scalar math of the plain-Rust kernels.
//!
//! **Why a trait over `std::arch` and not `pulp`.** The kernels need a few operations that `pulp`'s
//! `Simd` does not abstract (masked and offset gathers, scatters, the even/odd split and interleave of
//! the Winograd transforms), and a fixed logical width: the drivers' data layouts (16-pixel column
//! vectors, 32-column panels, 16-tile Winograd vectors) are then the same on every level, so weights,
//! planning and scheduling are written once, and only this file's implementations and the
//! micro-kernel's register tile differ. A level with narrower registers holds one logical vector in
//! several (AVX2: two `__m256`; a NEON port: four `float32x4_t`), which the compiler keeps in
//! registers because every array index is a constant.
//!
//! **How code gets each level's instructions.** The kernels are generic `#[inline(always)]` functions
//! over `S: Simd`, entered through [`Simd::vectorize`], a `#[target_feature]` function per level into
//! which the whole task body (and with it every intrinsic) is inlined. The builds stay portable:
//! nothing is compiled with `target-cpu=native`, and the level is chosen at run time
//! ([`crate::kernels::isa`]).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod math;
mod scalar;
mod vector_math;

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::Avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::Avx512;
pub use math::{exp, silu};
pub(crate) use scalar::Scalar;
pub(crate) use vector_math::silu_vector;

use super::isa::Isa;

/// Lanes of the logical vector.
pub(crate) const LANES: usize = 16;

/// Sixteen f32 lanes and the operations the convolution kernels use on them, for one instruction set.
/// Masks are `u16`, bit `i` for lane `i`. Offsets are in floats.
///
/// # Safety
/// Every function may only run on a CPU that supports [`Simd::ISA`] (callers check
/// [`Isa::is_supported`] before they enter [`Simd::vectorize`]); pointers must be valid for the lanes
/// that are read or written (all 16, or the masked ones).
pub(crate) unsafe trait Simd: Copy + Send + Sync + 'static {
    type V: Copy;
    const ISA: Isa;
    /// Reduction steps per block of the micro-kernel's panels: the column panel (`KC × 32` floats)
    /// and the weight panel (`KC × 12`) should stay in L1 together.
    const KC: usize;
    /// F(4×4) tiles from which a Winograd call runs F(4×4) instead of F(2×2)
    /// ([`crate::kernels::conv2d::winograd`]'s `choose`). F(4×4) does 0.56× the multiplications on
    /// 2.25× the weights: where the micro-kernel is bound by arithmetic (8-lane FMAs) it wins from the
    /// first whole vector of tiles, where it is bound by streaming the weights (16-lane FMAs) only once
    /// the weights are used for several vectors.
    const F4_MIN_TILES: usize;

    /// Runs `f` inside a function compiled with this level's instructions enabled, so that the
    /// `#[inline(always)]` kernels it calls are compiled for them.
    unsafe fn vectorize<R>(f: impl FnOnce() -> R) -> R;

    /// The micro-kernel for this level's register file: `tile += A · B` over one packed panel pair
    /// (see [`crate::kernels::conv2d::microkernel`]), as sub-tiles that fit the registers.
    unsafe fn microkernel(
        kc: usize,
        a: *const f32,
        b: *const f32,
        tile: &crate::kernels::conv2d::microkernel::Tile,
        out: *mut f32,
    );

    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// The masked lanes from `p`, zero elsewhere; unmasked lanes are not read.
    unsafe fn load_masked(p: *const f32, mask: u16) -> Self::V;
    /// Writes only the masked lanes.
    unsafe fn store_masked(p: *mut f32, mask: u16, v: Self::V);
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// Per lane `if a > b { a } else { b }`: `b` when either is NaN (x86's `maxps`).
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Per lane `if a < b { a } else { b }`: `b` when either is NaN (x86's `minps`).
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    /// `p · 2ⁿ` for lanes of `n` that are whole numbers with `2ⁿ` a normal float (−126 ≤ n ≤ 127).
    unsafe fn ldexp(p: Self::V, n: Self::V) -> Self::V;
    /// `a · b + c`, fused where the level has it.
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Lane `i` from `base + offsets[i]`.
    unsafe fn gather(base: *const f32, offsets: &[i32; LANES]) -> Self::V;
    /// [`Simd::gather`] for the masked lanes, zero elsewhere.
    unsafe fn gather_masked(base: *const f32, offsets: &[i32; LANES], mask: u16) -> Self::V;
    /// Writes masked lane `i` to `base + offsets[i]`.
    unsafe fn scatter_masked(base: *mut f32, offsets: &[i32; LANES], mask: u16, v: Self::V);
    /// Two rows of 8 floats, `stride` apart.
    unsafe fn load_rows_of_8(p: *const f32, stride: usize) -> Self::V;
    /// Four rows of 4 floats, `stride` apart.
    unsafe fn load_rows_of_4(p: *const f32, stride: usize) -> Self::V;
    /// (the even lanes of `a` then of `b`, the odd lanes of `a` then of `b`).
    unsafe fn even_odd(a: Self::V, b: Self::V) -> (Self::V, Self::V);
    /// (`a₀ b₀ a₁ b₁ … a₇ b₇`, `a₈ b₈ … a₁₅ b₁₅`).
    unsafe fn interleave(a: Self::V, b: Self::V) -> (Self::V, Self::V);
    /// Four blocks of 4 floats: block `q` (lanes `4q … 4q + 3`) from `p + offsets[q]`.
    unsafe fn load_quads(p: *const f32, offsets: &[usize; 4]) -> Self::V;
    /// Writes block `q` of `v` to `p + offsets[q]`, for the first `blocks` blocks.
    unsafe fn store_quads(p: *mut f32, offsets: &[usize; 4], blocks: usize, v: Self::V);
    /// A 4 × 4 transpose inside every block: lane `4q + j` of output `i` is lane `4q + i` of input `j`.
    unsafe fn transpose_quads(x: [Self::V; 4]) -> [Self::V; 4];
    /// A hint to bring the cache line holding `p` into L1; never faults, whatever `p` is.
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        let _ = p;
    }
}

/// Runs `$body` with `$S` naming the [`Simd`] implementation of `$isa` (a level this build lacks runs
/// the scalar one; a level is only ever chosen after [`Isa::is_supported`]).
macro_rules! with_simd {
    ($isa:expr, $S:ident => $body:expr) => {
        match $isa {
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::isa::Isa::Avx512 => {
                type $S = $crate::kernels::simd::Avx512;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::isa::Isa::Avx2 => {
                type $S = $crate::kernels::simd::Avx2;
                $body
            }
            _ => {
                type $S = $crate::kernels::simd::Scalar;
                $body
            }
        }
    };
}
pub(crate) use with_simd;

/// Runs `$body` with `$S` naming each level this CPU supports, asserting that the implementation is
/// that level's, and prints the levels it cannot run; scalar and the best level must be among those run.
#[cfg(test)]
macro_rules! for_each_simd_level {
    ($S:ident => $body:expr) => {{
        use $crate::kernels::isa::Isa;
        let mut ran = Vec::new();
        for isa in Isa::ALL {
            if !isa.is_supported() {
                println!("level {isa} not run: this CPU lacks it");
                continue;
            }
            $crate::kernels::simd::with_simd!(isa, $S => {
                assert_eq!($S::ISA, isa, "the implementation chosen for {isa}");
                $body
            });
            ran.push(isa);
        }
        assert!(ran.contains(&Isa::Scalar) && ran.contains(&Isa::best()), "{ran:?}");
    }};
}
#[cfg(test)]
pub(crate) use for_each_simd_level;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation on every level this CPU runs, against the scalar definition.
    fn check<S: Simd>() {
        let a: [f32; 64] = std::array::from_fn(|i| i as f32 * 0.5 - 7.0);
        let b: [f32; 64] = std::array::from_fn(|i| 3.0 - i as f32 * 0.25);
        let offsets: [i32; LANES] = std::array::from_fn(|i| (i as i32 * 7) % 61);
        let mask = 0b1011_0110_0101_1001u16;
        let lanes = |v: S::V| {
            let mut out = [0f32; LANES];
            // SAFETY: `check` runs only for supported levels; 16 floats of room.
            unsafe { S::store(out.as_mut_ptr(), v) };
            out
        };
        let masked = |i: usize, x: f32| if mask >> i & 1 == 1 { x } else { 0.0 };
        // SAFETY: supported level (see the callers); every pointer has room for the lanes it touches.
        unsafe {
            S::vectorize(|| {
                let (va, vb) = (S::load(a.as_ptr()), S::load(b.as_ptr()));
                assert_eq!(lanes(S::zero()), [0.0; 16]);
                assert_eq!(lanes(S::splat(2.5)), [2.5; 16]);
                assert_eq!(lanes(S::add(va, vb)), std::array::from_fn(|i| a[i] + b[i]));
                assert_eq!(lanes(S::sub(va, vb)), std::array::from_fn(|i| a[i] - b[i]));
                assert_eq!(lanes(S::mul(va, vb)), std::array::from_fn(|i| a[i] * b[i]));
                assert_eq!(lanes(S::div(va, vb)), std::array::from_fn(|i| a[i] / b[i]));
                let with_nan: [f32; 16] = std::array::from_fn(|i| if i % 5 == 2 { f32::NAN } else { a[i] });
                let vn = S::load(with_nan.as_ptr());
                let pick = |x: f32, y: f32, first: bool| if first { x } else { y };
                for (ours, expected) in [
                    (
                        lanes(S::max(vn, vb)),
                        std::array::from_fn::<f32, 16, _>(|i| pick(with_nan[i], b[i], with_nan[i] > b[i])),
                    ),
                    (lanes(S::max(vb, vn)), std::array::from_fn(|i| pick(b[i], with_nan[i], b[i] > with_nan[i]))),
                    (lanes(S::min(vn, vb)), std::array::from_fn(|i| pick(with_nan[i], b[i], with_nan[i] < b[i]))),
                    (lanes(S::min(vb, vn)), std::array::from_fn(|i| pick(b[i], with_nan[i], b[i] < with_nan[i]))),
                ] {
                    for i in 0..LANES {
                        assert!(ours[i] == expected[i] || ours[i].is_nan() && expected[i].is_nan(), "lane {i}");
                    }
                }
                let exponents =
                    [-126.0, 127.0, 0.0, -3.0, 5.0, -20.0, 1.0, 64.0, -1.0, 2.0, 100.0, -100.0, 7.0, 0.0, -64.0, 3.0];
                let scaled = lanes(S::ldexp(va, S::load(exponents.as_ptr())));
                for i in 0..LANES {
                    assert_eq!(scaled[i], a[i] * 2f32.powi(exponents[i] as i32), "ldexp lane {i}");
                }
                let fma = lanes(S::mul_add(va, vb, va));
                for i in 0..LANES {
                    assert!((fma[i] - (a[i] * b[i] + a[i])).abs() <= 1e-5 * fma[i].abs().max(1.0));
                }
                assert_eq!(lanes(S::load_masked(a.as_ptr(), mask)), std::array::from_fn(|i| masked(i, a[i])));
                let mut out = [9f32; LANES];
                S::store_masked(out.as_mut_ptr(), mask, va);
                assert_eq!(out, std::array::from_fn(|i| if mask >> i & 1 == 1 { a[i] } else { 9.0 }));
                let gathered: [f32; 16] = std::array::from_fn(|i| a[offsets[i] as usize]);
                assert_eq!(lanes(S::gather(a.as_ptr(), &offsets)), gathered);
                let gathered_masked = std::array::from_fn(|i| masked(i, gathered[i]));
                assert_eq!(lanes(S::gather_masked(a.as_ptr(), &offsets, mask)), gathered_masked);
                let mut out = [9f32; 64];
                let distinct: [i32; LANES] = std::array::from_fn(|i| (i as i32 * 3) % 64 + 1);
                S::scatter_masked(out.as_mut_ptr(), &distinct, mask, va);
                for i in 0..LANES {
                    let expected = if mask >> i & 1 == 1 { a[i] } else { 9.0 };
                    assert_eq!(out[distinct[i] as usize], expected, "scatter lane {i}");
                }
                let rows8: [f32; 16] = std::array::from_fn(|i| a[i / 8 * 20 + i % 8]);
                assert_eq!(lanes(S::load_rows_of_8(a.as_ptr(), 20)), rows8);
                let rows4: [f32; 16] = std::array::from_fn(|i| a[i / 4 * 13 + i % 4]);
                assert_eq!(lanes(S::load_rows_of_4(a.as_ptr(), 13)), rows4);
                let (even, odd) = S::even_odd(va, vb);
                let pick = |i: usize, parity: usize| if i < 8 { a[2 * i + parity] } else { b[2 * (i - 8) + parity] };
                assert_eq!(lanes(even), std::array::from_fn(|i| pick(i, 0)));
                assert_eq!(lanes(odd), std::array::from_fn(|i| pick(i, 1)));
                let (low, high) = S::interleave(va, vb);
                let zip = |i: usize, base: usize| if i.is_multiple_of(2) { a[base + i / 2] } else { b[base + i / 2] };
                assert_eq!(lanes(low), std::array::from_fn(|i| zip(i, 0)));
                assert_eq!(lanes(high), std::array::from_fn(|i| zip(i, 8)));
                let quad_offsets = [5, 40, 17, 0];
                let quads: [f32; 16] = std::array::from_fn(|i| a[quad_offsets[i / 4] + i % 4]);
                assert_eq!(lanes(S::load_quads(a.as_ptr(), &quad_offsets)), quads);
                for blocks in 0..=4 {
                    let mut out = [9f32; 64];
                    S::store_quads(out.as_mut_ptr(), &quad_offsets, blocks, va);
                    let mut expected = [9f32; 64];
                    for i in 0..4 * blocks {
                        expected[quad_offsets[i / 4] + i % 4] = a[i];
                    }
                    assert_eq!(out, expected, "store_quads of {blocks} blocks");
                }
                let inputs = [va, vb, S::load(a.as_ptr().add(16)), S::load(b.as_ptr().add(16))];
                let input_lane = |j: usize, lane: usize| {
                    if j.is_multiple_of(2) {
                        a[16 * (j / 2) + lane]
                    } else {
                        b[16 * (j / 2) + lane]
                    }
                };
                let transposed = S::transpose_quads(inputs);
                for (i, &output) in transposed.iter().enumerate() {
                    let expected: [f32; 16] = std::array::from_fn(|lane| input_lane(lane % 4, lane / 4 * 4 + i));
                    assert_eq!(lanes(output), expected, "transpose_quads output {i}");
                }
            })
        }
    }

    #[test]
    fn every_level_matches_the_scalar_definition() {
        for_each_simd_level!(S => check::<S>());
    }
}
