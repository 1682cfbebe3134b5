//! The agent Job: the PVCs it mounts, the arguments that name them, the Job
//! itself, and reading how it is doing.

use serde_json::{Value, json};
use wasmover_sdk::Params;
use wasmover_sdk::types::Error;

use super::objects::ensure;
use super::params::bandwidth_limit;

/// Where an agent sees a block-mode PVC.
pub(super) const DEVICE_PATH: &str = "/dev/wasmover-volume";
/// Where a receiving agent keeps the undo journal of a block-mode PVC.
pub(super) const JOURNAL_FILE: &str = "/journal/undo";
/// Where a sending agent keeps its file hashes, on the PVC asked for with
/// `hashes-capacity`.
pub(super) const HASHES_FILE: &str = "/hashes/source";
/// The label of an agent Job's Pods, naming the Job.
pub(super) const AGENT_LABEL: &str = "wasmover.dev/agent";

/// The state of an agent Job.
pub(super) enum JobState {
    Running,
    Succeeded,
    Failed(String),
}

/// How an agent Job is doing, from its status.
pub(super) fn job_state(job: &Value) -> JobState {
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

/// The parameters the data plane (`transfer`) takes, for the agent's
/// command line.
pub(super) fn transfer_params(params: &Params) -> Vec<String> {
    params
        .get("block-size")
        .map(|size| vec!["--param".to_owned(), format!("block-size={size}")])
        .unwrap_or_default()
}

/// The agent's flags for the parameter `bandwidth-limit`: it paces the
/// bytes it sends (TLS bytes) to that rate.
pub(super) fn rate_flags(params: &Params) -> Result<Vec<String>, Error> {
    Ok(bandwidth_limit(params)?
        .map(|rate| vec!["--rate-limit".to_owned(), rate.to_string()])
        .unwrap_or_default())
}

/// Which PVCs an agent Job gets.
pub(super) struct Volumes<'a> {
    /// The data: mounted at `/data`, or a device at [`DEVICE_PATH`].
    pub(super) pvc: &'a str,
    /// The data PVC is of `volumeMode: Block`.
    pub(super) block: bool,
    /// The undo journal's PVC, mounted at `/journal` (a receiver of a
    /// block volume).
    pub(super) journal: Option<String>,
    /// The PVC of the file hashes, mounted at `/hashes` (a sender asked
    /// to keep them).
    pub(super) hashes: Option<String>,
}

impl Volumes<'_> {
    /// The agent's arguments that name them.
    pub(super) fn args(&self) -> Vec<String> {
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

/// A Job that runs `wasmover agent` with `args` (the role, `receive` or
/// `send`, then its flags) and the volume (read-only for a sender) and the
/// key mounted. It holds only what a mover may set: the host adds the
/// image, command, environment, security context and the module it pinned.
pub(super) fn agent_job(
    name: &str,
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
                        "args": args,
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
    }
    // A read-only claim is also one the kubelet leaves alone: it applies
    // the Pod's fsGroup (chown, g+rw, setgid) only to writable volumes, so
    // the sender neither changes the user's volume nor sends those changes.
    pod["volumes"][0]["persistentVolumeClaim"]["readOnly"] = json!(read_only);
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
pub(super) fn state_pvc(name: String, capacity: &str) -> Result<String, Error> {
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
