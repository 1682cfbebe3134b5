//! What the network backends share: their options, an HTTP client (custom
//! CA), retries of transient failures, and errors that name the file.

use std::io;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};

use crate::error::{Error, Result};

/// Settings of the network backends, as restic takes them from its
/// environment; [`BackendOptions::from_vars`] reads them from the same
/// names (VolSync's repository Secret keys).
#[derive(Clone)]
pub struct BackendOptions {
    /// PEM certificates to trust instead of the system's roots (restic's
    /// `--cacert`, VolSync's `customCA`). `RESTIC_CACERT` names a file.
    pub ca_pem: Option<Vec<u8>>,
    /// REST server user (`RESTIC_REST_USERNAME`); the URL's user wins.
    pub rest_username: Option<String>,
    /// REST server password (`RESTIC_REST_PASSWORD`); the URL's wins.
    pub rest_password: Option<String>,
    /// S3 access key (`AWS_ACCESS_KEY_ID`).
    pub aws_access_key_id: Option<String>,
    /// S3 secret key (`AWS_SECRET_ACCESS_KEY`).
    pub aws_secret_access_key: Option<String>,
    /// S3 session token (`AWS_SESSION_TOKEN`), for temporary credentials.
    pub aws_session_token: Option<String>,
    /// S3 region (`AWS_DEFAULT_REGION`, or `AWS_REGION`); `us-east-1`
    /// when unset, which MinIO and most S3-compatible servers expect.
    pub region: Option<String>,
    /// How long one request may take, body included.
    pub timeout: Duration,
    /// How often a request that failed transiently (no connection, a
    /// timeout, a 5xx or 429 status) is tried again, waiting 0.25 s, then
    /// twice as long each time.
    pub retries: u32,
}

impl Default for BackendOptions {
    fn default() -> BackendOptions {
        BackendOptions {
            ca_pem: None,
            rest_username: None,
            rest_password: None,
            aws_access_key_id: None,
            aws_secret_access_key: None,
            aws_session_token: None,
            region: None,
            timeout: Duration::from_secs(300),
            retries: 3,
        }
    }
}

// NB: by hand, so that secrets are never printed.
impl std::fmt::Debug for BackendOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |o: &Option<String>| o.as_ref().map(|_| "<set>");
        f.debug_struct("BackendOptions")
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .field("rest_username", &self.rest_username)
            .field("rest_password", &set(&self.rest_password))
            .field("aws_access_key_id", &self.aws_access_key_id)
            .field("aws_secret_access_key", &set(&self.aws_secret_access_key))
            .field("aws_session_token", &set(&self.aws_session_token))
            .field("region", &self.region)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

impl BackendOptions {
    /// Options from restic's environment variable names, as in a VolSync
    /// repository Secret: `RESTIC_CACERT` (a PEM file), `RESTIC_REST_USERNAME`,
    /// `RESTIC_REST_PASSWORD`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION` (or `AWS_REGION`). Other
    /// names (`RESTIC_REPOSITORY`, `RESTIC_PASSWORD`, …) are ignored here.
    pub fn from_vars<K: AsRef<str>, V: AsRef<str>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<BackendOptions> {
        let mut o = BackendOptions::default();
        let mut region = None;
        for (k, v) in vars {
            let v = v.as_ref().to_owned();
            match k.as_ref() {
                "RESTIC_CACERT" => {
                    o.ca_pem = Some(std::fs::read(&v).map_err(Error::io("read", &v))?);
                }
                "RESTIC_REST_USERNAME" => o.rest_username = Some(v),
                "RESTIC_REST_PASSWORD" => o.rest_password = Some(v),
                "AWS_ACCESS_KEY_ID" => o.aws_access_key_id = Some(v),
                "AWS_SECRET_ACCESS_KEY" => o.aws_secret_access_key = Some(v),
                "AWS_SESSION_TOKEN" => o.aws_session_token = Some(v),
                "AWS_DEFAULT_REGION" => o.region = Some(v),
                "AWS_REGION" => region = Some(v),
                _ => {}
            }
        }
        o.region = o.region.or(region).filter(|r| !r.is_empty());
        Ok(o)
    }
}

/// A blocking HTTP client with the options' CA and timeout.
pub(crate) fn client(options: &BackendOptions, location: &str) -> Result<Client> {
    // reqwest is built without a default crypto provider; use ring, as the
    // rest of the workspace does. Fails harmlessly once one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(options.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("wasmover-restic/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &options.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| Error::Location {
            repository: location.into(),
            reason: format!("the CA certificate is not PEM: {e}"),
        })?;
        if certs.is_empty() {
            return Err(Error::Location {
                repository: location.into(),
                reason: "the CA certificate file holds no certificate".into(),
            });
        }
        // As restic's --cacert: these roots only, not the system's.
        builder = builder.tls_certs_only(certs);
    }
    builder.build().map_err(|e| Error::Location {
        repository: location.into(),
        reason: format!("cannot make an HTTP client: {}", chain(&e)),
    })
}

/// An error and its sources, one line (reqwest's own message is terse).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        source = e.source();
    }
    s
}

/// Whether a status is worth trying again.
fn transient(status: StatusCode) -> bool {
    status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// Sends the request `make` builds, again after transient failures;
/// returns the last response (whatever its status) or the transport error.
pub(crate) fn send(
    retries: u32,
    op: &'static str,
    location: &str,
    mut make: impl FnMut() -> Result<RequestBuilder>,
) -> Result<Response> {
    let mut wait = Duration::from_millis(250);
    let mut attempt = 0;
    loop {
        let last = attempt >= retries;
        match make()?.send() {
            Ok(response) if last || !transient(response.status()) => return Ok(response),
            Err(e) if last => {
                return Err(Error::Backend {
                    op,
                    location: location.into(),
                    reason: format!("{} (tried {} times)", chain(&e), attempt + 1),
                });
            }
            Ok(response) => {
                tracing::debug!(op, location, status = %response.status(), "retrying");
            }
            Err(e) => tracing::debug!(op, location, error = %chain(&e), "retrying"),
        }
        std::thread::sleep(wait);
        wait *= 2;
        attempt += 1;
    }
}

/// A response's body, or the transport error reading it.
pub(crate) fn body(response: Response, op: &'static str, location: &str) -> Result<Vec<u8>> {
    response
        .bytes()
        .map(|b| b.to_vec())
        .map_err(|e| Error::Backend {
            op,
            location: location.into(),
            reason: format!("reading the response: {}", chain(&e)),
        })
}

/// A missing file, as the local backend reports one (callers match on
/// `ErrorKind::NotFound`).
pub(crate) fn not_found(op: &'static str, location: &str) -> Error {
    Error::Io {
        op,
        path: location.into(),
        source: io::Error::new(io::ErrorKind::NotFound, "no such file on the server"),
    }
}

/// Characters kept as they are when percent-encoding (RFC 3986 unreserved).
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Percent-encodes everything but unreserved characters (and `/` if `keep_slash`),
/// as AWS's signature version 4 requires.
pub(crate) fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` sequences (URL user names and passwords).
pub(crate) fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_round_trips() {
        assert_eq!(encode("a b/c~d+é", true), "a%20b/c~d%2B%C3%A9");
        assert_eq!(encode("a/b", false), "a%2Fb");
        assert_eq!(decode("p%40ss%3Aw%2Fd%zz"), "p@ss:w/d%zz");
    }

    #[test]
    fn options_come_from_restic_variable_names() {
        let o = BackendOptions::from_vars([
            ("RESTIC_REPOSITORY", "s3:http://x/b"),
            ("AWS_ACCESS_KEY_ID", "id"),
            ("AWS_SECRET_ACCESS_KEY", "hunter2"),
            ("AWS_REGION", "eu-west-1"),
            ("RESTIC_REST_USERNAME", "u"),
        ])
        .unwrap();
        assert_eq!(o.aws_access_key_id.as_deref(), Some("id"));
        assert_eq!(o.region.as_deref(), Some("eu-west-1"));
        assert_eq!(o.rest_username.as_deref(), Some("u"));
        assert!(!format!("{o:?}").contains("hunter2"), "{o:?}");
        let missing = BackendOptions::from_vars([("RESTIC_CACERT", "/does/not/exist")]);
        assert!(matches!(missing, Err(Error::Io { .. })));
    }
}
