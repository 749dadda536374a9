//! Convolution as a GEMM with an AVX-512 micro-kernel: `out[co, px] = bias[co] + Σ_k W[co, k] ·
//! cols[k, px]` (+ a residual, ÷ a factor), where `k` runs over (input channel, kernel row, kernel column)
//! and `cols` is the implicit im2col matrix of the (zero-padded) input.
//!
//! Compared with im2col followed by a general GEMM, this
//! - never builds the column matrix: each 32-column panel is read straight from the padded input into
//!   the micro-kernel's layout, one L1-sized block of reduction steps at a time (16 consecutive output
//!   pixels of one row are 16 consecutive input floats for a stride-1 convolution, a plain load; other
//!   vectors use one AVX-512 gather);
//! - packs the weights once, when the model is built, instead of on every call for every image;
//! - initialises the output with the bias and adds a residual and the output scale in the micro-kernel's
//!   store, so the output is written once and never zero-filled;
//! - schedules (column block, output-channel range) tasks over the whole batch, splitting the output
//!   channels too when a layer has few pixels (batch 1, 4×4 and 8×8 layers).
//!
//! The micro-kernel keeps a 12 × 32 tile of the output in 24 of the 32 zmm registers: per reduction step
//! it loads 32 packed columns (2 vectors) and broadcasts 12 packed weights into 24 FMAs.

// Only x86-64 runs the kernel; elsewhere the module compiles to a never-taken path.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::cell::RefCell;

use rayon::prelude::*;

use super::conv2d::Conv2dParams;
use super::SendPtr;

/// Output channels per micro-tile.
pub(super) const MR: usize = 12;
/// Output pixels per micro-tile (two 16-lane vectors).
pub(super) const NR: usize = 32;
/// Reduction steps per block: a 256 × 32 column panel (32 KiB) stays in L1.
pub(super) const KC: usize = 256;
/// Column panels (pairs of 16-pixel vectors) per column task: 256 output pixels.
pub(super) const PAIRS_PER_TASK: usize = 8;
/// Largest pre-gathered column matrix (floats) shared between tasks: 1 MiB, half an L2.
const SHARED_COLUMNS_MAX: usize = 1 << 18;

/// A convolution call's input and output, whichever kernel computes it. Slices are contiguous NCHW.
pub(super) struct Call<'a> {
    /// [B, C_in, H, W], or [B, C_in, H + 2p, W + 2p] with its zero border when `prepadded`.
    pub x: &'a [f32],
    /// [C_out], or [B, C_out] when `per_image_bias`.
    pub bias: &'a [f32],
    pub per_image_bias: bool,
    /// Added to the output before the division by `output_scale` (same shape as the output).
    pub residual: Option<&'a [f32]>,
    pub output_scale: f32,
    pub batch: usize,
    /// Input height and width, without the padding.
    pub h: usize,
    pub w: usize,
    /// `x` already carries its zero border of `params.padding`.
    pub prepadded: bool,
}

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
        let mut data = vec![0f32; c_out.div_ceil(MR) * k * MR];
        crate::memory::advise_huge_pages(&mut data);
        // Panels in parallel; within one, write sequentially while reading the MR rows side by side.
        data.par_chunks_mut(k * MR).enumerate().for_each(|(panel, dst)| {
            let rows: Vec<&[f32]> =
                (panel * MR..((panel + 1) * MR).min(c_out)).map(|row| &weight[row * k..(row + 1) * k]).collect();
            for (kk, step) in dst.chunks_exact_mut(MR).enumerate() {
                for (d, row) in step.iter_mut().zip(&rows) {
                    *d = row[kk];
                }
            }
        });
        Self { data, c_out, c_in, kernel }
    }
}

/// Whether the CPU can run this kernel.
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
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
        // The caller checked the sizes before allocating the output (`PackedConv`).
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
/// `available()` must be true, and `out` must point to `batch · c_out · out_h · out_w` writable floats.
pub(super) unsafe fn run(p: &Problem, out: *mut f32) {
    let geo = Geometry::new(p);
    let padding = p.params.padding;
    let padded = (padding > 0 && !p.call.prepadded)
        .then(|| pad(p.call.x, p.call.batch * p.weights.c_in, p.call.h, p.call.w, padding));
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
    let vectors_per_image = geo.pixels.div_ceil(16);
    let vectors = p.call.batch * vectors_per_image;
    let pairs: Vec<[VectorPlan; 2]> = (0..vectors.div_ceil(2))
        .map(|pair| {
            let plan = |v: usize| VectorPlan::new(p, &geo, input, v / vectors_per_image, (v % vectors_per_image) * 16);
            let first = plan(2 * pair);
            // An odd vector count: the second slot re-reads the first and stores nothing.
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
        let per_split = weight_panels.div_ceil(splits);
        let task = |t: usize| {
            let (column_task, split) = (t / splits, t % splits);
            let pairs = &pairs[column_task * PAIRS_PER_TASK..((column_task + 1) * PAIRS_PER_TASK).min(pairs.len())];
            let panels = split * per_split..((split + 1) * per_split).min(weight_panels);
            COLUMNS.with(|buf| {
                let mut buf = buf.borrow_mut();
                let columns = Columns::PerBlock(&mut buf);
                let (geo, step_offsets) = (&geo, &step_offsets[..]);
                let job = Job { p, geo, step_offsets, pairs, columns, weight_panels: panels };
                // SAFETY: AVX-512 per the caller; tasks write disjoint tiles of `out`.
                unsafe { job.run(out.get()) }
            });
        };
        (0..column_tasks * splits).into_par_iter().for_each(task);
    } else {
        // Few columns (4×4 and 8×8 layers at batch 1): gather every panel once, over the whole
        // reduction, into a shared buffer that stays in L2; then split the output channels between tasks.
        let mut shared = Vec::<f32>::with_capacity(pairs.len() * panel_len);
        let dst = SendPtr(shared.as_mut_ptr());
        pairs.par_iter().enumerate().for_each(|(i, pair)| {
            for (v, plan) in pair.iter().enumerate() {
                // SAFETY: AVX-512 per the caller; each pair fills its own `k × NR` panel, both halves.
                unsafe { gather_vector(plan, &step_offsets, dst.get().add(i * panel_len + 16 * v)) };
            }
        });
        // SAFETY: every pair's panel was fully written above.
        unsafe { shared.set_len(pairs.len() * panel_len) };
        let splits = (4 * threads).min(weight_panels);
        let per_split = weight_panels.div_ceil(splits);
        (0..splits).into_par_iter().for_each(|split| {
            let panels = split * per_split..((split + 1) * per_split).min(weight_panels);
            let (geo, step_offsets, columns) = (&geo, &step_offsets[..], Columns::Shared(&shared));
            let job = Job { p, geo, step_offsets, pairs: &pairs, columns, weight_panels: panels };
            // SAFETY: as above.
            unsafe { job.run(out.get()) }
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

/// `planes` images of `h × w`, zero-padded by `padding` on every side.
fn pad(x: &[f32], planes: usize, h: usize, w: usize, padding: usize) -> Vec<f32> {
    let (ph, pw) = (h + 2 * padding, w + 2 * padding);
    let mut padded = vec![0f32; planes * ph * pw];
    padded.par_chunks_mut(ph * pw).zip(x.par_chunks(h * w)).for_each(|(dst, src)| {
        for (y, row) in src.chunks_exact(w).enumerate() {
            dst[(y + padding) * pw + padding..][..w].copy_from_slice(row);
        }
    });
    padded
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
    /// Anything else (strides, odd widths, partial vectors): one gather at these offsets.
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
        let lanes = if valid == 16 && stride == 1 && one_row {
            Lanes::Contiguous
        } else if valid == 16 && stride == 1 && whole_rows {
            Lanes::Rows { width: geo.out_w, row_stride: geo.padded_w }
        } else {
            // Masked lanes re-read lane 0. Offsets stay within one image, which `PackedConv` checked
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

/// Where one 16-lane vector of a tile goes: the output offset of its first lane for output channel 0
/// (add `channel · pixels` for the others), and which lanes are real columns.
#[derive(Clone, Copy)]
pub(super) struct VectorTarget {
    pub offset: usize,
    pub mask: u16,
    /// Where this image's biases start (`image · C_out` for a per-image bias, else 0).
    pub bias_offset: usize,
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
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run(mut self, out: *mut f32) {
        let (p, k, pairs) = (self.p, self.geo.k, self.pairs);
        if let Columns::PerBlock(buf) = &mut self.columns {
            if buf.len() < pairs.len() * KC * NR {
                buf.resize(pairs.len() * KC * NR, 0.0);
            }
        }
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            if let Columns::PerBlock(buf) = &mut self.columns {
                let steps = &self.step_offsets[k0..k0 + kc];
                for (i, pair) in pairs.iter().enumerate() {
                    for (v, plan) in pair.iter().enumerate() {
                        gather_vector(plan, steps, buf[i * kc * NR + 16 * v..].as_mut_ptr());
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
                    let tile = Tile {
                        rows: MR.min(p.weights.c_out - row0),
                        row0,
                        stride: self.geo.pixels,
                        targets: &targets,
                        bias: if first { Some(p.call.bias) } else { None },
                        residual: if last { p.call.residual } else { None },
                        output_scale: if last { p.call.output_scale } else { 1.0 },
                    };
                    microkernel(kc, a, b, &tile, out);
                }
            }
            k0 += kc;
        }
    }
}

// Elsewhere `available()` is false, so no weights are packed and these are never reached.
#[cfg(not(target_arch = "x86_64"))]
impl Job<'_> {
    unsafe fn run(self, _out: *mut f32) {
        unreachable!("packed convolution weights exist only on x86-64 CPUs with AVX-512")
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn gather_vector(_plan: &VectorPlan, _steps: &[usize], _dst: *mut f32) {
    unreachable!("packed convolution weights exist only on x86-64 CPUs with AVX-512")
}

/// Writes lane values of `plan` for the given reduction steps into rows of a packed panel (`NR` floats
/// apart): plain loads where its lanes are consecutive floats, a few short loads for whole short rows,
/// else gathers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_vector(plan: &VectorPlan, steps: &[usize], dst: *mut f32) {
    match plan.lanes {
        Lanes::Contiguous => {
            for (i, &offset) in steps.iter().enumerate() {
                _mm512_storeu_ps(dst.add(i * NR), _mm512_loadu_ps(plan.input.add(offset)));
            }
        }
        Lanes::Rows { width: 8, row_stride } => {
            for (i, &offset) in steps.iter().enumerate() {
                let src = plan.input.add(offset);
                let low = _mm256_castps_pd(_mm256_loadu_ps(src));
                let high = _mm256_castps_pd(_mm256_loadu_ps(src.add(row_stride)));
                let v = _mm512_insertf64x4::<1>(_mm512_castpd256_pd512(low), high);
                _mm512_storeu_ps(dst.add(i * NR), _mm512_castpd_ps(v));
            }
        }
        Lanes::Rows { width: _, row_stride } => {
            // Four rows of four.
            for (i, &offset) in steps.iter().enumerate() {
                let src = plan.input.add(offset);
                let v = _mm512_castps128_ps512(_mm_loadu_ps(src));
                let v = _mm512_insertf32x4::<1>(v, _mm_loadu_ps(src.add(row_stride)));
                let v = _mm512_insertf32x4::<2>(v, _mm_loadu_ps(src.add(2 * row_stride)));
                let v = _mm512_insertf32x4::<3>(v, _mm_loadu_ps(src.add(3 * row_stride)));
                _mm512_storeu_ps(dst.add(i * NR), v);
            }
        }
        Lanes::Gather(lanes) => {
            let lanes = _mm512_loadu_si512(lanes.as_ptr().cast());
            for (i, &offset) in steps.iter().enumerate() {
                _mm512_storeu_ps(dst.add(i * NR), _mm512_i32gather_ps::<4>(lanes, plan.input.add(offset)));
            }
        }
    }
}

/// The store side of one micro-kernel call.
pub(super) struct Tile<'a> {
    /// Real output channels in this tile (≤ MR).
    pub rows: usize,
    pub row0: usize,
    /// Distance between consecutive output channels (pixels per image).
    pub stride: usize,
    pub targets: &'a [VectorTarget; 2],
    /// First reduction block: start from the bias (indexed by a target's `bias_offset` + channel)
    /// instead of the stored partial sum.
    pub bias: Option<&'a [f32]>,
    /// Last reduction block: add this, then divide by `output_scale`.
    pub residual: Option<&'a [f32]>,
    pub output_scale: f32,
}

/// `tile += A_panel · B_panel` over `kc` reduction steps of a packed `[kc][NR]` column panel (see
/// [`Tile`] for the store). When the panel's second vector stores nothing (a lone 16-column vector:
/// 4×4 and 8×8 images at batch 1), only the first is computed, which halves the work.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn microkernel(kc: usize, a: *const f32, b: *const f32, tile: &Tile, out: *mut f32) {
    if tile.targets[1].mask == 0 {
        microkernel_vectors::<1>(kc, a, b, tile, out);
    } else {
        microkernel_vectors::<2>(kc, a, b, tile, out);
    }
}

/// [`microkernel`] over the first `VECTORS` (1 or 2) 16-column vectors of the panel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn microkernel_vectors<const VECTORS: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    tile: &Tile,
    out: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); VECTORS]; MR];
    for step in 0..kc {
        let columns: [__m512; VECTORS] = std::array::from_fn(|v| _mm512_loadu_ps(b.add(step * NR + 16 * v)));
        let a = a.add(step * MR);
        for (r, acc) in acc.iter_mut().enumerate() {
            let w = _mm512_set1_ps(*a.add(r));
            for (acc, &column) in acc.iter_mut().zip(&columns) {
                *acc = _mm512_fmadd_ps(w, column, *acc);
            }
        }
    }
    let scale = _mm512_set1_ps(tile.output_scale);
    for (r, acc) in acc.iter().enumerate().take(tile.rows) {
        let channel = tile.row0 + r;
        for (v, target) in tile.targets.iter().enumerate().take(VECTORS) {
            if target.mask == 0 {
                continue;
            }
            let offset = target.offset + channel * tile.stride;
            let dst = out.add(offset);
            let mut value = match tile.bias {
                Some(bias) => _mm512_add_ps(acc[v], _mm512_set1_ps(bias[target.bias_offset + channel])),
                None => _mm512_add_ps(acc[v], _mm512_maskz_loadu_ps(target.mask, dst)),
            };
            if let Some(residual) = tile.residual {
                value = _mm512_add_ps(_mm512_maskz_loadu_ps(target.mask, residual.as_ptr().add(offset)), value);
            }
            if tile.output_scale != 1.0 {
                value = _mm512_div_ps(value, scale);
            }
            _mm512_mask_storeu_ps(dst, target.mask, value);
        }
    }
}
