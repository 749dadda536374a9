//! The sampling thread: takes batches from the queue and runs each with `sample_per_image` (one
//! generator per image, seeded `seed + i`), so every image is what a batch of one gives. The UNet
//! runs on this thread and the rayon pool, never on a caller's (an async runtime's) thread.
//!
//! After every denoising step the callback times out the requests past their deadline and stops
//! the run once none of its requests is still wanted (all withdrawn or timed out) or a shutdown's
//! bound has passed. A run cannot drop single images midway: multistep schedulers (DPM-Solver,
//! UniPC, PNDM, …) keep per-batch state shaped like the sample, so the batch keeps its size and
//! the images of requests that are gone are discarded at the end.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::error::Error;
use crate::pipeline::{sample_per_image, to_images_from, to_uint8, Control, SampleOptions};
use crate::rng::Generator;

use super::error::ServiceError;
use super::metrics::ServiceMetrics;
use super::queue::Part;
use super::request::GeneratedImage;
use super::Shared;

/// Runs batches until the service stops.
pub(crate) fn run(shared: Arc<Shared>, pool: Option<rayon::ThreadPool>) {
    while let Some(parts) = shared.queue.next_batch(shared.options.max_batch, shared.options.batch_wait) {
        if parts.is_empty() {
            continue;
        }
        match &pool {
            Some(pool) => pool.install(|| run_batch(&shared, parts)),
            None => run_batch(&shared, parts),
        }
    }
}

/// How a run ended.
enum Ending {
    Done(Tensor),
    /// Stopped by the callback: `true` when because of the shutdown.
    Stopped(bool),
    Failed(String),
}

fn run_batch(shared: &Shared, parts: Vec<Part>) {
    let metrics = &shared.metrics;
    let started = Instant::now();
    let first = &parts[0].job;
    let n: usize = parts.iter().map(|p| p.range.len()).sum();
    let mut generators = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for part in &parts {
        for i in part.range.clone() {
            generators.push(Generator::from_seed(part.job.seed + i as u64));
            if let Some(l) = &part.job.labels {
                labels.push(l[i]);
            }
        }
        if part.range.start == 0 {
            metrics.queue_seconds.observe(started.duration_since(part.job.submitted).as_secs_f64());
        }
    }
    let options = SampleOptions {
        batch_size: n,
        num_inference_steps: first.steps,
        class_labels: first.labels.as_ref().map(|_| labels),
        step_args: first.step_args.clone(),
        ..SampleOptions::default()
    };
    let mut scheduler = first.scheduler.clone();
    let sampling_loop = scheduler.kind().sampling_loop();
    metrics.batch_images.observe(n as f64);
    metrics.batch_requests.observe(parts.len() as f64);
    metrics.batches_running.store(1, Ordering::Relaxed);

    let mut shutdown_stop = false;
    let on_step = |_: crate::pipeline::StepEnd<'_>| -> Control {
        let now = Instant::now();
        for part in &parts {
            part.job.finish_if_expired(now);
        }
        let mut queue = shared.queue.lock();
        // Requests waiting behind this batch time out on time too.
        queue.purge(now);
        if queue.drain_deadline.is_some_and(|d| now >= d) {
            shutdown_stop = true;
            return Control::Break(());
        }
        drop(queue);
        if parts.iter().any(|p| p.job.slot.is_wanted()) {
            Control::Continue(())
        } else {
            Control::Break(())
        }
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        sample_per_image(&shared.schedulers.model().unet, &mut scheduler, &options, &mut generators, on_step)
            .and_then(|x| to_images_from(&x, sampling_loop))
    }));
    let ending = match result {
        Ok(Ok(images)) => Ending::Done(images),
        Ok(Err(Error::Cancelled { .. })) => Ending::Stopped(shutdown_stop),
        Ok(Err(e)) => Ending::Failed(e.to_string()),
        Err(panic) => Ending::Failed(format!("internal error (a bug): {}", panic_message(&panic))),
    };
    // The counters first: a client that reads the metrics right after its answer sees its batch.
    metrics.batches_running.store(0, Ordering::Relaxed);
    ServiceMetrics::add(&metrics.batches, 1);
    metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
    match ending {
        Ending::Done(images) => deliver(metrics, &parts, &images),
        Ending::Stopped(shutdown) => {
            ServiceMetrics::add(&metrics.batches_cancelled, 1);
            if shutdown {
                for part in &parts {
                    part.job.slot.finish(Err(ServiceError::ShuttingDown));
                }
            }
        }
        Ending::Failed(message) => {
            ServiceMetrics::add(&metrics.batches_failed, 1);
            for part in &parts {
                part.job.slot.finish(Err(ServiceError::Failed(message.clone())));
            }
        }
    }
}

/// Splits the batch's float NHWC images into each request's images.
fn deliver(metrics: &ServiceMetrics, parts: &[Part], images: &Tensor) {
    let split = || -> crate::Result<(Vec<f32>, Vec<u8>, [usize; 4])> {
        let images = images.to_device(&Device::Cpu)?;
        let (b, h, w, c) = images.dims4()?;
        let bytes = to_uint8(&images)?.flatten_all()?.to_vec1::<u8>()?;
        Ok((images.flatten_all()?.to_vec1::<f32>()?, bytes, [b, h, w, c]))
    };
    let (pixels, bytes, [_, height, width, channels]) = match split() {
        Ok(v) => v,
        Err(e) => {
            for part in parts {
                part.job.slot.finish(Err(ServiceError::Failed(e.to_string())));
            }
            return;
        }
    };
    let len = height * width * channels;
    let mut offset = 0;
    for part in parts {
        let job = &part.job;
        let wanted = job.slot.is_wanted();
        for index in part.range.clone() {
            let at = offset * len..(offset + 1) * len;
            offset += 1;
            if !wanted {
                ServiceMetrics::add(&metrics.images_discarded, 1);
                continue;
            }
            ServiceMetrics::add(&metrics.images_generated, 1);
            job.deliver(GeneratedImage {
                index,
                seed: job.seed + index as u64,
                class_label: job.labels.as_ref().map(|l| l[index]),
                height,
                width,
                channels,
                pixels: pixels[at.clone()].to_vec(),
                bytes: bytes[at].to_vec(),
            });
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into())
}
