//! The operator's module resolution: turning `spec.mover.module` into the
//! catalog a mover is claimed from. A built-in name selects from the
//! built-in catalog; an `oci://` reference is fetched (the store first,
//! with the object's pull secret), loaded once per manifest digest and
//! recorded in the object's status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use wasmover_host::{Catalog, MoverEngine};
use wasmover_oci::{Credentials, Digest, ModuleRef, OciError, RegistryAuth};

use crate::crd::{
    CONDITION_MODULE_RESOLVED, MoverSpec, ResolvedModule, SyncStatus, condition, module_reason,
};
pub use crate::registry::{ModuleError, Oci, load};

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
    /// The `oci://` reference pinned by manifest digest that agents pull;
    /// `None` for a built-in module, which the agent image holds.
    pub pinned: Option<String>,
}

/// Why the module is not available now, and when to look again.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Unavailable {
    /// What failed; its message is the condition's and the Event's.
    #[source]
    pub error: ModuleError,
    /// Back-off before the next attempt.
    pub retry: Duration,
}

/// The object whose module is selected.
#[derive(Clone, Copy, Debug)]
pub struct Requester<'a> {
    /// Its namespace, where its `modulePullSecret` is.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its `spec.mover`.
    pub mover: &'a MoverSpec,
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
        ModuleError::Reference(_) | ModuleError::NoStore { .. } => module_reason::INVALID,
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

/// Sets the `ModuleResolved` condition.
fn set_module_condition(sync: &mut SyncStatus, status: &str, reason: &str, message: String) {
    sync.set_condition(condition(
        CONDITION_MODULE_RESOLVED,
        status,
        reason,
        message,
        None,
    ));
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
    async fn pull_secret(
        client: &Client,
        requester: Requester<'_>,
        reference: &ModuleRef,
    ) -> Result<Option<RegistryAuth>, ModuleError> {
        let Some(name) = &requester.mover.module_pull_secret else {
            return Ok(None);
        };
        let namespace = requester.namespace;
        let origin = format!("Secret {namespace}/{name}");
        let unusable = |reason: String| wasmover_oci::CredentialsError {
            origin: origin.clone(),
            reason,
        };
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
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
    async fn resolve(
        &self,
        client: &Client,
        requester: Requester<'_>,
        sync: &mut SyncStatus,
    ) -> Result<(Arc<Catalog>, String), ModuleError> {
        let spec = &requester.mover.module;
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
                        let auth = Self::pull_secret(client, requester, &target).await?;
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
        Ok((catalog, pinned.to_string()))
    }
}

/// The catalog and module name for the object's `spec.mover.module`: the
/// built-in catalog for a name (or none), the OCI module for an `oci://`
/// reference. Records the `ModuleResolved` condition and
/// `status.resolvedModule` in `sync`; on failure, the back-off for this
/// object. `builtin` serves names; `oci` (`None`: the operator has no
/// module store) serves references, reading pull secrets with `client`.
pub async fn select(
    client: &Client,
    builtin: &Arc<Catalog>,
    oci: Option<&OciModules>,
    requester: Requester<'_>,
    sync: &mut SyncStatus,
) -> Result<Selected, Unavailable> {
    let spec = &requester.mover.module;
    if !spec.starts_with(wasmover_oci::SCHEME) {
        sync.resolved_module = None;
        sync.conditions
            .retain(|c| c.type_ != CONDITION_MODULE_RESOLVED);
        return Ok(Selected {
            catalog: builtin.clone(),
            name: Some(spec.clone()).filter(|m| !m.is_empty()),
            pinned: None,
        });
    }
    let key = format!("{}/{}", requester.namespace, requester.name);
    let Some(modules) = oci else {
        let error = ModuleError::NoStore {
            reference: spec.clone(),
        };
        set_module_condition(sync, "False", reason_of(&error), error.to_string());
        return Err(Unavailable {
            error,
            retry: MAX_RETRY,
        });
    };
    match modules.resolve(client, requester, sync).await {
        Ok((catalog, pinned)) => {
            modules.failures.lock().expect("not poisoned").remove(&key);
            let name = catalog.modules().first().map(|m| m.name().to_owned());
            Ok(Selected {
                catalog,
                name,
                pinned: Some(pinned),
            })
        }
        Err(error) => {
            set_module_condition(sync, "False", reason_of(&error), error.to_string());
            let mut failures = modules.failures.lock().expect("not poisoned");
            let count = failures.entry(key).or_default();
            *count = count.saturating_add(1);
            Err(Unavailable {
                error,
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
