//! Resolving a Hugging Face Hub id (`google/ddpm-cifar10-32`) to a snapshot folder in the local Hub
//! cache, without the network: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`,
//! laid out as `models--org--name/snapshots/<revision>/` with `refs/main` naming the revision.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The Hub cache folder this process would use.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache").join("huggingface").join("hub")
}

/// Whether `s` looks like a Hub repo id (`org/name`, or `name`) rather than a path.
pub fn looks_like_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    let ok_part = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(parts.len(), 1 | 2) && parts.iter().all(|p| ok_part(p))
}

/// The snapshot folder of `repo_id` in the local cache.
pub fn resolve(repo_id: &str) -> Result<PathBuf> {
    resolve_in(&cache_dir(), repo_id)
}

fn resolve_in(cache: &Path, repo_id: &str) -> Result<PathBuf> {
    let repo_dir = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let snapshots = repo_dir.join("snapshots");
    let not_cached = || Error::NotFound {
        what: format!(
            "{repo_id:?} is neither a local folder nor in the local Hugging Face cache ({}); \
             download it first (e.g. `huggingface-cli download {repo_id}`) or pass a folder",
            cache.display()
        ),
    };
    if !snapshots.is_dir() {
        return Err(not_cached());
    }
    // refs/main names the revision a plain download points at.
    // Read as the other small text files are: a regular file only, and capped.
    if let Ok(rev) = crate::files::read_json_text(&repo_dir.join("refs").join("main")) {
        let dir = snapshots.join(rev.trim());
        if dir.is_dir() {
            return Ok(dir);
        }
    }
    // Otherwise the most recently written snapshot.
    let newest = std::fs::read_dir(&snapshots)
        .map_err(|e| Error::io(&snapshots, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    newest.map(|e| e.path()).ok_or_else(not_cached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(looks_like_repo_id("google/ddpm-cifar10-32"));
        assert!(!looks_like_repo_id("../x/y"));
        assert!(!looks_like_repo_id("/abs/path"));
        assert!(!looks_like_repo_id("a/b/c"));
    }

    #[test]
    fn resolves_refs_main_and_reports_missing() {
        let cache = std::env::temp_dir().join(format!("unet2d-hub-test-{}", std::process::id()));
        let repo = cache.join("models--org--name");
        std::fs::create_dir_all(repo.join("snapshots").join("abc123")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), "abc123\n").unwrap();
        assert_eq!(resolve_in(&cache, "org/name").unwrap(), repo.join("snapshots").join("abc123"));
        let err = resolve_in(&cache, "org/other").unwrap_err().to_string();
        assert!(err.contains("local Hugging Face cache"), "{err}");
        std::fs::remove_dir_all(&cache).unwrap();
    }
}
