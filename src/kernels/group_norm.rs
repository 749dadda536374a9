//! Group normalisation with an optional fused SiLU on the CPU (float32): one pass for the statistics
//! and one for normalise + affine (+ SiLU) per (image, group), groups spread over rayon's threads.
//! candle's own group norm is about a dozen full passes over the tensor, plus one more for the SiLU.

// The vector loops index fixed-size arrays (see `affine`).
#![allow(clippy::needless_range_loop)]

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::f32_inputs;
use super::isa::{multiversion, Isa};
use super::simd::{silu_vector, with_simd, Simd, LANES};

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
        let eps = self.eps;
        let silu = self.epilogue == Epilogue::Silu;
        let layout = GroupLayout { spatial, rows, width, pad, silu };
        let chunks = out.spare_capacity_mut()[..out_len].par_chunks_mut(out_group_len).zip(x.par_chunks(group_len));
        chunks.enumerate().for_each(|(i, (dst, src))| {
            let g = i % self.groups;
            let (mean, var) = mean_and_variance(src);
            let rstd = 1.0 / (var + eps).sqrt();
            let channels = g * per_group..(g + 1) * per_group;
            let group = GroupAffine { weight: &w[channels.clone()], bias: &b[channels], mean, rstd };
            normalize_group(dst, src, &group, layout);
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

/// One group's statistics and its channels' affine parameters.
struct GroupAffine<'a> {
    weight: &'a [f32],
    bias: &'a [f32],
    mean: f64,
    rstd: f64,
}

/// One group's output planes (every element of `dst`, borders included): each channel's
/// `x · w·rstd + (b − mean·w·rstd)`, then SiLU when asked, on explicit vectors of the active level.
/// One dispatch per group, not per row.
fn normalize_group(dst: &mut [MaybeUninit<f32>], src: &[f32], group: &GroupAffine, layout: GroupLayout) {
    let isa = Isa::active();
    #[cfg(test)]
    crate::kernels::isa::LAST_DISPATCH.with(|last| last.set(Some(isa)));
    // SAFETY: `active()` only returns levels the CPU supports.
    with_simd!(isa, S => unsafe {
        S::vectorize(
            #[inline(always)]
            || match layout.silu {
                true => normalize_group_at::<S, true>(dst, src, group, layout),
                false => normalize_group_at::<S, false>(dst, src, group, layout),
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
    group: &GroupAffine,
    layout: GroupLayout,
) {
    let GroupLayout { spatial, rows, width, pad, .. } = layout;
    let GroupAffine { weight: w, bias: b, mean, rstd } = *group;
    let out_width = width + 2 * pad;
    let out_plane = (rows + 2 * pad) * out_width;
    for (c, (plane, src)) in dst.chunks_exact_mut(out_plane).zip(src.chunks_exact(spatial)).enumerate() {
        let scale = (w[c] as f64 * rstd) as f32;
        let shift = (b[c] as f64 - mean * w[c] as f64 * rstd) as f32;
        if pad == 0 {
            affine::<S, SILU>(plane, src, scale, shift);
            continue;
        }
        let (top, rest) = plane.split_at_mut(pad * out_width);
        let (body, bottom) = rest.split_at_mut(rows * out_width);
        zero(top);
        zero(bottom);
        if width >= LANES {
            for (out_row, row) in body.chunks_exact_mut(out_width).zip(src.chunks_exact(width)) {
                affine::<S, SILU>(bordered(out_row, pad), row, scale, shift);
            }
            continue;
        }
        // Rows shorter than a vector (8×8 and 4×4 maps) would fill a vector's lanes by half or a
        // quarter: normalise a block of whole rows contiguously, then copy each row into its border.
        let rows_per_block = ROW_BLOCK / width.max(1);
        let mut normalised = [MaybeUninit::<f32>::uninit(); ROW_BLOCK];
        for (out_rows, block) in body.chunks_mut(rows_per_block * out_width).zip(src.chunks(rows_per_block * width)) {
            let normalised = &mut normalised[..block.len()];
            affine::<S, SILU>(normalised, block, scale, shift);
            for (out_row, row) in out_rows.chunks_exact_mut(out_width).zip(normalised.chunks_exact(width)) {
                bordered(out_row, pad).copy_from_slice(row);
            }
        }
    }
}

/// Floats normalised at a time for maps narrower than a vector: a few KiB, in L1.
const ROW_BLOCK: usize = 1024;

/// The middle of an output row with a zero border of `pad` on each side: writes the border, returns
/// the rest for the caller to fill.
#[inline(always)]
fn bordered(out_row: &mut [MaybeUninit<f32>], pad: usize) -> &mut [MaybeUninit<f32>] {
    let width = out_row.len() - 2 * pad;
    let (left, rest) = out_row.split_at_mut(pad);
    let (middle, right) = rest.split_at_mut(width);
    zero(left);
    zero(right);
    middle
}

#[inline(always)]
fn zero(dst: &mut [MaybeUninit<f32>]) {
    // SAFETY: all-zero bytes are the float 0.0; the range is `dst`.
    unsafe { dst.as_mut_ptr().write_bytes(0, dst.len()) };
}

multiversion! {
    /// The group's mean and (biased) variance, in two passes: the sum, then the squared deviations
    /// from the mean. Each pass adds in float32 vectors within a block of [`STATS_BLOCK`] floats (16
    /// values per lane, 4 accumulators for the adder's latency) and in float64 across blocks, so
    /// the error stays that of a 16-term float32 sum per block: about 1e-6 relative to the group's
    /// variance, for any offset of the mean (the one-pass `E[x²] − E[x]²` loses digits as the mean
    /// grows against the spread). (A float64 loop left to the compiler came out as scalar
    /// conversions and adds, about 3 cycles per element.)
    fn mean_and_variance(xs: &[f32]) -> (f64, f64) {
        let n = xs.len() as f64;
        let sum = blocked_sum::<false>(xs, 0.0);
        let mean = sum / n;
        let squares = blocked_sum::<true>(xs, mean as f32);
        (mean, squares / n)
    }
}

/// Floats per float32 block of [`mean_and_variance`].
const STATS_BLOCK: usize = 1024;

/// `Σ x` (or `Σ (x − center)²` when `SQUARE`), float32 within blocks, float64 across them.
#[inline(always)]
fn blocked_sum<const SQUARE: bool>(xs: &[f32], center: f32) -> f64 {
    const ACCUMULATORS: usize = 4 * LANES;
    let mut total = 0f64;
    for block in xs.chunks(STATS_BLOCK) {
        let mut acc = [0f32; ACCUMULATORS];
        let mut vectors = block.chunks_exact(ACCUMULATORS);
        for chunk in &mut vectors {
            let chunk: &[f32; ACCUMULATORS] = chunk.try_into().expect("a whole chunk");
            for i in 0..ACCUMULATORS {
                acc[i] += stats_term::<SQUARE>(chunk[i], center);
            }
        }
        let mut tail = 0f64;
        for &x in vectors.remainder() {
            tail += f64::from(stats_term::<SQUARE>(x, center));
        }
        let mut block_total = 0f64;
        for a in acc {
            block_total += f64::from(a);
        }
        total += block_total + tail;
    }
    total
}

#[inline(always)]
fn stats_term<const SQUARE: bool>(x: f32, center: f32) -> f32 {
    if SQUARE {
        (x - center) * (x - center)
    } else {
        x
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

    #[test]
    fn padded_output_is_the_padded_norm() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (2, 6, 5, 7), &dev).unwrap();
        let w = Tensor::randn(1f32, 0.2, 6, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, 6, &dev).unwrap();
        let plain = group_norm_cpu(&x, &w, &b, 3, 1e-6, Epilogue::Silu).unwrap().unwrap();
        for pad in [1, 2] {
            let padded = group_norm_padded_cpu(&x, &w, &b, 3, 1e-6, Epilogue::Silu, pad).unwrap().unwrap();
            let expected = plain.pad_with_zeros(2, pad, pad).unwrap().pad_with_zeros(3, pad, pad).unwrap();
            assert_eq!(padded.dims(), expected.dims());
            let diff = (padded - &expected).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(diff, 0.0);
        }
    }
}
