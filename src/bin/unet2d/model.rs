//! `--model`: the shipped model, a folder or a Hub id, loaded with its scheduler and a report of
//! what was read.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use candle_unet2d::loading::LoadReport;
use candle_unet2d::pipeline::UNet2DPipeline;
use candle_unet2d::schedulers::Scheduler;
use candle_unet2d::{LoadOptions, UNet2DModel};
use serde_json::Value;

use super::cli::ModelArgs;
use super::progress::DownloadBar;
use super::shipped;

/// A loaded model.
pub struct Loaded {
    /// What the user named, for messages: `digits16` or the path / Hub id as typed.
    pub name: String,
    /// Whether it is the model embedded in the binary.
    pub shipped: bool,
    pub unet: UNet2DModel,
    /// The model's own scheduler (its `scheduler_config.json`, else diffusers' default DDPM).
    pub scheduler: Scheduler,
    /// Where the scheduler came from, for `info`.
    pub scheduler_source: String,
    /// The pipeline class its `model_index.json` names (`None` for a bare UNet folder).
    pub pipeline_class: Option<String>,
    pub report: LoadReport,
}

/// Loads `--model` (none: the shipped model) at `--revision`, with a download bar on stderr while
/// a Hub id downloads.
pub fn load(args: &ModelArgs, options: &LoadOptions) -> anyhow::Result<Loaded> {
    let shipped = args.model.as_deref().is_none_or(|path| path == Path::new(shipped::NAME));
    if shipped {
        if args.revision.is_some() {
            anyhow::bail!("--revision needs a Hub id as --model (the shipped model has no revisions)");
        }
        return load_shipped(options);
    }
    let path = args.model.as_deref().unwrap_or(Path::new(shipped::NAME));
    let mut options = options.clone();
    options.hub.revision = args.revision.clone();
    let bar = DownloadBar::new();
    options.hub.progress = bar.as_ref().map(DownloadBar::callback);
    let loaded = load_path(path, &options).with_context(|| format!("cannot load the model {}", path.display()));
    drop(bar);
    loaded
}

fn load_shipped(options: &LoadOptions) -> anyhow::Result<Loaded> {
    let (unet, scheduler, report) = shipped::load(options).context("cannot load the shipped digits16 model")?;
    Ok(Loaded {
        name: shipped::NAME.into(),
        shipped: true,
        unet,
        scheduler,
        scheduler_source: "models/digits16/scheduler/scheduler_config.json (embedded)".into(),
        pipeline_class: Some(shipped::pipeline_class()?),
        report,
    })
}

/// A pipeline folder (its `unet/` and `scheduler/`), a bare UNet folder, or a Hub id (downloaded
/// when not cached): whatever `UNet2DPipeline::from_pretrained` accepts, with its report of what was read.
fn load_path(path: &Path, options: &LoadOptions) -> anyhow::Result<Loaded> {
    let (pipeline, report) = UNet2DPipeline::from_pretrained_with_report(path, options)?;
    let scheduler_source = match report.scheduler_config {
        Some(file) => file.display().to_string(),
        None => "none found: diffusers' default DDPMScheduler".into(),
    };
    // The model is not shared yet, so this never clones it.
    let unet = Arc::try_unwrap(pipeline.unet).unwrap_or_else(|shared| (*shared).clone());
    Ok(Loaded {
        name: path.display().to_string(),
        shipped: false,
        unet,
        scheduler: pipeline.scheduler,
        scheduler_source,
        pipeline_class: pipeline.class_name,
        report: report.unet,
    })
}

/// The number of classes of a model conditioned on class ids (`num_class_embeds` without a
/// `class_embed_type`), `None` for other models.
pub fn class_count(unet: &UNet2DModel) -> Option<usize> {
    let config = unet.config();
    match (config.num_class_embeds, &config.class_embed_type) {
        (Some(n), None) => Some(n),
        _ => None,
    }
}

/// Fails unless every label is a class of the model's `classes`.
pub fn check_labels(labels: &[i64], classes: usize, model: &str) -> anyhow::Result<()> {
    if let Some(bad) = labels.iter().find(|&&c| c < 0 || c >= classes as i64) {
        anyhow::bail!("--class {bad} is out of range: {model} has {classes} classes, 0 to {}", classes - 1);
    }
    Ok(())
}

/// A scheduler config value as text (`"squaredcos_cap_v2"`, `1000`), or `?` when absent.
pub fn config_field(config: &Value, key: &str) -> String {
    match config.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "?".into(),
        Some(other) => other.to_string(),
    }
}

/// A short human name for a scheduler: `DDPMScheduler`, or for DPM-Solver its algorithm and order.
pub fn scheduler_label(scheduler: &Scheduler) -> String {
    let config = scheduler.config_json();
    let name = scheduler.kind().class_name();
    match (config.get("algorithm_type"), config.get("solver_order")) {
        (Some(Value::String(algorithm)), Some(order)) => format!("{name} ({algorithm}, order {order})"),
        _ => name.to_owned(),
    }
}
