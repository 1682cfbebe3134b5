//! contract02: a mover built against contract 0.2 (`wit/v0.2/mover.wit`),
//! as a module compiled before 0.3 existed is. Its data plane replicates a
//! directory tree with the 0.2 imports (scan, the native block calls,
//! metadata, the digest), simply: one file at a time, no pipelining. Its
//! builder declines every spec. Tests run it next to blocksync to show
//! that the host still serves 0.2 through its adapters.

#![allow(missing_docs)]

wit_bindgen::generate!({
    path: "../../../wit/v0.2",
    world: "mover",
    generate_all,
});

use exports::wasmover::mover::control::{self, ModuleInfo, Mover};
use exports::wasmover::mover::transfer;
use wasmover::mover::types::{
    DestinationSpec, Error, Outcome, Parameter, SourceSpec, TransferReport,
};
use wasmover::mover::volume::{self, Entry, EntryKind};
use wasmover::mover::{blocks, channel};

struct Contract02;

/// Never built: the builder declines every spec.
struct Declined;

impl control::GuestMover for Declined {
    fn name(&self) -> String {
        "contract02".into()
    }
    fn synchronize(&self) -> Result<Outcome, Error> {
        Err(failure("NotBuilt", "contract02 builds no movers"))
    }
    fn cleanup(&self) -> Result<Outcome, Error> {
        Err(failure("NotBuilt", "contract02 builds no movers"))
    }
}

impl control::Guest for Contract02 {
    type Mover = Declined;

    fn from_source(_: SourceSpec) -> Result<Option<Mover>, Error> {
        Ok(None)
    }
    fn from_destination(_: DestinationSpec) -> Result<Option<Mover>, Error> {
        Ok(None)
    }
    fn version_info() -> ModuleInfo {
        ModuleInfo {
            name: "contract02".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            contract: "0.2.0".into(),
        }
    }
}

fn failure(reason: &str, message: impl Into<String>) -> Error {
    Error {
        reason: reason.into(),
        message: message.into(),
    }
}

fn volume_error(e: volume::VolumeError) -> Error {
    match e {
        volume::VolumeError::InvalidPath(m) => failure("InvalidPath", m),
        volume::VolumeError::Io(m) => failure("VolumeError", m),
        e => failure("VolumeError", format!("{e:?}")),
    }
}

fn block_error(e: blocks::BlockError) -> Error {
    failure("BlockError", format!("{e:?}"))
}

/// A closed channel is the peer's failure, not this side's: `PeerGone`
/// lets the host report the peer's own error.
fn channel_error(e: channel::ChannelError) -> Error {
    match e {
        channel::ChannelError::Closed => failure("PeerGone", "the peer closed the channel"),
        e => failure("ChannelError", format!("{e:?}")),
    }
}

/// An entry on the wire: kind, mode, mtime, path and link target.
fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let kind: u8 = match e.kind {
            EntryKind::File => 0,
            EntryKind::Directory => 1,
            EntryKind::Symlink => 2,
            EntryKind::Block => 3,
        };
        out.push(kind);
        out.extend_from_slice(&e.mode.to_le_bytes());
        out.extend_from_slice(&e.mtime_ns.to_le_bytes());
        for text in [&e.path, &e.link_target] {
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
    out
}

/// An entry as [`encode`] sent it.
struct Sent {
    kind: u8,
    mode: u32,
    mtime: i64,
    path: String,
    target: String,
}

/// The entries [`encode`] wrote.
fn decode(mut bytes: &[u8]) -> Result<Vec<Sent>, Error> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], Error> {
        if bytes.len() < n {
            return Err(failure("ProtocolError", "truncated entry list"));
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head)
    }
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let kind = take(&mut bytes, 1)?[0];
        let mode = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().unwrap());
        let mtime = i64::from_le_bytes(take(&mut bytes, 8)?.try_into().unwrap());
        let mut text = || -> Result<String, Error> {
            let len = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().unwrap());
            let raw = take(&mut bytes, len as usize)?;
            String::from_utf8(raw.to_vec()).map_err(|_| failure("ProtocolError", "not UTF-8"))
        };
        let (path, target) = (text()?, text()?);
        entries.push(Sent {
            kind,
            mode,
            mtime,
            path,
            target,
        });
    }
    Ok(entries)
}

fn report(entries: u64, files: u64, digest: String, verified: bool) -> TransferReport {
    TransferReport {
        entries_total: entries,
        files_transferred: files,
        entries_deleted: 0,
        bytes_total: 0,
        bytes_matched: 0,
        bytes_literal: 0,
        bytes_on_wire: 0,
        tree_digest: digest,
        verified,
    }
}

impl transfer::Guest for Contract02 {
    fn send(_: Vec<Parameter>) -> Result<TransferReport, Error> {
        let entries = volume::scan().map_err(volume_error)?;
        channel::send(&encode(&entries)).map_err(channel_error)?;
        let files = entries.iter().filter(|e| e.kind == EntryKind::File);
        let mut sent = 0;
        for file in files {
            blocks::send_delta(&file.path).map_err(block_error)?;
            sent += 1;
        }
        let digest = volume::digest().map_err(volume_error)?;
        channel::send(digest.root.as_bytes()).map_err(channel_error)?;
        let verdict = channel::receive().map_err(channel_error)?;
        let verified = verdict == b"verified";
        if !verified {
            return Err(failure(
                "VerificationFailed",
                "the receiver's digest differs",
            ));
        }
        Ok(report(entries.len() as u64, sent, digest.root, verified))
    }

    fn receive(_: Vec<Parameter>) -> Result<TransferReport, Error> {
        let local = volume::scan().map_err(volume_error)?;
        let source = decode(&channel::receive().map_err(channel_error)?)?;
        // What the source lacks goes, deepest first.
        for extra in local.iter().rev() {
            if !source.iter().any(|s| s.path == extra.path) {
                volume::remove(&extra.path).map_err(volume_error)?;
            }
        }
        let mut files = 0;
        for Sent {
            kind,
            mode,
            mtime,
            path,
            target,
        } in &source
        {
            match kind {
                0 => {
                    blocks::send_signature(path, None).map_err(block_error)?;
                    blocks::receive_patch(path, *mode, *mtime).map_err(block_error)?;
                    files += 1;
                }
                1 => volume::create_dir(path).map_err(volume_error)?,
                2 => volume::symlink(target, path).map_err(volume_error)?,
                _ => return Err(failure("Unsupported", "contract02 copies trees only")),
            }
        }
        for entry in source.iter().rev().filter(|e| e.kind == 1 || e.kind == 2) {
            volume::set_metadata(&entry.path, entry.mode, entry.mtime).map_err(volume_error)?;
        }
        let digest = volume::digest().map_err(volume_error)?;
        let theirs = channel::receive().map_err(channel_error)?;
        let verified = theirs == digest.root.as_bytes();
        let verdict: &[u8] = if verified { b"verified" } else { b"differs" };
        channel::send(verdict).map_err(channel_error)?;
        if !verified {
            return Err(failure("VerificationFailed", "the digests differ"));
        }
        Ok(report(source.len() as u64, files, digest.root, verified))
    }
}

export!(Contract02);
