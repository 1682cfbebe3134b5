//! stamped: blocksync with a mark in the data plane. It exists so that
//! tests can tell which module ran an agent: its control plane, its
//! parameters and its reports are blocksync's, and so is its data plane,
//! except that `receive`, once blocksync's receive succeeded, writes the
//! file `STAMPED` at the volume's root containing `stamped <version>\n`.

use blocksync::{Blocksync, BlocksyncMover};
use wasmover_sdk::control::{ModuleInfo, Mover};
use wasmover_sdk::types::{DestinationSpec, Error, Parameter, SourceSpec, TransferReport};
use wasmover_sdk::{control, error, transfer, validate};

/// The file `receive` writes at the volume's root.
const STAMP_FILE: &str = "STAMPED";
/// Its content.
const STAMP: &str = concat!("stamped ", env!("CARGO_PKG_VERSION"), "\n");

struct Stamped;

impl control::Guest for Stamped {
    type Mover = BlocksyncMover;

    fn from_source(spec: SourceSpec) -> Result<Option<Mover>, Error> {
        <Blocksync as control::Guest>::from_source(spec)
    }

    fn from_destination(spec: DestinationSpec) -> Result<Option<Mover>, Error> {
        <Blocksync as control::Guest>::from_destination(spec)
    }

    fn version_info() -> ModuleInfo {
        ModuleInfo {
            name: "stamped".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            contract: wasmover_sdk::CONTRACT_VERSION.into(),
        }
    }
}

impl transfer::Guest for Stamped {
    fn send(parameters: Vec<Parameter>) -> Result<TransferReport, Error> {
        <Blocksync as transfer::Guest>::send(parameters)
    }

    fn receive(parameters: Vec<Parameter>) -> Result<TransferReport, Error> {
        let report = <Blocksync as transfer::Guest>::receive(parameters)?;
        stamp()?;
        Ok(report)
    }
}

impl validate::Guest for Stamped {
    fn parameters(parameters: Vec<Parameter>) -> Result<(), Error> {
        <Blocksync as validate::Guest>::parameters(parameters)
    }
}

/// Writes [`STAMP`] into [`STAMP_FILE`] at the root of the volume, which
/// the host preopens for WASI (a directory volume only).
fn stamp() -> Result<(), Error> {
    use wasi::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
    let failed = |why: String| error("StampFailed", format!("writing {STAMP_FILE}: {why}"));
    let root = wasi::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, path)| path == "/volume")
        .map(|(dir, _)| dir)
        .ok_or_else(|| failed("no directory volume is preopened at /volume".into()))?;
    let file = root
        .open_at(
            PathFlags::empty(),
            STAMP_FILE,
            OpenFlags::CREATE | OpenFlags::TRUNCATE,
            DescriptorFlags::WRITE,
        )
        .map_err(|e| failed(e.to_string()))?;
    let written = file
        .write(STAMP.as_bytes(), 0)
        .map_err(|e| failed(e.to_string()))?;
    if written != STAMP.len() as u64 {
        return Err(failed(format!(
            "{written} of {} bytes written",
            STAMP.len()
        )));
    }
    Ok(())
}

wasmover_sdk::export_mover!(Stamped);
