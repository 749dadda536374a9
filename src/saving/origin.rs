//! Where a model's weights came from, kept so that they can be read again exactly: the convolutions
//! hold their filters only in the kernels' layouts (Winograd-transformed, which cannot be inverted
//! bit for bit), so [`UNet2DModel::state_dict`](crate::UNet2DModel::state_dict) re-reads each tensor
//! from its origin instead of keeping a second copy of the model.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use candle_core::{DType, Device, Tensor};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::loading::weights::WeightStore;
use crate::random_init::InitPlan;

/// A checkpoint file and what it was when the model was read from it: if it has been replaced or
/// rewritten since, its contents are no longer the model's weights.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StampedFile {
    pub path: PathBuf,
    stamp: Stamp,
}

#[derive(Debug, Clone, PartialEq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    /// Device and inode: a file renamed over the original (as an atomic save does) is another file.
    #[cfg(unix)]
    id: (u64, u64),
}

impl Stamp {
    fn of(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        #[cfg(unix)]
        let id = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        Ok(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            id,
        })
    }
}

impl StampedFile {
    /// Stamps `path` now (call it before reading the file, so that a change during the read shows).
    pub fn new(path: &Path) -> Result<Self> {
        Ok(Self { path: path.to_path_buf(), stamp: Stamp::of(path)? })
    }

    /// Whether the file is still the one stamped.
    pub fn unchanged(&self) -> bool {
        Stamp::of(&self.path).is_ok_and(|now| now == self.stamp)
    }
}

/// Where the weights are read again from.
pub(crate) enum WeightOrigin {
    /// The checkpoint files `from_pretrained` read (safetensors, shards or `.bin`).
    Files(Vec<StampedFile>),
    /// The safetensors image `from_safetensors_bytes` was given, kept.
    Bytes { name: PathBuf, bytes: Arc<Vec<u8>> },
    /// `from_config` (`with_random_weights`): every tensor is regenerated from the seed.
    Random { plan: Arc<InitPlan> },
    /// `UNet2DModel::new` over a caller's `VarBuilder`, which the model cannot keep.
    Unknown,
}

impl std::fmt::Debug for WeightOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Files(files) => {
                f.debug_tuple("Files").field(&files.iter().map(|s| &s.path).collect::<Vec<_>>()).finish()
            }
            Self::Bytes { name, bytes } => write!(f, "Bytes({}, {} bytes)", name.display(), bytes.len()),
            Self::Random { plan } => write!(f, "Random(seed {})", plan.seed()),
            Self::Unknown => f.write_str("Unknown"),
        }
    }
}

/// The `config.json` a model was loaded from, kept as read: diffusers writes back every key of the
/// file (unknown ones too) with the value as it was read, plus `_name_or_path`.
#[derive(Debug, Clone)]
pub(crate) struct LoadedConfig {
    pub json: Map<String, Value>,
    /// The path or Hub id given to `from_pretrained`.
    pub name_or_path: String,
}

/// What a model records about its making, for saving.
#[derive(Debug)]
pub(crate) struct Provenance {
    /// Behind a lock: a save over the model's own files moves the origin to the files just written.
    pub origin: Mutex<WeightOrigin>,
    pub config: Option<LoadedConfig>,
}

impl Provenance {
    pub fn new(origin: WeightOrigin, config: Option<LoadedConfig>) -> Self {
        Self { origin: Mutex::new(origin), config }
    }
}

/// Reads tensors from an origin: on the CPU, in the model's dtype, converted exactly as loading did.
pub(crate) enum TensorReader {
    Store(Box<WeightStore>),
    Random(Arc<InitPlan>),
}

impl TensorReader {
    /// Opens `origin` for reading; fails if its files have changed since the model was loaded.
    pub fn open(origin: &WeightOrigin) -> Result<Self> {
        match origin {
            WeightOrigin::Files(files) => {
                if let Some(changed) = files.iter().find(|f| !f.unchanged()) {
                    return Err(Error::Weights {
                        path: changed.path.clone(),
                        reason: "has been changed, replaced or removed since the model was loaded from it, so the \
                                 model's weights can no longer be read back from it (the model keeps its \
                                 convolutions only in a transformed layout); load the model again to save it"
                            .into(),
                    });
                }
                let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
                Ok(Self::Store(Box::new(WeightStore::open(&paths)?)))
            }
            WeightOrigin::Bytes { name, bytes } => {
                Ok(Self::Store(Box::new(WeightStore::from_safetensors_bytes(name, bytes.as_ref().clone())?)))
            }
            WeightOrigin::Random { plan } => Ok(Self::Random(plan.clone())),
            WeightOrigin::Unknown => Err(Error::Unsupported(
                "reading back the weights of a model built with UNet2DModel::new from a VarBuilder: the model does \
                 not keep its original tensors; build it with from_pretrained, from_safetensors_bytes or \
                 from_config to save it"
                    .into(),
            )),
        }
    }

    /// Tensor `name` of shape `shape` in `dtype`, on the CPU.
    pub fn read(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        match self {
            Self::Store(store) => store.read(name, shape, dtype),
            Self::Random(plan) => Ok(plan.tensor(name, shape, dtype, &Device::Cpu)?),
        }
    }
}
