//! [`ScopedCluster`]: a replication's view of the cluster. A module reaches
//! its own namespace only, the kinds granted to it, the objects its
//! replication names (to read and mount, never to change) and the objects
//! it created (to read, change and delete); the agents it asks for are built
//! from the host's template.

use std::sync::Arc;

use serde_json::{Value, json};

use super::service::ServiceTemplate;
use super::workload::{AgentTemplate, Description};
use super::{
    Cluster, DEFAULT_KINDS, KubeError, MANAGED_BY_LABEL, OWNER_KIND_LABEL, OWNER_NAME_LABEL,
    ObjectKey, Owner, READABLE_KINDS, parse_selector, type_of,
};

/// An object the replication names (its source PVC, a Secret a parameter
/// names, ...): the module may read it and mount it in its agents, but not
/// change or delete it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    /// `PersistentVolumeClaim`, `Secret`, ...
    pub kind: String,
    /// Its name in the replication's namespace.
    pub name: String,
}

impl Named {
    /// The object `name` of `kind`.
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            name: name.into(),
        }
    }
}

/// What a replication grants its module.
#[derive(Clone, Debug)]
pub struct Scope {
    /// The replication's namespace; nothing outside it is reachable.
    pub namespace: String,
    /// Kinds (api version, kind) the module may create, change and delete.
    pub kinds: Vec<(String, String)>,
    /// The replication, whose labels and owner reference every created
    /// object carries.
    pub owner: Owner,
    /// Objects the replication names.
    pub named: Vec<Named>,
    /// How the module's agent Jobs are built, or why it may start none.
    pub agents: Result<AgentTemplate, String>,
    /// The type and annotations of every Service the module creates.
    pub services: ServiceTemplate,
}

impl Scope {
    /// What `owner` in `namespace` is granted by default: the
    /// [`DEFAULT_KINDS`], nothing named, no agents, `ClusterIP` Services.
    pub fn new(namespace: impl Into<String>, owner: Owner) -> Self {
        Self {
            namespace: namespace.into(),
            kinds: DEFAULT_KINDS
                .iter()
                .map(|(v, k)| (v.to_string(), k.to_string()))
                .collect(),
            owner,
            named: Vec::new(),
            agents: Err("this run starts no agents".into()),
            services: ServiceTemplate::default(),
        }
    }
}

/// A [`Cluster`] seen through a replication's [`Scope`].
pub struct ScopedCluster {
    cluster: Arc<dyn Cluster>,
    scope: Scope,
}

impl std::fmt::Debug for ScopedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedCluster")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Where a patch may not go: who owns the object, and where it is.
const OWNERSHIP_FIELDS: [&str; 3] = ["namespace", "name", "ownerReferences"];

impl ScopedCluster {
    /// `cluster` as `scope` lets a module see it.
    pub fn new(cluster: Arc<dyn Cluster>, scope: Scope) -> Self {
        Self { cluster, scope }
    }

    /// The scope.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    fn check_kind(&self, api_version: &str, kind: &str) -> Result<(), KubeError> {
        if self
            .scope
            .kinds
            .iter()
            .any(|(v, k)| v == api_version && k == kind)
        {
            Ok(())
        } else {
            Err(KubeError::refused(
                "kind",
                format!(
                    "kind {kind} ({api_version}) is not granted to this mover in namespace {}",
                    self.scope.namespace
                ),
            ))
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

    fn key(&self, api_version: &str, kind: &str, name: &str) -> ObjectKey {
        ObjectKey {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: self.scope.namespace.clone(),
            name: name.into(),
        }
    }

    fn owner_labels(&self) -> [(&'static str, &str); 3] {
        [
            (OWNER_NAME_LABEL, self.scope.owner.name.as_str()),
            (OWNER_KIND_LABEL, self.scope.owner.kind.as_str()),
            (MANAGED_BY_LABEL, "wasmover"),
        ]
    }

    /// Whether the module's replication created `object` (it carries the
    /// owner labels, which only the host writes).
    fn owns(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        labels[OWNER_NAME_LABEL] == self.scope.owner.name.as_str()
            && labels[OWNER_KIND_LABEL] == self.scope.owner.kind.as_str()
    }

    fn is_named(&self, kind: &str, name: &str) -> bool {
        self.scope
            .named
            .iter()
            .any(|n| n.kind == kind && n.name == name)
    }

    fn not_ours(&self, kind: &str, name: &str, verb: &str) -> KubeError {
        let owner = &self.scope.owner;
        KubeError::refused(
            "ownership",
            format!(
                "{kind} {name} was not created by the mover of {} {}; it may {verb} only what it created{}",
                owner.kind,
                owner.name,
                match (verb, kind) {
                    ("read", "Secret") => {
                        " or what its replication names (a Secret, in a parameter ending in -secret)"
                    }
                    ("read", _) => " or what its replication names",
                    _ => "",
                }
            ),
        )
    }

    /// Whether the module may read (and mount) object `name` of `kind`:
    /// its replication names it, or the module created it.
    pub(super) fn may_use(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
    ) -> Result<(), KubeError> {
        if self.is_named(kind, name) {
            return Ok(());
        }
        match self.cluster.get(&self.key(api_version, kind, name))? {
            Some(object) if self.owns(&object) => Ok(()),
            Some(_) => Err(self.not_ours(kind, name, "read")),
            None => Err(KubeError::NotFound(format!("{kind} {name}"))),
        }
    }

    /// Reads an object the replication names or the module created; `None`
    /// when it does not exist.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<Value>, KubeError> {
        self.check_readable(api_version, kind)?;
        let object = self.cluster.get(&self.key(api_version, kind, name))?;
        match object {
            Some(object) if !self.is_named(kind, name) && !self.owns(&object) => {
                Err(self.not_ours(kind, name, "read"))
            }
            object => Ok(object),
        }
    }

    /// Lists the module's own objects of a kind; `selector` is
    /// `k=v[,k=v]`. Secrets are never listed: a module reads those it is
    /// given by name.
    pub fn list(
        &self,
        api_version: &str,
        kind: &str,
        selector: Option<&str>,
    ) -> Result<Vec<Value>, KubeError> {
        self.check_readable(api_version, kind)?;
        if kind == "Secret" {
            return Err(KubeError::refused(
                "list-secrets",
                "a mover may not list Secrets; it reads those its replication names, by name",
            ));
        }
        let mut selector = parse_selector(selector.unwrap_or(""))?;
        for (k, v) in self.owner_labels().into_iter().take(2) {
            if selector.get(k).is_some_and(|asked| asked != v) {
                return Err(self.not_ours(kind, &format!("labelled {k}={}", selector[k]), "list"));
            }
            selector.insert(k.into(), v.into());
        }
        self.cluster
            .list(api_version, kind, &self.scope.namespace, &selector)
    }

    /// Creates an object in the scope's namespace, labelled and owned. A Job
    /// is a description of an agent, built into a Job by the host's
    /// template; a PVC, VolumeSnapshot or Service is checked first.
    pub fn create(&self, mut object: Value) -> Result<Value, KubeError> {
        let (api_version, kind) = type_of(&object)?;
        self.check_kind(&api_version, &kind)?;
        if !object.is_object() {
            return Err(KubeError::Invalid("an object must be a JSON object".into()));
        }
        match object["metadata"]["namespace"].as_str() {
            Some(ns) if ns != self.scope.namespace => {
                return Err(KubeError::refused(
                    "namespace",
                    format!(
                        "namespace {ns} is outside this mover's namespace {}",
                        self.scope.namespace
                    ),
                ));
            }
            _ => {}
        }
        match kind.as_str() {
            "Job" => object = self.agent_job(&object)?,
            "PersistentVolumeClaim" => self.check_claim(&object)?,
            "VolumeSnapshot" => self.check_snapshot(&object)?,
            "Service" => self.check_service(&mut object)?,
            _ => {}
        }
        self.stamp(&mut object)?;
        self.cluster.create(object)
    }

    /// Puts the object in the namespace, with the owner labels and the
    /// owner reference.
    fn stamp(&self, object: &mut Value) -> Result<(), KubeError> {
        let metadata = object
            .as_object_mut()
            .expect("checked by create")
            .entry("metadata")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| KubeError::Invalid("metadata must be an object".into()))?;
        metadata.insert("namespace".into(), self.scope.namespace.clone().into());
        let labels = metadata
            .entry("labels")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| KubeError::Invalid("metadata.labels must be an object".into()))?;
        for (k, v) in self.owner_labels() {
            labels.insert(k.into(), v.into());
        }
        let owner = &self.scope.owner;
        if let Some(uid) = &owner.uid {
            metadata.insert(
                "ownerReferences".into(),
                json!([{
                    "apiVersion": owner.api_version,
                    "kind": owner.kind,
                    "name": owner.name,
                    "uid": uid,
                    "controller": true,
                    "blockOwnerDeletion": true,
                }]),
            );
        }
        Ok(())
    }

    /// Builds the Job of the agent `description` asks for.
    fn agent_job(&self, description: &Value) -> Result<Value, KubeError> {
        let description = Description::parse(description)?;
        let template = self
            .scope
            .agents
            .as_ref()
            .map_err(|why| KubeError::refused("no-agents", why.clone()))?;
        description.check_args(template)?;
        description.check_mounts(template)?;
        for mount in &template.mounts {
            let (kind, name) = mount.source.object();
            if self.cluster.get(&self.key("v1", kind, name))?.is_none() {
                return Err(KubeError::refused(
                    "mover-volume",
                    format!(
                        "the agent would mount {kind} {name} at {}, which does not exist",
                        mount.path
                    ),
                ));
            }
        }
        for (kind, name) in description.uses() {
            let api_version = "v1";
            self.may_use(api_version, kind, name).map_err(|e| match e {
                KubeError::NotFound(_) => KubeError::refused(
                    "agent-volume",
                    format!("the agent mounts {kind} {name}, which does not exist"),
                ),
                KubeError::Refused(r) => KubeError::refused("agent-volume", r.message),
                e => e,
            })?;
        }
        Ok(template.job(&description, self.owner_labels()))
    }

    /// A PVC may be cloned or restored only from what the module may read,
    /// and may not pick a PersistentVolume.
    fn check_claim(&self, claim: &Value) -> Result<(), KubeError> {
        let spec = &claim["spec"];
        for field in ["volumeName", "selector"] {
            if !spec[field].is_null() {
                return Err(KubeError::refused(
                    "claim-source",
                    format!(
                        "spec.{field}: a mover's PVC is provisioned, never bound to a chosen volume"
                    ),
                ));
            }
        }
        for field in ["dataSource", "dataSourceRef"] {
            let source = &spec[field];
            if source.is_null() {
                continue;
            }
            let kind = source["kind"].as_str().unwrap_or_default();
            let name = source["name"].as_str().unwrap_or_default();
            let api_version = match (source["apiGroup"].as_str(), kind) {
                (None | Some(""), "PersistentVolumeClaim") => "v1",
                (Some("snapshot.storage.k8s.io"), "VolumeSnapshot") => "snapshot.storage.k8s.io/v1",
                _ => {
                    return Err(KubeError::refused(
                        "claim-source",
                        format!(
                            "spec.{field}: a PVC is made from a PVC or a VolumeSnapshot, not {kind}"
                        ),
                    ));
                }
            };
            if source["namespace"]
                .as_str()
                .is_some_and(|ns| ns != self.scope.namespace)
            {
                return Err(KubeError::refused(
                    "namespace",
                    format!("spec.{field}: {kind} {name} is outside this mover's namespace"),
                ));
            }
            self.may_use(api_version, kind, name)
                .map_err(|e| self.source_refused(field, e))?;
        }
        Ok(())
    }

    /// A VolumeSnapshot may be taken only of a PVC the module may read.
    fn check_snapshot(&self, snapshot: &Value) -> Result<(), KubeError> {
        let source = &snapshot["spec"]["source"];
        if !source["volumeSnapshotContentName"].is_null() {
            return Err(KubeError::refused(
                "claim-source",
                "spec.source.volumeSnapshotContentName: a mover takes snapshots, it does not adopt existing contents",
            ));
        }
        let claim = source["persistentVolumeClaimName"]
            .as_str()
            .unwrap_or_default();
        self.may_use("v1", "PersistentVolumeClaim", claim)
            .map_err(|e| self.source_refused("source", e))
    }

    fn source_refused(&self, field: &str, e: KubeError) -> KubeError {
        match e {
            KubeError::Refused(r) => {
                KubeError::refused("claim-source", format!("spec.{field}: {}", r.message))
            }
            e => e,
        }
    }

    /// A Service reaches the replication's own agents only, from inside
    /// the cluster or through a node port or load balancer as the
    /// replication chose; never through addresses the mover picks.
    fn check_service(&self, service: &mut Value) -> Result<(), KubeError> {
        const ALLOWED: &[&str] = &[
            "type",
            "ports",
            "selector",
            "clusterIP",
            "ipFamilies",
            "ipFamilyPolicy",
            "publishNotReadyAddresses",
            "sessionAffinity",
        ];
        let spec = service
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| KubeError::Invalid("a Service needs a spec".into()))?;
        if let Some(field) = spec.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
            return Err(KubeError::refused(
                "service",
                format!("spec.{field} is not something a mover's Service may set"),
            ));
        }
        match spec.get("type").and_then(Value::as_str) {
            None | Some("ClusterIP" | "NodePort" | "LoadBalancer") => {}
            Some(other) => {
                return Err(KubeError::refused(
                    "service",
                    format!(
                        "spec.type {other}: a mover's Service is ClusterIP, NodePort or LoadBalancer"
                    ),
                ));
            }
        }
        let selector = spec
            .entry("selector")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| KubeError::Invalid("spec.selector must be an object".into()))?;
        if selector.is_empty() {
            return Err(KubeError::refused(
                "service",
                "spec.selector is empty: a mover's Service selects its own agents",
            ));
        }
        // Only the replication's agents carry these.
        for (k, v) in self.owner_labels().into_iter().take(2) {
            selector.insert(k.into(), v.into());
        }
        self.scope.services.apply(service)
    }

    /// Merge-patches an object the module created; the patch may not move
    /// it, change its ownership, or change the spec the host checked.
    pub fn patch(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
        patch: Value,
    ) -> Result<Value, KubeError> {
        self.check_kind(api_version, kind)?;
        if let Some(metadata) = patch.get("metadata") {
            let touches_owner = OWNERSHIP_FIELDS.iter().any(|f| metadata.get(f).is_some())
                || metadata.get("labels").is_some_and(|labels| {
                    self.owner_labels()
                        .iter()
                        .any(|(k, _)| labels.get(k).is_some())
                });
            if touches_owner {
                return Err(KubeError::refused(
                    "ownership",
                    "a patch may not change an object's namespace, name, owner references or owner labels",
                ));
            }
        }
        let checked_spec = match kind {
            "Job" | "Service" | "VolumeSnapshot" => patch.get("spec").is_some(),
            "PersistentVolumeClaim" => patch
                .get("spec")
                .and_then(Value::as_object)
                .is_some_and(|spec| spec.keys().any(|k| k != "resources")),
            _ => false,
        };
        if checked_spec {
            return Err(KubeError::refused(
                "ownership",
                format!(
                    "a patch may not change the spec of a {kind} (the host checked it when it was created)"
                ),
            ));
        }
        let key = self.key(api_version, kind, name);
        match self.cluster.get(&key)? {
            Some(object) if self.owns(&object) => self.cluster.patch(&key, patch),
            Some(_) => Err(self.not_ours(kind, name, "change")),
            None => Err(KubeError::NotFound(format!("{kind} {name}"))),
        }
    }

    /// Deletes an object the module created; `false` when it did not exist.
    pub fn delete(&self, api_version: &str, kind: &str, name: &str) -> Result<bool, KubeError> {
        self.check_kind(api_version, kind)?;
        let key = self.key(api_version, kind, name);
        match self.cluster.get(&key)? {
            Some(object) if self.owns(&object) => self.cluster.delete(&key),
            Some(_) => Err(self.not_ours(kind, name, "delete")),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::{AgentTemplate, InMemoryCluster, test_owner};

    fn scope(agents: bool) -> Scope {
        let mut scope = Scope::new("team-a", test_owner("ReplicationSource", Some("uid-1")));
        scope.named = vec![
            Named::new("PersistentVolumeClaim", "data"),
            Named::new("Secret", "key"),
        ];
        if agents {
            scope.agents = Ok(AgentTemplate::new("agent@sha256:0", &["wasmover", "agent"]));
        }
        scope
    }

    /// A store holding the user's objects, and the module's view of it.
    fn cluster() -> (Arc<InMemoryCluster>, ScopedCluster) {
        let store = Arc::new(InMemoryCluster::new());
        for (kind, name) in [
            ("PersistentVolumeClaim", "data"),
            ("PersistentVolumeClaim", "other"),
            ("Secret", "key"),
            ("Secret", "user-credentials"),
        ] {
            store
                .create(json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "team-a"}}))
                .unwrap();
        }
        (store.clone(), ScopedCluster::new(store, scope(true)))
    }

    fn rule(result: Result<impl std::fmt::Debug, KubeError>) -> &'static str {
        match result {
            Err(KubeError::Refused(r)) => r.rule,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn create_stamps_namespace_labels_and_owner() {
        let (store, cluster) = cluster();
        let created = cluster
            .create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "psk"}}))
            .unwrap();
        assert_eq!(created["metadata"]["namespace"], "team-a");
        assert_eq!(created["metadata"]["labels"][OWNER_NAME_LABEL], "db");
        assert_eq!(created["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(store.objects().len(), 5);
    }

    #[test]
    fn scope_refuses_other_namespaces_kinds_and_owner_changes() {
        let (store, cluster) = cluster();
        let other_ns = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x", "namespace": "kube-system"}});
        assert_eq!(rule(cluster.create(other_ns)), "namespace");
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}});
        assert_eq!(rule(cluster.create(pod)), "kind");
        // Pods are readable, never writable.
        assert!(cluster.get("v1", "Pod", "x").unwrap().is_none());
        assert!(cluster.list("v1", "Pod", Some("a=b")).unwrap().is_empty());
        assert_eq!(rule(cluster.patch("v1", "Pod", "x", json!({}))), "kind");
        assert_eq!(rule(cluster.delete("v1", "Pod", "x")), "kind");
        assert_eq!(rule(cluster.get("v1", "Node", "n1")), "kind");
        cluster
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}))
            .unwrap();
        let relabel = json!({"metadata": {"labels": {OWNER_NAME_LABEL: "other"}}});
        assert_eq!(
            rule(cluster.patch("v1", "ConfigMap", "c", relabel)),
            "ownership"
        );
        assert_eq!(store.objects().len(), 5);
    }

    #[test]
    fn a_module_reads_what_it_is_named_or_made_and_changes_only_what_it_made() {
        let (store, cluster) = cluster();
        // Named: readable, not changeable.
        assert!(
            cluster
                .get("v1", "PersistentVolumeClaim", "data")
                .unwrap()
                .is_some()
        );
        assert!(cluster.get("v1", "Secret", "key").unwrap().is_some());
        assert_eq!(
            rule(cluster.delete("v1", "PersistentVolumeClaim", "data")),
            "ownership"
        );
        assert_eq!(
            rule(cluster.patch("v1", "Secret", "key", json!({"data": {"k": "eA=="}}))),
            "ownership"
        );
        // Neither named nor made: not even readable; absent is absent.
        assert_eq!(
            rule(cluster.get("v1", "Secret", "user-credentials")),
            "ownership"
        );
        assert_eq!(
            rule(cluster.get("v1", "PersistentVolumeClaim", "other")),
            "ownership"
        );
        assert!(cluster.get("v1", "Secret", "nothing").unwrap().is_none());
        assert_eq!(rule(cluster.list("v1", "Secret", None)), "list-secrets");
        // Made: everything, and a list shows only its own.
        cluster
            .create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "mine"}, "spec": {}}))
            .unwrap();
        let claims = cluster.list("v1", "PersistentVolumeClaim", None).unwrap();
        assert_eq!(claims.len(), 1, "{claims:?}");
        assert_eq!(
            rule(cluster.list(
                "v1",
                "PersistentVolumeClaim",
                Some(&format!("{OWNER_NAME_LABEL}=other"))
            )),
            "ownership"
        );
        cluster
            .patch(
                "v1",
                "PersistentVolumeClaim",
                "mine",
                json!({"metadata": {"annotations": {"a": "b"}}}),
            )
            .unwrap();
        assert_eq!(
            rule(cluster.patch(
                "v1",
                "PersistentVolumeClaim",
                "mine",
                json!({"spec": {"volumeName": "pv-1"}})
            )),
            "ownership"
        );
        assert!(
            cluster
                .delete("v1", "PersistentVolumeClaim", "mine")
                .unwrap()
        );
        assert!(
            !cluster
                .delete("v1", "PersistentVolumeClaim", "mine")
                .unwrap()
        );
        assert_eq!(store.objects().len(), 4);
    }

    #[test]
    fn claims_and_snapshots_come_only_from_what_the_module_may_read() {
        let (_, cluster) = cluster();
        let claim = |source: Value| {
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "clone"},
                   "spec": {"dataSource": source}})
        };
        assert_eq!(
            rule(cluster.create(claim(
                json!({"kind": "PersistentVolumeClaim", "name": "other"})
            ))),
            "claim-source"
        );
        assert_eq!(
            rule(cluster.create(claim(json!({"kind": "Pod", "name": "x"})))),
            "claim-source"
        );
        assert_eq!(
            rule(
                cluster.create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "bound"}, "spec": {"volumeName": "pv-of-someone"}}))
            ),
            "claim-source"
        );
        cluster
            .create(claim(
                json!({"kind": "PersistentVolumeClaim", "name": "data"}),
            ))
            .unwrap();
        let snapshot = |claim: &str| {
            json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                   "metadata": {"name": format!("of-{claim}")},
                   "spec": {"source": {"persistentVolumeClaimName": claim}}})
        };
        assert_eq!(rule(cluster.create(snapshot("other"))), "claim-source");
        cluster.create(snapshot("clone")).unwrap();
        cluster.create(snapshot("data")).unwrap();
    }

    #[test]
    fn a_service_selects_only_the_replications_agents() {
        let (_, cluster) = cluster();
        let service = |spec: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": spec});
        assert_eq!(
            rule(cluster.create(service(
                json!({"selector": {"a": "b"}, "externalIPs": ["1.2.3.4"]})
            ))),
            "service"
        );
        assert_eq!(
            rule(cluster.create(service(
                json!({"type": "ExternalName", "selector": {"a": "b"}})
            ))),
            "service"
        );
        let created = cluster
            .create(service(
                json!({"selector": {"wasmover.dev/agent": "j"}, "ports": [{"port": 8000}]}),
            ))
            .unwrap();
        assert_eq!(created["spec"]["selector"][OWNER_NAME_LABEL], "db");
        assert_eq!(created["spec"]["selector"]["wasmover.dev/agent"], "j");
    }

    #[test]
    fn without_a_template_no_agents_start() {
        let store = Arc::new(InMemoryCluster::new());
        let cluster = ScopedCluster::new(store, scope(false));
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
            "spec": {"template": {"spec": {"containers": [{"args": ["receive"]}]}}}});
        assert_eq!(rule(cluster.create(job)), "no-agents");
    }
}
