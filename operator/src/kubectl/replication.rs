//! `kubectl wasmover replication`: applying a relationship to both
//! clusters, running a synchronization and watching it, its status, and
//! deleting it.
//!
//! Applying creates or updates the ReplicationDestination, waits for its
//! `status.endpoint`, copies its key Secret into the source's namespace and
//! creates or updates the ReplicationSource with blocksync's `address`,
//! `port` and `key-secret`. Every object is server-side applied by
//! [`MANAGER`](super::MANAGER) and labelled with the relationship's id.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::config::Kubeconfig;
use serde_json::{Value, json};

use super::contexts::Cluster;
use super::relationship::{Destination, Kind, Relationship, Source, Store, VolumeOptions};
use super::{Error, RELATIONSHIP_LABEL};
use crate::controller::Replication;
use crate::crd::{
    CONDITION_ENDPOINT_READY, CONDITION_SYNCHRONIZING, Endpoint, ReplicationDestination,
    ReplicationSource, SyncStatus, endpoint_reason, reason,
};

/// The mover the plugin sets up: its parameters are blocksync's.
pub const MODULE: &str = "blocksync";
/// How often the plugin looks at the objects while it waits.
const POLL: Duration = Duration::from_secs(1);
/// How long to wait for a destination's endpoint by default.
pub const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(300);

/// When the source runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Once, for this value of `trigger.manual` on both sides.
    Manual(String),
    /// On this cron schedule; the destination receives continuously.
    Schedule(String),
}

/// The two sides, connected.
pub struct Clusters {
    /// The source's context.
    pub source: Cluster,
    /// The destination's context.
    pub destination: Cluster,
}

impl Clusters {
    /// Connects to both sides of `relationship` and checks that both serve
    /// wasmover's CRDs.
    pub async fn connect(config: &Kubeconfig, relationship: &Relationship) -> Result<Self, Error> {
        let (source, destination) = relationship.sides()?;
        let destination = Cluster::connect(config, Some(&destination.place.context)).await?;
        destination
            .check_installed("replicationdestinations")
            .await?;
        let source = Cluster::connect(config, Some(&source.place.context)).await?;
        source.check_installed("replicationsources").await?;
        Ok(Self {
            source,
            destination,
        })
    }
}

/// What [`apply`] created: each object's generation with the new trigger,
/// so that a failure of an older one is not taken for this one's.
pub struct Applied {
    /// The ReplicationSource's `metadata.generation`.
    pub source_generation: i64,
    /// The ReplicationDestination's.
    pub destination_generation: i64,
}

/// The name of the source's copy of the destination's key.
pub fn key_copy_name(source: &Source) -> String {
    format!("{}-wasmover-key", source.place.name)
}

/// Applies `relationship` with `trigger` to both clusters, recording in
/// `store` each side as soon as it exists, so that `delete` finds it.
pub async fn apply(
    relationship: &mut Relationship,
    store: &Store,
    clusters: &Clusters,
    trigger: &Trigger,
    endpoint_timeout: Duration,
) -> Result<Applied, Error> {
    let (source, destination) = relationship.sides()?;
    let (source, mut destination) = (source.clone(), destination.clone());
    // The source PVC first: nothing is created for a source that is not
    // there, and its size is the destination's default.
    let pvcs = clusters
        .source
        .api::<PersistentVolumeClaim>(&source.place.namespace);
    let pvc = pvcs
        .get_opt(&source.pvc)
        .await?
        .ok_or_else(|| Error::Invalid {
            rule: "source-pvc",
            message: format!(
                "PVC {}/{} does not exist in context {} (set-source --pvc)",
                source.place.namespace, source.pvc, source.place.context
            ),
        })?;
    if destination.pvc.is_none() && destination.capacity.is_none() {
        destination.capacity = pvc
            .spec
            .and_then(|s| s.resources)
            .and_then(|r| r.requests)
            .and_then(|mut r| r.remove("storage"))
            .map(|q| q.0);
    }

    let destinations = clusters
        .destination
        .api::<ReplicationDestination>(&destination.place.namespace);
    let name = &destination.place.name;
    let applied = destinations
        .apply(
            name,
            &destination_object(relationship, &destination, trigger),
        )
        .await?;
    let destination_generation = applied.metadata.generation.unwrap_or_default();
    if let Some(d) = relationship.destination.as_mut() {
        d.applied = true;
    }
    store.save(relationship)?;

    let endpoint = wait_for_endpoint(&clusters.destination, &destination, endpoint_timeout).await?;
    let key_secret = endpoint.key_secret.clone().unwrap_or_default();
    let key = clusters
        .destination
        .api::<Secret>(&destination.place.namespace)
        .get_opt(&key_secret)
        .await?
        .ok_or_else(|| Error::Invalid {
            rule: "key-secret",
            message: format!(
                "{} names key Secret {key_secret} in status.endpoint.keySecret, \
                 but there is no such Secret",
                destination.place
            ),
        })?;
    let copy = key_copy_name(&source);
    clusters
        .source
        .api::<Secret>(&source.place.namespace)
        .apply(
            &copy,
            &json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": copy, "labels": {RELATIONSHIP_LABEL: relationship.id}},
                "type": "Opaque",
                "data": key.data,
            }),
        )
        .await?;
    let sources = clusters
        .source
        .api::<ReplicationSource>(&source.place.namespace);
    let applied = sources
        .apply(
            &source.place.name,
            &source_object(relationship, &source, &endpoint, trigger),
        )
        .await?;
    if let Some(s) = relationship.source.as_mut() {
        s.applied = true;
    }
    store.save(relationship)?;
    Ok(Applied {
        source_generation: applied.metadata.generation.unwrap_or_default(),
        destination_generation,
    })
}

/// The ReplicationDestination of `destination` with `trigger`.
pub fn destination_object(
    relationship: &Relationship,
    destination: &Destination,
    trigger: &Trigger,
) -> Value {
    let mut spec = volume_spec(&destination.volume);
    set(&mut spec, "capacity", &destination.capacity);
    set(&mut spec, "destinationPVC", &destination.pvc);
    if let Trigger::Manual(value) = trigger {
        spec["trigger"] = json!({"manual": value});
    }
    let mut mover = json!({"module": MODULE});
    set(&mut mover, "serviceType", &destination.service_type);
    spec["mover"] = mover;
    json!({
        "apiVersion": "wasmover.dev/v1alpha1",
        "kind": "ReplicationDestination",
        "metadata": {
            "name": destination.place.name,
            "labels": {RELATIONSHIP_LABEL: relationship.id},
        },
        "spec": spec,
    })
}

/// The ReplicationSource of `source`, pointed at `endpoint`, with
/// `trigger`.
pub fn source_object(
    relationship: &Relationship,
    source: &Source,
    endpoint: &Endpoint,
    trigger: &Trigger,
) -> Value {
    let mut spec = volume_spec(&source.volume);
    spec["sourcePVC"] = json!(source.pvc);
    spec["trigger"] = match trigger {
        Trigger::Manual(value) => json!({"manual": value}),
        Trigger::Schedule(cron) => json!({"schedule": cron}),
    };
    let mut parameters = json!({"key-secret": key_copy_name(source)});
    set(&mut parameters, "address", &endpoint.address);
    set(
        &mut parameters,
        "port",
        &endpoint.port.map(|p| p.to_string()),
    );
    spec["mover"] = json!({"module": MODULE, "parameters": parameters});
    json!({
        "apiVersion": "wasmover.dev/v1alpha1",
        "kind": "ReplicationSource",
        "metadata": {
            "name": source.place.name,
            "labels": {RELATIONSHIP_LABEL: relationship.id},
        },
        "spec": spec,
    })
}

/// The spec fields of `volume`, without the unset ones (server-side apply
/// then leaves them to others, or removes what the plugin set before).
fn volume_spec(volume: &VolumeOptions) -> Value {
    let mut spec = json!({"copyMethod": volume.copy_method});
    set(&mut spec, "storageClassName", &volume.storage_class);
    set(
        &mut spec,
        "volumeSnapshotClassName",
        &volume.volume_snapshot_class,
    );
    if !volume.access_modes.is_empty() {
        spec["accessModes"] = json!(volume.access_modes);
    }
    spec
}

fn set(object: &mut Value, key: &str, value: &Option<String>) {
    if let Some(value) = value {
        object[key] = json!(value);
    }
}

/// Waits until the destination reports an address, a port and its key
/// Secret; fails at once on a failure of its own, or after `timeout`
/// naming what it still waits for.
pub async fn wait_for_endpoint(
    cluster: &Cluster,
    destination: &Destination,
    timeout: Duration,
) -> Result<Endpoint, Error> {
    let destinations = cluster.api::<ReplicationDestination>(&destination.place.namespace);
    let deadline = Instant::now() + timeout;
    loop {
        let rd = destinations
            .get_opt(&destination.place.name)
            .await?
            .ok_or_else(|| gone("ReplicationDestination", &destination.place.to_string()))?;
        let status = rd.status.clone().unwrap_or_default();
        if let Some(endpoint) = status.endpoint.as_ref().filter(|e| complete(e)) {
            return Ok(endpoint.clone());
        }
        if let Some(message) = failed(&status.sync, rd.metadata.generation) {
            return Err(Error::SyncFailed {
                kind: "ReplicationDestination",
                place: destination.place.to_string(),
                message,
            });
        }
        if status.sync.reason(CONDITION_ENDPOINT_READY)
            == Some(endpoint_reason::NODE_ADDRESS_NEEDED)
        {
            return Err(Error::Invalid {
                rule: "service-type",
                message: format!(
                    "{} is reached on a NodePort, at a node address the source can reach, \
                     which only you know: use --service-type LoadBalancer or ClusterIP, or \
                     pair it by hand (docs/operator.md)",
                    destination.place
                ),
            });
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!(
                    "{} to report status.endpoint (address, port and key Secret): {}",
                    destination.place,
                    endpoint_waits_for(&status.sync)
                ),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether an endpoint names all a source needs.
fn complete(endpoint: &Endpoint) -> bool {
    endpoint.address.is_some() && endpoint.port.is_some() && endpoint.key_secret.is_some()
}

/// What a destination without an endpoint waits for, from its
/// `EndpointReady` condition.
pub fn endpoint_waits_for(sync: &SyncStatus) -> String {
    sync.conditions
        .iter()
        .find(|c| c.type_ == CONDITION_ENDPOINT_READY)
        .map_or_else(
            || {
                "the operator has not reported it yet (is the operator running, and does the \
                 destination's mover create a Service?)"
                    .to_owned()
            },
            |c| format!("{}: {}", c.reason, c.message),
        )
}

/// The message of a failure of `generation` or later: `Synchronizing`
/// `False` with reason `Error` or `PolicyRefused`.
pub fn failed(sync: &SyncStatus, generation: Option<i64>) -> Option<String> {
    sync.conditions
        .iter()
        .find(|c| {
            c.type_ == CONDITION_SYNCHRONIZING
                && c.status == "False"
                && (c.reason == reason::ERROR || c.reason == reason::POLICY_REFUSED)
                && c.observed_generation >= generation
        })
        .map(|c| format!("{}: {}", c.reason, c.message))
}

pub(super) fn gone(kind: &str, place: &str) -> Error {
    Error::Invalid {
        rule: "object-gone",
        message: format!("{kind} {place} was deleted while the plugin waited for it"),
    }
}

/// How a running synchronization is doing, for the progress bar.
pub trait Progress {
    /// The source's status changed.
    fn update(&self, status: &SyncStatus);
}

/// Waits until both sides completed the synchronization triggered by
/// `manual`; fails with the first side's `Synchronizing` message if one
/// fails. Returns the source's status.
pub async fn wait_for_sync(
    relationship: &Relationship,
    clusters: &Clusters,
    manual: &str,
    applied: &Applied,
    timeout: Option<Duration>,
    progress: &dyn Progress,
) -> Result<SyncStatus, Error> {
    let (source, destination) = relationship.sides()?;
    let sources = clusters
        .source
        .api::<ReplicationSource>(&source.place.namespace);
    let destinations = clusters
        .destination
        .api::<ReplicationDestination>(&destination.place.namespace);
    let started = Instant::now();
    loop {
        let rs = sources
            .get_opt(&source.place.name)
            .await?
            .ok_or_else(|| gone("ReplicationSource", &source.place.to_string()))?;
        let rd = destinations
            .get_opt(&destination.place.name)
            .await?
            .ok_or_else(|| gone("ReplicationDestination", &destination.place.to_string()))?;
        let (src, dst) = (rs.sync_status(), rd.sync_status());
        progress.update(&src);
        for (kind, place, status, generation) in [
            (
                "ReplicationDestination",
                &destination.place,
                &dst,
                applied.destination_generation,
            ),
            (
                "ReplicationSource",
                &source.place,
                &src,
                applied.source_generation,
            ),
        ] {
            if let Some(message) = failed(status, Some(generation)) {
                return Err(Error::SyncFailed {
                    kind,
                    place: place.to_string(),
                    message,
                });
            }
        }
        let done = |s: &SyncStatus| s.last_manual_sync.as_deref() == Some(manual);
        if done(&src) && done(&dst) {
            return Ok(src);
        }
        if let Some(timeout) = timeout
            && started.elapsed() >= timeout
        {
            return Err(Error::Timeout {
                what: format!(
                    "the synchronization of {} (source: {}; destination: {})",
                    relationship.name,
                    condition_text(&src),
                    condition_text(&dst)
                ),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The `Synchronizing` condition as `Reason: message`.
pub fn condition_text(sync: &SyncStatus) -> String {
    sync.conditions
        .iter()
        .find(|c| c.type_ == CONDITION_SYNCHRONIZING)
        .map_or_else(
            || "not reconciled yet".to_owned(),
            |c| format!("{}: {}", c.reason, c.message),
        )
}

/// Deletes the relationship's objects (the ReplicationSource, the key copy,
/// the ReplicationDestination, which takes what its mover made with it);
/// returns what it deleted, as lines.
pub async fn delete(
    relationship: &Relationship,
    config: &Kubeconfig,
) -> Result<Vec<String>, Error> {
    relationship.expect_kind(Kind::Replication)?;
    let mut deleted = Vec::new();
    if let Some(source) = relationship.source.as_ref().filter(|s| s.applied) {
        let cluster = Cluster::connect(config, Some(&source.place.context)).await?;
        let ns = &source.place.namespace;
        if cluster
            .api::<ReplicationSource>(ns)
            .delete(&source.place.name)
            .await?
        {
            deleted.push(format!("ReplicationSource {}", source.place));
        }
        let copy = key_copy_name(source);
        if cluster.api::<Secret>(ns).delete(&copy).await? {
            deleted.push(format!(
                "Secret {ns}/{copy} in context {}",
                source.place.context
            ));
        }
    }
    if let Some(destination) = relationship.destination.as_ref().filter(|d| d.applied) {
        let cluster = Cluster::connect(config, Some(&destination.place.context)).await?;
        if cluster
            .api::<ReplicationDestination>(&destination.place.namespace)
            .delete(&destination.place.name)
            .await?
        {
            deleted.push(format!("ReplicationDestination {}", destination.place));
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CopyMethod, condition};
    use crate::kubectl::relationship::Place;

    fn relationship() -> Relationship {
        let mut r = Relationship::new(Kind::Replication, "db").unwrap();
        r.id = "0123456789abcdef".into();
        let place = |context: &str, namespace: &str| Place {
            context: context.into(),
            namespace: namespace.into(),
            name: "db".into(),
        };
        r.set_destination(Destination {
            place: place("east", "backup"),
            pvc: None,
            capacity: Some("2Gi".into()),
            volume: VolumeOptions {
                copy_method: CopyMethod::Snapshot,
                volume_snapshot_class: Some("csi".into()),
                ..VolumeOptions::default()
            },
            service_type: Some("LoadBalancer".into()),
            applied: false,
        })
        .unwrap();
        r.set_source(Source {
            place: place("west", "prod"),
            pvc: "data".into(),
            volume: VolumeOptions::default(),
            applied: false,
        })
        .unwrap();
        r
    }

    #[test]
    fn the_destination_carries_the_options_and_the_trigger() {
        let r = relationship();
        let object = destination_object(
            &r,
            r.destination.as_ref().unwrap(),
            &Trigger::Manual("t1".into()),
        );
        assert_eq!(
            object["spec"],
            json!({
                "capacity": "2Gi",
                "copyMethod": "Snapshot",
                "volumeSnapshotClassName": "csi",
                "trigger": {"manual": "t1"},
                "mover": {"module": "blocksync", "serviceType": "LoadBalancer"},
            })
        );
        assert_eq!(
            object["metadata"]["labels"][RELATIONSHIP_LABEL],
            "0123456789abcdef"
        );
        // On a schedule the destination has no trigger: it receives
        // whenever the source sends.
        let scheduled = destination_object(
            &r,
            r.destination.as_ref().unwrap(),
            &Trigger::Schedule("*/5 * * * *".into()),
        );
        assert!(scheduled["spec"].get("trigger").is_none());
    }

    #[test]
    fn the_source_gets_the_address_port_and_its_copy_of_the_key() {
        let r = relationship();
        let endpoint = Endpoint {
            address: Some("10.0.0.7".into()),
            port: Some(8873),
            key_secret: Some("db-blocksync-key".into()),
        };
        let object = source_object(
            &r,
            r.source.as_ref().unwrap(),
            &endpoint,
            &Trigger::Schedule("@hourly".into()),
        );
        assert_eq!(
            object["spec"],
            json!({
                "sourcePVC": "data",
                "copyMethod": "Direct",
                "trigger": {"schedule": "@hourly"},
                "mover": {"module": "blocksync", "parameters": {
                    "address": "10.0.0.7",
                    "port": "8873",
                    "key-secret": "db-wasmover-key",
                }},
            })
        );
    }

    #[test]
    fn only_a_failure_of_this_generation_fails_the_wait() {
        let mut sync = SyncStatus::default();
        sync.set_condition(condition(
            CONDITION_SYNCHRONIZING,
            "False",
            reason::ERROR,
            "Job db-blocksync-src: BackoffLimitExceeded",
            Some(3),
        ));
        assert_eq!(
            failed(&sync, Some(3)).as_deref(),
            Some("Error: Job db-blocksync-src: BackoffLimitExceeded")
        );
        assert_eq!(failed(&sync, Some(4)), None, "an older failure");
        sync.set_condition(condition(
            CONDITION_SYNCHRONIZING,
            "False",
            reason::WAITING_FOR_MANUAL,
            "done",
            Some(4),
        ));
        assert_eq!(failed(&sync, Some(4)), None);
    }

    #[test]
    fn a_missing_endpoint_says_what_it_waits_for() {
        let mut sync = SyncStatus::default();
        assert!(endpoint_waits_for(&sync).contains("is the operator running"));
        sync.set_condition(condition(
            CONDITION_ENDPOINT_READY,
            "False",
            "WaitingForLoadBalancer",
            "Service db-blocksync has no ingress address yet",
            None,
        ));
        assert_eq!(
            endpoint_waits_for(&sync),
            "WaitingForLoadBalancer: Service db-blocksync has no ingress address yet"
        );
    }
}
