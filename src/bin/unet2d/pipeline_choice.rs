//! Which pipeline and scheduler `sample` runs: the pipeline class (its loop, its default step count,
//! what its constructor does to the scheduler) from `--pipeline` or the model's `model_index.json`,
//! the scheduler from `--scheduler` and `--sigmas`, and ScoreSdeVe's corrector from
//! `--correct-steps` / `--snr`.

use anyhow::{bail, Context};
use candle_unet2d::pipeline::PipelineKind;
use candle_unet2d::schedulers::{SamplingLoop, Scheduler, SchedulerKind};

use super::cli::SigmaChoice;
use super::model::{scheduler_label, Loaded};

/// The class name of ScoreSdeVe's scheduler, the one scheduler with a corrector.
const SCORE_SDE_VE: &str = "ScoreSdeVeScheduler";

/// `sample`'s flags that choose the pipeline and its scheduler.
pub struct Flags {
    pub pipeline: Option<String>,
    pub scheduler: Option<String>,
    pub sigmas: Option<SigmaChoice>,
    pub correct_steps: Option<usize>,
    pub snr: Option<f64>,
}

/// The pipeline and the scheduler it samples with.
pub fn choose(model: &Loaded, args: &Flags) -> anyhow::Result<(PipelineKind, Scheduler)> {
    let wanted = choose_scheduler(&model.scheduler, args.scheduler.as_deref(), args.sigmas)?;
    let pipeline = match (&args.pipeline, &args.scheduler) {
        (Some(name), _) => PipelineKind::from_short_name(name)?,
        // A scheduler chosen by hand runs in the general pipeline (its own loop and step count), as
        // before model_index.json was read: DDIMPipeline would turn it back into DDIM.
        (None, Some(_)) => PipelineKind::for_scheduler(wanted.kind()),
        (None, None) => model_pipeline(model)?,
    };
    if pipeline.entry().sampling_loop == Some(SamplingLoop::Inpainting) {
        bail!("{pipeline} inpaints an image: use `unet2d inpaint --image … --mask …`, not `sample`");
    }
    if let (Some(class), Some(name)) = (pipeline.entry().scheduler_as, &args.scheduler) {
        if wanted.kind().class_name() != class {
            bail!(
                "--scheduler {name}: {pipeline} rebuilds its scheduler as {class}, so {} would not be used; \
                 drop --scheduler or --pipeline",
                wanted.kind().class_name()
            );
        }
    }
    let scheduler =
        pipeline.prepare_scheduler(wanted).with_context(|| format!("the {pipeline} cannot sample {}", model.name))?;
    let scheduler = corrector(scheduler, args.correct_steps, args.snr)?;
    Ok((pipeline, scheduler))
}

/// The pipeline class the model's `model_index.json` names, else the one its scheduler's loop needs.
fn model_pipeline(model: &Loaded) -> anyhow::Result<PipelineKind> {
    PipelineKind::for_folder(model.pipeline_class.as_deref(), model.scheduler.kind()).with_context(|| {
        format!("{}'s model_index.json names a pipeline unet2d does not have; choose one with --pipeline", model.name)
    })
}

/// The model's own scheduler, or its config converted to the `--scheduler` choice as diffusers'
/// `from_config` converts it, with the `--sigmas` schedule switched on.
pub fn choose_scheduler(
    own: &Scheduler,
    choice: Option<&str>,
    sigmas: Option<SigmaChoice>,
) -> anyhow::Result<Scheduler> {
    let kind = match choice {
        Some(name) => SchedulerKind::from_short_name(name)?,
        None => own.kind(),
    };
    let mut config = own.config_json();
    if let Some(sigmas) = sigmas {
        // What the target calls its σ schedule: the keys of its default config say.
        let defaults = kind.build(&serde_json::json!({}))?.config_json();
        let flag = format!("use_{}_sigmas", sigmas.name());
        let map = config.as_object_mut().context("the scheduler config is not an object")?;
        if defaults.get(&flag).is_some() {
            for other in ["karras", "exponential", "beta"] {
                map.insert(format!("use_{other}_sigmas"), false.into());
            }
            map.insert(flag, true.into());
        } else if defaults.get("sigma_schedule").is_some() && sigmas != SigmaChoice::Beta {
            map.insert("sigma_schedule".into(), sigmas.name().into());
        } else {
            bail!("--sigmas {}: {} has no choice of σ schedule", sigmas.name(), kind.class_name());
        }
    }
    Scheduler::from_json_as(kind, &config).with_context(|| {
        format!("cannot make a {} from the model's {} config", kind.class_name(), own.kind().class_name())
    })
}

/// ScoreSdeVe rebuilt from its config with `correct_steps` / `snr` changed (they are config fields,
/// not call arguments, in diffusers); an error for any other scheduler.
fn corrector(scheduler: Scheduler, correct_steps: Option<usize>, snr: Option<f64>) -> anyhow::Result<Scheduler> {
    let mut changes = serde_json::Map::new();
    if let Some(n) = correct_steps {
        changes.insert("correct_steps".into(), n.into());
    }
    if let Some(snr) = snr {
        changes.insert("snr".into(), snr.into());
    }
    if changes.is_empty() {
        return Ok(scheduler);
    }
    let flags = changes.keys().map(|k| format!("--{}", k.replace('_', "-"))).collect::<Vec<_>>().join("/");
    if scheduler.kind().class_name() != SCORE_SDE_VE {
        bail!(
            "{flags}: only {SCORE_SDE_VE} has a corrector (predictor-corrector sampling); this run uses {}",
            scheduler_label(&scheduler)
        );
    }
    let mut config = scheduler.config_json();
    let map = config.as_object_mut().context("the scheduler config is not an object")?;
    map.extend(changes);
    Scheduler::from_json_as(scheduler.kind(), &config).with_context(|| format!("cannot set {flags}"))
}
