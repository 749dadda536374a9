//! End-to-end sampling on the shipped digits16 model against diffusers (`tests/fixtures/pipeline/`,
//! made by `../shared/reference/make_pipeline_fixtures.py`): same seed, same scheduler, same loop →
//! the same images within 2/255 per pixel.

mod common;

use candle_core::Device;
use candle_unet2d::pipeline::{sample, to_images, SampleOptions, UNet2DPipeline};
use candle_unet2d::rng::Generator;
use candle_unet2d::schedulers::{Scheduler, SchedulerKind};
use candle_unet2d::LoadOptions;

fn shipped_model() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models").join("digits16")
}

fn check_case(name: &str) {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture(&format!("pipeline/{name}.json"))).unwrap())
            .unwrap();
    let expected =
        candle_core::safetensors::load(common::fixture(&format!("pipeline/{name}.safetensors")), &Device::Cpu).unwrap();
    let pipe = UNet2DPipeline::from_pretrained(shipped_model(), &LoadOptions::default()).unwrap();
    let mut scheduler = match meta["scheduler"].as_str().unwrap() {
        "ddpm" => pipe.scheduler.clone(),
        "ddim" => Scheduler::from_json_as(SchedulerKind::Ddim, &pipe.scheduler.config_json()).unwrap(),
        "dpmpp_2m" => {
            let mut config = pipe.scheduler.config_json();
            config["algorithm_type"] = "dpmsolver++".into();
            config["solver_order"] = 2.into();
            Scheduler::from_json_as(SchedulerKind::DpmSolverMultistep, &config).unwrap()
        }
        other => panic!("unknown scheduler {other}"),
    };
    let labels: Vec<i64> = meta["class_labels"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let options = SampleOptions {
        batch_size: labels.len(),
        num_inference_steps: meta["num_inference_steps"].as_u64().unwrap() as usize,
        class_labels: Some(labels),
        eta: meta["eta"].as_f64().unwrap(),
        ..SampleOptions::default()
    };
    let mut generator = Generator::new();
    generator.manual_seed(meta["seed"].as_u64().unwrap());
    let mut steps = 0;
    let x = sample(&pipe.unet, &mut scheduler, &options, &mut generator, |p| steps = p.step).unwrap();
    assert_eq!(steps, options.num_inference_steps);
    let images = to_images(&x).unwrap();
    let (diff, _) = common::max_abs_diff(&images, &expected["images"]);
    println!("{name}: max pixel diff {:.3}/255", diff * 255.0);
    assert!(diff <= 2.0 / 255.0, "{name}: max pixel diff {diff} > 2/255");
}

#[test]
fn ddim_50_steps_matches_diffusers() {
    check_case("digits16_ddim50_seed0");
}

#[test]
fn dpm_solver_pp_20_steps_matches_diffusers() {
    check_case("digits16_dpmpp20_seed1");
}

#[test]
fn ddpm_1000_steps_matches_diffusers() {
    check_case("digits16_ddpm1000_seed0");
}

/// Where the scheduler comes from: the pipeline's `scheduler/`, a `scheduler_config.json` beside a
/// bare UNet's `config.json` (old single-folder pipelines), or none (diffusers' default DDPM).
#[test]
fn pipeline_finds_the_models_scheduler() {
    let (pipe, report) = UNet2DPipeline::from_pretrained_with_report(shipped_model(), &LoadOptions::default()).unwrap();
    assert_eq!(pipe.path, shipped_model());
    assert_eq!(report.scheduler_config.unwrap(), shipped_model().join("scheduler").join("scheduler_config.json"));

    let bare = std::env::temp_dir().join(format!("candle_unet2d_bare_unet_{}", std::process::id()));
    std::fs::create_dir_all(&bare).unwrap();
    for file in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(shipped_model().join("unet").join(file), bare.join(file)).unwrap();
    }
    let (pipe, report) = UNet2DPipeline::from_pretrained_with_report(&bare, &LoadOptions::default()).unwrap();
    assert_eq!((pipe.scheduler.kind(), report.scheduler_config), (SchedulerKind::Ddpm, None));
    assert_eq!(pipe.scheduler.config_json()["beta_schedule"], "linear");

    let ddim = serde_json::json!({ "_class_name": "DDIMScheduler", "beta_schedule": "squaredcos_cap_v2" });
    std::fs::write(bare.join("scheduler_config.json"), ddim.to_string()).unwrap();
    let (pipe, report) = UNet2DPipeline::from_pretrained_with_report(&bare, &LoadOptions::default()).unwrap();
    assert_eq!(pipe.scheduler.kind(), SchedulerKind::Ddim);
    assert_eq!(pipe.scheduler.config_json()["beta_schedule"], "squaredcos_cap_v2");
    assert_eq!(report.scheduler_config, Some(bare.join("scheduler_config.json")));
    std::fs::remove_dir_all(&bare).unwrap();
}
