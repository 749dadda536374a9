//! Shared σ-space math of the k-diffusion-style schedulers (EulerDiscrete, EulerAncestral, Heun,
//! KDPM2 and KDPM2Ancestral, LMS, DEIS, UniPC, DPMSolverSinglestep), as diffusers 0.42.1 computes it:
//! the training σ table, the float timestep spacings, `np.interp`, the Karras / exponential / beta σ
//! conversions, `_sigma_to_t` and the LMS coefficients.
//!
//! Everything is plain f64 on slices. Where diffusers stores or computes in float32 the functions say
//! so and round with [`round_f32`]; the callers round the final σ table to float32 themselves (every
//! scheduler ends with `np.concatenate([sigmas, [last]]).astype(np.float32)`).
//!
//! Two float32 operations of the reference stack are not correctly rounded, so no IEEE computation
//! reproduces them bit for bit: the bench torch's float32 `x ** 0.5` (used for the σ table; ±1 ulp on
//! ~16% of the default linear table) and numpy's SIMD float32 `np.log` (used for `log_sigmas`; ±1 ulp
//! on ~15–20% of the entries). [`train_sigmas`] and [`log_sigmas`] compute the correctly rounded
//! float32 results instead; the difference is at most one float32 ulp per entry (~6e-8 relative).

use crate::error::{Error, Result};

use super::betas::{linspace, round_f32};
use super::config::TimestepSpacing;
use super::timesteps::{arange_f64, round_half_even};

/// ρ of the Karras schedule (`rho = 7.0` in every diffusers `_convert_to_karras`).
pub const KARRAS_RHO: f64 = 7.0;

/// The α and β of the Beta distribution `_convert_to_beta` uses by default (0.6, 0.6).
pub const BETA_SIGMAS_ALPHA: f64 = 0.6;
/// See [`BETA_SIGMAS_ALPHA`].
pub const BETA_SIGMAS_BETA: f64 = 0.6;

/// The training σ table `((1 − ᾱ) / ᾱ) ** 0.5`, t = 0 … N−1 (ascending in t).
///
/// Every scheduler of this family computes it from its float32 `alphas_cumprod` tensor with torch
/// float32 arithmetic (`np.array(((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5)`), so each
/// of `1 − ᾱ`, the division and the square root is rounded to float32 here (f64 operations on float32
/// inputs rounded once are exactly the float32 results). This differs from
/// `round_f32(((1 − ᾱ)/ᾱ).sqrt())` in f64 (what `dpm_solver.rs` does) in ~20% of the entries by one
/// ulp. The bench torch's float32 square root itself is off by one ulp on ~16% of the entries (see
/// the module docs); with `rescale_betas_zero_snr` (ᾱ₉₉₉ = 2⁻²⁴) it gives 4096.0 where the correctly
/// rounded value is 4095.99976.
pub fn train_sigmas(alphas_cumprod: &[f64]) -> Vec<f64> {
    let r = round_f32;
    alphas_cumprod
        .iter()
        .map(|&a| {
            let a = r(a);
            r(r(r(1.0 - a) / a).sqrt())
        })
        .collect()
}

/// `np.log(sigmas)` of a float32 σ table: the float32 natural log (correctly rounded; numpy's SIMD
/// float32 log differs by one ulp on some entries, see the module docs).
pub fn log_sigmas(sigmas: &[f64]) -> Vec<f64> {
    sigmas.iter().map(|s| round_f32(s.ln())).collect()
}

/// The float timesteps of EulerDiscrete's `set_timesteps(n)` (descending), exactly as numpy computes
/// them before any σ conversion; every value is a float32 (kept as f64).
///
/// - `linspace`: `np.linspace(0, N − 1, n, dtype=np.float32)[::-1]`: computed in f64, then rounded;
///   not integers in general (N = 1000, n = 7 gives 832.5, …).
/// - `leading`: `(np.arange(n) * (N // n)).round()[::-1]` as float32, plus `steps_offset` (added in
///   float32).
/// - `trailing`: `np.arange(N, 0, −N/n).round()` as float32, minus 1 (numpy's float `arange`, so
///   its length is `ceil(N / (N/n))`, which can exceed n by one for some N, n, as in diffusers).
///
/// EulerAncestral, Heun, LMS, KDPM2 and KDPM2Ancestral use the same code (Heun, KDPM2 and
/// KDPM2Ancestral take `N` from an optional `num_train_timesteps` argument of `set_timesteps`; pass
/// that here). DEIS, UniPC and DPMSolverSinglestep use integer schedules with `n + 1` points instead:
/// see [`super::timesteps::dpm_timesteps`]. No bounds are checked (diffusers' Euler family does not
/// check `n ≤ N` either: `leading` then yields `steps_offset` n times); callers validate `n`.
pub fn sigma_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    num_inference_steps: usize,
    steps_offset: i64,
) -> Vec<f64> {
    let big_n = num_train_timesteps;
    let n = num_inference_steps;
    if n == 0 {
        return Vec::new();
    }
    match spacing {
        TimestepSpacing::Linspace => linspace(0.0, big_n as f64 - 1.0, n).into_iter().rev().map(round_f32).collect(),
        TimestepSpacing::Leading => {
            let step_ratio = (big_n / n) as f64;
            (0..n).rev().map(|i| round_f32(round_f32(i as f64 * step_ratio) + steps_offset as f64)).collect()
        }
        TimestepSpacing::Trailing => {
            let step_ratio = big_n as f64 / n as f64;
            arange_f64(big_n as f64, 0.0, -step_ratio)
                .into_iter()
                .map(|v| round_f32(round_f32(round_half_even(v)) - 1.0))
                .collect()
        }
    }
}

/// `np.interp(x, xp, fp)` (default `left = fp[0]`, `right = fp[-1]`), with numpy's arithmetic: for
/// `xp[j] ≤ x < xp[j+1]` the value is `slope·(x − xp[j]) + fp[j]` with
/// `slope = (fp[j+1] − fp[j]) / (xp[j+1] − xp[j])`, `fp[j]` exactly when `x == xp[j]`, and numpy's
/// fallbacks when that is NaN. NaN `x` gives NaN.
///
/// The schedulers call it as `np.interp(timesteps, np.arange(0, len(sigmas)), sigmas)` with float32
/// timesteps and the float32 σ table; the result is f64 (numpy interpolates in double).
///
/// Errors when `xp` and `fp` differ in length, are empty, or `xp` is not ascending (or holds NaN) (numpy does not
/// check this and returns garbage).
pub fn interp(x: &[f64], xp: &[f64], fp: &[f64]) -> Result<Vec<f64>> {
    if xp.len() != fp.len() {
        return Err(Error::argument("fp", format!("has {} values but xp has {}", fp.len(), xp.len())));
    }
    if xp.is_empty() {
        return Err(Error::argument("xp", "must not be empty"));
    }
    if xp.iter().any(|v| v.is_nan()) || xp.windows(2).any(|w| w[0] > w[1]) {
        return Err(Error::argument("xp", "must be ascending"));
    }
    let last = xp.len() - 1;
    let (left, right) = (fp[0], fp[last]);
    Ok(x.iter()
        .map(|&v| {
            if v.is_nan() {
                return v;
            }
            if v > xp[last] {
                return right;
            }
            if v < xp[0] {
                return left;
            }
            // the last j with xp[j] <= v (exists: v >= xp[0])
            let j = xp.partition_point(|&p| p <= v) - 1;
            if j == last {
                return fp[last];
            }
            if xp[j] == v {
                return fp[j];
            }
            let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
            let mut y = slope * (v - xp[j]) + fp[j];
            if y.is_nan() {
                y = slope * (v - xp[j + 1]) + fp[j + 1];
                if y.is_nan() && fp[j] == fp[j + 1] {
                    y = fp[j];
                }
            }
            y
        })
        .collect())
}

/// `np.interp(timesteps, np.arange(0, len(sigmas)), sigmas)`: σ at fractional training timesteps.
pub fn interp_sigmas(timesteps: &[f64], sigmas: &[f64]) -> Result<Vec<f64>> {
    let xp: Vec<f64> = (0..sigmas.len()).map(|i| i as f64).collect();
    interp(timesteps, &xp, sigmas)
}

/// The Karras et al. (2022) schedule for a given ramp: `(σ_max^(1/ρ) + r·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ`
/// for each `r` (`ramp` from 0 to 1 gives σ_max down to σ_min).
pub fn karras_sigmas_from_ramp(ramp: &[f64], sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    ramp.iter().map(|r| (max_inv_rho + r * (min_inv_rho - max_inv_rho)).powf(rho)).collect()
}

/// diffusers' `_convert_to_karras`: `n` Karras σ from σ_max down to σ_min, ramp `np.linspace(0, 1, n)`
/// (ρ = [`KARRAS_RHO`] in every scheduler of this family).
///
/// Where σ_min and σ_max come from differs between schedulers: `in_sigmas[-1]` / `in_sigmas[0]`
/// (`.item()`, so f64), unless the config has `sigma_min` / `sigma_max` set (EulerDiscrete only).
/// The Euler family (Euler, Heun, LMS, KDPM2, KDPM2Ancestral) passes the *interpolated inference* σ
/// (f64 output of [`interp_sigmas`]), so σ_min is σ at the schedule's last timestep (σ at t = 1, not
/// t = 0, for `leading` with `steps_offset = 1`); DEIS, UniPC and DPMSolverSinglestep pass the flipped
/// float32 training table, so σ_min = σ(t=0) and σ_max = σ(t=N−1). LMS's version takes `n` from
/// `self.num_inference_steps`, which is the same `n`.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize, rho: f64) -> Vec<f64> {
    karras_sigmas_from_ramp(&linspace(0.0, 1.0, n), sigma_min, sigma_max, rho)
}

/// diffusers' `_convert_to_exponential`: `np.exp(np.linspace(log σ_max, log σ_min, n))` (σ_min and
/// σ_max as in [`karras_sigmas`]). The last value is `exp(log σ_min)`, which need not equal σ_min
/// bit for bit.
pub fn exponential_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    linspace(sigma_max.ln(), sigma_min.ln(), n).into_iter().map(f64::exp).collect()
}

/// diffusers' `_convert_to_beta` (Lee et al., 2024, "Beta Sampling is All You Need"):
/// `σ_min + ppf(q)·(σ_max − σ_min)` for `q` in `1 − np.linspace(0, 1, n)`, where `ppf` is the
/// quantile function of the Beta(α, β) distribution (`scipy.stats.beta.ppf`; here [`beta_ppf`]).
/// Defaults α = β = 0.6 ([`BETA_SIGMAS_ALPHA`], [`BETA_SIGMAS_BETA`]).
///
/// Errors when α or β is not a positive finite number.
pub fn beta_sigmas(sigma_min: f64, sigma_max: f64, n: usize, alpha: f64, beta: f64) -> Result<Vec<f64>> {
    check_beta_params(alpha, beta)?;
    Ok(linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| sigma_min + beta_ppf(1.0 - r, alpha, beta) * (sigma_max - sigma_min))
        .collect())
}

fn check_beta_params(alpha: f64, beta: f64) -> Result<()> {
    for (name, v) in [("alpha", alpha), ("beta", beta)] {
        if !(v.is_finite() && v > 0.0) {
            return Err(Error::argument(name, format!("must be a positive finite number, got {v}")));
        }
    }
    Ok(())
}

/// ln Γ(x) for x > 0 (Lanczos approximation, g = 7, 9 coefficients; ~1e-15 relative), with the
/// reflection formula below 0.5.
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Γ(x)Γ(1 − x) = π / sin(πx)
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).abs().ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = COEF[0];
    let t = x + G + 0.5;
    for (i, c) in COEF.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The continued fraction of the incomplete beta function (Numerical Recipes' `betacf`, modified
/// Lentz), converging fast for `x < (a + 1) / (a + b + 2)`.
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const MAX_ITER: usize = 10_000;
    const EPS: f64 = 1e-16;
    const FPMIN: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < FPMIN {
        d = FPMIN;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=MAX_ITER {
        let m = m as f64;
        let m2 = 2.0 * m;
        // even step
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < FPMIN {
            d = FPMIN;
        }
        c = 1.0 + aa / c;
        if c.abs() < FPMIN {
            c = FPMIN;
        }
        d = 1.0 / d;
        h *= d * c;
        // odd step
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < FPMIN {
            d = FPMIN;
        }
        c = 1.0 + aa / c;
        if c.abs() < FPMIN {
            c = FPMIN;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// The regularized incomplete beta function Iₓ(a, b) (the Beta(a, b) CDF at `x`), for a, b > 0:
/// 0 at or below x = 0, 1 at or above x = 1, NaN for NaN. Accurate to ~1e-14 relative.
pub fn regularized_incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (-x).ln_1p();
    let front = ln_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// The quantile function of Beta(a, b) (`scipy.stats.beta.ppf(q, a, b)`), for a, b > 0: the
/// smallest double `x` with Iₓ(a, b) ≥ q, found by bisecting the bit patterns of [0, 1] (64 steps
/// give adjacent doubles, so small quantiles keep their relative precision; q > 0.5 is solved as
/// `1 − ppf(1 − q; b, a)` so that x near 1 is precise too). 0 for q ≤ 0, 1 for
/// q ≥ 1, NaN for NaN. Matches scipy (Boost's `ibeta_inv`) to ~1e-14 relative.
pub fn beta_ppf(q: f64, a: f64, b: f64) -> f64 {
    if q.is_nan() {
        return q;
    }
    if q <= 0.0 {
        return 0.0;
    }
    if q >= 1.0 {
        return 1.0;
    }
    if q > 0.5 {
        // solve the upper tail as the lower tail of Beta(b, a) (1 − Iₓ(a, b) = I₁₋ₓ(b, a)): 1 − q is
        // exact here, and the small 1 − x keeps its relative precision
        return 1.0 - lower_ppf(1.0 - q, b, a);
    }
    lower_ppf(q, a, b)
}

/// [`beta_ppf`] for 0 < q ≤ 0.5.
fn lower_ppf(q: f64, a: f64, b: f64) -> f64 {
    // positive doubles are ordered like their bit patterns
    let (mut lo, mut hi) = (0u64, 1f64.to_bits());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if regularized_incomplete_beta(a, b, f64::from_bits(mid)) >= q {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    f64::from_bits(hi)
}

/// The index i of the interpolation interval [i, i + 1] `_sigma_to_t` picks for `log_sigma`:
/// `np.cumsum(log_sigma − log_sigmas >= 0).argmax()` is the last i with `log_sigmas[i] ≤ log_sigma`
/// (0 when there is none), then clipped to N − 2.
fn low_index(log_sigma: f64, log_sigmas: &[f64]) -> usize {
    let last_below = log_sigmas.iter().rposition(|&ls| log_sigma - ls >= 0.0).unwrap_or(0);
    last_below.min(log_sigmas.len() - 2)
}

/// `np.maximum`: NaN propagates (`f64::max` would drop it).
fn np_maximum(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn check_log_sigmas(log_sigmas: &[f64]) -> Result<()> {
    if log_sigmas.len() < 2 {
        return Err(Error::argument(
            "log_sigmas",
            format!("needs at least 2 values to interpolate, got {}", log_sigmas.len()),
        ));
    }
    Ok(())
}

/// diffusers' `_sigma_to_t` with an f64 σ (the Karras / exponential / beta paths, where σ comes from
/// f64 numpy arithmetic): the fractional training timestep whose log σ linearly interpolates to
/// `log(max(σ, 1e-10))` in `log_sigmas` (the float32 [`log_sigmas`] table, ascending in t).
/// `w` is clamped to [0, 1], so σ beyond the table maps to 0 or N − 1. The arithmetic is f64,
/// as numpy's on an f64 σ.
///
/// KDPM2, KDPM2Ancestral, DEIS, UniPC and DPMSolverSinglestep `.round()` the result under
/// `use_karras_sigmas` (numpy's round: half to even); Euler, Heun and LMS keep it fractional and
/// store it as float32. Errors when `log_sigmas` has fewer than 2 values.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> Result<f64> {
    check_log_sigmas(log_sigmas)?;
    let log_sigma = np_maximum(sigma, 1e-10).ln();
    let low_idx = low_index(log_sigma, log_sigmas);
    let high_idx = low_idx + 1;
    let (low, high) = (log_sigmas[low_idx], log_sigmas[high_idx]);
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    Ok((1.0 - w) * low_idx as f64 + w * high_idx as f64)
}

/// Which library does `_sigma_to_t`'s arithmetic on a float32 σ (see [`sigma_to_t_f32`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Float32Path {
    /// numpy float32 σ and table (EulerDiscrete's `set_timesteps(sigmas=[…])`, whose σ are cast to
    /// float32 first): log, distances and `w` in float32, the final `(1 − w)·low + w·high` in f64
    /// (numpy promotes float32 × int64 to f64).
    Numpy,
    /// torch float32 tensors (KDPM2's and KDPM2Ancestral's `timesteps_interpol` from
    /// `sigmas_interpol` and `self.log_sigmas`): everything in float32, the result too.
    Torch,
}

/// diffusers' `_sigma_to_t` called with a float32 σ: as [`sigma_to_t`], but `σ`, its log, the
/// differences and `w` are float32 (rounded here), and the final combination follows `path`.
/// The float32 log is the correctly rounded one (numpy's SIMD log and torch's may differ by an ulp).
pub fn sigma_to_t_f32(sigma: f64, log_sigmas: &[f64], path: Float32Path) -> Result<f64> {
    check_log_sigmas(log_sigmas)?;
    let r = round_f32;
    let log_sigma = r(np_maximum(r(sigma), r(1e-10)).ln());
    let low_idx = low_index(log_sigma, log_sigmas);
    let high_idx = low_idx + 1;
    let (low, high) = (r(log_sigmas[low_idx]), r(log_sigmas[high_idx]));
    let w = r(r(low - log_sigma) / r(low - high)).clamp(0.0, 1.0);
    Ok(match path {
        Float32Path::Numpy => r(1.0 - w) * low_idx as f64 + w * high_idx as f64,
        Float32Path::Torch => r(r(r(1.0 - w) * low_idx as f64) + r(w * high_idx as f64)),
    })
}

/// EulerDiscrete's `timestep_type = "continuous"` (with `v_prediction`) timestep `0.25 · log σ`,
/// computed by torch on the float32 σ, so the result is float32 (scaling by 0.25 is exact, so this
/// is the float32 log times 0.25). EDM's `precondition_noise` is the same formula
/// ([`super::edm::precondition_noise`]).
pub fn continuous_timestep(sigma: f64) -> f64 {
    round_f32(0.25 * round_f32(sigma).ln())
}

/// LMSDiscreteScheduler's `get_lms_coefficient(order, t, current_order)`: the integral over
/// [σₜ, σₜ₊₁] of the Lagrange basis polynomial
/// `∏_{k < order, k ≠ current_order} (τ − σₜ₋ₖ) / (σₜ₋current_order − σₜ₋ₖ)`.
///
/// diffusers integrates it numerically with `scipy.integrate.quad(…, epsrel=1e-4)`; the integrand is
/// a polynomial of degree `order − 1`, so this expands it (in powers of τ − σₜ, to keep the
/// cancellation small) and integrates it exactly: the value quad approximates. diffusers evaluates the
/// integrand in torch float32 (`tau - self.sigmas[t - k]` with `self.sigmas` a float32 tensor), so
/// its coefficients differ from this exact value by ~1e-7 relative; against quad on the f64
/// integrand the difference is ~1e-15.
///
/// `sigmas` is the inference σ table (float32 values, the final 0 included). Equal σ make the
/// coefficient ±inf or NaN, as in diffusers. Errors when `order` is 0, `current_order ≥ order`,
/// `t < order − 1` or `t + 1 ≥ sigmas.len()`.
pub fn lms_coefficient(sigmas: &[f64], order: usize, t: usize, current_order: usize) -> Result<f64> {
    if order == 0 {
        return Err(Error::argument("order", "must be at least 1"));
    }
    if current_order >= order {
        return Err(Error::argument(
            "current_order",
            format!("must be less than order ({order}), got {current_order}"),
        ));
    }
    if t + 1 < order {
        return Err(Error::argument("t", format!("must be at least order − 1 = {}, got {t}", order - 1)));
    }
    if t + 1 >= sigmas.len() {
        return Err(Error::argument(
            "t",
            format!("must be less than {} (σ has {} values), got {t}", sigmas.len().saturating_sub(1), sigmas.len()),
        ));
    }
    let a = sigmas[t];
    let h = sigmas[t + 1] - a;
    let node = sigmas[t - current_order];
    // coefficients of the basis polynomial in u = τ − a, lowest power first
    let mut poly = vec![1.0];
    for k in (0..order).filter(|&k| k != current_order) {
        let s_k = sigmas[t - k];
        let shift = a - s_k;
        let den = node - s_k;
        let mut next = vec![0.0; poly.len() + 1];
        for (i, c) in poly.iter().enumerate() {
            // (u + shift) / den
            next[i] += c * shift / den;
            next[i + 1] += c / den;
        }
        poly = next;
    }
    // ∫₀ʰ Σ cᵢ uⁱ du = Σ cᵢ h^(i+1) / (i+1), by Horner
    let integral = poly.iter().enumerate().rev().fold(0.0, |acc, (i, c)| acc * h + c / (i + 1) as f64) * h;
    Ok(integral)
}

#[cfg(test)]
mod tests {
    //! Reference values made with diffusers 0.42.1 in the bench venv (numpy 2.4.6, torch 2.15) and
    //! scipy 1.17.1 (from the project's .venv, appended to sys.path), printed with `repr(float(v))`:
    //! e.g. `EulerDiscreteScheduler(timestep_spacing=…).set_timesteps(7)`,
    //! `EulerDiscreteScheduler()._convert_to_karras(np.array([14.614641189575195, 1.0,
    //! 0.029167160391807556]), 7)`, `scipy.stats.beta.ppf(q, 0.6, 0.6)`, `np.interp(…)`,
    //! `EulerDiscreteScheduler._sigma_to_t(None, σ, ls)` and `LMSDiscreteScheduler().
    //! get_lms_coefficient(order, t, j)` after `set_timesteps(10)`, next to `scipy.integrate.quad` of
    //! the same integrand in f64.

    use super::*;
    use crate::schedulers::betas::NoiseSchedule;
    use crate::schedulers::config::BetaSchedule;

    fn assert_close(got: &[f64], want: &[f64], rel: f64) {
        assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let tol = rel * w.abs().max(f64::MIN_POSITIVE);
            assert!((g - w).abs() <= tol, "[{i}]: got {g:e}, want {w:e} (rel tol {rel:e})\n got {got:?}");
        }
    }

    /// float32 ulps between two float32 values.
    fn ulps(a: f64, b: f64) -> i64 {
        ((a as f32).to_bits() as i64 - (b as f32).to_bits() as i64).abs()
    }

    const IN_SIGMAS: [f64; 3] = [14.614641189575195, 1.0, 0.029167160391807556];

    #[test]
    fn train_sigmas_are_float32_arithmetic() {
        // ᾱ from EulerDiscreteScheduler().alphas_cumprod at t = 0, 11, 12, 500, 998, 999; "emu" is the
        // float32 computation with correctly rounded ops, "torch" what the bench torch returns
        let idx = [0usize, 11, 12, 500, 998, 999];
        let ac = [
            0.9998999834060669,
            0.9974880814552307,
            0.9971498847007751,
            0.07779665291309357,
            4.118194192415103e-05,
            4.035830352222547e-05,
        ];
        let emu = [
            0.010001329705119133,
            0.05018210783600807,
            0.05346271023154259,
            3.442967414855957,
            155.82518005371094,
            157.4072723388672,
        ];
        let torch = [
            0.010001329705119133,
            0.05018211156129837,
            0.053462713956832886,
            3.442967414855957,
            155.82518005371094,
            157.4072723388672,
        ];
        let log_emu = [
            -4.605037212371826,
            -2.9920966625213623,
            -2.9287707805633545,
            1.2363337278366089,
            5.048734664916992,
            5.058836460113525,
        ];
        let schedule = NoiseSchedule::new(BetaSchedule::Linear, 0.0001, 0.02, 1000, None, false).unwrap();
        let table = train_sigmas(&schedule.alphas_cumprod);
        let logs = log_sigmas(&table);
        for (k, &i) in idx.iter().enumerate() {
            assert_eq!(schedule.alphas_cumprod[i], ac[k]);
            assert_eq!(table[i], emu[k], "t = {i}");
            assert!(ulps(table[i], torch[k]) <= 1, "t = {i}");
            assert_eq!(logs[i], log_emu[k], "t = {i}");
        }
        // rescale_betas_zero_snr sets ᾱ₉₉₉ = 2⁻²⁴: torch gives 4096.0, correctly rounded is below
        assert_eq!(train_sigmas(&[2f64.powi(-24)]), vec![4095.999755859375]);
    }

    #[test]
    fn spacings_match_euler_discrete() {
        use TimestepSpacing::*;
        assert_eq!(sigma_timesteps(Linspace, 1000, 7, 0), vec![999.0, 832.5, 666.0, 499.5, 333.0, 166.5, 0.0]);
        assert_eq!(sigma_timesteps(Leading, 1000, 7, 1), vec![853.0, 711.0, 569.0, 427.0, 285.0, 143.0, 1.0]);
        assert_eq!(sigma_timesteps(Trailing, 1000, 7, 0), vec![999.0, 856.0, 713.0, 570.0, 428.0, 285.0, 142.0]);
        assert_eq!(sigma_timesteps(Linspace, 1000, 3, 0), vec![999.0, 499.5, 0.0]);
        assert_eq!(sigma_timesteps(Trailing, 1000, 3, 0), vec![999.0, 666.0, 332.0]);
        assert_eq!(sigma_timesteps(Linspace, 1000, 1, 0), vec![0.0]);
        assert!(sigma_timesteps(Leading, 1000, 0, 1).is_empty());
    }

    #[test]
    fn interp_matches_numpy() {
        let xp: Vec<f64> = (0..8).map(f64::from).collect();
        let fp = [0.5, 0.75, 1.25, 2.0, 3.5, 3.5, 7.25, 9.0];
        let x = [-1.0, 0.0, 0.30000001192092896, 2.5, 4.75, 5.0, 6.999000072479248, 7.0, 8.5, 3.3333330154418945];
        let want = [0.5, 0.5, 0.5750000029802322, 1.625, 3.5, 3.5, 8.998250126838684, 9.0, 9.0, 2.499999523162842];
        assert_eq!(interp(&x, &xp, &fp).unwrap(), want);
        assert_eq!(interp_sigmas(&x, &fp).unwrap(), want);
        assert!(interp(&[f64::NAN], &xp, &fp).unwrap()[0].is_nan());
        assert_eq!(interp(&[-3.0, 2.0, 5.0], &[2.0], &[4.0]).unwrap(), vec![4.0, 4.0, 4.0]);
        assert!(interp(&x, &xp, &fp[..3]).is_err());
        assert!(interp(&x, &[], &[]).is_err());
        assert!(interp(&x, &[1.0, 0.0], &[1.0, 2.0]).is_err());
    }

    #[test]
    fn karras_and_exponential_match_diffusers() {
        let (sigma_min, sigma_max) = (IN_SIGMAS[2], IN_SIGMAS[0]);
        let karras = [
            14.614641189575194,
            7.094410715348596,
            3.1686031073309535,
            1.274100235046612,
            0.4469182242008371,
            0.13030759310887727,
            0.02916716039180756,
        ];
        assert_close(&karras_sigmas(sigma_min, sigma_max, 7, KARRAS_RHO), &karras, 4e-16);
        assert_eq!(karras_sigmas(sigma_min, sigma_max, 1, KARRAS_RHO), vec![14.614641189575194]);
        let exp = [
            14.614641189575197,
            5.185681302204644,
            1.8400240019041139,
            0.6528917089725197,
            0.23166414307853714,
            0.08220088331765266,
            0.029167160391807556,
        ];
        assert_close(&exponential_sigmas(sigma_min, sigma_max, 7), &exp, 4e-16);
    }

    #[test]
    fn beta_sigmas_match_scipy() {
        let (sigma_min, sigma_max) = (IN_SIGMAS[2], IN_SIGMAS[0]);
        let want = [
            14.614641189575195,
            13.280262909066801,
            10.597607789646236,
            7.321904174983503,
            4.046200560320767,
            1.3635454409002035,
            0.029167160391807556,
        ];
        let got = beta_sigmas(sigma_min, sigma_max, 7, BETA_SIGMAS_ALPHA, BETA_SIGMAS_BETA).unwrap();
        assert_close(&got, &want, 1e-14);
        assert!(beta_sigmas(sigma_min, sigma_max, 7, 0.0, 0.6).is_err());
        assert!(beta_sigmas(sigma_min, sigma_max, 7, 0.6, f64::NAN).is_err());
    }

    #[test]
    fn beta_distribution_matches_scipy() {
        let q = [1e-12, 1e-06, 0.01, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999999];
        let ppf_06 = [
            1.8558824624914097e-20,
            1.8558824624053043e-10,
            0.0008612388215429059,
            0.03958440558878085,
            0.17568037865269498,
            0.23401700387523572,
            0.5000000000000001,
            0.7659829961247643,
            0.9604155944112192,
            0.9991387611784571,
            0.9999999998144118,
        ];
        let ppf_2_5 = [
            2.5819897863610075e-07,
            0.00025828782935406356,
            0.026763191142755053,
            0.09259525891312873,
            0.16116291679032652,
            0.18180347131894917,
            0.26444998329566005,
            0.36035769038002013,
            0.5103163065514917,
            0.7056863283197075,
            0.9555730480299243,
        ];
        let got: Vec<f64> = q.iter().map(|&q| beta_ppf(q, 0.6, 0.6)).collect();
        assert_close(&got, &ppf_06, 1e-13);
        let got: Vec<f64> = q.iter().map(|&q| beta_ppf(q, 2.0, 5.0)).collect();
        assert_close(&got, &ppf_2_5, 1e-13);
        assert_eq!((beta_ppf(0.0, 0.6, 0.6), beta_ppf(1.0, 0.6, 0.6)), (0.0, 1.0));
        assert!(beta_ppf(f64::NAN, 0.6, 0.6).is_nan());

        let x = [0.001, 0.2, 0.5, 0.8, 0.999];
        let cdf_06 = [0.010937923627723186, 0.2713679328265825, 0.5, 0.7286320671734176, 0.9890620763722768];
        let cdf_3_07 =
            [5.356205501935569e-10, 0.004499818024204297, 0.07741115524965336, 0.37092593542773716, 0.981785175090461];
        let got: Vec<f64> = x.iter().map(|&x| regularized_incomplete_beta(0.6, 0.6, x)).collect();
        assert_close(&got, &cdf_06, 1e-14);
        let got: Vec<f64> = x.iter().map(|&x| regularized_incomplete_beta(3.0, 0.7, x)).collect();
        assert_close(&got, &cdf_3_07, 1e-13);
        // ln Γ: Γ(5) = 24, Γ(0.5) = √π
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-14);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-14);
        assert!((ln_gamma(0.1) - 2.2527126517342055).abs() < 1e-14);
    }

    // np.log(np.array([0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 3.0, 14.6], dtype=np.float32))
    const LS: [f64; 8] = [
        -3.5065579414367676,
        -2.995732307434082,
        -2.3025851249694824,
        -1.6094379425048828,
        -0.6931471824645996,
        0.0,
        1.0986123085021973,
        2.6810214519500732,
    ];
    const S2T_SIGMA: [f64; 9] = [1e-12, 0.03, 0.04, 0.1, 0.7, 3.0, 10.0, 14.6, 100.0];

    #[test]
    fn sigma_to_t_matches_diffusers() {
        let want = [
            0.0,
            8.636368820100884e-08,
            0.5631708697043473,
            2.000000046130804,
            4.485426828584204,
            5.999999981946236,
            6.76084796999374,
            7.0,
            7.0,
        ];
        let got: Vec<f64> = S2T_SIGMA.iter().map(|&s| sigma_to_t(s, &LS).unwrap()).collect();
        assert_close(&got, &want, 1e-15);
        assert!(sigma_to_t(1.0, &LS[..1]).is_err());
        assert!(sigma_to_t(f64::NAN, &LS).unwrap().is_nan());
    }

    #[test]
    fn sigma_to_t_f32_matches_numpy_and_torch() {
        // _sigma_to_t(np.float32(σ), ls) and _sigma_to_t(torch.tensor(np.float32(σ)), torch.from_numpy(ls))
        let numpy = [0.0, 0.0, 0.5631707310676575, 2.0, 4.485426843166351, 6.0, 6.760847985744476, 7.0, 7.0];
        let torch = [0.0, 0.0, 0.5631707310676575, 2.0, 4.485426902770996, 6.0, 6.760848045349121, 7.0, 7.0];
        for (k, &s) in S2T_SIGMA.iter().enumerate() {
            let (np_t, torch_t) = (
                sigma_to_t_f32(s, &LS, Float32Path::Numpy).unwrap(),
                sigma_to_t_f32(s, &LS, Float32Path::Torch).unwrap(),
            );
            if s == 0.7 {
                // numpy's SIMD float32 log(0.7) is −0.35667494, one ulp above the correctly rounded
                // −0.35667497, which moves w by one float32 ulp
                assert!((np_t - numpy[k]).abs() < 1e-6 && (torch_t - torch[k]).abs() < 1e-6, "σ = {s}");
            } else {
                assert_eq!(np_t, numpy[k], "σ = {s}");
                assert_eq!(torch_t, torch[k], "σ = {s}");
            }
        }
    }

    #[test]
    fn continuous_timestep_is_a_float32_quarter_log() {
        assert_eq!(continuous_timestep(1.0), 0.0);
        assert_eq!(continuous_timestep(14.614641189575195), round_f32(14.614641189575195f64.ln()) * 0.25);
    }

    #[test]
    fn lms_coefficients_match_quad() {
        // LMSDiscreteScheduler().set_timesteps(10).sigmas
        let sigmas = [
            157.4072723388672,
            54.5675163269043,
            21.417497634887695,
            9.488921165466309,
            4.703334331512451,
            2.5546913146972656,
            1.4623570442199707,
            0.821935772895813,
            0.3803713917732239,
            0.010001329705119133,
            0.0,
        ];
        // (order, t, quad of the f64 integrand, diffusers' get_lms_coefficient)
        let cases: [(usize, usize, &[f64], &[f64]); 6] = [
            (
                4,
                3,
                &[-6.172751202952781, 1.553442834020417, -0.17032513589155882, 0.00404667087006553],
                &[-6.172751364699556, 1.5534429980663667, -0.17032516323151506, 0.00404667128926254],
            ),
            (
                4,
                6,
                &[-0.956542213209828, 0.39098495535267147, -0.0791719498616156, 0.004307936394614275],
                &[-0.9565422625338289, 0.3909849552075546, -0.07917195000735273, 0.004307936679652176],
            ),
            (
                3,
                8,
                &[-0.6245335563742698, 0.3223101293154204, -0.06814663500925527],
                &[-0.6245334945166356, 0.3223101256923441, -0.06814663091316692],
            ),
            (2, 9, &[-0.01013636572195046, 0.0001350360168313296], &[-0.010136365709704352, 0.00013503601795302378]),
            (1, 0, &[-102.83975601196289], &[-102.83975601196289]),
            (
                4,
                9,
                &[-0.01023441676128196, 0.0003375756568474876, -0.00011982737097929296, 1.5338770294633012e-05],
                &[-0.010234416137257719, 0.00033757564129387364, -0.0001198273685422554, 1.5338768714260494e-05],
            ),
        ];
        for (order, t, quad, diffusers) in cases {
            let got: Vec<f64> = (0..order).map(|j| lms_coefficient(&sigmas, order, t, j).unwrap()).collect();
            assert_close(&got, quad, 1e-10);
            // diffusers' float32 integrand
            assert_close(&got, diffusers, 2e-7);
        }
        assert!(lms_coefficient(&sigmas, 0, 3, 0).is_err());
        assert!(lms_coefficient(&sigmas, 4, 3, 4).is_err());
        assert!(lms_coefficient(&sigmas, 4, 2, 0).is_err());
        assert!(lms_coefficient(&sigmas, 1, 10, 0).is_err());
    }
}
