//! The service's limits and batching policy.

use std::time::Duration;

/// How a [`super::BatchingService`] batches, queues and limits requests.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Most images one sampling run takes; compatible requests are merged up to this many, and a
    /// request of more images is spread over several runs. 1 turns batching off.
    pub max_batch: usize,
    /// Most requests waiting to start; one more is refused with [`super::ServiceError::QueueFull`].
    pub max_queue: usize,
    /// Most images one request may ask for ([`super::ServiceError::TooLarge`] beyond).
    pub max_images_per_request: usize,
    /// Most denoising steps one request may ask for.
    pub max_steps: usize,
    /// Deadline of a request that gives none; `None`: no deadline.
    pub request_timeout: Option<Duration>,
    /// How long an idle service waits for more compatible requests before it starts a batch that is
    /// not full. Requests that arrive while a batch runs are merged anyway; this only helps the
    /// first requests of a burst to share a run.
    pub batch_wait: Duration,
    /// Compute threads of the sampling runs (a rayon pool of its own); `None`: rayon's global pool.
    pub threads: Option<usize>,
    /// What [`super::ServiceError::QueueFull`] tells clients to wait before retrying.
    pub retry_after: Duration,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            max_batch: 16,
            max_queue: 64,
            max_images_per_request: 64,
            max_steps: 1000,
            request_timeout: Some(Duration::from_secs(60)),
            batch_wait: Duration::from_millis(2),
            threads: None,
            retry_after: Duration::from_secs(1),
        }
    }
}
