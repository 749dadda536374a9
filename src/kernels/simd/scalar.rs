//! The portable level: the 16 lanes as an array, each operation a loop the compiler may vectorise
//! for the target's baseline (SSE2 on x86-64, NEON on aarch64).

use super::{Simd, LANES};
use crate::kernels::conv2d::microkernel::{tile_loop, Tile};
use crate::kernels::isa::Isa;

#[derive(Clone, Copy)]
pub(crate) struct Scalar;

type V = [f32; LANES];

#[inline(always)]
fn map2(a: V, b: V, f: impl Fn(f32, f32) -> f32) -> V {
    std::array::from_fn(|i| f(a[i], b[i]))
}

// SAFETY: plain Rust, runs on every CPU; pointer validity is the caller's, as the trait says.
unsafe impl Simd for Scalar {
    type V = V;
    const ISA: Isa = Isa::Scalar;
    // as for AVX2: narrow vectors, bound by arithmetic.
    const KC: usize = 128;
    const F4_MIN_TILES: usize = 16;

    #[inline(always)]
    unsafe fn vectorize<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[inline(always)]
    unsafe fn microkernel(kc: usize, a: *const f32, b: *const f32, tile: &Tile, out: *mut f32) {
        // 4 rows × 16 columns: 64 accumulators, what 16 SSE registers hold.
        tile_loop::<Self, 4, 1>(kc, a, b, tile, out)
    }

    #[inline(always)]
    unsafe fn zero() -> V {
        [0.0; LANES]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> V {
        [x; LANES]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> V {
        p.cast::<V>().read_unaligned()
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: V) {
        p.cast::<V>().write_unaligned(v)
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, mask: u16) -> V {
        std::array::from_fn(|i| if mask >> i & 1 == 1 { *p.add(i) } else { 0.0 })
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, mask: u16, v: V) {
        for (i, &x) in v.iter().enumerate() {
            if mask >> i & 1 == 1 {
                *p.add(i) = x;
            }
        }
    }
    #[inline(always)]
    unsafe fn add(a: V, b: V) -> V {
        map2(a, b, |x, y| x + y)
    }
    #[inline(always)]
    unsafe fn sub(a: V, b: V) -> V {
        map2(a, b, |x, y| x - y)
    }
    #[inline(always)]
    unsafe fn mul(a: V, b: V) -> V {
        map2(a, b, |x, y| x * y)
    }
    #[inline(always)]
    unsafe fn max(a: V, b: V) -> V {
        map2(a, b, |x, y| if x > y { x } else { y })
    }
    #[inline(always)]
    unsafe fn min(a: V, b: V) -> V {
        map2(a, b, |x, y| if x < y { x } else { y })
    }
    #[inline(always)]
    unsafe fn ldexp(p: V, n: V) -> V {
        // A NaN `n` (from a NaN input) casts to 0; its `p` is NaN too.
        map2(p, n, |p, n| p * f32::from_bits(((n as i32 + 127) as u32) << 23))
    }
    #[inline(always)]
    unsafe fn div(a: V, b: V) -> V {
        map2(a, b, |x, y| x / y)
    }
    #[inline(always)]
    unsafe fn mul_add(a: V, b: V, c: V) -> V {
        // Not `f32::mul_add`: without an FMA unit that is a libm call per lane.
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    unsafe fn gather(base: *const f32, offsets: &[i32; LANES]) -> V {
        std::array::from_fn(|i| *base.offset(offsets[i] as isize))
    }
    #[inline(always)]
    unsafe fn gather_masked(base: *const f32, offsets: &[i32; LANES], mask: u16) -> V {
        std::array::from_fn(|i| if mask >> i & 1 == 1 { *base.offset(offsets[i] as isize) } else { 0.0 })
    }
    #[inline(always)]
    unsafe fn scatter_masked(base: *mut f32, offsets: &[i32; LANES], mask: u16, v: V) {
        for (i, &x) in v.iter().enumerate() {
            if mask >> i & 1 == 1 {
                *base.offset(offsets[i] as isize) = x;
            }
        }
    }
    #[inline(always)]
    unsafe fn load_rows_of_8(p: *const f32, stride: usize) -> V {
        std::array::from_fn(|i| *p.add(i / 8 * stride + i % 8))
    }
    #[inline(always)]
    unsafe fn load_rows_of_4(p: *const f32, stride: usize) -> V {
        std::array::from_fn(|i| *p.add(i / 4 * stride + i % 4))
    }
    #[inline(always)]
    unsafe fn even_odd(a: V, b: V) -> (V, V) {
        let pick =
            |parity: usize| std::array::from_fn(|i| if i < 8 { a[2 * i + parity] } else { b[2 * i - 16 + parity] });
        (pick(0), pick(1))
    }
    #[inline(always)]
    unsafe fn interleave(a: V, b: V) -> (V, V) {
        let zip =
            |base: usize| std::array::from_fn(|i| if i.is_multiple_of(2) { a[base + i / 2] } else { b[base + i / 2] });
        (zip(0), zip(8))
    }
    #[inline(always)]
    unsafe fn load_quads(p: *const f32, offsets: &[usize; 4]) -> V {
        std::array::from_fn(|i| *p.add(offsets[i / 4] + i % 4))
    }
    #[inline(always)]
    unsafe fn store_quads(p: *mut f32, offsets: &[usize; 4], blocks: usize, v: V) {
        for (i, &x) in v.iter().enumerate().take(4 * blocks) {
            *p.add(offsets[i / 4] + i % 4) = x;
        }
    }
    #[inline(always)]
    unsafe fn transpose_quads(x: [V; 4]) -> [V; 4] {
        std::array::from_fn(|i| std::array::from_fn(|lane| x[lane % 4][lane / 4 * 4 + i]))
    }
}
