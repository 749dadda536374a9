//! One file: its metadata from a `HEAD` on `resolve/<commit>/<path>` (huggingface_hub's
//! `get_hf_file_metadata`), then its bytes into `blobs/<etag>`.
//!
//! The bytes go to `blobs/<etag>.incomplete` first, under a lock file (`.locks/…/<etag>.lock`, the
//! one huggingface_hub takes, so the two tools never write one blob at once); a partial file left by
//! an interrupted run is resumed with a `Range` request (restarted when the server ignores it). The
//! result is checked — its size against `X-Linked-Size` / `Content-Length`, and for a Git LFS file,
//! whose ETag is its sha256, the hash — before it is renamed into place: a corrupt or truncated
//! transfer never becomes a blob, so it never reaches a snapshot.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::cache::RepoCache;
use super::error::HubError;
use super::http::{header, hub_error, join_url, Asked, Client, MAX_REDIRECTS};
use super::{DownloadProgress, ProgressFn};
use crate::error::{Error, Result};

/// What the Hub says of a file before it is downloaded.
#[derive(Debug, Clone)]
pub struct FileMeta {
    /// `X-Linked-Etag` (LFS files: the sha256), else `ETag` (the git blob id); unquoted.
    pub etag: String,
    /// `X-Linked-Size`, else `Content-Length`.
    pub size: Option<u64>,
    /// Where the bytes are: the redirect target for LFS files, else the `resolve/` URL itself.
    pub location: String,
}

/// `HEAD resolve/<commit>/<path>` without following the redirect to the bytes: the headers that
/// name the file are on the Hub's own answer.
pub fn file_meta(client: &Client, asked: Asked<'_>, commit: &str) -> Result<FileMeta> {
    let path = asked.path.unwrap_or_default();
    let url = format!("{}/{}/resolve/{}/{}", client.endpoint, asked.repo, encode(commit), encode_path(path));
    let mut current = url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let response = client.send("HEAD", &current, &[("Accept-Encoding", "identity".into())])?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let location = header(&headers, "location").map(|l| join_url(&current, &l));
        // A relative redirect stays on the Hub (a renamed repository): follow it and ask again.
        if response.status().is_redirection() && header(&headers, "x-repo-commit").is_none() {
            let relative = header(&headers, "location").is_some_and(|l| l.starts_with('/'));
            if let (true, Some(next)) = (relative, location.clone()) {
                current = next;
                continue;
            }
        }
        if !(200..400).contains(&status) {
            return Err(hub_error(asked, &current, status, &headers, &mut response.into_body()).into());
        }
        let not_hub = |reason: &str| HubError::NotAHub { url: current.clone(), reason: reason.into() };
        // Only a Hub names the commit it resolved; the value is the commit asked for.
        header(&headers, "x-repo-commit").ok_or_else(|| not_hub("no X-Repo-Commit header"))?;
        let etag = header(&headers, "x-linked-etag")
            .or_else(|| header(&headers, "etag"))
            .map(|e| unquote_etag(&e))
            .ok_or_else(|| not_hub("no ETag header"))?;
        if !safe_etag(&etag) {
            return Err(not_hub(&format!("ETag {etag:?} is not a hash")).into());
        }
        let size = header(&headers, "x-linked-size")
            .or_else(|| header(&headers, "content-length"))
            .map(|s| s.parse::<u64>().map_err(|_| not_hub(&format!("size {s:?} is not a number"))))
            .transpose()?;
        let location = if response.status().is_redirection() {
            location.ok_or_else(|| not_hub("a redirect without Location"))?
        } else {
            current.clone()
        };
        return Ok(FileMeta { etag, size, location });
    }
    Err(HubError::Http { url, status: 310, detail: ": too many redirects".into() }.into())
}

/// `W/"abc"` → `abc`.
fn unquote_etag(etag: &str) -> String {
    etag.trim_start_matches("W/").trim_matches('"').to_string()
}

/// An ETag that is safe as a file name (the Hub's are hex hashes).
fn safe_etag(etag: &str) -> bool {
    (8..=128).contains(&etag.len()) && etag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether an ETag is a sha256 (a Git LFS file), which the downloaded bytes must hash to.
fn is_sha256(etag: &str) -> bool {
    etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Makes sure `blobs/<etag>` holds the file `meta` describes: downloads it unless it is there (or
/// `force`), resuming a partial download. `name` is the file's path in the repository, for messages
/// and progress.
pub fn ensure_blob(
    client: &Client,
    repo: &RepoCache,
    meta: &FileMeta,
    name: &str,
    force: bool,
    progress: Option<&ProgressFn>,
) -> Result<()> {
    let blob = repo.blob(&meta.etag);
    if !force && blob.is_file() {
        return Ok(());
    }
    for dir in [blob.parent().unwrap_or(&repo.dir), repo.locks.as_path()] {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let lock_path = repo.locks.join(format!("{}.lock", meta.etag));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, e))?;
    // Another process writing this blob holds it; when it lets go the blob is there.
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;
    if !force && blob.is_file() {
        return Ok(());
    }
    let incomplete = blob.with_file_name(format!("{}.incomplete", meta.etag));
    if force {
        let _ = std::fs::remove_file(&incomplete);
    }
    download_to(client, meta, &incomplete, name, progress)?;
    if let Err(reason) = verify(&incomplete, meta) {
        let _ = std::fs::remove_file(&incomplete);
        return Err(HubError::Corrupt { path: name.into(), reason }.into());
    }
    std::fs::rename(&incomplete, &blob).map_err(|e| Error::io(&blob, e))
}

/// Fetches `meta.location` into `incomplete`, appending to what is there when the server honours
/// a `Range` request.
fn download_to(
    client: &Client,
    meta: &FileMeta,
    incomplete: &Path,
    name: &str,
    progress: Option<&ProgressFn>,
) -> Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(incomplete)
        .map_err(|e| Error::io(incomplete, e))?;
    let mut have = file.metadata().map_err(|e| Error::io(incomplete, e))?.len();
    if meta.size.is_some_and(|size| have > size) {
        // Longer than the file can be: not a prefix of it.
        have = 0;
    }
    let mut url = meta.location.clone();
    let mut response = None;
    for _ in 0..=MAX_REDIRECTS {
        let mut headers = vec![("Accept-Encoding", "identity".to_string())];
        if have > 0 {
            headers.push(("Range", format!("bytes={have}-")));
        }
        let r = client.send("GET", &url, &headers)?;
        match super::http::redirect_target(&url, &r) {
            Some(next) => url = next,
            None => {
                response = Some(r);
                break;
            }
        }
    }
    let response = response.ok_or_else(|| HubError::Http {
        url: url.clone(),
        status: 310,
        detail: ": too many redirects".into(),
    })?;
    let status = response.status().as_u16();
    match status {
        206 => {}
        // The whole file: the server ignored the range (or none was asked).
        200 => have = 0,
        // The range starts at or past the end: the partial file is no prefix to resume from.
        416 => {
            file.set_len(0).map_err(|e| Error::io(incomplete, e))?;
            drop(file);
            let restarted = FileMeta { location: url, ..meta.clone() };
            return download_to(client, &restarted, incomplete, name, progress);
        }
        _ => {
            let headers = response.headers().clone();
            let detail = super::http::error_detail(&headers, &mut response.into_body());
            return Err(HubError::Http { url, status, detail }.into());
        }
    }
    let length = header(response.headers(), "content-length").and_then(|s| s.parse::<u64>().ok());
    if let (Some(size), Some(length)) = (meta.size, length) {
        // Refused before writing anything: more bytes than the file has.
        if have + length > size {
            return Err(HubError::Corrupt {
                path: name.into(),
                reason: format!("the server sends {} bytes of a {size}-byte file", have + length),
            }
            .into());
        }
    }
    file.set_len(have).map_err(|e| Error::io(incomplete, e))?;
    file.seek(SeekFrom::Start(have)).map_err(|e| Error::io(incomplete, e))?;
    let total = meta.size.or(length.map(|l| l + have));
    let report = |done: u64| {
        if let Some(callback) = progress {
            callback(&DownloadProgress { file: name.to_string(), downloaded: done, total });
        }
    };
    report(have);
    let mut reader = response.into_body().into_reader();
    let mut buf = vec![0u8; 256 << 10];
    let mut done = have;
    let mut last_report = done;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // What arrived stays in the .incomplete file, for the next run to resume.
            Err(e) => return Err(HubError::Transfer { url, reason: e.to_string() }.into()),
        };
        file.write_all(&buf[..n]).map_err(|e| Error::io(incomplete, e))?;
        done += n as u64;
        if total.is_some_and(|t| done > t) {
            return Err(HubError::Corrupt {
                path: name.into(),
                reason: format!("more than the {} bytes announced", total.unwrap_or(0)),
            }
            .into());
        }
        if done - last_report >= 1 << 20 {
            report(done);
            last_report = done;
        }
    }
    file.sync_all().map_err(|e| Error::io(incomplete, e))?;
    report(done);
    Ok(())
}

/// Checks a finished download against what the Hub announced; the reason when it does not match.
fn verify(path: &Path, meta: &FileMeta) -> std::result::Result<(), String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if let Some(size) = meta.size {
        if len != size {
            return Err(format!("{len} bytes arrived, the file has {size}"));
        }
    }
    if is_sha256(&meta.etag) {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if !digest.eq_ignore_ascii_case(&meta.etag) {
            return Err(format!("sha256 {digest}, the Hub says {}", meta.etag));
        }
    }
    Ok(())
}

/// `s` percent-encoded as one URL path segment (huggingface_hub's `quote(revision, safe="")`).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A repository path percent-encoded segment by segment (its `/` kept).
pub fn encode_path(path: &str) -> String {
    path.split('/').map(encode).collect::<Vec<_>>().join("/")
}
