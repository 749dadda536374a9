//! Group normalisation with an optional fused SiLU on the CPU (float32): one pass for the statistics
//! and one for normalise + affine (+ SiLU) per (image, group), groups spread over rayon's threads.
//! candle's own group norm is about a dozen full passes over the tensor, plus one more for the SiLU.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous_slice;
use super::simd::{self, multiversion};

/// What to apply after the affine transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    None,
    Silu,
}

struct GroupNormOp {
    groups: usize,
    eps: f64,
    epilogue: Epilogue,
}

/// `group_norm(x) · weight + bias`, then the epilogue. `x`: [B, C, …]; `weight`, `bias`: [C], float32.
/// Returns `None` when the fast path does not apply (not a float32 CPU tensor), so the caller falls back.
pub fn group_norm_cpu(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    epilogue: Epilogue,
) -> Result<Option<Tensor>> {
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 || x.rank() < 3 {
        return Ok(None);
    }
    let x = x.contiguous()?;
    Ok(Some(x.apply_op3_no_bwd(weight, bias, &GroupNormOp { groups, eps, epilogue })?))
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) = (s1, s2, s3) else {
            candle_core::bail!("group-norm: float32 tensors expected");
        };
        let op = self.name();
        let (x, w, b) = (contiguous_slice(x, l1, op)?, contiguous_slice(w, l2, op)?, contiguous_slice(b, l3, op)?);
        let dims = l1.dims();
        let (batch, channels) = (dims[0], dims[1]);
        let spatial: usize = dims[2..].iter().product();
        if self.groups == 0 || channels % self.groups != 0 || w.len() != channels || b.len() != channels {
            candle_core::bail!("group-norm: {} groups, {} weights for {channels} channels", self.groups, w.len());
        }
        let per_group = channels / self.groups;
        let group_len = per_group * spatial;
        let mut out = vec![0f32; x.len()];
        let eps = self.eps;
        let epilogue = self.epilogue;
        out.par_chunks_mut(group_len).zip(x.par_chunks(group_len)).enumerate().for_each(|(i, (dst, src))| {
            let g = i % self.groups;
            // Two passes in f64: mean, then the mean squared deviation (what torch computes, stably).
            let n = src.len() as f64;
            let mean = sum_f64(src, 0.0) / n;
            let var = sum_f64(src, mean) / n;
            let rstd = 1.0 / (var + eps).sqrt();
            for c in 0..per_group {
                let ch = g * per_group + c;
                let scale = (w[ch] as f64 * rstd) as f32;
                let shift = (b[ch] as f64 - mean * w[ch] as f64 * rstd) as f32;
                let range = c * spatial..(c + 1) * spatial;
                affine(&mut dst[range.clone()], &src[range], scale, shift, epilogue == Epilogue::Silu);
            }
        });
        debug_assert_eq!(out.len(), batch * channels * spatial);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

multiversion! {
    /// `Σ x` when `center` is 0, else `Σ (x − center)²`, in f64 with independent lanes so it vectorises
    /// (a single running sum is one long dependency chain).
    fn sum_f64(xs: &[f32], center: f64) -> f64 {
        const LANES: usize = 16;
        let mut acc = [0f64; LANES];
        let chunks = xs.chunks_exact(LANES);
        let tail = chunks.remainder();
        let term = |v: f32| if center == 0.0 { v as f64 } else { (v as f64 - center) * (v as f64 - center) };
        for chunk in chunks {
            for (a, &v) in acc.iter_mut().zip(chunk) {
                *a += term(v);
            }
        }
        acc.iter().sum::<f64>() + tail.iter().map(|&v| term(v)).sum::<f64>()
    }
}

multiversion! {
    /// `dst = src · scale + shift`, then SiLU when `silu`.
    fn affine(dst: &mut [f32], src: &[f32], scale: f32, shift: f32, silu: bool) {
        if silu {
            dst.iter_mut().zip(src).for_each(|(d, &v)| *d = simd::silu(v * scale + shift));
        } else {
            dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v * scale + shift);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    #[test]
    fn matches_candle_group_norm_and_silu() {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 3.0, (2, 8, 5, 7), &dev).unwrap() + 1.5).unwrap();
        let w = Tensor::randn(1f32, 0.2, 8, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, 8, &dev).unwrap();
        let reference = candle_nn::GroupNorm::new(w.clone(), b.clone(), 8, 4, 1e-5).unwrap().forward(&x).unwrap();
        let ours = group_norm_cpu(&x, &w, &b, 4, 1e-5, Epilogue::None).unwrap().unwrap();
        let diff = (&ours - &reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{diff}");
        let ours = group_norm_cpu(&x, &w, &b, 4, 1e-5, Epilogue::Silu).unwrap().unwrap();
        let reference = candle_nn::ops::silu(&reference).unwrap();
        let diff = (&ours - &reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{diff}");
    }
}
