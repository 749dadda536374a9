//! One entry to every sampling loop: [`sample`], [`sample_shared`] and [`sample_per_image`] check a
//! request once (batch, class labels, size, memory, generators, the inpainting inputs), draw the
//! initial noise as diffusers' pipelines do, lay out the schedule, and hand the run to the loop the
//! scheduler needs ([`SamplingLoop`]): the standard denoising loop, ScoreSdeVe's
//! predictor-corrector, or RePaint's inpainting with jumps. After every step a callback sees (and may
//! replace) the sample and may stop the run: a service's cancellation, Ctrl-C, or diffusers'
//! `callback_on_step_end`.

use std::ops::ControlFlow;
use std::sync::{Mutex, PoisonError};

use candle_core::{DType, Device, Tensor};

use super::{inpainting, predictor_corrector, standard};
use crate::error::{Error, Result};
use crate::memory_budget;
use crate::rng::Generator;
use crate::schedulers::noise::{randn, randn_per_image};
use crate::schedulers::{Args, Noise, SamplingLoop, Scheduler, TimestepsSpec};
use crate::unet::UNet2DModel;

/// What to sample.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    /// Number of images. With `class_labels`, it must equal their count (or be 0 to take it from them);
    /// when inpainting, the image batch gives it (0, or the same count).
    pub batch_size: usize,
    /// Denoising steps (the scheduler's `set_timesteps`); ignored when `timesteps` is given.
    pub num_inference_steps: usize,
    /// Explicit timesteps, descending (diffusers' `timesteps=[…]`: consistency models' `[22, 0]`), for
    /// schedulers that take them.
    pub timesteps: Option<Vec<f64>>,
    /// One class id per image, for class-conditional models.
    pub class_labels: Option<Vec<i64>>,
    /// The scheduler's own `step` arguments by name (DDIM's `eta`, Euler's `s_churn`, RePaint's `eta`,
    /// …); an argument the scheduler does not take is an error.
    pub step_args: Args,
    /// The scheduler's own `set_timesteps` arguments by name (RePaint's `jump_length` and
    /// `jump_n_sample`, ScoreSdeVe's `sampling_eps`, …).
    pub timestep_args: Args,
    /// `(height, width)`; `None` takes the model's `sample_size` (or the inpainted image's size).
    pub size: Option<(usize, usize)>,
    /// Start from these latents instead of drawing the initial noise.
    pub latents: Option<Tensor>,
    /// The image to inpaint and its mask, for RePaint.
    pub inpaint: Option<Inpaint>,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            batch_size: 1,
            num_inference_steps: 50,
            timesteps: None,
            class_labels: None,
            step_args: Args::new(),
            timestep_args: Args::new(),
            size: None,
            latents: None,
            inpaint: None,
        }
    }
}

/// RePaint's inputs: the known image `[B, C, H, W]` in the model's range (`[-1, 1]`), and a mask
/// broadcastable to it (`[B, 1, H, W]`, `[1, 1, H, W]`, `[H, W]`, …) with 1 where a pixel is kept and 0
/// where it is inpainted.
#[derive(Debug, Clone)]
pub struct Inpaint {
    pub image: Tensor,
    pub mask: Tensor,
}

/// The end of one step, as the step callback sees it.
#[derive(Debug)]
pub struct StepEnd<'a> {
    /// Steps done, from 1.
    pub step: usize,
    /// Steps in the run (RePaint's count includes its jumps back up).
    pub total: usize,
    /// The timestep just taken (σ for ScoreSdeVe's predictor).
    pub timestep: f64,
    /// The sample after the step; the callback may replace it (diffusers' `callback_on_step_end`
    /// returning new `latents`), with a tensor of the same shape.
    pub sample: &'a mut Tensor,
}

/// A step callback's answer: go on, or stop the run with [`Error::Cancelled`].
pub type Control = ControlFlow<()>;

/// Runs the loop `scheduler` needs and returns the final sample `[B, C, H, W]` in float32: the model's
/// value range, `[-1, 1]` for image models (for ScoreSdeVe, the last predictor mean). `on_step` runs
/// after every step; [`Control::Break`] stops the run with [`Error::Cancelled`].
pub fn sample(
    unet: &UNet2DModel,
    scheduler: &mut Scheduler,
    options: &SampleOptions,
    generator: &mut Generator,
    on_step: impl FnMut(StepEnd<'_>) -> Control,
) -> Result<Tensor> {
    let shared = Mutex::new(std::mem::take(generator));
    let result = sample_shared(unet, scheduler, options, &shared, on_step);
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
    mut on_step: impl FnMut(StepEnd<'_>) -> Control,
) -> Result<Tensor> {
    run(unet, scheduler, options, Randomness::Shared(generator), &mut on_step)
}

/// [`sample`] with one generator per image (diffusers' `generator=[…]`): image `i`'s initial noise
/// and every step's noise come from `generators[i]`, so each image is what a batch of one with that
/// generator gives, bit for bit, whatever it is batched with: the UNet runs with batch-invariant
/// kernel choices ([`crate::kernels::batch_invariant`]). (diffusers' RePaintPipeline draws every
/// step's noise from the first generator of the list; here RePaint is per image too.)
pub fn sample_per_image(
    unet: &UNet2DModel,
    scheduler: &mut Scheduler,
    options: &SampleOptions,
    generators: &mut [Generator],
    mut on_step: impl FnMut(StepEnd<'_>) -> Control,
) -> Result<Tensor> {
    crate::kernels::batch_invariant(|| run(unet, scheduler, options, Randomness::PerImage(generators), &mut on_step))
}

/// Where a run's random numbers come from.
pub(super) enum Randomness<'a> {
    Shared(&'a Mutex<Generator>),
    PerImage(&'a mut [Generator]),
}

impl Randomness<'_> {
    /// Runs `f` with the noise source, holding a shared generator's lock for `f` only.
    pub(super) fn with<T>(&mut self, f: impl FnOnce(Noise<'_>) -> Result<T>) -> Result<T> {
        match self {
            Randomness::Shared(mutex) => {
                let mut g = mutex.lock().unwrap_or_else(PoisonError::into_inner);
                f(Noise::Generator(&mut g))
            }
            Randomness::PerImage(generators) => f(Noise::PerImage(generators)),
        }
    }

    /// Standard-normal noise of `shape`: one draw of the shared generator, or image `i`'s slice from
    /// generator `i`.
    fn randn(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        self.with(|noise| match noise {
            Noise::Generator(g) => randn(g, shape, device),
            Noise::PerImage(gs) => randn_per_image(gs, shape, device),
            _ => Err(Error::argument("generator", "no random source")),
        })
    }
}

/// A checked request, as the loops run it.
pub(super) struct Run<'a, 'r> {
    pub unet: &'a UNet2DModel,
    pub labels: Option<Tensor>,
    pub step_args: &'a Args,
    pub random: Randomness<'r>,
    pub on_step: &'a mut dyn FnMut(StepEnd<'_>) -> Control,
    /// The inpainting inputs on the model's device, in float32, broadcast to the sample's shape.
    pub inpaint: Option<(Tensor, Tensor)>,
}

impl Run<'_, '_> {
    /// The UNet's output for `x` at `timestep`, in float32.
    pub fn model(&self, x: &Tensor, timestep: f64) -> Result<Tensor> {
        Ok(self.unet.forward(x, timestep, self.labels.as_ref())?.to_dtype(DType::F32)?)
    }

    /// Tells the callback that step `step` of `total` (at `timestep`) left `x`, and takes back what
    /// it leaves; an error when it stops the run or replaces the sample by one of another shape.
    pub fn step_end(&mut self, step: usize, total: usize, timestep: f64, x: Tensor) -> Result<Tensor> {
        let shape = x.dims().to_vec();
        let mut sample = x;
        let control = (self.on_step)(StepEnd { step, total, timestep, sample: &mut sample });
        if control.is_break() {
            return Err(Error::Cancelled { step, total });
        }
        if sample.dims() != shape.as_slice() {
            return Err(Error::argument(
                "latents",
                format!("the step callback returned shape {:?}; the sample's is {shape:?}", sample.dims()),
            ));
        }
        Ok(sample.to_dtype(DType::F32)?)
    }
}

fn run(
    unet: &UNet2DModel,
    scheduler: &mut Scheduler,
    options: &SampleOptions,
    mut random: Randomness<'_>,
    on_step: &mut dyn FnMut(StepEnd<'_>) -> Control,
) -> Result<Tensor> {
    let sampling_loop = scheduler.kind().sampling_loop();
    let config = unet.config();
    let device = unet.device().clone();

    // The inpainted image fixes the batch and size; otherwise the options and the model's config do.
    let inpaint_dims = match (&options.inpaint, sampling_loop) {
        (Some(inpaint), SamplingLoop::Inpainting) => Some(inpaint_shape(&inpaint.image, config.in_channels)?),
        (Some(_), _) => {
            return Err(Error::argument(
                "image",
                format!("{} does not inpaint: give an image and mask to RePaintScheduler only", scheduler.kind()),
            ))
        }
        (None, SamplingLoop::Inpainting) => {
            return Err(Error::argument(
                "image",
                format!("{} inpaints: give the image and its mask_image", scheduler.kind()),
            ))
        }
        (None, _) => None,
    };
    let labels = class_labels_for(unet, options)?;
    let requested = match inpaint_dims {
        Some([b, ..]) if options.batch_size != 0 && options.batch_size != b && options.batch_size != 1 => {
            return Err(Error::argument(
                "batch_size",
                format!("{} for an image batch of {b}: the image to inpaint gives the batch", options.batch_size),
            ))
        }
        Some([b, ..]) => b,
        None => options.batch_size,
    };
    let batch = match (&labels, requested) {
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
    if options.timesteps.is_none() && options.num_inference_steps == 0 {
        return Err(Error::argument("num_inference_steps", "must be at least 1"));
    }
    let (height, width) = match (inpaint_dims, options.size) {
        (Some([_, _, h, w]), Some(size)) if size != (h, w) => {
            return Err(Error::argument(
                "size",
                format!("{size:?}, but the image to inpaint is {h}×{w}: leave the size to the image"),
            ))
        }
        (Some([_, _, h, w]), _) => (h, w),
        (None, Some(hw)) => hw,
        (None, None) => config.sample_size.map(|s| s.height_width()).ok_or_else(|| {
            Error::argument("size", "the model's config has no sample_size; give the height and width")
        })?,
    };
    let multiple = unet.size_multiple();
    if height == 0 || width == 0 || height % multiple != 0 || width % multiple != 0 {
        return Err(Error::argument(
            "size",
            format!("{height}×{width}: this UNet needs a height and width that are nonzero multiples of {multiple}"),
        ));
    }
    check_memory(unet, batch, height, width)?;
    let shape = [batch, config.in_channels, height, width];
    let inpaint = match &options.inpaint {
        Some(inpaint) => Some(inpaint_tensors(inpaint, &shape, &device)?),
        None => None,
    };

    // Initial noise: drawn on the CPU from the torch-compatible generator(s), as diffusers'
    // randn_tensor does, before the schedule is laid out.
    let x = match &options.latents {
        Some(latents) => {
            if latents.dims() != shape {
                return Err(Error::argument("latents", format!("must have shape {shape:?}, got {:?}", latents.dims())));
            }
            latents.to_device(&device)?.to_dtype(DType::F32)?
        }
        None => random.randn(&shape, &device)?,
    };
    // The step arguments are checked before the first UNet call, not after it.
    scheduler.check_step_args(&options.step_args)?;
    let spec = match &options.timesteps {
        Some(t) => TimestepsSpec::Timesteps(t),
        None => TimestepsSpec::Count(options.num_inference_steps),
    };
    scheduler.set_timesteps_with(spec, &options.timestep_args)?;
    let x = (x * scheduler.init_noise_sigma())?;
    let labels = match labels {
        Some(l) => Some(Tensor::new(l.as_slice(), &device)?),
        None => None,
    };

    let mut run = Run { unet, labels, step_args: &options.step_args, random, on_step, inpaint };
    match sampling_loop {
        SamplingLoop::Standard => standard::run(&mut run, scheduler, x),
        SamplingLoop::PredictorCorrector => predictor_corrector::run(&mut run, scheduler, x),
        SamplingLoop::Inpainting => inpainting::run(&mut run, scheduler, x),
    }
}

/// The `[B, C, H, W]` of an image to inpaint, checked against the model's channels.
fn inpaint_shape(image: &Tensor, channels: usize) -> Result<[usize; 4]> {
    match *image.dims() {
        [b, c, h, w] if c == channels && b > 0 => Ok([b, c, h, w]),
        [_, c, _, _] if c != channels => Err(Error::argument(
            "image",
            format!("has {c} channel(s); this model takes {channels} (shape [B, {channels}, H, W])"),
        )),
        _ => Err(Error::argument(
            "image",
            format!("must have shape [B, {channels}, H, W] with B ≥ 1, got {:?}", image.dims()),
        )),
    }
}

/// The image and mask in float32 on `device`, broadcast to `shape`, with the mask's values checked
/// (in `[0, 1]`: 1 keeps a pixel) and the image's (finite).
fn inpaint_tensors(inpaint: &Inpaint, shape: &[usize; 4], device: &Device) -> Result<(Tensor, Tensor)> {
    let float = |name: &str, t: &Tensor| -> Result<Tensor> {
        if !t.dtype().is_float() {
            return Err(Error::argument(name, format!("must be a float tensor, got {:?}", t.dtype())));
        }
        Ok(t.to_dtype(DType::F32)?.to_device(device)?)
    };
    let image = float("image", &inpaint.image)?;
    let mask = float("mask_image", &inpaint.mask)?;
    let mask = mask.broadcast_as(shape.as_slice()).map_err(|_| {
        Error::argument(
            "mask_image",
            format!(
                "has shape {:?}, which does not fit the image's {shape:?} (give [B, 1, H, W], [1, 1, H, W] or [H, W] \
                 with the image's height and width)",
                inpaint.mask.dims()
            ),
        )
    })?;
    let (lo, hi) = value_range(&mask)?;
    if !(lo >= 0.0 && hi <= 1.0) {
        return Err(Error::argument(
            "mask_image",
            format!("values must be in [0, 1] (1 keeps a pixel, 0 inpaints it), found [{lo}, {hi}]"),
        ));
    }
    let (lo, hi) = value_range(&image)?;
    if !(lo.is_finite() && hi.is_finite()) {
        return Err(Error::argument("image", "holds NaN or infinite values"));
    }
    Ok((image, mask.contiguous()?))
}

/// The smallest and largest value of a float32 tensor (NaN if it holds one).
fn value_range(t: &Tensor) -> Result<(f32, f32)> {
    let flat = t.flatten_all()?;
    let lo = flat.min(0)?.to_scalar::<f32>()?;
    let hi = flat.max(0)?.to_scalar::<f32>()?;
    let nan = flat.ne(&flat)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? > 0.0;
    Ok(if nan { (f32::NAN, f32::NAN) } else { (lo, hi) })
}

/// Float32 copies of the sample a run holds at once besides the UNet's own: the noise as drawn and as
/// a tensor, the scaled model input, the model output, the step's noise and result, the images
/// (float32 NHWC, bytes, and their host copy), and for inpainting the image and mask.
const SAMPLE_COPIES: u128 = 12;

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
