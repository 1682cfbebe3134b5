//! Kubernetes access for modules, scoped by the host.
//!
//! The runtime holds no Kubernetes client: a [`Cluster`] is whatever talks
//! to the API server (the operator implements it with kube-rs). Every call a
//! module makes goes through [`ScopedCluster`], which enforces the
//! replication's namespace and granted kinds and stamps ownership on what
//! the module creates. [`InMemoryCluster`] is a real, small object store for
//! wasm unit tests and local runs.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

/// An object's kind and name within a namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// `v1`, `batch/v1`, ...
    pub api_version: String,
    /// `PersistentVolumeClaim`, `Job`, ...
    pub kind: String,
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
}

/// Why a Kubernetes operation failed, as the guest sees it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KubeError {
    /// Refused by the host's scope (namespace or kind not granted).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The object does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The object exists already or changed under the caller.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The API server rejected the object.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The API server could not be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Access to an API server. Implementations do no scoping of their own.
pub trait Cluster: Send + Sync {
    /// Reads an object.
    fn get(&self, key: &ObjectKey) -> Result<Option<Value>, KubeError>;
    /// Lists a kind in a namespace, filtered by an equality label selector.
    fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        selector: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, KubeError>;
    /// Creates an object whose metadata names its namespace.
    fn create(&self, object: Value) -> Result<Value, KubeError>;
    /// Applies a JSON merge patch.
    fn patch(&self, key: &ObjectKey, merge_patch: Value) -> Result<Value, KubeError>;
    /// Deletes an object; `false` if it did not exist.
    fn delete(&self, key: &ObjectKey) -> Result<bool, KubeError>;
}

/// Label naming the replication object that owns what a module created.
pub const OWNER_NAME_LABEL: &str = "wasmover.dev/owner-name";
/// Label naming the kind of that owner.
pub const OWNER_KIND_LABEL: &str = "wasmover.dev/owner-kind";
/// Label set on everything wasmover creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// The replication object a module acts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// `wasmover.dev/v1alpha1`.
    pub api_version: String,
    /// `ReplicationSource` or `ReplicationDestination`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its UID, for the owner reference; `None` outside a cluster.
    pub uid: Option<String>,
}

/// The kinds a module may touch unless its replication grants others.
pub const DEFAULT_KINDS: &[(&str, &str)] = &[
    ("v1", "PersistentVolumeClaim"),
    ("snapshot.storage.k8s.io/v1", "VolumeSnapshot"),
    ("batch/v1", "Job"),
    ("v1", "Service"),
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
];

/// Kinds every module may read (get, list) in its namespace but never
/// create, change or delete: the Pods of its agent Jobs, whose termination
/// messages carry what the agents did.
pub const READABLE_KINDS: &[(&str, &str)] = &[("v1", "Pod")];

/// A [`Cluster`] seen through a replication's scope.
pub struct ScopedCluster {
    cluster: std::sync::Arc<dyn Cluster>,
    namespace: String,
    kinds: Vec<(String, String)>,
    owner: Owner,
}

impl std::fmt::Debug for ScopedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedCluster")
            .field("namespace", &self.namespace)
            .field("kinds", &self.kinds)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl ScopedCluster {
    /// Scopes `cluster` to `namespace`, the granted `kinds` (api version,
    /// kind) and the owner whose labels every created object carries.
    pub fn new(
        cluster: std::sync::Arc<dyn Cluster>,
        namespace: impl Into<String>,
        kinds: impl IntoIterator<Item = (String, String)>,
        owner: Owner,
    ) -> Self {
        Self {
            cluster,
            namespace: namespace.into(),
            kinds: kinds.into_iter().collect(),
            owner,
        }
    }

    fn check_kind(&self, api_version: &str, kind: &str) -> Result<(), KubeError> {
        if self
            .kinds
            .iter()
            .any(|(v, k)| v == api_version && k == kind)
        {
            Ok(())
        } else {
            Err(KubeError::Forbidden(format!(
                "kind {kind} ({api_version}) is not granted to this mover in namespace {}",
                self.namespace
            )))
        }
    }

    /// Like [`check_kind`](Self::check_kind), for reading: the
    /// [`READABLE_KINDS`] pass too.
    fn check_readable(&self, api_version: &str, kind: &str) -> Result<(), KubeError> {
        if READABLE_KINDS
            .iter()
            .any(|(v, k)| *v == api_version && *k == kind)
        {
            return Ok(());
        }
        self.check_kind(api_version, kind)
    }

    fn key(&self, api_version: &str, kind: &str, name: &str) -> Result<ObjectKey, KubeError> {
        self.check_kind(api_version, kind)?;
        Ok(ObjectKey {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: self.namespace.clone(),
            name: name.into(),
        })
    }

    fn owner_labels(&self) -> [(&'static str, &str); 3] {
        [
            (OWNER_NAME_LABEL, self.owner.name.as_str()),
            (OWNER_KIND_LABEL, self.owner.kind.as_str()),
            (MANAGED_BY_LABEL, "wasmover"),
        ]
    }

    /// Reads an object of a granted or readable kind in the scope's
    /// namespace.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<Value>, KubeError> {
        self.check_readable(api_version, kind)?;
        self.cluster.get(&ObjectKey {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: self.namespace.clone(),
            name: name.into(),
        })
    }

    /// Lists a granted or readable kind; `selector` is `k=v[,k=v]`.
    pub fn list(
        &self,
        api_version: &str,
        kind: &str,
        selector: Option<&str>,
    ) -> Result<Vec<Value>, KubeError> {
        self.check_readable(api_version, kind)?;
        let selector = parse_selector(selector.unwrap_or(""))?;
        self.cluster
            .list(api_version, kind, &self.namespace, &selector)
    }

    /// Creates an object in the scope's namespace, labelled and owned.
    pub fn create(&self, mut object: Value) -> Result<Value, KubeError> {
        let (api_version, kind) = type_of(&object)?;
        self.check_kind(&api_version, &kind)?;
        let metadata = object
            .as_object_mut()
            .ok_or_else(|| KubeError::Invalid("an object must be a JSON object".into()))?
            .entry("metadata")
            .or_insert_with(|| json!({}));
        let metadata = metadata
            .as_object_mut()
            .ok_or_else(|| KubeError::Invalid("metadata must be an object".into()))?;
        match metadata.get("namespace").and_then(Value::as_str) {
            Some(ns) if ns != self.namespace => {
                return Err(KubeError::Forbidden(format!(
                    "namespace {ns} is outside this mover's namespace {}",
                    self.namespace
                )));
            }
            _ => {}
        }
        metadata.insert("namespace".into(), self.namespace.clone().into());
        let labels = metadata
            .entry("labels")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| KubeError::Invalid("metadata.labels must be an object".into()))?;
        for (k, v) in self.owner_labels() {
            labels.insert(k.into(), v.into());
        }
        if let Some(uid) = &self.owner.uid {
            metadata.insert(
                "ownerReferences".into(),
                json!([{
                    "apiVersion": self.owner.api_version,
                    "kind": self.owner.kind,
                    "name": self.owner.name,
                    "uid": uid,
                    "controller": true,
                    "blockOwnerDeletion": true,
                }]),
            );
        }
        self.cluster.create(object)
    }

    /// Merge-patches an object; the patch may not move it or change its
    /// ownership.
    pub fn patch(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
        patch: Value,
    ) -> Result<Value, KubeError> {
        let key = self.key(api_version, kind, name)?;
        if let Some(metadata) = patch.get("metadata") {
            let touches_owner = ["namespace", "name", "ownerReferences"]
                .iter()
                .any(|f| metadata.get(f).is_some())
                || metadata.get("labels").is_some_and(|labels| {
                    self.owner_labels()
                        .iter()
                        .any(|(k, _)| labels.get(k).is_some())
                });
            if touches_owner {
                return Err(KubeError::Forbidden(
                    "a patch may not change an object's namespace, name, owner references or owner labels"
                        .into(),
                ));
            }
        }
        self.cluster.patch(&key, patch)
    }

    /// Deletes an object of a granted kind.
    pub fn delete(&self, api_version: &str, kind: &str, name: &str) -> Result<bool, KubeError> {
        self.cluster.delete(&self.key(api_version, kind, name)?)
    }
}

fn type_of(object: &Value) -> Result<(String, String), KubeError> {
    let field = |f: &str| {
        object
            .get(f)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| KubeError::Invalid(format!("the object has no {f}")))
    };
    Ok((field("apiVersion")?, field("kind")?))
}

fn parse_selector(selector: &str) -> Result<BTreeMap<String, String>, KubeError> {
    selector
        .split(',')
        .map(str::trim)
        .filter(|term| !term.is_empty())
        .map(|term| {
            term.split_once('=')
                .map(|(k, v)| {
                    (
                        k.trim().to_owned(),
                        v.trim_start_matches('=').trim().to_owned(),
                    )
                })
                .filter(|(k, _)| !k.is_empty() && !k.ends_with('!'))
                .ok_or_else(|| {
                    KubeError::Invalid(format!(
                        "label selector term {term:?}: only key=value terms are supported"
                    ))
                })
        })
        .collect()
}

/// An in-memory object store with the API server's basic semantics
/// (conflict on create, not-found, merge patch, label selectors). It records
/// every object it holds, so tests assert on what a module did.
#[derive(Debug, Default)]
pub struct InMemoryCluster {
    objects: Mutex<BTreeMap<ObjectKey, Value>>,
}

impl InMemoryCluster {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every object held, in key order.
    pub fn objects(&self) -> Vec<(ObjectKey, Value)> {
        let objects = self.objects.lock().expect("cluster lock");
        objects
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl Cluster for InMemoryCluster {
    fn get(&self, key: &ObjectKey) -> Result<Option<Value>, KubeError> {
        Ok(self.objects.lock().expect("cluster lock").get(key).cloned())
    }

    fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        selector: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, KubeError> {
        let objects = self.objects.lock().expect("cluster lock");
        Ok(objects
            .iter()
            .filter(|(k, _)| {
                k.api_version == api_version && k.kind == kind && k.namespace == namespace
            })
            .filter(|(_, v)| {
                selector.iter().all(|(sk, sv)| {
                    v.pointer("/metadata/labels")
                        .and_then(|l| l.get(sk))
                        .and_then(Value::as_str)
                        == Some(sv.as_str())
                })
            })
            .map(|(_, v)| v.clone())
            .collect())
    }

    fn create(&self, object: Value) -> Result<Value, KubeError> {
        let (api_version, kind) = type_of(&object)?;
        let meta = |f: &str| {
            object
                .pointer(&format!("/metadata/{f}"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| KubeError::Invalid(format!("metadata.{f} is required")))
        };
        let key = ObjectKey {
            api_version,
            kind,
            namespace: meta("namespace")?,
            name: meta("name")?,
        };
        let mut objects = self.objects.lock().expect("cluster lock");
        if objects.contains_key(&key) {
            return Err(KubeError::Conflict(format!(
                "{} {} already exists",
                key.kind, key.name
            )));
        }
        objects.insert(key, object.clone());
        Ok(object)
    }

    fn patch(&self, key: &ObjectKey, merge_patch: Value) -> Result<Value, KubeError> {
        let mut objects = self.objects.lock().expect("cluster lock");
        let object = objects
            .get_mut(key)
            .ok_or_else(|| KubeError::NotFound(format!("{} {}", key.kind, key.name)))?;
        merge(object, merge_patch);
        Ok(object.clone())
    }

    fn delete(&self, key: &ObjectKey) -> Result<bool, KubeError> {
        Ok(self
            .objects
            .lock()
            .expect("cluster lock")
            .remove(key)
            .is_some())
    }
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (k, v) in patch {
        if v.is_null() {
            target.remove(&k);
        } else {
            merge(target.entry(k).or_insert(Value::Null), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn scoped(store: &Arc<InMemoryCluster>) -> ScopedCluster {
        ScopedCluster::new(
            store.clone(),
            "team-a",
            DEFAULT_KINDS
                .iter()
                .map(|(v, k)| (v.to_string(), k.to_string())),
            Owner {
                api_version: "wasmover.dev/v1alpha1".into(),
                kind: "ReplicationSource".into(),
                name: "db".into(),
                uid: Some("uid-1".into()),
            },
        )
    }

    #[test]
    fn create_stamps_namespace_labels_and_owner() {
        let store = Arc::new(InMemoryCluster::new());
        let created = scoped(&store)
            .create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "psk"}}))
            .unwrap();
        assert_eq!(created["metadata"]["namespace"], "team-a");
        assert_eq!(created["metadata"]["labels"][OWNER_NAME_LABEL], "db");
        assert_eq!(created["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(store.objects().len(), 1);
    }

    #[test]
    fn scope_refuses_other_namespaces_kinds_and_owner_changes() {
        let store = Arc::new(InMemoryCluster::new());
        let cluster = scoped(&store);
        let other_ns = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x", "namespace": "kube-system"}});
        assert!(matches!(
            cluster.create(other_ns),
            Err(KubeError::Forbidden(_))
        ));
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}});
        assert!(matches!(cluster.create(pod), Err(KubeError::Forbidden(_))));
        // Pods are readable, never writable.
        assert!(cluster.get("v1", "Pod", "x").unwrap().is_none());
        assert!(cluster.list("v1", "Pod", Some("a=b")).unwrap().is_empty());
        assert!(matches!(
            cluster.patch("v1", "Pod", "x", json!({})),
            Err(KubeError::Forbidden(_))
        ));
        assert!(matches!(
            cluster.delete("v1", "Pod", "x"),
            Err(KubeError::Forbidden(_))
        ));
        assert!(matches!(
            cluster.get("v1", "Node", "n1"),
            Err(KubeError::Forbidden(_))
        ));
        cluster
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}))
            .unwrap();
        let relabel = json!({"metadata": {"labels": {OWNER_NAME_LABEL: "other"}}});
        assert!(matches!(
            cluster.patch("v1", "ConfigMap", "c", relabel),
            Err(KubeError::Forbidden(_))
        ));
        assert!(store.objects().len() == 1);
    }

    #[test]
    fn in_memory_cluster_has_api_semantics() {
        let store = Arc::new(InMemoryCluster::new());
        let cluster = scoped(&store);
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        cluster.create(cm.clone()).unwrap();
        assert!(matches!(cluster.create(cm), Err(KubeError::Conflict(_))));
        let patched = cluster
            .patch(
                "v1",
                "ConfigMap",
                "c",
                json!({"data": {"a": null, "c": "3"}}),
            )
            .unwrap();
        assert_eq!(patched["data"], json!({"b": "2", "c": "3"}));
        assert_eq!(
            cluster
                .list("v1", "ConfigMap", Some("wasmover.dev/owner-name=db"))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            cluster
                .list("v1", "ConfigMap", Some("wasmover.dev/owner-name=x"))
                .unwrap()
                .len(),
            0
        );
        assert!(matches!(
            cluster.list("v1", "ConfigMap", Some("a in (b)")),
            Err(KubeError::Invalid(_))
        ));
        assert!(cluster.delete("v1", "ConfigMap", "c").unwrap());
        assert!(!cluster.delete("v1", "ConfigMap", "c").unwrap());
        assert!(matches!(
            cluster.patch("v1", "ConfigMap", "c", json!({})),
            Err(KubeError::NotFound(_))
        ));
    }
}
