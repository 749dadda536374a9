//! The reference the service tests compare with: one image sampled alone through the library, as a
//! batch of one with its own generator.

use std::ops::ControlFlow;

use candle_unet2d::pipeline::{sample_per_image, to_images, to_uint8, PipelineKind, SampleOptions, UNet2DPipeline};
use candle_unet2d::rng::Generator;
use candle_unet2d::schedulers::{Scheduler, SchedulerKind};

/// The library's batch of one for `seed` and `label` (float HWC and its uint8 quantisation).
pub fn single(pipe: &UNet2DPipeline, scheduler: &str, steps: usize, seed: u64, label: i64) -> (Vec<f32>, Vec<u8>) {
    let kind = SchedulerKind::from_short_name(scheduler).unwrap();
    let converted = Scheduler::from_json_as(kind, &pipe.scheduler.config_json()).unwrap();
    let mut scheduler = PipelineKind::for_scheduler(kind).prepare_scheduler(converted).unwrap();
    let options = SampleOptions {
        batch_size: 1,
        num_inference_steps: steps,
        class_labels: Some(vec![label]),
        ..SampleOptions::default()
    };
    let mut generators = [Generator::from_seed(seed)];
    let x =
        sample_per_image(&pipe.unet, &mut scheduler, &options, &mut generators, |_| ControlFlow::Continue(())).unwrap();
    let images = to_images(&x).unwrap();
    let bytes = to_uint8(&images).unwrap().flatten_all().unwrap().to_vec1::<u8>().unwrap();
    (images.flatten_all().unwrap().to_vec1::<f32>().unwrap(), bytes)
}
