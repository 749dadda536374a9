//! Nearest-neighbour ×2 upsampling on the CPU (float32), one pass with planes spread over rayon's
//! threads (candle's `upsample_nearest2d` is a single-threaded index walk). The output can carry the
//! zero border of the convolution that follows (`Upsample2D`'s), which then reads it as it is instead
//! of copying it into a padded buffer.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{f32_inputs, on_cpu_f32, zero_fill};

struct UpsampleNearest2x {
    /// Zero border written around each output plane.
    pad: usize,
}

/// `F.interpolate(x, scale_factor=2.0, mode="nearest")` for `x`: [B, C, H, W].
pub fn upsample_nearest_2x(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if on_cpu_f32(x) {
        x.contiguous()?.apply_op1_no_bwd(&UpsampleNearest2x { pad: 0 })
    } else {
        x.upsample_nearest2d(2 * h, 2 * w)
    }
}

/// [`upsample_nearest_2x`] written with a zero border of `pad` around each plane:
/// [B, C, 2H + 2·pad, 2W + 2·pad]. `None` off the CPU or for other dtypes (the caller pads itself).
pub fn upsample_nearest_2x_padded(x: &Tensor, pad: usize) -> Result<Option<Tensor>> {
    x.dims4()?;
    if !on_cpu_f32(x) {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op1_no_bwd(&UpsampleNearest2x { pad })?))
}

impl CustomOp1 for UpsampleNearest2x {
    fn name(&self) -> &'static str {
        "upsample-nearest-2x"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let [x] = f32_inputs([(storage, layout)], self.name())?;
        let (b, c, h, w) = layout.shape().dims4()?;
        let pad = self.pad;
        let (out_h, out_w) = (2 * h + 2 * pad, 2 * w + 2 * pad);
        let len = b * c * out_h * out_w;
        let fill = |out: &mut [MaybeUninit<f32>]| {
            if h * w == 0 {
                // No pixels: the planes are all border (or empty).
                zero_fill(out);
                return;
            }
            out.par_chunks_mut(out_h * out_w).zip(x.par_chunks(h * w)).for_each(|(dst, src)| {
                let (top, rest) = dst.split_at_mut(pad * out_w);
                let (body, bottom) = rest.split_at_mut(2 * h * out_w);
                zero_fill(top);
                zero_fill(bottom);
                for (row, pair) in src.chunks_exact(w).zip(body.chunks_exact_mut(2 * out_w)) {
                    let (upper, lower) = pair.split_at_mut(out_w);
                    let (left, rest) = upper.split_at_mut(pad);
                    let (middle, right) = rest.split_at_mut(2 * w);
                    zero_fill(left);
                    zero_fill(right);
                    for (d, &v) in middle.chunks_exact_mut(2).zip(row) {
                        d[0].write(v);
                        d[1].write(v);
                    }
                    lower.copy_from_slice(upper);
                }
            });
        };
        // SAFETY: each plane writes its border rows, and each input row its two output rows whole
        // (border columns included), so every element once; with no pixels everything is zeroed. Not
        // zero-filled first: that was a second pass over the output.
        let out = unsafe { crate::memory::filled_by(len, fill) };
        Ok((CpuStorage::F32(out), Shape::from((b, c, out_h, out_w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candle() {
        let x = Tensor::randn(0f32, 1.0, (2, 3, 5, 7), &Device::Cpu).unwrap();
        let ours = upsample_nearest_2x(&x).unwrap();
        let reference = x.upsample_nearest2d(10, 14).unwrap();
        let diff = (ours - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0);
    }

    #[test]
    fn padded_output_is_the_padded_upsample() {
        for (h, w) in [(5, 7), (4, 4), (1, 1), (0, 3)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &Device::Cpu).unwrap();
            let plain = upsample_nearest_2x(&x).unwrap();
            for pad in [0, 1, 2] {
                let padded = upsample_nearest_2x_padded(&x, pad).unwrap().unwrap();
                let expected = plain.pad_with_zeros(2, pad, pad).unwrap().pad_with_zeros(3, pad, pad).unwrap();
                assert_eq!(padded.dims(), expected.dims(), "{h}×{w} pad {pad}");
                let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(values(&padded), values(&expected), "{h}×{w} pad {pad}");
            }
        }
        let half = Tensor::zeros((1, 1, 2, 2), candle_core::DType::F16, &Device::Cpu).unwrap();
        assert!(upsample_nearest_2x_padded(&half, 1).unwrap().is_none());
    }
}
