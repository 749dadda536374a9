//! The Python `UNet2DModel`: `from_pretrained`, `__call__`/`forward`, `config`, `dtype`, `device`,
//! `num_parameters`, `save_pretrained`, `state_dict`, `__repr__`. Argument parsing and conversion only;
//! the model is the crate's.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Tensor;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString, PyTuple, PyType};

use super::args::{device_arg, dtype_arg, path_arg};
use super::arrays::{is_ndarray, is_torch, is_torch_tensor, numpy_module, to_tensor, Framework, HostArray, Numbers};
use super::errors::{argument_error, argument_error_from, guarded, or_interrupt, run_detached, ErrorKind};
use super::hub_args::{take_hub_kwargs, Caller};
use super::rng::type_name;
use crate::config::{ClassEmbeddingKind, TimeEmbeddingKind};
use crate::device::{device_name, dtype_name, parse_device, parse_dtype};
use crate::error::Result;
use crate::loading::{LoadOptions, LoadReport};
use crate::saving::{parse_shard_size, SaveOptions, DEFAULT_MAX_SHARD_SIZE};
use crate::unet::{Timestep, UNet2DModel};

/// The module holding the pure-Python helper classes (`UNet2DOutput`, `FrozenDict`).
const OUTPUTS_MODULE: &str = "candle_unet2d._outputs";

/// diffusers' `UNet2DModel`, computing with candle. Load with `UNet2DModel.from_pretrained(path)`.
#[pyclass(frozen, name = "UNet2DModel", module = "candle_unet2d")]
pub struct PyUNet2DModel {
    /// Shared with the pipeline that loaded it, if any.
    model: Arc<UNet2DModel>,
    report: LoadReport,
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
                let options = LoadOptions {
                    subfolder,
                    variant,
                    device: parse_device(&device)?,
                    dtype: parse_dtype(&dtype)?,
                    use_safetensors: hub_args.use_safetensors,
                    hub: hub_args.hub,
                };
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

            let model = &self.model;
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
        dtype_name(self.model.dtype())
    }

    /// The device the weights live on: "cpu" or "cuda:N".
    #[getter]
    fn device(&self) -> String {
        device_name(self.model.device())
    }

    /// The number of weights, as diffusers' `ModelMixin.num_parameters`.
    #[pyo3(signature = (only_trainable=false, exclude_embeddings=false))]
    fn num_parameters(&self, py: Python<'_>, only_trainable: bool, exclude_embeddings: bool) -> PyResult<usize> {
        let config = self.model.config().clone();
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
            let model = &self.model;
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
            let model = &self.model;
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

    fn __repr__(&self) -> String {
        let c = self.model.config();
        let quoted = |items: &[String]| items.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
        let files: Vec<String> = self
            .report
            .weight_files
            .iter()
            .map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
            .collect();
        let channels: Vec<String> = c.block_out_channels.iter().map(|n| n.to_string()).collect();
        let stored =
            self.report.stored_dtype.map(|d| format!(", stored_dtype='{}'", dtype_name(d))).unwrap_or_default();
        format!(
            "UNet2DModel(path='{}', weights=[{}]{stored}, in_channels={}, out_channels={}, \
             block_out_channels=[{}], down_block_types=[{}], up_block_types=[{}], dtype='{}', device='{}')",
            self.report.model_dir.display(),
            quoted(&files),
            c.in_channels,
            c.out_channels,
            channels.join(", "),
            quoted(&c.down_block_types),
            quoted(&c.up_block_types),
            dtype_name(self.model.dtype()),
            device_name(self.model.device()),
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
        let config = config_dict(py, &model, path)?;
        Ok(Self { model, report, config })
    }

    /// The Rust model, shared.
    pub(crate) fn shared_model(&self) -> &Arc<UNet2DModel> {
        &self.model
    }
}

/// `model.config`: diffusers' config dict plus `_class_name` and `_name_or_path`, as a `FrozenDict`.
fn config_dict(py: Python<'_>, model: &UNet2DModel, path: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    static FROZEN_DICT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let json = model.config().to_json().to_string();
    let fields = py.import("json")?.call_method1("loads", (json,))?;
    let dict = PyDict::new(py);
    dict.set_item("_class_name", "UNet2DModel")?;
    dict.update(fields.cast()?)?;
    dict.set_item("_name_or_path", py.import("os")?.call_method1("fspath", (path,))?)?;
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
