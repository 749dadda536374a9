//! `unet2d sample`: the raw flags become a validated [`Plan`] (everything checked before the first
//! denoising step: arguments, device, output folder, classes, pipeline, scheduler, schedule), then
//! `candle_unet2d::pipeline::sample` runs the pipeline's loop with a seeded `Generator` and the
//! images are written.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use candle_unet2d::device::parse_device;
use candle_unet2d::pipeline::{sample, to_images_from, PipelineKind, SampleOptions};
use candle_unet2d::rng::Generator;
use candle_unet2d::schedulers::{Args, Scheduler, TimestepsSpec};
use candle_unet2d::LoadOptions;

use super::cli::{usage_error, SampleArgs};
use super::images::{check_channels, Images};
use super::model::{self, Loaded};
use super::output::{file_name, Destination};
use super::progress::Progress;
use super::{interrupt, pipeline_choice};

/// Where `--out` writes when neither `--out` nor `--out-dir` is given.
const DEFAULT_OUT: &str = "samples.png";
/// Default batch of an unconditional model.
const DEFAULT_BATCH: usize = 8;
/// Largest default batch of a class-conditional model (one image per class up to this many).
const MAX_DEFAULT_CLASS_BATCH: usize = 16;

/// How the schedule is laid out.
enum Schedule {
    Steps(usize),
    /// `--timesteps`.
    Timesteps(Vec<f64>),
}

/// A validated `unet2d sample` invocation.
struct Plan {
    model: Loaded,
    pipeline: PipelineKind,
    scheduler: Scheduler,
    schedule: Schedule,
    /// Steps of the loop (what the progress bar counts).
    loop_steps: usize,
    batch: usize,
    labels: Option<Vec<i64>>,
    step_args: Args,
    seed: u64,
    destination: Destination,
}

pub fn run(args: SampleArgs) -> anyhow::Result<()> {
    interrupt::install();
    let plan = Plan::from_args(args)?;
    interrupt::bail_if_requested()?;
    let started = Instant::now();
    let images = plan.sample()?;
    let elapsed = started.elapsed();
    let labels = plan.labels.as_deref();
    let written = plan.destination.write(&images, |i| file_name("sample", i, plan.batch, labels))?;
    println!("{written}, {}", plan.timing(elapsed));
    Ok(())
}

impl Plan {
    /// Checks the flags against each other, the device, the output and the model, in that order,
    /// so that nothing fails after sampling has started.
    fn from_args(args: SampleArgs) -> anyhow::Result<Self> {
        if let (Some(labels), Some(batch)) = (&args.class, args.batch) {
            if labels.len() != batch {
                return Err(usage_error(format!(
                    "--batch {batch} disagrees with the {} --class labels (the labels set the batch)",
                    labels.len()
                ))
                .into());
            }
        }
        let SampleArgs {
            model: model_args,
            scheduler,
            sigmas,
            pipeline,
            steps,
            timesteps,
            correct_steps,
            snr,
            batch,
            class,
            seed,
            eta,
            step_args: extra_step_args,
            compute,
            output,
        } = args;
        let device =
            parse_device(&compute.device).with_context(|| format!("cannot use --device {}", compute.device))?;
        let destination = Destination::from_args(output, DEFAULT_OUT)?;
        let options = LoadOptions { device, dtype: compute.dtype.dtype(), ..LoadOptions::default() };
        let step_args = step_args(eta, &extra_step_args);
        let flags = pipeline_choice::Flags { pipeline, scheduler, sigmas, correct_steps, snr };

        let model = model::load(&model_args, &options)?;
        let config = model.unet.config();
        check_channels(config.in_channels).with_context(|| format!("cannot sample {}", model.name))?;
        if config.sample_size.is_none() {
            bail!("cannot sample {}: its config has no sample_size, so the image size is unknown", model.name);
        }
        let (batch, labels) = batch_and_labels(&model, class, batch)?;
        let (pipeline, scheduler) = pipeline_choice::choose(&model, &flags)?;
        let schedule = match timesteps {
            Some(t) => Schedule::Timesteps(t),
            None => Schedule::Steps(steps.unwrap_or_else(|| default_steps(pipeline, &scheduler))),
        };
        // set_timesteps refuses schedules the scheduler cannot take; find out now, not later.
        let mut probe = scheduler.clone();
        probe.set_timesteps_with(schedule.spec(), &Args::new()).with_context(|| {
            format!("cannot run {} for {}", model::scheduler_label(&scheduler), schedule.describe())
        })?;
        let loop_steps = probe.timesteps().len();
        scheduler
            .check_step_args(&step_args)
            .with_context(|| format!("cannot pass --eta/--step-arg to {}", model::scheduler_label(&scheduler)))?;
        Ok(Self { model, pipeline, scheduler, schedule, loop_steps, batch, labels, step_args, seed, destination })
    }

    /// Runs the pipeline's loop with a progress bar on a terminal; Ctrl-C stops it.
    fn sample(&self) -> anyhow::Result<Images> {
        let (num_inference_steps, timesteps) = match &self.schedule {
            Schedule::Steps(n) => (*n, None),
            Schedule::Timesteps(t) => (t.len(), Some(t.clone())),
        };
        let options = SampleOptions {
            batch_size: self.batch,
            num_inference_steps,
            timesteps,
            class_labels: self.labels.clone(),
            step_args: self.step_args.clone(),
            ..SampleOptions::default()
        };
        let mut scheduler = self.scheduler.clone();
        let mut generator = Generator::from_seed(self.seed);
        let progress = Progress::new(self.loop_steps, &model::scheduler_label(&self.scheduler));
        let result = sample(&self.model.unet, &mut scheduler, &options, &mut generator, |end| progress.on_step(end));
        drop(progress);
        let x = interrupt::check(result, || format!("sampling {} failed", self.model.name))?;
        let images = to_images_from(&x, scheduler.kind().sampling_loop())?;
        Images::from_images(&images)
    }

    fn timing(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        format!(
            "{} {} steps ({}), seed {}, in {secs:.1} s ({:.1} it/s)",
            self.loop_steps,
            model::scheduler_label(&self.scheduler),
            self.pipeline,
            self.seed,
            self.loop_steps as f64 / secs.max(1e-9)
        )
    }
}

impl Schedule {
    fn spec(&self) -> TimestepsSpec<'_> {
        match self {
            Schedule::Steps(n) => TimestepsSpec::Count(*n),
            Schedule::Timesteps(t) => TimestepsSpec::Timesteps(t),
        }
    }

    /// The flag as typed, for messages.
    fn describe(&self) -> String {
        match self {
            Schedule::Steps(n) => format!("--steps {n}"),
            Schedule::Timesteps(t) => {
                format!("--timesteps {}", t.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","))
            }
        }
    }
}

/// `--eta` and every `--step-arg`, by name.
fn step_args(eta: Option<f64>, extra: &[(String, serde_json::Value)]) -> Args {
    let mut args = Args::new();
    if let Some(eta) = eta {
        args.insert("eta", eta);
    }
    for (name, value) in extra {
        args.insert(name, value.clone());
    }
    args
}

/// Steps when `--steps` is not given: the pipeline's default (DDPMPipeline's 1000, …), or the
/// training steps when the schedule cannot hold that many (a DDPM trained on fewer than 1000).
fn default_steps(pipeline: PipelineKind, scheduler: &Scheduler) -> usize {
    let steps = pipeline.default_steps(scheduler);
    let train = scheduler.num_train_timesteps().max(1);
    if steps > train && scheduler.clone().set_timesteps(steps).is_err() {
        return train;
    }
    steps
}

/// The batch size and the class labels: `--class` as given (checked against the model), or for a
/// class-conditional model 0, 1, 2, … cycling over its classes.
fn batch_and_labels(
    model: &Loaded,
    class: Option<Vec<i64>>,
    batch: Option<usize>,
) -> anyhow::Result<(usize, Option<Vec<i64>>)> {
    let config = model.unet.config();
    let classes = model::class_count(&model.unet);
    // Before anything of the batch's size is allocated (the default labels included): a batch too
    // large for memory is refused with what it needs, instead of aborting.
    let (h, w) = config.sample_size.map(|s| s.height_width()).unwrap_or((0, 0));
    let fits = |batch: usize| {
        candle_unet2d::pipeline::check_memory(&model.unet, batch, h, w)
            .with_context(|| format!("cannot sample a batch of {batch}"))
    };
    match (class, classes) {
        (Some(_), None) => bail!("--class was given, but {} is not class-conditional", model.name),
        (Some(labels), Some(n)) => {
            model::check_labels(&labels, n, &model.name)?;
            fits(labels.len())?;
            Ok((labels.len(), Some(labels)))
        }
        (None, Some(n)) => {
            let batch = batch.unwrap_or(n.min(MAX_DEFAULT_CLASS_BATCH));
            fits(batch)?;
            Ok((batch, Some((0..batch).map(|i| (i % n) as i64).collect())))
        }
        (None, None) => {
            let batch = batch.unwrap_or(DEFAULT_BATCH);
            fits(batch)?;
            Ok((batch, None))
        }
    }
}
