//! Inference timestep schedules (`timestep_spacing`), computed exactly as diffusers' numpy code does:
//! `np.linspace`, float `np.arange` and `np.round` (ties to even) are reproduced so the integer
//! timesteps come out identical.

use crate::error::{Error, Result};

use super::betas::linspace;
use super::config::TimestepSpacing;

/// `numpy.arange(start, stop, step)` for floats: `ceil((stop − start) / step)` values
/// `start + i·delta`, where numpy's fill uses `delta = (start + step) − start`.
pub fn arange_f64(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if !(len.is_finite() && len > 0.0) {
        return Vec::new();
    }
    let len = len as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `np.round` on a float: round half to even.
pub fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// The most inference steps any scheduler lays out (as many as the largest training schedule): a
/// schedule is a few tables of this length, so a larger count is refused before anything is
/// allocated, whatever the scheduler.
pub const MAX_INFERENCE_STEPS: usize = super::config::MAX_TRAIN_TIMESTEPS;

/// Checks `1 ≤ num_inference_steps ≤ MAX_INFERENCE_STEPS`, the bound every scheduler shares (each
/// also checks its own, e.g. at most `num_train_timesteps`).
pub fn check_inference_count(num_inference_steps: usize) -> Result<()> {
    if num_inference_steps == 0 {
        return Err(Error::argument("num_inference_steps", "must be at least 1, got 0"));
    }
    if num_inference_steps > MAX_INFERENCE_STEPS {
        return Err(Error::argument(
            "num_inference_steps",
            format!("{num_inference_steps} is larger than the supported maximum {MAX_INFERENCE_STEPS}"),
        ));
    }
    Ok(())
}

/// Checks `1 ≤ num_inference_steps ≤ num_train_timesteps`.
pub fn check_num_inference_steps(num_inference_steps: usize, num_train_timesteps: usize) -> Result<()> {
    if num_inference_steps == 0 {
        return Err(Error::argument("num_inference_steps", "must be at least 1, got 0"));
    }
    if num_inference_steps > num_train_timesteps {
        return Err(Error::argument(
            "num_inference_steps",
            format!(
                "{num_inference_steps} cannot be larger than num_train_timesteps ({num_train_timesteps}): \
                 the model was trained on only {num_train_timesteps} timesteps"
            ),
        ));
    }
    Ok(())
}

/// DDPMScheduler's and DDIMScheduler's `set_timesteps(n)` schedule (descending).
pub fn ddpm_ddim_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    num_inference_steps: usize,
    steps_offset: i64,
) -> Vec<i64> {
    let big_n = num_train_timesteps;
    let n = num_inference_steps;
    match spacing {
        TimestepSpacing::Linspace => {
            linspace(0.0, (big_n - 1) as f64, n).into_iter().rev().map(|v| round_half_even(v) as i64).collect()
        }
        TimestepSpacing::Leading => {
            let step_ratio = (big_n / n) as i64;
            (0..n as i64).rev().map(|i| i * step_ratio + steps_offset).collect()
        }
        TimestepSpacing::Trailing => {
            let step_ratio = big_n as f64 / n as f64;
            arange_f64(big_n as f64, 0.0, -step_ratio).into_iter().map(|v| round_half_even(v) as i64 - 1).collect()
        }
    }
}

/// DPMSolverMultistepScheduler's `set_timesteps(n)` schedule before any sigma conversion
/// (descending). `last_timestep` is `N − clipped_idx` from `lambda_min_clipped`.
pub fn dpm_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    last_timestep: usize,
    num_inference_steps: usize,
    steps_offset: i64,
) -> Vec<i64> {
    let n = num_inference_steps;
    match spacing {
        TimestepSpacing::Linspace => {
            let mut v: Vec<i64> = linspace(0.0, last_timestep as f64 - 1.0, n + 1)
                .into_iter()
                .rev()
                .map(|v| round_half_even(v) as i64)
                .collect();
            v.pop();
            v
        }
        TimestepSpacing::Leading => {
            let step_ratio = (last_timestep / (n + 1)) as i64;
            (1..=n as i64).rev().map(|i| i * step_ratio + steps_offset).collect()
        }
        TimestepSpacing::Trailing => {
            let step_ratio = num_train_timesteps as f64 / n as f64;
            arange_f64(last_timestep as f64, 0.0, -step_ratio)
                .into_iter()
                .map(|v| round_half_even(v) as i64 - 1)
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacings_match_diffusers() {
        assert_eq!(
            ddpm_ddim_timesteps(TimestepSpacing::Leading, 1000, 10, 1),
            vec![901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
        );
        assert_eq!(
            ddpm_ddim_timesteps(TimestepSpacing::Trailing, 1000, 10, 0),
            vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
        );
        assert_eq!(ddpm_ddim_timesteps(TimestepSpacing::Linspace, 1000, 4, 0), vec![999, 666, 333, 0]);
        assert_eq!(dpm_timesteps(TimestepSpacing::Linspace, 1000, 1000, 4, 0), vec![999, 749, 500, 250]);
        assert_eq!(dpm_timesteps(TimestepSpacing::Leading, 1000, 1000, 4, 0), vec![800, 600, 400, 200]);
    }
}
