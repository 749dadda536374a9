//! 3×3 stride-1 convolutions by Winograd's minimal filtering (Lavin & Gray, 2015), in two tile sizes:
//! - `f2`: F(2×2, 3×3), each 2×2 block of output pixels ("tile") from a 4×4 input patch with 16
//!   multiplications per input channel instead of 36 (2.25× less GEMM work than the direct kernel);
//! - `f4`: F(4×4, 3×3), each 4×4 tile from a 6×6 patch with 36 multiplications instead of 144 (4×).
//!
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` for a 3×3 filter `g` and a patch `d`. Over all channels the
//! elementwise product becomes one independent GEMM per transformed point `ξ`:
//! `M[ξ] (C_out × tiles) = U[ξ] (C_out × C_in) · V[ξ] (C_in × tiles)`. The driver here is shared by both
//! tile sizes (each implements [`Transform`]); three phases per chunk of tiles:
//! 1. the input transform writes `V` straight into the packed column panels of the direct kernel's
//!    micro-kernel (`[ξ][pair of 16-tile vectors][C_in][32]`);
//! 2. the GEMMs run that micro-kernel over `U`, packed like the direct weights (`[panel][ξ][C_in][12]`);
//! 3. the output transform reads `M`, adds the bias, time embedding and residual, divides by the
//!    output scale, and stores the tiles' pixels.
//!
//! **Which tile a call runs** ([`choose`]). F(4×4) needs a quarter of F(2×2)'s tiles and 36/16 of its
//! weights per tile: it wins where there are many tiles, and where the GEMMs are few columns wide it
//! wins only on levels bound by arithmetic (AVX2, scalar) and loses on those bound by reading `U`
//! (AVX-512 on cores with 512-bit units); each level sets its threshold ([`Simd::F4_MIN_TILES`]), and a core that
//! splits AVX-512 into halves (Zen 4) takes AVX2's ([`f4_min_tiles`]). A layer holds F(2×2)'s `U` only (built
//! from the loaded filters on its first call, `weights`); the first call with enough tiles builds F(4×4)'s from it and the layer keeps it
//! (rebuilding it per call cost a quarter of the call: writing 36 floats per filter is memory-bound),
//! so only the layers that see such calls hold the extra 2.25×; where the filters stay mapped, F(2×2)'s
//! `U` is then dropped until a call needs it again (see `weights`). Calls with fewer tiles than one vector
//! of 16 (4×4 maps at batch 1 to 3) run the direct kernel on filters recovered from `U`
//! ([`WinogradWeights::direct`]), twice as fast there.
//!
//! **Accuracy.** F(2×2)'s transforms use only 0, ±1 and ±½; F(4×4)'s reach 8 and 1/24, which costs
//! float32 about one more decimal digit (its error against float64 is bounded in the tests, and the
//! UNet fixtures still match diffusers to about 1e-5). Filter transforms are computed in f64 on a layer's
//! first call (F(2×2)) or from the rounded `U` in f32 (F(4×4), whose own error dominates).

mod f2;
mod f4;
pub use f4::applies as f4_applies;
mod weights;

use std::cell::RefCell;
use std::ops::Range;
use std::sync::OnceLock;

use rayon::prelude::*;

pub(in crate::kernels::conv2d) use self::weights::LoadedFilters;
pub use self::weights::WinogradWeights;
use super::direct::PAIRS_PER_TASK;
use super::microkernel::{next_call, Tile, VectorTarget, MR, NR};
use super::{share, Call, ConvKernel};
use crate::kernels::isa::Isa;
use crate::kernels::simd::{with_simd, Simd, LANES};
use crate::kernels::SendPtr;
use crate::profile;

/// Largest transformed buffer (`V` or `M`) of one chunk of tiles, in floats (16 MiB): big layers
/// (celebahq-256) run in chunks so the transient memory stays bounded.
const CHUNK_FLOATS: usize = 1 << 22;
/// A chunk that one core takes through all three phases: `V` and `M` together at most this many floats
/// (2 MiB), so they stay in its L2 between the phases.
const LOCAL_CHUNK_FLOATS: usize = 1 << 19;
/// Channels per task in the transforms.
const CHANNELS_PER_TASK: usize = 32;

/// Everything one Winograd convolution reads (a 3×3, stride-1, padding-1 convolution).
pub(in crate::kernels::conv2d) struct Problem<'a> {
    pub call: Call<'a>,
    pub weights: &'a WinogradWeights,
}

/// The kernel one Winograd call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::kernels::conv2d) enum Variant {
    /// The direct kernel on recovered filters: fewer tiles than one vector.
    Direct,
    F2,
    F4,
}

/// The environment variable that fixes the Winograd tile size for every layer: `f2` (F(2×2) only, the
/// most accurate), `f4` (F(4×4) wherever the map allows it) or `auto` (the default: chosen per call).
pub const TILE_ENV: &str = "CANDLE_UNET2D_WINOGRAD";

/// The tile policy `CANDLE_UNET2D_WINOGRAD` sets (read once): `None` for the per-call choice.
pub fn tile_override() -> Option<ConvKernel> {
    static CONFIGURED: OnceLock<Option<ConvKernel>> = OnceLock::new();
    *CONFIGURED.get_or_init(|| tile_policy_from_env(std::env::var(TILE_ENV).ok().as_deref()))
}

fn tile_policy_from_env(value: Option<&str>) -> Option<ConvKernel> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("auto") => None,
        Some("f2") => Some(ConvKernel::WinogradF2),
        Some("f4") => Some(ConvKernel::WinogradF4),
        Some(other) => {
            eprintln!("candle-unet2d: {TILE_ENV}={other:?} ignored: expected f2, f4 or auto");
            None
        }
    }
}

/// F(4×4) tiles from which a call at `isa` runs F(4×4): the level's [`Simd::F4_MIN_TILES`], except that a
/// core running AVX-512 as two 256-bit halves is bound by arithmetic as AVX2 is, and takes AVX2's.
pub(in crate::kernels) fn f4_min_tiles(isa: Isa) -> usize {
    if isa == Isa::Avx512 && crate::kernels::cpu_core::avx512_in_halves() {
        return with_simd!(Isa::Avx2, S => S::F4_MIN_TILES);
    }
    with_simd!(isa, S => S::F4_MIN_TILES)
}

/// The kernel for `call` under the weights' `policy` at level `isa` (`Winograd` chooses by tile counts
/// against [`f4_min_tiles`], unless [`TILE_ENV`] fixes the tile size; `WinogradF2` /
/// `WinogradF4` force one where the shape allows it, for tests and benchmarks).
pub(in crate::kernels::conv2d) fn choose(call: &Call, policy: ConvKernel, isa: Isa) -> Variant {
    // Inside `batch_invariant` the choice is the batch-of-one one, so an image rounds the same in any batch.
    let (batch, h, w) = (crate::kernels::choice_batch(call.batch), call.h, call.w);
    let policy = match policy {
        ConvKernel::Winograd => tile_override().unwrap_or(policy),
        _ => policy,
    };
    let f4 = f4::applies(h, w);
    let variant = match policy {
        ConvKernel::WinogradF4 if f4 => Variant::F4,
        _ if batch * h.div_ceil(2) * w.div_ceil(2) < LANES => Variant::Direct,
        ConvKernel::Winograd if f4 && batch * (h / 4) * (w / 4) >= f4_min_tiles(isa) => Variant::F4,
        _ => Variant::F2,
    };
    #[cfg(test)]
    LAST_VARIANT.with(|last| last.set(Some(variant)));
    variant
}

#[cfg(test)]
thread_local! {
    /// The variant [`choose`] last picked on this thread, for tests to assert what ran.
    pub(in crate::kernels::conv2d) static LAST_VARIANT: std::cell::Cell<Option<Variant>> =
        const { std::cell::Cell::new(None) };
}

/// Runs the convolution with `variant`'s tile size into `out` (`batch · c_out · h · w` floats, all
/// written).
///
/// # Safety
/// The CPU supports `S`'s level; `out` must point to `batch · c_out · h · w` writable floats; F(4×4)
/// only where `f4::applies`.
pub(in crate::kernels::conv2d) unsafe fn run<S: Simd>(p: &Problem, variant: Variant, out: *mut f32) {
    debug_assert!(S::ISA.is_supported(), "{} kernels on a CPU without them", S::ISA);
    match variant {
        Variant::F4 => f4::run::<S>(p, SendPtr(out)),
        _ => f2::run::<S>(p, SendPtr(out)),
    }
}

/// Transformed filters `U`, packed `[panel of MR output channels][ξ][C_in][MR]`.
pub(super) struct Filters<'a> {
    data: &'a [f32],
    c_in: usize,
    c_out: usize,
    points: usize,
}

impl Filters<'_> {
    /// Panel `panel`'s packed `U[point]`, from reduction step `k0` on.
    fn panel(&self, panel: usize, point: usize, k0: usize) -> *const f32 {
        self.data[self.panel_offset(panel, point, k0)..].as_ptr()
    }

    /// [`Self::panel`]'s address for prefetching only: past the end where no such panel is.
    fn panel_ahead(&self, panel: usize, point: usize, k0: usize) -> *const f32 {
        self.data.as_ptr().wrapping_add(self.panel_offset(panel, point, k0))
    }

    fn panel_offset(&self, panel: usize, point: usize, k0: usize) -> usize {
        ((panel * self.points + point) * self.c_in + k0) * MR
    }
}

/// One tile size's tiling and transforms for one call: what the shared driver needs.
pub(super) trait Transform: Sync {
    /// Transformed points per tile: `(m + 2)²` for F(m×m, 3×3).
    const POINTS: usize;
    /// The profile's name for this tile size's GEMMs, kept apart because the two sizes run at different
    /// efficiencies (and each is slower where a call has a single vector of tiles, so that every read of
    /// `U` serves 16 tiles only).
    const GEMM_OP: &'static str;
    /// 16 tiles, one per lane.
    type Vector: Copy + Send + Sync;

    /// Tiles in the call, over the whole batch.
    fn tiles(&self) -> usize;
    /// Vector `v` of the call's tiles; vectors past the last tile store nothing.
    fn vector(&self, v: usize) -> Self::Vector;
    /// The vector stores nothing (it pads the last pair of vectors).
    fn is_empty(vector: &Self::Vector) -> bool;
    /// `V` for input channel `ci` of the vector's tiles: point `ξ` to `dst + ξ · point_stride`.
    ///
    /// # Safety
    /// `S`'s level, inside [`Simd::vectorize`]; `dst` has room for every point.
    unsafe fn transform_input<S: Simd>(&self, vector: &Self::Vector, ci: usize, dst: *mut f32, point_stride: usize);
    /// The output pixels of `channels` of the vector's tiles from `M` (`m` starts at the vector's first
    /// column of point 0, channel 0), with the epilogue.
    ///
    /// # Safety
    /// `S`'s level, inside [`Simd::vectorize`]; `m` holds the vector's `M`; `out` is the whole output.
    unsafe fn transform_output<S: Simd>(
        &self,
        vector: &Self::Vector,
        channels: Range<usize>,
        m: &[f32],
        strides: &Strides,
        out: SendPtr,
    );
}

/// The three phases over every tile of a call, in chunks.
///
/// # Safety
/// `S`'s level; `filters` hold `T::POINTS` points of the call's channels; `out` is the whole output.
unsafe fn drive<S: Simd, T: Transform>(transform: &T, filters: &Filters, out: SendPtr) {
    debug_assert_eq!(filters.points, T::POINTS);
    let (c_in, c_out) = (filters.c_in, filters.c_out);
    // Whole pairs of vectors, for the micro-kernel's 32-column panels.
    let vector_count = transform.tiles().div_ceil(32) * 2;
    let vectors: Vec<T::Vector> = (0..vector_count).map(|v| transform.vector(v)).collect();
    let zeros = vec![0f32; c_out];
    let run_chunk = |chunk: &[T::Vector], parallel: bool| {
        with_scratch(|transformed_input, products| {
            let pairs = chunk.len() / 2;
            let strides = Strides::new(pairs, c_in, c_out);
            // Phases 1 and 2 write every element of both buffers that is later read; a vector past the
            // last tile is neither transformed, multiplied nor stored, so its V and M columns stay stale.
            if transformed_input.len() < T::POINTS * strides.input_point {
                transformed_input.resize(T::POINTS * strides.input_point, 0.0);
            }
            if products.len() < T::POINTS * strides.product_point {
                products.resize(T::POINTS * strides.product_point, 0.0);
            }
            let (v, m) = (SendPtr(transformed_input.as_mut_ptr()), SendPtr(products.as_mut_ptr()));
            let phases = Phases { transform, filters, chunk, strides, parallel };
            // Phases are profiled only when they run on the calling thread: a profile scope on a rayon
            // worker would add that worker's time to the table as if it were the caller's.
            let time = |op, phase: &dyn Fn()| if parallel { profile::time(op, phase) } else { phase() };
            // SAFETY: `S`'s level per the caller; both buffers were sized for this chunk above.
            time("conv2d.winograd_input", &|| unsafe { phases.transform_inputs::<S>(v) });
            // SAFETY: as above; V was fully written by the input transform.
            time(T::GEMM_OP, &|| unsafe { phases.multiply::<S>(transformed_input, &zeros, m) });
            // SAFETY: as above; M was fully written by `multiply`; `out` is the whole output.
            time("conv2d.winograd_output", &|| unsafe { phases.transform_outputs::<S>(products, out) });
        })
    };
    let threads = rayon::current_num_threads();
    // Chunks that one core takes through all three phases while its V and M stay in its L2.
    let local_pairs = (LOCAL_CHUNK_FLOATS / (T::POINTS * NR * (c_in + c_out))).max(1);
    if vectors.len() >= 2 * threads * 2 * local_pairs && threads > 1 {
        vectors.par_chunks(2 * local_pairs).for_each(|chunk| run_chunk(chunk, false));
    } else {
        // Few tiles: each phase in parallel over the whole (bounded) chunk.
        let pairs_per_chunk = (CHUNK_FLOATS / (T::POINTS * c_in.max(c_out) * NR)).max(1);
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
/// counts the unpadded strides map every point's row onto the same L1 set, and the loads or stores
/// of one tile's points (or 12 rows of one micro-tile) evict each other.
pub(super) struct Strides {
    input_point: usize,
    pub(super) product_row: usize,
    pub(super) product_point: usize,
}

impl Strides {
    fn new(pairs: usize, c_in: usize, c_out: usize) -> Self {
        let product_row = pairs * NR + 16;
        Self { input_point: pairs * c_in * NR + 16, product_row, product_point: c_out * product_row + 16 }
    }
}

/// The three phases over one chunk of tile vectors, each split into tasks run in parallel or, when
/// the chunk is one core's share, one after another.
struct Phases<'a, T: Transform> {
    transform: &'a T,
    filters: &'a Filters<'a>,
    chunk: &'a [T::Vector],
    strides: Strides,
    parallel: bool,
}

impl<T: Transform> Phases<'_, T> {
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
        let c_in = self.filters.c_in;
        let channel_blocks = c_in.div_ceil(CHANNELS_PER_TASK);
        self.for_each_task(self.chunk.len() * channel_blocks, |task| {
            let (index, block) = (task / channel_blocks, task % channel_blocks);
            let vector = &self.chunk[index];
            // The vector padding the last pair: the GEMMs skip its columns, so its V is never read.
            if T::is_empty(vector) {
                return;
            }
            let (pair, half) = (index / 2, index % 2);
            // SAFETY: `S`'s level per the caller. Each task writes its own (pair, channel, half) rows of V.
            unsafe {
                S::vectorize(
                    #[inline(always)]
                    || {
                        for ci in block * CHANNELS_PER_TASK..((block + 1) * CHANNELS_PER_TASK).min(c_in) {
                            let dst = v.get().add((pair * c_in + ci) * NR + LANES * half);
                            self.transform.transform_input::<S>(vector, ci, dst, self.strides.input_point);
                        }
                    },
                )
            }
        });
    }

    /// Phase 2: `M[ξ] = U[ξ] · V[ξ]` for every point into `products` (`[ξ][C_out][pairs · NR]`).
    ///
    /// # Safety
    /// `S`'s level; `transformed_input` holds the chunk's `V`; `products` has room for its `M`.
    unsafe fn multiply<S: Simd>(&self, transformed_input: &[f32], zeros: &[f32], products: SendPtr) {
        let filters = self.filters;
        let (c_in, c_out, strides) = (filters.c_in, filters.c_out, &self.strides);
        let pairs = self.chunk.len() / 2;
        let panels = c_out.div_ceil(MR);
        let groups = pairs.div_ceil(PAIRS_PER_TASK);
        let splits = if self.parallel { (4 * rayon::current_num_threads()).div_ceil(T::POINTS * groups) } else { 1 };
        let splits = splits.clamp(1, panels);
        self.for_each_task(T::POINTS * groups * splits, |task| {
            // SAFETY: `S`'s level per the caller; each tile's rows and columns lie inside `products`,
            // and no other task writes this (point, pair, panel) tile.
            unsafe {
                S::vectorize(
                    #[inline(always)]
                    || {
                        let (point, group, split) = (task / (groups * splits), task / splits % groups, task % splits);
                        let pair_range = group * PAIRS_PER_TASK..((group + 1) * PAIRS_PER_TASK).min(pairs);
                        let panel_range = share(panels, splits, split);
                        let mut k0 = 0;
                        while k0 < c_in {
                            let kc = S::KC.min(c_in - k0);
                            for pair in pair_range.clone() {
                                let b =
                                    transformed_input[point * strides.input_point + (pair * c_in + k0) * NR..].as_ptr();
                                let offset = point * strides.product_point + pair * NR;
                                // A second vector past the last tile is skipped (and never read back).
                                let second = if T::is_empty(&self.chunk[2 * pair + 1]) { 0 } else { u16::MAX };
                                let targets = [
                                    VectorTarget { offset, mask: u16::MAX, bias_offset: 0 },
                                    VectorTarget { offset: offset + LANES, mask: second, bias_offset: 0 },
                                ];
                                for panel in panel_range.clone() {
                                    let a = filters.panel(panel, point, k0);
                                    let (next_panel, next_k0) =
                                        next_call(panel, &panel_range, pair + 1 < pair_range.end, k0, kc);
                                    let tile = Tile {
                                        rows: MR.min(c_out - panel * MR),
                                        row0: panel * MR,
                                        stride: strides.product_row,
                                        targets: &targets,
                                        next_weights: filters.panel_ahead(next_panel, point, next_k0),
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
        let c_out = self.filters.c_out;
        let channel_blocks = c_out.div_ceil(CHANNELS_PER_TASK);
        self.for_each_task(self.chunk.len() * channel_blocks, |task| {
            let (index, block) = (task / channel_blocks, task % channel_blocks);
            let channels = block * CHANNELS_PER_TASK..((block + 1) * CHANNELS_PER_TASK).min(c_out);
            let m = &products[LANES * index..];
            let (transform, vector, strides) = (self.transform, &self.chunk[index], &self.strides);
            // Nothing of the padding vector is stored.
            if T::is_empty(vector) {
                return;
            }
            // SAFETY: `S`'s level per the caller; each task stores the pixels of its own tiles and channels.
            unsafe {
                S::vectorize(
                    #[inline(always)]
                    || transform.transform_output::<S>(vector, channels, m, strides, out),
                )
            };
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tile_override_reads_f2_f4_auto_and_ignores_the_rest() {
        assert_eq!(tile_policy_from_env(None), None);
        assert_eq!(tile_policy_from_env(Some("auto")), None);
        assert_eq!(tile_policy_from_env(Some(" F2 ")), Some(ConvKernel::WinogradF2));
        assert_eq!(tile_policy_from_env(Some("f4")), Some(ConvKernel::WinogradF4));
        assert_eq!(tile_policy_from_env(Some("f6")), None);
    }
}
