#![allow(missing_docs)]
//! Host bindings generated from the contract in `wit/`.
//!
//! These are the bindings of the contract this host serves,
//! `wasmover:mover@0.3.0`; [`v0_2`] binds the previous one, whose imports
//! are adapters over these (`crate::host::v0_2`). Each binds the superset
//! world (`mover-validating`) so that every export is known;
//! [`crate::module`] resolves the exports one interface at a time, which
//! is how optional capabilities are detected.

pub mod v0_2;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "mover-validating",
    // Every import may trap: that is how budgets and limits stop a module.
    imports: { default: trappable },
});

pub use exports::wasmover::mover::{control, transfer, validate};
pub use wasmover::mover::{blocks, channel, clock, events, kube, log, progress, types, volume};

/// The report as an agent hands it on (`wasmover_contract::AgentReport`),
/// its `module` empty: the record does not say which module made it, the
/// agent that ran it fills it in.
impl From<&types::TransferReport> for wasmover_contract::AgentReport {
    fn from(r: &types::TransferReport) -> Self {
        Self {
            entries_total: r.entries_total,
            files_transferred: r.files_transferred,
            entries_deleted: r.entries_deleted,
            bytes_total: r.bytes_total,
            bytes_matched: r.bytes_matched,
            bytes_literal: r.bytes_literal,
            bytes_literal_wire: r.bytes_literal_wire,
            entries_skipped: r.entries_skipped,
            bytes_on_wire: r.bytes_on_wire,
            tree_digest: r.tree_digest.clone(),
            verified: r.verified,
            module: String::new(),
        }
    }
}
