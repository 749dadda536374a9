//! The Python schedulers: one class, `SchedulerMixin`, holding any registered scheduler. The package
//! makes one subclass per registry entry (`candle_unet2d/_schedulers.py`, from
//! [`scheduler_classes`]), so nothing here names a scheduler: a class's `_class_name` says which
//! scheduler it builds, and each call's scheduler-specific arguments pass through by name (diffusers'
//! positional order comes from the registry), with errors from the scheduler for unknown or
//! ill-typed ones.
//!
//! Each object owns one crate [`Scheduler`] behind a mutex that is locked only for Rust work (with the
//! GIL released in `step`), never while calling into Python. The config is built once, as a
//! `FrozenDict`: the class's full config (`_class_name`, `_diffusers_version`) plus, as diffusers keeps
//! them, the keys of the source config that this class does not use.

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::Mutex;

use candle_core::Tensor;
use numpy::PyArray1;
use pyo3::exceptions::PyUserWarning;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyString, PyTuple, PyType};
use serde_json::{Map, Value};

use super::arrays::{is_ndarray, is_torch_tensor, numpy_module, to_tensor, HostArray, Like, Numbers};
use super::config_values::{is_path, json_to_py, py_to_json};
use super::errors::{argument_error, argument_error_from, guarded, run_detached, ErrorKind};
use super::hub_args::{take_hub_kwargs, Caller};
use super::rng::{default_generator, explicit_generator, generator_list, lock, type_name, PyGenerator};
use crate::error::Error;
use crate::rng::Generator;
use crate::schedulers::config::{locate_config_file, read_config_json};
use crate::schedulers::{
    Args, MethodInput, Noise, Scheduler, SchedulerKind, SchedulerOutput, StepInput, TensorArgs, TimestepType,
    TimestepsSpec,
};

/// The module holding the pure-Python helper classes.
const OUTPUTS_MODULE: &str = "candle_unet2d._outputs";
/// The module holding the scheduler classes.
const CLASSES_MODULE: &str = "candle_unet2d._schedulers";

/// diffusers' `SchedulerMixin` + `ConfigMixin`: the base of every scheduler class. Not constructed
/// directly: use a scheduler class, or `SchedulerMixin.from_pretrained`/`from_config` to build the
/// class a config's `_class_name` names.
#[pyclass(subclass, frozen, name = "SchedulerMixin", module = "candle_unet2d")]
pub struct PySchedulerMixin {
    inner: Mutex<Scheduler>,
    kind: SchedulerKind,
    /// A `FrozenDict`, built once.
    config: Py<PyAny>,
}

/// The registry as the package needs it to make its classes: per scheduler, `(class name, CLI name,
/// summary, default steps, [(method, [positional parameters])], [compatible class names])`.
#[pyfunction]
pub(crate) fn scheduler_classes(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let list = PyList::empty(py);
    for kind in SchedulerKind::all() {
        let methods: Vec<(&str, Vec<&str>)> = kind.methods().iter().map(|m| (m.name, m.params.to_vec())).collect();
        let compatibles: Vec<&str> = kind.compatibles().into_iter().map(|k| k.class_name()).collect();
        list.append((
            kind.class_name(),
            kind.short_name(),
            kind.summary(),
            kind.default_steps(),
            methods,
            compatibles,
        ))?;
    }
    Ok(list)
}

impl PySchedulerMixin {
    /// A scheduler with its config (`source`: the config it was made from, for diffusers' hidden keys).
    fn new(py: Python<'_>, scheduler: Scheduler, source: Option<&Value>) -> PyResult<Self> {
        let config = config_object(py, &scheduler, source)?;
        Ok(Self { kind: scheduler.kind(), inner: Mutex::new(scheduler), config })
    }

    fn from_kwargs(py: Python<'_>, kind: SchedulerKind, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let given = match kwargs {
            Some(k) => py_to_json(k.as_any(), "")?,
            None => Value::Object(Map::new()),
        };
        let source = given.clone();
        let scheduler = run_detached(py, move || Scheduler::from_json_as(kind, &source))?;
        let known = scheduler.config_json();
        if let Value::Object(map) = &given {
            let unknown: Vec<&String> =
                map.keys().filter(|k| !k.starts_with('_') && known.get(k.as_str()).is_none()).collect();
            if let Some(first) = unknown.first() {
                return Err(argument_error(
                    py,
                    first,
                    format!(
                        "{} has no config value `{first}`; its config keys are: {}",
                        kind.class_name(),
                        config_keys(&known)
                    ),
                ));
            }
        }
        Self::new(py, scheduler, None)
    }

    /// Which scheduler this is.
    pub(crate) fn kind(&self) -> SchedulerKind {
        self.kind
    }

    /// A copy of the scheduler's current state (Rust work only).
    pub(crate) fn snapshot(&self) -> Scheduler {
        lock(&self.inner).clone()
    }

    /// Replaces the state (with one advanced from a [`PySchedulerMixin::snapshot`]).
    pub(crate) fn restore(&self, scheduler: Scheduler) {
        *lock(&self.inner) = scheduler;
    }

    /// Runs a scheduler call with the arguments bound by name: the tensors converted, the noise
    /// source resolved (the default generator when none is given), the rest passed as the
    /// scheduler's own arguments; returns diffusers' output object or tuple.
    fn call<'py>(
        &self,
        py: Python<'py>,
        method: Option<&str>,
        tensor_names: &[&str],
        bound: Vec<(String, Bound<'py, PyAny>)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut like = None;
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        let mut timestep = None;
        let mut generator = None;
        let mut variance_noise = None;
        let mut return_dict = true;
        let mut args = Args::new();
        for (name, value) in bound {
            match name.as_str() {
                "timestep" => timestep = Some(timestep_value(&value)?),
                "generator" => generator = Some(value).filter(|g| !g.is_none()),
                "variance_noise" => {
                    if !value.is_none() {
                        variance_noise = Some(to_tensor(&value, "variance_noise", Numbers::Float)?);
                    }
                }
                "return_dict" => return_dict = bool_arg(Some(&value), "return_dict", true)?,
                n if tensor_names.contains(&n) => {
                    if n == "sample" {
                        like = Some(Like::of(&value)?);
                    }
                    tensors.push((name.clone(), to_tensor(&value, n, Numbers::Float)?));
                }
                // diffusers' None means "the default"
                _ if value.is_none() => {}
                n => args.insert(n, py_to_json(&value, n)?),
            }
        }
        let like = like.ok_or_else(|| argument_error(py, "sample", "missing"))?;
        let noise_arg = NoiseArg::resolve(py, generator.as_ref(), variance_noise)?;
        let noise = noise_arg.refs();
        let inner = &self.inner;
        let host = run_detached(py, move || {
            let mut scheduler = lock(inner);
            let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let out = noise.with(|noise| match method {
                None => {
                    let get = |n: &str| {
                        named.iter().find(|(k, _)| *k == n).map(|(_, t)| *t).ok_or_else(|| {
                            Error::argument(n, format!("{}.step needs `{n}`", scheduler_class_name(&scheduler)))
                        })
                    };
                    let (model_output, sample) = (get("model_output")?, get("sample")?);
                    let timestep = timestep.ok_or_else(|| Error::argument("timestep", "missing"))?;
                    let extra: Vec<(&str, &Tensor)> =
                        named.iter().copied().filter(|(n, _)| *n != "model_output" && *n != "sample").collect();
                    let input = StepInput::new(model_output, timestep, sample).with_noise(noise);
                    let input = StepInput { tensors: TensorArgs(&extra), ..input };
                    scheduler.step(input, &args)
                }
                Some(name) => {
                    let input = MethodInput { tensors: TensorArgs(&named), timestep, noise };
                    scheduler.call_method(name, input, &args)
                }
            })?;
            output_arrays(&out)
        })?;
        let mut values = Vec::with_capacity(host.len());
        for (name, array) in host {
            values.push((name, like.convert(py, array)?));
        }
        if return_dict {
            static OUTPUT_CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
            let kwargs = PyDict::new(py);
            for (name, value) in &values {
                kwargs.set_item(*name, value)?;
            }
            OUTPUT_CLASS.import(py, OUTPUTS_MODULE, "SchedulerOutput")?.call((), Some(&kwargs))
        } else {
            Ok(PyTuple::new(py, values.into_iter().map(|(_, v)| v))?.into_any())
        }
    }
}

fn scheduler_class_name(scheduler: &Scheduler) -> &'static str {
    scheduler.kind().class_name()
}

/// The fields of a step's output as host arrays, in diffusers' order.
fn output_arrays(out: &SchedulerOutput) -> crate::Result<Vec<(&'static str, HostArray)>> {
    out.fields().into_iter().map(|(name, t)| Ok((name, HostArray::from_tensor_exact(t)?))).collect()
}

/// A call's noise source as Python gave it.
enum NoiseArg<'py> {
    /// One generator (the given one, or the default generator when none is given).
    One(Bound<'py, PyGenerator>),
    /// One generator per image.
    PerImage(Vec<Bound<'py, PyGenerator>>),
    /// `variance_noise`.
    Given(Tensor),
}

impl<'py> NoiseArg<'py> {
    fn resolve(py: Python<'py>, generator: Option<&Bound<'py, PyAny>>, noise: Option<Tensor>) -> PyResult<Self> {
        match (generator, noise) {
            (Some(_), Some(_)) => {
                Err(argument_error(py, "variance_noise", "pass either `generator` or `variance_noise`, not both"))
            }
            (None, Some(noise)) => Ok(NoiseArg::Given(noise)),
            // Without a generator, stochastic steps draw from the default generator (as diffusers'
            // steps draw from torch's global one); deterministic steps never advance it.
            (None, None) => Ok(NoiseArg::One(default_generator(py)?.bind(py).clone())),
            (Some(g), None) => Ok(match generator_list(g)? {
                Some(list) => NoiseArg::PerImage(list),
                None => NoiseArg::One(explicit_generator(g)?),
            }),
        }
    }

    /// The source as plain references, usable with the GIL released (the generators are frozen
    /// objects whose state sits behind their own mutex).
    fn refs(&self) -> NoiseRef<'_> {
        match self {
            NoiseArg::One(g) => NoiseRef::One(g.get()),
            NoiseArg::PerImage(list) => NoiseRef::PerImage(list.iter().map(|g| g.get()).collect()),
            NoiseArg::Given(t) => NoiseRef::Given(t),
        }
    }
}

/// [`NoiseArg`] without the GIL.
pub(crate) enum NoiseRef<'a> {
    One(&'a PyGenerator),
    PerImage(Vec<&'a PyGenerator>),
    Given(&'a Tensor),
}

impl NoiseRef<'_> {
    /// Runs `f` with the source locked; a list's generators are copied out and their advanced
    /// states written back.
    pub(crate) fn with<T>(&self, f: impl FnOnce(Noise<'_>) -> crate::Result<T>) -> crate::Result<T> {
        match self {
            NoiseRef::Given(t) => f(Noise::Given(t)),
            NoiseRef::One(g) => f(Noise::Generator(&mut g.lock())),
            NoiseRef::PerImage(list) => {
                let mut generators: Vec<Generator> = list.iter().map(|g| g.snapshot()).collect();
                let result = f(Noise::PerImage(&mut generators));
                for (g, state) in list.iter().zip(generators) {
                    *g.lock() = state;
                }
                result
            }
        }
    }
}

/// Binds a call's arguments to diffusers' parameter names: positionals in `params` order, then the
/// keywords; too many positionals and duplicates are errors naming the call.
fn bind<'py>(
    what: &str,
    params: &[&str],
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
    let py = args.py();
    if args.len() > params.len() {
        return Err(argument_error(
            py,
            "args",
            format!(
                "{what} takes at most {} positional arguments ({}), got {}",
                params.len(),
                params.join(", "),
                args.len()
            ),
        ));
    }
    let mut bound: Vec<(String, Bound<'py, PyAny>)> =
        params.iter().zip(args.iter()).map(|(n, v)| ((*n).to_owned(), v)).collect();
    if let Some(kwargs) = kwargs {
        for (k, v) in kwargs.iter() {
            let key: String = k.extract()?;
            if bound.iter().any(|(n, _)| *n == key) {
                return Err(argument_error(py, &key, format!("{what} got multiple values for `{key}`")));
            }
            bound.push((key, v));
        }
    }
    Ok(bound)
}

#[pymethods]
impl PySchedulerMixin {
    /// Builds the scheduler of this class from config values given as keywords (diffusers' defaults
    /// for the rest), as `DDPMScheduler(beta_schedule="squaredcos_cap_v2")`.
    #[new]
    #[classmethod]
    #[pyo3(signature = (**kwargs))]
    fn py_new(cls: &Bound<'_, PyType>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let py = cls.py();
        guarded(py, || {
            // `_state`: a copy of another scheduler object (how `__copy__` and the loaders make an
            // object of the right class).
            if let Some(state) = kwargs.map(|k| k.get_item("_state")).transpose()?.flatten() {
                let other = state.cast::<PySchedulerMixin>()?.get();
                return Ok(Self {
                    inner: Mutex::new(other.snapshot()),
                    kind: other.kind,
                    config: other.config.clone_ref(py),
                });
            }
            let Some(kind) = class_kind(cls)? else {
                return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "SchedulerMixin is the base class: construct a scheduler class ({}), or use \
                         SchedulerMixin.from_pretrained / from_config",
                    SchedulerKind::supported_list()
                )));
            };
            Self::from_kwargs(py, kind, kwargs)
        })
    }

    /// Loads `scheduler_config.json` from a folder (or a pipeline folder's `scheduler/`), or a Hub
    /// id (downloaded into the Hugging Face cache); the Hub keywords (`revision`, `token`, …) are
    /// taken out of `kwargs`, the other keywords override config values.
    #[classmethod]
    #[pyo3(signature = (path, subfolder=None, **kwargs))]
    fn from_pretrained<'py>(
        cls: &Bound<'py, PyType>,
        path: &Bound<'py, PyAny>,
        subfolder: Option<&Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PySchedulerMixin>> {
        guarded(cls.py(), || {
            let py = cls.py();
            let path_buf: PathBuf = path.extract().map_err(|e| {
                argument_error_from(py, "path", format!("must be a str or os.PathLike, got {}", type_name(path)), e)
            })?;
            let subfolder: Option<String> = match subfolder.filter(|s| !s.is_none()) {
                None => None,
                Some(s) => Some(s.extract().map_err(|_| {
                    argument_error(py, "subfolder", format!("must be a str or None, got {}", type_name(s)))
                })?),
            };
            let (hub_args, overrides) = take_hub_kwargs(py, kwargs, Caller::Scheduler)?;
            let source = run_detached(py, move || {
                let file = locate_config_file(&path_buf, subfolder.as_deref(), &hub_args.hub)?;
                read_config_json(&file)
            })?;
            build(cls, source, overrides.as_ref())
        })
    }

    /// Builds the scheduler from a config (a dict, another scheduler's `.config`, or a scheduler);
    /// keys this class does not use are ignored and keywords override values, as diffusers'
    /// `from_config`: `DDIMScheduler.from_config(pipe.scheduler.config)`.
    #[classmethod]
    #[pyo3(signature = (config=None, **kwargs))]
    fn from_config<'py>(
        cls: &Bound<'py, PyType>,
        config: Option<&Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PySchedulerMixin>> {
        guarded(cls.py(), || {
            let py = cls.py();
            let Some(config) = config.filter(|c| !c.is_none()) else {
                return Err(argument_error(
                    py,
                    "config",
                    "missing: pass a config dict, e.g. another scheduler's `.config`",
                ));
            };
            let mapping = if config.is_instance_of::<PyString>() || is_path(config)? {
                return Err(argument_error(
                    py,
                    "config",
                    format!("must be a config dict; to load a folder use {}.from_pretrained(path)", cls.name()?),
                ));
            } else if config.cast::<PySchedulerMixin>().is_ok() {
                config.getattr("config")?
            } else {
                config.clone()
            };
            let source = py_to_json(&mapping, "")?;
            if !source.is_object() {
                return Err(argument_error(
                    py,
                    "config",
                    format!("must be a dict (a mapping of config keys), got {}", type_name(config)),
                ));
            }
            build(cls, source, kwargs)
        })
    }

    /// The config (a read-only dict with attribute access), as diffusers' `scheduler.config`.
    #[getter]
    fn config(&self, py: Python<'_>) -> Py<PyAny> {
        self.config.clone_ref(py)
    }

    /// The classes that can be built from this one's config (diffusers' `compatibles`).
    #[getter]
    fn compatibles<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let module = py.import(CLASSES_MODULE)?;
        self.kind.compatibles().into_iter().map(|k| module.getattr(k.class_name())).collect()
    }

    /// Sets the inference schedule: `num_inference_steps`, or explicit descending `timesteps` or
    /// `sigmas` where the scheduler takes them, plus its own arguments (RePaint's `jump_length`, …)
    /// by name. `device` is accepted for diffusers compatibility and ignored.
    #[pyo3(signature = (*args, **kwargs))]
    fn set_timesteps(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        guarded(py, || {
            let what = format!("{}.set_timesteps", self.kind.class_name());
            let bound = bind(&what, self.kind.set_timesteps_params(), args, kwargs)?;
            let (mut steps, mut timesteps, mut sigmas, mut own) = (None, None, None, Args::new());
            for (name, value) in bound {
                match name.as_str() {
                    _ if value.is_none() => {}
                    "device" => {}
                    "num_inference_steps" => {
                        let n = int_arg(&value, "num_inference_steps")?;
                        steps =
                            Some(usize::try_from(n).map_err(|_| {
                                argument_error(py, "num_inference_steps", format!("must be ≥ 1, got {n}"))
                            })?);
                    }
                    "timesteps" => timesteps = Some(values_arg(&value, "timesteps")?),
                    "sigmas" => sigmas = Some(values_arg(&value, "sigmas")?),
                    n => own.insert(n, py_to_json(&value, n)?),
                }
            }
            let inner = &self.inner;
            run_detached(py, move || {
                let spec = match (steps, &timesteps, &sigmas) {
                    (Some(n), None, None) => TimestepsSpec::Count(n),
                    (None, Some(ts), None) => TimestepsSpec::Timesteps(ts),
                    (None, None, Some(s)) => TimestepsSpec::Sigmas(s),
                    (None, None, None) => {
                        return Err(Error::argument(
                            "num_inference_steps",
                            "missing: give the number of steps (or custom `timesteps` / `sigmas`)",
                        ))
                    }
                    _ => {
                        return Err(Error::argument(
                            "timesteps",
                            "give only one of num_inference_steps, timesteps and sigmas",
                        ))
                    }
                };
                lock(inner).set_timesteps_with(spec, &own)
            })
        })
    }

    /// The timesteps to step through: int64 for discrete schedulers, float32 for σ-space ones, as
    /// diffusers keeps them (before `set_timesteps`, what diffusers shows then).
    #[getter]
    fn timesteps<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        let scheduler = lock(&self.inner);
        match scheduler.timestep_type() {
            TimestepType::Integer => {
                PyArray1::from_vec(py, scheduler.timesteps().iter().map(|&t| t as i64).collect()).into_any()
            }
            TimestepType::Float => {
                PyArray1::from_vec(py, scheduler.timesteps().iter().map(|&t| t as f32).collect()).into_any()
            }
        }
    }

    /// σ of the inference schedule plus the final one (float32), for σ-space schedulers; else `None`.
    #[getter]
    fn sigmas<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray1<f32>>> {
        let scheduler = lock(&self.inner);
        scheduler.sigmas().map(|s| PyArray1::from_vec(py, s.iter().map(|&v| v as f32).collect()))
    }

    /// The number of inference steps set by `set_timesteps` (`None` before).
    #[getter]
    fn num_inference_steps(&self) -> Option<usize> {
        lock(&self.inner).num_inference_steps()
    }

    /// The standard deviation of the initial noise.
    #[getter]
    fn init_noise_sigma(&self) -> f64 {
        lock(&self.inner).init_noise_sigma()
    }

    /// Model evaluations per step (diffusers' `order`).
    #[getter]
    fn order(&self) -> usize {
        lock(&self.inner).order()
    }

    /// ᾱₜ of the training schedule (float32, as diffusers keeps it), for schedulers that have one.
    #[getter]
    fn alphas_cumprod<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray1<f32>>> {
        let scheduler = lock(&self.inner);
        scheduler.alphas_cumprod().map(|a| PyArray1::from_vec(py, a.iter().map(|&v| v as f32).collect()))
    }

    /// `num_train_timesteps`, as diffusers' `len(scheduler)`.
    fn __len__(&self) -> usize {
        lock(&self.inner).num_train_timesteps()
    }

    /// The model input for `timestep` (σ-space schedulers divide by √(σ² + 1); the others return it
    /// unchanged), as numpy or torch like `sample`.
    #[pyo3(signature = (sample, timestep=None))]
    fn scale_model_input<'py>(
        &self,
        py: Python<'py>,
        sample: &Bound<'py, PyAny>,
        timestep: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guarded(py, || {
            let like = Like::of(sample)?;
            let tensor = to_tensor(sample, "sample", Numbers::Float)?;
            // diffusers' default: schedulers that do not scale ignore it; the others need it
            let timestep = match timestep.filter(|t| !t.is_none()) {
                Some(t) => Some(timestep_value(t)?),
                None => None,
            };
            let inner = &self.inner;
            let id = tensor.id();
            let host = run_detached(py, move || {
                let missing = || Error::argument("timestep", "missing: this scheduler scales the input by σ(timestep)");
                let scaled = match (lock(inner).scale_model_input(&tensor, timestep.unwrap_or(f64::NAN)), timestep) {
                    (Ok(scaled), _) => scaled,
                    (Err(_), None) => return Err(missing()),
                    (Err(e), Some(_)) => return Err(e),
                };
                // The identity hands back the same tensor: return the caller's object, as diffusers.
                if scaled.id() == id {
                    return Ok(None);
                }
                if timestep.is_none() {
                    return Err(missing());
                }
                HostArray::from_tensor_exact(&scaled).map(Some)
            })?;
            match host {
                Some(host) => like.convert(py, host),
                None => Ok(sample.clone()),
            }
        })
    }

    /// One step from `sample` at `timestep` given the model's output there. Further arguments as
    /// diffusers' class takes them, by position or name: `generator` (one, or a list with one per
    /// image), `variance_noise`, `return_dict`, and the scheduler's own (`eta`, `s_churn`, …).
    #[pyo3(signature = (model_output, timestep, sample, *args, **kwargs))]
    fn step<'py>(
        &self,
        py: Python<'py>,
        model_output: &Bound<'py, PyAny>,
        timestep: &Bound<'py, PyAny>,
        sample: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guarded(py, || {
            let what = format!("{}.step", self.kind.class_name());
            let mut bound = vec![
                ("model_output".to_owned(), model_output.clone()),
                ("timestep".to_owned(), timestep.clone()),
                ("sample".to_owned(), sample.clone()),
            ];
            bound.extend(bind(&what, self.kind.step_params(), args, kwargs)?);
            let mut tensors = vec!["model_output", "sample"];
            tensors.extend_from_slice(self.kind.step_tensors());
            self.call(py, None, &tensors, bound)
        })
    }

    /// A scheduler-specific method (`step_pred`, `step_correct`, `undo_step`, …) by name, with its
    /// positional parameters as the registry lists them; the classes expose each as a method.
    #[pyo3(signature = (method, *args, **kwargs))]
    fn _call_method<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guarded(py, || {
            let Some(spec) = self.kind.methods().iter().find(|m| m.name == method) else {
                return Err(argument_error(
                    py,
                    "method",
                    format!("{} has no method `{method}`", self.kind.class_name()),
                ));
            };
            let what = format!("{}.{method}", self.kind.class_name());
            let mut params = spec.params.to_vec();
            params.extend(["generator", "return_dict"]);
            let bound = bind(&what, &params, args, kwargs)?;
            let tensors: Vec<&str> = spec.params.iter().copied().filter(|p| *p != "timestep").collect();
            let out = self.call(py, Some(spec.name), &tensors, bound)?;
            if spec.returns_sample {
                // diffusers returns the tensor itself (the output's only field)
                return out.get_item(0);
            }
            Ok(out)
        })
    }

    fn __copy__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        copy_of(slf.py(), slf.as_any())
    }

    fn __deepcopy__<'py>(slf: &Bound<'py, Self>, _memo: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        copy_of(slf.py(), slf.as_any())
    }

    /// `DDPMScheduler {…config as JSON…}`, as diffusers.
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("indent", 2)?;
        kwargs.set_item("sort_keys", true)?;
        let dict = PyDict::new(py);
        dict.update(self.config.bind(py).cast()?)?;
        let text: String = py.import("json")?.call_method("dumps", (dict,), Some(&kwargs))?.extract()?;
        Ok(format!("{} {text}", self.kind.class_name()))
    }
}

/// A Python scheduler object of the class `scheduler` is, with its config.
pub(crate) fn scheduler_object<'py>(
    py: Python<'py>,
    scheduler: Scheduler,
    source: Option<&Value>,
) -> PyResult<Bound<'py, PySchedulerMixin>> {
    let base = Bound::new(py, PySchedulerMixin::new(py, scheduler, source)?)?;
    Ok(copy_of(py, base.as_any())?.cast_into::<PySchedulerMixin>()?)
}

/// An object of `obj`'s scheduler class holding a copy of its state.
fn copy_of<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let kind = obj.cast::<PySchedulerMixin>()?.get().kind;
    let cls = py.import(CLASSES_MODULE)?.getattr(kind.class_name())?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("_state", obj)?;
    cls.call((), Some(&kwargs))
}

/// The scheduler of class `cls` (or, for `SchedulerMixin` itself, of the config's `_class_name`)
/// from `source` with `overrides`.
fn build<'py>(
    cls: &Bound<'py, PyType>,
    source: Value,
    overrides: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PySchedulerMixin>> {
    let py = cls.py();
    let kind = class_kind(cls)?;
    let overrides = match overrides {
        Some(o) => py_to_json(o.as_any(), "")?,
        None => Value::Object(Map::new()),
    };
    let mut merged = source.clone();
    if let (Value::Object(m), Value::Object(o)) = (&mut merged, &overrides) {
        for (k, v) in o {
            m.insert(k.clone(), v.clone());
        }
    }
    if kind.is_none() && merged.get("_class_name").is_none() {
        return Err(ErrorKind::Config.err(
            py,
            format!(
                "the config has no `_class_name`, so the scheduler class is unknown: use one of {} \
                 .from_config(...)",
                SchedulerKind::supported_list()
            ),
        ));
    }
    let scheduler = run_detached(py, move || match kind {
        Some(kind) => Scheduler::from_json_as(kind, &merged),
        None => Scheduler::from_json(&merged),
    })?;
    // Keywords that no config key takes are ignored, as diffusers does; say so.
    let known = scheduler.config_json();
    if let Value::Object(o) = &overrides {
        let unknown: Vec<&str> =
            o.keys().map(String::as_str).filter(|k| !k.starts_with('_') && known.get(k).is_none()).collect();
        if !unknown.is_empty() {
            let message = format!(
                "{} ignores {} (not in its config; its keys are: {})",
                scheduler.kind().class_name(),
                unknown.join(", "),
                config_keys(&known)
            );
            let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
            PyErr::warn(py, &py.get_type::<PyUserWarning>(), &message, 2)?;
        }
    }
    scheduler_object(py, scheduler, Some(&source))
}

/// The scheduler a class builds: its `_class_name`; `None` for `SchedulerMixin` itself.
fn class_kind(cls: &Bound<'_, PyType>) -> PyResult<Option<SchedulerKind>> {
    match cls.getattr("_class_name") {
        Ok(name) => {
            let name: String = name.extract()?;
            Ok(Some(SchedulerKind::from_class_name(&name).map_err(|e| super::errors::to_py_err(cls.py(), e))?))
        }
        Err(_) => Ok(None),
    }
}

/// The config keys of a config object, for messages.
fn config_keys(config: &Value) -> String {
    match config {
        Value::Object(m) => m.keys().filter(|k| !k.starts_with('_')).map(String::as_str).collect::<Vec<_>>().join(", "),
        _ => String::new(),
    }
}

/// The `FrozenDict` of a scheduler's config: its full config, plus the keys of `source` it does not
/// use (diffusers keeps them for converting to other classes).
fn config_object(py: Python<'_>, scheduler: &Scheduler, source: Option<&Value>) -> PyResult<Py<PyAny>> {
    static FROZEN_DICT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let mut value = scheduler.config_json();
    if let (Value::Object(map), Some(Value::Object(src))) = (&mut value, source) {
        for (k, v) in src {
            if !map.contains_key(k) {
                map.insert(k.clone(), v.clone());
            }
        }
    }
    let dict = json_to_py(py, &value)?;
    Ok(FROZEN_DICT.import(py, OUTPUTS_MODULE, "FrozenDict")?.call1((dict,))?.unbind())
}

/// A timestep: a Python or numpy number, or a one-element numpy array / torch tensor.
fn timestep_value(obj: &Bound<'_, PyAny>) -> PyResult<f64> {
    let py = obj.py();
    let scalar = if is_torch_tensor(obj)? || is_ndarray(obj) {
        let shape: Vec<usize> = obj.getattr("shape")?.extract()?;
        if shape.iter().product::<usize>() != 1 {
            return Err(argument_error(
                py,
                "timestep",
                format!("must be one timestep (a scalar or a one-element array), got an array of shape {shape:?}"),
            ));
        }
        obj.call_method0("item")?
    } else if obj.is_instance(&numpy_module(py)?.getattr("generic")?)? {
        obj.call_method0("item")?
    } else {
        obj.clone()
    };
    if scalar.is_instance_of::<PyBool>() || scalar.is_instance_of::<PyString>() {
        return Err(argument_error(py, "timestep", format!("must be a number, got {}", type_name(&scalar))));
    }
    let t: f64 = scalar.extract().map_err(|e| {
        argument_error_from(
            py,
            "timestep",
            format!("must be a number or a one-element array/tensor, got {}", type_name(obj)),
            e,
        )
    })?;
    if !t.is_finite() {
        return Err(argument_error(py, "timestep", format!("must be finite, got {t}")));
    }
    Ok(t)
}

/// An integer argument (a Python or numpy int).
pub(crate) fn int_arg(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<i64> {
    let py = obj.py();
    let integral = !obj.is_instance_of::<PyBool>()
        && (obj.is_instance_of::<PyInt>() || obj.is_instance(&numpy_module(py)?.getattr("integer")?)?);
    if !integral {
        return Err(argument_error(py, name, format!("must be an int, got {}", type_name(obj))));
    }
    obj.extract::<i64>().map_err(|_| argument_error(py, name, format!("{obj} does not fit in 64 bits")))
}

/// Custom timesteps or σ: a 1-D sequence, array or tensor of numbers.
fn values_arg(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<f64>> {
    let py = obj.py();
    let tensor = to_tensor(obj, name, Numbers::Real)?;
    if tensor.rank() != 1 {
        return Err(argument_error(
            py,
            name,
            format!("must be a 1-D sequence of numbers, got shape {:?}", tensor.dims()),
        ));
    }
    tensor
        .to_dtype(candle_core::DType::F64)
        .and_then(|t| t.to_vec1::<f64>())
        .map_err(|e| super::errors::to_py_err(py, e.into()))
}

/// A float argument: a Python/numpy number or a 0-d array/tensor; `None` is `default`.
pub(crate) fn float_arg(obj: Option<&Bound<'_, PyAny>>, name: &str, default: f64) -> PyResult<f64> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(default);
    };
    let py = obj.py();
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBool>() {
        return Err(argument_error(py, name, format!("must be a number, got {}", type_name(obj))));
    }
    obj.extract::<f64>()
        .map_err(|e| argument_error_from(py, name, format!("must be a number, got {}", type_name(obj)), e))
}

/// A bool argument (anything with a truth value, as Python's `if`); `None` is `default`.
pub(crate) fn bool_arg(obj: Option<&Bound<'_, PyAny>>, name: &str, default: bool) -> PyResult<bool> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(default);
    };
    obj.is_truthy().map_err(|e| argument_error_from(obj.py(), name, "must be a bool", e))
}
