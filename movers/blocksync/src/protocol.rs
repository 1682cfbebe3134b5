//! blocksync's own messages on the channel, between the native signature
//! and delta streams.
//!
//! ```text
//! sender                         receiver
//! Hello{version, entries} ─────▶
//! Entries{batch}…, End    ─────▶  plan against its own tree
//!                         ◀─────  Want{indices}
//!                         ◀─────  signature(i)   (native, windowed)
//! delta(i)                ─────▶  patch(i)       (native)
//!                         ◀─────  Want{failed}   (once, usually empty)
//!                         ◀─────  signature(i)   (fresh seeds)
//! delta(i)                ─────▶  patch(i)       (a mismatch now fails)
//! Digest{tree digest}     ─────▶  compares it with its own
//!                         ◀─────  Done{report, its digest, verified}
//! ```
//!
//! Both sides compute their tree digest (`volume.digest`, natively) once
//! their part of the transfer is done, at the same time.

use wasmover_sdk::types::{Error, TransferReport};
use wasmover_sdk::volume::{Entry, EntryKind, TreeDigest};
use wasmover_sdk::wire::{DecodeError, Reader, Writer};
use wasmover_sdk::{channel, error};

/// Version of this message set; a receiver refuses any other. 2: the
/// `Digest` message, and the digest and verdict in `Done`. 3: a second
/// `Want`, of the files whose patch failed its verification, sent again.
pub const VERSION: u64 = 3;
/// Encoded entries per `Entries` message, at most.
const BATCH_BYTES: usize = 1 << 20;

const HELLO: u64 = 1;
const ENTRIES: u64 = 2;
const END: u64 = 3;
const WANT: u64 = 4;
const DONE: u64 = 5;
const DIGEST: u64 = 6;

/// Sends one message; the tag first.
fn send(tag: u64, body: impl FnOnce(&mut Writer)) -> Result<u64, Error> {
    let mut w = Writer::new();
    w.u64(tag);
    body(&mut w);
    let bytes = w.finish();
    let len = bytes.len() as u64 + 4;
    channel::send(&bytes).map_err(channel_error)?;
    Ok(len)
}

/// Receives one message and checks its tag.
fn receive(expected: u64, what: &str) -> Result<(Vec<u8>, u64), Error> {
    let bytes = channel::receive().map_err(channel_error)?;
    let len = bytes.len() as u64 + 4;
    let tag = Reader::new(&bytes)
        .u64()
        .map_err(|e| decode_error(what, e))?;
    if tag != expected {
        return Err(error(
            "ProtocolError",
            format!("expected {what} (message {expected}), got message {tag}"),
        ));
    }
    Ok((bytes, len))
}

/// Maps a channel failure to a mover error.
pub fn channel_error(e: channel::ChannelError) -> Error {
    match e {
        channel::ChannelError::Closed => error("PeerGone", "the peer closed the channel"),
        channel::ChannelError::TooLarge(n) => error(
            "ProtocolError",
            format!("a message of {n} bytes is too large"),
        ),
        channel::ChannelError::Io(m) => error("ChannelError", m),
        channel::ChannelError::Aborted(m) => error("PeerFailed", format!("the peer failed: {m}")),
    }
}

fn decode_error(what: &str, e: DecodeError) -> Error {
    error("ProtocolError", format!("{what}: {e}"))
}

fn kind_code(kind: EntryKind) -> u64 {
    match kind {
        EntryKind::File => 0,
        EntryKind::Directory => 1,
        EntryKind::Symlink => 2,
        EntryKind::Block => 3,
    }
}

fn write_entry(w: &mut Writer, e: &Entry) {
    w.str(&e.path)
        .u64(kind_code(e.kind))
        .u64(e.mode.into())
        .u64(e.size)
        .i64(e.mtime_ns)
        .str(&e.link_target)
        .u64(e.uid.into())
        .u64(e.gid.into())
        .u64(e.inode)
        .u64(e.links.into());
}

fn read_entry(r: &mut Reader<'_>) -> Result<Entry, DecodeError> {
    let path = r.str()?.to_owned();
    let kind = match r.u64()? {
        0 => EntryKind::File,
        1 => EntryKind::Directory,
        2 => EntryKind::Symlink,
        3 => EntryKind::Block,
        _ => return Err(DecodeError("unknown entry kind")),
    };
    Ok(Entry {
        path,
        kind,
        mode: r.u32()?,
        size: r.u64()?,
        mtime_ns: r.i64()?,
        link_target: r.str()?.to_owned(),
        uid: r.u32()?,
        gid: r.u32()?,
        inode: r.u64()?,
        links: r.u32()?,
    })
}

/// Sends the sender's tree. Returns the bytes put on the channel.
pub fn send_tree(entries: &[Entry]) -> Result<u64, Error> {
    let mut wire = send(HELLO, |w| {
        w.u64(VERSION).u64(entries.len() as u64);
    })?;
    let mut batch = Writer::new();
    let mut count = 0u64;
    for entry in entries {
        write_entry(&mut batch, entry);
        count += 1;
        if batch.len() >= BATCH_BYTES {
            let full = std::mem::take(&mut batch).finish();
            wire += send(ENTRIES, |w| {
                w.u64(count);
                w.raw(&full);
            })?;
            count = 0;
        }
    }
    if count > 0 {
        let rest = batch.finish();
        wire += send(ENTRIES, |w| {
            w.u64(count);
            w.raw(&rest);
        })?;
    }
    wire += send(END, |_| {})?;
    Ok(wire)
}

/// Receives the sender's tree. Returns it and the bytes taken off the
/// channel.
pub fn receive_tree() -> Result<(Vec<Entry>, u64), Error> {
    let (hello, mut wire) = receive(HELLO, "hello")?;
    let mut r = Reader::new(&hello);
    r.u64().map_err(|e| decode_error("hello", e))?;
    let version = r.u64().map_err(|e| decode_error("hello", e))?;
    if version != VERSION {
        return Err(error(
            "IncompatiblePeer",
            format!("the sender speaks blocksync protocol {version}, this receiver {VERSION}"),
        ));
    }
    let announced = r.u64().map_err(|e| decode_error("hello", e))?;
    let mut entries = Vec::new();
    loop {
        let bytes = channel::receive().map_err(channel_error)?;
        wire += bytes.len() as u64 + 4;
        let mut r = Reader::new(&bytes);
        match r.u64().map_err(|e| decode_error("entries", e))? {
            ENTRIES => {
                let count = r.u64().map_err(|e| decode_error("entries", e))?;
                for _ in 0..count {
                    entries.push(read_entry(&mut r).map_err(|e| decode_error("entry", e))?);
                }
            }
            END => break,
            tag => {
                return Err(error(
                    "ProtocolError",
                    format!("expected entries, got message {tag}"),
                ));
            }
        }
    }
    if entries.len() as u64 != announced {
        return Err(error(
            "ProtocolError",
            format!(
                "the sender announced {announced} entries and sent {}",
                entries.len()
            ),
        ));
    }
    Ok((entries, wire))
}

/// Asks the sender for the files at `indices`, in that order.
pub fn send_want(indices: &[usize]) -> Result<u64, Error> {
    send(WANT, |w| {
        w.u64(indices.len() as u64);
        for &i in indices {
            w.u64(i as u64);
        }
    })
}

/// Receives the receiver's request; every index must name a file (or the
/// block volume) of `entries`.
pub fn receive_want(entries: &[Entry]) -> Result<(Vec<usize>, u64), Error> {
    let (bytes, wire) = receive(WANT, "want")?;
    let mut r = Reader::new(&bytes);
    let bad = |e| decode_error("want", e);
    r.u64().map_err(bad)?;
    let count = r.u64().map_err(bad)?;
    let mut want = Vec::new();
    for _ in 0..count {
        let i = usize::try_from(r.u64().map_err(bad)?).unwrap_or(usize::MAX);
        match entries.get(i) {
            Some(e) if matches!(e.kind, EntryKind::File | EntryKind::Block) => want.push(i),
            _ => {
                return Err(error(
                    "ProtocolError",
                    format!("the receiver asked for entry {i}, which is not a file"),
                ));
            }
        }
    }
    Ok((want, wire))
}

/// Sends the sender's tree digest, after the last delta.
pub fn send_digest(digest: &TreeDigest) -> Result<u64, Error> {
    send(DIGEST, |w| {
        w.str(&digest.root).u64(digest.entries).u64(digest.bytes);
    })
}

/// Receives the sender's tree digest. Returns it and the bytes taken off
/// the channel.
pub fn receive_digest() -> Result<(TreeDigest, u64), Error> {
    let (bytes, wire) = receive(DIGEST, "digest")?;
    let mut r = Reader::new(&bytes);
    let bad = |e| decode_error("digest", e);
    r.u64().map_err(bad)?;
    let digest = TreeDigest {
        root: r.str().map_err(bad)?.to_owned(),
        entries: r.u64().map_err(bad)?,
        bytes: r.u64().map_err(bad)?,
    };
    Ok((digest, wire))
}

/// Tells the sender the transfer is complete, with the receiver's digest
/// and whether it matched.
pub fn send_done(report: &TransferReport) -> Result<u64, Error> {
    send(DONE, |w| {
        w.u64(report.entries_total)
            .u64(report.files_transferred)
            .u64(report.entries_deleted)
            .u64(report.bytes_total)
            .u64(report.bytes_matched)
            .u64(report.bytes_literal)
            .u64(report.bytes_on_wire)
            .str(&report.tree_digest)
            .u64(report.verified.into());
    })
}

/// Waits for the receiver's report.
pub fn receive_done() -> Result<TransferReport, Error> {
    let (bytes, _) = receive(DONE, "done")?;
    let mut r = Reader::new(&bytes);
    let bad = |e| decode_error("done", e);
    r.u64().map_err(bad)?;
    Ok(TransferReport {
        entries_total: r.u64().map_err(bad)?,
        files_transferred: r.u64().map_err(bad)?,
        entries_deleted: r.u64().map_err(bad)?,
        bytes_total: r.u64().map_err(bad)?,
        bytes_matched: r.u64().map_err(bad)?,
        bytes_literal: r.u64().map_err(bad)?,
        bytes_on_wire: r.u64().map_err(bad)?,
        tree_digest: r.str().map_err(bad)?.to_owned(),
        verified: r.u64().map_err(bad)? == 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_reject_unknown_kinds() {
        let entry = Entry {
            path: "dir/ünï côdé\nname".into(),
            kind: EntryKind::Symlink,
            mode: 0o4755,
            size: 0,
            mtime_ns: -1_500_000_000,
            link_target: "../x".into(),
            uid: 1000,
            gid: u32::MAX,
            inode: u64::MAX - 1,
            links: 3,
        };
        let mut w = Writer::new();
        write_entry(&mut w, &entry);
        let bytes = w.finish();
        let back = read_entry(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(back.path, entry.path);
        assert_eq!(back.kind, entry.kind);
        assert_eq!(back.mode, entry.mode);
        assert_eq!(back.mtime_ns, entry.mtime_ns);
        assert_eq!(back.link_target, entry.link_target);

        let mut corrupt = bytes.clone();
        let kind_at = 1 + entry.path.len();
        corrupt[kind_at] = 9;
        assert_eq!(
            read_entry(&mut Reader::new(&corrupt)).unwrap_err(),
            DecodeError("unknown entry kind")
        );
    }
}
