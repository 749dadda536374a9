//! The Python schedulers: `SchedulerMixin` (the shared methods) and its three classes
//! `DDPMScheduler`, `DDIMScheduler`, `DPMSolverMultistepScheduler`, with diffusers' `from_pretrained`,
//! `from_config`, `config`, `set_timesteps`, `timesteps`, `scale_model_input` and `step`.
//!
//! Each object owns one crate [`Scheduler`] behind a mutex that is locked only for Rust work (with the
//! GIL released in `step`), never while calling into Python. The config is built once, as a
//! `FrozenDict`: the class's full config (`_class_name`, `_diffusers_version`) plus, as diffusers keeps
//! them, the keys of the source config that this class does not use.

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::Mutex;

use numpy::PyArray1;
use pyo3::exceptions::PyUserWarning;
use pyo3::prelude::*;
use pyo3::pyclass_init::PyClassInitializer;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use serde_json::{Map, Number, Value};

use super::arrays::{is_ndarray, is_torch_tensor, numpy_module, to_tensor, HostArray, Like, Numbers};
use super::errors::{argument_error, argument_error_from, guarded, run_detached, ErrorKind};
use super::rng::{default_generator, explicit_generator, lock, type_name, PyGenerator};
use crate::error::Error;
use crate::loading::hub;
use crate::schedulers::config::read_config_json;
use crate::schedulers::{Scheduler, SchedulerKind, StepOptions};

/// The module holding the pure-Python helper classes.
const OUTPUTS_MODULE: &str = "candle_unet2d._outputs";

/// What the three scheduler classes share (diffusers' `SchedulerMixin` + `ConfigMixin`). Not
/// constructed directly: use a scheduler class, or `SchedulerMixin.from_pretrained`/`from_config` to
/// build the class a config's `_class_name` names.
#[pyclass(subclass, frozen, name = "SchedulerMixin", module = "candle_unet2d")]
pub struct PySchedulerMixin {
    inner: Mutex<Scheduler>,
    kind: SchedulerKind,
    /// A `FrozenDict`, built once.
    config: Py<PyAny>,
}

/// diffusers' `DDPMScheduler`.
#[pyclass(extends = PySchedulerMixin, frozen, name = "DDPMScheduler", module = "candle_unet2d")]
pub struct PyDDPMScheduler;

/// diffusers' `DDIMScheduler`.
#[pyclass(extends = PySchedulerMixin, frozen, name = "DDIMScheduler", module = "candle_unet2d")]
pub struct PyDDIMScheduler;

/// diffusers' `DPMSolverMultistepScheduler` (DPM-Solver, DPM-Solver++, SDE variants).
#[pyclass(
    extends = PySchedulerMixin,
    frozen,
    name = "DPMSolverMultistepScheduler",
    module = "candle_unet2d"
)]
pub struct PyDPMSolverMultistepScheduler;

macro_rules! scheduler_class {
    ($class:ident, $kind:expr) => {
        #[pymethods]
        impl $class {
            /// Builds the scheduler from config values given as keywords (diffusers' defaults for the
            /// rest), as `DDPMScheduler(beta_schedule="squaredcos_cap_v2")`.
            #[new]
            #[pyo3(signature = (**kwargs))]
            fn new(py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<PyClassInitializer<Self>> {
                guarded(py, || {
                    let base = PySchedulerMixin::from_kwargs(py, $kind, kwargs)?;
                    Ok(PyClassInitializer::from(base).add_subclass($class))
                })
            }
        }
    };
}

scheduler_class!(PyDDPMScheduler, SchedulerKind::Ddpm);
scheduler_class!(PyDDIMScheduler, SchedulerKind::Ddim);
scheduler_class!(PyDPMSolverMultistepScheduler, SchedulerKind::DpmSolverMultistep);

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
}

/// A Python scheduler object of the class `scheduler` is, with its config.
pub(crate) fn scheduler_object<'py>(
    py: Python<'py>,
    scheduler: Scheduler,
    source: Option<&Value>,
) -> PyResult<Bound<'py, PySchedulerMixin>> {
    wrap(py, PySchedulerMixin::new(py, scheduler, source)?)
}

fn wrap(py: Python<'_>, base: PySchedulerMixin) -> PyResult<Bound<'_, PySchedulerMixin>> {
    let kind = base.kind;
    let init = PyClassInitializer::from(base);
    Ok(match kind {
        SchedulerKind::Ddpm => Bound::new(py, init.add_subclass(PyDDPMScheduler))?.into_super(),
        SchedulerKind::Ddim => Bound::new(py, init.add_subclass(PyDDIMScheduler))?.into_super(),
        SchedulerKind::DpmSolverMultistep => {
            Bound::new(py, init.add_subclass(PyDPMSolverMultistepScheduler))?.into_super()
        }
    })
}

#[pymethods]
impl PySchedulerMixin {
    /// Loads `scheduler_config.json` from a folder (or a pipeline folder's `scheduler/`); keywords
    /// override config values.
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
            let source = run_detached(py, move || {
                let mut dir = path_buf;
                if !dir.exists() {
                    if let Some(id) = dir.to_str().filter(|s| hub::looks_like_repo_id(s) && !s.starts_with('.')) {
                        dir = hub::resolve(id)?;
                    }
                }
                if let Some(sub) = subfolder.filter(|s| !s.is_empty()) {
                    let nested = dir.join(&sub);
                    if !nested.is_dir() {
                        return Err(Error::NotFound { what: format!("subfolder {sub:?} in {}", dir.display()) });
                    }
                    dir = nested;
                }
                read_config_json(&dir)
            })?;
            build(cls, source, kwargs)
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

    /// Sets the inference timesteps: `num_inference_steps` evenly spaced per the config's
    /// `timestep_spacing`, or the given descending `timesteps` (DDPM and DPM-Solver only). `device`
    /// is accepted for diffusers compatibility and ignored (timesteps are numpy arrays).
    #[pyo3(signature = (num_inference_steps=None, device=None, timesteps=None))]
    fn set_timesteps(
        &self,
        py: Python<'_>,
        num_inference_steps: Option<&Bound<'_, PyAny>>,
        device: Option<&Bound<'_, PyAny>>,
        timesteps: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        guarded(py, || {
            let _ = device;
            let steps = match num_inference_steps.filter(|n| !n.is_none()) {
                None => None,
                Some(n) => Some(int_arg(n, "num_inference_steps")?),
            };
            let custom = match timesteps.filter(|t| !t.is_none()) {
                None => None,
                Some(t) => Some(timesteps_arg(t)?),
            };
            let inner = &self.inner;
            let class_name = self.kind.class_name();
            run_detached(py, move || {
                let mut scheduler = lock(inner);
                match (steps, custom) {
                    (Some(_), Some(_)) => {
                        Err(Error::argument("timesteps", "give num_inference_steps or timesteps, not both"))
                    }
                    (None, None) => Err(Error::argument(
                        "num_inference_steps",
                        "missing: give the number of steps (or custom `timesteps`)",
                    )),
                    (Some(n), None) => {
                        let n = usize::try_from(n)
                            .map_err(|_| Error::argument("num_inference_steps", format!("must be ≥ 1, got {n}")))?;
                        scheduler.set_timesteps(n)
                    }
                    (None, Some(ts)) => match &mut *scheduler {
                        Scheduler::Ddpm(s) => s.set_custom_timesteps(&ts),
                        Scheduler::DpmSolverMultistep(s) => s.set_custom_timesteps(&ts),
                        Scheduler::Ddim(_) => Err(Error::argument(
                            "timesteps",
                            format!("{class_name} has no custom timesteps (as in diffusers); give num_inference_steps"),
                        )),
                    },
                }
            })
        })
    }

    /// The timesteps to step through, descending (int64; before `set_timesteps`, every training
    /// timestep, as diffusers).
    #[getter]
    fn timesteps<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        let timesteps = lock(&self.inner).timesteps().to_vec();
        PyArray1::from_vec(py, timesteps)
    }

    /// The number of inference steps set by `set_timesteps` (`None` before).
    #[getter]
    fn num_inference_steps(&self) -> Option<usize> {
        match &*lock(&self.inner) {
            Scheduler::Ddpm(s) => s.num_inference_steps(),
            Scheduler::Ddim(s) => s.num_inference_steps(),
            Scheduler::DpmSolverMultistep(s) => s.num_inference_steps(),
        }
    }

    /// The standard deviation of the initial noise (1.0 for these schedulers).
    #[getter]
    fn init_noise_sigma(&self) -> f64 {
        lock(&self.inner).init_noise_sigma()
    }

    /// Model evaluations per step (1).
    #[getter]
    fn order(&self) -> usize {
        lock(&self.inner).order()
    }

    /// ᾱₜ of the training schedule (float32, as diffusers keeps it).
    #[getter]
    fn alphas_cumprod<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        let values: Vec<f32> = lock(&self.inner).alphas_cumprod().iter().map(|&a| a as f32).collect();
        PyArray1::from_vec(py, values)
    }

    /// `num_train_timesteps`, as diffusers' `len(scheduler)`.
    fn __len__(&self) -> usize {
        lock(&self.inner).num_train_timesteps()
    }

    /// Returns `sample` unchanged: these schedulers do not scale the model input (diffusers returns
    /// the same object too).
    #[pyo3(signature = (sample, timestep=None))]
    fn scale_model_input<'py>(
        &self,
        sample: &Bound<'py, PyAny>,
        timestep: Option<&Bound<'py, PyAny>>,
    ) -> Bound<'py, PyAny> {
        let _ = timestep;
        sample.clone()
    }

    /// One reverse step from `sample` at `timestep` given the model's output there (see the stub).
    #[pyo3(
        signature = (
            model_output,
            timestep,
            sample,
            eta=None,
            generator=None,
            variance_noise=None,
            return_dict=None,
            *,
            use_clipped_model_output=None
        ),
        text_signature = "(self, model_output, timestep, sample, eta=0.0, generator=None, \
                          variance_noise=None, return_dict=True, *, use_clipped_model_output=False)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn step<'py>(
        &self,
        py: Python<'py>,
        model_output: &Bound<'py, PyAny>,
        timestep: &Bound<'py, PyAny>,
        sample: &Bound<'py, PyAny>,
        eta: Option<&Bound<'py, PyAny>>,
        generator: Option<&Bound<'py, PyAny>>,
        variance_noise: Option<&Bound<'py, PyAny>>,
        return_dict: Option<&Bound<'py, PyAny>>,
        use_clipped_model_output: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guarded(py, || {
            let like = Like::of(sample)?;
            let model_output = to_tensor(model_output, "model_output", Numbers::Float)?;
            let sample = to_tensor(sample, "sample", Numbers::Float)?;
            let timestep = timestep_value(timestep)?;
            let eta = float_arg(eta, "eta", 0.0)?;
            let noise = match variance_noise.filter(|v| !v.is_none()) {
                Some(v) => Some(to_tensor(v, "variance_noise", Numbers::Float)?),
                None => None,
            };
            // Without a generator, stochastic steps draw from the default generator (as diffusers' steps
            // draw from torch's global one); deterministic steps never advance it.
            let generator: Option<Bound<'py, PyGenerator>> = match generator.filter(|g| !g.is_none()) {
                Some(g) => Some(explicit_generator(g)?),
                None if noise.is_none() => Some(default_generator(py)?.bind(py).clone()),
                None => None,
            };
            let return_dict = bool_arg(return_dict, "return_dict", true)?;
            let clipped = bool_arg(use_clipped_model_output, "use_clipped_model_output", false)?;

            let generator_ref: Option<&PyGenerator> = generator.as_ref().map(|g| g.get());
            let inner = &self.inner;
            let class_name = self.kind.class_name();
            let (prev, pred) = run_detached(py, move || {
                let mut scheduler = lock(inner);
                let mut generator = generator_ref.map(|g| g.lock());
                let opts = StepOptions { eta, generator: generator.as_deref_mut(), variance_noise: noise.as_ref() };
                let out = match (&mut *scheduler, clipped) {
                    (Scheduler::Ddim(s), true) => {
                        s.step_with_clipped_model_output(&model_output, timestep, &sample, opts, true)?
                    }
                    (_, true) => {
                        return Err(Error::argument(
                            "use_clipped_model_output",
                            format!("only DDIMScheduler has this option, not {class_name}"),
                        ))
                    }
                    (s, false) => s.step(&model_output, timestep, &sample, opts)?,
                };
                let prev = HostArray::from_tensor_exact(&out.prev_sample)?;
                let pred = match &out.pred_original_sample {
                    Some(p) => Some(HostArray::from_tensor_exact(p)?),
                    None => None,
                };
                Ok((prev, pred))
            })?;
            let prev = like.convert(py, prev)?;
            let pred = match pred {
                Some(p) => like.convert(py, p)?,
                None => py.None().into_bound(py),
            };
            if return_dict {
                static OUTPUT_CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
                OUTPUT_CLASS.import(py, OUTPUTS_MODULE, "SchedulerOutput")?.call1((prev, pred))
            } else {
                // As diffusers: DDPM and DDIM return (prev_sample, pred_original_sample), DPM-Solver
                // (prev_sample,).
                let items: Vec<Bound<'py, PyAny>> = if pred.is_none() || self.kind == SchedulerKind::DpmSolverMultistep
                {
                    vec![prev]
                } else {
                    vec![prev, pred]
                };
                Ok(PyTuple::new(py, items)?.into_any())
            }
        })
    }

    fn __copy__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PySchedulerMixin>> {
        wrap(py, Self { inner: Mutex::new(self.snapshot()), kind: self.kind, config: self.config.clone_ref(py) })
    }

    fn __deepcopy__<'py>(&self, py: Python<'py>, _memo: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PySchedulerMixin>> {
        self.__copy__(py)
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

/// The scheduler of class `cls` (or, for `SchedulerMixin` itself, of the config's `_class_name`)
/// from `source` with `overrides`.
fn build<'py>(
    cls: &Bound<'py, PyType>,
    source: Value,
    overrides: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PySchedulerMixin>> {
    let py = cls.py();
    let kind = class_kind(cls);
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
            "the config has no `_class_name`, so the scheduler class is unknown: use \
             DDPMScheduler, DDIMScheduler or DPMSolverMultistepScheduler.from_config(...)",
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

/// The kind a class stands for; `None` for `SchedulerMixin` (and Python subclasses of it).
fn class_kind(cls: &Bound<'_, PyType>) -> Option<SchedulerKind> {
    let py = cls.py();
    if cls.is(py.get_type::<PyDDPMScheduler>()) {
        Some(SchedulerKind::Ddpm)
    } else if cls.is(py.get_type::<PyDDIMScheduler>()) {
        Some(SchedulerKind::Ddim)
    } else if cls.is(py.get_type::<PyDPMSolverMultistepScheduler>()) {
        Some(SchedulerKind::DpmSolverMultistep)
    } else {
        None
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

/// A JSON value as Python: objects become dicts, and the strings `"Infinity"`, `"-Infinity"`, `"NaN"`
/// (how the crate writes non-finite config floats) become floats.
fn json_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(s) => match s.as_str() {
            "Infinity" => PyFloat::new(py, f64::INFINITY).into_any(),
            "-Infinity" => PyFloat::new(py, f64::NEG_INFINITY).into_any(),
            "NaN" => PyFloat::new(py, f64::NAN).into_any(),
            other => PyString::new(py, other).into_any(),
        },
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, json_to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// A Python config value as JSON: mappings, lists/tuples, numpy arrays and torch tensors (as lists),
/// numpy scalars, bools, ints, floats (non-finite ones as the strings the crate reads), strings, None.
/// `at` names the key for errors.
fn py_to_json(obj: &Bound<'_, PyAny>, at: &str) -> PyResult<Value> {
    py_to_json_within(obj, at, 0)
}

/// Deepest nesting of lists and dicts a config value may have: a real config nests two deep (a list
/// of `[height, width]`); the bound keeps a self-referential list or a value nested 10,000 deep from
/// recursing until the stack overflows.
const MAX_CONFIG_DEPTH: usize = 32;

/// [`py_to_json`] of a value `depth` containers deep.
fn py_to_json_within(obj: &Bound<'_, PyAny>, at: &str, depth: usize) -> PyResult<Value> {
    let py = obj.py();
    let bad = |what: String| argument_error(py, "config", if at.is_empty() { what } else { format!("`{at}`: {what}") });
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(bad(format!("{obj} does not fit in 64 bits")));
    }
    if obj.is_instance_of::<PyFloat>() {
        let f: f64 = obj.extract()?;
        return Ok(match Number::from_f64(f) {
            Some(n) => Value::Number(n),
            None if f.is_nan() => Value::String("NaN".into()),
            None if f > 0.0 => Value::String("Infinity".into()),
            None => Value::String("-Infinity".into()),
        });
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.extract::<String>()?));
    }
    if depth > MAX_CONFIG_DEPTH {
        return Err(bad(format!(
            "nests lists or dicts more than {MAX_CONFIG_DEPTH} deep (a list that contains itself?)"
        )));
    }
    if obj.is_instance(&numpy_module(py)?.getattr("generic")?)? {
        return py_to_json_within(&obj.call_method0("item")?, at, depth + 1);
    }
    if is_ndarray(obj) || is_torch_tensor(obj)? {
        let list = obj
            .call_method0("tolist")
            .map_err(|e| argument_error_from(py, "config", format!("`{at}`: cannot be read"), e))?;
        return py_to_json_within(&list, at, depth + 1);
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let items: Vec<Value> =
            obj.try_iter()?.map(|item| py_to_json_within(&item?, at, depth + 1)).collect::<PyResult<_>>()?;
        return Ok(Value::Array(items));
    }
    if obj.hasattr("items")? && obj.hasattr("keys")? {
        let mut map = Map::new();
        for item in obj.call_method0("items")?.try_iter()? {
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
            let key: String = k.extract().map_err(|_| bad(format!("keys must be str, got {}", type_name(&k))))?;
            let value = py_to_json_within(&v, &key, depth + 1)?;
            map.insert(key, value);
        }
        return Ok(Value::Object(map));
    }
    Err(bad(format!("{} cannot be a config value (use numbers, strings, bools, lists or None)", type_name(obj))))
}

/// Whether `obj` is an `os.PathLike`.
fn is_path(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    obj.hasattr("__fspath__")
}

/// A timestep of `step`: an int, a numpy integer, or a one-element numpy array / torch tensor; an
/// integral float is accepted too.
fn timestep_value(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
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
    if scalar.is_instance_of::<PyBool>() {
        return Err(argument_error(py, "timestep", "must be an int, got a bool"));
    }
    if scalar.is_instance_of::<PyInt>() {
        return scalar
            .extract::<i64>()
            .map_err(|_| argument_error(py, "timestep", format!("{scalar} does not fit in 64 bits")));
    }
    if scalar.is_instance_of::<PyFloat>() {
        let t: f64 = scalar.extract()?;
        if t.is_finite() && t.fract() == 0.0 && t.abs() < 9.2e18 {
            return Ok(t as i64);
        }
        return Err(argument_error(
            py,
            "timestep",
            format!("{t} is not an integer timestep (use one of scheduler.timesteps)"),
        ));
    }
    Err(argument_error(
        py,
        "timestep",
        format!("must be an int, a numpy integer or a one-element array/tensor, got {}", type_name(obj)),
    ))
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

/// Custom timesteps: a sequence or array of integers.
fn timesteps_arg(obj: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    let py = obj.py();
    let tensor = to_tensor(obj, "timesteps", Numbers::Real)?;
    if tensor.dtype() != candle_core::DType::I64 || tensor.rank() != 1 {
        return Err(argument_error(
            py,
            "timesteps",
            format!("must be a 1-D sequence of integers, got {:?} values of shape {:?}", tensor.dtype(), tensor.dims()),
        ));
    }
    tensor.to_vec1::<i64>().map_err(|e| super::errors::to_py_err(py, e.into()))
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
