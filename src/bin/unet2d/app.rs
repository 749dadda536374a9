//! The `unet2d` program, whichever way it is started: the binary (`src/bin/unet2d.rs`) or the
//! `unet2d` console script of the Python package, which calls [`main`] inside the extension module
//! (`src/python/cli.rs`), so a pip install gets the same command without a Rust toolchain.
//!
//! [`main`] only parses the command line and calls [`run`]; errors come back as one line,
//! `error: …` with their context chain joined by `: `, and exit code 1 (2 for usage errors, as
//! clap does; 130 after Ctrl-C). The submodules name each other through `super::` (this module),
//! which is what lets the same files compile into both crates.

// `path` because this file is included from two places (the binary and the Python extension), and a
// `path` is read from this file's folder either way.
#[path = "cli.rs"]
mod cli;
#[path = "files.rs"]
mod files;
#[path = "images.rs"]
mod images;
#[path = "info.rs"]
mod info;
#[path = "inpaint.rs"]
mod inpaint;
#[path = "input_png.rs"]
mod input_png;
#[path = "interrupt.rs"]
mod interrupt;
#[path = "model.rs"]
mod model;
#[path = "output.rs"]
mod output;
#[path = "pipeline_choice.rs"]
mod pipeline_choice;
#[path = "progress.rs"]
mod progress;
#[path = "sample.rs"]
mod sample;
#[path = "serve.rs"]
mod serve;
#[path = "shipped.rs"]
mod shipped;

use std::ffi::OsString;
use std::io::Write;

use clap::Parser;

use cli::{Cli, Command};

/// Runs the command line `args` (the program name first, as `std::env::args_os`) and returns the
/// process exit code: 0, 1 for errors, 2 for usage errors, 130 after Ctrl-C.
pub fn main(args: impl IntoIterator<Item = OsString>) -> u8 {
    install_panic_hook();
    let code = match Cli::try_parse_from(args) {
        Ok(cli) => match run(cli) {
            Ok(()) => 0,
            Err(err) => match (err.downcast_ref::<clap::Error>(), err.downcast_ref::<interrupt::Interrupted>()) {
                (Some(usage), _) => cli::report_clap_error(usage),
                (None, Some(interrupted)) => {
                    eprintln!("error: {interrupted}");
                    interrupt::EXIT_CODE
                }
                (None, None) => {
                    eprintln!("error: {}", one_line(&format!("{err:#}")));
                    1
                }
            },
        },
        Err(err) => cli::report_clap_error(&err),
    };
    // Inside the Python extension no Rust runtime flushes stdout at exit: do it here.
    let _ = std::io::stdout().flush();
    code
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Sample(args) => sample::run(*args),
        Command::Inpaint(args) => inpaint::run(*args),
        Command::Info(args) => info::run(args),
        Command::Serve(args) => serve::run(*args),
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
