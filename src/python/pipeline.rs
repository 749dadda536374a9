//! The Python `UNet2DPipeline`: diffusers' `DDPMPipeline`/`DDIMPipeline` for (class-conditional)
//! `UNet2DModel`s, with any of the three schedulers. The whole denoising loop is the crate's
//! [`pipeline::sample`], run with the GIL released; per step, the progress callback takes the GIL
//! briefly to advance the progress bar and to let Ctrl-C interrupt the run.
//!
//! The scheduler object is not locked for the run: its state is copied, advanced in Rust, and written
//! back when the run succeeds (as diffusers leaves it advanced). The generator is drawn through, locked
//! for each draw only, as torch's generator is: threads sharing one get different images.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Mutex;

use candle_core::DType;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule, PyTuple, PyType};

use super::args::{device_arg, dtype_arg, path_arg};
use super::arrays::{to_tensor, Framework, HostArray, Numbers};
use super::errors::{argument_error, guarded, run_detached, to_py_err};
use super::model::{optional_str, PyUNet2DModel};
use super::rng::{generator_arg, generator_list, lock, type_name, PyGenerator};
use super::schedulers::{bool_arg, float_arg, int_arg, scheduler_object, PySchedulerMixin};
use crate::device::{device_name, dtype_name, parse_device, parse_dtype};
use crate::error::Error;
use crate::loading::weights::WeightStore;
use crate::loading::{resolve_model_dir, weight_files, LoadOptions, LoadReport};
use crate::memory_budget;
use crate::pipeline::{self, SampleOptions, StepEnd, UNet2DPipeline};
use crate::schedulers::config::read_config_json;
use crate::schedulers::Args;

/// The pure-Python helpers: the progress bar and the PIL conversion.
const PIPELINE_MODULE: &str = "candle_unet2d._pipeline";
/// The output classes.
const OUTPUTS_MODULE: &str = "candle_unet2d._outputs";

/// A UNet and a scheduler that sample images, as diffusers' `DDPMPipeline`/`DDIMPipeline`.
#[pyclass(frozen, name = "UNet2DPipeline", module = "candle_unet2d")]
pub struct PyUNet2DPipeline {
    unet: Py<PyUNet2DModel>,
    /// Assignable; locked only to read or replace the reference.
    scheduler: Mutex<Py<PySchedulerMixin>>,
    /// Keyword arguments for the progress bar (`set_progress_bar_config`).
    progress_config: Mutex<Py<PyDict>>,
    /// The folder it was loaded from, if any.
    path: Option<PathBuf>,
}

/// `output_type`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OutputType {
    Pil,
    Np,
    Uint8,
}

/// The unwind payload that stops a run when the progress callback sees a pending signal (Ctrl-C).
struct Interrupted;

#[pymethods]
impl PyUNet2DPipeline {
    /// A pipeline of a loaded `UNet2DModel` and a scheduler.
    #[new]
    fn new(py: Python<'_>, unet: &Bound<'_, PyAny>, scheduler: &Bound<'_, PyAny>) -> PyResult<Self> {
        guarded(py, || {
            let unet = unet.cast::<PyUNet2DModel>().map_err(|_| {
                argument_error(py, "unet", format!("must be a candle_unet2d.UNet2DModel, got {}", type_name(unet)))
            })?;
            Ok(Self {
                unet: unet.clone().unbind(),
                scheduler: Mutex::new(scheduler_arg(scheduler)?.unbind()),
                progress_config: Mutex::new(PyDict::new(py).unbind()),
                path: None,
            })
        })
    }

    /// Loads a diffusers pipeline folder (`model_index.json`, `unet/`, `scheduler/`), or a bare UNet
    /// folder with diffusers' default `DDPMScheduler`.
    #[staticmethod]
    #[pyo3(signature = (path, device=None, dtype=None, variant=None, torch_dtype=None))]
    fn from_pretrained(
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        device: Option<&Bound<'_, PyAny>>,
        dtype: Option<&Bound<'_, PyAny>>,
        variant: Option<&Bound<'_, PyAny>>,
        torch_dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        guarded(py, || {
            let path_buf = path_arg(py, path)?;
            let device = device_arg(py, device)?;
            let dtype = dtype_arg(py, dtype, torch_dtype)?;
            let variant = optional_str(variant, "variant")?;

            let (pipe, report, scheduler_source) = run_detached(py, move || {
                let options = LoadOptions {
                    subfolder: None,
                    variant: variant.clone(),
                    device: parse_device(&device)?,
                    dtype: parse_dtype(&dtype)?,
                };
                let pipe = UNet2DPipeline::from_pretrained(&path_buf, &options)?;
                let model_dir = resolve_model_dir(&pipe.path, None)?;
                let files = weight_files(&model_dir, variant.as_deref())?;
                let safetensors = files.iter().all(|f| f.extension().is_some_and(|e| e == "safetensors"));
                let stored_dtype =
                    if safetensors { WeightStore::open(&files).ok().and_then(|s| s.stored_dtype()) } else { None };
                let report = LoadReport { model_dir, weight_files: files, stored_dtype };
                // The raw scheduler config, for the keys diffusers keeps in `.config`.
                let source = read_config_json(&pipe.path.join("scheduler")).ok();
                Ok((pipe, report, source))
            })?;

            let unet = PyUNet2DModel::from_shared(py, pipe.unet, report, path)?;
            let scheduler = scheduler_object(py, pipe.scheduler, scheduler_source.as_ref())?;
            Ok(Self {
                unet: Py::new(py, unet)?,
                scheduler: Mutex::new(scheduler.unbind()),
                progress_config: Mutex::new(PyDict::new(py).unbind()),
                path: Some(pipe.path),
            })
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

    /// Samples images (see the stub for the arguments).
    // `None` stands for each default (eta=0.0, output_type="pil", return_dict=True, progress=True), so
    // that any argument, however wrong, reaches the checks below and their errors.
    #[pyo3(signature = (
        batch_size=None,
        num_inference_steps=None,
        class_labels=None,
        generator=None,
        latents=None,
        eta=None,
        output_type=None,
        return_dict=None,
        progress=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        batch_size: Option<&Bound<'py, PyAny>>,
        num_inference_steps: Option<&Bound<'py, PyAny>>,
        class_labels: Option<&Bound<'py, PyAny>>,
        generator: Option<&Bound<'py, PyAny>>,
        latents: Option<&Bound<'py, PyAny>>,
        eta: Option<&Bound<'py, PyAny>>,
        output_type: Option<&Bound<'py, PyAny>>,
        return_dict: Option<&Bound<'py, PyAny>>,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guarded(py, || {
            let helpers = pipeline_module(py)?;
            let output_type = output_type_arg(output_type)?;
            if output_type == OutputType::Pil {
                // Before sampling: a missing Pillow should not cost a whole run.
                helpers.call_method0("_check_pillow")?;
            }
            let batch = match batch_size.filter(|b| !b.is_none()) {
                None => None,
                Some(b) => {
                    let n = int_arg(b, "batch_size")?;
                    if n < 1 {
                        return Err(argument_error(py, "batch_size", format!("must be ≥ 1, got {n}")));
                    }
                    Some(n as usize)
                }
            };
            let labels = class_labels_arg(class_labels)?;
            let unet = self.unet.bind(py).get().shared_model().clone();
            // Refused before anything of the batch's size is allocated (the labels included).
            let images = match &labels {
                Labels::Many(v) => batch.unwrap_or(v.len()),
                _ => batch.unwrap_or(1),
            };
            if let Some((h, w)) = unet.config().sample_size.map(|s| s.height_width()) {
                pipeline::check_memory(&unet, images, h, w).map_err(|e| to_py_err(py, e))?;
            }
            let (batch_size, class_labels) = match labels {
                Labels::None => (images, None),
                Labels::One(c) => {
                    let labels =
                        memory_budget::filled_vec(c, images, "the class labels").map_err(|e| to_py_err(py, e))?;
                    (images, Some(labels))
                }
                // 0: the batch size is the number of labels.
                Labels::Many(v) => (batch.unwrap_or(0), Some(v)),
            };
            let latents = match latents.filter(|l| !l.is_none()) {
                Some(l) => Some(to_tensor(l, "latents", Numbers::Float)?),
                None => None,
            };
            let return_dict = bool_arg(return_dict, "return_dict", true)?;
            let show_progress = bool_arg(progress, "progress", true)?;

            let scheduler_obj = lock(&self.scheduler).clone_ref(py);
            let scheduler_ref = scheduler_obj.bind(py).get();
            let num_inference_steps = match num_inference_steps.filter(|n| !n.is_none()) {
                Some(n) => {
                    let n = int_arg(n, "num_inference_steps")?;
                    usize::try_from(n)
                        .ok()
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| argument_error(py, "num_inference_steps", format!("must be ≥ 1, got {n}")))?
                }
                // The scheduler's usual count (DDPMPipeline's 1000 for DDPM), at most the training steps.
                None => {
                    let kind = scheduler_ref.kind();
                    kind.default_steps().min(scheduler_ref.snapshot().num_train_timesteps()).max(1)
                }
            };
            // One generator, or a list with one per image (copied out, their states written back).
            let per_image = match generator.filter(|g| !g.is_none()) {
                Some(g) => generator_list(g)?,
                None => None,
            };
            let generator = match &per_image {
                Some(_) => None,
                None => Some(generator_arg(py, generator)?),
            };
            let generator_ref = generator.as_ref().map(|g| g.get());
            let per_image_refs: Option<Vec<&PyGenerator>> =
                per_image.as_ref().map(|l| l.iter().map(|g| g.get()).collect());
            let mut step_args = Args::new();
            // η = 0 is every η-taking scheduler's default, so it is passed only when it changes something
            // (a DDPM run with `eta=0.0` stays valid, as with diffusers' pipelines).
            let eta = float_arg(eta, "eta", 0.0)?;
            if eta != 0.0 {
                step_args.insert("eta", eta);
            }

            let config = lock(&self.progress_config).clone_ref(py);
            let bar = helpers.getattr("_ProgressBar")?.call1((show_progress, config))?.unbind();

            let options = SampleOptions {
                batch_size,
                num_inference_steps,
                class_labels,
                step_args,
                latents,
                ..Default::default()
            };
            let mut scheduler = scheduler_ref.snapshot();
            let mut interrupt: Option<PyErr> = None;
            let result = run_detached(py, || {
                let run = catch_unwind(AssertUnwindSafe(|| {
                    // Draws go through the shared generator (locked per draw), so threads sharing it get
                    // different noise and leave it where as many sequential runs would.
                    let progress = |p: StepEnd<'_>| {
                        let stop = Python::attach(|py| {
                            // A failing progress bar must not stop sampling, but Ctrl-C (a signal
                            // handled while the bar's Python code ran) or SystemExit must.
                            match bar.call_method1(py, "update", (p.step, p.total)) {
                                Err(e) if !e.is_instance_of::<PyException>(py) => Some(e),
                                _ => py.check_signals().err(),
                            }
                        });
                        if let Some(err) = stop {
                            interrupt = Some(err);
                            resume_unwind(Box::new(Interrupted));
                        }
                        std::ops::ControlFlow::Continue(())
                    };
                    match (&per_image_refs, generator_ref) {
                        (Some(list), _) => {
                            let mut generators: Vec<_> = list.iter().map(|g| g.snapshot()).collect();
                            let result =
                                pipeline::sample_per_image(&unet, &mut scheduler, &options, &mut generators, progress);
                            for (g, state) in list.iter().zip(generators) {
                                *g.lock() = state;
                            }
                            result
                        }
                        // Draws go through the shared generator (locked per draw), so threads sharing
                        // it get different noise and leave it where as many sequential runs would.
                        (None, Some(g)) => {
                            pipeline::sample_shared(&unet, &mut scheduler, &options, g.mutex(), progress)
                        }
                        (None, None) => Err(Error::argument("generator", "no generator")),
                    }
                }));
                let x = match run {
                    Ok(result) => result?,
                    Err(payload) if payload.is::<Interrupted>() => return Ok(None),
                    Err(payload) => resume_unwind(payload),
                };
                let images = pipeline::to_images(&x)?;
                let host = match output_type {
                    OutputType::Np => HostArray::from_tensor(&images)?,
                    OutputType::Uint8 | OutputType::Pil => HostArray::from_tensor_exact(&pipeline::to_uint8(&images)?)?,
                };
                Ok(Some(host))
            });
            let _ = bar.call_method0(py, "close");
            let host = match result? {
                Some(host) => host,
                None => {
                    return Err(interrupt
                        .unwrap_or_else(|| pyo3::exceptions::PyKeyboardInterrupt::new_err("sampling interrupted")))
                }
            };
            scheduler_ref.restore(scheduler);

            let array = host.into_python(py, &Framework::Numpy)?;
            let images = match output_type {
                OutputType::Pil => helpers.call_method1("_numpy_to_pil", (array,))?,
                _ => array,
            };
            if return_dict {
                static OUTPUT_CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
                OUTPUT_CLASS.import(py, OUTPUTS_MODULE, "ImagePipelineOutput")?.call1((images,))
            } else {
                Ok(PyTuple::new(py, [images])?.into_any())
            }
        })
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let unet = self.unet.bind(py).repr()?.to_string();
        let scheduler = lock(&self.scheduler).clone_ref(py);
        let kind = scheduler.bind(py).get().kind();
        let path = self.path.as_ref().map(|p| format!("path='{}', ", p.display())).unwrap_or_default();
        Ok(format!("UNet2DPipeline({path}unet={unet}, scheduler={})", kind.class_name()))
    }
}

/// The `candle_unet2d._pipeline` module, imported once.
fn pipeline_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE.get_or_try_init(py, || Ok(py.import(PIPELINE_MODULE)?.unbind())).map(|m| m.bind(py))
}

/// A scheduler argument: one of the package's schedulers.
fn scheduler_arg<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PySchedulerMixin>> {
    obj.cast::<PySchedulerMixin>().cloned().map_err(|_| {
        argument_error(
            obj.py(),
            "scheduler",
            format!(
                "must be a candle_unet2d scheduler (DDPMScheduler, DDIMScheduler or \
                 DPMSolverMultistepScheduler), got {}",
                type_name(obj)
            ),
        )
    })
}

/// `output_type`: `"pil"` (the default), `"np"` (or `"numpy"`) or `"uint8"`.
fn output_type_arg(obj: Option<&Bound<'_, PyAny>>) -> PyResult<OutputType> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(OutputType::Pil);
    };
    let py = obj.py();
    let name: Option<String> = obj.extract().ok();
    match name.as_deref() {
        Some("pil") => Ok(OutputType::Pil),
        Some("np" | "numpy") => Ok(OutputType::Np),
        Some("uint8") => Ok(OutputType::Uint8),
        _ => Err(argument_error(
            py,
            "output_type",
            format!(
                "must be \"pil\" (PIL images), \"np\" (float32 NHWC in [0, 1]) or \"uint8\" \
                 (uint8 NHWC), got {}",
                obj.repr().map(|r| r.to_string()).unwrap_or_default()
            ),
        )),
    }
}

/// Class labels as given.
enum Labels {
    None,
    /// One label for every image.
    One(i64),
    /// One label per image.
    Many(Vec<i64>),
}

/// `class_labels`: an int (for every image), or a list / 1-D array / tensor of ints (one per image).
fn class_labels_arg(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Labels> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(Labels::None);
    };
    let py = obj.py();
    let tensor = to_tensor(obj, "class_labels", Numbers::Real)?;
    if tensor.dtype() != DType::I64 {
        return Err(argument_error(
            py,
            "class_labels",
            "must be integer class ids (an int, or a list / array of ints)",
        ));
    }
    let to_py = |e: candle_core::Error| super::errors::to_py_err(py, Error::from(e));
    match tensor.rank() {
        0 => Ok(Labels::One(tensor.to_scalar::<i64>().map_err(to_py)?)),
        1 => Ok(Labels::Many(tensor.to_vec1::<i64>().map_err(to_py)?)),
        _ => Err(argument_error(
            py,
            "class_labels",
            format!("must be an int or a 1-D sequence of ints (one per image), got shape {:?}", tensor.dims()),
        )),
    }
}
