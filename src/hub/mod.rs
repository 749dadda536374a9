//! Hugging Face Hub downloads, as huggingface_hub does them and into its cache, for the library,
//! the Python package and the CLI alike: `UNet2DModel::from_pretrained("org/name", …)` fetches the
//! model's `config.json` and the one weights file it reads, and nothing else.
//!
//! * [`settings`]: `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN` / the token file,
//!   `HF_HUB_OFFLINE`, each overridable by [`HubOptions`].
//! * [`cache`]: huggingface_hub's cache layout (`models--org--name/{blobs,snapshots,refs}`), so
//!   that either tool reuses the other's downloads.
//! * [`plan`]: which files a model, a pipeline or a scheduler needs, from the repository's file list.
//! * [`download`]: one file's metadata (`HEAD` on `resolve/`), then its bytes, resumed, checked and
//!   renamed into `blobs/` atomically.
//! * [`http`]: the client and the Hub's error answers ([`HubError`]).
//!
//! The client is [ureq] 3 with rustls (ring) and webpki roots: blocking, a small dependency tree
//! (no async runtime, no OpenSSL), and exact control of each request. The `hf-hub` crate (0.4, 1.0)
//! was not used: its API downloads one file at a time through its own cache code, where this crate
//! needs to pick files from the revision's file list before fetching any, to read `X-Repo-Commit`
//! (and fail clearly on a server that is no Hub), to resume into `blobs/<etag>.incomplete` under
//! huggingface_hub's lock files, to verify the sha256 of LFS files, to report progress per file to
//! any front end, and to name each failure (private repository, missing file, unknown revision,
//! offline with an empty cache) in the crate's own [`Error`](crate::Error).
//!
//! The flow (huggingface_hub's `snapshot_download`, restricted to the files needed):
//! `GET {endpoint}/api/models/{repo}/revision/{revision}` gives the commit and the file list; the
//! commit is recorded in `refs/<revision>`; each needed file not already in
//! `snapshots/<commit>/` is resolved (`HEAD {endpoint}/{repo}/resolve/{commit}/{path}`: `X-Repo-Commit`,
//! `ETag`/`X-Linked-Etag`, `X-Linked-Size`, and the redirect to the bytes), downloaded into
//! `blobs/<etag>` and linked into the snapshot. Offline (`HF_HUB_OFFLINE=1`, `local_files_only`),
//! or when the Hub cannot be reached, the snapshot `refs/<revision>` names is used if it holds every
//! needed file.

mod cache;
mod download;
mod error;
mod http;
mod plan;
mod settings;

pub use cache::looks_like_repo_id;
pub use error::HubError;
pub use settings::{cache_dir, DEFAULT_ENDPOINT};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use cache::RepoCache;
use http::{Asked, Client};
use plan::{Plan, PlanError};

/// The branch huggingface_hub downloads when no revision is given.
pub const DEFAULT_REVISION: &str = "main";

/// The token sent to the Hub.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Token {
    /// `$HF_TOKEN`, else the token file (`$HF_TOKEN_PATH`, `$HF_HOME/token`), else none: what
    /// huggingface_hub does with `token=None` / `token=True`.
    #[default]
    FromEnvironment,
    /// No token, whatever the environment holds (`token=False`).
    Disabled,
    /// This token.
    Value(String),
}

/// How far one file's download is, for a progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadProgress {
    /// The file's path in the repository (`unet/diffusion_pytorch_model.safetensors`).
    pub file: String,
    /// Bytes written so far (a resumed download starts at what was already there).
    pub downloaded: u64,
    /// The file's size, when the Hub says it.
    pub total: Option<u64>,
}

/// Called as a download goes on: at its start, about every MiB, and at its end.
pub type ProgressFn = Arc<dyn Fn(&DownloadProgress) + Send + Sync>;

/// How Hub ids are downloaded: huggingface_hub's keyword arguments.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct HubOptions {
    /// A branch, tag or commit id; `None`: `"main"`.
    pub revision: Option<String>,
    /// The cache folder; `None`: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    pub token: Token,
    /// Use the cache only (as `HF_HUB_OFFLINE=1` does).
    pub local_files_only: bool,
    /// Download the files again even when cached.
    pub force_download: bool,
    /// The Hub's URL; `None`: `$HF_ENDPOINT`, else <https://huggingface.co>.
    pub endpoint: Option<String>,
    /// Called as each file downloads.
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = match &self.token {
            Token::Value(_) => "Value(<hidden>)",
            Token::Disabled => "Disabled",
            Token::FromEnvironment => "FromEnvironment",
        };
        f.debug_struct("HubOptions")
            .field("revision", &self.revision)
            .field("cache_dir", &self.cache_dir)
            .field("token", &token)
            .field("local_files_only", &self.local_files_only)
            .field("force_download", &self.force_download)
            .field("endpoint", &self.endpoint)
            .field("progress", &self.progress.as_ref().map(|_| "<callback>"))
            .finish()
    }
}

/// What a load needs from a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// A UNet: `config.json` (in `subfolder`, else the root, else `unet/`) and its weights.
    Model { subfolder: Option<String>, variant: Option<String>, use_safetensors: Option<bool> },
    /// A pipeline: `model_index.json`, the UNet (`unet/`, or the root of a bare UNet repository)
    /// and its scheduler config.
    Pipeline { variant: Option<String>, use_safetensors: Option<bool> },
    /// A scheduler: `scheduler_config.json` in `subfolder`, else the root, else `scheduler/`.
    Scheduler { subfolder: Option<String> },
}

/// `path` when it exists (a folder or a file); else, when it is a Hub id, its snapshot folder with
/// what `wanted` needs downloaded into it; else `None` (the caller says what was not found).
pub fn locate(path: &Path, wanted: &Wanted, options: &HubOptions) -> Result<Option<PathBuf>> {
    if crate::files::exists(path) || path.symlink_metadata().is_ok() {
        return Ok(Some(path.to_path_buf()));
    }
    match path.to_str() {
        Some(id) if looks_like_repo_id(id) => snapshot(id, wanted, options).map(Some),
        _ => Ok(None),
    }
}

/// The snapshot folder of `repo_id` at the options' revision, holding every file `wanted` needs:
/// downloaded when missing, or (offline, or with the Hub unreachable) found in the cache.
pub fn snapshot(repo_id: &str, wanted: &Wanted, options: &HubOptions) -> Result<PathBuf> {
    if !looks_like_repo_id(repo_id) {
        return Err(Error::argument("repo_id", format!("{repo_id:?} is not a Hub repository id (org/name)")));
    }
    check_wanted(wanted)?;
    let revision = options.revision.as_deref().unwrap_or(DEFAULT_REVISION);
    if revision.is_empty() || revision.len() > 256 || revision.chars().any(char::is_control) {
        return Err(Error::argument("revision", format!("{revision:?} is not a branch, tag or commit id")));
    }
    let repo = RepoCache::new(&settings::cache_of(options), repo_id);
    let why = if options.local_files_only {
        Some("local_files_only is set")
    } else if settings::offline_from_env() {
        Some("HF_HUB_OFFLINE is set")
    } else {
        None
    };
    if let Some(why) = why {
        return from_cache(&repo, repo_id, revision, wanted, why);
    }
    let client = Client::new(settings::endpoint(options), settings::token(options));
    let (commit, all) = match revision_info(&client, &repo, repo_id, revision) {
        Ok(info) => info,
        // huggingface_hub falls back to the cache when the Hub cannot be reached or fails (not when
        // it says the repository or revision does not exist); a forced download cannot.
        Err(e) if http::cache_may_stand_in(&e) && !options.force_download => {
            return from_cache(&repo, repo_id, revision, wanted, "the Hub failed").map_err(|_| {
                HubError::Unreachable {
                    endpoint: client.endpoint.clone(),
                    reason: e.to_string(),
                    cached: repo.describe(),
                }
                .into()
            });
        }
        Err(e) => return Err(e),
    };
    download_plan(&client, &repo, repo_id, revision, &commit, &all, wanted, options)
}

/// Refuses subfolders that would leave the repository.
fn check_wanted(wanted: &Wanted) -> Result<()> {
    let subfolder = match wanted {
        Wanted::Model { subfolder, variant, .. } => {
            crate::loading::check_variant(variant.as_deref())?;
            subfolder
        }
        Wanted::Pipeline { variant, .. } => {
            crate::loading::check_variant(variant.as_deref())?;
            &None
        }
        Wanted::Scheduler { subfolder } => subfolder,
    };
    match subfolder {
        Some(sub) if !safe_repo_path(sub.trim_end_matches('/')) => {
            Err(Error::argument("subfolder", format!("{sub:?} is not a folder inside the repository")))
        }
        _ => Ok(()),
    }
}

/// A relative path that stays inside its folder.
fn safe_repo_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
}

/// The commit `revision` is at and the repository's files there (the revision API), with
/// `refs/<revision>` recorded.
fn revision_info(client: &Client, repo: &RepoCache, repo_id: &str, revision: &str) -> Result<(String, Vec<String>)> {
    let asked = Asked { endpoint: &client.endpoint, repo: repo_id, revision, path: None };
    let url = format!("{}/api/models/{repo_id}/revision/{}", client.endpoint, download::encode(revision));
    let (_, info) = client.get_json(&url, asked)?;
    let not_hub = |reason: &str| HubError::NotAHub { url: url.clone(), reason: reason.into() };
    let commit = info.get("sha").and_then(|s| s.as_str()).filter(|s| cache::is_commit(s));
    let commit = commit.ok_or_else(|| not_hub("its answer has no commit id (\"sha\")"))?.to_string();
    let siblings =
        info.get("siblings").and_then(|s| s.as_array()).ok_or_else(|| not_hub("its answer has no \"siblings\""))?;
    // Only paths inside the repository: a file list naming `../x` must not write outside the cache.
    let all: Vec<String> = siblings
        .iter()
        .filter_map(|s| s.get("rfilename").and_then(|n| n.as_str()))
        .filter(|n| safe_repo_path(n))
        .map(str::to_string)
        .collect();
    if revision != commit {
        repo.write_ref(revision, &commit)?;
    }
    Ok((commit, all))
}

/// Downloads what `wanted` needs (of the files `all` at `commit`) and is missing from the snapshot.
#[allow(clippy::too_many_arguments)]
fn download_plan(
    client: &Client,
    repo: &RepoCache,
    repo_id: &str,
    revision: &str,
    commit: &str,
    all: &[String],
    wanted: &Wanted,
    options: &HubOptions,
) -> Result<PathBuf> {
    let plan = plan::plan(wanted, all).map_err(|e| e.into_error(repo_id, revision))?;
    let dir = repo.snapshot(commit);
    let fetch = |path: &str| fetch_file(client, repo, repo_id, commit, path, options);
    for file in &plan.files {
        fetch(file)?;
    }
    for shard in shards(&dir, &plan)? {
        if !all.contains(&shard) {
            return Err(HubError::EntryNotFound {
                repo: repo_id.into(),
                revision: revision.into(),
                path: shard,
                hint: " (a shard its index names)".into(),
            }
            .into());
        }
        fetch(&shard)?;
    }
    Ok(dir)
}

/// Puts `path` into `snapshots/<commit>/` unless it is there already (and not forced).
fn fetch_file(
    client: &Client,
    repo: &RepoCache,
    repo_id: &str,
    commit: &str,
    path: &str,
    options: &HubOptions,
) -> Result<()> {
    let target = repo.snapshot(commit).join(path);
    if !options.force_download && target.is_file() {
        return Ok(());
    }
    let asked = Asked { endpoint: &client.endpoint, repo: repo_id, revision: commit, path: Some(path) };
    let meta = download::file_meta(client, asked, commit)?;
    download::ensure_blob(client, repo, &meta, path, options.force_download, options.progress.as_ref())?;
    cache::link_into_snapshot(&repo.blob(&meta.etag), &target, path.matches('/').count())
}

/// The shard paths the plan's indexes (already in `dir`) name, each beside its index.
fn shards(dir: &Path, plan: &Plan) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for index in &plan.indexes {
        let file = dir.join(index);
        let text = crate::files::read_json_text(&file)?;
        let folder = index.rsplit_once('/').map(|(d, _)| format!("{d}/")).unwrap_or_default();
        for name in crate::loading::shard_names(&text, &file)? {
            out.push(format!("{folder}{name}"));
        }
    }
    Ok(out)
}

/// The cached snapshot of `revision`, if it holds everything `wanted` needs; else the error saying
/// what the cache has.
fn from_cache(repo: &RepoCache, repo_id: &str, revision: &str, wanted: &Wanted, why: &str) -> Result<PathBuf> {
    let not_cached = |reason: String| -> Error {
        HubError::NotCached { repo: repo_id.into(), reason, why: why.into(), cached: repo.describe() }.into()
    };
    let Some((commit, dir)) = repo.cached_snapshot(revision) else {
        return Err(not_cached(format!("no snapshot for revision {revision:?}")));
    };
    let mut all = Vec::new();
    list_files(&dir, "", 0, &mut all);
    let plan = plan::plan(wanted, &all).map_err(|e| match e {
        PlanError::Missing(m) => not_cached(format!("snapshot {commit} has no {}{}", m.path, m.hint)),
        PlanError::Other(e) => e,
    })?;
    for shard in shards(&dir, &plan)? {
        if !dir.join(&shard).is_file() {
            return Err(not_cached(format!("snapshot {commit} has no {shard}")));
        }
    }
    Ok(dir)
}

/// The files under `dir` (following the snapshot's symlinks; dangling ones left out), as paths
/// relative to it, a few levels deep.
fn list_files(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(|e| e.ok()).take(10_000) {
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let path = entry.path();
        if path.is_dir() {
            if depth < 4 {
                list_files(&path, &format!("{name}/"), depth + 1, out);
            }
        } else if path.is_file() {
            out.push(name);
        }
    }
}
