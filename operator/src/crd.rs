//! The custom resources, `wasmover.dev/v1alpha1`: ReplicationSource and
//! ReplicationDestination, with VolSync's field names where VolSync has
//! them. `src/bin/crdgen.rs` prints them; `yaml/crds.yaml` is checked in.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, PersistentVolumeClaimVolumeSource, ResourceRequirements, SecretVolumeSource,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Finalizer that makes deletion call the mover's `cleanup`.
pub const FINALIZER: &str = "wasmover.dev/cleanup";

/// When a replication runs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// A cron schedule read as VolSync reads it: five fields (`*/5 * * * *`,
    /// day of week 0-6 with Sunday 0) or `@hourly`, `@daily`, `@weekly`,
    /// `@monthly`, `@yearly`, in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::schedule::CRD_PATTERN))]
    pub schedule: Option<String>,
    /// Runs once each time this string changes; `status.lastManualSync`
    /// records the value served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual: Option<String>,
}

/// How a volume is captured or an image produced, as VolSync's.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum CopyMethod {
    /// Use the volume as it is.
    #[default]
    Direct,
    /// Clone it first.
    Clone,
    /// Snapshot it first.
    Snapshot,
}

/// A Kubernetes kind a mover may touch.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct KindRef {
    /// `v1`, `batch/v1`, `snapshot.storage.k8s.io/v1`, ...
    pub api_version: String,
    /// `PersistentVolumeClaim`, `Job`, ...
    pub kind: String,
}

/// Limits of each call of the mover module.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MoverLimitsSpec {
    /// Guest CPU time per call, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_ms: Option<u64>,
    /// Linear memory, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// Which mover module runs the replication and how.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MoverSpec {
    /// A built-in mover name (`blocksync`) or an OCI reference
    /// (`oci://registry/repo@sha256:...`). A reference by tag alone is
    /// resolved once and its digest recorded in `status.resolvedModule`.
    /// Empty: the one built-in mover that claims the spec.
    #[serde(default)]
    pub module: String,
    /// A `kubernetes.io/dockerconfigjson` Secret in this namespace with
    /// credentials for the module's registry, as a Pod's imagePullSecrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_pull_secret: Option<String>,
    /// Parameters handed to the module's builder.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// Limits of each call of the module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<MoverLimitsSpec>,
    /// Kinds the module may touch; a subset of what the operator allows.
    /// Default: PVCs, VolumeSnapshots, Jobs, Services, Secrets, ConfigMaps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<KindRef>,
    /// CPU and memory of each agent container, as VolSync's
    /// `moverResources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover_resources: Option<ResourceRequirements>,
    /// The service account the agents' Pods run as, as VolSync's
    /// `moverServiceAccount`; its token is never mounted. Default: the
    /// namespace's `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover_service_account: Option<String>,
    /// Labels added to every agent Pod, as VolSync's `moverPodLabels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mover_pod_labels: BTreeMap<String, String>,
    /// Where agent Pods may be scheduled, as VolSync's `moverAffinity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover_affinity: Option<Affinity>,
    /// Whom agents run as, as VolSync's `moverSecurityContext` (the host
    /// sets the rest of the Pod's security context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover_security_context: Option<MoverSecurityContext>,
    /// PVCs and Secrets of this namespace mounted into every agent at
    /// `/mnt/<mountPath>`, as VolSync's `moverVolumes`: files a mover's
    /// parameters may name (a CA bundle, a repository on a PVC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["mountPath"]
    ))]
    pub mover_volumes: Vec<MoverVolume>,
    /// The `spec.type` of every Service the mover creates (see
    /// [`ServiceType`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<ServiceType>,
    /// Annotations added to every Service the mover creates, as VolSync's
    /// `serviceAnnotations` (a cloud's load-balancer settings, say). Keys
    /// under `wasmover.dev/` are the mover's own and refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(k, !k.startsWith('wasmover.dev/'))",
        "message": "keys under wasmover.dev/ are the mover's own (rule service-annotations)"
    }]))]
    pub service_annotations: BTreeMap<String, String>,
}

/// A PVC or Secret mounted into every agent, as VolSync's.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MoverVolume {
    /// The directory under `/mnt` it is mounted at: one path segment.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    )]
    pub mount_path: String,
    /// The PVC or Secret.
    pub volume_source: MoverVolumeSource,
}

/// What a [`MoverVolume`] mounts: exactly one of a PVC or a Secret.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.persistentVolumeClaim) != has(self.secret)",
        "message": "a mover volume mounts one source: persistentVolumeClaim or secret (rule mover-volume)"
    },
    {
        "rule": "!has(self.secret) || !has(self.secret.optional) || !self.secret.optional",
        "message": "a mover volume's Secret must exist: optional is not supported (rule mover-volume)"
    },
    {
        "rule": "!has(self.secret) || has(self.secret.secretName)",
        "message": "a mover volume's Secret needs its secretName (rule mover-volume)"
    }
]))]
pub struct MoverVolumeSource {
    /// A PVC of this namespace (read-only if `readOnly`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    /// A Secret of this namespace, always read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretVolumeSource>,
}

/// The `spec.type` of every Service a mover creates, as VolSync's
/// `serviceType`: `ClusterIP` (the default) for sources in the cluster,
/// `LoadBalancer` or `NodePort` for sources outside it.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ServiceType {
    /// A virtual IP inside the cluster.
    #[default]
    ClusterIP,
    /// A port on every node, besides the cluster IP.
    NodePort,
    /// An address the cluster's load balancer assigns, besides the node
    /// port and cluster IP.
    LoadBalancer,
}

impl ServiceType {
    /// The name, as a Service's `spec.type` has it.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The part of a Pod security context a CR chooses for its agents.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MoverSecurityContext {
    /// The user agents run as; 0 only in a namespace that allows
    /// privileged movers. Default: the image's user, 65532.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    /// Their primary group. Default: the user's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    /// The group that owns the volumes. Default: the primary group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_group: Option<i64>,
    /// Must not be `false` outside a namespace that allows privileged
    /// movers; agents are non-root by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
}

/// Replicates a PVC to a ReplicationDestination.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "wasmover.dev",
    version = "v1alpha1",
    kind = "ReplicationSource",
    namespaced,
    status = "ReplicationSourceStatus",
    shortname = "wrs",
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.sourcePVC"}"#,
    printcolumn = r#"{"name":"Last sync","type":"string","format":"date-time","jsonPath":".status.lastSyncTime"}"#,
    printcolumn = r#"{"name":"Next sync","type":"string","format":"date-time","jsonPath":".status.nextSyncTime"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSourceSpec {
    /// The PVC to replicate.
    #[serde(rename = "sourcePVC")]
    pub source_pvc: String,
    /// When to run; without a trigger, continuously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// Stops synchronizing until cleared.
    #[serde(default)]
    pub paused: bool,
    /// How the source is captured before it is read.
    #[serde(default)]
    pub copy_method: CopyMethod,
    /// StorageClass of a clone or restored snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// VolumeSnapshotClass for `copyMethod: Snapshot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
    /// Access modes of a clone or restored snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// The mover module.
    #[serde(default)]
    pub mover: MoverSpec,
}

/// Receives a replication into a PVC and, per `copyMethod`, a snapshot.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "wasmover.dev",
    version = "v1alpha1",
    kind = "ReplicationDestination",
    namespaced,
    status = "ReplicationDestinationStatus",
    shortname = "wrd",
    printcolumn = r#"{"name":"Last sync","type":"string","format":"date-time","jsonPath":".status.lastSyncTime"}"#,
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".status.latestImage.name"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationDestinationSpec {
    /// When to run; without a trigger, continuously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// Stops synchronizing until cleared.
    #[serde(default)]
    pub paused: bool,
    /// Receive into this existing PVC instead of provisioning one.
    #[serde(
        rename = "destinationPVC",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub destination_pvc: Option<String>,
    /// Size of the PVC to provision (`10Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
    /// `Snapshot` makes the image a VolumeSnapshot; otherwise the PVC.
    #[serde(default)]
    pub copy_method: CopyMethod,
    /// StorageClass of the PVC to provision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// VolumeSnapshotClass for `copyMethod: Snapshot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
    /// Access modes of the PVC to provision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// The mover module.
    #[serde(default)]
    pub mover: MoverSpec,
}

/// The outcome of the latest mover run.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MoverStatus {
    /// `Successful` or `Failed`.
    pub result: String,
    /// What the run said, as VolSync's mover Pod's log lines: the lines
    /// of its last agent that ended that summarize it (its result line,
    /// warnings, errors; the last 1024 bytes), after the error of a
    /// failed run.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub logs: String,
}

/// A reference to the image a synchronization produced.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageRef {
    /// `snapshot.storage.k8s.io` for a VolumeSnapshot; empty for a PVC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// `PersistentVolumeClaim` or `VolumeSnapshot`.
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// What both kinds report.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// When the last synchronization completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// When the current or last synchronization started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_start_time: Option<Time>,
    /// How long the last synchronization took (`12.5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_duration: Option<String>,
    /// When the next scheduled synchronization starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sync_time: Option<Time>,
    /// The manual trigger value last served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_manual_sync: Option<String>,
    /// The latest mover run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_mover_status: Option<MoverStatus>,
    /// The module that ran: name and digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// What that module says of itself (`version-info`): its version, the
    /// contract it was built against and its optional exports, e.g.
    /// `0.1.0, contract 0.2.0, validate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_version: Option<String>,
    /// While a synchronization runs, bytes of the files it rebuilds done
    /// so far, as its agents report them (read from their logs every 10 s
    /// at most); once it completed, the bytes its transfer moved on the
    /// wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_transferred: Option<u64>,
    /// While a synchronization runs, bytes of the files it rebuilds (known
    /// once the trees are compared); once it completed, bytes of the
    /// replicated volume's files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// Files whose content the current or last transfer rebuilt so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_transferred: Option<u64>,
    /// Files the current or last transfer set out to rebuild (the changed
    /// ones, from comparing the source's scan with the destination; the
    /// rest were current already).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_to_transfer: Option<u64>,
    /// The destination's tree digest after the last synchronization's
    /// transfer (BLAKE3 over every path, kind, mode, mtime, link target and
    /// file content; 64 hex digits), as the mover reported it; absent when
    /// the mover reported none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_digest: Option<String>,
    /// Whether that digest equals the source's: the destination was
    /// verified end to end. A mover fails a synchronization whose digests
    /// differ, so `false` means that it did not verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_verified: Option<bool>,
    /// The OCI module `spec.mover.module` resolved to, with its digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_module: Option<ResolvedModule>,
    /// `Synchronizing`, with VolSync's reasons, and `ModuleResolved`; a
    /// destination's `EndpointReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl SyncStatus {
    /// Sets `new` in place of the condition of its type, keeping the
    /// transition time if only the message (or generation) changed;
    /// returns whether the status or reason changed (worth an Event).
    pub fn set_condition(&mut self, new: Condition) -> bool {
        match self.conditions.iter_mut().find(|c| c.type_ == new.type_) {
            Some(old) if old.reason == new.reason && old.status == new.status => {
                old.message = new.message;
                old.observed_generation = new.observed_generation;
                false
            }
            Some(old) => {
                *old = new;
                true
            }
            None => {
                self.conditions.push(new);
                true
            }
        }
    }

    /// The reason of the condition of `type_`, if there is one.
    pub fn reason(&self, type_: &str) -> Option<&str> {
        self.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.reason.as_str())
    }

    /// Whether a synchronization is running: `Synchronizing` is `True`,
    /// whatever its reason (`SyncInProgress`, `CleaningUp`, or what holds
    /// it up, such as `ImagePullBackOff`).
    pub fn synchronizing(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| c.type_ == CONDITION_SYNCHRONIZING && c.status == "True")
    }
}

/// A condition of `type_` whose transition is now.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

/// What an OCI module reference resolved to. A tag is resolved once: while
/// `spec.mover.module` stays the same, this digest is used.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedModule {
    /// `spec.mover.module` as it was resolved.
    pub reference: String,
    /// The manifest digest (`sha256:...`): the reference pinned is
    /// `oci://host/repo@<manifestDigest>`.
    pub manifest_digest: String,
    /// The digest of the module's bytes.
    pub module_digest: String,
}

/// Status of a ReplicationSource.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSourceStatus {
    /// Progress and outcome.
    #[serde(flatten)]
    pub sync: SyncStatus,
}

/// Status of a ReplicationDestination.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationDestinationStatus {
    /// Progress and outcome.
    #[serde(flatten)]
    pub sync: SyncStatus,
    /// The image of the last completed synchronization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_image: Option<ImageRef>,
    /// Where sources reach this destination, as VolSync's
    /// `status.rsyncTLS`; see the `EndpointReady` condition for what is
    /// still missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
}

/// Where sources reach a destination: read from the Service its mover
/// marked with [`KEY_SECRET_ANNOTATION`].
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The address sources connect to (the source parameter `address`):
    /// the cluster IP of a `ClusterIP` Service, the ingress IP or hostname
    /// of a `LoadBalancer` once assigned; absent until then, and for a
    /// `NodePort` (use a node's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The port at that address (the source parameter `port`); a
    /// `NodePort`'s node port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// The Secret in this namespace holding the key sources need: copy it
    /// to the source's namespace (the source parameter `key-secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<String>,
}

/// The annotation by which a mover marks the Service sources reach, naming
/// the Secret that holds their key: what `status.endpoint` reports.
pub const KEY_SECRET_ANNOTATION: &str = "wasmover.dev/key-secret";

/// Both CRDs as one multi-document YAML, as `yaml/crds.yaml` holds them.
pub fn yaml() -> String {
    use kube::CustomResourceExt;
    [ReplicationSource::crd(), ReplicationDestination::crd()]
        .iter()
        .map(|crd| serde_yaml::to_string(crd).expect("a CRD serializes"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Condition type reporting synchronization, as VolSync's.
pub const CONDITION_SYNCHRONIZING: &str = "Synchronizing";

/// Condition type reporting where the OCI module came from, or why it
/// could not be had.
pub const CONDITION_MODULE_RESOLVED: &str = "ModuleResolved";

/// Condition type of a destination reporting whether `status.endpoint`
/// holds an address sources can use.
pub const CONDITION_ENDPOINT_READY: &str = "EndpointReady";

/// Reasons of the `EndpointReady` condition.
pub mod endpoint_reason {
    /// `status.endpoint` has the address, port and key Secret.
    pub const READY: &str = "EndpointReady";
    /// A `LoadBalancer` Service has no ingress address yet.
    pub const WAITING_FOR_LOAD_BALANCER: &str = "WaitingForLoadBalancer";
    /// A `NodePort` Service: the port is known, the node address is the
    /// user's to pick.
    pub const NODE_ADDRESS_NEEDED: &str = "NodeAddressNeeded";
    /// A `ClusterIP` Service has no cluster IP yet.
    pub const ADDRESS_PENDING: &str = "AddressPending";
    /// The Service was made before a change of `serviceType` or
    /// `serviceAnnotations`, and deleted for the mover to make it anew.
    pub const REPLACED: &str = "ServiceReplaced";
}

/// Reasons of the `Synchronizing` condition, as VolSync's.
pub mod reason {
    /// A synchronization is running.
    pub const SYNC_IN_PROGRESS: &str = "SyncInProgress";
    /// Waiting for the next scheduled time.
    pub const WAITING_FOR_SCHEDULE: &str = "WaitingForSchedule";
    /// Waiting for the manual trigger to change.
    pub const WAITING_FOR_MANUAL: &str = "WaitingForManual";
    /// Cleaning up after a synchronization.
    pub const CLEANING_UP: &str = "CleaningUp";
    /// Something failed; the message says what.
    pub const ERROR: &str = "Error";
    /// The admin's policy refuses the object's module or limits; nothing runs.
    pub const POLICY_REFUSED: &str = "PolicyRefused";
}

/// Reasons of the `ModuleResolved` condition.
pub mod module_reason {
    /// The reference names a manifest digest.
    pub const PINNED: &str = "Pinned";
    /// A tag was resolved to a digest once; the reference is not pinned.
    pub const UNPINNED: &str = "Unpinned";
    /// The reference is malformed, or OCI modules are not enabled.
    pub const INVALID: &str = "InvalidReference";
    /// The registry refused the credentials, or the pull Secret is unusable.
    pub const UNAUTHORIZED: &str = "Unauthorized";
    /// The registry could not be reached, or the transfer failed.
    pub const REGISTRY_UNAVAILABLE: &str = "RegistryUnavailable";
    /// Content did not match the digest that names it; refused.
    pub const DIGEST_MISMATCH: &str = "DigestMismatch";
    /// Not found, not a wasm artifact, too large, or not a mover.
    pub const UNUSABLE: &str = "ModuleUnusable";
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn volsync_field_names_and_defaults() {
        let src: ReplicationSourceSpec = serde_json::from_value(serde_json::json!({
            "sourcePVC": "data",
            "trigger": {"schedule": "*/5 * * * *"},
            "mover": {"module": "blocksync", "parameters": {"address": "10.0.0.1"}}
        }))
        .unwrap();
        assert_eq!(src.source_pvc, "data");
        assert_eq!(src.copy_method, CopyMethod::Direct);
        assert!(!src.paused);
        let dst: ReplicationDestinationSpec = serde_json::from_value(
            serde_json::json!({"destinationPVC": "restore", "copyMethod": "Snapshot"}),
        )
        .unwrap();
        assert_eq!(dst.destination_pvc.as_deref(), Some("restore"));
        assert_eq!(dst.copy_method, CopyMethod::Snapshot);
        let bad = serde_json::from_value::<ReplicationDestinationSpec>(
            serde_json::json!({"copyMethod": "Teleport"}),
        );
        assert!(bad.is_err());
    }

    #[test]
    fn service_type_is_volsyncs_enum_and_defaults_to_unset() {
        let mover: MoverSpec = serde_json::from_value(serde_json::json!({
            "serviceType": "LoadBalancer",
            "serviceAnnotations": {"lb.example/internal": "true"}
        }))
        .unwrap();
        assert_eq!(mover.service_type, Some(ServiceType::LoadBalancer));
        assert_eq!(mover.service_annotations["lb.example/internal"], "true");
        assert_eq!(MoverSpec::default().service_type, None);
        assert!(
            serde_json::from_value::<MoverSpec>(serde_json::json!({"serviceType": "ExternalName"}))
                .is_err()
        );
        let crd = serde_json::to_value(ReplicationDestination::crd()).unwrap();
        let mover = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["mover"]["properties"];
        assert_eq!(
            mover["serviceType"]["enum"],
            serde_json::json!(["ClusterIP", "NodePort", "LoadBalancer"])
        );
        assert!(
            mover["serviceAnnotations"]["x-kubernetes-validations"][0]["rule"]
                .as_str()
                .unwrap()
                .contains("wasmover.dev/")
        );
    }

    #[test]
    fn checked_in_yaml_matches_the_types() {
        let checked_in = include_str!("../yaml/crds.yaml");
        assert!(
            checked_in == yaml(),
            "yaml/crds.yaml is stale: regenerate it with `cargo run --bin crdgen > operator/yaml/crds.yaml`"
        );
    }

    #[test]
    fn crds_are_namespaced_wasmover_dev_v1alpha1() {
        for crd in [ReplicationSource::crd(), ReplicationDestination::crd()] {
            assert_eq!(crd.spec.group, "wasmover.dev");
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(crd.spec.versions[0].name, "v1alpha1");
            assert!(
                crd.spec.versions[0]
                    .subresources
                    .as_ref()
                    .unwrap()
                    .status
                    .is_some()
            );
        }
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_the_reason_holds() {
        let mut sync = SyncStatus::default();
        let synchronizing =
            |status, why, message| condition(CONDITION_SYNCHRONIZING, status, why, message, None);
        assert!(sync.set_condition(synchronizing("True", reason::SYNC_IN_PROGRESS, "a")));
        let first = sync.conditions[0].last_transition_time.clone();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(!sync.set_condition(synchronizing("True", reason::SYNC_IN_PROGRESS, "b")));
        assert_eq!(sync.conditions[0].last_transition_time, first);
        assert_eq!(sync.conditions[0].message, "b");
        assert!(sync.set_condition(synchronizing("False", reason::ERROR, "c")));
        assert_eq!(sync.conditions.len(), 1);
    }

    #[test]
    fn the_module_condition_keeps_its_transition_time_while_the_reason_holds() {
        let mut sync = SyncStatus::default();
        let resolved =
            |status, why, message| condition(CONDITION_MODULE_RESOLVED, status, why, message, None);
        sync.set_condition(resolved("False", module_reason::REGISTRY_UNAVAILABLE, "a"));
        let first = sync.conditions[0].last_transition_time.clone();
        std::thread::sleep(std::time::Duration::from_millis(5));
        sync.set_condition(resolved("False", module_reason::REGISTRY_UNAVAILABLE, "b"));
        assert_eq!(sync.conditions[0].last_transition_time, first);
        assert_eq!(sync.conditions[0].message, "b");
        sync.set_condition(resolved("True", module_reason::PINNED, "c"));
        assert_eq!(sync.conditions.len(), 1);
        assert_ne!(sync.conditions[0].last_transition_time, first);
    }
}
