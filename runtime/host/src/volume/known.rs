//! Content hashes a volume already knows, so that the tree digest need not
//! read those files again: the ones a run learned while it read or wrote
//! whole files ([`KnownHashes`]), and the ones an earlier run's digest kept
//! for the next ([`HashStore`]). Either is used only while the file's
//! [`Stamp`] is the one the hash was learned with.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the epoch of a [`SystemTime`], for tests and callers
/// that compare trees.
pub fn unix_nanos(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

/// How long before a hash was read a file must have last changed for the
/// hash to be kept for a later run, where changes may share a timestamp. A
/// change stamps a file with the filesystem's coarse clock, so a write in
/// the same tick as the read (a few milliseconds; a second or two on
/// coarse filesystems) could leave the stamp as it was: such a file is
/// read again next time instead. See [`fine_ctime`] for filesystems where
/// no margin is needed. A volume keeps its margin as a setting
/// (`settle_ns`), which a test that must wait a file out sets to
/// [`TEST_SETTLE_NS`].
pub(crate) const SETTLE_NS: i64 = 2_000_000_000;

/// The margin of a test that waits for a file to settle: the rule is that
/// of [`SETTLE_NS`], and 200 ms is still well past a coarse clock's tick,
/// but waited out ten times sooner.
#[cfg(test)]
pub(crate) const TEST_SETTLE_NS: i64 = 200_000_000;

/// Changes that [`fine_ctime`] checked for in a row.
const PROBES: usize = 16;

/// Whether, on the filesystem of `dir`, a change made after a file's
/// status was read always gives it a new ctime, so a stamp can never miss
/// a later change (Linux 6.13's multigrain timestamps on ext4, XFS, Btrfs
/// and tmpfs). Then a hash may serve a later run however recently its file
/// changed, and [`Stamp::settled`] needs no margin.
///
/// Checked, not assumed from a version: an unnamed temporary file (never
/// visible in the directory) is written and stat'ed [`PROBES`] times in a
/// row, microseconds apart; on a coarse clock most of those changes would
/// share one tick. Any failure (no `O_TMPFILE`, a read-only mount) answers
/// no.
pub(crate) fn fine_ctime(dir: &impl rustix::fd::AsFd) -> bool {
    use rustix::fs::{Mode, OFlags, fstat, openat};
    let Ok(file) = openat(
        dir,
        ".",
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
    ) else {
        return false;
    };
    let ctime = |stat: rustix::fs::Stat| (stat.st_ctime, stat.st_ctime_nsec);
    let Ok(mut last) = fstat(&file).map(ctime) else {
        return false;
    };
    for i in 0..PROBES {
        if rustix::io::pwrite(&file, &[i as u8], 0) != Ok(1) {
            return false;
        }
        match fstat(&file).map(ctime) {
            Ok(now) if now != last => last = now,
            _ => return false,
        }
    }
    true
}

/// What identifies one version of a file: when any of it changed, so may
/// the content have. Two stamps are equal when they identify the same
/// version, whenever they were taken.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp {
    pub(super) inode: u64,
    pub(super) len: u64,
    pub(super) mtime_ns: i64,
    pub(super) ctime_ns: i64,
    /// When the stamp was taken (before the content it vouches for was
    /// read); 0 for stamps loaded from a [`HashStore`].
    seen_ns: i64,
}

impl PartialEq for Stamp {
    fn eq(&self, other: &Self) -> bool {
        (self.inode, self.len, self.mtime_ns, self.ctime_ns)
            == (other.inode, other.len, other.mtime_ns, other.ctime_ns)
    }
}

impl Eq for Stamp {}

impl Stamp {
    /// The stamp of an open regular file; `None` for anything else (a
    /// device's node does not change when its content does).
    pub(crate) fn of_file(file: &std::fs::File) -> Option<Self> {
        let meta = file.metadata().ok()?;
        meta.is_file().then(|| Self::of(&meta))
    }

    pub(crate) fn of(meta: &impl MetadataExt) -> Self {
        Self::new(
            meta.ino(),
            meta.size(),
            meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        )
    }

    /// A stamp kept by an earlier run: when it was taken is unknown, so
    /// it is only compared.
    pub(crate) fn stored(inode: u64, len: u64, mtime_ns: i64, ctime_ns: i64) -> Self {
        Self {
            inode,
            len,
            mtime_ns,
            ctime_ns,
            seen_ns: 0,
        }
    }

    /// A stamp taken now.
    pub(crate) fn new(inode: u64, len: u64, mtime_ns: i64, ctime_ns: i64) -> Self {
        Self {
            inode,
            len,
            mtime_ns,
            ctime_ns,
            seen_ns: unix_nanos(SystemTime::now()),
        }
    }

    /// Whether the file had last changed at least `margin_ns` before the
    /// stamp was taken, so that a hash of what was read after it may serve
    /// a later run ([`SETTLE_NS`], or 0 where [`fine_ctime`] holds).
    pub(crate) fn settled(&self, margin_ns: i64) -> bool {
        self.ctime_ns < self.seen_ns.saturating_sub(margin_ns)
    }
}

/// Content hashes a run learned while it read or wrote whole files (a
/// delta reads the new file whole and hashes it; a patch verifies the file
/// it rebuilt), so the tree digest does not read those files again. A hash
/// is used only while the file's [`Stamp`] is the one it was learned with,
/// and only once.
#[derive(Debug, Default)]
pub(crate) struct KnownHashes(Mutex<HashMap<OsString, (Stamp, blake3::Hash)>>);

impl KnownHashes {
    pub(crate) fn remember(&self, path: &OsStr, stamp: Stamp, hash: [u8; 32]) {
        let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        known.insert(path.to_owned(), (stamp, blake3::Hash::from_bytes(hash)));
    }

    /// Whether a hash of `path` is known.
    pub(crate) fn contains(&self, path: &OsStr) -> bool {
        let known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        known.contains_key(path)
    }

    /// Carries the hash of `path` over a change of its metadata alone (an
    /// owner), if it was learned for `before`.
    pub(crate) fn restamp(&self, path: &OsStr, before: Stamp, after: Stamp) {
        let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((stamp, _)) = known.get_mut(path)
            && *stamp == before
        {
            *stamp = after;
        }
    }

    /// The hash of `path` if it was learned for this very `stamp`, and
    /// whether it may serve a later run ([`Stamp::settled`] by `margin_ns`
    /// when learned).
    pub(crate) fn take(
        &self,
        path: &OsStr,
        stamp: Stamp,
        margin_ns: i64,
    ) -> Option<(blake3::Hash, bool)> {
        let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match known.remove(path) {
            Some((learned, hash)) if learned == stamp => Some((hash, learned.settled(margin_ns))),
            _ => None,
        }
    }
}

/// Where a tree's digest keeps the content hashes of the files it saw, so
/// that the next run's digest reads only the files that changed since (by
/// their stamp: inode, length, modification and change times).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashStore {
    /// Nowhere: every digest reads every file.
    Off,
    /// In the tree's state directory, outside the volume, where the
    /// receiving side keeps what one run leaves for the next.
    State,
    /// In this file, for a volume that is not written (the sending side).
    File(PathBuf),
}

/// Hashes a store holds, by inode: a [`Stamp`] names one version of one
/// file whatever its path (hard links share it), so no path is kept.
/// The store's own bytes, whose entries [`encode`] sorted by inode, so a
/// lookup is a binary search in them: nothing is decoded or allocated
/// up front (for 100,000 files that was 7 MB of new memory, whose page
/// faults were 4.7% of a steady receiver's CPU samples), and since a
/// digest looks hashes up in walk order, which on most filesystems is
/// close to inode order, the searches stay in cache.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    /// The header, then the entries; empty when nothing is stored.
    bytes: Vec<u8>,
}

impl Stored {
    /// The entries, sorted by inode.
    fn entries(&self) -> &[[u8; ENTRY]] {
        self.bytes.get(HEADER..).unwrap_or_default().as_chunks().0
    }

    /// The hash kept for `stamp`, if it is kept for that very stamp.
    pub(crate) fn get(&self, stamp: Stamp) -> Option<blake3::Hash> {
        let entries = self.entries();
        let at = entries
            .binary_search_by_key(&stamp.inode, |e| be_u64(e, 0))
            .ok()?;
        let (kept, hash) = decode_entry(&entries[at]);
        (kept == stamp).then_some(hash)
    }

    /// Every stamp and hash held, by inode.
    #[cfg(test)]
    pub(crate) fn decoded(&self) -> Vec<(Stamp, blake3::Hash)> {
        self.entries().iter().map(decode_entry).collect()
    }
}

const MAGIC: &[u8; 4] = b"WMHS";
/// 2: entries sorted by inode (1 kept them in walk order). 3: the
/// hashes are content hashes ([`wasmover_block::ContentHasher`]), not
/// BLAKE3; a store of 2 is ignored, its files read again.
const VERSION: u8 = 3;

/// Bytes of the magic and version.
const HEADER: usize = MAGIC.len() + 1;

/// Bytes of one entry.
const ENTRY: usize = 4 * 8 + 32;

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn decode_entry(e: &[u8; ENTRY]) -> (Stamp, blake3::Hash) {
    let stamp = Stamp::stored(
        be_u64(e, 0),
        be_u64(e, 8),
        be_u64(e, 16) as i64,
        be_u64(e, 24) as i64,
    );
    let hash = blake3::Hash::from_bytes(e[32..].try_into().expect("32 bytes"));
    (stamp, hash)
}

/// Sorts `kept` by inode and encodes it: magic `WMHS`, version, then per
/// file, by inode, its inode, length, mtime and ctime
/// (u64/i64) and content hash; then the count (u64) and a BLAKE3 of all
/// that, so a torn or damaged store is ignored rather than trusted.
/// Big-endian.
pub(crate) fn encode(kept: &mut [(Stamp, blake3::Hash)]) -> Vec<u8> {
    // Walk order is mostly inode order already, which this sort is quick on.
    kept.sort_unstable_by_key(|(stamp, _)| stamp.inode);
    let mut out = Vec::with_capacity(HEADER + kept.len() * ENTRY + 40);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    for (stamp, hash) in kept.iter() {
        out.extend_from_slice(&stamp.inode.to_be_bytes());
        out.extend_from_slice(&stamp.len.to_be_bytes());
        out.extend_from_slice(&stamp.mtime_ns.to_be_bytes());
        out.extend_from_slice(&stamp.ctime_ns.to_be_bytes());
        out.extend_from_slice(hash.as_bytes());
    }
    out.extend_from_slice(&(kept.len() as u64).to_be_bytes());
    seal(out)
}

/// Appends a BLAKE3 of `body` to it, so a torn or damaged copy shows.
pub(super) fn seal(mut body: Vec<u8>) -> Vec<u8> {
    let check = blake3::hash(&body);
    body.extend_from_slice(check.as_bytes());
    body
}

/// The body [`seal`] sealed, at least `min` bytes of it, or why it cannot
/// be trusted.
pub(super) fn unseal(bytes: &[u8], min: usize) -> Result<&[u8], &'static str> {
    if bytes.len() < min + 32 {
        return Err("it is truncated");
    }
    let (body, check) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != check {
        return Err("its checksum does not match (torn or damaged)");
    }
    Ok(body)
}

/// Takes the bytes [`encode`] wrote for lookups, or says why they cannot
/// be used.
pub(crate) fn decode(mut bytes: Vec<u8>) -> Result<Stored, &'static str> {
    let body = unseal(&bytes, HEADER + 8)?;
    if &body[..MAGIC.len()] != MAGIC {
        return Err("it is not a hash store");
    }
    if body[MAGIC.len()] != VERSION {
        return Err("it is of another version");
    }
    let entries = body.len() - HEADER - 8;
    let count = be_u64(body, HEADER + entries);
    if !entries.is_multiple_of(ENTRY) || (entries / ENTRY) as u64 != count {
        return Err("its length does not match its count");
    }
    bytes.truncate(HEADER + entries);
    let stored = Stored { bytes };
    if !stored.entries().is_sorted_by_key(|e| be_u64(e, 0)) {
        return Err("its entries are not sorted by inode");
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(inode: u64) -> Stamp {
        Stamp::new(inode, 10, 1_000, 2_000)
    }

    #[test]
    fn a_store_round_trips_and_refuses_any_damage() {
        // In walk order, which is not inode order.
        let mut kept = vec![
            (stamp(9), blake3::hash(b"c")),
            (stamp(1), blake3::hash(b"a")),
            (stamp(2), blake3::hash(b"b")),
        ];
        let bytes = encode(&mut kept.clone());
        let stored = decode(bytes.clone()).unwrap();
        for (stamp, hash) in &kept {
            assert_eq!(stored.get(*stamp), Some(*hash));
        }
        assert_eq!(stored.get(stamp(3)), None);
        let other = Stamp::new(2, 11, 1_000, 2_000);
        assert_eq!(stored.get(other), None, "another version of the same inode");
        assert_eq!(decode(encode(&mut [])).unwrap().get(stamp(1)), None);
        kept.sort_unstable_by_key(|(stamp, _)| stamp.inode);
        assert_eq!(stored.decoded(), kept, "held by inode");

        for cut in 0..bytes.len() {
            assert!(decode(bytes[..cut].to_vec()).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(decode(bad).is_err(), "flipped at {at}");
        }
        // Well sealed but out of order (as version 1 wrote them): a
        // search could miss, so the store is not used.
        let mut unsorted = bytes[..HEADER].to_vec();
        for at in [2, 0, 1] {
            unsorted.extend_from_slice(&bytes[HEADER + at * ENTRY..][..ENTRY]);
        }
        unsorted.extend_from_slice(&3u64.to_be_bytes());
        assert_eq!(
            decode(seal(unsorted)).unwrap_err(),
            "its entries are not sorted by inode"
        );
    }

    #[test]
    fn only_a_file_that_changed_well_before_it_was_read_is_settled() {
        let now = unix_nanos(SystemTime::now());
        assert!(Stamp::new(1, 1, 0, now - 3 * SETTLE_NS).settled(SETTLE_NS));
        assert!(!Stamp::new(1, 1, 0, now).settled(SETTLE_NS));
        assert!(!Stamp::new(1, 1, 0, now - SETTLE_NS / 2).settled(SETTLE_NS));
        assert!(Stamp::new(1, 1, 0, now - 1000).settled(0));
        // The time a stamp was taken is not part of what it identifies.
        assert_eq!(
            Stamp::new(1, 1, 0, 5),
            Stamp {
                seen_ns: 0,
                ..Stamp::new(1, 1, 0, 5)
            }
        );
    }
}
