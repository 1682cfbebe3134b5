//! blocksync: an rsync-style block mover for wasmover.
//!
//! The data plane replicates a directory tree (regular files, directories,
//! symlinks, permissions, modification times, deletion of extraneous
//! entries). Files whose size or modification time differ are rebuilt with
//! the host's native signature → delta → patch, so a re-run moves only the
//! changed blocks; every file is rebuilt beside the old one and renamed into
//! place, so an interrupted run leaves each file old or new.
//!
//! The control plane creates the Kubernetes objects around the agents (see
//! [`control`]).
//!
//! With the default feature `component` the crate exports [`Blocksync`] as
//! the component; without it, another guest may wrap it: its
//! `wasmover_sdk` trait impls are the whole mover, and a wrapper's
//! `control::Guest` must name [`BlocksyncMover`] as its `Mover` to hand on
//! the movers blocksync makes.

pub mod control;
pub mod plan;
pub mod protocol;
pub mod transfer;

use wasmover_sdk::control::{GuestMover, ModuleInfo, Mover as MoverHandle};
use wasmover_sdk::types::{DestinationSpec, Error, Outcome, Parameter, SourceSpec, TransferReport};

use crate::control::Role;

/// The mover: its control plane, data plane and validation, as the
/// `wasmover_sdk` guest traits.
pub struct Blocksync;

/// A mover resource: the role it plays for one replication object.
pub struct BlocksyncMover {
    role: Role,
}

impl GuestMover for BlocksyncMover {
    fn name(&self) -> String {
        "blocksync".into()
    }

    fn synchronize(&self) -> Result<Outcome, Error> {
        self.role.synchronize()
    }

    fn cleanup(&self) -> Result<Outcome, Error> {
        self.role.cleanup()
    }
}

impl wasmover_sdk::control::Guest for Blocksync {
    type Mover = BlocksyncMover;

    fn from_source(spec: SourceSpec) -> Result<Option<MoverHandle>, Error> {
        if !control::claims(&spec.parameters) {
            return Ok(None);
        }
        control::validate(spec.parameters.clone())?;
        Ok(Some(MoverHandle::new(BlocksyncMover {
            role: Role::Source(spec),
        })))
    }

    fn from_destination(spec: DestinationSpec) -> Result<Option<MoverHandle>, Error> {
        if !control::claims(&spec.parameters) {
            return Ok(None);
        }
        control::validate(spec.parameters.clone())?;
        Ok(Some(MoverHandle::new(BlocksyncMover {
            role: Role::Destination(spec),
        })))
    }

    fn version_info() -> ModuleInfo {
        ModuleInfo {
            name: "blocksync".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            contract: wasmover_sdk::CONTRACT_VERSION.into(),
        }
    }
}

impl wasmover_sdk::transfer::Guest for Blocksync {
    fn send(parameters: Vec<Parameter>) -> Result<TransferReport, Error> {
        transfer::tell_peer(
            transfer::Options::from_parameters(parameters).and_then(|o| transfer::send(&o)),
        )
    }

    fn receive(parameters: Vec<Parameter>) -> Result<TransferReport, Error> {
        transfer::tell_peer(
            transfer::Options::from_parameters(parameters).and_then(|o| transfer::receive(&o)),
        )
    }
}

impl wasmover_sdk::validate::Guest for Blocksync {
    fn parameters(parameters: Vec<Parameter>) -> Result<(), Error> {
        control::validate(parameters)
    }
}

#[cfg(feature = "component")]
wasmover_sdk::export_mover!(Blocksync);
