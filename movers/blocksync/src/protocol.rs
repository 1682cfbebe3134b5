//! blocksync's own messages on the channel, between the native signature
//! and delta streams.
//!
//! ```text
//! sender                         receiver
//! Hello{version, entries,
//!       attributes}       ─────▶
//! Entries{batch}…, End    ─────▶  plan against its own tree, make nodes
//!                         ◀─────  Want{indices}
//!                         ◀─────  LeftOut{indices}  (nodes it may not make)
//!                         ◀─────  signature(i)   (native, windowed)
//! delta(i)                ─────▶  patch(i)       (native)
//!                         ◀─────  Want{failed}   (once, usually empty)
//!                         ◀─────  signature(i)   (fresh seeds)
//! delta(i)                ─────▶  patch(i)       (a mismatch now fails)
//!                         ◀─────  Want{indices}  (entries whose attributes
//!                                                 differ; with attributes)
//! attributes              ─────▶  set            (native)
//!                         ◀─────  Covered{namespaces it could set}
//! Digest{tree digest}     ─────▶  compares it with its own
//!                         ◀─────  Done{report, its digest, verified}
//! ```
//!
//! Both sides compute their tree digest (`volume.digest`, natively) once
//! their part of the transfer is done, at the same time, both leaving out
//! the entries the receiver may not make.

use wasmover_sdk::types::{Error, TransferReport};
use wasmover_sdk::volume::{AttributeNamespaces, Entry, EntryKind, TreeDigest};
use wasmover_sdk::wire::{DecodeError, Reader, Writer};
use wasmover_sdk::{channel, error};

/// Version of this message set; a receiver refuses any other. 2: the
/// `Digest` message, and the digest and verdict in `Done`. 3: a second
/// `Want`, of the files whose patch failed its verification, sent again.
/// 4: paths are bytes; entries carry special kinds, `rdev` and the
/// attributes' fingerprint; `Done` counts literal wire bytes and skipped
/// entries.
pub const VERSION: u64 = 4;
/// Encoded entries per `Entries` message, at most.
const BATCH_BYTES: usize = 1 << 20;

const HELLO: u64 = 1;
const ENTRIES: u64 = 2;
const END: u64 = 3;
const WANT: u64 = 4;
const DONE: u64 = 5;
const DIGEST: u64 = 6;
const LEFT_OUT: u64 = 7;
const COVERED: u64 = 8;

/// Every namespace of extended attributes.
pub fn all_namespaces() -> AttributeNamespaces {
    AttributeNamespaces::USER
        | AttributeNamespaces::SYSTEM
        | AttributeNamespaces::SECURITY
        | AttributeNamespaces::TRUSTED
}

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

/// Every kind, in the order of its code on the wire.
const KINDS: [EntryKind; 8] = [
    EntryKind::File,
    EntryKind::Directory,
    EntryKind::Symlink,
    EntryKind::Block,
    EntryKind::Fifo,
    EntryKind::Socket,
    EntryKind::CharDevice,
    EntryKind::BlockDevice,
];

fn write_entry(w: &mut Writer, e: &Entry) {
    let kind = KINDS
        .iter()
        .position(|k| *k == e.kind)
        .expect("every kind has a code");
    w.bytes(&e.path)
        .u64(kind as u64)
        .u64(e.mode.into())
        .u64(e.size)
        .i64(e.mtime_ns)
        .bytes(&e.link_target)
        .u64(e.uid.into())
        .u64(e.gid.into())
        .u64(e.inode)
        .u64(e.links.into())
        .u64(e.rdev)
        .u64(e.attributes);
}

fn read_entry(r: &mut Reader<'_>) -> Result<Entry, DecodeError> {
    let path = r.bytes()?.to_vec();
    let kind = usize::try_from(r.u64()?)
        .ok()
        .and_then(|code| KINDS.get(code))
        .copied()
        .ok_or(DecodeError("unknown entry kind"))?;
    Ok(Entry {
        path,
        kind,
        mode: r.u32()?,
        size: r.u64()?,
        mtime_ns: r.i64()?,
        link_target: r.bytes()?.to_vec(),
        uid: r.u32()?,
        gid: r.u32()?,
        inode: r.u64()?,
        links: r.u32()?,
        rdev: r.u64()?,
        attributes: r.u64()?,
    })
}

/// Sends the sender's tree. Returns the bytes put on the channel.
pub fn send_tree(entries: &[Entry], attributes: bool) -> Result<u64, Error> {
    let mut wire = send(HELLO, |w| {
        w.u64(VERSION)
            .u64(entries.len() as u64)
            .u64(attributes.into());
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

/// Receives the sender's tree, which must agree with this side on
/// copying `attributes`. Returns it and the bytes taken off the channel.
pub fn receive_tree(attributes: bool) -> Result<(Vec<Entry>, u64), Error> {
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
    let theirs = r.u64().map_err(|e| decode_error("hello", e))? == 1;
    if theirs != attributes {
        let copies = |yes| if yes { "copies" } else { "does not copy" };
        return Err(error(
            "InvalidParameter",
            format!(
                "the source {} extended attributes and ACLs, and this destination {}: set the \
                 parameter attributes alike on both sides",
                copies(theirs),
                copies(attributes)
            ),
        ));
    }
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

/// Receives the receiver's request for content; every index must name a
/// file (or the block volume) of `entries`.
pub fn receive_want(entries: &[Entry]) -> Result<(Vec<usize>, u64), Error> {
    receive_indices(WANT, "want", entries, |e| {
        matches!(e.kind, EntryKind::File | EntryKind::Block)
    })
}

/// Tells the sender which entries this receiver may not make.
pub fn send_left_out(indices: &[usize]) -> Result<u64, Error> {
    send(LEFT_OUT, |w| {
        w.u64(indices.len() as u64);
        for &i in indices {
            w.u64(i as u64);
        }
    })
}

/// Receives the entries the receiver may not make: special files.
pub fn receive_left_out(entries: &[Entry]) -> Result<(Vec<usize>, u64), Error> {
    receive_indices(LEFT_OUT, "left-out", entries, |e| {
        matches!(
            e.kind,
            EntryKind::Fifo | EntryKind::Socket | EntryKind::CharDevice | EntryKind::BlockDevice
        )
    })
}

/// Receives the entries whose attributes the receiver asks for: any
/// entry but the volume itself.
pub fn receive_attributes_wanted(entries: &[Entry]) -> Result<(Vec<usize>, u64), Error> {
    receive_indices(WANT, "attributes wanted", entries, |e| {
        e.kind != EntryKind::Block
    })
}

/// Tells the sender which namespaces of attributes both digests cover:
/// those this receiver could set.
pub fn send_covered(namespaces: AttributeNamespaces) -> Result<u64, Error> {
    send(COVERED, |w| {
        w.u64(namespaces.bits().into());
    })
}

/// Receives the namespaces of attributes both digests cover.
pub fn receive_covered() -> Result<(AttributeNamespaces, u64), Error> {
    let (bytes, wire) = receive(COVERED, "covered")?;
    let mut r = Reader::new(&bytes);
    let bad = |e| decode_error("covered", e);
    r.u64().map_err(bad)?;
    let bits = r.u64().map_err(bad)?;
    match u8::try_from(bits) {
        Ok(bits) if bits & !all_namespaces().bits() == 0 => {
            Ok((AttributeNamespaces::from_bits_retain(bits), wire))
        }
        _ => Err(error(
            "ProtocolError",
            format!("covered: unknown attribute namespaces {bits:#x}"),
        )),
    }
}

/// Receives a list of indices into `entries`, each of an entry `fits`.
fn receive_indices(
    tag: u64,
    what: &str,
    entries: &[Entry],
    fits: impl Fn(&Entry) -> bool,
) -> Result<(Vec<usize>, u64), Error> {
    let (bytes, wire) = receive(tag, what)?;
    let mut r = Reader::new(&bytes);
    let bad = |e| decode_error(what, e);
    r.u64().map_err(bad)?;
    let count = r.u64().map_err(bad)?;
    let mut indices = Vec::new();
    for _ in 0..count {
        let i = usize::try_from(r.u64().map_err(bad)?).unwrap_or(usize::MAX);
        match entries.get(i) {
            Some(e) if fits(e) => indices.push(i),
            _ => {
                return Err(error(
                    "ProtocolError",
                    format!("the receiver's {what} names entry {i}, which it cannot"),
                ));
            }
        }
    }
    Ok((indices, wire))
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
            .u64(report.bytes_literal_wire)
            .u64(report.entries_skipped)
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
        bytes_literal_wire: r.u64().map_err(bad)?,
        entries_skipped: r.u64().map_err(bad)?,
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
            path: b"dir/\xff\xfe \xc3\xbcn\n-name".to_vec(),
            kind: EntryKind::Symlink,
            mode: 0o4755,
            size: 0,
            mtime_ns: -1_500_000_000,
            link_target: b"../\x80x".to_vec(),
            uid: 1000,
            gid: u32::MAX,
            inode: u64::MAX - 1,
            links: 3,
            rdev: 0,
            attributes: 0x1234_5678_9abc_def0,
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
        assert_eq!(back.attributes, entry.attributes);
        for kind in KINDS {
            let node = Entry {
                kind,
                rdev: 0x0801,
                ..entry.clone()
            };
            let mut w = Writer::new();
            write_entry(&mut w, &node);
            let back = read_entry(&mut Reader::new(&w.finish())).unwrap();
            assert_eq!((back.kind, back.rdev), (kind, 0x0801));
        }

        let mut corrupt = bytes.clone();
        let kind_at = 1 + entry.path.len();
        corrupt[kind_at] = 9;
        assert_eq!(
            read_entry(&mut Reader::new(&corrupt)).unwrap_err(),
            DecodeError("unknown entry kind")
        );
    }
}
