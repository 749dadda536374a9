//! `--model`: the shipped model, a folder or a Hub id, loaded with its scheduler and a report of
//! what was read.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_unet2d::loading::{resolve_model_dir, LoadReport};
use candle_unet2d::schedulers::config::find_config_file;
use candle_unet2d::schedulers::{Scheduler, SchedulerKind};
use candle_unet2d::{LoadOptions, UNet2DModel};
use serde_json::Value;

use crate::shipped;

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
    pub report: LoadReport,
}

/// Loads `--model` (`None`: the shipped model).
pub fn load(model: Option<&Path>, options: &LoadOptions) -> anyhow::Result<Loaded> {
    match model {
        None => load_shipped(options),
        Some(path) if path == Path::new(shipped::NAME) => load_shipped(options),
        Some(path) => load_path(path, options).with_context(|| format!("cannot load the model {}", path.display())),
    }
}

fn load_shipped(options: &LoadOptions) -> anyhow::Result<Loaded> {
    let (unet, scheduler, report) = shipped::load(options).context("cannot load the shipped digits16 model")?;
    Ok(Loaded {
        name: shipped::NAME.into(),
        shipped: true,
        unet,
        scheduler,
        scheduler_source: "models/digits16/scheduler/scheduler_config.json (embedded)".into(),
        report,
    })
}

/// A pipeline folder (its `unet/` and `scheduler/`), a bare UNet folder (diffusers' default DDPM
/// scheduler unless a `scheduler_config.json` lies beside its `config.json`, as in the old
/// single-folder pipelines such as google/ddpm-cifar10-32), or a Hub id in the local cache —
/// what `UNet2DPipeline::from_pretrained` accepts, loaded once with a [`LoadReport`].
fn load_path(path: &Path, options: &LoadOptions) -> anyhow::Result<Loaded> {
    // resolve_model_dir descends into unet/ for pipeline folders and resolves Hub ids.
    let unet_dir = resolve_model_dir(path, None)?;
    let (unet, report) = UNet2DModel::from_pretrained_with_report(&unet_dir, options)?;
    let (scheduler, scheduler_source) = match scheduler_config_for(&unet_dir) {
        Some(file) => {
            let scheduler = Scheduler::from_pretrained(&file)
                .with_context(|| format!("cannot load the scheduler {}", file.display()))?;
            (scheduler, file.display().to_string())
        }
        None => (default_ddpm()?, "none found: diffusers' default DDPMScheduler".into()),
    };
    Ok(Loaded { name: path.display().to_string(), shipped: false, unet, scheduler, scheduler_source, report })
}

/// The scheduler config that belongs to the UNet in `unet_dir`, if any.
fn scheduler_config_for(unet_dir: &Path) -> Option<PathBuf> {
    let beside = unet_dir.join("scheduler_config.json");
    if beside.is_file() {
        return Some(beside);
    }
    let parent = unet_dir.parent()?;
    let in_pipeline = unet_dir.file_name().is_some_and(|n| n == "unet")
        && (parent.join("model_index.json").is_file() || parent.join("scheduler").is_dir());
    if in_pipeline {
        return find_config_file(&parent.join("scheduler")).ok();
    }
    None
}

/// `DDPMScheduler()` with diffusers' defaults.
fn default_ddpm() -> anyhow::Result<Scheduler> {
    let config = serde_json::json!({ "_class_name": SchedulerKind::Ddpm.class_name() });
    Ok(Scheduler::from_json(&config)?)
}

/// A scheduler config value as text (`"squaredcos_cap_v2"`, `1000`), or `?` when absent.
pub fn config_field(config: &Value, key: &str) -> String {
    match config.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "?".into(),
        Some(other) => other.to_string(),
    }
}

/// A short human name for a scheduler: `DDPM`, `DDIM`, `DPM-Solver++`.
pub fn scheduler_label(scheduler: &Scheduler) -> String {
    match scheduler.kind() {
        SchedulerKind::Ddpm => "DDPM".into(),
        SchedulerKind::Ddim => "DDIM".into(),
        SchedulerKind::DpmSolverMultistep => {
            let config = scheduler.config_json();
            let order = config_field(&config, "solver_order");
            match config_field(&config, "algorithm_type").as_str() {
                "dpmsolver++" => format!("DPM-Solver++ (order {order})"),
                "sde-dpmsolver++" => format!("SDE-DPM-Solver++ (order {order})"),
                other => format!("DPM-Solver {other} (order {order})"),
            }
        }
    }
}
