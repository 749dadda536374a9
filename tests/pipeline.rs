//! End-to-end sampling on the shipped digits16 model against diffusers (`tests/fixtures/pipeline/`,
//! made by `../shared/reference/make_pipeline_fixtures.py`): same seed, same scheduler, same loop →
//! the same images within 2/255 per pixel.

mod common;

use candle_core::Device;
use candle_unet2d::pipeline::{sample, to_images, SampleOptions, UNet2DPipeline};
use candle_unet2d::rng::Generator;
use candle_unet2d::schedulers::{Args, Scheduler, SchedulerKind};
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
        "ddim" => Scheduler::from_json_as(
            SchedulerKind::from_class_name("DDIMScheduler").unwrap(),
            &pipe.scheduler.config_json(),
        )
        .unwrap(),
        "dpmpp_2m" => {
            let mut config = pipe.scheduler.config_json();
            config["algorithm_type"] = "dpmsolver++".into();
            config["solver_order"] = 2.into();
            Scheduler::from_json_as(SchedulerKind::from_class_name("DPMSolverMultistepScheduler").unwrap(), &config)
                .unwrap()
        }
        other => panic!("unknown scheduler {other}"),
    };
    let labels: Vec<i64> = meta["class_labels"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let options = SampleOptions {
        batch_size: labels.len(),
        num_inference_steps: meta["num_inference_steps"].as_u64().unwrap() as usize,
        class_labels: Some(labels),
        step_args: match meta["eta"].as_f64().unwrap() {
            0.0 => Args::new(),
            eta => Args::new().with("eta", eta),
        },
        ..SampleOptions::default()
    };
    let mut generator = Generator::new();
    generator.manual_seed(meta["seed"].as_u64().unwrap());
    let mut steps = 0;
    let x = sample(&pipe.unet, &mut scheduler, &options, &mut generator, |p| {
        steps = p.step;
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
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
    assert_eq!(
        (pipe.scheduler.kind(), report.scheduler_config),
        (SchedulerKind::from_class_name("DDPMScheduler").unwrap(), None)
    );
    assert_eq!(pipe.scheduler.config_json()["beta_schedule"], "linear");

    let ddim = serde_json::json!({ "_class_name": "DDIMScheduler", "beta_schedule": "squaredcos_cap_v2" });
    std::fs::write(bare.join("scheduler_config.json"), ddim.to_string()).unwrap();
    let (pipe, report) = UNet2DPipeline::from_pretrained_with_report(&bare, &LoadOptions::default()).unwrap();
    assert_eq!(pipe.scheduler.kind(), SchedulerKind::from_class_name("DDIMScheduler").unwrap());
    assert_eq!(pipe.scheduler.config_json()["beta_schedule"], "squaredcos_cap_v2");
    assert_eq!(report.scheduler_config, Some(bare.join("scheduler_config.json")));
    std::fs::remove_dir_all(&bare).unwrap();
}

/// digits16 sampled with a scheduler swapped in (`Cls.from_config(pipe.scheduler.config, **overrides)`)
/// through the DDPMPipeline loop done properly for σ-space schedulers
/// (`tests/fixtures/family_pipelines/digits16_*`, `make_family_fixtures.py`'s `digits_swapped`).
fn check_swapped_scheduler(name: &str) {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture(&format!("family_pipelines/{name}.json"))).unwrap(),
    )
    .unwrap();
    let expected =
        candle_core::safetensors::load(common::fixture(&format!("family_pipelines/{name}.safetensors")), &Device::Cpu)
            .unwrap();
    let pipe = UNet2DPipeline::from_pretrained(shipped_model(), &LoadOptions::default()).unwrap();
    let mut config = pipe.scheduler.config_json();
    for (key, value) in meta["scheduler_overrides"].as_object().unwrap() {
        config[key] = value.clone();
    }
    let kind = SchedulerKind::from_class_name(meta["scheduler"].as_str().unwrap()).unwrap();
    let mut scheduler = Scheduler::from_json_as(kind, &config).unwrap();
    let labels: Vec<i64> = meta["class_labels"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let options = SampleOptions {
        batch_size: labels.len(),
        num_inference_steps: meta["num_inference_steps"].as_u64().unwrap() as usize,
        class_labels: Some(labels),
        ..SampleOptions::default()
    };
    let mut generator = Generator::from_seed(meta["seed"].as_u64().unwrap());
    let x =
        sample(&pipe.unet, &mut scheduler, &options, &mut generator, |_| std::ops::ControlFlow::Continue(())).unwrap();
    let (diff, _) = common::max_abs_diff(&to_images(&x).unwrap(), &expected["images"]);
    println!("{name}: max pixel diff {:.3}/255", diff * 255.0);
    assert!(diff <= 2.0 / 255.0, "{name}: max pixel diff {diff} > 2/255");
}

macro_rules! swapped_scheduler_tests {
    ($($test:ident => $case:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            check_swapped_scheduler($case);
        }
    )*};
}

swapped_scheduler_tests! {
    digits16_euler_matches_diffusers => "digits16_euler30_seed0",
    digits16_euler_ancestral_matches_diffusers => "digits16_euler_ancestral30_seed1",
    digits16_heun_matches_diffusers => "digits16_heun15_seed2",
    digits16_unipc_matches_diffusers => "digits16_unipc15_seed3",
    digits16_pndm_matches_diffusers => "digits16_pndm25_seed4",
    digits16_lms_matches_diffusers => "digits16_lms25_seed5",
}

/// One generator per image: each image of a batch is the batch-of-one image of its generator.
#[test]
fn per_image_generators_make_images_independent_of_the_batch() {
    let pipe = UNet2DPipeline::from_pretrained(shipped_model(), &LoadOptions::default()).unwrap();
    let kind = SchedulerKind::from_class_name("DDPMScheduler").unwrap();
    let run = |seeds: &[u64], labels: Vec<i64>| {
        let mut scheduler = Scheduler::from_json_as(kind, &pipe.scheduler.config_json()).unwrap();
        let options = SampleOptions {
            batch_size: labels.len(),
            num_inference_steps: 5,
            class_labels: Some(labels),
            ..SampleOptions::default()
        };
        let mut generators: Vec<Generator> = seeds.iter().map(|&s| Generator::from_seed(s)).collect();
        candle_unet2d::pipeline::sample_per_image(&pipe.unet, &mut scheduler, &options, &mut generators, |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap()
    };
    let batch = run(&[11, 12, 13], vec![3, 1, 4]);
    for (i, (seed, label)) in [(11, 3), (12, 1), (13, 4)].into_iter().enumerate() {
        let alone = run(&[seed], vec![label]);
        let (diff, _) = common::max_abs_diff(&batch.narrow(0, i, 1).unwrap(), &alone);
        assert!(diff == 0.0, "image {i} differs from its batch-of-one run by {diff}");
    }
    // a list of the wrong length is an error, not a silent reuse
    let mut scheduler = pipe.scheduler.clone();
    let options =
        SampleOptions { batch_size: 2, num_inference_steps: 2, class_labels: Some(vec![0, 1]), ..Default::default() };
    let mut one = vec![Generator::from_seed(0)];
    let e = candle_unet2d::pipeline::sample_per_image(&pipe.unet, &mut scheduler, &options, &mut one, |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap_err();
    assert!(e.to_string().contains("one per image"), "{e}");
}

/// Each scheduler runs the loop it needs: ScoreSdeVe its predictor-corrector, RePaint its inpainting,
/// which without an image to inpaint is refused before anything runs.
#[test]
fn each_scheduler_runs_its_own_loop() {
    let pipe = UNet2DPipeline::from_pretrained(shipped_model(), &LoadOptions::default()).unwrap();
    let options = SampleOptions { class_labels: Some(vec![1]), num_inference_steps: 2, ..Default::default() };
    let sde = SchedulerKind::from_class_name("ScoreSdeVeScheduler").unwrap();
    let mut scheduler = Scheduler::from_json_as(sde, &serde_json::json!({})).unwrap();
    let mut steps = 0;
    let x = sample(&pipe.unet, &mut scheduler, &options, &mut Generator::from_seed(0), |_| {
        steps += 1;
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!((x.dims(), steps), (&[1, 1, 16, 16][..], 2));

    let repaint = SchedulerKind::from_class_name("RePaintScheduler").unwrap();
    let mut scheduler = Scheduler::from_json_as(repaint, &pipe.scheduler.config_json()).unwrap();
    let mut steps = 0;
    let e = sample(&pipe.unet, &mut scheduler, &options, &mut Generator::from_seed(0), |_| {
        steps += 1;
        std::ops::ControlFlow::Continue(())
    })
    .unwrap_err();
    assert!(e.to_string().contains("give the image and its mask_image"), "{e}");
    assert_eq!(steps, 0);
}
