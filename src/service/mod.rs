//! A sampling service with dynamic batching, for embedding in a server (`unet2d serve` is one) or
//! any program: no HTTP and no async runtime in it, only a sampling thread, a bounded queue and
//! one-shot [`Ticket`]s (blocking, or `Future`s for any runtime).
//!
//! ```no_run
//! use candle_unet2d::pipeline::UNet2DPipeline;
//! use candle_unet2d::service::{BatchingService, ClassLabels, ImageRequest, ServiceModel, ServiceOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pipeline = UNet2DPipeline::from_pretrained("models/digits16", &Default::default())?;
//! let service = BatchingService::new(ServiceModel::from_pipeline(pipeline)?, ServiceOptions::default())?;
//! let request = ImageRequest {
//!     num_images: 4,
//!     seed: 7,
//!     class_labels: ClassLabels::All(3),
//!     scheduler: Some("ddim".into()),
//!     num_inference_steps: Some(10),
//!     ..ImageRequest::default()
//! };
//! let images = service.submit(request)?.wait()?; // image i: seed 7 + i, as a batch of one
//! assert_eq!(images[0].bytes.len(), 16 * 16);
//! # Ok(()) }
//! ```
//!
//! Concurrent requests with the same scheduler, step count and η are merged into one sampling run
//! of up to `max_batch` images; each image has its own generator, so its pixels do not
//! depend on what it was batched with. A full queue refuses requests
//! ([`ServiceError::QueueFull`]); a request past its deadline ends with
//! [`ServiceError::TimedOut`]; a dropped [`Ticket`] withdraws its request.

mod batching;
mod error;
mod job;
mod metrics;
mod model;
mod options;
mod queue;
mod request;
mod ticket;
mod worker;

pub use batching::{BatchingService, ModelInfo};
pub use error::{ErrorKind, ServiceError, ServiceResult};
pub use metrics::{header as metric_header, Histogram, ServiceMetrics, SECONDS_BUCKETS, SIZE_BUCKETS};
pub use model::ServiceModel;
pub use options::ServiceOptions;
pub use request::{ClassLabels, GeneratedImage, ImageRequest};
pub use ticket::{Outcome, Ticket};

use batching::Shared;
