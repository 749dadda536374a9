//! Array conversion between Python (numpy arrays, torch tensors, nested lists, scalars) and candle.
//!
//! Inputs are copied into CPU candle tensors under the GIL: numpy does the dtype conversion and
//! handles any strides, order or byte order; torch tensors go through `Tensor.numpy(force=True)`
//! (bfloat16 and other dtypes numpy lacks through float32 first). torch is never imported unless an
//! argument already is a torch tensor. Outputs become numpy arrays of the model's dtype (float32 for a
//! bfloat16 model, which numpy lacks), or torch tensors of the model's dtype on the input's device.

use candle_core::{DType, Device, Tensor};
use numpy::ndarray::{ArrayD, IxDyn};
use numpy::prelude::*;
use numpy::{Element, PyArray, PyArrayDyn};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};

use super::errors::{argument_error, argument_error_from, to_py_err};
use crate::device::dtype_name;
use crate::error::{Error, Result};
use crate::memory_budget;

/// What an array argument may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Numbers {
    /// Floating point only (the sample).
    Float,
    /// Floats keep their values; integers and booleans become int64 (timesteps, class labels).
    Real,
}

/// The `numpy` module, imported once.
pub(crate) fn numpy_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static NUMPY: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    NUMPY.get_or_try_init(py, || Ok(py.import("numpy")?.unbind())).map(|m| m.bind(py))
}

/// Whether `obj` is a torch object (a tensor, a dtype, a device), judged by its type's module so that
/// torch is never imported to find out.
pub(crate) fn is_torch(obj: &Bound<'_, PyAny>) -> bool {
    obj.get_type().module().map(|m| m.to_string_lossy().starts_with("torch")).unwrap_or(false)
}

/// Whether `obj` is a torch tensor: a torch object with a device and a way to numpy. A `torch.Size`
/// (a tuple), a dtype or a device is not, and is read as what it is.
pub(crate) fn is_torch_tensor(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(is_torch(obj) && obj.hasattr("device")? && obj.hasattr("numpy")?)
}

/// Most dimensions an array argument may have: rust-numpy reads at most 32 (numpy 2 makes up to 64).
const MAX_DIMS: usize = 32;

/// Whether `obj` is a `numpy.ndarray`.
pub(crate) fn is_ndarray(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_instance_of::<numpy::PyUntypedArray>()
}

/// Where a result goes back to: numpy, or torch on the device of the input tensor.
pub(crate) enum Framework {
    Numpy,
    Torch { device: Py<PyAny> },
}

impl Framework {
    /// The framework of the input `sample`.
    pub(crate) fn of(sample: &Bound<'_, PyAny>) -> PyResult<Self> {
        if is_torch_tensor(sample)? {
            Ok(Framework::Torch { device: sample.getattr("device")?.unbind() })
        } else {
            Ok(Framework::Numpy)
        }
    }
}

/// `obj` as a numpy array: torch tensors through `.numpy(force=True)`, anything else through
/// `numpy.asarray`.
fn to_numpy<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let converted = if is_torch_tensor(obj).unwrap_or(false) {
        (|| {
            let mut t = obj.clone();
            let dtype = t.getattr("dtype")?.str()?.to_string();
            let numpy_has_it = matches!(
                dtype.as_str(),
                "torch.float16"
                    | "torch.float32"
                    | "torch.float64"
                    | "torch.int8"
                    | "torch.int16"
                    | "torch.int32"
                    | "torch.int64"
                    | "torch.uint8"
                    | "torch.bool"
            );
            if !numpy_has_it && t.call_method0("is_floating_point")?.is_truthy()? {
                t = t.call_method0("float")?;
            }
            let kwargs = PyDict::new(py);
            kwargs.set_item("force", true)?;
            t.call_method("numpy", (), Some(&kwargs))
        })()
    } else if is_ndarray(obj) {
        Ok(obj.clone())
    } else {
        numpy_module(py)?.call_method1("asarray", (obj,))
    };
    converted.map_err(|e| argument_error_from(py, name, "cannot be converted to an array", e))
}

/// Converts an array argument (numpy array, torch tensor, nested list, scalar) into a CPU candle tensor
/// of the same shape: float32 (from float32 or float16), float64 (from wider floats) or, for
/// [`Numbers::Real`], int64 from integers and booleans.
pub(crate) fn to_tensor(obj: &Bound<'_, PyAny>, name: &str, numbers: Numbers) -> PyResult<Tensor> {
    let py = obj.py();
    let array = to_numpy(obj, name)?;
    let ndim: usize = array.getattr("ndim")?.extract()?;
    if ndim > MAX_DIMS {
        return Err(argument_error(py, name, format!("has {ndim} dimensions; at most {MAX_DIMS} can be read")));
    }
    let dtype = array.getattr("dtype")?;
    let kind: String = dtype.getattr("kind")?.extract()?;
    let itemsize: usize = dtype.getattr("itemsize")?.extract()?;
    let target = match (kind.as_str(), numbers) {
        ("f", _) if itemsize <= 4 => DType::F32,
        ("f", _) => DType::F64,
        ("i" | "u" | "b", Numbers::Real) => DType::I64,
        ("i" | "u" | "b", Numbers::Float) => {
            return Err(argument_error(
                py,
                name,
                format!("must be a floating-point array (float16, float32 or float64), got dtype {}", dtype.str()?),
            ))
        }
        _ => return Err(argument_error(py, name, format!("must be a real numeric array, got dtype {}", dtype.str()?))),
    };
    if kind == "u" && itemsize >= 8 && target == DType::I64 {
        // uint64 values past 2^63 - 1 would wrap to negative int64s (2^64 - 1 to -1).
        let np = numpy_module(py)?;
        let too_big: bool = np.call_method1("any", (np.call_method1("greater", (&array, i64::MAX))?,))?.is_truthy()?;
        if too_big {
            return Err(argument_error(
                py,
                name,
                format!("holds uint64 values above {} (the largest int64); they cannot be read", i64::MAX),
            ));
        }
    }
    // C order, native byte order, aligned, in the target dtype; no copy when it already is.
    let kwargs = PyDict::new(py);
    kwargs.set_item("order", "C")?;
    kwargs.set_item("copy", false)?;
    let array = array
        .call_method("astype", (dtype_name_numpy(target),), Some(&kwargs))
        .map_err(|e| argument_error_from(py, name, "cannot be converted", e))?;
    let tensor = match target {
        DType::F32 => tensor_from::<f32>(&array, name),
        DType::F64 => tensor_from::<f64>(&array, name),
        _ => tensor_from::<i64>(&array, name),
    };
    tensor.map_err(|e| to_py_err(py, e))
}

fn dtype_name_numpy(dtype: DType) -> &'static str {
    match dtype {
        DType::I64 => "int64",
        other => dtype_name(other),
    }
}

/// Copies a numpy array of element type `T` into a CPU tensor.
/// The copy is checked against the memory limit and allocated fallibly: the array exists, but a copy
/// of it may not fit.
fn tensor_from<T: Element + candle_core::WithDType>(array: &Bound<'_, PyAny>, name: &str) -> Result<Tensor> {
    let array =
        array.cast::<PyArrayDyn<T>>().map_err(|e| Error::argument(name, format!("unexpected array type: {e}")))?;
    let readonly = array.readonly();
    let shape = readonly.shape().to_vec();
    let what = format!("a copy of `{name}` (shape {shape:?})");
    let data: Vec<T> = match readonly.as_slice() {
        Ok(slice) => memory_budget::copied_vec(slice.iter().copied(), &what)?,
        Err(_) => memory_budget::copied_vec(readonly.as_array().iter().copied(), &what)?,
    };
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
}

/// A model output copied out of candle, ready to become a Python array (made without the GIL).
pub(crate) struct HostArray {
    dims: Vec<usize>,
    data: HostData,
    /// The dtype the model computed in.
    dtype: DType,
}

enum HostData {
    F32(Vec<f32>),
    /// IEEE half bits, viewed as `float16` by numpy.
    F16(Vec<u16>),
    /// Only from [`HostArray::from_tensor_exact`].
    F64(Vec<f64>),
    /// Only from [`HostArray::from_tensor_exact`].
    U8(Vec<u8>),
}

impl HostArray {
    /// Copies `tensor` to host memory: float16 as is, float32 as is, anything else as float32.
    pub(crate) fn from_tensor(tensor: &Tensor) -> Result<Self> {
        let dims = tensor.dims().to_vec();
        let dtype = tensor.dtype();
        let flat = tensor.flatten_all()?.to_device(&Device::Cpu)?;
        let data = match dtype {
            DType::F16 => HostData::F16(flat.to_vec1::<half::f16>()?.into_iter().map(half::f16::to_bits).collect()),
            DType::F32 => HostData::F32(flat.to_vec1::<f32>()?),
            _ => HostData::F32(flat.to_dtype(DType::F32)?.to_vec1::<f32>()?),
        };
        Ok(Self { dims, data, dtype })
    }

    /// Like [`HostArray::from_tensor`], but float64 and uint8 tensors keep their dtype (scheduler
    /// steps on float64 samples, images as bytes).
    pub(crate) fn from_tensor_exact(tensor: &Tensor) -> Result<Self> {
        let dims = tensor.dims().to_vec();
        let dtype = tensor.dtype();
        let data = match dtype {
            DType::F64 => HostData::F64(tensor.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f64>()?),
            DType::U8 => HostData::U8(tensor.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<u8>()?),
            _ => return Self::from_tensor(tensor),
        };
        Ok(Self { dims, data, dtype })
    }

    /// The numpy array (no copy), or a torch tensor of the model's dtype on the input's device.
    pub(crate) fn into_python<'py>(self, py: Python<'py>, framework: &Framework) -> PyResult<Bound<'py, PyAny>> {
        let array = match self.data {
            HostData::F32(v) => owned_array(py, &self.dims, v)?,
            HostData::F16(v) => owned_array(py, &self.dims, v)?.call_method1("view", ("float16",))?,
            HostData::F64(v) => owned_array(py, &self.dims, v)?,
            HostData::U8(v) => owned_array(py, &self.dims, v)?,
        };
        match framework {
            Framework::Numpy => Ok(array),
            Framework::Torch { device } => {
                let torch = py.import("torch")?;
                let kwargs = PyDict::new(py);
                kwargs.set_item("device", device.bind(py))?;
                let torch_dtype = match self.dtype {
                    DType::U8 => "uint8",
                    other => dtype_name(other),
                };
                kwargs.set_item("dtype", torch.getattr(torch_dtype)?)?;
                torch.call_method1("from_numpy", (array,))?.call_method("to", (), Some(&kwargs))
            }
        }
    }
}

fn owned_array<'py, T: Element>(py: Python<'py>, dims: &[usize], data: Vec<T>) -> PyResult<Bound<'py, PyAny>> {
    let array = ArrayD::from_shape_vec(IxDyn(dims), data)
        .map_err(|e| to_py_err(py, Error::Candle(candle_core::Error::Msg(format!("output shape: {e}")))))?;
    Ok(PyArray::from_owned_array(py, array).into_any())
}

/// A float32 numpy array of shape `dims` owning `data` (row-major).
pub(crate) fn owned_f32_array<'py>(py: Python<'py>, dims: &[usize], data: Vec<f32>) -> PyResult<Bound<'py, PyAny>> {
    owned_array(py, dims, data)
}

/// Where a result that stands for an input array goes back to: the input's framework, device and
/// dtype (a scheduler step returns the sample's type: numpy in, numpy out; torch in, torch out).
pub(crate) struct Like {
    kind: LikeKind,
}

enum LikeKind {
    /// A numpy array: results are cast to its dtype.
    Numpy { dtype: Py<PyAny> },
    /// A torch tensor: results become tensors of its dtype on its device.
    Torch { device: Py<PyAny>, dtype: Py<PyAny> },
    /// Anything else (a list, a scalar): numpy arrays of the computed dtype.
    Other,
}

impl Like {
    /// The framework, device and dtype of `obj`.
    pub(crate) fn of(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        let kind = if is_torch_tensor(obj)? {
            LikeKind::Torch { device: obj.getattr("device")?.unbind(), dtype: obj.getattr("dtype")?.unbind() }
        } else if is_ndarray(obj) {
            LikeKind::Numpy { dtype: obj.getattr("dtype")?.unbind() }
        } else {
            LikeKind::Other
        };
        Ok(Self { kind })
    }

    /// `host` as an array of the input's kind (numpy: no copy when the dtype already matches).
    pub(crate) fn convert<'py>(&self, py: Python<'py>, host: HostArray) -> PyResult<Bound<'py, PyAny>> {
        let array = host.into_python(py, &Framework::Numpy)?;
        match &self.kind {
            LikeKind::Other => Ok(array),
            LikeKind::Numpy { dtype } => {
                let kwargs = PyDict::new(py);
                kwargs.set_item("copy", false)?;
                array.call_method("astype", (dtype.bind(py),), Some(&kwargs))
            }
            LikeKind::Torch { device, dtype } => {
                let torch = py.import("torch")?;
                let kwargs = PyDict::new(py);
                kwargs.set_item("device", device.bind(py))?;
                kwargs.set_item("dtype", dtype.bind(py))?;
                torch.call_method1("from_numpy", (array,))?.call_method("to", (), Some(&kwargs))
            }
        }
    }
}
