//! What the tree digest covers of each entry, and how it is encoded: the
//! records hashed in [`scan`](super::scan) order, and the content hash of
//! each regular file, known or read.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use super::Tree;
use crate::volume::attributes::Namespaces;
use crate::volume::content::DIGEST_CONTEXT;
use crate::volume::entry::{Entry, EntryKind, TreeDigest};
use crate::volume::error::VolumeError;
use crate::volume::known::{HashStore, Stamp, Stored};

/// Bytes of entry records gathered before they are hashed: BLAKE3 hashes
/// many 1 KiB chunks at once only when it is given them at once.
const RECORDS: usize = 64 << 10;

/// A tree digest being computed, entry by entry.
pub(super) struct Digester<'t> {
    tree: &'t Tree,
    hasher: blake3::Hasher,
    /// Records not hashed yet.
    records: Vec<u8>,
    entries: u64,
    bytes: u64,
    stored: Stored,
    /// The hashes to keep for the next run.
    kept: Vec<(Stamp, blake3::Hash)>,
    /// Paths left out, each with its tree.
    leave_out: &'t [OsString],
}

/// A regular file's content hash and its length as read.
pub(super) struct FileHash {
    hash: blake3::Hash,
    len: u64,
    /// The stamp to keep the hash under for the next run, if it may be.
    keep: Option<Stamp>,
}

impl<'t> Digester<'t> {
    /// A digest of `tree` without the entries at `leave_out` and under
    /// them, which trusts the hashes `stored` kept by an earlier digest.
    pub(super) fn new(tree: &'t Tree, stored: Stored, leave_out: &'t [OsString]) -> Self {
        Self {
            tree,
            hasher: blake3::Hasher::new_derive_key(DIGEST_CONTEXT),
            records: Vec::with_capacity(2 * RECORDS),
            entries: 0,
            bytes: 0,
            stored,
            kept: Vec::new(),
            leave_out,
        }
    }

    /// The namespaces of extended attributes the digest covers.
    pub(super) fn attributes(&self) -> Namespaces {
        self.tree.attributes()
    }

    /// Whether `path` is left out: it or a directory above it.
    fn left_out(&self, path: &OsStr) -> bool {
        self.leave_out.iter().any(|out| {
            (path.as_bytes().strip_prefix(out.as_bytes()))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
        })
    }

    /// The content hash of the regular file `entry` with `stamp`, if it
    /// is known for that stamp: learned this run, or kept by an earlier
    /// digest.
    pub(super) fn known_hash(&self, entry: &Entry, stamp: Stamp) -> Option<FileHash> {
        let tree = self.tree;
        let (hash, keep) = match tree.known.take(&entry.path, stamp, tree.settle_ns) {
            Some((hash, settled)) => (hash, settled),
            None => (self.stored.get(stamp)?, true),
        };
        Some(FileHash {
            hash,
            len: entry.size,
            keep: (keep && tree.store != HashStore::Off).then_some(stamp),
        })
    }

    /// The content hash of the regular file `entry` with `stamp`, as
    /// `read` computes it, kept for the next run if the file had settled
    /// and was read whole.
    pub(super) fn read_hash(
        &self,
        entry: &Entry,
        stamp: Stamp,
        read: impl FnOnce() -> Result<(blake3::Hash, u64), VolumeError>,
    ) -> Result<FileHash, VolumeError> {
        let (hash, len) = read()?;
        let keep = self.tree.store != HashStore::Off
            && stamp.settled(self.tree.settle_ns)
            && len == entry.size;
        Ok(FileHash {
            hash,
            len,
            keep: keep.then_some(stamp),
        })
    }

    /// Adds one entry, with its content hash if it is a regular file,
    /// and the digest of its extended attributes if the tree covers them:
    /// `attributes` if the caller read it, else read by the entry's path.
    pub(super) fn add(
        &mut self,
        entry: &Entry,
        file: Option<FileHash>,
        attributes: Option<[u8; 32]>,
    ) -> Result<(), VolumeError> {
        if !self.leave_out.is_empty() && self.left_out(&entry.path) {
            return Ok(());
        }
        let attributes = match !self.tree.attributes().is_empty() && entry.kind != EntryKind::Block
        {
            true => match attributes {
                Some(read) => Some(read),
                None => Some(self.tree.attributes_digest(&entry.path)?),
            },
            false => None,
        };
        let kind: u8 = match entry.kind {
            EntryKind::File => 0,
            EntryKind::Directory => 1,
            EntryKind::Symlink => 2,
            EntryKind::Block => 3,
            EntryKind::Fifo => 4,
            EntryKind::Socket => 5,
            EntryKind::CharDevice => 6,
            EntryKind::BlockDevice => 7,
        };
        let records = &mut self.records;
        records.push(kind);
        records.extend_from_slice(&(entry.path.len() as u64).to_le_bytes());
        records.extend_from_slice(entry.path.as_bytes());
        records.extend_from_slice(&entry.mode.to_le_bytes());
        records.extend_from_slice(&entry.mtime_ns.to_le_bytes());
        match (entry.kind, file) {
            (EntryKind::File, Some(file)) => {
                if let Some(stamp) = file.keep {
                    self.kept.push((stamp, file.hash));
                }
                records.extend_from_slice(&file.len.to_le_bytes());
                records.extend_from_slice(file.hash.as_bytes());
                self.bytes += file.len;
            }
            (EntryKind::Symlink, _) => {
                records.extend_from_slice(blake3::hash(entry.link_target.as_bytes()).as_bytes());
            }
            (EntryKind::CharDevice | EntryKind::BlockDevice, _) => {
                records.extend_from_slice(&entry.rdev.to_le_bytes());
            }
            _ => {}
        }
        if let Some(attributes) = attributes {
            records.extend_from_slice(&attributes);
        }
        self.entries += 1;
        if self.records.len() >= RECORDS {
            self.hasher.update(&self.records);
            self.records.clear();
        }
        Ok(())
    }

    /// The digest, and the hashes to keep for the next run.
    pub(super) fn finish(mut self) -> (TreeDigest, Vec<(Stamp, blake3::Hash)>) {
        self.hasher.update(&self.records);
        self.hasher.update(&self.entries.to_le_bytes());
        self.hasher.update(&self.bytes.to_le_bytes());
        let digest = TreeDigest {
            root: self.hasher.finalize().to_hex().to_string(),
            entries: self.entries,
            bytes: self.bytes,
        };
        (digest, self.kept)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{digest_of, digest_tree, pin_link, settle_root, tree_changes};

    #[test]
    fn equal_trees_have_equal_digests() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        digest_tree(a.path());
        digest_tree(b.path());
        // A symlink's own mtime is set as the receiver sets it.
        pin_link(a.path());
        pin_link(b.path());
        let (da, db) = (digest_of(a.path()), digest_of(b.path()));
        assert_eq!(da.root, db.root);
        assert_eq!(da.root.len(), 64);
        assert_eq!((da.entries, da.bytes), (6, (3 << 20) + 12));
        // Reading does not change it.
        assert_eq!(digest_of(a.path()).root, da.root);
    }

    /// The digest is a format two versions of wasmover compare: the same
    /// tree must give the same root in every version, or a newer agent
    /// fails every transfer with an older one. A change of what it covers
    /// or how must change [`DIGEST_CONTEXT`](crate::volume::content::DIGEST_CONTEXT)
    /// (and this value).
    #[test]
    fn the_digest_of_a_fixed_tree_is_the_same_in_every_version() {
        let root = tempfile::tempdir().unwrap();
        digest_tree(root.path());
        pin_link(root.path());
        assert_eq!(
            digest_of(root.path()).root,
            "7a87d40318b24a3fcc69f3fdb85b087babaa99300e0aad73a89b603cc6a0c644"
        );
    }

    /// Every property the digest covers changes it: one change at a time
    /// to a copy of the same tree.
    #[test]
    fn any_change_to_the_tree_changes_the_digest() {
        let base = tempfile::tempdir().unwrap();
        digest_tree(base.path());
        pin_link(base.path());
        let expected = digest_of(base.path()).root;
        for (what, change) in tree_changes() {
            let copy = tempfile::tempdir().unwrap();
            digest_tree(copy.path());
            pin_link(copy.path());
            assert_eq!(digest_of(copy.path()).root, expected, "before: {what}");
            change(copy.path());
            settle_root(copy.path());
            let changed = digest_of(copy.path()).root;
            assert_ne!(changed, expected, "{what} did not change the digest");
        }
    }
}
