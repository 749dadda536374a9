//! Spatial self-attention on the CPU (float32), channel-first and without transposes:
//!
//! 1. `qkv = W_qkv · x + b_qkv`, the to_q/to_k/to_v weights fused into one `[3·inner, C]` matrix and
//!    run as a 1×1 convolution by the direct convolution kernel (packed at load, at the CPU's
//!    instruction-set level), giving `[B, 3·inner, HW]`: head `h`'s q, k and v are `[head_dim, HW]`
//!    row blocks of it.
//! 2. Per (image, head, block of query pixels): scores `scale · qᵀ k` by one gemm reading q and k
//!    through strides, stored query-index-fastest (`[HW, rows]`, column-major for both products, so
//!    gemm never has to transpose them while packing); a float32 softmax over keys, shifted by the
//!    maximum, vectorised across queries, with f64 sums; then `out = v · Pᵀ` by a second gemm,
//!    written straight into the `[B, inner, HW]` attention output and normalised there (1/Σ per
//!    query). Query blocks keep the score buffer at `rows × HW` floats (sized to stay in L2), so memory
//!    grows linearly with the image area, not with its square.
//! 3. `y = (W_out · out + b_out + residual) / rescale`, the same kernel with the residual and the
//!    rescale fused into its store, written in `[B, C, H, W]` order.
//!
//! Work is spread over rayon's threads as independent tasks when there are enough of them; otherwise
//! gemm splits each product across the threads itself.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::conv2d::{pointwise, Conv2dWeight, ConvKernel};
use super::isa::{multiversion, Isa};
use super::simd;
use super::{f32_inputs, on_cpu_f32, SendPtr};
use crate::profile;

/// Most query rows per attention task: enough for gemm to run at speed.
const MAX_QUERY_ROWS: usize = 256;
/// Fewest query rows per task when blocks are split further to give every thread work.
const MIN_QUERY_ROWS: usize = 64;
/// Score elements per task (2 MiB of float32), so that they stay in L2 cache between the products
/// and the softmax passes: bounds the query block for large images.
const SCORE_BUDGET: usize = 1 << 19;
/// Fewest query rows per task whatever the image size, for gemm efficiency.
const MIN_BUDGET_ROWS: usize = 16;

/// The attention's weights in the layouts the kernel uses: the projections packed for the direct
/// convolution kernel (as 1×1 convolutions), the biases as float32 vectors.
#[derive(Debug, Clone)]
pub struct AttentionWeights {
    channels: usize,
    heads: usize,
    head_dim: usize,
    /// `[3·inner, C]` as a 1×1 convolution: to_q, to_k and to_v stacked.
    w_qkv: Conv2dWeight,
    /// `[3·inner]`.
    b_qkv: Vec<f32>,
    /// `[C, inner]` as a 1×1 convolution.
    w_out: Conv2dWeight,
    /// `[C]`.
    b_out: Vec<f32>,
}

impl AttentionWeights {
    /// From the four linear layers' `(weight, bias)`: q, k, v `[inner, C]`, `[inner]` and out
    /// `[C, inner]`, `[C]`. `None` unless they are all float32 CPU tensors.
    pub fn new(
        channels: usize,
        heads: usize,
        head_dim: usize,
        qkv: [(&Tensor, &Tensor); 3],
        out: (&Tensor, &Tensor),
    ) -> Result<Option<Self>> {
        let all = qkv.iter().flat_map(|&(w, b)| [w, b]).chain([out.0, out.1]);
        if !all.clone().all(on_cpu_f32) {
            return Ok(None);
        }
        let inner = heads * head_dim;
        let expect_dims = |t: &Tensor, dims: &[usize]| -> Result<()> {
            if t.dims() != dims {
                candle_core::bail!("attention: weight of shape {:?}, expected {dims:?}", t.dims());
            }
            Ok(())
        };
        let flat = |t: &Tensor, dims: &[usize]| -> Result<Vec<f32>> {
            expect_dims(t, dims)?;
            t.flatten_all()?.to_vec1::<f32>()
        };
        let mut b_qkv = Vec::with_capacity(3 * inner);
        for (w, b) in qkv {
            expect_dims(w, &[inner, channels])?;
            b_qkv.extend(flat(b, &[inner])?);
        }
        expect_dims(out.0, &[channels, inner])?;
        let pointwise = |w: Tensor| {
            let (rows, columns) = w.dims2()?;
            Conv2dWeight::with_kernel(w.reshape((rows, columns, 1, 1))?, ConvKernel::Direct, Isa::active())
        };
        let w_qkv = pointwise(Tensor::cat(&[qkv[0].0, qkv[1].0, qkv[2].0], 0)?)?;
        let (w_out, b_out) = (pointwise(out.0.clone())?, flat(out.1, &[channels])?);
        Ok(Some(Self { channels, heads, head_dim, w_qkv, b_qkv, w_out, b_out }))
    }

    fn inner(&self) -> usize {
        self.heads * self.head_dim
    }
}

struct AttentionOp<'a> {
    weights: &'a AttentionWeights,
    rescale: f32,
}

/// `(to_out(attention(to_q(x), to_k(x), to_v(x))) + residual) / rescale` for `x`, `residual`:
/// [B, C, H, W] (`x` already group-normed). `None` when the fast path does not apply (not float32 CPU
/// tensors), so the caller falls back.
pub fn attention_cpu(
    x: &Tensor,
    residual: &Tensor,
    weights: &AttentionWeights,
    rescale_output_factor: f64,
) -> Result<Option<Tensor>> {
    if !on_cpu_f32(x) || !on_cpu_f32(residual) || x.rank() != 4 {
        return Ok(None);
    }
    let op = AttentionOp { weights, rescale: rescale_output_factor as f32 };
    Ok(Some(x.contiguous()?.apply_op2_no_bwd(&residual.contiguous()?, &op)?))
}

impl CustomOp2 for AttentionOp<'_> {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let [x, residual] = f32_inputs([(s1, l1), (s2, l2)], self.name())?;
        let (batch, channels, h, w) = l1.shape().dims4()?;
        if l2.dims() != l1.dims() || channels != self.weights.channels {
            candle_core::bail!(
                "attention: input {:?}, residual {:?}, weights for {} channels",
                l1.dims(),
                l2.dims(),
                self.weights.channels
            );
        }
        let y = attention_f32(x, residual, batch, h * w, self.weights, self.rescale)?;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
}

/// The whole block on slices: `x`, `residual` are [B, C, HW]; returns [B, C, HW].
fn attention_f32(
    x: &[f32],
    residual: &[f32],
    batch: usize,
    hw: usize,
    wts: &AttentionWeights,
    rescale: f32,
) -> Result<Vec<f32>> {
    if batch == 0 || hw == 0 {
        return Ok(Vec::new());
    }
    let qkv = profile::time("attention.projections", || pointwise(&wts.w_qkv, x, batch, hw, &wts.b_qkv, None, 1.0))?;
    let attn = profile::time("attention.core", || attend(&qkv, batch, hw, wts));
    drop(qkv);
    // The residual and the rescale are fused into the output projection's store (timed with it).
    profile::time("attention.projections", || {
        pointwise(&wts.w_out, &attn, batch, hw, &wts.b_out, Some(residual), rescale)
    })
}

/// Scaled dot-product attention per head: `qkv` [B, 3·inner, HW] → [B, inner, HW].
fn attend(qkv: &[f32], batch: usize, hw: usize, wts: &AttentionWeights) -> Vec<f32> {
    let (heads, d, inner) = (wts.heads, wts.head_dim, wts.inner());
    debug_assert_eq!(qkv.len(), batch * 3 * inner * hw);
    let threads = rayon::current_num_threads();
    let mut rows = MAX_QUERY_ROWS.min(SCORE_BUDGET / hw).max(MIN_BUDGET_ROWS).min(hw);
    // Too few tasks for the threads: split the queries further, while blocks stay large enough.
    let tasks_at = |rows: usize| batch * heads * hw.div_ceil(rows);
    while tasks_at(rows) < threads && rows / 2 >= MIN_QUERY_ROWS {
        rows /= 2;
    }
    let blocks = hw.div_ceil(rows);
    let tasks = tasks_at(rows);
    let par = gemm_parallelism(tasks, threads);
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = Uninit::new(batch * inner * hw);
    let out_ptr = out.ptr();
    let run = |scratch: &mut Scratch, task: usize| {
        let (img_head, block) = (task / blocks, task % blocks);
        let (img, head) = (img_head / heads, img_head % heads);
        let i0 = block * rows;
        let nq = rows.min(hw - i0);
        let base = img * 3 * inner * hw + head * d * hw;
        let (q, k, v) = (&qkv[base..], &qkv[base + inner * hw..], &qkv[base + 2 * inner * hw..]);
        let scores = &mut scratch.scores;
        scores.clear();
        scores.reserve(nq * hw);
        // Sᵀ[j, i] = scale · Σ_d k[d, j] q[d, i0 + i], stored [hw × nq] (query index fastest), so that
        // both products see it column-major, the order gemm's kernels take without transposing.
        // SAFETY: S is nq × hw in `scores`' capacity; q, k are [d × hw] blocks of `qkv` with row
        // stride hw, read at most up to column i0 + nq ≤ hw. With read_dst false gemm only writes S.
        unsafe {
            gemm::gemm(
                nq,
                hw,
                d,
                scores.as_mut_ptr(),
                nq as isize,
                1,
                false,
                q.as_ptr().add(i0),
                hw as isize,
                1,
                k.as_ptr(),
                1,
                hw as isize,
                0.0,
                scale,
                false,
                false,
                false,
                par,
            );
            scores.set_len(nq * hw);
        }
        scratch.maxes.resize(nq, 0.0);
        scratch.sums.resize(nq, 0.0);
        scratch.inv_sums.resize(nq, 0.0);
        softmax_columns(scores, &mut scratch.maxes, &mut scratch.sums, &mut scratch.inv_sums);
        // out[d, i0 + i] = Σ_j v[d, j] E[j, i], then each column scaled by 1 / Σ_j E[j, i].
        // SAFETY: the destination is rows [head·d, head·d + d), columns [i0, i0 + nq) of image `img`'s
        // [inner × hw] output, owned by this task; v is [d × hw] with row stride hw; E is [hw × nq].
        let dst = unsafe { out_ptr.get().add(img * inner * hw + head * d * hw + i0) };
        // SAFETY: as above: all three operands stay inside their buffers for these sizes and strides.
        unsafe {
            gemm::gemm(
                d,
                nq,
                hw,
                dst,
                1,
                hw as isize,
                false,
                v.as_ptr(),
                1,
                hw as isize,
                scores.as_ptr(),
                1,
                nq as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
        for dd in 0..d {
            // SAFETY: row dd of this task's block, written by the gemm just above.
            let row = unsafe { std::slice::from_raw_parts_mut(dst.add(dd * hw), nq) };
            scale_by(row, &scratch.inv_sums);
        }
    };
    if tasks > 1 && threads > 1 {
        (0..tasks).into_par_iter().for_each_init(Scratch::default, run);
    } else {
        let mut scratch = Scratch::default();
        (0..tasks).for_each(|task| run(&mut scratch, task));
    }
    // SAFETY: the tasks covered every (image, head, query block).
    unsafe { out.assume_init() }
}

/// Per-task buffers of [`attend`], reused across the tasks a thread runs.
#[derive(Default)]
struct Scratch {
    /// Scores, then their exponentials: [HW × query rows].
    scores: Vec<f32>,
    maxes: Vec<f32>,
    sums: Vec<f64>,
    inv_sums: Vec<f32>,
}

multiversion! {
    /// The float32 softmax of each column of `s` ([rows × columns], row-major, `columns = maxes.len()`),
    /// shifted by the column's maximum but not normalised: leaves `exp(s − max)` in `s` and
    /// 1 / Σ exp per column in `inv_sums`. Works along rows, so it vectorises across columns. The sums
    /// run in f64 (`sums` is scratch), so that long rows of scores lose no accuracy to them.
    fn softmax_columns(s: &mut [f32], maxes: &mut [f32], sums: &mut [f64], inv_sums: &mut [f32]) {
        let columns = maxes.len();
        maxes.fill(f32::NEG_INFINITY);
        for row in s.chunks_exact(columns) {
            for (m, &v) in maxes.iter_mut().zip(row) {
                *m = if v > *m { v } else { *m };
            }
        }
        sums.fill(0.0);
        for row in s.chunks_exact_mut(columns) {
            for ((v, &m), sum) in row.iter_mut().zip(maxes.iter()).zip(sums.iter_mut()) {
                *v = simd::exp(*v - m);
                *sum += *v as f64;
            }
        }
        inv_sums.iter_mut().zip(sums.iter()).for_each(|(inv, &sum)| *inv = (1.0 / sum) as f32);
    }
}

multiversion! {
    /// `row[i] *= factors[i]`.
    fn scale_by(row: &mut [f32], factors: &[f32]) {
        row.iter_mut().zip(factors).for_each(|(v, &f)| *v *= f);
    }
}

fn gemm_parallelism(tasks: usize, threads: usize) -> gemm::Parallelism {
    // Fewer tasks than threads: let gemm split each product across the threads instead.
    if tasks >= threads || threads == 1 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(threads)
    }
}

/// A float32 buffer of a fixed length whose elements are all written, through raw pointers, before
/// it is read: no zero-filling of memory that is about to be overwritten.
struct Uninit {
    buf: Vec<f32>,
    len: usize,
}

impl Uninit {
    fn new(len: usize) -> Self {
        Self { buf: Vec::with_capacity(len), len }
    }

    fn ptr(&mut self) -> SendPtr {
        SendPtr(self.buf.as_mut_ptr())
    }

    /// # Safety
    /// Every one of the `len` elements must have been written.
    unsafe fn assume_init(mut self) -> Vec<f32> {
        // SAFETY: the capacity is at least `len`, and the caller wrote them all.
        unsafe { self.buf.set_len(self.len) };
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{Device, Tensor};
    use candle_nn::VarBuilder;

    use super::*;
    use crate::attention::AttentionBlock;

    /// The kernel against candle's ops, through the model-level block: one and several heads, a head
    /// width that leaves channels over (12 channels, head_dim 8 → one head of 8), odd image sizes,
    /// several query blocks (40×40), group norm on and off, rescale ≠ 1, batches of 1 to 3.
    #[test]
    fn matches_candle_attention() {
        let dev = Device::Cpu;
        // (batch, channels, head_dim, h, w, norm groups, rescale)
        for &(b, c, d, h, w, groups, rescale) in &[
            (2, 16, 16, 4, 4, Some(4), 1.0),
            (2, 16, 4, 5, 7, Some(8), 1.0),
            (1, 12, 8, 5, 7, None, std::f64::consts::SQRT_2),
            (3, 8, 2, 3, 3, Some(2), 2.0),
            (1, 32, 32, 16, 16, Some(32), 1.0),
            (2, 24, 8, 40, 40, Some(8), 1.0),
            (1, 16, 8, 1, 1, None, 1.0),
        ] {
            let heads = c / d;
            let inner = heads * d;
            let mut ts = HashMap::new();
            let mut put = |name: &str, t: Tensor| ts.insert(name.to_string(), t);
            for p in ["to_q", "to_k", "to_v"] {
                put(&format!("{p}.weight"), Tensor::randn(0f32, 0.4, (inner, c), &dev).unwrap());
                put(&format!("{p}.bias"), Tensor::randn(0f32, 0.2, inner, &dev).unwrap());
            }
            put("to_out.0.weight", Tensor::randn(0f32, 0.3, (c, inner), &dev).unwrap());
            put("to_out.0.bias", Tensor::randn(0f32, 0.2, c, &dev).unwrap());
            put("group_norm.weight", Tensor::randn(1f32, 0.2, c, &dev).unwrap());
            put("group_norm.bias", Tensor::randn(0f32, 0.2, c, &dev).unwrap());
            let vb = VarBuilder::from_tensors(ts, candle_core::DType::F32, &dev);
            let block = AttentionBlock::new(c, d, groups, 1e-6, rescale, vb.clone().into()).unwrap();
            assert!(block.has_cpu_kernel());
            let candle = AttentionBlock::build(c, d, groups, 1e-6, rescale, vb.into(), false).unwrap();
            assert!(!candle.has_cpu_kernel());
            let x = (Tensor::randn(0f32, 2.0, (b, c, h, w), &dev).unwrap() + 0.5).unwrap();
            let reference = candle.forward(&x).unwrap();
            let scale = reference.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
            // The softmax and the norm inside are multiversioned: every level the CPU runs.
            crate::kernels::isa::for_each_level(|isa| {
                let ours = block.forward(&x).unwrap();
                assert_eq!(ours.dims(), reference.dims());
                let diff = (&ours - &reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(diff < 2e-5 * scale, "{b} {c} {d} {h}×{w} {groups:?} {rescale} at {isa}: {diff} (max {scale})");
            });
        }
    }

    /// A block that holds its weights for the CPU kernel only names what it got when handed anything
    /// but float32 (its model never does).
    #[test]
    fn a_fused_block_rejects_other_dtypes() {
        let dev = Device::Cpu;
        let mut ts = HashMap::new();
        for p in ["to_q", "to_k", "to_v", "to_out.0"] {
            ts.insert(format!("{p}.weight"), Tensor::zeros((8, 8), candle_core::DType::F32, &dev).unwrap());
            ts.insert(format!("{p}.bias"), Tensor::zeros(8, candle_core::DType::F32, &dev).unwrap());
        }
        let vb = VarBuilder::from_tensors(ts, candle_core::DType::F32, &dev);
        let block = AttentionBlock::new(8, 8, None, 1e-6, 1.0, vb.into()).unwrap();
        assert!(block.has_cpu_kernel());
        let x = Tensor::zeros((1, 8, 2, 2), candle_core::DType::F64, &dev).unwrap();
        let error = block.forward(&x).unwrap_err().to_string();
        assert!(error.contains("float32") && error.contains("F64"), "{error}");
    }

    #[test]
    fn column_softmax_matches_candle() {
        let dev = Device::Cpu;
        for (rows, columns) in [(1, 1), (5, 3), (16, 17), (37, 2), (300, 40)] {
            let t = (Tensor::randn(0f32, 8.0, (rows, columns), &dev).unwrap() + 40.0).unwrap();
            let reference = candle_nn::ops::softmax_last_dim(&t.t().unwrap().contiguous().unwrap()).unwrap();
            let reference = reference.t().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let input = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            crate::kernels::isa::for_each_level(|isa| {
                let mut ours = input.clone();
                let (mut maxes, mut sums, mut inv_sums) = (vec![0.0; columns], vec![0.0; columns], vec![0.0; columns]);
                softmax_columns(&mut ours, &mut maxes, &mut sums, &mut inv_sums);
                for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
                    let a = a * inv_sums[i % columns];
                    assert!((a - b).abs() < 1e-6, "{rows}×{columns} at {isa}: {a} vs {b}");
                }
            });
        }
    }
}
