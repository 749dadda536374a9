//! Every UNet2DModel family's pipeline against diffusers (`tests/fixtures/family_pipelines/`, made by
//! `../shared/reference/make_family_fixtures.py`): ScoreSdeVe's predictor-corrector on NCSN++,
//! consistency models (one step and `timesteps=[22, 0]`), RePaint inpainting (a random model, and
//! digits16 with class labels). Same seed, same call → the same images within 2/255 per pixel; the
//! step callback sees every step and can stop a run.

mod common;

use std::ops::ControlFlow;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use candle_unet2d::pipeline::{sample, to_images_from, Inpaint, PipelineKind, SampleOptions};
use candle_unet2d::rng::Generator;
use candle_unet2d::schedulers::{Args, Scheduler};
use candle_unet2d::{Error, LoadOptions, UNet2DModel};
use serde_json::Value;

fn model_dir(rel: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match rel.strip_prefix("fixtures/") {
        Some(fixture) => common::fixture(fixture),
        None => root.join(rel),
    }
}

struct Case {
    meta: Value,
    tensors: std::collections::HashMap<String, Tensor>,
    unet: UNet2DModel,
    scheduler: Scheduler,
    options: SampleOptions,
}

fn load_case(name: &str) -> Case {
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture(&format!("family_pipelines/{name}.json"))).unwrap(),
    )
    .unwrap();
    let tensors =
        candle_core::safetensors::load(common::fixture(&format!("family_pipelines/{name}.safetensors")), &Device::Cpu)
            .unwrap();
    let dir = model_dir(meta["model"].as_str().unwrap());
    let options = LoadOptions { subfolder: dir.join("unet").is_dir().then(|| "unet".into()), ..Default::default() };
    let unet = UNet2DModel::from_pretrained(&dir, &options).unwrap();
    let class = candle_unet2d::schedulers::SchedulerKind::from_class_name(meta["scheduler"].as_str().unwrap()).unwrap();
    let scheduler = Scheduler::from_json_as(class, &meta["scheduler_config"]).unwrap();
    let kind = PipelineKind::from_class_name(meta["pipeline"].as_str().unwrap())
        .unwrap_or_else(|_| PipelineKind::for_scheduler(scheduler.kind()));
    let scheduler = kind.prepare_scheduler(scheduler).unwrap();

    let mut options = SampleOptions { batch_size: 1, ..SampleOptions::default() };
    if let Some(b) = meta["batch_size"].as_u64() {
        options.batch_size = b as usize;
    }
    if let Some(labels) = meta["class_labels"].as_array() {
        let labels: Vec<i64> = labels.iter().map(|v| v.as_i64().unwrap()).collect();
        options.batch_size = labels.len();
        options.class_labels = Some(labels);
    }
    options.num_inference_steps = meta["num_inference_steps"].as_u64().map(|n| n as usize).unwrap_or(0);
    options.timesteps = meta["timesteps"].as_array().map(|t| t.iter().map(|v| v.as_f64().unwrap()).collect());
    if let (Some(jl), Some(jn)) = (meta["jump_length"].as_u64(), meta["jump_n_sample"].as_u64()) {
        options.timestep_args = Args::new().with("jump_length", jl).with("jump_n_sample", jn);
    }
    if let (Some(image), Some(mask)) = (tensors.get("image"), tensors.get("mask_image")) {
        options.inpaint = Some(Inpaint { image: image.clone(), mask: mask.clone() });
        options.batch_size = 0;
        // diffusers' RePaintPipeline sets `scheduler.eta = eta` on every call.
        options.step_args = Args::new().with("eta", meta["eta"].as_f64().unwrap());
    }
    Case { meta, tensors, unet, scheduler, options }
}

fn check_case(name: &str) {
    let mut case = load_case(name);
    let mut generator = Generator::from_seed(case.meta["seed"].as_u64().unwrap());
    let mut steps = Vec::new();
    let x = sample(&case.unet, &mut case.scheduler, &case.options, &mut generator, |end| {
        steps.push((end.step, end.total));
        ControlFlow::Continue(())
    })
    .unwrap();
    let total = case.scheduler.timesteps().len();
    assert_eq!(steps, (1..=total).map(|s| (s, total)).collect::<Vec<_>>(), "{name}: one callback per step");
    let images = to_images_from(&x, case.scheduler.kind().sampling_loop()).unwrap();
    let (diff, _) = common::max_abs_diff(&images, &case.tensors["images"]);
    println!("{name}: max pixel diff {:.4}/255 over {total} steps", diff * 255.0);
    assert!(diff <= 2.0 / 255.0, "{name}: max pixel diff {:.3}/255 > 2/255", diff * 255.0);
}

#[test]
fn score_sde_ve_predictor_corrector_matches_diffusers() {
    check_case("score_sde_ve_ncsnpp_10steps");
}

#[test]
fn consistency_one_step_matches_diffusers() {
    check_case("consistency_onestep");
}

#[test]
fn consistency_explicit_timesteps_match_diffusers() {
    check_case("consistency_multistep_22_0");
}

#[test]
fn repaint_on_a_random_model_matches_diffusers() {
    check_case("repaint_random_20steps");
}

#[test]
fn repaint_with_class_labels_on_digits16_matches_diffusers() {
    check_case("repaint_digits16_50steps");
}

/// The known region of an inpainting comes back as it went in (RePaint's last step pastes it).
#[test]
fn repaint_keeps_the_known_pixels() {
    let mut case = load_case("repaint_random_20steps");
    let x = sample(&case.unet, &mut case.scheduler, &case.options, &mut Generator::from_seed(0), |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    let image = &case.tensors["image"];
    let mask = case.tensors["mask_image"].broadcast_as(image.dims()).unwrap();
    let kept = ((x - image).unwrap() * &mask).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(kept < 0.05, "known pixels moved by {kept}");
}

#[test]
fn the_step_callback_stops_a_run_and_can_replace_the_sample() {
    let mut case = load_case("consistency_multistep_22_0");
    let err = sample(&case.unet, &mut case.scheduler.clone(), &case.options, &mut Generator::from_seed(1), |_| {
        ControlFlow::Break(())
    })
    .unwrap_err();
    assert!(matches!(err, Error::Cancelled { step: 1, total: 2 }), "{err}");

    // Replacing the sample after the first step by zeros changes the result; a wrong shape is refused.
    let zeros = |end: candle_unet2d::pipeline::StepEnd<'_>| {
        if end.step == 1 {
            *end.sample = end.sample.zeros_like().unwrap();
        }
        ControlFlow::Continue(())
    };
    let a =
        sample(&case.unet, &mut case.scheduler.clone(), &case.options, &mut Generator::from_seed(1), zeros).unwrap();
    let b = sample(&case.unet, &mut case.scheduler, &case.options, &mut Generator::from_seed(1), |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    let (diff, _) = common::max_abs_diff(&a, &b);
    assert!(diff > 1e-3, "the replaced sample was not used");
    let mut case = load_case("consistency_onestep");
    let err = sample(&case.unet, &mut case.scheduler, &case.options, &mut Generator::from_seed(0), |end| {
        *end.sample = Tensor::zeros((1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
        ControlFlow::Continue(())
    })
    .unwrap_err();
    assert!(err.to_string().contains("the step callback returned shape"), "{err}");
}

/// Per-image generators: each image is what a batch of one with its generator gives, in the standard
/// and inpainting loops. (Not ScoreSdeVe's: its corrector's step size is computed from norms averaged
/// over the batch, as in diffusers, so its images depend on their batch whatever the noise.)
#[test]
fn per_image_generators_give_each_image_its_own_run() {
    for name in ["repaint_random_20steps", "consistency_multistep_22_0"] {
        let case = load_case(name);
        let batch = match &case.options.inpaint {
            Some(i) => i.image.dims()[0],
            None => case.options.batch_size,
        };
        let mut generators: Vec<Generator> = (0..batch as u64).map(|s| Generator::from_seed(100 + s)).collect();
        let together = candle_unet2d::pipeline::sample_per_image(
            &case.unet,
            &mut case.scheduler.clone(),
            &case.options,
            &mut generators,
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
        for i in 0..batch {
            let mut one = case.options.clone();
            one.batch_size = if one.inpaint.is_some() { 0 } else { 1 };
            one.class_labels = one.class_labels.map(|l| vec![l[i]]);
            one.inpaint = one.inpaint.map(|p| Inpaint {
                image: p.image.narrow(0, i, 1).unwrap(),
                mask: if p.mask.dims()[0] == batch { p.mask.narrow(0, i, 1).unwrap() } else { p.mask },
            });
            let alone = sample(
                &case.unet,
                &mut case.scheduler.clone(),
                &one,
                &mut Generator::from_seed(100 + i as u64),
                |_| ControlFlow::Continue(()),
            )
            .unwrap();
            let (diff, _) = common::max_abs_diff(&together.narrow(0, i, 1).unwrap(), &alone);
            assert!(diff < 1e-4, "{name}: image {i} differs by {diff} from its batch-of-one run");
        }
    }
}

#[test]
fn bad_inpainting_input_is_named() {
    let case = load_case("repaint_random_20steps");
    let run = |edit: &dyn Fn(&mut SampleOptions)| {
        let mut options = case.options.clone();
        edit(&mut options);
        sample(&case.unet, &mut case.scheduler.clone(), &options, &mut Generator::from_seed(0), |_| {
            ControlFlow::Continue(())
        })
        .unwrap_err()
        .to_string()
    };
    let image = case.options.inpaint.as_ref().unwrap().image.clone();
    let [b, c, h, w] = *image.dims() else { panic!() };
    type Edit<'a> = Box<dyn Fn(&mut SampleOptions) + 'a>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "mask_image",
            Box::new(|o| {
                o.inpaint.as_mut().unwrap().mask =
                    Tensor::ones((1, 1, h / 2, w), candle_core::DType::F32, &Device::Cpu).unwrap()
            }),
        ),
        (
            "channel",
            Box::new(|o| {
                o.inpaint.as_mut().unwrap().image =
                    Tensor::zeros((b, c + 1, h, w), candle_core::DType::F32, &Device::Cpu).unwrap()
            }),
        ),
        (
            "[0, 1]",
            Box::new(|o| {
                let m = &mut o.inpaint.as_mut().unwrap().mask;
                *m = (m.clone() * 2.0).unwrap();
            }),
        ),
        ("jump_length", Box::new(|o| o.timestep_args = Args::new().with("jump_length", 0).with("jump_n_sample", 2))),
        ("inpaints", Box::new(|o| o.inpaint = None)),
    ];
    for (needle, edit) in &cases {
        let err = run(edit.as_ref());
        assert!(err.contains(needle), "expected an error naming {needle:?}, got: {err}");
    }
    // An image for a scheduler that does not inpaint.
    let mut ddpm = Scheduler::from_json(&serde_json::json!({"_class_name": "DDPMScheduler"})).unwrap();
    let err = sample(&case.unet, &mut ddpm, &case.options, &mut Generator::from_seed(0), |_| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(err.to_string().contains("does not inpaint"), "{err}");
}

#[test]
fn class_labels_are_required_by_class_conditional_models() {
    let mut case = load_case("consistency_onestep");
    case.options.class_labels = None;
    let err = sample(&case.unet, &mut case.scheduler, &case.options, &mut Generator::from_seed(0), |_| {
        ControlFlow::Continue(())
    })
    .unwrap_err();
    assert!(err.to_string().contains("class-conditional"), "{err}");
}

/// A saved pipeline folder loads back as the same class, scheduler and samples.
#[test]
fn save_pretrained_writes_a_pipeline_folder_that_loads_back() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models").join("digits16");
    let pipe = candle_unet2d::pipeline::UNet2DPipeline::from_pretrained(&root, &LoadOptions::default()).unwrap();
    let kind = PipelineKind::from_class_name("DDIMPipeline").unwrap();
    let scheduler = kind.prepare_scheduler(pipe.scheduler.clone()).unwrap();
    let dir = std::env::temp_dir().join(format!("candle-unet2d-save-pipeline-{}", std::process::id()));
    candle_unet2d::pipeline::save_pretrained(&dir, kind, &pipe.unet, &scheduler, &Default::default()).unwrap();
    let again = candle_unet2d::pipeline::UNet2DPipeline::from_pretrained(&dir, &LoadOptions::default()).unwrap();
    assert_eq!(again.kind().unwrap(), kind);
    assert_eq!(again.scheduler.kind().class_name(), "DDIMScheduler");
    let options =
        SampleOptions { class_labels: Some(vec![3, 7]), batch_size: 2, num_inference_steps: 4, ..Default::default() };
    let run = |unet: &UNet2DModel, s: &Scheduler| {
        sample(unet, &mut s.clone(), &options, &mut Generator::from_seed(5), |_| ControlFlow::Continue(())).unwrap()
    };
    let (diff, _) = common::max_abs_diff(&run(&pipe.unet, &scheduler), &run(&again.unet, &again.scheduler));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(diff, 0.0);
}
