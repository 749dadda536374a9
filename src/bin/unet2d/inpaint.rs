//! `unet2d inpaint`: RePaint (diffusers' `RePaintPipeline`) on the model's own training schedule
//! (`RePaintScheduler.from_config(scheduler.config)`), with class labels for class-conditional
//! models (which diffusers' pipeline cannot pass).
//!
//! The batch: each of `--image`, `--mask` and `--class` is given once (shared by every image) or
//! once per image; the batch is the largest count. So one image with `--class 3,5,8` is inpainted
//! three times, once per class, and ten images with ten labels in one call draw from one generator
//! as diffusers' batched call does.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use candle_unet2d::device::parse_device;
use candle_unet2d::pipeline::{check_memory, sample, to_images_from, Inpaint, SampleOptions};
use candle_unet2d::rng::Generator;
use candle_unet2d::schedulers::{Args, SamplingLoop, Scheduler, SchedulerKind, TimestepsSpec};
use candle_unet2d::LoadOptions;

use super::cli::{usage_error, InpaintArgs};
use super::images::{check_channels, Images};
use super::input_png::{read_image, read_mask, InputImage, InputMask};
use super::interrupt;
use super::model::{self, Loaded};
use super::output::{file_name, Destination};
use super::progress::Progress;

/// Where `--out` writes when neither `--out` nor `--out-dir` is given.
const DEFAULT_OUT: &str = "inpainted.png";

/// A validated `unet2d inpaint` invocation.
struct Plan {
    model: Loaded,
    scheduler: Scheduler,
    options: SampleOptions,
    /// Entries of the schedule, the jumps back up included (what the progress bar counts).
    loop_steps: usize,
    batch: usize,
    labels: Option<Vec<i64>>,
    seed: u64,
    destination: Destination,
}

pub fn run(args: InpaintArgs) -> anyhow::Result<()> {
    interrupt::install();
    let plan = Plan::from_args(args)?;
    interrupt::bail_if_requested()?;
    let started = Instant::now();
    let images = plan.inpaint()?;
    let elapsed = started.elapsed();
    let labels = plan.labels.as_deref();
    let written = plan.destination.write(&images, |i| file_name("inpainted", i, plan.batch, labels))?;
    println!("{written}, {}", plan.timing(elapsed));
    Ok(())
}

impl Plan {
    /// Checks the flags, the device, the output, the model, the input files and the schedule, in
    /// that order, so that nothing fails once inpainting has started.
    fn from_args(args: InpaintArgs) -> anyhow::Result<Self> {
        let batch = batch_size(&args)?;
        let device = parse_device(&args.compute.device)
            .with_context(|| format!("cannot use --device {}", args.compute.device))?;
        let destination = Destination::from_args(args.output, DEFAULT_OUT)?;
        let options =
            LoadOptions { device: device.clone(), dtype: args.compute.dtype.dtype(), ..LoadOptions::default() };
        let model = model::load(&args.model, &options)?;
        let channels = model.unet.config().in_channels;
        check_channels(channels).with_context(|| format!("cannot inpaint with {}", model.name))?;
        let labels = labels(&model, args.class, batch)?;

        let images = args.image.iter().map(|p| read_image(p, channels)).collect::<anyhow::Result<Vec<_>>>()?;
        let masks = args.mask.iter().map(|p| read_mask(p)).collect::<anyhow::Result<Vec<_>>>()?;
        let (height, width) = check_sizes(&model, (&args.image, &images), (&args.mask, &masks))?;
        check_memory(&model.unet, batch, height, width)
            .with_context(|| format!("cannot inpaint a batch of {batch}"))?;
        let inpaint = inpaint_tensors(&images, &masks, batch, channels, height, width, &device)?;

        let scheduler = repaint_scheduler(&model)?;
        let timestep_args = Args::new().with("jump_length", args.jump_length).with("jump_n_sample", args.jump_n_sample);
        let mut probe = scheduler.clone();
        probe.set_timesteps_with(TimestepsSpec::Count(args.steps), &timestep_args).with_context(|| {
            format!(
                "cannot run RePaintScheduler for --steps {} --jump-length {} --jump-n-sample {}",
                args.steps, args.jump_length, args.jump_n_sample
            )
        })?;
        let loop_steps = probe.timesteps().len();
        // RePaintPipeline sets the scheduler's η on every call; here it is the step's argument.
        let step_args = Args::new().with("eta", args.eta);
        scheduler.check_step_args(&step_args).context("cannot pass --eta to RePaintScheduler")?;
        let options = SampleOptions {
            batch_size: 0,
            num_inference_steps: args.steps,
            class_labels: labels.clone(),
            step_args,
            timestep_args,
            inpaint: Some(inpaint),
            ..SampleOptions::default()
        };
        Ok(Self { model, scheduler, options, loop_steps, batch, labels, seed: args.seed, destination })
    }

    /// Runs the RePaint loop with a progress bar on a terminal; Ctrl-C stops it.
    fn inpaint(&self) -> anyhow::Result<Images> {
        let mut scheduler = self.scheduler.clone();
        let mut generator = Generator::from_seed(self.seed);
        let progress = Progress::new(self.loop_steps, "RePaintScheduler");
        let result =
            sample(&self.model.unet, &mut scheduler, &self.options, &mut generator, |end| progress.on_step(end));
        drop(progress);
        let x = interrupt::check(result, || format!("inpainting with {} failed", self.model.name))?;
        Images::from_images(&to_images_from(&x, SamplingLoop::Inpainting)?)
    }

    fn timing(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        format!(
            "{} RePaintScheduler steps ({} with the jumps back), seed {}, in {secs:.1} s ({:.1} it/s)",
            self.options.num_inference_steps,
            self.loop_steps,
            self.seed,
            self.loop_steps as f64 / secs.max(1e-9)
        )
    }
}

/// The batch: the largest of the `--image`, `--mask` and `--class` counts, each of which must be 1
/// or that.
fn batch_size(args: &InpaintArgs) -> anyhow::Result<usize> {
    let classes = args.class.as_ref().map_or(0, Vec::len);
    let batch = args.image.len().max(args.mask.len()).max(classes).max(1);
    for (flag, count) in [("--image", args.image.len()), ("--mask", args.mask.len()), ("--class", classes)] {
        if count > 1 && count != batch {
            return Err(usage_error(format!(
                "{count} {flag} values for a batch of {batch}: give {flag} once for every image, or once per image"
            ))
            .into());
        }
    }
    Ok(batch)
}

/// The class labels, one per image: required for a class-conditional model, refused otherwise.
fn labels(model: &Loaded, class: Option<Vec<i64>>, batch: usize) -> anyhow::Result<Option<Vec<i64>>> {
    match (class, model::class_count(&model.unet)) {
        (Some(_), None) => bail!("--class was given, but {} is not class-conditional", model.name),
        (None, Some(n)) => bail!(
            "{} is class-conditional ({n} classes): give --class, one label for every image or one per image",
            model.name
        ),
        (None, None) => Ok(None),
        (Some(labels), Some(n)) => {
            model::check_labels(&labels, n, &model.name)?;
            Ok(Some(if labels.len() == 1 { vec![labels[0]; batch] } else { labels }))
        }
    }
}

/// The `(height, width)` of the batch: every image of one size the UNet takes (its sample_size, or
/// a multiple of its down-sampling factor), every mask of the images' size.
fn check_sizes(
    model: &Loaded,
    (image_paths, images): (&[PathBuf], &[InputImage]),
    (mask_paths, masks): (&[PathBuf], &[InputMask]),
) -> anyhow::Result<(usize, usize)> {
    let first = &images[0];
    let (w, h) = (first.width, first.height);
    for (path, image) in image_paths.iter().zip(images).skip(1) {
        if (image.width, image.height) != (w, h) {
            bail!(
                "--image {} is {}x{}, but --image {} is {w}x{h}: the images of a batch must have one size",
                path.display(),
                image.width,
                image.height,
                image_paths[0].display()
            );
        }
    }
    let multiple = model.unet.size_multiple();
    let native = model.unet.config().sample_size.map(|s| s.height_width());
    if (h, w) != native.unwrap_or((h, w)) && (h % multiple != 0 || w % multiple != 0) {
        let native = native.map(|(nh, nw)| format!("{nw}x{nh} (its sample_size) or ")).unwrap_or_default();
        bail!(
            "--image {} is {w}x{h}; {} takes {native}sizes that are multiples of {multiple}",
            image_paths[0].display(),
            model.name
        );
    }
    for (i, (path, mask)) in mask_paths.iter().zip(masks).enumerate() {
        let image = if image_paths.len() == 1 { 0 } else { i };
        if (mask.width, mask.height) != (w, h) {
            bail!(
                "--mask {} is {}x{}, but --image {} is {w}x{h}: the mask must have the image's size",
                path.display(),
                mask.width,
                mask.height,
                image_paths[image].display()
            );
        }
    }
    Ok((h, w))
}

/// The image batch `[B, C, H, W]` (one image repeated when it is shared) and the masks, `[1, 1, H, W]`
/// for one shared mask or `[B, 1, H, W]`.
fn inpaint_tensors(
    images: &[InputImage],
    masks: &[InputMask],
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    device: &Device,
) -> anyhow::Result<Inpaint> {
    let stack = |planes: Vec<&[f32]>, c: usize| -> anyhow::Result<Tensor> {
        let n = planes.len();
        let data: Vec<f32> = planes.concat();
        Ok(Tensor::from_vec(data, (n, c, height, width), device)?)
    };
    let image_of = |i: usize| images[if images.len() == 1 { 0 } else { i }].data.as_slice();
    let image = stack((0..batch).map(image_of).collect(), channels)?;
    let mask = match masks {
        [one] => stack(vec![one.data.as_slice()], 1)?,
        many => stack(many.iter().map(|m| m.data.as_slice()).collect(), 1)?,
    };
    Ok(Inpaint { image, mask })
}

/// `RePaintScheduler.from_config(model.scheduler.config)`: the model's training schedule.
fn repaint_scheduler(model: &Loaded) -> anyhow::Result<Scheduler> {
    let kind = SchedulerKind::from_class_name("RePaintScheduler")?;
    Scheduler::from_json_as(kind, &model.scheduler.config_json()).with_context(|| {
        format!("cannot make a RePaintScheduler from {}'s {} config", model.name, model.scheduler.kind().class_name())
    })
}
