//! Pushing and pulling modules in the CNCF wasm artifact layout, through
//! the content-addressed [`ModuleStore`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::reference::ModuleRef;
use crate::store::{ModuleStore, StoreError};

/// Media type of the config blob of a wasm artifact (CNCF TAG Runtime's
/// layout, as wasm-pkg-tools and Kubewarden write it).
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Media type of the one layer: the component's bytes.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Bound on a manifest: the OCI distribution spec's 4 MiB.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// The config blob of a wasm artifact.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    /// Always `wasm`.
    pub architecture: String,
    /// `wasip2` for components.
    pub os: String,
    /// Digests of the layers, in order.
    pub layer_digests: Vec<String>,
    /// What the component imports and exports.
    pub component: ComponentInfo,
}

/// The component's interface, as names (`wasmover:mover/control@0.1.0`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentInfo {
    /// Exported interfaces and functions.
    pub exports: Vec<String>,
    /// Imported interfaces and functions.
    pub imports: Vec<String>,
}

impl WasmConfig {
    /// The config of a component with these imports and exports.
    pub fn component(module: &Digest, imports: Vec<String>, exports: Vec<String>) -> Self {
        Self {
            architecture: "wasm".into(),
            os: "wasip2".into(),
            layer_digests: vec![module.to_string()],
            component: ComponentInfo { exports, imports },
        }
    }
}

/// Why a push or a pull failed. Each message is one line that names the
/// reference or registry.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// Nothing answered (connection refused, DNS, connect timeout).
    #[error("cannot reach registry {registry}: {reason}")]
    Unreachable {
        /// `host[:port]`.
        registry: String,
        /// The cause chain.
        reason: String,
    },
    /// The registry answered, then the transfer broke off or timed out.
    #[error("transfer from registry {registry} failed: {reason}; nothing was cached")]
    Transfer {
        /// `host[:port]`.
        registry: String,
        /// The cause chain.
        reason: String,
    },
    /// Credentials are missing or refused.
    #[error(
        "not authorized for {reference}: {reason} (credentials for {registry}: Docker config file, or the CR's modulePullSecret)"
    )]
    Unauthorized {
        /// The reference.
        reference: String,
        /// `host[:port]`.
        registry: String,
        /// What the registry said.
        reason: String,
    },
    /// The registry has no such repository, tag or digest.
    #[error("{reference} was not found in the registry: {reason}")]
    NotFound {
        /// The reference.
        reference: String,
        /// What the registry said.
        reason: String,
    },
    /// Content did not hash to the digest that names it.
    #[error("refusing {what} of {reference}: expected digest {expected}, got {actual}")]
    DigestMismatch {
        /// The reference.
        reference: String,
        /// `manifest` or `module`.
        what: &'static str,
        /// The digest that names it.
        expected: String,
        /// What it hashes to.
        actual: String,
    },
    /// The artifact is not a single wasm layer with a wasm config.
    #[error("{reference} is not a wasm module artifact: {reason}")]
    Layout {
        /// The reference.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// The module exceeds the size limit.
    #[error("module {reference} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The reference.
        reference: String,
        /// Its size (as announced, or as far as it was read).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A push must name a tag, not a digest.
    #[error(
        "cannot push to {reference}: push to a tag (oci://host/repo:tag); the digest is printed"
    )]
    PushToDigest {
        /// The reference.
        reference: String,
    },
    /// Anything else the registry said.
    #[error("registry {registry}: {reason}")]
    Registry {
        /// `host[:port]`.
        registry: String,
        /// The cause chain.
        reason: String,
    },
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A module with the digests it was fetched by.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// The reference, pinned to the manifest digest.
    pub reference: ModuleRef,
    /// The manifest's digest.
    pub manifest: Digest,
    /// The module's digest (its layer).
    pub module: Digest,
    /// The module's bytes, verified against `module`.
    pub bytes: Vec<u8>,
    /// Whether it came from the store without asking the registry.
    pub from_cache: bool,
}

/// Pushes and pulls modules: plain HTTP for loopback registries (or all,
/// when insecure), HTTPS otherwise; pulled blobs land in the store.
#[derive(Clone, Debug)]
pub struct Registry {
    store: ModuleStore,
    insecure: bool,
    connect_timeout: Duration,
    read_timeout: Duration,
}

/// The cause chain of an error on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A sink for one blob that refuses to grow past `limit`.
struct Bounded {
    bytes: Vec<u8>,
    limit: u64,
    exceeded: bool,
}

impl tokio::io::AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if (self.bytes.len() + buf.len()) as u64 > self.limit {
            self.exceeded = true;
            return Poll::Ready(Err(std::io::Error::other(
                "the module exceeds the size limit",
            )));
        }
        self.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Registry {
    /// A client that keeps what it pulls in `store` (whose size limit bounds
    /// modules).
    pub fn new(store: ModuleStore) -> Self {
        Self {
            store,
            insecure: false,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
        }
    }

    /// Use plain HTTP for every registry, not only loopback ones.
    pub fn with_insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }

    /// The store pulled modules land in.
    pub fn store(&self) -> &ModuleStore {
        &self.store
    }

    fn client(&self, reference: &ModuleRef) -> Client {
        // reqwest is built without a default crypto provider; use ring, as
        // the kube client does. Fails harmlessly once one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let protocol = if self.insecure || reference.is_loopback() {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(self.connect_timeout),
            read_timeout: Some(self.read_timeout),
            platform_resolver: None,
            ..ClientConfig::default()
        })
    }

    fn error(&self, reference: &ModuleRef, e: OciDistributionError) -> OciError {
        let registry = reference.registry().to_owned();
        let unauthorized = |reason: String| OciError::Unauthorized {
            reference: reference.to_string(),
            registry: registry.clone(),
            reason,
        };
        match e {
            OciDistributionError::RequestError(e) if e.is_connect() => OciError::Unreachable {
                registry,
                reason: chain(&e),
            },
            OciDistributionError::RequestError(e) => OciError::Transfer {
                registry,
                reason: chain(&e),
            },
            OciDistributionError::IoError(e) => OciError::Transfer {
                registry,
                reason: chain(&e),
            },
            OciDistributionError::UnauthorizedError { .. } => {
                unauthorized("the registry answered 401 Unauthorized".into())
            }
            OciDistributionError::AuthenticationFailure(reason) => unauthorized(reason),
            OciDistributionError::ServerError { code, message, .. }
                if code == 401 || code == 403 =>
            {
                unauthorized(format!("HTTP {code} {}", message.trim()))
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let reason = envelope
                    .errors
                    .iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
                let has = |codes: &[OciErrorCode]| {
                    envelope.errors.iter().any(|e| codes.contains(&e.code))
                };
                if has(&[OciErrorCode::Unauthorized, OciErrorCode::Denied]) {
                    unauthorized(reason)
                } else if has(&[
                    OciErrorCode::ManifestUnknown,
                    OciErrorCode::BlobUnknown,
                    OciErrorCode::NameUnknown,
                    OciErrorCode::NotFound,
                ]) {
                    OciError::NotFound {
                        reference: reference.to_string(),
                        reason,
                    }
                } else {
                    OciError::Registry { registry, reason }
                }
            }
            OciDistributionError::ServerError {
                code: 404, message, ..
            } => OciError::NotFound {
                reference: reference.to_string(),
                reason: message.trim().to_owned(),
            },
            OciDistributionError::DigestError(
                oci_client::errors::DigestError::VerificationError { expected, actual },
            ) => OciError::DigestMismatch {
                reference: reference.to_string(),
                what: "content",
                expected,
                actual,
            },
            e => OciError::Registry {
                registry,
                reason: chain(&e),
            },
        }
    }

    /// Pushes `wasm` to `reference` (a tag) as a wasm artifact with
    /// `config`, and returns the manifest's digest: pull
    /// `oci://host/repo@<digest>` to get exactly these bytes back. The
    /// manifest is deterministic, so pushing the same module and config
    /// again gives the same digest.
    pub async fn push(
        &self,
        reference: &ModuleRef,
        wasm: &[u8],
        config: &WasmConfig,
        auth: &RegistryAuth,
    ) -> Result<Digest, OciError> {
        if reference.is_pinned() {
            return Err(OciError::PushToDigest {
                reference: reference.to_string(),
            });
        }
        if wasm.len() as u64 > self.store.max_bytes() {
            return Err(OciError::TooLarge {
                reference: reference.to_string(),
                size: wasm.len() as u64,
                limit: self.store.max_bytes(),
            });
        }
        let config = serde_json::to_vec(config).expect("the config serializes");
        let layer = Digest::of(wasm);
        let config_digest = Digest::of(&config);
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.into()),
            config: OciDescriptor {
                media_type: WASM_CONFIG_MEDIA_TYPE.into(),
                digest: config_digest.to_string(),
                size: config.len() as i64,
                ..OciDescriptor::default()
            },
            layers: vec![OciDescriptor {
                media_type: WASM_LAYER_MEDIA_TYPE.into(),
                digest: layer.to_string(),
                size: wasm.len() as i64,
                ..OciDescriptor::default()
            }],
            ..OciImageManifest::default()
        };
        let manifest = serde_json::to_vec(&manifest).expect("the manifest serializes");
        let target = reference.to_oci();
        let client = self.client(reference);
        let error = |e| self.error(reference, e);
        // Keeps `auth` for this registry and asks it how to authenticate.
        client
            .auth(&target, auth, RegistryOperation::Push)
            .await
            .map_err(error)?;
        client
            .push_blob(&target, wasm.to_vec(), layer.as_str())
            .await
            .map_err(error)?;
        client
            .push_blob(&target, config, config_digest.as_str())
            .await
            .map_err(error)?;
        client
            .push_manifest_raw(
                &target,
                manifest.clone(),
                http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE),
            )
            .await
            .map_err(error)?;
        Ok(Digest::of(&manifest))
    }

    /// The module from the store alone, if `reference` is pinned and both
    /// its manifest and module are there (each verified by digest; a
    /// corrupt one is removed and counts as missing).
    pub fn cached(&self, reference: &ModuleRef) -> Result<Option<Fetched>, OciError> {
        let Some(manifest_digest) = reference.digest() else {
            return Ok(None);
        };
        let Some(manifest) = self.lookup(manifest_digest)? else {
            return Ok(None);
        };
        let module = self.layer(reference, &manifest)?;
        let Some(bytes) = self.lookup(&module)? else {
            return Ok(None);
        };
        Ok(Some(Fetched {
            reference: reference.clone(),
            manifest: manifest_digest.clone(),
            module,
            bytes,
            from_cache: true,
        }))
    }

    fn lookup(&self, digest: &Digest) -> Result<Option<Vec<u8>>, OciError> {
        match self.store.get(digest) {
            Err(e @ StoreError::Corrupt { .. }) => {
                tracing::warn!("{e}; fetching it again");
                Ok(None)
            }
            other => Ok(other?),
        }
    }

    /// The module's digest from a manifest, after checking the layout and
    /// the announced size.
    fn layer(&self, reference: &ModuleRef, manifest: &[u8]) -> Result<Digest, OciError> {
        let layout = |reason: String| OciError::Layout {
            reference: reference.to_string(),
            reason,
        };
        let manifest: OciImageManifest = serde_json::from_slice(manifest)
            .map_err(|e| layout(format!("its manifest does not parse: {e}")))?;
        if manifest.config.media_type != WASM_CONFIG_MEDIA_TYPE {
            return Err(layout(format!(
                "config media type {} (expected {WASM_CONFIG_MEDIA_TYPE})",
                manifest.config.media_type
            )));
        }
        let [layer] = manifest.layers.as_slice() else {
            return Err(layout(format!(
                "{} layers (expected one {WASM_LAYER_MEDIA_TYPE} layer)",
                manifest.layers.len()
            )));
        };
        if layer.media_type != WASM_LAYER_MEDIA_TYPE {
            return Err(layout(format!(
                "layer media type {} (expected {WASM_LAYER_MEDIA_TYPE})",
                layer.media_type
            )));
        }
        let limit = self.store.max_bytes();
        if layer.size < 0 || layer.size as u64 > limit {
            return Err(OciError::TooLarge {
                reference: reference.to_string(),
                size: layer.size.max(0) as u64,
                limit,
            });
        }
        layer
            .digest
            .parse()
            .map_err(|e: crate::digest::DigestParseError| layout(e.to_string()))
    }

    /// The module at `reference`: from the store when the reference is
    /// pinned and it is there, else from the registry. A tag is resolved
    /// to its current manifest. Every byte is checked against its digest
    /// before it is stored or returned, and nothing is stored from a
    /// failed or refused transfer. The module's announced size is checked
    /// before its download and its bytes while they arrive; the manifest
    /// is bounded by [`MAX_MANIFEST_BYTES`] once read.
    pub async fn fetch(
        &self,
        reference: &ModuleRef,
        auth: &RegistryAuth,
    ) -> Result<Fetched, OciError> {
        if let Some(fetched) = self.cached(reference)? {
            return Ok(fetched);
        }
        let target = reference.to_oci();
        let client = self.client(reference);
        let error = |e| self.error(reference, e);
        let (manifest, _) = client
            .pull_manifest_raw(&target, auth, &[OCI_IMAGE_MEDIA_TYPE])
            .await
            .map_err(error)?;
        if manifest.len() > MAX_MANIFEST_BYTES {
            return Err(OciError::Layout {
                reference: reference.to_string(),
                reason: format!(
                    "its manifest is {} bytes, over {MAX_MANIFEST_BYTES}",
                    manifest.len()
                ),
            });
        }
        let manifest_digest = Digest::of(&manifest);
        if let Some(expected) = reference.digest()
            && *expected != manifest_digest
        {
            return Err(OciError::DigestMismatch {
                reference: reference.to_string(),
                what: "manifest",
                expected: expected.to_string(),
                actual: manifest_digest.to_string(),
            });
        }
        let module = self.layer(reference, &manifest)?;
        let bytes = match self.lookup(&module)? {
            Some(bytes) => bytes,
            None => {
                let mut sink = Bounded {
                    bytes: Vec::new(),
                    limit: self.store.max_bytes(),
                    exceeded: false,
                };
                let descriptor = OciDescriptor {
                    media_type: WASM_LAYER_MEDIA_TYPE.into(),
                    digest: module.to_string(),
                    ..OciDescriptor::default()
                };
                let pulled = client.pull_blob(&target, &descriptor, &mut sink).await;
                if sink.exceeded {
                    return Err(OciError::TooLarge {
                        reference: reference.to_string(),
                        size: sink.bytes.len() as u64,
                        limit: sink.limit,
                    });
                }
                pulled.map_err(error)?;
                let actual = Digest::of(&sink.bytes);
                if actual != module {
                    return Err(OciError::DigestMismatch {
                        reference: reference.to_string(),
                        what: "module",
                        expected: module.to_string(),
                        actual: actual.to_string(),
                    });
                }
                self.store.put(&module, &sink.bytes)?;
                sink.bytes
            }
        };
        self.store.put(&manifest_digest, &manifest)?;
        Ok(Fetched {
            reference: reference.pinned(manifest_digest.clone()),
            manifest: manifest_digest,
            module,
            bytes,
            from_cache: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(dir: &std::path::Path) -> Registry {
        Registry::new(ModuleStore::new(dir).with_max_bytes(1000))
    }

    fn manifest(config_type: &str, layers: &[(&str, &Digest, i64)]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_MEDIA_TYPE,
            "config": {"mediaType": config_type, "digest": Digest::of(b"{}").to_string(), "size": 2},
            "layers": layers.iter().map(|(t, d, s)| serde_json::json!({"mediaType": t, "digest": d.to_string(), "size": s})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn the_layout_is_checked_before_anything_is_downloaded() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path());
        let reference: ModuleRef = "oci://localhost/m:v1".parse().unwrap();
        let module = Digest::of(b"module");
        let ok = manifest(
            WASM_CONFIG_MEDIA_TYPE,
            &[(WASM_LAYER_MEDIA_TYPE, &module, 6)],
        );
        assert_eq!(r.layer(&reference, &ok).unwrap(), module);
        for (bytes, reason) in [
            (
                manifest(
                    "application/vnd.oci.image.config.v1+json",
                    &[(WASM_LAYER_MEDIA_TYPE, &module, 6)],
                ),
                "config media type",
            ),
            (manifest(WASM_CONFIG_MEDIA_TYPE, &[]), "0 layers"),
            (
                manifest(
                    WASM_CONFIG_MEDIA_TYPE,
                    &[
                        (WASM_LAYER_MEDIA_TYPE, &module, 6),
                        (WASM_LAYER_MEDIA_TYPE, &module, 6),
                    ],
                ),
                "2 layers",
            ),
            (
                manifest(
                    WASM_CONFIG_MEDIA_TYPE,
                    &[("application/vnd.oci.image.layer.v1.tar", &module, 6)],
                ),
                "layer media type",
            ),
            (
                manifest(
                    WASM_CONFIG_MEDIA_TYPE,
                    &[(WASM_LAYER_MEDIA_TYPE, &module, 1001)],
                ),
                "over the limit",
            ),
            (b"not json".to_vec(), "does not parse"),
        ] {
            let e = r.layer(&reference, &bytes).unwrap_err().to_string();
            assert!(e.contains(reason), "{reason}: {e}");
        }
    }

    #[test]
    fn a_pinned_reference_is_served_from_the_store_alone() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path());
        let module = b"\0asm module".to_vec();
        let module_digest = Digest::of(&module);
        let manifest = manifest(
            WASM_CONFIG_MEDIA_TYPE,
            &[(WASM_LAYER_MEDIA_TYPE, &module_digest, module.len() as i64)],
        );
        let manifest_digest = Digest::of(&manifest);
        // Nothing listens on this port: the store must answer alone.
        let reference: ModuleRef = format!("oci://127.0.0.1:9/m@{manifest_digest}")
            .parse()
            .unwrap();
        assert!(r.cached(&reference).unwrap().is_none());
        r.store().put(&manifest_digest, &manifest).unwrap();
        assert!(r.cached(&reference).unwrap().is_none());
        r.store().put(&module_digest, &module).unwrap();
        let hit = r.cached(&reference).unwrap().unwrap();
        assert_eq!(
            (hit.bytes, hit.module, hit.from_cache),
            (module, module_digest.clone(), true)
        );
        // A corrupt module counts as missing and is removed.
        std::fs::write(r.store().path(&module_digest), b"\0asm tampered").unwrap();
        assert!(r.cached(&reference).unwrap().is_none());
        assert!(!r.store().path(&module_digest).exists());
        // A tag is never served from the store.
        assert!(r.cached(&reference.with_tag("v1")).unwrap().is_none());
    }

    #[test]
    fn the_config_is_the_cncf_layout() {
        let config = WasmConfig::component(
            &Digest::of(b"m"),
            vec!["wasmover:mover/kube@0.1.0".into()],
            vec!["wasmover:mover/control@0.1.0".into()],
        );
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["architecture"], "wasm");
        assert_eq!(json["os"], "wasip2");
        assert_eq!(json["layerDigests"][0], Digest::of(b"m").to_string());
        assert_eq!(
            json["component"]["exports"][0],
            "wasmover:mover/control@0.1.0"
        );
    }
}
