//! The destination's steps: its PVC (and journal PVC for a block volume),
//! the pre-shared key, the Service, the receiving agent Job, and the image
//! it completes with.

use serde_json::json;
use wasmover_sdk::types::{CopyMethod, DestinationSpec, Error, Image, ImageKind, Outcome};
use wasmover_sdk::{error, events};

use super::jobs::{
    DEFAULT_AGENT_IMAGE, JobState, Volumes, agent_job, job_state, state_pvc, transfer_params,
};
use super::objects::{ensure, get};
use super::report::{REPORT_FILE, agent_report};
use super::{DEFAULT_PORT, POLL_MS, Role, access_modes, completed, is_block};

/// Size of the journal PVC when the volume's is unknown: the old bytes one
/// run overwrites and its literals must fit.
const DEFAULT_JOURNAL_CAPACITY: &str = "1Gi";

/// A fresh pre-shared key: 32 random bytes in hex.
fn random_key() -> Result<String, Error> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| error("RandomUnavailable", e.to_string()))?;
    Ok(key.iter().map(|b| format!("{b:02x}")).collect())
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
                "stringData": {"psk": random_key()?},
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
            "metadata": {"name": format!("{}-blocksync", spec.name)},
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
        let image = params.get("agent-image").unwrap_or(DEFAULT_AGENT_IMAGE);
        let job = ensure(agent_job(&job_name, image, &volumes, false, &secret, &args))?;
        match job_state(&job) {
            JobState::Running => Ok(Outcome::InProgress(Some(POLL_MS))),
            JobState::Failed(why) => Err(error("MoverJobFailed", format!("Job {job_name}: {why}"))),
            JobState::Succeeded => match self.destination_image(spec, &pvc)? {
                Outcome::Completed(done) => Ok(completed(done.image, agent_report(&job_name))),
                waiting => Ok(waiting),
            },
        }
    }

    /// The image of a finished destination: the PVC, or a snapshot of it.
    fn destination_image(&self, spec: &DestinationSpec, pvc: &str) -> Result<Outcome, Error> {
        if spec.copy_method != CopyMethod::Snapshot {
            return Ok(completed(
                Some(Image {
                    kind: ImageKind::PersistentVolumeClaim,
                    name: pvc.to_owned(),
                }),
                None,
            ));
        }
        let name = format!("{}-dest-snap", spec.name);
        let snapshot = ensure(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {"name": name},
            "spec": {
                "source": {"persistentVolumeClaimName": pvc},
                "volumeSnapshotClassName": spec.volume_snapshot_class_name,
            },
        }))?;
        if snapshot["status"]["readyToUse"] == true {
            Ok(completed(
                Some(Image {
                    kind: ImageKind::VolumeSnapshot,
                    name,
                }),
                None,
            ))
        } else {
            Ok(Outcome::InProgress(Some(POLL_MS)))
        }
    }
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
        let mounts: Vec<&str> = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        assert_eq!(mounts, ["/keys", "/journal"]);
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
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

    fn key_of(api_version: &str, kind: &str, name: &str) -> ObjectKey {
        key(api_version, kind, name)
    }
}
