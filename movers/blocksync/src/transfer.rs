//! The data plane: make the receiver's volume equal to the sender's.
//!
//! The guest only decides: it compares the trees, picks the files to
//! rebuild and their order. Signatures, deltas and patches run natively in
//! the host, straight between disk and channel.

use std::collections::VecDeque;

use wasmover_sdk::channel::ChannelError;
use wasmover_sdk::types::{Error, Parameter, TransferReport};
use wasmover_sdk::volume::{Entry, EntryKind, TreeDigest, VolumeError};
use wasmover_sdk::{Params, blocks, channel, error, escape_path, log, progress, volume};

use crate::plan::plan;
use crate::protocol;

/// Signature bytes the receiver may have in flight ahead of the patches it
/// is applying. Small enough that, with the channel's own buffering, neither
/// side can block the other while both write.
const SIGNATURE_WINDOW: u64 = 256 << 10;
/// Files the receiver may have requested ahead of the patches it applies.
const FILE_WINDOW: usize = 64;

/// Parameters the data plane understands.
pub struct Options {
    /// Block size for signatures; the engine chooses when absent.
    pub block_size: Option<u32>,
    /// How literals are compressed: `None` for the host's default, else
    /// `off` (`Some(None)`) or a zstd level.
    pub compress_level: Option<Option<i32>>,
    /// Whether extended attributes and ACLs are copied.
    pub attributes: bool,
}

impl Options {
    /// Reads the options from a transfer's parameters.
    pub fn from_parameters(parameters: Vec<Parameter>) -> Result<Self, Error> {
        let params = Params::from(parameters);
        Ok(Self {
            block_size: params.parse("block-size")?,
            compress_level: crate::control::compress_level(&params)?,
            attributes: crate::control::attributes(&params)?,
        })
    }

    /// Tells the host what this side's options ask of it.
    fn apply(&self) -> Result<(), Error> {
        if self.attributes {
            volume::include_attributes(protocol::all_namespaces());
        }
        if let Some(level) = self.compress_level {
            blocks::set_compression(level).map_err(|e| block_error(b"", e))?;
        }
        Ok(())
    }
}

fn volume_error(e: VolumeError) -> Error {
    match e {
        VolumeError::ReadOnly => error("ReadOnlyVolume", "the volume is read-only"),
        VolumeError::InvalidPath(p) => error("InvalidPath", p),
        VolumeError::NotFound(p) => error("NotFound", p),
        VolumeError::Io(m) => error("VolumeError", m),
    }
}

fn block_error(path: &[u8], e: blocks::BlockError) -> Error {
    use blocks::BlockError as B;
    let path = escape_path(path);
    match e {
        // Mid-file: the stream was cut off, and what arrived of this file
        // is kept for the next run to resume from.
        B::Channel(ChannelError::Closed) => error(
            "PeerGone",
            format!("{path}: the stream was cut off part-way: the peer closed the channel"),
        ),
        B::Channel(e) => protocol::channel_error(e),
        B::Verification(m) => error("VerificationFailed", m),
        B::Protocol(m) => error("ProtocolError", m),
        B::ReadOnly => error("ReadOnlyVolume", format!("{path}: the volume is read-only")),
        B::InvalidPath(m) => error("InvalidPath", m),
        B::NotFound(m) => error("NotFound", m),
        B::Io(m) => error("VolumeError", m),
        B::Invalid(m) => error("InvalidParameter", m),
    }
}

/// Tells the peer why this side failed, unless the failure came from the
/// peer: it then reports the cause, not "the channel closed".
pub fn tell_peer(result: Result<TransferReport, Error>) -> Result<TransferReport, Error> {
    if let Err(e) = &result
        && !matches!(e.reason.as_str(), "PeerGone" | "PeerFailed")
    {
        channel::abort(&format!("{}: {}", e.reason, e.message));
    }
    result
}

/// The sending side.
pub fn send(options: &Options) -> Result<TransferReport, Error> {
    options.apply()?;
    let entries = volume::scan().map_err(volume_error)?;
    log::info(format!("sending a tree of {} entries", entries.len()));
    protocol::send_tree(&entries, options.attributes)?;
    let (want, _) = protocol::receive_want(&entries)?;
    let (left_out, _) = protocol::receive_left_out(&entries)?;
    send_deltas(&entries, &want)?;
    // Hashed while the receiver applies the last patches and hashes its
    // own tree; once the attributes moved when they do, since the
    // receiver says then which ones both digests cover.
    let left_out: Vec<_> = left_out.iter().map(|&i| entries[i].path.clone()).collect();
    let early = match options.attributes {
        false => Some(volume::digest(&left_out).map_err(volume_error)?),
        true => None,
    };
    let (again, _) = protocol::receive_want(&entries)
        .map_err(|e| receiver_gone(e, "waiting for the files it asks for again"))?;
    if !again.is_empty() {
        log::warn(format!(
            "the receiver asks again for {} files that failed their verification",
            again.len()
        ));
        send_deltas(&entries, &again)?;
    }
    if options.attributes {
        let (wanted, _) = protocol::receive_attributes_wanted(&entries)
            .map_err(|e| receiver_gone(e, "waiting for the attributes it asks for"))?;
        let paths: Vec<_> = wanted.iter().map(|&i| entries[i].path.clone()).collect();
        blocks::send_attributes(&paths)
            .map_err(|e| receiver_gone(block_error(b"", e), "sending extended attributes"))?;
    }
    let digest = match early {
        Some(digest) => digest,
        None => {
            let (covered, _) = protocol::receive_covered()
                .map_err(|e| receiver_gone(e, "waiting for the attributes it could set"))?;
            volume::include_attributes(covered);
            volume::digest(&left_out).map_err(volume_error)?
        }
    };
    let waiting = "waiting for its verdict";
    protocol::send_digest(&digest).map_err(|e| receiver_gone(e, waiting))?;
    let report = protocol::receive_done().map_err(|e| receiver_gone(e, waiting))?;
    check_verified(&report, &digest)?;
    Ok(report)
}

/// Sends the deltas of the files at `indices`, in that order, each against
/// the signature the receiver sent for it, reporting progress after each
/// as the receiver does: bytes and files of those asked for.
fn send_deltas(entries: &[Entry], indices: &[usize]) -> Result<(), Error> {
    let bytes_total = indices.iter().map(|&i| entries[i].size).sum();
    let files_total = indices.len() as u64;
    let mut bytes_done = 0;
    progress::report(0, bytes_total, 0, files_total);
    for (done, &i) in indices.iter().enumerate() {
        let path = &entries[i].path;
        blocks::send_delta(path).map_err(|e| {
            let sending = format!("sending {}", escape_path(path));
            receiver_gone(block_error(path, e), &sending)
        })?;
        bytes_done += entries[i].size;
        progress::report(bytes_done, bytes_total, done as u64 + 1, files_total);
    }
    Ok(())
}

/// Says what the sender was doing when the receiver went away: the cause
/// is on the receiver's side, which ends a transfer it cannot finish by
/// closing the connection. The host reports a connection reset or a broken
/// pipe met while streaming a delta as an I/O error of that file.
fn receiver_gone(e: Error, doing: &str) -> Error {
    const RESET_OR_BROKEN_PIPE: [&str; 2] = ["(os error 104)", "(os error 32)"];
    let gone = e.reason == "PeerGone"
        || e.reason == "ChannelError"
        || (e.reason == "VolumeError"
            && RESET_OR_BROKEN_PIPE.iter().any(|c| e.message.ends_with(c)));
    if !gone {
        return e;
    }
    error(
        "PeerGone",
        format!(
            "the receiver closed the connection while this sender was {doing} ({}): \
             it failed or was stopped (its log says why)",
            e.message
        ),
    )
}

/// Fails unless the receiver's digest (in its report) equals the
/// source's.
pub fn check_verified(report: &TransferReport, source: &TreeDigest) -> Result<(), Error> {
    if report.verified && report.tree_digest == source.root {
        return Ok(());
    }
    let destination = if report.tree_digest.is_empty() {
        "(none)"
    } else {
        &report.tree_digest
    };
    Err(error(
        "VerificationFailed",
        format!(
            "the destination's tree digest {destination} differs from the source's {} \
             ({} entries, {} bytes of files): the destination does not hold the \
             source's tree. Either side changed during the transfer, or a destination \
             file changed behind the mover's back keeping its size and modification \
             time (such a file is not compared by content)",
            source.root, source.entries, source.bytes,
        ),
    ))
}

/// The receiving side.
pub fn receive(options: &Options) -> Result<TransferReport, Error> {
    options.apply()?;
    // Scanned while the sender scans its own tree, before its entries
    // arrive.
    let local = volume::scan().map_err(volume_error)?;
    let (source, mut wire) = protocol::receive_tree(options.attributes)?;
    let is_block = |tree: &[Entry]| tree.iter().any(|e| e.kind == EntryKind::Block);
    let mode = |block| {
        if block {
            "a block volume (a device or image file)"
        } else {
            "a directory"
        }
    };
    if is_block(&source) != is_block(&local) {
        return Err(error(
            "VolumeModeMismatch",
            format!(
                "the source is {} and the destination {}: both sides must be the same \
                 kind of volume (as a PVC's volumeMode)",
                mode(is_block(&source)),
                mode(is_block(&local))
            ),
        ));
    }
    let plan = plan(&source, &local).map_err(|why| error("ProtocolError", why))?;
    let bytes_total: u64 = source
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File | EntryKind::Block))
        .map(|e| e.size)
        .sum();
    let transfer_bytes: u64 = plan.transfer.iter().map(|&i| source[i].size).sum();
    log::info(format!(
        "{} entries: {} to rebuild ({} bytes), {} to remove",
        source.len(),
        plan.transfer.len(),
        transfer_bytes,
        plan.remove.len()
    ));

    for path in &plan.remove {
        volume::remove(path).map_err(volume_error)?;
    }
    for &i in &plan.create_dirs {
        volume::create_dir(&source[i].path).map_err(volume_error)?;
    }
    let left_out = make_nodes(&source, &plan.nodes)?;

    wire += protocol::send_want(&plan.transfer)?;
    wire += protocol::send_left_out(&left_out)?;
    let mut report = TransferReport {
        entries_total: source.len() as u64,
        files_transferred: plan.transfer.len() as u64,
        entries_deleted: plan.remove.len() as u64,
        bytes_total,
        bytes_matched: 0,
        bytes_literal: 0,
        bytes_literal_wire: 0,
        entries_skipped: left_out.len() as u64,
        bytes_on_wire: 0,
        tree_digest: String::new(),
        verified: false,
    };
    let (rebuilt, failed) = rebuild(
        &source,
        &plan.transfer,
        options,
        transfer_bytes,
        &mut report,
        Mismatch::AskAgain,
    )?;
    wire += rebuilt;
    // Asked for once more, usually none: the signatures are under fresh
    // seeds and of the files as they are now.
    wire += protocol::send_want(&failed)?;
    if !failed.is_empty() {
        let bytes = failed.iter().map(|&i| source[i].size).sum();
        let (rebuilt, _) = rebuild(
            &source,
            &failed,
            options,
            bytes,
            &mut report,
            Mismatch::Fail,
        )?;
        wire += rebuilt;
    }

    for &(first, link) in &plan.hard_links {
        volume::hard_link(&source[first].path, &source[link].path).map_err(volume_error)?;
    }
    for &i in &plan.links {
        let link = &source[i];
        volume::symlink(&link.link_target, &link.path).map_err(volume_error)?;
        set_metadata(link)?;
    }
    let made = |i: &usize| !left_out.contains(i);
    let owners: Vec<usize> = plan.owners.iter().copied().filter(made).collect();
    set_owners(&source, &owners)?;
    if options.attributes {
        let wanted: Vec<usize> = plan.attributes.iter().copied().filter(made).collect();
        wire += protocol::send_want(&wanted)?;
        let stats = blocks::receive_attributes().map_err(|e| block_error(b"", e))?;
        wire += stats.wire_bytes;
        report.entries_skipped += stats.skipped;
        // What this side may not set is in neither digest.
        let all = protocol::all_namespaces();
        let covered = all ^ (all & stats.skipped_namespaces);
        volume::include_attributes(covered);
        wire += protocol::send_covered(covered)?;
    }
    for &i in plan.metadata.iter().chain(&plan.nodes).filter(|i| made(i)) {
        set_metadata(&source[i])?;
    }
    for &i in &plan.dirs_deepest_first {
        set_metadata(&source[i])?;
    }

    let left_out: Vec<_> = left_out.iter().map(|&i| source[i].path.clone()).collect();
    let digest = volume::digest(&left_out).map_err(volume_error)?;
    let (source_digest, digest_wire) = protocol::receive_digest()?;
    wire += digest_wire;
    verify(report, wire, &digest, &source_digest)
}

/// Compares the destination's digest with the source's, tells the sender
/// (the `Done` message carries the verdict either way), and fails on a
/// mismatch.
pub fn verify(
    mut report: TransferReport,
    wire: u64,
    destination: &TreeDigest,
    source: &TreeDigest,
) -> Result<TransferReport, Error> {
    report.tree_digest = destination.root.clone();
    report.verified = destination.root == source.root;
    log::info(format!(
        "tree digest {} ({} entries, {} bytes); the source's {}",
        destination.root, destination.entries, destination.bytes, source.root
    ));
    // The report counts the Done message itself too.
    report.bytes_on_wire = wire;
    let done = protocol::send_done(&report)?;
    report.bytes_on_wire += done;
    check_verified(&report, source)?;
    Ok(report)
}

/// Sets the owners of `indices` where this host may; a set-user-id or
/// set-group-id file gets its mode again, since a change of owner clears
/// those bits.
fn set_owners(source: &[Entry], indices: &[usize]) -> Result<(), Error> {
    for &i in indices {
        let e = &source[i];
        if !volume::set_owner(&e.path, e.uid, e.gid).map_err(volume_error)? {
            log::warn(format!(
                "owners are not kept: this receiver may not change them ({} entries)",
                indices.len()
            ));
            return Ok(());
        }
        if e.kind == EntryKind::File && e.mode & 0o6000 != 0 {
            set_metadata(e)?;
        }
    }
    Ok(())
}

/// Makes the special files at `indices`; returns those this receiver may
/// not make (device nodes, when it is not privileged), which the transfer
/// leaves out, saying so once.
fn make_nodes(source: &[Entry], indices: &[usize]) -> Result<Vec<usize>, Error> {
    let mut left_out = Vec::new();
    for &i in indices {
        let e = &source[i];
        if !volume::make_node(&e.path, e.kind, e.mode, e.rdev).map_err(volume_error)? {
            left_out.push(i);
        }
    }
    if let Some(&first) = left_out.first() {
        log::warn(format!(
            "{} special files are left out, first {}: this receiver may not make device \
             nodes (it is not privileged); the rest of the tree is replicated and verified",
            left_out.len(),
            escape_path(&source[first].path)
        ));
    }
    Ok(left_out)
}

fn set_metadata(entry: &Entry) -> Result<(), Error> {
    volume::set_metadata(&entry.path, entry.mode, entry.mtime_ns).map_err(volume_error)
}

/// What [`rebuild`] does with a file whose rebuilt content does not match
/// the sender's hash (the old file is left as it was).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mismatch {
    /// Lists it for asking again. A signature of blocks or granules under
    /// a seed that happened to collide (or a basis that changed behind
    /// the receiver's back) is then replaced by a fresh one.
    AskAgain,
    /// Fails the transfer.
    Fail,
}

/// Rebuilds the files at `indices`: signatures go out ahead of the patches
/// within a window, so the sender computes deltas while the receiver
/// writes. Returns the bytes that crossed the channel and the files that
/// failed their verification, if `mismatch` lets them.
fn rebuild(
    source: &[Entry],
    indices: &[usize],
    options: &Options,
    transfer_bytes: u64,
    report: &mut TransferReport,
    mismatch: Mismatch,
) -> Result<(u64, Vec<usize>), Error> {
    let mut failed = Vec::new();
    let mut wire = 0;
    let mut in_flight: VecDeque<(usize, u64)> = VecDeque::new();
    let mut in_flight_bytes = 0u64;
    let mut next = 0;
    let mut done_bytes = 0u64;
    // The totals first: the host reports within large files on top of
    // this.
    progress::report(0, transfer_bytes, 0, indices.len() as u64);
    for (done, _) in indices.iter().enumerate() {
        while next < indices.len()
            && (in_flight.is_empty()
                || (in_flight_bytes < SIGNATURE_WINDOW && in_flight.len() < FILE_WINDOW))
        {
            let path = &source[indices[next]].path;
            let stats = blocks::send_signature(path, options.block_size)
                .map_err(|e| block_error(path, e))?;
            in_flight.push_back((indices[next], stats.wire_bytes));
            in_flight_bytes += stats.wire_bytes;
            wire += stats.wire_bytes;
            next += 1;
        }
        let (i, signature_bytes) = in_flight.pop_front().expect("window holds the next file");
        in_flight_bytes -= signature_bytes;
        let entry = &source[i];
        match blocks::receive_patch(&entry.path, entry.mode, entry.mtime_ns) {
            Ok(stats) => {
                wire += stats.wire_bytes;
                report.bytes_matched += stats.matched_bytes;
                report.bytes_literal += stats.literal_bytes;
                report.bytes_literal_wire += stats.literal_wire_bytes;
            }
            Err(blocks::BlockError::Verification(why)) if mismatch == Mismatch::AskAgain => {
                log::warn(format!("{why}: asking the sender for it again"));
                failed.push(i);
            }
            Err(e) => return Err(block_error(&entry.path, e)),
        }
        done_bytes += entry.size;
        progress::report(
            done_bytes,
            transfer_bytes,
            done as u64 + 1,
            indices.len() as u64,
        );
    }
    Ok((wire, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOLUME: &str = "/volume";

    /// The volume's preopened directory, through WASI preview 2 directly.
    /// (Debian's 2022 wasi-libc does not resolve preopens for test
    /// harnesses, so `std::fs` cannot be used here.)
    fn volume_dir() -> wasi::filesystem::types::Descriptor {
        wasi::filesystem::preopens::get_directories()
            .into_iter()
            .find(|(_, path)| path == VOLUME)
            .map(|(dir, _)| dir)
            .expect("the host preopens the volume")
    }

    /// Writes a file through WASI; its directory through the host's volume.
    fn write(path: &str, bytes: &[u8]) {
        use wasi::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
        if let Some((dir, _)) = path.rsplit_once('/') {
            volume::create_dir(dir.as_bytes()).unwrap();
        }
        let file = volume_dir()
            .open_at(
                PathFlags::empty(),
                path,
                OpenFlags::CREATE | OpenFlags::TRUNCATE,
                DescriptorFlags::WRITE,
            )
            .unwrap();
        let mut offset = 0;
        for chunk in bytes.chunks(64 << 10) {
            offset += file.write(chunk, offset).unwrap();
        }
    }

    /// Reads a file through WASI.
    fn read(path: &str) -> Vec<u8> {
        use wasi::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
        let file = volume_dir()
            .open_at(
                PathFlags::empty(),
                path,
                OpenFlags::empty(),
                DescriptorFlags::READ,
            )
            .unwrap();
        let mut out = Vec::new();
        loop {
            let (chunk, end) = file.read(64 << 10, out.len() as u64).unwrap();
            out.extend_from_slice(&chunk);
            if end || chunk.is_empty() {
                return out;
            }
        }
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Writes `DIR/old` (256 KiB) and `DIR/new`, the same with ten bytes
    /// rewritten at `at`; returns their contents.
    fn old_and_new(dir: &str, at: usize) -> (Vec<u8>, Vec<u8>) {
        let old = pseudo_random(256 << 10, 7);
        let mut new = old.clone();
        new[at..at + 10].copy_from_slice(b"0123456789");
        write(&format!("{dir}/old"), &old);
        write(&format!("{dir}/new"), &new);
        (old, new)
    }

    /// The host connects the test harness's channel back to itself, so one
    /// instance plays both sides of a file's signature → delta → patch.
    #[test]
    fn native_blocks_rebuild_a_changed_file_sending_only_the_change() {
        let (_, new) = old_and_new("blocks", 100_000);

        let sig = blocks::send_signature(b"blocks/old", Some(4096)).unwrap();
        assert!(sig.wire_bytes > 0);
        let delta = blocks::send_delta(b"blocks/new").unwrap();
        assert_eq!(delta.file_bytes, new.len() as u64);
        assert!(delta.literal_bytes <= 8192, "{delta:?}");
        let patch = blocks::receive_patch(b"blocks/old", 0o640, 1_000_000_000).unwrap();
        assert_eq!(patch.matched_bytes + patch.literal_bytes, new.len() as u64);

        assert_eq!(read("blocks/old"), new);
        let entry = volume::scan()
            .unwrap()
            .into_iter()
            .find(|e| e.path == b"blocks/old")
            .unwrap();
        assert_eq!((entry.mode, entry.mtime_ns), (0o640, 1_000_000_000));
    }

    /// What the receiver's second `Want` relies on: a patch that fails its
    /// verification consumes its whole delta and leaves the old file, so
    /// the same file can be asked for again on the same channel.
    #[test]
    fn a_file_that_fails_its_verification_is_kept_and_can_be_asked_for_again() {
        let (_, new) = old_and_new("again", 10_000);

        blocks::send_signature(b"again/old", Some(4096)).unwrap();
        // The basis changes behind the receiver's back after its signature
        // left: the delta's copies name blocks that are no longer there.
        let changed = pseudo_random(256 << 10, 11);
        write("again/old", &changed);
        blocks::send_delta(b"again/new").unwrap();
        let err = blocks::receive_patch(b"again/old", 0o644, 1_000_000_000).unwrap_err();
        assert!(
            matches!(&err, blocks::BlockError::Verification(m) if m.contains("again/old")),
            "{err:?}"
        );
        assert_eq!(read("again/old"), changed);

        blocks::send_signature(b"again/old", Some(4096)).unwrap();
        blocks::send_delta(b"again/new").unwrap();
        blocks::receive_patch(b"again/old", 0o644, 1_000_000_000).unwrap();
        assert_eq!(read("again/old"), new);
    }

    #[test]
    fn paths_outside_the_volume_are_refused() {
        for path in ["../etc/passwd", "/etc/passwd", "a/../../b"] {
            assert!(matches!(
                blocks::send_signature(path.as_bytes(), None),
                Err(blocks::BlockError::InvalidPath(_))
            ));
            assert!(matches!(
                volume::remove(path.as_bytes()),
                Err(VolumeError::InvalidPath(_))
            ));
        }
    }

    fn empty_report() -> TransferReport {
        TransferReport {
            entries_total: 0,
            files_transferred: 0,
            entries_deleted: 0,
            bytes_total: 0,
            bytes_matched: 0,
            bytes_literal: 0,
            bytes_literal_wire: 0,
            entries_skipped: 0,
            bytes_on_wire: 0,
            tree_digest: String::new(),
            verified: false,
        }
    }

    /// The receiver's last step, with the loopback channel standing in for
    /// the sender: equal digests verify, different ones fail on both
    /// sides, and the `Done` the sender gets carries the verdict.
    #[test]
    fn a_digest_mismatch_fails_the_transfer_on_both_sides() {
        write("verify/f", b"some content");
        let digest = volume::digest(&[]).unwrap();
        assert_eq!(digest.root.len(), 64, "{digest:?}");
        assert!(digest.entries >= 2 && digest.bytes >= 12, "{digest:?}");

        let ok = verify(empty_report(), 0, &digest, &digest).unwrap();
        assert!(ok.verified && ok.tree_digest == digest.root, "{ok:?}");
        let done = protocol::receive_done().unwrap();
        assert!(done.verified && done.tree_digest == digest.root, "{done:?}");
        check_verified(&done, &digest).unwrap();

        let source = TreeDigest {
            root: "0".repeat(64),
            ..digest.clone()
        };
        let err = verify(empty_report(), 0, &digest, &source).unwrap_err();
        assert_eq!(err.reason, "VerificationFailed");
        assert!(
            err.message.contains(&digest.root) && err.message.contains(&source.root),
            "{}",
            err.message
        );
        let done = protocol::receive_done().unwrap();
        assert!(
            !done.verified && done.tree_digest == digest.root,
            "{done:?}"
        );
        let err = check_verified(&done, &source).unwrap_err();
        assert_eq!(err.reason, "VerificationFailed");
        assert!(err.message.contains(&digest.root), "{}", err.message);
    }
}
