//! RePaint's inpainting loop (diffusers' `RePaintPipeline`): the schedule goes down and, every
//! `jump_length` steps, back up `jump_length` steps (`jump_n_sample − 1` times) to harmonise the
//! inpainted region with the known one:
//!
//! ```text
//! x = randn;  t_last = timesteps[0] + 1
//! for t in timesteps:
//!     if t < t_last: x = step(unet(x, t), t, x, original_image, mask).prev_sample
//!     else:          x = undo_step(x, t_last)
//!     t_last = t
//! ```
//!
//! Class labels reach the UNet (diffusers' pipeline cannot pass them, so it fails on
//! class-conditional models). The step callback runs after every entry of the schedule, the jumps
//! back up included.

use candle_core::Tensor;

use super::sample::Run;
use crate::error::{Error, Result};
use crate::schedulers::{RePaintScheduler, Scheduler, StepInput};

pub(super) fn run(run: &mut Run<'_, '_>, scheduler: &mut Scheduler, mut x: Tensor) -> Result<Tensor> {
    let kind = scheduler.kind();
    let (image, mask) =
        run.inpaint.clone().ok_or_else(|| Error::argument("image", "inpainting needs the image and its mask_image"))?;
    let timesteps = scheduler.timesteps().to_vec();
    let total = timesteps.len();
    let Some(&first) = timesteps.first() else { return Ok(x) };
    let mut t_last = first + 1.0;
    for (i, &t) in timesteps.iter().enumerate() {
        let next = if t < t_last {
            let model_output = run.model(&x, t)?;
            let tensors = [("original_image", &image), ("mask", &mask)];
            let step_args = run.step_args;
            run.random.with(|noise| {
                let input = StepInput::new(&model_output, t, &x).with_noise(noise).with_tensors(&tensors);
                Ok(scheduler.step(input, step_args)?.prev_sample)
            })?
        } else {
            let repaint = scheduler.downcast_ref::<RePaintScheduler>().ok_or_else(|| {
                Error::argument("scheduler", format!("the inpainting loop runs RePaintScheduler, not {kind}"))
            })?;
            run.random.with(|noise| repaint.undo_step(&x, t_last, noise))?
        };
        x = run.step_end(i + 1, total, t, next)?;
        t_last = t;
    }
    Ok(x)
}
