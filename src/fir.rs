//! FIR resampling (diffusers' `upfirdn2d_native` with the `(1, 3, 3, 1)` kernel), used by the NCSN++
//! Skip blocks: `upsample_2d`/`FirUpsample2D` (zero-insertion then blur) and
//! `downsample_2d`/`FirDownsample2D` (blur then stride 2).
//!
//! The 2D kernel is the outer product of `(1, 3, 3, 1)` normalised to sum 1 (times 4 when
//! upsampling, to keep the mean), symmetric, so the flip in `upfirdn2d_native` is a no-op.

use candle_core::{Result, Tensor, D};

const FIR_TAPS: [f32; 4] = [1.0, 3.0, 3.0, 1.0];

fn fir_kernel(gain: f32, device: &candle_core::Device, dtype: candle_core::DType) -> Result<Tensor> {
    let sum: f32 = FIR_TAPS.iter().sum::<f32>().powi(2);
    let k: Vec<f32> = FIR_TAPS.iter().flat_map(|a| FIR_TAPS.iter().map(move |b| a * b / sum * gain)).collect();
    Tensor::from_vec(k, (1, 1, 4, 4), device)?.to_dtype(dtype)
}

/// Applies the 4×4 FIR kernel to every channel of `x` [B, C, H, W] after padding `(lo, hi)` on both
/// spatial axes, with the given stride.
fn blur(x: &Tensor, kernel: &Tensor, pad: (usize, usize), stride: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let x = x.reshape((b * c, 1, h, w))?;
    let x = x.pad_with_zeros(D::Minus2, pad.0, pad.1)?.pad_with_zeros(D::Minus1, pad.0, pad.1)?;
    let y = x.conv2d(kernel, 0, stride, 1, 1)?;
    let (_, _, oh, ow) = y.dims4()?;
    y.reshape((b, c, oh, ow))
}

/// `upsample_2d(x, kernel=(1, 3, 3, 1))`: [B, C, H, W] → [B, C, 2H, 2W].
pub fn upsample_2d(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    // Zero insertion: each pixel lands at (2i, 2j), zeros elsewhere.
    let x5 = x.reshape((b * c, h, 1, w, 1))?;
    let x5 = x5.pad_with_zeros(4, 0, 1)?.pad_with_zeros(2, 0, 1)?;
    let up = x5.reshape((b, c, 2 * h, 2 * w))?;
    // pad_value = 4 - 2 = 2: pad ((2 + 1) / 2 + 2 - 1, 2 / 2) = (2, 1).
    blur(&up, &fir_kernel(4.0, x.device(), x.dtype())?, (2, 1), 1)
}

/// `downsample_2d(x, kernel=(1, 3, 3, 1))`: [B, C, H, W] → [B, C, H/2, W/2].
pub fn downsample_2d(x: &Tensor) -> Result<Tensor> {
    // pad_value = 2: pad ((2 + 1) / 2, 2 / 2) = (1, 1).
    blur(x, &fir_kernel(1.0, x.device(), x.dtype())?, (1, 1), 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn constant_image_stays_constant_away_from_borders() {
        let x = Tensor::ones((1, 2, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        let up = upsample_2d(&x).unwrap();
        assert_eq!(up.dims(), &[1, 2, 16, 16]);
        let v: f32 = up.get(0).unwrap().get(1).unwrap().get(8).unwrap().get(8).unwrap().to_scalar().unwrap();
        assert!((v - 1.0).abs() < 1e-6);
        let down = downsample_2d(&x).unwrap();
        assert_eq!(down.dims(), &[1, 2, 4, 4]);
        let v: f32 = down.get(0).unwrap().get(0).unwrap().get(2).unwrap().get(2).unwrap().to_scalar().unwrap();
        assert!((v - 1.0).abs() < 1e-6);
    }
}
