//! Why a running synchronization does not move: read off the Pods and
//! PVCs the object owns, so that an agent image that cannot be pulled, a
//! Pod that cannot be scheduled or a claim that never binds shows in the
//! `Synchronizing` condition with the kubelet's or scheduler's own reason,
//! instead of an endless "the mover is synchronizing".

use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use wasmover_host::kube::{OWNER_KIND_LABEL, OWNER_NAME_LABEL};

/// Container waiting reasons that do not clear by themselves.
const STUCK_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// How long a claim may stay Pending before it counts as stuck: binding
/// with a provisioner or a snapshot restore takes seconds.
const CLAIM_GRACE: SignedDuration = SignedDuration::from_secs(60);

/// What holds a synchronization up.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Stuck {
    /// The condition reason: the kubelet's or scheduler's own
    /// (`ImagePullBackOff`, `Unschedulable`, …) or `ClaimPending`.
    pub reason: String,
    /// What is stuck and why, naming the object.
    pub message: String,
    /// The stuck object's name.
    object: String,
}

/// What the movers of `kind`/`name` made carries its owner labels.
fn owned(kind: &str, name: &str) -> ListParams {
    ListParams::default().labels(&format!(
        "{OWNER_KIND_LABEL}={kind},{OWNER_NAME_LABEL}={name}"
    ))
}

/// The agent Pods of `kind`/`name` in `namespace` (their Jobs' Pods, which
/// carry the owner labels of the template they are built from); `None`
/// when the list fails.
pub(super) async fn agent_pods(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Option<Vec<Pod>> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&owned(kind, name))
        .await
        .ok()?;
    Some(pods.items)
}

/// The first problem among the PVCs labelled as owned by `kind`/`name` in
/// `namespace` and its agent `pods` ([`agent_pods`]) (a claim first: an
/// unbound claim also leaves its Pod unschedulable, and the claim's events
/// say why); `None` when nothing looks stuck, or the list fails: the
/// diagnosis is a courtesy, never a reason to fail.
pub(super) async fn diagnose(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
    pods: &[Pod],
    now: Timestamp,
) -> Option<Stuck> {
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .list(&owned(kind, name))
        .await
        .ok()?;
    if let Some(mut stuck) = claims.items.iter().find_map(|c| claim_problem(c, now)) {
        if let Some(why) = last_warning(client, namespace, &stuck.object).await {
            stuck.message = format!("{}: {why}", stuck.message);
        }
        return Some(stuck);
    }
    pods.iter().find_map(pod_problem)
}

/// The latest Warning Event on the claim `name` (`ProvisioningFailed: …`).
async fn last_warning(client: &Client, namespace: &str, name: &str) -> Option<String> {
    let about = ListParams::default().fields(&format!(
        "involvedObject.kind=PersistentVolumeClaim,involvedObject.name={name},type=Warning"
    ));
    let events = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&about)
        .await
        .ok()?;
    let latest = events.items.into_iter().max_by_key(|e| {
        let last = e.last_timestamp.as_ref().map(|t| t.0);
        last.or(e.event_time.as_ref().map(|t| t.0))
    })?;
    Some(format!(
        "{}: {}",
        latest.reason.unwrap_or_default(),
        latest.message.unwrap_or_default()
    ))
}

/// A Pod that waits on something that will not resolve by itself.
fn pod_problem(pod: &Pod) -> Option<Stuck> {
    let status = pod.status.as_ref()?;
    let name = pod.name_any();
    let statuses = status
        .init_container_statuses
        .iter()
        .chain(status.container_statuses.iter())
        .flatten();
    for container in statuses {
        let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.as_deref().unwrap_or_default();
        if STUCK_WAITING.contains(&reason) {
            let detail = waiting.message.as_deref().unwrap_or("no message");
            return Some(Stuck {
                reason: reason.into(),
                object: name.clone(),
                message: format!(
                    "agent Pod {name}, container {}: {reason}: {detail}",
                    container.name
                ),
            });
        }
    }
    let unscheduled = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    })?;
    Some(Stuck {
        reason: "Unschedulable".into(),
        object: name.clone(),
        message: format!(
            "agent Pod {name} cannot be scheduled: {}",
            unscheduled.message.as_deref().unwrap_or("no message")
        ),
    })
}

/// A claim Pending for longer than [`CLAIM_GRACE`].
fn claim_problem(claim: &PersistentVolumeClaim, now: Timestamp) -> Option<Stuck> {
    let phase = claim.status.as_ref()?.phase.as_deref()?;
    let created = claim.metadata.creation_timestamp.as_ref()?.0;
    (phase == "Pending" && now.duration_since(created) > CLAIM_GRACE).then(|| Stuck {
        reason: "ClaimPending".into(),
        object: claim.name_any(),
        message: format!(
            "PVC {} has been Pending for {}s",
            claim.name_any(),
            now.duration_since(created).as_secs()
        ),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "db-dst-x"}, "status": status})).unwrap()
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_named_with_the_kubelets_reason() {
        let pulling = pod(json!({"containerStatuses": [{
            "name": "agent", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}},
        }]}));
        assert_eq!(
            pod_problem(&pulling),
            Some(Stuck {
                reason: "ImagePullBackOff".into(),
                object: "db-dst-x".into(),
                message: "agent Pod db-dst-x, container agent: ImagePullBackOff: Back-off pulling image \"x\"".into(),
            })
        );
        let creating = pod(json!({"containerStatuses": [{
            "name": "agent", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}},
        }]}));
        assert_eq!(pod_problem(&creating), None, "a Pod starting is not stuck");
    }

    #[test]
    fn an_unschedulable_pod_is_named_with_the_schedulers_message() {
        let pending = pod(json!({"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient memory.",
        }]}));
        let stuck = pod_problem(&pending).unwrap();
        assert_eq!(stuck.reason, "Unschedulable");
        assert!(
            stuck.message.ends_with("1 Insufficient memory."),
            "{}",
            stuck.message
        );
    }

    #[test]
    fn a_claim_is_stuck_only_after_the_grace() {
        let created: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "db-dest", "creationTimestamp": created.to_string()},
            "status": {"phase": "Pending"},
        }))
        .unwrap();
        let soon = created + SignedDuration::from_secs(10);
        assert_eq!(claim_problem(&claim, soon), None);
        let late = created + SignedDuration::from_secs(90);
        let stuck = claim_problem(&claim, late).unwrap();
        assert_eq!(stuck.reason, "ClaimPending");
        assert!(
            stuck
                .message
                .starts_with("PVC db-dest has been Pending for 90s")
        );
    }
}
