//! The settings huggingface_hub reads from the environment, each overridable by [`HubOptions`]:
//! `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN` (then `HF_TOKEN_PATH`, then the token file
//! `$HF_HOME/token`), `HF_HUB_OFFLINE`.

use std::path::PathBuf;

use super::{HubOptions, Token};

/// The Hub huggingface_hub talks to when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Largest token file read: a token is a few dozen bytes, so anything bigger is not one.
const MAX_TOKEN_BYTES: u64 = 4096;

/// `$HF_HOME`, else `~/.cache/huggingface` (huggingface_hub also honours `XDG_CACHE_HOME`).
pub fn hf_home() -> PathBuf {
    if let Some(home) = non_empty_var("HF_HOME") {
        return PathBuf::from(home);
    }
    if let Some(xdg) = non_empty_var("XDG_CACHE_HOME") {
        return PathBuf::from(xdg).join("huggingface");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache").join("huggingface")
}

/// The Hub cache folder this process uses by default: `$HF_HUB_CACHE`, else `$HF_HOME/hub`.
pub fn cache_dir() -> PathBuf {
    match non_empty_var("HF_HUB_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => hf_home().join("hub"),
    }
}

/// Whether `HF_HUB_OFFLINE` turns downloads off (huggingface_hub's truthy values).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "on" | "yes" | "true"))
}

/// The endpoint of `options`, else `$HF_ENDPOINT`, else [`DEFAULT_ENDPOINT`]; without a trailing `/`.
pub fn endpoint(options: &HubOptions) -> String {
    let chosen = options.endpoint.clone().or_else(|| non_empty_var("HF_ENDPOINT"));
    chosen.unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()).trim_end_matches('/').to_string()
}

/// The cache folder of `options`, else [`cache_dir`].
pub fn cache_of(options: &HubOptions) -> PathBuf {
    options.cache_dir.clone().unwrap_or_else(cache_dir)
}

/// The token to send, if any: the given one, or `$HF_TOKEN`, else the token file.
pub fn token(options: &HubOptions) -> Option<String> {
    let token = match &options.token {
        Token::Disabled => return None,
        Token::Value(t) => Some(t.clone()),
        Token::FromEnvironment => non_empty_var("HF_TOKEN").or_else(token_from_file),
    };
    token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

/// The token `huggingface-cli login` saved: `$HF_TOKEN_PATH`, else `$HF_HOME/token`.
fn token_from_file() -> Option<String> {
    let path = non_empty_var("HF_TOKEN_PATH").map(PathBuf::from).unwrap_or_else(|| hf_home().join("token"));
    let meta = std::fs::metadata(&path).ok()?;
    // A regular file of token size only: the file is optional, so anything else is ignored.
    if !meta.is_file() || meta.len() > MAX_TOKEN_BYTES {
        return None;
    }
    std::fs::read_to_string(&path).ok()
}

fn non_empty_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
