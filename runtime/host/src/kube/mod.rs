//! Kubernetes access for modules, scoped by the host.
//!
//! The runtime holds no Kubernetes client: a [`Cluster`] is whatever talks
//! to the API server (the operator implements it with kube-rs). Every call a
//! module makes goes through a [`ScopedCluster`], which confines it to its
//! replication's namespace, granted kinds and own objects, and builds the
//! agents and Services it asks for from the host's [`AgentTemplate`] and
//! [`ServiceTemplate`]. [`InMemoryCluster`] is a real, small object store
//! for wasm unit tests and local runs.

mod memory;
mod scope;
mod service;
mod workload;

use std::collections::BTreeMap;

use serde_json::Value;

pub use memory::InMemoryCluster;
pub use scope::{Named, Scope, ScopedCluster};
pub use service::ServiceTemplate;
pub use workload::{AGENT_UID, AgentTemplate, HostMount, MountSource, Privilege, SecretItem};

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
    /// Refused by the host's scope, naming the rule.
    #[error("{0}")]
    Refused(Refusal),
    /// Refused by the API server (the operator's RBAC).
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

/// A call the host's scope refused: the rule it broke and what exactly.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (rule {rule})")]
pub struct Refusal {
    /// The rule, for metrics and docs/security.md: `namespace`, `kind`,
    /// `ownership`, `list-secrets`, `agent-template`, `agent-volume`,
    /// `mover-volume`, `service`, `claim-source`, `no-agents`.
    pub rule: &'static str,
    /// What was refused, naming the object or field.
    pub message: String,
}

impl KubeError {
    /// A refusal by `rule`.
    pub(crate) fn refused(rule: &'static str, message: impl Into<String>) -> Self {
        Self::Refused(Refusal {
            rule,
            message: message.into(),
        })
    }
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

/// The owner the kube tests scope modules to: `kind` `db`.
#[cfg(test)]
pub(crate) fn test_owner(kind: &str, uid: Option<&str>) -> Owner {
    Owner {
        api_version: "wasmover.dev/v1alpha1".into(),
        kind: kind.into(),
        name: "db".into(),
        uid: uid.map(str::to_owned),
    }
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

/// The `apiVersion` and `kind` of a JSON object.
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

/// An equality label selector, `k=v[,k=v]`.
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
