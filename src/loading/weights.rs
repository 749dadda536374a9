//! The weight store: every tensor of a checkpoint (safetensors memory-mapped, one file or shards, or a
//! PyTorch `.bin` read without running pickle code), under diffusers' current names, served to
//! candle's `VarBuilder` with shape checks whose errors name the tensor, the shapes and the file.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::safetensors::{BufferedSafetensors, Load, MmapedSafetensors};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

use crate::error::{candle_message, Error, Result};
use crate::memory::{release_mapped_pages, MappedF32};

/// One weights file.
enum WeightFile {
    /// candle's reader over the mapped file, and a second, shared mapping of it from which float32
    /// tensors are handed out without a copy ([`WeightStore::mapped_f32`]).
    Safetensors(MmapedSafetensors, Arc<memmap2::Mmap>),
    /// A safetensors image held in memory (a model embedded in a binary).
    Buffered(BufferedSafetensors),
    Pth(candle_core::pickle::PthTensors),
}

/// Where a tensor lives: which file, and its name there (before legacy renaming).
struct Entry {
    file: usize,
    stored_name: String,
    shape: Vec<usize>,
    /// Where the tensor's bytes lie in a mapped safetensors file, for float32 tensors only.
    f32_bytes: Option<std::ops::Range<usize>>,
}

/// All tensors of a checkpoint, by diffusers name.
pub struct WeightStore {
    paths: Vec<PathBuf>,
    files: Vec<WeightFile>,
    entries: HashMap<String, Entry>,
    /// The first error met while the model was being built, kept whole (candle's error type can only
    /// carry its text).
    first_error: Mutex<Option<Error>>,
    /// Names the model asked for, to report tensors the checkpoint has but the model does not use.
    requested: Mutex<BTreeSet<String>>,
}

/// Keys diffusers drops on load: the fourier projection's legacy duplicate of `time_proj.weight`.
const IGNORED_KEYS: &[&str] = &["time_proj.W"];

impl WeightStore {
    /// Opens the files (memory-mapping safetensors) and indexes their tensors, renaming legacy
    /// attention names in one pass.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut entries = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let bad = |reason: String| Error::Weights { path: path.clone(), reason };
            // A FIFO would block the reader, a device would be read without end: regular files only.
            crate::files::check_regular(path)?;
            let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
            let file = if is_safetensors {
                // SAFETY: the file is mapped read-only; like every mmap reader we rely on it not being
                // truncated or rewritten in place while it is mapped: a page cut off by another process
                // reads as SIGBUS, which kills the process (documented in docs/errors-and-safety.md,
                // "Files"). Most tensors are copied out during loading; the Winograd convolutions'
                // filters stay mapped until each layer's first call.
                let st = unsafe { MmapedSafetensors::new(path) }.map_err(|e| bad(candle_message(&e)))?;
                // SAFETY: as above; this mapping may outlive the load, held by weights handed out in place
                // (`mapped_f32`), and the same requirement holds while it lives.
                let map = std::fs::File::open(path)
                    .and_then(|file| unsafe { memmap2::Mmap::map(&file) })
                    .map_err(|e| bad(e.to_string()))?;
                // candle's reader validated the file; read where each float32 tensor's bytes start.
                let (header, metadata) =
                    safetensors::SafeTensors::read_metadata(&map).map_err(|e| bad(e.to_string()))?;
                let data_start = 8 + header;
                let f32_bytes: HashMap<String, std::ops::Range<usize>> = metadata
                    .tensors()
                    .into_iter()
                    .filter(|(_, info)| info.dtype == safetensors::Dtype::F32)
                    .map(|(name, info)| (name, data_start + info.data_offsets.0..data_start + info.data_offsets.1))
                    .collect();
                for (name, view) in st.tensors() {
                    let range = f32_bytes.get(&name).cloned();
                    add_entry(&mut entries, path, index, name, view.shape().to_vec(), range)?;
                }
                WeightFile::Safetensors(st, Arc::new(map))
            } else {
                // candle's pickle reader runs no pickle code but trusts the file's structure: screen it
                // first (allowed globals only, bounded depth, sizes and objects).
                super::pickle_guard::check_torch_checkpoint(path)
                    .map_err(|e| bad(format!("not a readable PyTorch checkpoint: {e}")))?;
                let pth = candle_core::pickle::PthTensors::new(path, None)
                    .map_err(|e| bad(format!("not a readable PyTorch checkpoint: {}", candle_message(&e))))?;
                for (name, info) in pth.tensor_infos() {
                    add_entry(&mut entries, path, index, name.clone(), info.layout.dims().to_vec(), None)?;
                }
                WeightFile::Pth(pth)
            };
            files.push(file);
        }
        for key in IGNORED_KEYS {
            entries.remove(*key);
        }
        Ok(Self {
            paths: paths.to_vec(),
            files,
            entries,
            first_error: Mutex::new(None),
            requested: Mutex::new(BTreeSet::new()),
        })
    }

    /// A store over one in-memory safetensors image; `name` stands for its path in errors.
    pub fn from_safetensors_bytes(name: &Path, bytes: Vec<u8>) -> Result<Self> {
        let st = BufferedSafetensors::new(bytes)
            .map_err(|e| Error::Weights { path: name.to_path_buf(), reason: candle_message(&e) })?;
        let mut entries = HashMap::new();
        for (stored, view) in st.tensors() {
            add_entry(&mut entries, name, 0, stored, view.shape().to_vec(), None)?;
        }
        for key in IGNORED_KEYS {
            entries.remove(*key);
        }
        Ok(Self {
            paths: vec![name.to_path_buf()],
            files: vec![WeightFile::Buffered(st)],
            entries,
            first_error: Mutex::new(None),
            requested: Mutex::new(BTreeSet::new()),
        })
    }

    /// The files this store reads.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Where errors point when no single file is to blame.
    fn location(&self) -> PathBuf {
        match self.paths.as_slice() {
            [one] => one.clone(),
            _ => self.paths.first().and_then(|p| p.parent()).map(Path::to_path_buf).unwrap_or_default(),
        }
    }

    /// The first error recorded while building, if any.
    pub fn take_error(&self) -> Option<Error> {
        self.first_error.lock().ok().and_then(|mut e| e.take())
    }

    /// Tensors in the checkpoint that the model never asked for (sorted).
    pub fn unused(&self) -> Vec<String> {
        let requested = self.requested.lock().map(|r| r.clone()).unwrap_or_default();
        let mut unused: Vec<String> = self.entries.keys().filter(|k| !requested.contains(*k)).cloned().collect();
        unused.sort();
        unused
    }

    /// The dtype of the stored weights (the most common one), for reporting.
    pub fn stored_dtype(&self) -> Option<DType> {
        let mut counts: HashMap<DType, usize> = HashMap::new();
        for e in self.entries.values() {
            if let Some(dtype) = self.entry_dtype(e) {
                *counts.entry(dtype).or_default() += 1;
            }
        }
        counts.into_iter().max_by_key(|(_, n)| *n).map(|(d, _)| d)
    }

    fn entry_dtype(&self, e: &Entry) -> Option<DType> {
        match &self.files[e.file] {
            WeightFile::Safetensors(st, _) => st.get(&e.stored_name).ok().and_then(|v| DType::try_from(v.dtype()).ok()),
            WeightFile::Buffered(st) => st.get(&e.stored_name).ok().and_then(|v| DType::try_from(v.dtype()).ok()),
            WeightFile::Pth(p) => p.tensor_infos().get(&e.stored_name).map(|i| i.dtype),
        }
    }

    pub(crate) fn record(&self, err: Error) -> candle_core::Error {
        let msg = err.to_string();
        if let Ok(mut slot) = self.first_error.lock() {
            slot.get_or_insert(err);
        }
        candle_core::Error::Msg(msg)
    }

    /// The entry of tensor `name`, noted as requested, after checking it against `expected`.
    fn entry(&self, name: &str, expected: Option<&Shape>) -> Result<&Entry> {
        if let Ok(mut r) = self.requested.lock() {
            r.insert(name.to_string());
        }
        let Some(entry) = self.entries.get(name) else {
            return Err(Error::MissingTensor {
                name: name.into(),
                expected: expected.map(|s| s.dims().to_vec()).unwrap_or_default(),
                path: self.location(),
            });
        };
        if let Some(shape) = expected {
            if shape.dims() != entry.shape.as_slice() {
                return Err(Error::ShapeMismatch {
                    name: name.into(),
                    expected: shape.dims().to_vec(),
                    found: entry.shape.clone(),
                    path: self.paths[entry.file].clone(),
                });
            }
        }
        Ok(entry)
    }

    /// Tensor `name` as float32 values left in the shared file mapping, when the file stores it so (a
    /// memory-mapped safetensors file holding float32 at a 4-byte aligned offset); `None` when it does
    /// not, and the tensor must be loaded instead. For weights that are transformed on first use (the
    /// Winograd convolutions'): the load then copies nothing, as diffusers' memory-mapped load does not.
    pub(crate) fn mapped_f32(&self, name: &str, expected: &Shape) -> Result<Option<MappedF32>> {
        let entry = self.entry(name, Some(expected))?;
        let (WeightFile::Safetensors(_, map), Some(range)) = (&self.files[entry.file], &entry.f32_bytes) else {
            return Ok(None);
        };
        let len = expected.elem_count();
        if range.len() != len * 4 {
            return Ok(None);
        }
        Ok(MappedF32::new(Arc::clone(map), range.start, len))
    }

    /// Tensor `name` of shape `shape`, converted to `dtype` as loading converts it, on the CPU.
    pub(crate) fn read(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.load(name, Some(&Shape::from(shape.to_vec())), dtype, &Device::Cpu)
    }

    fn load(&self, name: &str, expected: Option<&Shape>, dtype: DType, dev: &Device) -> Result<Tensor> {
        let entry = self.entry(name, expected)?;
        let path = &self.paths[entry.file];
        let bad = |reason: String| Error::Weights { path: path.clone(), reason: format!("tensor `{name}`: {reason}") };
        let tensor = match &self.files[entry.file] {
            WeightFile::Safetensors(st, _) => {
                let view = st.get(&entry.stored_name).map_err(|e| bad(candle_message(&e)))?;
                let tensor = view.load(&Device::Cpu).map_err(|e| bad(candle_message(&e)))?;
                release_mapped_pages(view.data());
                tensor
            }
            WeightFile::Buffered(st) => {
                st.load(&entry.stored_name, &Device::Cpu).map_err(|e| bad(candle_message(&e)))?
            }
            WeightFile::Pth(p) => p
                .get(&entry.stored_name)
                .map_err(|e| bad(candle_message(&e)))?
                .ok_or_else(|| bad("listed but not readable".into()))?,
        };
        if !tensor.dtype().is_float() {
            return Err(bad(format!("has dtype {:?}; weights must be floating point", tensor.dtype())));
        }
        Ok(tensor.to_dtype(dtype)?.to_device(dev)?)
    }
}

fn add_entry(
    entries: &mut HashMap<String, Entry>,
    path: &Path,
    file: usize,
    stored_name: String,
    shape: Vec<usize>,
    f32_bytes: Option<std::ops::Range<usize>>,
) -> Result<()> {
    let name = modern_name(&stored_name);
    let entry = Entry { file, stored_name, shape, f32_bytes };
    if let Some(previous) = entries.insert(name.clone(), entry) {
        // The same tensor in two shards is ambiguous. (Within one file, a legacy name renamed onto a
        // current one wins, as in diffusers.)
        if previous.file != file {
            return Err(Error::Weights {
                path: path.to_path_buf(),
                reason: format!("tensor `{name}` appears more than once in the checkpoint"),
            });
        }
    }
    Ok(())
}

/// diffusers' `_fix_state_dict_keys_on_load`: attention blocks saved before diffusers 0.14 name their
/// projections `query`/`key`/`value`/`proj_attn`; today they are `to_q`/`to_k`/`to_v`/`to_out.0`.
pub fn modern_name(name: &str) -> String {
    const RENAMES: [(&str, &str); 4] =
        [(".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0.")];
    if !name.contains("attentions.") {
        return name.to_string();
    }
    for (old, new) in RENAMES {
        if let Some(pos) = name.rfind(old) {
            let rest = &name[pos + old.len()..];
            if rest == "weight" || rest == "bias" {
                return format!("{}{}{}", &name[..pos], new, rest);
            }
        }
    }
    name.to_string()
}

/// The backend candle's `VarBuilder` reads through.
pub struct StoreBackend<'a>(pub &'a WeightStore);

impl SimpleBackend for StoreBackend<'_> {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.load(name, Some(&s), dtype, dev).map_err(|e| self.0.record(e))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.load(name, None, dtype, dev).map_err(|e| self.0.record(e))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.entries.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loading a tensor drops its pages from the mapping; reading it again faults the same bytes back
    /// in, so a second load (and every other tensor of the file) still reads the file's contents.
    #[test]
    fn tensors_read_the_same_after_their_pages_are_released() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/unet2d/cifar10_like/diffusion_pytorch_model.safetensors");
        let store = WeightStore::open(std::slice::from_ref(&path)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let reference = BufferedSafetensors::new(bytes).unwrap();
        let mut names: Vec<_> = store.entries.keys().cloned().collect();
        names.sort();
        for _ in 0..2 {
            for name in &names {
                let ours = store.load(name, None, DType::F32, &Device::Cpu).unwrap();
                let expected = reference.load(&store.entries[name].stored_name, &Device::Cpu).unwrap();
                let expected = expected.to_dtype(DType::F32).unwrap();
                let diff = (ours - expected).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
                assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{name}");
            }
        }
    }

    /// Float32 tensors of a safetensors file are read in place, with the values the loaded tensor
    /// has; float16 ones and `.bin` files are not (`None`: the caller loads them); a wrong shape or a
    /// missing name is the same error `load` gives.
    #[test]
    fn float32_safetensors_data_is_read_in_place() {
        let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet2d");
        let path = fixtures.join("cifar10_like/diffusion_pytorch_model.safetensors");
        let store = WeightStore::open(std::slice::from_ref(&path)).unwrap();
        let name = "conv_in.weight";
        let shape = Shape::from(store.entries[name].shape.clone());
        let loaded = store.load(name, Some(&shape), DType::F32, &Device::Cpu).unwrap();
        let expected = loaded.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mapped = store.mapped_f32(name, &shape).unwrap().expect("float32 safetensors are mapped");
        assert_eq!(mapped.as_slice(), expected.as_slice());
        // Released pages read back from the file.
        mapped.release();
        assert_eq!(mapped.as_slice(), expected.as_slice());
        // The mapping outlives the store.
        drop(store);
        assert_eq!(mapped.as_slice(), expected.as_slice());
        let store = WeightStore::open(std::slice::from_ref(&path)).unwrap();
        let wrong = Shape::from(vec![1, 2, 3]);
        let error = store.mapped_f32(name, &wrong).unwrap_err();
        assert!(matches!(error, Error::ShapeMismatch { .. }), "{error}");
        let error = store.mapped_f32("conv_in.nope", &shape).unwrap_err();
        assert!(matches!(error, Error::MissingTensor { .. }), "{error}");

        let half = fixtures.join("fp16_variant/diffusion_pytorch_model.fp16.safetensors");
        let store = WeightStore::open(std::slice::from_ref(&half)).unwrap();
        let shape = Shape::from(store.entries[name].shape.clone());
        assert!(store.mapped_f32(name, &shape).unwrap().is_none(), "float16 is converted, not mapped");
        let bin = fixtures.join("pytorch_bin/diffusion_pytorch_model.bin");
        let store = WeightStore::open(std::slice::from_ref(&bin)).unwrap();
        let shape = Shape::from(store.entries[name].shape.clone());
        assert!(store.mapped_f32(name, &shape).unwrap().is_none(), "a .bin is loaded");
    }

    #[test]
    fn legacy_attention_names_are_renamed() {
        assert_eq!(modern_name("mid_block.attentions.0.query.weight"), "mid_block.attentions.0.to_q.weight");
        assert_eq!(
            modern_name("down_blocks.1.attentions.0.proj_attn.bias"),
            "down_blocks.1.attentions.0.to_out.0.bias"
        );
        assert_eq!(
            modern_name("down_blocks.1.attentions.0.group_norm.weight"),
            "down_blocks.1.attentions.0.group_norm.weight"
        );
        assert_eq!(modern_name("down_blocks.1.resnets.0.conv1.weight"), "down_blocks.1.resnets.0.conv1.weight");
    }
}
