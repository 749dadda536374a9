//! The pipeline classes, one registry line each: diffusers' unconditional-UNet pipelines by their
//! class names (what `model_index.json`'s `_class_name` holds), with what each one's constructor does
//! to its scheduler, the loop its scheduler must run, and its default step count. The Python classes,
//! `DiffusionPipeline.from_pretrained`'s dispatch and the CLI's `--pipeline` read it.

use std::fmt;

use crate::error::{Error, Result};
use crate::schedulers::{SamplingLoop, Scheduler, SchedulerKind};

/// One pipeline class.
#[derive(Debug)]
pub struct PipelineEntry {
    /// diffusers' class name.
    pub class_name: &'static str,
    /// The CLI's name for it.
    pub short_name: &'static str,
    /// One line for help texts.
    pub summary: &'static str,
    /// `__call__`'s default `num_inference_steps`; `None`: the scheduler's usual count.
    pub default_steps: Option<usize>,
    /// The scheduler class the constructor rebuilds any scheduler as, from its config (as
    /// `DDIMPipeline` does with `DDIMScheduler.from_config(scheduler.config)`).
    pub scheduler_as: Option<&'static str>,
    /// The loop its scheduler must run; `None`: whichever the scheduler needs.
    pub sampling_loop: Option<SamplingLoop>,
}

/// Every pipeline, in the order help texts list them.
static PIPELINES: &[PipelineEntry] = &[
    PipelineEntry {
        class_name: "DDPMPipeline",
        short_name: "ddpm",
        summary: "DDPM ancestral sampling (any standard-loop scheduler), 1000 steps",
        default_steps: Some(1000),
        scheduler_as: None,
        sampling_loop: Some(SamplingLoop::Standard),
    },
    PipelineEntry {
        class_name: "DDIMPipeline",
        short_name: "ddim",
        summary: "DDIM (rebuilds its scheduler as DDIMScheduler; eta), 50 steps",
        default_steps: Some(50),
        scheduler_as: Some("DDIMScheduler"),
        sampling_loop: Some(SamplingLoop::Standard),
    },
    PipelineEntry {
        class_name: "PNDMPipeline",
        short_name: "pndm",
        summary: "PNDM (rebuilds its scheduler as PNDMScheduler), 50 steps",
        default_steps: Some(50),
        scheduler_as: Some("PNDMScheduler"),
        sampling_loop: Some(SamplingLoop::Standard),
    },
    PipelineEntry {
        class_name: "ScoreSdeVePipeline",
        short_name: "score-sde-ve",
        summary: "NCSN++ predictor-corrector sampling (ScoreSdeVeScheduler), 2000 steps",
        default_steps: Some(2000),
        scheduler_as: None,
        sampling_loop: Some(SamplingLoop::PredictorCorrector),
    },
    PipelineEntry {
        class_name: "ConsistencyModelPipeline",
        short_name: "consistency",
        summary: "consistency models: one step, or explicit timesteps (CMStochasticIterativeScheduler)",
        default_steps: Some(1),
        scheduler_as: None,
        sampling_loop: Some(SamplingLoop::Standard),
    },
    PipelineEntry {
        class_name: "RePaintPipeline",
        short_name: "repaint",
        summary: "RePaint inpainting (RePaintScheduler; image, mask, jumps), 250 steps",
        default_steps: Some(250),
        scheduler_as: None,
        sampling_loop: Some(SamplingLoop::Inpainting),
    },
    PipelineEntry {
        class_name: "UNet2DPipeline",
        short_name: "unet2d",
        summary: "the general loop: whichever loop its scheduler needs, the scheduler's usual step count",
        default_steps: None,
        scheduler_as: None,
        sampling_loop: None,
    },
];

/// A pipeline class: a handle on its registry line.
#[derive(Clone, Copy)]
pub struct PipelineKind(&'static PipelineEntry);

impl PipelineKind {
    /// Every pipeline class.
    pub fn all() -> impl Iterator<Item = PipelineKind> {
        PIPELINES.iter().map(PipelineKind)
    }

    /// The class diffusers calls `name`.
    pub fn from_class_name(name: &str) -> Result<Self> {
        Self::all().find(|k| k.0.class_name == name).ok_or_else(|| {
            Error::Unsupported(format!("pipeline class {name:?}; supported: {}", Self::supported_list()))
        })
    }

    /// The class the CLI calls `name` (or its diffusers name).
    pub fn from_short_name(name: &str) -> Result<Self> {
        Self::all().find(|k| k.0.short_name == name || k.0.class_name == name).ok_or_else(|| {
            let names: Vec<&str> = Self::all().map(|k| k.0.short_name).collect();
            Error::argument("pipeline", format!("unknown pipeline {name:?}; choose one of {}", names.join(", ")))
        })
    }

    /// The pipeline that samples with `scheduler` when a folder names none: the one its loop needs,
    /// else the general `UNet2DPipeline`.
    pub fn for_scheduler(scheduler: SchedulerKind) -> Self {
        let wanted = match scheduler.sampling_loop() {
            SamplingLoop::PredictorCorrector => "ScoreSdeVePipeline",
            SamplingLoop::Inpainting => "RePaintPipeline",
            SamplingLoop::Standard => "UNet2DPipeline",
        };
        Self::all().find(|k| k.0.class_name == wanted).unwrap_or(PipelineKind(&PIPELINES[PIPELINES.len() - 1]))
    }

    /// The diffusers class that loads this one's folders: itself, or for the general
    /// `UNet2DPipeline` (this crate's own), `DDPMPipeline`.
    pub fn diffusers_class_name(self) -> &'static str {
        match self.0.class_name {
            "UNet2DPipeline" => "DDPMPipeline",
            name => name,
        }
    }

    /// `model_index.json` of a pipeline of this class with a `scheduler` scheduler and a
    /// UNet2DModel, written under the diffusers class that loads it.
    pub fn model_index(self, scheduler: SchedulerKind) -> serde_json::Value {
        // `UNet2DPipeline` is this crate's own class: it is saved as the class of its loop.
        let class_name = match self.0.class_name {
            "UNet2DPipeline" => Self::for_scheduler(scheduler).diffusers_class_name(),
            name => name,
        };
        serde_json::json!({
            "_class_name": class_name,
            "_diffusers_version": super::DIFFUSERS_VERSION,
            "scheduler": ["diffusers", scheduler.class_name()],
            "unet": ["diffusers", "UNet2DModel"],
        })
    }

    /// The pipeline a folder samples with: the class its `model_index.json` names (`class_name`; an
    /// error if this crate has no such class), else the one `scheduler`'s loop needs.
    pub fn for_folder(class_name: Option<&str>, scheduler: SchedulerKind) -> Result<Self> {
        match class_name {
            Some(name) => Self::from_class_name(name),
            None => Ok(Self::for_scheduler(scheduler)),
        }
    }

    /// `"DDPMPipeline, DDIMPipeline, …"`.
    pub fn supported_list() -> String {
        Self::all().map(|k| k.0.class_name).collect::<Vec<_>>().join(", ")
    }

    pub fn class_name(self) -> &'static str {
        self.0.class_name
    }

    pub fn short_name(self) -> &'static str {
        self.0.short_name
    }

    pub fn summary(self) -> &'static str {
        self.0.summary
    }

    /// The registry line.
    pub fn entry(self) -> &'static PipelineEntry {
        self.0
    }

    /// `__call__`'s default step count with `scheduler`: the class's, else the scheduler's usual one
    /// (at most its training steps).
    pub fn default_steps(self, scheduler: &Scheduler) -> usize {
        self.0
            .default_steps
            .unwrap_or_else(|| scheduler.kind().default_steps().min(scheduler.num_train_timesteps()).max(1))
    }

    /// What the class's constructor makes of `scheduler`: the same one, or (DDIM, PNDM) one of its
    /// own class built from its config; an error when the result cannot run the class's loop.
    pub fn prepare_scheduler(self, scheduler: Scheduler) -> Result<Scheduler> {
        let scheduler = match self.0.scheduler_as {
            Some(class) if scheduler.kind().class_name() != class => {
                Scheduler::from_json_as(SchedulerKind::from_class_name(class)?, &scheduler.config_json())?
            }
            _ => scheduler,
        };
        self.check_scheduler(scheduler.kind())?;
        Ok(scheduler)
    }

    /// Refuses a scheduler whose loop is not the class's.
    pub fn check_scheduler(self, scheduler: SchedulerKind) -> Result<()> {
        match self.0.sampling_loop {
            Some(wanted) if scheduler.sampling_loop() != wanted => {
                let fitting: Vec<&str> =
                    SchedulerKind::all().filter(|k| k.sampling_loop() == wanted).map(|k| k.class_name()).collect();
                let shown =
                    if fitting.len() > 4 { "a standard-loop scheduler".to_string() } else { fitting.join(" or ") };
                Err(Error::argument(
                    "scheduler",
                    format!("{} samples with {shown}, not {scheduler}", self.0.class_name),
                ))
            }
            _ => Ok(()),
        }
    }
}

impl PartialEq for PipelineKind {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for PipelineKind {}

impl fmt::Debug for PipelineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PipelineKind({})", self.0.class_name)
    }
}

impl fmt::Display for PipelineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.class_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        let mut names: Vec<&str> = PipelineKind::all().flat_map(|k| [k.class_name(), k.short_name()]).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
        for kind in PipelineKind::all() {
            assert_eq!(PipelineKind::from_class_name(kind.class_name()).unwrap(), kind);
            assert_eq!(PipelineKind::from_short_name(kind.short_name()).unwrap(), kind);
        }
        assert!(PipelineKind::from_class_name("StableDiffusionPipeline").is_err());
    }

    #[test]
    fn ddim_rebuilds_its_scheduler_and_score_sde_refuses_ddpm() {
        let ddpm = SchedulerKind::from_class_name("DDPMScheduler").unwrap().build(&serde_json::json!({})).unwrap();
        let ddim = PipelineKind::from_class_name("DDIMPipeline").unwrap().prepare_scheduler(ddpm.clone()).unwrap();
        assert_eq!(ddim.kind().class_name(), "DDIMScheduler");
        let err = PipelineKind::from_class_name("ScoreSdeVePipeline").unwrap().prepare_scheduler(ddpm).unwrap_err();
        assert!(err.to_string().contains("ScoreSdeVeScheduler"), "{err}");
    }
}
