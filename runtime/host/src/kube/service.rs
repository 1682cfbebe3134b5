//! Services from the host's template: a mover says which of its agents a
//! Service reaches and on which ports; its replication says how the
//! Service is exposed (its type) and what the cluster's load-balancer or
//! DNS controllers read from it (annotations). A mover cannot expose its
//! agents beyond what the replication chose.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::KubeError;

/// What the host puts into every Service a mover creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceTemplate {
    /// `spec.type`: `ClusterIP`, `NodePort` or `LoadBalancer`. A mover may
    /// leave it out or state the same; another type is refused.
    pub service_type: String,
    /// Added to the mover's annotations; on a key both set, these win.
    pub annotations: BTreeMap<String, String>,
}

impl Default for ServiceTemplate {
    /// A `ClusterIP` Service without annotations of the replication's.
    fn default() -> Self {
        Self {
            service_type: "ClusterIP".into(),
            annotations: BTreeMap::new(),
        }
    }
}

impl ServiceTemplate {
    /// Sets `service`'s type and adds the annotations; refuses a mover's
    /// type other than the template's.
    pub(super) fn apply(&self, service: &mut Value) -> Result<(), KubeError> {
        let spec = &mut service["spec"];
        match spec.get("type").and_then(Value::as_str) {
            None => {}
            Some(asked) if asked == self.service_type => {}
            Some(asked) => {
                return Err(KubeError::refused(
                    "service",
                    format!(
                        "spec.type {asked}: a mover's Service is of the type its replication chose in spec.mover.serviceType ({})",
                        self.service_type
                    ),
                ));
            }
        }
        spec["type"] = self.service_type.clone().into();
        if self.annotations.is_empty() {
            return Ok(());
        }
        let metadata = service
            .as_object_mut()
            .expect("checked by create")
            .entry("metadata")
            .or_insert_with(|| json!({}));
        let annotations = metadata
            .as_object_mut()
            .ok_or_else(|| KubeError::Invalid("metadata must be an object".into()))?
            .entry("annotations")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| KubeError::Invalid("metadata.annotations must be an object".into()))?;
        for (k, v) in &self.annotations {
            annotations.insert(k.clone(), v.clone().into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(service_type: &str) -> ServiceTemplate {
        ServiceTemplate {
            service_type: service_type.into(),
            annotations: [("lb.example/internal".to_owned(), "true".to_owned())].into(),
        }
    }

    #[test]
    fn the_replication_chooses_the_type_and_adds_annotations() {
        let mut service = json!({
            "metadata": {"name": "s", "annotations": {"wasmover.dev/key-secret": "k", "lb.example/internal": "false"}},
            "spec": {"selector": {"a": "b"}},
        });
        template("LoadBalancer").apply(&mut service).unwrap();
        assert_eq!(service["spec"]["type"], "LoadBalancer");
        // The mover's own annotation stays; on a shared key the replication's wins.
        assert_eq!(
            service["metadata"]["annotations"],
            json!({"wasmover.dev/key-secret": "k", "lb.example/internal": "true"})
        );
        let mut bare = json!({"spec": {}});
        ServiceTemplate::default().apply(&mut bare).unwrap();
        assert_eq!(bare, json!({"spec": {"type": "ClusterIP"}}));
    }

    #[test]
    fn a_mover_cannot_expose_its_agents_further_than_its_replication_chose() {
        let mut service = json!({"spec": {"type": "LoadBalancer"}});
        match ServiceTemplate::default().apply(&mut service) {
            Err(KubeError::Refused(r)) => {
                assert_eq!(r.rule, "service");
                assert!(
                    r.message.contains("spec.mover.serviceType (ClusterIP)"),
                    "{r}"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let mut same = json!({"spec": {"type": "NodePort"}});
        template("NodePort").apply(&mut same).unwrap();
        assert_eq!(same["spec"]["type"], "NodePort");
    }
}
