//! The ways a Hub download fails, each named as huggingface_hub names it, so that a message says
//! which of them happened (a typo in the id and a missing token look alike on the wire: both are a
//! 401 or 404 with `X-Error-Code: RepoNotFound`).

/// A failure to find or download a repository's files.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The repository does not exist, or is private and no (or a wrong) token was sent.
    #[error(
        "repository {repo:?} not found on {endpoint} ({status}{code}): check the id; if it is private or \
         gated, log in (`huggingface-cli login`), set HF_TOKEN, or pass a token"
    )]
    RepoNotFound { repo: String, endpoint: String, status: u16, code: String },

    /// The repository is gated and the token (if any) has not been granted access.
    #[error("repository {repo:?} on {endpoint} is gated: ask for access on its page, then pass a token that has it")]
    GatedRepo { repo: String, endpoint: String },

    /// The branch, tag or commit does not exist in the repository.
    #[error("revision {revision:?} not found in repository {repo:?} (a branch, a tag or a commit id)")]
    RevisionNotFound { repo: String, revision: String },

    /// The file is not in the repository at that revision.
    #[error("{path} not found in repository {repo:?} at revision {revision}{hint}")]
    EntryNotFound { repo: String, revision: String, path: String, hint: String },

    /// Downloads are off (`HF_HUB_OFFLINE=1`, `local_files_only`) and the cache lacks what is needed.
    #[error("{repo:?} is not in the local Hugging Face cache as needed ({reason}); {why}; the cache {cached}")]
    NotCached { repo: String, reason: String, why: String, cached: String },

    /// The Hub could not be reached (or failed), and the cache cannot stand in for it.
    #[error("cannot use the Hub at {endpoint} ({reason}), and the local cache cannot stand in: the cache {cached}")]
    Unreachable { endpoint: String, reason: String, cached: String },

    /// The server answered, but not as a Hugging Face Hub does.
    #[error(
        "{url} did not answer as a Hugging Face Hub ({reason}); set HF_ENDPOINT (or the endpoint option) to a Hub, \
         e.g. https://huggingface.co"
    )]
    NotAHub { url: String, reason: String },

    /// An HTTP error status that none of the above explains.
    #[error("{url}: HTTP {status}{detail}")]
    Http { url: String, status: u16, detail: String },

    /// The connection failed or broke off during a download.
    #[error("downloading {url}: {reason}")]
    Transfer { url: String, reason: String },

    /// A downloaded file is not what the Hub said it would be (size or sha256); it was discarded.
    #[error("downloaded {path} is corrupt ({reason}); it was discarded, nothing was cached: try again")]
    Corrupt { path: String, reason: String },
}
