//! `unet2d info`: the model's config in brief, its size and compute cost, the weights read and
//! the scheduler, as `label  value` lines on stdout.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::Context;
use candle_unet2d::config::UNet2DConfig;
use candle_unet2d::device::dtype_name;
use candle_unet2d::stats::{flops_per_sample, num_parameters};
use candle_unet2d::LoadOptions;

use super::cli::InfoArgs;
use super::model::{self, config_field, Loaded};
use super::shipped;

pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let loaded = model::load(&args.model, &LoadOptions::default())?;
    let text = describe(&loaded)?;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        // A closed pipe (`unet2d info | head`) is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(()),
    }
}

/// The whole report.
fn describe(loaded: &Loaded) -> anyhow::Result<String> {
    let config = loaded.unet.config();
    let mut out = Lines::default();
    let name = if loaded.shipped { format!("{} (shipped inside unet2d)", loaded.name) } else { loaded.name.clone() };
    out.line("model", name);

    let size = match config.sample_size.map(|s| s.height_width()) {
        Some((h, w)) => format!("{h}x{w}"),
        None => "not set".into(),
    };
    out.line("sample size", size);
    out.line("channels", format!("{} in, {} out", config.in_channels, config.out_channels));
    describe_blocks(config, &mut out);
    describe_embeddings(config, &mut out);

    let params = num_parameters(config).context("cannot count the parameters")?;
    out.line("parameters", format!("{} ({:.2} M)", group_digits(params), params as f64 / 1e6));
    let compute = match config.sample_size.map(|s| s.height_width()) {
        Some((h, w)) => {
            let flops = flops_per_sample(config, h, w).context("cannot count the FLOPs")?;
            format!("{:.3} GFLOPs per {h}x{w} sample (one UNet forward)", flops / 1e9)
        }
        None => "unknown (no sample_size)".into(),
    };
    out.line("compute", compute);
    let isa = candle_unet2d::Isa::active();
    out.line(
        "cpu kernels",
        format!("{isa} (this CPU's best: {}; {} lowers it)", candle_unet2d::Isa::best(), candle_unet2d::ISA_ENV),
    );
    use candle_unet2d::kernels::conv2d::{winograd_tile_override, ConvKernel, WINOGRAD_TILE_ENV};
    let tiles = match winograd_tile_override() {
        Some(ConvKernel::WinogradF2) => "F(2x2) only",
        Some(_) => "F(4x4) wherever the map allows it",
        None => "F(4x4) or F(2x2), chosen per call",
    };
    out.line("winograd", format!("{tiles} ({WINOGRAD_TILE_ENV} fixes it: f2, f4 or auto)"));

    let report = &loaded.report;
    let stored = report.stored_dtype.map(dtype_name).unwrap_or("unknown");
    out.line("weights", format!("stored as {stored}"));
    for file in &report.weight_files {
        let note = if loaded.shipped {
            format!(" (embedded in the binary, {:.1} MB)", shipped::weights_len() as f64 / 1e6)
        } else {
            String::new()
        };
        out.line("", format!("{}{note}", file.display()));
    }

    let scheduler = &loaded.scheduler;
    let sc = scheduler.config_json();
    out.line(
        "scheduler",
        format!(
            "{}: {} training steps, beta_schedule {}, prediction_type {}",
            scheduler.kind().class_name(),
            scheduler.num_train_timesteps(),
            config_field(&sc, "beta_schedule"),
            config_field(&sc, "prediction_type"),
        ),
    );
    out.line("", format!("from {}", loaded.scheduler_source));
    // What `sample` runs without --pipeline.
    let pipeline = match &loaded.pipeline_class {
        Some(class) => match candle_unet2d::pipeline::PipelineKind::from_class_name(class) {
            Ok(kind) => format!("{kind} (model_index.json; `sample --pipeline {}`)", kind.short_name()),
            Err(_) => format!("{class} (model_index.json; not one unet2d has: choose one with --pipeline)"),
        },
        None => {
            let kind = candle_unet2d::pipeline::PipelineKind::for_scheduler(scheduler.kind());
            format!("{kind} (no model_index.json: the one its scheduler needs)")
        }
    };
    out.line("pipeline", pipeline);
    Ok(out.text)
}

/// Down, mid and up blocks, levels and attention.
fn describe_blocks(config: &UNet2DConfig, out: &mut Lines) {
    out.line("down blocks", config.down_block_types.join(", "));
    let mid = match &config.mid_block_type {
        Some(mid) if config.add_attention => format!("{mid} (with attention)"),
        Some(mid) => format!("{mid} (no attention)"),
        None => "none".into(),
    };
    out.line("mid block", mid);
    out.line("up blocks", config.up_block_types.join(", "));
    let channels: Vec<String> = config.block_out_channels.iter().map(|c| c.to_string()).collect();
    let groups = match config.norm_num_groups {
        Some(g) => format!("{g} norm groups"),
        None => "norm groups from the channels".into(),
    };
    out.line(
        "levels",
        format!(
            "{} (channels {}), {} resnet layer(s) per down block, {}, {}, resnet_time_scale_shift {}",
            config.block_out_channels.len(),
            channels.join(", "),
            config.layers_per_block,
            config.act_fn,
            groups,
            config.resnet_time_scale_shift,
        ),
    );
    let attn_blocks =
        config.down_block_types.iter().chain(&config.up_block_types).filter(|b| b.contains("Attn")).count();
    let mid_attn = config.mid_block_type.is_some() && config.add_attention;
    let attention = if attn_blocks == 0 && !mid_attn {
        "none".to_string()
    } else {
        let heads = match config.attention_head_dim {
            Some(d) => format!("head dim {d}"),
            None => "one head per block".into(),
        };
        let mid = if mid_attn { " + the mid block" } else { "" };
        format!("{attn_blocks} down/up block(s){mid}, {heads}")
    };
    out.line("attention", attention);
}

/// Time embedding and class conditioning.
fn describe_embeddings(config: &UNet2DConfig, out: &mut Lines) {
    let time = match config.time_embedding_type.as_str() {
        "positional" => format!(
            "positional (sinusoidal, flip_sin_to_cos {}, freq_shift {})",
            config.flip_sin_to_cos, config.freq_shift
        ),
        other => other.to_string(),
    };
    out.line("time embedding", format!("{time}, {} wide", config.time_embed_dim()));
    let classes = match (&config.class_embed_type, config.num_class_embeds) {
        (None, Some(n)) => format!("{n} classes (--class 0 to {})", n.saturating_sub(1)),
        (None, None) => "none (unconditional)".into(),
        (Some(kind), _) => format!("class_embed_type {kind}"),
    };
    out.line("classes", classes);
}

/// `label  value` lines with the values aligned.
#[derive(Default)]
struct Lines {
    text: String,
}

impl Lines {
    fn line(&mut self, label: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.text, "{label:<15} {value}");
    }
}

/// `1234567` → `1,234,567`.
fn group_digits(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
        assert_eq!(group_digits(35_746_307), "35,746,307");
    }
}
