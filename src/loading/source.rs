//! What the model's constructors read their weights through: candle's `VarBuilder` (any backend:
//! a checkpoint, random weights, a shape recorder), plus, for a checkpoint opened by
//! [`UNet2DModel::from_pretrained`](crate::UNet2DModel::from_pretrained), in-place access to the
//! file's float32 data. The convolutions repack their filters at load; reading them straight from the
//! memory map saves a copy of most of the model (and the page faults of its fresh allocation).

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::VarBuilder;

use super::weights::WeightStore;

/// A `VarBuilder` with, when the weights come from a [`WeightStore`], that store.
#[derive(Clone)]
pub struct WeightSource<'a> {
    vb: VarBuilder<'a>,
    store: Option<&'a WeightStore>,
}

impl<'a> From<VarBuilder<'a>> for WeightSource<'a> {
    fn from(vb: VarBuilder<'a>) -> Self {
        Self { vb, store: None }
    }
}

impl<'a> WeightSource<'a> {
    /// `vb` reading from `store` (which `vb`'s backend must also read).
    pub(crate) fn with_store(vb: VarBuilder<'a>, store: &'a WeightStore) -> Self {
        Self { vb, store: Some(store) }
    }

    /// The same source under the name prefix `name` (`VarBuilder::pp`).
    pub fn pp(&self, name: impl ToString) -> Self {
        Self { vb: self.vb.pp(name), store: self.store }
    }

    /// Tensor `name` of shape `shape`, in the source's dtype and on its device.
    pub fn get(&self, shape: impl Into<Shape>, name: &str) -> Result<Tensor> {
        self.vb.get(shape, name)
    }

    pub fn device(&self) -> &Device {
        self.vb.device()
    }

    pub fn dtype(&self) -> DType {
        self.vb.dtype()
    }

    /// Tensor `name` as float32 values left in the file's shared mapping (see
    /// [`WeightStore::mapped_f32`]) when the model computes in float32 on the CPU; `None` when it cannot
    /// be, and the tensor must be read with [`WeightSource::get`]. Errors are recorded as `get`'s are.
    pub(crate) fn mapped_f32(&self, shape: impl Into<Shape>, name: &str) -> Result<Option<crate::memory::MappedF32>> {
        let Some(store) = self.store else { return Ok(None) };
        if self.vb.dtype() != DType::F32 || !self.vb.device().is_cpu() {
            return Ok(None);
        }
        let prefix = self.vb.prefix();
        let full_name = if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
        store.mapped_f32(&full_name, &shape.into()).map_err(|e| store.record(e))
    }
}
