//! Up blocks: `UpBlock2D`, `ResnetUpsampleBlock2D`, `AttnUpBlock2D`, `SkipUpBlock2D`, `AttnSkipUpBlock2D`.

use crate::loading::WeightSource;
use candle_core::{Module, Result, Tensor};

use super::{skip_groups, BlockSettings};
use crate::attention::AttentionBlock;
use crate::config::{Activation, ResampleKind, UpBlockKind};
use crate::fir;
use crate::layers::{conv2d, Conv2d, GroupNorm};
use crate::profile;
use crate::resnet::{ResnetBlock2D, ResnetResample, TimeEmbedding, Upsample2D};

/// How an up block doubles the resolution.
#[derive(Debug, Clone)]
enum Upsampler {
    /// `upsamplers.0`: nearest ×2 then a conv.
    Conv(Upsample2D),
    /// `upsamplers.0`: a resnet with nearest ×2 inside.
    Resnet(ResnetBlock2D),
    /// NCSN++: the skip image gains `skip_conv(silu(skip_norm(h)))`, then `resnet_up` (FIR) on `h`.
    Skip { skip_norm: GroupNorm, skip_conv: Conv2d, resnet_up: ResnetBlock2D },
}

#[derive(Debug, Clone)]
pub struct UpBlock {
    kind: UpBlockKind,
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<AttentionBlock>,
    upsampler: Option<Upsampler>,
}

impl UpBlock {
    /// `cin`: channels of the deepest skip state this block takes; `prev`: channels coming from below.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: UpBlockKind,
        cin: usize,
        prev: usize,
        cout: usize,
        layers: usize,
        add_upsample: bool,
        s: &BlockSettings,
        vb: WeightSource,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for i in 0..layers {
            let skip = if i == layers - 1 { cin } else { cout };
            let resnet_in = if i == 0 { prev } else { cout };
            let vb_r = vb.pp("resnets").pp(i);
            resnets.push(match kind {
                UpBlockKind::SkipUp => s.skip_resnet(resnet_in + skip, cout, skip_groups(resnet_in + skip), vb_r)?,
                // diffusers writes `min(resnet_in_channels + res_skip_channels // 4, 32)`; kept as written.
                UpBlockKind::AttnSkipUp => {
                    s.skip_resnet(resnet_in + skip, cout, (resnet_in + skip / 4).min(32), vb_r)?
                }
                _ => s.resnet(resnet_in + skip, cout, vb_r)?,
            });
            if kind == UpBlockKind::AttnUp {
                attentions.push(s.attention(cout, vb.pp("attentions").pp(i))?);
            }
        }
        if kind == UpBlockKind::AttnSkipUp {
            attentions.push(s.skip_attention(cout, vb.pp("attentions").pp(0))?);
        }
        let upsampler = if !add_upsample {
            None
        } else {
            let vb_u = vb.pp("upsamplers").pp(0);
            Some(match kind {
                UpBlockKind::Up => Upsampler::Conv(Upsample2D::new(cout, vb_u)?),
                UpBlockKind::AttnUp if s.upsample_type == ResampleKind::Conv => {
                    Upsampler::Conv(Upsample2D::new(cout, vb_u)?)
                }
                UpBlockKind::AttnUp | UpBlockKind::ResnetUpsample => {
                    Upsampler::Resnet(s.resampling_resnet(cout, ResnetResample::UpNearest, vb_u)?)
                }
                UpBlockKind::SkipUp | UpBlockKind::AttnSkipUp => Upsampler::Skip {
                    skip_norm: GroupNorm::new(skip_groups(cout), cout, s.eps, vb.pp("skip_norm"))?,
                    skip_conv: conv2d(cout, 3, 3, 1, 1, vb.pp("skip_conv"))?,
                    resnet_up: s.skip_fir_resnet(cout, ResnetResample::UpFir, vb.pp("resnet_up"))?,
                },
            })
        };
        Ok(Self { kind, resnets, attentions, upsampler })
    }

    /// How many skip states this block consumes.
    pub fn num_res_states(&self) -> usize {
        self.resnets.len()
    }

    /// `res_states`: this block's share of the down path's states, in the order they were produced
    /// (the last one is consumed first). Returns the output and the skip image.
    pub fn forward(
        &self,
        x: &Tensor,
        res_states: &[Tensor],
        temb: &TimeEmbedding,
        skip_sample: Option<Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let mut hidden = x.clone();
        let per_resnet_attention = self.kind == UpBlockKind::AttnUp;
        for (i, resnet) in self.resnets.iter().enumerate() {
            let res = &res_states[res_states.len() - 1 - i];
            let input = profile::time("cat", || crate::kernels::concat::cat_channels(&hidden, res))?;
            hidden = resnet.forward(&input, temb)?;
            if per_resnet_attention {
                hidden = self.attentions[i].forward(&hidden)?;
            }
        }
        if self.kind == UpBlockKind::AttnSkipUp {
            hidden = self.attentions[0].forward(&hidden)?;
        }
        let is_skip = matches!(self.kind, UpBlockKind::SkipUp | UpBlockKind::AttnSkipUp);
        // Skip blocks upsample the incoming skip image (FirUpsample2D) whether or not they upsample `hidden`.
        let mut skip_sample = match (is_skip, skip_sample) {
            (true, Some(s)) => Some(fir::upsample_2d(&s)?),
            (_, s) => s,
        };
        match &self.upsampler {
            None => {}
            Some(Upsampler::Conv(up)) => hidden = up.forward(&hidden)?,
            Some(Upsampler::Resnet(resnet)) => hidden = resnet.forward(&hidden, temb)?,
            Some(Upsampler::Skip { skip_norm, skip_conv, resnet_up }) => {
                let states = skip_conv.forward(&skip_norm.forward_then(&hidden, Some(Activation::Silu))?)?;
                skip_sample = Some(match skip_sample {
                    Some(s) => (s + states)?,
                    None => states,
                });
                hidden = resnet_up.forward(&hidden, temb)?;
            }
        }
        Ok((hidden, skip_sample))
    }
}
