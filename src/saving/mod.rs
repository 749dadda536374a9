//! Saving a `UNet2DModel` the way diffusers' `save_pretrained` does, and its `state_dict`.
//!
//! # Where the weights come from when saving
//!
//! The model does not hold its weights as the checkpoint had them: a float32 CPU model keeps each 3×3
//! convolution only as its Winograd transform `G g Gᵀ` (which cannot be inverted bit for bit) or in the
//! direct kernel's packed layout, read in place from the memory-mapped file at load so that most of
//! the checkpoint is never copied. Keeping the original tensors as well would double the memory of
//! the convolutions, which are most of the model, for a feature used once in a model's life.
//!
//! So the model records where its weights came from (see [`origin`]) and the tensors are read again
//! from there, converted to the model's dtype exactly as loading converted them:
//!
//! - **checkpoint files** (`from_pretrained`): the paths, each stamped (size, modification time,
//!   device and inode) before it was read. Costs nothing while the model lives; a save re-opens the
//!   files, and refuses, naming the file, if one has been replaced or rewritten since (its contents
//!   are no longer the model's). A save into the folder the model came from replaces those files;
//!   the origin then moves to the files just written, which hold the same values.
//! - **an in-memory safetensors image** (`from_safetensors_bytes`): the image is kept. This is the one
//!   origin that costs memory (the image's size), since nothing else holds those bytes; such models are
//!   small ones embedded in a binary.
//! - **freshly initialised weights** (`from_config`, `with_random_weights`): the seed. Each tensor
//!   draws from a generator seeded by the model's seed and the tensor's name, so any tensor is
//!   regenerated alone, identically.
//! - **a model made by `load_state_dict` or by `to` with another dtype or device**: the safetensors
//!   image of its new weights, built in memory (`saving/state.rs`), as for `from_safetensors_bytes`.
//! - a model built by `UNet2DModel::new` over a caller's `VarBuilder` has no origin the model can
//!   keep: `state_dict` and `save_pretrained` refuse it (`Error::Unsupported`).
//!
//! The names and shapes come from the config (the same record-only build as
//! [`crate::stats::parameter_shapes`]), sorted in diffusers' `state_dict()` order ([`order`]).
//! `save_pretrained` streams: each tensor is read just before its bytes are written, so a save holds
//! one tensor in memory, not the model.
//!
//! # What is written
//!
//! Exactly what diffusers 0.42.1 writes: `config.json` ([`config_json`]),
//! `diffusion_pytorch_model[.{variant}].safetensors` with metadata `{"format": "pt"}`, or, past
//! `max_shard_size`, shards `diffusion_pytorch_model[.{variant}]-00001-of-0000N.safetensors` split as
//! huggingface_hub splits them ([`shards`]) and `diffusion_pytorch_model.safetensors.index[.{variant}].json`.
//! Shards of an earlier save that this save does not overwrite are removed, as diffusers does (after
//! the new files are written rather than before, so a failed save leaves the old files whole). Every
//! file is written atomically ([`atomic`]).

pub mod atomic;
mod config_json;
mod order;
mod origin;
pub mod python_json;
mod safetensors_file;
mod shards;
mod state;

pub use atomic::{write_atomic, write_text_atomic};
pub use config_json::DIFFUSERS_VERSION;
pub(crate) use origin::{LoadedConfig, Provenance, StampedFile, WeightOrigin};
pub use shards::{parse_shard_size, DEFAULT_MAX_SHARD_SIZE};
pub use state::IncompatibleKeys;

use std::path::{Path, PathBuf};

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::unet::UNet2DModel;
use origin::TensorReader;
use safetensors_file::TensorSpec;

/// diffusers' weights file stem.
const WEIGHTS_NAME: &str = "diffusion_pytorch_model";

/// Options of [`UNet2DModel::save_pretrained`], as diffusers' keyword arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveOptions {
    /// Weights variant: `Some("fp16")` writes `diffusion_pytorch_model.fp16.safetensors`. (The name
    /// only: the weights are saved in the model's dtype, as diffusers does.)
    pub variant: Option<String>,
    /// Largest shard in bytes before the weights are split (diffusers' `max_shard_size`; see
    /// [`parse_shard_size`] for its strings). Default 10 GB.
    pub max_shard_size: u64,
}

impl Default for SaveOptions {
    fn default() -> Self {
        Self { variant: None, max_shard_size: DEFAULT_MAX_SHARD_SIZE }
    }
}

impl UNet2DModel {
    /// The name and shape of every tensor of [`UNet2DModel::state_dict`], in its order, without
    /// reading any weight.
    pub fn state_dict_shapes(&self) -> Result<Vec<(String, Vec<usize>)>> {
        let mut shapes = crate::stats::parameter_shapes(self.config())?;
        shapes.sort_by(|(a, _), (b, _)| order::state_dict_order(a, b));
        Ok(shapes)
    }

    /// Every tensor of the model under diffusers' names (the current ones, whatever names the
    /// checkpoint used), in the order of diffusers' `state_dict()`, with diffusers' shapes, in the
    /// model's dtype, on the CPU. Read again from where the weights came from (see [`crate::saving`]):
    /// the values are the ones the model computes with.
    pub fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        let shapes = self.state_dict_shapes()?;
        let dtype = self.dtype();
        let bytes: u128 =
            shapes.iter().map(|(_, s)| (s.iter().product::<usize>() * dtype.size_in_bytes()) as u128).sum();
        crate::memory_budget::check(|| "the model's state dict".into(), bytes)?;
        let origin = self.provenance().origin.lock().unwrap_or_else(|e| e.into_inner());
        let reader = TensorReader::open(&origin)?;
        shapes.into_iter().map(|(name, shape)| Ok((name.clone(), reader.read(&name, &shape, dtype)?))).collect()
    }

    /// Saves the model as diffusers' `save_pretrained` does: `config.json` and the weights (one
    /// safetensors file, or shards and an index past `max_shard_size`) in `dir`, which is created if
    /// missing; shards of an earlier save that are not overwritten are removed. Every file is written
    /// atomically. Fails if `dir` is a file.
    pub fn save_pretrained(&self, dir: impl AsRef<Path>, options: &SaveOptions) -> Result<()> {
        self.save(dir.as_ref(), options, true)
    }

    /// What `save_pretrained(..., is_main_process=False)` does in diffusers: the weights only, no
    /// `config.json`, no removal of earlier shards.
    pub fn save_weights(&self, dir: impl AsRef<Path>, options: &SaveOptions) -> Result<()> {
        self.save(dir.as_ref(), options, false)
    }

    fn save(&self, dir: &Path, options: &SaveOptions, main_process: bool) -> Result<()> {
        let weights_name = match options.variant.as_deref() {
            Some(v) => {
                check_variant(v)?;
                format!("{WEIGHTS_NAME}.{v}.safetensors")
            }
            None => format!("{WEIGHTS_NAME}.safetensors"),
        };
        prepare_dir(dir)?;
        let shapes = self.state_dict_shapes()?;
        let dtype = self.dtype();
        let sizes: Vec<u64> =
            shapes.iter().map(|(_, s)| (s.iter().product::<usize>() * dtype.size_in_bytes()) as u64).collect();
        let pattern = weights_name.replace(".safetensors", "{suffix}.safetensors");
        let plan = shards::split(&sizes, options.max_shard_size, &pattern);

        let mut origin = self.provenance().origin.lock().unwrap_or_else(|e| e.into_inner());
        let reader = TensorReader::open(&origin)?;
        if main_process {
            let config = config_json::config_json(self.config(), self.provenance().config.as_ref());
            write_text_atomic(&dir.join("config.json"), &config)?;
        }
        let mut written = Vec::with_capacity(plan.files.len());
        for (file, tensors) in &plan.files {
            let path = dir.join(file);
            let specs: Vec<TensorSpec> =
                tensors.iter().map(|&i| TensorSpec { name: &shapes[i].0, shape: &shapes[i].1 }).collect();
            write_atomic(&path, |w| {
                safetensors_file::write(w, &path, &specs, dtype, |s| reader.read(s.name, s.shape, dtype))
            })?;
            written.push(file.clone());
        }
        if plan.is_sharded() {
            let index = match options.variant.as_deref() {
                Some(v) => format!("{WEIGHTS_NAME}.safetensors.index.{v}.json"),
                None => format!("{WEIGHTS_NAME}.safetensors.index.json"),
            };
            let names: Vec<String> = shapes.iter().map(|(n, _)| n.clone()).collect();
            write_text_atomic(&dir.join(index), &shards::index_json(&plan, &names))?;
        }
        if main_process {
            let stem = pattern.replace(".bin", "").replace(".safetensors", "").replace("{suffix}", "");
            shards::remove_stale_shards(dir, &stem, &written)?;
        }
        drop(reader);
        repoint_if_overwritten(&mut origin, dir, &written)
    }
}

/// After a save over the model's own checkpoint, the files it was loaded from are gone (replaced or
/// removed); the files just written hold the same values and become the origin.
fn repoint_if_overwritten(origin: &mut WeightOrigin, dir: &Path, written: &[String]) -> Result<()> {
    let WeightOrigin::Files(files) = &*origin else { return Ok(()) };
    let same_dir = |p: &Path| match (p.parent().map(std::fs::canonicalize), std::fs::canonicalize(dir)) {
        (Some(Ok(a)), Ok(b)) => a == b,
        _ => p.parent() == Some(dir),
    };
    if files.iter().any(|f| !f.unchanged()) && files.iter().all(|f| same_dir(&f.path)) {
        let paths: Vec<PathBuf> = written.iter().map(|f| dir.join(f)).collect();
        *origin = WeightOrigin::Files(paths.iter().map(|p| StampedFile::new(p)).collect::<Result<_>>()?);
    }
    Ok(())
}

/// A variant is a file-name infix: not empty, no path separators, no `..`.
fn check_variant(variant: &str) -> Result<()> {
    if variant.is_empty() || variant.contains(['/', '\\']) || variant.contains("..") {
        return Err(Error::argument("variant", format!("{variant:?} is not a variant name (e.g. \"fp16\")")));
    }
    Ok(())
}

/// Creates `dir` if missing; refuses a path that exists and is not a folder.
fn prepare_dir(dir: &Path) -> Result<()> {
    if crate::files::exists(dir) && !dir.is_dir() {
        return Err(Error::argument(
            "save_directory",
            format!("{} is a file, not a folder; give the folder to save the model into", dir.display()),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}
