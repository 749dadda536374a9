//! AVX2 + FMA: a logical vector is two `__m256` (lanes 0–7, 8–15). There are no mask registers and no
//! scatter: masks become lane vectors for `vmaskmov`, full masks take plain loads and stores, and a
//! scatter is a loop over the masked lanes.

use std::arch::x86_64::*;

use super::{Simd, LANES};
use crate::kernels::conv2d::microkernel::{tile_loop, Tile};
use crate::kernels::isa::Isa;

#[derive(Clone, Copy)]
pub(crate) struct Avx2;

type V = [__m256; 2];

/// `mask`'s bits as two lane masks (all ones where the bit is set).
#[inline(always)]
unsafe fn lane_masks(mask: u16) -> [__m256i; 2] {
    [lane_mask(mask & 0xff), lane_mask(mask >> 8)]
}

/// The low 8 bits of `byte` as a lane mask.
#[inline(always)]
unsafe fn lane_mask(byte: u16) -> __m256i {
    let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(i32::from(byte)), bits), bits)
}

/// `2ⁿ` for whole-number lanes of `n` in the normal range, from its exponent bits: `(n + 127) << 23`.
/// A function, not a closure inside `ldexp`: a closure may be left out of line, outside the level's
/// `#[target_feature]` code (see `microkernel`).
#[inline(always)]
unsafe fn pow2(n: __m256) -> __m256 {
    let bits = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    _mm256_castsi256_ps(_mm256_slli_epi32::<23>(bits))
}

#[inline(always)]
unsafe fn indices(offsets: &[i32; LANES]) -> [__m256i; 2] {
    let p = offsets.as_ptr().cast::<__m256i>();
    [_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1))]
}

/// The even (`ODD` = false) or odd lanes of `x` then of `y` (8 each).
#[inline(always)]
unsafe fn pick<const ODD: bool>(x: __m256, y: __m256) -> __m256 {
    // Per 128-bit half: [x₀ x₂ y₀ y₂ | x₄ x₆ y₄ y₆] (or the odd ones); then 64-bit blocks 0, 2, 1, 3.
    let t = if ODD { _mm256_shuffle_ps::<0b11_01_11_01>(x, y) } else { _mm256_shuffle_ps::<0b10_00_10_00>(x, y) };
    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(t)))
}

/// `x₀ y₀ … x₃ y₃`, `x₄ y₄ … x₇ y₇`.
#[inline(always)]
unsafe fn zip(x: __m256, y: __m256) -> V {
    let (low, high) = (_mm256_unpacklo_ps(x, y), _mm256_unpackhi_ps(x, y));
    [_mm256_permute2f128_ps::<0x20>(low, high), _mm256_permute2f128_ps::<0x31>(low, high)]
}

/// 4 floats from `low`, then 4 from `high`.
#[inline(always)]
unsafe fn load_two_quads(low: *const f32, high: *const f32) -> __m256 {
    _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(_mm_loadu_ps(low)), _mm_loadu_ps(high))
}

/// The 4 × 4 transpose inside each 128-bit lane (`_MM_TRANSPOSE4_PS` per lane).
#[inline(always)]
unsafe fn transpose_in_lanes(x: [__m256; 4]) -> [__m256; 4] {
    let (ab_low, cd_low) = (_mm256_unpacklo_ps(x[0], x[1]), _mm256_unpacklo_ps(x[2], x[3]));
    let (ab_high, cd_high) = (_mm256_unpackhi_ps(x[0], x[1]), _mm256_unpackhi_ps(x[2], x[3]));
    [
        _mm256_shuffle_ps::<0b01_00_01_00>(ab_low, cd_low),
        _mm256_shuffle_ps::<0b11_10_11_10>(ab_low, cd_low),
        _mm256_shuffle_ps::<0b01_00_01_00>(ab_high, cd_high),
        _mm256_shuffle_ps::<0b11_10_11_10>(ab_high, cd_high),
    ]
}

// SAFETY: the intrinsics need AVX2 and FMA, which `vectorize` enables and the callers checked; pointer
// validity is the caller's, as the trait says (`vmaskmov` does not touch unmasked lanes).
unsafe impl Simd for Avx2 {
    type V = V;
    const ISA: Isa = Isa::Avx2;
    // 16 KiB of columns + 6 KiB of weights inside a 32 KiB L1 (Zen, Skylake); 256 measured 5–15% slower.
    const KC: usize = 128;
    // `examples/conv_bench`, 2-core AMD EPYC (Zen 3), 256 → 256 channels at 16×16, batch 1 (16 tiles):
    // F(4×4) 1.35 ms, F(2×2) 1.80 ms (8×8 maps run F(2×2) whatever the count: F(4×4) needs rows of 16).
    const F4_MIN_TILES: usize = 16;

    #[inline(always)]
    unsafe fn vectorize<R>(f: impl FnOnce() -> R) -> R {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        run(f)
    }

    #[inline(always)]
    unsafe fn microkernel(kc: usize, a: *const f32, b: *const f32, tile: &Tile, out: *mut f32) {
        // 6 rows × 16 columns: 12 of the 16 ymm registers accumulate, 2 hold columns, 1 a weight.
        tile_loop::<Self, 6, 1>(kc, a, b, tile, out)
    }

    #[inline(always)]
    unsafe fn zero() -> V {
        [_mm256_setzero_ps(); 2]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> V {
        [_mm256_set1_ps(x); 2]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> V {
        [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))]
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: V) {
        _mm256_storeu_ps(p, v[0]);
        _mm256_storeu_ps(p.add(8), v[1]);
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, mask: u16) -> V {
        if mask == u16::MAX {
            return Self::load(p);
        }
        let m = lane_masks(mask);
        [_mm256_maskload_ps(p, m[0]), _mm256_maskload_ps(p.add(8), m[1])]
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, mask: u16, v: V) {
        if mask == u16::MAX {
            return Self::store(p, v);
        }
        let m = lane_masks(mask);
        _mm256_maskstore_ps(p, m[0], v[0]);
        _mm256_maskstore_ps(p.add(8), m[1], v[1]);
    }
    #[inline(always)]
    unsafe fn add(a: V, b: V) -> V {
        [_mm256_add_ps(a[0], b[0]), _mm256_add_ps(a[1], b[1])]
    }
    #[inline(always)]
    unsafe fn sub(a: V, b: V) -> V {
        [_mm256_sub_ps(a[0], b[0]), _mm256_sub_ps(a[1], b[1])]
    }
    #[inline(always)]
    unsafe fn mul(a: V, b: V) -> V {
        [_mm256_mul_ps(a[0], b[0]), _mm256_mul_ps(a[1], b[1])]
    }
    #[inline(always)]
    unsafe fn max(a: V, b: V) -> V {
        [_mm256_max_ps(a[0], b[0]), _mm256_max_ps(a[1], b[1])]
    }
    #[inline(always)]
    unsafe fn min(a: V, b: V) -> V {
        [_mm256_min_ps(a[0], b[0]), _mm256_min_ps(a[1], b[1])]
    }
    #[inline(always)]
    unsafe fn ldexp(p: V, n: V) -> V {
        [_mm256_mul_ps(p[0], pow2(n[0])), _mm256_mul_ps(p[1], pow2(n[1]))]
    }
    #[inline(always)]
    unsafe fn div(a: V, b: V) -> V {
        [_mm256_div_ps(a[0], b[0]), _mm256_div_ps(a[1], b[1])]
    }
    #[inline(always)]
    unsafe fn mul_add(a: V, b: V, c: V) -> V {
        [_mm256_fmadd_ps(a[0], b[0], c[0]), _mm256_fmadd_ps(a[1], b[1], c[1])]
    }
    #[inline(always)]
    unsafe fn gather(base: *const f32, offsets: &[i32; LANES]) -> V {
        let i = indices(offsets);
        [_mm256_i32gather_ps::<4>(base, i[0]), _mm256_i32gather_ps::<4>(base, i[1])]
    }
    #[inline(always)]
    unsafe fn gather_masked(base: *const f32, offsets: &[i32; LANES], mask: u16) -> V {
        let (i, m) = (indices(offsets), lane_masks(mask));
        let zero = _mm256_setzero_ps();
        [
            _mm256_mask_i32gather_ps::<4>(zero, base, i[0], _mm256_castsi256_ps(m[0])),
            _mm256_mask_i32gather_ps::<4>(zero, base, i[1], _mm256_castsi256_ps(m[1])),
        ]
    }
    #[inline(always)]
    unsafe fn scatter_masked(base: *mut f32, offsets: &[i32; LANES], mask: u16, v: V) {
        let mut lanes = [0f32; LANES];
        Self::store(lanes.as_mut_ptr(), v);
        let mut bits = mask;
        while bits != 0 {
            let lane = bits.trailing_zeros() as usize;
            *base.offset(offsets[lane] as isize) = lanes[lane];
            bits &= bits - 1;
        }
    }
    #[inline(always)]
    unsafe fn load_rows_of_8(p: *const f32, stride: usize) -> V {
        [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(stride))]
    }
    #[inline(always)]
    unsafe fn load_rows_of_4(p: *const f32, stride: usize) -> V {
        let q = p.add(2 * stride);
        [
            _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(_mm_loadu_ps(p)), _mm_loadu_ps(p.add(stride))),
            _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(_mm_loadu_ps(q)), _mm_loadu_ps(q.add(stride))),
        ]
    }
    #[inline(always)]
    unsafe fn even_odd(a: V, b: V) -> (V, V) {
        ([pick::<false>(a[0], a[1]), pick::<false>(b[0], b[1])], [pick::<true>(a[0], a[1]), pick::<true>(b[0], b[1])])
    }
    #[inline(always)]
    unsafe fn interleave(a: V, b: V) -> (V, V) {
        (zip(a[0], b[0]), zip(a[1], b[1]))
    }
    #[inline(always)]
    unsafe fn load_quads(p: *const f32, offsets: &[usize; 4]) -> V {
        [load_two_quads(p.add(offsets[0]), p.add(offsets[1])), load_two_quads(p.add(offsets[2]), p.add(offsets[3]))]
    }
    #[inline(always)]
    unsafe fn store_quads(p: *mut f32, offsets: &[usize; 4], blocks: usize, v: V) {
        let quads = [
            _mm256_castps256_ps128(v[0]),
            _mm256_extractf128_ps::<1>(v[0]),
            _mm256_castps256_ps128(v[1]),
            _mm256_extractf128_ps::<1>(v[1]),
        ];
        for q in 0..blocks.min(4) {
            _mm_storeu_ps(p.add(offsets[q]), quads[q]);
        }
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[inline(always)]
    unsafe fn transpose_quads(x: [V; 4]) -> [V; 4] {
        let low = transpose_in_lanes([x[0][0], x[1][0], x[2][0], x[3][0]]);
        let high = transpose_in_lanes([x[0][1], x[1][1], x[2][1], x[3][1]]);
        [[low[0], high[0]], [low[1], high[1]], [low[2], high[2]], [low[3], high[3]]]
    }
}
