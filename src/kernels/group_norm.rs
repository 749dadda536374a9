//! Group normalisation with an optional fused SiLU on the CPU (float32): two passes for the
//! statistics and one for normalise + affine (+ SiLU) per (image, group), all on explicit vectors of
//! the active level inside one dispatch, groups spread over rayon's threads in tasks of at least
//! [`MIN_TASK_FLOATS`]. The output can carry the zero border a following convolution reads.
//! candle's own group norm is about a dozen full passes over the tensor, plus one more for the SiLU.

// The vector loops index fixed-size arrays (see `affine`).
#![allow(clippy::needless_range_loop)]

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::isa::Isa;
use super::simd::{silu_vector, with_simd, Simd, LANES};
use super::{f32_inputs, zero_fill};

/// What to apply after the affine transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    None,
    Silu,
}

struct GroupNormOp {
    groups: usize,
    eps: f64,
    epilogue: Epilogue,
    /// Zero border written around each [H, W] plane of the output (for a following convolution).
    pad: usize,
}

/// `group_norm(x) · weight + bias`, then the epilogue. `x`: [B, C, …]; `weight`, `bias`: [C], float32.
/// Returns `None` when the fast path does not apply (not a float32 CPU tensor), so the caller falls back.
pub fn group_norm_cpu(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    epilogue: Epilogue,
) -> Result<Option<Tensor>> {
    group_norm_padded_cpu(x, weight, bias, groups, eps, epilogue, 0)
}

/// [`group_norm_cpu`] for `x`: [B, C, H, W], written with a zero border of `pad` around each plane:
/// [B, C, H + 2·pad, W + 2·pad], the input a padded convolution reads, without a separate padding copy.
pub fn group_norm_padded_cpu(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    epilogue: Epilogue,
    pad: usize,
) -> Result<Option<Tensor>> {
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 || x.rank() < 3 || (pad > 0 && x.rank() != 4) {
        return Ok(None);
    }
    let x = x.contiguous()?;
    Ok(Some(x.apply_op3_no_bwd(weight, bias, &GroupNormOp { groups, eps, epilogue, pad })?))
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [x, w, b] = f32_inputs([(s1, l1), (s2, l2), (s3, l3)], self.name())?;
        let dims = l1.dims();
        let (batch, channels) = (dims[0], dims[1]);
        let spatial: usize = dims[2..].iter().product();
        if self.groups == 0 || channels % self.groups != 0 || w.len() != channels || b.len() != channels {
            candle_core::bail!("group-norm: {} groups, {} weights for {channels} channels", self.groups, w.len());
        }
        // Rows of the output planes: [H, W] with a border of `pad`, or one flat row without padding.
        let pad = self.pad;
        let (rows, width) = if pad > 0 { (dims[2], dims[3]) } else { (1, spatial) };
        let (out_rows, out_width) = (rows + 2 * pad, width + 2 * pad);
        let out_plane = out_rows * out_width;
        let per_group = channels / self.groups;
        let (group_len, out_group_len) = (per_group * spatial, per_group * out_plane);
        let out_len = batch * channels * out_plane;
        // Every element is written below; not zero-filling first saves a pass over memory.
        let mut out = Vec::<f32>::with_capacity(out_len);
        let layout = GroupLayout { spatial, rows, width, pad, silu: self.epilogue == Epilogue::Silu };
        // Read here, not in the tasks: a level forced on this thread (`Isa::run_at`) must reach them.
        let isa = Isa::active();
        #[cfg(test)]
        crate::kernels::isa::LAST_DISPATCH.with(|last| last.set(Some(isa)));
        // Small maps (a 4×4 group is 128 floats at batch 1) would be a task per few hundred floats.
        let groups_per_task = MIN_TASK_FLOATS.div_ceil(group_len.max(1));
        let chunks = out.spare_capacity_mut()[..out_len].par_chunks_mut(out_group_len).zip(x.par_chunks(group_len));
        chunks.enumerate().with_min_len(groups_per_task).for_each(|(i, (dst, src))| {
            let g = i % self.groups;
            let channels = g * per_group..(g + 1) * per_group;
            let group = GroupParams { weight: &w[channels.clone()], bias: &b[channels], eps: self.eps };
            normalize_group(isa, dst, src, &group, layout);
        });
        // SAFETY: the chunks above cover all `out_len` elements, each written once (zero or `affine`).
        unsafe { out.set_len(out_len) };
        let shape = if pad > 0 { Shape::from((batch, channels, out_rows, out_width)) } else { l1.shape().clone() };
        Ok((CpuStorage::F32(out), shape))
    }
}

/// How one group's planes lie in the input and the output.
#[derive(Clone, Copy)]
struct GroupLayout {
    /// Input floats per channel.
    spatial: usize,
    /// Rows and row width of a channel (one row of `spatial` without padding).
    rows: usize,
    width: usize,
    /// The zero border written around each output plane.
    pad: usize,
    silu: bool,
}

/// One group's channels' affine parameters.
struct GroupParams<'a> {
    weight: &'a [f32],
    bias: &'a [f32],
    eps: f64,
}

/// Floats of input per task at the least.
const MIN_TASK_FLOATS: usize = 16 * 1024;

/// One group's output planes (every element of `dst`, borders included): the group's statistics,
/// then each channel's `x · w·rstd + (b − mean·w·rstd)`, then SiLU when asked, on explicit vectors
/// of level `isa`. One dispatch per group, not per row.
fn normalize_group(isa: Isa, dst: &mut [MaybeUninit<f32>], src: &[f32], group: &GroupParams, layout: GroupLayout) {
    // SAFETY: `isa` came from `Isa::active()`, which only returns levels the CPU supports.
    with_simd!(isa, S => unsafe {
        S::vectorize(
            #[inline(always)]
            || {
                let (mean, var) = mean_and_variance::<S>(src);
                let rstd = 1.0 / (var + group.eps).sqrt();
                match layout.silu {
                    true => normalize_group_at::<S, true>(dst, src, group, mean, rstd, layout),
                    false => normalize_group_at::<S, false>(dst, src, group, mean, rstd, layout),
                }
            },
        )
    })
}

/// [`normalize_group`] at level `S`, SiLU when `SILU`.
///
/// # Safety
/// Inside [`Simd::vectorize`] of a level the CPU supports.
#[inline(always)]
unsafe fn normalize_group_at<S: Simd, const SILU: bool>(
    dst: &mut [MaybeUninit<f32>],
    src: &[f32],
    group: &GroupParams,
    mean: f64,
    rstd: f64,
    layout: GroupLayout,
) {
    let GroupLayout { spatial, rows, width, pad, .. } = layout;
    let GroupParams { weight: w, bias: b, .. } = *group;
    let out_width = width + 2 * pad;
    let out_plane = (rows + 2 * pad) * out_width;
    for (c, (plane, src)) in dst.chunks_exact_mut(out_plane).zip(src.chunks_exact(spatial)).enumerate() {
        let scale = (w[c] as f64 * rstd) as f32;
        let shift = (b[c] as f64 - mean * w[c] as f64 * rstd) as f32;
        if pad == 0 {
            affine::<S, SILU>(plane, src, scale, shift);
            continue;
        }
        // The top and bottom borders first: their vector stores may run into the body, which the
        // rows below then overwrite.
        zero_borders::<S>(plane, pad * out_width);
        let body = &mut plane[pad * out_width..(pad + rows) * out_width];
        if width >= LANES {
            for (out_row, row) in body.chunks_exact_mut(out_width).zip(src.chunks_exact(width)) {
                affine::<S, SILU>(bordered(out_row, pad), row, scale, shift);
            }
        } else if width.is_multiple_of(4) {
            quad_rows::<S, SILU>(body, src, width, pad, scale, shift);
        } else {
            // Rows of other short widths: normalise a block of whole rows contiguously, then copy
            // each row into its border.
            let rows_per_block = ROW_BLOCK / width.max(1);
            let mut normalised = [MaybeUninit::<f32>::uninit(); ROW_BLOCK];
            for (out_rows, block) in body.chunks_mut(rows_per_block * out_width).zip(src.chunks(rows_per_block * width))
            {
                let normalised = &mut normalised[..block.len()];
                affine::<S, SILU>(normalised, block, scale, shift);
                for (out_row, row) in out_rows.chunks_exact_mut(out_width).zip(normalised.chunks_exact(width)) {
                    bordered(out_row, pad).copy_from_slice(row);
                }
            }
        }
    }
}

/// Floats normalised at a time for short rows of other widths: a few KiB, in L1.
const ROW_BLOCK: usize = 1024;

/// One channel's rows of 4, 8 or 12 (the 4×4 and 8×8 maps) into their bordered output rows: each
/// vector is four quads of consecutive input, normalised together and stored quad by quad at its
/// rows' offsets. (A vector per row would fill a half or a quarter of its lanes; normalising into a
/// scratch block and copying rows out cost a `memcpy` call per row.)
///
/// # Safety
/// Inside [`Simd::vectorize`] of a level the CPU supports; `width % 4 == 0`, `body` is `src`'s rows
/// of `width` with a border of `pad` on each side.
#[inline(always)]
unsafe fn quad_rows<S: Simd, const SILU: bool>(
    body: &mut [MaybeUninit<f32>],
    src: &[f32],
    width: usize,
    pad: usize,
    scale: f32,
    shift: f32,
) {
    debug_assert!(width.is_multiple_of(4) && width > 0);
    let out_width = width + 2 * pad;
    debug_assert_eq!(body.len() / out_width * width, src.len());
    for out_row in body.chunks_exact_mut(out_width) {
        bordered(out_row, pad);
    }
    let (scale, shift) = (S::splat(scale), S::splat(shift));
    let (to, quads_per_row, quads) = (body.as_mut_ptr().cast::<f32>(), width / 4, src.len() / 4);
    // The next quad's row and quad within it.
    let (mut row, mut column) = (0, 0);
    for first in (0..quads).step_by(4) {
        let count = (quads - first).min(4);
        let mut offsets = [0usize; 4];
        for offset in &mut offsets[..count] {
            *offset = row * out_width + pad + 4 * column;
            column += 1;
            if column == quads_per_row {
                (row, column) = (row + 1, 0);
            }
        }
        let mask = if count == 4 { u16::MAX } else { (1u16 << (4 * count)) - 1 };
        // SAFETY: the masked lanes lie in `src`; each quad's offset is inside its row's middle.
        unsafe {
            let y = S::mul_add(S::load_masked(src.as_ptr().add(4 * first), mask), scale, shift);
            let y = if SILU { silu_vector::<S>(y) } else { y };
            S::store_quads(to, &offsets, count, y);
        }
    }
}

/// Zeroes the first and last `border` floats of `plane` (a channel's top and bottom border rows)
/// with whole-vector stores, which may also write zeros into the rows between: the caller writes
/// those afterwards. (Through `write_bytes` these were two `memset` calls per channel, which on a
/// 4×4 map cost more than its 16 values' arithmetic.)
///
/// # Safety
/// Inside [`Simd::vectorize`] of a level the CPU supports.
#[inline(always)]
unsafe fn zero_borders<S: Simd>(plane: &mut [MaybeUninit<f32>], border: usize) {
    let len = plane.len();
    if len < LANES || border == 0 {
        zero_fill(&mut plane[..border]);
        zero_fill(&mut plane[len - border..]);
        return;
    }
    let to = plane.as_mut_ptr().cast::<f32>();
    // SAFETY: every store covers [start, start + LANES) with start in [0, len − LANES].
    unsafe {
        for start in (0..border).step_by(LANES) {
            S::store(to.add(start.min(len - LANES)), S::zero());
        }
        for end in (len - border + 1..=len).rev().step_by(LANES) {
            S::store(to.add(end.max(LANES) - LANES), S::zero());
        }
    }
}

/// The middle of an output row with a zero border of `pad` on each side: writes the border, returns
/// the rest for the caller to fill.
#[inline(always)]
fn bordered(out_row: &mut [MaybeUninit<f32>], pad: usize) -> &mut [MaybeUninit<f32>] {
    let width = out_row.len() - 2 * pad;
    let (left, rest) = out_row.split_at_mut(pad);
    let (middle, right) = rest.split_at_mut(width);
    zero_fill(left);
    zero_fill(right);
    middle
}

/// The group's mean and (biased) variance, in two passes: the sum, then the squared deviations
/// from the mean. Each pass adds in float32 vectors within a block of [`STATS_BLOCK`] floats (16
/// values per lane, 4 accumulators for the adder's latency) and in float64 across blocks, so the
/// error stays that of a 16-term float32 sum per block: about 1e-6 relative to the group's
/// variance, for any offset of the mean (the one-pass `E[x²] − E[x]²` loses digits as the mean
/// grows against the spread). The vectors are explicit: what the compiler made of an array of
/// accumulators folded them into float64 one lane at a time, a chain of 64 dependent adds per block.
///
/// # Safety
/// Inside [`Simd::vectorize`] of a level the CPU supports.
#[inline(always)]
unsafe fn mean_and_variance<S: Simd>(xs: &[f32]) -> (f64, f64) {
    let n = xs.len() as f64;
    // SAFETY: per this function's contract.
    let sum = unsafe { blocked_sum::<S, false>(xs, 0.0) };
    let mean = sum / n;
    // SAFETY: as above.
    let squares = unsafe { blocked_sum::<S, true>(xs, mean as f32) };
    (mean, squares / n)
}

/// Floats per float32 block of [`mean_and_variance`].
const STATS_BLOCK: usize = 1024;

/// `Σ x` (or `Σ (x − center)²` when `SQUARE`), float32 within blocks, float64 across them.
///
/// # Safety
/// As [`mean_and_variance`].
#[inline(always)]
unsafe fn blocked_sum<S: Simd, const SQUARE: bool>(xs: &[f32], center: f32) -> f64 {
    let c = S::splat(center);
    let mut total = 0f64;
    for block in xs.chunks(STATS_BLOCK) {
        let mut acc = [S::zero(); 4];
        let mut chunks = block.chunks_exact(4 * LANES);
        for chunk in &mut chunks {
            for (a, acc) in acc.iter_mut().enumerate() {
                // SAFETY: `chunk` holds four whole vectors.
                *acc = unsafe { stats_term::<S, SQUARE>(S::load(chunk.as_ptr().add(a * LANES)), c, *acc) };
            }
        }
        let mut vectors = chunks.remainder().chunks_exact(LANES);
        for vector in &mut vectors {
            // SAFETY: a whole vector.
            acc[0] = unsafe { stats_term::<S, SQUARE>(S::load(vector.as_ptr()), c, acc[0]) };
        }
        let acc = S::add(S::add(acc[0], acc[1]), S::add(acc[2], acc[3]));
        let mut lanes = [0f32; LANES];
        // SAFETY: `lanes` holds one vector.
        unsafe { S::store(lanes.as_mut_ptr(), acc) };
        let mut block_total = 0f64;
        for lane in lanes {
            block_total += f64::from(lane);
        }
        for &x in vectors.remainder() {
            block_total += f64::from(if SQUARE { (x - center) * (x - center) } else { x });
        }
        total += block_total;
    }
    total
}

/// `acc + x`, or `acc + (x − center)²` when `SQUARE` (a plain function: a closure would not take on
/// the level's target features inside `vectorize`).
///
/// # Safety
/// As [`mean_and_variance`].
#[inline(always)]
unsafe fn stats_term<S: Simd, const SQUARE: bool>(x: S::V, center: S::V, acc: S::V) -> S::V {
    // SAFETY: per this function's contract.
    unsafe {
        if SQUARE {
            let d = S::sub(x, center);
            S::mul_add(d, d, acc)
        } else {
            S::add(acc, x)
        }
    }
}

/// `dst = src · scale + shift`, then SiLU when `SILU`; writes every element of `dst` (as long as
/// `src`), the last partial vector masked.
///
/// # Safety
/// Inside [`Simd::vectorize`] of a level the CPU supports.
#[inline(always)]
unsafe fn affine<S: Simd, const SILU: bool>(dst: &mut [MaybeUninit<f32>], src: &[f32], scale: f32, shift: f32) {
    debug_assert_eq!(dst.len(), src.len());
    let (scale, shift) = (S::splat(scale), S::splat(shift));
    let (to, from, len) = (dst.as_mut_ptr().cast::<f32>(), src.as_ptr(), src.len().min(dst.len()));
    let mut i = 0;
    while i < len {
        let mask = if len - i >= LANES { u16::MAX } else { (1u16 << (len - i)) - 1 };
        // SAFETY: the masked lanes lie inside both slices.
        unsafe {
            let y = S::mul_add(S::load_masked(from.add(i), mask), scale, shift);
            let y = if SILU { silu_vector::<S>(y) } else { y };
            S::store_masked(to.add(i), mask, y);
        }
        i += LANES;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    /// At every level the CPU runs (the statistics and the affine pass are multiversioned).
    #[test]
    fn matches_candle_group_norm_and_silu() {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 3.0, (2, 8, 5, 7), &dev).unwrap() + 1.5).unwrap();
        let w = Tensor::randn(1f32, 0.2, 8, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, 8, &dev).unwrap();
        let reference = candle_nn::GroupNorm::new(w.clone(), b.clone(), 8, 4, 1e-5).unwrap().forward(&x).unwrap();
        let silu_reference = candle_nn::ops::silu(&reference).unwrap();
        let max_diff =
            |a: &Tensor, b: &Tensor| (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        crate::kernels::isa::for_each_level(|isa| {
            let ours = group_norm_cpu(&x, &w, &b, 4, 1e-5, Epilogue::None).unwrap().unwrap();
            let diff = max_diff(&ours, &reference);
            assert!(diff < 1e-5, "{isa}: {diff}");
            let ours = group_norm_cpu(&x, &w, &b, 4, 1e-5, Epilogue::Silu).unwrap().unwrap();
            let diff = max_diff(&ours, &silu_reference);
            assert!(diff < 1e-5, "{isa} silu: {diff}");
        });
    }

    /// Every row shape the padded writer has: rows of 4, 8 and 12 stored as quads (with a last
    /// partial vector where rows × width is not a multiple of 16), other short widths through the
    /// block copy, and rows of a vector or more; borders of 1 and 2, on planes shorter than a vector.
    #[test]
    fn padded_output_is_the_padded_norm() {
        let dev = Device::Cpu;
        let shapes = [(5, 7), (4, 4), (8, 8), (3, 8), (5, 4), (2, 12), (1, 4), (16, 16), (3, 20), (32, 32), (2, 2)];
        crate::kernels::isa::for_each_level(|isa| {
            for (rows, width) in shapes {
                let x = Tensor::randn(0f32, 2.0, (2, 6, rows, width), &dev).unwrap();
                let w = Tensor::randn(1f32, 0.2, 6, &dev).unwrap();
                let b = Tensor::randn(0f32, 0.1, 6, &dev).unwrap();
                for epilogue in [Epilogue::Silu, Epilogue::None] {
                    let plain = group_norm_cpu(&x, &w, &b, 3, 1e-6, epilogue).unwrap().unwrap();
                    for pad in [1, 2] {
                        let padded = group_norm_padded_cpu(&x, &w, &b, 3, 1e-6, epilogue, pad).unwrap().unwrap();
                        let expected = plain.pad_with_zeros(2, pad, pad).unwrap().pad_with_zeros(3, pad, pad).unwrap();
                        assert_eq!(padded.dims(), expected.dims());
                        let diff = (padded - &expected).unwrap().abs().unwrap().max_all().unwrap();
                        let diff = diff.to_scalar::<f32>().unwrap();
                        assert_eq!(diff, 0.0, "{isa} {rows}×{width} pad {pad} {epilogue:?}");
                    }
                }
            }
        });
    }
}
