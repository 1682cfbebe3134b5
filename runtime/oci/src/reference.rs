//! Module references: `oci://host[:port]/repo[:tag][@sha256:...]`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::digest::Digest;

/// The scheme every module reference starts with.
pub const SCHEME: &str = "oci://";

/// The tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

/// Where a module lives in a registry: `oci://host[:port]/repo[:tag][@sha256:...]`.
///
/// A reference with a digest is *pinned*: it names exactly one manifest, and
/// the bytes pulled are verified against it. A tag may move.
///
/// ```
/// use wasmover_oci::ModuleRef;
/// let r: ModuleRef = "oci://127.0.0.1:5000/movers/blocksync:v1".parse().unwrap();
/// assert_eq!(r.registry(), "127.0.0.1:5000");
/// assert_eq!(r.repository(), "movers/blocksync");
/// assert_eq!(r.tag(), Some("v1"));
/// assert!(!r.is_pinned());
/// assert!(r.is_loopback());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModuleRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not a module reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{input:?} is not a module reference (oci://host[:port]/repo[:tag][@sha256:...]): {reason}"
)]
pub struct RefParseError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ModuleRef {
    /// `host[:port]` of the registry.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path (`movers/blocksync`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference names one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The manifest digest, if the reference is pinned.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Whether the reference names a manifest digest.
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some()
    }

    /// The last path component of the repository: the module's name.
    pub fn name(&self) -> &str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
    }

    /// The same repository pinned to `digest` (the tag is kept for display).
    pub fn pinned(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository at `tag`, without a digest.
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        }
    }

    /// The host part of the registry, without port or IPv6 brackets.
    pub fn host(&self) -> &str {
        let r = &self.registry;
        if let Some(rest) = r.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        r.split(':').next().unwrap_or(r)
    }

    /// Whether the registry is on this machine (`localhost`, `127.0.0.0/8`,
    /// `::1`): the only registries reached over plain HTTP by default.
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The reference as the registry client takes it. Without a tag or a
    /// digest it means [`DEFAULT_TAG`].
    pub fn to_oci(&self) -> oci_client::Reference {
        let (registry, repository) = (self.registry.clone(), self.repository.clone());
        match (&self.tag, &self.digest) {
            (_, Some(digest)) => {
                oci_client::Reference::with_digest(registry, repository, digest.as_str().to_owned())
            }
            (Some(tag), None) => oci_client::Reference::with_tag(registry, repository, tag.clone()),
            (None, None) => {
                oci_client::Reference::with_tag(registry, repository, DEFAULT_TAG.to_owned())
            }
        }
    }
}

fn valid_repository(repo: &str) -> bool {
    // OCI distribution: path components of [a-z0-9]+ joined by one of
    // `.`, `_`, `__` or `-`s, separated by `/`.
    !repo.is_empty()
        && repo.split('/').all(|part| {
            let bytes = part.as_bytes();
            !bytes.is_empty()
                && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
                && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b))
        })
}

fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    (1..=128).contains(&bytes.len())
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(b))
}

fn valid_registry(registry: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed [ in the host")?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| "the bracketed host is not an IPv6 address")?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(after.strip_prefix(':').ok_or("junk after the IPv6 host")?),
            ),
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    if host.is_empty() {
        return Err("the registry host is empty");
    }
    if !registry.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
    {
        return Err("the registry host has characters a host name cannot have");
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err("the port is not a number from 0 to 65535");
    }
    Ok(())
}

impl FromStr for ModuleRef {
    type Err = RefParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason: &str| RefParseError {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = input
            .strip_prefix(SCHEME)
            .ok_or_else(|| error("it must start with oci://"))?;
        let (rest, digest) = match rest.split_once('@') {
            Some((rest, digest)) => (
                rest,
                Some(
                    digest
                        .parse::<Digest>()
                        .map_err(|e| error(&format!("bad digest: {}", e.reason)))?,
                ),
            ),
            None => (rest, None),
        };
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| error("it names no repository after the registry"))?;
        valid_registry(registry).map_err(error)?;
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) => (repo, Some(tag)),
            None => (path, None),
        };
        if !valid_repository(repository) {
            return Err(error(
                "the repository must be lowercase letters, digits and . _ - in /-separated parts",
            ));
        }
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(error(
                "a tag is 1 to 128 of letters, digits, _ . - and starts with a letter, digit or _",
            ));
        }
        Ok(Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        })
    }
}

impl fmt::Display for ModuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn parse(s: &str) -> ModuleRef {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parts_and_display_round_trip() {
        for (input, registry, repo, tag, digest) in [
            ("oci://r.example/m", "r.example", "m", None, None),
            (
                "oci://r.example:5000/a/b/m:v1.2",
                "r.example:5000",
                "a/b/m",
                Some("v1.2"),
                None,
            ),
            (
                &format!("oci://localhost:5000/m@{D}"),
                "localhost:5000",
                "m",
                None,
                Some(D),
            ),
            (
                &format!("oci://[::1]:5000/m:t@{D}"),
                "[::1]:5000",
                "m",
                Some("t"),
                Some(D),
            ),
            (
                "oci://r.example/my_mover-2.x",
                "r.example",
                "my_mover-2.x",
                None,
                None,
            ),
        ] {
            let r = parse(input);
            assert_eq!(r.registry(), registry, "{input}");
            assert_eq!(r.repository(), repo, "{input}");
            assert_eq!(r.tag(), tag, "{input}");
            assert_eq!(r.digest().map(Digest::as_str), digest, "{input}");
            assert_eq!(r.to_string(), input);
        }
    }

    #[test]
    fn loopback_hosts_only() {
        for (input, loopback) in [
            ("oci://localhost/m", true),
            ("oci://LOCALHOST:1/m", true),
            ("oci://127.0.0.1:5000/m", true),
            ("oci://127.8.9.10/m", true),
            ("oci://[::1]:5000/m", true),
            ("oci://10.0.0.1:5000/m", false),
            ("oci://localhost.example.com/m", false),
            ("oci://registry.example/m", false),
        ] {
            assert_eq!(parse(input).is_loopback(), loopback, "{input}");
        }
    }

    #[test]
    fn name_pinning_and_client_reference() {
        let r = parse("oci://127.0.0.1:5000/movers/blocksync");
        assert_eq!(r.name(), "blocksync");
        assert_eq!(r.to_oci().tag(), Some(DEFAULT_TAG));
        let pinned = r.with_tag("v1").pinned(D.parse().unwrap());
        assert!(pinned.is_pinned());
        assert_eq!(pinned.to_oci().digest(), Some(D));
        assert_eq!(
            pinned.to_string(),
            format!("oci://127.0.0.1:5000/movers/blocksync:v1@{D}")
        );
        assert_eq!(pinned.with_tag("v2").digest(), None);
    }

    #[test]
    fn rejects_malformed_references_with_the_reason() {
        for (input, reason) in [
            ("docker://r/m", "must start with oci://"),
            ("r.example/m", "must start with oci://"),
            ("oci://r.example", "no repository"),
            ("oci:///m", "host is empty"),
            ("oci://r.example:port/m", "port"),
            ("oci://r.example:99999/m", "port"),
            ("oci://[::1/m", "unclosed"),
            ("oci://r_x/m", "characters"),
            ("oci://r.example/Mover", "lowercase"),
            ("oci://r.example/a//b", "lowercase"),
            ("oci://r.example/m-", "lowercase"),
            ("oci://r.example/m:", "tag"),
            ("oci://r.example/m:-x", "tag"),
            ("oci://r.example/m@sha256:abc", "64 hex"),
            ("oci://r.example/m@md5:abc", "only sha256"),
        ] {
            let e = input.parse::<ModuleRef>().unwrap_err();
            assert!(e.to_string().contains(reason), "{input}: {e}");
        }
    }
}
