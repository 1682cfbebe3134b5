//! A directory tree as a volume, opened without ambient authority.
//!
//! Every path a module names is relative to the volume root and is resolved
//! by `cap-std`, which refuses `..` and symlinks that lead outside. A volume
//! opened read-only refuses every change.
//!
//! This file holds the [`Tree`], its opening and settings, and the layout
//! of its state directory ([`STATE_DIR`]); each other job has its file:
//! listing ([`scan`]), the tree digest ([`digest`], [`digester`],
//! [`digest_walk`]) and the hashes it keeps ([`hash_store`]), changes
//! ([`mutate`]), files rebuilt beside the old ones ([`stage`]) or patched in
//! place ([`journal`]), partial content ([`partial`]) and granule hashes
//! ([`granules`]) kept for the next run.

mod digest;
mod digest_walk;
mod digester;
#[cfg(test)]
mod fixtures;
mod granules;
mod hash_store;
mod journal;
mod mutate;
mod partial;
mod scan;
mod stage;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use cap_std::fs::{Dir, MetadataExt};
use rustix::fs::{Mode, OFlags};

use super::access::Access;
use super::ahead::Ahead;
use super::error::VolumeError;
use super::kept_hashes;
use super::known::{self, HashStore, KnownHashes, Stamp};
use super::watch::Watch;
use crate::bindings::volume::Entry;

/// A directory tree granted to one run.
pub struct Tree {
    root: PathBuf,
    dir: Dir,
    access: Access,
    /// Whether partial content may be kept in [`STATE_DIR`]: when none
    /// is, the per-file lookups of it are skipped.
    has_partials: AtomicBool,
    /// Whether granule hashes may be kept in [`GRANULES`], likewise.
    has_granules: AtomicBool,
    /// Hashes of files this run read or wrote whole.
    pub(super) known: KnownHashes,
    /// Where the digest keeps the hashes it saw for the next run.
    store: HashStore,
    /// Whether the digest reads every file, trusting no stored hash.
    read_all: bool,
    /// How long before a stamp a file must have changed for a hash read
    /// after it to serve a later run ([`Stamp::settled`]).
    settle_ns: i64,
    /// What the last scan found, for the digest.
    scanned: Mutex<Option<Box<Scanned>>>,
}

/// The entries a scan returned, with the stamp of each, in order. A
/// writable tree's scan also watches its directories, for the digest to
/// know which entries changed since.
struct Scanned {
    entries: Vec<Entry>,
    stamps: Vec<Stamp>,
    /// The indices of each directory's entries, by its path.
    children: HashMap<String, Vec<u32>>,
    watch: Option<Watch>,
    /// The files being hashed ahead of the digest, while watched.
    ahead: Option<Ahead>,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree")
            .field("root", &self.root)
            .field("access", &self.access)
            .finish()
    }
}

/// Directory at the root of a volume where the host keeps what one run
/// leaves for the next: the partial content of files whose transfer a lost
/// peer cut off, so the next run resumes instead of resending it, and the
/// content hashes the digest saw ([`HashStore::InVolume`]). It is not part
/// of the replicated tree: scans and digests skip it.
pub const STATE_DIR: &str = ".wasmover";

/// What a volume's root holds that is not part of the replicated tree:
/// the [`STATE_DIR`], and the `lost+found` of the file system, which
/// `fsck` owns; neither is listed, digested, sent or removed, as VolSync's
/// movers leave `lost+found` alone.
pub(super) const HIDDEN_AT_ROOT: [&str; 2] = [STATE_DIR, "lost+found"];

/// Where `path`'s partial content is kept.
fn partial_path(path: &str) -> String {
    format!("{STATE_DIR}/partial/{path}")
}

/// Where [`HashStore::InVolume`] keeps the hashes.
const HASHES: &str = ".wasmover/hashes";

/// Where the granule hashes of large files are kept ([`Tree::keep_hashes`]).
const GRANULES: &str = ".wasmover/granules";

/// Where the granule hashes kept of `path` live: named by a hash of the
/// path, which the file also holds.
fn granules_path(path: &str) -> String {
    format!(
        "{GRANULES}/{}",
        &blake3::hash(path.as_bytes()).to_hex()[..32]
    )
}

/// The undo journal of the file being patched in place, and the path of
/// that file (written first): a run interrupted while it patched leaves
/// both, and the next open of the tree rolls the file back.
const JOURNAL: &str = ".wasmover/journal";
const JOURNAL_TARGET: &str = ".wasmover/journal-target";

/// Suffix of the temporary files and links a change is staged in before it
/// is renamed into place; a run interrupted part-way leaves at most these
/// behind, and the next run removes them as extraneous.
pub const STAGING_SUFFIX: &str = ".wasmover-tmp";

impl Tree {
    /// Opens the directory `root`. A writable tree keeps its hashes in
    /// its state directory; a read-only one nowhere, unless told
    /// ([`Tree::set_hash_store`]).
    pub fn open(root: impl Into<PathBuf>, access: Access) -> io::Result<Self> {
        let root = root.into();
        let dir = Dir::open_ambient_dir(&root, cap_std::ambient_authority())?;
        // Only a writable tree is probed: nothing is written to a volume
        // granted read-only, not even an unnamed file.
        let settle_ns = match access {
            Access::ReadWrite if known::fine_ctime(&dir) => 0,
            _ => known::SETTLE_NS,
        };
        let has_partials =
            AtomicBool::new(dir.symlink_metadata(format!("{STATE_DIR}/partial")).is_ok());
        let has_granules = AtomicBool::new(dir.symlink_metadata(GRANULES).is_ok());
        let tree = Self {
            root,
            dir,
            access,
            has_partials,
            has_granules,
            known: KnownHashes::default(),
            store: match access {
                Access::ReadWrite => HashStore::InVolume,
                Access::ReadOnly => HashStore::Off,
            },
            read_all: false,
            settle_ns,
            scanned: Mutex::new(None),
        };
        if access == Access::ReadWrite {
            tree.recover()?;
        }
        Ok(tree)
    }

    /// Replaces `file` in the state directory `dir` with `bytes` whole: a
    /// reader sees the old content or the new, never a torn file.
    fn replace_state_file(&self, dir: &str, file: &str, bytes: &[u8]) -> io::Result<()> {
        let staged = format!("{file}{STAGING_SUFFIX}");
        self.dir.create_dir_all(dir)?;
        self.dir.write(&staged, bytes)?;
        self.dir.rename(&staged, &self.dir, file)
    }

    /// Makes the state directory's entries durable.
    fn sync_state_dir(&self) -> io::Result<()> {
        let dir = rustix::fs::openat(
            &self.dir,
            STATE_DIR,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rustix::fs::fsync(dir)?;
        Ok(())
    }

    /// How long before a stamp a file must have changed for a hash read
    /// after it to serve a later run: 0 where a later change always shows
    /// in the stamp ([`known::fine_ctime`]), else [`known::SETTLE_NS`].
    pub(crate) fn settle_ns(&self) -> i64 {
        self.settle_ns
    }

    /// Sets where the digest keeps the hashes it saw for the next run
    /// ([`HashStore::InVolume`] needs a writable tree).
    pub fn set_hash_store(&mut self, store: HashStore) -> io::Result<()> {
        if store == HashStore::InVolume && self.access == Access::ReadOnly {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a read-only volume cannot keep its hashes in itself",
            ));
        }
        self.store = store;
        Ok(())
    }

    /// Makes the digest read every file, trusting no stored hash (a full
    /// check); it still keeps what it read for the next run.
    pub fn read_every_file(&mut self) {
        self.read_all = true;
    }

    /// The host directory behind the volume.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How the volume was opened.
    pub fn access(&self) -> Access {
        self.access
    }

    fn writable(&self) -> Result<(), VolumeError> {
        match self.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly => Err(VolumeError::ReadOnly),
        }
    }

    /// Opens a regular file for reading, with its length and stamp (taken
    /// as it is opened); `None` if there is none at `path`.
    pub(crate) fn open_file(
        &self,
        path: &str,
    ) -> Result<Option<(std::fs::File, u64, Stamp)>, VolumeError> {
        let path = checked(path)?;
        let meta = match self.dir.symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(VolumeError::io(path)(e)),
        };
        if !meta.is_file() {
            return Ok(None);
        }
        let file = self.dir.open(path).map_err(VolumeError::io(path))?;
        Ok(Some((file.into_std(), meta.len(), cap_stamp(&meta))))
    }

    /// Removes what earlier runs left that a completed transfer no longer
    /// needs: every partial content (it belongs to files the source no
    /// longer has, or has as the destination does now) and the granule
    /// hashes kept of files the tree no longer holds. Best effort.
    pub fn discard_leftovers(&self) {
        if self.has_partials.swap(false, Ordering::Relaxed) {
            let _ = self.dir.remove_dir_all(format!("{STATE_DIR}/partial"));
        }
        if self.has_granules.load(Ordering::Relaxed)
            && let Ok(entries) = self.dir.read_dir(GRANULES)
        {
            for entry in entries.flatten() {
                let name = format!("{GRANULES}/{}", entry.file_name().to_string_lossy());
                let kept_for = self
                    .dir
                    .open(&name)
                    .ok()
                    .and_then(|file| kept_hashes::path_of(file.into_std()));
                let gone = kept_for.is_none_or(
                    |path| !matches!(self.dir.symlink_metadata(&path), Ok(meta) if meta.is_file()),
                );
                if gone {
                    let _ = self.dir.remove_file(&name);
                }
            }
            if self.dir.remove_dir(GRANULES).is_ok() {
                self.has_granules.store(false, Ordering::Relaxed);
            }
        }
        let _ = self.dir.remove_dir(STATE_DIR);
    }
}

/// The [`Stamp`] of what cap-std's metadata describes.
fn cap_stamp(meta: &cap_std::fs::Metadata) -> Stamp {
    Stamp::new(
        meta.ino(),
        meta.len(),
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
    )
}

/// Checks that a module's path stays inside the volume.
fn checked(path: &str) -> Result<&str, VolumeError> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        Err(VolumeError::InvalidPath(path.to_owned()))
    } else {
        Ok(path)
    }
}

fn staging_path(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/.{name}{STAGING_SUFFIX}"),
        None => format!(".{path}{STAGING_SUFFIX}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the probe finds a fine ctime, a change right after a stat
    /// always moves the ctime, so a file written just now keeps its hash
    /// at once; elsewhere it waits to settle.
    #[test]
    fn fine_ctime_means_a_change_after_a_stat_always_shows() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(root.path(), cap_std::ambient_authority()).unwrap();
        let fine = known::fine_ctime(&dir);
        let f = root.path().join("f");
        std::fs::write(&f, b"a").unwrap();
        let mut same = 0;
        for i in 0..500u32 {
            let before = std::fs::metadata(&f).unwrap();
            std::fs::write(&f, i.to_le_bytes()).unwrap();
            let after = std::fs::metadata(&f).unwrap();
            same += u32::from(
                (before.ctime(), before.ctime_nsec()) == (after.ctime(), after.ctime_nsec()),
            );
        }
        if fine {
            assert_eq!(
                same, 0,
                "the probe said fine, but {same} of 500 changes kept the ctime"
            );
        }
        let tree = Tree::open(root.path(), Access::ReadWrite).unwrap();
        assert_eq!(tree.settle_ns(), if fine { 0 } else { known::SETTLE_NS });
        tree.digest().unwrap();
        assert_eq!(
            root.path().join(HASHES).exists(),
            fine,
            "a file written just now is kept only where a later change always shows"
        );
        // Never probed (nor kept in itself) when read-only.
        let read_only = Tree::open(root.path(), Access::ReadOnly).unwrap();
        assert_eq!(read_only.settle_ns(), known::SETTLE_NS);
    }

    #[test]
    fn paths_that_escape_are_refused() {
        for bad in ["", "/etc", "a/../b", "..", "a//b", "./a", "a/", "a\0b"] {
            assert!(
                matches!(checked(bad), Err(VolumeError::InvalidPath(_))),
                "{bad:?}"
            );
        }
        assert_eq!(checked("a/b c/ü").unwrap(), "a/b c/ü");
    }

    #[test]
    fn symlinks_cannot_lead_outside_the_volume() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        let volume = Tree::open(root.path(), Access::ReadWrite).unwrap();
        assert!(volume.open_file("escape/secret").is_err());
        assert!(volume.create_staged("escape/secret").is_err());
        assert!(outside.path().join("secret").exists());
    }

    #[test]
    fn read_only_volume_refuses_changes() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), b"x").unwrap();
        let volume = Tree::open(root.path(), Access::ReadOnly).unwrap();
        assert!(matches!(volume.remove("f"), Err(VolumeError::ReadOnly)));
        assert!(matches!(volume.create_dir("d"), Err(VolumeError::ReadOnly)));
        assert!(matches!(
            volume.create_staged("f"),
            Err(VolumeError::ReadOnly)
        ));
        assert!(root.path().join("f").exists());
    }
}
