//! Registry credentials from a Docker config file (`~/.docker/config.json`)
//! or a Kubernetes `kubernetes.io/dockerconfigjson` Secret, which has the
//! same format.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
#[error("registry credentials in {origin}: {reason}")]
pub struct CredentialsError {
    /// The file or Secret.
    pub origin: String,
    /// What is wrong.
    pub reason: String,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    /// base64 of `user:password`.
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    /// A bearer token sent as is.
    #[serde(default)]
    registrytoken: Option<String>,
}

/// Credentials per registry (`host[:port]`): basic (user and password) or
/// a bearer token. Registries without an entry are accessed anonymously.
///
/// ```
/// use wasmover_oci::Credentials;
/// let json = br#"{"auths": {"https://r.example:5000/v2/": {"auth": "dXNlcjpwYXNz"}}}"#;
/// let creds = Credentials::from_json(json, "example").unwrap();
/// assert!(creds.has("r.example:5000"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    auths: HashMap<String, RegistryAuth>,
}

/// `https://host:port/v1/` → `host:port`, as Docker matches its keys.
fn registry_key(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

impl Credentials {
    /// Parses a Docker config (`{"auths": {...}}`); `origin` names it in
    /// errors.
    pub fn from_json(json: &[u8], origin: &str) -> Result<Self, CredentialsError> {
        let error = |reason: String| CredentialsError {
            origin: origin.to_owned(),
            reason,
        };
        let file: ConfigFile =
            serde_json::from_slice(json).map_err(|e| error(format!("not a Docker config: {e}")))?;
        let mut auths = HashMap::new();
        for (key, entry) in file.auths {
            let auth = if let Some(token) = entry.registrytoken {
                RegistryAuth::Bearer(token)
            } else if let Some(encoded) = entry.auth.filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|e| error(format!("auth of {key} is not base64: {e}")))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| error(format!("auth of {key} is not UTF-8")))?;
                let (user, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| error(format!("auth of {key} is not user:password")))?;
                RegistryAuth::Basic(user.to_owned(), password.to_owned())
            } else if let (Some(user), Some(password)) = (entry.username, entry.password) {
                RegistryAuth::Basic(user, password)
            } else {
                return Err(error(format!(
                    "the entry of {key} has no auth, username/password or registrytoken"
                )));
            };
            auths.insert(registry_key(&key).to_owned(), auth);
        }
        Ok(Self { auths })
    }

    /// Reads a Docker config file.
    pub fn from_file(path: &Path) -> Result<Self, CredentialsError> {
        let origin = path.display().to_string();
        let json = std::fs::read(path).map_err(|e| CredentialsError {
            origin: origin.clone(),
            reason: e.to_string(),
        })?;
        Self::from_json(&json, &origin)
    }

    /// Docker's default config file: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
            .map(|dir| dir.join("config.json"))
    }

    /// The default config file if there is one; no credentials otherwise.
    pub fn from_default_file() -> Result<Self, CredentialsError> {
        match Self::default_path() {
            Some(path) if path.exists() => Self::from_file(&path),
            _ => Ok(Self::default()),
        }
    }

    /// Whether there is an entry for `registry` (`host[:port]`).
    pub fn has(&self, registry: &str) -> bool {
        self.auths.contains_key(registry)
    }

    /// How to authenticate to `registry`: its entry, else anonymously.
    pub fn for_registry(&self, registry: &str) -> RegistryAuth {
        self.auths
            .get(registry)
            .cloned()
            .unwrap_or(RegistryAuth::Anonymous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_bearer_and_key_forms() {
        let json = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYTpzcw=="},
            "127.0.0.1:5000": {"username": "u", "password": "p"},
            "http://tokens.example": {"registrytoken": "t0k"}
        }, "credsStore": "desktop"}"#;
        let creds = Credentials::from_json(json, "test").unwrap();
        assert_eq!(
            creds.for_registry("index.docker.io"),
            RegistryAuth::Basic("user".into(), "pa:ss".into())
        );
        assert_eq!(
            creds.for_registry("127.0.0.1:5000"),
            RegistryAuth::Basic("u".into(), "p".into())
        );
        assert_eq!(
            creds.for_registry("tokens.example"),
            RegistryAuth::Bearer("t0k".into())
        );
        assert_eq!(creds.for_registry("other:5000"), RegistryAuth::Anonymous);
    }

    #[test]
    fn malformed_entries_are_errors_naming_the_registry() {
        for (json, reason) in [
            (
                r#"{"auths": {"r": {"auth": "%%%"}}}"#,
                "auth of r is not base64",
            ),
            (
                r#"{"auths": {"r": {"auth": "dXNlcg=="}}}"#,
                "not user:password",
            ),
            (r#"{"auths": {"r": {}}}"#, "has no auth"),
            (r#"["not", "a", "config"]"#, "not a Docker config"),
        ] {
            let e = Credentials::from_json(json.as_bytes(), "cfg").unwrap_err();
            assert!(e.to_string().contains(reason), "{json}: {e}");
            assert!(e.to_string().starts_with("registry credentials in cfg"));
        }
    }
}
