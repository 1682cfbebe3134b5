//! The runtime's [`Cluster`] on a real API server, through kube-rs.
//!
//! Modules call host functions synchronously; the operator runs them on
//! blocking threads (`spawn_blocking`), where this bridges into the async
//! client with [`Handle::block_on`]: a slow API call holds one blocking
//! thread, never the reconcilers of other objects.

use std::collections::BTreeMap;

use kube::Client;
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::discovery::ApiResource;
use serde_json::Value;
use tokio::runtime::Handle;
use wasmover_host::kube::{Cluster, KubeError, ObjectKey};

/// A [`Cluster`] backed by a kube-rs client.
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    handle: Handle,
}

impl KubeCluster {
    /// Uses `client`; calls block on `handle`'s runtime.
    pub fn new(client: Client, handle: Handle) -> Self {
        Self { client, handle }
    }

    fn api(&self, api_version: &str, kind: &str, namespace: &str) -> Api<DynamicObject> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        Api::namespaced_with(self.client.clone(), namespace, &resource)
    }
}

/// API server errors as the guest sees them: typed, never a trap. A 404
/// that names no object means the API server does not serve the kind at
/// all (its CRD is missing): the message says so, naming the kind, instead
/// of the server's "could not find the requested resource".
fn typed(e: kube::Error, api_version: &str, kind: &str) -> KubeError {
    match e {
        kube::Error::Api(status) => {
            let message = status.message.clone();
            let names_object = status
                .details
                .as_ref()
                .is_some_and(|details| !details.name.is_empty());
            match status.code {
                403 => KubeError::Forbidden(message),
                404 if !names_object => KubeError::NotFound(unserved(api_version, kind)),
                404 => KubeError::NotFound(message),
                409 => KubeError::Conflict(message),
                400 | 422 => KubeError::Invalid(message),
                429 | 500..=599 => KubeError::Unavailable(message),
                _ => KubeError::Other(message),
            }
        }
        e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => {
            KubeError::Unavailable(e.to_string())
        }
        e => KubeError::Other(e.to_string()),
    }
}

/// The error of a kind the API server does not serve.
fn unserved(api_version: &str, kind: &str) -> String {
    let hint = if api_version.starts_with("snapshot.storage.k8s.io/")
        || api_version.starts_with("groupsnapshot.storage.k8s.io/")
    {
        ": install the snapshot CRDs and snapshot-controller of kubernetes-csi/external-snapshotter"
    } else {
        ": is its CustomResourceDefinition installed?"
    };
    format!("the API server does not serve {kind} ({api_version}){hint}")
}

fn to_value(object: DynamicObject) -> Value {
    serde_json::to_value(object).expect("an object serializes")
}

impl Cluster for KubeCluster {
    fn get(&self, key: &ObjectKey) -> Result<Option<Value>, KubeError> {
        let api = self.api(&key.api_version, &key.kind, &key.namespace);
        self.handle
            .block_on(api.get_opt(&key.name))
            .map(|o| o.map(to_value))
            .map_err(|e| typed(e, &key.api_version, &key.kind))
    }

    fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        selector: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, KubeError> {
        let api = self.api(api_version, kind, namespace);
        let selector = selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let params = ListParams::default().labels(&selector);
        self.handle
            .block_on(api.list(&params))
            .map(|list| list.items.into_iter().map(to_value).collect())
            .map_err(|e| typed(e, api_version, kind))
    }

    fn create(&self, object: Value) -> Result<Value, KubeError> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let object: DynamicObject =
            serde_json::from_value(object).map_err(|e| KubeError::Invalid(e.to_string()))?;
        let api = self.api(&api_version, &kind, &namespace);
        self.handle
            .block_on(api.create(&PostParams::default(), &object))
            .map(to_value)
            .map_err(|e| typed(e, &api_version, &kind))
    }

    fn patch(&self, key: &ObjectKey, merge_patch: Value) -> Result<Value, KubeError> {
        let api = self.api(&key.api_version, &key.kind, &key.namespace);
        self.handle
            .block_on(api.patch(
                &key.name,
                &PatchParams::default(),
                &Patch::Merge(merge_patch),
            ))
            .map(to_value)
            .map_err(|e| typed(e, &key.api_version, &key.kind))
    }

    fn delete(&self, key: &ObjectKey) -> Result<bool, KubeError> {
        let api = self.api(&key.api_version, &key.kind, &key.namespace);
        match self
            .handle
            .block_on(api.delete(&key.name, &DeleteParams::background()))
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(e) => Err(typed(e, &key.api_version, &key.kind)),
        }
    }
}
