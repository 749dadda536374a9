//! The Python `DiffusionPipeline`: the one base class of every pipeline (`DDPMPipeline`, …,
//! `RePaintPipeline`, `UNet2DPipeline`). The subclasses, made in `candle_unet2d._pipelines`, only give
//! diffusers' `__call__` signatures and forward them to [`PyDiffusionPipeline::_sample`]; which class
//! an object is ([`PipelineKind`], read from its `_class_name`) decides what its constructor does to
//! the scheduler and which loop it runs. Sampling itself is in [`super::sampling`].

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule, PyType};

use super::args::{device_arg, dtype_arg, path_arg};
use super::errors::{argument_error, guarded, run_detached, to_py_err, ErrorKind};
use super::hub_args::{take_hub_kwargs, Caller};
use super::model::{optional_str, PyUNet2DModel};
use super::rng::{lock, type_name};
use super::sampling::{sample, SampleArgs};
use super::schedulers::{scheduler_object, PySchedulerMixin};
use crate::device::{device_name, dtype_name};
use crate::pipeline::{PipelineKind, UNet2DPipeline};

/// The pure-Python helpers: the progress bar, the image conversions.
pub(crate) const PIPELINE_MODULE: &str = "candle_unet2d._pipeline";
/// The module defining one subclass per pipeline class.
const CLASSES_MODULE: &str = "candle_unet2d._pipelines";

/// A UNet and a scheduler that sample images, as diffusers' pipelines.
#[pyclass(frozen, subclass, name = "DiffusionPipeline", module = "candle_unet2d")]
pub struct PyDiffusionPipeline {
    pub(crate) kind: PipelineKind,
    pub(crate) unet: Py<PyUNet2DModel>,
    /// Assignable; locked only to read or replace the reference.
    pub(crate) scheduler: Mutex<Py<PySchedulerMixin>>,
    /// Keyword arguments for the progress bar (`set_progress_bar_config`).
    pub(crate) progress_config: Mutex<Py<PyDict>>,
    /// The folder it was loaded from, if any.
    path: Mutex<Option<PathBuf>>,
}

#[pymethods]
impl PyDiffusionPipeline {
    /// `Cls(unet=…, scheduler=…)`: the class's constructor, which (DDIM, PNDM) rebuilds the scheduler as
    /// its own scheduler class from its config, as diffusers' does.
    #[new]
    #[classmethod]
    fn new(cls: &Bound<'_, PyType>, unet: &Bound<'_, PyAny>, scheduler: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = cls.py();
        guarded(py, || {
            let kind = class_kind(cls)?;
            let unet = unet.cast::<PyUNet2DModel>().map_err(|_| {
                argument_error(py, "unet", format!("must be a candle_unet2d.UNet2DModel, got {}", type_name(unet)))
            })?;
            let given = scheduler_arg(scheduler)?;
            let prepared = kind.prepare_scheduler(given.get().snapshot()).map_err(|e| to_py_err(py, e))?;
            let scheduler =
                if prepared.kind() == given.get().kind() { given } else { scheduler_object(py, prepared, None)? };
            Ok(Self {
                kind,
                unet: unet.clone().unbind(),
                scheduler: Mutex::new(scheduler.unbind()),
                progress_config: Mutex::new(PyDict::new(py).unbind()),
                path: Mutex::new(None),
            })
        })
    }

    /// Loads a diffusers pipeline folder (`model_index.json`, `unet/`, `scheduler/`), a bare UNet
    /// folder, or a Hub id (downloaded into the Hugging Face cache; the Hub keywords come through
    /// `**kwargs`). On `DiffusionPipeline` itself, returns the class `model_index.json` names (or,
    /// without one, the one the scheduler's loop needs); on a subclass, that class.
    #[classmethod]
    #[pyo3(signature = (pretrained_model_name_or_path, device=None, dtype=None, variant=None, torch_dtype=None, **kwargs))]
    fn from_pretrained<'py>(
        cls: &Bound<'py, PyType>,
        pretrained_model_name_or_path: &Bound<'py, PyAny>,
        device: Option<&Bound<'py, PyAny>>,
        dtype: Option<&Bound<'py, PyAny>>,
        variant: Option<&Bound<'py, PyAny>>,
        torch_dtype: Option<&Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = cls.py();
        guarded(py, || {
            let path = pretrained_model_name_or_path;
            let path_buf = path_arg(py, path)?;
            let device = device_arg(py, device)?;
            let dtype = dtype_arg(py, dtype, torch_dtype)?;
            let variant = optional_str(variant, "variant")?;
            let (hub_args, _) = take_hub_kwargs(py, kwargs, Caller::Pipeline)?;

            let (pipe, report) = run_detached(py, move || {
                let options = hub_args.load_options(None, variant, &device, &dtype)?;
                UNet2DPipeline::from_pretrained_with_report(&path_buf, &options)
            })?;

            let target = if cls.hasattr("_class_name")? {
                cls.clone().into_any()
            } else {
                let kind = pipe.kind().map_err(|e| to_py_err(py, e))?;
                pipeline_classes(py)?.getattr(kind.class_name())?
            };
            let pipe_path = pipe.path.clone();
            let unet = Py::new(py, PyUNet2DModel::from_shared(py, pipe.unet, report.unet, path)?)?;
            // The raw scheduler config, for the keys diffusers keeps in `.config`.
            let scheduler = scheduler_object(py, pipe.scheduler, report.scheduler_json.as_ref())?;
            let object = target.call1((unet, scheduler))?;
            let this = object.cast::<PyDiffusionPipeline>()?.get();
            *lock(&this.path) = Some(pipe_path);
            Ok(object)
        })
    }

    /// The UNet (a `UNet2DModel` sharing the pipeline's weights).
    #[getter]
    fn unet(&self, py: Python<'_>) -> Py<PyUNet2DModel> {
        self.unet.clone_ref(py)
    }

    /// The scheduler; assign another one to sample with it, e.g.
    /// `pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)`.
    #[getter]
    fn scheduler(&self, py: Python<'_>) -> Py<PySchedulerMixin> {
        lock(&self.scheduler).clone_ref(py)
    }

    #[setter]
    fn set_scheduler(&self, value: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let Some(value) = value else {
            return Err(pyo3::exceptions::PyAttributeError::new_err(
                "the scheduler cannot be deleted; assign another scheduler",
            ));
        };
        let new = scheduler_arg(value)?.unbind();
        let old = std::mem::replace(&mut *lock(&self.scheduler), new);
        drop(old);
        Ok(())
    }

    /// `{"unet": …, "scheduler": …}`, as diffusers' `components`.
    #[getter]
    fn components<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("scheduler", self.scheduler(py))?;
        dict.set_item("unet", self.unet(py))?;
        Ok(dict)
    }

    /// What `model_index.json` holds: `_class_name`, `_diffusers_version` and each component's
    /// library and class.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let index = self.kind.model_index(self.scheduler(py).bind(py).get().kind());
        let dict = super::config_values::json_to_py(py, &index)?;
        py.import("candle_unet2d._outputs")?.getattr("FrozenDict")?.call1((dict,))
    }

    /// The folder the pipeline was loaded from (`None` when built from objects).
    #[getter]
    fn name_or_path(&self) -> Option<String> {
        lock(&self.path).as_ref().map(|p| p.display().to_string())
    }

    /// The device the UNet computes on: `"cpu"` or `"cuda:N"`.
    #[getter]
    fn device(&self, py: Python<'_>) -> String {
        device_name(self.unet.bind(py).get().shared_model().device())
    }

    /// The dtype the UNet computes in.
    #[getter]
    fn dtype(&self, py: Python<'_>) -> &'static str {
        dtype_name(self.unet.bind(py).get().shared_model().dtype())
    }

    /// Options for the progress bar, as diffusers' `set_progress_bar_config` (passed to tqdm;
    /// `disable=True` turns the bar off).
    #[pyo3(signature = (**kwargs))]
    fn set_progress_bar_config(&self, py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let config = match kwargs {
            Some(k) => k.copy()?,
            None => PyDict::new(py),
        };
        let old = std::mem::replace(&mut *lock(&self.progress_config), config.unbind());
        drop(old);
        Ok(())
    }

    /// Samples with the class's loop; the subclasses' `__call__` give diffusers' signatures and call
    /// this by keyword (see the stub for the arguments).
    // `None` stands for each default, so that any argument, however wrong, reaches the checks and
    // their errors.
    #[pyo3(signature = (
        *,
        batch_size=None,
        num_inference_steps=None,
        timesteps=None,
        class_labels=None,
        generator=None,
        latents=None,
        eta=None,
        use_clipped_model_output=None,
        image=None,
        mask_image=None,
        jump_length=None,
        jump_n_sample=None,
        output_type=None,
        return_dict=None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=None,
        progress=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn _sample<'py>(
        slf: &Bound<'py, Self>,
        batch_size: Option<&Bound<'py, PyAny>>,
        num_inference_steps: Option<&Bound<'py, PyAny>>,
        timesteps: Option<&Bound<'py, PyAny>>,
        class_labels: Option<&Bound<'py, PyAny>>,
        generator: Option<&Bound<'py, PyAny>>,
        latents: Option<&Bound<'py, PyAny>>,
        eta: Option<&Bound<'py, PyAny>>,
        use_clipped_model_output: Option<&Bound<'py, PyAny>>,
        image: Option<&Bound<'py, PyAny>>,
        mask_image: Option<&Bound<'py, PyAny>>,
        jump_length: Option<&Bound<'py, PyAny>>,
        jump_n_sample: Option<&Bound<'py, PyAny>>,
        output_type: Option<&Bound<'py, PyAny>>,
        return_dict: Option<&Bound<'py, PyAny>>,
        callback_on_step_end: Option<&Bound<'py, PyAny>>,
        callback_on_step_end_tensor_inputs: Option<&Bound<'py, PyAny>>,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guarded(slf.py(), || {
            let args = SampleArgs {
                batch_size,
                num_inference_steps,
                timesteps,
                class_labels,
                generator,
                latents,
                eta,
                use_clipped_model_output,
                image,
                mask_image,
                jump_length,
                jump_n_sample,
                output_type,
                return_dict,
                callback_on_step_end,
                callback_on_step_end_tensor_inputs,
                progress,
            };
            sample(slf, args)
        })
    }

    /// Writes the pipeline as diffusers does: `model_index.json`, `unet/` and `scheduler/`.
    #[pyo3(signature = (save_directory, safe_serialization=true, variant=None, push_to_hub=false))]
    fn save_pretrained(
        &self,
        py: Python<'_>,
        save_directory: &Bound<'_, PyAny>,
        safe_serialization: bool,
        variant: Option<&Bound<'_, PyAny>>,
        push_to_hub: bool,
    ) -> PyResult<()> {
        guarded(py, || {
            let dir = path_arg(py, save_directory)?;
            if !safe_serialization {
                return Err(argument_error(
                    py,
                    "safe_serialization",
                    "only safetensors weights are written (no pickles); leave safe_serialization=True",
                ));
            }
            if push_to_hub {
                return Err(argument_error(py, "push_to_hub", "uploading to the Hub is not supported"));
            }
            let variant = optional_str(variant, "variant")?;
            let unet = self.unet.bind(py).get().shared_model().clone();
            let scheduler = self.scheduler(py).bind(py).get().snapshot();
            let kind = self.kind;
            run_detached(py, move || {
                let options = crate::saving::SaveOptions { variant, ..Default::default() };
                crate::pipeline::save_pretrained(&dir, kind, &unet, &scheduler, &options)
            })
        })
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let unet = self.unet.bind(py).repr()?.to_string();
        let kind = lock(&self.scheduler).clone_ref(py).bind(py).get().kind();
        let path = lock(&self.path).as_ref().map(|p| format!("path='{}', ", p.display())).unwrap_or_default();
        Ok(format!("{}({path}unet={unet}, scheduler={})", self.kind.class_name(), kind.class_name()))
    }
}

/// The pipeline class `cls` stands for (its `_class_name`); `DiffusionPipeline` itself has none.
fn class_kind(cls: &Bound<'_, PyType>) -> PyResult<PipelineKind> {
    let py = cls.py();
    let Ok(name) = cls.getattr("_class_name") else {
        return Err(ErrorKind::InvalidArgument.err(
            py,
            format!(
                "DiffusionPipeline is the base class: construct one of {} (e.g. DDPMPipeline(unet=unet, \
                 scheduler=scheduler)), or load a folder with DiffusionPipeline.from_pretrained",
                PipelineKind::supported_list()
            ),
        ));
    };
    let name: String = name.extract()?;
    PipelineKind::from_class_name(&name).map_err(|e| to_py_err(py, e))
}

/// The `candle_unet2d._pipelines` module, imported once.
fn pipeline_classes(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE.get_or_try_init(py, || Ok(py.import(CLASSES_MODULE)?.unbind())).map(|m| m.bind(py))
}

/// A scheduler argument: one of the package's schedulers.
fn scheduler_arg<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PySchedulerMixin>> {
    obj.cast::<PySchedulerMixin>().cloned().map_err(|_| {
        argument_error(
            obj.py(),
            "scheduler",
            format!("must be a candle_unet2d scheduler (DDPMScheduler, DDIMScheduler, …), got {}", type_name(obj)),
        )
    })
}
