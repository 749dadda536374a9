//! Time and class embeddings: diffusers' `Timesteps` (sinusoidal), `GaussianFourierProjection`,
//! the learned time table, `TimestepEmbedding` (the MLP) and the class embedding variants.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, Linear};

use crate::loading::WeightSource;

use crate::config::Activation;
use crate::layers::{linear, linear_forward};

/// Turns a `[B]` vector of timesteps into `[B, dim]` features (diffusers' `time_proj`).
#[derive(Debug, Clone)]
pub enum TimeProjection {
    /// `get_timestep_embedding`: sin/cos of `t · exp(-ln(10000) · i / (half - shift))`.
    Positional { dim: usize, flip_sin_to_cos: bool, freq_shift: f64 },
    /// `GaussianFourierProjection(log=True, flip_sin_to_cos=False)`: sin/cos of `2π · ln(σ) · W`.
    Fourier { weight: Tensor },
    /// `nn.Embedding(num_train_timesteps, dim)` indexed by integer timesteps.
    Learned { table: Embedding, rows: usize },
}

impl TimeProjection {
    pub fn positional(dim: usize, flip_sin_to_cos: bool, freq_shift: f64) -> Self {
        Self::Positional { dim, flip_sin_to_cos, freq_shift }
    }

    /// Weight `time_proj.weight` [dim]; the legacy duplicate `time_proj.W` is never read.
    pub fn fourier(dim: usize, vb: WeightSource) -> Result<Self> {
        Ok(Self::Fourier { weight: vb.get(dim, "weight")?.to_dtype(DType::F32)? })
    }

    pub fn learned(rows: usize, dim: usize, vb: WeightSource) -> Result<Self> {
        let table = vb.get((rows, dim), "weight")?;
        Ok(Self::Learned { table: Embedding::new(table, dim), rows })
    }

    /// `timesteps`: float32 `[B]`. The result is float32 `[B, dim]` (as in diffusers, whatever the
    /// model dtype; the caller casts).
    pub fn forward(&self, timesteps: &Tensor) -> Result<Tensor> {
        match self {
            Self::Positional { dim, flip_sin_to_cos, freq_shift } => {
                positional_embedding(timesteps, *dim, *flip_sin_to_cos, *freq_shift)
            }
            Self::Fourier { weight } => {
                let x = timesteps.log()?.unsqueeze(1)?;
                let proj = (x.broadcast_mul(&weight.unsqueeze(0)?)? * (2.0 * std::f64::consts::PI))?;
                Tensor::cat(&[proj.sin()?, proj.cos()?], D::Minus1)
            }
            Self::Learned { table, rows } => {
                let values = timesteps.to_vec1::<f32>()?;
                let mut idx = Vec::with_capacity(values.len());
                for v in values {
                    if v.fract() != 0.0 || v < 0.0 || v as usize >= *rows {
                        candle_core::bail!(
                            "timestep {v} is not an integer in [0, {rows}) (the learned time embedding has {rows} rows)"
                        );
                    }
                    idx.push(v as u32);
                }
                let idx = Tensor::new(idx, timesteps.device())?;
                table.forward(&idx)?.to_dtype(DType::F32)
            }
        }
    }
}

/// diffusers' `get_timestep_embedding`, in float32 step for step (the frequencies are computed in
/// float32 there, so doing the same keeps large timesteps bit-close).
fn positional_embedding(timesteps: &Tensor, dim: usize, flip: bool, shift: f64) -> Result<Tensor> {
    let half = dim / 2;
    let denom = (half as f64 - shift) as f32;
    let ln_max_period = (10000f64).ln() as f32;
    let freqs: Vec<f32> = (0..half).map(|i| ((-ln_max_period * i as f32) / denom).exp()).collect();
    let freqs = Tensor::from_vec(freqs, (1, half), timesteps.device())?;
    let args = timesteps.to_dtype(DType::F32)?.unsqueeze(1)?.broadcast_mul(&freqs)?;
    let (sin, cos) = (args.sin()?, args.cos()?);
    let emb = if flip { Tensor::cat(&[cos, sin], D::Minus1)? } else { Tensor::cat(&[sin, cos], D::Minus1)? };
    if dim % 2 == 1 {
        emb.pad_with_zeros(D::Minus1, 0, 1)
    } else {
        Ok(emb)
    }
}

/// diffusers' `TimestepEmbedding`: `linear_2(silu(linear_1(x)))`.
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(cin: usize, dim: usize, vb: WeightSource) -> Result<Self> {
        Ok(Self { linear_1: linear(cin, dim, vb.pp("linear_1"))?, linear_2: linear(dim, dim, vb.pp("linear_2"))? })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = Activation::Silu.apply(&linear_forward(&self.linear_1, x)?)?;
        linear_forward(&self.linear_2, &x)
    }
}

/// How class labels join the time embedding.
#[derive(Debug, Clone)]
pub enum ClassEmbedding {
    /// `nn.Embedding(num_class_embeds, time_embed_dim)`, integer labels.
    Table { table: Embedding, rows: usize },
    /// Labels are timesteps: the model's time projection, then this MLP.
    Timestep(TimestepEmbedding),
    /// Labels are `[B, time_embed_dim]` vectors, added as they are.
    Identity { dim: usize },
}

impl ClassEmbedding {
    pub fn table(rows: usize, dim: usize, vb: WeightSource) -> Result<Self> {
        Ok(Self::Table { table: Embedding::new(vb.get((rows, dim), "weight")?, dim), rows })
    }

    /// Integer labels `[B]` (any integer or integral float dtype) to row indices, range-checked.
    pub fn label_indices(labels: &[f64], rows: usize, device: &Device) -> std::result::Result<Tensor, String> {
        let mut idx = Vec::with_capacity(labels.len());
        for &v in labels {
            if v.fract() != 0.0 || v < 0.0 || v >= rows as f64 {
                return Err(format!("class label {v} is not an integer in [0, {rows})"));
            }
            idx.push(v as u32);
        }
        Tensor::new(idx, device).map_err(|e| e.to_string())
    }
}
