//! Bad input never crashes: every malformed config, weights file, argument and command line is answered
//! by a named [`candle_unet2d::Error`] variant whose message names the problem — no panic, no abort, and
//! nothing in an untrusted file is ever executed.
//!
//! Table-driven: each table runs every case (a panic is caught and reported as that case's failure)
//! and fails once, listing every case that did not get its expected error. Cases that show a known
//! library bug are separate tests named after the bug (see the end of the file), so the tables stay
//! green while those are open.
//!
//! Model folders are built in `CARGO_TARGET_TMPDIR/bad_input/<case>`: a copy of a fixture from
//! `tests/fixtures/unet2d/` with `config.json` or the weights edited.
//!
//! Run: `cargo test --release --test bad_input` (add `--features cli` for the command-line cases).

mod common;

use std::any::Any;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_unet2d::device::{parse_device, parse_dtype};
use candle_unet2d::{Error, LoadOptions, UNet2DConfig, UNet2DModel};
use serde_json::{json, Value};

// --- expectations -------------------------------------------------------------------------------------

/// The `candle_unet2d::Error` variant a case must end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    InvalidConfig,
    ConfigParse,
    InvalidArgument,
    NotFound,
    Weights,
    MissingTensor,
    ShapeMismatch,
    Unsupported,
    Io,
    TooLarge,
    Hub,
}

fn variant_of(err: &Error) -> Option<Variant> {
    Some(match err {
        Error::InvalidConfig { .. } => Variant::InvalidConfig,
        Error::ConfigParse { .. } => Variant::ConfigParse,
        Error::InvalidArgument { .. } => Variant::InvalidArgument,
        Error::NotFound { .. } => Variant::NotFound,
        Error::Weights { .. } => Variant::Weights,
        Error::MissingTensor { .. } => Variant::MissingTensor,
        Error::ShapeMismatch { .. } => Variant::ShapeMismatch,
        Error::Unsupported(_) => Variant::Unsupported,
        Error::Io { .. } => Variant::Io,
        Error::TooLarge { .. } => Variant::TooLarge,
        Error::Hub(_) => Variant::Hub,
        // `Error` is non-exhaustive: a variant added later is "not one of these" until named here.
        _ => return None,
    })
}

/// What a case must give.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This error variant, with this text somewhere in its message.
    Err(Variant, &'static str),
    /// Success (the input is unusual but valid: NaN samples, float64 arrays, …).
    Ok,
}

/// Checks `result` against `expect`; `Err` describes the mismatch.
fn check<T>(result: candle_unet2d::Result<T>, expect: Expect) -> Result<(), String> {
    match (result, expect) {
        (Ok(_), Expect::Ok) => Ok(()),
        (Ok(_), Expect::Err(v, needle)) => Err(format!("succeeded; expected {v:?} mentioning {needle:?}")),
        (Err(e), Expect::Ok) => Err(format!("failed: {e}")),
        (Err(e), Expect::Err(v, needle)) => {
            let message = e.to_string();
            match variant_of(&e) {
                Some(found) if found == v && message.contains(needle) => Ok(()),
                Some(found) if found == v => {
                    Err(format!("{v:?} as expected, but the message lacks {needle:?}: {message}"))
                }
                found => Err(format!("expected {v:?} ({needle:?}), got {found:?}: {message}")),
            }
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".into())
}

/// Runs every `(name, case)`; a panic counts as that case's failure. Fails listing every failure.
fn run_table<C>(table: &str, cases: &[(&str, C)], run: impl Fn(&str, &C) -> Result<(), String>) {
    let mut failures = Vec::new();
    for (name, case) in cases {
        match catch_unwind(AssertUnwindSafe(|| run(name, case))) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => failures.push(format!("  {name}: {why}")),
            Err(payload) => failures.push(format!("  {name}: PANICKED: {}", panic_message(payload.as_ref()))),
        }
    }
    println!("{table}: {} cases, {} failed", cases.len(), failures.len());
    assert!(
        failures.is_empty(),
        "{table}: {} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// --- model folders ------------------------------------------------------------------------------------

/// A fresh, empty folder for one case.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad_input").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A copy of fixture `fixture`'s model files (config and weights) in a fresh folder.
fn model_copy(name: &str, fixture: &str) -> PathBuf {
    let dir = scratch(name);
    for entry in std::fs::read_dir(common::fixture(&format!("unet2d/{fixture}"))).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if file == "config.json" || file.starts_with("diffusion_pytorch_model") {
            std::fs::copy(&path, dir.join(&file)).unwrap();
        }
    }
    dir
}

/// Base fixture of the config and weights cases: 2 levels (16, 32 channels), DownBlock2D +
/// AttnDownBlock2D, 8 groups, head dim 8, no mid block, positional time embedding, safetensors.
const BASE: &str = "no_mid_block";

fn load(dir: &Path) -> candle_unet2d::Result<UNet2DModel> {
    UNet2DModel::from_pretrained(dir, &LoadOptions::default())
}

fn fixture_config(fixture: &str) -> Value {
    let text = std::fs::read_to_string(common::fixture(&format!("unet2d/{fixture}/config.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn fixture_tensors(fixture: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        common::fixture(&format!("unet2d/{fixture}/diffusion_pytorch_model.safetensors")),
        &Device::Cpu,
    )
    .unwrap()
}

// --- configs --------------------------------------------------------------------------------------------

/// A config case: the whole text of `config.json`, or keys to set in the base fixture's config.
enum ConfigEdit {
    Text(String),
    Set(Value),
}

fn text(s: &str) -> ConfigEdit {
    ConfigEdit::Text(s.to_string())
}

fn set(v: Value) -> ConfigEdit {
    ConfigEdit::Set(v)
}

#[test]
fn bad_configs_are_named_errors() {
    use Variant::*;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(&str, (ConfigEdit, Expect))> = vec![
        ("not_json", (text("# this is not JSON"), Expect::Err(ConfigParse, "expected value at line 1"))),
        ("empty_file", (text(""), Expect::Err(ConfigParse, "EOF while parsing"))),
        ("truncated_json", (text(r#"{"in_channels": 3,"#), Expect::Err(ConfigParse, "EOF while parsing"))),
        ("json_array", (text("[3, 3, true]"), Expect::Err(ConfigParse, "must be a JSON object"))),
        ("json_string", (text(r#""UNet2DModel""#), Expect::Err(ConfigParse, "must be a JSON object"))),
        ("json_null", (text("null"), Expect::Err(ConfigParse, "must be a JSON object"))),
        ("deeply_nested_json", (ConfigEdit::Text(deep), Expect::Err(ConfigParse, "recursion limit exceeded"))),
        ("in_channels_string", (set(json!({"in_channels": "three"})), Expect::Err(InvalidConfig, "`in_channels`"))),
        ("in_channels_float", (set(json!({"in_channels": 3.5})), Expect::Err(InvalidConfig, "`in_channels`"))),
        ("in_channels_overflow", (set(json!({"in_channels": 1e30})), Expect::Err(InvalidConfig, "`in_channels`"))),
        (
            "block_out_channels_not_a_list",
            (set(json!({"block_out_channels": 16})), Expect::Err(InvalidConfig, "`block_out_channels`")),
        ),
        (
            "block_out_channels_negative",
            (set(json!({"block_out_channels": [16, -32]})), Expect::Err(InvalidConfig, "`block_out_channels[1]`")),
        ),
        (
            "flip_sin_to_cos_string",
            (set(json!({"flip_sin_to_cos": "yes"})), Expect::Err(InvalidConfig, "`flip_sin_to_cos`")),
        ),
        ("sample_size_one_element", (set(json!({"sample_size": [16]})), Expect::Err(InvalidConfig, "`sample_size`"))),
        (
            "unknown_down_block",
            (
                set(json!({"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"]})),
                Expect::Err(InvalidConfig, "`down_block_types[1]`: unknown value \"CrossAttnDownBlock2D\""),
            ),
        ),
        (
            "unknown_up_block",
            (
                set(json!({"up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"]})),
                Expect::Err(InvalidConfig, "`up_block_types[0]`: unknown value"),
            ),
        ),
        (
            "unknown_mid_block",
            (set(json!({"mid_block_type": "UNetMidBlock2DCrossAttn"})), Expect::Err(InvalidConfig, "`mid_block_type`")),
        ),
        (
            "unknown_activation",
            (set(json!({"act_fn": "tanh"})), Expect::Err(InvalidConfig, "`act_fn`: unknown value \"tanh\"")),
        ),
        (
            "unknown_time_embedding",
            (set(json!({"time_embedding_type": "adm"})), Expect::Err(InvalidConfig, "`time_embedding_type`")),
        ),
        (
            "unknown_class_embed",
            (set(json!({"class_embed_type": "projection"})), Expect::Err(InvalidConfig, "`class_embed_type`")),
        ),
        (
            "unknown_time_scale_shift",
            (
                set(json!({"resnet_time_scale_shift": "spatial"})),
                Expect::Err(InvalidConfig, "`resnet_time_scale_shift`"),
            ),
        ),
        (
            "unknown_downsample_type",
            (set(json!({"downsample_type": "avgpool"})), Expect::Err(InvalidConfig, "`downsample_type`")),
        ),
        (
            "up_and_down_lengths_differ",
            (
                set(json!({"down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"]})),
                Expect::Err(InvalidConfig, "`up_block_types`: must have as many entries as down_block_types (2 vs 3)"),
            ),
        ),
        (
            "blocks_and_channels_lengths_differ",
            (
                set(json!({"block_out_channels": [16, 32, 32]})),
                Expect::Err(InvalidConfig, "`down_block_types`: must have one entry per block_out_channels entry"),
            ),
        ),
        (
            "no_levels",
            (set(json!({"block_out_channels": []})), Expect::Err(InvalidConfig, "must have at least one entry")),
        ),
        (
            "zero_channels",
            (
                set(json!({"block_out_channels": [0, 32]})),
                Expect::Err(InvalidConfig, "`block_out_channels[0]`: must be positive"),
            ),
        ),
        (
            "absurd_channels",
            (
                set(json!({"block_out_channels": [16, 4_000_000_000u64]})),
                Expect::Err(InvalidConfig, "`block_out_channels[1]`: 4000000000 is larger than the supported maximum"),
            ),
        ),
        (
            "absurd_in_channels",
            (set(json!({"in_channels": 1_000_000_000_000u64})), Expect::Err(InvalidConfig, "`in_channels`")),
        ),
        (
            "zero_out_channels",
            (set(json!({"out_channels": 0})), Expect::Err(InvalidConfig, "`out_channels`: must be positive")),
        ),
        (
            "zero_layers_per_block",
            (set(json!({"layers_per_block": 0})), Expect::Err(InvalidConfig, "`layers_per_block`")),
        ),
        (
            "absurd_layers_per_block",
            (
                set(json!({"layers_per_block": 100_000})),
                Expect::Err(InvalidConfig, "`layers_per_block`: 100000 is larger"),
            ),
        ),
        (
            "absurd_levels",
            (
                set(json!({
                    "block_out_channels": vec![16; 13],
                    "down_block_types": vec!["DownBlock2D"; 13],
                    "up_block_types": vec!["UpBlock2D"; 13],
                })),
                Expect::Err(InvalidConfig, "13 levels; at most 12"),
            ),
        ),
        (
            "absurd_sample_size",
            (
                set(json!({"sample_size": [16, 10_000_000]})),
                Expect::Err(InvalidConfig, "`sample_size`: 10000000 is larger"),
            ),
        ),
        (
            "absurd_time_embedding_dim",
            (set(json!({"time_embedding_dim": 1u64 << 40})), Expect::Err(InvalidConfig, "`time_embedding_dim`")),
        ),
        (
            "absurd_num_class_embeds",
            (set(json!({"num_class_embeds": 1u64 << 40})), Expect::Err(InvalidConfig, "`num_class_embeds`")),
        ),
        (
            "absurd_num_train_timesteps",
            (
                set(json!({"time_embedding_type": "learned", "num_train_timesteps": 1u64 << 40})),
                Expect::Err(InvalidConfig, "`num_train_timesteps`"),
            ),
        ),
        (
            "learned_without_num_train_timesteps",
            (
                set(json!({"time_embedding_type": "learned", "num_train_timesteps": null})),
                Expect::Err(
                    InvalidConfig,
                    "`num_train_timesteps`: is required when time_embedding_type is \"learned\"",
                ),
            ),
        ),
        (
            "groups_do_not_divide",
            (set(json!({"norm_num_groups": 5})), Expect::Err(InvalidConfig, "5 groups do not divide the 16 channels")),
        ),
        ("zero_groups", (set(json!({"norm_num_groups": 0})), Expect::Err(InvalidConfig, "0 groups do not divide"))),
        (
            "null_groups_without_skip_blocks",
            (set(json!({"norm_num_groups": null})), Expect::Err(InvalidConfig, "`norm_num_groups`: is null")),
        ),
        (
            "attention_groups_do_not_divide",
            (
                set(json!({"mid_block_type": "UNetMidBlock2D", "attn_norm_num_groups": 3})),
                Expect::Err(InvalidConfig, "`attn_norm_num_groups`"),
            ),
        ),
        (
            "zero_head_dim",
            (
                set(json!({"attention_head_dim": 0})),
                Expect::Err(InvalidConfig, "`attention_head_dim`: must be positive"),
            ),
        ),
        (
            "head_dim_wider_than_channels",
            (
                set(json!({"attention_head_dim": 64})),
                Expect::Err(InvalidConfig, "64 is wider than an attention block's 32 channels"),
            ),
        ),
        ("negative_norm_eps", (set(json!({"norm_eps": -1e-5})), Expect::Err(InvalidConfig, "`norm_eps`"))),
        ("dropout_above_one", (set(json!({"dropout": 2.0})), Expect::Err(InvalidConfig, "`dropout`"))),
        (
            "downsample_padding_5",
            (set(json!({"downsample_padding": 5})), Expect::Err(InvalidConfig, "`downsample_padding`")),
        ),
        (
            "skip_blocks_with_one_channel",
            (
                set(json!({
                    "in_channels": 1, "out_channels": 1, "norm_num_groups": null, "attention_head_dim": null,
                    "down_block_types": ["SkipDownBlock2D", "AttnSkipDownBlock2D"],
                    "up_block_types": ["AttnSkipUpBlock2D", "SkipUpBlock2D"],
                    "block_out_channels": [32, 32],
                })),
                Expect::Err(InvalidConfig, "Skip blocks (NCSN++) need in_channels = out_channels = 3"),
            ),
        ),
    ];
    run_table("configs", &cases, |name, (edit, expect)| {
        let dir = model_copy(&format!("config_{name}"), BASE);
        let text = match edit {
            ConfigEdit::Text(t) => t.clone(),
            ConfigEdit::Set(patch) => {
                let mut config = fixture_config(BASE);
                for (k, v) in patch.as_object().unwrap() {
                    config[k] = v.clone();
                }
                config.to_string()
            }
        };
        std::fs::write(dir.join("config.json"), text).unwrap();
        check(load(&dir), *expect)
    });
}

#[test]
fn unreadable_configs_are_named_errors() {
    use Variant::*;
    let cases: Vec<(&str, Expect)> = vec![
        ("config_missing", Expect::Err(NotFound, "config.json in")),
        ("config_is_a_folder", Expect::Err(Io, "config.json")),
        ("config_not_utf8", Expect::Err(Io, "UTF-8")),
    ];
    run_table("unreadable configs", &cases, |name, expect| {
        let dir = model_copy(name, BASE);
        let config = dir.join("config.json");
        std::fs::remove_file(&config).unwrap();
        match name {
            "config_is_a_folder" => std::fs::create_dir(&config).unwrap(),
            "config_not_utf8" => std::fs::write(&config, b"{\"in_channels\": \xff\xfe}").unwrap(),
            _ => {}
        }
        check(load(&dir), *expect)
    });
}

// --- weights ----------------------------------------------------------------------------------------------

/// The bytes of a safetensors file with its JSON header rewritten by `edit` (data kept as is).
fn edit_header(bytes: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let text = header.to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text.as_bytes());
    out.extend(&bytes[8 + n..]);
    out
}

/// How a weights case changes the base fixture's folder.
enum WeightsEdit {
    /// Replace `diffusion_pytorch_model.safetensors` with these bytes.
    SafetensorsBytes(fn(&[u8]) -> Vec<u8>),
    /// Replace it with these tensors.
    Tensors(fn(&mut HashMap<String, Tensor>)),
    /// Remove it and write these files (name, bytes).
    Files(fn() -> Vec<(&'static str, Vec<u8>)>),
}

fn index(weight_map: Value) -> Vec<u8> {
    json!({"metadata": {"total_size": 0}, "weight_map": weight_map}).to_string().into_bytes()
}

/// The base fixture's tensors split in two shards (names < "m" and the rest), as safetensors bytes.
fn shards() -> (Vec<u8>, Vec<u8>, Value) {
    let tensors = fixture_tensors(BASE);
    let (mut a, mut b) = (HashMap::new(), HashMap::new());
    let mut map = serde_json::Map::new();
    for (name, t) in tensors {
        let shard = if name.as_str() < "m" { "shard-1.safetensors" } else { "shard-2.safetensors" };
        map.insert(name.clone(), json!(shard));
        if name.as_str() < "m" {
            a.insert(name, t)
        } else {
            b.insert(name, t)
        };
    }
    (safetensors_bytes(&a), safetensors_bytes(&b), Value::Object(map))
}

fn safetensors_bytes(tensors: &HashMap<String, Tensor>) -> Vec<u8> {
    let tmp = scratch("tmp_safetensors_bytes").join("t.safetensors");
    candle_core::safetensors::save(tensors, &tmp).unwrap();
    std::fs::read(tmp).unwrap()
}

#[test]
fn bad_weights_are_named_errors() {
    use Variant::*;
    use WeightsEdit::*;
    let cases: Vec<(&str, (WeightsEdit, Expect))> = vec![
        ("empty_file", (SafetensorsBytes(|_| Vec::new()), Expect::Err(Weights, "header too small"))),
        ("seven_bytes", (SafetensorsBytes(|b| b[..7].to_vec()), Expect::Err(Weights, "header too small"))),
        (
            "truncated_data",
            (
                SafetensorsBytes(|b| b[..b.len() / 2].to_vec()),
                Expect::Err(Weights, "diffusion_pytorch_model.safetensors"),
            ),
        ),
        ("truncated_header", (SafetensorsBytes(|b| b[..64].to_vec()), Expect::Err(Weights, "invalid header length"))),
        (
            "header_length_huge",
            (
                SafetensorsBytes(|b| [u64::MAX.to_le_bytes().as_slice(), &b[8..]].concat()),
                Expect::Err(Weights, "header too large"),
            ),
        ),
        (
            "header_not_json",
            (
                SafetensorsBytes(|b| {
                    let mut out = b.to_vec();
                    out[8] = b'#';
                    out
                }),
                Expect::Err(Weights, "invalid JSON in header"),
            ),
        ),
        (
            "header_not_utf8",
            (
                SafetensorsBytes(|b| {
                    let mut out = b.to_vec();
                    out[10] = 0xff;
                    out
                }),
                Expect::Err(Weights, "invalid UTF-8 in header"),
            ),
        ),
        (
            "offsets_past_the_end",
            (
                SafetensorsBytes(|b| {
                    edit_header(b, |h| {
                        let end = h["conv_out.bias"]["data_offsets"][1].as_u64().unwrap();
                        h["conv_out.bias"]["data_offsets"] = json!([end, end + 1_000_000]);
                    })
                }),
                Expect::Err(Weights, "diffusion_pytorch_model.safetensors"),
            ),
        ),
        (
            "offsets_disagree_with_shape",
            (
                SafetensorsBytes(|b| edit_header(b, |h| h["conv_in.bias"]["shape"] = json!([17]))),
                Expect::Err(Weights, "invalid shape, data type, or offset for tensor"),
            ),
        ),
        (
            "shape_overflows",
            (
                SafetensorsBytes(|b| edit_header(b, |h| h["conv_in.bias"]["shape"] = json!([1u64 << 62, 1u64 << 62]))),
                Expect::Err(Weights, "overflow"),
            ),
        ),
        (
            "unknown_dtype",
            (
                SafetensorsBytes(|b| edit_header(b, |h| h["conv_in.bias"]["dtype"] = json!("Q4"))),
                Expect::Err(Weights, "invalid JSON in header"),
            ),
        ),
        (
            "int64_tensor",
            (
                Tensors(|t| {
                    let shape = t["conv_in.weight"].dims().to_vec();
                    t.insert("conv_in.weight".into(), Tensor::zeros(shape, DType::I64, &Device::Cpu).unwrap());
                }),
                Expect::Err(Weights, "tensor `conv_in.weight`: has dtype I64; weights must be floating point"),
            ),
        ),
        (
            "uint8_tensor",
            (
                Tensors(|t| {
                    let shape = t["conv_out.bias"].dims().to_vec();
                    t.insert("conv_out.bias".into(), Tensor::zeros(shape, DType::U8, &Device::Cpu).unwrap());
                }),
                Expect::Err(Weights, "weights must be floating point"),
            ),
        ),
        (
            "wrong_shape",
            (
                Tensors(|t| {
                    t.insert("conv_in.weight".into(), Tensor::zeros((16, 3, 5, 5), DType::F32, &Device::Cpu).unwrap());
                }),
                Expect::Err(ShapeMismatch, "tensor `conv_in.weight`"),
            ),
        ),
        (
            "transposed_shape",
            (
                Tensors(|t| {
                    let w = t["time_embedding.linear_1.weight"].t().unwrap().contiguous().unwrap();
                    t.insert("time_embedding.linear_1.weight".into(), w);
                }),
                Expect::Err(ShapeMismatch, "expected [64, 16]"),
            ),
        ),
        (
            "missing_tensor",
            (
                Tensors(|t| {
                    t.remove("conv_out.weight");
                }),
                Expect::Err(MissingTensor, "missing tensor `conv_out.weight`"),
            ),
        ),
        ("no_tensors_at_all", (Tensors(|t| t.clear()), Expect::Err(MissingTensor, "missing tensor"))),
        (
            // The blocks load in parallel; the error is still the first in model order.
            "missing_in_two_blocks",
            (
                Tensors(|t| {
                    t.remove("up_blocks.0.resnets.0.conv1.weight");
                    t.remove("down_blocks.0.resnets.0.conv1.weight");
                }),
                Expect::Err(MissingTensor, "missing tensor `down_blocks.0.resnets.0.conv1.weight`"),
            ),
        ),
        (
            "unexpected_tensor",
            (
                Tensors(|t| {
                    t.insert(
                        "mid_block.resnets.0.conv1.weight".into(),
                        Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
                    );
                }),
                Expect::Err(Weights, "mid_block.resnets.0.conv1.weight; the config and weights do not belong together"),
            ),
        ),
        ("no_weights_file", (Files(Vec::new), Expect::Err(NotFound, "diffusion_pytorch_model.safetensors (or .bin"))),
        (
            "index_names_a_missing_shard",
            (
                Files(|| {
                    let (a, _, map) = shards();
                    vec![("diffusion_pytorch_model.safetensors.index.json", index(map)), ("shard-1.safetensors", a)]
                }),
                Expect::Err(NotFound, "shard shard-2.safetensors"),
            ),
        ),
        (
            "index_shard_path_escapes",
            (
                Files(|| {
                    vec![(
                        "diffusion_pytorch_model.safetensors.index.json",
                        index(json!({"conv_in.weight": "../../etc/passwd"})),
                    )]
                }),
                Expect::Err(Weights, "shard name \"../../etc/passwd\" points outside the model folder"),
            ),
        ),
        (
            "index_shard_path_absolute",
            (
                Files(|| {
                    vec![(
                        "diffusion_pytorch_model.safetensors.index.json",
                        index(json!({"conv_in.weight": "/etc/passwd"})),
                    )]
                }),
                Expect::Err(Weights, "points outside the model folder"),
            ),
        ),
        (
            "index_not_json",
            (
                Files(|| vec![("diffusion_pytorch_model.safetensors.index.json", b"{weight_map".to_vec())]),
                Expect::Err(ConfigParse, "diffusion_pytorch_model.safetensors.index.json"),
            ),
        ),
        (
            "index_without_weight_map",
            (
                Files(|| vec![("diffusion_pytorch_model.safetensors.index.json", b"{}".to_vec())]),
                Expect::Err(Weights, "no \"weight_map\" object"),
            ),
        ),
        (
            "index_shard_not_a_string",
            (
                Files(|| vec![("diffusion_pytorch_model.safetensors.index.json", index(json!({"conv_in.weight": 7})))]),
                Expect::Err(Weights, "weight_map[\"conv_in.weight\"] is not a file name"),
            ),
        ),
        (
            "index_empty_weight_map",
            (
                Files(|| vec![("diffusion_pytorch_model.safetensors.index.json", index(json!({})))]),
                Expect::Err(Weights, "the weight_map is empty"),
            ),
        ),
        (
            "tensor_in_two_shards",
            (
                Files(|| {
                    let (a, b, map) = shards();
                    let mut tensors = candle_core::safetensors::load_buffer(&b, &Device::Cpu).unwrap();
                    tensors.insert("conv_in.bias".into(), Tensor::zeros(16, DType::F32, &Device::Cpu).unwrap());
                    vec![
                        ("diffusion_pytorch_model.safetensors.index.json", index(map)),
                        ("shard-1.safetensors", a),
                        ("shard-2.safetensors", safetensors_bytes(&tensors)),
                    ]
                }),
                Expect::Err(Weights, "tensor `conv_in.bias` appears more than once"),
            ),
        ),
        (
            "bin_that_is_text",
            (
                Files(|| {
                    vec![("diffusion_pytorch_model.bin", b"version https://git-lfs.github.com/spec/v1\n".to_vec())]
                }),
                Expect::Err(Weights, "not a readable PyTorch checkpoint"),
            ),
        ),
        (
            "bin_empty",
            (
                Files(|| vec![("diffusion_pytorch_model.bin", Vec::new())]),
                Expect::Err(Weights, "diffusion_pytorch_model.bin"),
            ),
        ),
        (
            "bin_truncated_zip",
            (
                Files(|| {
                    let bytes =
                        std::fs::read(common::fixture("unet2d/pytorch_bin/diffusion_pytorch_model.bin")).unwrap();
                    vec![("diffusion_pytorch_model.bin", bytes[..bytes.len() / 2].to_vec())]
                }),
                Expect::Err(Weights, "not a readable PyTorch checkpoint"),
            ),
        ),
        (
            "bin_raw_pickle_not_zip",
            (
                Files(|| {
                    vec![("diffusion_pytorch_model.bin", torch_pickle(&[("conv_in.bias", "FloatStorage", &[16], 16)]))]
                }),
                Expect::Err(Weights, "not a readable PyTorch checkpoint"),
            ),
        ),
        (
            "bin_pickle_truncated",
            (
                Files(|| {
                    let pickle = torch_pickle(&[("conv_in.bias", "FloatStorage", &[16], 16)]);
                    vec![("diffusion_pytorch_model.bin", torch_zip(&pickle[..pickle.len() - 10], &[vec![0; 64]]))]
                }),
                Expect::Err(Weights, "not a readable PyTorch checkpoint"),
            ),
        ),
        (
            "bin_unknown_opcode",
            (
                Files(|| vec![("diffusion_pytorch_model.bin", torch_zip(b"\x80\x02}\x95.", &[]))]),
                Expect::Err(Weights, "unknown op-code"),
            ),
        ),
    ];
    run_table("weights", &cases, |name, (edit, expect)| {
        let dir = model_copy(&format!("weights_{name}"), BASE);
        let file = dir.join("diffusion_pytorch_model.safetensors");
        match edit {
            SafetensorsBytes(f) => {
                let bytes = std::fs::read(&file).unwrap();
                std::fs::write(&file, f(&bytes)).unwrap();
            }
            Tensors(f) => {
                let mut tensors = fixture_tensors(BASE);
                f(&mut tensors);
                candle_core::safetensors::save(&tensors, &file).unwrap();
            }
            Files(f) => {
                std::fs::remove_file(&file).unwrap();
                for (name, bytes) in f() {
                    std::fs::write(dir.join(name), bytes).unwrap();
                }
            }
        }
        check(load(&dir), *expect)
    });
}

/// A valid `.bin` written here (by [`torch_zip`]) loads and matches the safetensors fixture: the
/// writer the pickle cases use makes real checkpoints.
#[test]
fn handwritten_torch_checkpoint_loads() {
    let dir = model_copy("handwritten_bin", BASE);
    let tensors = fixture_tensors(BASE);
    std::fs::remove_file(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    std::fs::write(dir.join("diffusion_pytorch_model.bin"), torch_checkpoint(&tensors, &[])).unwrap();
    let from_bin = load(&dir).unwrap();
    let from_st = load(&common::fixture(&format!("unet2d/{BASE}"))).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 3, 16, 16), &Device::Cpu).unwrap();
    let (a, b) = (from_bin.forward(&x, 5i64, None).unwrap(), from_st.forward(&x, 5i64, None).unwrap());
    assert_eq!(common::max_abs_diff(&a, &b).0, 0.0);
}

// --- PyTorch zip checkpoints, written by hand ----------------------------------------------------------

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A zip archive of `files`, stored uncompressed (as `torch.save` writes it).
fn zip_stored(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let fixed = |sig: u32, central: bool| {
            let mut h = sig.to_le_bytes().to_vec();
            if central {
                h.extend(20u16.to_le_bytes()); // version made by
            }
            h.extend(20u16.to_le_bytes()); // version needed
            h.extend(0u16.to_le_bytes()); // flags
            h.extend(0u16.to_le_bytes()); // stored
            h.extend(0u16.to_le_bytes()); // time
            h.extend(0x21u16.to_le_bytes()); // date: 1980-01-01
            h.extend(crc.to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((name.len() as u16).to_le_bytes());
            h.extend(0u16.to_le_bytes()); // extra
            h
        };
        out.extend(fixed(0x0403_4b50, false));
        out.extend(name.as_bytes());
        out.extend(data);
        central.extend(fixed(0x0201_4b50, true));
        central.extend([0u8; 6]); // comment length, disk, internal attributes
        central.extend(0u32.to_le_bytes()); // external attributes
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let (cd_offset, cd_size) = (out.len() as u32, central.len() as u32);
    out.extend(central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((files.len() as u16).to_le_bytes());
    out.extend((files.len() as u16).to_le_bytes());
    out.extend(cd_size.to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

/// A torch-style zip: `archive/data.pkl` and the storages `archive/data/<i>`.
fn torch_zip(pickle: &[u8], storages: &[Vec<u8>]) -> Vec<u8> {
    let mut files = vec![("archive/data.pkl".to_string(), pickle.to_vec())];
    files.push(("archive/byteorder".into(), b"little".to_vec()));
    for (i, s) in storages.iter().enumerate() {
        files.push((format!("archive/data/{i}"), s.clone()));
    }
    files.push(("archive/version".into(), b"3\n".to_vec()));
    zip_stored(&files)
}

fn unicode(s: &str) -> Vec<u8> {
    [b"X".as_slice(), &(s.len() as u32).to_le_bytes(), s.as_bytes()].concat()
}

fn binint(n: i32) -> Vec<u8> {
    [b"J".as_slice(), &n.to_le_bytes()].concat()
}

/// `_rebuild_tensor_v2(storage(<cls>, key, numel), 0, shape, contiguous stride, False, OrderedDict())`.
fn rebuild_tensor(cls: &str, key: usize, shape: &[usize], numel: usize) -> Vec<u8> {
    let stride: Vec<usize> = (0..shape.len()).map(|i| shape[i + 1..].iter().product()).collect();
    let mut out = b"ctorch._utils\n_rebuild_tensor_v2\n((".to_vec();
    out.extend(unicode("storage"));
    out.extend(format!("ctorch\n{cls}\n").as_bytes());
    out.extend(unicode(&key.to_string()));
    out.extend(unicode("cpu"));
    out.extend(binint(numel as i32));
    out.extend(b"tQ");
    out.extend(binint(0));
    out.push(b'(');
    shape.iter().for_each(|&d| out.extend(binint(d as i32)));
    out.extend(b"t(");
    stride.iter().for_each(|&s| out.extend(binint(s as i32)));
    out.extend(b"t\x89ccollections\nOrderedDict\n)RtR");
    out
}

/// A protocol-2 pickle of `{name: tensor}`, storage `i` for entry `i`: (name, class, shape, numel).
fn torch_pickle(entries: &[(&str, &str, &[usize], usize)]) -> Vec<u8> {
    let mut out = b"\x80\x02}(".to_vec();
    for (i, (name, cls, shape, numel)) in entries.iter().enumerate() {
        out.extend(unicode(name));
        out.extend(rebuild_tensor(cls, i, shape, *numel));
    }
    out.extend(b"u.");
    out
}

/// A float32 PyTorch checkpoint of `tensors`, with `extra` pickle entries (key, value opcodes) added to
/// the state dict.
fn torch_checkpoint(tensors: &HashMap<String, Tensor>, extra: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut pickle = b"\x80\x02}(".to_vec();
    let mut storages = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let t = &tensors[*name];
        pickle.extend(unicode(name));
        pickle.extend(rebuild_tensor("FloatStorage", i, t.dims(), t.elem_count()));
        let values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        storages.push(values.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    for (key, value) in extra {
        pickle.extend(unicode(key));
        pickle.extend(value);
    }
    pickle.extend(b"u.");
    torch_zip(&pickle, &storages)
}

/// What `pickle.dumps(Evil(), protocol=2)` writes for a class whose `__reduce__` returns
/// `(module.name, (command,))` — e.g. `(os.system, ("touch /tmp/x",))`, which pickles as `posix system`.
fn evil_call(module: &str, name: &str, command: &str) -> Vec<u8> {
    [format!("c{module}\n{name}\nq\x00").as_bytes(), &unicode(command), b"\x85q\x01Rq\x02"].concat()
}

/// A marker path that the malicious payloads would create, unique to this test run.
fn marker(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("candle_unet2d_pwned_{tag}_{}", std::process::id()))
}

/// Whatever a malicious `.bin` holds, loading it executes nothing and fails. (The full "clear error"
/// requirement is [`malicious_pickle_is_refused_naming_the_global`], a known bug.)
#[test]
fn malicious_pickles_execute_nothing() {
    let tensors = fixture_tensors(BASE);
    let cases: Vec<(&str, (&str, &str))> = vec![
        ("os_system", ("posix", "system")),
        ("os_system_portable", ("os", "system")),
        ("builtins_exec", ("builtins", "exec")),
        ("builtins_eval", ("builtins", "eval")),
        ("subprocess", ("subprocess", "check_call")),
    ];
    run_table("malicious pickles", &cases, |name, (module, function)| {
        let mark = marker(name);
        let _ = std::fs::remove_file(&mark);
        let command = match *function {
            "exec" | "eval" => format!("open({:?}, 'w')", mark.display().to_string()),
            _ => format!("touch {}", mark.display()),
        };
        let payload = evil_call(module, function, &command);
        let variants: [(&str, Vec<u8>); 3] = [
            // The whole pickle is the call.
            ("alone", torch_zip(&[b"\x80\x02".as_slice(), &payload, b"."].concat(), &[])),
            // The call as the value of a tensor the model needs.
            ("as_a_needed_tensor", {
                let mut t = tensors.clone();
                t.remove("conv_in.weight");
                torch_checkpoint(&t, &[("conv_in.weight", payload.clone())])
            }),
            // The call beside every tensor the model needs.
            ("beside_valid_tensors", torch_checkpoint(&tensors, &[("evil", payload.clone())])),
        ];
        let mut errors = Vec::new();
        for (how, bytes) in variants {
            let dir = model_copy(&format!("evil_{name}_{how}"), BASE);
            std::fs::remove_file(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
            std::fs::write(dir.join("diffusion_pytorch_model.bin"), bytes).unwrap();
            let result = load(&dir);
            if mark.exists() {
                return Err(format!("{how}: the payload ran: {} exists", mark.display()));
            }
            if how != "beside_valid_tensors" && result.is_ok() {
                errors.push(format!("{how}: loaded"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    });
}

// --- inputs ------------------------------------------------------------------------------------------------

fn model(fixture: &str) -> UNet2DModel {
    let dir = common::fixture(&format!("unet2d/{fixture}"));
    let variant = (fixture == "fp16_variant").then(|| "fp16".to_string());
    UNet2DModel::from_pretrained(&dir, &LoadOptions { variant, ..LoadOptions::default() }).unwrap()
}

fn zeros(shape: &[usize], dtype: DType) -> Tensor {
    Tensor::zeros(shape, dtype, &Device::Cpu).unwrap()
}

fn f32s(values: &[f32]) -> Tensor {
    Tensor::new(values, &Device::Cpu).unwrap()
}

fn i64s(values: &[i64]) -> Tensor {
    Tensor::new(values, &Device::Cpu).unwrap()
}

/// An input case: which model, then the call.
type Call = fn(&UNet2DModel) -> candle_unet2d::Result<Tensor>;

#[test]
fn bad_inputs_are_named_errors() {
    use Variant::*;
    // Unconditional, 2 levels (sizes multiple of 2), 3 channels.
    let plain = model("no_mid_block");
    // Unconditional, 4 levels (multiple of 8).
    let deep = model("ddpm_default_blocks");
    // num_class_embeds = 10, 3 levels (multiple of 4).
    let table = model("consistency_like");
    // class_embed_type = "identity" (labels are [B, 32] embeddings, 32 = time_embedding_dim).
    let identity = model("class_identity");
    // class_embed_type = "timestep".
    let class_t = model("class_timestep");
    // time_embedding_type = "learned", 100 rows.
    let learned = model("learned_time");
    let cases: Vec<(&str, (&UNet2DModel, Call, Expect))> = vec![
        (
            "sample_rank_3",
            (
                &plain,
                |m| m.forward(&zeros(&[3, 16, 16], DType::F32), 1i64, None),
                Expect::Err(InvalidArgument, "must have shape [batch, 3, height, width], got [3, 16, 16]"),
            ),
        ),
        (
            "sample_rank_5",
            (
                &plain,
                |m| m.forward(&zeros(&[1, 1, 3, 16, 16], DType::F32), 1i64, None),
                Expect::Err(InvalidArgument, "`sample`"),
            ),
        ),
        (
            "sample_rank_0",
            (
                &plain,
                |m| m.forward(&Tensor::new(1f32, &Device::Cpu).unwrap(), 1i64, None),
                Expect::Err(InvalidArgument, "got []"),
            ),
        ),
        (
            "sample_wrong_channels",
            (
                &plain,
                |m| m.forward(&zeros(&[1, 4, 16, 16], DType::F32), 1i64, None),
                Expect::Err(InvalidArgument, "has 4 channels, the model takes 3"),
            ),
        ),
        (
            "sample_height_not_multiple",
            (
                &plain,
                |m| m.forward(&zeros(&[1, 3, 15, 16], DType::F32), 1i64, None),
                Expect::Err(InvalidArgument, "positive multiples of 2"),
            ),
        ),
        (
            "sample_width_not_multiple_of_8",
            (
                &deep,
                |m| m.forward(&zeros(&[1, 3, 16, 20], DType::F32), 1i64, None),
                Expect::Err(InvalidArgument, "multiples of 8 (2^3 for 4 levels), got 16×20"),
            ),
        ),
        (
            "sample_zero_height",
            (
                &plain,
                |m| m.forward(&zeros(&[1, 3, 0, 16], DType::F32), 1i64, None),
                Expect::Err(InvalidArgument, "positive multiples"),
            ),
        ),
        (
            "sample_zero_batch",
            (
                &plain,
                |m| m.forward(&zeros(&[0, 3, 16, 16], DType::F32), 1i64, None),
                Expect::Err(InvalidArgument, "batch size is 0"),
            ),
        ),
        (
            "sample_int64",
            (
                &plain,
                |m| m.forward(&zeros(&[1, 3, 16, 16], DType::I64), 1i64, None),
                Expect::Err(InvalidArgument, "must be a float tensor, got I64"),
            ),
        ),
        (
            "sample_uint8",
            (
                &plain,
                |m| m.forward(&zeros(&[1, 3, 16, 16], DType::U8), 1i64, None),
                Expect::Err(InvalidArgument, "must be a float tensor"),
            ),
        ),
        ("sample_float64", (&plain, |m| m.forward(&zeros(&[1, 3, 16, 16], DType::F64), 1i64, None), Expect::Ok)),
        ("sample_float16", (&plain, |m| m.forward(&zeros(&[1, 3, 16, 16], DType::F16), 1i64, None), Expect::Ok)),
        ("sample_bfloat16", (&plain, |m| m.forward(&zeros(&[1, 3, 16, 16], DType::BF16), 1i64, None), Expect::Ok)),
        (
            "sample_nan",
            (&plain, |m| m.forward(&(zeros(&[1, 3, 16, 16], DType::F32) + f64::NAN).unwrap(), 1i64, None), Expect::Ok),
        ),
        (
            "sample_inf",
            (
                &plain,
                |m| m.forward(&(zeros(&[1, 3, 16, 16], DType::F32) + f64::INFINITY).unwrap(), 1i64, None),
                Expect::Ok,
            ),
        ),
        (
            "sample_huge_values",
            (&plain, |m| m.forward(&(zeros(&[1, 3, 16, 16], DType::F32) + 3e38).unwrap(), 1i64, None), Expect::Ok),
        ),
        (
            "sample_non_contiguous",
            (
                &plain,
                |m| m.forward(&zeros(&[1, 3, 8, 16], DType::F32).transpose(2, 3).unwrap(), 1i64, None),
                Expect::Ok,
            ),
        ),
        (
            "timestep_wrong_length",
            (
                &plain,
                |m| m.forward(&zeros(&[2, 3, 16, 16], DType::F32), &f32s(&[1., 2., 3.]), None),
                Expect::Err(InvalidArgument, "has 3 values for a batch of 2"),
            ),
        ),
        (
            "timestep_empty",
            (
                &plain,
                |m| m.forward(&zeros(&[2, 3, 16, 16], DType::F32), &f32s(&[]), None),
                Expect::Err(InvalidArgument, "has 0 values for a batch of 2"),
            ),
        ),
        (
            "timestep_2d",
            (
                &plain,
                |m| m.forward(&zeros(&[2, 3, 16, 16], DType::F32), &zeros(&[2, 1], DType::F32), None),
                Expect::Err(InvalidArgument, "must be a scalar, [1] or [batch] array, got shape [2, 1]"),
            ),
        ),
        (
            "timestep_0d",
            (
                &plain,
                |m| m.forward(&zeros(&[2, 3, 16, 16], DType::F32), &Tensor::new(7i64, &Device::Cpu).unwrap(), None),
                Expect::Ok,
            ),
        ),
        (
            "timestep_int64_array",
            (&plain, |m| m.forward(&zeros(&[2, 3, 16, 16], DType::F32), &i64s(&[1, 999]), None), Expect::Ok),
        ),
        ("timestep_nan", (&plain, |m| m.forward(&zeros(&[1, 3, 16, 16], DType::F32), f64::NAN, None), Expect::Ok)),
        ("timestep_i64_max", (&plain, |m| m.forward(&zeros(&[1, 3, 16, 16], DType::F32), i64::MAX, None), Expect::Ok)),
        (
            "learned_timestep_out_of_range",
            (
                &learned,
                |m| m.forward(&zeros(&[1, 3, 16, 16], DType::F32), 100i64, None),
                Expect::Err(InvalidArgument, "100 is not an integer in [0, 100)"),
            ),
        ),
        (
            "learned_timestep_negative",
            (
                &learned,
                |m| m.forward(&zeros(&[1, 3, 16, 16], DType::F32), -1i64, None),
                Expect::Err(InvalidArgument, "-1 is not an integer in [0, 100)"),
            ),
        ),
        (
            "learned_timestep_fractional",
            (
                &learned,
                |m| m.forward(&zeros(&[1, 3, 16, 16], DType::F32), 2.5f64, None),
                Expect::Err(InvalidArgument, "2.5 is not an integer"),
            ),
        ),
        (
            "learned_timestep_nan",
            (
                &learned,
                |m| m.forward(&zeros(&[1, 3, 16, 16], DType::F32), f64::NAN, None),
                Expect::Err(InvalidArgument, "NaN is not an integer"),
            ),
        ),
        (
            "learned_timestep_array_one_bad",
            (
                &learned,
                |m| m.forward(&zeros(&[2, 3, 16, 16], DType::F32), &i64s(&[3, 1000]), None),
                Expect::Err(InvalidArgument, "1000 is not an integer"),
            ),
        ),
        (
            "class_labels_missing",
            (
                &table,
                |m| m.forward(&zeros(&[1, 3, 16, 16], DType::F32), 1i64, None),
                Expect::Err(InvalidArgument, "`class_labels`: required"),
            ),
        ),
        (
            "class_labels_unexpected",
            (
                &plain,
                |m| m.forward(&zeros(&[1, 3, 16, 16], DType::F32), 1i64, Some(&i64s(&[1]))),
                Expect::Err(InvalidArgument, "not class-conditional"),
            ),
        ),
        (
            "class_label_out_of_range",
            (
                &table,
                |m| m.forward(&zeros(&[2, 3, 16, 16], DType::F32), 1i64, Some(&i64s(&[3, 10]))),
                Expect::Err(InvalidArgument, "class label 10 is not an integer in [0, 10)"),
            ),
        ),
        (
            "class_label_negative",
            (
                &table,
                |m| m.forward(&zeros(&[1, 3, 16, 16], DType::F32), 1i64, Some(&i64s(&[-1]))),
                Expect::Err(InvalidArgument, "class label -1"),
            ),
        ),
        (
            "class_label_huge",
            (
                &table,
                |m| m.forward(&zeros(&[1, 3, 16, 16], DType::F32), 1i64, Some(&i64s(&[i64::MAX]))),
                Expect::Err(InvalidArgument, "is not an integer in [0, 10)"),
            ),
        ),
        (
            "class_labels_float",
            (
                &table,
                |m| m.forward(&zeros(&[1, 3, 16, 16], DType::F32), 1i64, Some(&f32s(&[1.0]))),
                Expect::Err(InvalidArgument, "must be integers (class ids), got F32"),
            ),
        ),
        (
            "class_labels_wrong_length",
            (
                &table,
                |m| m.forward(&zeros(&[2, 3, 16, 16], DType::F32), 1i64, Some(&i64s(&[1, 2, 3]))),
                Expect::Err(InvalidArgument, "must be a [batch] array of class ids, got shape [3]"),
            ),
        ),
        (
            "class_labels_2d",
            (
                &table,
                |m| m.forward(&zeros(&[2, 3, 16, 16], DType::F32), 1i64, Some(&zeros(&[2, 1], DType::I64))),
                Expect::Err(InvalidArgument, "got shape [2, 1]"),
            ),
        ),
        (
            "class_labels_one_for_batch",
            (&table, |m| m.forward(&zeros(&[2, 3, 16, 16], DType::F32), 1i64, Some(&i64s(&[4]))), Expect::Ok),
        ),
        (
            "identity_labels_wrong_width",
            (
                &identity,
                |m| m.forward(&zeros(&[1, 3, 16, 16], DType::F32), 1i64, Some(&zeros(&[1, 5], DType::F32))),
                Expect::Err(InvalidArgument, "must have shape [batch, 32], got [1, 5]"),
            ),
        ),
        (
            "identity_labels_integer",
            (
                &identity,
                |m| m.forward(&zeros(&[1, 3, 16, 16], DType::F32), 1i64, Some(&zeros(&[1, 32], DType::I64))),
                Expect::Err(InvalidArgument, "must be float embeddings"),
            ),
        ),
        (
            "timestep_class_labels_2d",
            (
                &class_t,
                |m| m.forward(&zeros(&[1, 3, 16, 16], DType::F32), 1i64, Some(&zeros(&[1, 1, 1], DType::F32))),
                Expect::Err(InvalidArgument, "must be a [batch] array of timesteps"),
            ),
        ),
    ];
    run_table("inputs", &cases, |name, (model, call, expect)| {
        let result = call(model);
        if let (Ok(out), Expect::Ok) = (&result, expect) {
            // A valid call keeps the batch and spatial size (NaN values are allowed).
            if out.dims().len() != 4 {
                return Err(format!("{name}: output shape {:?}", out.dims()));
            }
        }
        check(result, *expect)
    });
}

/// An options case: a call returning the outcome of its check.
type OptionCase<'a> = Box<dyn Fn() -> Result<(), String> + 'a>;

#[test]
fn bad_options_are_named_errors() {
    use Variant::*;
    let base = common::fixture(&format!("unet2d/{BASE}"));
    let file = base.join("config.json");
    let opts = |dtype: DType| LoadOptions { dtype, ..LoadOptions::default() };
    let cases: Vec<(&str, OptionCase)> = vec![
        (
            "device_unknown",
            Box::new(|| check(parse_device("tpu"), Expect::Err(InvalidArgument, "unknown device \"tpu\""))),
        ),
        (
            "device_bad_ordinal",
            Box::new(|| check(parse_device("cuda:x"), Expect::Err(InvalidArgument, "unknown device \"cuda:x\""))),
        ),
        ("device_empty", Box::new(|| check(parse_device(""), Expect::Err(InvalidArgument, "unknown device")))),
        #[cfg(not(feature = "cuda"))]
        (
            "device_cuda_without_cuda",
            Box::new(|| check(parse_device("cuda:0"), Expect::Err(Unsupported, "built without CUDA support"))),
        ),
        (
            "dtype_unknown",
            Box::new(|| check(parse_dtype("int8"), Expect::Err(InvalidArgument, "unsupported dtype \"int8\""))),
        ),
        ("dtype_empty", Box::new(|| check(parse_dtype(""), Expect::Err(InvalidArgument, "unsupported dtype")))),
        (
            "model_dtype_int64",
            Box::new(|| {
                check(
                    UNet2DModel::from_pretrained(&base, &opts(DType::I64)),
                    Expect::Err(InvalidArgument, "I64 is not a floating-point model dtype"),
                )
            }),
        ),
        (
            "model_dtype_bf16_on_cpu",
            Box::new(|| {
                check(
                    UNet2DModel::from_pretrained(&base, &opts(DType::BF16)),
                    Expect::Err(Unsupported, "bfloat16 on the CPU"),
                )
            }),
        ),
        (
            "model_dtype_float16_loads",
            Box::new(|| check(UNet2DModel::from_pretrained(&base, &opts(DType::F16)), Expect::Ok)),
        ),
        (
            "path_missing",
            Box::new(|| {
                check(
                    load(Path::new("/nonexistent/model/folder")),
                    Expect::Err(NotFound, "model folder /nonexistent/model/folder"),
                )
            }),
        ),
        (
            "path_is_a_file",
            Box::new(|| check(load(&file), Expect::Err(InvalidArgument, "is a file; pass the model folder"))),
        ),
        (
            "hub_id_not_cached",
            Box::new(|| {
                // Offline, into an empty cache: a test never reaches the network.
                let mut options = LoadOptions::default();
                options.hub.local_files_only = true;
                options.hub.cache_dir = Some(std::env::temp_dir().join("unet2d-bad-input-empty-hub-cache"));
                check(
                    UNet2DModel::from_pretrained("nobody-xyz/no-such-model", &options),
                    Expect::Err(Hub, "is not in the local Hugging Face cache"),
                )
            }),
        ),
        (
            "subfolder_missing",
            Box::new(|| {
                check(
                    UNet2DModel::from_pretrained(
                        &base,
                        &LoadOptions { subfolder: Some("unet".into()), ..LoadOptions::default() },
                    ),
                    Expect::Err(NotFound, "subfolder \"unet\""),
                )
            }),
        ),
        (
            "variant_with_path",
            Box::new(|| {
                check(
                    UNet2DModel::from_pretrained(
                        &base,
                        &LoadOptions { variant: Some("../fp16".into()), ..LoadOptions::default() },
                    ),
                    Expect::Err(InvalidArgument, "`variant`"),
                )
            }),
        ),
        (
            "variant_absent",
            Box::new(|| {
                check(
                    UNet2DModel::from_pretrained(
                        &base,
                        &LoadOptions { variant: Some("fp16".into()), ..LoadOptions::default() },
                    ),
                    Expect::Err(NotFound, "diffusion_pytorch_model.fp16.safetensors"),
                )
            }),
        ),
        (
            "variant_needed",
            Box::new(|| {
                check(load(&common::fixture("unet2d/fp16_variant")), Expect::Err(NotFound, "pass the variant"))
            }),
        ),
        (
            "config_str_array",
            Box::new(|| {
                check(UNet2DConfig::from_json_str("[]", Path::new("c.json")), Expect::Err(ConfigParse, "c.json"))
            }),
        ),
    ];
    run_table("options", &cases, |_, run| run());
}

// --- known bugs: each fails until its fix lands (see docs/errors-and-safety.md) ----------------------------

/// Loads `pickle` (wrapped in a torch zip with 4 small storages) as the base fixture's weights.
fn load_pickle(name: &str, pickle: &[u8]) -> candle_unet2d::Result<UNet2DModel> {
    let dir = model_copy(name, BASE);
    std::fs::remove_file(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    std::fs::write(dir.join("diffusion_pytorch_model.bin"), torch_zip(pickle, &vec![vec![0; 64]; 4])).unwrap();
    load(&dir)
}

/// BUG: a `.bin` whose pickle calls `os.system` fails with "missing tensor `…`" (candle's reader skips
/// what it does not understand), not an error that names the refused global; and with every tensor
/// present beside the payload it loads without a word. Fix: src/loading/pickle_guard.rs.
#[test]
fn malicious_pickle_is_refused_naming_the_global() {
    let mark = marker("named");
    let payload = evil_call("posix", "system", &format!("touch {}", mark.display()));
    let alone = load_pickle("bug_evil_alone", &[b"\x80\x02".as_slice(), &payload, b"."].concat());
    let dir = model_copy("bug_evil_beside", BASE);
    std::fs::remove_file(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    std::fs::write(
        dir.join("diffusion_pytorch_model.bin"),
        torch_checkpoint(&fixture_tensors(BASE), &[("evil", payload)]),
    )
    .unwrap();
    let beside = load(&dir);
    assert!(!mark.exists(), "the payload ran");
    check(alone, Expect::Err(Variant::Weights, "`posix.system`")).unwrap();
    check(beside, Expect::Err(Variant::Weights, "`posix.system`")).unwrap();
}

/// BUG: candle's pickle reader indexes into the arguments of `_rebuild_tensor_v2` (`Vec::remove(3)`)
/// and of the storage record (`remove(4)`) without checking their length: a short tuple panics.
/// Fix: src/loading/pickle_guard.rs (checks the structure before candle reads it).
#[test]
fn short_rebuild_arguments_are_an_error_not_a_panic() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // _rebuild_tensor_v2() with no arguments
        (
            "no_args",
            [b"\x80\x02}(".as_slice(), &unicode("conv_in.weight"), b"ctorch._utils\n_rebuild_tensor_v2\n)Ru."].concat(),
        ),
        // a storage record of 2 fields
        (
            "short_storage",
            [
                b"\x80\x02}(".as_slice(),
                &unicode("conv_in.weight"),
                b"ctorch._utils\n_rebuild_tensor_v2\n((",
                &unicode("storage"),
                b"ctorch\nFloatStorage\ntQK\x00(K\x10t(K\x01t\x89tRu.",
            ]
            .concat(),
        ),
        // _rebuild_from_type_v2 with one argument
        (
            "short_from_type",
            [b"\x80\x02}(".as_slice(), &unicode("conv_in.weight"), b"ctorch._tensor\n_rebuild_from_type_v2\nN\x85Ru."]
                .concat(),
        ),
    ];
    run_table("short rebuild arguments", &cases, |name, pickle| {
        check(load_pickle(&format!("bug_short_{name}"), pickle), Expect::Err(Variant::Weights, "conv_in.weight"))
    });
}

fn is_child(name: &str) -> bool {
    std::env::var("BAD_INPUT_CHILD").is_ok_and(|v| v == name)
}

/// A tuple nested 1,000,000 deep (`N` then `\x85` a million times): 1 MB of pickle.
fn deep_pickle() -> Vec<u8> {
    let mut p = b"\x80\x02}(".to_vec();
    p.extend(unicode("conv_in.weight"));
    p.push(b'N');
    p.extend(std::iter::repeat_n(0x85u8, 1_000_000));
    p.extend(b"u.");
    p
}

/// Child of [`deeply_nested_pickle_does_not_overflow_the_stack`].
#[test]
fn child_deep_pickle() {
    if is_child("child_deep_pickle") {
        let result = load_pickle("bug_deep_pickle", &deep_pickle());
        check(result, Expect::Err(Variant::Weights, "nests")).unwrap();
    }
}

/// BUG: candle's pickle reader builds nested objects without a depth limit and drops them recursively:
/// a 1 MB `.bin` of nested tuples overflows the stack and kills the process (SIGSEGV/SIGABRT), which no
/// `catch_unwind` (nor the Python binding's panic guard) can stop. Fix: src/loading/pickle_guard.rs.
#[cfg(unix)]
#[test]
fn deeply_nested_pickle_does_not_overflow_the_stack() {
    assert_child_survives("child_deep_pickle", &[]);
}

/// 200 bytes that candle's reader turns into 2^40 objects: `BINGET` deep-copies the memo.
fn memo_bomb() -> Vec<u8> {
    let mut p = b"\x80\x02}(".to_vec();
    p.extend(unicode("conv_in.weight"));
    p.extend(b"]q\x00");
    for _ in 0..40 {
        p.extend(b"h\x00h\x00\x86q\x00");
    }
    p.extend(b"u.");
    p
}

/// Child of [`memo_bomb_pickle_is_refused`].
#[test]
fn child_memo_bomb() {
    if is_child("child_memo_bomb") {
        let result = load_pickle("bug_memo_bomb", &memo_bomb());
        check(result, Expect::Err(Variant::Weights, "objects")).unwrap();
    }
}

/// BUG: a 300-byte `.bin` makes candle's pickle reader deep-copy a memoised object 40 times over
/// (2^40 objects): the process runs out of memory and aborts (here under a 4 GiB limit; without one it
/// takes the machine's memory). Fix: src/loading/pickle_guard.rs (counts objects before candle builds them).
#[cfg(unix)]
#[test]
fn memo_bomb_pickle_is_refused() {
    assert_child_survives("child_memo_bomb", &[]);
}

/// Child of [`huge_attention_is_an_error_not_an_abort`].
#[test]
fn child_huge_attention() {
    if is_child("child_huge_attention") {
        // Attention at 256×256 positions (4 heads): a 64 GiB score matrix.
        let result = model(BASE).forward(&zeros(&[1, 3, 512, 512], DType::F32), 1i64, None);
        check(result, Expect::Err(Variant::InvalidArgument, "`sample`")).unwrap();
    }
}

/// BUG: attention memory grows with the square of the pixel count and is not checked: a valid but large
/// sample (512×512 into a model with attention at half resolution) asks for a 64 GiB score matrix, the
/// allocation fails and the process aborts ("memory allocation of … bytes failed") — in Python too,
/// where torch would raise. Fix: refuse it in `UNet2DModel::check_sample` (or in
/// `AttentionBlock::forward`) when `batch × heads × (h·w)² × 4` bytes exceeds a cap, naming the size.
#[cfg(unix)]
#[test]
fn huge_attention_is_an_error_not_an_abort() {
    assert_child_survives("child_huge_attention", &[]);
}

// --- round two (issue 12): sizes, files, wording, shared generators ---------------------------------------

/// Runs test `child` of this binary in a child process with `BAD_INPUT_CHILD=<child>`, a 4 GiB
/// address-space limit and `env`, and returns its exit status and stderr: for inputs that abort the process.
#[cfg(unix)]
fn run_child_with(child: &str, env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4194304 && exec \"$0\" \"$@\"")
        .arg(exe)
        .args(["--exact", child, "--nocapture", "--test-threads=1"])
        .env("BAD_INPUT_CHILD", child)
        .env_remove(candle_unet2d::MEMORY_LIMIT_ENV)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Asserts that child test `child` ran to the end (its table passed) instead of dying.
#[cfg(unix)]
fn assert_child_survives(child: &str, env: &[(&str, &str)]) {
    let (status, stderr) = run_child_with(child, env);
    assert!(
        status.success(),
        "the child died or failed ({status}): {}",
        stderr.lines().rev().take(12).collect::<Vec<_>>().join(" | ")
    );
}

/// The default DDPM scheduler sampling `batch` images in `steps` steps.
fn sample_run(unet: &UNet2DModel, batch: usize, steps: usize) -> candle_unet2d::Result<Tensor> {
    let mut scheduler = candle_unet2d::pipeline::default_scheduler()?;
    let options =
        candle_unet2d::pipeline::SampleOptions { batch_size: batch, num_inference_steps: steps, ..Default::default() };
    let mut generator = candle_unet2d::rng::Generator::from_seed(0);
    candle_unet2d::pipeline::sample(unet, &mut scheduler, &options, &mut generator, |_| {
        std::ops::ControlFlow::Continue(())
    })
}

type SizeCase = Box<dyn Fn(&UNet2DModel) -> Result<(), String>>;

/// Child of [`requests_too_large_for_memory_are_refused_before_allocating`]: runs under a 4 GiB
/// address-space limit, so any case that allocated what it asked for would abort the child.
#[test]
fn child_too_large() {
    if !is_child("child_too_large") {
        return;
    }
    use Variant::TooLarge;
    let cases: Vec<(&str, SizeCase)> = vec![
        (
            "forward_batch_100000",
            Box::new(|m| {
                let x = zeros(&[100_000, 3, 16, 16], DType::F32);
                check(m.forward(&x, 1i64, None), Expect::Err(TooLarge, "a forward of a [100000, 3, 16, 16] sample"))
            }),
        ),
        (
            "forward_attention_within_its_cap_but_not_in_memory",
            Box::new(|m| {
                let x = zeros(&[1, 3, 256, 256], DType::F32);
                check(m.forward(&x, 1i64, None), Expect::Err(TooLarge, "more than the limit"))
            }),
        ),
        (
            "sample_batch_100000",
            Box::new(|m| check(sample_run(m, 100_000, 1), Expect::Err(TooLarge, "sampling 100000 image(s) of 16×16"))),
        ),
        ("sample_batch_2_40", Box::new(|m| check(sample_run(m, 1 << 40, 1), Expect::Err(TooLarge, "would need")))),
        (
            "sample_batch_usize_max",
            Box::new(|m| check(sample_run(m, usize::MAX, 1), Expect::Err(TooLarge, "address-space limit"))),
        ),
        (
            "labels_2_40",
            Box::new(|_| {
                check(
                    candle_unet2d::memory_budget::filled_vec(0i64, 1 << 40, "the class labels"),
                    Expect::Err(TooLarge, "the class labels would need 8.0 TiB"),
                )
            }),
        ),
    ];
    let m = model(BASE);
    run_table("too large for memory", &cases, |_, case| case(&m));
}

/// Issue 12, class 1: valid requests too large for memory (a batch of 100,000, 2^40 images) aborted
/// the process ("memory allocation of … bytes failed"). Each entry point now estimates what it will
/// allocate and refuses with `TooLarge`, naming the need and the limit, before allocating.
#[cfg(unix)]
#[test]
fn requests_too_large_for_memory_are_refused_before_allocating() {
    assert_child_survives("child_too_large", &[]);
}

/// Child of [`the_memory_limit_can_be_set_by_the_user`].
#[test]
fn child_memory_limit_env() {
    if !is_child("child_memory_limit_env") {
        return;
    }
    let m = model(BASE);
    check(
        m.forward(&zeros(&[1, 3, 16, 16], DType::F32), 1i64, None),
        Expect::Err(Variant::TooLarge, "CANDLE_UNET2D_MEMORY_LIMIT=64K"),
    )
    .unwrap();
}

/// The limit is a documented setting: `CANDLE_UNET2D_MEMORY_LIMIT` replaces the available-memory
/// estimate, and the error names it.
#[cfg(unix)]
#[test]
fn the_memory_limit_can_be_set_by_the_user() {
    assert_child_survives("child_memory_limit_env", &[("CANDLE_UNET2D_MEMORY_LIMIT", "64K")]);
}

/// One 32 MiB string memoised once and fetched 200 times: candle's reader would copy it 200 times.
fn string_memo_bomb() -> Vec<u8> {
    let mut p = b"\x80\x02}(".to_vec();
    p.extend(unicode("conv_in.weight"));
    p.push(b'X');
    p.extend((32u32 << 20).to_le_bytes());
    p.extend(std::iter::repeat_n(b'a', 32 << 20));
    p.extend(b"q\x01]q\x02(");
    for _ in 0..200 {
        p.extend(b"h\x01");
    }
    p.extend(b"eu.");
    p
}

/// Child of [`memoised_strings_fetched_many_times_are_refused`].
#[test]
fn child_string_memo_bomb() {
    if is_child("child_string_memo_bomb") {
        let result = load_pickle("r2_string_memo_bomb", &string_memo_bomb());
        check(result, Expect::Err(Variant::Weights, "bytes of text (memo copies included)")).unwrap();
    }
}

/// Issue 12, class 4: the pickle guard counted objects, not bytes, so one large memoised string
/// fetched many times exhausted memory. The bytes it materialises are now bounded by the pickle's size.
#[cfg(unix)]
#[test]
fn memoised_strings_fetched_many_times_are_refused() {
    assert_child_survives("child_string_memo_bomb", &[]);
}

/// Makes a FIFO at `path`.
#[cfg(unix)]
fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {}", path.display());
}

/// Issue 12, class 5 (and the wording of class 6): a `config.json` that is a FIFO hung the loader, a
/// symlink to `/dev/zero` was read until memory ran out, and a weights "file" that is a folder or a FIFO
/// was reported as not found. Only regular files are opened, JSON up to a size cap.
#[cfg(unix)]
#[test]
fn files_that_are_not_regular_are_named_errors() {
    use Variant::*;
    type FileCase = (fn(&Path), Expect);
    const ST: &str = "diffusion_pytorch_model.safetensors";
    let cases: Vec<(&str, FileCase)> = vec![
        (
            "config_fifo",
            (
                |d| {
                    std::fs::remove_file(d.join("config.json")).unwrap();
                    mkfifo(&d.join("config.json"));
                },
                Expect::Err(Io, "is a FIFO (named pipe); only regular files are read"),
            ),
        ),
        (
            "config_symlink_to_dev_zero",
            (
                |d| {
                    std::fs::remove_file(d.join("config.json")).unwrap();
                    std::os::unix::fs::symlink("/dev/zero", d.join("config.json")).unwrap();
                },
                Expect::Err(Io, "is a character device"),
            ),
        ),
        (
            "config_too_large",
            (
                |d| {
                    let f = std::fs::File::create(d.join("config.json")).unwrap();
                    f.set_len((64 << 20) + 1).unwrap();
                },
                Expect::Err(Io, "larger than 67108864 bytes"),
            ),
        ),
        (
            "weights_are_a_folder",
            (
                |d| {
                    std::fs::remove_file(d.join(ST)).unwrap();
                    std::fs::create_dir(d.join(ST)).unwrap();
                },
                Expect::Err(Io, "diffusion_pytorch_model.safetensors: is a folder"),
            ),
        ),
        (
            "weights_are_a_fifo",
            (
                |d| {
                    std::fs::remove_file(d.join(ST)).unwrap();
                    mkfifo(&d.join(ST));
                },
                Expect::Err(Io, "diffusion_pytorch_model.safetensors: is a FIFO"),
            ),
        ),
        (
            "weights_symlink_to_dev_zero",
            (
                |d| {
                    std::fs::remove_file(d.join(ST)).unwrap();
                    std::os::unix::fs::symlink("/dev/zero", d.join(ST)).unwrap();
                },
                Expect::Err(Io, "is a character device"),
            ),
        ),
        (
            "bin_is_a_fifo",
            (
                |d| {
                    std::fs::remove_file(d.join(ST)).unwrap();
                    mkfifo(&d.join("diffusion_pytorch_model.bin"));
                },
                Expect::Err(Io, "diffusion_pytorch_model.bin: is a FIFO"),
            ),
        ),
        (
            "shard_index_is_a_fifo",
            (
                |d| {
                    std::fs::remove_file(d.join(ST)).unwrap();
                    mkfifo(&d.join("diffusion_pytorch_model.safetensors.index.json"));
                },
                Expect::Err(Io, "index.json: is a FIFO"),
            ),
        ),
    ];
    run_table("files that are not regular", &cases, |name, (edit, expect)| {
        let dir = model_copy(&format!("r2_{name}"), BASE);
        edit(&dir);
        let result = load(&dir);
        if let Err(e) = &result {
            if e.to_string().contains("not found") {
                return Err(format!("reported as missing: {e}"));
            }
        }
        check(result, *expect)
    });
}

/// A scheduler folder whose `scheduler_config.json` is a FIFO: an error, not a hang.
#[cfg(unix)]
#[test]
fn scheduler_config_fifo_is_an_error_not_a_hang() {
    let dir = scratch("r2_scheduler_fifo");
    mkfifo(&dir.join("scheduler_config.json"));
    let result = candle_unet2d::schedulers::config::read_config_json(&dir);
    check(result, Expect::Err(Variant::Io, "scheduler_config.json: is a FIFO")).unwrap();
}

/// Issue 12, class 6: errors of the right kind, in words that name the problem.
#[test]
fn errors_name_the_problem_in_words() {
    use Variant::*;
    type WordCase = Box<dyn Fn() -> Result<(), String>>;
    let config_with = |value: Value| {
        let mut c = fixture_config(BASE);
        c["sample_size"] = value;
        UNet2DConfig::from_json_str(&c.to_string(), Path::new("config.json")).map(|_| ())
    };
    let needle = "`sample_size`: must be a non-negative integer (a square side) or [height, width]";
    let cases: Vec<(&str, WordCase)> = vec![
        ("sample_size_negative", Box::new(move || check(config_with(json!(-16)), Expect::Err(InvalidConfig, needle)))),
        (
            "sample_size_three_sides",
            Box::new(move || check(config_with(json!([16, 16, 16])), Expect::Err(InvalidConfig, needle))),
        ),
        (
            "sample_size_string",
            Box::new(move || check(config_with(json!("16")), Expect::Err(InvalidConfig, "got \"16\""))),
        ),
        (
            "sample_size_pair_with_negative",
            Box::new(move || check(config_with(json!([16, -1])), Expect::Err(InvalidConfig, "got [16,-1]"))),
        ),
        ("sample_size_pair_loads", Box::new(move || check(config_with(json!([16, 16])), Expect::Ok))),
        (
            "candle_error_without_backtrace",
            Box::new(|| {
                let inner = candle_core::Error::Msg("boom".into());
                let e = Error::Candle(candle_core::Error::WithBacktrace {
                    inner: Box::new(inner),
                    backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
                });
                let message = e.to_string();
                if message == "boom" {
                    Ok(())
                } else {
                    Err(format!("the message carries more than the error: {message:?}"))
                }
            }),
        ),
    ];
    run_table("wording", &cases, |_, case| case());
}

/// Child of [`bin_errors_carry_no_backtrace`]: a `.bin` whose tensors' storages are missing from the zip.
#[test]
fn child_bin_error_without_backtrace() {
    if !is_child("child_bin_error_without_backtrace") {
        return;
    }
    let tensors = fixture_tensors(BASE);
    // A valid state-dict pickle, zipped without its storages: candle fails reading the first data.
    let pickle = {
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        let entries: Vec<(&str, &str, &[usize], usize)> =
            names.iter().map(|n| (n.as_str(), "FloatStorage", tensors[*n].dims(), tensors[*n].elem_count())).collect();
        torch_pickle(&entries)
    };
    let dir = model_copy("r2_bin_backtrace", BASE);
    std::fs::remove_file(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    std::fs::write(dir.join("diffusion_pytorch_model.bin"), torch_zip(&pickle, &[])).unwrap();
    let err = load(&dir).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Weights { .. }), "{message}");
    assert!(!message.contains('\n'), "a multi-line message: {message}");
}

/// Issue 12, class 6: with `RUST_BACKTRACE` set, candle attaches a backtrace to its errors, which
/// ended up inside the `.bin` error message.
#[cfg(unix)]
#[test]
fn bin_errors_carry_no_backtrace() {
    assert_child_survives("child_bin_error_without_backtrace", &[("RUST_BACKTRACE", "1")]);
}

/// Issue 12, class 8: threads sampling from one generator draw from it in turn, as torch's draws do:
/// each gets its own noise, and the generator ends where as many sequential runs leave it.
#[test]
fn a_shared_generator_gives_every_thread_its_own_noise() {
    use std::sync::Mutex;
    const THREADS: usize = 4;
    let unet = model(BASE);
    let options =
        candle_unet2d::pipeline::SampleOptions { batch_size: 1, num_inference_steps: 2, ..Default::default() };
    let run = |g: &Mutex<candle_unet2d::rng::Generator>| {
        let mut scheduler = candle_unet2d::pipeline::default_scheduler().unwrap();
        let x = candle_unet2d::pipeline::sample_shared(&unet, &mut scheduler, &options, g, |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let shared = Mutex::new(candle_unet2d::rng::Generator::from_seed(7));
    let results: Vec<Vec<f32>> = std::thread::scope(|s| {
        (0..THREADS)
            .map(|_| s.spawn(|| run(&shared)))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect()
    });
    for i in 0..THREADS {
        for j in i + 1..THREADS {
            assert_ne!(results[i], results[j], "threads {i} and {j} got the same images");
        }
    }
    let sequential = Mutex::new(candle_unet2d::rng::Generator::from_seed(7));
    for _ in 0..THREADS {
        run(&sequential);
    }
    let next = |g: Mutex<candle_unet2d::rng::Generator>| g.into_inner().unwrap().random_u64();
    assert_eq!(next(shared), next(sequential), "the shared generator did not advance once per draw");
}

// --- the command line ----------------------------------------------------------------------------------------

#[cfg(feature = "cli")]
mod cli {
    use std::process::Output;

    use super::{model_copy, scratch, BASE};

    /// A command line case: the arguments, the exit code, and text the error line must hold.
    type CliCase = (Vec<String>, i32, &'static str);

    use crate::common::unet2d;

    /// Exit `code`, stderr one line `error: …` containing `needle`, no panic.
    fn check(out: &Output, code: i32, needle: &str) -> Result<(), String> {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let line = stderr.trim_end();
        if out.status.code() != Some(code) {
            return Err(format!("exit {:?}, expected {code}: {line}", out.status.code()));
        }
        if !line.starts_with("error: ") || line.lines().count() != 1 {
            return Err(format!("not one `error:` line: {line}"));
        }
        if line.contains("panicked") || line.contains("internal error") || line.contains("RUST_BACKTRACE") {
            return Err(format!("a panic: {line}"));
        }
        if !line.contains(needle) {
            return Err(format!("the message lacks {needle:?}: {line}"));
        }
        Ok(())
    }

    #[test]
    fn bad_command_lines_are_one_error_line() {
        let dir = scratch("cli");
        let model = model_copy("cli_model", BASE);
        let bad_config = model_copy("cli_bad_config", BASE);
        std::fs::write(bad_config.join("config.json"), r#"{"act_fn": "tanh"}"#).unwrap();
        let bad_weights = model_copy("cli_bad_weights", BASE);
        std::fs::write(bad_weights.join("diffusion_pytorch_model.safetensors"), b"garbage").unwrap();
        std::fs::write(dir.join("a_file.txt"), "x").unwrap();
        let (model, bad_config, bad_weights) =
            (model.display().to_string(), bad_config.display().to_string(), bad_weights.display().to_string());
        let fast = ["--scheduler", "ddim", "--steps", "1", "--batch", "1"];
        let cases: Vec<(&str, CliCase)> = vec![
            ("no_subcommand_flag", (vec!["--bogus".into()], 2, "unexpected argument '--bogus'")),
            ("unknown_flag", (vec!["sample".into(), "--bogus".into()], 2, "unexpected argument '--bogus'")),
            ("steps_zero", (vec!["sample".into(), "--steps".into(), "0".into()], 2, "must be at least 1")),
            ("steps_not_a_number", (vec!["sample".into(), "--steps".into(), "ten".into()], 2, "not a whole number")),
            ("batch_negative", (vec!["sample".into(), "--batch=-3".into()], 2, "invalid value '-3' for '--batch <N>'")),
            (
                "scheduler_unknown",
                (vec!["sample".into(), "--scheduler".into(), "euler_x".into()], 2, "invalid value 'euler_x'"),
            ),
            ("eta_negative", (vec!["sample".into(), "--eta".into(), "-1".into()], 2, "must be a finite number")),
            ("eta_nan", (vec!["sample".into(), "--eta".into(), "NaN".into()], 2, "must be a finite number")),
            ("dtype_unknown", (vec!["sample".into(), "--dtype".into(), "int8".into()], 2, "invalid value 'int8'")),
            ("out_not_png", (vec!["sample".into(), "--out".into(), "x.jpg".into()], 2, "must end in .png")),
            ("scale_zero", (vec!["sample".into(), "--scale".into(), "0".into()], 2, "--scale")),
            (
                "out_and_out_dir",
                (
                    vec!["sample".into(), "--out".into(), "a.png".into(), "--out-dir".into(), "d".into()],
                    2,
                    "cannot be used with",
                ),
            ),
            ("seed_negative", (vec!["sample".into(), "--seed=-1".into()], 2, "invalid value '-1' for '--seed <S>'")),
            ("class_not_a_number", (vec!["sample".into(), "--class".into(), "3,x".into()], 2, "--class")),
            ("model_missing", (vec!["info".into(), "--model".into(), "/nonexistent/unet".into()], 1, "not found")),
            ("model_is_a_file", (vec!["info".into(), "--model".into(), "a_file.txt".into()], 1, "a_file.txt")),
            ("model_bad_config", (vec!["info".into(), "--model".into(), bad_config.clone()], 1, "act_fn")),
            ("model_bad_weights", (vec!["info".into(), "--model".into(), bad_weights.clone()], 1, "header")),
            ("device_unknown", (vec!["sample".into(), "--device".into(), "tpu".into()], 1, "tpu")),
            ("class_out_of_range", (vec!["sample".into(), "--class".into(), "42".into()], 1, "42")),
            (
                "class_for_unconditional",
                (vec!["sample".into(), "--model".into(), model.clone(), "--class".into(), "1".into()], 1, "class"),
            ),
            (
                "out_unwritable",
                (
                    [
                        vec!["sample".to_string(), "--out".into(), "a_file.txt/x.png".into()],
                        fast.iter().map(|s| s.to_string()).collect(),
                    ]
                    .concat(),
                    1,
                    "cannot write --out",
                ),
            ),
            (
                "out_dir_is_a_file",
                (
                    [
                        vec!["sample".to_string(), "--out-dir".into(), "a_file.txt".into()],
                        fast.iter().map(|s| s.to_string()).collect(),
                    ]
                    .concat(),
                    1,
                    "cannot write --out-dir",
                ),
            ),
            (
                "out_is_a_folder",
                (
                    [
                        vec!["sample".to_string(), "--out".into(), "folder.png".into()],
                        fast.iter().map(|s| s.to_string()).collect(),
                    ]
                    .concat(),
                    1,
                    "it is a folder",
                ),
            ),
        ];
        let huge = |batch: &str| -> Vec<String> {
            ["sample", "--model", &model, "--steps", "1", "--batch", batch].iter().map(|s| s.to_string()).collect()
        };
        let cases: Vec<(&str, CliCase)> = cases
            .into_iter()
            .chain([
                // Issue 12, class 1: refused before allocating, not "memory allocation failed".
                ("batch_2_40", (huge("1099511627776"), 1, "too large: sampling 1099511627776 image(s)")),
                ("batch_10_8", (huge("100000000"), 1, "more than the limit")),
                (
                    "batch_2_40_shipped",
                    (vec!["sample".into(), "--batch".into(), "1099511627776".into()], 1, "too large"),
                ),
                // Issue 12, class 7: a write error is an error, not "wrote …".
                #[cfg(target_os = "linux")]
                (
                    "out_dev_full",
                    (
                        [
                            vec![
                                "sample".to_string(),
                                "--model".into(),
                                model.clone(),
                                "--out".into(),
                                "full.png".into(),
                            ],
                            fast.iter().map(|s| s.to_string()).collect(),
                        ]
                        .concat(),
                        1,
                        "cannot write full.png: No space left on device",
                    ),
                ),
            ])
            .collect();
        std::fs::create_dir_all(dir.join("folder.png")).unwrap();
        // --out must end in .png: a link with that name to the full device.
        #[cfg(target_os = "linux")]
        std::os::unix::fs::symlink("/dev/full", dir.join("full.png")).unwrap();
        super::run_table("command lines", &cases, |_, (args, code, needle)| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            check(&unet2d(&dir, &args), *code, needle)
        });
    }
}
