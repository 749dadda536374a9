//! huggingface_hub's cache layout, so that either tool reuses the other's downloads:
//!
//! ```text
//! <cache>/models--org--name/blobs/<etag>                 the file's bytes, named by its ETag
//!                          /snapshots/<commit>/<path>    a relative symlink to ../../blobs/<etag>
//!                          /refs/<revision>              the commit a branch or tag pointed at
//! <cache>/.locks/models--org--name/<etag>.lock           held while a blob is written
//! ```

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Whether `s` looks like a Hub repo id (`org/name`, or `name`) rather than a path.
pub fn looks_like_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    let ok_part = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(parts.len(), 1 | 2) && parts.iter().all(|p| ok_part(p)) && !s.starts_with('.')
}

/// Whether `s` is a full commit id (40 hex digits), which needs no ref to find its snapshot.
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One repository's folder in a cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    /// `<cache>/models--org--name`.
    pub dir: PathBuf,
    /// `<cache>/.locks/models--org--name`.
    pub locks: PathBuf,
}

impl RepoCache {
    pub fn new(cache: &Path, repo_id: &str) -> Self {
        let name = format!("models--{}", repo_id.replace('/', "--"));
        Self { dir: cache.join(&name), locks: cache.join(".locks").join(name) }
    }

    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(etag)
    }

    /// The commit `refs/<revision>` names, if it was written.
    pub fn read_ref(&self, revision: &str) -> Option<String> {
        let path = self.ref_path(revision)?;
        // A ref is one line; read as the other small text files are (regular file, capped).
        let text = crate::files::read_json_text(&path).ok()?;
        let commit = text.trim();
        is_commit(commit).then(|| commit.to_string())
    }

    /// Records that `revision` points at `commit`, atomically (a reader never sees half a ref).
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        let Some(path) = self.ref_path(revision) else { return Ok(()) };
        if self.read_ref(revision).as_deref() == Some(commit) {
            return Ok(());
        }
        let parent = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let tmp = unique_sibling(&path, "ref");
        std::fs::write(&tmp, commit).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(&path, e)
        })
    }

    /// `refs/<revision>`; `None` for a revision that would leave `refs/` (`..`, an absolute path).
    fn ref_path(&self, revision: &str) -> Option<PathBuf> {
        let safe = !revision.is_empty()
            && !revision.starts_with('/')
            && revision.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
            && !revision.contains('\\');
        safe.then(|| self.dir.join("refs").join(revision))
    }

    /// The snapshot `revision` resolves to without the network: itself when it is a commit with a
    /// snapshot, else the commit its ref names.
    pub fn cached_snapshot(&self, revision: &str) -> Option<(String, PathBuf)> {
        if is_commit(revision) && self.snapshot(revision).is_dir() {
            return Some((revision.to_string(), self.snapshot(revision)));
        }
        let commit = self.read_ref(revision)?;
        let dir = self.snapshot(&commit);
        dir.is_dir().then_some((commit, dir))
    }

    /// What the cache holds for this repository, for error messages: its refs and snapshots.
    pub fn describe(&self) -> String {
        if !self.dir.is_dir() {
            return format!("has nothing for this repository (looked in {})", self.dir.display());
        }
        let mut refs = Vec::new();
        collect_refs(&self.dir.join("refs"), "", &mut refs);
        refs.sort();
        let mut snapshots: Vec<String> = std::fs::read_dir(self.dir.join("snapshots"))
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        snapshots.sort();
        let list = |items: &[String]| if items.is_empty() { "none".to_string() } else { items.join(", ") };
        format!("({}) holds refs: {}; snapshots: {}", self.dir.display(), list(&refs), list(&snapshots))
    }
}

/// `name -> commit` for each ref file under `dir` (refs may nest: `refs/pr/1`), a few levels deep.
fn collect_refs(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(|e| e.ok()).take(1000) {
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let path = entry.path();
        if path.is_dir() {
            if prefix.matches('/').count() < 4 {
                collect_refs(&path, &format!("{name}/"), out);
            }
        } else {
            let commit = crate::files::read_json_text(&path).map(|t| t.trim().to_string()).unwrap_or_default();
            out.push(format!("{name} -> {}", if commit.is_empty() { "?" } else { &commit }));
        }
    }
}

/// A name beside `path` no other process or thread uses: `<name>.<tag>.<pid>.<n>.tmp`.
pub fn unique_sibling(path: &Path, tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{tag}.{}.{n}.tmp", std::process::id()))
}

/// Puts `snapshots/<commit>/<path>` in place, pointing at `blob`: a relative symlink (what
/// huggingface_hub makes), or a copy where symlinks cannot be made. Replaces what was there
/// atomically, so a reader sees the old file or the new one, never none.
pub fn link_into_snapshot(blob: &Path, target: &Path, depth_below_snapshot: usize) -> Result<()> {
    let parent = target.parent().ok_or_else(|| Error::NotFound { what: format!("folder of {}", target.display()) })?;
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = unique_sibling(target, "link");
    let linked = symlink_relative(blob, &tmp, depth_below_snapshot).is_ok();
    if !linked {
        std::fs::copy(blob, &tmp).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(&tmp, e)
        })?;
    }
    std::fs::rename(&tmp, target).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(target, e)
    })
}

/// `link` -> `../../(../)*blobs/<etag>`: two levels up from the snapshot folder, one more per
/// subfolder the file is in.
#[cfg(unix)]
fn symlink_relative(blob: &Path, link: &Path, depth_below_snapshot: usize) -> std::io::Result<()> {
    let etag = blob.file_name().unwrap_or_default();
    let mut rel = PathBuf::new();
    for _ in 0..depth_below_snapshot + 2 {
        rel.push("..");
    }
    rel.push("blobs");
    rel.push(etag);
    std::os::unix::fs::symlink(rel, link)
}

#[cfg(not(unix))]
fn symlink_relative(_blob: &Path, _link: &Path, _depth: usize) -> std::io::Result<()> {
    // Windows needs developer mode for symlinks; a copy always works.
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "no symlinks"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(looks_like_repo_id("google/ddpm-cifar10-32"));
        assert!(looks_like_repo_id("gpt2"));
        assert!(!looks_like_repo_id("../x/y"));
        assert!(!looks_like_repo_id("./x"));
        assert!(!looks_like_repo_id("/abs/path"));
        assert!(!looks_like_repo_id("a/b/c"));
    }

    #[test]
    fn refs_round_trip_and_stay_inside() {
        let cache = std::env::temp_dir().join(format!("unet2d-hub-cache-test-{}", std::process::id()));
        let repo = RepoCache::new(&cache, "org/name");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        repo.write_ref("main", commit).unwrap();
        repo.write_ref("refs/pr/1", commit).unwrap();
        assert_eq!(repo.read_ref("main").as_deref(), Some(commit));
        assert_eq!(repo.read_ref("refs/pr/1").as_deref(), Some(commit));
        assert!(repo.cached_snapshot("main").is_none(), "no snapshot folder yet");
        std::fs::create_dir_all(repo.snapshot(commit)).unwrap();
        assert_eq!(repo.cached_snapshot("main").unwrap().0, commit);
        assert_eq!(repo.cached_snapshot(commit).unwrap().0, commit);
        assert!(repo.ref_path("../../etc").is_none());
        let described = repo.describe();
        assert!(described.contains("main -> 0123") && described.contains(commit), "{described}");
        std::fs::remove_dir_all(&cache).unwrap();
    }
}
