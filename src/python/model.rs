//! The Python `UNet2DModel`: `from_pretrained`, `UNet2DModel(**config)`, `from_config`, `load_config`,
//! `__call__`/`forward`, `config`, `dtype`, `device`, `num_parameters`, `save_pretrained`, `state_dict`,
//! `load_state_dict`, `to`/`half`/`float`/`cpu`/`cuda`, `eval`/`train`/`requires_grad_`, `parameters`,
//! `named_parameters`, `__repr__`.
//! Argument parsing and conversion only; the model is the crate's.
//!
//! The Python object is mutable as a torch module is (`load_state_dict` and `to` work in place), while
//! the Rust model stays immutable: the object holds the current model behind a lock and replaces it.
//! A call in progress keeps the model it started with; a pipeline holding this object (`pipe.unet`)
//! reads the current model at each call, so it sees the change, as in diffusers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use candle_core::Tensor;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};

use super::args::{device_arg, dtype_arg, path_arg};
use super::arrays::{is_ndarray, is_torch, is_torch_tensor, numpy_module, to_tensor, Framework, HostArray, Numbers};
use super::config_values::{json_to_py, py_to_json};
use super::errors::{argument_error, argument_error_from, guarded, or_interrupt, run_detached, ErrorKind};
use super::hub_args::{take_hub_kwargs, Caller};
use super::rng::{default_generator, type_name};
use crate::config::{ClassEmbeddingKind, TimeEmbeddingKind};
use crate::device::{device_name, dtype_name, parse_device, parse_dtype};
use crate::error::Result;
use crate::loading::{resolve_model_dir, LoadOptions, LoadReport};
use crate::random_init::InitOptions;
use crate::saving::{parse_shard_size, SaveOptions, DEFAULT_MAX_SHARD_SIZE};
use crate::unet::{Timestep, UNet2DModel};
use crate::UNet2DConfig;

/// The module holding the pure-Python helper classes (`UNet2DOutput`, `FrozenDict`).
const OUTPUTS_MODULE: &str = "candle_unet2d._outputs";

/// diffusers' `UNet2DModel`, computing with candle. Load with `UNet2DModel.from_pretrained(path)`.
#[pyclass(frozen, name = "UNet2DModel", module = "candle_unet2d")]
pub struct PyUNet2DModel {
    /// The current model: replaced (never changed) by `load_state_dict` and `to`. Locked only to
    /// read or replace the `Arc`, never across Python or model work.
    model: RwLock<Arc<UNet2DModel>>,
    /// What `from_pretrained` read; `None` for a model made from a config.
    report: Option<LoadReport>,
    /// A `FrozenDict` of the config, built once.
    config: Py<PyAny>,
}

/// A timestep as diffusers reads it: Python numbers become one integer, arrays keep their values.
enum TimestepArg {
    Int(i64),
    Tensor(Tensor),
}

#[pymethods]
impl PyUNet2DModel {
    /// Loads a model folder, or a Hub id (downloaded into the Hugging Face cache), as diffusers
    /// does; the Hub keywords (`revision`, `token`, …) come through `**kwargs` (see the stub).
    #[staticmethod]
    #[pyo3(signature = (path, subfolder=None, variant=None, device=None, dtype=None, torch_dtype=None, **kwargs))]
    #[allow(clippy::too_many_arguments)]
    fn from_pretrained<'py>(
        py: Python<'py>,
        path: &Bound<'py, PyAny>,
        subfolder: Option<&Bound<'py, PyAny>>,
        variant: Option<&Bound<'py, PyAny>>,
        device: Option<&Bound<'py, PyAny>>,
        dtype: Option<&Bound<'py, PyAny>>,
        torch_dtype: Option<&Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guarded(py, || {
            let path_buf = path_arg(py, path)?;
            let subfolder = optional_str(subfolder, "subfolder")?;
            let variant = optional_str(variant, "variant")?;
            let device = device_arg(py, device)?;
            let dtype = dtype_arg(py, dtype, torch_dtype)?;
            let (hub_args, _) = take_hub_kwargs(py, kwargs, Caller::Model)?;
            let output_loading_info = hub_args.output_loading_info;

            let (model, report) = run_detached(py, move || {
                let options = hub_args.load_options(subfolder, variant, &device, &dtype)?;
                UNet2DModel::from_pretrained_with_report(&path_buf, &options)
            })?;

            let model = Bound::new(py, Self::from_shared(py, Arc::new(model), report, path)?)?.into_any();
            if !output_loading_info {
                return Ok(model);
            }
            // Loading fails on any missing, unused or mismatched tensor, so a loaded model has none.
            let info = PyDict::new(py);
            for key in ["missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"] {
                info.set_item(key, pyo3::types::PyList::empty(py))?;
            }
            Ok(PyTuple::new(py, [model, info.into_any()])?.into_any())
        })
    }

    /// Runs the UNet; see `forward`.
    #[pyo3(signature = (sample, timestep, class_labels=None, return_dict=None))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        sample: &Bound<'py, PyAny>,
        timestep: &Bound<'py, PyAny>,
        class_labels: Option<&Bound<'py, PyAny>>,
        return_dict: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.forward(py, sample, timestep, class_labels, return_dict)
    }

    /// Runs the UNet on `sample` [B, C, H, W] at `timestep`, as diffusers' `UNet2DModel.forward`.
    #[pyo3(
        signature = (sample, timestep, class_labels=None, return_dict=None),
        text_signature = "(self, sample, timestep, class_labels=None, return_dict=True)"
    )]
    fn forward<'py>(
        &self,
        py: Python<'py>,
        sample: &Bound<'py, PyAny>,
        timestep: &Bound<'py, PyAny>,
        class_labels: Option<&Bound<'py, PyAny>>,
        return_dict: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guarded(py, || {
            let framework = Framework::of(sample)?;
            let sample = to_tensor(sample, "sample", Numbers::Float)?;
            let timestep = timestep_arg(timestep)?;
            let class_labels = match class_labels.filter(|c| !c.is_none()) {
                Some(c) => Some(to_tensor(c, "class_labels", Numbers::Real)?),
                None => None,
            };
            let return_dict = match return_dict.filter(|r| !r.is_none()) {
                None => true,
                Some(r) => r.is_truthy().map_err(|e| argument_error_from(py, "return_dict", "must be a bool", e))?,
            };

            let model = self.current();
            let output = run_detached(py, move || {
                let timestep = match &timestep {
                    TimestepArg::Int(t) => Timestep::Int(*t),
                    TimestepArg::Tensor(t) => Timestep::Tensor(t),
                };
                let out = model.forward(&sample, timestep, class_labels.as_ref())?;
                HostArray::from_tensor(&out)
            })?;
            let output = output
                .into_python(py, &framework)
                .map_err(|e| internal_from(py, "cannot build the output array", e))?;

            if return_dict {
                static OUTPUT_CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
                let class = OUTPUT_CLASS.import(py, OUTPUTS_MODULE, "UNet2DOutput")?;
                class.call1((output,))
            } else {
                Ok(PyTuple::new(py, [output])?.into_any())
            }
        })
    }

    /// The config (a read-only dict with attribute access), as diffusers' `model.config`.
    #[getter]
    fn config(&self, py: Python<'_>) -> Py<PyAny> {
        self.config.clone_ref(py)
    }

    /// The dtype the model computes in: "float32", "float16" or "bfloat16".
    #[getter]
    fn dtype(&self) -> &'static str {
        dtype_name(self.current().dtype())
    }

    /// The device the weights live on: "cpu" or "cuda:N".
    #[getter]
    fn device(&self) -> String {
        device_name(self.current().device())
    }

    /// The number of weights, as diffusers' `ModelMixin.num_parameters`.
    #[pyo3(signature = (only_trainable=false, exclude_embeddings=false))]
    fn num_parameters(&self, py: Python<'_>, only_trainable: bool, exclude_embeddings: bool) -> PyResult<usize> {
        let config = self.current().config().clone();
        run_detached(py, move || {
            let spec = config.validate()?;
            let shapes = crate::stats::parameter_shapes(&config)?;
            let learned = spec.time_embedding == TimeEmbeddingKind::Learned;
            let fourier = spec.time_embedding == TimeEmbeddingKind::Fourier;
            let table = matches!(spec.class_embedding, Some(ClassEmbeddingKind::Table(_)));
            let keep = |name: &str| {
                // nn.Embedding weights: the class table, and the learned time embedding.
                let embedding = (table && name == "class_embedding.weight") || (learned && name == "time_proj.weight");
                // GaussianFourierProjection's weight is a parameter with requires_grad=False.
                let frozen = fourier && name == "time_proj.weight";
                !((exclude_embeddings && embedding) || (only_trainable && frozen))
            };
            Ok(shapes.iter().filter(|(n, _)| keep(n)).map(|(_, s)| s.iter().product::<usize>()).sum())
        })
    }

    /// Saves the model as diffusers' `save_pretrained` does (see the stub for the arguments).
    #[pyo3(signature = (
        save_directory,
        is_main_process=true,
        safe_serialization=true,
        variant=None,
        max_shard_size=None,
        push_to_hub=false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn save_pretrained(
        &self,
        py: Python<'_>,
        save_directory: &Bound<'_, PyAny>,
        is_main_process: bool,
        safe_serialization: bool,
        variant: Option<&Bound<'_, PyAny>>,
        max_shard_size: Option<&Bound<'_, PyAny>>,
        push_to_hub: bool,
    ) -> PyResult<()> {
        guarded(py, || {
            let dir: PathBuf = save_directory.extract().map_err(|e| {
                let got = type_name(save_directory);
                argument_error_from(py, "save_directory", format!("must be a str or os.PathLike, got {got}"), e)
            })?;
            if !safe_serialization {
                return Err(argument_error(
                    py,
                    "safe_serialization",
                    "only safetensors is written: safe_serialization=False (a PyTorch pickle, \
                     diffusion_pytorch_model.bin) is not supported",
                ));
            }
            if push_to_hub {
                return Err(ErrorKind::Unsupported.err(
                    py,
                    "push_to_hub=True: candle_unet2d does not upload; save the folder, then upload it with \
                     huggingface_hub (HfApi().upload_folder)",
                ));
            }
            let variant = optional_str(variant, "variant")?;
            let max_shard_size = shard_size_arg(max_shard_size)?;
            let options = SaveOptions { variant, max_shard_size };
            let model = self.current();
            run_detached(py, move || {
                if is_main_process {
                    model.save_pretrained(&dir, &options)
                } else {
                    model.save_weights(&dir, &options)
                }
            })
        })
    }

    /// Every tensor under diffusers' names, as numpy arrays of the model's dtype (see the stub).
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guarded(py, || {
            let model = self.current();
            let arrays = run_detached(py, move || {
                let state = model.state_dict()?;
                state.into_iter().map(|(name, t)| Ok((name, HostArray::from_tensor(&t)?))).collect::<Result<Vec<_>>>()
            })?;
            let dict = PyDict::new(py);
            for (name, array) in arrays {
                dict.set_item(name, array.into_python(py, &Framework::Numpy)?)?;
            }
            Ok(dict)
        })
    }

    /// `UNet2DModel(**config)`: a freshly initialised model, as diffusers' constructor (see the stub).
    #[new]
    #[pyo3(signature = (**config))]
    fn new(py: Python<'_>, config: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        guarded(py, || {
            let mut fields = serde_json::Map::new();
            insert_config_keywords(py, &mut fields, config, None)?;
            Self::initialised(py, fields)
        })
    }

    /// A freshly initialised model from a config dict, or `(model, unused)` with
    /// `return_unused_kwargs=True` (see the stub).
    #[staticmethod]
    #[pyo3(signature = (config=None, return_unused_kwargs=false, **kwargs))]
    fn from_config(
        py: Python<'_>,
        config: Option<&Bound<'_, PyAny>>,
        return_unused_kwargs: bool,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        guarded(py, || {
            // The config's entries, and its keys in its own order (the map sorts them).
            let (mut original, mut order) = (serde_json::Map::new(), Vec::new());
            if let Some(config) = config.filter(|c| !c.is_none()) {
                let config = if config.is_instance_of::<PyString>() || config.hasattr("__fspath__")? {
                    // diffusers still takes a path here (deprecated): as `from_config(load_config(path))`.
                    Self::load_config(py, config, None)?.into_any()
                } else {
                    config.clone()
                };
                let value = py_to_json(&config, "")?;
                let serde_json::Value::Object(map) = value else {
                    return Err(argument_error(
                        py,
                        "config",
                        format!("must be a dict (e.g. model.config or load_config(path)), got {}", type_name(&config)),
                    ));
                };
                if return_unused_kwargs {
                    for key in config.call_method0("keys")?.try_iter()? {
                        order.extend(key?.extract::<String>().ok());
                    }
                }
                original = map;
            }
            let mut fields = config_fields(py, original.clone())?;
            if !return_unused_kwargs {
                insert_config_keywords(py, &mut fields, kwargs, None)?;
                return Ok(Self::initialised(py, fields)?.into_pyobject(py)?.into_any().unbind());
            }
            // As diffusers' `extract_init_dict` + `from_config`: the config's keys the model does not
            // take, then the keywords it does not take (asked for, so not an error here), then every
            // other key of the config that did not become an argument (`_class_name`, `_name_or_path`,
            // `_use_default_values` and the keys it lists).
            let (keys, unused) = (config_keys(), PyDict::new(py));
            let in_order = || order.iter().filter_map(|key| original.get(key).map(|value| (key, value)));
            for (key, value) in in_order() {
                if !key.starts_with('_') && !keys.contains(key) {
                    unused.set_item(key, json_to_py(py, value)?)?;
                }
            }
            insert_config_keywords(py, &mut fields, kwargs, Some(&unused))?;
            for (key, value) in in_order() {
                if !fields.contains_key(key) && !unused.contains(key)? {
                    unused.set_item(key, json_to_py(py, value)?)?;
                }
            }
            let model = Self::initialised(py, fields)?.into_pyobject(py)?.into_any();
            Ok(PyTuple::new(py, [model, unused.into_any()])?.into_any().unbind())
        })
    }

    /// The `config.json` of a model folder as a dict, as diffusers' `load_config` (see the stub).
    #[staticmethod]
    #[pyo3(signature = (pretrained_model_name_or_path, subfolder=None))]
    fn load_config<'py>(
        py: Python<'py>,
        pretrained_model_name_or_path: &Bound<'py, PyAny>,
        subfolder: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        guarded(py, || {
            let path = path_arg(py, pretrained_model_name_or_path)?;
            let subfolder = optional_str(subfolder, "subfolder")?;
            let json = run_detached(py, move || {
                // A config file itself, or a folder (a pipeline folder's unet/, a Hub id in the cache).
                let file = if path.is_file() && subfolder.is_none() {
                    path
                } else {
                    resolve_model_dir(&path, &LoadOptions { subfolder, ..LoadOptions::default() })?.join("config.json")
                };
                let text = crate::files::read_json_text(&file)?;
                let value: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| crate::Error::ConfigParse { path: file.clone(), reason: e.to_string() })?;
                if !value.is_object() {
                    return Err(crate::Error::ConfigParse {
                        path: file,
                        reason: "a config must be a JSON object".into(),
                    });
                }
                Ok(value)
            })?;
            Ok(json_to_py(py, &json)?.cast_into::<PyDict>()?)
        })
    }

    /// Loads weights by name, in place, as torch's `load_state_dict` (see the stub).
    #[pyo3(signature = (state_dict, strict=true, assign=false))]
    fn load_state_dict<'py>(
        &self,
        py: Python<'py>,
        state_dict: &Bound<'py, PyAny>,
        strict: bool,
        assign: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        guarded(py, || {
            if assign {
                return Err(ErrorKind::Unsupported.err(
                    py,
                    "assign=True: the model keeps its own dtype and device; the state dict's tensors are \
                     converted to them (assign=False)",
                ));
            }
            if !state_dict.hasattr("items")? {
                return Err(argument_error(
                    py,
                    "state_dict",
                    format!(
                        "must be a mapping of names to arrays (e.g. model.state_dict()), got {}",
                        type_name(state_dict)
                    ),
                ));
            }
            let mut tensors = Vec::new();
            for item in state_dict.call_method0("items")?.try_iter()? {
                let (key, value): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item?.extract()?;
                let name: String = key.extract().map_err(|_| {
                    argument_error(py, "state_dict", format!("keys must be str, got {}", type_name(&key)))
                })?;
                let tensor = to_tensor(&value, &format!("state_dict[{name:?}]"), Numbers::Real)?;
                tensors.push((name, tensor));
            }
            let model = self.current();
            let (loaded, keys) = run_detached(py, move || model.load_state_dict(tensors, strict))?;
            self.replace(loaded);
            static KEYS_CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
            let class = KEYS_CLASS.import(py, OUTPUTS_MODULE, "IncompatibleKeys")?;
            class.call1((keys.missing_keys, keys.unexpected_keys))
        })
    }

    /// Moves and/or converts the model in place, as torch's `Module.to`; returns the model (see the stub).
    #[pyo3(signature = (*args, device=None, dtype=None, non_blocking=false))]
    fn to<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, PyTuple>,
        device: Option<&Bound<'py, PyAny>>,
        dtype: Option<&Bound<'py, PyAny>>,
        non_blocking: bool,
    ) -> PyResult<Bound<'py, Self>> {
        let py = slf.py();
        guarded(py, || {
            let _ = non_blocking; // Copies are synchronous; accepted for drop-in code.
            let mut target = ToTarget::default();
            if args.len() > 2 {
                return Err(argument_error(
                    py,
                    "to",
                    format!("takes at most 2 positional arguments (device, dtype), got {}", args.len()),
                ));
            }
            for arg in args.iter() {
                target.positional(&arg)?;
            }
            if let Some(d) = device.filter(|d| !d.is_none()) {
                target.set_device(py, device_string(d)?)?;
            }
            if let Some(d) = dtype.filter(|d| !d.is_none()) {
                target.set_dtype(py, dtype_string(d, "dtype")?)?;
            }
            Self::convert(slf, target.device, target.dtype)
        })
    }

    /// Converts the model to float16 in place, as torch's `Module.half`; returns the model.
    fn half<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        guarded(slf.py(), || Self::convert(slf, None, Some("float16".into())))
    }

    /// Converts the model to float32 in place, as torch's `Module.float`; returns the model.
    fn float<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        guarded(slf.py(), || Self::convert(slf, None, Some("float32".into())))
    }

    /// Moves the model to the CPU in place, as torch's `Module.cpu`; returns the model.
    fn cpu<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        guarded(slf.py(), || Self::convert(slf, Some("cpu".into()), None))
    }

    /// Moves the model to a CUDA device in place (`device`: an index, "cuda:N" or a torch device;
    /// default 0), as torch's `Module.cuda`; returns the model.
    #[pyo3(signature = (device=None))]
    fn cuda<'py>(slf: &Bound<'py, Self>, device: Option<&Bound<'py, PyAny>>) -> PyResult<Bound<'py, Self>> {
        let py = slf.py();
        guarded(py, || {
            let name = match device.filter(|d| !d.is_none()) {
                None => "cuda".to_string(),
                Some(d) => device_string(d)?,
            };
            if !name.starts_with("cuda") {
                return Err(argument_error(py, "device", format!("must be a CUDA device, got {name:?}")));
            }
            Self::convert(slf, Some(name), None)
        })
    }

    /// Inference mode, which the model is always in; returns the model (for drop-in code).
    fn eval<'py>(slf: &Bound<'py, Self>) -> Bound<'py, Self> {
        slf.clone()
    }

    /// `train(False)` is `eval()`; `train()`/`train(True)` is refused: the model runs inference only.
    #[pyo3(signature = (mode=true))]
    fn train<'py>(slf: &Bound<'py, Self>, mode: bool) -> PyResult<Bound<'py, Self>> {
        if mode {
            return Err(ErrorKind::Unsupported.err(
                slf.py(),
                "train(): candle_unet2d runs inference only (no training mode, no gradients); train with \
                 diffusers on torch and load the result with from_pretrained or load_state_dict",
            ));
        }
        Ok(slf.clone())
    }

    /// `requires_grad_(False)` is a no-op returning the model; `requires_grad_(True)` is refused.
    #[pyo3(signature = (requires_grad=true))]
    fn requires_grad_<'py>(slf: &Bound<'py, Self>, requires_grad: bool) -> PyResult<Bound<'py, Self>> {
        if requires_grad {
            return Err(ErrorKind::Unsupported
                .err(slf.py(), "requires_grad_(True): candle_unet2d runs inference only and computes no gradients"));
        }
        Ok(slf.clone())
    }

    /// The weights as numpy arrays, as torch's `Module.parameters()` (every tensor of `state_dict`:
    /// the model has no buffers); an iterator over one read of the weights.
    #[pyo3(signature = (recurse=true))]
    fn parameters<'py>(&self, py: Python<'py>, recurse: bool) -> PyResult<Bound<'py, PyAny>> {
        let _ = recurse; // Every weight belongs to the model itself or its submodules: the same list.
        Ok(self.state_dict(py)?.values().try_iter()?.into_any())
    }

    /// `(name, array)` pairs, as torch's `Module.named_parameters()`.
    #[pyo3(signature = (prefix="", recurse=true, remove_duplicate=true))]
    fn named_parameters<'py>(
        &self,
        py: Python<'py>,
        prefix: &str,
        recurse: bool,
        remove_duplicate: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = (recurse, remove_duplicate); // No shared or nested-only weights: nothing to filter.
        let state = self.state_dict(py)?;
        if prefix.is_empty() {
            return Ok(state.items().try_iter()?.into_any());
        }
        let pairs = PyList::empty(py);
        for (name, array) in state.iter() {
            pairs.append((format!("{prefix}.{}", name.extract::<String>()?), array))?;
        }
        Ok(pairs.try_iter()?.into_any())
    }

    /// Always `False`: the model runs inference only.
    #[getter]
    fn training(&self) -> bool {
        false
    }

    fn __repr__(&self) -> String {
        let model = self.current();
        let c = model.config();
        let quoted = |items: &[String]| items.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
        let origin = match &self.report {
            Some(report) => {
                let files: Vec<String> = report
                    .weight_files
                    .iter()
                    .map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
                    .collect();
                let stored =
                    report.stored_dtype.map(|d| format!(", stored_dtype='{}'", dtype_name(d))).unwrap_or_default();
                format!("path='{}', weights=[{}]{stored}, ", report.model_dir.display(), quoted(&files))
            }
            None => String::new(),
        };
        let channels: Vec<String> = c.block_out_channels.iter().map(|n| n.to_string()).collect();
        format!(
            "UNet2DModel({origin}in_channels={}, out_channels={}, block_out_channels=[{}], down_block_types=[{}], \
             up_block_types=[{}], dtype='{}', device='{}')",
            c.in_channels,
            c.out_channels,
            channels.join(", "),
            quoted(&c.down_block_types),
            quoted(&c.up_block_types),
            dtype_name(model.dtype()),
            device_name(model.device()),
        )
    }
}

impl PyUNet2DModel {
    /// A Python model for `model`, shared (e.g. a pipeline's UNet); `path` is what it was loaded from.
    pub(crate) fn from_shared(
        py: Python<'_>,
        model: Arc<UNet2DModel>,
        report: LoadReport,
        path: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let config = config_dict(py, &model, Some(path))?;
        Ok(Self { model: RwLock::new(model), report: Some(report), config })
    }

    /// A Python model for a model made from a config (no files, no `_name_or_path`).
    fn fresh(py: Python<'_>, model: UNet2DModel) -> PyResult<Self> {
        let config = config_dict(py, &model, None)?;
        Ok(Self { model: RwLock::new(Arc::new(model)), report: None, config })
    }

    /// The current Rust model, shared: what a call that starts now computes with.
    pub(crate) fn shared_model(&self) -> Arc<UNet2DModel> {
        self.current()
    }

    fn current(&self) -> Arc<UNet2DModel> {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes `model` the current one (`load_state_dict`, `to`).
    fn replace(&self, model: UNet2DModel) {
        *self.model.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(model);
    }

    /// `to(device, dtype)` in place; `None` keeps the current one. Returns the object itself.
    fn convert<'py>(
        slf: &Bound<'py, Self>,
        device: Option<String>,
        dtype: Option<String>,
    ) -> PyResult<Bound<'py, Self>> {
        let py = slf.py();
        let this = slf.get();
        let model = this.current();
        let converted = run_detached(py, move || {
            let device = match device {
                Some(d) => parse_device(&d)?,
                None => model.device().clone(),
            };
            let dtype = match dtype {
                Some(d) => parse_dtype(&d)?,
                None => model.dtype(),
            };
            if device.same_device(model.device()) && dtype == model.dtype() {
                return Ok(None);
            }
            model.to(&device, dtype).map(Some)
        })?;
        if let Some(converted) = converted {
            this.replace(converted);
        }
        Ok(slf.clone())
    }
}

/// `model.config`: diffusers' config dict plus `_class_name` and `_name_or_path`, as a `FrozenDict`.
/// A model made from a config has no `_name_or_path` (as in diffusers).
fn config_dict(py: Python<'_>, model: &UNet2DModel, path: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
    static FROZEN_DICT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    // Converted directly: importing `json` for this was 3 ms of a fresh process's first load.
    let fields = json_to_py(py, &model.config().to_json())?;
    let dict = PyDict::new(py);
    dict.set_item("_class_name", "UNet2DModel")?;
    dict.update(fields.cast()?)?;
    if let Some(path) = path {
        dict.set_item("_name_or_path", py.import("os")?.call_method1("fspath", (path,))?)?;
    }
    Ok(FROZEN_DICT.import(py, OUTPUTS_MODULE, "FrozenDict")?.call1((dict,))?.unbind())
}

/// The timestep the way diffusers' `UNet2DModel.forward` reads it: a torch tensor or numpy array keeps
/// its values (floats stay floats); a Python or numpy scalar becomes `torch.tensor([t], dtype=torch.long)`,
/// i.e. an integer, a float truncated toward zero.
fn timestep_arg(obj: &Bound<'_, PyAny>) -> PyResult<TimestepArg> {
    let py = obj.py();
    if is_torch_tensor(obj)? || is_ndarray(obj) {
        return Ok(TimestepArg::Tensor(to_tensor(obj, "timestep", Numbers::Real)?));
    }
    let generic = numpy_module(py)?.getattr("generic")?;
    let scalar = if obj.is_instance(&generic)? { obj.call_method0("item")? } else { obj.clone() };
    if scalar.is_instance_of::<PyInt>() {
        // bool is an int, as for torch.tensor([True], dtype=torch.long).
        let t: i64 = scalar
            .extract()
            .map_err(|_| argument_error(py, "timestep", format!("{scalar} does not fit in a 64-bit integer")))?;
        return Ok(TimestepArg::Int(t));
    }
    if scalar.is_instance_of::<PyFloat>() {
        let t: f64 = scalar.extract()?;
        if !t.is_finite() || t.trunc().abs() >= 9.2e18 {
            return Err(argument_error(py, "timestep", format!("{t} is not a finite timestep")));
        }
        return Ok(TimestepArg::Int(t.trunc() as i64));
    }
    Err(argument_error(
        py,
        "timestep",
        format!("must be an int, a float, a numpy array or a torch tensor, got {}", type_name(obj)),
    ))
}

/// Config keywords (`UNet2DModel(**config)`, `from_config`'s overrides) into `fields`. One that is not a
/// `UNet2DModel` argument goes into `unused` as given (`from_config(..., return_unused_kwargs=True)`),
/// or without it is an error naming it.
fn insert_config_keywords(
    py: Python<'_>,
    fields: &mut serde_json::Map<String, serde_json::Value>,
    keywords: Option<&Bound<'_, PyDict>>,
    unused: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    for (key, value) in keywords.into_iter().flat_map(|k| k.iter()) {
        let name: String = key.extract()?;
        match unused {
            Some(unused) if !config_keys().contains(&name) => unused.set_item(key, value)?,
            _ => {
                check_config_key(py, &name)?;
                fields.insert(name.clone(), py_to_json(&value, &name)?);
            }
        }
    }
    Ok(())
}

/// An optional string argument.
pub(crate) fn optional_str(obj: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<String>> {
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) => o
            .extract::<String>()
            .map(Some)
            .map_err(|_| argument_error(o.py(), name, format!("must be a str or None, got {}", type_name(o)))),
    }
}

/// A dtype argument as a name: a str, a torch dtype (`str()` gives "torch.float16"), or anything
/// `numpy.dtype` accepts.
pub(crate) fn dtype_string(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<String> {
    let py = obj.py();
    if obj.is_instance_of::<PyString>() {
        return obj.extract();
    }
    if is_torch(obj) {
        return Ok(obj.str()?.to_string());
    }
    let numpy_name = numpy_module(py)?.call_method1("dtype", (obj,)).and_then(|d| d.getattr("name"));
    match numpy_name {
        Ok(n) => Ok(n.extract()?),
        Err(e) => Err(or_interrupt(py, e, || {
            argument_error(
                py,
                name,
                format!(
                    "must be a dtype name (\"float32\", \"float16\", \"bfloat16\") or a torch dtype, got {}",
                    type_name(obj)
                ),
            )
        })),
    }
}

/// `max_shard_size`: an int (bytes) or a size string such as `"10GB"` (diffusers' default when absent).
fn shard_size_arg(obj: Option<&Bound<'_, PyAny>>) -> PyResult<u64> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else { return Ok(DEFAULT_MAX_SHARD_SIZE) };
    let py = obj.py();
    if obj.is_instance_of::<PyString>() {
        let text: String = obj.extract()?;
        return run_detached(py, move || parse_shard_size(&text));
    }
    if obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>() {
        return obj
            .extract::<u64>()
            .map_err(|_| argument_error(py, "max_shard_size", format!("{obj} is not a number of bytes (an int ≥ 0)")));
    }
    Err(argument_error(
        py,
        "max_shard_size",
        format!("must be an int (bytes) or a str such as \"10GB\", got {}", type_name(obj)),
    ))
}

/// An `InternalError` caused by a Python exception.
fn internal_from(py: Python<'_>, what: &str, cause: PyErr) -> PyErr {
    let err = ErrorKind::Internal.err(py, format!("{what}: {cause}"));
    err.set_cause(py, Some(cause));
    err
}

/// The config keys `UNet2DModel(**config)` takes: diffusers' constructor arguments.
fn config_keys() -> Vec<String> {
    match UNet2DConfig::default().to_json() {
        serde_json::Value::Object(map) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Refuses a keyword that is not one of `UNet2DModel`'s constructor arguments, naming it.
fn check_config_key(py: Python<'_>, key: &str) -> PyResult<()> {
    let keys = config_keys();
    if keys.iter().any(|k| k == key) {
        return Ok(());
    }
    Err(argument_error(
        py,
        key,
        format!("is not an argument of UNet2DModel (its config keys are: {})", keys.join(", ")),
    ))
}

/// The constructor arguments of a config dict, as diffusers' `extract_init_dict` takes them: keys
/// starting with `_` are metadata and dropped, keys listed in `_use_default_values` take the default,
/// and keys `UNet2DModel` does not know are ignored with a warning.
fn config_fields(
    py: Python<'_>,
    mut map: serde_json::Map<String, serde_json::Value>,
) -> PyResult<serde_json::Map<String, serde_json::Value>> {
    if let Some(serde_json::Value::Array(defaults)) = map.get("_use_default_values").cloned() {
        for key in defaults.iter().filter_map(|k| k.as_str()) {
            map.remove(key);
        }
    }
    let keys = config_keys();
    let mut fields = serde_json::Map::new();
    let mut ignored = Vec::new();
    for (key, value) in map {
        if key.starts_with('_') {
            continue;
        }
        if keys.contains(&key) {
            fields.insert(key, value);
        } else {
            ignored.push(key);
        }
    }
    if !ignored.is_empty() {
        let message = format!(
            "The config attributes {{{}}} were passed to UNet2DModel, but are not expected and will be ignored.",
            ignored.iter().map(|k| format!("'{k}'")).collect::<Vec<_>>().join(", ")
        );
        py.import("warnings")?.call_method1("warn", (message,))?;
    }
    Ok(fields)
}

impl PyUNet2DModel {
    /// A model of the config `fields` (the rest diffusers' defaults), initialised as torch initialises
    /// a new module, with a seed drawn from the default generator: `candle_unet2d.manual_seed(n)`
    /// first makes it reproducible, as `torch.manual_seed(n)` does for diffusers.
    fn initialised(py: Python<'_>, fields: serde_json::Map<String, serde_json::Value>) -> PyResult<Self> {
        let seed = default_generator(py)?.bind(py).get().lock().random_u64();
        let json = serde_json::Value::Object(fields).to_string();
        let model = run_detached(py, move || {
            let config = UNet2DConfig::from_json_str(&json, Path::new("the UNet2DModel arguments"))?;
            UNet2DModel::from_config(config, &InitOptions { seed, ..InitOptions::default() })
        })?;
        Self::fresh(py, model)
    }
}

/// The device and dtype `to(...)` was given; `None` keeps the model's.
#[derive(Default)]
struct ToTarget {
    device: Option<String>,
    dtype: Option<String>,
}

impl ToTarget {
    /// A positional argument of `to`: a device (a str, a torch device, a CUDA index) or a dtype (a
    /// torch or numpy dtype, or a dtype name), or a torch tensor (its device and dtype, as torch).
    fn positional(&mut self, arg: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = arg.py();
        if arg.is_none() {
            return Ok(());
        }
        if is_torch_tensor(arg)? {
            self.set_device(py, arg.getattr("device")?.str()?.to_string())?;
            return self.set_dtype(py, arg.getattr("dtype")?.str()?.to_string());
        }
        if arg.is_instance_of::<PyString>() {
            let name: String = arg.extract()?;
            return if parse_dtype(&name).is_ok() { self.set_dtype(py, name) } else { self.set_device(py, name) };
        }
        if is_torch(arg) {
            let name = arg.str()?.to_string();
            return if name.starts_with("torch.") { self.set_dtype(py, name) } else { self.set_device(py, name) };
        }
        if arg.is_instance_of::<PyInt>() && !arg.is_instance_of::<PyBool>() {
            return self.set_device(py, device_string(arg)?);
        }
        self.set_dtype(py, dtype_string(arg, "dtype")?)
    }

    fn set_device(&mut self, py: Python<'_>, name: String) -> PyResult<()> {
        if self.device.replace(name).is_some() {
            return Err(argument_error(py, "device", "given twice"));
        }
        Ok(())
    }

    fn set_dtype(&mut self, py: Python<'_>, name: String) -> PyResult<()> {
        if self.dtype.replace(name).is_some() {
            return Err(argument_error(py, "dtype", "given twice"));
        }
        Ok(())
    }
}

/// A device argument as a name: a str, a torch device, or a CUDA index (`cuda:N`).
fn device_string(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    let py = obj.py();
    if obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>() {
        let index: u32 =
            obj.extract().map_err(|_| argument_error(py, "device", format!("{obj} is not a CUDA index")))?;
        return Ok(format!("cuda:{index}"));
    }
    device_arg(py, Some(obj))
}
