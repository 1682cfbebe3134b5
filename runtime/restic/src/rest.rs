//! restic's REST backend (rest-server's protocol, version 2): one URL per
//! file, `GET`/`HEAD`/`POST`/`DELETE`, listings as JSON.

use std::io::Read;

use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, RANGE};
use serde::Deserialize;

use crate::backend::{Backend, FileType};
use crate::error::{Error, Result};
use crate::http::{self, BackendOptions};

/// The media type of version 2 listings (names with sizes).
const V2: &str = "application/vnd.x.restic.rest.v2";

/// A repository on a REST server (`rest:http://user:password@host:port/path/`).
pub struct RestBackend {
    client: Client,
    /// The repository's URL, ending in `/`, without credentials.
    base: String,
    /// Basic auth: user and password.
    auth: Option<(String, String)>,
    retries: u32,
}

impl std::fmt::Debug for RestBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RestBackend(rest:{})", self.base)
    }
}

#[derive(Deserialize)]
struct Listed {
    name: String,
}

impl RestBackend {
    /// The repository at `url` (`http://` or `https://`, without the
    /// `rest:` prefix). User and password come from the URL, else from
    /// the options (`RESTIC_REST_USERNAME`, `RESTIC_REST_PASSWORD`).
    pub fn new(url: &str, options: &BackendOptions) -> Result<RestBackend> {
        let bad = |reason: String| Error::Location {
            repository: format!("rest:{}", redact(url)),
            reason,
        };
        let mut parsed = reqwest::Url::parse(url).map_err(|e| bad(format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(bad(
                "a REST repository is http://host[:port]/path or https://…".into(),
            ));
        }
        let user = Some(http::decode(parsed.username()))
            .filter(|u| !u.is_empty())
            .or_else(|| options.rest_username.clone());
        let password = parsed
            .password()
            .map(http::decode)
            .or_else(|| options.rest_password.clone());
        let auth = match (user, password) {
            (Some(u), p) => Some((u, p.unwrap_or_default())),
            (None, Some(_)) => {
                return Err(bad(
                    "a REST password without a user (set RESTIC_REST_USERNAME)".into(),
                ));
            }
            (None, None) => None,
        };
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        parsed.set_query(None);
        parsed.set_fragment(None);
        let mut base = parsed.to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        let client = http::client(options, &format!("rest:{base}"))?;
        Ok(RestBackend {
            client,
            base,
            auth,
            retries: options.retries,
        })
    }

    /// A file's URL: `data/<id>` (the server spreads packs over
    /// subdirectories itself), `keys/<id>`, …, `config`.
    fn url(&self, kind: FileType, name: &str) -> String {
        match kind {
            FileType::Config => format!("{}config", self.base),
            _ => format!("{}{}/{}", self.base, kind.dir(), name),
        }
    }

    fn send(
        &self,
        op: &'static str,
        url: &str,
        make: impl Fn(&Client) -> reqwest::blocking::RequestBuilder,
    ) -> Result<Response> {
        http::send(self.retries, op, url, || {
            let mut request = make(&self.client);
            if let Some((user, password)) = &self.auth {
                request = request.basic_auth(user, Some(password));
            }
            Ok(request)
        })
    }

    /// The error for an unexpected status.
    fn status_error(&self, op: &'static str, url: &str, response: Response) -> Error {
        let status = response.status();
        match status {
            StatusCode::NOT_FOUND => http::not_found(op, url),
            StatusCode::UNAUTHORIZED => Error::Denied {
                location: format!("rest:{}", self.base),
                reason: format!(
                    "{status}: the server refused {}; check RESTIC_REST_USERNAME and \
                     RESTIC_REST_PASSWORD (or the user:password in the repository URL)",
                    match &self.auth {
                        Some((user, _)) => format!("user {user:?} with this password"),
                        None => "to serve without credentials".into(),
                    }
                ),
            },
            StatusCode::FORBIDDEN => Error::Denied {
                location: url.into(),
                reason: format!(
                    "{status}: the server does not allow this {op} (an append-only server, \
                     or a private repository of another user)"
                ),
            },
            _ => {
                let text = response.text().unwrap_or_default();
                Error::Backend {
                    op,
                    location: url.into(),
                    reason: format!("{status}: {}", text.trim()),
                }
            }
        }
    }

    fn exists(&self, kind: FileType, name: &str) -> Result<Option<u64>> {
        let url = self.url(kind, name);
        let response = self.send("stat", &url, |c| c.head(&url))?;
        match response.status() {
            s if s.is_success() => Ok(Some(content_length(&response, "stat", &url)?)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.status_error("stat", &url, response)),
        }
    }
}

fn content_length(response: &Response, op: &'static str, url: &str) -> Result<u64> {
    response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Backend {
            op,
            location: url.into(),
            reason: "the server sent no Content-Length".into(),
        })
}

/// A URL with its password replaced, for error messages.
pub(crate) fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

impl Backend for RestBackend {
    fn get(&self, kind: FileType, name: &str) -> Result<Vec<u8>> {
        let url = self.url(kind, name);
        let response = self.send("read", &url, |c| c.get(&url))?;
        if !response.status().is_success() {
            return Err(self.status_error("read", &url, response));
        }
        http::body(response, "read", &url)
    }

    fn get_range(&self, kind: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let url = self.url(kind, name);
        if len == 0 {
            return Ok(Vec::new());
        }
        let range = format!("bytes={}-{}", offset, offset + len - 1);
        let response = self.send("read", &url, |c| c.get(&url).header(RANGE, &range))?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {}
            // The whole file: the server ignored the range.
            StatusCode::OK => {
                let all = http::body(response, "read", &url)?;
                let end = offset.saturating_add(len);
                return match all.get(offset as usize..end as usize) {
                    Some(part) => Ok(part.to_vec()),
                    None => Err(truncated(&url, end, all.len() as u64)),
                };
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let size = self.size(kind, name)?;
                return Err(truncated(&url, offset.saturating_add(len), size));
            }
            _ => return Err(self.status_error("read", &url, response)),
        }
        let data = http::body(response, "read", &url)?;
        if data.len() as u64 != len {
            return Err(truncated(
                &url,
                offset.saturating_add(len),
                offset + data.len() as u64,
            ));
        }
        Ok(data)
    }

    fn size(&self, kind: FileType, name: &str) -> Result<u64> {
        let url = self.url(kind, name);
        self.exists(kind, name)?
            .ok_or_else(|| http::not_found("stat", &url))
    }

    fn put(&self, kind: FileType, name: &str, data: &mut dyn Read) -> Result<()> {
        let url = self.url(kind, name);
        // Held in memory (a pack is about 16 MiB) so that a failed upload
        // can be sent again; the server writes to a temporary file and
        // renames it, so a reader sees all or nothing.
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes)
            .map_err(Error::io("read the data for", &url))?;
        let response = self.send("write", &url, |c| c.post(&url).body(bytes.clone()))?;
        if response.status().is_success() {
            return Ok(());
        }
        // rest-server refuses to overwrite a file. Names are content hashes,
        // so a file of the same size there is this one: an earlier attempt
        // whose answer was lost.
        if response.status() == StatusCode::FORBIDDEN
            && kind != FileType::Config
            && self.exists(kind, name)? == Some(bytes.len() as u64)
        {
            return Ok(());
        }
        Err(self.status_error("write", &url, response))
    }

    fn list(&self, kind: FileType) -> Result<Vec<String>> {
        if kind == FileType::Config {
            return Ok(match self.exists(kind, "config")? {
                Some(_) => vec!["config".into()],
                None => vec![],
            });
        }
        let url = format!("{}{}/", self.base, kind.dir());
        let response = self.send("list", &url, |c| c.get(&url).header(ACCEPT, V2))?;
        match response.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => return Ok(Vec::new()),
            _ => return Err(self.status_error("list", &url, response)),
        }
        let v2 = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(V2.as_bytes()));
        let body = http::body(response, "list", &url)?;
        let parsed = if v2 {
            serde_json::from_slice::<Vec<Listed>>(&body)
                .map(|l| l.into_iter().map(|f| f.name).collect())
        } else {
            // Version 1 servers answer with names only.
            serde_json::from_slice::<Vec<String>>(&body)
        };
        parsed.map_err(|source| Error::Json { file: url, source })
    }

    fn delete(&self, kind: FileType, name: &str) -> Result<()> {
        let url = self.url(kind, name);
        let response = self.send("remove", &url, |c| c.delete(&url))?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.status_error("remove", &url, response))
    }

    fn create(&self) -> Result<()> {
        if self.exists(FileType::Config, "config")?.is_some() {
            return Err(Error::format(
                format!("rest:{}config", self.base),
                "a repository exists here already",
            ));
        }
        let url = format!("{}?create=true", self.base);
        let response = self.send("create", &url, |c| c.post(&url))?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.status_error("create", &self.base, response))
    }
}

fn truncated(url: &str, needed: u64, available: u64) -> Error {
    Error::Truncated {
        file: url.into(),
        what: "range",
        needed,
        available,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_url_or_the_options_and_never_show() {
        let b = RestBackend::new(
            "http://al%40ice:p%3Ass@127.0.0.1:8000/repo",
            &BackendOptions::default(),
        )
        .unwrap();
        assert_eq!(b.auth, Some(("al@ice".into(), "p:ss".into())));
        assert_eq!(b.base, "http://127.0.0.1:8000/repo/");
        assert_eq!(
            b.url(FileType::Data, "ab12"),
            "http://127.0.0.1:8000/repo/data/ab12"
        );
        assert_eq!(
            b.url(FileType::Config, ""),
            "http://127.0.0.1:8000/repo/config"
        );
        let options = BackendOptions {
            rest_username: Some("bob".into()),
            rest_password: Some("pw".into()),
            ..BackendOptions::default()
        };
        let b = RestBackend::new("https://host/", &options).unwrap();
        assert_eq!(b.auth, Some(("bob".into(), "pw".into())));
        assert_eq!(redact("http://u:secret@h/x"), "http://u:***@h/x");
        let err = RestBackend::new("ftp://u:secret@h/", &options).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
