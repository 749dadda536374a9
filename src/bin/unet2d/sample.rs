//! `unet2d sample`: the raw flags become a validated [`Plan`] (everything checked before the first
//! denoising step: arguments, device, output folder, classes, scheduler, step count), then
//! `candle_unet2d::pipeline::sample` runs with a seeded `Generator` and the images are written.

use std::fs::{self, OpenOptions};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use candle_unet2d::device::parse_device;
use candle_unet2d::pipeline::{sample, SampleOptions, StepEnd};
use candle_unet2d::rng::Generator;
use candle_unet2d::schedulers::{Args, Scheduler, SchedulerKind};
use candle_unet2d::LoadOptions;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::cli::{usage_error, SampleArgs, SigmaChoice};
use crate::images::{check_channels, default_grid_scale, grid_columns, Images};
use crate::model::{self, Loaded};

/// Where `--out` writes when neither `--out` nor `--out-dir` is given.
const DEFAULT_OUT: &str = "samples.png";
/// Default batch of an unconditional model.
const DEFAULT_BATCH: usize = 8;
/// Largest default batch of a class-conditional model (one image per class up to this many).
const MAX_DEFAULT_CLASS_BATCH: usize = 16;

/// What to write.
enum Output {
    /// One PNG grid.
    Grid(PathBuf),
    /// One PNG per image in this folder.
    Dir(PathBuf),
}

/// A validated `unet2d sample` invocation.
struct Plan {
    model: Loaded,
    scheduler: Scheduler,
    steps: usize,
    batch: usize,
    labels: Option<Vec<i64>>,
    step_args: Args,
    seed: u64,
    output: Output,
    /// `None`: the default for the output kind.
    scale: Option<usize>,
}

pub fn run(args: SampleArgs) -> anyhow::Result<()> {
    let plan = Plan::from_args(args)?;
    let started = Instant::now();
    let images = plan.sample()?;
    let elapsed = started.elapsed();
    let written = plan.write(&images)?;
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
        let device = parse_device(&args.device).with_context(|| format!("cannot use --device {}", args.device))?;
        let output = match (args.out, args.out_dir) {
            (_, Some(dir)) => Output::Dir(dir),
            (Some(file), None) => Output::Grid(file),
            (None, None) => Output::Grid(PathBuf::from(DEFAULT_OUT)),
        };
        output.check_writable()?;

        let options = LoadOptions { device, dtype: args.dtype.dtype(), ..LoadOptions::default() };
        let model = model::load(args.model.model.as_deref(), &options)?;
        let config = model.unet.config();
        check_channels(config.in_channels).with_context(|| format!("cannot sample {}", model.name))?;
        if config.sample_size.is_none() {
            bail!("cannot sample {}: its config has no sample_size, so the image size is unknown", model.name);
        }

        let (batch, labels) = batch_and_labels(&model, args.class, args.batch)?;
        let scheduler = choose_scheduler(&model.scheduler, args.scheduler.as_deref(), args.sigmas)?;
        if !scheduler.kind().runs_in_standard_loop() {
            bail!(
                "--scheduler {}: {} needs its own sampling loop (predictor-corrector or inpainting), which `sample` \
                 does not run; choose another scheduler",
                scheduler.kind().short_name(),
                scheduler.kind().class_name()
            );
        }
        let steps = args.steps.unwrap_or_else(|| default_steps(&scheduler));
        // set_timesteps refuses step counts the schedule cannot take; find out now, not later.
        scheduler
            .clone()
            .set_timesteps(steps)
            .with_context(|| format!("cannot run {} for --steps {steps}", model::scheduler_label(&scheduler)))?;
        let mut step_args = Args::new();
        if let Some(eta) = args.eta {
            step_args.insert("eta", eta);
        }
        for (name, value) in &args.step_args {
            step_args.insert(name, value.clone());
        }
        scheduler
            .check_step_args(&step_args)
            .with_context(|| format!("cannot pass --eta/--step-arg to {}", model::scheduler_label(&scheduler)))?;
        Ok(Self {
            model,
            scheduler,
            steps,
            batch,
            labels,
            step_args,
            seed: args.seed,
            output,
            scale: args.scale.map(|s| s as usize),
        })
    }

    /// Runs the sampler with a progress bar on a terminal.
    fn sample(&self) -> anyhow::Result<Images> {
        let options = SampleOptions {
            batch_size: self.batch,
            num_inference_steps: self.steps,
            class_labels: self.labels.clone(),
            step_args: self.step_args.clone(),
            ..SampleOptions::default()
        };
        let mut scheduler = self.scheduler.clone();
        let mut generator = Generator::from_seed(self.seed);
        let bar = progress_bar(self.steps, &model::scheduler_label(&self.scheduler));
        let result = sample(&self.model.unet, &mut scheduler, &options, &mut generator, |p: StepEnd<'_>| {
            bar.set_length(p.total as u64);
            bar.set_position(p.step as u64);
            std::ops::ControlFlow::Continue(())
        });
        bar.finish_and_clear();
        let x = result.with_context(|| format!("sampling {} failed", self.model.name))?;
        Images::from_sample(&x)
    }

    /// Writes the images; returns what was written, for the closing line.
    fn write(&self, images: &Images) -> anyhow::Result<String> {
        let (h, w, n) = (images.height, images.width, images.count);
        let plural = if n == 1 { "image" } else { "images" };
        match &self.output {
            Output::Grid(path) => {
                let columns = grid_columns(n);
                let scale = self.scale.unwrap_or_else(|| default_grid_scale(h, w));
                let grid = images.grid(columns, scale)?;
                grid.save_png(path)?;
                Ok(format!(
                    "wrote {}: {n} {plural} of {w}x{h} in a {columns}x{} grid ({}x{} px)",
                    path.display(),
                    n.div_ceil(columns),
                    grid.width,
                    grid.height
                ))
            }
            Output::Dir(dir) => {
                let scale = self.scale.unwrap_or(1);
                let names: Vec<String> = (0..n).map(|i| self.file_name(i)).collect();
                for (i, name) in names.iter().enumerate() {
                    images.single(i, scale)?.save_png(&dir.join(name))?;
                }
                let size = format!("{}x{}", w * scale, h * scale);
                let range = match names.as_slice() {
                    [only] => only.clone(),
                    [first, .., last] => format!("{first} … {last}"),
                    [] => String::new(),
                };
                Ok(format!("wrote {n} {plural} of {size} to {} ({range})", dir.display()))
            }
        }
    }

    /// `sample_007.png`, or `sample_007_class3.png` for a class-conditional model: zero-padded so
    /// that sorting by name gives the batch order.
    fn file_name(&self, index: usize) -> String {
        let digits = (self.batch.saturating_sub(1)).to_string().len().max(3);
        match &self.labels {
            Some(labels) => format!("sample_{index:0digits$}_class{}.png", labels[index]),
            None => format!("sample_{index:0digits$}.png"),
        }
    }

    fn timing(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        format!(
            "{} {} steps, seed {}, in {secs:.1} s ({:.1} it/s)",
            self.steps,
            model::scheduler_label(&self.scheduler),
            self.seed,
            self.steps as f64 / secs.max(1e-9)
        )
    }
}

impl Output {
    /// Fails unless the output can be written, without leaving anything behind (except a newly
    /// created `--out-dir` folder).
    fn check_writable(&self) -> anyhow::Result<()> {
        match self {
            Output::Grid(file) => {
                let context = || format!("cannot write --out {}", file.display());
                if file.is_dir() {
                    bail!("cannot write --out {}: it is a folder", file.display());
                }
                let parent = match file.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                if !parent.is_dir() {
                    let what = if parent.exists() { "is not a folder" } else { "does not exist" };
                    bail!("cannot write --out {}: {} {what}", file.display(), parent.display());
                }
                if file.exists() {
                    // Opening for append checks the permission without truncating the file.
                    OpenOptions::new().append(true).open(file).with_context(context)?;
                } else {
                    OpenOptions::new().write(true).create_new(true).open(file).with_context(context)?;
                    fs::remove_file(file).with_context(context)?;
                }
            }
            Output::Dir(dir) => {
                let context = || format!("cannot write --out-dir {}", dir.display());
                fs::create_dir_all(dir).with_context(context)?;
                let probe = dir.join(format!(".unet2d-write-check-{}", std::process::id()));
                OpenOptions::new().write(true).create_new(true).open(&probe).with_context(context)?;
                fs::remove_file(&probe).with_context(context)?;
            }
        }
        Ok(())
    }
}

/// The batch size and the class labels: `--class` as given (checked against the model), or for a
/// class-conditional model 0, 1, 2, … cycling over its classes.
fn batch_and_labels(
    model: &Loaded,
    class: Option<Vec<i64>>,
    batch: Option<usize>,
) -> anyhow::Result<(usize, Option<Vec<i64>>)> {
    let config = model.unet.config();
    let classes = match (config.num_class_embeds, &config.class_embed_type) {
        (Some(n), None) => Some(n),
        _ => None,
    };
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
            if let Some(bad) = labels.iter().find(|&&c| c < 0 || c >= n as i64) {
                bail!("--class {bad} is out of range: {} has {n} classes, 0 to {}", model.name, n - 1);
            }
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

/// The model's own scheduler, or its config converted to the `--scheduler` choice as diffusers'
/// `from_config` converts it, with the `--sigmas` schedule switched on.
fn choose_scheduler(own: &Scheduler, choice: Option<&str>, sigmas: Option<SigmaChoice>) -> anyhow::Result<Scheduler> {
    let kind = match choice {
        Some(name) => SchedulerKind::from_short_name(name)?,
        None => own.kind(),
    };
    let mut config = own.config_json();
    if let Some(sigmas) = sigmas {
        // What the target calls its σ schedule: the keys of its default config say.
        let defaults = kind.build(&serde_json::json!({}))?.config_json();
        let flag = format!("use_{}_sigmas", sigmas.name());
        let map = config.as_object_mut().context("the scheduler config is not an object")?;
        if defaults.get(&flag).is_some() {
            for other in ["karras", "exponential", "beta"] {
                map.insert(format!("use_{other}_sigmas"), false.into());
            }
            map.insert(flag, true.into());
        } else if defaults.get("sigma_schedule").is_some() && sigmas != SigmaChoice::Beta {
            map.insert("sigma_schedule".into(), sigmas.name().into());
        } else {
            bail!("--sigmas {}: {} has no choice of σ schedule", sigmas.name(), kind.class_name());
        }
    }
    Scheduler::from_json_as(kind, &config).with_context(|| {
        format!("cannot make a {} from the model's {} config", kind.class_name(), own.kind().class_name())
    })
}

/// Steps when `--steps` is not given: the scheduler's usual count (DDPMPipeline's 1000 for DDPM),
/// at most the training steps.
fn default_steps(scheduler: &Scheduler) -> usize {
    scheduler.kind().default_steps().min(scheduler.num_train_timesteps()).max(1)
}

/// A bar on stderr (step, it/s, ETA) when stderr is a terminal; hidden otherwise.
fn progress_bar(steps: usize, label: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps, {its}, ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("its", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.1} it/s", state.per_sec());
        })
        .progress_chars("=> ");
    let bar = ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stderr());
    bar.set_style(style);
    bar.set_prefix(label.to_string());
    bar
}
