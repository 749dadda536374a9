//! `--out` / `--out-dir` / `--scale`, shared by `sample` and `inpaint`: checked before any work is
//! done, then the images written as one grid or one PNG per image.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::cli::OutputArgs;
use super::images::{default_grid_scale, grid_columns, Images};

/// What to write.
pub enum Output {
    /// One PNG grid.
    Grid(PathBuf),
    /// One PNG per image in this folder.
    Dir(PathBuf),
}

/// A checked output: where, and the `--scale` (`None`: the default for the output kind).
pub struct Destination {
    pub output: Output,
    pub scale: Option<usize>,
}

impl Destination {
    /// The flags, with `default_file` when neither `--out` nor `--out-dir` is given; fails unless
    /// the output can be written.
    pub fn from_args(args: OutputArgs, default_file: &str) -> anyhow::Result<Self> {
        let output = match (args.out, args.out_dir) {
            (_, Some(dir)) => Output::Dir(dir),
            (Some(file), None) => Output::Grid(file),
            (None, None) => Output::Grid(PathBuf::from(default_file)),
        };
        output.check_writable()?;
        Ok(Self { output, scale: args.scale.map(|s| s as usize) })
    }

    /// Writes the images, image `i` as `name(i)` in an `--out-dir`; returns what was written, for
    /// the closing line.
    pub fn write(&self, images: &Images, name: impl Fn(usize) -> String) -> anyhow::Result<String> {
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
                let names: Vec<String> = (0..n).map(name).collect();
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
}

/// `<prefix>_007.png`, or `<prefix>_007_class3.png` with class labels: zero-padded so that sorting
/// by name gives the batch order.
pub fn file_name(prefix: &str, index: usize, batch: usize, labels: Option<&[i64]>) -> String {
    let digits = (batch.saturating_sub(1)).to_string().len().max(3);
    match labels {
        Some(labels) => format!("{prefix}_{index:0digits$}_class{}.png", labels[index]),
        None => format!("{prefix}_{index:0digits$}.png"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_sort_in_batch_order() {
        assert_eq!(file_name("sample", 7, 12, None), "sample_007.png");
        assert_eq!(file_name("inpainted", 2, 3, Some(&[1, 2, 9])), "inpainted_002_class9.png");
        assert_eq!(file_name("sample", 5, 2000, None), "sample_0005.png");
    }
}
