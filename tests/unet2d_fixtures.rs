//! Every `tests/fixtures/unet2d/<case>` (made by diffusers 0.42.1, see `../shared/reference/make_fixtures.py`):
//! load the folder exactly as diffusers wrote it, run the forward the way `case.json` says diffusers was
//! called, and compare with diffusers' float64 output:
//! `max|ours − expected| ≤ 1e-4 · max(1, max|expected|)`.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_unet2d::{LoadOptions, Timestep, UNet2DModel};

const TOLERANCE: f32 = 1e-4;

fn run_case(dir: &std::path::Path) -> (f32, f32) {
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let variant = (case["weights_format"] == "fp16").then(|| "fp16".to_string());
    let options = LoadOptions { variant, ..LoadOptions::default() };
    let model = UNet2DModel::from_pretrained(dir, &options).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let t = &expected["timestep"];
    let value = || t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] as f64;
    let timestep = match case["timestep_kind"].as_str().unwrap() {
        "int" => Timestep::Int(value() as i64),
        // diffusers makes a Python float into an integer tensor (truncating), so the reference did too.
        "float" => Timestep::Int(value().trunc() as i64),
        _ => Timestep::Tensor(t),
    };
    let labels = expected.get("class_labels");
    let out = model.forward(&expected["sample"], timestep, labels).unwrap();
    assert_eq!(out.dtype(), DType::F32);
    common::assert_close(&out, &expected["output"], TOLERANCE, &dir.display().to_string());
    common::max_abs_diff(&out, &expected["output"])
}

#[test]
fn every_fixture_matches_diffusers() {
    let cases = common::cases("unet2d");
    assert!(cases.len() >= 17, "expected the 17 fixture cases, found {}", cases.len());
    for dir in cases {
        let (diff, scale) = run_case(&dir);
        println!(
            "{:32} max abs diff {diff:.2e} (bound {:.2e})",
            dir.file_name().unwrap().to_string_lossy(),
            TOLERANCE * scale
        );
    }
}

#[test]
fn model_is_send_and_sync_and_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<UNet2DModel>();
    let dir = common::fixture("unet2d/ddpm_default_blocks");
    let model = std::sync::Arc::new(UNet2DModel::from_pretrained(&dir, &LoadOptions::default()).unwrap());
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let sample = expected["sample"].clone();
    let serial = model.forward(&sample, 10i64, None).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (model, sample) = (model.clone(), sample.clone());
            std::thread::spawn(move || model.forward(&sample, 10i64, None).unwrap())
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        let diff = (out - &serial).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0);
    }
}

#[test]
fn float16_weights_and_compute_stay_close() {
    let dir = common::fixture("unet2d/ddpm_default_blocks");
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let options = LoadOptions { dtype: DType::F16, ..LoadOptions::default() };
    let model = UNet2DModel::from_pretrained(&dir, &options).unwrap();
    let out = model.forward(&expected["sample"], 10i64, None).unwrap();
    assert_eq!(out.dtype(), DType::F16);
    common::assert_close(&out, &expected["output"], 2e-2, "f16");
    let _ = Tensor::zeros(1, DType::F32, &Device::Cpu);
}

/// `scripts/test.sh` runs this suite a second time with `CANDLE_UNET2D_ISA` one level below the CPU's
/// best: the variable must have taken effect (a typo or a level the CPU lacks would silently test the
/// best level again), and the model's convolutions must run at that level.
#[test]
fn the_requested_instruction_set_is_the_one_that_runs() {
    use candle_unet2d::kernels::isa::{Isa, ISA_ENV};
    let active = Isa::active();
    println!("CPU kernels at {active} (best on this CPU: {})", Isa::best());
    let Ok(requested) = std::env::var(ISA_ENV) else {
        assert_eq!(active, Isa::best());
        return;
    };
    let requested: Isa = requested.parse().unwrap();
    assert_eq!(active, requested, "{ISA_ENV}={requested} did not take effect");
    let weight = Tensor::randn(0f32, 1.0, (32, 32, 3, 3), &Device::Cpu).unwrap();
    let params = candle_unet2d::kernels::conv2d::Conv2dParams { kernel: 3, stride: 1, padding: 1 };
    let weight = candle_unet2d::kernels::conv2d::Conv2dWeight::for_params(weight, params).unwrap();
    assert_eq!(weight.kernel().map(|(_, isa)| isa), Some(requested));
}

/// `scripts/test.sh` also runs this suite with `CANDLE_UNET2D_WINOGRAD=f4`, so that every layer whose
/// map allows it runs F(4×4) against diffusers' outputs (the fixtures' maps are small, and the
/// per-call choice would give most of them F(2×2)): the variable must have taken effect.
#[test]
fn the_requested_winograd_tile_is_the_one_that_runs() {
    use candle_unet2d::kernels::conv2d::{winograd_tile_override, ConvKernel, WINOGRAD_TILE_ENV};
    let expected = match std::env::var(WINOGRAD_TILE_ENV).as_deref() {
        Err(_) | Ok("auto") => None,
        Ok("f2") => Some(ConvKernel::WinogradF2),
        Ok("f4") => Some(ConvKernel::WinogradF4),
        Ok(other) => panic!("{WINOGRAD_TILE_ENV}={other:?}: the suite runs with f2, f4 or auto"),
    };
    assert_eq!(winograd_tile_override(), expected, "{WINOGRAD_TILE_ENV} did not take effect");
}
