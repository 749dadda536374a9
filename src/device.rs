//! Parsing the device and dtype names users type (`"cpu"`, `"cuda:1"`, `"float16"`, `"bf16"`), with
//! errors that say what is accepted.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// `cpu`, `cuda` (device 0) or `cuda:N`.
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim();
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match name {
        "cuda" => Some(0),
        _ => name.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()),
    };
    match ordinal {
        Some(ordinal) => cuda_device(ordinal),
        None => {
            Err(Error::argument("device", format!("unknown device {name:?}; expected \"cpu\", \"cuda\" or \"cuda:N\"")))
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal).map_err(|e| Error::Unsupported(format!("cannot open cuda:{ordinal}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_ordinal: usize) -> Result<Device> {
    Err(Error::Unsupported("built without CUDA support; install the CUDA wheel (or build with --features cuda)".into()))
}

/// The name users see for a device: `cpu` or `cuda:N`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// `float32`/`f32`/`fp32`, `float16`/`f16`/`fp16`/`half`, `bfloat16`/`bf16`.
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name.trim().trim_start_matches("torch.") {
        "float32" | "f32" | "fp32" | "float" => Ok(DType::F32),
        "float16" | "f16" | "fp16" | "half" => Ok(DType::F16),
        "bfloat16" | "bf16" => Ok(DType::BF16),
        other => Err(Error::argument(
            "dtype",
            format!("unsupported dtype {other:?}; expected \"float32\", \"float16\" or \"bfloat16\""),
        )),
    }
}

/// The numpy/torch name of a model dtype.
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float32",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::F64 => "float64",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
        assert_eq!(parse_dtype("torch.float16").unwrap(), DType::F16);
        assert_eq!(parse_dtype("bf16").unwrap(), DType::BF16);
        assert!(parse_dtype("int8").is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_refused_without_feature() {
        let err = parse_device("cuda:0").unwrap_err().to_string();
        assert!(err.contains("built without CUDA support"), "{err}");
    }
}
