//! The model shipped inside the binary: `models/digits16/`, a 16×16 grayscale class-conditional
//! DDPM trained on digits (class k draws digit k), embedded with `include_bytes!` so that
//! `unet2d sample` works with no files, from any working directory.

use std::path::{Path, PathBuf};

use candle_unet2d::loading::LoadReport;
use candle_unet2d::schedulers::config::parse_json_text;
use candle_unet2d::schedulers::Scheduler;
use candle_unet2d::{LoadOptions, UNet2DConfig, UNet2DModel};

/// The name `--model` knows it by.
pub const NAME: &str = "digits16";

/// Where the files came from, relative to the crate (for messages and `info`).
const UNET_CONFIG_PATH: &str = "models/digits16/unet/config.json";
const WEIGHTS_PATH: &str = "models/digits16/unet/diffusion_pytorch_model.safetensors";
const SCHEDULER_PATH: &str = "models/digits16/scheduler/scheduler_config.json";
const MODEL_INDEX_PATH: &str = "models/digits16/model_index.json";

const UNET_CONFIG: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits16/unet/config.json"));
const WEIGHTS: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits16/unet/diffusion_pytorch_model.safetensors"));
const SCHEDULER_CONFIG: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits16/scheduler/scheduler_config.json"));
const MODEL_INDEX: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits16/model_index.json"));

/// The shipped UNet, its scheduler and a report of what was read.
pub fn load(options: &LoadOptions) -> candle_unet2d::Result<(UNet2DModel, Scheduler, LoadReport)> {
    let config = UNet2DConfig::from_json_str(UNET_CONFIG, Path::new(UNET_CONFIG_PATH))?;
    let unet = UNet2DModel::from_safetensors_bytes(config, WEIGHTS.to_vec(), Path::new(WEIGHTS_PATH), options)?;
    let scheduler = Scheduler::from_json(&parse_json_text(SCHEDULER_CONFIG, Path::new(SCHEDULER_PATH))?)?;
    let report = LoadReport {
        model_dir: PathBuf::from("models/digits16/unet"),
        weight_files: vec![PathBuf::from(WEIGHTS_PATH)],
        stored_dtype: stored_dtype(),
    };
    Ok((unet, scheduler, report))
}

/// The pipeline class the embedded `model_index.json` names (`DDPMPipeline`), which `sample` uses
/// as it uses a folder's.
pub fn pipeline_class() -> candle_unet2d::Result<String> {
    match candle_unet2d::pipeline::model_index_class_in(MODEL_INDEX, Path::new(MODEL_INDEX_PATH))? {
        Some(name) => Ok(name),
        None => Err(candle_unet2d::Error::ConfigParse {
            path: PathBuf::from(MODEL_INDEX_PATH),
            reason: "no `_class_name` string".into(),
        }),
    }
}

/// Size of the embedded weights file in bytes.
pub fn weights_len() -> usize {
    WEIGHTS.len()
}

/// The dtype most of the embedded tensors are stored in (what `LoadReport::stored_dtype` says for
/// a file on disk).
fn stored_dtype() -> Option<candle_core::DType> {
    // candle's own safetensors version, so that its `DType: TryFrom<Dtype>` applies.
    let tensors = candle_core::safetensors::SliceSafetensors::new(WEIGHTS).ok()?;
    let mut counts: Vec<(candle_core::DType, usize)> = Vec::new();
    for (_, view) in tensors.tensors() {
        let Ok(dtype) = candle_core::DType::try_from(view.dtype()) else {
            continue;
        };
        match counts.iter_mut().find(|(d, _)| *d == dtype) {
            Some((_, n)) => *n += 1,
            None => counts.push((dtype, 1)),
        }
    }
    counts.into_iter().max_by_key(|&(_, n)| n).map(|(d, _)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_model_loads() {
        let (unet, scheduler, report) = load(&LoadOptions::default()).unwrap();
        assert_eq!(unet.config().in_channels, 1);
        assert_eq!(unet.config().num_class_embeds, Some(10));
        assert_eq!(scheduler.num_train_timesteps(), 1000);
        assert_eq!(report.stored_dtype, Some(candle_core::DType::F32));
        assert_eq!(pipeline_class().unwrap(), "DDPMPipeline");
    }
}
