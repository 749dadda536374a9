//! 2D convolution with fused bias on the CPU (float32): tiled im2col into a per-task buffer, then one
//! `gemm` per tile, `out = bias + W · cols`, with the weight used in its stored `[C_out, C_in·k·k]` order
//! (no per-call repacking). Tiles of output rows keep the column buffer small at any resolution, and
//! (batch, tile) tasks are spread over rayon's threads.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous_slice;

/// Output pixels per gemm tile: large enough for gemm to run at speed, small enough for the column
/// buffer (`C_in·k·k × TILE` floats) to stay in cache for small channel counts.
const TILE_PIXELS: usize = 4096;

/// The convolution's geometry.
#[derive(Debug, Clone, Copy)]
pub struct Conv2dParams {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

struct Conv2dBias(Conv2dParams);

/// `conv2d(x, weight) + bias[None, :, None, None]`. `x`: [B, C_in, H, W]; `weight`: [C_out, C_in, k, k];
/// `bias`: [C_out]. Float32 CPU tensors take the fast path; anything else uses candle's ops.
pub fn conv2d_bias(x: &Tensor, weight: &Tensor, bias: &Tensor, p: Conv2dParams) -> Result<Tensor> {
    let fast = x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && weight.dtype() == x.dtype();
    if fast {
        let x = x.contiguous()?;
        x.apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, &Conv2dBias(p))
    } else {
        let y = x.conv2d(weight, p.padding, p.stride, 1, 1)?;
        y.broadcast_add(&bias.reshape((1, bias.dim(0)?, 1, 1))?)
    }
}

impl CustomOp3 for Conv2dBias {
    fn name(&self) -> &'static str {
        "conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) = (s1, s2, s3) else {
            candle_core::bail!("conv2d-bias: float32 tensors expected");
        };
        let op = self.name();
        let (x, w, b) = (contiguous_slice(x, l1, op)?, contiguous_slice(w, l2, op)?, contiguous_slice(b, l3, op)?);
        let (batch, c_in, h, wd) = l1.shape().dims4()?;
        let (c_out, c_in_w, kh, kw) = l2.shape().dims4()?;
        let Conv2dParams { kernel, stride, padding } = self.0;
        if c_in_w != c_in || kh != kernel || kw != kernel || b.len() != c_out {
            candle_core::bail!(
                "conv2d-bias: weight {:?} / bias {} do not fit input {:?}",
                l2.dims(),
                b.len(),
                l1.dims()
            );
        }
        if h + 2 * padding < kernel || wd + 2 * padding < kernel || stride == 0 {
            candle_core::bail!("conv2d-bias: input {h}×{wd} too small for kernel {kernel} with padding {padding}");
        }
        let geo = Geometry::new(c_in, h, wd, self.0);
        let out_pixels = geo.out_h * geo.out_w;
        let mut out = vec![0f32; batch * c_out * out_pixels];

        let rows_per_tile = (TILE_PIXELS / geo.out_w).clamp(1, geo.out_h);
        let tiles_per_image = geo.out_h.div_ceil(rows_per_tile);
        let tasks = batch * tiles_per_image;
        let threads = rayon::current_num_threads();
        // Few tasks: let gemm split each product across threads instead.
        let gemm_par = if tasks >= threads { gemm::Parallelism::None } else { gemm::Parallelism::Rayon(threads) };
        let out_ptr = SendPtr(out.as_mut_ptr());
        let run = |task: usize| {
            let (img, tile) = (task / tiles_per_image, task % tiles_per_image);
            let row0 = tile * rows_per_tile;
            let rows = rows_per_tile.min(geo.out_h - row0);
            let n = rows * geo.out_w;
            let x_img = &x[img * c_in * h * wd..(img + 1) * c_in * h * wd];
            let cols = geo.im2col(x_img, row0, rows);
            // SAFETY: each task writes the disjoint columns [row0·W_out, row0·W_out + n) of image `img`.
            let dst = unsafe { out_ptr.get().add(img * c_out * out_pixels + row0 * geo.out_w) };
            for (co, &bias) in b.iter().enumerate() {
                // SAFETY: row `co` of this task's tile, inside `out`.
                let row = unsafe { std::slice::from_raw_parts_mut(dst.add(co * out_pixels), n) };
                row.fill(bias);
            }
            let k = geo.k;
            let rhs = cols.as_deref().unwrap_or(&x_img[row0 * geo.out_w..]);
            let rhs_rs = if cols.is_some() { n as isize } else { out_pixels as isize };
            // SAFETY: dst is [c_out × n] with row stride out_pixels; lhs is [c_out × k] contiguous;
            // rhs is [k × n] with row stride rhs_rs, all in bounds by construction.
            unsafe {
                gemm::gemm(
                    c_out,
                    n,
                    k,
                    dst,
                    1,
                    out_pixels as isize,
                    true,
                    w.as_ptr(),
                    1,
                    k as isize,
                    rhs.as_ptr(),
                    1,
                    rhs_rs,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm_par,
                );
            }
        };
        if tasks > 1 && threads > 1 {
            (0..tasks).into_par_iter().for_each(run);
        } else {
            (0..tasks).for_each(run);
        }
        let shape = Shape::from((batch, c_out, geo.out_h, geo.out_w));
        Ok((CpuStorage::F32(out), shape))
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: tasks write disjoint regions (see `run`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Input/output sizes of one image.
struct Geometry {
    c_in: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
    /// Rows of the column matrix: `C_in · k · k`.
    k: usize,
    p: Conv2dParams,
}

impl Geometry {
    fn new(c_in: usize, h: usize, w: usize, p: Conv2dParams) -> Self {
        let out_h = (h + 2 * p.padding - p.kernel) / p.stride + 1;
        let out_w = (w + 2 * p.padding - p.kernel) / p.stride + 1;
        Self { c_in, h, w, out_h, out_w, k: c_in * p.kernel * p.kernel, p }
    }

    /// The `[C_in·k·k, rows·W_out]` column matrix for output rows `row0..row0 + rows`; `None` for a
    /// 1×1 stride-1 unpadded conv, whose columns are the input itself.
    fn im2col(&self, x: &[f32], row0: usize, rows: usize) -> Option<Vec<f32>> {
        let Conv2dParams { kernel, stride, padding } = self.p;
        if kernel == 1 && stride == 1 && padding == 0 {
            return None;
        }
        let n = rows * self.out_w;
        let mut cols = vec![0f32; self.k * n];
        for ci in 0..self.c_in {
            let plane = &x[ci * self.h * self.w..(ci + 1) * self.h * self.w];
            for ky in 0..kernel {
                for kx in 0..kernel {
                    let r = (ci * kernel + ky) * kernel + kx;
                    let dst_row = &mut cols[r * n..(r + 1) * n];
                    // Output columns whose input column ox·s + kx − p lies inside the image.
                    let ox_lo = padding.saturating_sub(kx).div_ceil(stride);
                    let ox_hi = ((self.w + padding - kx).div_ceil(stride)).min(self.out_w);
                    for oy in 0..rows {
                        let iy = ((row0 + oy) * stride + ky) as isize - padding as isize;
                        if iy < 0 || iy >= self.h as isize || ox_lo >= ox_hi {
                            continue;
                        }
                        let src = &plane[iy as usize * self.w..(iy as usize + 1) * self.w];
                        let dst = &mut dst_row[oy * self.out_w..(oy + 1) * self.out_w];
                        let ix0 = ox_lo * stride + kx - padding;
                        if stride == 1 {
                            dst[ox_lo..ox_hi].copy_from_slice(&src[ix0..ix0 + (ox_hi - ox_lo)]);
                        } else {
                            for (j, d) in dst[ox_lo..ox_hi].iter_mut().enumerate() {
                                *d = src[ix0 + j * stride];
                            }
                        }
                    }
                }
            }
        }
        Some(cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Against candle's reference conv for the shapes the UNet uses (3×3 pad 1, stride-2 downsampling,
    /// unpadded stride 2, 1×1 shortcuts, odd sizes).
    #[test]
    fn matches_candle_conv2d() {
        let dev = Device::Cpu;
        for &(b, ci, co, h, w, k, s, p) in &[
            (2, 3, 5, 8, 8, 3, 1, 1),
            (1, 4, 6, 7, 5, 3, 2, 1),
            (3, 4, 4, 9, 9, 3, 2, 0),
            (2, 8, 3, 6, 6, 1, 1, 0),
            (1, 2, 2, 70, 70, 3, 1, 1),
        ] {
            let x = Tensor::randn(0f32, 1.0, (b, ci, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1.0, (co, ci, k, k), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, co, &dev).unwrap();
            let ours = conv2d_bias(&x, &wt, &bias, Conv2dParams { kernel: k, stride: s, padding: p }).unwrap();
            let reference =
                x.conv2d(&wt, p, s, 1, 1).unwrap().broadcast_add(&bias.reshape((1, co, 1, 1)).unwrap()).unwrap();
            assert_eq!(ours.dims(), reference.dims());
            let diff = (ours - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "{b} {ci} {co} {h} {w} {k} {s} {p}: {diff}");
        }
    }
}
