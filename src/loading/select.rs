//! Which weights file a model folder is read from, decided over a list of file names: the same
//! choice for a local folder (its entries) and a Hub repository (its file list, before anything is
//! downloaded), in diffusers' order.

use crate::error::{Error, Result};

/// diffusers' weights file stem.
pub const WEIGHTS_NAME: &str = "diffusion_pytorch_model";

/// The weights file chosen: one file, or a shard index whose shards are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsChoice {
    Single(String),
    Index(String),
}

impl WeightsChoice {
    pub fn name(&self) -> &str {
        match self {
            WeightsChoice::Single(n) | WeightsChoice::Index(n) => n,
        }
    }
}

/// Checks a variant name: a file-name infix, not a path.
pub fn check_variant(variant: Option<&str>) -> Result<()> {
    match variant {
        Some(v) if v.is_empty() || v.contains(['/', '\\']) || v.contains("..") => {
            Err(Error::argument("variant", format!("{v:?} is not a variant name (e.g. \"fp16\")")))
        }
        _ => Ok(()),
    }
}

/// The weights to read among `names` (file names in the model folder), in diffusers' order:
/// safetensors, sharded safetensors, then `.bin`, sharded `.bin`, each with the variant infix when
/// one is asked for. `use_safetensors`: `None` takes the first present; `Some(true)` only
/// safetensors; `Some(false)` the `.bin` formats first, safetensors when there is no `.bin`.
/// `where_` names the folder in the error when nothing fits.
pub fn choose_weights(
    names: &[&str],
    variant: Option<&str>,
    use_safetensors: Option<bool>,
    where_: &str,
) -> Result<WeightsChoice> {
    check_variant(variant)?;
    let infix = variant.map(|v| format!(".{v}")).unwrap_or_default();
    let formats: &[&str] = match use_safetensors {
        None => &["safetensors", "bin"],
        Some(true) => &["safetensors"],
        Some(false) => &["bin", "safetensors"],
    };
    for ext in formats {
        let single = format!("{WEIGHTS_NAME}{infix}.{ext}");
        if names.contains(&single.as_str()) {
            return Ok(WeightsChoice::Single(single));
        }
        let index = format!("{WEIGHTS_NAME}.{ext}.index{infix}.json");
        if names.contains(&index.as_str()) {
            return Ok(WeightsChoice::Index(index));
        }
    }
    let mut present: Vec<&str> = names.iter().copied().filter(|n| n.starts_with(WEIGHTS_NAME)).collect();
    present.sort();
    let hint = match (variant, present.is_empty()) {
        (_, true) => String::new(),
        (None, false) => format!("; found {} (pass the variant, e.g. variant=\"fp16\")", present.join(", ")),
        (Some(_), false) => format!("; found {}", present.join(", ")),
    };
    let wanted = if use_safetensors == Some(true) {
        format!("{WEIGHTS_NAME}{infix}.safetensors (or a sharded safetensors index; use_safetensors=True)")
    } else {
        format!("{WEIGHTS_NAME}{infix}.safetensors (or .bin, or a sharded index)")
    };
    Err(Error::NotFound { what: format!("{wanted} in {where_}{hint}") })
}

/// The shard file names a `*.index.json` (text `text`, read from `index`) names, sorted, each a bare
/// file name in the index's folder.
pub fn shard_names(text: &str, index: &std::path::Path) -> Result<Vec<String>> {
    let parsed: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::ConfigParse { path: index.to_path_buf(), reason: e.to_string() })?;
    let bad = |reason: &str| Error::Weights { path: index.to_path_buf(), reason: reason.into() };
    let map = parsed.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no \"weight_map\" object"))?;
    let mut names: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| bad(&format!("weight_map[{tensor:?}] is not a file name")))?;
        if file.contains(['/', '\\']) || file.starts_with('.') {
            return Err(bad(&format!("shard name {file:?} points outside the model folder")));
        }
        if !names.iter().any(|n| n == file) {
            names.push(file.to_string());
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(bad("the weight_map is empty"));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[&str] = &[
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.bin",
        "diffusion_pytorch_model.fp16.safetensors",
        "diffusion_pytorch_model.bin.index.ema.json",
    ];

    #[test]
    fn diffusers_order() {
        let pick = |v, s| choose_weights(ALL, v, s, "x").map(|c| c.name().to_string());
        assert_eq!(pick(None, None).unwrap(), "diffusion_pytorch_model.safetensors");
        assert_eq!(pick(None, Some(false)).unwrap(), "diffusion_pytorch_model.bin");
        assert_eq!(pick(Some("fp16"), None).unwrap(), "diffusion_pytorch_model.fp16.safetensors");
        assert_eq!(pick(Some("ema"), None).unwrap(), "diffusion_pytorch_model.bin.index.ema.json");
        let err = pick(Some("ema"), Some(true)).unwrap_err().to_string();
        assert!(err.contains("use_safetensors=True"), "{err}");
        assert!(pick(Some("../x"), None).is_err());
        let only_bin = ["diffusion_pytorch_model.bin"];
        assert!(choose_weights(&only_bin, None, Some(true), "x").is_err());
        assert!(choose_weights(&only_bin, None, None, "x").is_ok());
    }
}
