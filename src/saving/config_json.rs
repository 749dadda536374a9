//! `config.json` as diffusers' `save_config` writes it: every `__init__` argument of `UNet2DModel`,
//! `_class_name` and `_diffusers_version`, sorted, two-space indented, floats as Python writes them.
//!
//! For a model loaded with `from_pretrained`, diffusers' config is the file's keys as they were read
//! (unknown keys and `_`-prefixed ones kept, numbers keeping their int/float type: `"freq_shift": 1`
//! stays `1`, `1.0` stays `1.0`), the defaults of the arguments the file lacked, and `_name_or_path`
//! (the path or id passed to `from_pretrained`). For a model made from a [`UNet2DConfig`] value
//! (random weights, an in-memory image) the config is the struct's fields; `freq_shift` and
//! `mid_block_scale_factor`, whose defaults are Python ints, are written as ints when integral.

use serde_json::Value;

use super::origin::LoadedConfig;
use super::python_json;
use crate::config::UNet2DConfig;

/// The diffusers version written as `_diffusers_version` (the version this crate matches).
pub const DIFFUSERS_VERSION: &str = "0.42.1";

/// Keys `to_json_string` drops.
const DROPPED: &[&str] = &["_ignore_files", "_use_default_values", "_pre_quantization_dtype"];

/// Arguments whose diffusers default is a Python int though the struct holds an `f64`.
const INT_DEFAULTS: &[&str] = &["freq_shift", "mid_block_scale_factor"];

/// The text of `config.json`.
pub(crate) fn config_json(config: &UNet2DConfig, loaded: Option<&LoadedConfig>) -> String {
    let Value::Object(mut map) = config.to_json() else { unreachable!("a config serialises to an object") };
    for key in INT_DEFAULTS {
        if let Some(value) = map.get_mut(*key) {
            if let Some(f) = value.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15) {
                *value = Value::from(f as i64);
            }
        }
    }
    if let Some(loaded) = loaded {
        for (key, value) in &loaded.json {
            if !DROPPED.contains(&key.as_str()) {
                map.insert(key.clone(), value.clone());
            }
        }
        map.insert("_name_or_path".into(), Value::String(loaded.name_or_path.clone()));
    }
    map.insert("_class_name".into(), Value::String("UNet2DModel".into()));
    map.insert("_diffusers_version".into(), Value::String(DIFFUSERS_VERSION.into()));
    python_json::to_json_string(&Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_config_is_written_with_diffusers_types() {
        let text = config_json(&UNet2DConfig::default(), None);
        for line in [
            "  \"_class_name\": \"UNet2DModel\",\n",
            "  \"_diffusers_version\": \"0.42.1\",\n",
            "  \"freq_shift\": 0,\n",
            "  \"mid_block_scale_factor\": 1,\n",
            "  \"dropout\": 0.0,\n",
            "  \"norm_eps\": 1e-05,\n",
            "  \"sample_size\": null,\n",
            "  \"attention_head_dim\": 8,\n",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
        assert!(text.starts_with("{\n  \"_class_name\"") && text.ends_with("}\n"));
    }

    #[test]
    fn a_loaded_config_keeps_its_keys_and_number_types() {
        let file = r#"{"freq_shift": 1.0, "custom_key": [1, 2], "_use_default_values": ["x"], "_name_or_path": "old"}"#;
        let json: serde_json::Map<String, Value> = serde_json::from_str(file).unwrap();
        let config = UNet2DConfig::from_json_str(file, std::path::Path::new("config.json")).unwrap();
        let loaded = LoadedConfig { json, name_or_path: "some/model".into() };
        let text = config_json(&config, Some(&loaded));
        assert!(text.contains("  \"freq_shift\": 1.0,\n"), "{text}");
        assert!(text.contains("  \"custom_key\": [\n    1,\n    2\n  ],\n"), "{text}");
        assert!(text.contains("  \"_name_or_path\": \"some/model\",\n"), "{text}");
        assert!(!text.contains("_use_default_values"), "{text}");
    }
}
