//! The destination's steps: its PVC (and journal PVC for a block volume),
//! the pre-shared key, the Service, the receiving agent Job, and the image
//! it completes with.
//!
//! With `copyMethod: Snapshot` each synchronization snapshots the PVC anew,
//! as `<destination>-blocksync-<sync>`: `<sync>` is a random id the agent
//! Job carries, so every `synchronize` call of one synchronization names
//! the same snapshot. Once it is ready it is the image, and the snapshots
//! of earlier synchronizations are deleted, but those a user holds with
//! the label [`HOLD_LABELS`] names.

use serde_json::{Value, json};
use wasmover_sdk::types::{CopyMethod, DestinationSpec, Error, Image, ImageKind, Outcome};
use wasmover_sdk::{KEY_SECRET_ANNOTATION, error, events, log};

use super::jobs::{
    JobState, Volumes, agent_job, job_state, rate_flags, state_pvc, transfer_params,
};
use super::objects::{delete, ensure, get, list};
use super::report::{REPORT_FILE, agent_report};
use super::{DEFAULT_PORT, POLL_MS, Role, access_modes, completed, is_block};

/// Size of the journal PVC when the volume's is unknown: the old bytes one
/// run overwrites and its literals must fit.
const DEFAULT_JOURNAL_CAPACITY: &str = "1Gi";

/// The VolumeSnapshot's API version.
const SNAPSHOT_API: &str = "snapshot.storage.k8s.io/v1";
/// The label naming the destination whose synchronization made a
/// VolumeSnapshot: how the earlier ones are found.
const SNAPSHOT_OF_LABEL: &str = "wasmover.dev/snapshot-of";
/// Labels (any value) by which a user holds a snapshot, say for a restore
/// in progress: it is never deleted while it carries one. VolSync's is
/// honoured for users coming from it.
const HOLD_LABELS: [&str; 2] = [
    "wasmover.dev/do-not-delete",
    "volsync.backube/do-not-delete",
];
/// The agent Job's annotation with the id of its synchronization.
const SYNC_ANNOTATION: &str = "wasmover.dev/sync";

/// `len` random bytes in hex.
fn random_hex(len: usize) -> Result<String, Error> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(|e| error("RandomUnavailable", e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Role {
    /// Advances a destination one step.
    pub(super) fn synchronize_destination(&self, spec: &DestinationSpec) -> Result<Outcome, Error> {
        let params = self.parameters();
        let port = params.parse::<u16>("port")?.unwrap_or(DEFAULT_PORT);
        let wants_block = params.get("volume-mode") == Some("Block");
        let (pvc, existing) = match &spec.destination_pvc {
            Some(pvc) => (pvc.clone(), get("v1", "PersistentVolumeClaim", pvc)?),
            None => {
                let name = format!("{}-dest", spec.name);
                let capacity = spec.capacity.as_deref().ok_or_else(|| {
                    error(
                        "MissingCapacity",
                        "capacity is required when destinationPVC is not set",
                    )
                })?;
                let created = ensure(json!({
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": name},
                    "spec": {
                        "accessModes": access_modes(&spec.access_modes),
                        "resources": {"requests": {"storage": capacity}},
                        "storageClassName": spec.storage_class_name,
                        "volumeMode": if wants_block { "Block" } else { "Filesystem" },
                    },
                }))?;
                (name, Some(created))
            }
        };
        let block = existing.as_ref().map_or(wants_block, is_block);
        // A block volume is patched in place: its undo journal must
        // outlive the agent's Pod.
        let journal = if block {
            let name = format!("{}-blocksync-journal", spec.name);
            // By default as large as the volume: a first copy's literals
            // are all of it.
            let size = existing
                .as_ref()
                .and_then(|pvc| pvc["spec"]["resources"]["requests"]["storage"].as_str());
            let capacity = params
                .get("journal-capacity")
                .or(size)
                .unwrap_or(DEFAULT_JOURNAL_CAPACITY);
            Some(state_pvc(name, capacity)?)
        } else {
            None
        };
        let volumes = Volumes {
            pvc: &pvc,
            block,
            journal,
            hashes: None,
        };
        let secret = self.key_secret();
        if get("v1", "Secret", &secret)?.is_none() {
            ensure(json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": secret},
                "stringData": {"psk": random_hex(32)?},
            }))?;
            events::publish(
                events::EventType::Normal,
                "KeyCreated",
                "Create",
                &format!("created Secret {secret}; copy it to the source's namespace"),
            );
        }
        let job_name = self.job_name();
        ensure(json!({
            "apiVersion": "v1",
            "kind": "Service",
            // The Service sources reach, and the key they need.
            "metadata": {
                "name": format!("{}-blocksync", spec.name),
                "annotations": {KEY_SECRET_ANNOTATION: secret},
            },
            "spec": {
                "selector": {"wasmover.dev/agent": job_name},
                "ports": [{"name": "blocksync", "port": port, "targetPort": port}],
            },
        }))?;
        let mut args = vec![
            "receive".to_owned(),
            "--listen".to_owned(),
            format!("0.0.0.0:{port}"),
            "--key-file".to_owned(),
            "/keys/psk".to_owned(),
            "--report-file".to_owned(),
            REPORT_FILE.to_owned(),
        ];
        args.extend(volumes.args());
        args.extend(transfer_params(&params));
        args.extend(rate_flags(&params)?);
        let mut job = agent_job(&job_name, &volumes, false, &secret, &args);
        // A new synchronization is a new Job: its id names its snapshot.
        job["metadata"]["annotations"] = json!({SYNC_ANNOTATION: random_hex(4)?});
        let job = ensure(job)?;
        match job_state(&job) {
            JobState::Running => Ok(Outcome::InProgress(Some(POLL_MS))),
            JobState::Failed(why) => Err(error("MoverJobFailed", format!("Job {job_name}: {why}"))),
            JobState::Succeeded => match destination_image(spec, &pvc, &job)? {
                Outcome::Completed(done) => Ok(completed(done.image, agent_report(&job_name))),
                waiting => Ok(waiting),
            },
        }
    }
}

/// The image of a finished destination: the PVC, or this synchronization's
/// snapshot of it once ready (the earlier ones then go).
fn destination_image(spec: &DestinationSpec, pvc: &str, job: &Value) -> Result<Outcome, Error> {
    if spec.copy_method != CopyMethod::Snapshot {
        return Ok(completed(
            Some(Image {
                kind: ImageKind::PersistentVolumeClaim,
                name: pvc.to_owned(),
            }),
            None,
        ));
    }
    let sync = job["metadata"]["annotations"][SYNC_ANNOTATION]
        .as_str()
        .ok_or_else(|| {
            error(
                "MissingSyncId",
                format!(
                    "the agent Job {} carries no {SYNC_ANNOTATION} annotation; delete it to rerun the synchronization",
                    job["metadata"]["name"]
                ),
            )
        })?;
    let name = format!("{}-blocksync-{sync}", spec.name);
    let snapshot = ensure(json!({
        "apiVersion": SNAPSHOT_API,
        "kind": "VolumeSnapshot",
        "metadata": {"name": name, "labels": {SNAPSHOT_OF_LABEL: spec.name}},
        "spec": {
            "source": {"persistentVolumeClaimName": pvc},
            "volumeSnapshotClassName": spec.volume_snapshot_class_name,
        },
    }))?;
    if snapshot["status"]["readyToUse"] != true {
        return Ok(Outcome::InProgress(Some(POLL_MS)));
    }
    delete_earlier_snapshots(&spec.name, &name)?;
    Ok(completed(
        Some(Image {
            kind: ImageKind::VolumeSnapshot,
            name,
        }),
        None,
    ))
}

/// Deletes the snapshots of `destination` but `current` and those a user
/// holds.
fn delete_earlier_snapshots(destination: &str, current: &str) -> Result<(), Error> {
    let selector = format!("{SNAPSHOT_OF_LABEL}={destination}");
    for snapshot in list(SNAPSHOT_API, "VolumeSnapshot", &selector)? {
        let name = snapshot["metadata"]["name"].as_str().unwrap_or_default();
        let labels = &snapshot["metadata"]["labels"];
        if name == current || HOLD_LABELS.iter().any(|l| labels.get(l).is_some()) {
            continue;
        }
        delete(SNAPSHOT_API, "VolumeSnapshot", name)?;
        log::info(format!(
            "deleted VolumeSnapshot {name}, replaced by {current}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use wasmover_sdk::kube::{self, ObjectKey};
    use wasmover_sdk::types::Completion;

    use super::*;
    use crate::control::jobs::{DEVICE_PATH, JOURNAL_FILE};
    use crate::control::objects::key;
    use crate::control::param;

    fn destination(name: &str) -> DestinationSpec {
        DestinationSpec {
            namespace: "team-a".into(),
            name: name.into(),
            destination_pvc: None,
            capacity: Some("1Gi".into()),
            copy_method: CopyMethod::Direct,
            storage_class_name: None,
            volume_snapshot_class_name: None,
            access_modes: vec![],
            parameters: vec![],
        }
    }

    /// A block-mode destination: the PVC is provisioned as a block device,
    /// the agent gets it as a device and its undo journal on a PVC of its
    /// own, which cleanup keeps.
    #[test]
    fn a_block_destination_gets_a_device_and_a_journal_that_outlives_the_pod() {
        let mut spec = destination("raw");
        spec.parameters = vec![param("volume-mode", "Block")];
        spec.capacity = Some("5Gi".into());
        let role = Role::Destination(spec);
        role.synchronize().unwrap();
        let pvc = get("v1", "PersistentVolumeClaim", "raw-dest")
            .unwrap()
            .unwrap();
        assert_eq!(pvc["spec"]["volumeMode"], "Block");
        let journal = get("v1", "PersistentVolumeClaim", "raw-blocksync-journal")
            .unwrap()
            .unwrap();
        // As large as the volume unless told: a first copy is all literals.
        assert_eq!(journal["spec"]["resources"]["requests"]["storage"], "5Gi");
        let job = get("batch/v1", "Job", "raw-blocksync-dst")
            .unwrap()
            .unwrap();
        let pod = &job["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(
            container["volumeDevices"],
            json!([{"name": "data", "devicePath": DEVICE_PATH}])
        );
        // The host adds mounts of its own (a scratch directory).
        let mounts: Vec<&str> = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        assert!(
            mounts.contains(&"/keys") && mounts.contains(&"/journal"),
            "{mounts:?}"
        );
        assert!(!mounts.contains(&"/data"), "a device, not a mount");
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[0], "receive", "the role comes first: {args:?}");
        let at = args.iter().position(|&a| a == "--volume").unwrap();
        assert_eq!(
            args[at..at + 4],
            ["--volume", DEVICE_PATH, "--journal", JOURNAL_FILE]
        );
        assert_eq!(
            pod["volumes"][2]["persistentVolumeClaim"]["claimName"],
            "raw-blocksync-journal"
        );
        role.cleanup().unwrap();
        assert!(
            get("v1", "PersistentVolumeClaim", "raw-blocksync-journal")
                .unwrap()
                .is_some()
        );
    }

    /// Runs against the host's in-memory cluster: synchronize creates the
    /// objects once, waits for the Job, then reports the PVC; cleanup
    /// removes the Job only.
    #[test]
    fn destination_synchronize_is_idempotent_and_completes_with_the_pvc() {
        let role = Role::Destination(destination("db"));
        assert!(matches!(
            role.synchronize().unwrap(),
            Outcome::InProgress(Some(_))
        ));
        let key = get("v1", "Secret", "db-blocksync-key").unwrap().unwrap();
        assert_eq!(key["stringData"]["psk"].as_str().unwrap().len(), 64);
        // The Service sources reach names the key they need: the
        // operator's status.endpoint.
        let service = get("v1", "Service", "db-blocksync").unwrap().unwrap();
        assert_eq!(
            service["metadata"]["annotations"][KEY_SECRET_ANNOTATION],
            "db-blocksync-key"
        );
        // Again: nothing new, the key is kept.
        assert!(matches!(
            role.synchronize().unwrap(),
            Outcome::InProgress(_)
        ));
        assert_eq!(
            get("v1", "Secret", "db-blocksync-key").unwrap().unwrap(),
            key
        );

        // The Job controller's part: mark the agent done.
        kube::patch(
            &key_of("batch/v1", "Job", "db-blocksync-dst"),
            r#"{"status":{"succeeded":1}}"#,
        )
        .unwrap();
        match role.synchronize().unwrap() {
            Outcome::Completed(Completion {
                image: Some(image),
                transfer,
            }) => {
                assert_eq!(image.kind, ImageKind::PersistentVolumeClaim);
                assert_eq!(image.name, "db-dest");
                // No Pod ran here, so no agent left a report.
                assert!(transfer.is_none(), "{transfer:?}");
            }
            other => panic!("expected completion, got {other:?}"),
        }
        role.cleanup().unwrap();
        role.cleanup().unwrap();
        assert!(
            get("batch/v1", "Job", "db-blocksync-dst")
                .unwrap()
                .is_none()
        );
        assert!(
            get("v1", "PersistentVolumeClaim", "db-dest")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn a_failed_job_and_a_missing_capacity_are_clean_errors() {
        let mut spec = destination("nocap");
        spec.capacity = None;
        let err = Role::Destination(spec).synchronize().unwrap_err();
        assert_eq!(err.reason, "MissingCapacity");

        let role = Role::Destination(destination("fails"));
        role.synchronize().unwrap();
        kube::patch(
            &key_of("batch/v1", "Job", "fails-blocksync-dst"),
            r#"{"status":{"conditions":[{"type":"Failed","status":"True","message":"BackoffLimitExceeded"}]}}"#,
        )
        .unwrap();
        let err = role.synchronize().unwrap_err();
        assert_eq!(err.reason, "MoverJobFailed");
        assert!(
            err.message.contains("BackoffLimitExceeded"),
            "{}",
            err.message
        );
    }

    /// Runs one synchronization of a Snapshot destination to its end,
    /// playing the Job and snapshot controllers; returns the image's name.
    /// Until the new snapshot is ready, the earlier ones are all kept.
    fn snapshot_sync(role: &Role) -> String {
        let spec_name = role.name().to_owned();
        let selector = format!("{SNAPSHOT_OF_LABEL}={spec_name}");
        let before = list(SNAPSHOT_API, "VolumeSnapshot", &selector)
            .unwrap()
            .len();
        role.synchronize().unwrap();
        let job = role.job_name();
        kube::patch(
            &key_of("batch/v1", "Job", &job),
            r#"{"status":{"succeeded":1}}"#,
        )
        .unwrap();
        assert!(matches!(
            role.synchronize().unwrap(),
            Outcome::InProgress(_)
        ));
        // Again: the same synchronization asks for no second snapshot.
        role.synchronize().unwrap();
        let requested = list(SNAPSHOT_API, "VolumeSnapshot", &selector).unwrap();
        assert_eq!(requested.len(), before + 1, "{requested:?}");
        let fresh = requested
            .iter()
            .find(|s| s["status"]["readyToUse"] != true)
            .unwrap();
        let name = fresh["metadata"]["name"].as_str().unwrap().to_owned();
        assert_eq!(
            fresh["spec"]["source"]["persistentVolumeClaimName"],
            format!("{spec_name}-dest")
        );
        kube::patch(
            &key_of(SNAPSHOT_API, "VolumeSnapshot", &name),
            r#"{"status":{"readyToUse":true}}"#,
        )
        .unwrap();
        match role.synchronize().unwrap() {
            Outcome::Completed(Completion {
                image: Some(image), ..
            }) => {
                assert_eq!(image.kind, ImageKind::VolumeSnapshot);
                assert_eq!(image.name, name);
            }
            other => panic!("expected completion, got {other:?}"),
        }
        role.cleanup().unwrap();
        name
    }

    fn snapshot_names(destination: &str) -> Vec<String> {
        let selector = format!("{SNAPSHOT_OF_LABEL}={destination}");
        let mut names: Vec<String> = list(SNAPSHOT_API, "VolumeSnapshot", &selector)
            .unwrap()
            .iter()
            .map(|s| s["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }

    /// Each synchronization snapshots anew and reports its own snapshot;
    /// the one before goes once the new one is ready, but not one a user
    /// holds.
    #[test]
    fn each_snapshot_sync_reports_a_fresh_snapshot_and_deletes_the_last_unless_held() {
        let mut spec = destination("snapdb");
        spec.copy_method = CopyMethod::Snapshot;
        let role = Role::Destination(spec);
        let first = snapshot_sync(&role);
        assert!(first.starts_with("snapdb-blocksync-"), "{first}");
        let second = snapshot_sync(&role);
        assert_ne!(first, second);
        assert_eq!(snapshot_names("snapdb"), std::slice::from_ref(&second));

        // Held, VolSync's way: kept by the next synchronization.
        kube::patch(
            &key_of(SNAPSHOT_API, "VolumeSnapshot", &second),
            r#"{"metadata":{"labels":{"volsync.backube/do-not-delete":"true"}}}"#,
        )
        .unwrap();
        let third = snapshot_sync(&role);
        let mut kept = vec![second.clone(), third.clone()];
        kept.sort();
        assert_eq!(snapshot_names("snapdb"), kept);
        // Let go: the next synchronization deletes it with the third.
        kube::patch(
            &key_of(SNAPSHOT_API, "VolumeSnapshot", &second),
            r#"{"metadata":{"labels":{"volsync.backube/do-not-delete":null}}}"#,
        )
        .unwrap();
        let fourth = snapshot_sync(&role);
        assert_eq!(snapshot_names("snapdb"), [fourth]);
    }

    fn key_of(api_version: &str, kind: &str, name: &str) -> ObjectKey {
        key(api_version, kind, name)
    }
}
