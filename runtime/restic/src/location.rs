//! A backend from a restic repository string (`RESTIC_REPOSITORY`), so that
//! callers pass restic's (and VolSync's Secret's) settings straight through.

use crate::backend::{Backend, LocalBackend};
use crate::error::{Error, Result};
use crate::http::BackendOptions;
use crate::repository::Repository;
use crate::rest::{RestBackend, redact};
use crate::s3::S3Backend;

/// The backend a repository string names, as restic reads `RESTIC_REPOSITORY`:
/// `rest:http[s]://[user:password@]host[:port]/path`,
/// `s3:http[s]://host[:port]/bucket[/prefix]` (or `s3:host/bucket`, HTTPS),
/// `local:/path` or a plain path. Other kinds (`sftp:`, `b2:`, …) are
/// refused with [`Error::Location`].
pub fn open_backend(repository: &str, options: &BackendOptions) -> Result<Box<dyn Backend>> {
    if let Some(url) = repository.strip_prefix("rest:") {
        return Ok(Box::new(RestBackend::new(url, options)?));
    }
    if let Some(url) = repository.strip_prefix("s3:") {
        return Ok(Box::new(S3Backend::new(url, options)?));
    }
    if let Some(path) = repository.strip_prefix("local:") {
        return Ok(Box::new(LocalBackend::new(path)));
    }
    let kind = repository.split_once(':').map(|(k, _)| k);
    match kind {
        Some(k) if !k.contains('/') && k.len() > 1 => Err(Error::Location {
            repository: redact(repository),
            reason: format!("the {k}: backend is not supported (rest:, s3: and local paths are)"),
        }),
        _ if repository.is_empty() => Err(Error::Location {
            repository: String::new(),
            reason: "empty: set RESTIC_REPOSITORY".into(),
        }),
        _ => Ok(Box::new(LocalBackend::new(repository))),
    }
}

/// Opens the repository that restic's environment variables describe, as
/// in a VolSync repository Secret: `RESTIC_REPOSITORY`, `RESTIC_PASSWORD`
/// and the backend's settings ([`BackendOptions::from_vars`]).
pub fn open_from_vars<K: AsRef<str>, V: AsRef<str>>(
    vars: impl IntoIterator<Item = (K, V)>,
) -> Result<Repository<Box<dyn Backend>>> {
    let vars: Vec<(String, String)> = vars
        .into_iter()
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
        .collect();
    let get = |name: &str| {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let repository = get("RESTIC_REPOSITORY").ok_or_else(|| Error::Location {
        repository: String::new(),
        reason: "RESTIC_REPOSITORY is not set".into(),
    })?;
    let password = get("RESTIC_PASSWORD").ok_or_else(|| Error::Location {
        repository: redact(repository),
        reason: "RESTIC_PASSWORD is not set".into(),
    })?;
    let backend = open_backend(
        repository,
        &BackendOptions::from_vars(vars.iter().cloned())?,
    )?;
    Repository::open(backend, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_strings_choose_the_backend() {
        let o = BackendOptions {
            aws_access_key_id: Some("id".into()),
            aws_secret_access_key: Some("key".into()),
            ..BackendOptions::default()
        };
        for ok in [
            "rest:http://h:8000/r",
            "s3:http://h:9000/b/p",
            "local:/x",
            "/x",
            "relative/x",
        ] {
            assert!(open_backend(ok, &o).is_ok(), "{ok}");
        }
        let err = open_backend("sftp:user@host:/srv/restic", &o)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("sftp: backend is not supported"),
            "{err}"
        );
        let bad_ca = BackendOptions {
            ca_pem: Some(b"not pem".to_vec()),
            ..o
        };
        let err = open_backend("rest:http://u:hunter2@h/", &bad_ca)
            .err()
            .unwrap();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
