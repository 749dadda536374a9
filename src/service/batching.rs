//! [`BatchingService`]: submission (checked at once, then queued), metrics, and shutdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::pipeline::check_memory;

use super::error::ServiceResult;
use super::job::Job;
use super::metrics::ServiceMetrics;
use super::model::{Schedulers, ServiceModel};
use super::options::ServiceOptions;
use super::queue::Queue;
use super::request::ImageRequest;
use super::ticket::Ticket;
use super::worker;

/// What the worker and the submitters share.
pub(crate) struct Shared {
    pub options: ServiceOptions,
    pub schedulers: Schedulers,
    pub queue: Queue,
    pub metrics: ServiceMetrics,
    next_id: AtomicU64,
}

/// A model behind a bounded queue and one sampling thread that merges compatible requests into
/// batches. Dropping it stops it, cancelling what is queued or running.
pub struct BatchingService {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
    info: ModelInfo,
}

/// What clients may want to know about the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// The number of classes of a class-conditional model.
    pub classes: Option<usize>,
    /// The scheduler and pipeline class a request without `scheduler` gets.
    pub scheduler: String,
    pub pipeline: String,
}

impl BatchingService {
    /// Starts the sampling thread. Fails when the model has no image size, when the options are
    /// unusable, or when a full batch would not fit in memory.
    pub fn new(model: ServiceModel, options: ServiceOptions) -> Result<Self> {
        for (name, value) in [
            ("max_batch", options.max_batch),
            ("max_queue", options.max_queue),
            ("max_images_per_request", options.max_images_per_request),
            ("max_steps", options.max_steps),
        ] {
            if value == 0 {
                return Err(Error::argument(name, "must be at least 1"));
            }
        }
        let (channels, height, width) = model.image_shape()?;
        check_memory(&model.unet, options.max_batch, height, width)?;
        let info = ModelInfo {
            channels,
            height,
            width,
            classes: model.classes(),
            scheduler: model.scheduler.kind().class_name().to_owned(),
            pipeline: model.pipeline.class_name().to_owned(),
        };
        let pool = match options.threads {
            Some(n) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("unet2d-compute-{i}"))
                    .build()
                    .map_err(|e| Error::argument("threads", format!("cannot start {n} compute threads: {e}")))?,
            ),
            None => None,
        };
        let shared = Arc::new(Shared {
            options,
            schedulers: Schedulers::new(model),
            queue: Queue::new(),
            metrics: ServiceMetrics::default(),
            next_id: AtomicU64::new(1),
        });
        let for_worker = shared.clone();
        let worker = std::thread::Builder::new()
            .name("unet2d-sampler".into())
            .spawn(move || worker::run(for_worker, pool))
            .map_err(|e| Error::argument("threads", format!("cannot start the sampling thread: {e}")))?;
        Ok(Self { shared, worker: Mutex::new(Some(worker)), info })
    }

    /// Checks `request` and queues it. Errors come back at once: an invalid or too large request,
    /// a full queue, a stopping service.
    pub fn submit(&self, request: ImageRequest) -> ServiceResult<Ticket> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let queued = Job::new(request, &self.shared.schedulers, &self.shared.options).and_then(|job| {
            let job = Arc::new(job);
            let ticket = Ticket::new(job.slot.clone(), id);
            let options = &self.shared.options;
            self.shared.queue.push(job, options.max_queue, options.retry_after).map(|()| ticket)
        });
        let counter = if queued.is_ok() {
            &self.shared.metrics.requests_accepted
        } else {
            &self.shared.metrics.requests_rejected
        };
        ServiceMetrics::add(counter, 1);
        queued
    }

    pub fn options(&self) -> &ServiceOptions {
        &self.shared.options
    }

    pub fn model_info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn metrics(&self) -> &ServiceMetrics {
        &self.shared.metrics
    }

    /// Requests waiting for a batch.
    pub fn queue_depth(&self) -> usize {
        self.shared.queue.lock().depth()
    }

    /// The service's metrics in Prometheus' text format.
    pub fn render_metrics(&self) -> String {
        self.shared.metrics.render(self.queue_depth())
    }

    /// Whether [`Self::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        !self.shared.queue.lock().accepting
    }

    /// Stops taking requests; what is queued or running goes on for at most `grace`, then is
    /// cancelled ([`ServiceError::ShuttingDown`]). Returns at once; [`Self::shutdown`] waits.
    pub fn begin_shutdown(&self, grace: Duration) {
        let mut state = self.shared.queue.lock();
        state.accepting = false;
        let deadline = Instant::now() + grace;
        state.drain_deadline = Some(state.drain_deadline.map_or(deadline, |d| d.min(deadline)));
        drop(state);
        self.shared.queue.notify();
    }

    /// [`Self::begin_shutdown`], then waits for the sampling thread to finish (at most `grace` plus
    /// one denoising step).
    pub fn shutdown(&self, grace: Duration) {
        self.begin_shutdown(grace);
        let worker = self.worker.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(worker) = worker {
            // The worker catches the sampler's panics; a join error would be a panic in the
            // service's own bookkeeping, and there is nothing left to clean up then.
            let _ = worker.join();
        }
    }
}

impl Drop for BatchingService {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}

impl std::fmt::Debug for BatchingService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchingService").field("model", &self.info).field("options", &self.shared.options).finish()
    }
}
