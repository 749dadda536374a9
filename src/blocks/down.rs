//! Down blocks: `DownBlock2D`, `ResnetDownsampleBlock2D`, `AttnDownBlock2D`, `SkipDownBlock2D`,
//! `AttnSkipDownBlock2D`.

use crate::loading::WeightSource;
use candle_core::{Module, Result, Tensor};

use super::{skip_groups, BlockSettings};
use crate::attention::AttentionBlock;
use crate::config::{DownBlockKind, ResampleKind};
use crate::fir;
use crate::layers::{conv2d, Conv2d};
use crate::resnet::{Downsample2D, ResnetBlock2D, ResnetResample, TimeEmbedding};

/// How a down block halves the resolution.
#[derive(Debug, Clone)]
enum Downsampler {
    /// `downsamplers.0`: a stride-2 conv.
    Conv(Downsample2D),
    /// `downsamplers.0`: a resnet with 2×2 average pooling.
    Resnet(ResnetBlock2D),
    /// NCSN++: `resnet_down` (FIR) on the features, FIR on the skip image, and `skip_conv` joining them.
    Skip { resnet_down: ResnetBlock2D, skip_conv: Conv2d },
}

#[derive(Debug, Clone)]
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<AttentionBlock>,
    downsampler: Option<Downsampler>,
}

/// What a down block hands on: its output, the states the up path concatenates, and the skip image.
pub struct DownOutput {
    pub hidden: Tensor,
    pub res_states: Vec<Tensor>,
    pub skip_sample: Option<Tensor>,
}

impl DownBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: DownBlockKind,
        cin: usize,
        cout: usize,
        layers: usize,
        add_downsample: bool,
        s: &BlockSettings,
        vb: WeightSource,
    ) -> Result<Self> {
        let is_skip = matches!(kind, DownBlockKind::SkipDown | DownBlockKind::AttnSkipDown);
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for i in 0..layers {
            let c = if i == 0 { cin } else { cout };
            let vb_r = vb.pp("resnets").pp(i);
            resnets.push(if is_skip {
                s.skip_resnet(c, cout, skip_groups(c), vb_r)?
            } else {
                s.resnet(c, cout, vb_r)?
            });
            let vb_a = vb.pp("attentions").pp(i);
            match kind {
                DownBlockKind::AttnDown => attentions.push(s.attention(cout, vb_a)?),
                DownBlockKind::AttnSkipDown => attentions.push(s.skip_attention(cout, vb_a)?),
                _ => {}
            }
        }
        let downsampler = if !add_downsample {
            None
        } else {
            let vb_d = vb.pp("downsamplers").pp(0);
            Some(match kind {
                DownBlockKind::Down => Downsampler::Conv(Downsample2D::new(cout, s.downsample_padding, vb_d)?),
                DownBlockKind::AttnDown if s.downsample_type == ResampleKind::Conv => {
                    Downsampler::Conv(Downsample2D::new(cout, s.downsample_padding, vb_d)?)
                }
                DownBlockKind::AttnDown | DownBlockKind::ResnetDownsample => {
                    Downsampler::Resnet(s.resampling_resnet(cout, ResnetResample::DownAvgPool, vb_d)?)
                }
                DownBlockKind::SkipDown | DownBlockKind::AttnSkipDown => Downsampler::Skip {
                    resnet_down: s.skip_fir_resnet(cout, ResnetResample::DownFir, vb.pp("resnet_down"))?,
                    skip_conv: conv2d(3, cout, 1, 0, 1, vb.pp("skip_conv"))?,
                },
            })
        };
        Ok(Self { resnets, attentions, downsampler })
    }

    pub fn forward(&self, x: &Tensor, temb: &TimeEmbedding, skip_sample: Option<Tensor>) -> Result<DownOutput> {
        let mut hidden = x.clone();
        let mut res_states = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            hidden = resnet.forward(&hidden, temb)?;
            if let Some(attn) = self.attentions.get(i) {
                hidden = attn.forward(&hidden)?;
            }
            res_states.push(hidden.clone());
        }
        let mut skip_sample = skip_sample;
        if let Some(down) = &self.downsampler {
            hidden = match down {
                Downsampler::Conv(conv) => conv.forward(&hidden)?,
                Downsampler::Resnet(resnet) => resnet.forward(&hidden, temb)?,
                Downsampler::Skip { resnet_down, skip_conv } => {
                    let h = resnet_down.forward(&hidden, temb)?;
                    let skip = match &skip_sample {
                        Some(s) => fir::downsample_2d(s)?,
                        None => candle_core::bail!("a Skip down block needs the skip sample"),
                    };
                    let h = (skip_conv.forward(&skip)? + h)?;
                    skip_sample = Some(skip);
                    h
                }
            };
            res_states.push(hidden.clone());
        }
        Ok(DownOutput { hidden, res_states, skip_sample })
    }
}
