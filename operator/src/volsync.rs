//! VolSync's own custom resources, `volsync.backube/v1alpha1`
//! ReplicationSource and ReplicationDestination, as far as wasmover serves
//! them: VolSync hands a replication whose mover block is `spec.external`
//! to the controller its `provider` names, and wasmover is the one for
//! [`PROVIDER`]. Its `parameters` select the module and carry what the
//! `spec` of wasmover's own CRs holds ([`Mapped`]); the status keeps
//! VolSync's shape, with wasmover's extras in `status.external`.
//!
//! These types read only the fields wasmover needs and tolerate the rest;
//! VolSync's CRDs are VolSync's (wasmover neither generates nor installs
//! them).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::crd::{CopyMethod, Endpoint, ImageRef, MoverSpec, SyncStatus, Trigger};

/// The `spec.external.provider` wasmover serves.
pub const PROVIDER: &str = "wasmover.dev/mover";

/// The prefix of the parameters handed to the mover itself
/// (`mover.address` becomes the mover's parameter `address`).
pub const MOVER_PREFIX: &str = "mover.";

/// The parameters wasmover reads, besides the mover's own.
pub const PARAMETERS: &[&str] = &[
    "module",
    "modulePullSecret",
    "moverServiceAccount",
    "copyMethod",
    "capacity",
    "storageClassName",
    "accessModes",
    "volumeSnapshotClassName",
    "destinationPVC",
];

/// The parameters only a ReplicationDestination takes.
const DESTINATION_ONLY: &[&str] = &["capacity", "destinationPVC"];

/// Replicates a PVC, as VolSync's ReplicationSource.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "volsync.backube",
    version = "v1alpha1",
    kind = "ReplicationSource",
    namespaced,
    status = "VolSyncStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSourceSpec {
    /// The PVC to replicate.
    #[serde(rename = "sourcePVC", default)]
    pub source_pvc: String,
    /// When to run; without a trigger, continuously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// Stops synchronizing until cleared.
    #[serde(default)]
    pub paused: bool,
    /// The external provider's block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<External>,
}

/// Receives a replication, as VolSync's ReplicationDestination.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "volsync.backube",
    version = "v1alpha1",
    kind = "ReplicationDestination",
    namespaced,
    status = "VolSyncStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationDestinationSpec {
    /// When to run; without a trigger, continuously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// Stops synchronizing until cleared.
    #[serde(default)]
    pub paused: bool,
    /// The external provider's block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<External>,
}

/// `spec.external`, with wasmover's reading of its parameters (made once,
/// when the object is read).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(from = "RawExternal", into = "RawExternal")]
pub struct External {
    /// Which controller serves the object; wasmover serves [`PROVIDER`].
    pub provider: String,
    /// The parameters as written.
    pub parameters: BTreeMap<String, String>,
    /// What wasmover reads from them (the defaults if they are invalid).
    pub mapped: Mapped,
    /// Why the parameters are invalid, if they are.
    pub invalid: Option<ParameterError>,
}

/// `spec.external` as VolSync's CRD has it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
struct RawExternal {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    provider: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    parameters: BTreeMap<String, String>,
}

impl From<RawExternal> for External {
    fn from(raw: RawExternal) -> Self {
        let (mapped, invalid) = match Mapped::parse(&raw.parameters) {
            Ok(mapped) => (mapped, None),
            Err(e) => (Mapped::default(), Some(e)),
        };
        Self {
            provider: raw.provider,
            parameters: raw.parameters,
            mapped,
            invalid,
        }
    }
}

impl From<External> for RawExternal {
    fn from(external: External) -> Self {
        Self {
            provider: external.provider,
            parameters: external.parameters,
        }
    }
}

/// What the parameters say, in the terms of wasmover's own CRs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mapped {
    /// `module`, `modulePullSecret`, `moverServiceAccount` and the
    /// `mover.*` parameters.
    pub mover: MoverSpec,
    /// `copyMethod` (`None` is VolSync's old name of `Direct`).
    pub copy_method: CopyMethod,
    /// `capacity` (destination only).
    pub capacity: Option<String>,
    /// `storageClassName`.
    pub storage_class_name: Option<String>,
    /// `accessModes`, comma-separated.
    pub access_modes: Vec<String>,
    /// `volumeSnapshotClassName`.
    pub volume_snapshot_class_name: Option<String>,
    /// `destinationPVC` (destination only).
    pub destination_pvc: Option<String>,
}

/// Why `spec.external.parameters` cannot be served; the message names the
/// parameter and the rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParameterError {
    /// A key wasmover does not read.
    #[error(
        "spec.external.parameters: unknown parameter {key:?}; wasmover reads {known}, and {MOVER_PREFIX}<name> for the mover's own parameters",
        known = PARAMETERS.join(", ")
    )]
    Unknown {
        /// The key.
        key: String,
    },
    /// A value that does not parse.
    #[error("spec.external.parameters.{key}: {value:?} is not {expected}")]
    Malformed {
        /// The key.
        key: String,
        /// Its value.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// A destination's parameter on a source.
    #[error(
        "spec.external.parameters.{key}: a ReplicationSource takes no {key}; it is a ReplicationDestination parameter"
    )]
    DestinationOnly {
        /// The key.
        key: String,
    },
    /// A source without a PVC to replicate.
    #[error("spec.sourcePVC: empty; name the PersistentVolumeClaim to replicate")]
    NoSourcePvc,
}

/// The access modes a PVC may have.
const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

impl Mapped {
    /// Reads `parameters`; refuses an unknown key or a malformed value.
    pub fn parse(parameters: &BTreeMap<String, String>) -> Result<Self, ParameterError> {
        let mut mapped = Mapped::default();
        let malformed = |key: &str, value: &str, expected| ParameterError::Malformed {
            key: key.into(),
            value: value.into(),
            expected,
        };
        for (key, value) in parameters {
            if let Some(name) = key.strip_prefix(MOVER_PREFIX) {
                if name.is_empty() {
                    return Err(malformed(key, value, "a parameter: mover.<name>"));
                }
                mapped.mover.parameters.insert(name.into(), value.clone());
                continue;
            }
            match key.as_str() {
                "module" => mapped.mover.module = value.clone(),
                "modulePullSecret" => mapped.mover.module_pull_secret = Some(value.clone()),
                "moverServiceAccount" => mapped.mover.mover_service_account = Some(value.clone()),
                "copyMethod" => {
                    mapped.copy_method = match value.as_str() {
                        "Direct" | "None" => CopyMethod::Direct,
                        "Clone" => CopyMethod::Clone,
                        "Snapshot" => CopyMethod::Snapshot,
                        _ => return Err(malformed(key, value, "Direct, None, Clone or Snapshot")),
                    }
                }
                "capacity" => {
                    if !is_quantity(value) {
                        return Err(malformed(key, value, "a quantity such as 10Gi"));
                    }
                    mapped.capacity = Some(value.clone());
                }
                "storageClassName" => mapped.storage_class_name = Some(value.clone()),
                "volumeSnapshotClassName" => {
                    mapped.volume_snapshot_class_name = Some(value.clone())
                }
                "accessModes" => {
                    let modes: Vec<String> =
                        value.split(',').map(|m| m.trim().to_owned()).collect();
                    if !modes.iter().all(|m| ACCESS_MODES.contains(&m.as_str())) {
                        return Err(malformed(
                            key,
                            value,
                            "a comma-separated list of ReadWriteOnce, ReadOnlyMany, ReadWriteMany, ReadWriteOncePod",
                        ));
                    }
                    mapped.access_modes = modes;
                }
                "destinationPVC" => mapped.destination_pvc = Some(value.clone()),
                _ => return Err(ParameterError::Unknown { key: key.clone() }),
            }
        }
        Ok(mapped)
    }
}

/// Whether `s` is a Kubernetes quantity: a decimal number with an optional
/// binary (`Ki` … `Ei`), decimal (`n`, `u`, `m`, `k`, `M` … `E`) or
/// exponent (`e3`) suffix.
fn is_quantity(s: &str) -> bool {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits = unsigned
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(digits);
    let mut parts = number.split('.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next();
    if parts.next().is_some() || (whole.is_empty() && fraction.is_none_or(str::is_empty)) {
        return false;
    }
    const SUFFIXES: &[&str] = &[
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    ];
    SUFFIXES.contains(&suffix)
        || suffix.strip_prefix(['e', 'E']).is_some_and(|exponent| {
            let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            !exponent.is_empty() && exponent.chars().all(|c| c.is_ascii_digit())
        })
}

/// What an object without an external block maps to (it is never run).
static NOTHING: LazyLock<Mapped> = LazyLock::new(Mapped::default);

/// The parts both kinds share.
macro_rules! external_accessors {
    ($kind:ty) => {
        impl $kind {
            /// Whether wasmover serves this object: its `spec.external`
            /// names [`PROVIDER`].
            pub fn for_wasmover(&self) -> bool {
                self.spec
                    .external
                    .as_ref()
                    .is_some_and(|e| e.provider == PROVIDER)
            }

            /// What the parameters say (the defaults when they are invalid).
            pub fn mapped(&self) -> &Mapped {
                self.spec.external.as_ref().map_or(&NOTHING, |e| &e.mapped)
            }
        }
    };
}

external_accessors!(ReplicationSource);
external_accessors!(ReplicationDestination);

impl ReplicationSource {
    /// Why the spec cannot be served, if it cannot.
    pub fn parameter_error(&self) -> Option<ParameterError> {
        let external = self.spec.external.as_ref()?;
        if let Some(e) = &external.invalid {
            return Some(e.clone());
        }
        if let Some(key) = DESTINATION_ONLY
            .iter()
            .find(|key| external.parameters.contains_key(**key))
        {
            return Some(ParameterError::DestinationOnly { key: (*key).into() });
        }
        self.spec
            .source_pvc
            .is_empty()
            .then_some(ParameterError::NoSourcePvc)
    }
}

impl ReplicationDestination {
    /// Why the spec cannot be served, if it cannot.
    pub fn parameter_error(&self) -> Option<ParameterError> {
        self.spec.external.as_ref()?.invalid.clone()
    }

    /// The latest image recorded in the status.
    pub fn latest_image(&self) -> Option<ImageRef> {
        let image = self.status.as_ref()?.0.get("latestImage")?;
        serde_json::from_value(image.clone()).ok()
    }
}

/// The status of either kind, as an object: wasmover reads and writes the
/// fields below and leaves VolSync's others (`rsync`, `restic`, …) alone.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct VolSyncStatus(pub Map<String, Value>);

/// The fields of wasmover's status that VolSync's has, under the same
/// names; every other one goes to `status.external`.
const NATIVE: &[&str] = &[
    "lastSyncTime",
    "lastSyncStartTime",
    "lastSyncDuration",
    "nextSyncTime",
    "lastManualSync",
    "latestMoverStatus",
    "conditions",
];

impl VolSyncStatus {
    /// VolSync's status document of `sync`: VolSync's fields as they are;
    /// wasmover's others (`module`, `bytesTransferred`, `lastSyncDigest`,
    /// `resolvedModule`, …) flattened into `external`, VolSync's free-form
    /// map of strings, nested fields joined by dots
    /// (`resolvedModule.manifestDigest`); `image`, if any, as `latestImage`.
    pub fn document(sync: &SyncStatus, image: Option<&ImageRef>) -> Value {
        let Value::Object(fields) = serde_json::to_value(sync).expect("a status serializes") else {
            unreachable!("a status is an object")
        };
        let mut document = Map::new();
        let mut external = BTreeMap::new();
        for (key, value) in fields {
            if NATIVE.contains(&key.as_str()) {
                document.insert(key, value);
            } else {
                flatten(&key, value, &mut external);
            }
        }
        if !external.is_empty() {
            document.insert("external".into(), serde_json::json!(external));
        }
        if let Some(image) = image {
            document.insert("latestImage".into(), serde_json::json!(image));
        }
        Value::Object(document)
    }

    /// Adds a destination's endpoint to `document` as `external`'s
    /// `endpoint.address`, `endpoint.port` and `endpoint.keySecret`.
    pub fn put_endpoint(document: &mut Value, endpoint: &Endpoint) {
        let mut fields = BTreeMap::new();
        flatten("endpoint", serde_json::json!(endpoint), &mut fields);
        let external = document
            .as_object_mut()
            .expect("a status document is an object")
            .entry("external")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(external) = external {
            external.extend(fields.into_iter().map(|(k, v)| (k, Value::String(v))));
        }
    }

    /// wasmover's status from VolSync's: the inverse of [`document`]
    /// (`external`'s strings read back as the types the fields have; one
    /// that does not fit is left out, never fails the whole).
    ///
    /// [`document`]: Self::document
    pub fn sync(&self) -> SyncStatus {
        let mut fields = Map::new();
        for key in NATIVE {
            if let Some(value) = self.0.get(*key) {
                fields.insert((*key).into(), value.clone());
            }
        }
        // What VolSync's own fields hold must fit; anything else (written
        // by another controller) is dropped field by field.
        fields.retain(|key, value| fits(key, value.clone()));
        let mut nested: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
        let external = self.0.get("external").and_then(Value::as_object);
        for (key, value) in external.into_iter().flatten() {
            let Some(value) = value.as_str() else {
                continue;
            };
            match key.split_once('.') {
                Some((field, rest)) => {
                    nest(nested.entry(field).or_default(), rest, value);
                }
                None => {
                    if let Some(value) = typed_or_string(key, value) {
                        fields.insert(key.clone(), value);
                    }
                }
            }
        }
        for (field, object) in nested {
            let typed = Value::Object(object);
            if fits(field, typed.clone()) {
                fields.insert(field.into(), typed);
            } else if fits(field, strings(typed.clone())) {
                fields.insert(field.into(), strings(typed));
            }
        }
        serde_json::from_value(Value::Object(fields)).unwrap_or_default()
    }
}

/// `value` under `prefix` as strings: objects flattened with dots,
/// strings as they are, anything else as its JSON text.
fn flatten(prefix: &str, value: Value, into: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(fields) => {
            for (key, value) in fields {
                flatten(&format!("{prefix}.{key}"), value, into);
            }
        }
        Value::String(s) => {
            into.insert(prefix.into(), s);
        }
        Value::Null => {}
        other => {
            into.insert(prefix.into(), other.to_string());
        }
    }
}

/// Puts `value` at the dotted `path` in `object`, typed where it parses.
fn nest(object: &mut Map<String, Value>, path: &str, value: &str) {
    match path.split_once('.') {
        Some((head, rest)) => {
            let entry = object
                .entry(head)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(inner) = entry {
                nest(inner, rest, value);
            }
        }
        None => {
            let parsed = serde_json::from_str(value).unwrap_or(Value::String(value.into()));
            object.insert(path.into(), parsed);
        }
    }
}

/// `value` with every scalar as the string [`flatten`] wrote.
fn strings(value: Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| (key, strings(value)))
                .collect(),
        ),
        Value::String(s) => Value::String(s),
        other => Value::String(other.to_string()),
    }
}

/// The field `key` as its JSON value if that fits its type (a number, a
/// boolean), else as the string, else `None`.
fn typed_or_string(key: &str, value: &str) -> Option<Value> {
    let string = Value::String(value.into());
    match serde_json::from_str::<Value>(value) {
        Ok(typed) if fits(key, typed.clone()) => Some(typed),
        _ => fits(key, string.clone()).then_some(string),
    }
}

/// Whether a status holding only `key: value` deserializes.
fn fits(key: &str, value: Value) -> bool {
    let mut one = Map::new();
    one.insert(key.into(), value);
    serde_json::from_value::<SyncStatus>(Value::Object(one)).is_ok()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;
    use crate::crd::{CONDITION_SYNCHRONIZING, MoverStatus, ResolvedModule, condition, reason};

    fn source(spec: Value) -> ReplicationSource {
        serde_json::from_value(json!({
            "apiVersion": "volsync.backube/v1alpha1",
            "kind": "ReplicationSource",
            "metadata": {"name": "app", "namespace": "prod"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn the_parameters_map_to_the_fields_of_wasmovers_crs() {
        let src = source(json!({
            "sourcePVC": "data",
            "trigger": {"manual": "once"},
            "rsyncTLS": {"address": "ignored: another mover's block"},
            "external": {"provider": PROVIDER, "parameters": {
                "module": "blocksync",
                "copyMethod": "Snapshot",
                "volumeSnapshotClassName": "csi",
                "storageClassName": "fast",
                "accessModes": "ReadWriteOnce, ReadOnlyMany",
                "modulePullSecret": "registry",
                "mover.address": "db.backup.svc",
                "mover.key-secret": "db-key",
            }},
        }));
        assert!(src.for_wasmover());
        assert_eq!(src.parameter_error(), None);
        let mapped = src.mapped();
        assert_eq!(mapped.copy_method, CopyMethod::Snapshot);
        assert_eq!(mapped.volume_snapshot_class_name.as_deref(), Some("csi"));
        assert_eq!(mapped.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(mapped.access_modes, ["ReadWriteOnce", "ReadOnlyMany"]);
        let mover = &mapped.mover;
        assert_eq!(mover.module, "blocksync");
        assert_eq!(mover.module_pull_secret.as_deref(), Some("registry"));
        assert_eq!(
            mover.parameters,
            BTreeMap::from([
                ("address".into(), "db.backup.svc".into()),
                ("key-secret".into(), "db-key".into()),
            ])
        );
        assert_eq!(
            src.spec.trigger.as_ref().unwrap().manual.as_deref(),
            Some("once")
        );
    }

    #[test]
    fn other_providers_and_other_movers_are_not_served() {
        let other = source(json!({"sourcePVC": "d", "external": {"provider": "example.com/x"}}));
        assert!(!other.for_wasmover());
        let rsync = source(json!({"sourcePVC": "d", "rsyncTLS": {"address": "x"}}));
        assert!(!rsync.for_wasmover());
        // Their parameters are not wasmover's to judge.
        let other = source(json!({"sourcePVC": "d", "external": {
            "provider": "example.com/x", "parameters": {"anything": "goes"},
        }}));
        assert!(!other.for_wasmover());
    }

    #[test]
    fn unknown_and_malformed_parameters_are_refused_by_name() {
        let refused = |parameters: Value| {
            source(json!({"sourcePVC": "d", "external": {"provider": PROVIDER, "parameters": parameters}}))
                .parameter_error()
                .unwrap()
                .to_string()
        };
        let unknown = refused(json!({"copymethod": "Snapshot"}));
        assert!(unknown.starts_with(r#"spec.external.parameters: unknown parameter "copymethod"; wasmover reads module, "#), "{unknown}");
        assert!(
            unknown.ends_with("and mover.<name> for the mover's own parameters"),
            "{unknown}"
        );
        assert_eq!(
            refused(json!({"copyMethod": "Teleport"})),
            r#"spec.external.parameters.copyMethod: "Teleport" is not Direct, None, Clone or Snapshot"#
        );
        assert_eq!(
            refused(json!({"accessModes": "ReadWriteOnce,RWX"})),
            r#"spec.external.parameters.accessModes: "ReadWriteOnce,RWX" is not a comma-separated list of ReadWriteOnce, ReadOnlyMany, ReadWriteMany, ReadWriteOncePod"#
        );
        assert_eq!(
            refused(json!({"destinationPVC": "x"})),
            "spec.external.parameters.destinationPVC: a ReplicationSource takes no destinationPVC; it is a ReplicationDestination parameter"
        );
        assert!(refused(json!({"mover.": "x"})).contains("mover.<name>"));
        let no_pvc = source(json!({"external": {"provider": PROVIDER}}));
        assert_eq!(no_pvc.parameter_error(), Some(ParameterError::NoSourcePvc));
        let dst: ReplicationDestination = serde_json::from_value(json!({
            "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationDestination",
            "metadata": {"name": "db"},
            "spec": {"external": {"provider": PROVIDER, "parameters": {"capacity": "ten gigs"}}},
        }))
        .unwrap();
        assert_eq!(
            dst.parameter_error().unwrap().to_string(),
            r#"spec.external.parameters.capacity: "ten gigs" is not a quantity such as 10Gi"#
        );
    }

    #[test]
    fn quantities_are_kubernetes_quantities() {
        for good in [
            "10Gi", "1", "0.5Gi", "100M", "1e3", "1E+3", ".5", "5.", "+1Ki", "500m",
        ] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "Gi", "10GB", "1.2.3", "1e", "ten", "10 Gi", "."] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn the_status_has_volsyncs_shape_and_reads_back() {
        let mut sync = SyncStatus {
            last_sync_time: Some(Time("2025-01-02T03:04:05Z".parse().unwrap())),
            last_sync_duration: Some("12.5s".into()),
            last_manual_sync: Some("once".into()),
            latest_mover_status: Some(MoverStatus {
                result: "Successful".into(),
                logs: String::new(),
            }),
            module: Some("blocksync@sha256:ab".into()),
            bytes_transferred: Some(4096),
            last_sync_digest: Some("0123".into()),
            last_sync_verified: Some(true),
            resolved_module: Some(ResolvedModule {
                reference: "oci://r/m:v1".into(),
                manifest_digest: "sha256:1".into(),
                module_digest: "sha256:2".into(),
            }),
            ..SyncStatus::default()
        };
        sync.set_condition(condition(
            CONDITION_SYNCHRONIZING,
            "False",
            reason::WAITING_FOR_MANUAL,
            "done",
            Some(1),
        ));
        // Times travel in whole seconds, as metav1.Time.
        sync.conditions[0].last_transition_time = Time("2025-01-02T03:04:00Z".parse().unwrap());
        let image = ImageRef {
            api_group: None,
            kind: "PersistentVolumeClaim".into(),
            name: "db-dest".into(),
        };
        let document = VolSyncStatus::document(&sync, Some(&image));
        assert_eq!(document["lastSyncDuration"], "12.5s");
        assert_eq!(document["lastManualSync"], "once");
        assert_eq!(document["latestMoverStatus"]["result"], "Successful");
        assert_eq!(document["conditions"][0]["reason"], "WaitingForManual");
        assert_eq!(
            document["latestImage"],
            json!({"kind": "PersistentVolumeClaim", "name": "db-dest"})
        );
        // Everything else is a string in `external`, nothing at the top.
        assert_eq!(
            document["external"],
            json!({
                "module": "blocksync@sha256:ab",
                "bytesTransferred": "4096",
                "lastSyncDigest": "0123",
                "lastSyncVerified": "true",
                "resolvedModule.reference": "oci://r/m:v1",
                "resolvedModule.manifestDigest": "sha256:1",
                "resolvedModule.moduleDigest": "sha256:2",
            })
        );
        let keys: Vec<&String> = document.as_object().unwrap().keys().collect();
        for key in keys {
            assert!(
                NATIVE.contains(&key.as_str()) || key == "external" || key == "latestImage",
                "{key} is not a field of VolSync's status"
            );
        }
        // What the reconciler reads back is what it wrote.
        let status: VolSyncStatus = serde_json::from_value(document).unwrap();
        assert_eq!(status.sync(), sync);
    }

    #[test]
    fn a_destinations_endpoint_is_in_external() {
        let mut document = VolSyncStatus::document(&SyncStatus::default(), None);
        let endpoint = Endpoint {
            address: Some("10.0.0.7".into()),
            port: Some(8000),
            key_secret: Some("db-blocksync-key".into()),
        };
        VolSyncStatus::put_endpoint(&mut document, &endpoint);
        assert_eq!(
            document["external"],
            json!({
                "endpoint.address": "10.0.0.7",
                "endpoint.port": "8000",
                "endpoint.keySecret": "db-blocksync-key",
            })
        );
        assert_eq!(document.get("endpoint"), None);
    }

    #[test]
    fn a_status_another_controller_wrote_is_read_as_far_as_it_fits() {
        let status: VolSyncStatus = serde_json::from_value(json!({
            "lastManualSync": "x",
            "lastSyncTime": "not a time",
            "rsyncTLS": {"address": "a"},
            "external": {"module": "m", "bytesTransferred": "many", "module.x": "y", "other": "z"},
        }))
        .unwrap();
        let sync = status.sync();
        assert_eq!(sync.last_manual_sync.as_deref(), Some("x"));
        assert_eq!(sync.last_sync_time, None);
        assert_eq!(sync.module.as_deref(), Some("m"));
        assert_eq!(sync.bytes_transferred, None);
    }
}
