//! The tree digest (see `tree-digest` in `wit/mover.wit`): from a scan's
//! entries, a walk that reuses what the scan's watch saw unchanged, or a
//! fresh walk.

use std::ffi::{OsStr, OsString};

use super::digest_walk::{Reuse, digest_dir};
use super::digester::Digester;
use super::{Scanned, Tree, checked};
use crate::volume::access::Access;
use crate::volume::ahead::Ahead;
use crate::volume::content::{DIGEST_BUFFER, content_hash, open_to_read};
use crate::volume::entry::{EntryKind, TreeDigest};
use crate::volume::error::VolumeError;
use crate::volume::watch::Watch;

impl Tree {
    /// The tree digest (see `tree-digest` in `wit/mover.wit`): the entries
    /// in [`scan`](Self::scan) order, each hashed as it is met, with the
    /// content of every regular file hashed natively, unless its hash is
    /// known for the file's unchanged stamp: learned this run, or kept in
    /// the [`HashStore`](crate::HashStore) by an earlier digest. The hashes
    /// of files that had settled are kept for the next run. Memory is a
    /// read buffer per thread, the names of the directories being walked,
    /// a window of their entries (`DIGEST_WINDOW`), and 64 bytes per file
    /// of kept hashes.
    ///
    /// A read-only tree that was scanned is not walked again: nothing
    /// this run does changes it, and its digest is of the entries as the
    /// scan found them (what the run sent), so a source that changed
    /// since shows as a mismatch with the destination, not as a second
    /// version of the source. A writable tree that was scanned is walked
    /// again only where its watch saw changes (an inotify watch of its
    /// directories).
    pub fn digest(&self) -> Result<TreeDigest, VolumeError> {
        self.digest_leaving_out(&[])
    }

    /// The [`digest`](Self::digest) without the entries at `leave_out`
    /// and under them.
    pub fn digest_leaving_out(&self, leave_out: &[OsString]) -> Result<TreeDigest, VolumeError> {
        let mut scanned = self.scanned.lock().unwrap_or_else(|e| e.into_inner());
        let ahead = scanned
            .as_mut()
            .and_then(|s| s.ahead.take())
            .and_then(Ahead::finish);
        // The thread loaded the kept hashes already, if there was one.
        let (stored, early) = ahead.unwrap_or_else(|| (self.load_hashes(), Vec::new()));
        let mut digest = Digester::new(self, stored, leave_out);
        let watched = scanned
            .as_mut()
            .and_then(|scanned| scanned.watch.as_mut())
            .is_some_and(Watch::update);
        match scanned.as_deref() {
            Some(
                scanned @ Scanned {
                    watch: Some(watch), ..
                },
            ) if watched => {
                let reuse = Reuse {
                    scanned,
                    watch,
                    early: &early,
                };
                digest_dir(&self.dir, OsStr::new(""), Some(reuse), &mut digest)?;
            }
            Some(scanned) if self.access == Access::ReadOnly => {
                self.digest_scanned(scanned, &mut digest)?
            }
            _ => digest_dir(&self.dir, OsStr::new(""), None, &mut digest)?,
        }
        drop(scanned);
        let (digest, mut kept) = digest.finish();
        self.save_hashes(&mut kept);
        Ok(digest)
    }

    /// Adds the entries `scanned` found to `digest`, as found.
    fn digest_scanned(
        &self,
        scanned: &Scanned,
        digest: &mut Digester<'_>,
    ) -> Result<(), VolumeError> {
        let mut buffer = vec![0; DIGEST_BUFFER];
        let covered = self.attributes();
        for (i, (entry, &stamp)) in scanned.entries.iter().zip(&scanned.stamps).enumerate() {
            let file =
                match entry.kind {
                    EntryKind::File => match digest.known_hash(entry, stamp) {
                        Some(known) => Some(known),
                        None => Some(digest.read_hash(entry, stamp, || {
                            self.content_hash(&entry.path, &mut buffer)
                        })?),
                    },
                    _ => None,
                };
            digest.add(entry, file, scanned.attributes_digest(i, covered))?;
        }
        Ok(())
    }

    /// BLAKE3 of the content of the regular file at `path`, and its length
    /// as read; not followed if a symlink took its place.
    fn content_hash(
        &self,
        path: &OsStr,
        buffer: &mut [u8],
    ) -> Result<(blake3::Hash, u64), VolumeError> {
        let file = open_to_read(&self.dir, checked(path)?).map_err(VolumeError::io(path))?;
        content_hash(file.into_std(), buffer).map_err(VolumeError::io(path))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{digest_of, digest_tree, pin_link};
    use super::*;
    use crate::volume::{HashStore, Stamp};

    /// The stamps the block calls take (as a file is opened; after a
    /// staged file is renamed into place) are the ones the digest's walk
    /// sees, so what they remember is used: a wrong hash shows.
    #[test]
    fn the_stamps_of_opened_and_committed_files_match_the_digests() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("read"), b"abc").unwrap();
        let mut volume = Tree::open(root.path(), Access::ReadWrite).unwrap();
        // What this run learned, not what an earlier one kept.
        volume.set_hash_store(HashStore::Off).unwrap();
        let (_, _, stamp) = volume.open_file(OsStr::new("read")).unwrap().unwrap();
        let (mut file, staged) = volume.create_staged(OsStr::new("written")).unwrap();
        std::io::Write::write_all(&mut file, b"xyz").unwrap();
        let honest = |v: &Tree| {
            v.known.take(OsStr::new("read"), stamp, 0);
            v.known
                .take(OsStr::new("written"), Stamp::new(0, 0, 0, 0), 0);
            v.digest().unwrap().root
        };
        volume
            .commit_staged(
                &file,
                &staged,
                OsStr::new("written"),
                0o644,
                1_000_000_000,
                [7; 32],
            )
            .unwrap();
        let with_written = volume.digest().unwrap().root;
        assert_ne!(
            with_written,
            honest(&volume),
            "the committed file's hash was not used"
        );
        volume.known.remember(OsStr::new("read"), stamp, [7; 32]);
        assert_ne!(
            volume.digest().unwrap().root,
            honest(&volume),
            "the opened file's hash was not used"
        );
    }

    #[test]
    fn the_digest_trusts_a_known_hash_only_for_the_file_version_it_was_learned_for() {
        let root = tempfile::tempdir().unwrap();
        let f = root.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        let mut volume = Tree::open(root.path(), Access::ReadWrite).unwrap();
        // What this run learned, not what an earlier one kept.
        volume.set_hash_store(HashStore::Off).unwrap();
        let honest = volume.digest().unwrap().root;
        let meta = std::fs::metadata(&f).unwrap();
        volume
            .known
            .remember(OsStr::new("f"), Stamp::of(&meta), [7; 32]);
        assert_ne!(
            volume.digest().unwrap().root,
            honest,
            "the known hash is used"
        );
        assert_eq!(volume.digest().unwrap().root, honest, "and only once");

        // Rewritten with the same length and mtime after the hash was
        // learned: the change time differs, so the file is read again.
        volume
            .known
            .remember(OsStr::new("f"), Stamp::of(&meta), [7; 32]);
        std::fs::write(&f, b"abd").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(meta.modified().unwrap())
            .unwrap();
        let fresh = Tree::open(root.path(), Access::ReadOnly)
            .unwrap()
            .digest()
            .unwrap()
            .root;
        assert_ne!(fresh, honest);
        assert_eq!(volume.digest().unwrap().root, fresh);
    }

    /// A scanned read-only tree digests the entries its scan found: what
    /// the run sent, even if the tree changed since. A file the scan found
    /// that is gone fails the digest.
    #[test]
    fn a_scanned_read_only_tree_digests_what_its_scan_found() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().unwrap();
        digest_tree(root.path());
        pin_link(root.path());
        let walked = digest_of(root.path());
        let volume = Tree::open(root.path(), Access::ReadOnly).unwrap();
        assert_eq!(volume.scan().unwrap().len(), 6);
        let same = |a: TreeDigest, b: &TreeDigest| {
            (a.root, a.entries, a.bytes) == (b.root.clone(), b.entries, b.bytes)
        };
        assert!(same(volume.digest().unwrap(), &walked));

        std::fs::write(root.path().join("added"), b"new").unwrap();
        std::fs::set_permissions(
            root.path().join("empty"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        assert_ne!(digest_of(root.path()).root, walked.root);
        assert!(same(volume.digest().unwrap(), &walked), "as scanned");

        std::fs::remove_file(root.path().join("d/e/f")).unwrap();
        let err = volume.digest().unwrap_err();
        assert!(err.to_string().contains("d/e/f"), "{err}");
        // Scanned again, it digests the tree as it is now.
        volume.scan().unwrap();
        assert!(same(volume.digest().unwrap(), &digest_of(root.path())));
    }
}
