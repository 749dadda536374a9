//! The step callback of `sample` and `inpaint`: it moves the progress bar and stops the run when
//! Ctrl-C was pressed (see `interrupt.rs`). Also the bar of a `--model` Hub download.

use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::sync::Arc;

use candle_unet2d::hub::{DownloadProgress, ProgressFn};
use candle_unet2d::pipeline::StepEnd;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::interrupt;

/// A bar on stderr (step, it/s, ETA) when stderr is a terminal; hidden otherwise.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar of `steps` steps of the loop (RePaint's jumps back up included), labelled `label`.
    pub fn new(steps: usize, label: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self { bar: ProgressBar::hidden() };
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
        Self { bar }
    }

    /// The step callback: shows the step, and asks the loop to stop after Ctrl-C.
    pub fn on_step(&self, end: StepEnd<'_>) -> ControlFlow<()> {
        self.bar.set_length(end.total as u64);
        self.bar.set_position(end.step as u64);
        if interrupt::requested() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

impl Drop for Progress {
    /// The bar goes away however the run ends, so an error line never shares its line.
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// A bar on stderr for the file a Hub download is fetching (bytes, rate, ETA), when stderr is a
/// terminal.
pub struct DownloadBar {
    bar: ProgressBar,
}

impl DownloadBar {
    /// `None` when stderr is not a terminal (nothing to draw on).
    pub fn new() -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let style = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}, {bytes_per_sec}, ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(style);
        Some(Self { bar })
    }

    /// The downloader's callback: shows the file being fetched and how far it is.
    pub fn callback(&self) -> ProgressFn {
        let bar = self.bar.clone();
        Arc::new(move |p: &DownloadProgress| {
            let message = format!("downloading {}", p.file);
            if bar.message() != message {
                bar.reset();
                bar.set_message(message);
            }
            bar.set_length(p.total.unwrap_or(p.downloaded));
            bar.set_position(p.downloaded);
        })
    }
}

impl Drop for DownloadBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
