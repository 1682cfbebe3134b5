#![allow(missing_docs)]
//! Bindings of the previous contract, `wasmover:mover@0.2.0`
//! (`wit/v0.2/mover.wit`), frozen as it was released. The host links its
//! imports as adapters over the current contract's (`crate::host::v0_2`)
//! and converts its exports' records ([`crate::instance`]), so a mover
//! built for 0.2 runs unchanged.

wasmtime::component::bindgen!({
    path: "../../wit/v0.2",
    world: "mover-validating",
    imports: { default: trappable },
});

pub use exports::wasmover::mover::{control, transfer, validate};
pub use wasmover::mover::{blocks, channel, clock, events, kube, log, progress, types, volume};

use super::types as current;

/// The records a 0.2 module's exports take, from the current ones: the
/// specs and parameters carry nothing 0.2 lacks.
impl From<&current::SourceSpec> for types::SourceSpec {
    fn from(s: &current::SourceSpec) -> Self {
        Self {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            source_pvc: s.source_pvc.clone(),
            copy_method: s.copy_method.into(),
            storage_class_name: s.storage_class_name.clone(),
            volume_snapshot_class_name: s.volume_snapshot_class_name.clone(),
            access_modes: s.access_modes.clone(),
            parameters: parameters(&s.parameters),
        }
    }
}

impl From<&current::DestinationSpec> for types::DestinationSpec {
    fn from(s: &current::DestinationSpec) -> Self {
        Self {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            destination_pvc: s.destination_pvc.clone(),
            capacity: s.capacity.clone(),
            copy_method: s.copy_method.into(),
            storage_class_name: s.storage_class_name.clone(),
            volume_snapshot_class_name: s.volume_snapshot_class_name.clone(),
            access_modes: s.access_modes.clone(),
            parameters: parameters(&s.parameters),
        }
    }
}

impl From<current::CopyMethod> for types::CopyMethod {
    fn from(m: current::CopyMethod) -> Self {
        match m {
            current::CopyMethod::Direct => Self::Direct,
            current::CopyMethod::Clone => Self::Clone,
            current::CopyMethod::Snapshot => Self::Snapshot,
        }
    }
}

/// Parameters as a 0.2 module takes them.
pub fn parameters(parameters: &[current::Parameter]) -> Vec<types::Parameter> {
    let parameter = |p: &current::Parameter| types::Parameter {
        key: p.key.clone(),
        value: p.value.clone(),
    };
    parameters.iter().map(parameter).collect()
}

/// What a 0.2 module's exports return, as the current records: a report
/// lacks the counts 0.2 did not keep, which read as zero.
impl From<types::Outcome> for current::Outcome {
    fn from(o: types::Outcome) -> Self {
        match o {
            types::Outcome::Completed(c) => Self::Completed(current::Completion {
                image: c.image.map(Into::into),
                transfer: c.transfer.map(Into::into),
            }),
            types::Outcome::InProgress(after) => Self::InProgress(after),
        }
    }
}

impl From<types::Image> for current::Image {
    fn from(i: types::Image) -> Self {
        Self {
            kind: match i.kind {
                types::ImageKind::PersistentVolumeClaim => {
                    current::ImageKind::PersistentVolumeClaim
                }
                types::ImageKind::VolumeSnapshot => current::ImageKind::VolumeSnapshot,
            },
            name: i.name,
        }
    }
}

impl From<types::TransferReport> for current::TransferReport {
    fn from(r: types::TransferReport) -> Self {
        Self {
            entries_total: r.entries_total,
            files_transferred: r.files_transferred,
            entries_deleted: r.entries_deleted,
            bytes_total: r.bytes_total,
            bytes_matched: r.bytes_matched,
            bytes_literal: r.bytes_literal,
            bytes_literal_wire: 0,
            entries_skipped: 0,
            bytes_on_wire: r.bytes_on_wire,
            tree_digest: r.tree_digest,
            verified: r.verified,
        }
    }
}

impl From<types::Error> for current::Error {
    fn from(e: types::Error) -> Self {
        Self {
            reason: e.reason,
            message: e.message,
        }
    }
}

impl From<control::ModuleInfo> for super::control::ModuleInfo {
    fn from(i: control::ModuleInfo) -> Self {
        Self {
            name: i.name,
            version: i.version,
            contract: i.contract,
        }
    }
}
