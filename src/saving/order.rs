//! The order of diffusers' `UNet2DModel.state_dict()`: PyTorch lists parameters module by module in
//! the order each `__init__` assigned its submodules (`conv_in`, `time_proj`, …, `conv_out`; in a
//! block `attentions` before `resnets`; in a resnet `norm1`, `conv1`, `time_emb_proj`, …), `weight`
//! before `bias`. The order decides which shard a tensor lands in, so it must be diffusers'.
//!
//! The model's own build order is not it (the blocks are built in parallel, `conv_in` last), so names
//! are sorted by the rank each component has in its parent's `__init__`. One table serves every level:
//! no two siblings anywhere in a UNet2DModel share a rank.

use std::cmp::Ordering;

/// `(component, rank)`: the assignment order in diffusers 0.42.1's `__init__`s.
const RANKS: &[(&str, u32)] = &[
    // UNet2DModel
    ("conv_in", 0),
    ("time_proj", 1),
    ("time_embedding", 2),
    ("class_embedding", 3),
    ("down_blocks", 4),
    ("mid_block", 5),
    ("up_blocks", 6),
    ("conv_norm_out", 7),
    ("conv_out", 8),
    // the down, mid and up blocks (Skip blocks: `upsampler` before `resnet_up`, `skip_conv` then `skip_norm`)
    ("attentions", 10),
    ("resnets", 11),
    ("upsampler", 12),
    ("resnet_down", 13),
    ("resnet_up", 13),
    ("downsamplers", 14),
    ("upsamplers", 14),
    ("skip_conv", 15),
    ("skip_norm", 16),
    // ResnetBlock2D
    ("norm1", 20),
    ("conv1", 21),
    ("time_emb_proj", 22),
    ("norm2", 23),
    ("conv2", 24),
    ("conv_shortcut", 25),
    // Attention
    ("group_norm", 30),
    ("to_q", 31),
    ("to_k", 32),
    ("to_v", 33),
    ("to_out", 34),
    // TimestepEmbedding
    ("linear_1", 40),
    ("linear_2", 41),
    // Downsample2D / Upsample2D
    ("conv", 50),
    ("Conv2d_0", 51),
    // parameters
    ("weight", 60),
    ("bias", 61),
];

/// One dotted component's sort key: list indices by value, known names by rank, anything else after
/// them by name (none is expected; they still sort deterministically).
fn key(component: &str) -> (u8, u64, &str) {
    if let Ok(index) = component.parse::<u64>() {
        return (0, index, "");
    }
    match RANKS.iter().find(|(name, _)| *name == component) {
        Some(&(_, rank)) => (1, u64::from(rank), ""),
        None => (2, 0, component),
    }
}

/// Compares two parameter names in `state_dict()` order.
pub(crate) fn state_dict_order(a: &str, b: &str) -> Ordering {
    a.split('.').map(key).cmp(b.split('.').map(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_module_order() {
        let mut names = vec![
            "conv_out.bias",
            "up_blocks.0.resnets.0.conv1.weight",
            "down_blocks.10.resnets.0.norm1.weight",
            "down_blocks.2.attentions.0.to_out.0.bias",
            "down_blocks.2.resnets.0.norm1.bias",
            "down_blocks.2.attentions.0.group_norm.weight",
            "down_blocks.2.resnets.0.norm1.weight",
            "time_embedding.linear_2.weight",
            "time_embedding.linear_1.bias",
            "conv_in.weight",
            "mid_block.attentions.0.to_q.weight",
            "conv_norm_out.weight",
        ];
        names.sort_by(|a, b| state_dict_order(a, b));
        assert_eq!(
            names,
            [
                "conv_in.weight",
                "time_embedding.linear_1.bias",
                "time_embedding.linear_2.weight",
                "down_blocks.2.attentions.0.group_norm.weight",
                "down_blocks.2.attentions.0.to_out.0.bias",
                "down_blocks.2.resnets.0.norm1.weight",
                "down_blocks.2.resnets.0.norm1.bias",
                "down_blocks.10.resnets.0.norm1.weight",
                "mid_block.attentions.0.to_q.weight",
                "up_blocks.0.resnets.0.conv1.weight",
                "conv_norm_out.weight",
                "conv_out.bias",
            ]
        );
    }
}
