//! Hand-written CPU kernels for the hot operations, as candle custom ops: candle's generic CPU
//! versions re-pack weights on every call and copy element by element; these work on the layouts
//! the UNet actually has, at the instruction-set level [`isa`] picks. Other devices and dtypes fall
//! back to candle's own ops.

pub mod attention;
mod batch_invariance;
pub mod concat;
pub mod conv2d;
mod cpu_core;
pub mod group_norm;
pub mod isa;
pub mod linear;
pub mod simd;
pub mod upsample;
mod worker;

pub use batch_invariance::batch_invariant;
pub(crate) use batch_invariance::choice_batch;
pub(crate) use worker::on_worker;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result};

/// Whether the hand-written kernels take `t`: a float32 tensor on the CPU (anything else falls back to
/// candle's own ops).
pub(crate) fn on_cpu_f32(t: &candle_core::Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32
}

/// The elements of a contiguous tensor (`op` names the kernel in the error for anything else).
pub(crate) fn contiguous_slice<'a>(data: &'a [f32], layout: &Layout, op: &str) -> Result<&'a [f32]> {
    match layout.contiguous_offsets() {
        Some((start, end)) if end <= data.len() => Ok(&data[start..end]),
        _ => candle_core::bail!("{op}: contiguous tensors expected"),
    }
}

/// A custom op's inputs as float32 slices, or an error naming `op` when one is another dtype or not
/// contiguous.
pub(crate) fn f32_inputs<'a, const N: usize>(
    inputs: [(&'a CpuStorage, &Layout); N],
    op: &str,
) -> Result<[&'a [f32]; N]> {
    let mut slices = [&[][..]; N];
    for (slice, (storage, layout)) in slices.iter_mut().zip(inputs) {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("{op}: float32 tensors expected, got {:?}", storage.dtype());
        };
        *slice = contiguous_slice(data, layout, op)?;
    }
    Ok(slices)
}

/// Zeroes `dst`, uninitialised output. A single float, the one-wide border a 3×3 convolution reads on
/// each side of a row, is one store: through `write_bytes` it was a `memset` call per side and row,
/// which cost more than the row's own work on small maps.
#[inline(always)]
pub(crate) fn zero_fill(dst: &mut [std::mem::MaybeUninit<f32>]) {
    match dst {
        [] => {}
        [only] => _ = only.write(0.0),
        // SAFETY: all-zero bytes are the float 0.0; the range is `dst`.
        _ => unsafe { dst.as_mut_ptr().write_bytes(0, dst.len()) },
    }
}

/// A raw output pointer that rayon tasks may share: each task writes only its own, disjoint part
/// (every use says which).
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: see above; the pointer is only written through, at offsets no other task touches.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    pub fn get(self) -> *mut f32 {
        self.0
    }
}
