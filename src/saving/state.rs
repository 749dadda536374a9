//! `load_state_dict` and `to`: a model with other weights, or in another dtype or on another device.
//!
//! The model's layers keep their weights only in the kernels' layouts (see [`crate::saving`]), so
//! neither is done in place: the new weights are written into a safetensors image (exactly as
//! `save_pretrained` writes a file) and a new model is built from it with
//! [`UNet2DModel::from_safetensors_bytes`]. The image is the new model's origin, so it saves exactly
//! the weights it computes with; it costs memory of the weights' size (in the model's dtype) for as
//! long as the model lives.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::origin::TensorReader;
use super::safetensors_file::{self, TensorSpec};
use crate::error::{Error, Result};
use crate::loading::LoadOptions;
use crate::unet::UNet2DModel;

/// What the image stands for in error messages.
const IMAGE_NAME: &str = "<state_dict>";

/// Names of a state dict that did not match the model, as torch's `_IncompatibleKeys`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncompatibleKeys {
    /// The model's tensors the state dict does not have (they keep their values), in the model's order.
    pub missing_keys: Vec<String>,
    /// Names of the state dict the model does not have (ignored), in the order given.
    pub unexpected_keys: Vec<String>,
}

impl IncompatibleKeys {
    /// Whether every key matched.
    pub fn is_empty(&self) -> bool {
        self.missing_keys.is_empty() && self.unexpected_keys.is_empty()
    }
}

impl UNet2DModel {
    /// This model with the weights of `tensors` (diffusers' names, as
    /// [`UNet2DModel::state_dict`] gives them), as torch's `load_state_dict`: each tensor is converted
    /// to the model's dtype. With `strict`, the names must match the model's exactly; without, the
    /// model's tensors that are not given keep their values and names the model does not have are
    /// ignored; either way both lists are returned. A shape that differs from the model's is an
    /// error in both modes (as in torch), and so is a missing key when `strict`:
    /// [`Error::InvalidArgument`] listing every missing and unexpected key and every mismatched shape.
    ///
    /// The model itself is unchanged; the returned one is built on the same device in the same dtype.
    /// A later name replaces an earlier one given twice (as in a dict).
    pub fn load_state_dict<I>(&self, tensors: I, strict: bool) -> Result<(UNet2DModel, IncompatibleKeys)>
    where
        I: IntoIterator<Item = (String, Tensor)>,
    {
        let shapes = self.state_dict_shapes()?;
        let mut given: HashMap<String, Tensor> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        for (name, tensor) in tensors {
            if given.insert(name.clone(), tensor).is_none() {
                order.push(name);
            }
        }
        let known: HashSet<&str> = shapes.iter().map(|(n, _)| n.as_str()).collect();
        let keys = IncompatibleKeys {
            missing_keys: shapes.iter().filter(|(n, _)| !given.contains_key(n)).map(|(n, _)| n.clone()).collect(),
            unexpected_keys: order.iter().filter(|n| !known.contains(n.as_str())).cloned().collect(),
        };
        let mismatched: Vec<(&str, &[usize], &[usize])> = shapes
            .iter()
            .filter_map(|(n, s)| {
                given.get(n).filter(|t| t.dims() != s.as_slice()).map(|t| (n.as_str(), t.dims(), &s[..]))
            })
            .collect();
        if !mismatched.is_empty() || (strict && !keys.is_empty()) {
            return Err(Error::argument("state_dict", incompatible_message(&keys, &mismatched, strict)));
        }
        for (name, tensor) in &given {
            if known.contains(name.as_str()) && !tensor.dtype().is_float() && !tensor.dtype().is_int() {
                return Err(Error::argument("state_dict", format!("`{name}` has dtype {:?}", tensor.dtype())));
            }
        }
        let dtype = self.dtype();
        // Only when some tensors keep their values: a model without an origin can still take a full
        // state dict.
        let reader = if keys.missing_keys.is_empty() {
            None
        } else {
            let origin = self.provenance().origin.lock().unwrap_or_else(|e| e.into_inner());
            Some(TensorReader::open(&origin)?)
        };
        let model = self.rebuild(&shapes, dtype, self.device(), |name, shape| match given.get(name) {
            Some(t) => Ok(t.to_device(&Device::Cpu)?.to_dtype(dtype)?),
            None => match &reader {
                Some(r) => r.read(name, shape, dtype),
                None => Err(Error::argument("state_dict", format!("`{name}` is missing"))),
            },
        })?;
        Ok((model, keys))
    }

    /// This model in `dtype` on `device`, as torch's `module.to(device, dtype)`: the weights the
    /// model computes with, converted (float32 → float16 → float32 keeps float16's precision, as in
    /// torch). Returns a copy sharing everything when nothing changes. Refuses a device/dtype pair
    /// the model cannot compute in (bfloat16 on the CPU), as loading does.
    pub fn to(&self, device: &Device, dtype: DType) -> Result<UNet2DModel> {
        crate::loading::check_device_dtype(device, dtype)?;
        if dtype == self.dtype() && device.same_device(self.device()) {
            return Ok(self.clone());
        }
        let shapes = self.state_dict_shapes()?;
        let current = self.dtype();
        let origin = self.provenance().origin.lock().unwrap_or_else(|e| e.into_inner());
        let reader = TensorReader::open(&origin)?;
        let model = self.rebuild(&shapes, dtype, device, |name, shape| {
            // Through the model's own dtype: the values it computes with, rounded as it rounded them.
            Ok(reader.read(name, shape, current)?.to_dtype(dtype)?)
        })?;
        drop(origin);
        Ok(model)
    }

    /// A model of this config with each tensor of `shapes` from `read` (in `dtype`, on the CPU),
    /// through a safetensors image that becomes its origin; the loaded `config.json` is kept.
    fn rebuild(
        &self,
        shapes: &[(String, Vec<usize>)],
        dtype: DType,
        device: &Device,
        mut read: impl FnMut(&str, &[usize]) -> Result<Tensor>,
    ) -> Result<UNet2DModel> {
        crate::loading::check_device_dtype(device, dtype)?;
        let bytes: u128 =
            shapes.iter().map(|(_, s)| (s.iter().product::<usize>() * dtype.size_in_bytes()) as u128).sum();
        crate::memory_budget::check(|| "the model's weights image".into(), bytes)?;
        let name = PathBuf::from(IMAGE_NAME);
        let specs: Vec<TensorSpec> = shapes.iter().map(|(n, s)| TensorSpec { name: n, shape: s }).collect();
        let mut image = Vec::new();
        // The header is about 100 bytes a tensor; a failed reservation is an error, not an abort.
        let capacity = bytes as usize + 128 * shapes.len() + 64;
        image
            .try_reserve_exact(capacity)
            .map_err(|_| crate::memory_budget::too_large_now("the model's weights image", capacity as u128))?;
        safetensors_file::write(&mut image, Path::new(IMAGE_NAME), &specs, dtype, |s| read(s.name, s.shape))?;
        let options = LoadOptions { device: device.clone(), dtype, ..LoadOptions::default() };
        let mut model = UNet2DModel::from_safetensors_bytes(self.config().clone(), image, &name, &options)?;
        let origin = std::mem::replace(
            &mut *model.provenance().origin.lock().unwrap_or_else(|e| e.into_inner()),
            super::WeightOrigin::Unknown,
        );
        model.set_origin(origin, self.provenance().config.clone());
        Ok(model)
    }
}

/// torch's wording: `Missing key(s) in state_dict: "a", "b".` and so on, one line each.
fn incompatible_message(keys: &IncompatibleKeys, mismatched: &[(&str, &[usize], &[usize])], strict: bool) -> String {
    let quoted = |names: &[String]| names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
    let mut lines = vec!["error(s) in loading state_dict for UNet2DModel:".to_string()];
    if strict && !keys.missing_keys.is_empty() {
        lines.push(format!("Missing key(s) in state_dict: {}.", quoted(&keys.missing_keys)));
    }
    if strict && !keys.unexpected_keys.is_empty() {
        lines.push(format!("Unexpected key(s) in state_dict: {}.", quoted(&keys.unexpected_keys)));
    }
    for (name, found, expected) in mismatched {
        lines.push(format!(
            "size mismatch for {name}: copying a param with shape {found:?} from checkpoint, the shape in current \
             model is {expected:?}."
        ));
    }
    lines.join("\n\t")
}
