//! The library's batching service (`candle_unet2d::service`) on the shipped digits16 model: merged
//! requests give the images single runs give, requests are split and kept apart as they must be,
//! and the queue, cancellation, timeouts and shutdown behave. Runs with `cargo test --release
//! --test service`; DDIM with few steps keeps it fast.

#[path = "common/single_run.rs"]
mod single_run;
use single_run::single;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use candle_unet2d::pipeline::UNet2DPipeline;
use candle_unet2d::service::{
    BatchingService, ClassLabels, ErrorKind, GeneratedImage, ImageRequest, ServiceError, ServiceModel, ServiceOptions,
};
use candle_unet2d::LoadOptions;

fn digits16() -> UNet2DPipeline {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/digits16");
    UNet2DPipeline::from_pretrained(path, &LoadOptions::default()).unwrap()
}

fn service(options: ServiceOptions) -> BatchingService {
    BatchingService::new(ServiceModel::from_pipeline(digits16()).unwrap(), options).unwrap()
}

fn ddim(num_images: usize, seed: u64, labels: ClassLabels, steps: usize) -> ImageRequest {
    ImageRequest {
        num_images,
        seed,
        class_labels: labels,
        scheduler: Some("ddim".into()),
        num_inference_steps: Some(steps),
        ..ImageRequest::default()
    }
}

/// Checks every image against its batch-of-one run; returns the largest float difference.
fn check_against_singles(pipe: &UNet2DPipeline, images: &[GeneratedImage], steps: usize) -> f32 {
    let mut worst = 0f32;
    for image in images {
        let (pixels, bytes) = single(pipe, "ddim", steps, image.seed, image.class_label.unwrap());
        assert_eq!(image.bytes, bytes, "image of seed {} differs from its single run", image.seed);
        let diff = pixels.iter().zip(&image.pixels).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        worst = worst.max(diff);
    }
    worst
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn merged_requests_give_the_images_of_single_runs() {
    let pipe = digits16();
    // A long batch window, so that the three requests certainly share one run.
    let service = service(ServiceOptions { batch_wait: Duration::from_millis(500), ..ServiceOptions::default() });
    let requests = [
        ddim(2, 10, ClassLabels::PerImage(vec![3, 8]), 5),
        ddim(1, 50, ClassLabels::All(1), 5),
        ddim(3, 90, ClassLabels::Default, 5),
    ];
    let tickets: Vec<_> = requests.iter().map(|r| service.submit(r.clone()).unwrap()).collect();
    let results: Vec<Vec<GeneratedImage>> = tickets.into_iter().map(|t| t.wait().unwrap()).collect();
    let metrics = service.metrics();
    assert_eq!(metrics.batches.load(Ordering::Relaxed), 1, "the three requests should share one run");
    let (buckets, count, sum) = metrics.batch_requests.snapshot();
    assert_eq!((count, sum), (1, 3.0), "{buckets:?}");
    assert_eq!(metrics.images_generated.load(Ordering::Relaxed), 6);

    assert_eq!(
        results[0].iter().map(|i| (i.index, i.seed, i.class_label)).collect::<Vec<_>>(),
        [(0, 10, Some(3)), (1, 11, Some(8))]
    );
    assert_eq!(results[1][0].class_label, Some(1));
    // Default labels cycle over the classes, per request.
    assert_eq!(results[2].iter().map(|i| i.class_label.unwrap()).collect::<Vec<_>>(), [0, 1, 2]);
    let mut worst = 0f32;
    for images in &results {
        assert_eq!((images[0].height, images[0].width, images[0].channels), (16, 16, 1));
        worst = worst.max(check_against_singles(&pipe, images, 5));
    }
    // The uint8 images are equal (asserted above), and so are the floats: the sampling runs with
    // batch-invariant kernels (`candle_unet2d::batch_invariant`).
    assert!(worst == 0.0, "batched and single runs differ by {worst:e}");
}

#[test]
fn large_requests_are_split_and_other_settings_are_not_merged() {
    let pipe = digits16();
    let service =
        service(ServiceOptions { max_batch: 4, batch_wait: Duration::from_millis(300), ..ServiceOptions::default() });
    let big = service.submit(ddim(6, 1000, ClassLabels::Default, 4)).unwrap();
    let other_steps = service.submit(ddim(1, 7, ClassLabels::All(5), 3)).unwrap();
    let big = big.wait().unwrap();
    let other = other_steps.wait().unwrap();
    assert_eq!(big.len(), 6);
    assert_eq!(big.iter().map(|i| i.index).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
    check_against_singles(&pipe, &big, 4);
    check_against_singles(&pipe, &other, 3);
    let metrics = service.metrics();
    // 6 images in runs of at most 4, and the 3-step request alone: 3 runs.
    assert_eq!(metrics.batches.load(Ordering::Relaxed), 3);
    let (buckets, _, sum) = metrics.batch_images.snapshot();
    assert_eq!(sum, 7.0);
    assert_eq!(buckets.iter().find(|(b, _)| *b == 4.0).unwrap().1, 3, "no run is larger than 4");
}

#[test]
fn a_full_queue_refuses_and_a_dropped_ticket_cancels_its_batch() {
    let service = service(ServiceOptions { max_queue: 1, batch_wait: Duration::ZERO, ..ServiceOptions::default() });
    // Long enough to still be running while the queue fills.
    let running = service.submit(ddim(1, 0, ClassLabels::All(0), 1000)).unwrap();
    wait_until("the first batch to start", Duration::from_secs(10), || {
        service.metrics().batches_running.load(Ordering::Relaxed) == 1
    });
    let queued = service.submit(ddim(1, 1, ClassLabels::All(1), 3)).unwrap();
    let refused = service.submit(ddim(1, 2, ClassLabels::All(2), 3)).unwrap_err();
    assert!(matches!(refused, ServiceError::QueueFull { max_queue: 1, .. }), "{refused:?}");
    assert_eq!(refused.kind(), ErrorKind::Overloaded);
    assert!(refused.retry_after().is_some());
    assert_eq!(service.queue_depth(), 1);

    drop(running);
    wait_until("the abandoned batch to stop", Duration::from_secs(10), || {
        service.metrics().batches_cancelled.load(Ordering::Relaxed) == 1
    });
    let images = queued.wait().unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(service.metrics().images_generated.load(Ordering::Relaxed), 1);
}

#[test]
fn a_request_past_its_deadline_times_out_promptly() {
    let service = service(ServiceOptions { batch_wait: Duration::ZERO, ..ServiceOptions::default() });
    let started = Instant::now();
    let request = ImageRequest { timeout: Some(Duration::from_millis(100)), ..ddim(1, 0, ClassLabels::All(0), 1000) };
    let error = service.submit(request).unwrap().wait().unwrap_err();
    assert!(matches!(error, ServiceError::TimedOut { .. }), "{error:?}");
    assert_eq!(error.code(), "timeout");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    // Its batch had no other request: it is stopped, not run to the end.
    wait_until("the batch to stop", Duration::from_secs(10), || {
        service.metrics().batches_cancelled.load(Ordering::Relaxed) == 1
    });
}

#[test]
fn bad_requests_are_refused_with_what_to_fix() {
    let service = service(ServiceOptions { max_images_per_request: 8, max_steps: 100, ..ServiceOptions::default() });
    let refuse = |request: ImageRequest| service.submit(request).unwrap_err();
    let cases: Vec<(ImageRequest, &str, ErrorKind, &str)> = vec![
        (ddim(0, 0, ClassLabels::Default, 5), "invalid_num_images", ErrorKind::InvalidRequest, "at least 1"),
        (ddim(9, 0, ClassLabels::Default, 5), "too_large_num_images", ErrorKind::TooLarge, "at most 8"),
        (ddim(1, 0, ClassLabels::Default, 101), "too_large_num_inference_steps", ErrorKind::TooLarge, "at most 100"),
        (ddim(1, 0, ClassLabels::Default, 0), "invalid_num_inference_steps", ErrorKind::InvalidRequest, "at least 1"),
        (ddim(1, 0, ClassLabels::All(10), 5), "invalid_class_labels", ErrorKind::InvalidRequest, "0 to 9"),
        (ddim(1, 0, ClassLabels::All(-1), 5), "invalid_class_labels", ErrorKind::InvalidRequest, "out of range"),
        (
            ddim(2, 0, ClassLabels::PerImage(vec![1]), 5),
            "invalid_class_labels",
            ErrorKind::InvalidRequest,
            "one per image",
        ),
        (ddim(2, u64::MAX, ClassLabels::Default, 5), "invalid_seed", ErrorKind::InvalidRequest, "overflows"),
        (
            ImageRequest { scheduler: Some("nope".into()), ..ddim(1, 0, ClassLabels::Default, 5) },
            "invalid_scheduler",
            ErrorKind::InvalidRequest,
            "ddim",
        ),
        (
            ImageRequest { scheduler: Some("repaint".into()), ..ddim(1, 0, ClassLabels::Default, 5) },
            "invalid_scheduler",
            ErrorKind::InvalidRequest,
            "inpaints",
        ),
        (
            ImageRequest { scheduler: Some("euler".into()), eta: Some(0.5), ..ddim(1, 0, ClassLabels::Default, 5) },
            "invalid_eta",
            ErrorKind::InvalidRequest,
            "eta",
        ),
        (
            ImageRequest { eta: Some(f64::NAN), ..ddim(1, 0, ClassLabels::Default, 5) },
            "invalid_eta",
            ErrorKind::InvalidRequest,
            "finite",
        ),
    ];
    for (request, code, kind, hint) in cases {
        let error = refuse(request.clone());
        assert_eq!(error.code(), code, "{request:?}: {error}");
        assert_eq!(error.kind(), kind, "{request:?}");
        assert!(error.to_string().contains(hint), "{request:?}: {error} does not say {hint:?}");
    }
    assert_eq!(service.metrics().requests_rejected.load(Ordering::Relaxed), 12);
    // The model's own scheduler and default step count are fine.
    let ok = service.submit(ImageRequest { num_inference_steps: Some(2), ..ImageRequest::default() }).unwrap();
    assert_eq!(ok.wait().unwrap()[0].class_label, Some(0));
}

#[test]
fn shutdown_cancels_work_past_its_bound_and_refuses_new_work() {
    let service = service(ServiceOptions { batch_wait: Duration::ZERO, ..ServiceOptions::default() });
    let running = service.submit(ddim(1, 0, ClassLabels::All(0), 1000)).unwrap();
    let queued = service.submit(ddim(1, 0, ClassLabels::All(0), 999)).unwrap();
    wait_until("the batch to start", Duration::from_secs(10), || {
        service.metrics().batches_running.load(Ordering::Relaxed) == 1
    });
    let started = Instant::now();
    service.shutdown(Duration::from_millis(100));
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    assert_eq!(running.wait().unwrap_err(), ServiceError::ShuttingDown);
    assert_eq!(queued.wait().unwrap_err(), ServiceError::ShuttingDown);
    assert_eq!(service.submit(ddim(1, 0, ClassLabels::All(0), 3)).unwrap_err(), ServiceError::ShuttingDown);
}

#[test]
fn tickets_are_futures() {
    let service = service(ServiceOptions::default());
    let ticket = service.submit(ddim(2, 3, ClassLabels::All(4), 3)).unwrap();
    // A minimal executor: the ticket must wake it when its images are ready.
    let images = block_on(ticket).unwrap();
    assert_eq!(images.len(), 2);
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(Instant::now() < deadline, "the future never completed");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}
