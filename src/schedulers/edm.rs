//! The EDM (Karras et al., 2022) σ schedules and preconditioning scalars shared by diffusers 0.42.1's
//! `EDMEulerScheduler` (`scheduling_edm_euler.py`) and `CMStochasticIterativeScheduler`
//! (`scheduling_consistency_models.py`), as plain f64 functions.
//!
//! diffusers computes the schedules in f64 (EDM: torch float64 unless on MPS; CM: numpy) and stores
//! σ as float32; EDM's timesteps (`precondition_noise` of the float32 σ) are float32, CM's
//! (`sigma_to_t` of the f64 σ) stay float64. The scalars `c_in`, `c_skip`, `c_out` are evaluated by
//! diffusers on the float32 σ tensor in float32; here they are f64 (the house rule: float32 tables,
//! f64 arithmetic).

use super::betas::{round_f32, torch_linspace_f32};
use super::sigmas::karras_sigmas_from_ramp;

/// `torch.linspace(start, end, n, dtype=torch.float64)` as ATen's CPU kernel computes it: the first
/// half counts up from `start` by `step = (end − start)/(n − 1)`, the second half down from `end`
/// (each value a fused multiply-add, like the float32 kernel; see [`torch_linspace_f32`]).
pub fn torch_linspace_f64(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f64;
            let halfway = n / 2;
            (0..n)
                .map(
                    |i| {
                        if i < halfway {
                            step.mul_add(i as f64, start)
                        } else {
                            (-step).mul_add((n - i - 1) as f64, end)
                        }
                    },
                )
                .collect()
        }
    }
}

/// EDMEuler's `set_timesteps(n)` ramp: `torch.linspace(0, 1, n, dtype=torch.float64)`.
pub fn edm_ramp(num_inference_steps: usize) -> Vec<f64> {
    torch_linspace_f64(0.0, 1.0, num_inference_steps)
}

/// EDMEuler's constructor ramp: `torch.arange(N + 1, dtype=torch.float64) / N` (N + 1 values).
pub fn edm_train_ramp(num_train_timesteps: usize) -> Vec<f64> {
    let n = num_train_timesteps as f64;
    (0..=num_train_timesteps).map(|i| i as f64 / n).collect()
}

/// EDMEuler's `_compute_karras_sigmas(ramp)`: [`karras_sigmas_from_ramp`] with the config's σ_min,
/// σ_max and ρ (f64; diffusers then stores them as float32).
pub fn edm_karras_sigmas(ramp: &[f64], sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    karras_sigmas_from_ramp(ramp, sigma_min, sigma_max, rho)
}

/// EDMEuler's `_compute_exponential_sigmas(ramp)`:
/// `torch.linspace(log σ_min, log σ_max, len(ramp)).exp().flip(0)`. Unlike the Karras branch this is
/// float32 throughout (torch's default dtype): the logs are rounded to float32, the linspace is
/// [`torch_linspace_f32`], and each exp is rounded to float32 (torch's float32 exp may differ from
/// the correctly rounded one by an ulp). Only the ramp's length matters.
pub fn edm_exponential_sigmas(n: usize, sigma_min: f64, sigma_max: f64) -> Vec<f64> {
    let mut sigmas: Vec<f64> =
        torch_linspace_f32(sigma_min.ln(), sigma_max.ln(), n).into_iter().map(|v| round_f32(v.exp())).collect();
    sigmas.reverse();
    sigmas
}

/// EDM's `precondition_noise(σ)` = `0.25 · log σ`, the timestep EDMEuler passes to the model: torch
/// float32 arithmetic on the float32 σ, so the result is float32 (the float32 log times 0.25, which is
/// exact). Also EulerDiscrete's `timestep_type = "continuous"` timestep.
pub fn precondition_noise(sigma: f64) -> f64 {
    round_f32(0.25 * round_f32(sigma).ln())
}

/// EDM's input scaling `c_in = 1 / √(σ² + σ_data²)` (`precondition_inputs`, `scale_model_input`;
/// also CMStochasticIterative's `scale_model_input`).
pub fn c_in(sigma: f64, sigma_data: f64) -> f64 {
    1.0 / (sigma * sigma + sigma_data * sigma_data).sqrt()
}

/// EDM's skip scaling `c_skip = σ_data² / (σ² + σ_data²)` (`precondition_outputs`; CM's
/// `get_scalings`).
pub fn c_skip(sigma: f64, sigma_data: f64) -> f64 {
    let sd2 = sigma_data * sigma_data;
    sd2 / (sigma * sigma + sd2)
}

/// EDM's output scaling `c_out = σ·σ_data / √(σ² + σ_data²)` for `epsilon` prediction
/// (`precondition_outputs`; CM's `get_scalings`); `v_prediction` uses `−c_out`. The denoised sample
/// is `c_skip·x + c_out·model_output`.
pub fn c_out(sigma: f64, sigma_data: f64) -> f64 {
    sigma * sigma_data / (sigma * sigma + sigma_data * sigma_data).sqrt()
}

/// CMStochasticIterative's `get_scalings_for_boundary_condition(σ)`: `(c_skip, c_out)` with
/// `c_skip = σ_data² / ((σ − σ_min)² + σ_data²)` and `c_out = (σ − σ_min)·σ_data / √(σ² + σ_data²)`
/// (note the unshifted σ under the root, as in diffusers), so that σ = σ_min returns the sample.
pub fn cm_boundary_scalings(sigma: f64, sigma_min: f64, sigma_data: f64) -> (f64, f64) {
    let sd2 = sigma_data * sigma_data;
    let d = sigma - sigma_min;
    (sd2 / (d * d + sd2), d * sigma_data / (sigma * sigma + sd2).sqrt())
}

/// CMStochasticIterative's `sigma_to_t(σ)` = `1000 · 0.25 · log(σ + 1e-44)` in f64 (diffusers keeps
/// these timesteps as float64 tensors).
pub fn cm_sigma_to_t(sigma: f64) -> f64 {
    1000.0 * 0.25 * (sigma + 1e-44).ln()
}

/// CMStochasticIterative's σ for integer `timesteps` (descending, each < N):
/// `_convert_to_karras(timesteps[::-1] / (N − 1))`, so σ[i] pairs with the ramp of the *reversed*
/// list and σ falls from σ_max as the ramp rises. In f64 (numpy); diffusers appends σ_min and stores
/// them as float32. (Its constructor uses the ramp `np.linspace(0, 1, N)` instead.)
pub fn cm_karras_sigmas(
    timesteps: &[i64],
    num_train_timesteps: usize,
    sigma_min: f64,
    sigma_max: f64,
    rho: f64,
) -> Vec<f64> {
    let denom = num_train_timesteps as f64 - 1.0;
    let ramp: Vec<f64> = timesteps.iter().rev().map(|&t| t as f64 / denom).collect();
    karras_sigmas_from_ramp(&ramp, sigma_min, sigma_max, rho)
}

#[cfg(test)]
mod tests {
    //! Reference values from diffusers 0.42.1 in the bench venv (torch 2.15), `repr(float(v))` of
    //! `EDMEulerScheduler([sigma_schedule=…]).set_timesteps(7)` `.sigmas` / `.timesteps`,
    //! `EDMEulerScheduler().sigmas` and `CMStochasticIterativeScheduler().set_timesteps(…)`.

    use super::*;
    use crate::schedulers::betas::linspace;
    use crate::schedulers::sigmas::KARRAS_RHO;

    fn f32s(v: &[f64]) -> Vec<f64> {
        v.iter().copied().map(round_f32).collect()
    }

    fn ulps(a: f64, b: f64) -> i64 {
        ((a as f32).to_bits() as i64 - (b as f32).to_bits() as i64).abs()
    }

    #[test]
    fn edm_karras_matches_diffusers() {
        let sigmas = f32s(&edm_karras_sigmas(&edm_ramp(7), 0.002, 80.0, KARRAS_RHO));
        let want = [
            80.0,
            30.183258056640625,
            9.723201751708984,
            2.51521897315979,
            0.46997904777526855,
            0.05153239518404007,
            0.0020000000949949026,
        ];
        assert_eq!(sigmas, want);
        let t_want = [
            1.0955066680908203,
            0.8518218398094177,
            0.56862872838974,
            0.23058997094631195,
            -0.18876679241657257,
            -0.7413861751556396,
            -1.553652048110962,
        ];
        for (s, t) in sigmas.iter().zip(t_want) {
            assert!(ulps(precondition_noise(*s), t) <= 1, "σ = {s}: {} vs {t}", precondition_noise(*s));
        }
        // the constructor's table: N + 1 σ (diffusers appends the final 0 after them)
        let train = f32s(&edm_karras_sigmas(&edm_train_ramp(1000), 0.002, 80.0, KARRAS_RHO));
        assert_eq!(train.len(), 1001);
        assert_eq!(&train[..4], &[80.0, 79.56426239013672, 79.13055419921875, 78.69888305664062]);
        assert_eq!(&train[998..], &[0.002101366873830557, 0.002050146460533142, 0.0020000000949949026]);
    }

    #[test]
    fn edm_exponential_matches_diffusers() {
        let sigmas = edm_exponential_sigmas(7, 0.002, 80.0);
        let want = [
            80.0,
            13.6798095703125,
            2.339214324951172,
            0.40000003576278687,
            0.06839902698993683,
            0.011696068570017815,
            0.001999999862164259,
        ];
        for (g, w) in sigmas.iter().zip(want) {
            assert!(ulps(*g, w) <= 1, "{g} vs {w}");
        }
    }

    #[test]
    fn torch_linspace_f64_hits_the_ends() {
        let v = torch_linspace_f64(0.0, 1.0, 7);
        assert_eq!((v[0], v[6], v.len()), (0.0, 1.0, 7));
        assert_eq!(torch_linspace_f64(2.0, 3.0, 1), vec![2.0]);
        assert!(torch_linspace_f64(2.0, 3.0, 0).is_empty());
    }

    #[test]
    fn cm_schedule_matches_diffusers() {
        // CMStochasticIterativeScheduler().set_timesteps(5): timesteps (0..5)·(40 // 5) reversed
        let sigmas = cm_karras_sigmas(&[32, 24, 16, 8, 0], 40, 0.002, 80.0, KARRAS_RHO);
        let want = [80.0, 23.61009407043457, 5.380004405975342, 0.8229413628578186, 0.06276240199804306];
        assert_eq!(f32s(&sigmas), want);
        let t: Vec<f64> = sigmas.iter().map(|&s| cm_sigma_to_t(s)).collect();
        let t_want = [1095.5066586684702, 790.4185817686283, 420.6723001352866, -48.71758050454953, -692.0997726810987];
        for (g, w) in t.iter().zip(t_want) {
            assert!((g - w).abs() <= 1e-12 * w.abs(), "{g} vs {w}");
        }
        // custom timesteps [39, 22, 0]
        let sigmas = cm_karras_sigmas(&[39, 22, 0], 40, 0.002, 80.0, KARRAS_RHO);
        assert_eq!(f32s(&sigmas), [80.0, 1.3823679685592651, 0.0020000000949949026]);
        let t_want = [1095.5066586684702, 80.94948482281791, -1553.6520246055477];
        for (s, w) in sigmas.iter().zip(t_want) {
            assert!((cm_sigma_to_t(*s) - w).abs() <= 1e-12 * w.abs());
        }
        // the constructor: ramp np.linspace(0, 1, 40), σ and timesteps kept in f64
        let init = karras_sigmas_from_ramp(&linspace(0.0, 1.0, 40), 0.002, 80.0, KARRAS_RHO);
        let want = [80.0, 69.45094603719689, 60.11739476258081];
        let t_want = [1095.5066586684702, 1060.155172738366, 1024.0748074975224];
        for k in 0..3 {
            assert!((init[k] - want[k]).abs() <= 1e-14 * want[k]);
            assert!((cm_sigma_to_t(init[k]) - t_want[k]).abs() <= 1e-12 * t_want[k]);
        }
    }

    #[test]
    fn scalars_are_the_edm_formulas() {
        let (s, sd) = (2.0, 0.5);
        assert!((c_in(s, sd) - 1.0 / 4.25f64.sqrt()).abs() < 1e-15);
        assert!((c_skip(s, sd) - 0.25 / 4.25).abs() < 1e-15);
        assert!((c_out(s, sd) - 1.0 / 4.25f64.sqrt()).abs() < 1e-15);
        // the boundary condition: σ = σ_min gives the identity (c_skip 1, c_out 0)
        assert_eq!(cm_boundary_scalings(0.002, 0.002, 0.5), (1.0, 0.0));
        let (cs, co) = cm_boundary_scalings(2.0, 0.002, 0.5);
        assert!((cs - 0.25 / (1.998f64 * 1.998 + 0.25)).abs() < 1e-15);
        assert!((co - 1.998 * 0.5 / 4.25f64.sqrt()).abs() < 1e-15);
        assert_eq!(precondition_noise(1.0), 0.0);
    }
}
