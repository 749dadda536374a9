//! AVX-512: one `__m512` per logical vector, hardware masks, gathers and scatters.

use std::arch::x86_64::*;

use super::{Simd, LANES};
use crate::kernels::conv2d::microkernel::{tile_loop, Tile};
use crate::kernels::isa::Isa;

#[derive(Clone, Copy)]
pub(crate) struct Avx512;

/// Indices for `_mm512_permutex2var_ps(a, idx, b)` (lanes 0–15 of `a`, then 16–31 of `b`).
const EVEN: [i32; 16] = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30];
const ODD: [i32; 16] = [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31];
const INTERLEAVE_LOW: [i32; 16] = [0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23];
const INTERLEAVE_HIGH: [i32; 16] = [8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31];

#[inline(always)]
unsafe fn indices(lanes: &[i32; LANES]) -> __m512i {
    _mm512_loadu_si512(lanes.as_ptr().cast())
}

// SAFETY: the intrinsics need AVX-512F (and DQ/VL for the 256-bit casts), which `vectorize` enables
// and the callers checked; pointer validity is the caller's, as the trait says.
unsafe impl Simd for Avx512 {
    type V = __m512;
    const ISA: Isa = Isa::Avx512;
    // 32 KiB of columns: AVX-512 cores have 48 KiB of L1 data (Ice Lake on), and this measured best there.
    const KC: usize = 256;
    // `examples/conv_bench` (2 threads): F(2×2) and F(4×4) about even at 64 tiles of 256 → 256 channels
    // (16×16 at batch 4, 32×32 at batch 1), F(4×4) ahead from there on and behind at 16 tiles.
    const F4_MIN_TILES: usize = 64;

    #[inline(always)]
    unsafe fn vectorize<R>(f: impl FnOnce() -> R) -> R {
        #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
        unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        run(f)
    }

    #[inline(always)]
    unsafe fn microkernel(kc: usize, a: *const f32, b: *const f32, tile: &Tile, out: *mut f32) {
        // 12 rows × 32 columns: 24 of the 32 zmm registers accumulate; 2 hold columns, 1 a weight.
        tile_loop::<Self, 12, 2>(kc, a, b, tile, out)
    }

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        _mm512_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, mask: u16) -> __m512 {
        _mm512_maskz_loadu_ps(mask, p)
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, mask: u16, v: __m512) {
        _mm512_mask_storeu_ps(p, mask, v)
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        _mm512_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        _mm512_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn min(a: __m512, b: __m512) -> __m512 {
        _mm512_min_ps(a, b)
    }
    #[inline(always)]
    unsafe fn ldexp(p: __m512, n: __m512) -> __m512 {
        _mm512_scalef_ps(p, n)
    }
    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        _mm512_div_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul_add(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn gather(base: *const f32, offsets: &[i32; LANES]) -> __m512 {
        _mm512_i32gather_ps::<4>(indices(offsets), base)
    }
    #[inline(always)]
    unsafe fn gather_masked(base: *const f32, offsets: &[i32; LANES], mask: u16) -> __m512 {
        _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, indices(offsets), base)
    }
    #[inline(always)]
    unsafe fn scatter_masked(base: *mut f32, offsets: &[i32; LANES], mask: u16, v: __m512) {
        _mm512_mask_i32scatter_ps::<4>(base.cast(), mask, indices(offsets), v)
    }
    #[inline(always)]
    unsafe fn load_rows_of_8(p: *const f32, stride: usize) -> __m512 {
        let low = _mm256_castps_pd(_mm256_loadu_ps(p));
        let high = _mm256_castps_pd(_mm256_loadu_ps(p.add(stride)));
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castpd256_pd512(low), high))
    }
    #[inline(always)]
    unsafe fn load_rows_of_4(p: *const f32, stride: usize) -> __m512 {
        let v = _mm512_castps128_ps512(_mm_loadu_ps(p));
        let v = _mm512_insertf32x4::<1>(v, _mm_loadu_ps(p.add(stride)));
        let v = _mm512_insertf32x4::<2>(v, _mm_loadu_ps(p.add(2 * stride)));
        _mm512_insertf32x4::<3>(v, _mm_loadu_ps(p.add(3 * stride)))
    }
    #[inline(always)]
    unsafe fn even_odd(a: __m512, b: __m512) -> (__m512, __m512) {
        (_mm512_permutex2var_ps(a, indices(&EVEN), b), _mm512_permutex2var_ps(a, indices(&ODD), b))
    }
    #[inline(always)]
    unsafe fn interleave(a: __m512, b: __m512) -> (__m512, __m512) {
        (
            _mm512_permutex2var_ps(a, indices(&INTERLEAVE_LOW), b),
            _mm512_permutex2var_ps(a, indices(&INTERLEAVE_HIGH), b),
        )
    }
    #[inline(always)]
    unsafe fn load_quads(p: *const f32, offsets: &[usize; 4]) -> __m512 {
        let v = _mm512_castps128_ps512(_mm_loadu_ps(p.add(offsets[0])));
        let v = _mm512_insertf32x4::<1>(v, _mm_loadu_ps(p.add(offsets[1])));
        let v = _mm512_insertf32x4::<2>(v, _mm_loadu_ps(p.add(offsets[2])));
        _mm512_insertf32x4::<3>(v, _mm_loadu_ps(p.add(offsets[3])))
    }
    #[inline(always)]
    unsafe fn store_quads(p: *mut f32, offsets: &[usize; 4], blocks: usize, v: __m512) {
        let quads = [
            _mm512_castps512_ps128(v),
            _mm512_extractf32x4_ps::<1>(v),
            _mm512_extractf32x4_ps::<2>(v),
            _mm512_extractf32x4_ps::<3>(v),
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
    unsafe fn transpose_quads(x: [__m512; 4]) -> [__m512; 4] {
        // `_MM_TRANSPOSE4_PS` in each 128-bit lane.
        let (ab_low, cd_low) = (_mm512_unpacklo_ps(x[0], x[1]), _mm512_unpacklo_ps(x[2], x[3]));
        let (ab_high, cd_high) = (_mm512_unpackhi_ps(x[0], x[1]), _mm512_unpackhi_ps(x[2], x[3]));
        [
            _mm512_shuffle_ps::<0b01_00_01_00>(ab_low, cd_low),
            _mm512_shuffle_ps::<0b11_10_11_10>(ab_low, cd_low),
            _mm512_shuffle_ps::<0b01_00_01_00>(ab_high, cd_high),
            _mm512_shuffle_ps::<0b11_10_11_10>(ab_high, cd_high),
        ]
    }
}
