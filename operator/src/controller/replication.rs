//! What differs between ReplicationSource and ReplicationDestination, as
//! the reconciler sees them: their spec's mover section and trigger, how
//! a mover claims them, and the status document each writes.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use wasmover_host::bindings::types::{self as wit, DestinationSpec, Parameter, SourceSpec};
use wasmover_host::kube::Named;
use wasmover_host::{Catalog, CatalogError, Claimed, Grants, MoverLimits, MoverModule};

use crate::crd::{
    CopyMethod, Endpoint, ImageRef, MoverSpec, ReplicationDestination, ReplicationSource,
    SyncStatus, Trigger,
};
use crate::modules::Requester;
use crate::workload::named_secrets;

/// What differs between the two kinds.
pub trait Replication:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// `source` or `destination`.
    const ROLE: &'static str;
    /// Whether its status says where sources reach it (`endpoint` and the
    /// `EndpointReady` condition), read from the Service its mover marked.
    const REPORTS_ENDPOINT: bool = false;
    /// The mover section.
    fn mover(&self) -> &MoverSpec;
    /// When to run.
    fn trigger(&self) -> Option<&Trigger>;
    /// Whether synchronization is paused.
    fn paused(&self) -> bool;
    /// The common status, or its default.
    fn sync_status(&self) -> SyncStatus;
    /// Whether this operator serves the object; `false` (a VolSync object
    /// for another provider) leaves it untouched.
    fn served(&self) -> bool {
        true
    }
    /// Why the spec cannot run, naming the field and the rule it breaks.
    fn invalid(&self) -> Option<String> {
        None
    }
    /// Asks the catalog for the mover that claims this object.
    fn claim(
        &self,
        catalog: &Catalog,
        selected: Option<&str>,
        limits: MoverLimits,
        grants: &dyn Fn(&MoverModule) -> Grants,
    ) -> Result<Claimed, CatalogError>;
    /// This object as the module resolver sees it.
    fn requester(&self) -> Requester<'_> {
        Requester {
            namespace: self.meta().namespace.as_deref().unwrap_or_default(),
            name: self.meta().name.as_deref().unwrap_or_default(),
            mover: self.mover(),
        }
    }
    /// The whole status document to apply, with `image` as the latest image
    /// if there is a new one. Server-side apply drops what the operator's
    /// field manager no longer sends, so every write carries everything.
    fn status_document(&self, sync: &SyncStatus, image: Option<ImageRef>) -> serde_json::Value;
    /// Puts where sources reach this destination into `status`, the
    /// document [`status_document`](Self::status_document) made.
    fn put_endpoint(&self, status: &mut serde_json::Value, endpoint: &Endpoint) {
        status["endpoint"] = json!(endpoint);
    }
    /// The objects the spec names, which its mover may read and mount:
    /// its PVC and the Secrets its parameters name (`*-secret`).
    fn named(&self) -> Vec<Named>;
    /// Whether the operator gives this object's agents a metadata PVC
    /// (see [`metadata`](super::metadata)), and of which storage class
    /// (`Some(None)`: the cluster's default): a destination's, for what
    /// its receiving agent keeps between runs outside the volume.
    fn metadata_class(&self) -> Option<Option<String>> {
        None
    }
}

/// The mover section's parameters, as the contract passes them.
pub(super) fn parameters(spec: &MoverSpec) -> Vec<Parameter> {
    spec.parameters
        .iter()
        .map(|(key, value)| Parameter {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

/// A copy method as the contract passes it.
pub(super) fn copy_method(method: CopyMethod) -> wit::CopyMethod {
    match method {
        CopyMethod::Direct => wit::CopyMethod::Direct,
        CopyMethod::Clone => wit::CopyMethod::Clone,
        CopyMethod::Snapshot => wit::CopyMethod::Snapshot,
    }
}

/// The accessors both kinds share field for field.
macro_rules! spec_accessors {
    () => {
        fn mover(&self) -> &MoverSpec {
            &self.spec.mover
        }
        fn trigger(&self) -> Option<&Trigger> {
            self.spec.trigger.as_ref()
        }
        fn paused(&self) -> bool {
            self.spec.paused
        }
        fn sync_status(&self) -> SyncStatus {
            self.status.clone().unwrap_or_default().sync
        }
    };
}

impl Replication for ReplicationSource {
    const ROLE: &'static str = "source";

    spec_accessors!();
    fn claim(
        &self,
        catalog: &Catalog,
        selected: Option<&str>,
        limits: MoverLimits,
        grants: &dyn Fn(&MoverModule) -> Grants,
    ) -> Result<Claimed, CatalogError> {
        let spec = SourceSpec {
            namespace: self.namespace().unwrap_or_default(),
            name: self.name_any(),
            source_pvc: self.spec.source_pvc.clone(),
            copy_method: copy_method(self.spec.copy_method),
            storage_class_name: self.spec.storage_class_name.clone(),
            volume_snapshot_class_name: self.spec.volume_snapshot_class_name.clone(),
            access_modes: self.spec.access_modes.clone(),
            parameters: parameters(&self.spec.mover),
        };
        catalog.claim_source(&spec, selected, limits, grants)
    }
    fn named(&self) -> Vec<Named> {
        std::iter::once(Named::new(
            "PersistentVolumeClaim",
            self.spec.source_pvc.clone(),
        ))
        .chain(named_secrets(&self.spec.mover))
        .collect()
    }
    fn status_document(&self, sync: &SyncStatus, _image: Option<ImageRef>) -> serde_json::Value {
        json!(sync)
    }
}

impl Replication for ReplicationDestination {
    const ROLE: &'static str = "destination";
    const REPORTS_ENDPOINT: bool = true;

    spec_accessors!();
    fn claim(
        &self,
        catalog: &Catalog,
        selected: Option<&str>,
        limits: MoverLimits,
        grants: &dyn Fn(&MoverModule) -> Grants,
    ) -> Result<Claimed, CatalogError> {
        let spec = DestinationSpec {
            namespace: self.namespace().unwrap_or_default(),
            name: self.name_any(),
            destination_pvc: self.spec.destination_pvc.clone(),
            capacity: self.spec.capacity.clone(),
            copy_method: copy_method(self.spec.copy_method),
            storage_class_name: self.spec.storage_class_name.clone(),
            volume_snapshot_class_name: self.spec.volume_snapshot_class_name.clone(),
            access_modes: self.spec.access_modes.clone(),
            parameters: parameters(&self.spec.mover),
        };
        catalog.claim_destination(&spec, selected, limits, grants)
    }
    fn metadata_class(&self) -> Option<Option<String>> {
        Some(self.spec.storage_class_name.clone())
    }
    fn named(&self) -> Vec<Named> {
        let claim = self.spec.destination_pvc.clone();
        claim
            .map(|c| Named::new("PersistentVolumeClaim", c))
            .into_iter()
            .chain(named_secrets(&self.spec.mover))
            .collect()
    }
    fn status_document(&self, sync: &SyncStatus, image: Option<ImageRef>) -> serde_json::Value {
        let mut doc = json!(sync);
        let latest = image.or_else(|| self.status.as_ref().and_then(|s| s.latest_image.clone()));
        if let Some(image) = latest {
            doc["latestImage"] = json!(image);
        }
        doc
    }
}
