//! Mover modules from OCI registries: pushing a component as a wasm
//! artifact, fetching one into the module store, and, in the operator,
//! turning `spec.mover.module` into the catalog a mover is claimed from.
//!
//! A module is loaded from the store (verified by digest) and compiled
//! through the engine's precompiled cache, which is keyed by the module's
//! digest, wasmtime's version and the engine's settings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::{Api, ResourceExt};
use wasmover_oci::{
    Credentials, Digest, Fetched, ModuleRef, ModuleStore, OciError, RegistryAuth, WasmConfig,
};
use wasmover_host::{Catalog, MoverEngine, MoverModule, RunError};

use crate::controller::{Context, Replication};
use crate::crd::{CONDITION_MODULE_RESOLVED, ResolvedModule, SyncStatus, module_reason};

/// Why a module could not be pushed, fetched or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The reference does not parse.
    #[error(transparent)]
    Reference(#[from] wasmover_oci::RefParseError),
    /// The registry or the store failed.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// The module does not compile or link.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Credentials could not be read.
    #[error(transparent)]
    Credentials(#[from] wasmover_oci::CredentialsError),
    /// Loading the module panicked.
    #[error("loading the module failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// Only binary components are pushed.
    #[error(
        "{path} is not a binary WebAssembly component (no \\0asm header); push the built .wasm"
    )]
    NotBinary {
        /// The file.
        path: String,
    },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// A registry client with its store and credentials, as the CLI and the
/// operator use it.
#[derive(Clone, Debug)]
pub struct Oci {
    registry: wasmover_oci::Registry,
    credentials: Credentials,
}

impl Oci {
    /// Pulls into `store`; plain HTTP for every registry when `insecure`
    /// (else only loopback ones); `credentials` per registry.
    pub fn new(store: ModuleStore, insecure: bool, credentials: Credentials) -> Self {
        Self {
            registry: wasmover_oci::Registry::new(store).with_insecure(insecure),
            credentials,
        }
    }

    /// The registry client.
    pub fn registry(&self) -> &wasmover_oci::Registry {
        &self.registry
    }

    /// Validates the component in `file` (it must load as a mover or a
    /// command), pushes it to `reference` with its imports and exports in
    /// the config, and returns the manifest digest.
    pub async fn push(
        &self,
        engine: &MoverEngine,
        file: &Path,
        reference: &ModuleRef,
    ) -> Result<Digest, ModuleError> {
        let bytes = std::fs::read(file).map_err(|source| ModuleError::Io {
            path: file.display().to_string(),
            source,
        })?;
        if !bytes.starts_with(b"\0asm") {
            return Err(ModuleError::NotBinary {
                path: file.display().to_string(),
            });
        }
        let module = engine.load(reference.name(), &bytes)?;
        let config = WasmConfig::component(&Digest::of(&bytes), module.imports(), module.exports());
        let auth = self.credentials.for_registry(reference.registry());
        Ok(self
            .registry
            .push(reference, &bytes, &config, &auth)
            .await?)
    }

    /// The module at `reference`, from the store if pinned and there, else
    /// from the registry with `auth` (default: the credentials for its
    /// registry).
    pub async fn fetch(
        &self,
        reference: &ModuleRef,
        auth: Option<RegistryAuth>,
    ) -> Result<Fetched, ModuleError> {
        let auth = auth.unwrap_or_else(|| self.credentials.for_registry(reference.registry()));
        Ok(self.registry.fetch(reference, &auth).await?)
    }
}

/// Compiles (or loads precompiled) a fetched module, named after its
/// repository.
pub fn load(engine: &MoverEngine, fetched: &Fetched) -> Result<MoverModule, RunError> {
    engine.load(fetched.reference.name(), &fetched.bytes)
}

/// The default module store: `$XDG_CACHE_HOME/wasmover/modules`, else
/// `~/.cache/wasmover/modules`.
pub fn default_store_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("wasmover/modules"))
}

/// The operator's OCI modules: fetched on demand, loaded once per manifest
/// digest, and kept in memory; a pinned module in the store is used even
/// while its registry is down.
#[derive(Debug)]
pub struct OciModules {
    engine: MoverEngine,
    oci: Oci,
    /// One-module catalogs by manifest digest.
    loaded: Mutex<HashMap<Digest, Arc<Catalog>>>,
    /// Consecutive failures per object (`namespace/name`), for back-off.
    failures: Mutex<HashMap<String, u32>>,
}

/// The module chosen for one object: the catalog to claim from and the
/// module to select in it (`None`: whichever claims the spec).
#[derive(Clone, Debug)]
pub struct Selected {
    /// The catalog.
    pub catalog: Arc<Catalog>,
    /// The module's name in it.
    pub name: Option<String>,
}

/// Why the module is not available now, and when to look again.
#[derive(Debug)]
pub struct Unavailable {
    /// One line for the condition and the Event.
    pub message: String,
    /// Back-off before the next attempt.
    pub retry: Duration,
}

/// First back-off after a failure to get a module; doubles per failure.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Longest back-off.
const MAX_RETRY: Duration = Duration::from_secs(300);

fn backoff(failures: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_RETRY)
}

fn reason_of(error: &ModuleError) -> &'static str {
    match error {
        ModuleError::Reference(_) => module_reason::INVALID,
        ModuleError::Credentials(_) => module_reason::UNAUTHORIZED,
        ModuleError::Oci(e) => match e {
            OciError::Unauthorized { .. } => module_reason::UNAUTHORIZED,
            OciError::Unreachable { .. }
            | OciError::Transfer { .. }
            | OciError::Registry { .. } => module_reason::REGISTRY_UNAVAILABLE,
            OciError::DigestMismatch { .. } => module_reason::DIGEST_MISMATCH,
            _ => module_reason::UNUSABLE,
        },
        ModuleError::Run(_)
        | ModuleError::Io { .. }
        | ModuleError::NotBinary { .. }
        | ModuleError::Join(_) => module_reason::UNUSABLE,
    }
}

/// Sets the `ModuleResolved` condition, keeping its transition time while
/// status and reason hold.
fn set_module_condition(sync: &mut SyncStatus, status: &str, reason: &str, message: String) {
    let new = Condition {
        type_: CONDITION_MODULE_RESOLVED.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: None,
        last_transition_time: Time(Timestamp::now()),
    };
    match sync
        .conditions
        .iter_mut()
        .find(|c| c.type_ == CONDITION_MODULE_RESOLVED)
    {
        Some(old) if old.status == new.status && old.reason == new.reason => {
            old.message = new.message;
        }
        Some(old) => *old = new,
        None => sync.conditions.push(new),
    }
}

impl OciModules {
    /// Loads modules with `engine`, fetching through `oci`.
    pub fn new(engine: MoverEngine, oci: Oci) -> Self {
        Self {
            engine,
            oci,
            loaded: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    /// The credentials of the object's `modulePullSecret`, if it names one.
    async fn pull_secret<K: Replication>(
        ctx: &Context,
        obj: &K,
        reference: &ModuleRef,
    ) -> Result<Option<RegistryAuth>, ModuleError> {
        let Some(name) = &obj.mover().module_pull_secret else {
            return Ok(None);
        };
        let namespace = obj.namespace().unwrap_or_default();
        let origin = format!("Secret {namespace}/{name}");
        let unusable = |reason: String| wasmover_oci::CredentialsError {
            origin: origin.clone(),
            reason,
        };
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        let secret = secrets
            .get_opt(name)
            .await
            .map_err(|e| unusable(e.to_string()))?
            .ok_or_else(|| unusable("not found".into()))?;
        let json = secret
            .data
            .as_ref()
            .and_then(|d| d.get(".dockerconfigjson"))
            .ok_or_else(|| unusable("has no .dockerconfigjson key".into()))?;
        let credentials = Credentials::from_json(&json.0, &origin)?;
        Ok(Some(credentials.for_registry(reference.registry())))
    }

    /// The catalog of the module whose manifest is `digest`, if loaded.
    fn loaded(&self, digest: &Digest) -> Option<Arc<Catalog>> {
        self.loaded
            .lock()
            .expect("not poisoned")
            .get(digest)
            .cloned()
    }

    /// Fetches (store first) and loads the module, recording what it
    /// resolved to.
    async fn resolve<K: Replication>(
        &self,
        ctx: &Context,
        obj: &K,
        sync: &mut SyncStatus,
    ) -> Result<Arc<Catalog>, ModuleError> {
        let spec = &obj.mover().module;
        let reference: ModuleRef = spec.parse()?;
        // A tag resolved before stays resolved while the spec says the same.
        let recorded = sync
            .resolved_module
            .as_ref()
            .filter(|r| r.reference == *spec)
            .and_then(|r| r.manifest_digest.parse::<Digest>().ok());
        let target = match reference.digest().cloned().or(recorded) {
            Some(digest) => reference.pinned(digest),
            None => reference.clone(),
        };
        let (catalog, manifest) = match target.digest().and_then(|d| Some((self.loaded(d)?, d))) {
            Some((catalog, digest)) => (catalog, digest.clone()),
            None => {
                let fetched = match self.oci.registry().cached(&target)? {
                    Some(fetched) => fetched,
                    None => {
                        let auth = Self::pull_secret(ctx, obj, &target).await?;
                        self.oci.fetch(&target, auth).await?
                    }
                };
                let engine = self.engine.clone();
                let (module, fetched) = tokio::task::spawn_blocking(move || {
                    load(&engine, &fetched).map(|module| (module, fetched))
                })
                .await??;
                let mut catalog = Catalog::new();
                catalog
                    .register(module)
                    .expect("a new catalog has no duplicates");
                let catalog = Arc::new(catalog);
                self.loaded
                    .lock()
                    .expect("not poisoned")
                    .insert(fetched.manifest.clone(), catalog.clone());
                (catalog, fetched.manifest)
            }
        };
        let module = catalog
            .modules()
            .first()
            .map(|m| m.digest().to_owned())
            .unwrap_or_default();
        let pinned = reference.pinned(manifest.clone());
        if reference.is_pinned() {
            set_module_condition(
                sync,
                "True",
                module_reason::PINNED,
                format!("{pinned} (module {module})"),
            );
        } else {
            set_module_condition(
                sync,
                "True",
                module_reason::UNPINNED,
                format!(
                    "{reference} resolved to {manifest} and recorded in status.resolvedModule; \
                     it is not pinned: use {} to pin it",
                    reference
                        .with_tag(reference.tag().unwrap_or(wasmover_oci::DEFAULT_TAG))
                        .pinned(manifest.clone())
                ),
            );
        }
        sync.resolved_module = Some(ResolvedModule {
            reference: spec.clone(),
            manifest_digest: manifest.to_string(),
            module_digest: module,
        });
        Ok(catalog)
    }
}

/// The catalog and module name for the object's `spec.mover.module`: the
/// built-in catalog for a name (or none), the OCI module for an `oci://`
/// reference. Records the `ModuleResolved` condition and
/// `status.resolvedModule` in `sync`; on failure, the back-off for this
/// object.
pub async fn select<K: Replication>(
    ctx: &Context,
    obj: &K,
    sync: &mut SyncStatus,
) -> Result<Selected, Unavailable> {
    let spec = &obj.mover().module;
    if !spec.starts_with(wasmover_oci::SCHEME) {
        sync.resolved_module = None;
        sync.conditions
            .retain(|c| c.type_ != CONDITION_MODULE_RESOLVED);
        return Ok(Selected {
            catalog: ctx.catalog.clone(),
            name: Some(spec.clone()).filter(|m| !m.is_empty()),
        });
    }
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    let Some(modules) = &ctx.oci else {
        let message =
            format!("{spec}: this operator was started without OCI modules (no module store)");
        set_module_condition(sync, "False", module_reason::INVALID, message.clone());
        return Err(Unavailable {
            message,
            retry: MAX_RETRY,
        });
    };
    match modules.resolve(ctx, obj, sync).await {
        Ok(catalog) => {
            modules.failures.lock().expect("not poisoned").remove(&key);
            let name = catalog.modules().first().map(|m| m.name().to_owned());
            Ok(Selected { catalog, name })
        }
        Err(e) => {
            let message = e.to_string();
            set_module_condition(sync, "False", reason_of(&e), message.clone());
            let mut failures = modules.failures.lock().expect("not poisoned");
            let count = failures.entry(key).or_default();
            *count = count.saturating_add(1);
            Err(Unavailable {
                message,
                retry: backoff(*count),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_to_five_minutes() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), MAX_RETRY);
    }

    #[test]
    fn the_module_condition_keeps_its_transition_time_while_the_reason_holds() {
        let mut sync = SyncStatus::default();
        set_module_condition(
            &mut sync,
            "False",
            module_reason::REGISTRY_UNAVAILABLE,
            "a".into(),
        );
        let first = sync.conditions[0].last_transition_time.clone();
        std::thread::sleep(Duration::from_millis(5));
        set_module_condition(
            &mut sync,
            "False",
            module_reason::REGISTRY_UNAVAILABLE,
            "b".into(),
        );
        assert_eq!(sync.conditions[0].last_transition_time, first);
        assert_eq!(sync.conditions[0].message, "b");
        set_module_condition(&mut sync, "True", module_reason::PINNED, "c".into());
        assert_eq!(sync.conditions.len(), 1);
        assert_ne!(sync.conditions[0].last_transition_time, first);
    }

    #[test]
    fn failures_are_classified_for_the_condition() {
        let oci = |e| reason_of(&ModuleError::Oci(e));
        assert_eq!(
            oci(OciError::Unreachable {
                registry: "r".into(),
                reason: "refused".into()
            }),
            module_reason::REGISTRY_UNAVAILABLE
        );
        assert_eq!(
            oci(OciError::Unauthorized {
                reference: "x".into(),
                registry: "r".into(),
                reason: "401".into()
            }),
            module_reason::UNAUTHORIZED
        );
        assert_eq!(
            oci(OciError::DigestMismatch {
                reference: "x".into(),
                what: "module",
                expected: "a".into(),
                actual: "b".into()
            }),
            module_reason::DIGEST_MISMATCH
        );
        assert_eq!(
            oci(OciError::NotFound {
                reference: "x".into(),
                reason: "unknown".into()
            }),
            module_reason::UNUSABLE
        );
        let bad = "oci://Bad".parse::<ModuleRef>().unwrap_err();
        assert_eq!(
            reason_of(&ModuleError::Reference(bad)),
            module_reason::INVALID
        );
    }
}
