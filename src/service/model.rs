//! The model a service samples from, and how a request's scheduler name becomes a scheduler: as
//! `unet2d sample --scheduler NAME` does it (the model's scheduler config converted to that class,
//! diffusers' `from_config`, in the general pipeline), else the model's own scheduler in the
//! pipeline class its `model_index.json` names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::pipeline::{PipelineKind, UNet2DPipeline};
use crate::schedulers::{SamplingLoop, Scheduler, SchedulerKind};
use crate::unet::UNet2DModel;

use super::error::{ServiceError, ServiceResult};

/// A UNet, its own scheduler and the pipeline class it samples with.
#[derive(Clone)]
pub struct ServiceModel {
    pub unet: Arc<UNet2DModel>,
    pub scheduler: Scheduler,
    pub pipeline: PipelineKind,
}

impl ServiceModel {
    pub fn new(unet: Arc<UNet2DModel>, scheduler: Scheduler, pipeline: PipelineKind) -> Self {
        Self { unet, scheduler, pipeline }
    }

    /// A loaded pipeline folder, with the pipeline class its `model_index.json` names.
    pub fn from_pipeline(pipeline: UNet2DPipeline) -> Result<Self> {
        let kind = pipeline.kind()?;
        Ok(Self::new(pipeline.unet, pipeline.scheduler, kind))
    }

    /// The number of classes of a model conditioned on class ids, `None` for other models.
    pub fn classes(&self) -> Option<usize> {
        let config = self.unet.config();
        match (config.num_class_embeds, &config.class_embed_type) {
            (Some(n), None) => Some(n),
            _ => None,
        }
    }

    /// `(channels, height, width)` of the images it makes.
    pub fn image_shape(&self) -> Result<(usize, usize, usize)> {
        let config = self.unet.config();
        let (h, w) = config.sample_size.map(|s| s.height_width()).ok_or_else(|| {
            Error::argument("size", "the model's config has no sample_size, so the image size is unknown")
        })?;
        Ok((config.out_channels, h, w))
    }
}

impl std::fmt::Debug for ServiceModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceModel")
            .field("scheduler", &self.scheduler.kind().class_name())
            .field("pipeline", &self.pipeline.class_name())
            .finish()
    }
}

/// A scheduler ready for one kind of request, with its pipeline class.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub scheduler: Scheduler,
    pub pipeline: PipelineKind,
}

/// The schedulers requests name, built once per name.
pub(crate) struct Schedulers {
    model: ServiceModel,
    cache: Mutex<HashMap<Option<String>, ServiceResult<Prepared>>>,
}

impl Schedulers {
    pub fn new(model: ServiceModel) -> Self {
        Self { model, cache: Mutex::new(HashMap::new()) }
    }

    pub fn model(&self) -> &ServiceModel {
        &self.model
    }

    /// The scheduler for `name` (`None`: the model's own).
    pub fn get(&self, name: Option<&str>) -> ServiceResult<Prepared> {
        let key = name.map(str::to_owned);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = cache.get(&key) {
            return found.clone();
        }
        let prepared = self.prepare(name);
        // Only known names are cached, so that a flood of made-up names cannot grow the map.
        if prepared.is_ok() || name.is_some_and(|n| SchedulerKind::from_short_name(n).is_ok()) {
            cache.insert(key, prepared.clone());
        }
        prepared
    }

    fn prepare(&self, name: Option<&str>) -> ServiceResult<Prepared> {
        let own = &self.model.scheduler;
        let bad = |e: Error| ServiceError::invalid("scheduler", e.to_string());
        let (scheduler, pipeline) = match name {
            None => (own.clone(), self.model.pipeline),
            Some(name) => {
                let kind = SchedulerKind::from_short_name(name).map_err(|_| {
                    let names: Vec<&str> = SchedulerKind::all()
                        .filter(|k| k.sampling_loop() != SamplingLoop::Inpainting)
                        .map(|k| k.short_name())
                        .collect();
                    ServiceError::invalid(
                        "scheduler",
                        format!("{name:?} is not a scheduler; use one of {}", names.join(", ")),
                    )
                })?;
                if kind.sampling_loop() == SamplingLoop::Inpainting {
                    return Err(ServiceError::invalid(
                        "scheduler",
                        format!("{name:?} ({}) inpaints an image; this service only samples", kind.class_name()),
                    ));
                }
                let converted = Scheduler::from_json_as(kind, &own.config_json()).map_err(bad)?;
                (converted, PipelineKind::for_scheduler(kind))
            }
        };
        let scheduler = pipeline.prepare_scheduler(scheduler).map_err(bad)?;
        if scheduler.kind().sampling_loop() == SamplingLoop::Inpainting {
            return Err(ServiceError::invalid(
                "scheduler",
                "the model's scheduler inpaints; name a sampling scheduler",
            ));
        }
        Ok(Prepared { scheduler, pipeline })
    }
}
