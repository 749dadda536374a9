//! The HTTP side: one ureq agent that follows no redirect by itself (the Hub's answer to a `HEAD`
//! on `resolve/` is read before its redirect is followed), the bearer token sent to the Hub's own
//! host only, and the Hub's error answers turned into named [`HubError`]s.

use std::time::Duration;

use ureq::http::{HeaderMap, Response};
use ureq::Body;

use super::error::HubError;
use crate::error::Result;

/// Largest JSON answer read (a repository's file list is kilobytes; this is the cap local JSON
/// files have, [`crate::files::MAX_JSON_BYTES`]).
const MAX_JSON_BYTES: u64 = crate::files::MAX_JSON_BYTES;
/// Largest error body read, for its message.
const MAX_ERROR_BYTES: u64 = 64 << 10;
/// Redirects followed on the Hub itself (a renamed repository answers with a relative one).
pub const MAX_REDIRECTS: usize = 5;

/// Whether `url`'s host is this machine's loopback (`localhost`, `127.x.y.z`, `[::1]`).
fn is_loopback(url: &str) -> bool {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest).split('/').next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host.starts_with('[') {
        host.split(']').next().unwrap_or_default().trim_start_matches('[')
    } else {
        host.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A client for one endpoint.
pub struct Client {
    agent: ureq::Agent,
    pub endpoint: String,
    token: Option<String>,
}

impl Client {
    pub fn new(endpoint: String, token: Option<String>) -> Self {
        let config = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // A stalled transfer fails instead of hanging; a slow one goes on.
            .timeout_recv_body(None)
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("candle-unet2d/", env!("CARGO_PKG_VERSION"), "; hf_hub-compatible"))
            // A Hub on this machine (a mirror, a test server) is reached directly, whatever
            // HTTP(S)_PROXY says: a proxy elsewhere cannot reach this machine's loopback.
            .proxy(if is_loopback(&endpoint) { None } else { ureq::Proxy::try_from_env() })
            .build();
        Self { agent: config.into(), endpoint, token }
    }

    /// Whether `url` is on the endpoint's host, so the token may go with it: a CDN the Hub
    /// redirects to has no use for it.
    fn is_endpoint(&self, url: &str) -> bool {
        let origin = |u: &str| {
            let rest = u.split_once("://").map(|(s, r)| (s.to_string(), r.to_string()));
            rest.map(|(scheme, r)| format!("{scheme}://{}", r.split('/').next().unwrap_or_default()))
        };
        origin(url).is_some() && origin(url) == origin(&self.endpoint)
    }

    /// `method url` with the token (when on the Hub) and `headers`; any status comes back.
    pub fn send(&self, method: &str, url: &str, headers: &[(&str, String)]) -> Result<Response<Body>> {
        let mut request = match method {
            "HEAD" => self.agent.head(url),
            _ => self.agent.get(url),
        };
        if let (Some(token), true) = (&self.token, self.is_endpoint(url)) {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.call().map_err(|e| transfer(url, &e).into())
    }

    /// `GET url`, following the Hub's relative redirects, as JSON read through a size cap.
    pub fn get_json(&self, url: &str, asked: Asked<'_>) -> Result<(HeaderMap, serde_json::Value)> {
        let mut current = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send("GET", &current, &[])?;
            if let Some(next) = redirect_target(&current, &response) {
                current = next;
                continue;
            }
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let mut body = response.into_body();
            if !(200..300).contains(&status) {
                return Err(hub_error(asked, &current, status, &headers, &mut body).into());
            }
            let text = body.with_config().limit(MAX_JSON_BYTES).read_to_string().map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => HubError::NotAHub {
                    url: current.clone(),
                    reason: format!("its answer is larger than {MAX_JSON_BYTES} bytes"),
                },
                other => transfer(&current, &other),
            })?;
            let value = serde_json::from_str(&text).map_err(|e| HubError::NotAHub {
                url: current.clone(),
                reason: format!("its answer is not JSON: {e}"),
            })?;
            return Ok((headers, value));
        }
        Err(HubError::Http { url: url.into(), status: 310, detail: ": too many redirects".into() }.into())
    }
}

/// Where a 3xx answer sends the client, resolved against `url`; `None` for any other answer.
pub fn redirect_target(url: &str, response: &Response<Body>) -> Option<String> {
    if !response.status().is_redirection() {
        return None;
    }
    let location = response.headers().get("location")?.to_str().ok()?;
    Some(join_url(url, location))
}

/// `location` (absolute, or relative to `url`'s host) as an absolute URL.
pub fn join_url(url: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let host = rest.split('/').next().unwrap_or_default();
    if location.starts_with('/') {
        format!("{scheme}://{host}{location}")
    } else {
        let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
        format!("{base}/{location}")
    }
}

/// A header's value as text.
pub fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string())
}

/// The Hub's `X-Error-Message` (or the start of the body) for a message: `": <text>"`.
pub fn error_detail(headers: &HeaderMap, body: &mut Body) -> String {
    if let Some(message) = header(headers, "x-error-message") {
        return format!(": {message}");
    }
    let text = body.with_config().limit(MAX_ERROR_BYTES).lossy_utf8(true).read_to_string().unwrap_or_default();
    let line: String = text.lines().next().unwrap_or_default().chars().take(200).collect();
    if line.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", line.trim())
    }
}

/// What a request was about, for naming its failure.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub endpoint: &'a str,
    pub repo: &'a str,
    pub revision: &'a str,
    /// The file, for `resolve/` requests.
    pub path: Option<&'a str>,
}

/// The Hub's error for a failed answer: named by `X-Error-Code` as huggingface_hub names it (a 401
/// always counts as "not found": the Hub says the same for a private repository).
pub fn hub_error(asked: Asked<'_>, url: &str, status: u16, headers: &HeaderMap, body: &mut Body) -> HubError {
    let code = header(headers, "x-error-code").unwrap_or_default();
    let Asked { endpoint, repo, revision, path } = asked;
    match code.as_str() {
        "RepoNotFound" => repo_not_found(endpoint, repo, status, &code),
        _ if status == 401 => repo_not_found(endpoint, repo, status, &code),
        "GatedRepo" => HubError::GatedRepo { repo: repo.into(), endpoint: endpoint.into() },
        "RevisionNotFound" => HubError::RevisionNotFound { repo: repo.into(), revision: revision.into() },
        "EntryNotFound" => HubError::EntryNotFound {
            repo: repo.into(),
            revision: revision.into(),
            path: path.unwrap_or_default().into(),
            hint: String::new(),
        },
        _ => HubError::Http { url: url.into(), status, detail: error_detail(headers, body) },
    }
}

fn repo_not_found(endpoint: &str, repo: &str, status: u16, code: &str) -> HubError {
    let code = if code.is_empty() { String::new() } else { format!(", {code}") };
    HubError::RepoNotFound { repo: repo.into(), endpoint: endpoint.into(), status, code }
}

/// A ureq failure (no answer, or a broken one) as a [`HubError::Transfer`].
pub fn transfer(url: &str, err: &ureq::Error) -> HubError {
    HubError::Transfer { url: url.into(), reason: err.to_string() }
}

/// Whether the cache may stand in after `err` from the revision API: no answer at all, or an HTTP
/// error that names no missing repository or revision (a 5xx) — what huggingface_hub's
/// `snapshot_download` falls back on.
pub fn cache_may_stand_in(err: &crate::error::Error) -> bool {
    matches!(err, crate::error::Error::Hub(HubError::Transfer { .. } | HubError::Http { .. }))
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_hosts() {
        for url in ["http://127.0.0.1:8000", "http://localhost:1/x", "http://[::1]:9/a", "http://u@127.0.0.2/"] {
            assert!(is_loopback(url), "{url}");
        }
        for url in ["https://huggingface.co", "http://10.0.0.1:80", "http://localhost.example.com"] {
            assert!(!is_loopback(url), "{url}");
        }
    }
}
