//! diffusers' `ResnetBlock2D` (default and scale-shift time conditioning, with optional nearest/avg-pool
//! or FIR up/down resampling inside), `Downsample2D` and `Upsample2D`.

use std::cell::OnceCell;

use candle_core::{Module, Result, Tensor, D};
use candle_nn::Linear;

use crate::loading::WeightSource;

use crate::config::{Activation, TimeScaleShift};
use crate::fir;
use crate::kernels::conv2d::ConvEpilogue;
use crate::kernels::upsample::{upsample_nearest_2x, upsample_nearest_2x_padded};
use crate::layers::{conv2d, linear, linear_forward, Conv2d, GroupNorm};
use crate::profile;

/// The time embedding as a forward hands it to its resnets. Each resnet projects `act(emb)`, and in a
/// `UNet2DModel` every resnet has the same activation: the first one computes it, the rest reuse it
/// (diffusers recomputes it in every resnet, 22 times per cifar10-32 forward). A resnet with another
/// activation computes its own.
pub struct TimeEmbedding<'a> {
    emb: &'a Tensor,
    activated: OnceCell<(Activation, Tensor)>,
}

impl<'a> TimeEmbedding<'a> {
    pub fn new(emb: &'a Tensor) -> Self {
        Self { emb, activated: OnceCell::new() }
    }

    /// `act(emb)`.
    fn activated(&self, act: Activation) -> Result<Tensor> {
        if let Some((cached, tensor)) = self.activated.get() {
            if *cached == act {
                return Ok(tensor.clone());
            }
            return act.apply(self.emb);
        }
        let tensor = act.apply(self.emb)?;
        Ok(self.activated.get_or_init(|| (act, tensor)).1.clone())
    }
}

/// Resampling done inside a resnet, to both the residual and the main path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResnetResample {
    None,
    /// `Upsample2D(use_conv=False)`: nearest ×2.
    UpNearest,
    /// `Downsample2D(use_conv=False)`: 2×2 average pool.
    DownAvgPool,
    /// `kernel="fir"`: `upsample_2d` with the (1, 3, 3, 1) kernel.
    UpFir,
    /// `kernel="fir"`: `downsample_2d` with the (1, 3, 3, 1) kernel.
    DownFir,
}

impl ResnetResample {
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::None => Ok(x.clone()),
            Self::UpNearest | Self::UpFir => profile::time("upsample", || self.apply_untimed(x)),
            Self::DownAvgPool | Self::DownFir => profile::time("downsample", || self.apply_untimed(x)),
        }
    }

    fn apply_untimed(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::None => Ok(x.clone()),
            Self::UpNearest => upsample_nearest_2x(x),
            Self::DownAvgPool => x.avg_pool2d(2),
            Self::UpFir => fir::upsample_2d(x),
            Self::DownFir => fir::downsample_2d(x),
        }
    }
}

/// Everything that shapes a `ResnetBlock2D` besides its channel counts.
#[derive(Debug, Clone, Copy)]
pub struct ResnetOptions {
    pub groups: usize,
    /// Groups of the second norm (`None`: same as `groups`).
    pub groups_out: Option<usize>,
    pub eps: f64,
    pub act: Activation,
    pub time_scale_shift: TimeScaleShift,
    pub output_scale_factor: f64,
    pub resample: ResnetResample,
    /// Force a 1×1 shortcut conv (`None`: only when the channel count changes).
    pub use_in_shortcut: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    opts: ResnetOptions,
}

impl ResnetBlock2D {
    pub fn new(cin: usize, cout: usize, temb: usize, opts: ResnetOptions, vb: WeightSource) -> Result<Self> {
        let temb_out = match opts.time_scale_shift {
            TimeScaleShift::Default => cout,
            TimeScaleShift::ScaleShift => 2 * cout,
        };
        let use_shortcut = opts.use_in_shortcut.unwrap_or(cin != cout);
        Ok(Self {
            norm1: GroupNorm::new(opts.groups, cin, opts.eps, vb.pp("norm1"))?,
            conv1: conv2d(cin, cout, 3, 1, 1, vb.pp("conv1"))?,
            time_emb_proj: linear(temb, temb_out, vb.pp("time_emb_proj"))?,
            norm2: GroupNorm::new(opts.groups_out.unwrap_or(opts.groups), cout, opts.eps, vb.pp("norm2"))?,
            conv2: conv2d(cout, cout, 3, 1, 1, vb.pp("conv2"))?,
            conv_shortcut: if use_shortcut { Some(conv2d(cin, cout, 1, 0, 1, vb.pp("conv_shortcut"))?) } else { None },
            opts,
        })
    }

    pub fn forward(&self, input: &Tensor, temb: &TimeEmbedding) -> Result<Tensor> {
        let act = self.opts.act;
        let temb = profile::time("time_embedding", || linear_forward(&self.time_emb_proj, &temb.activated(act)?))?;
        // Default time conditioning: conv1(h) + temb[:, :, None, None], the add fused into the conv.
        let conv1_epilogue = match self.opts.time_scale_shift {
            TimeScaleShift::Default => ConvEpilogue { image_bias: Some(&temb), ..ConvEpilogue::default() },
            TimeScaleShift::ScaleShift => ConvEpilogue::default(),
        };
        let (input, h) = match self.opts.resample {
            ResnetResample::None => {
                (input.clone(), self.conv1.forward_normed(input, &self.norm1, act, conv1_epilogue)?)
            }
            r => {
                let h = r.apply(&self.norm1.forward_then(input, Some(act))?)?;
                (r.apply(input)?, self.conv1.forward_with(&h, conv1_epilogue)?)
            }
        };
        let input = match &self.conv_shortcut {
            Some(conv) => conv.forward(&input)?,
            None => input,
        };
        // (input + conv2(h)) / output_scale_factor, the add and division fused into the convolution.
        let scale = self.opts.output_scale_factor;
        let conv2_epilogue = ConvEpilogue { residual: Some(&input), output_scale: scale, ..ConvEpilogue::default() };
        match self.opts.time_scale_shift {
            TimeScaleShift::Default => self.conv2.forward_normed(&h, &self.norm2, act, conv2_epilogue),
            TimeScaleShift::ScaleShift => {
                let temb = temb.unsqueeze(D::Minus1)?.unsqueeze(D::Minus1)?;
                let chunks = temb.chunk(2, 1)?;
                let (scale, shift) = (&chunks[0], &chunks[1]);
                let h = act.apply(&self.norm2.forward(&h)?.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(shift)?)?;
                self.conv2.forward_with(&h, conv2_epilogue)
            }
        }
    }
}

/// `Downsample2D(use_conv=True, name="op")`: a stride-2 3×3 conv; padding 0 pads right and bottom by one.
#[derive(Debug, Clone)]
pub struct Downsample2D {
    conv: Conv2d,
    pad_right_bottom: bool,
}

impl Downsample2D {
    pub fn new(channels: usize, padding: usize, vb: WeightSource) -> Result<Self> {
        Ok(Self { conv: conv2d(channels, channels, 3, padding, 2, vb.pp("conv"))?, pad_right_bottom: padding == 0 })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad_right_bottom {
            let x = profile::time("downsample", || x.pad_with_zeros(D::Minus1, 0, 1)?.pad_with_zeros(D::Minus2, 0, 1))?;
            self.conv.forward(&x)
        } else {
            self.conv.forward(x)
        }
    }
}

/// `Upsample2D(use_conv=True)`: nearest ×2 then a 3×3 conv.
#[derive(Debug, Clone)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(channels: usize, vb: WeightSource) -> Result<Self> {
        Ok(Self { conv: conv2d(channels, channels, 3, 1, 1, vb.pp("conv"))? })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Upsampled straight into the zero-padded buffer the convolution reads, saving a copy.
        if let Some(pad) = self.conv.prepadded_border() {
            if let Some(xp) = profile::time("upsample", || upsample_nearest_2x_padded(x, pad))? {
                return self.conv.forward_prepadded(&xp, ConvEpilogue::default());
            }
        }
        let x = profile::time("upsample", || upsample_nearest_2x(x))?;
        self.conv.forward(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The activated embedding is computed once for the shared activation and handed out again; a
    /// resnet with another activation gets its own, and the shared one stays cached.
    #[test]
    fn time_embedding_activates_once_per_forward() {
        let emb = Tensor::randn(0f32, 2.0, (3, 8), &Device::Cpu).unwrap();
        let time = TimeEmbedding::new(&emb);
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let first = time.activated(Activation::Silu).unwrap();
        assert_eq!(values(&first), values(&candle_nn::ops::silu(&emb).unwrap()));
        let relu = time.activated(Activation::Relu).unwrap();
        assert_eq!(values(&relu), values(&emb.relu().unwrap()));
        let again = time.activated(Activation::Silu).unwrap();
        assert_eq!(again.id(), first.id(), "the cached tensor, not a recomputation");
    }
}
