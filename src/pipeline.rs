//! Sampling: diffusers' `DDPMPipeline`/`DDIMPipeline` loop (initial noise from the generator, then
//! `unet → scheduler.step` per timestep with each step's noise from the same generator), with class
//! labels passed to the UNet for class-conditional models, and the conversion to images.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::loading::{resolve_model_dir, LoadOptions, LoadReport};
use crate::memory_budget;
use crate::rng::Generator;
use crate::schedulers::config::find_config_file;
use crate::schedulers::noise::{randn, randn_per_image};
use crate::schedulers::{Args, Noise, Scheduler, SchedulerKind, StepInput};
use crate::unet::UNet2DModel;

/// What to sample.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    /// Number of images. With `class_labels`, it must equal their count (or be 0 to take it from them).
    pub batch_size: usize,
    /// Denoising steps (the scheduler's `set_timesteps`).
    pub num_inference_steps: usize,
    /// One class id per image, for class-conditional models.
    pub class_labels: Option<Vec<i64>>,
    /// The scheduler's own `step` arguments by name (DDIM's `eta`, Euler's `s_churn`, …); an
    /// argument the scheduler does not take is an error.
    pub step_args: Args,
    /// `(height, width)`; `None` takes the model's `sample_size`.
    pub size: Option<(usize, usize)>,
    /// Start from these latents instead of drawing the initial noise.
    pub latents: Option<Tensor>,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            batch_size: 1,
            num_inference_steps: 50,
            class_labels: None,
            step_args: Args::new(),
            size: None,
            latents: None,
        }
    }
}

/// Progress of [`sample`]: `step` steps of `total` done.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub step: usize,
    pub total: usize,
}

/// Runs the whole denoising loop and returns the final sample `[B, C, H, W]` in the model's value range
/// (`[-1, 1]` for image models) and float32. `progress` is called after every step.
pub fn sample(
    unet: &UNet2DModel,
    scheduler: &mut Scheduler,
    options: &SampleOptions,
    generator: &mut Generator,
    progress: impl FnMut(Progress),
) -> Result<Tensor> {
    let shared = Mutex::new(std::mem::take(generator));
    let result = sample_shared(unet, scheduler, options, &shared, progress);
    *generator = shared.into_inner().unwrap_or_else(PoisonError::into_inner);
    result
}

/// [`sample`] drawing from a generator other threads may share. It is locked for each draw only (the
/// initial noise, each step's noise), never while the UNet runs, so concurrent runs on one generator
/// draw from its stream in turn, as torch's draws on a shared generator do: every run gets its own
/// numbers, and the generator ends where as many sequential runs leave it.
pub fn sample_shared(
    unet: &UNet2DModel,
    scheduler: &mut Scheduler,
    options: &SampleOptions,
    generator: &Mutex<Generator>,
    progress: impl FnMut(Progress),
) -> Result<Tensor> {
    run(unet, scheduler, options, Randomness::Shared(generator), progress)
}

/// [`sample`] with one generator per image (diffusers' `generator=[…]`): image `i`'s initial noise
/// and every step's noise come from `generators[i]`, so each image is what a batch of one with that
/// generator gives, whatever it is batched with.
pub fn sample_per_image(
    unet: &UNet2DModel,
    scheduler: &mut Scheduler,
    options: &SampleOptions,
    generators: &mut [Generator],
    progress: impl FnMut(Progress),
) -> Result<Tensor> {
    run(unet, scheduler, options, Randomness::PerImage(generators), progress)
}

/// Where a run's random numbers come from.
enum Randomness<'a> {
    Shared(&'a Mutex<Generator>),
    PerImage(&'a mut [Generator]),
}

impl Randomness<'_> {
    /// Runs `f` with the noise source, holding a shared generator's lock for `f` only.
    fn with<T>(&mut self, f: impl FnOnce(Noise<'_>) -> Result<T>) -> Result<T> {
        match self {
            Randomness::Shared(mutex) => {
                let mut g = mutex.lock().unwrap_or_else(PoisonError::into_inner);
                f(Noise::Generator(&mut g))
            }
            Randomness::PerImage(generators) => f(Noise::PerImage(generators)),
        }
    }
}

fn run(
    unet: &UNet2DModel,
    scheduler: &mut Scheduler,
    options: &SampleOptions,
    mut random: Randomness<'_>,
    mut progress: impl FnMut(Progress),
) -> Result<Tensor> {
    let kind = scheduler.kind();
    if !kind.runs_in_standard_loop() {
        return Err(Error::argument(
            "scheduler",
            format!(
                "{kind} does not sample with the standard denoising loop (it needs its own: ScoreSdeVe's \
                 predictor-corrector, RePaint's inpainting); choose another scheduler"
            ),
        ));
    }
    let config = unet.config();
    let labels = class_labels_for(unet, options)?;
    let batch = match (&labels, options.batch_size) {
        (Some(l), 0) => l.len(),
        (Some(l), b) if l.len() != b => {
            return Err(Error::argument(
                "class_labels",
                format!("{} labels for a batch of {b} (give one per image)", l.len()),
            ))
        }
        (_, 0) => return Err(Error::argument("batch_size", "must be at least 1")),
        (_, b) => b,
    };
    if let Randomness::PerImage(generators) = &random {
        if generators.len() != batch {
            return Err(Error::argument(
                "generator",
                format!("{} generators for a batch of {batch}: give one per image", generators.len()),
            ));
        }
    }
    if options.num_inference_steps == 0 {
        return Err(Error::argument("num_inference_steps", "must be at least 1"));
    }
    let (height, width) = match options.size {
        Some(hw) => hw,
        None => config.sample_size.map(|s| s.height_width()).ok_or_else(|| {
            Error::argument("size", "the model's config has no sample_size; give the height and width")
        })?,
    };
    check_memory(unet, batch, height, width)?;
    let shape = [batch, config.in_channels, height, width];
    let device = unet.device().clone();

    // Initial noise: drawn on the CPU from the torch-compatible generator(s), as diffusers'
    // randn_tensor does.
    let mut x = match &options.latents {
        Some(latents) => {
            if latents.dims() != shape {
                return Err(Error::argument("latents", format!("must have shape {shape:?}, got {:?}", latents.dims())));
            }
            latents.to_device(&device)?.to_dtype(DType::F32)?
        }
        None => random.with(|noise| match noise {
            Noise::Generator(g) => randn(g, &shape, &device),
            Noise::PerImage(gs) => randn_per_image(gs, &shape, &device),
            _ => Err(Error::argument("generator", "no random source")),
        })?,
    };
    // The step arguments are checked before the first UNet call, not after it.
    scheduler.check_step_args(&options.step_args)?;
    scheduler.set_timesteps(options.num_inference_steps)?;
    x = (x * scheduler.init_noise_sigma())?;
    let labels = match labels {
        Some(l) => Some(Tensor::new(l.as_slice(), &device)?),
        None => None,
    };

    let timesteps = scheduler.timesteps().to_vec();
    let total = timesteps.len();
    for (i, &t) in timesteps.iter().enumerate() {
        let model_input = scheduler.scale_model_input(&x, t)?;
        let model_output = unet.forward(&model_input, t, labels.as_ref())?.to_dtype(DType::F32)?;
        x = random.with(|noise| {
            let input = StepInput::new(&model_output, t, &x).with_noise(noise);
            Ok(scheduler.step(input, &options.step_args)?.prev_sample)
        })?;
        progress(Progress { step: i + 1, total });
    }
    Ok(x)
}

/// Float32 copies of the sample a run holds at once besides the UNet's own: the noise as drawn and as
/// a tensor, the scaled model input, the model output, the step's noise and result, and the images
/// (float32 NHWC, bytes, and their host copy).
const SAMPLE_COPIES: u128 = 10;

/// Bytes of a float32 tensor of `shape`.
fn noise_bytes(shape: &[usize]) -> u128 {
    shape.iter().fold(4u128, |n, &d| n.saturating_mul(d as u128))
}

/// Refuses a run of `batch` images of `height × width` that cannot fit in memory (see
/// [`crate::memory_budget`]): the UNet's forward and the run's own copies of the sample, checked
/// before anything of that size is allocated.
pub fn check_memory(unet: &UNet2DModel, batch: usize, height: usize, width: usize) -> Result<()> {
    let channels = unet.config().in_channels.max(unet.config().out_channels);
    let sample = noise_bytes(&[batch, channels, height, width]);
    let forward = if unet.device().is_cpu() { unet.forward_estimate(batch, height, width).total } else { 0 };
    // One class id per image, as a list and as a tensor.
    let labels = 16 * batch as u128;
    memory_budget::check(
        || format!("sampling {batch} image(s) of {height}×{width}"),
        SAMPLE_COPIES.saturating_mul(sample).saturating_add(forward).saturating_add(labels),
    )
}

/// The labels to condition on: the given ones, checked against the model.
fn class_labels_for(unet: &UNet2DModel, options: &SampleOptions) -> Result<Option<Vec<i64>>> {
    let config = unet.config();
    let conditional = config.num_class_embeds.is_some() && config.class_embed_type.is_none();
    match (&options.class_labels, conditional) {
        (None, false) => Ok(None),
        (Some(_), false) => Err(Error::argument("class_labels", "given, but this model is not class-conditional")),
        (None, true) => Err(Error::argument(
            "class_labels",
            format!("required: this model is class-conditional ({} classes)", config.num_class_embeds.unwrap_or(0)),
        )),
        (Some(l), true) => {
            let n = config.num_class_embeds.unwrap_or(0) as i64;
            if let Some(bad) = l.iter().find(|&&c| c < 0 || c >= n) {
                return Err(Error::argument("class_labels", format!("class {bad} is outside [0, {n})")));
            }
            Ok(Some(l.clone()))
        }
    }
}

/// diffusers' `output_type="np"`: `(x / 2 + 0.5).clamp(0, 1)` as float32 NHWC.
pub fn to_images(x: &Tensor) -> Result<Tensor> {
    Ok(((x.to_dtype(DType::F32)? / 2.0)? + 0.5)?.clamp(0f32, 1f32)?.permute((0, 2, 3, 1))?.contiguous()?)
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
}

/// What [`UNet2DPipeline::from_pretrained_with_report`] read.
#[derive(Debug, Clone)]
pub struct PipelineReport {
    pub unet: LoadReport,
    /// The scheduler config file, or `None` for diffusers' default `DDPMScheduler`.
    pub scheduler_config: Option<PathBuf>,
}

impl UNet2DPipeline {
    pub fn from_pretrained(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        Ok(Self::from_pretrained_with_report(path, options)?.0)
    }

    /// [`Self::from_pretrained`], with what was read.
    pub fn from_pretrained_with_report(
        path: impl AsRef<Path>,
        options: &LoadOptions,
    ) -> Result<(Self, PipelineReport)> {
        // resolve_model_dir descends into unet/ for pipeline folders and resolves Hub ids.
        let unet_dir = resolve_model_dir(path.as_ref(), None)?;
        let unet_options = LoadOptions { subfolder: None, ..options.clone() };
        let (unet, unet_report) = UNet2DModel::from_pretrained_with_report(&unet_dir, &unet_options)?;
        let scheduler_config = scheduler_config_for(&unet_dir);
        let scheduler = match &scheduler_config {
            Some(file) => Scheduler::from_pretrained(file)?,
            None => default_scheduler()?,
        };
        let path = pipeline_root(&unet_dir).unwrap_or(unet_dir);
        let report = PipelineReport { unet: unet_report, scheduler_config };
        Ok((Self { unet: std::sync::Arc::new(unet), scheduler, path }, report))
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
