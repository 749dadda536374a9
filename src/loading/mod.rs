//! Loading a `UNet2DModel` the way diffusers' `from_pretrained` does: a model folder (or a pipeline
//! folder's `unet/`, or a Hub id in the local cache), `config.json`, and the weights in whichever
//! format diffusers wrote: safetensors (memory-mapped), sharded safetensors, a `.bin` pickle (read
//! without executing it), each optionally as a variant (`diffusion_pytorch_model.fp16.safetensors`).

pub mod hub;
pub mod pickle_guard;
mod source;
pub mod weights;

pub use source::WeightSource;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::config::UNet2DConfig;
use crate::error::{Error, Result};
use crate::saving::{LoadedConfig, StampedFile, WeightOrigin};
use crate::unet::UNet2DModel;
use weights::{StoreBackend, WeightStore};

/// diffusers' weights file stem.
const WEIGHTS_NAME: &str = "diffusion_pytorch_model";

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
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { subfolder: None, variant: None, device: Device::Cpu, dtype: DType::F32 }
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
    /// folder whose `unet/` is used) or a Hub id found in the local Hugging Face cache.
    pub fn from_pretrained(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        Self::from_pretrained_with_report(path, options).map(|(model, _)| model)
    }

    /// [`UNet2DModel::from_pretrained`], also saying which files were read.
    pub fn from_pretrained_with_report(path: impl AsRef<Path>, options: &LoadOptions) -> Result<(Self, LoadReport)> {
        let model_dir = resolve_model_dir(path.as_ref(), options.subfolder.as_deref())?;
        let (config, json) = UNet2DConfig::from_file_with_json(&model_dir.join("config.json"))?;
        let files = weight_files(&model_dir, options.variant.as_deref())?;
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

/// The folder holding the UNet's `config.json`.
pub fn resolve_model_dir(path: &Path, subfolder: Option<&str>) -> Result<PathBuf> {
    let mut dir = if path.is_dir() {
        path.to_path_buf()
    } else if path.exists() {
        return Err(Error::argument("path", format!("{} is a file; pass the model folder", path.display())));
    } else {
        match path.to_str() {
            Some(s) if hub::looks_like_repo_id(s) && !s.starts_with('.') => hub::resolve(s)?,
            _ => return Err(Error::NotFound { what: format!("model folder {}", path.display()) }),
        }
    };
    if let Some(sub) = subfolder.filter(|s| !s.is_empty()) {
        dir = dir.join(sub);
        if !dir.is_dir() {
            return Err(Error::NotFound { what: format!("subfolder {sub:?} in {}", path.display()) });
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

/// The weights files to read, in diffusers' order of preference: safetensors, sharded safetensors,
/// `.bin`, sharded `.bin`; each with the variant infix when one is asked for.
pub fn weight_files(dir: &Path, variant: Option<&str>) -> Result<Vec<PathBuf>> {
    let infix = variant.map(|v| format!(".{v}")).unwrap_or_default();
    if let Some(v) = variant {
        if v.is_empty() || v.contains(['/', '\\']) || v.contains("..") {
            return Err(Error::argument("variant", format!("{v:?} is not a variant name (e.g. \"fp16\")")));
        }
    }
    for ext in ["safetensors", "bin"] {
        // Something at the name that is not a regular file (a folder, a FIFO, a device) is reported
        // as what it is, not skipped as if it were missing.
        let single = dir.join(format!("{WEIGHTS_NAME}{infix}.{ext}"));
        if crate::files::exists(&single) {
            crate::files::check_regular(&single)?;
            return Ok(vec![single]);
        }
        let index = dir.join(format!("{WEIGHTS_NAME}.{ext}.index{infix}.json"));
        if crate::files::exists(&index) {
            crate::files::check_regular(&index)?;
            return shard_files(dir, &index);
        }
    }
    let present: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(WEIGHTS_NAME))
                .collect()
        })
        .unwrap_or_default();
    let hint = match (variant, present.is_empty()) {
        (_, true) => String::new(),
        (None, false) => format!("; found {} (pass the variant, e.g. variant=\"fp16\")", present.join(", ")),
        (Some(_), false) => format!("; found {}", present.join(", ")),
    };
    Err(Error::NotFound {
        what: format!("{WEIGHTS_NAME}{infix}.safetensors (or .bin, or a sharded index) in {}{hint}", dir.display()),
    })
}

/// The shard files a `*.index.json` names, each checked to exist inside `dir`.
fn shard_files(dir: &Path, index: &Path) -> Result<Vec<PathBuf>> {
    let text = crate::files::read_json_text(index)?;
    let parsed: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::ConfigParse { path: index.to_path_buf(), reason: e.to_string() })?;
    let bad = |reason: &str| Error::Weights { path: index.to_path_buf(), reason: reason.into() };
    let map = parsed.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no \"weight_map\" object"))?;
    let mut names: Vec<&str> = Vec::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| bad(&format!("weight_map[{tensor:?}] is not a file name")))?;
        if file.contains(['/', '\\']) || file.starts_with('.') {
            return Err(bad(&format!("shard name {file:?} points outside the model folder")));
        }
        if !names.contains(&file) {
            names.push(file);
        }
    }
    names.sort();
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(name);
        if !crate::files::exists(&path) {
            return Err(Error::NotFound { what: format!("shard {name} named by {}", index.display()) });
        }
        crate::files::check_regular(&path)?;
        files.push(path);
    }
    if files.is_empty() {
        return Err(bad("the weight_map is empty"));
    }
    Ok(files)
}
