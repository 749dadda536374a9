//! 2D convolution with fused bias (and optionally a fused residual add and output scale) on the CPU,
//! float32. CPUs with AVX-512 run the Winograd F(2×2, 3×3) kernel of `winograd` for 3×3 stride-1
//! convolutions between 32 or more channels (most of the UNet's work), and the packed implicit-GEMM
//! kernel of `conv2d_avx512` for the rest; the weights are prepared for one of them at load. Other CPUs
//! run tiled im2col into a per-task buffer, then one `gemm` per tile, `out = bias + W · cols`, with the
//! weight used in its stored `[C_out, C_in·k·k]` order. Other devices and dtypes use candle's ops.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::conv2d_avx512::{self, PackedWeights};
use super::winograd::{self, WinogradWeights};
use super::{contiguous_slice, f32_inputs, SendPtr};

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

impl Conv2dParams {
    /// The output's (height, width) for an `h × w` input (without its padding); `None` when the
    /// padded input is smaller than the kernel or the stride is 0.
    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let Self { kernel, stride, padding } = *self;
        if h + 2 * padding < kernel || w + 2 * padding < kernel || stride == 0 {
            return None;
        }
        Some(((h + 2 * padding - kernel) / stride + 1, (w + 2 * padding - kernel) / stride + 1))
    }
}

/// What happens to the convolution's output before it is stored:
/// `(conv(x) + bias + image_bias[b, c] + residual) / output_scale`. With prepared weights all of it is
/// fused into the kernel's store; otherwise each is a candle op after the convolution.
#[derive(Debug, Clone, Copy)]
pub struct ConvEpilogue<'a> {
    /// [B, C_out], added per image and channel (a resnet's time embedding after `conv1`).
    pub image_bias: Option<&'a Tensor>,
    /// Same shape as the output (a resnet's shortcut before the final division).
    pub residual: Option<&'a Tensor>,
    pub output_scale: f64,
}

impl Default for ConvEpilogue<'_> {
    fn default() -> Self {
        Self { image_bias: None, residual: None, output_scale: 1.0 }
    }
}

/// Both sides of a 3×3 convolution need at least this many channels for the Winograd kernel: below it
/// (`conv_in` from 3 image channels, `conv_out` to 3) the transforms cost more than the GEMM saves.
const WINOGRAD_MIN_CHANNELS: usize = 32;

/// A convolution's weight, prepared once at load for the AVX-512 kernels (float32 CPU weights on a CPU
/// that has it; the loaded tensor is then dropped, so the model is not held twice), else as loaded.
#[derive(Debug, Clone)]
pub enum Conv2dWeight {
    Loaded(Tensor),
    /// Packed for the direct implicit-GEMM kernel.
    Packed(Arc<PackedWeights>),
    /// Transformed for the Winograd F(2×2, 3×3) kernel: 3×3, stride 1, padding 1.
    Winograd(Arc<WinogradWeights>),
}

impl Conv2dWeight {
    /// `weight`: [C_out, C_in, k, k], for the direct kernel.
    pub fn new(weight: Tensor) -> Result<Self> {
        Self::prepare(weight, false)
    }

    /// `weight` prepared for the fastest CPU kernel that computes a convolution with `params`:
    /// Winograd for 3×3 stride-1 padding-1 convolutions between enough channels, else the direct one.
    pub fn for_params(weight: Tensor, params: Conv2dParams) -> Result<Self> {
        let (c_out, c_in, ..) = weight.dims4()?;
        let Conv2dParams { kernel, stride, padding } = params;
        let winograd = kernel == 3 && stride == 1 && padding == 1 && c_in.min(c_out) >= WINOGRAD_MIN_CHANNELS;
        Self::prepare(weight, winograd)
    }

    fn prepare(weight: Tensor, winograd: bool) -> Result<Self> {
        let packable = weight.device().is_cpu() && weight.dtype() == DType::F32 && conv2d_avx512::available();
        if !packable {
            return Ok(Self::Loaded(weight));
        }
        let (c_out, c_in, kh, kw) = weight.dims4()?;
        if kh != kw {
            candle_core::bail!("conv2d: square kernels expected, got {kh}×{kw}");
        }
        let weight = weight.contiguous()?;
        let (storage, layout) = weight.storage_and_layout();
        let Storage::Cpu(CpuStorage::F32(data)) = &*storage else {
            candle_core::bail!("conv2d: float32 CPU weights expected");
        };
        let data = contiguous_slice(data, layout, "conv2d weight")?;
        if winograd && kh == 3 {
            return Ok(Self::Winograd(Arc::new(WinogradWeights::new(data, c_out, c_in))));
        }
        Ok(Self::Packed(Arc::new(PackedWeights::new(data, c_out, c_in, kh))))
    }

    /// Prepared for one of the AVX-512 kernels (which can also read a pre-padded input).
    pub fn is_prepared(&self) -> bool {
        !matches!(self, Self::Loaded(_))
    }

    /// (C_out, C_in, kernel size).
    fn dims(&self) -> Result<(usize, usize, usize)> {
        Ok(match self {
            Self::Loaded(weight) => {
                let (c_out, c_in, k, _) = weight.dims4()?;
                (c_out, c_in, k)
            }
            Self::Packed(weights) => (weights.c_out, weights.c_in, weights.kernel),
            Self::Winograd(weights) => (weights.c_out, weights.c_in, 3),
        })
    }
}

/// `conv2d(x, weight) + bias[None, :, None, None]`, then the [`ConvEpilogue`]. `x`: [B, C_in, H, W];
/// `bias`: [C_out]. Float32 CPU tensors take the fast paths; anything else uses candle's ops.
pub fn conv2d_bias(
    x: &Tensor,
    weight: &Conv2dWeight,
    bias: &Tensor,
    params: Conv2dParams,
    epilogue: ConvEpilogue,
) -> Result<Tensor> {
    conv2d_impl(x, weight, bias, params, epilogue, false)
}

/// [`conv2d_bias`] on an input that already carries its zero padding ([B, C_in, H + 2p, W + 2p], as
/// `group_norm_padded_cpu` writes it), so the kernel skips its own padding copy. Prepared weights only
/// ([`Conv2dWeight::is_prepared`]).
pub fn conv2d_bias_prepadded(
    xp: &Tensor,
    weight: &Conv2dWeight,
    bias: &Tensor,
    params: Conv2dParams,
    epilogue: ConvEpilogue,
) -> Result<Tensor> {
    conv2d_impl(xp, weight, bias, params, epilogue, true)
}

fn conv2d_impl(
    x: &Tensor,
    weight: &Conv2dWeight,
    bias: &Tensor,
    params: Conv2dParams,
    epilogue: ConvEpilogue,
    prepadded: bool,
) -> Result<Tensor> {
    let weight = match weight {
        Conv2dWeight::Winograd(_) if params.kernel != 3 || params.stride != 1 || params.padding != 1 => {
            candle_core::bail!("conv2d: Winograd weights compute 3×3 stride-1 padding-1 convolutions, got {params:?}")
        }
        Conv2dWeight::Packed(_) | Conv2dWeight::Winograd(_) => {
            // Prepared weights are float32 on the CPU, so the model's inputs are too. The per-image bias
            // folds into the bias: [B, C_out] instead of [C_out].
            let bias = match epilogue.image_bias {
                Some(image_bias) => image_bias.broadcast_add(&bias.unsqueeze(0)?)?,
                None => bias.clone(),
            };
            let residual = epilogue.residual.map(Tensor::contiguous).transpose()?;
            let output_scale = epilogue.output_scale as f32;
            let op = PackedConv { weights: weight.clone(), params, residual, output_scale, prepadded };
            return x.contiguous()?.apply_op2_no_bwd(&bias.contiguous()?, &op);
        }
        Conv2dWeight::Loaded(_) if prepadded => {
            candle_core::bail!("conv2d: a pre-padded input needs prepared (AVX-512) weights")
        }
        Conv2dWeight::Loaded(weight) => weight,
    };
    let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    let mut y = if f32_cpu(x) && f32_cpu(weight) {
        x.contiguous()?.apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, &PortableConv(params))?
    } else {
        let y = x.conv2d(weight, params.padding, params.stride, 1, 1)?;
        y.broadcast_add(&bias.reshape((1, bias.dim(0)?, 1, 1))?)?
    };
    if let Some(image_bias) = epilogue.image_bias {
        y = y.broadcast_add(&image_bias.unsqueeze(2)?.unsqueeze(3)?)?;
    }
    if let Some(residual) = epilogue.residual {
        y = (residual + y)?;
    }
    if epilogue.output_scale != 1.0 {
        y = (y / epilogue.output_scale)?;
    }
    Ok(y)
}

/// The AVX-512 kernels over prepared weights.
struct PackedConv {
    /// `Packed` or `Winograd`.
    weights: Conv2dWeight,
    params: Conv2dParams,
    residual: Option<Tensor>,
    output_scale: f32,
    /// The input already has its zero border.
    prepadded: bool,
}

impl CustomOp2 for PackedConv {
    fn name(&self) -> &'static str {
        "conv2d-packed"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let [x, bias] = f32_inputs([(s1, l1), (s2, l2)], self.name())?;
        let (batch, c_in, h, w) = l1.shape().dims4()?;
        let (c_out, weight_c_in, weight_kernel) = self.weights.dims()?;
        let Conv2dParams { kernel, stride, padding } = self.params;
        let (h, w) = if self.prepadded {
            if h < 2 * padding || w < 2 * padding {
                candle_core::bail!("conv2d-packed: pre-padded input {h}×{w} is smaller than its padding {padding}");
            }
            (h - 2 * padding, w - 2 * padding)
        } else {
            (h, w)
        };
        let per_image_bias = bias.len() == batch * c_out && batch > 1;
        if weight_c_in != c_in || weight_kernel != kernel || !(bias.len() == c_out || per_image_bias) {
            candle_core::bail!(
                "conv2d-packed: weight [{c_out}, {weight_c_in}, {weight_kernel}, {weight_kernel}] / bias {} do not fit \
                 input {:?}",
                bias.len(),
                l1.dims()
            );
        }
        let Some((out_h, out_w)) = self.params.output_size(h, w) else {
            candle_core::bail!(
                "conv2d-packed: input {h}×{w} too small for kernel {kernel} with padding {padding}, stride {stride}"
            );
        };
        // The kernels address lanes by 32-bit offsets from one image's start, reaching into the next
        // image (Winograd: 16 tiles of 2×2 pixels can span 16 tiny images): keep them below 2³¹.
        let image_floats = (c_in * (h + 2 * padding + 1) * (w + 2 * padding + 1)).max(c_out * out_h * out_w);
        let images_spanned = if out_h * out_w >= 64 { 2 } else { 16 };
        if image_floats.saturating_mul(images_spanned) > i32::MAX as usize {
            candle_core::bail!(
                "conv2d-packed: one image of {c_in}×{h}×{w} (→ {c_out}×{out_h}×{out_w}) is too large for the CPU \
                 kernels' 32-bit offsets; split the image"
            );
        }
        let residual_guard = self.residual.as_ref().map(Tensor::storage_and_layout);
        let residual = match &residual_guard {
            None => None,
            Some((storage, layout)) => match &**storage {
                Storage::Cpu(CpuStorage::F32(data)) if layout.dims() == [batch, c_out, out_h, out_w] => {
                    Some(contiguous_slice(data, layout, "conv2d-packed residual")?)
                }
                _ => candle_core::bail!(
                    "conv2d-packed: the residual must be a float32 CPU tensor of shape {:?}, got {:?}",
                    [batch, c_out, out_h, out_w],
                    layout.dims()
                ),
            },
        };
        let (output_scale, prepadded) = (self.output_scale, self.prepadded);
        let call = conv2d_avx512::Call { x, bias, per_image_bias, residual, output_scale, batch, h, w, prepadded };
        let len = batch * c_out * out_h * out_w;
        let mut out = Vec::<f32>::with_capacity(len);
        // SAFETY: prepared weights exist only where AVX-512 is available (and Winograd weights only
        // for 3×3 stride-1 padding-1 convolutions, checked in `conv2d_impl`); `out` has room for the
        // whole output, every element of which the kernel writes before `set_len`.
        unsafe {
            match &self.weights {
                Conv2dWeight::Packed(weights) => {
                    let problem = conv2d_avx512::Problem { call, weights, params: self.params };
                    conv2d_avx512::run(&problem, out.as_mut_ptr());
                }
                Conv2dWeight::Winograd(weights) => {
                    winograd::run(&winograd::Problem { call, weights }, out.as_mut_ptr())
                }
                Conv2dWeight::Loaded(_) => candle_core::bail!("conv2d-packed: the weights were not prepared"),
            }
            out.set_len(len);
        }
        Ok((CpuStorage::F32(out), Shape::from((batch, c_out, out_h, out_w))))
    }
}

/// im2col + the `gemm` crate, for CPUs without AVX-512.
struct PortableConv(Conv2dParams);

impl CustomOp3 for PortableConv {
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
        let [x, w, b] = f32_inputs([(s1, l1), (s2, l2), (s3, l3)], self.name())?;
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
        let Some((out_h, out_w)) = self.0.output_size(h, wd) else {
            candle_core::bail!(
                "conv2d-bias: input {h}×{wd} too small for kernel {kernel} with padding {padding}, stride {stride}"
            );
        };
        let geo = Geometry { c_in, h, w: wd, out_h, out_w, k: c_in * kernel * kernel, p: self.0 };
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
    /// unpadded stride 2, 1×1 shortcuts, odd sizes, pixel counts that are and are not multiples of 16,
    /// reductions longer than one packed block, channel counts around the 12-row tile), on both paths,
    /// with and without a fused residual.
    #[test]
    fn matches_candle_conv2d() {
        let dev = Device::Cpu;
        for &(b, ci, co, h, w, k, s, p) in &[
            (2, 3, 5, 8, 8, 3, 1, 1),
            (1, 4, 6, 7, 5, 3, 2, 1),
            (3, 4, 4, 9, 9, 3, 2, 0),
            (2, 8, 3, 6, 6, 1, 1, 0),
            (1, 2, 2, 70, 70, 3, 1, 1),
            (3, 40, 25, 4, 4, 3, 1, 1),
            (2, 64, 13, 16, 16, 3, 1, 1),
            (5, 33, 24, 8, 8, 1, 1, 0),
            (1, 7, 12, 33, 17, 3, 1, 1),
            (1, 5, 7, 3, 16, 3, 1, 1),
            (3, 20, 30, 32, 32, 3, 1, 1),
            (1, 130, 30, 16, 16, 3, 1, 1),
            (2, 300, 20, 6, 10, 3, 1, 1),
            (1, 512, 8, 64, 64, 3, 1, 1),
            (4, 16, 40, 5, 3, 3, 1, 1),
            (3, 8, 5, 2, 16, 3, 1, 1),
            (1, 24, 24, 14, 16, 3, 1, 1),
            (2, 40, 36, 6, 32, 3, 1, 1),
        ] {
            let x = Tensor::randn(0f32, 1.0, (b, ci, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1.0, (co, ci, k, k), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, co, &dev).unwrap();
            let params = Conv2dParams { kernel: k, stride: s, padding: p };
            let reference =
                x.conv2d(&wt, p, s, 1, 1).unwrap().broadcast_add(&bias.reshape((1, co, 1, 1)).unwrap()).unwrap();
            let residual = Tensor::randn(0f32, 1.0, reference.dims(), &dev).unwrap();
            let image_bias = Tensor::randn(0f32, 1.0, (b, co), &dev).unwrap();
            let with_epilogue = reference.broadcast_add(&image_bias.reshape((b, co, 1, 1)).unwrap()).unwrap();
            let with_epilogue = ((with_epilogue + &residual).unwrap() / 1.5).unwrap();
            // Float32 sums of up to C_in·k·k products in different orders: relative to the output's size.
            let scale = reference.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
            let tol = 1e-5 * scale;
            let mut weights = vec![Conv2dWeight::new(wt.clone()).unwrap(), Conv2dWeight::Loaded(wt.clone())];
            if (k, s, p) == (3, 1, 1) {
                // Whatever the channel counts, so that small shapes test the Winograd kernel too.
                weights.push(Conv2dWeight::prepare(wt.clone(), true).unwrap());
            }
            for weight in weights {
                let (portable, kind) = match weight {
                    Conv2dWeight::Loaded(_) => (true, "portable"),
                    Conv2dWeight::Packed(_) => (false, "direct"),
                    Conv2dWeight::Winograd(_) => (false, "winograd"),
                };
                let ours = conv2d_bias(&x, &weight, &bias, params, ConvEpilogue::default()).unwrap();
                assert_eq!(ours.dims(), reference.dims());
                let diff = (ours - &reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(diff < tol, "{b} {ci} {co} {h} {w} {k} {s} {p} {kind}: {diff}");
                let epilogue =
                    ConvEpilogue { image_bias: Some(&image_bias), residual: Some(&residual), output_scale: 1.5 };
                let ours = conv2d_bias(&x, &weight, &bias, params, epilogue).unwrap();
                let diff =
                    (ours - &with_epilogue).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(diff < tol, "{b} {ci} {co} {h} {w} {k} {s} {p} {kind} epilogue: {diff}");
                if !portable {
                    let xp = x.pad_with_zeros(2, p, p).unwrap().pad_with_zeros(3, p, p).unwrap();
                    let ours = conv2d_bias_prepadded(&xp, &weight, &bias, params, epilogue).unwrap();
                    let diff =
                        (ours - &with_epilogue).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                    assert!(diff < tol, "{b} {ci} {co} {h} {w} {k} {s} {p} {kind} prepadded: {diff}");
                }
            }
        }
    }

    /// The Winograd kernel is about as accurate as the direct one: against a float64 reference on a
    /// UNet-sized layer (256 → 256 channels, 16×16, inputs like a normalised activation), its largest
    /// error stays within a small factor of the direct kernel's, and far inside the fixtures' 1e-4.
    #[test]
    fn winograd_error_stays_near_the_direct_kernels() {
        if !conv2d_avx512::available() {
            return;
        }
        let dev = Device::Cpu;
        let (b, c, h) = (2, 256, 16);
        let x = Tensor::randn(0f32, 1.0, (b, c, h, h), &dev).unwrap();
        // diffusers' default init scale: uniform in ±1/sqrt(fan_in), here as a normal of that size.
        let wt = (Tensor::randn(0f32, 1.0, (c, c, 3, 3), &dev).unwrap() / (9.0 * c as f64).sqrt()).unwrap();
        let bias = Tensor::zeros(c, DType::F32, &dev).unwrap();
        let reference = x.to_dtype(DType::F64).unwrap().conv2d(&wt.to_dtype(DType::F64).unwrap(), 1, 1, 1, 1).unwrap();
        let params = Conv2dParams { kernel: 3, stride: 1, padding: 1 };
        let error = |weight: Conv2dWeight| {
            let y = conv2d_bias(&x, &weight, &bias, params, ConvEpilogue::default()).unwrap();
            let diff = (y.to_dtype(DType::F64).unwrap() - &reference).unwrap();
            diff.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap()
        };
        let direct = error(Conv2dWeight::new(wt.clone()).unwrap());
        let winograd = Conv2dWeight::for_params(wt.clone(), params).unwrap();
        assert!(matches!(winograd, Conv2dWeight::Winograd(_)), "a 3×3 256-channel layer takes the Winograd kernel");
        let winograd = error(winograd);
        assert!(winograd < 4.0 * direct && winograd < 1e-5, "winograd {winograd:e}, direct {direct:e}");
    }

    /// Convolutions run from many rayon tasks at once (several models, or one model from several
    /// tasks): a worker waiting inside one call's parallel phase picks up another call, which must
    /// not touch the buffers the first is using.
    #[test]
    fn concurrent_calls_from_rayon_tasks_agree() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 64, 16, 16), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1.0, (64, 64, 3, 3), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 64, &dev).unwrap();
        let params = Conv2dParams { kernel: 3, stride: 1, padding: 1 };
        let weight = Conv2dWeight::for_params(wt, params).unwrap();
        let expected = conv2d_bias(&x, &weight, &bias, params, ConvEpilogue::default()).unwrap();
        let expected = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // More workers than cores make a worker picking up a second call while inside the first likely.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        pool.install(|| {
            (0..8192).into_par_iter().for_each(|_| {
                let y = conv2d_bias(&x, &weight, &bias, params, ConvEpilogue::default()).unwrap();
                assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), expected);
            })
        });
    }
}
