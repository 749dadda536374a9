//! `unet2d`: sample images from diffusers' UNet2DModel on candle, and describe models.
//!
//! ```text
//! unet2d sample                                   # digits 0–9 from the shipped model → samples.png
//! unet2d sample --scheduler dpmpp --steps 20 --class 3,1,4 --out-dir digits/
//! unet2d sample --model google/ddpm-cifar10-32 --batch 16 --scheduler ddim --out cifar.png
//! unet2d sample --model path/to/ncsnpp --steps 100 --correct-steps 2   # ScoreSdeVePipeline
//! unet2d sample --model path/to/cm --timesteps 22,0 --class 1,2         # ConsistencyModelPipeline
//! unet2d inpaint --image digit.png --mask right_half.png --class 3 --out filled.png
//! unet2d info --model path/to/pipeline
//! ```
//!
//! `main` only parses the command line and calls [`run`]; errors come back as one line,
//! `error: …` with their context chain joined by `: `, and exit code 1 (2 for usage errors, as
//! clap does; 130 after Ctrl-C).

// The submodules live in src/bin/unet2d/ (a crate root's `mod` looks beside it, hence `path`).
#[path = "unet2d/cli.rs"]
mod cli;
#[path = "unet2d/files.rs"]
mod files;
#[path = "unet2d/images.rs"]
mod images;
#[path = "unet2d/info.rs"]
mod info;
#[path = "unet2d/inpaint.rs"]
mod inpaint;
#[path = "unet2d/input_png.rs"]
mod input_png;
#[path = "unet2d/interrupt.rs"]
mod interrupt;
#[path = "unet2d/model.rs"]
mod model;
#[path = "unet2d/output.rs"]
mod output;
#[path = "unet2d/pipeline_choice.rs"]
mod pipeline_choice;
#[path = "unet2d/progress.rs"]
mod progress;
#[path = "unet2d/sample.rs"]
mod sample;
#[path = "unet2d/shipped.rs"]
mod shipped;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return cli::report_clap_error(&err),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => match (err.downcast_ref::<clap::Error>(), err.downcast_ref::<interrupt::Interrupted>()) {
            (Some(usage), _) => cli::report_clap_error(usage),
            (None, Some(interrupted)) => {
                eprintln!("error: {interrupted}");
                ExitCode::from(interrupt::EXIT_CODE)
            }
            (None, None) => {
                eprintln!("error: {}", one_line(&format!("{err:#}")));
                ExitCode::FAILURE
            }
        },
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Sample(args) => sample::run(*args),
        Command::Inpaint(args) => inpaint::run(*args),
        Command::Info(args) => info::run(args),
    }
}

/// An error chain on one line (library messages may carry line breaks).
fn one_line(message: &str) -> String {
    message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// A panic is a bug, but users still get one `error:` line instead of a panic message and a
/// backtrace hint; `RUST_BACKTRACE` set restores Rust's report.
fn install_panic_hook() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal error (a bug in unet2d, please report it): {}{place}", one_line(&message));
    }));
}
