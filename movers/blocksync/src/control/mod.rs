//! The control plane: the Kubernetes objects around a transfer.
//!
//! Destination: a PVC (or `destinationPVC`), a Secret with the pre-shared
//! key, a Service, and an agent Job that receives. Source: the volume to
//! read (the PVC itself, a clone, or a PVC from a snapshot per
//! `copyMethod`) and an agent Job that sends. Every step first looks at what
//! exists, so `synchronize` and `cleanup` can be called any number of times.
//!
//! A PVC of `volumeMode: Block` is handed to its agent as a device and moved
//! as a block volume; the receiving agent keeps its undo journal on a small
//! PVC of its own (`journal-capacity`), which outlives a lost Pod so the
//! next agent can roll an interrupted patch back.
//!
//! Both agents verify the transfer with a tree digest. The receiver keeps
//! its file hashes in the destination PVC, so its digest reads only what
//! changed; the sender keeps its own between runs only on a PVC asked for
//! with `hashes-capacity`, and otherwise reads its whole volume every run.
//!
//! This file holds the [`Role`] a mover plays and the steps both roles
//! share; `destination.rs` and `source.rs` hold each role's steps,
//! `jobs.rs` the agent Job and its PVCs, `report.rs` reading back what the
//! agent reported, `objects.rs` reading and writing cluster objects, and
//! `params.rs` checking parameters.

mod destination;
mod jobs;
mod objects;
mod params;
mod report;
mod source;

use serde_json::Value;
use wasmover_sdk::Params;
use wasmover_sdk::types::{
    Completion, CopyMethod, DestinationSpec, Error, Image, Outcome, SourceSpec, TransferReport,
};

pub use params::{KNOWN_PARAMETERS, attributes, claims, compress_level, validate};

use objects::delete;

/// The agent's port behind the destination's Service.
const DEFAULT_PORT: u16 = 8873;
/// How long to wait between looks at a running Job.
const POLL_MS: u64 = 5_000;

/// A finished `synchronize` or `cleanup`.
fn completed(image: Option<Image>, transfer: Option<TransferReport>) -> Outcome {
    Outcome::Completed(Completion { image, transfer })
}

/// Whether a PVC is of `volumeMode: Block`.
fn is_block(pvc: &Value) -> bool {
    pvc["spec"]["volumeMode"] == "Block"
}

fn access_modes(modes: &[String]) -> Vec<String> {
    if modes.is_empty() {
        vec!["ReadWriteOnce".into()]
    } else {
        modes.to_vec()
    }
}

/// A mover bound to one ReplicationSource or ReplicationDestination.
pub enum Role {
    /// Sends a source volume.
    Source(SourceSpec),
    /// Receives into a destination volume.
    Destination(DestinationSpec),
}

impl Role {
    fn name(&self) -> &str {
        match self {
            Role::Source(s) => &s.name,
            Role::Destination(d) => &d.name,
        }
    }

    fn parameters(&self) -> Params {
        match self {
            Role::Source(s) => Params::from(s.parameters.clone()),
            Role::Destination(d) => Params::from(d.parameters.clone()),
        }
    }

    fn job_name(&self) -> String {
        match self {
            Role::Source(s) => format!("{}-blocksync-src", s.name),
            Role::Destination(d) => format!("{}-blocksync-dst", d.name),
        }
    }

    fn key_secret(&self) -> String {
        self.parameters()
            .get("key-secret")
            .map_or_else(|| format!("{}-blocksync-key", self.name()), str::to_owned)
    }

    /// Advances the synchronization one step.
    pub fn synchronize(&self) -> Result<Outcome, Error> {
        match self {
            Role::Destination(spec) => self.synchronize_destination(spec),
            Role::Source(spec) => self.synchronize_source(spec),
        }
    }

    /// Removes the Job and the source's temporary copies; keeps the
    /// destination's PVC, key, Service and journal, and the source's
    /// hashes, for the next synchronization (a journal left by a lost agent is what rolls its
    /// interrupted patch back).
    pub fn cleanup(&self) -> Result<Outcome, Error> {
        delete("batch/v1", "Job", &self.job_name())?;
        if let Role::Source(spec) = self {
            let name = format!("{}-src", spec.name);
            if spec.copy_method != CopyMethod::Direct {
                delete("v1", "PersistentVolumeClaim", &name)?;
            }
            if spec.copy_method == CopyMethod::Snapshot {
                delete("snapshot.storage.k8s.io/v1", "VolumeSnapshot", &name)?;
            }
        }
        Ok(completed(None, None))
    }
}

/// A `key=value` parameter, for tests.
#[cfg(test)]
fn param(key: &str, value: &str) -> wasmover_sdk::types::Parameter {
    wasmover_sdk::types::Parameter {
        key: key.into(),
        value: value.into(),
    }
}
