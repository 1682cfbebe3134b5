#![allow(missing_docs)]
//! Host bindings generated from the contract in `wit/`.
//!
//! This is the only `bindgen!` of the project. It binds the superset world
//! (`mover-validating`) so that every export is known; [`crate::module`]
//! resolves the exports one interface at a time, which is how optional
//! capabilities are detected.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "mover-validating",
    // Every import may trap: that is how budgets and limits stop a module.
    imports: { default: trappable },
});

pub use exports::wasmover::mover::{control, transfer, validate};
pub use wasmover::mover::{blocks, channel, clock, events, kube, log, progress, types, volume};
