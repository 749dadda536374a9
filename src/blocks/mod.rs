//! The UNet's down, mid and up blocks. Block kinds are enum variants of one struct per direction, the
//! way diffusers' classes share most of their code; the kinds differ only in what they build.

mod down;
mod mid;
mod up;

pub use down::DownBlock;
pub use mid::MidBlock;
pub use up::UpBlock;

use crate::loading::WeightSource;
use candle_core::Result;

use crate::attention::AttentionBlock;
use crate::config::{Activation, ResampleKind, TimeScaleShift};
use crate::resnet::{ResnetBlock2D, ResnetOptions, ResnetResample};

/// What every block takes from the model config.
#[derive(Debug, Clone, Copy)]
pub struct BlockSettings {
    /// `norm_num_groups` (`None` only for Skip layouts).
    pub groups: Option<usize>,
    pub eps: f64,
    pub act: Activation,
    pub time_scale_shift: TimeScaleShift,
    /// `attention_head_dim`; `None` means one head as wide as the block.
    pub head_dim: Option<usize>,
    pub temb_channels: usize,
    pub downsample_padding: usize,
    pub downsample_type: ResampleKind,
    pub upsample_type: ResampleKind,
}

/// NCSN++ Skip blocks scale resnet and attention outputs by 1/√2.
const SKIP_OUTPUT_SCALE: f64 = std::f64::consts::SQRT_2;

/// The group count the Skip blocks pick for `channels`: `min(channels / 4, 32)`.
fn skip_groups(channels: usize) -> usize {
    (channels / 4).min(32)
}

impl BlockSettings {
    fn resnet_options(&self, groups: usize) -> ResnetOptions {
        ResnetOptions {
            groups,
            groups_out: None,
            eps: self.eps,
            act: self.act,
            time_scale_shift: self.time_scale_shift,
            output_scale_factor: 1.0,
            resample: ResnetResample::None,
            use_in_shortcut: None,
        }
    }

    /// `norm_num_groups`, which config validation guarantees is set for non-Skip blocks.
    fn groups(&self) -> Result<usize> {
        self.groups.ok_or_else(|| candle_core::Error::Msg("norm_num_groups is null outside Skip blocks".into()))
    }

    /// A plain resnet of the Down/Up/Attn/ResnetDownsample blocks.
    fn resnet(&self, cin: usize, cout: usize, vb: WeightSource) -> Result<ResnetBlock2D> {
        ResnetBlock2D::new(cin, cout, self.temb_channels, self.resnet_options(self.groups()?), vb)
    }

    /// A resnet that resamples (`down=True`/`up=True` without a FIR kernel).
    fn resampling_resnet(&self, channels: usize, resample: ResnetResample, vb: WeightSource) -> Result<ResnetBlock2D> {
        let opts = ResnetOptions { resample, ..self.resnet_options(self.groups()?) };
        ResnetBlock2D::new(channels, channels, self.temb_channels, opts, vb)
    }

    /// A Skip-block resnet: groups from the channel counts, output scaled by 1/√2.
    fn skip_resnet(&self, cin: usize, cout: usize, groups: usize, vb: WeightSource) -> Result<ResnetBlock2D> {
        let opts = ResnetOptions {
            groups_out: Some(skip_groups(cout)),
            output_scale_factor: SKIP_OUTPUT_SCALE,
            ..self.resnet_options(groups)
        };
        ResnetBlock2D::new(cin, cout, self.temb_channels, opts, vb)
    }

    /// The FIR-resampling resnet of the Skip blocks (`resnet_down`/`resnet_up`), always with a shortcut conv.
    fn skip_fir_resnet(&self, channels: usize, resample: ResnetResample, vb: WeightSource) -> Result<ResnetBlock2D> {
        let opts = ResnetOptions {
            groups_out: Some(skip_groups(channels)),
            output_scale_factor: SKIP_OUTPUT_SCALE,
            resample,
            use_in_shortcut: Some(true),
            ..self.resnet_options(skip_groups(channels))
        };
        ResnetBlock2D::new(channels, channels, self.temb_channels, opts, vb)
    }

    /// The attention of the Attn blocks: group norm with `norm_num_groups`, no rescale.
    fn attention(&self, channels: usize, vb: WeightSource) -> Result<AttentionBlock> {
        AttentionBlock::new(channels, self.head_dim.unwrap_or(channels), Some(self.groups()?), self.eps, 1.0, vb)
    }

    /// The attention of the AttnSkip blocks: 32 groups, output scaled by 1/√2.
    fn skip_attention(&self, channels: usize, vb: WeightSource) -> Result<AttentionBlock> {
        AttentionBlock::new(channels, self.head_dim.unwrap_or(channels), Some(32), self.eps, SKIP_OUTPUT_SCALE, vb)
    }
}
