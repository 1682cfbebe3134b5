//! Host implementations of the contract's imports, one file per interface.
//!
//! Every function goes through [`HostState::host_call`], which counts it
//! against the module's budget and keeps its time out of the guest's CPU
//! time. Failures the guest can handle come back as the interface's error
//! type; only exhausted limits trap.

mod blocks;
mod channel;
mod kube;
mod observe;
mod v0_2;
mod volume;

use wasmover_contract::escape_path;

use crate::bindings::types;
use crate::state::HostState;
use crate::volume::VolumeError;

impl types::Host for HostState {}

/// A path of the contract (bytes) as the host's volume code takes it,
/// which still names entries in UTF-8 only.
fn utf8(path: Vec<u8>) -> Result<String, VolumeError> {
    String::from_utf8(path).map_err(|e| {
        VolumeError::InvalidPath(format!(
            "{}: the host cannot yet address a name that is not UTF-8",
            escape_path(e.as_bytes())
        ))
    })
}
