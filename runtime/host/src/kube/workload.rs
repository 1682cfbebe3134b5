//! Agents from the host's template: a mover describes the agent it needs
//! as a Job that holds only its name, labels, arguments, ports and the
//! volumes it mounts; the host builds the Pod from [`AgentTemplate`]. A
//! description with anything else (an image, a command, host paths,
//! privileges, another service account) is refused, naming the field.

use serde_json::{Map, Value, json};

use super::KubeError;

/// What the host puts into every agent's Pod.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentTemplate {
    /// The agent image, by digest.
    pub image: String,
    /// Its command (`wasmover agent`); the mover's arguments follow.
    pub command: Vec<String>,
    /// The first argument a mover may choose (`receive`, `send`).
    pub roles: Vec<String>,
    /// Appended to the mover's arguments: the module to run, its digest and
    /// limits.
    pub args: Vec<String>,
    /// Flags only the host may pass: a mover's argument equal to one, or
    /// starting with one and `=`, is refused.
    pub reserved_flags: Vec<String>,
    /// Environment of the agent.
    pub env: Vec<(String, String)>,
    /// Volumes the host mounts: the module's pull secret, the
    /// replication's mover volumes. A mover's own mounts stay clear of them.
    pub mounts: Vec<HostMount>,
    /// A writable scratch directory (an `emptyDir`): the root filesystem
    /// is read-only.
    pub scratch_dir: String,
    /// Whom the agent runs as.
    pub privilege: Privilege,
    /// `resources` of the agent container, as Kubernetes has them.
    pub resources: Option<Value>,
    /// The agent Pod's service account; none mounts its token.
    pub service_account: Option<String>,
    /// Labels of every agent Pod (the owner labels win over them).
    pub pod_labels: Vec<(String, String)>,
    /// `affinity` of the agent Pods, as Kubernetes has it.
    pub affinity: Option<Value>,
}

/// A volume the host mounts into every agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostMount {
    /// What is mounted.
    pub source: MountSource,
    /// Where.
    pub path: String,
}

/// What a [`HostMount`] mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountSource {
    /// A Secret of the namespace, always read-only.
    Secret {
        /// Its name.
        name: String,
        /// Which keys appear as which files (all keys, by their names,
        /// when empty).
        items: Vec<SecretItem>,
        /// The files' mode (Kubernetes' default, 0644, when `None`).
        default_mode: Option<i32>,
    },
    /// A PVC of the namespace.
    Claim {
        /// Its name.
        name: String,
        /// Mounted read-only.
        read_only: bool,
    },
}

/// One key of a mounted Secret as a file, as a Pod's `secret.items` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretItem {
    /// The key.
    pub key: String,
    /// The file, relative to the mount.
    pub path: String,
    /// Its mode.
    pub mode: Option<i32>,
}

impl MountSource {
    /// A Secret with all its keys, by their names.
    pub fn secret(name: impl Into<String>) -> Self {
        MountSource::Secret {
            name: name.into(),
            items: Vec::new(),
            default_mode: None,
        }
    }

    /// The kind and name of the object mounted.
    pub fn object(&self) -> (&'static str, &str) {
        match self {
            MountSource::Secret { name, .. } => ("Secret", name),
            MountSource::Claim { name, .. } => ("PersistentVolumeClaim", name),
        }
    }
}

impl HostMount {
    /// The Pod volume (named `name`) and the container's mount of it.
    fn volume_and_mount(&self, name: &str) -> (Value, Value) {
        match &self.source {
            MountSource::Secret {
                name: secret,
                items,
                default_mode,
            } => {
                let mut source = json!({"secretName": secret});
                if !items.is_empty() {
                    source["items"] = items
                        .iter()
                        .map(|i| {
                            let mut item = json!({"key": i.key, "path": i.path});
                            if let Some(mode) = i.mode {
                                item["mode"] = mode.into();
                            }
                            item
                        })
                        .collect();
                }
                if let Some(mode) = default_mode {
                    source["defaultMode"] = (*mode).into();
                }
                (
                    json!({"name": name, "secret": source}),
                    json!({"name": name, "mountPath": self.path, "readOnly": true}),
                )
            }
            MountSource::Claim {
                name: claim,
                read_only,
            } => (
                json!({"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}),
                json!({"name": name, "mountPath": self.path, "readOnly": read_only}),
            ),
        }
    }
}

/// Whom an agent runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    /// A non-root user and group, the volumes' `fsGroup`, no
    /// capabilities, no privilege escalation: the restricted Pod Security
    /// Standard. Files a receiving agent writes belong to them.
    Restricted {
        /// The user (not 0).
        uid: u32,
        /// Its primary group.
        gid: u32,
        /// The group that owns the volumes.
        fs_group: u32,
    },
    /// Root with the capabilities that keep files' owners (`CHOWN`,
    /// `FOWNER`, `DAC_OVERRIDE`, `FSETID`) and nothing else: only where an
    /// admin allowed it for the namespace.
    KeepOwners,
}

/// The user a restricted agent runs as (the agent image's user).
pub const AGENT_UID: u32 = 65532;

impl AgentTemplate {
    /// A restricted template for `image` running `command`, with the roles
    /// `receive` and `send`.
    pub fn new(image: impl Into<String>, command: &[&str]) -> Self {
        Self {
            image: image.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            roles: vec!["receive".into(), "send".into()],
            args: Vec::new(),
            reserved_flags: Vec::new(),
            env: Vec::new(),
            mounts: Vec::new(),
            scratch_dir: "/tmp".into(),
            privilege: Privilege::Restricted {
                uid: AGENT_UID,
                gid: AGENT_UID,
                fs_group: AGENT_UID,
            },
            pod_labels: Vec::new(),
            affinity: None,
            resources: None,
            service_account: None,
        }
    }

    /// The Job of `description`, its objects labelled with `owner` (which
    /// also selects its Pods for the mover).
    pub(super) fn job(&self, d: &Description, owner: [(&str, &str); 3]) -> Value {
        let mut pod_labels = d.pod_labels.clone();
        for (k, v) in &self.pod_labels {
            pod_labels.insert(k.clone(), v.clone().into());
        }
        for (k, v) in owner {
            pod_labels.insert(k.into(), v.into());
        }
        let mut mounts = d.mounts.clone();
        let mut volumes = d.volumes.clone();
        mounts.push(json!({"name": "wasmover-scratch", "mountPath": self.scratch_dir}));
        volumes.push(json!({"name": "wasmover-scratch", "emptyDir": {}}));
        for (i, m) in self.mounts.iter().enumerate() {
            let (volume, mount) = m.volume_and_mount(&format!("wasmover-mount-{i}"));
            volumes.push(volume);
            mounts.push(mount);
        }
        let mut args = d.args.clone();
        args.extend(self.args.iter().cloned());
        let (pod_security, container_security) = match self.privilege {
            Privilege::Restricted { uid, gid, fs_group } => (
                json!({
                    "runAsNonRoot": true,
                    "runAsUser": uid,
                    "runAsGroup": gid,
                    "fsGroup": fs_group,
                    "seccompProfile": {"type": "RuntimeDefault"},
                }),
                json!({
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                }),
            ),
            Privilege::KeepOwners => (
                json!({"runAsUser": 0, "runAsGroup": 0, "seccompProfile": {"type": "RuntimeDefault"}}),
                json!({
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE", "FSETID"]},
                }),
            ),
        };
        let mut container = json!({
            "name": "agent",
            "image": self.image,
            "command": self.command,
            "args": args,
            "env": self.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            "volumeMounts": mounts,
            "securityContext": container_security,
        });
        for (field, value) in [("ports", &d.ports), ("volumeDevices", &d.devices)] {
            if !value.is_empty() {
                container[field] = Value::Array(value.clone());
            }
        }
        if let Some(resources) = &self.resources {
            container["resources"] = resources.clone();
        }
        let mut pod = json!({
            "restartPolicy": d.restart_policy,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "securityContext": pod_security,
            "containers": [container],
            "volumes": volumes,
        });
        if let Some(account) = &self.service_account {
            pod["serviceAccountName"] = account.clone().into();
        }
        if let Some(affinity) = &self.affinity {
            pod["affinity"] = affinity.clone();
        }
        let mut job = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": d.name, "labels": d.labels, "annotations": d.annotations},
            "spec": {
                "template": {
                    "metadata": {"labels": pod_labels, "annotations": d.pod_annotations},
                    "spec": pod,
                },
            },
        });
        if let Some(limit) = d.backoff_limit {
            job["spec"]["backoffLimit"] = limit.into();
        }
        job
    }
}

/// What a mover may say about an agent.
#[derive(Debug)]
pub(super) struct Description {
    name: String,
    labels: Map<String, Value>,
    annotations: Map<String, Value>,
    backoff_limit: Option<u64>,
    pod_labels: Map<String, Value>,
    pod_annotations: Map<String, Value>,
    restart_policy: String,
    args: Vec<String>,
    ports: Vec<Value>,
    mounts: Vec<Value>,
    devices: Vec<Value>,
    volumes: Vec<Value>,
}

/// Most retries of an agent's Pod a mover may ask for.
const MAX_BACKOFF_LIMIT: u64 = 6;

fn refuse(message: impl Into<String>) -> KubeError {
    KubeError::refused("agent-template", message)
}

/// The object at `path` with only the `allowed` keys, else a refusal naming
/// the first other one.
fn fields<'a>(
    value: &'a Value,
    path: &str,
    allowed: &[&str],
) -> Result<&'a Map<String, Value>, KubeError> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    let object = match value {
        Value::Null => EMPTY.get_or_init(Map::new),
        Value::Object(object) => object,
        _ => return Err(KubeError::Invalid(format!("{path} must be an object"))),
    };
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(field) => Err(refuse(format!(
            "{path}.{field}: an agent's Pod comes from the host's template; a mover may set only {}",
            allowed.join(", ")
        ))),
        None => Ok(object),
    }
}

fn list<'a>(value: Option<&'a Value>, path: &str) -> Result<&'a [Value], KubeError> {
    match value {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(KubeError::Invalid(format!("{path} must be a list"))),
    }
}

fn string_map(value: Option<&Value>, path: &str) -> Result<Map<String, Value>, KubeError> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) if map.values().all(Value::is_string) => Ok(map.clone()),
        Some(_) => Err(KubeError::Invalid(format!(
            "{path} must map strings to strings"
        ))),
    }
}

impl Description {
    /// Reads a mover's Job, refusing anything but a description.
    pub(super) fn parse(job: &Value) -> Result<Self, KubeError> {
        fields(job, "Job", &["apiVersion", "kind", "metadata", "spec"])?;
        let metadata = fields(
            &job["metadata"],
            "metadata",
            &["name", "namespace", "labels", "annotations"],
        )?;
        let name = metadata
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| KubeError::Invalid("metadata.name is required".into()))?
            .to_owned();
        let spec = fields(&job["spec"], "spec", &["backoffLimit", "template"])?;
        let backoff_limit = match spec.get("backoffLimit") {
            None => None,
            Some(limit) => match limit.as_u64() {
                Some(n) if n <= MAX_BACKOFF_LIMIT => Some(n),
                _ => {
                    return Err(refuse(format!(
                        "spec.backoffLimit {limit}: at most {MAX_BACKOFF_LIMIT} retries"
                    )));
                }
            },
        };
        let template = &job["spec"]["template"];
        fields(template, "spec.template", &["metadata", "spec"])?;
        let pod_meta = fields(
            &template["metadata"],
            "spec.template.metadata",
            &["labels", "annotations"],
        )?;
        let pod = fields(
            &template["spec"],
            "spec.template.spec",
            &["restartPolicy", "containers", "volumes"],
        )?;
        let restart_policy = match pod.get("restartPolicy").and_then(Value::as_str) {
            None | Some("Never") => "Never",
            Some("OnFailure") => "OnFailure",
            Some(other) => {
                return Err(refuse(format!(
                    "spec.template.spec.restartPolicy {other}: an agent's is Never or OnFailure"
                )));
            }
        };
        let containers = list(pod.get("containers"), "spec.template.spec.containers")?;
        let [container] = containers else {
            return Err(refuse(format!(
                "spec.template.spec.containers: an agent is one container, not {}",
                containers.len()
            )));
        };
        let c = "spec.template.spec.containers[0]";
        let container = fields(
            container,
            c,
            &["name", "args", "ports", "volumeMounts", "volumeDevices"],
        )?;
        let args = list(container.get("args"), &format!("{c}.args"))?
            .iter()
            .map(|a| {
                a.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| KubeError::Invalid(format!("{c}.args must be strings")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut ports = Vec::new();
        for (i, port) in list(container.get("ports"), &format!("{c}.ports"))?
            .iter()
            .enumerate()
        {
            fields(
                port,
                &format!("{c}.ports[{i}]"),
                &["name", "containerPort", "protocol"],
            )?;
            ports.push(port.clone());
        }
        let mut mounts = Vec::new();
        for (i, mount) in list(container.get("volumeMounts"), &format!("{c}.volumeMounts"))?
            .iter()
            .enumerate()
        {
            fields(
                mount,
                &format!("{c}.volumeMounts[{i}]"),
                &["name", "mountPath", "readOnly"],
            )?;
            mounts.push(mount.clone());
        }
        let mut devices = Vec::new();
        for (i, device) in list(
            container.get("volumeDevices"),
            &format!("{c}.volumeDevices"),
        )?
        .iter()
        .enumerate()
        {
            fields(
                device,
                &format!("{c}.volumeDevices[{i}]"),
                &["name", "devicePath"],
            )?;
            devices.push(device.clone());
        }
        let mut volumes = Vec::new();
        for (i, volume) in list(pod.get("volumes"), "spec.template.spec.volumes")?
            .iter()
            .enumerate()
        {
            let path = format!("spec.template.spec.volumes[{i}]");
            let volume_fields = fields(
                volume,
                &path,
                &["name", "persistentVolumeClaim", "secret", "emptyDir"],
            )?;
            if volume["name"]
                .as_str()
                .is_none_or(|n| n.starts_with("wasmover-"))
            {
                return Err(refuse(format!(
                    "{path}.name: a volume has a name not starting with wasmover- (the host's)"
                )));
            }
            if volume_fields.len() != 2 || !volume_fields.contains_key("name") {
                return Err(refuse(format!(
                    "{path}: a volume has a name and one source: persistentVolumeClaim, secret or emptyDir"
                )));
            }
            fields(
                &volume["persistentVolumeClaim"],
                &format!("{path}.persistentVolumeClaim"),
                &["claimName", "readOnly"],
            )?;
            fields(
                &volume["secret"],
                &format!("{path}.secret"),
                &["secretName", "defaultMode", "items", "optional"],
            )?;
            fields(
                &volume["emptyDir"],
                &format!("{path}.emptyDir"),
                &["medium", "sizeLimit"],
            )?;
            for (source, name) in [
                ("persistentVolumeClaim", "claimName"),
                ("secret", "secretName"),
            ] {
                if !volume[source].is_null() && !volume[source][name].is_string() {
                    return Err(KubeError::Invalid(format!(
                        "{path}.{source}.{name} is required"
                    )));
                }
            }
            volumes.push(volume.clone());
        }
        // Mounts name the description's own volumes, not the host's.
        for (i, mount) in mounts.iter().chain(&devices).enumerate() {
            let name = mount["name"].as_str().unwrap_or_default();
            if !volumes.iter().any(|v| v["name"] == name) {
                return Err(refuse(format!(
                    "{c}: mount {i} names volume {name:?}, which the description does not declare"
                )));
            }
        }
        Ok(Self {
            name,
            labels: string_map(metadata.get("labels"), "metadata.labels")?,
            annotations: string_map(metadata.get("annotations"), "metadata.annotations")?,
            backoff_limit,
            pod_labels: string_map(pod_meta.get("labels"), "spec.template.metadata.labels")?,
            pod_annotations: string_map(
                pod_meta.get("annotations"),
                "spec.template.metadata.annotations",
            )?,
            restart_policy: restart_policy.into(),
            args,
            ports,
            mounts,
            devices,
            volumes,
        })
    }

    /// Checks the arguments against `template`: a role first, no flag the
    /// host reserves.
    pub(super) fn check_args(&self, template: &AgentTemplate) -> Result<(), KubeError> {
        let path = "spec.template.spec.containers[0].args";
        match self.args.first() {
            Some(role) if template.roles.contains(role) => {}
            other => {
                return Err(refuse(format!(
                    "{path}: an agent's first argument is its role ({}), not {}",
                    template.roles.join(" or "),
                    other.map_or("nothing".to_owned(), |r| format!("{r:?}"))
                )));
            }
        }
        for arg in &self.args {
            let flag = arg.split_once('=').map_or(arg.as_str(), |(flag, _)| flag);
            if template.reserved_flags.iter().any(|r| r == flag) {
                return Err(refuse(format!(
                    "{path}: {flag} is the host's to set (the module, its limits and where it comes from)"
                )));
            }
        }
        Ok(())
    }

    /// Checks that the description's mounts stay clear of the host's (the
    /// scratch directory and [`AgentTemplate::mounts`]): none on, above
    /// or below one of them.
    pub(super) fn check_mounts(&self, template: &AgentTemplate) -> Result<(), KubeError> {
        let host = std::iter::once(template.scratch_dir.as_str())
            .chain(template.mounts.iter().map(|m| m.path.as_str()));
        let host: Vec<&str> = host.collect();
        for (i, mount) in self.mounts.iter().enumerate() {
            let Some(path) = mount["mountPath"].as_str() else {
                return Err(KubeError::Invalid(format!(
                    "spec.template.spec.containers[0].volumeMounts[{i}].mountPath is required"
                )));
            };
            if let Some(theirs) = host.iter().find(|h| nested(path, h)) {
                return Err(refuse(format!(
                    "spec.template.spec.containers[0].volumeMounts[{i}].mountPath {path}:                      the host mounts {theirs} there"
                )));
            }
        }
        Ok(())
    }

    /// The Secrets and PVCs the agent mounts, as (kind, name).
    pub(super) fn uses(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.volumes.iter().filter_map(|v| {
            if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
                Some(("PersistentVolumeClaim", claim))
            } else {
                v["secret"]["secretName"].as_str().map(|s| ("Secret", s))
            }
        })
    }
}

/// Whether one of two absolute paths is the other or lies under it.
fn nested(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_end_matches('/'), b.trim_end_matches('/'));
    let under = |long: &str, short: &str| {
        long.strip_prefix(short)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    under(a, b) || under(b, a)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::kube::{
        Cluster, InMemoryCluster, Named, OWNER_NAME_LABEL, Scope, ScopedCluster, test_owner,
    };

    fn template() -> AgentTemplate {
        AgentTemplate {
            args: vec!["--mover".into(), "blocksync".into()],
            reserved_flags: vec!["--mover".into()],
            mounts: vec![
                HostMount {
                    source: MountSource::secret("pull"),
                    path: "/var/run/wasmover/registry".into(),
                },
                HostMount {
                    source: MountSource::Claim {
                        name: "certs".into(),
                        read_only: true,
                    },
                    path: "/mnt/certs".into(),
                },
            ],
            ..AgentTemplate::new("agent@sha256:0", &["wasmover", "agent"])
        }
    }

    fn cluster(template: AgentTemplate) -> ScopedCluster {
        let store = Arc::new(InMemoryCluster::new());
        for (kind, name) in [
            ("PersistentVolumeClaim", "data"),
            ("PersistentVolumeClaim", "certs"),
            ("Secret", "pull"),
            ("Secret", "not-named"),
        ] {
            store
                .create(json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "ns"}}))
                .unwrap();
        }
        ScopedCluster::new(
            store,
            Scope {
                named: vec![Named::new("PersistentVolumeClaim", "data")],
                agents: Ok(template),
                ..Scope::new("ns", test_owner("ReplicationDestination", None))
            },
        )
    }

    /// A description as blocksync writes one, with `edit` applied.
    fn description(edit: impl FnOnce(&mut Value)) -> Value {
        let mut job = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "db-dst", "annotations": {"sync": "1"}},
            "spec": {
                "backoffLimit": 2,
                "template": {
                    "metadata": {"labels": {"wasmover.dev/agent": "db-dst"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{
                            "name": "agent",
                            "args": ["receive", "--volume", "/data"],
                            "ports": [{"containerPort": 8000}],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }],
                        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
                    },
                },
            },
        });
        edit(&mut job);
        job
    }

    fn refusal(cluster: &ScopedCluster, job: Value) -> String {
        match cluster.create(job) {
            Err(KubeError::Refused(r)) => format!("{} {}", r.rule, r.message),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_host_builds_a_restricted_pod_around_the_description() {
        let job = cluster(template()).create(description(|_| {})).unwrap();
        let pod = &job["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(container["image"], "agent@sha256:0");
        assert_eq!(container["command"], json!(["wasmover", "agent"]));
        assert_eq!(
            container["args"],
            json!(["receive", "--volume", "/data", "--mover", "blocksync"])
        );
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], AGENT_UID);
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(
            container["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        let mounts: Vec<&str> = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        assert_eq!(
            mounts,
            ["/data", "/tmp", "/var/run/wasmover/registry", "/mnt/certs"]
        );
        assert_eq!(container["volumeMounts"][2]["readOnly"], true);
        assert_eq!(
            pod["volumes"][3]["persistentVolumeClaim"],
            json!({"claimName": "certs", "readOnly": true})
        );
        // The Pods carry the owner labels: the mover reads them, its
        // Service selects them.
        let labels = &job["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels[OWNER_NAME_LABEL], "db");
        assert_eq!(labels["wasmover.dev/agent"], "db-dst");
        assert_eq!(job["metadata"]["annotations"]["sync"], "1");
        assert_eq!(job["spec"]["backoffLimit"], 2);
    }

    #[test]
    fn a_mover_volume_mounts_the_chosen_keys_and_must_exist() {
        let secret = |name: &str| HostMount {
            source: MountSource::Secret {
                name: name.into(),
                items: vec![SecretItem {
                    key: "ca.crt".into(),
                    path: "root.pem".into(),
                    mode: Some(0o400),
                }],
                default_mode: Some(0o440),
            },
            path: "/mnt/ca".into(),
        };
        let mut template = template();
        template.mounts.push(secret("not-named"));
        let job = cluster(template.clone())
            .create(description(|_| {}))
            .unwrap();
        let volume = &job["spec"]["template"]["spec"]["volumes"][4];
        assert_eq!(
            volume["secret"],
            json!({
                "secretName": "not-named",
                "items": [{"key": "ca.crt", "path": "root.pem", "mode": 0o400}],
                "defaultMode": 0o440,
            })
        );
        template.mounts[2] = secret("ca");
        assert_eq!(
            refusal(&cluster(template), description(|_| {})),
            "mover-volume the agent would mount Secret ca at /mnt/ca, which does not exist"
        );
    }

    #[test]
    fn paths_nest_only_at_a_separator() {
        assert!(nested("/mnt", "/mnt/certs"));
        assert!(nested("/mnt/certs/", "/mnt/certs"));
        assert!(nested("/tmp/x", "/tmp"));
        assert!(!nested("/mnt/certs2", "/mnt/certs"));
        assert!(!nested("/data", "/tmp"));
    }

    #[test]
    fn keeping_owners_runs_as_root_with_only_the_ownership_capabilities() {
        let template = AgentTemplate {
            privilege: Privilege::KeepOwners,
            ..template()
        };
        let job = cluster(template).create(description(|_| {})).unwrap();
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsUser"], 0);
        let capabilities = &pod["containers"][0]["securityContext"]["capabilities"];
        assert_eq!(capabilities["drop"], json!(["ALL"]));
        assert_eq!(
            capabilities["add"],
            json!(["CHOWN", "FOWNER", "DAC_OVERRIDE", "FSETID"])
        );
        assert!(pod["containers"][0]["securityContext"]["privileged"].is_null());
    }

    #[test]
    fn anything_beyond_a_description_is_refused_naming_the_field() {
        let cluster = cluster(template());
        let pod = "/spec/template/spec";
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|j| j.pointer_mut(pod).unwrap()["hostNetwork"] = true.into()),
                "spec.template.spec.hostNetwork",
            ),
            (
                Box::new(|j| j.pointer_mut(pod).unwrap()["serviceAccountName"] = "admin".into()),
                "spec.template.spec.serviceAccountName",
            ),
            (
                Box::new(|j| {
                    j.pointer_mut(pod).unwrap()["containers"][0]["securityContext"] =
                        json!({"privileged": true})
                }),
                "containers[0].securityContext",
            ),
            (
                Box::new(|j| {
                    j.pointer_mut(pod).unwrap()["containers"][0]["image"] = "busybox".into()
                }),
                "containers[0].image",
            ),
            (
                Box::new(|j| {
                    j.pointer_mut(pod).unwrap()["containers"][0]["command"] = json!(["sh"])
                }),
                "containers[0].command",
            ),
            (
                Box::new(|j| {
                    j.pointer_mut(pod).unwrap()["volumes"] =
                        json!([{"name": "root", "hostPath": {"path": "/"}}])
                }),
                "volumes[0].hostPath",
            ),
            (
                Box::new(|j| {
                    j.pointer_mut(pod).unwrap()["containers"][0]["args"] =
                        json!(["receive", "--mover=oci://evil/x:latest"])
                }),
                "--mover is the host's",
            ),
            (
                Box::new(|j| {
                    j.pointer_mut(pod).unwrap()["containers"][0]["args"] = json!(["operator"])
                }),
                "first argument is its role",
            ),
            (
                Box::new(|j| {
                    j.pointer_mut(pod).unwrap()["containers"][0]["volumeMounts"] =
                        json!([{"name": "wasmover-mount-0", "mountPath": "/x"}])
                }),
                "does not declare",
            ),
            (
                Box::new(|j| {
                    j.pointer_mut(pod).unwrap()["containers"][0]["volumeMounts"][0]["mountPath"] =
                        "/mnt".into()
                }),
                "the host mounts /mnt/certs there",
            ),
            (
                Box::new(|j| {
                    j.pointer_mut(pod).unwrap()["containers"][0]["volumeMounts"][0]["mountPath"] =
                        "/tmp/x".into()
                }),
                "the host mounts /tmp there",
            ),
            (
                Box::new(|j| j["spec"]["backoffLimit"] = 1000.into()),
                "spec.backoffLimit",
            ),
        ];
        for (edit, expected) in cases {
            let refused = refusal(&cluster, description(edit));
            assert!(refused.starts_with("agent-template "), "{refused}");
            assert!(refused.contains(expected), "{expected:?} not in {refused}");
        }
        let secret = description(|j| {
            j.pointer_mut(pod).unwrap()["volumes"] =
                json!([{"name": "data", "secret": {"secretName": "not-named"}}])
        });
        let refused = refusal(&cluster, secret);
        assert!(
            refused.starts_with("agent-volume Secret not-named"),
            "{refused}"
        );
    }
}
