//! The source's steps: the volume its agent reads (the PVC, a clone or a
//! PVC from a snapshot), the PVC of its kept hashes, and the sending agent
//! Job.

use serde_json::json;
use wasmover_sdk::types::{CopyMethod, Error, Outcome, SourceSpec};
use wasmover_sdk::{error, log};

use super::jobs::{
    JobState, Volumes, agent_job, job_state, rate_flags, state_pvc, transfer_params,
};
use super::objects::{ensure, get};
use super::report::{REPORT_FILE, agent_report};
use super::{DEFAULT_PORT, POLL_MS, Role, access_modes, completed, is_block};

fn copy_method_name(method: CopyMethod) -> &'static str {
    match method {
        CopyMethod::Direct => "Direct",
        CopyMethod::Clone => "Clone",
        CopyMethod::Snapshot => "Snapshot",
    }
}

impl Role {
    /// Advances a source one step.
    pub(super) fn synchronize_source(&self, spec: &SourceSpec) -> Result<Outcome, Error> {
        let params = self.parameters();
        let address = params.get("address").ok_or_else(|| {
            error(
                "MissingParameter",
                "blocksync needs the destination's address (parameter address)",
            )
        })?;
        let port = params.parse::<u16>("port")?.unwrap_or(DEFAULT_PORT);
        let Some((pvc, block)) = self.source_volume(spec)? else {
            return Ok(Outcome::InProgress(Some(POLL_MS)));
        };
        // A block volume's digest reads it whole whatever is kept.
        let hashes = match params.get("hashes-capacity") {
            Some(capacity) if !block => Some(state_pvc(
                format!("{}-blocksync-hashes", spec.name),
                capacity,
            )?),
            _ => None,
        };
        let volumes = Volumes {
            pvc: &pvc,
            block,
            journal: None,
            hashes,
        };
        let job_name = self.job_name();
        let mut args = vec![
            "send".to_owned(),
            "--connect".to_owned(),
            format!("{address}:{port}"),
            // The destination's agent may start later than this one.
            "--connect-retry-secs".to_owned(),
            "600".to_owned(),
            "--key-file".to_owned(),
            "/keys/psk".to_owned(),
            "--report-file".to_owned(),
            REPORT_FILE.to_owned(),
        ];
        args.extend(volumes.args());
        args.extend(transfer_params(&params));
        args.extend(rate_flags(&params)?);
        let job = ensure(agent_job(
            &job_name,
            &volumes,
            true,
            &self.key_secret(),
            &args,
        ))?;
        match job_state(&job) {
            JobState::Running => Ok(Outcome::InProgress(Some(POLL_MS))),
            JobState::Failed(why) => Err(error("MoverJobFailed", format!("Job {job_name}: {why}"))),
            JobState::Succeeded => Ok(completed(None, agent_report(&job_name))),
        }
    }

    /// The PVC the source agent reads, per copy method; `None` while a
    /// snapshot is not ready yet.
    fn source_volume(&self, spec: &SourceSpec) -> Result<Option<(String, bool)>, Error> {
        let name = format!("{}-src", spec.name);
        let source = get("v1", "PersistentVolumeClaim", &spec.source_pvc)?.ok_or_else(|| {
            error(
                "SourcePvcNotFound",
                format!("PersistentVolumeClaim {} does not exist", spec.source_pvc),
            )
        })?;
        let data_source = match spec.copy_method {
            CopyMethod::Direct => return Ok(Some((spec.source_pvc.clone(), is_block(&source)))),
            CopyMethod::Clone => json!({"kind": "PersistentVolumeClaim", "name": spec.source_pvc}),
            CopyMethod::Snapshot => {
                let snapshot = ensure(json!({
                    "apiVersion": "snapshot.storage.k8s.io/v1",
                    "kind": "VolumeSnapshot",
                    "metadata": {"name": name},
                    "spec": {
                        "source": {"persistentVolumeClaimName": spec.source_pvc},
                        "volumeSnapshotClassName": spec.volume_snapshot_class_name,
                    },
                }))?;
                if snapshot["status"]["readyToUse"] != true {
                    return Ok(None);
                }
                json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": name})
            }
        };
        ensure(json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {
                "accessModes": access_modes(&spec.access_modes),
                "resources": source["spec"]["resources"],
                "storageClassName": spec.storage_class_name,
                "dataSource": data_source,
                "volumeMode": source["spec"]["volumeMode"],
            },
        }))?;
        log::debug(format!(
            "reading through {} copy of {}",
            copy_method_name(spec.copy_method),
            spec.source_pvc
        ));
        Ok(Some((name, is_block(&source))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::jobs::HASHES_FILE;
    use crate::control::param;

    #[test]
    fn source_without_an_address_is_refused() {
        let spec = SourceSpec {
            namespace: "team-a".into(),
            name: "app".into(),
            source_pvc: "data".into(),
            copy_method: CopyMethod::Direct,
            storage_class_name: None,
            volume_snapshot_class_name: None,
            access_modes: vec![],
            parameters: vec![],
        };
        assert_eq!(
            Role::Source(spec).synchronize().unwrap_err().reason,
            "MissingParameter"
        );
    }

    #[test]
    fn a_missing_source_pvc_is_named_whatever_the_copy_method() {
        for copy_method in [CopyMethod::Direct, CopyMethod::Clone] {
            let spec = SourceSpec {
                namespace: "team-a".into(),
                name: "app".into(),
                source_pvc: "absent".into(),
                copy_method,
                storage_class_name: None,
                volume_snapshot_class_name: None,
                access_modes: vec![],
                parameters: vec![param("address", "db-blocksync.team-b")],
            };
            let err = Role::Source(spec).synchronize().unwrap_err();
            assert_eq!(err.reason, "SourcePvcNotFound");
            assert!(
                err.message.contains("absent does not exist"),
                "{}",
                err.message
            );
        }
    }

    /// A source asked to keep its file hashes gets a PVC for them, mounted
    /// where `--hashes` points, which cleanup keeps for the next run.
    #[test]
    fn a_source_keeps_its_hashes_on_a_pvc_only_when_asked() {
        ensure(json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "files"},
            "spec": {"resources": {"requests": {"storage": "1Gi"}}},
        }))
        .unwrap();
        // The keys, as a user copies them from the destinations: the host
        // starts no agent that mounts a missing Secret.
        for name in ["plain", "keeping"] {
            ensure(json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": format!("{name}-blocksync-key")},
                "stringData": {"psk": "00".repeat(32)},
            }))
            .unwrap();
        }
        let source = |name: &str, parameters| SourceSpec {
            namespace: "team-a".into(),
            name: name.into(),
            source_pvc: "files".into(),
            copy_method: CopyMethod::Direct,
            storage_class_name: None,
            volume_snapshot_class_name: None,
            access_modes: vec![],
            parameters,
        };
        let job_of = |name: &str| {
            let job = get("batch/v1", "Job", &format!("{name}-blocksync-src"))
                .unwrap()
                .unwrap();
            let container = job["spec"]["template"]["spec"]["containers"][0].clone();
            let args: Vec<String> = serde_json::from_value(container["args"].clone()).unwrap();
            let mounts: Vec<String> = container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["mountPath"].as_str().unwrap().to_owned())
                .collect();
            (args, mounts)
        };

        let plain = Role::Source(source("plain", vec![param("address", "dst.team-b")]));
        plain.synchronize().unwrap();
        // The host adds mounts of its own (a scratch directory).
        let has = |mounts: &[String], path: &str| mounts.iter().any(|m| m == path);
        let (args, mounts) = job_of("plain");
        assert_eq!(args[0], "send", "the role comes first: {args:?}");
        assert!(!args.contains(&"--hashes".to_owned()), "{args:?}");
        assert!(!args.contains(&"--rate-limit".to_owned()), "{args:?}");
        assert!(has(&mounts, "/data") && has(&mounts, "/keys"), "{mounts:?}");
        assert!(!has(&mounts, "/hashes"), "{mounts:?}");
        assert!(
            get("v1", "PersistentVolumeClaim", "plain-blocksync-hashes")
                .unwrap()
                .is_none()
        );

        let keeping = Role::Source(source(
            "keeping",
            vec![
                param("address", "dst.team-b"),
                param("hashes-capacity", "64Mi"),
                param("bandwidth-limit", "4Mi"),
            ],
        ));
        keeping.synchronize().unwrap();
        let (args, mounts) = job_of("keeping");
        let at = args.iter().position(|a| a == "--hashes").unwrap();
        assert_eq!(args[at + 1], HASHES_FILE);
        let at = args.iter().position(|a| a == "--rate-limit").unwrap();
        assert_eq!(
            args[at + 1],
            (4 << 20).to_string(),
            "bandwidth-limit paces it"
        );
        assert!(has(&mounts, "/hashes"), "{mounts:?}");
        let pvc = get("v1", "PersistentVolumeClaim", "keeping-blocksync-hashes")
            .unwrap()
            .unwrap();
        assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "64Mi");
        keeping.cleanup().unwrap();
        assert!(
            get("batch/v1", "Job", "keeping-blocksync-src")
                .unwrap()
                .is_none()
        );
        assert!(
            get("v1", "PersistentVolumeClaim", "keeping-blocksync-hashes")
                .unwrap()
                .is_some()
        );
    }
}
