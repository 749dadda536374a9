//! A checked request ([`Job`]): everything that can be wrong with it is found when it is submitted,
//! so a batch only fails for reasons that are not the request's. A job's images may be spread over
//! several batches; it is done when all of them are.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::schedulers::{Args, Scheduler, TimestepsSpec};

use super::error::{ServiceError, ServiceResult};
use super::model::Schedulers;
use super::options::ServiceOptions;
use super::request::{ClassLabels, GeneratedImage, ImageRequest};
use super::ticket::Slot;

/// What must be equal for requests to share a sampling run: the scheduler and everything given to
/// it. The class labels and seeds are per image and may differ.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct BatchKey {
    scheduler: Option<String>,
    steps: usize,
    /// η's bits (`f64` has no `Eq`); `None` when not given.
    eta: Option<u64>,
}

/// A submitted request, checked.
pub(crate) struct Job {
    pub slot: Arc<Slot>,
    pub key: BatchKey,
    /// The scheduler, with its timesteps not yet laid out.
    pub scheduler: Scheduler,
    pub steps: usize,
    pub step_args: Args,
    pub seed: u64,
    pub num_images: usize,
    /// One label per image, for a class-conditional model.
    pub labels: Option<Vec<i64>>,
    pub submitted: Instant,
    pub timeout: Option<Duration>,
    images: Mutex<Vec<Option<GeneratedImage>>>,
    done: AtomicUsize,
}

impl Job {
    /// Checks `request` against the model and the limits.
    pub fn new(request: ImageRequest, schedulers: &Schedulers, options: &ServiceOptions) -> ServiceResult<Self> {
        let ImageRequest { num_images, seed, class_labels, scheduler, num_inference_steps, eta, timeout } = request;
        if num_images == 0 {
            return Err(ServiceError::invalid("num_images", "must be at least 1"));
        }
        if num_images > options.max_images_per_request {
            return Err(ServiceError::TooLarge {
                field: "num_images",
                message: format!(
                    "is {num_images}; this service makes at most {} images per request: split the request",
                    options.max_images_per_request
                ),
            });
        }
        if seed.checked_add(num_images as u64 - 1).is_none() {
            return Err(ServiceError::invalid(
                "seed",
                format!("{seed} + {num_images} images overflows: image i uses seed + i, which must fit 64 bits"),
            ));
        }
        let labels = labels_for(class_labels, num_images, schedulers.model().classes())?;
        let prepared = schedulers.get(scheduler.as_deref())?;
        let steps = match num_inference_steps {
            Some(0) => return Err(ServiceError::invalid("num_inference_steps", "must be at least 1")),
            Some(n) => n,
            None => default_steps(&prepared),
        };
        if steps > options.max_steps {
            return Err(ServiceError::TooLarge {
                field: "num_inference_steps",
                message: format!("is {steps}; this service runs at most {} steps", options.max_steps),
            });
        }
        // set_timesteps refuses what the scheduler cannot lay out: find out now, not in the batch.
        let mut probe = prepared.scheduler.clone();
        probe
            .set_timesteps_with(TimestepsSpec::Count(steps), &Args::new())
            .map_err(|e| ServiceError::invalid("num_inference_steps", format!("{steps}: {e}")))?;
        let mut step_args = Args::new();
        if let Some(eta) = eta {
            if !eta.is_finite() || eta < 0.0 {
                return Err(ServiceError::invalid("eta", format!("must be a finite number ≥ 0, got {eta}")));
            }
            step_args.insert("eta", eta);
        }
        prepared.scheduler.check_step_args(&step_args).map_err(|e| ServiceError::invalid("eta", e.to_string()))?;
        let timeout = timeout.or(options.request_timeout);
        Ok(Self {
            slot: Arc::new(Slot::default()),
            key: BatchKey { scheduler, steps, eta: eta.map(f64::to_bits) },
            scheduler: prepared.scheduler,
            steps,
            step_args,
            seed,
            num_images,
            labels,
            submitted: Instant::now(),
            timeout,
            images: Mutex::new(vec![None; num_images]),
            done: AtomicUsize::new(0),
        })
    }

    /// Whether its deadline has passed at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.timeout.is_some_and(|t| now.duration_since(self.submitted) >= t)
    }

    /// Finishes it with a timeout if its deadline has passed; returns whether it has.
    pub fn finish_if_expired(&self, now: Instant) -> bool {
        if !self.expired(now) {
            return false;
        }
        self.slot.finish(Err(ServiceError::TimedOut { after: self.timeout.unwrap_or_default() }));
        true
    }

    /// Stores image `image.index`; finishes the job when it was the last one.
    pub fn deliver(&self, image: GeneratedImage) {
        let index = image.index;
        let mut images = self.images.lock().unwrap_or_else(PoisonError::into_inner);
        if images[index].replace(image).is_none() && self.done.fetch_add(1, Ordering::SeqCst) + 1 == self.num_images {
            let all = images.iter_mut().filter_map(Option::take).collect();
            drop(images);
            self.slot.finish(Ok(all));
        }
    }
}

/// Steps when the request gives none: the pipeline's default, or the training steps when the
/// schedule cannot hold that many (as `unet2d sample`).
fn default_steps(prepared: &super::model::Prepared) -> usize {
    let steps = prepared.pipeline.default_steps(&prepared.scheduler);
    let train = prepared.scheduler.num_train_timesteps().max(1);
    if steps > train && prepared.scheduler.clone().set_timesteps(steps).is_err() {
        return train;
    }
    steps
}

/// One label per image, checked against the model's classes.
fn labels_for(labels: ClassLabels, num_images: usize, classes: Option<usize>) -> ServiceResult<Option<Vec<i64>>> {
    let Some(classes) = classes else {
        return match labels {
            ClassLabels::Default => Ok(None),
            _ => {
                Err(ServiceError::invalid("class_labels", "this model is not class-conditional: leave them out (null)"))
            }
        };
    };
    let labels = match labels {
        ClassLabels::Default => (0..num_images).map(|i| (i % classes) as i64).collect(),
        ClassLabels::All(label) => vec![label; num_images],
        ClassLabels::PerImage(labels) if labels.len() == num_images => labels,
        ClassLabels::PerImage(labels) => {
            return Err(ServiceError::invalid(
                "class_labels",
                format!(
                    "has {} labels for {num_images} images: give one per image, or one number for all",
                    labels.len()
                ),
            ))
        }
    };
    if let Some(bad) = labels.iter().find(|&&l| l < 0 || l >= classes as i64) {
        return Err(ServiceError::invalid(
            "class_labels",
            format!("{bad} is out of range: the model has {classes} classes, 0 to {}", classes - 1),
        ));
    }
    Ok(Some(labels))
}
