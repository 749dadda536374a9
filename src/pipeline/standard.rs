//! The standard denoising loop of diffusers' `DDPMPipeline`, `DDIMPipeline`, `PNDMPipeline` and
//! `ConsistencyModelPipeline` (and of any scheduler swapped into them):
//!
//! ```text
//! for t in timesteps:  x = step(unet(scale_model_input(x, t), t), t, x).prev_sample
//! ```
//!
//! Each step's noise comes from the run's generator(s), where diffusers' scheduler calls
//! `randn_tensor`. Consistency models' multistep schedule is this loop over explicit timesteps.

use candle_core::Tensor;

use super::sample::Run;
use crate::error::Result;
use crate::schedulers::{Scheduler, StepInput};

pub(super) fn run(run: &mut Run<'_, '_>, scheduler: &mut Scheduler, mut x: Tensor) -> Result<Tensor> {
    let timesteps = scheduler.timesteps().to_vec();
    let total = timesteps.len();
    for (i, &t) in timesteps.iter().enumerate() {
        let model_input = scheduler.scale_model_input(&x, t)?;
        let model_output = run.model(&model_input, t)?;
        let step_args = run.step_args;
        let next = run.random.with(|noise| {
            let input = StepInput::new(&model_output, t, &x).with_noise(noise);
            Ok(scheduler.step(input, step_args)?.prev_sample)
        })?;
        x = run.step_end(i + 1, total, t, next)?;
    }
    Ok(x)
}
