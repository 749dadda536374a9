//! Writing a safetensors file as the `safetensors` library writes it for diffusers (the header's
//! tensors sorted by name, metadata `{"format": "pt"}` first, the header padded with spaces to a
//! multiple of 8 bytes, then the data in header order), one tensor at a time: a tensor is read from
//! the model's weight origin just before its bytes are written, so saving holds one tensor in memory,
//! not the model.

use std::io::Write;
use std::path::Path;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// A tensor to write: its name, shape and dtype are known before its data is read.
pub(crate) struct TensorSpec<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
}

/// The safetensors name of a dtype.
fn dtype_code(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::F64 => "F64",
        other => return Err(Error::Unsupported(format!("saving {other:?} weights"))),
    })
}

/// The file's first bytes (the header length, then the header), and the tensors in the order their
/// data follows.
fn header<'s, 'a>(specs: &'s [TensorSpec<'a>], dtype: DType) -> Result<(Vec<u8>, Vec<&'s TensorSpec<'a>>)> {
    let code = dtype_code(dtype)?;
    let mut order: Vec<&TensorSpec> = specs.iter().collect();
    order.sort_by(|a, b| a.name.cmp(b.name));
    let mut json = String::from(r#"{"__metadata__":{"format":"pt"}"#);
    let mut offset = 0usize;
    for spec in &order {
        let bytes = spec.shape.iter().product::<usize>() * dtype.size_in_bytes();
        let name = serde_json::to_string(spec.name).map_err(|e| Error::argument("tensor name", e.to_string()))?;
        let shape: Vec<String> = spec.shape.iter().map(usize::to_string).collect();
        json.push_str(&format!(
            r#",{name}:{{"dtype":"{code}","shape":[{}],"data_offsets":[{offset},{}]}}"#,
            shape.join(","),
            offset + bytes
        ));
        offset += bytes;
    }
    json.push('}');
    let mut header = json.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    Ok((out, order))
}

/// A tensor's data as little-endian bytes.
fn tensor_bytes(tensor: &Tensor) -> Result<Vec<u8>> {
    let flat = tensor.flatten_all()?;
    Ok(match tensor.dtype() {
        DType::F32 => flat.to_vec1::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => flat.to_vec1::<half::f16>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::BF16 => flat.to_vec1::<half::bf16>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F64 => flat.to_vec1::<f64>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        other => return Err(Error::Unsupported(format!("saving {other:?} weights"))),
    })
}

/// Writes the safetensors image of `specs` (all of `dtype`) to `out`, reading each tensor with `read`
/// when its turn comes; `path` names the file in errors.
pub(crate) fn write(
    out: &mut impl Write,
    path: &Path,
    specs: &[TensorSpec],
    dtype: DType,
    mut read: impl FnMut(&TensorSpec) -> Result<Tensor>,
) -> Result<()> {
    let (head, order) = header(specs, dtype)?;
    out.write_all(&head).map_err(|e| Error::io(path, e))?;
    for spec in order {
        let tensor = read(spec)?;
        if tensor.dims() != spec.shape || tensor.dtype() != dtype {
            return Err(Error::Weights {
                path: path.to_path_buf(),
                reason: format!(
                    "tensor `{}` was read back as {:?} {:?}, expected {dtype:?} {:?}",
                    spec.name,
                    tensor.dtype(),
                    tensor.dims(),
                    spec.shape
                ),
            });
        }
        out.write_all(&tensor_bytes(&tensor)?).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    struct Raw(Vec<usize>, Vec<u8>);

    impl safetensors::View for &Raw {
        fn dtype(&self) -> safetensors::Dtype {
            safetensors::Dtype::F32
        }
        fn shape(&self) -> &[usize] {
            &self.0
        }
        fn data(&self) -> std::borrow::Cow<'_, [u8]> {
            std::borrow::Cow::Borrowed(&self.1)
        }
        fn data_len(&self) -> usize {
            self.1.len()
        }
    }

    /// The same bytes as the `safetensors` crate's serialiser (which the Python package diffusers
    /// saves with is built on), with the metadata diffusers passes.
    #[test]
    fn matches_the_safetensors_crate() {
        let a = Tensor::arange(0f32, 6.0, &Device::Cpu).unwrap().reshape((2, 3)).unwrap();
        let b = Tensor::new(&[7f32], &Device::Cpu).unwrap();
        let specs = [TensorSpec { name: "z.weight", shape: &[2, 3] }, TensorSpec { name: "a.bias", shape: &[1] }];
        let mut ours = Vec::new();
        let read = |s: &TensorSpec| Ok(if s.name == "a.bias" { b.clone() } else { a.clone() });
        write(&mut ours, Path::new("t"), &specs, DType::F32, read).unwrap();
        let raw_a = Raw(vec![2, 3], tensor_bytes(&a).unwrap());
        let raw_b = Raw(vec![1], tensor_bytes(&b).unwrap());
        let metadata = Some(std::collections::HashMap::from([("format".to_string(), "pt".to_string())]));
        let theirs = safetensors::serialize([("z.weight", &raw_a), ("a.bias", &raw_b)], metadata).unwrap();
        assert_eq!(ours, theirs);
    }
}
