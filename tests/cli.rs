//! The `unet2d` binary, run as users run it: the shipped model with no files around, outputs
//! decoded with the `image` crate, and every bad argument answered by one `error:` line.
//!
//! Run with `cargo test --release --features cli --test cli`. Sampling uses DPM-Solver++ with few
//! steps to stay fast (the default DDPM takes 1000 steps).
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;

use candle_unet2d::stats::num_parameters;
use candle_unet2d::UNet2DConfig;
use common::unet2d;

/// A fresh, empty folder for one test, which is also the working directory of the binary.
fn workdir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts success and returns stdout.
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Asserts the failure users should see: exit `code`, nothing on stdout, and stderr exactly one
/// line starting with `error:` — no panic, no backtrace. Returns that line.
fn fails(out: &Output, code: i32) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    assert!(stderr.starts_with("error: "), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "more than one line: {stderr}");
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!stderr.contains(bad), "stderr mentions {bad}: {stderr}");
    }
    stderr.trim_end().to_string()
}

/// Sorted `*.png` file names in `dir`.
fn png_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    names.sort();
    names
}

fn gray(path: &Path) -> image::GrayImage {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(img.color(), image::ColorType::L8, "{}", path.display());
    img.into_luma8()
}

#[test]
fn sample_without_a_model_writes_the_digit_grid() {
    let dir = workdir("grid");
    let stdout = ok(&unet2d(&dir, &["sample", "--steps", "20", "--scheduler", "dpmpp", "--out", "d.png"]));
    // Ten digits 0..9 of 16×16, scaled 4× so a tile is 64 px, in one row.
    let grid = gray(&dir.join("d.png"));
    assert_eq!(grid.dimensions(), (640, 64));
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("d.png") && stdout.contains("10 images"), "{stdout}");
    // Digits, not a blank or saturated image: a dark background with bright strokes.
    let pixels = grid.as_raw();
    let bright = pixels.iter().filter(|&&p| p > 128).count() as f64 / pixels.len() as f64;
    assert!((0.05..0.6).contains(&bright), "bright fraction {bright}");
}

#[test]
fn out_dir_files_sort_in_batch_order_and_match_the_grid() {
    let dir = workdir("out_dir");
    let common = ["sample", "--steps", "10", "--scheduler", "dpmpp", "--batch", "12", "--seed", "7"];
    ok(&unet2d(&dir, &[&common[..], &["--out-dir", "each"]].concat()));
    ok(&unet2d(&dir, &[&common[..], &["--out", "grid.png", "--scale", "1"]].concat()));

    let names = png_files(&dir.join("each"));
    assert_eq!(names.len(), 12, "{names:?}");
    // 12 > 10 images: ⌈√12⌉ = 4 columns, 3 rows, at --scale 1.
    let grid = gray(&dir.join("grid.png"));
    assert_eq!(grid.dimensions(), (64, 48));
    for (i, name) in names.iter().enumerate() {
        // Without --class the labels cycle over the ten classes.
        assert!(name.contains(&format!("_class{}", i % 10)), "{i}: {name}");
        let img = gray(&dir.join("each").join(name));
        assert_eq!(img.dimensions(), (16, 16), "{name}");
        let (x0, y0) = ((i % 4) as u32 * 16, (i / 4) as u32 * 16);
        for (x, y, p) in img.enumerate_pixels() {
            assert_eq!(grid.get_pixel(x0 + x, y0 + y), p, "{name} at ({x}, {y})");
        }
    }
}

#[test]
fn class_labels_set_the_batch() {
    let dir = workdir("classes");
    ok(&unet2d(&dir, &["sample", "--steps", "10", "--scheduler", "dpmpp", "--class", "3,1,4", "--out-dir", "out"]));
    assert_eq!(
        png_files(&dir.join("out")),
        ["sample_000_class3.png", "sample_001_class1.png", "sample_002_class4.png"]
    );
    ok(&unet2d(&dir, &["sample", "--steps", "10", "--scheduler", "dpmpp", "--class", "3,1,4", "--out", "g.png"]));
    assert_eq!(gray(&dir.join("g.png")).dimensions(), (192, 64));
}

#[test]
fn the_seed_decides_the_images() {
    let dir = workdir("seed");
    let run = |seed: &str, out: &str| {
        ok(&unet2d(
            &dir,
            &["sample", "--steps", "10", "--scheduler", "dpmpp", "--class", "8", "--seed", seed, "--out", out],
        ));
        gray(&dir.join(out)).into_raw()
    };
    let a = run("1", "a.png");
    assert_eq!(a, run("1", "b.png"), "same seed, same image");
    assert_ne!(a, run("2", "c.png"), "another seed, another image");
}

#[test]
fn info_describes_the_shipped_model() {
    let dir = workdir("info");
    let stdout = ok(&unet2d(&dir, &["info"]));
    let config_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/digits16/unet/config.json");
    let params = num_parameters(&UNet2DConfig::from_file(&config_path).unwrap()).unwrap();
    let line = stdout.lines().find(|l| l.starts_with("parameters")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.replace(',', "").contains(&params.to_string()), "{line} vs {params}");
    for expected in
        ["16x16", "DDPMScheduler", "squaredcos_cap_v2", "epsilon", "GFLOPs", "float32", "10 classes", "DDPMPipeline"]
    {
        assert!(stdout.contains(expected), "missing {expected:?} in\n{stdout}");
    }
    let isa = candle_unet2d::Isa::best();
    let kernels = stdout.lines().find(|l| l.starts_with("cpu kernels")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(kernels.contains(&format!("best: {isa}")), "{kernels}");
    // The same model from its folder.
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/digits16");
    let from_folder = ok(&unet2d(&dir, &["info", "--model", folder.to_str().unwrap()]));
    assert!(from_folder.contains("diffusion_pytorch_model.safetensors"), "{from_folder}");
    assert!(from_folder.contains(&line.to_string()), "{from_folder}");
}

#[test]
fn bad_arguments_are_usage_errors() {
    let dir = workdir("usage");
    let base = ["sample", "--steps", "10", "--scheduler", "dpmpp"];
    let cases: &[(&[&str], &str)] = &[
        (&["sample", "--scheduler", "eulr"], "--scheduler"),
        (&["sample", "--sigmas", "linear"], "--sigmas"),
        (&["sample", "--step-arg", "s_churn"], "NAME=VALUE"),
        (&["sample", "--steps", "0"], "--steps"),
        (&["sample", "--batch", "0"], "--batch"),
        (&["sample", "--eta", "-1"], "--eta"),
        (&["sample", "--eta", "inf"], "--eta"),
        (&["sample", "--out", "x.jpg"], ".png"),
        (&["sample", "--out", "a.png", "--out-dir", "d"], "cannot be used with"),
        (&["sample", "--class", "3,1", "--batch", "3"], "--batch 3"),
        (&["sample", "--dtype", "f64"], "--dtype"),
        (&["sample", "--pipeline", "ldm"], "--pipeline"),
        (&["sample", "--timesteps", "3,1"], "cannot be used with"),
        (&["sample", "--timesteps", "3,x"], "--timesteps"),
        (&["sample", "--snr", "-1"], "--snr"),
        (&["sample", "--bogus"], "--bogus"),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, needle) in cases {
        let args = if args[0] == "sample" { [&base[..], &args[1..]].concat() } else { args.to_vec() };
        let line = fails(&unet2d(&dir, &args), 2);
        assert!(line.contains(needle), "{args:?}: {line}");
    }
    assert!(png_files(&dir).is_empty(), "nothing is written");
}

#[test]
fn runtime_errors_are_one_line_and_come_before_sampling() {
    let dir = workdir("runtime");
    std::fs::write(dir.join("a_file"), b"not a folder").unwrap();
    let base = ["sample", "--steps", "10", "--scheduler", "dpmpp"];
    let mut cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--class", "12"], "out of range"),
        (vec!["--class=-1"], "out of range"),
        (vec!["--model", "/nonexistent"], "/nonexistent"),
        (vec!["--out", "/proc/x.png"], "/proc/x.png"),
        (vec!["--out", "a_file/x.png"], "a_file"),
        (vec!["--out", "missing/x.png"], "missing"),
        (vec!["--out-dir", "a_file/sub"], "a_file/sub"),
        (vec!["--device", "tpu"], "tpu"),
        (vec!["sample", "--scheduler", "ddpm", "--steps", "5000"], "--steps 5000"),
        // scheduler arguments the scheduler does not take, named before any sampling
        (vec!["sample", "--scheduler", "ddpm", "--steps", "5", "--eta", "0.5"], "unknown argument `eta`"),
        (vec!["sample", "--scheduler", "ddim", "--steps", "5", "--step-arg", "s_churn=1"], "s_churn"),
        (vec!["sample", "--scheduler", "ddim", "--steps", "5", "--sigmas", "karras"], "no choice of σ schedule"),
        (vec!["sample", "--scheduler", "repaint", "--steps", "5"], "unet2d inpaint"),
        (vec!["sample", "--pipeline", "repaint", "--steps", "5"], "unet2d inpaint"),
        (vec!["sample", "--pipeline", "score-sde-ve", "--steps", "5"], "ScoreSdeVeScheduler"),
        (vec!["sample", "--pipeline", "ddim", "--scheduler", "euler", "--steps", "5"], "rebuilds its scheduler"),
        (vec!["sample", "--scheduler", "ddim", "--timesteps", "5,1"], "custom timesteps"),
        (vec!["sample", "--steps", "5", "--snr", "0.1"], "only ScoreSdeVeScheduler"),
        (vec!["sample", "--steps", "5", "--correct-steps", "2"], "--correct-steps"),
    ];
    if !cfg!(feature = "cuda") {
        cases.push((vec!["--device", "cuda:0"], "built without CUDA support"));
    }
    for (extra, needle) in cases {
        let args = if extra[0] == "sample" { extra } else { [&base[..], &extra].concat() };
        let line = fails(&unet2d(&dir, &args), 1);
        assert!(line.contains(needle), "{args:?}: {line}");
    }
    let names = png_files(&dir);
    assert!(names.is_empty(), "nothing is written: {names:?}");
}

#[test]
fn a_folder_without_weights_is_refused() {
    let dir = workdir("no_weights");
    let unet = dir.join("pipe").join("unet");
    std::fs::create_dir_all(&unet).unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/digits16/unet/config.json");
    std::fs::copy(config, unet.join("config.json")).unwrap();
    std::fs::write(dir.join("pipe").join("model_index.json"), b"{}").unwrap();
    let line = fails(&unet2d(&dir, &["info", "--model", "pipe"]), 1);
    assert!(line.contains("diffusion_pytorch_model"), "{line}");
}

#[test]
fn help_and_version_succeed() {
    let dir = workdir("help");
    let help = ok(&unet2d(&dir, &["sample", "--help"]));
    for flag in [
        "--model",
        "--scheduler",
        "--steps",
        "--batch",
        "--class",
        "--seed",
        "--eta",
        "--device",
        "--dtype",
        "--out",
        "--out-dir",
        "--scale",
        "--sigmas",
        "--step-arg",
        "--pipeline",
        "--timesteps",
        "--correct-steps",
        "--snr",
    ] {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
    }
    // every registered scheduler is offered, by its CLI name and diffusers' class name
    for kind in candle_unet2d::schedulers::SchedulerKind::all() {
        assert!(help.contains(kind.short_name()) && help.contains(kind.class_name()), "{kind} missing from\n{help}");
    }
    for kind in candle_unet2d::pipeline::PipelineKind::all() {
        assert!(help.contains(kind.short_name()) && help.contains(kind.class_name()), "{kind} missing from\n{help}");
    }
    let help = ok(&unet2d(&dir, &["inpaint", "--help"]));
    for flag in
        ["--image", "--mask", "--class", "--steps", "--jump-length", "--jump-n-sample", "--eta", "--seed", "--out"]
    {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
    }
    assert!(ok(&unet2d(&dir, &["--version"])).starts_with("unet2d "));
}

/// Writes a bare UNet folder (config.json + safetensors, no scheduler) of a tiny unconditional
/// model with `channels` image channels and small random weights.
fn tiny_unet(dir: &Path, channels: usize) {
    use candle_unet2d::stats::parameter_shapes;
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "sample_size": 8, "in_channels": channels, "out_channels": channels,
        "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
        "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"],
        "attention_head_dim": null, "add_attention": false
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let config: UNet2DConfig = serde_json::from_value(config).unwrap();
    let mut generator = candle_unet2d::rng::Generator::from_seed(0);
    let tensors: std::collections::HashMap<String, candle_core::Tensor> = parameter_shapes(&config)
        .unwrap()
        .into_iter()
        .map(|(name, shape)| {
            let t = generator.randn_tensor(&shape, &candle_core::Device::Cpu).unwrap();
            (name, (t * 0.05).unwrap())
        })
        .collect();
    candle_core::safetensors::save(&tensors, dir.join("diffusion_pytorch_model.safetensors")).unwrap();
}

#[test]
fn an_unconditional_rgb_unet_folder_samples_with_the_default_ddpm() {
    let dir = workdir("rgb");
    tiny_unet(&dir.join("rgb"), 3);
    let info = ok(&unet2d(&dir, &["info", "--model", "rgb"]));
    assert!(info.contains("DDPMScheduler") && info.contains("default"), "{info}");
    assert!(info.contains("unconditional"), "{info}");

    // Unconditional: 8 images by default; 8×8 images are scaled 8× to 64 px tiles, one row.
    ok(&unet2d(&dir, &["sample", "--model", "rgb", "--scheduler", "ddim", "--steps", "3", "--out", "rgb.png"]));
    let img = image::open(dir.join("rgb.png")).unwrap();
    assert_eq!(img.color(), image::ColorType::Rgb8);
    assert_eq!((img.width(), img.height()), (512, 64));

    ok(&unet2d(&dir, &["sample", "--model", "rgb", "--steps", "2", "--batch", "2", "--out-dir", "each"]));
    assert_eq!(png_files(&dir.join("each")), ["sample_000.png", "sample_001.png"]);

    let line = fails(&unet2d(&dir, &["sample", "--model", "rgb", "--steps", "2", "--class", "1"]), 1);
    assert!(line.contains("not class-conditional"), "{line}");
}

#[test]
fn other_channel_counts_are_refused_before_sampling() {
    let dir = workdir("four_channels");
    tiny_unet(&dir.join("latent"), 4);
    let line = fails(&unet2d(&dir, &["sample", "--model", "latent", "--steps", "2"]), 1);
    assert!(line.contains("4-channel"), "{line}");
    assert!(png_files(&dir).is_empty());
}

#[test]
fn the_images_are_diffusers_images_for_the_same_seed() {
    // tests/fixtures/pipeline/digits16_dpmpp20_seed1: diffusers' DDPMPipeline loop on the shipped
    // model with DPMSolverMultistepScheduler (dpmsolver++, order 2), 20 steps, classes 0..9,
    // generator=torch.Generator().manual_seed(1); `images` is output_type="np" (float, NHWC).
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline/digits16_dpmpp20_seed1.safetensors");
    let expected = candle_core::safetensors::load(fixture, &candle_core::Device::Cpu).unwrap();
    let expected = expected["images"].flatten_all().unwrap().to_vec1::<f32>().unwrap();

    let dir = workdir("diffusers");
    ok(&unet2d(&dir, &["sample", "--scheduler", "dpmpp", "--steps", "20", "--seed", "1", "--out-dir", "each"]));
    let names = png_files(&dir.join("each"));
    assert_eq!(names.len(), 10);
    let mut worst = 0f32;
    for (i, name) in names.iter().enumerate() {
        let img = gray(&dir.join("each").join(name));
        for (j, &p) in img.as_raw().iter().enumerate() {
            let want = expected[i * 256 + j] * 255.0;
            worst = worst.max((f32::from(p) - want).abs());
        }
    }
    // The pipeline test allows 2/255 on the float images; quantising adds at most half a level.
    assert!(worst <= 2.5, "max pixel difference {worst}/255");
}

/// `unet2d sample --scheduler <name>` with a swapped-in scheduler gives diffusers' images
/// (`tests/fixtures/family_pipelines/digits16_*`: the DDPMPipeline loop with `init_noise_sigma` and
/// `scale_model_input`, classes 0..9).
fn check_swapped(case: &str, scheduler: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/family_pipelines");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join(format!("{case}.json"))).unwrap()).unwrap();
    let expected =
        candle_core::safetensors::load(root.join(format!("{case}.safetensors")), &candle_core::Device::Cpu).unwrap();
    let expected = expected["images"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (steps, seed) = (meta["num_inference_steps"].to_string(), meta["seed"].to_string());
    let dir = workdir(case);
    let args = ["sample", "--scheduler", scheduler, "--steps", &steps, "--seed", &seed, "--out-dir", "each"];
    ok(&unet2d(&dir, &args));
    let names = png_files(&dir.join("each"));
    assert_eq!(names.len(), 10);
    let mut worst = 0f32;
    for (i, name) in names.iter().enumerate() {
        let img = gray(&dir.join("each").join(name));
        for (j, &p) in img.as_raw().iter().enumerate() {
            worst = worst.max((f32::from(p) - expected[i * 256 + j] * 255.0).abs());
        }
    }
    assert!(worst <= 2.5, "{case}: max pixel difference {worst}/255");
}

#[test]
fn swapped_schedulers_give_diffusers_images() {
    check_swapped("digits16_euler30_seed0", "euler");
    check_swapped("digits16_unipc15_seed3", "unipc");
    check_swapped("digits16_pndm25_seed4", "pndm");
    check_swapped("digits16_heun15_seed2", "heun");
    check_swapped("digits16_lms25_seed5", "lms");
    check_swapped("digits16_euler_ancestral30_seed1", "euler_a");
}

// ---- every UNet2DModel family through the CLI (tests/fixtures/family_pipelines/) ----

/// A family fixture: its call (`<case>.json`) and diffusers' `images` (NHWC float in [0, 1]).
fn family_case(case: &str) -> (serde_json::Value, Vec<usize>, Vec<f32>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/family_pipelines");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join(format!("{case}.json"))).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(root.join(format!("{case}.safetensors")), &candle_core::Device::Cpu).unwrap();
    let images = &tensors["images"];
    (meta, images.dims().to_vec(), images.flatten_all().unwrap().to_vec1::<f32>().unwrap())
}

/// A diffusers pipeline folder in `dir` for a family fixture: `unet/` copied from the fixture's model,
/// `scheduler/scheduler_config.json` from the call's scheduler config (with its `_class_name`), and a
/// `model_index.json` naming the pipeline class when `model_index` (else the CLI must be told).
fn family_pipeline_folder(dir: &Path, meta: &serde_json::Value, model_index: bool) {
    let model = meta["model"].as_str().unwrap().strip_prefix("fixtures/").unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(model);
    std::fs::create_dir_all(dir.join("unet")).unwrap();
    std::fs::create_dir_all(dir.join("scheduler")).unwrap();
    for file in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(source.join(file), dir.join("unet").join(file)).unwrap();
    }
    let mut scheduler = meta["scheduler_config"].clone();
    scheduler["_class_name"] = meta["scheduler"].clone();
    std::fs::write(dir.join("scheduler/scheduler_config.json"), scheduler.to_string()).unwrap();
    if model_index {
        let index = serde_json::json!({
            "_class_name": meta["pipeline"],
            "scheduler": ["diffusers", meta["scheduler"]],
            "unet": ["diffusers", "UNet2DModel"],
        });
        std::fs::write(dir.join("model_index.json"), index.to_string()).unwrap();
    }
}

/// The largest difference, in 8-bit levels, between the PNGs in `dir` (in name order: the batch) and
/// diffusers' float images quantised as diffusers' `numpy_to_pil` does (`round(x · 255)`).
fn max_level_diff(dir: &Path, dims: &[usize], expected: &[f32]) -> u8 {
    let names = png_files(dir);
    assert_eq!(names.len(), dims[0], "{names:?}");
    let per_image = dims[1..].iter().product::<usize>();
    let mut worst = 0u8;
    for (i, name) in names.iter().enumerate() {
        let img = image::open(dir.join(name)).unwrap();
        assert_eq!((img.height() as usize, img.width() as usize), (dims[1], dims[2]), "{name}: native size");
        let bytes = if dims[3] == 1 { img.into_luma8().into_raw() } else { img.into_rgb8().into_raw() };
        for (j, &p) in bytes.iter().enumerate() {
            let want = (expected[i * per_image + j] * 255.0).round().clamp(0.0, 255.0) as u8;
            worst = worst.max(p.abs_diff(want));
        }
    }
    worst
}

/// `unet2d sample` on a family fixture's pipeline folder gives diffusers' images within 2 levels.
fn check_family(case: &str, model_index: bool, extra: &[&str]) {
    let (meta, dims, expected) = family_case(case);
    let dir = workdir(&format!("{case}_{model_index}"));
    family_pipeline_folder(&dir.join("pipe"), &meta, model_index);
    let seed = meta["seed"].to_string();
    let mut args = vec!["sample", "--model", "pipe", "--seed", &seed, "--out-dir", "each"];
    args.extend_from_slice(extra);
    let stdout = ok(&unet2d(&dir, &args));
    let worst = max_level_diff(&dir.join("each"), &dims, &expected);
    println!("{case} (model_index.json: {model_index}): max difference {worst}/255; {stdout}");
    assert!(worst <= 2, "{case}: max pixel difference {worst}/255");
}

#[test]
fn score_sde_ve_folders_sample_with_the_predictor_corrector_like_diffusers() {
    check_family("score_sde_ve_ncsnpp_10steps", true, &["--batch", "2", "--steps", "10"]);
    // --correct-steps / --snr rebuild the scheduler from its config: the fixture's own values change
    // nothing, another corrector count changes the images.
    check_family(
        "score_sde_ve_ncsnpp_10steps",
        true,
        &["--batch", "2", "--steps", "10", "--correct-steps", "1", "--snr", "0.16"],
    );
    let (meta, dims, expected) = family_case("score_sde_ve_ncsnpp_10steps");
    let dir = workdir("score_sde_ve_two_corrector_steps");
    family_pipeline_folder(&dir.join("pipe"), &meta, true);
    let args =
        ["sample", "--model", "pipe", "--batch", "2", "--steps", "10", "--correct-steps", "2", "--out-dir", "each"];
    ok(&unet2d(&dir, &args));
    assert!(max_level_diff(&dir.join("each"), &dims, &expected) > 2, "--correct-steps 2 changed nothing");
}

#[test]
fn consistency_folders_sample_in_one_step_or_at_explicit_timesteps_like_diffusers() {
    // ConsistencyModelPipeline's default is one step: no --steps.
    check_family("consistency_onestep", true, &["--class", "0,3,7"]);
    // Without model_index.json the folder would run the general pipeline; --pipeline says which.
    check_family("consistency_onestep", false, &["--class", "0,3,7", "--pipeline", "consistency"]);
    check_family("consistency_multistep_22_0", true, &["--class", "1,2,9,9", "--timesteps", "22,0"]);
}

#[test]
fn a_model_index_naming_an_unknown_pipeline_asks_for_pipeline() {
    let (meta, _, _) = family_case("consistency_onestep");
    let dir = workdir("unknown_pipeline");
    family_pipeline_folder(&dir.join("pipe"), &meta, false);
    std::fs::write(dir.join("pipe/model_index.json"), br#"{"_class_name": "LDMPipeline"}"#).unwrap();
    let line = fails(&unet2d(&dir, &["sample", "--model", "pipe", "--class", "1"]), 1);
    assert!(line.contains("LDMPipeline") && line.contains("--pipeline"), "{line}");
    ok(&unet2d(&dir, &["sample", "--model", "pipe", "--class", "1", "--pipeline", "consistency", "--out", "x.png"]));
}

// ---- inpaint ----

/// The repaint_digits16 fixture's inputs as 8-bit PNGs in `dir`: `digit{k}.png` (real digits 0–9,
/// `image` in [-1, 1] → round((x + 1) / 2 · 255)) and `mask.png` (`mask_image`: the right half 0).
fn write_digit_inputs(dir: &Path) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/family_pipelines/repaint_digits16_50steps.safetensors");
    let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    let to_bytes = |t: &candle_core::Tensor, from_signed: bool| -> Vec<u8> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter()
            .map(|&x| ((if from_signed { (x + 1.0) / 2.0 } else { x }).clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect()
    };
    let images = to_bytes(&tensors["image"], true);
    for k in 0..10 {
        let img = image::GrayImage::from_raw(16, 16, images[k * 256..(k + 1) * 256].to_vec()).unwrap();
        img.save(dir.join(format!("digit{k}.png"))).unwrap();
    }
    let mask = to_bytes(&tensors["mask_image"].get(0).unwrap(), false);
    image::GrayImage::from_raw(16, 16, mask).unwrap().save(dir.join("mask.png")).unwrap();
}

/// RePaint on the shipped digits model, ten real digits with their right half masked out, batched
/// with one generator as the fixture was made: the kept left half comes back as it went in, and the
/// inpainted half is diffusers' within 2 levels (the fixture's inputs are 8-bit values, so writing
/// them as PNG loses nothing).
#[test]
fn inpaint_fills_the_right_half_of_real_digits_like_diffusers() {
    let dir = workdir("inpaint_digits");
    write_digit_inputs(&dir);
    let mut args: Vec<String> = vec!["inpaint".into()];
    for k in 0..10 {
        args.extend(["--image".into(), format!("digit{k}.png")]);
    }
    for flag in ["--mask", "mask.png", "--class", "0,1,2,3,4,5,6,7,8,9", "--steps", "50"] {
        args.push(flag.into());
    }
    for flag in ["--jump-length", "10", "--jump-n-sample", "3", "--seed", "0", "--out-dir", "out"] {
        args.push(flag.into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stdout = ok(&unet2d(&dir, &args));
    assert!(stdout.contains("50 RePaintScheduler steps"), "{stdout}");
    let names = png_files(&dir.join("out"));
    assert_eq!(names[3], "inpainted_003_class3.png");
    for (k, name) in names.iter().enumerate() {
        let out = gray(&dir.join("out").join(name));
        let input = gray(&dir.join(format!("digit{k}.png")));
        for (x, y, p) in out.enumerate_pixels().filter(|(x, _, _)| *x < 8) {
            assert!(p.0[0].abs_diff(input.get_pixel(x, y).0[0]) <= 2, "{name}: kept pixel ({x}, {y}) moved");
        }
    }
    let (_, dims, expected) = family_case("repaint_digits16_50steps");
    let worst = max_level_diff(&dir.join("out"), &dims, &expected);
    println!("repaint_digits16_50steps via inpaint: max difference {worst}/255");
    assert!(worst <= 2, "max pixel difference {worst}/255");

    // One image with three labels is inpainted once per label, into a grid by default.
    let stdout = ok(&unet2d(
        &dir,
        &[
            "inpaint",
            "--image",
            "digit3.png",
            "--mask",
            "mask.png",
            "--class",
            "3,5,8",
            "--steps",
            "10",
            "--jump-n-sample",
            "1",
        ],
    ));
    assert!(stdout.contains("inpainted.png") && stdout.contains("3 images"), "{stdout}");
    assert_eq!(gray(&dir.join("inpainted.png")).dimensions(), (192, 64));
}

#[test]
fn bad_inpaint_inputs_are_one_line_errors() {
    let dir = workdir("inpaint_errors");
    write_digit_inputs(&dir);
    image::GrayImage::new(16, 8).save(dir.join("short_mask.png")).unwrap();
    image::RgbImage::new(16, 16).save(dir.join("rgb.png")).unwrap();
    image::GrayImage::new(15, 15).save(dir.join("odd.png")).unwrap();
    let deep = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::new(16, 16);
    deep.save(dir.join("deep.png")).unwrap();
    std::fs::write(dir.join("text.png"), b"not a png").unwrap();
    let base = ["inpaint", "--steps", "10", "--class", "3"];
    let cases: &[(&[&str], &str)] = &[
        (
            &["--image", "digit3.png", "--mask", "short_mask.png"],
            "short_mask.png is 16x8, but --image digit3.png is 16x16",
        ),
        (&["--image", "rgb.png", "--mask", "mask.png"], "rgb.png is RGB"),
        (&["--image", "deep.png", "--mask", "mask.png"], "16-bit"),
        (&["--image", "odd.png", "--mask", "mask.png"], "odd.png is 15x15"),
        (&["--image", "text.png", "--mask", "mask.png"], "not a PNG"),
        (&["--image", "missing.png", "--mask", "mask.png"], "missing.png"),
        (&["--image", "digit3.png", "--mask", "missing_mask.png"], "missing_mask.png"),
        (&["--image", "digit3.png", "--mask", "mask.png", "--jump-length", "0"], "jump_length"),
        (&["--image", "digit3.png", "--mask", "mask.png", "--class", "10"], "out of range"),
    ];
    for (extra, needle) in cases {
        let args = [&base[..], extra].concat();
        let line = fails(&unet2d(&dir, &args), 1);
        assert!(line.contains(needle), "{args:?}: {line}");
    }
    // No --class for the class-conditional model.
    let line = fails(&unet2d(&dir, &["inpaint", "--steps", "10", "--image", "digit3.png", "--mask", "mask.png"]), 1);
    assert!(line.contains("class-conditional") && line.contains("--class"), "{line}");
    // Counts that disagree are usage errors, as in `sample`.
    let args = ["inpaint", "--image", "digit1.png", "--image", "digit2.png", "--mask", "mask.png", "--class", "1,2,3"];
    let line = fails(&unet2d(&dir, &args), 2);
    assert!(line.contains("--image"), "{line}");
    assert!(!dir.join("inpainted.png").exists(), "nothing is written");
}

// ---- Ctrl-C ----

/// Starts `args` (a long run), sends SIGINT after a moment, and checks the run stops within a few
/// seconds with exit code 130, one `error: interrupted after step …` line and no output file.
#[cfg(unix)]
fn interrupt(dir: &Path, args: &[&str], output: &str) {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let mut child = Command::new(env!("CARGO_BIN_EXE_unet2d"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Time to load the embedded model and take a few steps (a run takes many seconds).
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "the run ended before it was interrupted");
    let sent = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    while child.try_wait().unwrap().is_none() {
        if sent.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("{args:?}: still running 10 s after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let line = fails(&out, 130);
    assert!(line.starts_with("error: interrupted after step ") && line.ends_with("; nothing written"), "{line}");
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(output))
        .collect();
    assert!(leftovers.is_empty(), "{args:?} left {leftovers:?}");
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_sample_and_inpaint_and_writes_nothing() {
    let dir = workdir("ctrl_c");
    // DDPMPipeline's 1000 steps on the shipped model.
    interrupt(&dir, &["sample", "--out", "never.png"], "never.png");
    write_digit_inputs(&dir);
    // 250 steps with jumps: 2,500 entries.
    let args =
        ["inpaint", "--image", "digit3.png", "--mask", "mask.png", "--class", "3", "--out", "never_inpainted.png"];
    interrupt(&dir, &args, "never_inpainted.png");
}
