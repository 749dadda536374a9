//! Sampling: every loop diffusers' UNet2DModel pipelines run, in one place, for the library, the
//! Python package and the CLI.
//!
//! * [`sample`] (and [`sample_shared`], [`sample_per_image`]) run the loop a scheduler needs
//!   ([`SamplingLoop`](crate::schedulers::SamplingLoop)): the standard denoising loop
//!   ([`standard`]), ScoreSdeVe's predictor-corrector ([`predictor_corrector`]) or RePaint's
//!   inpainting with jumps ([`inpainting`]), with class labels, per-image generators, explicit
//!   timesteps (consistency models' `[22, 0]`) and a step callback that can stop the run.
//! * [`PipelineKind`] is the registry of diffusers' pipeline classes (`DDPMPipeline`, …,
//!   `RePaintPipeline`): what `model_index.json` names, and what each class does to its scheduler.
//! * [`UNet2DPipeline`] loads a pipeline folder: the UNet, its scheduler and the class it names.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::hub::Wanted;
use crate::loading::{model_dir_in, LoadOptions, LoadReport};
use crate::schedulers::config::find_config_file;
use crate::schedulers::{SamplingLoop, Scheduler, SchedulerKind};
use crate::unet::UNet2DModel;

mod inpainting;
mod kind;
mod predictor_corrector;
mod sample;
mod save;
mod standard;

pub use kind::{PipelineEntry, PipelineKind};
pub use sample::{check_memory, sample, sample_per_image, sample_shared, Control, Inpaint, SampleOptions, StepEnd};
pub use save::save_pretrained;

/// The diffusers version whose file formats this crate writes.
pub use crate::saving::DIFFUSERS_VERSION;

/// diffusers' `output_type="np"`: `(x / 2 + 0.5).clamp(0, 1)` as float32 NHWC.
pub fn to_images(x: &Tensor) -> Result<Tensor> {
    to_images_from(x, SamplingLoop::Standard)
}

/// [`to_images`] for a sample of `sampling_loop`: ScoreSdeVe's NCSN++ models work in `[0, 1]`, so its
/// pipeline only clamps (`sample_mean.clamp(0, 1)`); the others map `[-1, 1]` to `[0, 1]`.
pub fn to_images_from(x: &Tensor, sampling_loop: SamplingLoop) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    let x = match sampling_loop {
        SamplingLoop::PredictorCorrector => x,
        SamplingLoop::Standard | SamplingLoop::Inpainting => ((x / 2.0)? + 0.5)?,
    };
    Ok(x.clamp(0f32, 1f32)?.permute((0, 2, 3, 1))?.contiguous()?)
}

/// diffusers' `numpy_to_pil` quantisation: `(images * 255).round()` as bytes, NHWC.
pub fn to_uint8(images: &Tensor) -> Result<Tensor> {
    Ok((images * 255.0)?.round()?.clamp(0f32, 255f32)?.to_dtype(DType::U8)?)
}

/// A UNet and its scheduler, loaded from a diffusers pipeline folder (`model_index.json`, `unet/`,
/// `scheduler/`), or from a bare UNet folder with the `scheduler_config.json` beside its `config.json`
/// (old single-folder pipelines such as google/ddpm-cifar10-32), else diffusers' default
/// `DDPMScheduler`.
#[derive(Debug, Clone)]
pub struct UNet2DPipeline {
    pub unet: std::sync::Arc<UNet2DModel>,
    pub scheduler: Scheduler,
    /// The folder it was loaded from (the pipeline's, not its `unet/`).
    pub path: PathBuf,
    /// The pipeline class `model_index.json` names, if the folder has one.
    pub class_name: Option<String>,
}

/// What [`UNet2DPipeline::from_pretrained_with_report`] read.
#[derive(Debug, Clone)]
pub struct PipelineReport {
    pub unet: LoadReport,
    /// The scheduler config file, or `None` for diffusers' default `DDPMScheduler`.
    pub scheduler_config: Option<PathBuf>,
    /// That file's JSON as read (every key, those the scheduler does not use too).
    pub scheduler_json: Option<serde_json::Value>,
}

impl UNet2DPipeline {
    /// Loads a pipeline folder, a bare UNet folder, or a Hub id (whose `model_index.json`, UNet
    /// config and weights and scheduler config are downloaded; see [`crate::hub`]).
    pub fn from_pretrained(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        Ok(Self::from_pretrained_with_report(path, options)?.0)
    }

    /// [`Self::from_pretrained`], with what was read.
    pub fn from_pretrained_with_report(
        path: impl AsRef<Path>,
        options: &LoadOptions,
    ) -> Result<(Self, PipelineReport)> {
        let shown = path.as_ref();
        let wanted = Wanted::Pipeline { variant: options.variant.clone(), use_safetensors: options.use_safetensors };
        let root = match crate::hub::locate(shown, &wanted, &options.hub)? {
            Some(root) if root.is_dir() => root,
            Some(_) => {
                return Err(Error::argument("path", format!("{} is a file; pass the pipeline folder", shown.display())))
            }
            None => return Err(Error::NotFound { what: format!("model folder {}", shown.display()) }),
        };
        // Descends into unet/ for pipeline folders.
        let unet_dir = model_dir_in(&root, None, shown)?;
        let unet_options = LoadOptions { subfolder: None, ..options.clone() };
        let (unet, unet_report) = UNet2DModel::from_pretrained_with_report(&unet_dir, &unet_options)?;
        let scheduler_config = scheduler_config_for(&unet_dir);
        let scheduler_json = match &scheduler_config {
            Some(file) => Some(crate::schedulers::config::read_config_json(file)?),
            None => None,
        };
        let scheduler = match &scheduler_json {
            Some(json) => Scheduler::from_json(json)?,
            None => default_scheduler()?,
        };
        let path = pipeline_root(&unet_dir).unwrap_or(unet_dir);
        let class_name = model_index_class(&path)?;
        let report = PipelineReport { unet: unet_report, scheduler_config, scheduler_json };
        Ok((Self { unet: std::sync::Arc::new(unet), scheduler, path, class_name }, report))
    }

    /// The pipeline class to sample with: the one `model_index.json` names (an error if this crate
    /// has no such class), else the one the scheduler's loop needs.
    pub fn kind(&self) -> Result<PipelineKind> {
        PipelineKind::for_folder(self.class_name.as_deref(), self.scheduler.kind())
    }
}

/// `_class_name` of the `model_index.json` in `dir`, if there is one.
pub fn model_index_class(dir: &Path) -> Result<Option<String>> {
    let file = dir.join("model_index.json");
    if !crate::files::exists(&file) {
        return Ok(None);
    }
    model_index_class_in(&crate::files::read_json_text(&file)?, &file)
}

/// `_class_name` of the `model_index.json` text `text` (read from `path`, for messages).
pub fn model_index_class_in(text: &str, path: &Path) -> Result<Option<String>> {
    let value = crate::schedulers::config::parse_json_text(text, path)?;
    match value.get("_class_name") {
        Some(serde_json::Value::String(name)) => Ok(Some(name.clone())),
        None => Ok(None),
        Some(other) => Err(Error::ConfigParse {
            path: path.to_path_buf(),
            reason: format!("`_class_name` must be a string, got {other}"),
        }),
    }
}

/// The pipeline folder a UNet folder is the `unet/` of, if it is one.
fn pipeline_root(unet_dir: &Path) -> Option<PathBuf> {
    let parent = unet_dir.parent()?;
    let in_pipeline = unet_dir.file_name().is_some_and(|n| n == "unet")
        && (parent.join("model_index.json").is_file() || parent.join("scheduler").is_dir());
    in_pipeline.then(|| parent.to_path_buf())
}

/// The scheduler config that belongs to the UNet in `unet_dir`: `scheduler_config.json` beside its
/// `config.json`, else the pipeline's `scheduler/` when `unet_dir` is a pipeline's `unet/`.
pub fn scheduler_config_for(unet_dir: &Path) -> Option<PathBuf> {
    let beside = unet_dir.join("scheduler_config.json");
    if crate::files::exists(&beside) {
        return Some(beside);
    }
    find_config_file(&pipeline_root(unet_dir)?.join("scheduler")).ok()
}

/// `DDPMScheduler()` with diffusers' defaults: what a UNet folder without a scheduler samples with.
pub fn default_scheduler() -> Result<Scheduler> {
    SchedulerKind::from_class_name("DDPMScheduler")?.build(&serde_json::json!({}))
}
