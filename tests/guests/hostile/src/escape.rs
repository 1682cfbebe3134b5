//! Cluster escapes: each tries, through the `kube` import, something the
//! host must refuse. A refused call ends in `Escape<kube-error variant>`
//! (`EscapeForbidden` when the host itself refused) with the host's
//! message; a call that got through ends in `EscapeSucceeded`, saying what
//! happened, so a test tells "refused" from "escaped".

use std::hint::black_box;

use wasmover_sdk::error;
use wasmover_sdk::kube::{self, KubeError, ObjectKey};
use wasmover_sdk::types::{Error, Outcome};

/// A ConfigMap in a namespace other than the replication's.
const OTHER_NAMESPACE: &str = r#"{"apiVersion":"v1","kind":"ConfigMap",
"metadata":{"name":"hostile-other-namespace","namespace":"kube-system"},
"data":{"escaped":"true"}}"#;

/// A Job description whose container is privileged.
const PRIVILEGED_POD: &str = r#"{"apiVersion":"batch/v1","kind":"Job",
"metadata":{"name":"hostile-privileged-pod"},
"spec":{"backoffLimit":0,"template":{"spec":{
"containers":[{"args":["receive"],"securityContext":{"privileged":true}}]}}}}"#;

/// A Job description that mounts the node's root directory.
const HOST_PATH: &str = r#"{"apiVersion":"batch/v1","kind":"Job",
"metadata":{"name":"hostile-host-path"},
"spec":{"backoffLimit":0,"template":{"spec":{
"containers":[{"args":["receive"],"volumeMounts":[{"name":"root","mountPath":"/host"}]}],
"volumes":[{"name":"root","hostPath":{"path":"/"}}]}}}}"#;

/// A Job description whose Pod shares the node's network.
const HOST_NETWORK: &str = r#"{"apiVersion":"batch/v1","kind":"Job",
"metadata":{"name":"hostile-host-network"},
"spec":{"backoffLimit":0,"template":{"spec":{"hostNetwork":true,
"containers":[{"args":["receive"]}]}}}}"#;

/// A Job description that runs an image and command of its own choosing.
const FOREIGN_IMAGE: &str = r#"{"apiVersion":"batch/v1","kind":"Job",
"metadata":{"name":"hostile-foreign-image"},
"spec":{"backoffLimit":0,"template":{"spec":{
"containers":[{"image":"busybox","command":["sh","-c","id"],"args":["receive"]}]}}}}"#;

/// The Secret `read-secret` reads; the test creates it, the CR does not name it.
const FOREIGN_SECRET: &str = "user-credentials";

/// The ConfigMap `api-flood` reads over and over.
const FLOODED_CONFIG_MAP: &str = "hostile-flood";

/// The escape of `mode`, or `None` when `mode` is not an escape.
/// `victim` is the PVC `delete-pvc` deletes.
pub fn attempt(mode: &str, victim: Option<&str>) -> Option<Result<Outcome, Error>> {
    let refused = match mode {
        "other-namespace" => create(OTHER_NAMESPACE, "ConfigMap in kube-system"),
        "privileged-pod" => create(PRIVILEGED_POD, "privileged Job"),
        "host-path" => create(HOST_PATH, "Job mounting hostPath /"),
        "host-network" => create(HOST_NETWORK, "Job on the host network"),
        "foreign-image" => create(FOREIGN_IMAGE, "Job running busybox"),
        "read-secret" => read_secret(),
        "list-secrets" => list_secrets(),
        "delete-pvc" => delete_pvc(victim),
        "api-flood" => flood(),
        _ => return None,
    };
    Some(Err(refused))
}

/// The error a refused call returns: its kind and the host's message.
fn refused(e: KubeError) -> Error {
    let (kind, message) = match e {
        KubeError::Forbidden(m) => ("Forbidden", m),
        KubeError::NotFound(m) => ("NotFound", m),
        KubeError::Conflict(m) => ("Conflict", m),
        KubeError::Invalid(m) => ("Invalid", m),
        KubeError::Unavailable(m) => ("Unavailable", m),
        KubeError::Other(m) => ("Other", m),
    };
    error(&format!("Escape{kind}"), message)
}

/// The error of an escape that got through.
fn escaped(what: String) -> Error {
    error("EscapeSucceeded", what)
}

fn key(api_version: &str, kind: &str, name: &str) -> ObjectKey {
    ObjectKey {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
    }
}

fn create(object: &str, what: &str) -> Error {
    match kube::create(object) {
        Ok(stored) => escaped(format!("created a {what}: {stored}")),
        Err(e) => refused(e),
    }
}

/// Reads a Secret the replication does not name. Its content stays out of
/// the message: that goes to a status.
fn read_secret() -> Error {
    match kube::get(&key("v1", "Secret", FOREIGN_SECRET)) {
        Ok(Some(secret)) => escaped(format!(
            "read Secret {FOREIGN_SECRET} ({} bytes)",
            secret.len()
        )),
        Ok(None) => escaped(format!(
            "the read of Secret {FOREIGN_SECRET} was allowed; it does not exist"
        )),
        Err(e) => refused(e),
    }
}

fn list_secrets() -> Error {
    match kube::list_objects("v1", "Secret", None) {
        Ok(secrets) => escaped(format!("listed {} Secrets", secrets.len())),
        Err(e) => refused(e),
    }
}

/// Deletes the PVC the replication reads from.
fn delete_pvc(victim: Option<&str>) -> Error {
    let Some(victim) = victim else {
        return error(
            "InvalidParameter",
            "hostile mode delete-pvc needs parameter victim (the PVC to delete)",
        );
    };
    match kube::delete(&key("v1", "PersistentVolumeClaim", victim)) {
        Ok(true) => escaped(format!("deleted PersistentVolumeClaim {victim}")),
        Ok(false) => escaped(format!(
            "the delete of PersistentVolumeClaim {victim} was allowed; it did not exist"
        )),
        Err(e) => refused(e),
    }
}

/// Calls the API server until the host stops the module, whatever it answers.
fn flood() -> ! {
    let key = key("v1", "ConfigMap", FLOODED_CONFIG_MAP);
    loop {
        let _ = black_box(kube::get(&key));
    }
}
