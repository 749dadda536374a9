//! A loopback stand-in for the Hugging Face Hub, for the download tests: it answers
//! `GET /api/models/{repo}/revision/{rev}` (commit and file list) and `HEAD`/`GET
//! /{repo}/resolve/{commit}/{path}` as the Hub does (`X-Repo-Commit`, `ETag`, and for weights,
//! stored as Git LFS files, a 302 to a second server — `localhost` rather than `127.0.0.1`, so
//! another host — with `X-Linked-Etag` / `X-Linked-Size`), honours `Range`, answers 401 for a
//! private repository without its token, and records every request. Faults (a truncated or corrupt
//! transfer, a server that is no Hub) are switched on per test.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

/// One repository: its files at each commit, and which branch or tag points where.
#[derive(Clone, Default)]
pub struct Repo {
    pub id: String,
    /// commit → path → bytes.
    pub commits: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// branch or tag → commit.
    pub refs: BTreeMap<String, String>,
    /// The bearer token it needs, if private.
    pub token: Option<String>,
}

impl Repo {
    /// A repository whose `main` is one commit holding `files`.
    pub fn new(id: &str, commit: &str, files: BTreeMap<String, Vec<u8>>) -> Self {
        let mut repo = Repo { id: id.into(), ..Default::default() };
        repo.commits.insert(commit.into(), files);
        repo.refs.insert("main".into(), commit.into());
        repo
    }
}

/// The files of a folder, as repository paths (`unet/config.json`), under `prefix`.
pub fn folder_files(dir: &Path, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.path().is_dir() {
            out.extend(folder_files(&entry.path(), &format!("{name}/")));
        } else {
            out.insert(name, std::fs::read(entry.path()).unwrap());
        }
    }
    out
}

/// What the server does wrong, for the fault tests.
#[derive(Clone, Default)]
pub struct Faults {
    /// Close the connection after this many bytes of an LFS file (the full length announced).
    pub truncate_lfs_at: Option<usize>,
    /// Send an LFS file with its last byte changed.
    pub corrupt_lfs: bool,
    /// Answer a `Range` request with the whole file (200).
    pub ignore_range: bool,
    /// Leave out `X-Repo-Commit` (a mirror or proxy that is not a Hub).
    pub no_repo_commit: bool,
    /// Answer everything with a 200 HTML page (a web server that is not a Hub at all).
    pub not_a_hub: bool,
    /// Answer the revision API with this status (a failing Hub: 500, 503).
    pub api_status: Option<u16>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the Hub stores `path` with Git LFS (weights are).
fn is_lfs(path: &str) -> bool {
    path.ends_with(".safetensors") || path.ends_with(".bin")
}

struct State {
    repos: Vec<Repo>,
    faults: Faults,
    log: Vec<String>,
    hub: String,
    cdn: String,
}

/// The running server (and its CDN twin); stopped when dropped.
pub struct HubServer {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    pub endpoint: String,
    ports: Vec<u16>,
    threads: Vec<JoinHandle<()>>,
}

impl HubServer {
    pub fn start(repos: Vec<Repo>) -> Self {
        let hub = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn = TcpListener::bind("127.0.0.1:0").unwrap();
        let (hub_port, cdn_port) = (hub.local_addr().unwrap().port(), cdn.local_addr().unwrap().port());
        let endpoint = format!("http://127.0.0.1:{hub_port}");
        let state = Arc::new(Mutex::new(State {
            repos,
            faults: Faults::default(),
            log: Vec::new(),
            hub: endpoint.clone(),
            cdn: format!("http://localhost:{cdn_port}"),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = [hub, cdn]
            .into_iter()
            .map(|listener| {
                let (state, stop) = (state.clone(), stop.clone());
                std::thread::spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        let state = state.clone();
                        std::thread::spawn(move || {
                            let _ = serve(stream, &state);
                        });
                    }
                })
            })
            .collect();
        HubServer { state, stop, endpoint, ports: vec![hub_port, cdn_port], threads }
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().unwrap().faults = faults;
    }

    /// Every request so far, as `"METHOD /path"`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// The repository paths whose bytes were fetched (`GET` on `resolve/`, or on the CDN).
    pub fn downloaded(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        let mut out: Vec<String> = state
            .log
            .iter()
            .filter_map(|r| r.strip_prefix("GET "))
            .filter_map(|r| r.split(' ').next())
            .filter_map(|p| {
                if let Some((_, rest)) = p.split_once("/resolve/") {
                    return rest.split_once('/').map(|(_, path)| path.to_string());
                }
                p.strip_prefix("/cdn/").and_then(|rest| rest.split_once('/')).map(|(_, path)| path.to_string())
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes each accept loop so it sees the flag.
        for port in &self.ports {
            let _ = TcpStream::connect(("127.0.0.1", *port));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Reads one request head (bounded: 64 header lines of at most 8 KiB).
fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?.take(64 << 10));
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    for _ in 0..64 {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    Some(Request { method, path, headers })
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Bytes of the body actually sent (a truncated transfer).
    send_only: Option<usize>,
    /// The Content-Length announced when it is not the body's (HEAD answers).
    length: Option<usize>,
}

impl Answer {
    fn new(status: u16) -> Self {
        Answer { status, headers: Vec::new(), body: Vec::new(), send_only: None, length: None }
    }
    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }
    fn error(status: u16, code: &str) -> Self {
        Answer::new(status).header("X-Error-Code", code).body(format!("{{\"error\":\"{code}\"}}").into_bytes())
    }
}

fn serve(mut stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let Some(request) = read_request(&stream) else { return Ok(()) };
    let answer = {
        let mut state = state.lock().unwrap();
        // `[range=N-]` and `[auth]` say what came with the request.
        let mut entry = format!("{} {}", request.method, request.path);
        if let Some(range) = request.header("Range") {
            entry.push_str(&format!(" [range={}]", range.trim_start_matches("bytes=")));
        }
        if request.header("Authorization").is_some() {
            entry.push_str(" [auth]");
        }
        state.log.push(entry);
        answer(&state, &request)
    };
    let head_only = request.method == "HEAD";
    let length = answer.length.unwrap_or(answer.body.len());
    let mut out = format!("HTTP/1.1 {} X\r\nConnection: close\r\nContent-Length: {length}\r\n", answer.status);
    for (n, v) in &answer.headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes())?;
    if !head_only {
        let n = answer.send_only.unwrap_or(answer.body.len()).min(answer.body.len());
        stream.write_all(&answer.body[..n])?;
    }
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

fn answer(state: &State, request: &Request) -> Answer {
    let faults = &state.faults;
    if faults.not_a_hub {
        return Answer::new(200).header("Content-Type", "text/html").body(b"<html>hello</html>".to_vec());
    }
    let path = request.path.split('?').next().unwrap_or_default();
    if let Some(rest) = path.strip_prefix("/cdn/") {
        return cdn(state, request, rest);
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        if let Some(status) = faults.api_status {
            return Answer::new(status).body(b"overloaded".to_vec());
        }
        let Some((repo_id, revision)) = rest.split_once("/revision/") else { return Answer::new(404) };
        let revision = revision.replace("%2F", "/");
        let repo = match find_repo(state, request, repo_id) {
            Ok(repo) => repo,
            Err(a) => return a,
        };
        let Some((commit, files)) = at_revision(repo, &revision) else {
            return Answer::error(404, "RevisionNotFound");
        };
        let siblings: Vec<String> = files.keys().map(|f| format!("{{\"rfilename\":\"{f}\"}}")).collect();
        let json = format!("{{\"id\":\"{repo_id}\",\"sha\":\"{commit}\",\"siblings\":[{}]}}", siblings.join(","));
        return Answer::new(200).header("Content-Type", "application/json").body(json.into_bytes());
    }
    // /{org}/{name}/resolve/{rev}/{path}
    let Some((repo_id, rest)) = path.trim_start_matches('/').split_once("/resolve/") else {
        return Answer::new(404).body(b"not found".to_vec());
    };
    let Some((revision, file)) = rest.split_once('/') else { return Answer::new(404) };
    let repo = match find_repo(state, request, repo_id) {
        Ok(repo) => repo,
        Err(a) => return a,
    };
    let Some((commit, files)) = at_revision(repo, revision) else { return Answer::error(404, "RevisionNotFound") };
    let Some(bytes) = files.get(file) else { return Answer::error(404, "EntryNotFound") };
    let git_etag = sha256_hex(bytes)[..40].to_string();
    let mut a = if is_lfs(file) {
        let sha = sha256_hex(bytes);
        Answer::new(302)
            .header("Location", format!("{}/cdn/{sha}/{file}", state.cdn))
            .header("X-Linked-Etag", format!("\"{sha}\""))
            .header("X-Linked-Size", bytes.len().to_string())
    } else {
        let mut a = Answer::new(200).body(bytes.clone());
        a.length = Some(bytes.len());
        a
    };
    a = a.header("ETag", format!("\"{git_etag}\""));
    if !faults.no_repo_commit {
        a = a.header("X-Repo-Commit", commit);
    }
    a
}

/// The CDN: `/cdn/{sha256}/{path}` serves the LFS file with that hash, with `Range`.
fn cdn(state: &State, request: &Request, rest: &str) -> Answer {
    let sha = rest.split('/').next().unwrap_or_default();
    let found = state
        .repos
        .iter()
        .flat_map(|r| r.commits.values())
        .flat_map(|files| files.values())
        .find(|bytes| sha256_hex(bytes) == sha);
    let Some(bytes) = found else { return Answer::new(404) };
    let mut bytes = bytes.clone();
    let faults = &state.faults;
    if faults.corrupt_lfs {
        if let Some(last) = bytes.last_mut() {
            *last ^= 0xff;
        }
    }
    let start = request
        .header("Range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let mut a = match start {
        Some(s) if !faults.ignore_range && s < bytes.len() => Answer::new(206)
            .header("Content-Range", format!("bytes {s}-{}/{}", bytes.len() - 1, bytes.len()))
            .body(bytes[s..].to_vec()),
        Some(s) if !faults.ignore_range && s >= bytes.len() => {
            Answer::new(416).header("Content-Range", format!("bytes */{}", bytes.len()))
        }
        _ => Answer::new(200).body(bytes),
    };
    a.send_only = faults.truncate_lfs_at;
    a
}

/// The repository `id`, if it exists and the request may see it: 401 `RepoNotFound` otherwise, as
/// the Hub answers for a private repository.
fn find_repo<'a>(state: &'a State, request: &Request, id: &str) -> Result<&'a Repo, Answer> {
    let repo = state.repos.iter().find(|r| r.id == id).ok_or_else(|| Answer::error(401, "RepoNotFound"))?;
    if let Some(token) = &repo.token {
        if request.header("Authorization") != Some(&format!("Bearer {token}")) {
            return Err(Answer::error(401, "RepoNotFound"));
        }
    }
    Ok(repo)
}

fn at_revision<'a>(repo: &'a Repo, revision: &str) -> Option<(String, &'a BTreeMap<String, Vec<u8>>)> {
    let commit = repo.refs.get(revision).cloned().unwrap_or_else(|| revision.to_string());
    repo.commits.get(&commit).map(|files| (commit, files))
}
