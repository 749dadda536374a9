//! Training noise schedules: betas, `rescale_zero_terminal_snr` and ᾱ (`alphas_cumprod`).
//!
//! These follow diffusers' `scheduling_ddpm.py` (`betas_for_alpha_bar`, `rescale_zero_terminal_snr`,
//! and the `beta_schedule` branches of the schedulers' `__init__`). Every formula is evaluated in
//! f64 — `squaredcos_cap_v2` included (candle-transformers' version divides integers and yields all
//! zeros) — and [`NoiseSchedule::new`] then stores the tables at the float32 precision diffusers
//! stores them in, reproducing its float32 tables bit for bit for the linear, scaled-linear, cosine
//! and laplace schedules (see [`NoiseSchedule`] for why that matters). [`NoiseSchedule::new_exact`]
//! keeps everything in f64.

use crate::error::{Error, Result};

use super::config::BetaSchedule;

/// The largest beta `betas_for_alpha_bar` produces (diffusers' `max_beta`).
pub const MAX_BETA: f64 = 0.999;

/// The continuous ᾱ(t), t ∈ [0, 1], that [`betas_for_alpha_bar`] discretizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlphaTransform {
    /// `cos((t + 0.008) / 1.008 · π/2)²` (Glide / improved DDPM; `squaredcos_cap_v2`).
    Cosine,
    /// `exp(−12 t)`.
    Exp,
    /// The laplace schedule.
    Laplace,
}

impl AlphaTransform {
    fn alpha_bar(self, t: f64) -> f64 {
        match self {
            AlphaTransform::Cosine => {
                let c = ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos();
                c * c
            }
            AlphaTransform::Exp => (t * -12.0).exp(),
            AlphaTransform::Laplace => {
                let lmb = -0.5 * (0.5 - t).signum() * (1.0 - 2.0 * (0.5 - t).abs() + 1e-6).ln();
                // Python's math.copysign(1, 0.0) is +1, like f64::signum(0.0).
                let snr = lmb.exp();
                (snr / (1.0 + snr)).sqrt()
            }
        }
    }
}

/// diffusers' `betas_for_alpha_bar`: `beta_i = min(1 − ᾱ((i+1)/N) / ᾱ(i/N), max_beta)`, in f64.
pub fn betas_for_alpha_bar(num_diffusion_timesteps: usize, max_beta: f64, transform: AlphaTransform) -> Vec<f64> {
    let n = num_diffusion_timesteps as f64;
    (0..num_diffusion_timesteps)
        .map(|i| {
            let t1 = i as f64 / n;
            let t2 = (i + 1) as f64 / n;
            (1.0 - transform.alpha_bar(t2) / transform.alpha_bar(t1)).min(max_beta)
        })
        .collect()
}

/// `numpy.linspace(start, stop, num)` (endpoint included), computed as numpy does.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    let delta = stop - start;
    let div = (num - 1) as f64;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64).collect();
    if num > 1 {
        let step = delta / div;
        if step == 0.0 {
            for v in &mut y {
                *v = *v / div * delta;
            }
        } else {
            for v in &mut y {
                *v *= step;
            }
        }
    } else {
        for v in &mut y {
            *v *= delta;
        }
    }
    for v in &mut y {
        *v += start;
    }
    if num > 1 {
        y[num - 1] = stop;
    }
    y
}

/// `linear`: `linspace(beta_start, beta_end, N)`.
pub fn linear_betas(beta_start: f64, beta_end: f64, n: usize) -> Vec<f64> {
    linspace(beta_start, beta_end, n)
}

/// `scaled_linear`: `linspace(√beta_start, √beta_end, N)²`.
pub fn scaled_linear_betas(beta_start: f64, beta_end: f64, n: usize) -> Vec<f64> {
    linspace(beta_start.sqrt(), beta_end.sqrt(), n).into_iter().map(|b| b * b).collect()
}

/// `sigmoid`: `sigmoid(linspace(−6, 6, N)) · (beta_end − beta_start) + beta_start`.
pub fn sigmoid_betas(beta_start: f64, beta_end: f64, n: usize) -> Vec<f64> {
    linspace(-6.0, 6.0, n)
        .into_iter()
        .map(|x| 1.0 / (1.0 + (-x).exp()) * (beta_end - beta_start) + beta_start)
        .collect()
}

/// The betas of a schedule: `trained_betas` when given, else the `schedule`'s.
pub fn make_betas(
    schedule: BetaSchedule,
    beta_start: f64,
    beta_end: f64,
    num_train_timesteps: usize,
    trained_betas: Option<&[f64]>,
) -> Result<Vec<f64>> {
    if let Some(b) = trained_betas {
        if b.len() != num_train_timesteps {
            return Err(Error::config(
                "trained_betas",
                format!("has {} values but num_train_timesteps is {num_train_timesteps}", b.len()),
            ));
        }
        return Ok(b.to_vec());
    }
    Ok(match schedule {
        BetaSchedule::Linear => linear_betas(beta_start, beta_end, num_train_timesteps),
        BetaSchedule::ScaledLinear => scaled_linear_betas(beta_start, beta_end, num_train_timesteps),
        BetaSchedule::SquaredcosCapV2 => betas_for_alpha_bar(num_train_timesteps, MAX_BETA, AlphaTransform::Cosine),
        BetaSchedule::Laplace => betas_for_alpha_bar(num_train_timesteps, MAX_BETA, AlphaTransform::Laplace),
        BetaSchedule::Exp => betas_for_alpha_bar(num_train_timesteps, MAX_BETA, AlphaTransform::Exp),
        BetaSchedule::Sigmoid => sigmoid_betas(beta_start, beta_end, num_train_timesteps),
    })
}

/// ᾱ: the cumulative product of `1 − beta`.
pub fn alphas_cumprod(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr` (arXiv 2305.08891, Algorithm 1): shifts and scales √ᾱ so the
/// last timestep has zero SNR and the first keeps its value, then converts back to betas (the last
/// beta becomes 1).
pub fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    if betas.is_empty() {
        return Vec::new();
    }
    let mut sqrt_ab: Vec<f64> = alphas_cumprod(betas).into_iter().map(f64::sqrt).collect();
    let first = sqrt_ab[0];
    let last = sqrt_ab[sqrt_ab.len() - 1];
    let scale = first / (first - last);
    for v in &mut sqrt_ab {
        *v = (*v - last) * scale;
    }
    let ab: Vec<f64> = sqrt_ab.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(ab.len());
    out.push(1.0 - ab[0]);
    for i in 1..ab.len() {
        out.push(1.0 - ab[i] / ab[i - 1]);
    }
    out
}

/// Rounds to the nearest float32 value (kept as f64).
pub fn round_f32(x: f64) -> f64 {
    x as f32 as f64
}

/// `torch.linspace(start, end, n, dtype=torch.float32)` as ATen's CPU kernel computes it: the ends
/// are rounded to float32 and the step is computed in float32; the first half counts up from `start`
/// and the second half down from `end`, each value `start + step·i` rounded once (the kernel compiles
/// to fused multiply-adds; this reproduces torch 2.x's x86 output bit for bit).
pub fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f64> {
    let (start, end) = (start as f32, end as f32);
    if n == 1 {
        return vec![start as f64];
    }
    let step = (end - start) / (n - 1) as f32;
    let halfway = n / 2;
    (0..n)
        .map(|i| {
            // f32 × small integer and the f32 sum are exact in f64: one rounding, like an fma
            let v = if i < halfway {
                start as f64 + step as f64 * i as f64
            } else {
                end as f64 - step as f64 * (n - i - 1) as f64
            };
            round_f32(v)
        })
        .collect()
}

/// `torch.cumprod(1 - betas)` on float32 betas: `1 − β` in float32, the product accumulated in f64
/// (ATen's CPU `cumprod` accumulates floats in double) and each value stored as float32.
pub fn alphas_cumprod_f32(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0f64;
    betas
        .iter()
        .map(|&b| {
            acc *= (1.0f32 - b as f32) as f64;
            round_f32(acc)
        })
        .collect()
}

/// [`rescale_zero_terminal_snr`] with diffusers' float32 arithmetic (every operation rounded to
/// float32, as torch does on float32 tensors); the result differs from the f64 version by up to
/// ~2e-4 relative, from float32 cancellation in `1 − ᾱₜ/ᾱₜ₋₁`.
pub fn rescale_zero_terminal_snr_f32(betas: &[f64]) -> Vec<f64> {
    if betas.is_empty() {
        return Vec::new();
    }
    let r = round_f32;
    let mut sqrt_ab: Vec<f64> = alphas_cumprod_f32(betas).into_iter().map(|a| r(a.sqrt())).collect();
    let first = sqrt_ab[0];
    let last = sqrt_ab[sqrt_ab.len() - 1];
    let scale = r(first / r(first - last));
    for v in &mut sqrt_ab {
        *v = r(r(*v - last) * scale);
    }
    let ab: Vec<f64> = sqrt_ab.iter().map(|v| r(v * v)).collect();
    let mut out = Vec::with_capacity(ab.len());
    out.push(r(1.0 - ab[0]));
    for i in 1..ab.len() {
        out.push(r(1.0 - r(ab[i] / ab[i - 1])));
    }
    out
}

/// The training schedule every scheduler builds in its constructor: betas (optionally rescaled to
/// zero terminal SNR) and ᾱ.
///
/// diffusers keeps these tables in float32 (`torch.linspace(..., dtype=torch.float32)`,
/// `torch.tensor(betas, dtype=torch.float32)`, `torch.cumprod` of float32 alphas), and the rounding
/// matters: near t = 0, `1 − ᾱₜ` is ~1e-4, so ᾱₜ's float32 rounding moves it by up to ~5e-4 relative,
/// and every coefficient built on it with it. [`NoiseSchedule::new`] therefore reproduces diffusers'
/// float32 tables (values computed in f64, then rounded where diffusers stores float32; the cumulative
/// product accumulates in f64 like ATen's CPU `cumprod`), while all arithmetic on them is f64.
/// [`NoiseSchedule::new_exact`] keeps everything in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseSchedule {
    /// βₜ, t = 0 … N−1.
    pub betas: Vec<f64>,
    /// ᾱₜ = ∏ₛ≤ₜ (1 − βₛ).
    pub alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    /// Builds the schedule from the config values, with diffusers' float32 tables.
    pub fn new(
        schedule: BetaSchedule,
        beta_start: f64,
        beta_end: f64,
        num_train_timesteps: usize,
        trained_betas: Option<&[f64]>,
        rescale_betas_zero_snr: bool,
    ) -> Result<Self> {
        let n = num_train_timesteps;
        let mut betas: Vec<f64> = match (trained_betas, schedule) {
            (None, BetaSchedule::Linear) => torch_linspace_f32(beta_start, beta_end, n),
            (None, BetaSchedule::ScaledLinear) => torch_linspace_f32(beta_start.sqrt(), beta_end.sqrt(), n)
                .into_iter()
                .map(|b| {
                    let b = b as f32;
                    (b * b) as f64
                })
                .collect(),
            (None, BetaSchedule::Sigmoid) => {
                // sigmoid(torch.linspace(-6, 6, N)) * (beta_end - beta_start) + beta_start, in float32
                let (scale, offset) = ((beta_end - beta_start) as f32, beta_start as f32);
                torch_linspace_f32(-6.0, 6.0, n)
                    .into_iter()
                    .map(|x| {
                        let sig = round_f32(1.0 / (1.0 + (-x).exp())) as f32;
                        (sig * scale + offset) as f64
                    })
                    .collect()
            }
            _ => make_betas(schedule, beta_start, beta_end, n, trained_betas)?.into_iter().map(round_f32).collect(),
        };
        if rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr_f32(&betas);
        }
        let alphas_cumprod = alphas_cumprod_f32(&betas);
        Ok(NoiseSchedule { betas, alphas_cumprod })
    }

    /// Builds the schedule entirely in f64 (no float32 rounding anywhere).
    pub fn new_exact(
        schedule: BetaSchedule,
        beta_start: f64,
        beta_end: f64,
        num_train_timesteps: usize,
        trained_betas: Option<&[f64]>,
        rescale_betas_zero_snr: bool,
    ) -> Result<Self> {
        let mut betas = make_betas(schedule, beta_start, beta_end, num_train_timesteps, trained_betas)?;
        if rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let alphas_cumprod = alphas_cumprod(&betas);
        Ok(NoiseSchedule { betas, alphas_cumprod })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_matches_numpy() {
        assert_eq!(linspace(0.0, 999.0, 1), vec![0.0]);
        assert_eq!(linspace(0.0, 1.0, 3), vec![0.0, 0.5, 1.0]);
        let v = linspace(0.0001, 0.02, 1000);
        assert_eq!(v[0], 0.0001);
        assert_eq!(v[999], 0.02);
        assert!((v[500] - (0.0001 + 500.0 * (0.02 - 0.0001) / 999.0)).abs() < 1e-15);
    }

    #[test]
    fn cosine_betas_are_nonzero_and_capped() {
        let b = betas_for_alpha_bar(1000, MAX_BETA, AlphaTransform::Cosine);
        assert_eq!(b.len(), 1000);
        assert!(b.iter().all(|&x| x > 0.0 && x <= MAX_BETA));
        assert_eq!(b[999], MAX_BETA);
    }

    #[test]
    fn rescale_gives_zero_terminal_snr() {
        let b = rescale_zero_terminal_snr(&scaled_linear_betas(0.00085, 0.012, 1000));
        let ac = alphas_cumprod(&b);
        assert!(ac[999].abs() < 1e-12);
        let orig = alphas_cumprod(&scaled_linear_betas(0.00085, 0.012, 1000));
        assert!((ac[0] - orig[0]).abs() < 1e-12);
    }
}
