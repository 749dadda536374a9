//! `HeunDiscreteScheduler`: Heun's second-order method in σ space (Karras et al., 2022, Algorithm 1),
//! as diffusers 0.42.1's `scheduling_heun_discrete.py` implements it.
//!
//! Each inference step takes two model evaluations, so the schedule lists every timestep after the
//! first twice (`[t₀, t₁, t₁, t₂, t₂, …]`, σ likewise `[σ₀, σ₁, σ₁, …, σₙ₋₁, σₙ₋₁, 0]`) and `step`
//! is called once per entry: the first call of a pair is an Euler step whose derivative, step size
//! and sample the scheduler keeps; the second averages that derivative with the one at the Euler
//! point and redoes the step from the kept sample. The last entry is a plain Euler step to σ = 0.
//!
//! Supported: every config key diffusers accepts, `beta_schedule: exp` included (diffusers has it
//! only here): `use_karras_sigmas` / `use_exponential_sigmas` / `use_beta_sigmas`,
//! `clip_sample` / `clip_sample_range`, `timestep_spacing`, `steps_offset`, all three prediction
//! types; `set_timesteps` with a count (and the optional `num_train_timesteps` argument,
//! [`HeunTimestepArgs`]) or explicit `timesteps`.
//!
//! Differences from diffusers: a step or `scale_model_input` before `set_timesteps` is an error
//! (diffusers uses the 1000-step schedule its constructor sets; [`HeunDiscreteScheduler::timesteps`]
//! shows that schedule until then); after the first step the timestep must be the schedule's next
//! entry; a run started by timestep starts at that timestep's first-order entry (the second
//! occurrence, as diffusers picks); custom timesteps must be strictly descending in
//! `[0, num_train_timesteps − 1]`; `leading`/`trailing` spacing with more steps than training
//! timesteps is refused; scalar coefficients are f64.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::algorithm::{SchedulerAlgorithm, SchedulerConfig, SchedulerOutput, StepInput, TimestepType, TimestepsSpec};
use super::betas::round_f32;
use super::common::{check_step_tensors, clip, compute_dtype, lin_comb, require_timesteps};
use super::config::{
    validate_clip_range, validate_steps_offset, BetaSchedule, PredictionType, TimestepSpacing, MAX_TRAIN_TIMESTEPS,
};
use super::euler_discrete::family::{self, SigmaConversion, StepIndex, TrainSigmas};
use super::sigmas as sigma_math;

/// `HeunDiscreteScheduler`'s config, with diffusers' defaults (note `beta_start` 0.00085 and
/// `beta_end` 0.012, unlike the other schedulers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeunDiscreteConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: PredictionType,
    #[serde(deserialize_with = "family::null_as_false")]
    pub use_karras_sigmas: bool,
    #[serde(deserialize_with = "family::null_as_false")]
    pub use_exponential_sigmas: bool,
    #[serde(deserialize_with = "family::null_as_false")]
    pub use_beta_sigmas: bool,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
}

impl Default for HeunDiscreteConfig {
    fn default() -> Self {
        HeunDiscreteConfig {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            clip_sample: false,
            clip_sample_range: 1.0,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
        }
    }
}

impl HeunDiscreteConfig {
    fn conversion(&self) -> Result<SigmaConversion> {
        SigmaConversion::from_flags(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)
    }
}

impl SchedulerConfig for HeunDiscreteConfig {
    fn validate(&self) -> Result<()> {
        // `exp` is Heun's own beta schedule; the rest as the other σ-space schedulers
        let classic = if self.beta_schedule == BetaSchedule::Exp { BetaSchedule::Linear } else { self.beta_schedule };
        family::validate_schedule(
            self.num_train_timesteps,
            self.beta_start,
            self.beta_end,
            classic,
            self.trained_betas.as_deref(),
            "HeunDiscreteScheduler",
        )?;
        validate_steps_offset(self.steps_offset)?;
        validate_clip_range(self.clip_sample_range)?;
        self.conversion()?.check_train_timesteps(self.num_train_timesteps)
    }

    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
}

/// `HeunDiscreteScheduler.set_timesteps`' own argument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeunTimestepArgs {
    /// Spaces the timesteps over this many training steps instead of the config's (σ still come
    /// from the config's training table).
    pub num_train_timesteps: Option<usize>,
}

/// The first call of a pair: what the second needs.
#[derive(Clone, Debug)]
struct FirstOrder {
    derivative: Tensor,
    dt: f64,
    sample: Tensor,
}

/// diffusers' `HeunDiscreteScheduler`.
#[derive(Clone, Debug)]
pub struct HeunDiscreteScheduler {
    config: HeunDiscreteConfig,
    alphas_cumprod: Vec<f64>,
    train: TrainSigmas,
    timesteps: Vec<f64>,
    /// `[σ₀, σ₁, σ₁, …, σₙ₋₁, σₙ₋₁, 0]` (float32 values).
    sigmas: Vec<f64>,
    num_inference_steps: Option<usize>,
    index: StepIndex,
    pending: Option<FirstOrder>,
}

impl HeunDiscreteScheduler {
    /// The index of the next call (None until the first `scale_model_input` or `step` of a run).
    pub fn step_index(&self) -> Option<usize> {
        self.index.step_index
    }

    /// Whether the next `step` is the first (Euler) call of a pair (diffusers' `state_in_first_order`).
    pub fn state_in_first_order(&self) -> bool {
        self.pending.is_none()
    }

    /// Starts the next run at entry `begin_index` of the schedule (diffusers' `set_begin_index`); it
    /// must be a first-order entry (0 or even). Reset by `set_timesteps`.
    pub fn set_begin_index(&mut self, begin_index: usize) -> Result<()> {
        if begin_index % 2 == 1 {
            return Err(Error::argument(
                "begin_index",
                format!("{begin_index} is the second call of a Heun pair; a run starts at an even entry"),
            ));
        }
        self.index.begin_index = Some(begin_index);
        Ok(())
    }

    /// The timesteps and σ (each inference step once, the final 0 not yet appended) of a count or of
    /// custom timesteps.
    fn schedule(&self, spec: TimestepsSpec<'_>, args: &HeunTimestepArgs) -> Result<(Vec<f64>, Vec<f64>)> {
        let c = &self.config;
        let conversion = c.conversion()?;
        let (timesteps, n) = match spec {
            TimestepsSpec::Count(n) => {
                let big_n = match args.num_train_timesteps {
                    None => c.num_train_timesteps,
                    Some(0) => return Err(Error::argument("num_train_timesteps", "must be at least 1, got 0")),
                    Some(m) if m > MAX_TRAIN_TIMESTEPS => {
                        return Err(Error::argument(
                            "num_train_timesteps",
                            format!("{m} is larger than the supported maximum {MAX_TRAIN_TIMESTEPS}"),
                        ))
                    }
                    Some(m) => m,
                };
                family::check_count(n, big_n, c.timestep_spacing)?;
                (sigma_math::sigma_timesteps(c.timestep_spacing, big_n, n, c.steps_offset), n)
            }
            TimestepsSpec::Timesteps(ts) => {
                if conversion != SigmaConversion::None {
                    return Err(Error::argument(
                        "timesteps",
                        format!("custom timesteps cannot be used with {} (as in diffusers)", conversion.config_key()),
                    ));
                }
                family::check_custom_timesteps(ts, c.num_train_timesteps)?;
                (ts.iter().map(|&t| round_f32(t)).collect(), ts.len())
            }
            TimestepsSpec::Sigmas(_) => {
                return Err(Error::argument(
                    "sigmas",
                    "HeunDiscreteScheduler does not take custom sigmas (as in diffusers); give timesteps or \
                     num_inference_steps",
                ))
            }
        };
        let interpolated = sigma_math::interp_sigmas(&timesteps, &self.train.sigmas)?;
        Ok(match conversion.convert(&interpolated, n, None, None, &self.train.log_sigmas)? {
            Some((sigmas, timesteps)) => (timesteps, sigmas),
            None => (timesteps, interpolated),
        })
    }

    /// Installs a schedule with every entry after the first doubled, and resets the run.
    fn install(&mut self, timesteps: Vec<f64>, mut sigmas: Vec<f64>, num_inference_steps: Option<usize>) {
        sigmas.push(0.0);
        let sigmas: Vec<f64> = sigmas.into_iter().map(round_f32).collect();
        let last = sigmas.len() - 1;
        let mut doubled = vec![sigmas[0]];
        for &s in &sigmas[1..last] {
            doubled.extend([s, s]);
        }
        doubled.push(sigmas[last]);
        let mut ts = Vec::with_capacity(2 * timesteps.len());
        for (i, &t) in timesteps.iter().enumerate() {
            let t = round_f32(t);
            ts.push(t);
            if i > 0 {
                ts.push(t);
            }
        }
        self.timesteps = ts;
        self.sigmas = doubled;
        self.num_inference_steps = num_inference_steps;
        self.index = StepIndex::default();
        self.pending = None;
    }
}

impl SchedulerAlgorithm for HeunDiscreteScheduler {
    const CLASS_NAME: &'static str = "HeunDiscreteScheduler";
    const SHORT_NAME: &'static str = "heun";
    const SUMMARY: &'static str = "Heun (2nd order, two model calls per step): accurate in about 25 steps";
    const DEFAULT_STEPS: usize = 25;
    const STEP_PARAMS: &'static [&'static str] = &["return_dict"];
    const SET_TIMESTEPS_PARAMS: &'static [&'static str] =
        &["num_inference_steps", "device", "num_train_timesteps", "timesteps"];

    type Config = HeunDiscreteConfig;
    type TimestepArgs = HeunTimestepArgs;
    type StepArgs = super::algorithm::NoArgs;

    fn new(config: HeunDiscreteConfig) -> Result<Self> {
        config.validate()?;
        let alphas_cumprod = family::alphas_cumprod(
            config.beta_schedule,
            config.beta_start,
            config.beta_end,
            config.num_train_timesteps,
            config.trained_betas.as_deref(),
            false,
        )?;
        let train = TrainSigmas::new(&alphas_cumprod);
        let n = config.num_train_timesteps;
        let mut s = HeunDiscreteScheduler {
            config,
            alphas_cumprod,
            train,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            num_inference_steps: None,
            index: StepIndex::default(),
            pending: None,
        };
        // diffusers' constructor calls set_timesteps(num_train_timesteps): show that schedule, but
        // a step still needs set_timesteps
        let (timesteps, sigmas) = s.schedule(TimestepsSpec::Count(n), &HeunTimestepArgs::default())?;
        s.install(timesteps, sigmas, None);
        Ok(s)
    }

    fn config(&self) -> &HeunDiscreteConfig {
        &self.config
    }

    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, args: &HeunTimestepArgs) -> Result<()> {
        let (timesteps, sigmas) = self.schedule(spec, args)?;
        let n = timesteps.len();
        self.install(timesteps, sigmas, Some(n));
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    fn order(&self) -> usize {
        2
    }

    fn init_noise_sigma(&self) -> f64 {
        family::init_noise_sigma(&self.sigmas, self.config.timestep_spacing)
    }

    fn timestep_type(&self) -> TimestepType {
        TimestepType::Float
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn alphas_cumprod(&self) -> Option<&[f64]> {
        Some(&self.alphas_cumprod)
    }

    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        require_timesteps(self.num_inference_steps)?;
        let i = self.index.resolve(&self.timesteps, timestep, true)?;
        let out = family::scale_by_sigma(sample, self.sigmas[i])?;
        self.index.settle(i);
        Ok(out)
    }

    /// One call of a Heun pair (see the module docs): the Euler call keeps its derivative, step size
    /// and sample; the correction call averages the derivatives and steps from the kept sample.
    fn step(&mut self, input: StepInput<'_>, _args: &super::algorithm::NoArgs) -> Result<SchedulerOutput> {
        let StepInput { model_output, timestep, sample, .. } = input;
        require_timesteps(self.num_inference_steps)?;
        check_step_tensors(model_output, sample)?;
        let i = self.index.resolve(&self.timesteps, timestep, true)?;
        if self.pending.is_none() && i % 2 == 1 {
            return Err(Error::argument(
                "timestep",
                format!("entry {i} is the second call of a Heun pair, but no first call preceded it"),
            ));
        }
        let first = self.pending.is_none();
        let (sigma, sigma_next) =
            if first { (self.sigmas[i], self.sigmas[i + 1]) } else { (self.sigmas[i - 1], self.sigmas[i]) };
        // γ = 0 in diffusers' Heun: σ̂ = σ
        let sigma_input = if first { sigma } else { sigma_next };

        let out_dtype = sample.dtype();
        let dtype = compute_dtype(out_dtype);
        let x = sample.to_dtype(dtype)?;
        let model_output = model_output.to_dtype(dtype)?;
        let mut x0 = family::pred_original(self.config.prediction_type, &x, &model_output, sigma_input, sigma_input)?;
        if self.config.clip_sample {
            x0 = clip(&x0, self.config.clip_sample_range)?;
        }
        let (prev, pending) = match &self.pending {
            None => {
                let derivative = lin_comb(&[(&x, 1.0 / sigma), (&x0, -1.0 / sigma)])?;
                let dt = sigma_next - sigma;
                let prev = lin_comb(&[(&x, 1.0), (&derivative, dt)])?;
                (prev, Some(FirstOrder { derivative, dt, sample: x }))
            }
            Some(kept) => {
                let derivative = lin_comb(&[(&x, 1.0 / sigma_next), (&x0, -1.0 / sigma_next)])?;
                let kept_derivative = kept.derivative.to_dtype(dtype)?;
                let kept_sample = kept.sample.to_dtype(dtype)?;
                let prev =
                    lin_comb(&[(&kept_sample, 1.0), (&kept_derivative, 0.5 * kept.dt), (&derivative, 0.5 * kept.dt)])?;
                (prev, None)
            }
        };
        let out = SchedulerOutput::with_original(prev.to_dtype(out_dtype)?, x0.to_dtype(out_dtype)?);
        self.pending = pending;
        self.index.advance(i);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::schedulers::NoArgs;

    #[test]
    fn exp_beta_schedule_is_diffusers() {
        // diffusers 0.42.1: HeunDiscreteScheduler(beta_schedule="exp"): alphas_cumprod[0, 500, 999],
        // then set_timesteps(5): sigmas and timesteps
        let config = HeunDiscreteConfig { beta_schedule: BetaSchedule::Exp, ..Default::default() };
        let mut s = HeunDiscreteScheduler::new(config).unwrap();
        let ac = s.alphas_cumprod().unwrap();
        for (i, want) in [(0, 0.9880717396736145), (500, 0.0024492181837558746), (999, 6.144378858152777e-06)] {
            assert!((ac[i] - want).abs() <= 1e-6 * want, "alphas_cumprod[{i}] = {} vs {want}", ac[i]);
        }
        s.set_timesteps(5).unwrap();
        assert_eq!(s.timesteps(), &[999.0, 749.25, 749.25, 499.5, 499.5, 249.75, 249.75, 0.0, 0.0]);
        let want = [403.4220886230469, 90.1460952758789, 20.121002197265625, 4.389431953430176, 0.10987384617328644];
        let sig = s.sigmas().unwrap();
        for (k, w) in want.iter().enumerate() {
            let i = if k == 0 { 0 } else { 2 * k - 1 };
            assert!((sig[i] - w).abs() <= 1e-5 * w, "sigma {i}: {} vs {w}", sig[i]);
        }
        // the other schedulers refuse it, as diffusers does
        for class in ["DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler", "RePaintScheduler"] {
            let kind = crate::schedulers::SchedulerKind::from_class_name(class).unwrap();
            let e = kind.build(&serde_json::json!({"beta_schedule": "exp"})).unwrap_err();
            assert!(e.to_string().contains("beta_schedule"), "{class}: {e}");
        }
    }

    #[test]
    fn schedule_repeats_entries() {
        let mut s = HeunDiscreteScheduler::new(Default::default()).unwrap();
        assert_eq!(s.timesteps().len(), 1999, "diffusers' constructor schedule");
        assert!(s.num_inference_steps().is_none());
        s.set_timesteps(3).unwrap();
        assert_eq!(s.timesteps(), &[999.0, 499.5, 499.5, 0.0, 0.0]);
        let sig = s.sigmas().unwrap();
        assert_eq!(sig.len(), 6);
        assert_eq!(sig[1], sig[2]);
        assert_eq!(sig[3], sig[4]);
        assert_eq!(sig[5], 0.0);
        let args = HeunTimestepArgs { num_train_timesteps: Some(500) };
        s.set_timesteps_with(TimestepsSpec::Count(2), &args).unwrap();
        assert_eq!(s.timesteps(), &[499.0, 0.0, 0.0]);
        assert!(s
            .set_timesteps_with(TimestepsSpec::Count(2), &HeunTimestepArgs { num_train_timesteps: Some(0) })
            .is_err());
    }

    #[test]
    fn errors() {
        let mut s = HeunDiscreteScheduler::new(Default::default()).unwrap();
        let x = Tensor::ones((1, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&x, 999.0, &x), &NoArgs {}).is_err(), "before set_timesteps");
        assert!(s.set_timesteps(0).is_err());
        for bad in [&[1.0, 2.0][..], &[5.0, 5.0], &[1000.0], &[]] {
            assert!(s.set_timesteps_with(TimestepsSpec::Timesteps(bad), &HeunTimestepArgs::default()).is_err());
        }
        assert!(s.set_timesteps_with(TimestepsSpec::Sigmas(&[1.0, 0.0]), &HeunTimestepArgs::default()).is_err());
        let mut k =
            HeunDiscreteScheduler::new(HeunDiscreteConfig { use_karras_sigmas: true, ..Default::default() }).unwrap();
        assert!(k.set_timesteps_with(TimestepsSpec::Timesteps(&[10.0]), &HeunTimestepArgs::default()).is_err());
        assert!(
            HeunDiscreteScheduler::new(HeunDiscreteConfig { clip_sample_range: 0.0, ..Default::default() }).is_err()
        );
        s.set_timesteps_with(TimestepsSpec::Timesteps(&[800.0, 300.0]), &HeunTimestepArgs::default()).unwrap();
        assert_eq!(s.timesteps(), &[800.0, 300.0, 300.0]);
        assert!(s.set_begin_index(1).is_err());
        let bad = Tensor::ones((1, 5), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&bad, 800.0, &x), &NoArgs {}).is_err());
        assert!(s.step(StepInput::new(&x, 301.0, &x), &NoArgs {}).is_err());
        assert!(s.state_in_first_order());
        s.step(StepInput::new(&x, 800.0, &x), &NoArgs {}).unwrap();
        assert!(!s.state_in_first_order());
        assert!(s.step(StepInput::new(&x, 800.0, &x), &NoArgs {}).is_err(), "the next entry is 300");
        assert!(!s.state_in_first_order(), "a failed call keeps the pair's state");
        s.step(StepInput::new(&x, 300.0, &x), &NoArgs {}).unwrap();
        assert!(s.state_in_first_order());
        s.step(StepInput::new(&x, 300.0, &x), &NoArgs {}).unwrap();
        assert!(s.step(StepInput::new(&x, 300.0, &x), &NoArgs {}).is_err(), "past the end");
    }

    #[test]
    fn heun_is_exact_for_linear_derivatives() {
        // x₀ = 0 (ε = x/σ): dx/dσ = x/σ, x(σ) = x·σ/σ₀. Heun on a pair gives x·(σ₁/σ₀) exactly:
        // Euler gives x·σ₁/σ₀, whose derivative at σ₁ equals the first, so the average is the same.
        let mut s = HeunDiscreteScheduler::new(Default::default()).unwrap();
        s.set_timesteps(3).unwrap();
        let ts = s.timesteps().to_vec();
        let sig = s.sigmas().unwrap().to_vec();
        let x = Tensor::full(3f32, (1, 2), &Device::Cpu).unwrap();
        let eps = x.affine(1.0 / sig[0], 0.0).unwrap();
        let mid = s.step(StepInput::new(&eps, ts[0], &x), &NoArgs {}).unwrap().prev_sample;
        let eps1 = mid.affine(1.0 / sig[1], 0.0).unwrap();
        let out = s.step(StepInput::new(&eps1, ts[1], &mid), &NoArgs {}).unwrap().prev_sample;
        let got = out.to_vec2::<f32>().unwrap()[0][0] as f64;
        assert!((got - 3.0 * sig[1] / sig[0]).abs() < 1e-5, "{got}");
        // a run started by timestep t₁ starts at its first-order entry
        let mut s2 = HeunDiscreteScheduler::new(Default::default()).unwrap();
        s2.set_timesteps(3).unwrap();
        s2.scale_model_input(&x, ts[1]).unwrap();
        assert_eq!(s2.step_index(), Some(2));
    }
}
