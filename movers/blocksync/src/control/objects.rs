//! Reading and writing cluster objects through the host's `kube` import:
//! get, list by labels, create-if-missing and delete by key, with the host's errors made
//! the contract's.

use serde_json::Value;
use wasmover_sdk::kube::{self, KubeError, ObjectKey};
use wasmover_sdk::types::Error;
use wasmover_sdk::{error, log};

/// The contract's error for a failed API call while `what`.
pub(super) fn kube_error(what: &str, e: KubeError) -> Error {
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

/// The key of object `name` of `kind`.
pub(super) fn key(api_version: &str, kind: &str, name: &str) -> ObjectKey {
    ObjectKey {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
    }
}

/// The object, or `None` when it does not exist.
pub(super) fn get(api_version: &str, kind: &str, name: &str) -> Result<Option<Value>, Error> {
    let what = format!("reading {kind} {name}");
    kube::get(&key(api_version, kind, name))
        .map_err(|e| kube_error(&what, e))?
        .map(|text| {
            serde_json::from_str(&text)
                .map_err(|e| error("ApiError", format!("{what}: invalid JSON: {e}")))
        })
        .transpose()
}

/// The objects of `kind` whose labels match `selector` (`k=v[,k=v]`).
pub(super) fn list(api_version: &str, kind: &str, selector: &str) -> Result<Vec<Value>, Error> {
    let what = format!("listing {kind} {selector}");
    kube::list_objects(api_version, kind, Some(selector))
        .map_err(|e| kube_error(&what, e))?
        .iter()
        .map(|text| {
            serde_json::from_str(text)
                .map_err(|e| error("ApiError", format!("{what}: invalid JSON: {e}")))
        })
        .collect()
}

/// Returns the object, creating it from `object` if it does not exist.
pub(super) fn ensure(object: Value) -> Result<Value, Error> {
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

/// Deletes the object; one that does not exist is not an error.
pub(super) fn delete(api_version: &str, kind: &str, name: &str) -> Result<(), Error> {
    kube::delete(&key(api_version, kind, name))
        .map(|_| ())
        .map_err(|e| kube_error(&format!("deleting {kind} {name}"), e))
}
