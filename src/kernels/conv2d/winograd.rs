//! 3×3 stride-1 convolutions by Winograd's minimal filtering, F(2×2, 3×3) (Lavin & Gray, 2015): each
//! 2×2 block of output pixels ("tile") comes from a 4×4 input patch with 16 multiplications per input
//! channel instead of 36, so the GEMM work is 2.25× smaller than the direct convolution's.
//!
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` for a 3×3 filter `g` and a 4×4 patch `d`. Over all channels the
//! elementwise product becomes 16 independent GEMMs, one per transformed point `ξ`:
//! `M[ξ] (C_out × tiles) = U[ξ] (C_out × C_in) · V[ξ] (C_in × tiles)`. Three phases per chunk of tiles:
//! 1. the input transform writes `V` straight into the packed column panels of the direct kernel's
//!    micro-kernel (`[ξ][pair of 16-tile vectors][C_in][32]`);
//! 2. the 16 GEMMs run that micro-kernel over `U`, packed once at load like the direct weights;
//! 3. the output transform reads `M`, adds the bias, time embedding and residual, divides by the
//!    output scale, and stores the 2×2 pixels of each tile.
//!
//! Every transform coefficient is 0, ±1 or ±½: the input and output transforms are a few additions per
//! value and the filter transform is computed in f64, so the result stays about as accurate as the direct
//! convolution's (the tests check both against candle's convolution; the UNet fixtures still match
//! diffusers to about 1e-6).
//!
//! Small tile counts fill few of the micro-kernel's 32 columns. Below one vector of 16 tiles (4×4 maps
//! at batch 1 to 3) the direct kernel is twice as fast, so such calls run it on direct weights recovered
//! from `U` the first time a layer sees one ([`WinogradWeights::direct`]); from 16 tiles on (8×8 at
//! batch 1) the two are about even, and larger batches make the Winograd kernel faster at every size.

// Inside `Simd::vectorize` the transforms avoid closures (see `microkernel`): a `match` instead of
// `Option::map`, index loops instead of iterator adapters over the small arrays.
#![allow(clippy::manual_map, clippy::needless_range_loop)]

use std::cell::RefCell;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::direct::{PackedWeights, PAIRS_PER_TASK};
use super::microkernel::{finish, Tile, VectorTarget, MR, NR};
use super::padding::{repad, PlaneLayout};
use super::Call;
use crate::kernels::isa::multiversion;
use crate::kernels::simd::{Simd, LANES};
use crate::kernels::SendPtr;
use crate::profile;

/// Transformed points per tile: a 4×4 patch.
const POINTS: usize = 16;
/// Largest transformed buffer (`V` or `M`) of one chunk of tiles, in floats (16 MiB): big layers
/// (celebahq-256) run in chunks so the transient memory stays bounded.
const CHUNK_FLOATS: usize = 1 << 22;
/// A chunk that one core takes through all three phases: `V` and `M` together at most this many floats
/// (2 MiB), so they stay in its L2 between the phases.
const LOCAL_CHUNK_FLOATS: usize = 1 << 19;
/// Input channels per block of filters transformed at once when the weights are packed.
const FILTER_BLOCK: usize = 64;
/// Channels per task in the transforms.
const CHANNELS_PER_TASK: usize = 32;

/// A 3×3 convolution's weights in the Winograd domain, `U[ξ] = (G g Gᵀ)[ξ]` for every (output,
/// input) channel pair, packed as `[panel of MR output channels][ξ][C_in][MR]` for the micro-kernel.
/// Rows past `c_out` are zero. Built once, when the model loads.
#[derive(Debug)]
pub struct WinogradWeights {
    data: Vec<f32>,
    pub(super) c_out: usize,
    pub(super) c_in: usize,
    /// The same filters packed for the direct kernel, built on the first call with fewer tiles than
    /// one vector (a 4×4 map at batch 1 or 2, where the Winograd GEMMs would fill a quarter of each
    /// vector's lanes with 16/9 the weights, and take twice the direct kernel's time): only the layers
    /// that see such calls pay its memory.
    direct: OnceLock<PackedWeights>,
}

impl WinogradWeights {
    /// `weight`: [c_out, c_in, 3, 3], contiguous.
    pub(super) fn new(weight: &[f32], c_out: usize, c_in: usize) -> Self {
        let mut data = vec![0f32; c_out.div_ceil(MR) * POINTS * c_in * MR];
        crate::memory::advise_huge_pages(&mut data);
        // One pair of block buffers per worker, not per panel.
        let buffers = || (Box::new([[0f64; FILTER_BLOCK * MR]; 9]), Box::new([[0f32; FILTER_BLOCK * MR]; POINTS]));
        data.par_chunks_mut(POINTS * c_in * MR).enumerate().for_each_init(
            buffers,
            |(filters, transformed), (panel, dst)| {
                // A block of input channels at a time: gather its filters element by element
                // (`[e][ci·MR + r]`), transform them all at once, then copy each point's row into place,
                // where the packed layout `[ξ][ci][r]` makes it one contiguous run.
                let rows = MR.min(c_out - panel * MR);
                if rows < MR {
                    // The last panel's rows past `c_out` transform to zero (the buffer is reused).
                    filters.iter_mut().for_each(|element| element.fill(0.0));
                }
                for ci0 in (0..c_in).step_by(FILTER_BLOCK) {
                    let channels = FILTER_BLOCK.min(c_in - ci0);
                    for ci in 0..channels {
                        for r in 0..rows {
                            let filter = &weight[((panel * MR + r) * c_in + ci0 + ci) * 9..][..9];
                            for (e, &value) in filter.iter().enumerate() {
                                filters[e][ci * MR + r] = f64::from(value);
                            }
                        }
                    }
                    transform_filters(filters, transformed, channels * MR);
                    for (point, row) in transformed.iter().enumerate() {
                        dst[(point * c_in + ci0) * MR..][..channels * MR].copy_from_slice(&row[..channels * MR]);
                    }
                }
            },
        );
        Self { data, c_out, c_in, direct: OnceLock::new() }
    }

    /// The filters packed for the direct kernel (see `direct`), recovered from `U`: `G`'s first and
    /// last rows are unit vectors, so `U`'s corner points are `g`'s corners and every other element of
    /// `g` is a sum and difference of at most four points (computed in f64, so each recovered weight is
    /// within an ulp or two of the loaded one).
    pub(super) fn direct(&self) -> &PackedWeights {
        self.direct.get_or_init(|| {
            let (c_out, c_in) = (self.c_out, self.c_in);
            let mut filters = vec![0f32; c_out * c_in * 9];
            filters.par_chunks_mut(c_in * 9).enumerate().for_each(|(co, filters)| {
                let (panel, r) = (co / MR, co % MR);
                for (ci, g) in filters.chunks_exact_mut(9).enumerate() {
                    let u = |point: usize| f64::from(self.data[((panel * POINTS + point) * c_in + ci) * MR + r]);
                    // Row i of t = G g, from row i of U = t Gᵀ: (U[i][0], U[i][1] − U[i][2], U[i][3]).
                    let t = |i: usize| [u(4 * i), u(4 * i + 1) - u(4 * i + 2), u(4 * i + 3)];
                    let (t0, t1, t2, t3) = (t(0), t(1), t(2), t(3));
                    for c in 0..3 {
                        g[c] = t0[c] as f32;
                        g[3 + c] = (t1[c] - t2[c]) as f32;
                        g[6 + c] = t3[c] as f32;
                    }
                }
            });
            PackedWeights::new(&filters, c_out, c_in, 3)
        })
    }

    /// Panel `panel`'s packed `U[point]`, from reduction step `k0` on.
    fn panel(&self, panel: usize, point: usize, k0: usize) -> *const f32 {
        self.data[((panel * POINTS + point) * self.c_in + k0) * MR..].as_ptr()
    }
}

multiversion! {
    /// `U = G g Gᵀ` for the first `count` filters of a block stored element by element (`filters[e][n]`
    /// is element `e` of filter `n`'s row-major 3×3), into `transformed[ξ][n]`, with `G = [[1, 0, 0],
    /// [½, ½, ½], [½, −½, ½], [0, 0, 1]]`. In f64, so each transformed weight is the correctly rounded
    /// value of the exact one; laid out so the loop vectorises over the filters.
    fn transform_filters(
        filters: &[[f64; FILTER_BLOCK * MR]; 9],
        transformed: &mut [[f32; FILTER_BLOCK * MR]; POINTS],
        count: usize,
    ) {
        let g_times = |a: f64, b: f64, c: f64| [a, (a + b + c) * 0.5, (a - b + c) * 0.5, c];
        for n in 0..count.min(FILTER_BLOCK * MR) {
            let g = |row: usize, column: usize| filters[row * 3 + column][n];
            // Column kx of G g, then row i of (G g) Gᵀ.
            let columns: [[f64; 4]; 3] = std::array::from_fn(|kx| g_times(g(0, kx), g(1, kx), g(2, kx)));
            for i in 0..4 {
                let row = g_times(columns[0][i], columns[1][i], columns[2][i]);
                for (j, &value) in row.iter().enumerate() {
                    transformed[i * 4 + j][n] = value as f32;
                }
            }
        }
    }
}

/// Everything one Winograd convolution reads (a 3×3, stride-1, padding-1 convolution).
pub(super) struct Problem<'a> {
    pub call: Call<'a>,
    pub weights: &'a WinogradWeights,
}

/// 16 tiles, one per lane, numbered across the whole batch: a vector runs on into the next image when
/// an image has fewer tiles. Offsets are relative to lane 0's image.
#[derive(Clone, Copy)]
struct TileVector {
    /// Lane 0's image.
    image: usize,
    /// Offset of each lane's 4×4 patch (its top-left element) from channel `ci` of `image`'s padded
    /// input, for any `ci`.
    input: [i32; 16],
    /// Offset of each lane's top-left output pixel from channel `co` of `image`'s output.
    output: [i32; 16],
    /// Each lane's `(image − self.image) · C_out`, to index a per-image bias.
    bias: [i32; 16],
    /// All lanes in `self.image`.
    one_image: bool,
    /// Lanes whose output pixel (dy, dx) exists, at index `2·dy + dx` (edge tiles of odd sizes, and
    /// lanes past the last tile, store less).
    masks: [u16; 4],
}

impl TileVector {
    /// Lanes past the last tile: read tile 0's patch, store nothing.
    const EMPTY: Self =
        Self { image: 0, input: [0; 16], output: [0; 16], bias: [0; 16], one_image: true, masks: [0; 4] };
}

/// The tile grid of one call.
struct Tiling {
    h: usize,
    w: usize,
    tiles_w: usize,
    tiles_per_image: usize,
    /// The zero-padded input every patch lies in: `2·tiles + 2` on each side.
    padded_h: usize,
    padded_w: usize,
    /// Both sizes are even and tile rows are whole multiples of 8 tiles: each half-vector of 8 lanes is
    /// 8 consecutive tiles of one row, read as 16 + 2 consecutive floats per patch row and stored as 16
    /// consecutive pixels per output row.
    half_rows: bool,
}

impl Tiling {
    fn new(h: usize, w: usize) -> Self {
        let (tiles_h, tiles_w) = (h.div_ceil(2), w.div_ceil(2));
        let half_rows = h.is_multiple_of(2) && w.is_multiple_of(2) && tiles_w.is_multiple_of(8);
        Self {
            h,
            w,
            tiles_w,
            tiles_per_image: tiles_h * tiles_w,
            padded_h: 2 * tiles_h + 2,
            padded_w: 2 * tiles_w + 2,
            half_rows,
        }
    }

    /// Vector `v` of the batch's tiles.
    fn vector(&self, v: usize, batch: usize, c_in: usize, c_out: usize) -> TileVector {
        let first = v * 16;
        // Vectors past the last tile (padding to whole pairs) point at the last image and store nothing.
        let image = (first / self.tiles_per_image).min(batch - 1);
        let mut vector = TileVector { image, ..TileVector::EMPTY };
        let (input_image, output_image) = (c_in * self.padded_h * self.padded_w, c_out * self.h * self.w);
        for lane in 0..16.min((batch * self.tiles_per_image).saturating_sub(first)) {
            let (lane_image, tile) = ((first + lane) / self.tiles_per_image, (first + lane) % self.tiles_per_image);
            let (ty, tx) = (tile / self.tiles_w, tile % self.tiles_w);
            let images = lane_image - image;
            // At most one image on when images have 16 tiles or more (and 16 tiny ones otherwise): inside
            // i32, as `check_lane_offsets` checked.
            vector.input[lane] = (images * input_image + 2 * ty * self.padded_w + 2 * tx) as i32;
            vector.output[lane] = (images * output_image + 2 * ty * self.w + 2 * tx) as i32;
            vector.bias[lane] = (images * c_out) as i32;
            vector.one_image &= images == 0;
            for (position, mask) in vector.masks.iter_mut().enumerate() {
                if 2 * ty + position / 2 < self.h && 2 * tx + position % 2 < self.w {
                    *mask |= 1 << lane;
                }
            }
        }
        vector
    }
}

/// Runs the convolution into `out` (`batch · c_out · h · w` floats, all written).
///
/// # Safety
/// The CPU supports `S`'s level, and `out` must point to `batch · c_out · h · w` writable floats.
pub(super) unsafe fn run<S: Simd>(p: &Problem, out: *mut f32) {
    debug_assert!(S::ISA.is_supported(), "{} kernels on a CPU without them", S::ISA);
    let (c_in, c_out) = (p.weights.c_in, p.weights.c_out);
    let tiling = Tiling::new(p.call.h, p.call.w);
    let owned_input;
    let data = if p.call.prepadded && p.call.h.is_multiple_of(2) && p.call.w.is_multiple_of(2) {
        p.call.x
    } else {
        owned_input = pad_input(p, &tiling);
        &owned_input[..]
    };
    let input = Padded { data, h: tiling.padded_h, w: tiling.padded_w, channels: c_in };
    // Whole pairs of vectors, for the micro-kernel's 32-column panels.
    let vector_count = (p.call.batch * tiling.tiles_per_image).div_ceil(32) * 2;
    let vectors: Vec<TileVector> = (0..vector_count).map(|v| tiling.vector(v, p.call.batch, c_in, c_out)).collect();
    let zeros = vec![0f32; c_out];
    let out = SendPtr(out);
    let run_chunk = |chunk: &[TileVector], parallel: bool| {
        with_scratch(|transformed_input, products| {
            let pairs = chunk.len() / 2;
            let strides = Strides::new(pairs, c_in, c_out);
            // Phases 1 and 2 write every element of both buffers that is later read, except M's columns
            // of a vector past the last tile: those may hold stale values, and nothing from them is stored.
            if transformed_input.len() < POINTS * strides.input_point {
                transformed_input.resize(POINTS * strides.input_point, 0.0);
            }
            if products.len() < POINTS * strides.product_point {
                products.resize(POINTS * strides.product_point, 0.0);
            }
            let (v, m) = (SendPtr(transformed_input.as_mut_ptr()), SendPtr(products.as_mut_ptr()));
            let phases = Phases { p, input: &input, tiling: &tiling, chunk, strides, parallel };
            // Phases are profiled only when they run on the calling thread: a profile scope on a rayon
            // worker would add that worker's time to the table as if it were the caller's.
            let time = |op, phase: &dyn Fn()| if parallel { profile::time(op, phase) } else { phase() };
            // SAFETY: `S`'s level per the caller; both buffers were sized for this chunk above.
            time("conv2d.winograd_input", &|| unsafe { phases.transform_inputs::<S>(v) });
            // SAFETY: as above; V was fully written by the input transform.
            time("conv2d.winograd_gemm", &|| unsafe { phases.multiply::<S>(transformed_input, &zeros, m) });
            // SAFETY: as above; M was fully written by `multiply`; `out` is the whole output.
            time("conv2d.winograd_output", &|| unsafe { phases.transform_outputs::<S>(products, out) });
        })
    };
    let threads = rayon::current_num_threads();
    // Chunks that one core takes through all three phases while its V and M stay in its L2.
    let local_pairs = (LOCAL_CHUNK_FLOATS / (POINTS * NR * (c_in + c_out))).max(1);
    if vectors.len() >= 2 * threads * 2 * local_pairs && threads > 1 {
        vectors.par_chunks(2 * local_pairs).for_each(|chunk| run_chunk(chunk, false));
    } else {
        // Few tiles: each phase in parallel over the whole (bounded) chunk.
        let pairs_per_chunk = (CHUNK_FLOATS / (POINTS * c_in.max(c_out) * NR)).max(1);
        vectors.chunks(2 * pairs_per_chunk).for_each(|chunk| run_chunk(chunk, true));
    }
}

thread_local! {
    /// Each thread's `V` and `M` buffers, reused across calls (at most `CHUNK_FLOATS` each, plus
    /// stride padding).
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` on this thread's `V` and `M` buffers, or on fresh ones when they are already in use
/// further up this thread's stack: a rayon worker waiting inside a parallel phase may pick up another
/// convolution (models run from several rayon tasks at once).
fn with_scratch<R>(f: impl FnOnce(&mut Vec<f32>, &mut Vec<f32>) -> R) -> R {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut buffers) => {
            let (transformed_input, products) = &mut *buffers;
            f(transformed_input, products)
        }
        Err(_) => f(&mut Vec::new(), &mut Vec::new()),
    })
}

/// Distances, in floats, inside a chunk's `V` (`[ξ][pair][C_in][NR]`) and `M` (`[ξ][C_out][columns]`).
/// Each is padded by one cache line past a whole number of rows: with power-of-two channel and tile
/// counts the unpadded strides map every point's row onto the same L1 set, and the 16 loads or stores
/// of one tile (or 12 rows of one micro-tile) evict each other.
struct Strides {
    input_point: usize,
    product_row: usize,
    product_point: usize,
}

impl Strides {
    fn new(pairs: usize, c_in: usize, c_out: usize) -> Self {
        let product_row = pairs * NR + 16;
        Self { input_point: pairs * c_in * NR + 16, product_row, product_point: c_out * product_row + 16 }
    }
}

/// The input with a zero border of 1, and one more zero row / column where a size is odd, so that
/// every tile's 4×4 patch lies inside it.
fn pad_input(p: &Problem, tiling: &Tiling) -> Vec<f32> {
    let (h, w) = (p.call.h, p.call.w);
    let src = PlaneLayout::bordered(h, w, usize::from(p.call.prepadded));
    let dst = PlaneLayout { rows: tiling.padded_h, columns: tiling.padded_w, border: 1 };
    repad(p.call.x, p.call.batch * p.weights.c_in, h, w, src, dst)
}

/// The zero-padded input (`[B][channels][h][w]`) the tiles' patches are read from.
struct Padded<'a> {
    data: &'a [f32],
    h: usize,
    w: usize,
    channels: usize,
}

/// The three phases over one chunk of tile vectors, each split into tasks run in parallel or, when
/// the chunk is one core's share, one after another.
struct Phases<'a> {
    p: &'a Problem<'a>,
    input: &'a Padded<'a>,
    tiling: &'a Tiling,
    chunk: &'a [TileVector],
    strides: Strides,
    parallel: bool,
}

impl Phases<'_> {
    fn for_each_task(&self, tasks: usize, task: impl Fn(usize) + Send + Sync) {
        if self.parallel {
            (0..tasks).into_par_iter().for_each(task);
        } else {
            (0..tasks).for_each(task);
        }
    }

    /// Phase 1: `V` for the chunk's vectors, every input channel.
    ///
    /// # Safety
    /// `S`'s level; `v` has room for the chunk's `V` under `self.strides`.
    unsafe fn transform_inputs<S: Simd>(&self, v: SendPtr) {
        let input = self.input;
        let c_in = input.channels;
        let plane = input.h * input.w;
        let channel_blocks = c_in.div_ceil(CHANNELS_PER_TASK);
        self.for_each_task(self.chunk.len() * channel_blocks, |task| {
            let (index, block) = (task / channel_blocks, task % channel_blocks);
            let vector = &self.chunk[index];
            let (pair, half) = (index / 2, index % 2);
            // SAFETY: `S`'s level per the caller. Lane offsets stay inside the padded input; each task
            // writes its own (pair, channel, half) rows of V.
            unsafe {
                S::vectorize(
                    #[inline(always)]
                    || {
                        for ci in block * CHANNELS_PER_TASK..((block + 1) * CHANNELS_PER_TASK).min(c_in) {
                            let src = input.data[(vector.image * c_in + ci) * plane..].as_ptr();
                            let dst = v.get().add((pair * c_in + ci) * NR + LANES * half);
                            let half_rows = self.tiling.half_rows;
                            transform_input::<S>(vector, half_rows, src, input.w, dst, self.strides.input_point);
                        }
                    },
                )
            }
        });
    }

    /// Phase 2: `M[ξ] = U[ξ] · V[ξ]` for the 16 points into `products` (`[ξ][C_out][pairs · NR]`).
    ///
    /// # Safety
    /// `S`'s level; `transformed_input` holds the chunk's `V`; `products` has room for its `M`.
    unsafe fn multiply<S: Simd>(&self, transformed_input: &[f32], zeros: &[f32], products: SendPtr) {
        let weights = self.p.weights;
        let (c_in, c_out, strides) = (weights.c_in, weights.c_out, &self.strides);
        let pairs = self.chunk.len() / 2;
        let panels = c_out.div_ceil(MR);
        let groups = pairs.div_ceil(PAIRS_PER_TASK);
        let splits = if self.parallel { (4 * rayon::current_num_threads()).div_ceil(POINTS * groups) } else { 1 };
        let splits = splits.clamp(1, panels);
        let per_split = panels.div_ceil(splits);
        self.for_each_task(POINTS * groups * splits, |task| {
            // SAFETY: `S`'s level per the caller; each tile's rows and columns lie inside `products`,
            // and no other task writes this (point, pair, panel) tile.
            unsafe {
                S::vectorize(
                    #[inline(always)]
                    || {
                        let (point, group, split) = (task / (groups * splits), task / splits % groups, task % splits);
                        let pair_range = group * PAIRS_PER_TASK..((group + 1) * PAIRS_PER_TASK).min(pairs);
                        let panel_range = split * per_split..((split + 1) * per_split).min(panels);
                        let mut k0 = 0;
                        while k0 < c_in {
                            let kc = S::KC.min(c_in - k0);
                            for pair in pair_range.clone() {
                                let b =
                                    transformed_input[point * strides.input_point + (pair * c_in + k0) * NR..].as_ptr();
                                let offset = point * strides.product_point + pair * NR;
                                // A second vector past the last tile is skipped (and never read back).
                                let second = if self.chunk[2 * pair + 1].masks == [0; 4] { 0 } else { u16::MAX };
                                let targets = [
                                    VectorTarget { offset, mask: u16::MAX, bias_offset: 0 },
                                    VectorTarget { offset: offset + LANES, mask: second, bias_offset: 0 },
                                ];
                                for panel in panel_range.clone() {
                                    let a = weights.panel(panel, point, k0);
                                    let tile = Tile {
                                        rows: MR.min(c_out - panel * MR),
                                        row0: panel * MR,
                                        stride: strides.product_row,
                                        targets: &targets,
                                        // The first block starts from zero, later ones from the stored partial sums.
                                        bias: (k0 == 0).then_some(zeros),
                                        residual: None,
                                        output_scale: 1.0,
                                    };
                                    S::microkernel(kc, a, b, &tile, products.get());
                                }
                            }
                            k0 += kc;
                        }
                    },
                )
            }
        });
    }

    /// Phase 3: the output pixels of the chunk's tiles from `M`, every output channel.
    ///
    /// # Safety
    /// `S`'s level; `products` holds the chunk's `M`; `out` is the whole output.
    unsafe fn transform_outputs<S: Simd>(&self, products: &[f32], out: SendPtr) {
        let c_out = self.p.weights.c_out;
        let channel_blocks = c_out.div_ceil(CHANNELS_PER_TASK);
        self.for_each_task(self.chunk.len() * channel_blocks, |task| {
            let (index, block) = (task / channel_blocks, task % channel_blocks);
            let channels = block * CHANNELS_PER_TASK..((block + 1) * CHANNELS_PER_TASK).min(c_out);
            let m = &products[LANES * index..];
            let (p, tiling, vector, strides) = (self.p, self.tiling, &self.chunk[index], &self.strides);
            // SAFETY: `S`'s level per the caller; each task stores the pixels of its own tiles and channels.
            unsafe {
                S::vectorize(
                    #[inline(always)]
                    || transform_output::<S>(p, tiling, vector, channels, m, strides, out),
                )
            };
        });
    }
}

/// `V = Bᵀ d B` for one channel of 16 tiles, with `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0],
/// [0, 1, 0, −1]]`: point `ξ = 4i + j` goes to `dst + ξ · point_stride`.
#[inline(always)]
unsafe fn transform_input<S: Simd>(
    vector: &TileVector,
    half_rows: bool,
    src: *const f32,
    row_stride: usize,
    dst: *mut f32,
    point_stride: usize,
) {
    let mut d = [[S::zero(); 4]; 4];
    if half_rows {
        // Each half's 8 patches start 2 floats apart in one row: 16 floats hold their columns 0 and 1,
        // the 16 from 2 further on their columns 2 and 3.
        let (low, high) = (src.offset(vector.input[0] as isize), src.offset(vector.input[8] as isize));
        for (i, row) in d.iter_mut().enumerate() {
            let (low, high) = (low.add(i * row_stride), high.add(i * row_stride));
            (row[0], row[1]) = S::even_odd(S::load(low), S::load(high));
            (row[2], row[3]) = S::even_odd(S::load(low.add(2)), S::load(high.add(2)));
        }
    } else {
        for (i, row) in d.iter_mut().enumerate() {
            for (j, value) in row.iter_mut().enumerate() {
                *value = S::gather(src.add(i * row_stride + j), &vector.input);
            }
        }
    }
    // Bᵀ d: combine the rows, column by column ...
    let mut columns = [[S::zero(); 4]; 4];
    for (j, column) in columns.iter_mut().enumerate() {
        *column = combine_input::<S>([d[0][j], d[1][j], d[2][j], d[3][j]]);
    }
    // ... then (Bᵀ d) B: combine the columns, row by row.
    for i in 0..4 {
        let row = combine_input::<S>([columns[0][i], columns[1][i], columns[2][i], columns[3][i]]);
        for (j, &value) in row.iter().enumerate() {
            S::store(dst.add((4 * i + j) * point_stride), value);
        }
    }
}

/// `Bᵀ x` for one column (or row) of four.
#[inline(always)]
unsafe fn combine_input<S: Simd>(x: [S::V; 4]) -> [S::V; 4] {
    [S::sub(x[0], x[2]), S::add(x[1], x[2]), S::sub(x[2], x[1]), S::sub(x[1], x[3])]
}

/// `Y = Aᵀ M A` with `Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]` for 16 tiles and the given output channels,
/// then the epilogue, stored to the tiles' pixels. `m` starts at the vector's first column of point 0,
/// channel 0.
#[inline(always)]
unsafe fn transform_output<S: Simd>(
    p: &Problem,
    tiling: &Tiling,
    vector: &TileVector,
    channels: std::ops::Range<usize>,
    m: &[f32],
    strides: &Strides,
    out: SendPtr,
) {
    let (c_out, w) = (p.weights.c_out, p.call.w);
    let plane = p.call.h * w;
    let half_offsets = [vector.output[0] as usize, vector.output[8] as usize];
    let image_bias = if p.call.per_image_bias { vector.image * c_out } else { 0 };
    for co in channels {
        let m = m[co * strides.product_row..].as_ptr();
        let mut point = [S::zero(); 16];
        for (xi, value) in point.iter_mut().enumerate() {
            *value = S::load(m.add(xi * strides.product_point));
        }
        // Aᵀ over the rows (r0, r1 for each column j), then A over the columns.
        let mut rows = [[S::zero(); 4]; 2];
        for j in 0..4 {
            rows[0][j] = S::add(S::add(point[j], point[4 + j]), point[8 + j]);
            rows[1][j] = S::sub(S::sub(point[4 + j], point[8 + j]), point[12 + j]);
        }
        let bias_ptr = p.call.bias.as_ptr().add(image_bias + co);
        let bias = if vector.one_image || !p.call.per_image_bias {
            S::splat(*bias_ptr)
        } else {
            S::gather(bias_ptr, &vector.bias)
        };
        let base = out.get().add((vector.image * c_out + co) * plane);
        // Pointer arithmetic only (no intrinsic), so a closure is harmless here.
        let residual = p.call.residual.map(|r| r.as_ptr().add((vector.image * c_out + co) * plane));
        for (dy, r) in rows.iter().enumerate() {
            let pixels =
                [S::add(S::add(S::add(r[0], r[1]), r[2]), bias), S::add(S::sub(S::sub(r[1], r[2]), r[3]), bias)];
            if tiling.half_rows {
                // Each half's 8 tiles give 16 consecutive pixels of output row 2·ty + dy.
                let halves = S::interleave(pixels[0], pixels[1]);
                for (half, (&offset, value)) in half_offsets.iter().zip([halves.0, halves.1]).enumerate() {
                    if vector.masks[0] >> (8 * half) & 0xff == 0 {
                        // Past the last tile.
                        continue;
                    }
                    let offset = offset + dy * w;
                    let residual = match residual {
                        Some(residual) => Some(S::load(residual.add(offset))),
                        None => None,
                    };
                    S::store(base.add(offset), finish::<S>(value, residual, p.call.output_scale));
                }
                continue;
            }
            for (dx, &value) in pixels.iter().enumerate() {
                let mask = vector.masks[2 * dy + dx];
                let offset = dy * w + dx;
                let residual = match residual {
                    Some(residual) => Some(S::gather_masked(residual.add(offset), &vector.output, mask)),
                    None => None,
                };
                let value = finish::<S>(value, residual, p.call.output_scale);
                S::scatter_masked(base.add(offset), &vector.output, mask, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct weights recovered from `U` are the loaded filters to within float32 rounding.
    #[test]
    fn recovered_direct_weights_are_the_loaded_ones() {
        let (c_out, c_in) = (13, 70);
        let weight: Vec<f32> = (0..c_out * c_in * 9).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.3).collect();
        let expected = PackedWeights::new(&weight, c_out, c_in, 3);
        let winograd = WinogradWeights::new(&weight, c_out, c_in);
        let recovered = winograd.direct();
        assert_eq!(recovered.packed().len(), expected.packed().len());
        for (i, (&a, &b)) in recovered.packed().iter().zip(expected.packed()).enumerate() {
            // Four rounded points of up to ~0.7 each: a few 1e-8 of error apiece.
            assert!((a - b).abs() <= 4.0 * f32::EPSILON, "element {i}: {a} vs {b}");
        }
    }
}
