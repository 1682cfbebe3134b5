//! Where sources reach a destination: the Service its mover marked with
//! [`KEY_SECRET_ANNOTATION`], read on every status write into
//! `status.endpoint` (address, port, key Secret) and the `EndpointReady`
//! condition, which says what is missing. An address is reported only
//! once it is known: a load balancer's once assigned, a node port's never
//! (which node address a source can reach is the network's to say). A
//! Service made before a change of `serviceType` or `serviceAnnotations`
//! is deleted when it is read, and the mover's next call makes it anew
//! from the host's template, as VolSync updates its own.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::{Client, ResourceExt};
use wasmover_host::kube::{OWNER_KIND_LABEL, OWNER_NAME_LABEL};

use super::{Error, Replication};
use crate::crd::{
    CONDITION_ENDPOINT_READY, Endpoint, KEY_SECRET_ANNOTATION, MoverSpec, SyncStatus, condition,
    endpoint_reason,
};

/// What a status write learns of a destination's Services.
pub(super) struct Observed {
    /// Where sources reach it, if a current Service is marked.
    pub endpoint: Option<Endpoint>,
    /// The outdated Services deleted, and why, for Events.
    pub replaced: Vec<String>,
}

/// Reads the endpoint of `obj` from the Service its mover marked, records
/// the `EndpointReady` condition in `sync`, and returns the endpoint;
/// `None` (and no condition) while the mover has marked no Service. A
/// marked Service made before a change of the mover section's service
/// settings is deleted instead, for the mover to make it anew.
pub(super) async fn observe<K: Replication>(
    client: &Client,
    obj: &K,
    sync: &mut SyncStatus,
) -> Result<Observed, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let api = Api::<Service>::namespaced(client.clone(), &namespace);
    let mut replaced = Vec::new();
    let mut current = Vec::new();
    for service in marked(&api, obj).await? {
        match outdated(&service, obj.mover()) {
            None => current.push(service),
            Some(stale) => {
                if delete_exactly(&api, &service).await? {
                    replaced.push(format!(
                        "Service {} {stale}: deleted, the mover makes it anew at its next call",
                        service.name_any()
                    ));
                }
            }
        }
    }
    let generation = obj.meta().generation;
    // The first by name, should a mover mark several.
    let Some(service) = current.first() else {
        match replaced.first() {
            None => sync
                .conditions
                .retain(|c| c.type_ != CONDITION_ENDPOINT_READY),
            Some(note) => {
                let message = format!("{note} (at the next synchronization when idle)");
                sync.set_condition(condition(
                    CONDITION_ENDPOINT_READY,
                    "False",
                    endpoint_reason::REPLACED,
                    message,
                    generation,
                ));
            }
        }
        return Ok(Observed {
            endpoint: None,
            replaced,
        });
    };
    let (endpoint, ready) = read(service, &namespace, generation);
    sync.set_condition(ready);
    Ok(Observed {
        endpoint: Some(endpoint),
        replaced,
    })
}

/// Deletes `service` if it is still the one read (not one made anew
/// since); whether it did.
async fn delete_exactly(api: &Api<Service>, service: &Service) -> Result<bool, Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: service.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&service.name_any(), &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The Services of `obj`'s mover marked with [`KEY_SECRET_ANNOTATION`],
/// by name.
async fn marked<K: Replication>(api: &Api<Service>, obj: &K) -> Result<Vec<Service>, Error> {
    let selector = format!(
        "{OWNER_KIND_LABEL}={},{OWNER_NAME_LABEL}={}",
        K::kind(&()),
        obj.name_any()
    );
    let mut marked: Vec<Service> = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|s| s.annotations().contains_key(KEY_SECRET_ANNOTATION))
        .collect();
    marked.sort_by_key(|s| s.name_any());
    Ok(marked)
}

/// The endpoint `service` offers and the condition saying whether it is
/// complete, as of `generation` of the object.
fn read(service: &Service, namespace: &str, generation: Option<i64>) -> (Endpoint, Condition) {
    let name = service.name_any();
    let spec = service.spec.clone().unwrap_or_default();
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    let port = spec.ports.as_deref().unwrap_or_default().first();
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default()
        .iter()
        .find_map(|i| i.ip.clone().or_else(|| i.hostname.clone()));
    let (address, port, why) = match kind {
        "LoadBalancer" => match ingress {
            Some(address) => (Some(address), port.map(|p| p.port), None),
            None => (
                None,
                port.map(|p| p.port),
                Some((
                    endpoint_reason::WAITING_FOR_LOAD_BALANCER,
                    format!(
                        "waiting for the load balancer to assign Service {name} an address (its status.loadBalancer.ingress is empty)"
                    ),
                )),
            ),
        },
        "NodePort" => {
            let node_port = port.and_then(|p| p.node_port);
            let message = format!(
                "Service {name} is a NodePort{}: point sources at the address of a node they can reach; the operator does not read Nodes",
                node_port.map_or(String::new(), |p| format!(" on port {p}"))
            );
            (
                None,
                node_port,
                Some((endpoint_reason::NODE_ADDRESS_NEEDED, message)),
            )
        }
        // A headless Service is reached by its DNS name.
        _ => match spec.cluster_ip.as_deref() {
            Some("None") => (
                Some(format!("{name}.{namespace}.svc")),
                port.map(|p| p.port),
                None,
            ),
            Some(ip) => (Some(ip.to_owned()), port.map(|p| p.port), None),
            None => (
                None,
                port.map(|p| p.port),
                Some((
                    endpoint_reason::ADDRESS_PENDING,
                    format!("Service {name} has no cluster IP yet"),
                )),
            ),
        },
    };
    let endpoint = Endpoint {
        address,
        port,
        key_secret: service.annotations().get(KEY_SECRET_ANNOTATION).cloned(),
    };
    let (status, reason, message) = match why {
        Some((reason, message)) => ("False", reason, message),
        None => (
            "True",
            endpoint_reason::READY,
            format!(
                "sources reach Service {name} at {}:{} with the key in Secret {}",
                endpoint.address.as_deref().unwrap_or_default(),
                endpoint.port.map_or("?".into(), |p| p.to_string()),
                endpoint.key_secret.as_deref().unwrap_or_default()
            ),
        ),
    };
    let ready = condition(
        CONDITION_ENDPOINT_READY,
        status,
        reason,
        message,
        generation,
    );
    (endpoint, ready)
}

/// What of `mover`'s `serviceType` and `serviceAnnotations` the Service
/// lacks: they apply when the mover creates it, so a change after that
/// needs a new Service.
fn outdated(service: &Service, mover: &MoverSpec) -> Option<String> {
    let wanted = mover.service_type.unwrap_or_default().as_str();
    let has = service
        .spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("ClusterIP");
    let missing: Vec<&str> = mover
        .service_annotations
        .iter()
        .filter(|(k, v)| service.annotations().get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .collect();
    let mut stale = Vec::new();
    if has != wanted {
        stale.push(format!("is {has}, not {wanted}"));
    }
    if !missing.is_empty() {
        stale.push(format!("lacks the annotations {}", missing.join(", ")));
    }
    (!stale.is_empty()).then(|| format!("{} as spec.mover asks", stale.join(" and ")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::crd::ServiceType;

    fn service(spec: serde_json::Value, status: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "db-blocksync", "annotations": {KEY_SECRET_ANNOTATION: "db-blocksync-key"}},
            "spec": spec,
            "status": status,
        }))
        .unwrap()
    }

    fn mover(service_type: ServiceType) -> MoverSpec {
        MoverSpec {
            service_type: Some(service_type),
            ..MoverSpec::default()
        }
    }

    #[test]
    fn a_cluster_ip_is_reported_with_the_service_port_and_the_key() {
        let s = service(
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.7", "ports": [{"port": 8873}]}),
            json!({}),
        );
        let (endpoint, ready) = read(&s, "backup", Some(2));
        assert_eq!(
            endpoint,
            Endpoint {
                address: Some("10.96.0.7".into()),
                port: Some(8873),
                key_secret: Some("db-blocksync-key".into()),
            }
        );
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "EndpointReady")
        );
        assert_eq!(ready.observed_generation, Some(2));
        let headless = service(
            json!({"clusterIP": "None", "ports": [{"port": 8873}]}),
            json!({}),
        );
        let (endpoint, _) = read(&headless, "backup", None);
        assert_eq!(endpoint.address.as_deref(), Some("db-blocksync.backup.svc"));
    }

    #[test]
    fn a_load_balancer_has_no_address_until_its_ingress_is_assigned() {
        let spec = json!({"type": "LoadBalancer", "clusterIP": "10.96.0.7",
            "ports": [{"port": 8873, "nodePort": 31000}]});
        let (endpoint, ready) = read(&service(spec.clone(), json!({})), "ns", None);
        assert_eq!(endpoint.address, None, "never the cluster IP");
        assert_eq!(endpoint.port, Some(8873));
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, "WaitingForLoadBalancer");
        assert!(
            ready.message.contains("waiting for the load balancer"),
            "{}",
            ready.message
        );
        for (ingress, address) in [
            (json!({"ip": "203.0.113.9"}), "203.0.113.9"),
            (json!({"hostname": "lb.example.com"}), "lb.example.com"),
        ] {
            let assigned = service(
                spec.clone(),
                json!({"loadBalancer": {"ingress": [ingress]}}),
            );
            let (endpoint, ready) = read(&assigned, "ns", None);
            assert_eq!(endpoint.address.as_deref(), Some(address));
            assert_eq!(ready.status, "True");
        }
    }

    #[test]
    fn a_node_port_reports_its_port_and_asks_for_a_node_address() {
        let s = service(
            json!({"type": "NodePort", "clusterIP": "10.96.0.7", "ports": [{"port": 8873, "nodePort": 31000}]}),
            json!({}),
        );
        let (endpoint, ready) = read(&s, "ns", None);
        assert_eq!(endpoint.address, None);
        assert_eq!(endpoint.port, Some(31000));
        assert_eq!(ready.reason, "NodeAddressNeeded");
        assert!(ready.message.contains("on port 31000"), "{}", ready.message);
    }

    #[test]
    fn a_service_made_before_a_spec_change_is_outdated() {
        let s = service(
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.7", "ports": [{"port": 8873}]}),
            json!({}),
        );
        assert_eq!(outdated(&s, &MoverSpec::default()), None);
        let changed = MoverSpec {
            service_annotations: [("lb.example/internal".to_owned(), "true".to_owned())].into(),
            ..mover(ServiceType::LoadBalancer)
        };
        assert_eq!(
            outdated(&s, &changed).as_deref(),
            Some(
                "is ClusterIP, not LoadBalancer and lacks the annotations lb.example/internal as spec.mover asks"
            )
        );
    }
}
