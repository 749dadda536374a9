//! Direct convolution as a GEMM: `out[co, px] = bias[co] + Σ_k W[co, k] · cols[k, px]` (+ a residual,
//! ÷ a factor), where `k` runs over (input channel, kernel row, kernel column) and `cols` is the
//! implicit im2col matrix of the (zero-padded) input. Written once over [`Simd`]; every level runs
//! this driver with its own micro-kernel.
//!
//! Compared with im2col followed by a general GEMM, this
//! - never builds the column matrix: each 32-column panel is read straight from the padded input into
//!   the micro-kernel's layout, one L1-sized block of reduction steps at a time (16 consecutive output
//!   pixels of one row are 16 consecutive input floats for a stride-1 convolution, a plain load; short
//!   rows are a few short loads; for a stride-2 convolution the same from twice the span, keeping the
//!   even lanes; other vectors one gather);
//! - packs the weights once, when the model is built, instead of on every call for every image;
//! - initialises the output with the bias and adds a residual and the output scale in the micro-kernel's
//!   store, so the output is written once and never zero-filled;
//! - schedules (column block, output-channel range) tasks over the whole batch, splitting the output
//!   channels too when a layer has few pixels (batch 1, 4×4 and 8×8 layers).

use std::cell::RefCell;

use rayon::prelude::*;

use super::microkernel::{next_call, Tile, VectorTarget, MR, NR};
use super::padding::{repad, PlaneLayout};
use super::{share, Call, Conv2dParams};
use crate::kernels::simd::{Simd, LANES};
use crate::kernels::SendPtr;

/// Column panels (pairs of 16-pixel vectors) per column task: 256 output pixels.
pub(super) const PAIRS_PER_TASK: usize = 8;
/// Largest pre-gathered column matrix (floats) shared between tasks: 1 MiB, half an L2.
const SHARED_COLUMNS_MAX: usize = 1 << 18;
/// Reduction steps per task when a shared column panel is gathered in parts (a few microseconds).
const GATHER_STEPS_PER_TASK: usize = 512;

/// Everything one direct convolution reads: the call, and packed `[C_out, C_in·k·k]` weights.
pub(super) struct Problem<'a> {
    pub call: Call<'a>,
    pub weights: &'a PackedWeights,
    pub params: Conv2dParams,
}

/// A convolution's weights as `[panel][k][MR]`: for each reduction step `k = (ci, ky, kx)`, the MR
/// output channels of a panel side by side (the micro-kernel broadcasts them one by one). Rows past
/// `c_out` are zero. Packed once, when the model is built.
#[derive(Debug)]
pub struct PackedWeights {
    data: Vec<f32>,
    pub(super) c_out: usize,
    pub(super) c_in: usize,
    pub(super) kernel: usize,
}

impl PackedWeights {
    /// `weight`: [c_out, c_in, kernel, kernel], contiguous.
    pub(super) fn new(weight: &[f32], c_out: usize, c_in: usize, kernel: usize) -> Self {
        let k = c_in * kernel * kernel;
        let fill = |data: &mut [std::mem::MaybeUninit<f32>]| {
            // Panels in parallel; within one, write sequentially while reading the MR rows side by side.
            data.par_chunks_mut(k * MR).enumerate().for_each(|(panel, dst)| {
                let rows: Vec<&[f32]> =
                    (panel * MR..((panel + 1) * MR).min(c_out)).map(|row| &weight[row * k..(row + 1) * k]).collect();
                for (kk, step) in dst.chunks_exact_mut(MR).enumerate() {
                    let (loaded, past_c_out) = step.split_at_mut(rows.len());
                    for (d, row) in loaded.iter_mut().zip(&rows) {
                        d.write(row[kk]);
                    }
                    past_c_out.iter_mut().for_each(|d| _ = d.write(0.0));
                }
            });
        };
        // SAFETY: the panels cover the buffer, and each writes all MR rows of each of its k steps.
        let data = unsafe { crate::memory::filled_by(c_out.div_ceil(MR) * k * MR, fill) };
        Self { data, c_out, c_in, kernel }
    }

    /// The packed floats, for tests.
    #[cfg(test)]
    pub(super) fn packed(&self) -> &[f32] {
        &self.data
    }
}

/// Output geometry and how the input is addressed.
struct Geometry {
    out_w: usize,
    /// Output pixels per image.
    pixels: usize,
    /// Reduction length `C_in·k·k`.
    k: usize,
    /// Height and width of the zero-padded input.
    padded_h: usize,
    padded_w: usize,
}

impl Geometry {
    fn new(p: &Problem) -> Self {
        let Conv2dParams { kernel, padding, .. } = p.params;
        // The caller checked the sizes before allocating the output (`CpuConv`, `pointwise`).
        let (out_h, out_w) = p.params.output_size(p.call.h, p.call.w).unwrap_or_default();
        let (padded_h, padded_w) = (p.call.h + 2 * padding, p.call.w + 2 * padding);
        Self { out_w, pixels: out_h * out_w, k: p.weights.c_in * kernel * kernel, padded_h, padded_w }
    }

    /// Input elements per image.
    fn image_len(&self, c_in: usize) -> usize {
        c_in * self.padded_h * self.padded_w
    }
}

/// Runs the convolution into `out` (`batch·c_out·out_h·out_w` floats, all written; the caller may pass
/// uninitialised memory).
///
/// # Safety
/// The CPU supports `S`'s level, and `out` must point to `batch · c_out · out_h · out_w` writable floats.
pub(super) unsafe fn run<S: Simd>(p: &Problem, out: *mut f32) {
    debug_assert!(S::ISA.is_supported(), "{} kernels on a CPU without them", S::ISA);
    let geo = Geometry::new(p);
    let padding = p.params.padding;
    let padded = (padding > 0 && !p.call.prepadded).then(|| {
        let (h, w) = (p.call.h, p.call.w);
        let layout = PlaneLayout::bordered(h, w, padding);
        repad(p.call.x, p.call.batch * p.weights.c_in, h, w, PlaneLayout::bordered(h, w, 0), layout)
    });
    let input = padded.as_deref().unwrap_or(p.call.x);
    let (kernel, c_in) = (p.params.kernel, p.weights.c_in);
    // Offset of reduction step (ci, ky, kx) from the input element under output pixel (oy, ox).
    let mut step_offsets = Vec::with_capacity(geo.k);
    for ci in 0..c_in {
        for ky in 0..kernel {
            for kx in 0..kernel {
                step_offsets.push((ci * geo.padded_h + ky) * geo.padded_w + kx);
            }
        }
    }
    // Vectors never straddle images (a partial last vector per image is masked).
    let vectors_per_image = geo.pixels.div_ceil(LANES);
    let vectors = p.call.batch * vectors_per_image;
    let pairs: Vec<[VectorPlan; 2]> = (0..vectors.div_ceil(2))
        .map(|pair| {
            let plan =
                |v: usize| VectorPlan::new(p, &geo, input, v / vectors_per_image, (v % vectors_per_image) * LANES);
            let first = plan(2 * pair);
            // An odd vector count: the second slot stores nothing, and its columns are not gathered.
            [first, if 2 * pair + 1 < vectors { plan(2 * pair + 1) } else { VectorPlan::empty_like(&first) }]
        })
        .collect();
    let column_tasks = pairs.len().div_ceil(PAIRS_PER_TASK);
    let weight_panels = p.weights.c_out.div_ceil(MR);
    let threads = rayon::current_num_threads();
    let out = SendPtr(out);
    let panel_len = geo.k * NR;
    if column_tasks >= 2 * threads || threads == 1 || pairs.len() * panel_len > SHARED_COLUMNS_MAX {
        // Enough columns: tasks over column blocks, each gathering its own panels block by block from
        // the (cache-resident) input. Too few for the threads: split the output channels as well, each
        // split re-gathering the same columns, which costs less than streaming a big shared copy.
        let splits = if column_tasks >= 2 * threads { 1 } else { (2 * threads).div_ceil(column_tasks) };
        let splits = splits.min(weight_panels);
        let task = |t: usize| {
            let (column_task, split) = (t / splits, t % splits);
            let pairs = &pairs[column_task * PAIRS_PER_TASK..((column_task + 1) * PAIRS_PER_TASK).min(pairs.len())];
            let panels = share(weight_panels, splits, split);
            COLUMNS.with(|buf| {
                let mut buf = buf.borrow_mut();
                let columns = Columns::PerBlock(&mut buf);
                let (geo, step_offsets) = (&geo, &step_offsets[..]);
                let job = Job { p, geo, step_offsets, pairs, columns, weight_panels: panels };
                // SAFETY: `S`'s level per the caller; tasks write disjoint tiles of `out`.
                unsafe {
                    S::vectorize(
                        #[inline(always)]
                        || job.run::<S>(out.get()),
                    )
                }
            });
        };
        (0..column_tasks * splits).into_par_iter().for_each(task);
    } else {
        // Few columns (4×4 and 8×8 layers at batch 1): gather every panel once, over the whole
        // reduction, into a shared buffer that stays in L2; then split the output channels between tasks.
        let mut shared = Vec::<f32>::with_capacity(pairs.len() * panel_len);
        let dst = SendPtr(shared.as_mut_ptr());
        // Fewer pairs than threads (one pair at batch 1): each pair's reduction steps in parts, so that
        // the other threads do not wait for one to gather the whole panel.
        let parts = if pairs.len() >= threads { 1 } else { geo.k.div_ceil(GATHER_STEPS_PER_TASK) };
        (0..pairs.len() * parts).into_par_iter().for_each(|task| {
            let (i, steps) = (task / parts, share(geo.k, parts, task % parts));
            let pair = &pairs[i];
            let step_offsets = &step_offsets[steps.clone()];
            // SAFETY: `S`'s level per the caller; each task fills its own steps of its pair's `k × NR`
            // panel, both halves.
            unsafe {
                S::vectorize(
                    #[inline(always)]
                    || {
                        for (v, plan) in pair.iter().enumerate() {
                            let to = dst.get().add(i * panel_len + steps.start * NR + LANES * v);
                            if plan.target.mask != 0 {
                                gather_vector::<S>(plan, step_offsets, to);
                            } else {
                                // The micro-kernel skips an empty slot's columns: zeros (cheaper than
                                // a gather) only so that the whole buffer is initialised.
                                for step in 0..step_offsets.len() {
                                    S::store(to.add(step * NR), S::zero());
                                }
                            }
                        }
                    },
                )
            }
        });
        // SAFETY: every pair's panel was fully written above.
        unsafe { shared.set_len(pairs.len() * panel_len) };
        let splits = (4 * threads).min(weight_panels);
        (0..splits).into_par_iter().for_each(|split| {
            let panels = share(weight_panels, splits, split);
            let (geo, step_offsets, columns) = (&geo, &step_offsets[..], Columns::Shared(&shared));
            let job = Job { p, geo, step_offsets, pairs: &pairs, columns, weight_panels: panels };
            // SAFETY: as above.
            unsafe {
                S::vectorize(
                    #[inline(always)]
                    || job.run::<S>(out.get()),
                )
            }
        });
    }
}

/// Where a job's packed column panels come from.
enum Columns<'a> {
    /// Gathered one block of reduction steps at a time into this per-thread buffer.
    PerBlock(&'a mut Vec<f32>),
    /// Gathered beforehand over the whole reduction: pair `i`'s panel is `[i·k·NR ..][.. k·NR]`.
    Shared(&'a [f32]),
}

thread_local! {
    /// Each thread's packed column panels, reused across calls.
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One 16-pixel vector of output columns: where its inputs are, and where its outputs go.
#[derive(Clone, Copy)]
struct VectorPlan {
    /// Input element under lane 0 at reduction step 0 (add the step offset).
    input: *const f32,
    lanes: Lanes,
    target: VectorTarget,
}

/// How a vector's 16 lanes lie in the input, cheapest read first.
#[derive(Clone, Copy)]
enum Lanes {
    /// 16 consecutive floats: one load.
    Contiguous,
    /// `16 / width` output rows of `width` (8 or 4) pixels, stride 1: one short load per row, the
    /// rows `row_stride` floats apart.
    Rows { width: usize, row_stride: usize },
    /// Stride 2 (the downsamplers): `16 / width` output rows of `width` (16, 8 or 4) pixels, each read
    /// as the `2 · width` consecutive floats it spans, keeping the even lanes; the rows `row_stride`
    /// floats apart. A row of 16 is one per vector, and its `row_stride` of 16 points at the span's
    /// second half, so rows of 16 and of 8 are both two loads `row_stride` apart. Two to four loads and
    /// a shuffle where a gather costs 16 loads: AVX2's gathers are slow, and this took the downsamplers of cifar10-32 at
    /// batch 1 from 1.33 to 1.09 ms (32×32), 1.19 to 1.02 ms (16×16) and 0.33 to 0.26 ms (8×8) on one
    /// core (`examples/conv_bench`, Zen 3).
    EvenColumns { width: usize, row_stride: usize },
    /// Anything else (other strides, odd widths, partial vectors): one gather at these offsets.
    Gather([i32; 16]),
}

// SAFETY: `input` points into the convolution's input, which is only read while the plans live.
unsafe impl Send for VectorPlan {}
// SAFETY: as above.
unsafe impl Sync for VectorPlan {}

impl VectorPlan {
    fn new(p: &Problem, geo: &Geometry, input: &[f32], image: usize, pixel: usize) -> Self {
        let valid = (geo.pixels - pixel).min(16);
        let stride = p.params.stride;
        let input_offset = |px: usize| {
            let (oy, ox) = (px / geo.out_w, px % geo.out_w);
            image * geo.image_len(p.weights.c_in) + oy * stride * geo.padded_w + ox * stride
        };
        let base = input_offset(pixel);
        // A 1×1 unpadded stride-1 convolution reads pixel p at offset p: any 16 in a row are contiguous.
        let flat = p.params.kernel == 1 && p.params.padding == 0 && stride == 1;
        let one_row = flat || pixel % geo.out_w + 16 <= geo.out_w;
        let whole_rows = pixel.is_multiple_of(geo.out_w) && matches!(geo.out_w, 4 | 8);
        // Stride 2: a row of `n` output pixels spans `2n` input floats from its first, and the last
        // kernel column reads `kernel − 1` further; all of them must lie inside the input row.
        let even_columns =
            |n: usize| stride == 2 && 2 * (pixel % geo.out_w) + 2 * n + p.params.kernel - 1 <= geo.padded_w;
        let lanes = if valid == 16 && stride == 1 && one_row {
            Lanes::Contiguous
        } else if valid == 16 && stride == 1 && whole_rows {
            Lanes::Rows { width: geo.out_w, row_stride: geo.padded_w }
        } else if valid == 16 && one_row && even_columns(16) {
            Lanes::EvenColumns { width: 16, row_stride: LANES }
        } else if valid == 16 && whole_rows && even_columns(geo.out_w) {
            Lanes::EvenColumns { width: geo.out_w, row_stride: 2 * geo.padded_w }
        } else {
            // Masked lanes re-read lane 0. Offsets stay within one image, which `check_lane_offsets` checked
            // is below 2³¹ floats.
            Lanes::Gather(std::array::from_fn(|lane| {
                if lane < valid {
                    (input_offset(pixel + lane) - base) as i32
                } else {
                    0
                }
            }))
        };
        let mask = if valid == 16 { u16::MAX } else { (1u16 << valid) - 1 };
        let c_out = p.weights.c_out;
        let bias_offset = if p.call.per_image_bias { image * c_out } else { 0 };
        let target = VectorTarget { offset: image * c_out * geo.pixels + pixel, mask, bias_offset };
        Self { input: input[base..].as_ptr(), lanes, target }
    }

    /// An empty slot (an odd vector count): reads like `other`, stores nothing.
    fn empty_like(other: &Self) -> Self {
        Self { target: VectorTarget { offset: 0, mask: 0, bias_offset: 0 }, ..*other }
    }
}

/// One task's share: some column vectors, some weight panels.
struct Job<'a> {
    p: &'a Problem<'a>,
    geo: &'a Geometry,
    step_offsets: &'a [usize],
    pairs: &'a [[VectorPlan; 2]],
    columns: Columns<'a>,
    weight_panels: std::ops::Range<usize>,
}

impl Job<'_> {
    /// For each block of reduction steps: gather the column panels, then run every weight panel over
    /// them while they are in cache.
    ///
    /// # Safety
    /// Inside `S::vectorize`; the job's tiles lie inside `out`, and no other job writes them.
    #[inline(always)]
    unsafe fn run<S: Simd>(mut self, out: *mut f32) {
        let (p, k, pairs) = (self.p, self.geo.k, self.pairs);
        if let Columns::PerBlock(buf) = &mut self.columns {
            if buf.len() < pairs.len() * S::KC * NR {
                buf.resize(pairs.len() * S::KC * NR, 0.0);
            }
        }
        let mut k0 = 0;
        while k0 < k {
            let kc = S::KC.min(k - k0);
            if let Columns::PerBlock(buf) = &mut self.columns {
                let steps = &self.step_offsets[k0..k0 + kc];
                for (i, pair) in pairs.iter().enumerate() {
                    for (v, plan) in pair.iter().enumerate() {
                        if plan.target.mask != 0 {
                            gather_vector::<S>(plan, steps, buf[i * kc * NR + LANES * v..].as_mut_ptr());
                        }
                    }
                }
            }
            let (first, last) = (k0 == 0, k0 + kc == k);
            for (i, pair) in pairs.iter().enumerate() {
                let b = match &self.columns {
                    Columns::PerBlock(buf) => buf[i * kc * NR..].as_ptr(),
                    Columns::Shared(shared) => shared[(i * k + k0) * NR..].as_ptr(),
                };
                let targets = [pair[0].target, pair[1].target];
                for panel in self.weight_panels.clone() {
                    let row0 = panel * MR;
                    let a = p.weights.data[(panel * k + k0) * MR..].as_ptr();
                    let (next_panel, next_k0) = next_call(panel, &self.weight_panels, i + 1 < pairs.len(), k0, kc);
                    let tile = Tile {
                        rows: MR.min(p.weights.c_out - row0),
                        row0,
                        stride: self.geo.pixels,
                        targets: &targets,
                        // Past the end after the last call: it is only prefetched.
                        next_weights: p.weights.data.as_ptr().wrapping_add((next_panel * k + next_k0) * MR),
                        bias: if first { Some(p.call.bias) } else { None },
                        residual: if last { p.call.residual } else { None },
                        output_scale: if last { p.call.output_scale } else { 1.0 },
                    };
                    S::microkernel(kc, a, b, &tile, out);
                }
            }
            k0 += kc;
        }
    }
}

/// Writes lane values of `plan` for the given reduction steps into rows of a packed panel (`NR` floats
/// apart): plain loads where its lanes are consecutive floats, a few short loads for whole short rows,
/// else gathers.
#[inline(always)]
unsafe fn gather_vector<S: Simd>(plan: &VectorPlan, steps: &[usize], dst: *mut f32) {
    match plan.lanes {
        Lanes::Contiguous => {
            for (i, &offset) in steps.iter().enumerate() {
                S::store(dst.add(i * NR), S::load(plan.input.add(offset)));
            }
        }
        Lanes::Rows { width: 8, row_stride } => {
            for (i, &offset) in steps.iter().enumerate() {
                S::store(dst.add(i * NR), S::load_rows_of_8(plan.input.add(offset), row_stride));
            }
        }
        Lanes::Rows { width: _, row_stride } => {
            for (i, &offset) in steps.iter().enumerate() {
                S::store(dst.add(i * NR), S::load_rows_of_4(plan.input.add(offset), row_stride));
            }
        }
        Lanes::EvenColumns { width: 16 | 8, row_stride } => {
            for (i, &offset) in steps.iter().enumerate() {
                let p = plan.input.add(offset);
                S::store(dst.add(i * NR), S::even_odd(S::load(p), S::load(p.add(row_stride))).0);
            }
        }
        Lanes::EvenColumns { width: _, row_stride } => {
            for (i, &offset) in steps.iter().enumerate() {
                let p = plan.input.add(offset);
                let (upper, lower) =
                    (S::load_rows_of_8(p, row_stride), S::load_rows_of_8(p.add(2 * row_stride), row_stride));
                S::store(dst.add(i * NR), S::even_odd(upper, lower).0);
            }
        }
        Lanes::Gather(lanes) => {
            for (i, &offset) in steps.iter().enumerate() {
                S::store(dst.add(i * NR), S::gather(plan.input.add(offset), &lanes));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How the first vector of a `size`×`size` input with `c_in` = 1 is read, for a 3×3 kernel.
    fn first_vector_lanes(size: usize, stride: usize, padding: usize) -> Lanes {
        let params = Conv2dParams { kernel: 3, stride, padding };
        let weights = PackedWeights::new(&[0.0; 9], 1, 1, 3);
        let padded = size + 2 * padding;
        let x = vec![0f32; padded * padded];
        let call = Call {
            x: &x,
            bias: &[0.0],
            per_image_bias: false,
            residual: None,
            output_scale: 1.0,
            batch: 1,
            h: size,
            w: size,
            prepadded: true,
        };
        let p = Problem { call, weights: &weights, params };
        let geo = Geometry::new(&p);
        VectorPlan::new(&p, &geo, &x, 0, 0).lanes
    }

    /// The downsamplers' stride-2 vectors take loads of even columns, not gathers, wherever the span
    /// they load lies inside the input row; a span past the row's end gathers.
    #[test]
    fn stride_2_rows_are_read_as_even_columns() {
        let width_and_stride = |lanes| match lanes {
            Lanes::EvenColumns { width, row_stride } => Some((width, row_stride)),
            _ => None,
        };
        assert_eq!(width_and_stride(first_vector_lanes(32, 2, 1)), Some((16, 16)));
        assert_eq!(width_and_stride(first_vector_lanes(16, 2, 1)), Some((8, 36)));
        assert_eq!(width_and_stride(first_vector_lanes(8, 2, 1)), Some((4, 20)));
        assert_eq!(width_and_stride(first_vector_lanes(34, 2, 0)), Some((16, 16)));
        // 33 unpadded: 16 output columns span 32 floats plus the kernel's 2, one past the row.
        assert!(matches!(first_vector_lanes(33, 2, 0), Lanes::Gather(_)));
        assert!(matches!(first_vector_lanes(32, 1, 1), Lanes::Contiguous));
    }
}
