//! What the DPM-Solver family shares (DPMSolverMultistep, DPMSolverSinglestep, DEIS and UniPC, which
//! diffusers 0.42.1 builds from the same copied code): the VP σ = σₜ/αₜ parameterisation and λ,
//! the training σ/λ tables, `_sigma_to_t`, the Karras / exponential σ conversions, the step-index
//! bookkeeping (`_init_step_index`, made strict) and the model-output conversions.
//!
//! Everything here reproduces the code every one of those diffusers files carries a copy of; where
//! the copies differ (rounding of the converted timesteps, the final σ, which config σ bounds apply),
//! the caller passes the difference in.

use candle_core::Tensor;

use crate::error::{Error, Result};

use super::betas::{linspace, round_f32};
use super::common::{self, TimestepMatch};
use super::config::{PredictionType, VarianceType};
use super::timesteps::round_half_even;

/// (αₜ, σₜ) from the DPM σ = σₜ/αₜ: α = 1/√(σ²+1), σₜ = σ·α (diffusers' `_sigma_to_alpha_sigma_t`).
pub(crate) fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// λ = log α − log σ (half the log-SNR).
pub(crate) fn lambda_of(alpha: f64, sigma: f64) -> f64 {
    alpha.ln() - sigma.ln()
}

/// (αₜ, σₜ, λₜ) at the DPM σ `sigma`.
pub(crate) fn point(sigma: f64) -> (f64, f64, f64) {
    let (alpha, sigma_t) = alpha_sigma(sigma);
    (alpha, sigma_t, lambda_of(alpha, sigma_t))
}

/// The training tables of a DPM-family scheduler: σ = √((1 − ᾱₜ)/ᾱₜ) (float32, as diffusers'
/// torch table), its float32 log, and λₜ = log √ᾱₜ − log √(1 − ᾱₜ).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TrainTables {
    /// σ over the training timesteps (ascending in t).
    pub sigmas: Vec<f64>,
    /// `np.log(sigmas)` of the float32 table: a float32 log.
    pub log_sigmas: Vec<f64>,
    /// λₜ over the training timesteps (decreasing in t).
    pub lambdas: Vec<f64>,
}

impl TrainTables {
    /// The tables of `alphas_cumprod`.
    pub fn new(alphas_cumprod: &[f64]) -> Self {
        let sigmas: Vec<f64> = alphas_cumprod.iter().map(|a| round_f32(((1.0 - a) / a).sqrt())).collect();
        let log_sigmas = sigmas.iter().map(|s| round_f32(s.ln())).collect();
        let lambdas = alphas_cumprod.iter().map(|a| lambda_of(a.sqrt(), (1.0 - a).sqrt())).collect();
        TrainTables { sigmas, log_sigmas, lambdas }
    }

    /// σ at training timestep 0 (the smallest), as `((1 − ᾱ₀)/ᾱ₀) ** 0.5`.
    pub fn sigma_min(&self) -> f64 {
        self.sigmas[0]
    }

    /// How many training timesteps `lambda_min_clipped` cuts off the noisy end
    /// (`searchsorted(flip(λ), lambda_min_clipped)`: λ decreases in t).
    pub fn clipped_count(&self, lambda_min_clipped: f64) -> usize {
        self.lambdas.iter().filter(|l| **l < lambda_min_clipped).count()
    }
}

/// diffusers' `_sigma_to_t`: the fractional training timestep whose log σ interpolates to `sigma`.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let n = log_sigmas.len();
    let log_sigma = sigma.max(1e-10).ln();
    // low_idx = cumsum(dists >= 0).argmax(), clipped to n − 2
    let mut cum = 0usize;
    let mut best: Option<usize> = None;
    let mut low_idx = 0usize;
    for (i, ls) in log_sigmas.iter().enumerate() {
        if log_sigma - ls >= 0.0 {
            cum += 1;
        }
        if best.is_none_or(|b| cum > b) {
            best = Some(cum);
            low_idx = i;
        }
    }
    let low_idx = low_idx.min(n - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx];
    let high = log_sigmas[high_idx];
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// diffusers' `_convert_to_karras` (ρ = 7): `n` σ from `sigma_max` down to `sigma_min`.
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    linspace(0.0, 1.0, n).iter().map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho)).collect()
}

/// diffusers' `_convert_to_exponential`: `exp(linspace(log σ_max, log σ_min, n))`.
pub(crate) fn exponential_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    linspace(sigma_max.ln(), sigma_min.ln(), n).into_iter().map(f64::exp).collect()
}

/// Which σ schedule `set_timesteps` builds (`use_karras_sigmas`, `use_exponential_sigmas`, or σ
/// interpolated at the spaced timesteps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SigmaSchedule {
    /// σ of the training table at the spaced timesteps.
    Interpolated,
    /// Karras et al. (2022) σ; timesteps `_sigma_to_t` rounded.
    Karras,
    /// Log-linear σ; timesteps `_sigma_to_t` truncated.
    Exponential,
}

/// The σ schedule the `use_*_sigmas` flags ask for, refusing more than one (as diffusers does) and
/// beta σ (not implemented here: they need the Beta distribution's quantile function).
pub(crate) fn sigma_schedule(karras: bool, exponential: bool, beta: bool) -> Result<SigmaSchedule> {
    if [karras, exponential, beta].iter().filter(|b| **b).count() > 1 {
        return Err(Error::config(
            "use_karras_sigmas",
            "only one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas can be true",
        ));
    }
    if beta {
        return Err(Error::config(
            "use_beta_sigmas",
            "beta sigmas are not supported by this implementation (they need scipy's beta ppf); \
             use use_karras_sigmas or use_exponential_sigmas",
        ));
    }
    Ok(if karras {
        SigmaSchedule::Karras
    } else if exponential {
        SigmaSchedule::Exponential
    } else {
        SigmaSchedule::Interpolated
    })
}

/// The converted σ of `n` steps (Karras or exponential, between `sigma_min` and `sigma_max`) and
/// their integer timesteps: `_sigma_to_t`, rounded half to even when `round`, then truncated as
/// torch's float → int64 conversion does.
pub(crate) fn converted_sigmas(
    kind: SigmaSchedule,
    log_sigmas: &[f64],
    sigma_min: f64,
    sigma_max: f64,
    n: usize,
    round: bool,
) -> Result<(Vec<i64>, Vec<f64>)> {
    if log_sigmas.len() < 2 {
        return Err(Error::config(
            "num_train_timesteps",
            "Karras and exponential sigmas need at least 2 training timesteps",
        ));
    }
    let sigmas = match kind {
        SigmaSchedule::Karras => karras_sigmas(sigma_min, sigma_max, n),
        SigmaSchedule::Exponential => exponential_sigmas(sigma_min, sigma_max, n),
        SigmaSchedule::Interpolated => {
            return Err(Error::argument("sigmas", "interpolated sigmas are not a conversion"));
        }
    };
    let timesteps = sigmas
        .iter()
        .map(|&s| {
            let t = sigma_to_t(s, log_sigmas);
            (if round { round_half_even(t) } else { t }) as i64
        })
        .collect();
    Ok((timesteps, sigmas))
}

/// σ of the training table at integer timesteps (`np.interp(timesteps, arange(N), sigmas)`: clamped
/// to the table's ends).
pub(crate) fn interpolated_sigmas(timesteps: &[i64], train_sigmas: &[f64]) -> Vec<f64> {
    let last = train_sigmas.len() as i64 - 1;
    timesteps.iter().map(|&t| train_sigmas[t.clamp(0, last) as usize]).collect()
}

/// The step index a call works at: the current one, or on the first step the `set_begin_index` one
/// or the first index of `timestep` in the schedule. Errors when the run is over or `timestep` is not
/// the schedule's entry at that index.
///
/// diffusers takes the second match of a repeated timestep (meant for img2img runs that start
/// mid-schedule), which makes a full run overflow its σ table on the last step; a fresh run starts
/// at the first match here (`set_begin_index` starts elsewhere). diffusers also ignores the timestep
/// after the first step; here it must be the schedule's next one.
pub(crate) fn resolve_step_index(
    timesteps: &[f64],
    step_index: Option<usize>,
    begin_index: Option<usize>,
    timestep: f64,
) -> Result<usize> {
    common::resolve_step_index(timesteps, step_index.or(begin_index), timestep, TimestepMatch::Exact, false)
}

/// Drops the predicted-variance channels of a `learned`/`learned_range` model output (twice the
/// sample's channels); any other output is returned as is.
pub(crate) fn drop_variance_channels(
    model_output: &Tensor,
    shape: &[usize],
    variance_type: Option<VarianceType>,
) -> Result<Tensor> {
    match variance_type {
        Some(v) if v.is_learned() && shape.len() >= 2 && model_output.rank() == shape.len() => {
            let mut doubled = shape.to_vec();
            doubled[1] *= 2;
            if model_output.dims() == doubled.as_slice() {
                Ok(model_output.narrow(1, 0, shape[1])?)
            } else {
                Ok(model_output.clone())
            }
        }
        _ => Ok(model_output.clone()),
    }
}

/// x₀ from the model output at (αₜ, σₜ) (the data-prediction half of `convert_model_output`).
pub(crate) fn data_prediction(
    prediction_type: PredictionType,
    model_output: &Tensor,
    x: &Tensor,
    alpha_t: f64,
    sigma_t: f64,
) -> Result<Tensor> {
    use super::common::lin_comb;
    Ok(match prediction_type {
        PredictionType::Epsilon => lin_comb(&[(x, 1.0), (model_output, -sigma_t)])?.affine(1.0 / alpha_t, 0.0)?,
        PredictionType::Sample => model_output.clone(),
        PredictionType::VPrediction => lin_comb(&[(x, alpha_t), (model_output, -sigma_t)])?,
    })
}

/// ε from the model output at (αₜ, σₜ) (the noise-prediction half of `convert_model_output`).
pub(crate) fn noise_prediction(
    prediction_type: PredictionType,
    model_output: &Tensor,
    x: &Tensor,
    alpha_t: f64,
    sigma_t: f64,
) -> Result<Tensor> {
    use super::common::lin_comb;
    Ok(match prediction_type {
        PredictionType::Epsilon => model_output.clone(),
        PredictionType::Sample => lin_comb(&[(x, 1.0), (model_output, -alpha_t)])?.affine(1.0 / sigma_t, 0.0)?,
        PredictionType::VPrediction => lin_comb(&[(model_output, alpha_t), (x, sigma_t)])?,
    })
}

/// A model-output history entry (`k = 1`: the newest), as a missing-history error if absent.
pub(crate) fn history(outputs: &[Option<Tensor>], k: usize) -> Result<&Tensor> {
    outputs
        .len()
        .checked_sub(k)
        .and_then(|i| outputs[i].as_ref())
        .ok_or_else(|| Error::argument("timestep", "missing model output history"))
}

/// Checks custom integer timesteps (each a training timestep, strictly descending) and returns them.
pub(crate) fn custom_train_timesteps(timesteps: &[f64], num_train_timesteps: usize) -> Result<Vec<i64>> {
    if timesteps.is_empty() {
        return Err(Error::argument("timesteps", "must not be empty"));
    }
    let n = num_train_timesteps;
    let out = timesteps
        .iter()
        .map(|&t| {
            super::common::train_index(t, n).map_err(|_| {
                Error::argument(
                    "timesteps",
                    format!("custom timestep {t} is not a training timestep (an integer in [0, {n}))"),
                )
            })
        })
        .collect::<Result<Vec<i64>>>()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigma_to_t_inverts_the_training_sigmas() {
        let schedule =
            super::super::betas::NoiseSchedule::new(super::super::BetaSchedule::Linear, 1e-4, 0.02, 1000, None, false)
                .unwrap();
        let tables = TrainTables::new(&schedule.alphas_cumprod);
        let log_sigmas: Vec<f64> = tables.sigmas.iter().map(|v| v.ln()).collect();
        for t in [0usize, 1, 17, 500, 998, 999] {
            let back = sigma_to_t(tables.sigmas[t], &log_sigmas);
            assert!((back - t as f64).abs() < 1e-9, "t={t} back={back}");
        }
    }

    #[test]
    fn step_index_is_strict() {
        let ts = [9.0, 5.0, 1.0];
        assert_eq!(resolve_step_index(&ts, None, None, 5.0).unwrap(), 1);
        assert!(resolve_step_index(&ts, None, None, 4.0).is_err());
        assert!(resolve_step_index(&ts, Some(1), None, 9.0).is_err());
        assert!(resolve_step_index(&ts, Some(3), None, 1.0).is_err());
        assert_eq!(resolve_step_index(&ts, None, Some(2), 1.0).unwrap(), 2);
    }

    #[test]
    fn sigma_flags_are_exclusive() {
        assert!(sigma_schedule(true, true, false).is_err());
        assert!(sigma_schedule(false, false, true).is_err());
        assert_eq!(sigma_schedule(false, true, false).unwrap(), SigmaSchedule::Exponential);
    }
}
