//! ScoreSdeVe's predictor-corrector loop (diffusers' `ScoreSdeVePipeline`), for NCSN++ models, whose
//! UNet takes σ as its timestep:
//!
//! ```text
//! for (i, t) in timesteps:   σ = sigmas[i]
//!     repeat correct_steps:  x = step_correct(unet(x, σ), x).prev_sample
//!     out = step_pred(unet(x, σ), t, x);  x = out.prev_sample
//! result = out.prev_sample_mean
//! ```
//!
//! The result is the last predictor mean, without its noise, in the model's range (`[0, 1]` for
//! NCSN++). The step callback runs after each predictor step; what it leaves is the next sample.

use candle_core::Tensor;

use super::sample::Run;
use crate::error::{Error, Result};
use crate::schedulers::{Scheduler, ScoreSdeVeScheduler};

pub(super) fn run(run: &mut Run<'_, '_>, scheduler: &mut Scheduler, mut x: Tensor) -> Result<Tensor> {
    let kind = scheduler.kind();
    let timesteps = scheduler.timesteps().to_vec();
    let sde = scheduler.downcast_ref::<ScoreSdeVeScheduler>().ok_or_else(|| {
        Error::argument("scheduler", format!("the predictor-corrector loop runs ScoreSdeVeScheduler, not {kind}"))
    })?;
    let sigmas = sde.sigmas().to_vec();
    let total = timesteps.len();
    let mut mean = x.clone();
    for (i, &t) in timesteps.iter().enumerate() {
        let sigma = sigmas[i];
        for _ in 0..sde.correct_steps() {
            let model_output = run.model(&x, sigma)?;
            x = run.random.with(|noise| Ok(sde.step_correct(&model_output, &x, noise)?.prev_sample))?;
        }
        let model_output = run.model(&x, sigma)?;
        let out = run.random.with(|noise| sde.step_pred(&model_output, t, &x, noise))?;
        mean = out.prev_sample_mean.unwrap_or_else(|| out.prev_sample.clone());
        x = run.step_end(i + 1, total, t, out.prev_sample)?;
    }
    Ok(mean)
}
