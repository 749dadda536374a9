//! The object-safe face of every [`SchedulerAlgorithm`], which [`super::Scheduler`] boxes: the typed
//! arguments parsed from [`Args`] by name, the extra tensors checked against what the scheduler
//! takes, and downcasting back to the concrete type.

use std::any::Any;
use std::fmt::Debug;

use candle_core::Tensor;
use serde_json::Value;

use crate::error::{Error, Result};

use super::algorithm::{MethodInput, SchedulerAlgorithm, SchedulerOutput, StepInput, TimestepType, TimestepsSpec};
use super::args::Args;
use super::registry::SchedulerKind;

pub(crate) trait DynScheduler: Debug + Send + Sync {
    fn clone_box(&self) -> Box<dyn DynScheduler>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn kind(&self) -> SchedulerKind;
    fn config_json(&self) -> Value;
    fn num_train_timesteps(&self) -> usize;
    fn order(&self) -> usize;
    fn init_noise_sigma(&self) -> f64;
    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, args: &Args) -> Result<()>;
    fn timesteps(&self) -> &[f64];
    fn timestep_type(&self) -> TimestepType;
    fn num_inference_steps(&self) -> Option<usize>;
    fn sigmas(&self) -> Option<&[f64]>;
    fn alphas_cumprod(&self) -> Option<&[f64]>;
    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor>;
    fn check_step_args(&self, args: &Args) -> Result<()>;
    fn step(&mut self, input: StepInput<'_>, args: &Args) -> Result<SchedulerOutput>;
    fn call_method(&mut self, name: &str, input: MethodInput<'_>, args: &Args) -> Result<SchedulerOutput>;
}

impl<S: SchedulerAlgorithm> DynScheduler for S {
    fn clone_box(&self) -> Box<dyn DynScheduler> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn kind(&self) -> SchedulerKind {
        SchedulerKind::of::<S>()
    }

    fn config_json(&self) -> Value {
        SchedulerAlgorithm::config_json(self)
    }

    fn num_train_timesteps(&self) -> usize {
        super::algorithm::SchedulerConfig::num_train_timesteps(self.config())
    }

    fn order(&self) -> usize {
        SchedulerAlgorithm::order(self)
    }

    fn init_noise_sigma(&self) -> f64 {
        SchedulerAlgorithm::init_noise_sigma(self)
    }

    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, args: &Args) -> Result<()> {
        if let TimestepsSpec::Count(n) = spec {
            super::timesteps::check_inference_count(n)?;
        }
        let parsed: S::TimestepArgs = args.parse(&format!("{}.set_timesteps", S::CLASS_NAME))?;
        SchedulerAlgorithm::set_timesteps_with(self, spec, &parsed)
    }

    fn timesteps(&self) -> &[f64] {
        SchedulerAlgorithm::timesteps(self)
    }

    fn timestep_type(&self) -> TimestepType {
        SchedulerAlgorithm::timestep_type(self)
    }

    fn num_inference_steps(&self) -> Option<usize> {
        SchedulerAlgorithm::num_inference_steps(self)
    }

    fn sigmas(&self) -> Option<&[f64]> {
        SchedulerAlgorithm::sigmas(self)
    }

    fn alphas_cumprod(&self) -> Option<&[f64]> {
        SchedulerAlgorithm::alphas_cumprod(self)
    }

    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        SchedulerAlgorithm::scale_model_input(self, sample, timestep)
    }

    fn check_step_args(&self, args: &Args) -> Result<()> {
        args.parse::<S::StepArgs>(&format!("{}.step", S::CLASS_NAME)).map(drop)
    }

    fn step(&mut self, input: StepInput<'_>, args: &Args) -> Result<SchedulerOutput> {
        let what = format!("{}.step", S::CLASS_NAME);
        if let Some(extra) = input.tensors.names().find(|n| !S::STEP_TENSORS.contains(n)) {
            return Err(unknown_tensor(&what, extra, S::STEP_TENSORS));
        }
        let parsed: S::StepArgs = args.parse(&what)?;
        SchedulerAlgorithm::step(self, input, &parsed)
    }

    fn call_method(&mut self, name: &str, input: MethodInput<'_>, args: &Args) -> Result<SchedulerOutput> {
        let Some(spec) = S::METHODS.iter().find(|m| m.name == name) else {
            return Err(Error::argument("method", format!("{} has no method `{name}`", S::CLASS_NAME)));
        };
        let what = format!("{}.{name}", S::CLASS_NAME);
        if let Some(extra) = input.tensors.names().find(|n| !spec.params.contains(n)) {
            return Err(unknown_tensor(&what, extra, spec.params));
        }
        SchedulerAlgorithm::call_method(self, name, input, &args.as_json())
    }
}

fn unknown_tensor(what: &str, name: &str, accepted: &[&str]) -> Error {
    let accepted = if accepted.is_empty() { "none".to_owned() } else { accepted.join(", ") };
    Error::argument(name, format!("{what} takes no tensor `{name}` (extra tensors it takes: {accepted})"))
}
