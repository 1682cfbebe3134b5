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

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use crate::bindings::types;
use crate::state::HostState;

impl types::Host for HostState {}

/// A path of the contract (bytes) as the host's volume code names it.
fn os(path: Vec<u8>) -> OsString {
    OsString::from_vec(path)
}
