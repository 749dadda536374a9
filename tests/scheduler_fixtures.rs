//! diffusers 0.42.1 scheduler trajectories (`tests/fixtures/schedulers/<case>/`, format in
//! `../shared/README.md`) replayed call by call through the dynamic [`Scheduler`]: the timesteps
//! (integer or float, as diffusers keeps them), σ where the scheduler has them, `init_noise_sigma`,
//! `order`, every `scale_model_input` and every `step`, with the noise each call drew handed in as
//! `variance_noise` and the case's `step_kwargs` passed by name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_unet2d::schedulers::{Args, Noise, Scheduler, SchedulerKind, StepInput, TimestepType, TimestepsSpec};
use serde_json::Value;

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedulers")
}

fn case_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_root())
        .expect("tests/fixtures/schedulers is missing")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("case.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn args_of(value: Option<&Value>) -> Args {
    match value {
        Some(Value::Object(map)) => Args::from(map.clone()),
        _ => Args::new(),
    }
}

fn floats(t: &Tensor) -> TestResult<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// Largest `|a − b| / max(1, |b|)`, asserting it is within the fixtures' 1e-4.
fn check_close(what: &str, ours: &Tensor, reference: &Tensor) -> TestResult<f64> {
    assert_eq!(ours.dims(), reference.dims(), "{what}: shape");
    let mut worst = 0f64;
    for (k, (a, b)) in floats(ours)?.iter().zip(floats(reference)?).enumerate() {
        let err = (a - b).abs();
        let scale = b.abs().max(1.0);
        assert!(err <= 1e-4 * scale, "{what}: element {k}: ours {a}, diffusers {b}, |diff| {err:e}");
        worst = worst.max(err / scale);
    }
    Ok(worst)
}

/// Replays one case; returns the largest relative error over every call.
fn run_case(name: &str) -> TestResult<f64> {
    let dir = fixtures_root().join(name);
    let case: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("case.json"))?)?;
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("trajectory.safetensors"), &Device::Cpu)?;
    let class = case["scheduler"].as_str().unwrap();

    let mut scheduler = Scheduler::from_pretrained(&dir)?;
    assert_eq!(scheduler.kind().class_name(), class, "{name}: class");

    // set_timesteps: a count, or the explicit timesteps / sigmas of set_timesteps_kwargs
    let kwargs = case.get("set_timesteps_kwargs").and_then(Value::as_object).cloned().unwrap_or_default();
    let custom = |key: &str| -> Option<Vec<f64>> {
        kwargs.get(key).and_then(Value::as_array).map(|v| v.iter().filter_map(Value::as_f64).collect())
    };
    let mut own = kwargs.clone();
    own.remove("timesteps");
    own.remove("sigmas");
    own.remove("num_inference_steps");
    let (timesteps, sigmas) = (custom("timesteps"), custom("sigmas"));
    let spec = match (&timesteps, &sigmas, case["num_inference_steps"].as_u64()) {
        (Some(ts), _, _) => TimestepsSpec::Timesteps(ts),
        (_, Some(s), _) => TimestepsSpec::Sigmas(s),
        (None, None, Some(n)) => TimestepsSpec::Count(n as usize),
        _ => panic!("{name}: no num_inference_steps, timesteps or sigmas"),
    };
    scheduler.set_timesteps_with(spec, &Args::from(own))?;

    let expected_timesteps = &tensors["timesteps"];
    let integer = expected_timesteps.dtype() == DType::I64;
    assert_eq!(
        scheduler.timestep_type(),
        if integer { TimestepType::Integer } else { TimestepType::Float },
        "{name}: timestep type"
    );
    let expected_ts = floats(expected_timesteps)?;
    let ours_ts = scheduler.timesteps().to_vec();
    assert_eq!(ours_ts.len(), expected_ts.len(), "{name}: number of timesteps {ours_ts:?} vs {expected_ts:?}");
    for (i, (a, b)) in ours_ts.iter().zip(&expected_ts).enumerate() {
        // float32 timesteps: compare at float32 precision
        let ok = if integer { a == b } else { (*a as f32) == (*b as f32) || (a - b).abs() <= 1e-6 * b.abs().max(1.0) };
        assert!(ok, "{name}: timestep {i}: ours {a}, diffusers {b}");
    }
    if let Some(expected_sigmas) = tensors.get("sigmas") {
        let ours = scheduler.sigmas().unwrap_or_else(|| panic!("{name}: the scheduler has no sigmas"));
        let theirs = floats(expected_sigmas)?;
        assert_eq!(ours.len(), theirs.len(), "{name}: number of sigmas");
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{name}: sigma {i}: ours {a}, diffusers {b}");
        }
    }
    let init_sigma = case["init_noise_sigma"].as_f64().unwrap();
    assert!(
        (scheduler.init_noise_sigma() - init_sigma).abs() <= 1e-6 * init_sigma.max(1.0),
        "{name}: init_noise_sigma {} vs {init_sigma}",
        scheduler.init_noise_sigma()
    );
    if let Some(order) = case.get("order").and_then(Value::as_u64) {
        assert_eq!(scheduler.order() as u64, order, "{name}: order");
    }

    let step_args = args_of(case.get("step_kwargs"));
    // DDIM cases of the first fixture set keep eta at the top level
    let step_args = match case.get("eta").and_then(Value::as_f64) {
        Some(eta) if class == "DDIMScheduler" => step_args.with("eta", eta),
        _ => step_args,
    };
    let calls = case.get("calls").and_then(Value::as_u64).map_or(expected_ts.len(), |c| c as usize);
    assert_eq!(calls, expected_ts.len(), "{name}: one call per timestep entry");
    let (model_outputs, noises, samples) = (&tensors["model_outputs"], &tensors["noises"], &tensors["samples"]);
    let scaled_inputs = tensors.get("scaled_inputs");
    let mut worst = 0f64;
    for (i, &t) in ours_ts.iter().enumerate() {
        let sample = samples.get(i)?;
        let scaled = scheduler.scale_model_input(&sample, t)?;
        if let Some(expected) = scaled_inputs {
            worst =
                worst.max(check_close(&format!("{name}: scale_model_input {i} (t={t})"), &scaled, &expected.get(i)?)?);
        }
        let model_output = model_outputs.get(i)?;
        let noise = noises.get(i)?;
        let input = StepInput::new(&model_output, t, &sample).with_noise(Noise::Given(&noise));
        let out = scheduler.step(input, &step_args)?;
        assert_eq!(out.prev_sample.dtype(), DType::F32, "{name}: step {i} dtype");
        worst = worst.max(check_close(&format!("{name}: step {i} (t={t})"), &out.prev_sample, &samples.get(i + 1)?)?);
    }
    Ok(worst)
}

/// Every case of one class, with its errors printed (`cargo test -- --nocapture` shows them).
fn run_class(class: &str) -> TestResult {
    let mut ran = 0;
    for name in case_names() {
        let case: Value =
            serde_json::from_str(&std::fs::read_to_string(fixtures_root().join(&name).join("case.json"))?)?;
        if case["scheduler"].as_str() == Some(class) {
            let worst = run_case(&name)?;
            println!("{name:36} {class:34} max relative error {worst:.3e}");
            ran += 1;
        }
    }
    assert!(ran > 0, "no fixture case for {class}");
    Ok(())
}

macro_rules! class_fixtures {
    ($($test:ident => $class:literal),* $(,)?) => {$(
        #[test]
        fn $test() -> TestResult {
            run_class($class)
        }
    )*};
}

class_fixtures! {
    ddpm_matches_diffusers => "DDPMScheduler",
    ddim_matches_diffusers => "DDIMScheduler",
    dpm_solver_multistep_matches_diffusers => "DPMSolverMultistepScheduler",
    kdpm2_matches_diffusers => "KDPM2DiscreteScheduler",
    kdpm2_ancestral_matches_diffusers => "KDPM2AncestralDiscreteScheduler",
    edm_euler_matches_diffusers => "EDMEulerScheduler",
    consistency_matches_diffusers => "CMStochasticIterativeScheduler",
    euler_discrete_matches_diffusers => "EulerDiscreteScheduler",
    euler_ancestral_discrete_matches_diffusers => "EulerAncestralDiscreteScheduler",
    heun_discrete_matches_diffusers => "HeunDiscreteScheduler",
    lms_discrete_matches_diffusers => "LMSDiscreteScheduler",
    pndm_matches_diffusers => "PNDMScheduler",
    deis_matches_diffusers => "DEISMultistepScheduler",
    unipc_matches_diffusers => "UniPCMultistepScheduler",
    dpm_solver_singlestep_matches_diffusers => "DPMSolverSinglestepScheduler",
}

/// Every class a fixture names is registered (so each is tested above).
#[test]
fn every_fixture_class_is_registered() -> TestResult {
    for name in case_names() {
        let case: Value =
            serde_json::from_str(&std::fs::read_to_string(fixtures_root().join(&name).join("case.json"))?)?;
        let class = case["scheduler"].as_str().unwrap();
        SchedulerKind::from_class_name(class).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}
