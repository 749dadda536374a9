//! The Python `Generator` (torch's CPU random stream: `manual_seed`, `initial_seed`, `seed`), the
//! process-wide `default_generator` (what torch's global generator is to `torch.randn` without a
//! generator), `manual_seed` and `randn`.
//!
//! A generator's state sits behind a mutex that is only ever locked for Rust work (never while calling
//! into Python), so a generator may be shared between threads and used with the GIL released.

use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyInt, PyList, PyString, PyTuple};

use super::arrays::{is_ndarray, is_torch, is_torch_tensor, numpy_module, owned_f32_array};
use super::errors::{argument_error, guarded, run_detached};
use crate::error::Error;
use crate::rng::Generator;

/// A random generator reproducing `torch.Generator()` on the CPU: seeded alike, it draws exactly the
/// numbers torch draws, and advances alike.
#[pyclass(frozen, name = "Generator", module = "candle_unet2d")]
pub struct PyGenerator {
    inner: Mutex<Generator>,
}

/// Locks a mutex, ignoring poisoning (a panic while it was held is already reported as `InternalError`).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PyGenerator {
    pub(crate) fn from_generator(generator: Generator) -> Self {
        Self { inner: Mutex::new(generator) }
    }

    /// The generator's state, locked: Rust work only (no Python calls while it is held).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Generator> {
        lock(&self.inner)
    }

    /// A copy of the current state.
    pub(crate) fn snapshot(&self) -> Generator {
        self.lock().clone()
    }

    /// The mutex itself, for Rust code that locks it per draw (the pipeline).
    pub(crate) fn mutex(&self) -> &Mutex<Generator> {
        &self.inner
    }
}

#[pymethods]
impl PyGenerator {
    /// A generator in the state of a fresh `torch.Generator()` (seed 67280421310721).
    #[new]
    #[pyo3(signature = (device=None))]
    fn new(device: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        if let Some(d) = device.filter(|d| !d.is_none()) {
            check_cpu_device(d)?;
        }
        Ok(Self::from_generator(Generator::new()))
    }

    /// Seeds the generator, as `torch.Generator.manual_seed`; returns the generator itself.
    fn manual_seed<'py>(slf: &Bound<'py, Self>, seed: &Bound<'py, PyAny>) -> PyResult<Bound<'py, Self>> {
        let seed = seed_value(seed)?;
        slf.get().lock().manual_seed(seed);
        Ok(slf.clone())
    }

    /// The seed last set, as `torch.Generator.initial_seed`.
    fn initial_seed(&self) -> u64 {
        self.lock().initial_seed()
    }

    /// Seeds the generator from a non-deterministic source and returns the seed, as
    /// `torch.Generator.seed`.
    fn seed(&self) -> u64 {
        let seed = random_seed();
        self.lock().manual_seed(seed);
        seed
    }

    /// Always `"cpu"`: the numbers are torch's CPU stream.
    #[getter]
    fn device(&self) -> &'static str {
        "cpu"
    }

    fn __copy__(&self) -> Self {
        Self::from_generator(self.snapshot())
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> Self {
        self.__copy__()
    }

    fn __repr__(&self) -> String {
        format!("Generator(initial_seed={})", self.initial_seed())
    }
}

/// The process-wide generator used when no generator is given (as torch's default CPU generator): it
/// starts in the state of a fresh `torch.Generator()` and advances with every draw.
pub(crate) fn default_generator(py: Python<'_>) -> PyResult<&Py<PyGenerator>> {
    static DEFAULT: PyOnceLock<Py<PyGenerator>> = PyOnceLock::new();
    DEFAULT.get_or_try_init(py, || Py::new(py, PyGenerator::from_generator(Generator::new())))
}

/// The generator argument of an entry point: a `candle_unet2d.Generator`, or `None` for the default one.
pub(crate) fn generator_arg<'py>(
    py: Python<'py>,
    generator: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyGenerator>> {
    match generator.filter(|g| !g.is_none()) {
        None => Ok(default_generator(py)?.bind(py).clone()),
        Some(g) => explicit_generator(g),
    }
}

/// A generator argument that was given (not `None`).
pub(crate) fn explicit_generator<'py>(g: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyGenerator>> {
    let py = g.py();
    if let Ok(g) = g.cast::<PyGenerator>() {
        return Ok(g.clone());
    }
    let hint = if is_torch(g) {
        "a torch.Generator cannot be used (its state lives in torch); use \
         candle_unet2d.Generator().manual_seed(seed), which draws the same numbers as \
         torch.Generator().manual_seed(seed) on the CPU"
            .to_string()
    } else if g.is_instance_of::<PyList>() || g.is_instance_of::<PyTuple>() {
        "a list of generators (one per image) is not accepted here; pass one candle_unet2d.Generator".into()
    } else {
        format!("must be a candle_unet2d.Generator or None, got {}", type_name(g))
    };
    Err(argument_error(py, "generator", hint))
}

/// A list or tuple of generators (one per image), or `None` when `obj` is not a list or tuple.
pub(crate) fn generator_list<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Vec<Bound<'py, PyGenerator>>>> {
    if !(obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>()) {
        return Ok(None);
    }
    let items: Vec<Bound<'py, PyAny>> = obj.try_iter()?.collect::<PyResult<_>>()?;
    if items.is_empty() {
        return Err(argument_error(obj.py(), "generator", "an empty list of generators (give one per image)"));
    }
    Ok(Some(items.iter().map(explicit_generator).collect::<PyResult<_>>()?))
}

/// Seeds a generator, as `torch.manual_seed`: the default generator (used when no generator is given)
/// is seeded, and returned.
#[pyfunction]
pub(crate) fn manual_seed<'py>(py: Python<'py>, seed: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyGenerator>> {
    let seed = seed_value(seed)?;
    let generator = default_generator(py)?.bind(py).clone();
    generator.get().lock().manual_seed(seed);
    Ok(generator)
}

/// `torch.randn(*size, generator=generator)` as a float32 numpy array; with a list of generators,
/// diffusers' `randn_tensor`: item `i` of the first dimension drawn from generator `i`.
#[pyfunction]
#[pyo3(signature = (*size, generator=None))]
pub(crate) fn randn<'py>(
    py: Python<'py>,
    size: &Bound<'py, PyTuple>,
    generator: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    guarded(py, || {
        let shape = shape_arg(size)?;
        if let Some(list) = generator.filter(|g| !g.is_none()).map(generator_list).transpose()?.flatten() {
            let refs: Vec<&PyGenerator> = list.iter().map(|g| g.get()).collect();
            let dims = shape.clone();
            let data = run_detached(py, move || {
                let mut generators: Vec<Generator> = refs.iter().map(|g| g.snapshot()).collect();
                let result =
                    crate::schedulers::noise::randn_per_image(&mut generators, &dims, &candle_core::Device::Cpu);
                for (g, state) in refs.iter().zip(generators) {
                    *g.lock() = state;
                }
                Ok(result?.flatten_all()?.to_vec1::<f32>()?)
            })?;
            return owned_f32_array(py, &shape, data);
        }
        let generator = generator_arg(py, generator)?;
        let g = generator.get();
        let dims = shape.clone();
        let data = run_detached(py, move || {
            let bytes = dims.iter().fold(4u128, |n, &d| n.saturating_mul(d as u128));
            crate::memory_budget::check(|| format!("randn of shape {dims:?}"), bytes)?;
            g.lock().try_randn(&dims).ok_or_else(|| {
                Error::argument("size", format!("{dims:?} is too large (element count overflows or out of memory)"))
            })
        })?;
        owned_f32_array(py, &shape, data)
    })
}

/// The shape of `randn(*size)`: `randn(2, 3)`, `randn((2, 3))`, `randn([2, 3])`, `randn(())`.
fn shape_arg(size: &Bound<'_, PyTuple>) -> PyResult<Vec<usize>> {
    let py = size.py();
    let items: Vec<Bound<'_, PyAny>> = if size.len() == 1 {
        let only = size.get_item(0)?;
        if only.is_instance_of::<PyInt>() || is_integer_scalar(&only)? {
            vec![only]
        } else if only.is_instance_of::<PyString>() {
            return Err(argument_error(py, "size", "must be ints or a sequence of ints, got a str"));
        } else {
            match only.try_iter() {
                Ok(iter) => iter.collect::<PyResult<_>>()?,
                Err(_) => {
                    return Err(argument_error(
                        py,
                        "size",
                        format!("must be ints or a sequence of ints, got {}", type_name(&only)),
                    ))
                }
            }
        }
    } else if size.is_empty() {
        return Err(argument_error(
            py,
            "size",
            "missing: give the shape, e.g. randn(2, 3) or randn((2, 3)) (randn(()) for a scalar)",
        ));
    } else {
        size.iter().collect()
    };
    items
        .iter()
        .map(|d| {
            if !(d.is_instance_of::<PyInt>() || is_integer_scalar(d)?) {
                return Err(argument_error(
                    py,
                    "size",
                    format!("every dimension must be an int, got {}", type_name(d)),
                ));
            }
            let v: i64 = d
                .extract()
                .map_err(|_| argument_error(py, "size", format!("dimension {d} does not fit in 64 bits")))?;
            usize::try_from(v).map_err(|_| argument_error(py, "size", format!("dimensions must be ≥ 0, got {v}")))
        })
        .collect()
}

/// Whether `obj` is a numpy integer scalar (or a 0-d integer array / torch tensor).
fn is_integer_scalar(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = obj.py();
    if obj.is_instance_of::<pyo3::types::PyBool>() {
        return Ok(false);
    }
    let np = numpy_module(py)?;
    if obj.is_instance(&np.getattr("integer")?)? {
        return Ok(true);
    }
    if is_ndarray(obj) || is_torch_tensor(obj)? {
        let ndim: usize = obj.getattr("ndim")?.extract()?;
        if ndim != 0 {
            return Ok(false);
        }
        let dtype = obj.getattr("dtype")?.str()?.to_string();
        return Ok(dtype.contains("int"));
    }
    Ok(false)
}

/// A seed as torch takes it: an integer in [-2⁶³, 2⁶⁴); negative seeds wrap to `seed mod 2⁶⁴`.
fn seed_value(seed: &Bound<'_, PyAny>) -> PyResult<u64> {
    let py = seed.py();
    let is_int =
        (seed.is_instance_of::<PyInt>() && !seed.is_instance_of::<pyo3::types::PyBool>()) || is_integer_scalar(seed)?;
    if !is_int {
        return Err(argument_error(py, "seed", format!("must be an int, got {}", type_name(seed))));
    }
    if let Ok(v) = seed.extract::<u64>() {
        return Ok(v);
    }
    if let Ok(v) = seed.extract::<i64>() {
        return Ok(v as u64);
    }
    Err(argument_error(py, "seed", format!("{seed} is outside [-2**63, 2**64)")))
}

/// A seed from the operating system's randomness (hash keys) and the clock.
fn random_seed() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    h.write_u128(nanos);
    h.finish()
}

/// `device=` of `Generator(device)`: only the CPU.
fn check_cpu_device(device: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = device.py();
    let name = if device.is_instance_of::<PyString>() || is_torch(device) {
        device.str()?.to_string()
    } else {
        return Err(argument_error(py, "device", format!("must be \"cpu\", got {}", type_name(device))));
    };
    if name == "cpu" {
        Ok(())
    } else {
        Err(argument_error(
            py,
            "device",
            format!(
                "{name:?}: only CPU generators exist (torch's CPU random stream; the noise is drawn on \
                 the CPU and moved to the model's device, as diffusers does with a CPU generator)"
            ),
        ))
    }
}

/// The qualified name of `obj`'s type, for messages.
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().fully_qualified_name().map(|n| n.to_string()).unwrap_or_else(|_| "an unknown type".into())
}
