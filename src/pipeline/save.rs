//! `save_pretrained` for a pipeline, as diffusers writes one: `model_index.json` naming the class and
//! its components, `scheduler/scheduler_config.json`, and the UNet in `unet/` (see
//! [`UNet2DModel::save_pretrained`]). diffusers' `DiffusionPipeline.from_pretrained` loads the folder,
//! and so does [`super::UNet2DPipeline::from_pretrained`].

use std::path::Path;

use serde_json::Value;

use super::{PipelineKind, DIFFUSERS_VERSION};
use crate::error::Result;
use crate::saving::python_json::to_json_string;
use crate::saving::{write_text_atomic, SaveOptions};
use crate::schedulers::Scheduler;
use crate::unet::UNet2DModel;

/// Writes `unet` and `scheduler` as a `kind` pipeline folder `dir` (created if missing).
pub fn save_pretrained(
    dir: &Path,
    kind: PipelineKind,
    unet: &UNet2DModel,
    scheduler: &Scheduler,
    options: &SaveOptions,
) -> Result<()> {
    unet.save_pretrained(dir.join("unet"), options)?;
    let mut config = scheduler.config_json();
    if let Value::Object(map) = &mut config {
        map.insert("_class_name".into(), scheduler.kind().class_name().into());
        map.insert("_diffusers_version".into(), DIFFUSERS_VERSION.into());
    }
    let scheduler_dir = dir.join("scheduler");
    std::fs::create_dir_all(&scheduler_dir).map_err(|e| crate::Error::io(&scheduler_dir, e))?;
    write_text_atomic(&scheduler_dir.join("scheduler_config.json"), &to_json_string(&config))?;
    write_text_atomic(&dir.join("model_index.json"), &to_json_string(&kind.model_index(scheduler.kind())))
}
