//! The spatial self-attention block of UNet2DModel: diffusers' `Attention` with `AttnProcessor2_0`,
//! as built by the Attn* blocks (`residual_connection=True`, `bias=True`, optional group norm,
//! `rescale_output_factor`). Weight names are diffusers' current ones (`to_q`, `to_k`, `to_v`,
//! `to_out.0`, `group_norm`); legacy names are renamed at load, not here.
//!
//! Float32 on the CPU runs the fused kernel in [`crate::kernels::attention`] (one QKV projection,
//! channel-first, no transposes), and the block keeps its weights in that kernel's layout only; other
//! devices and dtypes use candle's ops on candle's linear layers.

use std::sync::Arc;

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::Linear;

use crate::loading::WeightSource;

use crate::kernels::attention::{attention_cpu, AttentionWeights};
use crate::layers::{linear, GroupNorm};
use crate::profile;

#[derive(Debug, Clone)]
pub struct AttentionBlock {
    group_norm: Option<GroupNorm>,
    projections: Projections,
    heads: usize,
    head_dim: usize,
    rescale_output_factor: f64,
}

/// The four projections, held once: as the CPU kernel lays them out, or as candle's linear layers.
#[derive(Debug, Clone)]
enum Projections {
    /// Float32 models on the CPU: to_q, to_k and to_v fused, in the CPU kernel's layout. The linear
    /// layers they were built from are not kept as well (they would hold every weight a second time).
    Fused(Arc<AttentionWeights>),
    /// Other devices and dtypes, run with candle's ops.
    Linears { to_q: Linear, to_k: Linear, to_v: Linear, to_out: Linear },
}

impl AttentionBlock {
    /// `heads = channels / head_dim` (integer division, as diffusers): the inner width is
    /// `heads × head_dim`, which may be narrower than `channels`.
    pub fn new(
        channels: usize,
        head_dim: usize,
        norm_groups: Option<usize>,
        eps: f64,
        rescale_output_factor: f64,
        vb: WeightSource,
    ) -> Result<Self> {
        Self::build(channels, head_dim, norm_groups, eps, rescale_output_factor, vb, true)
    }

    /// [`Self::new`]; with `fuse` false the block keeps candle's linear layers even where the CPU
    /// kernel applies (the kernel's reference in tests).
    pub(crate) fn build(
        channels: usize,
        head_dim: usize,
        norm_groups: Option<usize>,
        eps: f64,
        rescale_output_factor: f64,
        vb: WeightSource,
        fuse: bool,
    ) -> Result<Self> {
        let heads = channels / head_dim;
        if heads == 0 {
            candle_core::bail!("attention head dim {head_dim} is wider than the {channels} channels");
        }
        let inner = heads * head_dim;
        let group_norm = match norm_groups {
            Some(g) => Some(GroupNorm::new(g, channels, eps, vb.pp("group_norm"))?),
            None => None,
        };
        let to_q = linear(channels, inner, vb.pp("to_q"))?;
        let to_k = linear(channels, inner, vb.pp("to_k"))?;
        let to_v = linear(channels, inner, vb.pp("to_v"))?;
        let to_out = linear(inner, channels, vb.pp("to_out").pp("0"))?;
        let parts = |l: &Linear| (l.weight().clone(), l.bias().cloned());
        let fused = match [parts(&to_q), parts(&to_k), parts(&to_v), parts(&to_out)] {
            [(wq, Some(bq)), (wk, Some(bk)), (wv, Some(bv)), (wo, Some(bo))] if fuse => {
                AttentionWeights::new(channels, heads, head_dim, [(&wq, &bq), (&wk, &bk), (&wv, &bv)], (&wo, &bo))?
            }
            _ => None,
        };
        let projections = match fused {
            Some(fused) => Projections::Fused(Arc::new(fused)),
            None => Projections::Linears { to_q, to_k, to_v, to_out },
        };
        Ok(Self { group_norm, projections, heads, head_dim, rescale_output_factor })
    }

    /// Whether float32 CPU inputs take the fused kernel.
    #[cfg(test)]
    pub(crate) fn has_cpu_kernel(&self) -> bool {
        matches!(self.projections, Projections::Fused(_))
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let fused = match &self.projections {
            Projections::Fused(fused) => fused,
            Projections::Linears { .. } => return self.forward_candle(x),
        };
        let normed = match &self.group_norm {
            Some(norm) => norm.forward(x)?,
            None => x.clone(),
        };
        match attention_cpu(&normed, x, fused, self.rescale_output_factor)? {
            Some(y) => Ok(y),
            // The block's weights are float32 on the CPU, and so is every activation of its model.
            None => candle_core::bail!(
                "attention: the block computes in float32 on the CPU, got a {:?} input of shape {:?} on {:?}",
                x.dtype(),
                x.dims(),
                x.device().location()
            ),
        }
    }

    /// The block with candle's ops (any device and dtype); the reference for the CPU kernel.
    fn forward_candle(&self, x: &Tensor) -> Result<Tensor> {
        let Projections::Linears { to_q, to_k, to_v, to_out } = &self.projections else {
            candle_core::bail!("attention: the block holds its weights for the CPU kernel only");
        };
        let residual = x;
        let (b, c, h, w) = x.dims4()?;
        let x = match &self.group_norm {
            Some(norm) => norm.forward(x)?,
            None => x.clone(),
        };
        // [B, C, H, W] → [B, HW, C]
        let x = profile::time("attention.layout", || x.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous())?;
        let project = |proj: &Linear| -> Result<Tensor> {
            let t = profile::time("attention.projections", || proj.forward(&x))?;
            profile::time("attention.layout", || {
                t.reshape((b, h * w, self.heads, self.head_dim))?.transpose(1, 2)?.contiguous()
            })
        };
        let (q, k, v) = (project(to_q)?, project(to_k)?, project(to_v)?);
        let out = profile::time("attention.core", || self.attend(&q, &k, &v))?; // [B, heads, HW, head_dim]
        let out =
            profile::time("attention.layout", || out.transpose(1, 2)?.reshape((b, h * w, self.heads * self.head_dim)))?;
        let out = profile::time("attention.projections", || to_out.forward(&out))?;
        profile::time("residual", || {
            let out = (out.transpose(D::Minus1, D::Minus2)?.reshape((b, c, h, w))? + residual)?;
            if self.rescale_output_factor == 1.0 {
                Ok(out)
            } else {
                out / self.rescale_output_factor
            }
        })
    }

    /// `softmax(q kᵀ / √d) v` per head.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        // Softmax in float32 even for half-precision models (diffusers' `upcast_softmax=True`).
        let dtype = scores.dtype();
        let probs = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)?;
        probs.matmul(v)
    }
}
