//! Model statistics from the config alone: the weights the model holds (names and shapes, found by
//! building it against a backend that only records), their count, and the multiply-add work of one
//! forward at a given size.

use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::config::UNet2DConfig;
use crate::error::Result;
use crate::unet::UNet2DModel;

/// Hands out zero-cost stand-ins (a broadcast scalar) and remembers what was asked for.
#[derive(Default)]
struct ShapeRecorder {
    seen: Mutex<Vec<(String, Vec<usize>)>>,
}

impl SimpleBackend for ShapeRecorder {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push((name.to_string(), s.dims().to_vec()));
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("the shape of `{name}` is not known from the config")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Every weight the model built from `config` reads, with its shape, in build order.
pub fn parameter_shapes(config: &UNet2DConfig) -> Result<Vec<(String, Vec<usize>)>> {
    let recorder = ShapeRecorder::default();
    // Float16: the layers keep the stand-ins as they are instead of packing them for the float32 CPU
    // kernels, which for a large model took seconds (and the config fuzzer's time limit).
    let vb = VarBuilder::from_backend(Box::new(&recorder), DType::F16, Device::Cpu);
    UNet2DModel::new(config.clone(), vb)?;
    Ok(recorder.seen.into_inner().unwrap_or_default())
}

impl SimpleBackend for &ShapeRecorder {
    fn get(&self, s: Shape, name: &str, h: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        (*self).get(s, name, h, dtype, dev)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        (*self).get_unchecked(name, dtype, dev)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        (*self).contains_tensor(name)
    }
}

/// Number of weights (learned values) of the model `config` describes.
pub fn num_parameters(config: &UNet2DConfig) -> Result<usize> {
    Ok(parameter_shapes(config)?.iter().map(|(_, s)| s.iter().product::<usize>()).sum())
}

/// Floating-point operations (a multiply-add counts 2) of one forward of one `height × width` sample:
/// convolutions, linear layers and the attention matmuls — the work that matters; norms and
/// elementwise ops are left out, as FLOP counters usually do.
pub fn flops_per_sample(config: &UNet2DConfig, height: usize, width: usize) -> Result<f64> {
    let levels = config.block_out_channels.len();
    let pixels_at = |level: usize| ((height >> level) * (width >> level)) as f64;
    let mut flops = 0.0;
    for (name, shape) in parameter_shapes(config)? {
        if !name.ends_with(".weight") {
            continue;
        }
        let parts: Vec<&str> = name.split('.').collect();
        let level = resolution_level(&parts, levels);
        let elems = shape.iter().product::<usize>() as f64;
        let is_conv = shape.len() == 4;
        let is_attn_proj = parts.contains(&"attentions") && shape.len() == 2;
        if is_conv || is_attn_proj {
            flops += 2.0 * elems * pixels_at(level);
            if parts.contains(&"to_q") {
                // scores = q·kᵀ and out = p·v: 2 · 2 · (HW)² · inner
                let inner = shape[0] as f64;
                flops += 4.0 * pixels_at(level).powi(2) * inner;
            }
        } else if shape.len() == 2 && !parts.contains(&"class_embedding") && !parts.contains(&"time_proj") {
            flops += 2.0 * elems; // time-embedding MLP and per-resnet projections: once per sample
        }
    }
    Ok(flops)
}

/// Which resolution (0 = full, 1 = half, …) a weight named `parts` works at.
fn resolution_level(parts: &[&str], levels: usize) -> usize {
    let index = |i: usize| parts.get(i).and_then(|p| p.parse::<usize>().ok()).unwrap_or(0);
    match parts.first().copied() {
        Some("down_blocks") => {
            let i = index(1);
            // Downsamplers (and NCSN++'s resnet_down/skip_conv) compute at the halved resolution.
            match parts.get(2).copied() {
                Some("downsamplers" | "resnet_down" | "skip_conv") => i + 1,
                _ => i,
            }
        }
        Some("mid_block") => levels - 1,
        Some("up_blocks") => {
            let level = levels - 1 - index(1);
            match parts.get(2).copied() {
                Some("upsamplers" | "resnet_up") => level.saturating_sub(1),
                _ => level,
            }
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cifar10_32() -> UNet2DConfig {
        serde_json::from_value(serde_json::json!({
            "sample_size": 32, "block_out_channels": [128, 256, 256, 256], "attention_head_dim": null,
            "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], "layers_per_block": 2
        }))
        .unwrap()
    }

    #[test]
    fn ddpm_cifar10_counts_match_the_published_figures() {
        // google/ddpm-cifar10-32: 35.7 M parameters, 12.1 GFLOP per 32×32 sample in convolutions and
        // linear layers; the attention matmuls add 0.34 GFLOP (5 blocks × 4 · 256² · 256).
        let config = cifar10_32();
        let params = num_parameters(&config).unwrap() as f64 / 1e6;
        assert!((params - 35.7).abs() < 0.1, "{params} M");
        let gflops = flops_per_sample(&config, 32, 32).unwrap() / 1e9;
        assert!((gflops - 12.44).abs() < 0.05, "{gflops} GFLOP");
    }
}
