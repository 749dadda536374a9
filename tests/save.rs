//! `UNet2DModel::save_pretrained` and `state_dict`: what is saved loads back into the same model (the
//! same forward outputs, bit for bit), under diffusers' names and files, for every fixture (each
//! `tests/fixtures/unet2d/<case>`, written by diffusers 0.42.1) and for models without a checkpoint.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_unet2d::loading::weights::modern_name;
use candle_unet2d::saving::parse_shard_size;
use candle_unet2d::{Error, LoadOptions, SaveOptions, Timestep, UNet2DConfig, UNet2DModel};

/// A fresh, empty scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("candle-unet2d-save-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn case_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap()
}

fn variant_of(dir: &Path) -> Option<String> {
    (case_json(dir)["weights_format"] == "fp16").then(|| "fp16".to_string())
}

/// The forward of `model` on fixture `dir`'s inputs, called as `case.json` says diffusers was.
fn forward(model: &UNet2DModel, dir: &Path) -> Tensor {
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let t = &expected["timestep"];
    let value = t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] as f64;
    let timestep = match case_json(dir)["timestep_kind"].as_str().unwrap() {
        "int" | "float" => Timestep::Int(value.trunc() as i64),
        _ => Timestep::Tensor(t),
    };
    model.forward(&expected["sample"], timestep, expected.get("class_labels")).unwrap()
}

/// Asserts two tensors hold the same bits.
fn assert_bitwise(a: &Tensor, b: &Tensor, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    assert_eq!(a.dtype(), b.dtype(), "{what}: dtypes");
    let bits = |t: &Tensor| -> Vec<u32> {
        let flat = t.flatten_all().unwrap();
        match t.dtype() {
            DType::F16 => flat.to_vec1::<half::f16>().unwrap().iter().map(|v| u32::from(v.to_bits())).collect(),
            _ => flat.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect(),
        }
    };
    let (x, y) = (bits(a), bits(b));
    let differing = x.iter().zip(&y).filter(|(p, q)| p != q).count();
    assert_eq!(differing, 0, "{what}: {differing} of {} values differ", x.len());
}

/// The tensor names and dtypes in a safetensors file's header, and its metadata.
fn header(path: &Path) -> (BTreeMap<String, String>, serde_json::Value) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut tensors = BTreeMap::new();
    let mut metadata = serde_json::Value::Null;
    for (name, info) in header {
        if name == "__metadata__" {
            metadata = info;
        } else {
            tensors.insert(name, info["dtype"].as_str().unwrap().to_string());
        }
    }
    (tensors, metadata)
}

/// The names of the weights file diffusers wrote for a fixture, renamed as diffusers renames them on load.
fn fixture_names(dir: &Path) -> BTreeSet<String> {
    let file = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("diffusion_pytorch_model"))
        .unwrap();
    let names: Vec<String> = if file.extension().unwrap() == "bin" {
        candle_core::pickle::read_all(&file).unwrap().into_iter().map(|(n, _)| n).collect()
    } else {
        header(&file).0.into_keys().collect()
    };
    names.iter().map(|n| modern_name(n)).filter(|n| n != "time_proj.W").collect()
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Every fixture: load as diffusers wrote it, save, load the save: the same output bits, the same
/// (modern) tensor names as the fixture's file, and `config.json` as diffusers writes it (the
/// fixture's own, which diffusers wrote for a model it built, plus the `_name_or_path` that
/// `from_pretrained` records). A float32 safetensors fixture is written back byte for byte.
#[test]
fn every_fixture_saves_and_loads_back_bit_for_bit() {
    let cases = common::cases("unet2d");
    assert!(cases.len() >= 17, "expected the 17 fixture cases, found {}", cases.len());
    let out = scratch("fixtures");
    for dir in cases {
        let case = dir.file_name().unwrap().to_string_lossy().into_owned();
        let variant = variant_of(&dir);
        let options = LoadOptions { variant: variant.clone(), ..LoadOptions::default() };
        let model = UNet2DModel::from_pretrained(&dir, &options).unwrap();
        let saved = out.join(&case);
        let save_options = SaveOptions { variant: variant.clone(), ..SaveOptions::default() };
        model.save_pretrained(&saved, &save_options).unwrap_or_else(|e| panic!("{case}: {e}"));

        let weights = match &variant {
            Some(v) => format!("diffusion_pytorch_model.{v}.safetensors"),
            None => "diffusion_pytorch_model.safetensors".to_string(),
        };
        assert_eq!(file_names(&saved), ["config.json".to_string(), weights.clone()], "{case}");
        let (tensors, metadata) = header(&saved.join(&weights));
        assert_eq!(metadata, serde_json::json!({"format": "pt"}), "{case}");
        assert_eq!(tensors.keys().cloned().collect::<BTreeSet<_>>(), fixture_names(&dir), "{case}: names");
        let names: BTreeSet<String> = model.state_dict_shapes().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, fixture_names(&dir), "{case}: state_dict names");

        let config = std::fs::read_to_string(saved.join("config.json")).unwrap();
        let name_line = format!("  \"_name_or_path\": {},\n", serde_json::to_string(&dir.to_string_lossy()).unwrap());
        assert!(config.contains(&name_line), "{case}: {config}");
        let original = std::fs::read_to_string(dir.join("config.json")).unwrap();
        assert_eq!(config.replacen(&name_line, "", 1), original, "{case}: config.json");

        let format = case_json(&dir)["weights_format"].as_str().unwrap().to_string();
        if format == "safetensors" {
            let original = std::fs::read(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
            assert!(std::fs::read(saved.join(&weights)).unwrap() == original, "{case}: weights file bytes");
        }

        let reloaded = UNet2DModel::from_pretrained(&saved, &options).unwrap();
        assert_bitwise(&forward(&reloaded, &dir), &forward(&model, &dir), &case);
    }
    std::fs::remove_dir_all(&out).unwrap();
}

/// The legacy attention names (`query`, `key`, `value`, `proj_attn`) are saved under today's names.
#[test]
fn a_legacy_checkpoint_is_saved_under_modern_names() {
    let dir = common::fixture("unet2d/legacy_attention_names");
    let (stored, _) = header(&dir.join("diffusion_pytorch_model.safetensors"));
    assert!(stored.keys().any(|n| n.ends_with(".query.weight")), "the fixture has legacy names");
    let model = UNet2DModel::from_pretrained(&dir, &LoadOptions::default()).unwrap();
    let state = model.state_dict().unwrap();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.iter().any(|n| n.ends_with(".to_q.weight")) && names.iter().all(|n| !n.contains(".query.")));
    // Each value is the file's tensor.
    let file = candle_core::safetensors::load(dir.join("diffusion_pytorch_model.safetensors"), &Device::Cpu).unwrap();
    let by_modern: BTreeMap<String, &Tensor> = file.iter().map(|(n, t)| (modern_name(n), t)).collect();
    for (name, tensor) in &state {
        assert_bitwise(tensor, by_modern[name], name);
    }
}

/// `state_dict` lists diffusers' order: `conv_in` first, then the time embedding, …, `conv_out` last;
/// in the model's dtype, on the CPU.
#[test]
fn state_dict_is_in_diffusers_order_and_the_models_dtype() {
    let dir = common::fixture("unet2d/ddpm_default_blocks");
    let options = LoadOptions { dtype: DType::F16, ..LoadOptions::default() };
    let model = UNet2DModel::from_pretrained(&dir, &options).unwrap();
    let state = model.state_dict().unwrap();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(&names[..2], ["conv_in.weight", "conv_in.bias"]);
    assert_eq!(names[2], "time_embedding.linear_1.weight");
    assert_eq!(
        &names[names.len() - 4..],
        ["conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight", "conv_out.bias"]
    );
    assert!(state.iter().all(|(_, t)| t.dtype() == DType::F16 && t.device().is_cpu()));
    let shapes = model.state_dict_shapes().unwrap();
    assert!(state.iter().zip(&shapes).all(|((n, t), (m, s))| n == m && t.dims() == s.as_slice()));
}

/// A float16 model saves float16 weights (the model's dtype), which load back to the same model.
#[test]
fn a_float16_model_saves_float16_and_loads_back_bit_for_bit() {
    let dir = common::fixture("unet2d/ddpm_default_blocks");
    let options = LoadOptions { dtype: DType::F16, ..LoadOptions::default() };
    let model = UNet2DModel::from_pretrained(&dir, &options).unwrap();
    let out = scratch("f16");
    model.save_pretrained(&out, &SaveOptions::default()).unwrap();
    let (tensors, _) = header(&out.join("diffusion_pytorch_model.safetensors"));
    assert!(tensors.values().all(|d| d == "F16"), "{tensors:?}");
    let reloaded = UNet2DModel::from_pretrained(&out, &options).unwrap();
    assert_bitwise(&forward(&reloaded, &dir), &forward(&model, &dir), "f16");
    std::fs::remove_dir_all(&out).unwrap();
}

/// A variant names the file (`diffusion_pytorch_model.fp16.safetensors`), and loads with that variant.
#[test]
fn a_variant_is_saved_under_its_name() {
    let dir = common::fixture("unet2d/cifar10_like");
    let model = UNet2DModel::from_pretrained(&dir, &LoadOptions::default()).unwrap();
    let out = scratch("variant");
    let options = SaveOptions { variant: Some("ema".into()), ..SaveOptions::default() };
    model.save_pretrained(&out, &options).unwrap();
    assert_eq!(file_names(&out), ["config.json", "diffusion_pytorch_model.ema.safetensors"]);
    let load = LoadOptions { variant: Some("ema".into()), ..LoadOptions::default() };
    let reloaded = UNet2DModel::from_pretrained(&out, &load).unwrap();
    assert_bitwise(&forward(&reloaded, &dir), &forward(&model, &dir), "variant");
    assert!(UNet2DModel::from_pretrained(&out, &LoadOptions::default()).is_err(), "no plain weights file");
    let bad = SaveOptions { variant: Some("../x".into()), ..SaveOptions::default() };
    let err = model.save_pretrained(&out, &bad).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("variant"), "{err}");
    std::fs::remove_dir_all(&out).unwrap();
}

/// Past `max_shard_size` the weights are split as huggingface_hub splits them, with diffusers' index;
/// the shards load back. A later unsharded save into the folder removes the shards (as diffusers does).
#[test]
fn a_small_max_shard_size_writes_shards_and_an_index_that_load_back() {
    let dir = common::fixture("unet2d/cifar10_like");
    let model = UNet2DModel::from_pretrained(&dir, &LoadOptions::default()).unwrap();
    let out = scratch("shards");
    let max = parse_shard_size("40KB").unwrap();
    assert_eq!(max, 40_000);
    for variant in [None, Some("fp16".to_string())] {
        let options = SaveOptions { variant: variant.clone(), max_shard_size: max };
        model.save_pretrained(&out, &options).unwrap();
        let infix = variant.as_ref().map(|v| format!(".{v}")).unwrap_or_default();
        let index_name = format!("diffusion_pytorch_model.safetensors.index{infix}.json");
        let index: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(&index_name)).unwrap()).unwrap();
        let weight_map = index["weight_map"].as_object().unwrap();
        let shards: BTreeSet<&str> = weight_map.values().map(|v| v.as_str().unwrap()).collect();
        assert!(shards.len() > 2, "{shards:?}");
        let n = shards.len();
        for (i, shard) in shards.iter().enumerate() {
            assert_eq!(*shard, format!("diffusion_pytorch_model{infix}-{:05}-of-{n:05}.safetensors", i + 1));
            let (tensors, metadata) = header(&out.join(shard));
            assert_eq!(metadata, serde_json::json!({"format": "pt"}));
            let file = std::fs::read(out.join(shard)).unwrap();
            let bytes = file.len() as u64 - 8 - u64::from_le_bytes(file[..8].try_into().unwrap());
            assert!(bytes <= max || tensors.len() == 1, "{shard}: {bytes} bytes in {} tensors", tensors.len());
            assert!(tensors.keys().all(|t| weight_map[t] == **shard));
        }
        let shapes = model.state_dict_shapes().unwrap();
        assert_eq!(weight_map.len(), shapes.len());
        let total: usize = shapes.iter().map(|(_, s)| s.iter().product::<usize>() * 4).sum();
        assert_eq!(index["metadata"]["total_size"], serde_json::json!(total));
        // The index is written as diffusers writes it: sorted, two-space indented, one newline.
        let text = std::fs::read_to_string(out.join(&index_name)).unwrap();
        assert!(text.starts_with("{\n  \"metadata\": {\n    \"total_size\": ") && text.ends_with("}\n"));

        let load = LoadOptions { variant: variant.clone(), ..LoadOptions::default() };
        let reloaded = UNet2DModel::from_pretrained(&out, &load).unwrap();
        assert_bitwise(&forward(&reloaded, &dir), &forward(&model, &dir), "shards");
    }
    // Unsharded, no variant: every shard of both earlier saves goes (diffusers' pattern matches the
    // variant's shards too); the indexes stay, as in diffusers; the single file wins when loading.
    model.save_pretrained(&out, &SaveOptions::default()).unwrap();
    assert_eq!(
        file_names(&out),
        [
            "config.json",
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.safetensors.index.fp16.json",
            "diffusion_pytorch_model.safetensors.index.json"
        ]
    );
    let reloaded = UNet2DModel::from_pretrained(&out, &LoadOptions::default()).unwrap();
    assert_bitwise(&forward(&reloaded, &dir), &forward(&model, &dir), "after the shards");
    std::fs::remove_dir_all(&out).unwrap();
}

/// A random model saves the weights it computes with (each regenerated from the seed), and two
/// random models from one seed are the same model.
#[test]
fn a_random_weights_model_saves_and_loads_back_bit_for_bit() {
    let dir = common::fixture("unet2d/cifar10_like");
    let config = UNet2DConfig::from_file(&dir.join("config.json")).unwrap();
    let model = UNet2DModel::with_random_weights(config.clone(), &Device::Cpu, DType::F32, 7).unwrap();
    let again = UNet2DModel::with_random_weights(config.clone(), &Device::Cpu, DType::F32, 7).unwrap();
    assert_bitwise(&forward(&again, &dir), &forward(&model, &dir), "same seed");
    let other = UNet2DModel::with_random_weights(config.clone(), &Device::Cpu, DType::F32, 8).unwrap();
    let (a, b) = (forward(&other, &dir), forward(&model, &dir));
    assert!(common::max_abs_diff(&a, &b).0 > 0.0, "another seed is another model");

    let out = scratch("random");
    model.save_pretrained(&out, &SaveOptions::default()).unwrap();
    let reloaded = UNet2DModel::from_pretrained(&out, &LoadOptions::default()).unwrap();
    assert_bitwise(&forward(&reloaded, &dir), &forward(&model, &dir), "random");
    // Its config is the struct's, with diffusers' metadata and no _name_or_path.
    let saved = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert_eq!(saved, std::fs::read_to_string(dir.join("config.json")).unwrap());
    std::fs::remove_dir_all(&out).unwrap();
}

/// A model built from an in-memory safetensors image saves (the image is its origin).
#[test]
fn a_model_from_bytes_saves_and_loads_back_bit_for_bit() {
    let dir = common::fixture("unet2d/class_identity");
    let config = UNet2DConfig::from_file(&dir.join("config.json")).unwrap();
    let bytes = std::fs::read(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let model =
        UNet2DModel::from_safetensors_bytes(config, bytes, Path::new("embedded.safetensors"), &LoadOptions::default())
            .unwrap();
    let out = scratch("bytes");
    model.save_pretrained(&out, &SaveOptions::default()).unwrap();
    let reloaded = UNet2DModel::from_pretrained(&out, &LoadOptions::default()).unwrap();
    assert_bitwise(&forward(&reloaded, &dir), &forward(&model, &dir), "bytes");
    std::fs::remove_dir_all(&out).unwrap();
}

/// Saving over the folder the model was loaded from works, and so does saving again after that (the
/// model then reads its weights from the files it wrote).
#[test]
fn a_model_saves_over_its_own_folder_repeatedly() {
    let work = scratch("own");
    let dir = common::fixture("unet2d/ncsnpp_like");
    for name in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(dir.join(name), work.join(name)).unwrap();
    }
    let model = UNet2DModel::from_pretrained(&work, &LoadOptions::default()).unwrap();
    let sharded = SaveOptions { max_shard_size: 100_000, ..SaveOptions::default() };
    model.save_pretrained(&work, &sharded).unwrap();
    // diffusers removes earlier shards only, so the original single file stays beside the shards.
    assert!(work.join("diffusion_pytorch_model.safetensors.index.json").exists());
    assert!(work.join("diffusion_pytorch_model.safetensors").exists());
    model.save_pretrained(&work, &SaveOptions::default()).unwrap();
    model.save_pretrained(&work, &SaveOptions::default()).unwrap();
    let reloaded = UNet2DModel::from_pretrained(&work, &LoadOptions::default()).unwrap();
    assert_bitwise(&forward(&reloaded, &dir), &forward(&model, &dir), "own folder");
    std::fs::remove_dir_all(&work).unwrap();
}

/// A checkpoint file replaced after loading is no longer the model's weights: saving refuses, naming it.
#[test]
fn a_checkpoint_changed_after_loading_is_refused() {
    let work = scratch("changed");
    let dir = common::fixture("unet2d/cifar10_like");
    for name in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(dir.join(name), work.join(name)).unwrap();
    }
    let model = UNet2DModel::from_pretrained(&work, &LoadOptions::default()).unwrap();
    // Replaced by another file (a new inode), same contents even.
    let weights = work.join("diffusion_pytorch_model.safetensors");
    std::fs::copy(&weights, work.join("copy")).unwrap();
    std::fs::rename(work.join("copy"), &weights).unwrap();
    let err = model.save_pretrained(work.join("out"), &SaveOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Weights { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("diffusion_pytorch_model.safetensors") && msg.contains("since the model was loaded"), "{msg}");
    assert!(model.state_dict().is_err());
    std::fs::remove_dir_all(&work).unwrap();
}

/// A save path that is a file is refused, naming it; a model without an origin is refused.
#[test]
fn bad_destinations_and_unknown_origins_are_refused() {
    let work = scratch("refused");
    let dir = common::fixture("unet2d/cifar10_like");
    let model = UNet2DModel::from_pretrained(&dir, &LoadOptions::default()).unwrap();
    let file = work.join("a_file");
    std::fs::write(&file, "x").unwrap();
    let err = model.save_pretrained(&file, &SaveOptions::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(err.to_string().contains("a_file") && err.to_string().contains("is a file"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");

    let config = UNet2DConfig::from_file(&dir.join("config.json")).unwrap();
    let vb = candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu);
    let built = UNet2DModel::new(config, vb).unwrap();
    let err = built.save_pretrained(work.join("out"), &SaveOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)) && err.to_string().contains("VarBuilder"), "{err}");
    assert!(!work.join("out").join("config.json").exists(), "nothing written");
    std::fs::remove_dir_all(&work).unwrap();
}
