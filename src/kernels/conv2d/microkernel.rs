//! The GEMM micro-kernel both convolution kernels share, and the epilogue of every output store.
//!
//! One call computes an `MR × NR` tile, 12 output channels × 32 output columns (two 16-lane vectors),
//! over `kc` reduction steps of a packed weight panel (`[k][MR]`) and a packed column panel (`[k][NR]`).
//! The panels' layout is the same on every level; what a level chooses is the register sub-tile
//! ([`Simd::microkernel`] names it): AVX-512 holds the whole tile in 24 zmm registers, AVX2 covers it
//! with four 6 × 16 sub-tiles of 12 ymm registers (the shape of BLIS' Haswell kernel), the scalar
//! level with 4 × 16 ones.
//!
//! Code that runs inside [`Simd::vectorize`] (this file, and the kernels' task bodies) uses no
//! closures, `array::from_fn` or `Option::map`: each is a function of its own, which the compiler may
//! leave out of line, and one left out of line is compiled without the level's instructions (every
//! intrinsic in it becomes a call). Plain loops and `#[inline(always)]` functions are inlined into the
//! `#[target_feature]` entry point.

// A `match` where clippy would have `Option::map`: see above.
#![allow(clippy::manual_map)]

use std::ops::Range;

use crate::kernels::simd::{Simd, LANES};

/// Output channels per tile.
pub(crate) const MR: usize = 12;
/// Output columns per tile (two vectors).
pub(crate) const NR: usize = 2 * LANES;

/// Where one 16-lane vector of a tile goes: the output offset of its first lane for output channel 0
/// (add `channel · stride` for the others), and which lanes are real columns.
#[derive(Clone, Copy)]
pub(crate) struct VectorTarget {
    pub offset: usize,
    pub mask: u16,
    /// Where this image's biases start (`image · C_out` for a per-image bias, else 0).
    pub bias_offset: usize,
}

/// The (panel, first reduction step) of the call after (`panel`, `k0`), for the drivers' loop order:
/// every panel of `panels` for one pair of column vectors, every pair (`more_pairs` while any is left)
/// for one block of `kc` steps. Its weights are what [`Tile::next_weights`] points at.
pub(crate) fn next_call(panel: usize, panels: &Range<usize>, more_pairs: bool, k0: usize, kc: usize) -> (usize, usize) {
    match (panel + 1 < panels.end, more_pairs) {
        (true, _) => (panel + 1, k0),
        (false, true) => (panels.start, k0),
        (false, false) => (panels.start, k0 + kc),
    }
}

/// The store side of one micro-kernel call.
pub(crate) struct Tile<'a> {
    /// Real output channels in this tile (≤ MR).
    pub rows: usize,
    pub row0: usize,
    /// Distance between consecutive output channels.
    pub stride: usize,
    pub targets: &'a [VectorTarget; 2],
    /// The weight panel the next call reads (anything, when there is none: it is only prefetched):
    /// the reads of the weights run on from one call into the next without a gap.
    pub next_weights: *const f32,
    /// First reduction block: start from the bias (indexed by a target's `bias_offset` + channel)
    /// instead of the stored partial sum.
    pub bias: Option<&'a [f32]>,
    /// Last reduction block: add this, then divide by `output_scale`.
    pub residual: Option<&'a [f32]>,
    pub output_scale: f32,
}

/// The one epilogue of every kernel's final store: `(value + residual) / output_scale`, the order
/// diffusers' resnet uses (`(shortcut + h) / scale`).
#[inline(always)]
pub(crate) unsafe fn finish<S: Simd>(value: S::V, residual: Option<S::V>, output_scale: f32) -> S::V {
    let value = match residual {
        Some(residual) => S::add(residual, value),
        None => value,
    };
    if output_scale != 1.0 {
        S::div(value, S::splat(output_scale))
    } else {
        value
    }
}

/// `tile += A · B` as `ROWS × VECTORS` register sub-tiles (`ROWS` divides `MR`, `VECTORS` is 1 or 2).
/// Rows past `tile.rows` are not computed beyond the sub-tile that holds the last real one, and a second
/// vector that stores nothing (a lone 16-column vector: 4×4 and 8×8 images at batch 1) is skipped.
///
/// # Safety
/// The CPU supports `S`'s level; `a` holds `kc × MR` and `b` `kc × NR` floats; the tile's targets lie
/// inside `out` (and the residual, when given).
#[inline(always)]
pub(crate) unsafe fn tile_loop<S: Simd, const ROWS: usize, const VECTORS: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    tile: &Tile,
    out: *mut f32,
) {
    let vectors = if tile.targets[1].mask == 0 { 1 } else { 2 };
    let mut r0 = 0;
    let mut pass = 0;
    while r0 < tile.rows {
        if VECTORS == 2 && vectors == 2 {
            subtile::<S, ROWS, VECTORS>(kc, a, b, tile, out, r0, 0, pass);
            pass += 1;
        } else {
            for v in 0..vectors {
                subtile::<S, ROWS, 1>(kc, a, b, tile, out, r0, v, pass);
                pass += 1;
            }
        }
        r0 += ROWS;
    }
}

/// What step `step` of pass `pass` over the tile prefetches. The first pass reads the weights from
/// memory and prefetches [`PREFETCH_STEPS`] ahead, on into the next call's panel over its last steps;
/// the second (where the sub-tiles take more than one) runs from L1 and prefetches the rest of the next
/// panel, so that memory stays busy while it computes (at AVX2, whose tile takes two or four passes,
/// the Winograd GEMMs of cifar10-32 at batch 1 waited on the weights in every pass after the first).
#[inline(always)]
fn prefetch_target(a: *const f32, next: *const f32, kc: usize, step: usize, pass: usize) -> Option<*const f32> {
    let ahead = step + PREFETCH_STEPS;
    match pass {
        0 if ahead < kc => Some(a.wrapping_add(ahead * MR)),
        0 => Some(next.wrapping_add((ahead - kc) * MR)),
        1 if ahead < kc => Some(next.wrapping_add(ahead * MR)),
        _ => None,
    }
}

/// How far ahead the weights (`a`) are prefetched, in reduction steps of `MR` floats (1.5 KiB). Each
/// weight panel is read once per call and at batch 1 used for a few columns only, so it streams from
/// L3 or memory, and the hardware prefetchers alone left the loop waiting on it: the prefetch took the
/// Winograd GEMMs of cifar10-32 at batch 1 from 25 to 19.5 ms per forward (2-core Xeon, AVX-512;
/// 16 to 64 steps measured the same).
const PREFETCH_STEPS: usize = 32;

/// Rows `r0..r0 + ROWS` × vectors `v0..v0 + VECTORS` of the tile, the tile's pass number `pass`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn subtile<S: Simd, const ROWS: usize, const VECTORS: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    tile: &Tile,
    out: *mut f32,
    r0: usize,
    v0: usize,
    pass: usize,
) {
    let mut acc = [[S::zero(); VECTORS]; ROWS];
    let panel = a;
    let (a, b) = (a.add(r0), b.add(LANES * v0));
    for step in 0..kc {
        let mut columns = [S::zero(); VECTORS];
        for (v, column) in columns.iter_mut().enumerate() {
            *column = S::load(b.add(step * NR + LANES * v));
        }
        let a = a.add(step * MR);
        if let Some(p) = prefetch_target(panel, tile.next_weights, kc, step, pass) {
            S::prefetch(p);
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            let w = S::splat(*a.add(r));
            for (acc, &column) in acc.iter_mut().zip(&columns) {
                *acc = S::mul_add(w, column, *acc);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate().take(tile.rows - r0) {
        let channel = tile.row0 + r0 + r;
        for (v, &acc) in acc.iter().enumerate() {
            let target = tile.targets[v0 + v];
            if target.mask == 0 {
                continue;
            }
            let offset = target.offset + channel * tile.stride;
            let dst = out.add(offset);
            let value = match tile.bias {
                Some(bias) => S::add(acc, S::splat(bias[target.bias_offset + channel])),
                None => S::add(acc, S::load_masked(dst, target.mask)),
            };
            let residual = match tile.residual {
                Some(residual) => Some(S::load_masked(residual.as_ptr().add(offset), target.mask)),
                None => None,
            };
            S::store_masked(dst, target.mask, finish::<S>(value, residual, tile.output_scale));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_call;

    #[test]
    fn next_call_follows_the_drivers_loop_order() {
        // Blocks of up to 4 steps over 10 (the last one 2), 2 pairs, panels 3..6: the calls in the order
        // the drivers make them.
        let (panels, pairs, k, block) = (3..6, 2, 10, 4);
        let mut calls = Vec::new();
        for k0 in (0..k).step_by(block) {
            let kc = block.min(k - k0);
            for pair in 0..pairs {
                for panel in panels.clone() {
                    calls.push((panel, k0, kc, pair + 1 < pairs));
                }
            }
        }
        for window in calls.windows(2) {
            let ((panel, k0, kc, more_pairs), (next_panel, next_k0, _, _)) = (window[0], window[1]);
            assert_eq!(next_call(panel, &panels, more_pairs, k0, kc), (next_panel, next_k0), "after {:?}", window[0]);
        }
        // After the last call: the first panel at the end of the reduction (only ever prefetched).
        assert_eq!(next_call(5, &panels, false, 8, 2), (3, 10));
    }
}
