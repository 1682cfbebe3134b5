//! S3-compatible object storage (`s3:http://host:port/bucket/prefix`), as
//! restic lays a repository out there: `prefix/config`, `prefix/keys/<id>`,
//! `prefix/data/<first byte>/<id>`, …; path-style requests signed with AWS
//! signature version 4.

use std::io::Read;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{CONTENT_LENGTH, RANGE};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};

use crate::backend::{Backend, FileType};
use crate::error::{Error, Result};
use crate::http::{self, BackendOptions};

/// The region when none is set: what MinIO and most S3-compatible servers
/// expect, and where AWS keeps buckets made without a location.
const DEFAULT_REGION: &str = "us-east-1";

/// A repository in an S3 bucket, under a prefix.
pub struct S3Backend {
    client: Client,
    /// `http://host:port` (no trailing slash).
    endpoint: String,
    /// The Host header: host, and port unless it is the scheme's default.
    host: String,
    bucket: String,
    /// The key prefix, empty or ending in `/`.
    prefix: String,
    access_key: String,
    secret_key: String,
    session_token: Option<String>,
    region: String,
    retries: u32,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Backend({})", self.location())
    }
}

impl S3Backend {
    /// The repository at `url` (without the `s3:` prefix):
    /// `http[s]://host[:port]/bucket[/prefix]`, or `host[:port]/bucket[/prefix]`
    /// for HTTPS, as restic takes it. Credentials and region come from the
    /// options (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, …).
    pub fn new(url: &str, options: &BackendOptions) -> Result<S3Backend> {
        let bad = |reason: &str| Error::Location {
            repository: format!("s3:{url}"),
            reason: reason.into(),
        };
        let full = if url.starts_with("http://") || url.starts_with("https://") {
            url.to_owned()
        } else {
            format!("https://{url}")
        };
        let parsed = reqwest::Url::parse(&full).map_err(|e| bad(&format!("not a URL: {e}")))?;
        let Some(host) = parsed.host_str() else {
            return Err(bad("no host"));
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad(
                "credentials go in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, not the URL",
            ));
        }
        let host = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let path = http::decode(parsed.path().trim_matches('/'));
        let (bucket, prefix) = match path.split_once('/') {
            Some((b, p)) => (b.to_owned(), format!("{}/", p.trim_end_matches('/'))),
            None => (path.clone(), String::new()),
        };
        if bucket.is_empty() {
            return Err(bad("no bucket: s3:http://host:port/bucket[/prefix]"));
        }
        let (Some(access_key), Some(secret_key)) = (
            options.aws_access_key_id.clone(),
            options.aws_secret_access_key.clone(),
        ) else {
            return Err(bad(
                "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ));
        };
        let endpoint = format!("{}://{host}", parsed.scheme());
        let client = http::client(options, &format!("s3:{url}"))?;
        Ok(S3Backend {
            client,
            endpoint,
            host,
            bucket,
            prefix,
            access_key,
            secret_key,
            session_token: options.aws_session_token.clone(),
            region: options
                .region
                .clone()
                .unwrap_or_else(|| DEFAULT_REGION.into()),
            retries: options.retries,
        })
    }

    /// `s3:http://host:port/bucket/prefix`, for messages.
    fn location(&self) -> String {
        format!(
            "s3:{}/{}/{}",
            self.endpoint,
            self.bucket,
            self.prefix.trim_end_matches('/')
        )
        .trim_end_matches('/')
        .to_owned()
    }

    /// A file's key: restic's default layout, packs under `data/<xx>/`.
    fn key(&self, kind: FileType, name: &str) -> String {
        match kind {
            FileType::Config => format!("{}config", self.prefix),
            FileType::Data => format!(
                "{}data/{}/{name}",
                self.prefix,
                name.get(..2).unwrap_or(name)
            ),
            _ => format!("{}{}/{name}", self.prefix, kind.dir()),
        }
    }

    /// The URL of a key, for messages.
    fn url(&self, key: &str) -> String {
        format!("{}/{}/{key}", self.endpoint, self.bucket)
    }

    /// Sends a signed request for `key` (the bucket itself when empty),
    /// with `query` (pairs, unencoded) and `body`, again after transient failures.
    fn send(
        &self,
        op: &'static str,
        method: Method,
        key: &str,
        query: &[(&str, &str)],
        body: Option<&[u8]>,
        range: Option<&str>,
    ) -> Result<Response> {
        let path = if key.is_empty() {
            format!("/{}", http::encode(&self.bucket, false))
        } else {
            format!(
                "/{}/{}",
                http::encode(&self.bucket, false),
                http::encode(key, true)
            )
        };
        let mut pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (http::encode(k, false), http::encode(v, false)))
            .collect();
        pairs.sort();
        let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let query = query.join("&");
        let url = if query.is_empty() {
            format!("{}{path}", self.endpoint)
        } else {
            format!("{}{path}?{query}", self.endpoint)
        };
        let payload_hash = hex::encode(Sha256::digest(body.unwrap_or_default()));
        http::send(self.retries, op, &self.url(key), || {
            // Signed anew each time: the date is part of the signature.
            let now = chrono::Utc::now();
            let headers = self.sign(&method, &path, &query, &payload_hash, now);
            let mut request: RequestBuilder = self.client.request(method.clone(), &url);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            if let Some(range) = range {
                request = request.header(RANGE, range);
            }
            if let Some(body) = body {
                request = request.body(body.to_vec());
            } else if method == Method::PUT {
                request = request.header(CONTENT_LENGTH, "0");
            }
            Ok(request)
        })
    }

    /// The headers that sign a request (AWS signature version 4, with
    /// the payload's SHA-256): host, x-amz-content-sha256, x-amz-date,
    /// x-amz-security-token when set, and Authorization.
    fn sign(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        payload_hash: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<(&'static str, String)> {
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let date = &amz_date[..8];
        let mut headers = vec![
            ("host", self.host.clone()),
            ("x-amz-content-sha256", payload_hash.to_owned()),
            ("x-amz-date", amz_date.clone()),
        ];
        if let Some(token) = &self.session_token {
            headers.push(("x-amz-security-token", token.clone()));
        }
        let canonical_headers: String = headers
            .iter()
            .map(|(k, v)| format!("{k}:{}\n", v.trim()))
            .collect();
        let signed: Vec<&str> = headers.iter().map(|(k, _)| *k).collect();
        let signed = signed.join(";");
        let canonical_request =
            format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed}\n{payload_hash}");
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        let key = signing_key(&self.secret_key, date, &self.region, "s3");
        let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
        headers.push((
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
                self.access_key
            ),
        ));
        headers
    }

    /// The error for an unexpected answer, from S3's XML error document.
    fn status_error(&self, op: &'static str, key: &str, response: Response) -> Error {
        let status = response.status();
        let url = self.url(key);
        let body = response.text().unwrap_or_default();
        let code = tag(&body, "Code").unwrap_or_default();
        let message = tag(&body, "Message").unwrap_or_default();
        let denied = |hint: &str| Error::Denied {
            location: self.location(),
            reason: format!("{status} {code}: {message} ({hint})"),
        };
        match (status, code.as_str()) {
            (_, "NoSuchBucket") => Error::Backend {
                op,
                location: url,
                reason: format!(
                    "bucket {:?} does not exist (NoSuchBucket); creating the repository \
                     (restic init) creates it",
                    self.bucket
                ),
            },
            (_, "NoSuchKey") | (StatusCode::NOT_FOUND, "") => http::not_found(op, &url),
            (_, "InvalidAccessKeyId") => denied("check AWS_ACCESS_KEY_ID"),
            (_, "SignatureDoesNotMatch") => {
                denied("check AWS_SECRET_ACCESS_KEY: it does not belong to AWS_ACCESS_KEY_ID")
            }
            (_, "AuthorizationHeaderMalformed" | "AuthorizationQueryParametersError") => {
                denied("check AWS_DEFAULT_REGION")
            }
            (_, "AccessDenied") => denied("the credentials have no right to do this"),
            (StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED, _) => {
                denied("check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
            }
            _ => Error::Backend {
                op,
                location: url,
                reason: if code.is_empty() {
                    format!("{status}: {}", body.trim())
                } else {
                    format!("{status} {code}: {message}")
                },
            },
        }
    }

    fn head(&self, key: &str) -> Result<Option<u64>> {
        let response = self.send("stat", Method::HEAD, key, &[], None, None)?;
        match response.status() {
            s if s.is_success() => response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .map(Some)
                .ok_or_else(|| Error::Backend {
                    op: "stat",
                    location: self.url(key),
                    reason: "the server sent no Content-Length".into(),
                }),
            StatusCode::NOT_FOUND => Ok(None),
            // HEAD answers carry no error document: ask again with GET for
            // the reason (a missing bucket, wrong credentials).
            _ => {
                let response = self.send("stat", Method::GET, key, &[], None, Some("bytes=0-0"))?;
                Err(self.status_error("stat", key, response))
            }
        }
    }

    /// Every key under `prefix` (recursively), following continuation tokens.
    fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("prefix", prefix)];
            if let Some(t) = &token {
                query.push(("continuation-token", t));
            }
            let response = self.send("list", Method::GET, "", &query, None, None)?;
            if !response.status().is_success() {
                return Err(self.status_error("list", prefix, response));
            }
            let body = String::from_utf8_lossy(&http::body(response, "list", &self.url(prefix))?)
                .into_owned();
            let mut rest = body.as_str();
            while let Some(start) = rest.find("<Key>") {
                rest = &rest[start + 5..];
                let end = rest.find("</Key>").unwrap_or(rest.len());
                keys.push(unescape(&rest[..end]));
                rest = &rest[end..];
            }
            token = match tag(&body, "IsTruncated").as_deref() {
                Some("true") => tag(&body, "NextContinuationToken"),
                _ => None,
            };
            if token.is_none() {
                return Ok(keys);
            }
        }
    }

    fn bucket_exists(&self) -> Result<bool> {
        let response = self.send("stat", Method::HEAD, "", &[], None, None)?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => {
                let response = self.send(
                    "list",
                    Method::GET,
                    "",
                    &[("list-type", "2"), ("max-keys", "1")],
                    None,
                    None,
                )?;
                Err(self.status_error("stat", "", response))
            }
        }
    }
}

/// The text of the first `<name>…</name>` in an XML document, unescaped.
fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(unescape(&xml[start..end]))
}

/// XML's predefined entities and numeric references.
fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// HMAC-SHA256 (RFC 2104).
fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The key signature version 4 derives for a day, region and service.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

impl Backend for S3Backend {
    fn get(&self, kind: FileType, name: &str) -> Result<Vec<u8>> {
        let key = self.key(kind, name);
        let response = self.send("read", Method::GET, &key, &[], None, None)?;
        if !response.status().is_success() {
            return Err(self.status_error("read", &key, response));
        }
        http::body(response, "read", &self.url(&key))
    }

    fn get_range(&self, kind: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let key = self.key(kind, name);
        let range = format!("bytes={}-{}", offset, offset + len - 1);
        let response = self.send("read", Method::GET, &key, &[], None, Some(&range))?;
        let truncated = |available| Error::Truncated {
            file: self.url(&key),
            what: "range",
            needed: offset.saturating_add(len),
            available,
        };
        match response.status() {
            StatusCode::PARTIAL_CONTENT | StatusCode::OK => {}
            StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(truncated(self.size(kind, name)?));
            }
            _ => return Err(self.status_error("read", &key, response)),
        }
        let whole = response.status() == StatusCode::OK;
        let data = http::body(response, "read", &self.url(&key))?;
        if whole {
            let end = offset.saturating_add(len);
            return data
                .get(offset as usize..end as usize)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| truncated(data.len() as u64));
        }
        if data.len() as u64 != len {
            return Err(truncated(offset + data.len() as u64));
        }
        Ok(data)
    }

    fn size(&self, kind: FileType, name: &str) -> Result<u64> {
        let key = self.key(kind, name);
        self.head(&key)?
            .ok_or_else(|| http::not_found("stat", &self.url(&key)))
    }

    fn put(&self, kind: FileType, name: &str, data: &mut dyn Read) -> Result<()> {
        let key = self.key(kind, name);
        // Held in memory (a pack is about 16 MiB): the signature covers
        // the payload's hash, and a failed upload is sent again. An object
        // appears whole when its PUT completes, or not at all.
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes)
            .map_err(Error::io("read the data for", self.url(&key)))?;
        let response = self.send("write", Method::PUT, &key, &[], Some(&bytes), None)?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.status_error("write", &key, response))
    }

    fn list(&self, kind: FileType) -> Result<Vec<String>> {
        if kind == FileType::Config {
            let key = self.key(kind, "");
            return Ok(match self.head(&key)? {
                Some(_) => vec!["config".into()],
                None => vec![],
            });
        }
        let prefix = format!("{}{}/", self.prefix, kind.dir());
        Ok(self
            .list_keys(&prefix)?
            .into_iter()
            .filter_map(|k| k.rsplit('/').next().map(str::to_owned))
            .filter(|n| !n.is_empty())
            .collect())
    }

    fn delete(&self, kind: FileType, name: &str) -> Result<()> {
        let key = self.key(kind, name);
        let response = self.send("remove", Method::DELETE, &key, &[], None, None)?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.status_error("remove", &key, response))
    }

    /// Creates the bucket if it does not exist (as restic does), then
    /// checks that no repository is there.
    fn create(&self) -> Result<()> {
        if !self.bucket_exists()? {
            let body = (self.region != DEFAULT_REGION).then(|| {
                format!(
                    "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                     <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                    self.region
                )
            });
            let response = self.send(
                "create",
                Method::PUT,
                "",
                &[],
                body.as_deref().map(str::as_bytes),
                None,
            )?;
            if !response.status().is_success() {
                return Err(self.status_error("create", "", response));
            }
        }
        let config = self.key(FileType::Config, "");
        if self.head(&config)?.is_some() {
            return Err(Error::format(
                self.url(&config),
                "a repository exists here already",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> BackendOptions {
        BackendOptions {
            aws_access_key_id: Some("AKIDEXAMPLE".into()),
            aws_secret_access_key: Some("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            ..BackendOptions::default()
        }
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex::encode(hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than a block.
        assert_eq!(
            hex::encode(hmac(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn the_signing_key_matches_aws_documentation() {
        // "Examples of how to derive a signing key for Signature Version 4".
        assert_eq!(
            hex::encode(signing_key(
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                "20120215",
                "us-east-1",
                "iam"
            )),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn urls_name_bucket_prefix_and_layout_as_restic() {
        let b = S3Backend::new("http://127.0.0.1:9000/bucket/some/prefix/", &options()).unwrap();
        assert_eq!(
            (b.bucket.as_str(), b.prefix.as_str()),
            ("bucket", "some/prefix/")
        );
        assert_eq!(b.host, "127.0.0.1:9000");
        assert_eq!(b.key(FileType::Data, "abcd"), "some/prefix/data/ab/abcd");
        assert_eq!(b.key(FileType::Config, ""), "some/prefix/config");
        assert_eq!(b.location(), "s3:http://127.0.0.1:9000/bucket/some/prefix");
        let b = S3Backend::new("s3.example.com/bucket", &options()).unwrap();
        assert_eq!(
            (b.endpoint.as_str(), b.prefix.as_str()),
            ("https://s3.example.com", "")
        );
        assert_eq!(b.key(FileType::Key, "ff"), "keys/ff");
        let err = S3Backend::new("http://h/b", &BackendOptions::default()).unwrap_err();
        assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
        assert!(S3Backend::new("http://h/", &options()).is_err());
    }

    #[test]
    fn xml_is_read_with_its_entities() {
        let xml = "<Error><Code>NoSuchKey</Code><Message>a &amp; b &lt;c&gt; &#65;&#x42;</Message></Error>";
        assert_eq!(tag(xml, "Code").as_deref(), Some("NoSuchKey"));
        assert_eq!(tag(xml, "Message").as_deref(), Some("a & b <c> AB"));
        assert_eq!(tag(xml, "Missing"), None);
        assert_eq!(unescape("x &bogus; y"), "x &bogus; y");
    }
}
