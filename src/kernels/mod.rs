//! Hand-written CPU kernels for the hot operations, as candle custom ops: candle's generic CPU
//! versions re-pack weights on every call and copy element by element; these work on the layouts
//! the UNet actually has. Other devices and dtypes fall back to candle's own ops.

pub mod attention;
pub mod conv2d;
mod conv2d_avx512;
pub mod group_norm;
pub mod linear;
pub mod simd;
pub mod upsample;

use candle_core::{Layout, Result};

/// The elements of a contiguous tensor (`op` names the kernel in the error for anything else).
pub(crate) fn contiguous_slice<'a>(data: &'a [f32], layout: &Layout, op: &str) -> Result<&'a [f32]> {
    match layout.contiguous_offsets() {
        Some((start, end)) if end <= data.len() => Ok(&data[start..end]),
        _ => candle_core::bail!("{op}: contiguous tensors expected"),
    }
}
