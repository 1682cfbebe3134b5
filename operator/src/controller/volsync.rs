//! VolSync's ReplicationSource and ReplicationDestination as the
//! reconciler sees them: served when `spec.external.provider` names
//! wasmover, their mover section and volume options read from
//! `spec.external.parameters`, and VolSync's status document.

use kube::ResourceExt;
use wasmover_host::bindings::types::{DestinationSpec, SourceSpec};
use wasmover_host::kube::Named;
use wasmover_host::{Catalog, CatalogError, Claimed, Grants, MoverLimits, MoverModule};

use super::Replication;
use super::replication::{copy_method, parameters};
use crate::crd::{Endpoint, ImageRef, MoverSpec, SyncStatus, Trigger};
use crate::volsync::{ReplicationDestination, ReplicationSource, VolSyncStatus};
use crate::workload::named_secrets;

/// The accessors both kinds share field for field.
macro_rules! external_accessors {
    () => {
        fn mover(&self) -> &MoverSpec {
            &self.mapped().mover
        }
        fn trigger(&self) -> Option<&Trigger> {
            self.spec.trigger.as_ref()
        }
        fn paused(&self) -> bool {
            self.spec.paused
        }
        fn sync_status(&self) -> SyncStatus {
            self.status
                .as_ref()
                .map(VolSyncStatus::sync)
                .unwrap_or_default()
        }
        fn served(&self) -> bool {
            self.for_wasmover()
        }
        fn invalid(&self) -> Option<String> {
            self.parameter_error().map(|e| e.to_string())
        }
    };
}

impl Replication for ReplicationSource {
    const ROLE: &'static str = "source";

    external_accessors!();
    fn claim(
        &self,
        catalog: &Catalog,
        selected: Option<&str>,
        limits: MoverLimits,
        grants: &dyn Fn(&MoverModule) -> Grants,
    ) -> Result<Claimed, CatalogError> {
        let mapped = self.mapped();
        let spec = SourceSpec {
            namespace: self.namespace().unwrap_or_default(),
            name: self.name_any(),
            source_pvc: self.spec.source_pvc.clone(),
            copy_method: copy_method(mapped.copy_method),
            storage_class_name: mapped.storage_class_name.clone(),
            volume_snapshot_class_name: mapped.volume_snapshot_class_name.clone(),
            access_modes: mapped.access_modes.clone(),
            parameters: parameters(&mapped.mover),
        };
        catalog.claim_source(&spec, selected, limits, grants)
    }
    fn named(&self) -> Vec<Named> {
        std::iter::once(Named::new(
            "PersistentVolumeClaim",
            self.spec.source_pvc.clone(),
        ))
        .chain(named_secrets(&self.mapped().mover))
        .collect()
    }
    fn status_document(&self, sync: &SyncStatus, _image: Option<ImageRef>) -> serde_json::Value {
        VolSyncStatus::document(sync, None)
    }
}

impl Replication for ReplicationDestination {
    const ROLE: &'static str = "destination";
    const REPORTS_ENDPOINT: bool = true;

    external_accessors!();
    fn claim(
        &self,
        catalog: &Catalog,
        selected: Option<&str>,
        limits: MoverLimits,
        grants: &dyn Fn(&MoverModule) -> Grants,
    ) -> Result<Claimed, CatalogError> {
        let mapped = self.mapped();
        let spec = DestinationSpec {
            namespace: self.namespace().unwrap_or_default(),
            name: self.name_any(),
            destination_pvc: mapped.destination_pvc.clone(),
            capacity: mapped.capacity.clone(),
            copy_method: copy_method(mapped.copy_method),
            storage_class_name: mapped.storage_class_name.clone(),
            volume_snapshot_class_name: mapped.volume_snapshot_class_name.clone(),
            access_modes: mapped.access_modes.clone(),
            parameters: parameters(&mapped.mover),
        };
        catalog.claim_destination(&spec, selected, limits, grants)
    }
    fn metadata_class(&self) -> Option<Option<String>> {
        Some(self.mapped().storage_class_name.clone())
    }
    fn named(&self) -> Vec<Named> {
        let mapped = self.mapped();
        mapped
            .destination_pvc
            .clone()
            .map(|c| Named::new("PersistentVolumeClaim", c))
            .into_iter()
            .chain(named_secrets(&mapped.mover))
            .collect()
    }
    fn status_document(&self, sync: &SyncStatus, image: Option<ImageRef>) -> serde_json::Value {
        let latest = image.or_else(|| self.latest_image());
        VolSyncStatus::document(sync, latest.as_ref())
    }
    fn put_endpoint(&self, status: &mut serde_json::Value, endpoint: &Endpoint) {
        VolSyncStatus::put_endpoint(status, endpoint);
    }
}
