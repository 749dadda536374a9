//! Nearest-neighbour ×2 upsampling on the CPU (float32), one pass with planes spread over rayon's
//! threads (candle's `upsample_nearest2d` is a single-threaded index walk).

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{f32_inputs, on_cpu_f32};

struct UpsampleNearest2x;

/// `F.interpolate(x, scale_factor=2.0, mode="nearest")` for `x`: [B, C, H, W].
pub fn upsample_nearest_2x(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if on_cpu_f32(x) {
        x.contiguous()?.apply_op1_no_bwd(&UpsampleNearest2x)
    } else {
        x.upsample_nearest2d(2 * h, 2 * w)
    }
}

impl CustomOp1 for UpsampleNearest2x {
    fn name(&self) -> &'static str {
        "upsample-nearest-2x"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let [x] = f32_inputs([(storage, layout)], self.name())?;
        let (b, c, h, w) = layout.shape().dims4()?;
        let len = b * c * 4 * h * w;
        let fill = |out: &mut [MaybeUninit<f32>]| {
            if h * w == 0 {
                return;
            }
            out.par_chunks_mut(4 * h * w).zip(x.par_chunks(h * w)).for_each(|(dst, src)| {
                for (row, pair) in src.chunks_exact(w).zip(dst.chunks_exact_mut(4 * w)) {
                    let (top, bottom) = pair.split_at_mut(2 * w);
                    for (d, &v) in top.chunks_exact_mut(2).zip(row) {
                        d[0].write(v);
                        d[1].write(v);
                    }
                    bottom.copy_from_slice(top);
                }
            });
        };
        // SAFETY: each input row writes its two output rows whole (every element once), and the planes
        // cover the output; with no pixels the output is empty. Not zero-filled first: that was a
        // second pass over the output.
        let out = unsafe { crate::memory::filled_by(len, fill) };
        Ok((CpuStorage::F32(out), Shape::from((b, c, 2 * h, 2 * w))))
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
}
