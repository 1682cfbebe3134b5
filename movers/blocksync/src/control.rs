//! The control plane: the Kubernetes objects around a transfer.
//!
//! Destination: a PVC (or `destinationPVC`), a Secret with the pre-shared
//! key, a Service, and an agent Job that receives. Source: the volume to
//! read (the PVC itself, a clone, or a PVC from a snapshot per
//! `copyMethod`) and an agent Job that sends. Every step first looks at what
//! exists, so `synchronize` and `cleanup` can be called any number of times.
//!
//! A PVC of `volumeMode: Block` is handed to its agent as a device and moved
//! as a block volume; the receiving agent keeps its undo journal on a small
//! PVC of its own (`journal-capacity`), which outlives a lost Pod so the
//! next agent can roll an interrupted patch back.
//!
//! Both agents verify the transfer with a tree digest. The receiver keeps
//! its file hashes in the destination PVC, so its digest reads only what
//! changed; the sender keeps its own between runs only on a PVC asked for
//! with `hashes-capacity`, and otherwise reads its whole volume every run.

use serde_json::{Value, json};
use wasmover_sdk::kube::{self, KubeError, ObjectKey};
use wasmover_sdk::types::{
    Completion, CopyMethod, DestinationSpec, Error, Image, ImageKind, Outcome, Parameter,
    SourceSpec, TransferReport,
};
use wasmover_sdk::{AgentReport, Params, error, events, log};

/// Parameters blocksync understands; a spec with any other is not ours.
pub const KNOWN_PARAMETERS: &[&str] = &[
    "address",
    "port",
    "block-size",
    "agent-image",
    "key-secret",
    "volume-mode",
    "journal-capacity",
    "hashes-capacity",
];
/// Where an agent sees a block-mode PVC.
const DEVICE_PATH: &str = "/dev/wasmover-volume";
/// Where a receiving agent keeps the undo journal of a block-mode PVC.
const JOURNAL_FILE: &str = "/journal/undo";
/// Where a sending agent keeps its file hashes, on the PVC asked for with
/// `hashes-capacity`.
const HASHES_FILE: &str = "/hashes/source";
/// Size of the journal PVC when the volume's is unknown: the old bytes one
/// run overwrites and its literals must fit.
const DEFAULT_JOURNAL_CAPACITY: &str = "1Gi";
/// The agent's port behind the destination's Service.
const DEFAULT_PORT: u16 = 8873;
/// The image that runs `wasmover agent`.
const DEFAULT_AGENT_IMAGE: &str = "ghcr.io/wasmover/wasmover:0.1.0";
/// How long to wait between looks at a running Job.
const POLL_MS: u64 = 5_000;
/// Where an agent writes its transfer report (`--report-file`): its
/// container's termination message, which the kubelet copies into the
/// Pod's status for the control plane to read.
const REPORT_FILE: &str = "/dev/termination-log";
/// The label of an agent Job's Pods, naming the Job.
const AGENT_LABEL: &str = "wasmover.dev/agent";

/// Whether `parameters` belong to blocksync.
pub fn claims(parameters: &[Parameter]) -> bool {
    Params::from(parameters.to_vec())
        .unknown(KNOWN_PARAMETERS)
        .is_empty()
}

/// Checks parameters (the `validate` capability).
pub fn validate(parameters: Vec<Parameter>) -> Result<(), Error> {
    let params = Params::from(parameters);
    let unknown = params.unknown(KNOWN_PARAMETERS);
    if !unknown.is_empty() {
        return Err(error(
            "UnknownParameter",
            format!(
                "blocksync does not understand {}; it knows {}",
                unknown.join(", "),
                KNOWN_PARAMETERS.join(", ")
            ),
        ));
    }
    params.parse::<u16>("port")?;
    if let Some(mode) = params.get("volume-mode")
        && !["Filesystem", "Block"].contains(&mode)
    {
        return Err(error(
            "InvalidParameter",
            format!("volume-mode={mode} is neither Filesystem nor Block"),
        ));
    }
    if let Some(size) = params.parse::<u32>("block-size")?
        && !(512..=(1 << 20)).contains(&size)
    {
        return Err(error(
            "InvalidParameter",
            format!("block-size={size} is outside 512..=1048576"),
        ));
    }
    Ok(())
}

fn kube_error(what: &str, e: KubeError) -> Error {
    let (reason, message) = match e {
        KubeError::Forbidden(m) => ("Forbidden", m),
        KubeError::NotFound(m) => ("NotFound", m),
        KubeError::Conflict(m) => ("Conflict", m),
        KubeError::Invalid(m) => ("Invalid", m),
        KubeError::Unavailable(m) => ("ApiUnavailable", m),
        KubeError::Other(m) => ("ApiError", m),
    };
    error(reason, format!("{what}: {message}"))
}

fn key(api_version: &str, kind: &str, name: &str) -> ObjectKey {
    ObjectKey {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
    }
}

fn get(api_version: &str, kind: &str, name: &str) -> Result<Option<Value>, Error> {
    let what = format!("reading {kind} {name}");
    kube::get(&key(api_version, kind, name))
        .map_err(|e| kube_error(&what, e))?
        .map(|text| {
            serde_json::from_str(&text)
                .map_err(|e| error("ApiError", format!("{what}: invalid JSON: {e}")))
        })
        .transpose()
}

/// Returns the object, creating it from `object` if it does not exist.
fn ensure(object: Value) -> Result<Value, Error> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if let Some(existing) = get(&api_version, &kind, &name)? {
        return Ok(existing);
    }
    match kube::create(&object.to_string()) {
        Ok(created) => {
            log::info(format!("created {kind} {name}"));
            serde_json::from_str(&created)
                .map_err(|e| error("ApiError", format!("created {kind} {name}: {e}")))
        }
        // Someone (an earlier call of ours) created it meanwhile.
        Err(KubeError::Conflict(_)) => get(&api_version, &kind, &name)?.ok_or_else(|| {
            error(
                "Conflict",
                format!("{kind} {name} vanished after a conflict"),
            )
        }),
        Err(e) => Err(kube_error(&format!("creating {kind} {name}"), e)),
    }
}

fn delete(api_version: &str, kind: &str, name: &str) -> Result<(), Error> {
    kube::delete(&key(api_version, kind, name))
        .map(|_| ())
        .map_err(|e| kube_error(&format!("deleting {kind} {name}"), e))
}

/// The transfer report the agent of Job `job` left as its Pod's
/// termination message; `None` when no Pod of the Job ended with one, or
/// when Pods cannot be read here.
fn agent_report(job: &str) -> Option<TransferReport> {
    let pods = match kube::list_objects("v1", "Pod", Some(&format!("{AGENT_LABEL}={job}"))) {
        Ok(pods) => pods,
        Err(e) => {
            log::warn(kube_error(&format!("reading the Pods of Job {job}"), e).message);
            return None;
        }
    };
    let report = pods
        .iter()
        .filter_map(|pod| serde_json::from_str::<Value>(pod).ok())
        .find_map(|pod| report_of_pod(&pod));
    if report.is_none() {
        log::warn(format!(
            "no Pod of Job {job} left a transfer report: the status shows no tree digest"
        ));
    }
    report
}

/// The report in a Pod's termination message, if a container ended well
/// with one (`wasmover agent --report-file`).
fn report_of_pod(pod: &Value) -> Option<TransferReport> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find_map(|status| {
            let ended = &status["state"]["terminated"];
            if ended["exitCode"].as_i64() != Some(0) {
                return None;
            }
            let r: AgentReport = serde_json::from_str(ended["message"].as_str()?).ok()?;
            Some(TransferReport {
                entries_total: r.entries_total,
                files_transferred: r.files_transferred,
                entries_deleted: r.entries_deleted,
                bytes_total: r.bytes_total,
                bytes_matched: r.bytes_matched,
                bytes_literal: r.bytes_literal,
                bytes_on_wire: r.bytes_on_wire,
                tree_digest: r.tree_digest,
                verified: r.verified,
            })
        })
}

/// A finished `synchronize` or `cleanup`.
fn completed(image: Option<Image>, transfer: Option<TransferReport>) -> Outcome {
    Outcome::Completed(Completion { image, transfer })
}

/// The state of an agent Job.
enum JobState {
    Running,
    Succeeded,
    Failed(String),
}

fn job_state(job: &Value) -> JobState {
    let status = &job["status"];
    if status["succeeded"].as_u64().unwrap_or(0) > 0 {
        return JobState::Succeeded;
    }
    let failed = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Failed" && c["status"] == "True");
    match failed {
        Some(c) => JobState::Failed(c["message"].as_str().unwrap_or("the Job failed").to_owned()),
        None => JobState::Running,
    }
}

fn random_key() -> Result<String, Error> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| error("RandomUnavailable", e.to_string()))?;
    Ok(key.iter().map(|b| format!("{b:02x}")).collect())
}

fn copy_method_name(method: CopyMethod) -> &'static str {
    match method {
        CopyMethod::Direct => "Direct",
        CopyMethod::Clone => "Clone",
        CopyMethod::Snapshot => "Snapshot",
    }
}

/// The parameters the data plane (`transfer`) takes, for the agent's
/// command line.
fn transfer_params(params: &Params) -> Vec<String> {
    params
        .get("block-size")
        .map(|size| vec!["--param".to_owned(), format!("block-size={size}")])
        .unwrap_or_default()
}

/// A Job that runs `wasmover agent` with the volume (read-only for a
/// sender) and the key mounted. The module cache goes to a scratch
/// directory: the agent's home need not be writable.
/// Which PVCs an agent Job gets.
struct Volumes<'a> {
    /// The data: mounted at `/data`, or a device at [`DEVICE_PATH`].
    pvc: &'a str,
    /// The data PVC is of `volumeMode: Block`.
    block: bool,
    /// The undo journal's PVC, mounted at `/journal` (a receiver of a
    /// block volume).
    journal: Option<String>,
    /// The PVC of the file hashes, mounted at `/hashes` (a sender asked
    /// to keep them).
    hashes: Option<String>,
}

impl Volumes<'_> {
    /// The agent's arguments that name them.
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--volume".to_owned(),
            if self.block { DEVICE_PATH } else { "/data" }.to_owned(),
        ];
        if self.journal.is_some() {
            args.extend(["--journal".to_owned(), JOURNAL_FILE.to_owned()]);
        }
        if self.hashes.is_some() {
            args.extend(["--hashes".to_owned(), HASHES_FILE.to_owned()]);
        }
        args
    }
}

fn agent_job(
    name: &str,
    image: &str,
    volumes: &Volumes,
    read_only: bool,
    key_secret: &str,
    args: &[String],
) -> Value {
    let pvc = volumes.pvc;
    let mut job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 2,
            "template": {
                "metadata": {"labels": {"wasmover.dev/agent": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "agent",
                        "image": image,
                        "command": ["wasmover", "agent"],
                        "args": args,
                        "env": [{"name": "WASMOVER_CACHE_DIR", "value": "/tmp/wasmover-cache"}],
                        "volumeMounts": [
                            {"name": "data", "mountPath": "/data", "readOnly": read_only},
                            {"name": "key", "mountPath": "/keys", "readOnly": true},
                        ],
                    }],
                    "volumes": [
                        {"name": "data", "persistentVolumeClaim": {"claimName": pvc}},
                        {"name": "key", "secret": {"secretName": key_secret}},
                    ],
                },
            },
        },
    });
    let pod = &mut job["spec"]["template"]["spec"];
    if volumes.block {
        let container = &mut pod["containers"][0];
        container["volumeDevices"] = json!([{"name": "data", "devicePath": DEVICE_PATH}]);
        container["volumeMounts"] =
            json!([{"name": "key", "mountPath": "/keys", "readOnly": true}]);
        pod["volumes"][0]["persistentVolumeClaim"]["readOnly"] = json!(read_only);
    }
    for (name, claim) in [("journal", &volumes.journal), ("hashes", &volumes.hashes)] {
        let Some(claim) = claim else { continue };
        pod["containers"][0]["volumeMounts"]
            .as_array_mut()
            .expect("a list")
            .push(json!({"name": name, "mountPath": format!("/{name}")}));
        pod["volumes"]
            .as_array_mut()
            .expect("a list")
            .push(json!({"name": name, "persistentVolumeClaim": {"claimName": claim}}));
    }
    job
}

/// Ensures a PVC `name` of `capacity` where an agent keeps what outlives
/// its Pod (an undo journal, file hashes); returns its name.
fn state_pvc(name: String, capacity: &str) -> Result<String, Error> {
    ensure(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": capacity}},
        },
    }))?;
    Ok(name)
}

/// Whether a PVC is of `volumeMode: Block`.
fn is_block(pvc: &Value) -> bool {
    pvc["spec"]["volumeMode"] == "Block"
}

/// A mover bound to one ReplicationSource or ReplicationDestination.
pub enum Role {
    /// Sends a source volume.
    Source(SourceSpec),
    /// Receives into a destination volume.
    Destination(DestinationSpec),
}

impl Role {
    fn name(&self) -> &str {
        match self {
            Role::Source(s) => &s.name,
            Role::Destination(d) => &d.name,
        }
    }

    fn parameters(&self) -> Params {
        match self {
            Role::Source(s) => Params::from(s.parameters.clone()),
            Role::Destination(d) => Params::from(d.parameters.clone()),
        }
    }

    fn job_name(&self) -> String {
        match self {
            Role::Source(s) => format!("{}-blocksync-src", s.name),
            Role::Destination(d) => format!("{}-blocksync-dst", d.name),
        }
    }

    fn key_secret(&self) -> String {
        self.parameters()
            .get("key-secret")
            .map_or_else(|| format!("{}-blocksync-key", self.name()), str::to_owned)
    }

    /// Advances the synchronization one step.
    pub fn synchronize(&self) -> Result<Outcome, Error> {
        match self {
            Role::Destination(spec) => self.synchronize_destination(spec),
            Role::Source(spec) => self.synchronize_source(spec),
        }
    }

    fn synchronize_destination(&self, spec: &DestinationSpec) -> Result<Outcome, Error> {
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

    fn synchronize_source(&self, spec: &SourceSpec) -> Result<Outcome, Error> {
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
        let image = params.get("agent-image").unwrap_or(DEFAULT_AGENT_IMAGE);
        let job = ensure(agent_job(
            &job_name,
            image,
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

    /// Removes the Job and the source's temporary copies; keeps the
    /// destination's PVC, key, Service and journal, and the source's
    /// hashes, for the next synchronization (a journal left by a lost agent is what rolls its
    /// interrupted patch back).
    pub fn cleanup(&self) -> Result<Outcome, Error> {
        delete("batch/v1", "Job", &self.job_name())?;
        if let Role::Source(spec) = self {
            let name = format!("{}-src", spec.name);
            if spec.copy_method != CopyMethod::Direct {
                delete("v1", "PersistentVolumeClaim", &name)?;
            }
            if spec.copy_method == CopyMethod::Snapshot {
                delete("snapshot.storage.k8s.io/v1", "VolumeSnapshot", &name)?;
            }
        }
        Ok(completed(None, None))
    }
}

fn access_modes(modes: &[String]) -> Vec<String> {
    if modes.is_empty() {
        vec!["ReadWriteOnce".into()]
    } else {
        modes.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(key: &str, value: &str) -> Parameter {
        Parameter {
            key: key.into(),
            value: value.into(),
        }
    }

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

    /// What `wasmover agent --report-file` writes and the kubelet copies
    /// into the Pod's status is read back; other terminations are not.
    #[test]
    fn the_agents_report_is_read_from_its_pods_termination_message() {
        let message = json!({
            "entriesTotal": 4, "filesTransferred": 2, "entriesDeleted": 1,
            "bytesTotal": 100, "bytesMatched": 60, "bytesLiteral": 40,
            "bytesOnWire": 90, "treeDigest": "ab".repeat(32), "verified": true,
        })
        .to_string();
        let pod = |exit_code: i64, message: &str| {
            json!({"status": {"containerStatuses": [
                {"state": {"terminated": {"exitCode": exit_code, "message": message}}},
            ]}})
        };
        let report = report_of_pod(&pod(0, &message)).unwrap();
        assert_eq!(report.tree_digest, "ab".repeat(32));
        assert!(report.verified);
        assert_eq!(
            (
                report.entries_total,
                report.entries_deleted,
                report.bytes_on_wire
            ),
            (4, 1, 90)
        );
        assert!(report_of_pod(&pod(1, &message)).is_none(), "a failed agent");
        assert!(report_of_pod(&pod(0, "done")).is_none(), "not a report");
        assert!(
            report_of_pod(&json!({"status": {}})).is_none(),
            "still running"
        );
        // The test cluster has no Pods for this Job: no report, no error.
        assert!(agent_report("nothing-ran").is_none());
    }

    #[test]
    fn claims_only_its_own_parameters_and_validates_them() {
        assert!(claims(&[]));
        assert!(claims(&[param("address", "10.0.0.1")]));
        assert!(!claims(&[param("repository", "s3://x")]));
        assert!(validate(vec![param("block-size", "4096")]).is_ok());
        assert_eq!(
            validate(vec![param("block-size", "7")]).unwrap_err().reason,
            "InvalidParameter"
        );
        assert_eq!(
            validate(vec![param("port", "http")]).unwrap_err().reason,
            "InvalidParameter"
        );
        assert_eq!(
            validate(vec![param("colour", "x")]).unwrap_err().reason,
            "UnknownParameter"
        );
        assert!(validate(vec![param("volume-mode", "Block")]).is_ok());
        assert_eq!(
            validate(vec![param("volume-mode", "Raw")])
                .unwrap_err()
                .reason,
            "InvalidParameter"
        );
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
        let (args, mounts) = job_of("plain");
        assert!(!args.contains(&"--hashes".to_owned()), "{args:?}");
        assert_eq!(mounts, ["/data", "/keys"]);
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
            ],
        ));
        keeping.synchronize().unwrap();
        let (args, mounts) = job_of("keeping");
        let at = args.iter().position(|a| a == "--hashes").unwrap();
        assert_eq!(args[at + 1], HASHES_FILE);
        assert_eq!(mounts, ["/data", "/keys", "/hashes"]);
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

    fn key_of(api_version: &str, kind: &str, name: &str) -> ObjectKey {
        key(api_version, kind, name)
    }
}
