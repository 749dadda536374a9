//! The model API beside loading: `from_config` (a freshly initialised model, as torch initialises
//! diffusers' `UNet2DModel(**config)`), `load_state_dict` and `to`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_unet2d::loading::weights::modern_name;
use candle_unet2d::{Error, InitOptions, LoadOptions, SaveOptions, Timestep, UNet2DConfig, UNet2DModel};

fn config(json: &str) -> UNet2DConfig {
    UNet2DConfig::from_json_str(json, Path::new("test config")).unwrap()
}

fn fresh(config: &UNet2DConfig, seed: u64) -> UNet2DModel {
    UNet2DModel::from_config(config.clone(), &InitOptions { seed, ..InitOptions::default() }).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("candle-unet2d-model-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The forward on fixture `dir`'s inputs (the timestep as a tensor, whatever case.json says: only
/// model-to-model comparisons are made here).
fn forward(model: &UNet2DModel, dir: &Path) -> Tensor {
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    model.forward(&expected["sample"], Timestep::Tensor(&expected["timestep"]), expected.get("class_labels")).unwrap()
}

fn assert_same(a: &Tensor, b: &Tensor, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let (x, y) = (values(a), values(b));
    let differing = x.iter().zip(&y).filter(|(p, q)| p.to_bits() != q.to_bits()).count();
    assert_eq!(differing, 0, "{what}: {differing} of {} values differ", x.len());
}

fn state_map(model: &UNet2DModel) -> BTreeMap<String, Tensor> {
    model.state_dict().unwrap().into_iter().collect()
}

/// A fresh model has exactly the tensors (names and shapes) of the checkpoint diffusers wrote for the
/// same config, so its parameter count is diffusers' too.
#[test]
fn from_config_has_diffusers_tensors_and_shapes() {
    for case in ["cifar10_like", "ncsnpp_like", "learned_time", "consistency_like", "class_timestep"] {
        let dir = common::fixture(&format!("unet2d/{case}"));
        let config = UNet2DConfig::from_file(&dir.join("config.json")).unwrap();
        let model = fresh(&config, 0);
        let ours: BTreeMap<String, Vec<usize>> =
            model.state_dict().unwrap().into_iter().map(|(n, t)| (n, t.dims().to_vec())).collect();
        let file =
            candle_core::safetensors::load(dir.join("diffusion_pytorch_model.safetensors"), &Device::Cpu).unwrap();
        let theirs: BTreeMap<String, Vec<usize>> = file
            .into_iter()
            .map(|(n, t)| (modern_name(&n), t.dims().to_vec()))
            .filter(|(n, _)| n != "time_proj.W")
            .collect();
        assert_eq!(ours, theirs, "{case}");
        let count: usize = theirs.values().map(|s| s.iter().product::<usize>()).sum();
        assert_eq!(candle_unet2d::stats::num_parameters(model.config()).unwrap(), count, "{case}");
        assert_eq!((model.dtype(), model.device().is_cpu()), (DType::F32, true));
    }
}

/// Mean and standard deviation.
fn moments(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Every tensor is initialised as torch's constructors initialise it, judged by name and shape
/// independently of the crate: group norms 1 and 0; conv and linear weights U(±1/√fan_in) (so
/// std 1/√(3·fan_in)), their biases U(±1/√fan_in) with the weight's fan_in; nn.Embedding N(0, 1);
/// the Fourier projection N(0, 16²).
#[test]
fn from_config_initialises_as_torch_does() {
    let with_tables = config(
        r#"{"block_out_channels": [64, 128], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
            "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "layers_per_block": 1, "attention_head_dim": 32,
            "time_embedding_type": "learned", "num_train_timesteps": 1000, "num_class_embeds": 10}"#,
    );
    let fourier = config(
        r#"{"block_out_channels": [128, 128], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
            "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "layers_per_block": 1, "attention_head_dim": 32,
            "time_embedding_type": "fourier"}"#,
    );
    let mut checked = [0usize; 5];
    for (config, embeddings) in [
        (&with_tables, vec![("time_proj.weight", 1.0), ("class_embedding.weight", 1.0)]),
        (&fourier, vec![("time_proj.weight", 16.0)]),
    ] {
        let state = state_map(&fresh(config, 3));
        for (name, tensor) in &state {
            let v = values(tensor);
            let n = v.len();
            let (mean, std) = moments(&v);
            let is_norm = name.split('.').any(|p| p.contains("norm"));
            if let Some((_, scale)) = embeddings.iter().find(|(e, _)| e == name) {
                // The standard error of a standard deviation is about std/√(2n): allow 4 of them.
                let tolerance = 4.0 / (2.0 * n as f64).sqrt();
                assert!((std / scale - 1.0).abs() < tolerance, "{name}: std {std}, expected {scale}");
                assert!(mean.abs() < 4.0 * scale / (n as f64).sqrt(), "{name}: mean {mean}");
                checked[0] += 1;
            } else if is_norm && name.ends_with(".weight") {
                assert!(v.iter().all(|&x| x == 1.0), "{name}: a norm weight is 1");
                checked[1] += 1;
            } else if is_norm {
                assert!(v.iter().all(|&x| x == 0.0), "{name}: a norm bias is 0");
                checked[2] += 1;
            } else {
                let weight = if name.ends_with(".bias") {
                    let stem = name.strip_suffix(".bias").unwrap();
                    state[&format!("{stem}.weight")].dims().to_vec()
                } else {
                    tensor.dims().to_vec()
                };
                assert!(weight.len() >= 2, "{name}: a layer weight has rank ≥ 2, got {weight:?}");
                let fan_in: usize = weight[1..].iter().product();
                let bound = 1.0 / (fan_in as f64).sqrt();
                let max = v.iter().map(|x| f64::from(x.abs())).fold(0.0, f64::max);
                assert!(max <= bound * (1.0 + 1e-6), "{name}: |x| up to {max}, bound {bound}");
                if n >= 64 {
                    assert!(max > 0.8 * bound, "{name}: |x| only up to {max}, bound {bound}");
                }
                if n >= 1000 {
                    let expected = bound / 3f64.sqrt();
                    assert!((std / expected - 1.0).abs() < 0.05, "{name}: std {std}, expected {expected}");
                    assert!(mean.abs() < 4.0 * expected / (n as f64).sqrt(), "{name}: mean {mean}");
                }
                checked[if name.ends_with(".bias") { 4 } else { 3 }] += 1;
            }
        }
    }
    assert!(checked.iter().all(|&c| c > 0), "every kind of tensor was seen: {checked:?}");
}

/// One seed, one model (and `with_random_weights` is `from_config`); another seed, another model.
#[test]
fn from_config_is_deterministic_per_seed() {
    let dir = common::fixture("unet2d/cifar10_like");
    let config = UNet2DConfig::from_file(&dir.join("config.json")).unwrap();
    let (a, b) = (fresh(&config, 11), fresh(&config, 11));
    let c = UNet2DModel::with_random_weights(config.clone(), &Device::Cpu, DType::F32, 11).unwrap();
    let d = fresh(&config, 12);
    let (sa, sb, sc, sd) = (state_map(&a), state_map(&b), state_map(&c), state_map(&d));
    for (name, t) in &sa {
        assert_same(t, &sb[name], name);
        assert_same(t, &sc[name], name);
    }
    assert_same(&forward(&a, &dir), &forward(&b, &dir), "same seed");
    let w = "down_blocks.0.resnets.0.conv1.weight";
    assert_ne!(values(&sa[w]), values(&sd[w]), "another seed draws other weights");
    // Different tensors of one model draw different numbers.
    assert_ne!(values(&sa[w])[..16], values(&sa["down_blocks.0.resnets.0.conv2.weight"])[..16]);
    let bad = UNet2DModel::from_config(config, &InitOptions { dtype: DType::BF16, ..InitOptions::default() });
    assert!(matches!(bad, Err(Error::Unsupported(_))), "{bad:?}");
}

/// A fresh model given a loaded model's state dict computes exactly what the loaded model does, saves
/// it, and reloads to the same; the fresh model itself is unchanged.
#[test]
fn load_state_dict_round_trip_reproduces_the_forward() {
    let dir = common::fixture("unet2d/consistency_like");
    let loaded = UNet2DModel::from_pretrained(&dir, &LoadOptions::default()).unwrap();
    let config = loaded.config().clone();
    let model = fresh(&config, 5);
    let before = forward(&model, &dir);
    let (replaced, keys) = model.load_state_dict(loaded.state_dict().unwrap(), true).unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    let expected = forward(&loaded, &dir);
    assert_same(&forward(&replaced, &dir), &expected, "loaded weights");
    assert_same(&forward(&model, &dir), &before, "the original model is unchanged");
    assert!(common::max_abs_diff(&before, &expected).0 > 0.0);

    let out = scratch("round-trip");
    replaced.save_pretrained(&out, &SaveOptions::default()).unwrap();
    let reloaded = UNet2DModel::from_pretrained(&out, &LoadOptions::default()).unwrap();
    assert_same(&forward(&reloaded, &dir), &expected, "saved and reloaded");

    // A model loaded from files keeps its config.json (every key as read) through load_state_dict.
    let (again, _) = loaded.load_state_dict(fresh(&config, 1).state_dict().unwrap(), true).unwrap();
    again.save_pretrained(&out, &SaveOptions::default()).unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["_name_or_path"], serde_json::Value::String(dir.to_string_lossy().into_owned()));
    std::fs::remove_dir_all(&out).unwrap();
}

/// Float64 (and float16) tensors are converted to the model's dtype, as torch's copy does.
#[test]
fn load_state_dict_converts_dtypes() {
    let config = UNet2DConfig::from_file(&common::fixture("unet2d/cifar10_like/config.json")).unwrap();
    let source = state_map(&fresh(&config, 2));
    let wide: Vec<(String, Tensor)> =
        source.iter().map(|(n, t)| (n.clone(), t.to_dtype(DType::F64).unwrap())).collect();
    let (model, _) = fresh(&config, 9).load_state_dict(wide, true).unwrap();
    for (name, t) in state_map(&model) {
        assert_eq!(t.dtype(), DType::F32);
        assert_same(&t, &source[&name], &name);
    }
    let half: Vec<(String, Tensor)> =
        source.iter().map(|(n, t)| (n.clone(), t.to_dtype(DType::F16).unwrap())).collect();
    let (model, _) = fresh(&config, 9).load_state_dict(half, true).unwrap();
    let name = "conv_in.weight";
    assert_same(&state_map(&model)[name], &source[name].to_dtype(DType::F16).unwrap(), "via float16");
}

/// `strict` refuses missing and unexpected names and wrong shapes, listing every one; without it
/// the rest loads (missing tensors keep their values) and the names come back, but a wrong shape is
/// still refused.
#[test]
fn load_state_dict_strict_and_non_strict() {
    let config = UNet2DConfig::from_file(&common::fixture("unet2d/cifar10_like/config.json")).unwrap();
    let model = fresh(&config, 4);
    let source = state_map(&fresh(&config, 6));
    let own = state_map(&model);
    let mut partial = source.clone();
    partial.remove("conv_in.bias");
    partial.remove("mid_block.attentions.0.to_q.weight");
    partial.insert("not_a_tensor.weight".into(), Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap());

    let err = model.load_state_dict(partial.clone(), true).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{text}");
    for name in ["conv_in.bias", "mid_block.attentions.0.to_q.weight", "not_a_tensor.weight", "Missing", "Unexpected"] {
        assert!(text.contains(name), "{name} in: {text}");
    }

    let (loaded, keys) = model.load_state_dict(partial.clone(), false).unwrap();
    assert_eq!(keys.missing_keys, ["conv_in.bias", "mid_block.attentions.0.to_q.weight"]);
    assert_eq!(keys.unexpected_keys, ["not_a_tensor.weight"]);
    let state = state_map(&loaded);
    assert_same(&state["conv_in.bias"], &own["conv_in.bias"], "a missing tensor keeps its value");
    assert_same(&state["conv_in.weight"], &source["conv_in.weight"], "a given tensor is loaded");

    let mut wrong = partial;
    wrong.insert("conv_out.weight".into(), Tensor::zeros((3, 16, 1, 1), DType::F32, &Device::Cpu).unwrap());
    for strict in [true, false] {
        let text = model.load_state_dict(wrong.clone(), strict).unwrap_err().to_string();
        assert!(text.contains("size mismatch for conv_out.weight"), "{text}");
        assert!(text.contains("[3, 16, 1, 1]") && text.contains("[3, 16, 3, 3]"), "{text}");
        assert_eq!(text.contains("not_a_tensor.weight"), strict, "{text}");
    }
}

/// `to(F16)` computes close to float32; back to float32 it keeps float16's rounding (as torch);
/// a converted model saves in its dtype; bfloat16 on the CPU is refused as loading refuses it.
#[test]
fn to_converts_dtype() {
    let dir = common::fixture("unet2d/cifar10_like");
    let model = UNet2DModel::from_pretrained(&dir, &LoadOptions::default()).unwrap();
    let reference = forward(&model, &dir);
    let half = model.to(&Device::Cpu, DType::F16).unwrap();
    assert_eq!(half.dtype(), DType::F16);
    let out = forward(&half, &dir);
    assert_eq!(out.dtype(), DType::F16);
    common::assert_close(&out, &reference, 1e-2, "float16");

    let back = half.to(&Device::Cpu, DType::F32).unwrap();
    let name = "down_blocks.1.attentions.0.to_k.weight";
    let rounded = state_map(&model)[name].to_dtype(DType::F16).unwrap().to_dtype(DType::F32).unwrap();
    assert_same(&state_map(&back)[name], &rounded, "float32 → float16 → float32");
    assert_same(&forward(&model.to(&Device::Cpu, DType::F32).unwrap(), &dir), &reference, "no change");

    let saved = scratch("to-f16");
    half.save_pretrained(&saved, &SaveOptions::default()).unwrap();
    let file = candle_core::safetensors::load(saved.join("diffusion_pytorch_model.safetensors"), &Device::Cpu).unwrap();
    assert!(file.values().all(|t| t.dtype() == DType::F16));
    let options = LoadOptions { dtype: DType::F16, ..LoadOptions::default() };
    let reloaded = UNet2DModel::from_pretrained(&saved, &options).unwrap();
    assert_same(&forward(&reloaded, &dir), &out, "saved in float16");
    std::fs::remove_dir_all(&saved).unwrap();

    let bf16 = model.to(&Device::Cpu, DType::BF16);
    assert!(matches!(bf16, Err(Error::Unsupported(_))), "{bf16:?}");
    let f64 = model.to(&Device::Cpu, DType::F64);
    assert!(matches!(f64, Err(Error::InvalidArgument { .. })), "{f64:?}");
}
