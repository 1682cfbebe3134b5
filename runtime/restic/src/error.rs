//! The crate's one error type: each variant names the file it concerns.

use std::path::PathBuf;

use crate::id::Id;

/// What went wrong, and in which repository file or local path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A backend or local file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation (read, write, list, …).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No key file in the repository opens with this password.
    #[error("wrong password: none of the {keys} key files opens with it")]
    WrongPassword {
        /// How many key files were tried.
        keys: usize,
    },
    /// The repository has no key file at all.
    #[error("no key files in the repository: is it a restic repository?")]
    NoKeys,
    /// Another process holds a conflicting lock.
    #[error(
        "the repository is locked: {holder} ({file}); if that process is gone, `restic unlock` removes it"
    )]
    Locked {
        /// The lock file.
        file: String,
        /// Who holds it, and since when.
        holder: String,
    },
    /// A MAC did not match: the file was corrupted or tampered with.
    #[error(
        "{file}: authentication failed (MAC mismatch): the file is corrupted or was tampered with"
    )]
    Mac {
        /// The repository file (with the blob, for a pack).
        file: String,
    },
    /// A file is shorter than its format requires.
    #[error("{file}: truncated: {what} needs {needed} bytes, {available} available")]
    Truncated {
        /// The repository file.
        file: String,
        /// The part being read.
        what: &'static str,
        /// Bytes needed.
        needed: u64,
        /// Bytes there.
        available: u64,
    },
    /// A file's content does not hash to its name.
    #[error("{file}: content hashes to {actual}, not to its name")]
    StorageId {
        /// The repository file.
        file: String,
        /// The SHA-256 of what was read.
        actual: Id,
    },
    /// A blob's plaintext does not hash to its ID.
    #[error("blob {id} in {file}: plaintext hashes to {actual}")]
    BlobId {
        /// The blob's ID.
        id: Id,
        /// The pack holding it.
        file: String,
        /// The SHA-256 of the plaintext read.
        actual: Id,
    },
    /// A blob a tree or snapshot needs is in no index.
    #[error("{kind} blob {id} is in no index")]
    BlobMissing {
        /// Data or tree.
        kind: &'static str,
        /// The blob's ID.
        id: Id,
    },
    /// A JSON document did not parse or did not have the expected shape.
    #[error("{file}: {source}")]
    Json {
        /// The repository file (or blob).
        file: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A file breaks the format in some other way.
    #[error("{file}: {reason}")]
    Format {
        /// The repository file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A repository string (`RESTIC_REPOSITORY`) or backend option that
    /// cannot be used.
    #[error("repository {repository}: {reason}")]
    Location {
        /// The repository string, without credentials.
        repository: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The storage server refused the credentials (HTTP 401 or 403).
    #[error("{location}: access denied: {reason}")]
    Denied {
        /// The repository location, without credentials.
        location: String,
        /// The server's reason, and the setting to check.
        reason: String,
    },
    /// A storage server could not be reached or answered with an error
    /// (after retries, for transient failures).
    #[error("{op} {location}: {reason}")]
    Backend {
        /// The operation (get, put, list, …).
        op: &'static str,
        /// The file's URL, without credentials.
        location: String,
        /// What failed: the server's status and message, or the transport error.
        reason: String,
    },
    /// An ID or prefix matched no file, or more than one.
    #[error("{what}: {reason}")]
    NotFound {
        /// What was looked up.
        what: String,
        /// Why it failed.
        reason: &'static str,
    },
    /// A retention policy or prune option that cannot be used.
    #[error("retention policy: {field}: {reason}")]
    Policy {
        /// The field (`within`, `max_unused`, …).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Pruning would lose data the repository's snapshots need, so nothing
    /// was removed.
    #[error("prune refused, nothing was removed: {reason}; `restic check` tells more")]
    Incomplete {
        /// What is missing or inconsistent.
        reason: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    pub(crate) fn format(file: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Format {
            file: file.into(),
            reason: reason.into(),
        }
    }
}
