//! `UNetMidBlock2D`: resnet, then (attention, resnet) once, with `mid_block_scale_factor`.

use crate::loading::WeightSource;
use candle_core::{Result, Tensor};

use super::BlockSettings;
use crate::attention::AttentionBlock;
use crate::config::TimeScaleShift;
use crate::resnet::{ResnetBlock2D, ResnetOptions, TimeEmbedding};

#[derive(Debug, Clone)]
pub struct MidBlock {
    resnets: [ResnetBlock2D; 2],
    attention: Option<AttentionBlock>,
}

impl MidBlock {
    /// `attn_norm_num_groups`: `None` means diffusers' rule: the resnets' groups with the default time
    /// conditioning, no norm with `scale_shift`.
    pub fn new(
        channels: usize,
        add_attention: bool,
        attn_norm_num_groups: Option<usize>,
        output_scale_factor: f64,
        s: &BlockSettings,
        vb: WeightSource,
    ) -> Result<Self> {
        let groups = s.groups.unwrap_or((channels / 4).min(32));
        let opts = ResnetOptions { output_scale_factor, ..s.resnet_options(groups) };
        let resnet = |i: usize| ResnetBlock2D::new(channels, channels, s.temb_channels, opts, vb.pp("resnets").pp(i));
        let attention = if add_attention {
            let norm_groups = attn_norm_num_groups.or(match s.time_scale_shift {
                TimeScaleShift::Default => Some(groups),
                TimeScaleShift::ScaleShift => None,
            });
            Some(AttentionBlock::new(
                channels,
                s.head_dim.unwrap_or(channels),
                norm_groups,
                s.eps,
                output_scale_factor,
                vb.pp("attentions").pp(0),
            )?)
        } else {
            None
        };
        Ok(Self { resnets: [resnet(0)?, resnet(1)?], attention })
    }

    pub fn forward(&self, x: &Tensor, temb: &TimeEmbedding) -> Result<Tensor> {
        let mut h = self.resnets[0].forward(x, temb)?;
        if let Some(attn) = &self.attention {
            h = attn.forward(&h)?;
        }
        self.resnets[1].forward(&h, temb)
    }
}
