//! Guest SDK for wasmover movers.
//!
//! A mover is a component of the `wasmover:mover` world (see `wit/`). This
//! crate owns the one `wit_bindgen::generate!` of the guests, so that a
//! mover is mostly its own logic:
//!
//! ```ignore
//! struct MyMover;
//! impl wasmover_sdk::control::Guest for MyMover { /* ... */ }
//! impl wasmover_sdk::transfer::Guest for MyMover { /* ... */ }
//! wasmover_sdk::export_mover!(MyMover);
//! ```
//!
//! With the `validate` feature the world also exports the optional
//! `validate` capability.

#![deny(missing_docs)]

/// Bindings generated from the contract.
#[allow(missing_docs)]
pub mod bindings {
    #[cfg(not(feature = "validate"))]
    wit_bindgen::generate!({
        path: "../../wit",
        world: "mover",
        pub_export_macro: true,
        export_macro_name: "export_mover",
        default_bindings_module: "wasmover_sdk::bindings",
        generate_all,
    });
    #[cfg(feature = "validate")]
    wit_bindgen::generate!({
        path: "../../wit",
        world: "mover-validating",
        pub_export_macro: true,
        export_macro_name: "export_mover",
        default_bindings_module: "wasmover_sdk::bindings",
        generate_all,
    });
}

pub mod params;
#[cfg(wasmover_pthread_stubs)]
mod pthread_stubs;
pub mod wire;

pub use bindings::export_mover;
#[cfg(feature = "validate")]
pub use bindings::exports::wasmover::mover::validate;
pub use bindings::exports::wasmover::mover::{control, transfer};
pub use bindings::wasmover::mover::{
    blocks, channel, clock, events, kube, log as host_log, progress, types, volume,
};
pub use params::Params;
pub use wasmover_contract::{AgentReport, VERSION as CONTRACT_VERSION, escape_path};

/// The annotation by which a destination's mover marks the Service its
/// sources reach, naming the Secret with their key: the operator reports
/// that Service's address and port and the Secret as the destination's
/// `status.endpoint` (docs/movers.md, "Where sources reach a destination").
pub const KEY_SECRET_ANNOTATION: &str = "wasmover.dev/key-secret";

/// A mover's clean failure, as the contract's `error` record.
pub fn error(reason: &str, message: impl Into<String>) -> types::Error {
    types::Error {
        reason: reason.to_owned(),
        message: message.into(),
    }
}

/// Logging into the host's log, attributed to this module.
pub mod log {
    use super::host_log::{Level, log};

    /// Logs at debug level.
    pub fn debug(message: impl AsRef<str>) {
        log(Level::Debug, message.as_ref());
    }
    /// Logs at info level.
    pub fn info(message: impl AsRef<str>) {
        log(Level::Info, message.as_ref());
    }
    /// Logs at warn level.
    pub fn warn(message: impl AsRef<str>) {
        log(Level::Warn, message.as_ref());
    }
}
