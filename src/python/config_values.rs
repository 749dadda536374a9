//! Config values between Python and JSON: what `from_config(**kwargs)` and scheduler arguments pass
//! in (mappings, sequences, numpy scalars and arrays, torch tensors, non-finite floats) and what
//! `.config` hands back.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

use super::arrays::{is_ndarray, is_torch_tensor, numpy_module};
use super::errors::{argument_error, argument_error_from};
use super::rng::type_name;

/// A JSON value as Python: objects become dicts, and the strings `"Infinity"`, `"-Infinity"`, `"NaN"`
/// (how the crate writes non-finite config floats) become floats.
pub(crate) fn json_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
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
pub(crate) fn py_to_json(obj: &Bound<'_, PyAny>, at: &str) -> PyResult<Value> {
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
    // Anything else that converts to a float (`__float__`): a Ctrl-C or SystemExit raised meanwhile
    // reaches the caller untouched.
    match obj.extract::<f64>() {
        Ok(f) => return py_to_json_within(&PyFloat::new(py, f).into_any(), at, depth + 1),
        Err(e) if !e.is_instance_of::<pyo3::exceptions::PyException>(py) => return Err(e),
        Err(_) => {}
    }
    Err(bad(format!("{} cannot be a config value (use numbers, strings, bools, lists or None)", type_name(obj))))
}

/// Whether `obj` is an `os.PathLike`.
pub(crate) fn is_path(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    obj.hasattr("__fspath__")
}
