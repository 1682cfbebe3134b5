//! [`InMemoryCluster`]: a small object store with the API server's semantics.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Map, Value};

use super::{Cluster, KubeError, ObjectKey, type_of};

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

    use serde_json::json;

    use super::*;
    use crate::kube::{Scope, ScopedCluster, test_owner};

    fn scoped(store: &Arc<InMemoryCluster>) -> ScopedCluster {
        ScopedCluster::new(
            store.clone(),
            Scope::new("team-a", test_owner("ReplicationSource", None)),
        )
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
                .list("v1", "ConfigMap", Some("wasmover.dev/managed-by=x"))
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
