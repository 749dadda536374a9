//! `KDPM2AncestralDiscreteScheduler`: KDPM2 with ancestral sampling, as diffusers 0.42.1's
//! `scheduling_k_dpm_2_ancestral_discrete.py` implements it.
//!
//! Each step goes from σᵢ to σ_down (the deterministic part of the ancestral split
//! σᵢ₊₁² = σ_down² + σ_up²) through the log-midpoint of σᵢ and σ_down, then adds σ_up times fresh
//! noise: the pair's second call draws it (`input.noise`, where diffusers calls `randn_tensor`),
//! the first never does. The config, the timestep layout (2n − 1 calls, the interpolated timestep
//! following its σ's) and the refusals are [`super::kdpm2`]'s; see there for the differences from
//! diffusers. The last entry is a lone first call that lands on σ = 0 and draws nothing.

use candle_core::Tensor;

use crate::error::{Error, Result};

use super::algorithm::TimestepsSpec;
use super::algorithm::{NoArgs, SchedulerAlgorithm, SchedulerConfig, SchedulerOutput, StepInput, TimestepType};
use super::betas::NoiseSchedule;
use super::common::{check_float, check_shape, compute_dtype, lin_comb, require_timesteps};
use super::kdpm2::{
    build_tables, derivative, kdpm2_init_noise_sigma, kdpm2_x0, resolve_step_index, step_tensors, Kdpm2Config,
    Kdpm2Tables, Kdpm2TimestepArgs,
};

/// `KDPM2AncestralDiscreteScheduler`'s config: the same fields and defaults as KDPM2's.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Kdpm2AncestralConfig(pub Kdpm2Config);

impl SchedulerConfig for Kdpm2AncestralConfig {
    fn validate(&self) -> Result<()> {
        self.0.validate_for("KDPM2AncestralDiscreteScheduler")
    }

    fn num_train_timesteps(&self) -> usize {
        self.0.num_train_timesteps
    }
}

/// diffusers' `KDPM2AncestralDiscreteScheduler`.
#[derive(Clone, Debug)]
pub struct Kdpm2AncestralDiscreteScheduler {
    config: Kdpm2AncestralConfig,
    schedule: NoiseSchedule,
    tables: Kdpm2Tables,
    num_inference_steps: Option<usize>,
    step_index: Option<usize>,
    begin_index: Option<usize>,
    /// The sample kept by a pair's first call (diffusers' `self.sample`).
    sample: Option<Tensor>,
}

impl Kdpm2AncestralDiscreteScheduler {
    /// The index of the next call (None until the first after `set_timesteps`).
    pub fn step_index(&self) -> Option<usize> {
        self.step_index
    }

    /// Starts the next run at entry `begin_index` of the timesteps (diffusers' `set_begin_index`).
    /// Reset by `set_timesteps`.
    pub fn set_begin_index(&mut self, begin_index: usize) {
        self.begin_index = Some(begin_index);
    }

    /// Whether the next call is the first of a pair (diffusers' `state_in_first_order`).
    pub fn state_in_first_order(&self) -> bool {
        self.sample.is_none()
    }

    /// The interpolated σ (between σᵢ and its σ_down), laid out like [`SchedulerAlgorithm::sigmas`].
    pub fn sigmas_interpol(&self) -> &[f64] {
        &self.tables.sigmas_interpol
    }

    /// The noise σ of each step (`sigmas_up`; the last value is NaN, as in diffusers, and unused).
    pub fn sigmas_up(&self) -> &[f64] {
        &self.tables.sigmas_up
    }

    /// The deterministic target σ of each step (`sigmas_down`).
    pub fn sigmas_down(&self) -> &[f64] {
        &self.tables.sigmas_down
    }

    fn install(&mut self, n: usize, big_n: usize) -> Result<()> {
        self.tables = build_tables(&self.config.0, &self.schedule.alphas_cumprod, n, big_n, true)?;
        self.sample = None;
        self.step_index = None;
        self.begin_index = None;
        Ok(())
    }
}

impl SchedulerAlgorithm for Kdpm2AncestralDiscreteScheduler {
    const CLASS_NAME: &'static str = "KDPM2AncestralDiscreteScheduler";
    const SHORT_NAME: &'static str = "kdpm2_a";
    const SUMMARY: &'static str = "KDPM2 ancestral (stochastic, two model calls per step): about 25 steps";
    const DEFAULT_STEPS: usize = 25;
    const SET_TIMESTEPS_PARAMS: &'static [&'static str] = &["num_inference_steps", "device", "num_train_timesteps"];

    type Config = Kdpm2AncestralConfig;
    type TimestepArgs = Kdpm2TimestepArgs;
    type StepArgs = NoArgs;

    fn new(config: Kdpm2AncestralConfig) -> Result<Self> {
        config.validate()?;
        let schedule = config.0.noise_schedule()?;
        let big_n = config.0.num_train_timesteps;
        let mut s = Kdpm2AncestralDiscreteScheduler {
            config,
            schedule,
            tables: Kdpm2Tables::default(),
            num_inference_steps: None,
            step_index: None,
            begin_index: None,
            sample: None,
        };
        // as diffusers' constructor: the num_train_timesteps-step schedule until set_timesteps
        s.install(big_n, big_n)?;
        Ok(s)
    }

    fn config(&self) -> &Kdpm2AncestralConfig {
        &self.config
    }

    fn set_timesteps_with(&mut self, spec: TimestepsSpec<'_>, args: &Kdpm2TimestepArgs) -> Result<()> {
        match spec {
            TimestepsSpec::Count(n) => {
                let big_n = args.num_train_timesteps.filter(|&v| v > 0).unwrap_or(self.config.0.num_train_timesteps);
                self.install(n, big_n)?;
                self.num_inference_steps = Some(n);
                Ok(())
            }
            TimestepsSpec::Timesteps(_) => Err(Error::argument(
                "timesteps",
                "KDPM2AncestralDiscreteScheduler does not take custom timesteps (as in diffusers)",
            )),
            TimestepsSpec::Sigmas(_) => Err(Error::argument(
                "sigmas",
                "KDPM2AncestralDiscreteScheduler does not take custom sigmas (as in diffusers)",
            )),
        }
    }

    fn timesteps(&self) -> &[f64] {
        &self.tables.timesteps
    }

    fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    fn order(&self) -> usize {
        2
    }

    fn init_noise_sigma(&self) -> f64 {
        kdpm2_init_noise_sigma(self.config.0.timestep_spacing, &self.tables.sigmas)
    }

    fn timestep_type(&self) -> TimestepType {
        TimestepType::Float
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.tables.sigmas)
    }

    fn alphas_cumprod(&self) -> Option<&[f64]> {
        Some(&self.schedule.alphas_cumprod)
    }

    /// `sample / √(σ² + 1)` with σ of this call (σᵢ, or the midpoint on a pair's second call);
    /// settles the step index on a run's first call, as diffusers does.
    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        require_timesteps(self.num_inference_steps)?;
        check_float("sample", sample)?;
        let index = resolve_step_index(&self.tables.timesteps, self.step_index, self.begin_index, timestep)?;
        self.step_index = Some(index);
        let sigma =
            if self.sample.is_none() { self.tables.sigmas[index] } else { self.tables.sigmas_interpol[index - 1] };
        let dtype = compute_dtype(sample.dtype());
        Ok(sample.to_dtype(dtype)?.affine(1.0 / (sigma * sigma + 1.0).sqrt(), 0.0)?.to_dtype(sample.dtype())?)
    }

    /// One call of a KDPM2-ancestral pair (diffusers' `KDPM2AncestralDiscreteScheduler.step`); the
    /// second call of a pair draws its noise from `input.noise`.
    fn step(&mut self, input: StepInput<'_>, _args: &NoArgs) -> Result<SchedulerOutput> {
        let StepInput { model_output, timestep, sample, mut noise, .. } = input;
        require_timesteps(self.num_inference_steps)?;
        let (model_output, x, shape, out_dtype) = step_tensors(model_output, sample)?;
        let s = resolve_step_index(&self.tables.timesteps, self.step_index, self.begin_index, timestep)?;
        let t = &self.tables;
        let prediction_type = self.config.0.prediction_type;
        let (prev, x0, kept) = if self.sample.is_none() {
            let sigma = t.sigmas[s];
            let sigma_interpol = t.sigmas_interpol[s];
            let x0 = kdpm2_x0(prediction_type, &x, &model_output, sigma)?;
            let d = derivative(&x, &x0, sigma)?;
            let prev = lin_comb(&[(&x, 1.0), (&d, sigma_interpol - sigma)])?;
            (prev, x0, Some(x))
        } else {
            let kept = self.sample.as_ref().map(|k| k.to_dtype(x.dtype())).transpose()?;
            let kept = kept.ok_or_else(|| Error::argument("sample", "missing the kept sample"))?;
            check_shape("sample", &kept, &shape).map_err(|_| {
                Error::argument(
                    "sample",
                    format!("has shape {shape:?} but the first call of this step had shape {:?}", kept.dims()),
                )
            })?;
            let sigma = t.sigmas[s - 1];
            let sigma_interpol = t.sigmas_interpol[s - 1];
            let sigma_up = t.sigmas_up[s - 1];
            let sigma_down = t.sigmas_down[s - 1];
            let x0 = kdpm2_x0(prediction_type, &x, &model_output, sigma_interpol)?;
            let d = derivative(&x, &x0, sigma_interpol)?;
            let z = noise.draw(&shape, x.device(), x.dtype(), "a KDPM2-ancestral step's second call")?;
            let prev = lin_comb(&[(&kept, 1.0), (&d, sigma_down - sigma), (&z, sigma_up)])?;
            (prev, x0, None)
        };
        let out = SchedulerOutput::with_original(prev.to_dtype(out_dtype)?, x0.to_dtype(out_dtype)?);
        self.sample = kept;
        self.step_index = Some(s + 1);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::super::noise::Noise;
    use super::*;

    #[test]
    fn second_calls_draw_noise_first_calls_do_not() {
        let mut s = Kdpm2AncestralDiscreteScheduler::new(Kdpm2AncestralConfig::default()).unwrap();
        s.set_timesteps(3).unwrap();
        assert_eq!(s.timesteps().len(), 5);
        assert_eq!(s.sigmas().unwrap().len(), 8);
        let x = Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let ts = s.timesteps().to_vec();
        // the first call needs no noise source
        s.step(StepInput::new(&x, ts[0], &x), &NoArgs {}).unwrap();
        // the second does: without one it is an error that leaves the state as it was
        let e = s.step(StepInput::new(&x, ts[1], &x), &NoArgs {}).unwrap_err();
        assert!(e.to_string().contains("generator"), "{e}");
        assert_eq!(s.step_index(), Some(1));
        let z = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        s.step(StepInput::new(&x, ts[1], &x).with_noise(Noise::Given(&z)), &NoArgs {}).unwrap();
        for &t in &ts[2..4] {
            s.step(StepInput::new(&x, t, &x).with_noise(Noise::Given(&z)), &NoArgs {}).unwrap();
        }
        // the last entry is a lone first call onto σ = 0
        let out = s.step(StepInput::new(&x, ts[4], &x), &NoArgs {}).unwrap();
        assert!(out.prev_sample.dims() == x.dims());
        assert!(s.step(StepInput::new(&x, ts[4], &x), &NoArgs {}).is_err());
    }

    #[test]
    fn refusals() {
        let mut s = Kdpm2AncestralDiscreteScheduler::new(Kdpm2AncestralConfig::default()).unwrap();
        assert!(s.set_timesteps(0).is_err());
        let x = Tensor::ones((1, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&x, 999.0, &x), &NoArgs {}).is_err());
        s.set_timesteps(5).unwrap();
        assert!(s.step(StepInput::new(&x, 3.25, &x), &NoArgs {}).is_err());
        let y = Tensor::ones((2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(StepInput::new(&y, 999.0, &x), &NoArgs {}).is_err());
        assert!(s.set_timesteps_with(TimestepsSpec::Timesteps(&[999.0]), &Kdpm2TimestepArgs::default()).is_err());
        let two =
            Kdpm2AncestralConfig(Kdpm2Config { use_beta_sigmas: true, use_karras_sigmas: true, ..Default::default() });
        assert!(Kdpm2AncestralDiscreteScheduler::new(two).is_err());
        // beta sigmas: from σ_max down to σ_min of the interpolated schedule
        let beta = Kdpm2AncestralConfig(Kdpm2Config { use_beta_sigmas: true, ..Default::default() });
        let mut s = Kdpm2AncestralDiscreteScheduler::new(beta).unwrap();
        s.set_timesteps(6).unwrap();
        let sig = s.sigmas().unwrap();
        assert_eq!(sig.len(), 14);
        assert!(sig.windows(2).all(|w| w[0] >= w[1]), "{sig:?}");
        assert!((sig[0] - 25.146116256713867).abs() < 1e-4 && (sig[10] - 0.02916753478348255).abs() < 1e-6);
    }

    #[test]
    fn schedules_match_diffusers() {
        // diffusers 0.42.1's set_timesteps(7): (config, timesteps, sigmas)
        let cases = [
            (
                Kdpm2Config { use_exponential_sigmas: true, ..Default::default() },
                vec![
                    998.9999852945845,
                    793.9049072265625,
                    793.9048817220912,
                    537.3851318359375,
                    537.3851342943932,
                    246.1072540283203,
                    246.10729243162672,
                    61.25275802612305,
                    61.25274194313403,
                    8.009936332702637,
                    8.009934404598162,
                    0.0,
                    0.0,
                ],
                vec![
                    25.146116256713867,
                    8.150965690612793,
                    8.150965690612793,
                    2.642087459564209,
                    2.642087459564209,
                    0.8564170598983765,
                    0.8564170598983765,
                    0.27760255336761475,
                    0.27760255336761475,
                    0.08998323231935501,
                    0.08998323231935501,
                    0.02916753478348255,
                    0.02916753478348255,
                    0.0,
                    0.0,
                    0.0,
                ],
            ),
            (
                Kdpm2Config {
                    beta_schedule: super::super::config::BetaSchedule::ScaledLinear,
                    timestep_spacing: super::super::config::TimestepSpacing::Trailing,
                    ..Default::default()
                },
                vec![
                    999.0,
                    856.0,
                    856.0,
                    712.9999389648438,
                    713.0,
                    570.0,
                    570.0,
                    428.0000305175781,
                    428.0,
                    285.0,
                    285.0,
                    142.0,
                    142.0,
                ],
                vec![
                    14.614646911621094,
                    6.668572902679443,
                    6.668572902679443,
                    3.5138795375823975,
                    3.5138795375823975,
                    2.054476737976074,
                    2.054476737976074,
                    1.276235818862915,
                    1.276235818862915,
                    0.7900615334510803,
                    0.7900615334510803,
                    0.43806231021881104,
                    0.43806231021881104,
                    0.0,
                    0.0,
                    0.0,
                ],
            ),
        ];
        for (config, t, sig) in cases {
            let mut s = Kdpm2AncestralDiscreteScheduler::new(Kdpm2AncestralConfig(config)).unwrap();
            s.set_timesteps(7).unwrap();
            for (a, b) in s.timesteps().iter().zip(&t).chain(s.sigmas().unwrap().iter().zip(&sig)) {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "ours {a}, diffusers {b}");
            }
            assert_eq!((s.timesteps().len(), s.sigmas().unwrap().len()), (t.len(), sig.len()));
        }
    }
}
