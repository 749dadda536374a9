//! Every scheduler, one line each: the dynamic [`Scheduler`], `from_pretrained`'s dispatch on
//! `_class_name`, diffusers' `_compatibles`, the Python classes and the CLI's `--scheduler` values all
//! read this list. A new scheduler is its file plus one line in [`SCHEDULERS`].

use std::fmt;

use serde_json::Value;

use crate::error::{Error, Result};

use super::algorithm::{MethodSpec, SamplingLoop, SchedulerAlgorithm};
use super::Scheduler;

/// What the registry knows of one scheduler class.
pub struct SchedulerEntry {
    class_name: &'static str,
    short_name: &'static str,
    summary: &'static str,
    default_steps: usize,
    karras_family: bool,
    methods: &'static [MethodSpec],
    step_tensors: &'static [&'static str],
    step_params: &'static [&'static str],
    sampling_loop: SamplingLoop,
    set_timesteps_params: &'static [&'static str],
    build: fn(&Value) -> Result<Scheduler>,
}

/// The registry line of `S`.
const fn entry<S: SchedulerAlgorithm>() -> SchedulerEntry {
    SchedulerEntry {
        class_name: S::CLASS_NAME,
        short_name: S::SHORT_NAME,
        summary: S::SUMMARY,
        default_steps: S::DEFAULT_STEPS,
        karras_family: S::KARRAS_FAMILY,
        methods: S::METHODS,
        step_tensors: S::STEP_TENSORS,
        step_params: S::STEP_PARAMS,
        sampling_loop: S::SAMPLING_LOOP,
        set_timesteps_params: S::SET_TIMESTEPS_PARAMS,
        build: build::<S>,
    }
}

fn build<S: SchedulerAlgorithm>(config: &Value) -> Result<Scheduler> {
    Ok(Scheduler::new(S::from_json(config)?))
}

/// The supported schedulers, in the order `--help` lists them.
static SCHEDULERS: &[SchedulerEntry] = &[
    entry::<super::DdpmScheduler>(),
    entry::<super::DdimScheduler>(),
    entry::<super::PndmScheduler>(),
    entry::<super::DpmSolverMultistepScheduler>(),
    entry::<super::DpmSolverSinglestepScheduler>(),
    entry::<super::DeisMultistepScheduler>(),
    entry::<super::UniPcMultistepScheduler>(),
    entry::<super::EulerDiscreteScheduler>(),
    entry::<super::EulerAncestralDiscreteScheduler>(),
    entry::<super::HeunDiscreteScheduler>(),
    entry::<super::LmsDiscreteScheduler>(),
    entry::<super::Kdpm2DiscreteScheduler>(),
    entry::<super::Kdpm2AncestralDiscreteScheduler>(),
    entry::<super::EdmEulerScheduler>(),
    entry::<super::CmStochasticIterativeScheduler>(),
    entry::<super::ScoreSdeVeScheduler>(),
    entry::<super::RePaintScheduler>(),
];

/// A scheduler class of the registry.
#[derive(Clone, Copy)]
pub struct SchedulerKind(&'static SchedulerEntry);

impl SchedulerKind {
    /// Every supported class.
    pub fn all() -> impl Iterator<Item = SchedulerKind> {
        SCHEDULERS.iter().map(SchedulerKind)
    }

    /// The class `S` implements.
    pub fn of<S: SchedulerAlgorithm>() -> SchedulerKind {
        Self::find(S::CLASS_NAME).unwrap_or_else(|| panic!("{} is missing from the scheduler registry", S::CLASS_NAME))
    }

    fn find(class_name: &str) -> Option<SchedulerKind> {
        Self::all().find(|k| k.class_name() == class_name)
    }

    /// The class diffusers calls `name`.
    pub fn from_class_name(name: &str) -> Result<Self> {
        Self::find(name).ok_or_else(|| {
            Error::config(
                "_class_name",
                format!("unsupported scheduler class `{name}`; supported: {}", Self::supported_list()),
            )
        })
    }

    /// The class the CLI calls `name` (`euler`), or whose diffusers name it is.
    pub fn from_short_name(name: &str) -> Result<Self> {
        Self::all().find(|k| k.short_name() == name || k.class_name() == name).ok_or_else(|| {
            let names: Vec<&str> = Self::all().map(|k| k.short_name()).collect();
            Error::argument("scheduler", format!("unknown scheduler `{name}`; choose one of {}", names.join(", ")))
        })
    }

    /// Every class name, comma-separated (for errors).
    pub fn supported_list() -> String {
        Self::all().map(|k| k.class_name()).collect::<Vec<_>>().join(", ")
    }

    /// diffusers' class name.
    pub fn class_name(self) -> &'static str {
        self.0.class_name
    }

    /// The CLI's name.
    pub fn short_name(self) -> &'static str {
        self.0.short_name
    }

    /// One line on what it is.
    pub fn summary(self) -> &'static str {
        self.0.summary
    }

    /// `num_inference_steps` when none is given.
    pub fn default_steps(self) -> usize {
        self.0.default_steps
    }

    /// Its methods beyond `step`.
    pub fn methods(self) -> &'static [MethodSpec] {
        self.0.methods
    }

    /// Tensors its `step` takes by name beyond the model output and sample.
    pub fn step_tensors(self) -> &'static [&'static str] {
        self.0.step_tensors
    }

    /// `step`'s parameters after `(model_output, timestep, sample)`, in diffusers' positional order.
    pub fn step_params(self) -> &'static [&'static str] {
        self.0.step_params
    }

    /// The sampling loop that drives it (see `SchedulerAlgorithm::SAMPLING_LOOP`).
    pub fn sampling_loop(self) -> SamplingLoop {
        self.0.sampling_loop
    }

    /// Whether the standard sampling loop can drive it.
    pub fn runs_in_standard_loop(self) -> bool {
        self.0.sampling_loop == SamplingLoop::Standard
    }

    /// `set_timesteps`' parameters in diffusers' positional order.
    pub fn set_timesteps_params(self) -> &'static [&'static str] {
        self.0.set_timesteps_params
    }

    /// diffusers' `_compatibles`: the classes that can be built from this one's config (the
    /// `KarrasDiffusionSchedulers` family, for its members).
    pub fn compatibles(self) -> Vec<SchedulerKind> {
        if !self.0.karras_family {
            return Vec::new();
        }
        Self::all().filter(|k| k.0.karras_family && *k != self).collect()
    }

    /// Builds this class from a config object (foreign keys ignored, as `Cls.from_config`).
    pub fn build(self, config: &Value) -> Result<Scheduler> {
        (self.0.build)(config)
    }
}

impl PartialEq for SchedulerKind {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for SchedulerKind {}

impl std::hash::Hash for SchedulerKind {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.class_name.hash(state)
    }
}

impl fmt::Debug for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.class_name())
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.class_name())
    }
}

impl std::str::FromStr for SchedulerKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::from_class_name(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        let kinds: Vec<SchedulerKind> = SchedulerKind::all().collect();
        for (i, a) in kinds.iter().enumerate() {
            for b in &kinds[i + 1..] {
                assert_ne!(a.class_name(), b.class_name());
                assert_ne!(a.short_name(), b.short_name());
            }
            assert_eq!(SchedulerKind::from_class_name(a.class_name()).unwrap(), *a);
            assert_eq!(SchedulerKind::from_short_name(a.short_name()).unwrap(), *a);
            assert!(a.default_steps() >= 1);
        }
    }
}
