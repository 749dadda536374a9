//! An upper estimate of the memory one `UNet2DModel::forward` allocates, from the config and the
//! sample's shape alone, so that a call too large for memory is refused before any compute (see
//! [`crate::memory_budget`]).
//!
//! What a forward holds at its peak:
//! - every skip connection the down path keeps for the up path (`conv_in`'s output, each resnet's
//!   output, each downsampler's output), alive until the up block at their level consumes them;
//! - at the widest level, a few tensors of the largest size a block handles (an up block's input is
//!   its hidden state concatenated with a skip: the two levels' channels together): the input, the
//!   norm's output, the padded or Winograd-transformed copy a convolution makes (up to 4× its input for
//!   the 2×2-tile transform), the output and the residual — [`WORKING_COPIES`] in all;
//! - the attention score matrix and its softmax, `batch × heads × (h·w)²` values each, at the level
//!   where attention is largest;
//! - the input sample's copy in the model's dtype.
//!
//! It is deliberately generous: refusing a call that would have fitted by a small margin is better
//! than aborting the process on one that did not.

use crate::config::{DownBlockKind, ModelSpec, UNet2DConfig, UpBlockKind};

/// Tensors of the largest working size alive at once at the widest level (see the module docs).
const WORKING_COPIES: u128 = 8;

/// The estimate, with its largest part named for messages.
#[derive(Debug, Clone, Copy)]
pub struct ForwardEstimate {
    /// All bytes a forward may hold at once.
    pub total: u128,
    /// The largest attention score matrix (bytes), and the level (0 = full resolution) it is at.
    pub attention: u128,
    pub attention_level: usize,
}

/// The estimate for a `[batch, in_channels, h, w]` sample computed in a dtype of `elem` bytes.
pub fn estimate(
    config: &UNet2DConfig,
    spec: &ModelSpec,
    batch: usize,
    h: usize,
    w: usize,
    elem: usize,
) -> ForwardEstimate {
    let ch = &config.block_out_channels;
    let levels = ch.len();
    let pixels = |level: usize| ((h >> level) as u128) * ((w >> level) as u128);
    let layers = config.layers_per_block as u128;

    // Skip connections (elements per image).
    let mut skips = ch[0] as u128 * pixels(0);
    for (i, &c) in ch.iter().enumerate() {
        skips += layers * c as u128 * pixels(i);
        if i + 1 < levels {
            skips += c as u128 * pixels(i + 1);
        }
    }
    // The largest tensor a block works on: hidden state and skip concatenated.
    let widest = (0..levels).map(|i| (ch[i] + ch[(i + 1).min(levels - 1)]) as u128 * pixels(i)).max().unwrap_or(0);
    let sample = config.in_channels.max(config.out_channels) as u128 * pixels(0);
    let activations = (skips + WORKING_COPIES * widest + 2 * sample) * batch as u128 * elem as u128;

    let (attention_level, scores) = largest_attention_scores(config, spec, batch, h, w);
    // The scores and their softmax.
    let attention = scores;
    ForwardEstimate { total: activations + 2 * scores, attention, attention_level }
}

/// The largest attention score matrix (`batch × heads × (h·w)² × 4` bytes) a forward would build, and
/// the resolution level it is at: attention memory grows with the fourth power of the side.
pub fn largest_attention_scores(
    config: &UNet2DConfig,
    spec: &ModelSpec,
    batch: usize,
    h: usize,
    w: usize,
) -> (usize, u128) {
    let ch = &config.block_out_channels;
    let levels = ch.len();
    let heads = |c: usize| config.attention_head_dim.map_or(1, |d| (c / d).max(1));
    let mut at: Vec<(usize, usize)> = Vec::new(); // (level, heads)
    for (i, kind) in spec.down_blocks.iter().enumerate() {
        if matches!(kind, DownBlockKind::AttnDown | DownBlockKind::AttnSkipDown) {
            at.push((i, heads(ch[i])));
        }
    }
    for (i, kind) in spec.up_blocks.iter().enumerate() {
        if matches!(kind, UpBlockKind::AttnUp | UpBlockKind::AttnSkipUp) {
            at.push((levels - 1 - i, heads(ch[levels - 1 - i])));
        }
    }
    if spec.has_mid_block && config.add_attention {
        at.push((levels - 1, heads(ch[levels - 1])));
    }
    at.into_iter()
        .map(|(level, heads)| {
            let pixels = ((h >> level) as u128) * ((w >> level) as u128);
            (level, batch as u128 * heads as u128 * pixels * pixels * 4)
        })
        .max_by_key(|&(_, bytes)| bytes)
        .unwrap_or((0, 0))
}
