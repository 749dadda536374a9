//! Splitting a state dict into shards as huggingface_hub's `split_torch_state_dict_into_shards`
//! does for diffusers, the index it writes, the `max_shard_size` strings it reads, and the removal
//! of a previous save's shards that `save_pretrained` does.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// diffusers' default `max_shard_size`, `"10GB"`.
pub const DEFAULT_MAX_SHARD_SIZE: u64 = 10_000_000_000;

/// huggingface_hub's `parse_size_to_int`: digits (a decimal number) followed by `TB`, `GB`, `MB` or
/// `KB` (any case; powers of 1000), e.g. `"10GB"`, `"5MB"`, `"500KB"`, `"1.5GB"`. (A number of bytes
/// is given as a number, not a string, as in diffusers.)
pub fn parse_shard_size(size: &str) -> Result<u64> {
    let bad = |reason: String| Error::argument("max_shard_size", reason);
    let trimmed = size.trim();
    let split = trimmed.len().saturating_sub(2);
    let (number, unit) = match (trimmed.get(..split), trimmed.get(split..)) {
        (Some(n), Some(u)) => (n.trim(), u.to_ascii_uppercase()),
        _ => return Err(bad(format!("{size:?} is not a size such as \"10GB\", \"5MB\" or \"500KB\""))),
    };
    let multiplier: f64 = match unit.as_str() {
        "TB" => 1e12,
        "GB" => 1e9,
        "MB" => 1e6,
        "KB" => 1e3,
        _ => return Err(bad(format!("unit {unit:?} of {size:?} is not one of TB, GB, MB, KB (e.g. \"10GB\")"))),
    };
    let value: f64 = number.parse().map_err(|_| bad(format!("cannot read a number from {size:?}")))?;
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(bad(format!("{size:?} is not a size in bytes that can be used")));
    }
    // Python's int(): truncation toward zero.
    Ok(bytes.trunc() as u64)
}

/// Where each tensor goes: the files in order, each with the indices (into the state dict) of its
/// tensors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ShardPlan {
    pub files: Vec<(String, Vec<usize>)>,
    pub total_size: u64,
}

impl ShardPlan {
    pub fn is_sharded(&self) -> bool {
        self.files.len() > 1
    }
}

/// huggingface_hub's split: tensors in state-dict order fill the current shard until the next one
/// would take it over `max_shard_size`; a tensor larger than the limit gets a shard of its own.
/// `pattern` is the file name with `{suffix}` where the shard number goes
/// (`diffusion_pytorch_model{suffix}.safetensors`).
pub(crate) fn split(sizes: &[u64], max_shard_size: u64, pattern: &str) -> ShardPlan {
    let mut shards: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_size = 0u64;
    let mut total_size = 0u64;
    for (index, &size) in sizes.iter().enumerate() {
        total_size += size;
        if size > max_shard_size {
            shards.push(vec![index]);
            continue;
        }
        if current_size + size > max_shard_size {
            shards.push(std::mem::take(&mut current));
            current_size = 0;
        }
        current.push(index);
        current_size += size;
    }
    if !current.is_empty() {
        shards.push(current);
    }
    if shards.len() <= 1 {
        let file = pattern.replace("{suffix}", "");
        return ShardPlan { files: vec![(file, (0..sizes.len()).collect())], total_size };
    }
    let n = shards.len();
    let files = shards
        .into_iter()
        .enumerate()
        .map(|(i, tensors)| (pattern.replace("{suffix}", &format!("-{:05}-of-{n:05}", i + 1)), tensors))
        .collect();
    ShardPlan { files, total_size }
}

/// The index diffusers writes next to the shards: `{"metadata": {"total_size": …}, "weight_map": {…}}`.
pub(crate) fn index_json(plan: &ShardPlan, names: &[String]) -> String {
    let mut weight_map = Map::new();
    for (file, tensors) in &plan.files {
        for &i in tensors {
            weight_map.insert(names[i].clone(), Value::String(file.clone()));
        }
    }
    let index = json!({ "metadata": { "total_size": plan.total_size }, "weight_map": weight_map });
    super::python_json::to_json_string(&index)
}

/// diffusers' `_REGEX_SHARD.fullmatch`: `(.*?)-\d{5}-of-\d{5}`.
fn is_shard_stem(stem: &str) -> bool {
    let bytes = stem.as_bytes();
    let Some(tail_start) = bytes.len().checked_sub(15) else { return false };
    let tail = &bytes[tail_start..];
    let digits = |r: std::ops::Range<usize>| tail[r].iter().all(u8::is_ascii_digit);
    tail[0] == b'-' && digits(1..6) && &tail[6..10] == b"-of-" && digits(10..15) && !stem[..tail_start].contains('\n')
}

/// What `save_pretrained` removes before writing: regular files of `dir` named like a shard of these
/// weights (`{stem}…-00001-of-00003.safetensors`, where `stem` is the weights name without its
/// extension, e.g. `diffusion_pytorch_model.fp16`) that are not among the files just written.
pub(crate) fn remove_stale_shards(dir: &Path, stem: &str, written: &[String]) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if written.contains(&name) {
            continue;
        }
        let path = entry.path();
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let without_ext = name.replace(".bin", "").replace(".safetensors", "");
        if name.starts_with(stem) && is_shard_stem(&without_ext) {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_huggingface_hub_parses_them() {
        assert_eq!(parse_shard_size("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_shard_size("5MB").unwrap(), 5_000_000);
        assert_eq!(parse_shard_size("500KB").unwrap(), 500_000);
        assert_eq!(parse_shard_size(" 1.5gb ").unwrap(), 1_500_000_000);
        assert_eq!(parse_shard_size("2TB").unwrap(), 2_000_000_000_000);
        for bad in ["1234", "10GiB", "GB", "", "ten GB", "-1GB", "10 B", "infGB"] {
            let err = parse_shard_size(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("max_shard_size"),
                "{bad}"
            );
        }
    }

    #[test]
    fn shards_fill_in_order_and_large_tensors_stand_alone() {
        // huggingface_hub's docstring example: [6, 6, 2, 6, 2, 2] under 10 → [6], [6+2], [6+2+2].
        let plan = split(&[6, 6, 2, 6, 2, 2], 10, "m{suffix}.safetensors");
        let files: Vec<(&str, &[usize])> = plan.files.iter().map(|(f, t)| (f.as_str(), t.as_slice())).collect();
        assert_eq!(
            files,
            [
                ("m-00001-of-00003.safetensors", &[0][..]),
                ("m-00002-of-00003.safetensors", &[1, 2][..]),
                ("m-00003-of-00003.safetensors", &[3, 4, 5][..])
            ]
        );
        assert_eq!(plan.total_size, 24);
        // A tensor over the limit gets its own shard; the current shard goes on after it.
        let plan = split(&[2, 30, 2], 10, "m{suffix}.safetensors");
        let tensors: Vec<&[usize]> = plan.files.iter().map(|(_, t)| t.as_slice()).collect();
        assert_eq!(tensors, [&[1][..], &[0, 2][..]]);
        // Everything fits: one file, no suffix.
        let plan = split(&[2, 3], 10, "m{suffix}.safetensors");
        assert!(!plan.is_sharded());
        assert_eq!(plan.files, vec![("m.safetensors".to_string(), vec![0, 1])]);
    }

    #[test]
    fn shard_names_are_recognised_as_diffusers_does() {
        assert!(is_shard_stem("diffusion_pytorch_model-00001-of-00002"));
        assert!(is_shard_stem("diffusion_pytorch_model.fp16-00002-of-00002"));
        assert!(!is_shard_stem("diffusion_pytorch_model"));
        assert!(!is_shard_stem("diffusion_pytorch_model-0001-of-00002"));
        assert!(!is_shard_stem("diffusion_pytorch_model-00001-of-00002x"));
    }
}
