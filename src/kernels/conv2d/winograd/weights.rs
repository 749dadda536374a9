//! How a Winograd layer's weights are held: the filters as loaded (left in the weights file's mapping
//! for a float32 safetensors file, else the loaded tensor), and F(2×2, 3×3)'s `U = G g Gᵀ`, computed
//! from them on the layer's first call. The other forms a call may need are derived from that `U`:
//! the direct kernel's packed filters (for layers that see calls too small for Winograd) and
//! F(4×4, 3×3)'s `U` (see `f4`), each built once.
//!
//! **Why on first use.** The transform writes 16/9 of the filters' size, in f64 arithmetic: it was
//! most of `from_pretrained` (150 ms for cifar10-32, against diffusers' 32 ms on the same machine).
//! Deferred, a load copies nothing, as diffusers' memory-mapped load does not, and each layer pays its
//! transform once, inside the first forward, so a load plus one forward takes as long as before.
//!
//! **What stays resident.** Loaded tensors are dropped once F(2×2)'s `U` is built. Mapped filters
//! stay mapped, their pages released (they cost no memory until read again), which lets a layer drop
//! F(2×2)'s `U` once it has built F(4×4)'s: a layer that runs F(4×4) only (every layer from 16×16 up
//! at AVX2) then holds 36 floats per filter instead of 52, and a later F(2×2) call rebuilds the same
//! `U` from the mapping, bit for bit (the transform is deterministic).

// Inside `Simd::vectorize` code: index loops over the small arrays (see `microkernel`).
#![allow(clippy::needless_range_loop)]

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use candle_core::{CpuStorage, Storage, Tensor};

use rayon::prelude::*;

use super::super::direct::PackedWeights;
use super::super::microkernel::MR;
use crate::kernels::isa::multiversion;
use crate::memory::MappedF32;

/// Transformed points per tile of F(2×2, 3×3): a 4×4 patch.
pub(super) const POINTS: usize = 16;
/// Input channels per block of filters transformed at once when the weights are packed.
const FILTER_BLOCK: usize = 64;

/// A Winograd layer's filters as loaded, `[c_out, c_in, 3, 3]` float32: where they stay until the
/// layer's first call.
#[derive(Debug, Clone)]
pub(in crate::kernels::conv2d) enum LoadedFilters {
    /// In the weights file's mapping (a float32 safetensors file): the load copies nothing.
    Mapped(MappedF32),
    /// A contiguous float32 CPU tensor (other formats and dtypes, converted as loaded).
    Tensor(Tensor),
}

impl LoadedFilters {
    /// Runs `f` on the values; `None` for a tensor that is not contiguous float32 on the CPU (which
    /// `Conv2dWeight` never builds).
    pub(in crate::kernels::conv2d) fn with_values<R>(&self, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
        match self {
            Self::Mapped(mapped) => Some(f(mapped.as_slice())),
            Self::Tensor(tensor) => {
                let (storage, layout) = tensor.storage_and_layout();
                match &*storage {
                    Storage::Cpu(CpuStorage::F32(data)) => {
                        layout.contiguous_offsets().map(|(start, end)| f(&data[start..end]))
                    }
                    _ => None,
                }
            }
        }
    }

    /// Once the values have been transformed or packed: mapped filters' pages leave the resident set.
    pub(in crate::kernels::conv2d) fn release(&self) {
        if let Self::Mapped(mapped) = self {
            mapped.release();
        }
    }
}

/// A 3×3 convolution's weights for the Winograd kernels: the loaded filters until the first call,
/// then `U[ξ] = (G g Gᵀ)[ξ]` for every (output, input) channel pair, packed as `[panel of MR output
/// channels][ξ][C_in][MR]` for the micro-kernel (rows past `c_out` zero).
#[derive(Debug)]
pub struct WinogradWeights {
    /// F(2×2)'s `U` while held: built on the first call that needs it ([`WinogradWeights::packed`]),
    /// dropped when F(4×4)'s is built from mapped filters (and rebuilt from them if needed again).
    /// Shared, so a call that is using it keeps it alive through a drop.
    u: Mutex<Option<Arc<Vec<f32>>>>,
    /// The loaded filters: a tensor until `u` is first built, mapped filters for good. At least one
    /// of the two is always held.
    filters: Mutex<Option<LoadedFilters>>,
    pub(in crate::kernels::conv2d) c_out: usize,
    pub(in crate::kernels::conv2d) c_in: usize,
    /// The same filters packed for the direct kernel, built on the first call with fewer tiles than
    /// one vector (a 4×4 map at batch 1 or 2, where the Winograd GEMMs would fill a quarter of each
    /// vector's lanes with 16/9 the weights, and take twice the direct kernel's time): only the layers
    /// that see such calls pay its memory.
    direct: OnceLock<PackedWeights>,
    /// F(4×4, 3×3)'s `U` (`f4`), built on the first call that runs F(4×4): 36/16 of this layer's
    /// memory, paid only by layers that see calls with enough tiles.
    f4: OnceLock<Vec<f32>>,
}

/// The value under `mutex`, whether or not a thread panicked while holding it (every value stored
/// under these locks is whole).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WinogradWeights {
    /// `filters`: [c_out, c_in, 3, 3] (kept, and transformed on first use).
    pub(in crate::kernels::conv2d) fn new(filters: LoadedFilters, c_out: usize, c_in: usize) -> Self {
        let filters = Mutex::new(Some(filters));
        Self { u: Mutex::new(None), filters, c_out, c_in, direct: OnceLock::new(), f4: OnceLock::new() }
    }

    /// `U` for `weight` ([c_out, c_in, 3, 3]), packed.
    fn transform(weight: &[f32], c_out: usize, c_in: usize) -> Vec<f32> {
        // One pair of block buffers per worker, not per panel.
        let buffers = || (Box::new([[0f64; FILTER_BLOCK * MR]; 9]), Box::new([[0f32; FILTER_BLOCK * MR]; POINTS]));
        let fill = |data: &mut [MaybeUninit<f32>]| {
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
                            let dst = &mut dst[(point * c_in + ci0) * MR..][..channels * MR];
                            dst.iter_mut().zip(row).for_each(|(d, &value)| _ = d.write(value));
                        }
                    }
                },
            )
        };
        // SAFETY: the panels cover the buffer; each writes every point of every block of input channels,
        // `POINTS · c_in · MR` floats (rows past `c_out` as the zeros their zeroed filters transform to).
        unsafe { crate::memory::filled_by(c_out.div_ceil(MR) * POINTS * c_in * MR, fill) }
    }

    /// The loaded filters, while held (see the field).
    fn filters(&self) -> Option<LoadedFilters> {
        lock(&self.filters).clone()
    }

    /// The filters packed for the direct kernel (see `direct`), recovered from `U`: `G`'s first and
    /// last rows are unit vectors, so `U`'s corner points are `g`'s corners and every other element of
    /// `g` is a sum and difference of at most four points (computed in f64, so each recovered weight is
    /// within an ulp or two of the loaded one).
    pub(in crate::kernels::conv2d) fn direct(&self) -> &PackedWeights {
        get_or_build(&self.direct, || {
            let (c_out, c_in) = (self.c_out, self.c_in);
            // Always from `U`, even while the loaded filters are still held: packing those instead
            // would make a call's result depend on whether the layer had run a Winograd call before.
            let u = self.packed();
            let mut filters = vec![0f32; c_out * c_in * 9];
            filters.par_chunks_mut(c_in * 9).enumerate().for_each(|(co, filters)| {
                let (panel, r) = (co / MR, co % MR);
                for (ci, g) in filters.chunks_exact_mut(9).enumerate() {
                    let u = |point: usize| f64::from(u[((panel * POINTS + point) * c_in + ci) * MR + r]);
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

    /// F(2×2)'s packed `U`, `[panel][ξ][C_in][MR]`, built from the loaded filters when not held (a
    /// loaded tensor is then dropped, mapped filters released). Two threads that meet here may both
    /// build it; one result is kept.
    pub(super) fn packed(&self) -> Arc<Vec<f32>> {
        if let Some(u) = lock(&self.u).clone() {
            return u;
        }
        // No filters means another thread has set `U` from a loaded tensor: it is dropped only after
        // `U` is set, and that `U` is never dropped.
        let Some(filters) = self.filters() else {
            return lock(&self.u).clone().expect("U is set before loaded tensors are dropped");
        };
        let (c_out, c_in) = (self.c_out, self.c_in);
        let built = filters
            .with_values(|data| Self::transform(data, c_out, c_in))
            .expect("contiguous float32 CPU filters, as `Conv2dWeight` builds them");
        let u = lock(&self.u).get_or_insert_with(|| Arc::new(built)).clone();
        if matches!(filters, LoadedFilters::Tensor(_)) {
            *lock(&self.filters) = None;
        }
        filters.release();
        u
    }

    /// F(4×4)'s packed `U`, built by `build` on first use; F(2×2)'s is then dropped if the filters it
    /// came from are mapped (see the module doc).
    pub(super) fn f4(&self, build: impl FnOnce(&Self) -> Vec<f32>) -> &[f32] {
        get_or_build(&self.f4, || {
            let u = build(self);
            if matches!(*lock(&self.filters), Some(LoadedFilters::Mapped(_))) {
                *lock(&self.u) = None;
            }
            u
        })
        .as_slice()
    }

    /// Whether F(2×2)'s `U` is held now (for tests of what stays resident).
    #[cfg(test)]
    pub(in crate::kernels::conv2d) fn holds_f2(&self) -> bool {
        lock(&self.u).is_some()
    }
}

/// `cell`'s value, built by `build` when it has none. Not `OnceLock::get_or_init`: the builders run
/// rayon tasks, and a rayon worker blocked on the lock while another thread's builder waits for
/// workers could deadlock the pool; two threads that meet here both build, and one result is kept.
fn get_or_build<T>(cell: &OnceLock<T>, build: impl FnOnce() -> T) -> &T {
    if let Some(value) = cell.get() {
        return value;
    }
    let _ = cell.set(build());
    cell.get().expect("set above")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(c_out: usize, c_in: usize) -> Vec<f32> {
        (0..c_out * c_in * 9).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.3).collect()
    }

    /// A stand-in for F(4×4)'s build that needs F(2×2)'s `U`, as `f4::transform_filters` does.
    fn build_f4(weights: &WinogradWeights) -> Vec<f32> {
        weights.packed().iter().map(|&u| 2.0 * u).collect()
    }

    /// Mapped filters: F(2×2)'s `U` is dropped once F(4×4)'s is built, and a later call rebuilds the
    /// same `U` from the mapping; a loaded tensor, which cannot be read again, keeps it.
    #[test]
    fn f2_u_is_dropped_for_f4_only_where_the_filters_stay_mapped() {
        let (c_out, c_in) = (13, 70);
        let weight = filters(c_out, c_in);
        let path = std::env::temp_dir().join(format!("candle-unet2d-winograd-filters-{}", std::process::id()));
        std::fs::write(&path, weight.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: the file is this test's own, and nothing writes it while it is mapped.
        let map = std::sync::Arc::new(unsafe { memmap2::Mmap::map(&file) }.unwrap());
        std::fs::remove_file(&path).unwrap();
        let mapped = MappedF32::new(map, 0, weight.len()).unwrap();
        let expected = WinogradWeights::transform(&weight, c_out, c_in);

        let winograd = WinogradWeights::new(LoadedFilters::Mapped(mapped), c_out, c_in);
        let first = winograd.packed();
        assert_eq!(*first, expected);
        assert!(winograd.holds_f2() && winograd.filters().is_some(), "mapped filters stay mapped");
        let f4 = winograd.f4(build_f4).to_vec();
        assert!(!winograd.holds_f2(), "F(2×2)'s U is dropped once F(4×4)'s is built");
        assert_eq!(*first, expected, "a call still using the dropped U keeps it whole");
        assert_eq!(*winograd.packed(), expected, "rebuilt bit for bit from the mapping");
        assert!(winograd.holds_f2(), "and held again");
        assert_eq!(winograd.f4(|_| unreachable!("F(4×4)'s U is built once")), &f4[..]);

        let tensor = Tensor::from_slice(&weight, (c_out, c_in, 3, 3), &candle_core::Device::Cpu).unwrap();
        let winograd = WinogradWeights::new(LoadedFilters::Tensor(tensor), c_out, c_in);
        assert_eq!(winograd.f4(build_f4), &f4[..]);
        assert!(winograd.holds_f2() && winograd.filters().is_none(), "a loaded tensor is dropped, its U kept");
        assert_eq!(*winograd.packed(), expected);
    }

    /// The direct weights recovered from `U` are the loaded filters to within float32 rounding.
    #[test]
    fn recovered_direct_weights_are_the_loaded_ones() {
        let (c_out, c_in) = (13, 70);
        let weight = filters(c_out, c_in);
        let expected = PackedWeights::new(&weight, c_out, c_in, 3);
        let filters = Tensor::from_slice(&weight, (c_out, c_in, 3, 3), &candle_core::Device::Cpu).unwrap();
        let winograd = WinogradWeights::new(LoadedFilters::Tensor(filters), c_out, c_in);
        assert!(winograd.filters().is_some() && !winograd.holds_f2(), "U is built on first use");
        let recovered = winograd.direct();
        assert!(winograd.filters().is_none(), "the loaded filters are dropped once U is built");
        let u = winograd.packed();
        assert_eq!(*u, WinogradWeights::transform(&weight, c_out, c_in));
        assert_eq!(recovered.packed().len(), expected.packed().len());
        for (i, (&a, &b)) in recovered.packed().iter().zip(expected.packed()).enumerate() {
            // Four rounded points of up to ~0.7 each: a few 1e-8 of error apiece.
            assert!((a - b).abs() <= 4.0 * f32::EPSILON, "element {i}: {a} vs {b}");
        }
    }
}
