//! F(4×4, 3×3): 4×4 output tiles from 6×6 input patches, 36 transformed points, with the
//! interpolation points 0, 1, −1, ½, −2 (and ∞), which make float32 about 2.5× more accurate than
//! Lavin & Gray's 0, ±1, ±2 (measured against float64 on 256-channel layers; see Barabasz et al.,
//! "Error analysis and improving the accuracy of Winograd convolution", 2020):
//! `Bᵀ = [[1, −3/2, −2, 3/2, 1, 0], [0, −1, ½, 5/2, 1, 0], [0, 1, −5/2, ½, 1, 0], [0, −2, −1, 2, 1, 0],
//! [0, ½, −1, −½, 1, 0], [0, 1, −3/2, −2, 3/2, 1]]`,
//! `G = [[1, 0, 0], [⅓, ⅓, ⅓], [−⅓, ⅓, −⅓], [−16/15, −8/15, −4/15], [1/15, −2/15, 4/15], [0, 0, 1]]`,
//! `Aᵀ = [[1, 1, 1, 1, 1, 0], [0, 1, −1, ½, −2, 0], [0, 1, 1, ¼, 4, 0], [0, 1, −1, ⅛, −8, 1]]`.
//!
//! Only for maps whose height is a multiple of 4 and width a multiple of 16 ([`applies`], every UNet
//! level from 16×16 up): then every tile is whole and each 4-lane block of a vector is 4 consecutive
//! tiles of one row. A patch row of those 4 tiles is 18 consecutive floats; loading it as 4 + 4 blocks
//! of 4 and transposing each 4×4 block ([`Simd::transpose_quads`]) gives the patches' columns as
//! vectors with contiguous loads only (no gathers), and the output's pixels go back the same way.
//!
//! `U` is built from the layer's F(2×2) `U` on the first call that runs F(4×4), and kept.

// Inside `Simd::vectorize` the transforms avoid closures (see `microkernel`): index loops over the
// small arrays, a `match` instead of `Option::map`.
#![allow(clippy::needless_range_loop, clippy::manual_map)]

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::super::microkernel::{finish, MR};
use super::super::padding::{repad, PlaneLayout};
use super::weights::{WinogradWeights, POINTS as F2_POINTS};
use super::{drive, Filters, Problem, Strides, Transform};
use crate::kernels::simd::{Simd, LANES};
use crate::kernels::SendPtr;
use crate::profile;

/// Transformed points per tile: a 6×6 patch.
const POINTS: usize = 36;

/// Whether F(4×4) can compute an `h × w` map (see the module doc); elsewhere a Winograd layer runs
/// F(2×2), whatever it asks for.
pub fn applies(h: usize, w: usize) -> bool {
    h >= 4 && h.is_multiple_of(4) && w >= 16 && w.is_multiple_of(16)
}

/// Runs the convolution into `out` (`batch · c_out · h · w` floats, all written).
///
/// # Safety
/// The CPU supports `S`'s level; `applies(h, w)`; `out` is the whole output.
pub(super) unsafe fn run<S: Simd>(p: &Problem, out: SendPtr) {
    let (c_in, c_out) = (p.weights.c_in, p.weights.c_out);
    let (h, w) = (p.call.h, p.call.w);
    debug_assert!(applies(h, w));
    let owned_input;
    let data = if p.call.prepadded {
        p.call.x
    } else {
        let src = PlaneLayout::bordered(h, w, 0);
        let dst = PlaneLayout { rows: h + 2, columns: w + 2, border: 1 };
        owned_input = repad(p.call.x, p.call.batch * c_in, h, w, src, dst);
        &owned_input[..]
    };
    let plan = Plan {
        p,
        data,
        padded_w: w + 2,
        input_plane: (h + 2) * (w + 2),
        output_plane: h * w,
        tiles_w: w / 4,
        tiles_per_image: (h / 4) * (w / 4),
    };
    let u = p.weights.f4(|weights| {
        profile::time("conv2d.winograd_filters", || {
            // SAFETY: `S`'s level per the caller; `transform_filters` writes every element of every panel.
            unsafe {
                crate::memory::filled_by(c_out.div_ceil(MR) * POINTS * c_in * MR, |u| {
                    transform_filters::<S>(weights, u)
                })
            }
        })
    });
    let filters = Filters { data: u, c_in, c_out, points: POINTS };
    // SAFETY: per the caller; `filters` is this layer's F(4×4) `U`.
    unsafe { drive::<S, _>(&plan, &filters, out) }
}

/// Filters per block of the filter transform: the block's 16 source and 36 transformed rows stay
/// in L1 (26 KiB).
const FILTER_BLOCK: usize = 128;

/// F(4×4)'s `U = G g Gᵀ` into `u` (`[panel][ξ][C_in][MR]`, every element written), each filter `g`
/// recovered from F(2×2)'s `U`. Both layouts hold a panel's points as runs of `C_in · MR` floats; a
/// block of each run is copied in, transformed 16 filters at a time, and copied out. (Transforming in place, straight
/// across the 52 runs, ran 30× slower: with power-of-two channel counts the runs are a multiple of
/// 4 KiB apart, so every load and store of one step lands in the same L1 set.)
unsafe fn transform_filters<S: Simd>(weights: &WinogradWeights, u: &mut [MaybeUninit<f32>]) {
    let run = weights.c_in * MR;
    let source = weights.packed();
    u.par_chunks_mut(POINTS * run).enumerate().for_each(|(panel, dst)| {
        let src = &source[panel * F2_POINTS * run..][..F2_POINTS * run];
        // SAFETY: `S`'s level per the caller; the lanes stay inside the block buffers.
        unsafe {
            S::vectorize(
                #[inline(always)]
                || {
                    let mut block = [0f32; F2_POINTS * FILTER_BLOCK];
                    let mut transformed = [0f32; POINTS * FILTER_BLOCK];
                    let mut n0 = 0;
                    while n0 < run {
                        let count = FILTER_BLOCK.min(run - n0);
                        for point in 0..F2_POINTS {
                            block[point * FILTER_BLOCK..][..count].copy_from_slice(&src[point * run + n0..][..count]);
                        }
                        let mut n = 0;
                        while n < count {
                            let (from, to) = (block.as_ptr().add(n), transformed.as_mut_ptr().add(n));
                            transform_filter_lanes::<S>(from, FILTER_BLOCK, to, FILTER_BLOCK);
                            n += LANES;
                        }
                        for point in 0..POINTS {
                            let row = &transformed[point * FILTER_BLOCK..][..count];
                            let to = &mut dst[point * run + n0..][..count];
                            // A copy, not a closure over the elements (see the note above).
                            std::ptr::copy_nonoverlapping(row.as_ptr(), to.as_mut_ptr().cast::<f32>(), count);
                        }
                        n0 += count;
                    }
                },
            )
        }
    });
}

/// 16 filters: F(2×2)'s 16 points from `src + ξ · src_stride` to F(4×4)'s 36 at `dst + ξ · dst_stride`.
#[inline(always)]
unsafe fn transform_filter_lanes<S: Simd>(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    let mut u = [S::zero(); F2_POINTS];
    for point in 0..F2_POINTS {
        u[point] = S::load(src.add(point * src_stride));
    }
    // F(2×2)'s `U = G₂ g G₂ᵀ` with `G₂ = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]`: row i of
    // `t = G₂ g` is (U[i][0], U[i][1] − U[i][2], U[i][3]), and `g`'s rows are t₀, t₁ − t₂, t₃.
    let mut t = [[S::zero(); 3]; 4];
    for i in 0..4 {
        t[i] = [u[4 * i], S::sub(u[4 * i + 1], u[4 * i + 2]), u[4 * i + 3]];
    }
    let mut g = [t[0], [S::zero(); 3], t[3]];
    for kx in 0..3 {
        g[1][kx] = S::sub(t[1][kx], t[2][kx]);
    }
    // `G g`, column by column, then `(G g) Gᵀ`, row by row.
    let mut columns = [[S::zero(); 3]; 6];
    for kx in 0..3 {
        let column = g_times::<S>(g[0][kx], g[1][kx], g[2][kx]);
        for i in 0..6 {
            columns[i][kx] = column[i];
        }
    }
    for i in 0..6 {
        let row = g_times::<S>(columns[i][0], columns[i][1], columns[i][2]);
        for j in 0..6 {
            S::store(dst.add((6 * i + j) * dst_stride), row[j]);
        }
    }
}

/// `G (a, b, c)ᵀ`.
#[inline(always)]
unsafe fn g_times<S: Simd>(a: S::V, b: S::V, c: S::V) -> [S::V; 6] {
    let zero = S::zero();
    let sum = S::add(a, c);
    let third = S::splat(1.0 / 3.0);
    [
        a,
        S::mul_add(S::add(sum, b), third, zero),
        S::mul_add(S::sub(b, sum), third, zero),
        S::mul_add(
            a,
            S::splat(-16.0 / 15.0),
            S::mul_add(b, S::splat(-8.0 / 15.0), S::mul_add(c, S::splat(-4.0 / 15.0), zero)),
        ),
        S::mul_add(
            a,
            S::splat(1.0 / 15.0),
            S::mul_add(b, S::splat(-2.0 / 15.0), S::mul_add(c, S::splat(4.0 / 15.0), zero)),
        ),
        c,
    ]
}

/// One call's tiling over its padded input (`[B][C_in][h + 2][w + 2]`).
struct Plan<'a> {
    p: &'a Problem<'a>,
    data: &'a [f32],
    padded_w: usize,
    input_plane: usize,
    output_plane: usize,
    tiles_w: usize,
    tiles_per_image: usize,
}

/// 16 tiles as 4 blocks of 4 consecutive tiles of one row (of any image).
#[derive(Clone, Copy)]
struct QuadVector {
    /// Each block's image.
    images: [usize; 4],
    /// Offset of each block's first patch (top-left element) in a channel of its image's padded input.
    input: [usize; 4],
    /// Offset of each block's first output pixel in a channel of its image's output.
    output: [usize; 4],
    /// Blocks that hold tiles (the first ones); the others repeat block 0's offsets and store nothing.
    blocks: usize,
}

impl Transform for Plan<'_> {
    const POINTS: usize = POINTS;
    const GEMM_OP: &'static str = "conv2d.winograd_gemm.f4";
    type Vector = QuadVector;

    fn tiles(&self) -> usize {
        self.p.call.batch * self.tiles_per_image
    }

    fn vector(&self, v: usize) -> QuadVector {
        let mut vector = QuadVector { images: [0; 4], input: [0; 4], output: [0; 4], blocks: 0 };
        for q in 0..4 {
            let first = 16 * v + 4 * q;
            if first >= self.tiles() {
                break;
            }
            let (image, tile) = (first / self.tiles_per_image, first % self.tiles_per_image);
            let (ty, tx) = (tile / self.tiles_w, tile % self.tiles_w);
            vector.images[q] = image;
            vector.input[q] = 4 * ty * self.padded_w + 4 * tx;
            vector.output[q] = 4 * ty * self.p.call.w + 4 * tx;
            vector.blocks = q + 1;
        }
        for q in vector.blocks..4 {
            (vector.images[q], vector.input[q], vector.output[q]) =
                (vector.images[0], vector.input[0], vector.output[0]);
        }
        vector
    }

    fn is_empty(vector: &QuadVector) -> bool {
        vector.blocks == 0
    }

    /// `V = Bᵀ d B` for one channel: each patch row's 6 columns (from two transposed loads of 4 × 4
    /// floats: columns 0–3 and 2–5), combined along the row, then the rows combined per column.
    #[inline(always)]
    unsafe fn transform_input<S: Simd>(&self, vector: &QuadVector, ci: usize, dst: *mut f32, point_stride: usize) {
        let c_in = self.p.weights.c_in;
        let mut base = [0usize; 4];
        for q in 0..4 {
            base[q] = (vector.images[q] * c_in + ci) * self.input_plane + vector.input[q];
        }
        // The last block's patches end at column 4·3 + 5 = 17 of its 18 floats, inside the padded row.
        let data = self.data.as_ptr();
        let mut rows = [[S::zero(); 6]; 6];
        for i in 0..6 {
            let row = data.add(i * self.padded_w);
            let mut quads = [S::zero(); 4];
            for t in 0..4 {
                quads[t] = S::load_quads(row.add(4 * t), &base);
            }
            let low = S::transpose_quads(quads);
            for t in 0..4 {
                quads[t] = S::load_quads(row.add(2 + 4 * t), &base);
            }
            let high = S::transpose_quads(quads);
            rows[i] = combine_input::<S>([low[0], low[1], low[2], low[3], high[2], high[3]]);
        }
        for k in 0..6 {
            let column = combine_input::<S>([rows[0][k], rows[1][k], rows[2][k], rows[3][k], rows[4][k], rows[5][k]]);
            for l in 0..6 {
                S::store(dst.add((6 * l + k) * point_stride), column[l]);
            }
        }
    }

    /// `Y = Aᵀ M A` for `channels`, then the epilogue; each output row's 4 pixel vectors are transposed
    /// back into 4 consecutive pixels per tile.
    #[inline(always)]
    unsafe fn transform_output<S: Simd>(
        &self,
        vector: &QuadVector,
        channels: Range<usize>,
        m: &[f32],
        strides: &Strides,
        out: SendPtr,
    ) {
        let call = &self.p.call;
        let (c_out, w) = (self.p.weights.c_out, call.w);
        let mut one_image = true;
        for q in 1..4 {
            one_image &= vector.images[q] == vector.images[0];
        }
        for co in channels {
            let m = m[co * strides.product_row..].as_ptr();
            // Aᵀ along each row of M, then along each column of the result.
            let mut rows = [[S::zero(); 4]; 6];
            for l in 0..6 {
                let mut x = [S::zero(); 6];
                for k in 0..6 {
                    x[k] = S::load(m.add((6 * l + k) * strides.product_point));
                }
                rows[l] = combine_output::<S>(x);
            }
            let mut pixels = [[S::zero(); 4]; 4];
            for dx in 0..4 {
                let column =
                    combine_output::<S>([rows[0][dx], rows[1][dx], rows[2][dx], rows[3][dx], rows[4][dx], rows[5][dx]]);
                for dy in 0..4 {
                    pixels[dy][dx] = column[dy];
                }
            }
            let bias = if !call.per_image_bias {
                S::splat(call.bias[co])
            } else if one_image {
                S::splat(call.bias[vector.images[0] * c_out + co])
            } else {
                let mut lanes = [0f32; LANES];
                for lane in 0..LANES {
                    lanes[lane] = call.bias[vector.images[lane / 4] * c_out + co];
                }
                S::load(lanes.as_ptr())
            };
            let mut base = [0usize; 4];
            for q in 0..4 {
                base[q] = (vector.images[q] * c_out + co) * self.output_plane + vector.output[q];
            }
            for dy in 0..4 {
                let mut row = pixels[dy];
                for dx in 0..4 {
                    row[dx] = S::add(row[dx], bias);
                }
                let tiles = S::transpose_quads(row);
                for t in 0..4 {
                    let offset = dy * w + 4 * t;
                    let residual = match call.residual {
                        Some(residual) => Some(S::load_quads(residual.as_ptr().add(offset), &base)),
                        None => None,
                    };
                    let value = finish::<S>(tiles[t], residual, call.output_scale);
                    S::store_quads(out.get().add(offset), &base, vector.blocks, value);
                }
            }
        }
    }
}

/// `Bᵀ x` for one row (or column) of six.
#[inline(always)]
unsafe fn combine_input<S: Simd>(x: [S::V; 6]) -> [S::V; 6] {
    let (p, q) = (S::sub(x[3], x[1]), S::sub(x[4], x[2]));
    let k = S::splat;
    [
        S::mul_add(k(1.5), p, S::mul_add(k(-2.0), x[2], S::add(x[0], x[4]))),
        S::mul_add(k(2.5), x[3], S::mul_add(k(0.5), x[2], S::sub(x[4], x[1]))),
        S::mul_add(k(0.5), x[3], S::mul_add(k(-2.5), x[2], S::add(x[4], x[1]))),
        S::mul_add(k(2.0), p, q),
        S::mul_add(k(-0.5), p, q),
        S::mul_add(k(-2.0), x[3], S::mul_add(k(1.5), q, S::add(x[1], x[5]))),
    ]
}

/// `Aᵀ x` for one row (or column) of six.
#[inline(always)]
unsafe fn combine_output<S: Simd>(x: [S::V; 6]) -> [S::V; 4] {
    let (sum, difference) = (S::add(x[1], x[2]), S::sub(x[1], x[2]));
    let k = S::splat;
    [
        S::add(S::add(x[0], sum), S::add(x[3], x[4])),
        S::mul_add(k(-2.0), x[4], S::mul_add(k(0.5), x[3], difference)),
        S::mul_add(k(4.0), x[4], S::mul_add(k(0.25), x[3], sum)),
        S::mul_add(k(-8.0), x[4], S::mul_add(k(0.125), x[3], S::add(difference, x[5]))),
    ]
}
