//! Hand-written CPU kernels for the hot operations, as candle custom ops: candle's generic CPU
//! versions re-pack weights on every call and copy element by element; these work on the layouts
//! the UNet actually has. Other devices and dtypes fall back to candle's own ops.

pub mod conv2d;
pub mod group_norm;
