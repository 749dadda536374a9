//! The command line as typed: clap's derive structs, one `///` doc per flag.
//!
//! Checks that need nothing but the flag's own value (ranges, finite numbers, the `.png`
//! extension) run here as value parsers, so clap reports them as usage errors (exit code 2).
//! Everything that needs the model or the file system runs when the raw flags become validated
//! options ([`super::sample::Plan`], [`super::info`]).

use std::path::PathBuf;

use candle_unet2d::pipeline::PipelineKind;
use candle_unet2d::schedulers::SchedulerKind;
use clap::builder::PossibleValue;
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// Sample images from diffusers' UNet2DModel (DDPM, DDIM, DPM-Solver++, NCSN++, consistency
/// models) on candle, and inpaint images with RePaint.
///
/// With no arguments, `unet2d sample` draws the ten digits 0–9 from the model shipped inside the
/// binary and writes them to samples.png. Ctrl-C stops a run after its current step and writes
/// nothing (exit code 130).
#[derive(Debug, Parser)]
#[command(name = "unet2d", version, propagate_version = true, arg_required_else_help = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Draw images from a model and write them as PNG (one grid, or one file per image).
    Sample(Box<SampleArgs>),
    /// Fill in the masked-out part of images with RePaint (diffusers' RePaintPipeline), keeping the
    /// rest, and write the results as PNG.
    Inpaint(Box<InpaintArgs>),
    /// Describe a model: its config in brief, size, compute cost, weights and scheduler.
    Info(InfoArgs),
    /// Serve a model over HTTP: `POST /v1/images` samples images (concurrent requests with the same
    /// scheduler and steps share one batched run), `GET /healthz`, `GET /metrics` (Prometheus).
    /// Prints `listening on http://ADDRESS` once ready; SIGTERM or Ctrl-C stops it (exit 0).
    Serve(Box<ServeArgs>),
}

/// Which model to load; shared by every subcommand.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// The model: `digits16` (the 16×16 digits model shipped inside the binary; the default), a
    /// diffusers pipeline folder (model_index.json, unet/, scheduler/), a bare UNet folder
    /// (config.json and weights; sampled with diffusers' default DDPM scheduler), or a Hub id
    /// (`org/name`), downloaded into the Hugging Face cache unless already there (HF_ENDPOINT,
    /// HF_HUB_CACHE, HF_TOKEN and HF_HUB_OFFLINE=1 apply, as for huggingface_hub). Write
    /// `./digits16` for a folder of that name.
    #[arg(long, value_name = "PATH|HUB_ID")]
    pub model: Option<PathBuf>,

    /// The Hub revision of --model: a branch, tag or commit id [default: main].
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
}

/// `unet2d sample`.
#[derive(Debug, Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Noise scheduler, converted from the model's scheduler config as diffusers'
    /// `from_config` does [default: the model's own scheduler].
    #[arg(long, value_name = "NAME", value_parser = scheduler_names())]
    pub scheduler: Option<String>,

    /// The σ schedule of σ-space schedulers (Euler, Heun, LMS, DPM-Solver, UniPC, …): sets the
    /// scheduler's `use_karras_sigmas` / `use_exponential_sigmas` / `use_beta_sigmas` (or EDM's
    /// `sigma_schedule`); an error for schedulers without one.
    #[arg(long, value_enum)]
    pub sigmas: Option<SigmaChoice>,

    /// The sampling pipeline: its loop, its default step count and what it does to the scheduler
    /// [default: the pipeline class the model's model_index.json names; with --scheduler, or for
    /// a folder without model_index.json, the general `unet2d` pipeline (the scheduler's own loop)].
    #[arg(long, value_name = "NAME", value_parser = pipeline_names())]
    pub pipeline: Option<String>,

    /// Denoising steps [default: the pipeline's (1000 for ddpm, 50 for ddim and pndm, 2000 for
    /// score-sde-ve, 1 for consistency, at most the training steps); for the general pipeline the
    /// scheduler's usual count: 50 for ddim and euler, 20 for dpmpp and unipc, …].
    #[arg(long, value_name = "N", value_parser = at_least_one, conflicts_with = "timesteps")]
    pub steps: Option<usize>,

    /// Explicit timesteps, descending and comma-separated (diffusers' `timesteps=[…]`), for the
    /// schedulers that take them, e.g. `--timesteps 22,0` for a consistency model.
    #[arg(long, value_name = "T,...", value_delimiter = ',', value_parser = finite)]
    pub timesteps: Option<Vec<f64>>,

    /// Langevin corrector steps per timestep of ScoreSdeVe's predictor-corrector sampling (its
    /// config's `correct_steps`); an error for other schedulers.
    #[arg(long, value_name = "N")]
    pub correct_steps: Option<usize>,

    /// The corrector's signal-to-noise ratio (ScoreSdeVe's `snr`); an error for other schedulers.
    #[arg(long, value_name = "X", value_parser = non_negative_finite, allow_negative_numbers = true)]
    pub snr: Option<f64>,

    /// Number of images [default: the number of --class labels; for a class-conditional model
    /// without --class, min(classes, 16); else 8].
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub batch: Option<usize>,

    /// Class labels, one per image, comma-separated (e.g. 3,1,4): sets the batch size. For
    /// class-conditional models only; the shipped digits model draws digit k for class k
    /// [default: 0, 1, 2, … cycling over the model's classes].
    #[arg(long, value_name = "ID,...", value_delimiter = ',', allow_negative_numbers = true)]
    pub class: Option<Vec<i64>>,

    /// Seed of the torch-compatible random generator: a seed gives the same images as diffusers
    /// with `generator=torch.Generator().manual_seed(seed)`.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,

    /// η of the schedulers that take it (DDIM: 0 is deterministic, 1 is DDPM-like; RePaint) [default: 0].
    #[arg(long, value_name = "E", value_parser = non_negative_finite, allow_negative_numbers = true)]
    pub eta: Option<f64>,

    /// A scheduler-specific `step` argument, by diffusers' name (e.g. `s_churn=0.5` for Euler);
    /// the value is JSON (a number, true/false, a string). Repeatable.
    #[arg(long = "step-arg", value_name = "NAME=VALUE", value_parser = step_arg)]
    pub step_args: Vec<(String, serde_json::Value)>,

    #[command(flatten)]
    pub compute: ComputeArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

/// Where and in which dtype the model runs; shared by `sample` and `inpaint`.
#[derive(Debug, Args)]
pub struct ComputeArgs {
    /// Where to compute: cpu, cuda or cuda:N (cuda needs a build with `--features cuda`).
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    pub device: String,

    /// The dtype the model computes in (the weights are converted; the sampling loop stays f32).
    #[arg(long, value_enum, default_value_t = DTypeChoice::F32)]
    pub dtype: DTypeChoice,
}

/// Where the images go; shared by `sample` and `inpaint`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Write all images as one PNG grid: one row for up to 10 images, else ⌈√batch⌉ columns
    /// [default: samples.png; inpainted.png for `inpaint`].
    #[arg(long, value_name = "FILE.png", value_parser = png_path, conflicts_with = "out_dir")]
    pub out: Option<PathBuf>,

    /// Write one PNG per image into DIR (created if missing), at the model's resolution, named
    /// so that sorting by name gives the batch order (sample_000_class3.png, inpainted_000.png, …).
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,

    /// Nearest-neighbour upscaling factor of each image [default: for the grid, the smallest
    /// factor that makes a tile at least 64 px; 1 with --out-dir].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub scale: Option<u32>,
}

/// `unet2d inpaint`: RePaint (Lugmayr et al., 2022) with the model's own training schedule.
#[derive(Debug, Args)]
pub struct InpaintArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// The image to inpaint: an 8-bit PNG, grayscale (L) for a 1-channel model, RGB for a
    /// 3-channel one (RGBA and gray+alpha only when fully opaque), of the model's sample_size (or
    /// another size the UNet takes). Repeat it to inpaint several images in one batch.
    #[arg(long, value_name = "FILE.png", required = true)]
    pub image: Vec<PathBuf>,

    /// The mask PNG, of the image's width and height: white (≥ 128 once converted to grayscale)
    /// keeps a pixel, black inpaints it. One mask for every image, or one per --image, in order.
    #[arg(long, value_name = "FILE.png", required = true)]
    pub mask: Vec<PathBuf>,

    /// Class labels, comma-separated, for class-conditional models (required there): one for
    /// every image, or one per image; one image with several labels is inpainted once per label.
    #[arg(long, value_name = "ID,...", value_delimiter = ',', allow_negative_numbers = true)]
    pub class: Option<Vec<i64>>,

    /// Denoising steps of the schedule (RePaintPipeline's default), before the jumps back.
    #[arg(long, value_name = "N", default_value_t = 250, value_parser = at_least_one)]
    pub steps: usize,

    /// Steps between the jumps back up the schedule (RePaint's `jump_length`).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub jump_length: usize,

    /// How often each stretch of `jump_length` steps is run (RePaint's `jump_n_sample`: 1 means
    /// no jumps back).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub jump_n_sample: usize,

    /// RePaint's η: the weight of the noise in each step (0: DDIM-like, 1: DDPM-like).
    #[arg(long, value_name = "E", default_value_t = 0.0, value_parser = non_negative_finite, allow_negative_numbers = true)]
    pub eta: f64,

    /// Seed of the torch-compatible random generator (as in diffusers with
    /// `generator=torch.Generator().manual_seed(seed)`).
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,

    #[command(flatten)]
    pub compute: ComputeArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

/// `unet2d serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Address to listen on (an IP address or host name).
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on; 0 picks a free one (the `listening on` line says which).
    #[arg(long, value_name = "PORT", default_value_t = 8000)]
    pub port: u16,

    /// Most images in one batched sampling run (1 turns batching off).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = at_least_one)]
    pub max_batch: usize,

    /// Most requests waiting; more are answered 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = at_least_one)]
    pub max_queue: usize,

    /// Most images one request may ask for (413 beyond).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = at_least_one)]
    pub max_images: usize,

    /// Most denoising steps one request may ask for (413 beyond).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = at_least_one)]
    pub max_steps: usize,

    /// Largest request body in bytes (413 beyond).
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024, value_parser = at_least_one)]
    pub max_body: usize,

    /// How long a request may take, queue included (504 after it; 0 for no limit), e.g. 60s, 500ms, 2m.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub request_timeout: std::time::Duration,

    /// How long an idle server waits for more requests to batch with the first one.
    #[arg(long, value_name = "DURATION", default_value = "2ms", value_parser = duration)]
    pub batch_wait: std::time::Duration,

    /// On SIGTERM or Ctrl-C, how long queued and running work may go on before it is cancelled.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub shutdown_timeout: std::time::Duration,

    /// Compute threads of the sampling runs [default: one per core].
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub threads: Option<usize>,

    /// Log filter for the request logs on stderr (`info`, `warn`, `debug`, …); RUST_LOG overrides it.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log: String,

    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// `unet2d info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
}

/// `--scheduler`'s values: every registered scheduler's short name, with its summary as help.
fn scheduler_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        SchedulerKind::all()
            .map(|k| PossibleValue::new(k.short_name()).help(format!("{}: {}", k.class_name(), k.summary()))),
    )
}

/// `--pipeline`'s values: every registered pipeline class's short name, with its summary as help.
fn pipeline_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        PipelineKind::all()
            .map(|k| PossibleValue::new(k.short_name()).help(format!("{}: {}", k.class_name(), k.summary()))),
    )
}

/// The σ schedules `--sigmas` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SigmaChoice {
    /// Karras et al. (2022): ρ = 7 spacing.
    Karras,
    /// Log-linear from σ_max to σ_min.
    Exponential,
    /// The beta-distribution spacing of Lee et al. (2024).
    Beta,
}

impl SigmaChoice {
    /// The name in `use_<name>_sigmas` and EDM's `sigma_schedule`.
    pub fn name(self) -> &'static str {
        match self {
            SigmaChoice::Karras => "karras",
            SigmaChoice::Exponential => "exponential",
            SigmaChoice::Beta => "beta",
        }
    }
}

/// `NAME=VALUE` with the value parsed as JSON, or taken as a string when it is not JSON.
fn step_arg(s: &str) -> Result<(String, serde_json::Value), String> {
    let (name, value) = s.split_once('=').ok_or("expected NAME=VALUE, e.g. s_churn=0.5")?;
    if name.is_empty() {
        return Err("the argument name is empty (expected NAME=VALUE)".into());
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
    Ok((name.to_owned(), value))
}

/// The dtypes `--dtype` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DTypeChoice {
    /// float32.
    F32,
    /// float16.
    F16,
    /// bfloat16.
    Bf16,
}

impl DTypeChoice {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            DTypeChoice::F32 => candle_core::DType::F32,
            DTypeChoice::F16 => candle_core::DType::F16,
            DTypeChoice::Bf16 => candle_core::DType::BF16,
        }
    }
}

/// A usage error found after parsing (flags that disagree with each other), reported as clap
/// reports its own: `error: …` and exit code 2.
pub fn usage_error(message: impl std::fmt::Display) -> clap::Error {
    Cli::command().error(ErrorKind::ArgumentConflict, message)
}

/// Prints a clap error (or the help/version it carries) and returns its exit code. Errors are
/// printed as one line: `error: …` followed by clap's hints, without the usage block.
pub fn report_clap_error(err: &clap::Error) -> u8 {
    let code = u8::try_from(err.exit_code()).unwrap_or(2);
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
        }
        _ => eprintln!("{}", one_line(&err.render().to_string())),
    }
    code
}

/// clap's multi-line error as one line: the message and its hints, without `Usage:` and the
/// `For more information` trailer.
fn one_line(rendered: &str) -> String {
    let mut out = String::new();
    for line in rendered.lines().map(str::trim) {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str(if line.starts_with('[') { " " } else { "; " });
        }
        out.push_str(line);
    }
    if !out.starts_with("error:") {
        out.insert_str(0, "error: ");
    }
    out
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number ({e})")),
    }
}

/// A duration: a number with a unit (`ms`, `s`, `m`, `h`), or seconds without one.
fn duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration such as 60s, 500ms or 2m"))?;
    let scale = match unit.trim() {
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit {other:?}: use ms, s, m or h")),
    };
    std::time::Duration::try_from_secs_f64(value * scale).map_err(|_| format!("{s:?} is out of range"))
}

fn non_negative_finite(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(_) => Err("must be a finite number ≥ 0".into()),
        Err(_) => Err("not a number".into()),
    }
}

fn finite(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err("must be a finite number".into()),
        Err(_) => Err("not a number".into()),
    }
}

fn png_path(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    match path.extension() {
        Some(ext) if ext.eq_ignore_ascii_case("png") => Ok(path),
        _ => Err("must end in .png (only PNG is written)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn clap_errors_become_one_line() {
        let text = "error: invalid value 'x' for '--scheduler <NAME>'\n  [possible values: ddpm, ddim, dpmpp]\n\n  tip: a similar value exists: 'ddim'\n\nUsage: unet2d sample\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(text),
            "error: invalid value 'x' for '--scheduler <NAME>' [possible values: ddpm, ddim, dpmpp]; tip: a similar value exists: 'ddim'"
        );
    }

    #[test]
    fn value_parsers() {
        assert!(at_least_one("0").is_err());
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(non_negative_finite("-1").is_err());
        assert!(non_negative_finite("nan").is_err());
        assert!(non_negative_finite("inf").is_err());
        assert_eq!(non_negative_finite("0.5"), Ok(0.5));
        assert_eq!(finite("-2"), Ok(-2.0));
        assert!(finite("nan").is_err());
        assert!(png_path("x.jpg").is_err());
        assert!(png_path("x").is_err());
        assert!(png_path("X.PNG").is_ok());
        assert_eq!(step_arg("s_churn=0.5"), Ok(("s_churn".into(), serde_json::json!(0.5))));
        assert_eq!(step_arg("x=abc"), Ok(("x".into(), serde_json::json!("abc"))));
        assert!(step_arg("=1").is_err());
        assert!(step_arg("s_churn").is_err());
        assert_eq!(duration("60s"), Ok(std::time::Duration::from_secs(60)));
        assert_eq!(duration("250ms"), Ok(std::time::Duration::from_millis(250)));
        assert_eq!(duration("2m"), Ok(std::time::Duration::from_secs(120)));
        assert_eq!(duration("1.5"), Ok(std::time::Duration::from_millis(1500)));
        assert!(duration("5 parsecs").is_err());
        assert!(duration("s").is_err());
    }
}
