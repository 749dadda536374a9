//! Loading a `UNet2DModel` the way diffusers' `from_pretrained` does: a model folder (or a pipeline
//! folder's `unet/`, or a Hub id, downloaded into the Hub cache by [`crate::hub`]), `config.json`, and the weights in whichever
//! format diffusers wrote: safetensors (memory-mapped), sharded safetensors, a `.bin` pickle (read
//! without executing it), each optionally as a variant (`diffusion_pytorch_model.fp16.safetensors`).

pub mod pickle_guard;
mod select;
mod source;
pub mod weights;

pub use select::{check_variant, choose_weights, shard_names, WeightsChoice, WEIGHTS_NAME};
pub use source::WeightSource;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::config::UNet2DConfig;
use crate::error::{Error, Result};
use crate::hub::{HubOptions, Wanted};
use crate::saving::{LoadedConfig, StampedFile, WeightOrigin};
use crate::unet::UNet2DModel;
use weights::{StoreBackend, WeightStore};

/// Options of [`UNet2DModel::from_pretrained`], as diffusers' keyword arguments.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// A folder inside the model folder (`"unet"` for a pipeline folder).
    pub subfolder: Option<String>,
    /// Weights variant: `Some("fp16")` reads `diffusion_pytorch_model.fp16.safetensors`.
    pub variant: Option<String>,
    /// Where the model computes.
    pub device: Device,
    /// The dtype the model computes in; weights are converted from the file's dtype.
    pub dtype: DType,
    /// diffusers' `use_safetensors`: `None` reads safetensors when present, else `.bin`;
    /// `Some(true)` only safetensors; `Some(false)` prefers `.bin`.
    pub use_safetensors: Option<bool>,
    /// How a Hub id is downloaded (revision, cache, token, offline); unused for a local folder.
    pub hub: HubOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            subfolder: None,
            variant: None,
            device: Device::Cpu,
            dtype: DType::F32,
            use_safetensors: None,
            hub: HubOptions::default(),
        }
    }
}

/// What was read, for `unet2d info` and the Python `repr`.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The folder holding `config.json`.
    pub model_dir: PathBuf,
    /// The weights files read.
    pub weight_files: Vec<PathBuf>,
    /// The dtype the weights are stored in.
    pub stored_dtype: Option<DType>,
}

impl UNet2DModel {
    /// Loads a model folder as diffusers wrote it. `path` is a folder (a model folder, or a pipeline
    /// folder whose `unet/` is used) or a Hub id (`org/name`), whose config and chosen weights are
    /// downloaded into the Hugging Face cache unless already there (see [`crate::hub`]).
    pub fn from_pretrained(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        Self::from_pretrained_with_report(path, options).map(|(model, _)| model)
    }

    /// [`UNet2DModel::from_pretrained`], also saying which files were read.
    pub fn from_pretrained_with_report(path: impl AsRef<Path>, options: &LoadOptions) -> Result<(Self, LoadReport)> {
        let model_dir = resolve_model_dir(path.as_ref(), options)?;
        let (config, json) = UNet2DConfig::from_file_with_json(&model_dir.join("config.json"))?;
        let files = weight_files(&model_dir, options.variant.as_deref(), options.use_safetensors)?;
        // Stamped before they are read: a file changed from here on is no longer the model's weights.
        let stamped = files.iter().map(|f| StampedFile::new(f)).collect::<Result<Vec<_>>>()?;
        let store = WeightStore::open(&files)?;
        let mut model = Self::from_store(config, &store, options)?;
        let loaded = LoadedConfig { json, name_or_path: path.as_ref().to_string_lossy().into_owned() };
        model.set_origin(WeightOrigin::Files(stamped), Some(loaded));
        let report = LoadReport { model_dir, weight_files: files, stored_dtype: store.stored_dtype() };
        Ok((model, report))
    }

    /// Builds a model from a config and an in-memory safetensors image (e.g. one embedded in a
    /// binary with `include_bytes!`); `name` stands for the file in error messages.
    pub fn from_safetensors_bytes(
        config: UNet2DConfig,
        bytes: Vec<u8>,
        name: &Path,
        options: &LoadOptions,
    ) -> Result<Self> {
        // The image is kept: it is the only copy of the exact weights, for saving (see `crate::saving`).
        let kept = std::sync::Arc::new(bytes);
        let store = WeightStore::from_safetensors_bytes(name, kept.as_ref().clone())?;
        let mut model = Self::from_store(config, &store, options)?;
        drop(store);
        model.set_origin(WeightOrigin::Bytes { name: name.to_path_buf(), bytes: kept }, None);
        Ok(model)
    }

    /// Builds the model reading every weight from `store`, then refuses weights it did not use: a
    /// config and a checkpoint that do not belong together.
    fn from_store(config: UNet2DConfig, store: &WeightStore, options: &LoadOptions) -> Result<Self> {
        check_device_dtype(&options.device, options.dtype)?;
        let vb = VarBuilder::from_backend(Box::new(StoreBackend(store)), options.dtype, options.device.clone());
        // The blocks load in parallel; when that fails, which recorded error came first depends on the
        // threads' timing. Build again on one thread, in model order, so that the error reported is
        // always the first a sequential load meets.
        let vb = WeightSource::with_store(vb, store);
        let model = match UNet2DModel::from_source(config.clone(), vb.clone()) {
            Ok(model) => model,
            Err(_) => {
                let _ = store.take_error();
                let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build();
                let retry = match one_thread {
                    Ok(pool) => pool.install(|| UNet2DModel::from_source(config, vb)),
                    Err(_) => UNet2DModel::from_source(config, vb),
                };
                match retry {
                    Ok(model) => model,
                    Err(e) => return Err(store.take_error().unwrap_or(e)),
                }
            }
        };
        let unused = store.unused();
        if !unused.is_empty() {
            let shown: Vec<&str> = unused.iter().take(5).map(String::as_str).collect();
            return Err(Error::Weights {
                path: store.paths().first().cloned().unwrap_or_default(),
                reason: format!(
                    "{} tensor(s) that this config does not use, e.g. {}; the config and weights do not belong together",
                    unused.len(),
                    shown.join(", ")
                ),
            });
        }
        Ok(model)
    }
}

/// Refuses dtype/device pairs candle cannot compute in.
pub(crate) fn check_device_dtype(device: &Device, dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::F16 => Ok(()),
        DType::BF16 if !device.is_cpu() => Ok(()),
        DType::BF16 => Err(Error::Unsupported(
            "bfloat16 on the CPU (candle's CPU backend has no bfloat16 matmul); use float32 or float16 on the CPU, \
             or bfloat16 on CUDA"
                .into(),
        )),
        other => Err(Error::argument("dtype", format!("{other:?} is not a floating-point model dtype"))),
    }
}

/// The folder holding the UNet's `config.json`: `path` itself, its `subfolder`, or its `unet/`
/// (a pipeline folder); a Hub id is first downloaded (only the config and the weights that
/// [`choose_weights`] picks) into the Hub cache, and its snapshot folder used.
pub fn resolve_model_dir(path: &Path, options: &LoadOptions) -> Result<PathBuf> {
    let subfolder = options.subfolder.as_deref().filter(|s| !s.is_empty());
    let wanted = Wanted::Model {
        subfolder: subfolder.map(str::to_string),
        variant: options.variant.clone(),
        use_safetensors: options.use_safetensors,
    };
    let root = match crate::hub::locate(path, &wanted, &options.hub)? {
        Some(root) if root.is_dir() => root,
        Some(_) => return Err(Error::argument("path", format!("{} is a file; pass the model folder", path.display()))),
        None => return Err(Error::NotFound { what: format!("model folder {}", path.display()) }),
    };
    model_dir_in(&root, subfolder, path)
}

/// The UNet folder inside the folder `root` (which `shown` names in messages).
pub(crate) fn model_dir_in(root: &Path, subfolder: Option<&str>, shown: &Path) -> Result<PathBuf> {
    let mut dir = root.to_path_buf();
    if let Some(sub) = subfolder {
        dir = dir.join(sub);
        if !dir.is_dir() {
            return Err(Error::NotFound { what: format!("subfolder {sub:?} in {}", shown.display()) });
        }
    } else if !dir.join("config.json").exists() && dir.join("unet").join("config.json").exists() {
        // A pipeline folder: its UNet is in unet/.
        dir = dir.join("unet");
    }
    if !dir.join("config.json").exists() {
        return Err(Error::NotFound { what: format!("config.json in {}", dir.display()) });
    }
    Ok(dir)
}

/// The weights files to read from the model folder `dir`, as [`choose_weights`] picks them among
/// its files; a shard index's shards, each checked to be in `dir`.
pub fn weight_files(dir: &Path, variant: Option<&str>, use_safetensors: Option<bool>) -> Result<Vec<PathBuf>> {
    check_variant(variant)?;
    let names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(WEIGHTS_NAME))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let choice = choose_weights(&names, variant, use_safetensors, &dir.display().to_string())?;
    // Something at the name that is not a regular file (a folder, a FIFO, a device) is reported
    // as what it is, not skipped as if it were missing.
    let file = dir.join(choice.name());
    crate::files::check_regular(&file)?;
    match choice {
        WeightsChoice::Single(_) => Ok(vec![file]),
        WeightsChoice::Index(_) => shard_files(dir, &file),
    }
}

/// The shard files a `*.index.json` names, each checked to exist inside `dir`.
fn shard_files(dir: &Path, index: &Path) -> Result<Vec<PathBuf>> {
    let text = crate::files::read_json_text(index)?;
    let mut files = Vec::new();
    for name in shard_names(&text, index)? {
        let path = dir.join(&name);
        if !crate::files::exists(&path) {
            return Err(Error::NotFound { what: format!("shard {name} named by {}", index.display()) });
        }
        crate::files::check_regular(&path)?;
        files.push(path);
    }
    Ok(files)
}
