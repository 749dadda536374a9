//! A pipeline call: diffusers' arguments checked and converted, then the crate's
//! [`pipeline::sample`] with the GIL released. Once per step the step callback takes the GIL briefly:
//! to advance the progress bar, to let Ctrl-C stop the run (signals are checked there), and to call
//! diffusers' `callback_on_step_end(pipe, i, t, {"latents": …})`, whose returned `latents` replace
//! the sample and whose exception stops the run and propagates.
//!
//! The scheduler object is not locked for the run: its state is copied, advanced in Rust, and written
//! back when the run succeeds (as diffusers leaves it advanced). The generator is drawn through, locked
//! for each draw only, as torch's generator is: threads sharing one get different images.

use std::ops::ControlFlow;

use candle_core::{DType, Tensor};
use pyo3::exceptions::{PyException, PyKeyboardInterrupt};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule, PyTuple, PyType};

use super::arrays::{to_tensor, Framework, HostArray, Numbers};
use super::errors::{argument_error, run_detached, to_py_err};
use super::pipeline::{PyDiffusionPipeline, PIPELINE_MODULE};
use super::rng::{generator_arg, generator_list, lock, type_name, PyGenerator};
use super::schedulers::{bool_arg, float_arg, int_arg};
use crate::error::Error;
use crate::memory_budget;
use crate::pipeline::{self, Inpaint, SampleOptions, StepEnd};
use crate::schedulers::{Args, TimestepType};

/// The output classes.
const OUTPUTS_MODULE: &str = "candle_unet2d._outputs";

/// The keyword arguments of `DiffusionPipeline._sample`, as given (`None`: the default).
pub(crate) struct SampleArgs<'a, 'py> {
    pub batch_size: Option<&'a Bound<'py, PyAny>>,
    pub num_inference_steps: Option<&'a Bound<'py, PyAny>>,
    pub timesteps: Option<&'a Bound<'py, PyAny>>,
    pub class_labels: Option<&'a Bound<'py, PyAny>>,
    pub generator: Option<&'a Bound<'py, PyAny>>,
    pub latents: Option<&'a Bound<'py, PyAny>>,
    pub eta: Option<&'a Bound<'py, PyAny>>,
    pub use_clipped_model_output: Option<&'a Bound<'py, PyAny>>,
    pub image: Option<&'a Bound<'py, PyAny>>,
    pub mask_image: Option<&'a Bound<'py, PyAny>>,
    pub jump_length: Option<&'a Bound<'py, PyAny>>,
    pub jump_n_sample: Option<&'a Bound<'py, PyAny>>,
    pub output_type: Option<&'a Bound<'py, PyAny>>,
    pub return_dict: Option<&'a Bound<'py, PyAny>>,
    pub callback_on_step_end: Option<&'a Bound<'py, PyAny>>,
    pub callback_on_step_end_tensor_inputs: Option<&'a Bound<'py, PyAny>>,
    pub progress: Option<&'a Bound<'py, PyAny>>,
}

/// `output_type`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OutputType {
    Pil,
    Np,
    Uint8,
    Pt,
}

/// Class labels as given.
enum Labels {
    None,
    /// One label for every image.
    One(i64),
    /// One label per image.
    Many(Vec<i64>),
}

/// `None` for a missing or `None` argument.
fn given<'a, 'py>(obj: Option<&'a Bound<'py, PyAny>>) -> Option<&'a Bound<'py, PyAny>> {
    obj.filter(|o| !o.is_none())
}

/// A count argument ≥ `min`.
fn count_arg(obj: &Bound<'_, PyAny>, name: &str, min: i64) -> PyResult<usize> {
    let n = int_arg(obj, name)?;
    if n < min {
        return Err(argument_error(obj.py(), name, format!("must be ≥ {min}, got {n}")));
    }
    usize::try_from(n).map_err(|_| argument_error(obj.py(), name, format!("{n} is too large")))
}

pub(crate) fn sample<'py>(
    slf: &Bound<'py, PyDiffusionPipeline>,
    a: SampleArgs<'_, 'py>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let this = slf.get();
    let helpers = pipeline_module(py)?;
    let output_type = output_type_arg(a.output_type)?;
    // Before sampling: a missing Pillow or torch should not cost a whole run.
    match output_type {
        OutputType::Pil => {
            helpers.call_method0("_check_pillow")?;
        }
        OutputType::Pt => {
            helpers.call_method0("_check_torch")?;
        }
        _ => {}
    }
    let scheduler_obj = lock(&this.scheduler).clone_ref(py);
    let scheduler_ref = scheduler_obj.bind(py).get();
    let scheduler_kind = scheduler_ref.kind();
    // The state the run starts from (and advances; written back when it succeeds).
    let mut scheduler = scheduler_ref.snapshot();
    this.kind.check_scheduler(scheduler_kind).map_err(|e| to_py_err(py, e))?;

    let batch = given(a.batch_size).map(|b| count_arg(b, "batch_size", 1)).transpose()?;
    let labels = class_labels_arg(a.class_labels)?;
    let unet = this.unet.bind(py).get().shared_model().clone();
    let channels = unet.config().in_channels;
    let inpaint = inpaint_arg(helpers, a.image, a.mask_image, channels)?;

    // Refused before anything of the batch's size is allocated (the labels included).
    let images = match (&inpaint, &labels) {
        (Some(i), _) => i.image.dims()[0],
        (None, Labels::Many(v)) => batch.unwrap_or(v.len()),
        _ => batch.unwrap_or(1),
    };
    let size = match &inpaint {
        Some(i) => Some((i.image.dims()[2], i.image.dims()[3])),
        None => unet.config().sample_size.map(|s| s.height_width()),
    };
    if let Some((h, w)) = size {
        pipeline::check_memory(&unet, images, h, w).map_err(|e| to_py_err(py, e))?;
    }
    let (batch_size, class_labels) = match labels {
        Labels::None => (images, None),
        Labels::One(c) => {
            let labels = memory_budget::filled_vec(c, images, "the class labels").map_err(|e| to_py_err(py, e))?;
            (images, Some(labels))
        }
        // 0: the batch size is the number of labels.
        Labels::Many(v) => (if inpaint.is_some() { 0 } else { batch.unwrap_or(0) }, Some(v)),
    };
    let latents_framework = match given(a.latents) {
        Some(l) => Framework::of(l)?,
        None => Framework::Numpy,
    };
    let latents = given(a.latents).map(|l| to_tensor(l, "latents", Numbers::Float)).transpose()?;
    let timesteps = given(a.timesteps).map(timesteps_arg).transpose()?;
    let return_dict = bool_arg(a.return_dict, "return_dict", true)?;
    let show_progress = bool_arg(a.progress, "progress", true)?;
    let num_inference_steps = match given(a.num_inference_steps) {
        Some(n) => count_arg(n, "num_inference_steps", 1)?,
        None => this.kind.default_steps(&scheduler),
    };

    let mut step_args = Args::new();
    if let Some(eta) = given(a.eta) {
        // η = 0 is every η-taking scheduler's default, so for the others it is dropped (a DDPM run with
        // `eta=0.0` stays valid, as with diffusers' pipelines).
        let eta = float_arg(Some(eta), "eta", 0.0)?;
        if eta != 0.0 || scheduler_kind.step_params().contains(&"eta") {
            step_args.insert("eta", eta);
        }
    }
    if let Some(clipped) = given(a.use_clipped_model_output) {
        step_args.insert("use_clipped_model_output", bool_arg(Some(clipped), "use_clipped_model_output", false)?);
    }
    let mut timestep_args = Args::new();
    for (name, value) in [("jump_length", a.jump_length), ("jump_n_sample", a.jump_n_sample)] {
        if let Some(v) = given(value) {
            timestep_args.insert(name, count_arg(v, name, 0)? as u64);
        }
    }

    let callback = step_callback_arg(a.callback_on_step_end, a.callback_on_step_end_tensor_inputs)?;
    // One generator, or a list with one per image (copied out, their states written back).
    let per_image = match given(a.generator) {
        Some(g) => generator_list(g)?,
        None => None,
    };
    let generator = match &per_image {
        Some(_) => None,
        None => Some(generator_arg(py, a.generator)?),
    };
    let generator_ref = generator.as_ref().map(|g| g.get());
    let per_image_refs: Option<Vec<&PyGenerator>> = per_image.as_ref().map(|l| l.iter().map(|g| g.get()).collect());

    let config = lock(&this.progress_config).clone_ref(py);
    let bar = helpers.getattr("_ProgressBar")?.call1((show_progress, config))?.unbind();
    let pipe: Py<PyDiffusionPipeline> = slf.clone().unbind();
    let integer_timesteps = matches!(scheduler.timestep_type(), TimestepType::Integer);

    let options = SampleOptions {
        batch_size,
        num_inference_steps,
        timesteps,
        class_labels,
        step_args,
        timestep_args,
        latents,
        inpaint,
        ..SampleOptions::default()
    };
    let sampling_loop = scheduler_kind.sampling_loop();
    let mut stop: Option<PyErr> = None;
    let result = run_detached(py, || {
        let on_step = |end: StepEnd<'_>| {
            let err = Python::attach(|py| {
                // A failing progress bar must not stop sampling, but Ctrl-C (a signal handled while the
                // bar's Python code ran) or SystemExit must.
                if let Err(e) = bar.call_method1(py, "update", (end.step, end.total)) {
                    if !e.is_instance_of::<PyException>(py) {
                        return Some(e);
                    }
                }
                if let Err(e) = py.check_signals() {
                    return Some(e);
                }
                let callback = callback.as_ref()?;
                let t = if integer_timesteps {
                    (end.timestep as i64).into_pyobject(py).ok()?.into_any()
                } else {
                    end.timestep.into_pyobject(py).ok()?.into_any()
                };
                call_step_callback(py, callback, &pipe, end.step - 1, t, end.sample, &latents_framework).err()
            });
            match err {
                Some(e) => {
                    stop = Some(e);
                    ControlFlow::Break(())
                }
                None => ControlFlow::Continue(()),
            }
        };
        let x = match (&per_image_refs, generator_ref) {
            (Some(list), _) => {
                let mut generators: Vec<_> = list.iter().map(|g| g.snapshot()).collect();
                let result = pipeline::sample_per_image(&unet, &mut scheduler, &options, &mut generators, on_step);
                for (g, state) in list.iter().zip(generators) {
                    *g.lock() = state;
                }
                result
            }
            // Draws go through the shared generator (locked per draw), so threads sharing it get
            // different noise and leave it where as many sequential runs would.
            (None, Some(g)) => pipeline::sample_shared(&unet, &mut scheduler, &options, g.mutex(), on_step),
            (None, None) => Err(Error::argument("generator", "no generator")),
        };
        let x = match x {
            Err(Error::Cancelled { .. }) => return Ok(None),
            other => other?,
        };
        let images = pipeline::to_images_from(&x, sampling_loop)?;
        let host = match output_type {
            OutputType::Np => HostArray::from_tensor(&images)?,
            OutputType::Pt => HostArray::from_tensor(&images.permute((0, 3, 1, 2))?.contiguous()?)?,
            OutputType::Uint8 | OutputType::Pil => HostArray::from_tensor_exact(&pipeline::to_uint8(&images)?)?,
        };
        Ok(Some(host))
    });
    let _ = bar.call_method0(py, "close");
    let Some(host) = result? else {
        return Err(stop.unwrap_or_else(|| PyKeyboardInterrupt::new_err("sampling interrupted")));
    };
    scheduler_ref.restore(scheduler);

    let array = host.into_python(py, &Framework::Numpy)?;
    let images = match output_type {
        OutputType::Pil => helpers.call_method1("_numpy_to_pil", (array,))?,
        OutputType::Pt => py.import("torch")?.call_method1("from_numpy", (array,))?,
        _ => array,
    };
    if return_dict {
        static OUTPUT_CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        OUTPUT_CLASS.import(py, OUTPUTS_MODULE, "ImagePipelineOutput")?.call1((images,))
    } else {
        Ok(PyTuple::new(py, [images])?.into_any())
    }
}

/// Calls `callback(pipe, i, t, {"latents": sample})` and takes the `latents` it returns, if any.
fn call_step_callback(
    py: Python<'_>,
    callback: &Py<PyAny>,
    pipe: &Py<PyDiffusionPipeline>,
    index: usize,
    timestep: Bound<'_, PyAny>,
    sample: &mut Tensor,
    framework: &Framework,
) -> PyResult<()> {
    let latents = HostArray::from_tensor(sample).map_err(|e| to_py_err(py, e))?.into_python(py, framework)?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("latents", latents)?;
    let out = callback.call1(py, (pipe.clone_ref(py), index, timestep, kwargs))?;
    let out = out.bind(py);
    if out.is_none() {
        return Ok(());
    }
    let dict = out.cast::<PyDict>().map_err(|_| {
        argument_error(
            py,
            "callback_on_step_end",
            format!("must return a dict (e.g. the callback_kwargs it was given), got {}", type_name(out)),
        )
    })?;
    if let Some(new) = dict.get_item("latents")? {
        let tensor = to_tensor(&new, "latents (returned by callback_on_step_end)", Numbers::Float)?;
        *sample = tensor.to_dtype(DType::F32).map_err(|e| to_py_err(py, e.into()))?;
    }
    Ok(())
}

/// `callback_on_step_end` (a callable or `None`) and its `callback_on_step_end_tensor_inputs` (the
/// tensors it is given: only `"latents"` exists in these pipelines).
fn step_callback_arg(
    callback: Option<&Bound<'_, PyAny>>,
    inputs: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Py<PyAny>>> {
    if let Some(inputs) = given(inputs) {
        let py = inputs.py();
        let names: Vec<String> = inputs.extract().map_err(|_| {
            argument_error(
                py,
                "callback_on_step_end_tensor_inputs",
                "must be a list of tensor names, e.g. [\"latents\"]",
            )
        })?;
        if let Some(bad) = names.iter().find(|n| n.as_str() != "latents") {
            return Err(argument_error(
                py,
                "callback_on_step_end_tensor_inputs",
                format!("{bad:?} is not a tensor of this pipeline; the callback can be given [\"latents\"]"),
            ));
        }
    }
    match given(callback) {
        None => Ok(None),
        Some(c) if c.is_callable() => Ok(Some(c.clone().unbind())),
        Some(c) => Err(argument_error(
            c.py(),
            "callback_on_step_end",
            format!("must be callable as callback(pipe, step, timestep, callback_kwargs), got {}", type_name(c)),
        )),
    }
}

/// `timesteps`: a 1-D sequence of numbers.
fn timesteps_arg(obj: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    let py = obj.py();
    let tensor = to_tensor(obj, "timesteps", Numbers::Real)?;
    let to_py = |e: candle_core::Error| to_py_err(py, Error::from(e));
    if tensor.rank() != 1 || tensor.dims()[0] == 0 {
        return Err(argument_error(
            py,
            "timesteps",
            format!("must be a non-empty list of numbers, descending (e.g. [22, 0]), got shape {:?}", tensor.dims()),
        ));
    }
    tensor.to_dtype(DType::F64).map_err(to_py)?.to_vec1::<f64>().map_err(to_py)
}

/// `image` and `mask_image`, converted by the Python helpers (PIL images, numpy arrays or torch
/// tensors) to float32 arrays: the image `[B, C, H, W]` in `[-1, 1]`, the mask with 1 = keep.
fn inpaint_arg(
    helpers: &Bound<'_, PyModule>,
    image: Option<&Bound<'_, PyAny>>,
    mask: Option<&Bound<'_, PyAny>>,
    channels: usize,
) -> PyResult<Option<Inpaint>> {
    let py = helpers.py();
    match (given(image), given(mask)) {
        (None, None) => Ok(None),
        (Some(_), None) => {
            Err(argument_error(py, "mask_image", "required with image (1 keeps a pixel, 0 inpaints it)"))
        }
        (None, Some(_)) => Err(argument_error(py, "image", "required with mask_image: the image to inpaint")),
        (Some(image), Some(mask)) => {
            let image = helpers.call_method1("_preprocess_image", (image, channels))?;
            let mask = helpers.call_method1("_preprocess_mask", (mask,))?;
            Ok(Some(Inpaint {
                image: to_tensor(&image, "image", Numbers::Float)?,
                mask: to_tensor(&mask, "mask_image", Numbers::Float)?,
            }))
        }
    }
}

/// The `candle_unet2d._pipeline` module, imported once.
fn pipeline_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE.get_or_try_init(py, || Ok(py.import(PIPELINE_MODULE)?.unbind())).map(|m| m.bind(py))
}

/// `output_type`: `"pil"` (the default), `"np"` (or `"numpy"`), `"pt"` or `"uint8"`.
fn output_type_arg(obj: Option<&Bound<'_, PyAny>>) -> PyResult<OutputType> {
    let Some(obj) = given(obj) else {
        return Ok(OutputType::Pil);
    };
    let py = obj.py();
    let name: Option<String> = obj.extract().ok();
    match name.as_deref() {
        Some("pil") => Ok(OutputType::Pil),
        Some("np" | "numpy") => Ok(OutputType::Np),
        Some("pt") => Ok(OutputType::Pt),
        Some("uint8") => Ok(OutputType::Uint8),
        _ => Err(argument_error(
            py,
            "output_type",
            format!(
                "must be \"pil\" (PIL images), \"np\" (float32 NHWC in [0, 1]), \"pt\" (a float32 torch tensor, \
                 NCHW in [0, 1]) or \"uint8\" (uint8 NHWC), got {}",
                obj.repr().map(|r| r.to_string()).unwrap_or_default()
            ),
        )),
    }
}

/// `class_labels`: an int (for every image), or a list / 1-D array / tensor of ints (one per image).
fn class_labels_arg(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Labels> {
    let Some(obj) = given(obj) else {
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
    let to_py = |e: candle_core::Error| to_py_err(py, Error::from(e));
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
