//! `kubectl wasmover migration`: moving a local directory into a PVC.
//!
//! `create` makes (or adopts) the PVC and a ReplicationDestination that
//! receives into it; `rsync` triggers the destination, reaches its agent's
//! Pod through the API server's port-forward (a laptop seldom reaches a
//! cluster IP) and runs the sending agent here, the data plane of
//! `wasmover agent send`, then waits for the destination to complete;
//! `delete` removes the ReplicationDestination and keeps the PVC.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, ListParams};
use kube::config::Kubeconfig;
use serde_json::json;
use tokio::net::TcpListener;
use wasmover_host::bindings::types::{Parameter, TransferReport};
use wasmover_host::kube::{OWNER_KIND_LABEL, OWNER_NAME_LABEL};
use wasmover_host::{EngineConfig, MoverEngine, MoverLimits};

use super::contexts::Cluster;
use super::relationship::{Destination, Kind, Relationship};
use super::replication::{self, MODULE, Trigger, failed, gone, wait_for_endpoint};
use super::{Error, RELATIONSHIP_LABEL};
use crate::agent::{self, Transfer, VolumePath};
use crate::controller::Replication;
use crate::crd::{KEY_SECRET_ANNOTATION, ReplicationDestination, SyncStatus};

/// How long the local sender keeps trying while the agent starts listening.
const CONNECT_RETRY: Duration = Duration::from_secs(60);

/// Creates the PVC of `destination` unless it exists (then it is adopted
/// as it is) and the ReplicationDestination receiving into it, waiting
/// for a transfer.
pub async fn create(
    relationship: &mut Relationship,
    store: &super::relationship::Store,
    config: &Kubeconfig,
) -> Result<String, Error> {
    relationship.expect_kind(Kind::Migration)?;
    let destination = relationship.destination()?.clone();
    let pvc_name = destination.pvc.clone().ok_or_else(|| Error::Invalid {
        rule: "pvc",
        message: "a migration needs the PVC it fills (--pvc)".into(),
    })?;
    let cluster = Cluster::connect(config, Some(&destination.place.context)).await?;
    cluster.check_installed("replicationdestinations").await?;
    let ns = &destination.place.namespace;
    let pvcs = cluster.api::<PersistentVolumeClaim>(ns);
    let mut made = format!("PVC {ns}/{pvc_name} exists: receiving into it as it is");
    if pvcs.get_opt(&pvc_name).await?.is_none() {
        let capacity = destination.capacity.clone().ok_or_else(|| Error::Invalid {
            rule: "capacity",
            message: format!(
                "PVC {ns}/{pvc_name} does not exist in context {}: pass --capacity to create it",
                destination.place.context
            ),
        })?;
        let mut spec = json!({
            "accessModes": if destination.volume.access_modes.is_empty() {
                vec!["ReadWriteOnce".to_owned()]
            } else {
                destination.volume.access_modes.clone()
            },
            "resources": {"requests": {"storage": capacity}},
        });
        if let Some(class) = &destination.volume.storage_class {
            spec["storageClassName"] = json!(class);
        }
        pvcs.apply(
            &pvc_name,
            &json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": pvc_name, "labels": {RELATIONSHIP_LABEL: relationship.id}},
                "spec": spec,
            }),
        )
        .await?;
        made = format!("created PVC {ns}/{pvc_name} of {capacity}");
    }
    let trigger = Trigger::Manual(now());
    let object = replication::destination_object(relationship, &destination, &trigger);
    cluster
        .api::<ReplicationDestination>(ns)
        .apply(&destination.place.name, &object)
        .await?;
    if let Some(d) = relationship.destination.as_mut() {
        d.applied = true;
    }
    store.save(relationship)?;
    Ok(format!(
        "{made}; created ReplicationDestination {}",
        destination.place
    ))
}

/// A manual trigger's value: the time, to the nanosecond.
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// What a migration's `rsync` did.
pub struct Synced {
    /// The local sender's report.
    pub report: TransferReport,
    /// The destination's status after it completed.
    pub status: SyncStatus,
}

/// Sends `dir` to the migration's destination: triggers it unless its
/// agent already waits, port-forwards to the agent's Pod, sends, and waits
/// for the destination to complete.
pub async fn rsync(
    relationship: &Relationship,
    config: &Kubeconfig,
    dir: &Path,
    cache_dir: Option<std::path::PathBuf>,
    timeout: Duration,
) -> Result<Synced, Error> {
    relationship.expect_kind(Kind::Migration)?;
    if !dir.is_dir() {
        return Err(Error::Invalid {
            rule: "source-dir",
            message: format!("{} is not a directory (--source)", dir.display()),
        });
    }
    let destination = relationship.destination()?.clone();
    let cluster = Cluster::connect(config, Some(&destination.place.context)).await?;
    cluster.check_installed("replicationdestinations").await?;
    let ns = destination.place.namespace.clone();
    let destinations = cluster.api::<ReplicationDestination>(&ns);
    let name = &destination.place.name;
    let rd = destinations
        .get_opt(name)
        .await?
        .ok_or_else(|| gone("ReplicationDestination", &destination.place.to_string()))?;
    // An agent that already waits (the one `create` started, or one a
    // failed rsync left) takes this transfer; otherwise a new trigger
    // starts one.
    let (manual, generation) = match rd.spec.trigger.as_ref().and_then(|t| t.manual.clone()) {
        Some(manual) if rd.sync_status().synchronizing() => (manual, rd.metadata.generation),
        _ => {
            let manual = now();
            let rd = destinations
                .merge(name, &json!({"spec": {"trigger": {"manual": manual}}}))
                .await?;
            (manual, rd.metadata.generation)
        }
    };
    let endpoint = wait_for_endpoint(&cluster, &destination, timeout).await?;
    let key = key(&cluster, &destination, endpoint.key_secret.as_deref()).await?;
    let port = agent_port(&cluster, &destination).await?;
    let pod = agent_pod(&cluster, &destination, generation, timeout).await?;
    let local = forward(cluster.client().clone(), ns.clone(), pod, port).await?;

    let block_size = rd.spec.mover.parameters.get("block-size").cloned();
    let dir = dir.to_owned();
    let sent = tokio::task::spawn_blocking(move || send(&dir, &local, &key, block_size, cache_dir))
        .await
        .expect("the sender does not panic")?;
    let status = wait_for_destination(&cluster, &destination, &manual, generation, timeout).await?;
    Ok(Synced {
        report: sent,
        status,
    })
}

/// The key sources need, from the destination's key Secret: its `psk`
/// entry, or its only one.
async fn key(
    cluster: &Cluster,
    destination: &Destination,
    name: Option<&str>,
) -> Result<wasmover_net::Psk, Error> {
    let name = name.unwrap_or_default();
    let secret = cluster
        .api::<Secret>(&destination.place.namespace)
        .get_opt(name)
        .await?
        .ok_or_else(|| gone("Secret", name))?;
    let data = secret.data.unwrap_or_default();
    let bytes = data
        .get("psk")
        .or_else(|| (data.len() == 1).then(|| data.values().next()).flatten())
        .ok_or_else(|| Error::Invalid {
            rule: "key-secret",
            message: format!("Secret {name} holds no `psk` entry"),
        })?;
    wasmover_net::Psk::from_bytes(&bytes.0).map_err(|reason| Error::Invalid {
        rule: "key-secret",
        message: format!("Secret {name}: {reason}"),
    })
}

/// The port the destination's agent listens on: the target port of the
/// Service its mover marked as the one sources reach.
async fn agent_port(cluster: &Cluster, destination: &Destination) -> Result<u16, Error> {
    let selector = format!("{OWNER_NAME_LABEL}={}", destination.place.name);
    let services = cluster
        .api::<Service>(&destination.place.namespace)
        .list(&ListParams::default().labels(&selector))
        .await?;
    services
        .iter()
        .filter(|s| {
            s.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(KEY_SECRET_ANNOTATION))
        })
        .filter_map(|s| s.spec.as_ref()?.ports.as_ref()?.first().cloned())
        .find_map(|p| match p.target_port {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port)) => {
                u16::try_from(port).ok()
            }
            _ => u16::try_from(p.port).ok(),
        })
        .ok_or_else(|| Error::Invalid {
            rule: "agent-service",
            message: format!(
                "{} has no Service marked {KEY_SECRET_ANNOTATION} with a port",
                destination.place
            ),
        })
}

/// What the receiving agent logs once it listens (`wasmover agent
/// receive`).
const LISTENING: &str = "wasmover: listening on ";

/// The agent Pod of the destination's synchronization, once it listens:
/// through a port-forward, a connection to a port nothing listens on yet
/// is not refused but cut, which the sender does not retry.
async fn agent_pod(
    cluster: &Cluster,
    destination: &Destination,
    generation: Option<i64>,
    timeout: Duration,
) -> Result<String, Error> {
    let selector = format!(
        "{OWNER_NAME_LABEL}={},{OWNER_KIND_LABEL}=ReplicationDestination",
        destination.place.name
    );
    let pods = cluster.api::<Pod>(&destination.place.namespace);
    let destinations = cluster.api::<ReplicationDestination>(&destination.place.namespace);
    let deadline = Instant::now() + timeout;
    loop {
        let running = pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
        if let Some(name) = running.and_then(|p| p.metadata.name)
            && pods.log(&name).await?.contains(LISTENING)
        {
            return Ok(name);
        }
        let status = destinations
            .get_opt(&destination.place.name)
            .await?
            .map(|rd| rd.sync_status())
            .unwrap_or_default();
        if let Some(message) = failed(&status, generation) {
            return Err(Error::SyncFailed {
                kind: "ReplicationDestination",
                place: destination.place.to_string(),
                message,
            });
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!(
                    "the agent Pod of {} to run ({})",
                    destination.place,
                    replication::condition_text(&status)
                ),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Listens on a loopback port and forwards each connection to `port` of
/// `pod` through the API server; returns the local address.
async fn forward(
    client: kube::Client,
    namespace: String,
    pod: String,
    port: u16,
) -> Result<String, Error> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::Send {
            path: "127.0.0.1:0".into(),
            cause: format!("listening for the port-forward: {e}"),
        })?;
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let pods = pods.clone();
            let pod = pod.clone();
            tokio::spawn(async move {
                let mut forwarder = match pods.portforward(&pod, &[port]).await {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!("port-forward to Pod {pod}:{port}: {e}");
                        return;
                    }
                };
                let Some(mut upstream) = forwarder.take_stream(port) else {
                    return;
                };
                if let Err(e) = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await {
                    tracing::debug!("port-forward to Pod {pod}:{port} ended: {e}");
                }
                drop(upstream);
                let _ = forwarder.join().await;
            });
        }
    });
    Ok(local.to_string())
}

/// Sends `dir` to `addr` with the built-in mover, as `wasmover agent send`.
fn send(
    dir: &Path,
    addr: &str,
    key: &wasmover_net::Psk,
    block_size: Option<String>,
    cache_dir: Option<std::path::PathBuf>,
) -> Result<TransferReport, Error> {
    let failure = |cause: String| Error::Send {
        path: dir.to_owned(),
        cause,
    };
    let engine = MoverEngine::new(EngineConfig {
        cache_dir,
        ..EngineConfig::default()
    })
    .map_err(|e| failure(e.to_string()))?;
    let module = crate::builtin::resolve(&engine, MODULE).map_err(|e| failure(e.to_string()))?;
    let parameters: Vec<Parameter> = block_size
        .map(|value| Parameter {
            key: "block-size".into(),
            value,
        })
        .into_iter()
        .collect();
    let transfer = Transfer {
        module: &module,
        limits: MoverLimits::default(),
        parameters: &parameters,
    };
    let volume = VolumePath {
        path: dir.to_owned(),
        journal: None,
        hashes: None,
        read_every_file: false,
    };
    let bar = Arc::new(crate::ProgressBar::on_stderr());
    let sent = agent::send(
        &transfer,
        &volume,
        addr,
        key,
        &wasmover_net::Options::default(),
        CONNECT_RETRY,
        bar.clone(),
    );
    bar.finish();
    Ok(sent.map_err(|e| failure(e.to_string()))?.report)
}

/// Waits until the destination completed the synchronization of `manual`.
async fn wait_for_destination(
    cluster: &Cluster,
    destination: &Destination,
    manual: &str,
    generation: Option<i64>,
    timeout: Duration,
) -> Result<SyncStatus, Error> {
    let destinations = cluster.api::<ReplicationDestination>(&destination.place.namespace);
    let deadline = Instant::now() + timeout;
    loop {
        let status = destinations
            .get_opt(&destination.place.name)
            .await?
            .ok_or_else(|| gone("ReplicationDestination", &destination.place.to_string()))?
            .sync_status();
        if let Some(message) = failed(&status, generation) {
            return Err(Error::SyncFailed {
                kind: "ReplicationDestination",
                place: destination.place.to_string(),
                message,
            });
        }
        if status.last_manual_sync.as_deref() == Some(manual) {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!(
                    "{} to complete ({})",
                    destination.place,
                    replication::condition_text(&status)
                ),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Deletes the migration's ReplicationDestination; the PVC stays.
pub async fn delete(
    relationship: &Relationship,
    config: &Kubeconfig,
) -> Result<Vec<String>, Error> {
    relationship.expect_kind(Kind::Migration)?;
    let mut deleted = Vec::new();
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
