//! A directory tree as a volume, opened without ambient authority.
//!
//! Every path a module names is relative to the volume root and is resolved
//! by `cap-std`, which refuses `..` and symlinks that lead outside. A volume
//! opened read-only refuses every change.
//!
//! This file holds the [`Tree`], its opening and settings, and the layout
//! of its state directory (outside the volume: see [`Tree::open_with_state`]);
//! each other job has its file: listing ([`scan`]), the tree digest
//! ([`digest`], [`digester`], [`digest_walk`]) and the hashes it keeps
//! ([`hash_store`]), changes ([`mutate`]), files rebuilt beside the old ones
//! ([`stage`]) or patched in place ([`journal`]), partial content
//! ([`partial`]) and granule hashes ([`granules`]) kept for the next run,
//! and what an earlier version kept inside the volume ([`legacy`]).

mod attributes;
mod digest;
mod digest_walk;
mod digester;
#[cfg(test)]
mod fixtures;
mod granules;
mod hash_store;
mod journal;
mod legacy;
mod mutate;
pub use mutate::Node;
mod partial;
mod scan;
mod stage;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use cap_std::fs::{Dir, MetadataExt};

use super::access::Access;
use super::ahead::Ahead;
use super::attributes::Namespaces;
use super::error::VolumeError;
use super::kept_hashes;
use super::known::{self, HashStore, KnownHashes, Stamp};
use super::watch::Watch;
use crate::volume::entry::Entry;
use crate::volume::path;

/// A directory tree granted to one run.
pub struct Tree {
    root: PathBuf,
    dir: Dir,
    access: Access,
    /// Where what one run leaves for the next is kept, outside the volume;
    /// `None` for a read-only tree that was given none.
    state: Option<State>,
    /// Whether partial content may be kept in the state directory: when
    /// none is, the per-file lookups of it are skipped.
    has_partials: AtomicBool,
    /// Whether granule hashes may be kept in [`GRANULES`], likewise.
    has_granules: AtomicBool,
    /// The namespaces of extended attributes scans fingerprint and the
    /// digest covers ([`Tree::include_attributes`]), as their bits.
    attributes: AtomicU8,
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
    /// The namespaces of extended attributes the scan covered, and the
    /// digest of each entry's, in order (none when it covered none).
    attributes: (Namespaces, Vec<[u8; 32]>),
    /// The indices of each directory's entries, by its path.
    children: HashMap<OsString, Vec<u32>>,
    watch: Option<Watch>,
    /// The files being hashed ahead of the digest, while watched.
    ahead: Option<Ahead>,
}

impl Scanned {
    /// The digest of the attributes of the `i`th entry as the scan read
    /// them, if it covered the namespaces in `covered`, and some.
    fn attributes_digest(&self, i: usize, covered: Namespaces) -> Option<[u8; 32]> {
        let (scanned, digests) = &self.attributes;
        (*scanned == covered).then(|| digests.get(i).copied())?
    }
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree")
            .field("root", &self.root)
            .field("access", &self.access)
            .finish()
    }
}

/// Where a writable tree keeps what one run leaves for the next: a
/// directory outside the volume, so the replica holds nothing the source
/// does not. It holds the partial content of files whose transfer a lost
/// peer cut off ([`PARTIAL`]), the content hashes the digest saw
/// ([`HASHES`], [`HashStore::State`]), the granule hashes of large files
/// ([`GRANULES`]) and the undo journal of a patch in place ([`JOURNAL`]).
struct State {
    dir: Dir,
    /// Where it is, for messages.
    shown: PathBuf,
    /// The temporary directory behind it, removed with the tree, when the
    /// caller gave none.
    _temp: Option<tempfile::TempDir>,
}

impl State {
    fn new(dir: Dir, temp: Option<tempfile::TempDir>) -> Self {
        // What the descriptor names now, for messages only.
        let shown = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            rustix::fd::AsRawFd::as_raw_fd(&dir)
        ))
        .unwrap_or_else(|_| PathBuf::from("(state directory)"));
        Self {
            dir,
            shown,
            _temp: temp,
        }
    }

    /// Bytes its filesystem has free for this process.
    fn room(&self) -> u64 {
        rustix::fs::fstatvfs(&self.dir).map_or(0, |s| s.f_bavail.saturating_mul(s.f_frsize))
    }
}

/// Opens (creating it if missing, readable by its owner only) the state
/// directory at `path`, for [`Tree::open_with_state`].
pub fn open_state_dir(path: &Path) -> io::Result<Dir> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    Dir::open_ambient_dir(path, cap_std::ambient_authority())
}

/// Directory at the root of a volume where versions before the state
/// directory moved out of the volume kept it. A writable tree takes over
/// what it holds and removes it when opened ([`legacy`]); a read-only one
/// (a source that was once a destination) does not list it.
pub const LEGACY_STATE_DIR: &str = ".wasmover";

/// What a volume's root holds that is not part of the replicated tree:
/// the [`LEGACY_STATE_DIR`], and the `lost+found` of the file system, which
/// `fsck` owns; neither is listed, digested, sent or removed, as VolSync's
/// movers leave `lost+found` alone.
pub(super) const HIDDEN_AT_ROOT: [&str; 2] = [LEGACY_STATE_DIR, "lost+found"];

/// Where the state directory keeps partial content.
const PARTIAL: &str = "partial";

/// Where `path`'s partial content is kept in the state directory.
fn partial_path(path: &OsStr) -> OsString {
    path::join(OsStr::new(PARTIAL), path)
}

/// Where [`HashStore::State`] keeps the hashes in the state directory.
const HASHES: &str = "hashes";

/// Where the granule hashes of large files are kept ([`Tree::keep_hashes`]).
const GRANULES: &str = "granules";

/// Where the granule hashes kept of `path` live: named by a hash of the
/// path, which the file also holds.
fn granules_path(path: &OsStr) -> String {
    format!(
        "{GRANULES}/{}",
        &blake3::hash(path.as_bytes()).to_hex()[..32]
    )
}

/// The undo journal of the file being patched in place, and which file
/// that is (written first: its inode, a newline, its path): a run
/// interrupted while it patched leaves both, and the next open of the tree
/// rolls the file back.
const JOURNAL: &str = "journal";
const JOURNAL_TARGET: &str = "journal-target";

/// Suffix of the temporary files and links a change is staged in before it
/// is renamed into place. They are made beside their target, inside the
/// volume, because only a rename within one filesystem replaces a file
/// atomically; a run interrupted part-way leaves at most these behind, and
/// the next run removes them as extraneous (the source has none), or keeps
/// a cut-off file's content as partial content in the state directory.
pub const STAGING_SUFFIX: &str = ".wasmover-tmp";

impl Tree {
    /// Opens the directory `root` with no state directory of its own: a
    /// writable tree keeps what one run leaves for the next in a temporary
    /// one, removed with it (nothing carries over to a later run, and an
    /// interrupted patch in place is rolled back only while it lives: for
    /// scratch volumes and tests); a read-only one keeps nothing, unless
    /// told ([`Tree::set_hash_store`]).
    pub fn open(root: impl Into<PathBuf>, access: Access) -> io::Result<Self> {
        Self::open_with_state(root, access, None)
    }

    /// Opens the directory `root`, keeping what one run leaves for the
    /// next in `state`, a directory outside the volume (on a filesystem
    /// that outlives the run: see [`State`]) that belongs to this volume
    /// alone; [`Tree::open`] without one. A writable tree first takes over
    /// what an earlier version left in the volume ([`LEGACY_STATE_DIR`])
    /// and rolls back a patch in place that an interrupted run left, so
    /// the volume is old or new before anything reads it.
    pub fn open_with_state(
        root: impl Into<PathBuf>,
        access: Access,
        state: Option<Dir>,
    ) -> io::Result<Self> {
        let root = root.into();
        let dir = Dir::open_ambient_dir(&root, cap_std::ambient_authority())?;
        let state = match (state, access) {
            (Some(state), _) => Some(State::new(state, None)),
            (None, Access::ReadOnly) => None,
            (None, Access::ReadWrite) => {
                let temp = tempfile::Builder::new()
                    .prefix("wasmover-state.")
                    .tempdir()?;
                let dir = Dir::open_ambient_dir(temp.path(), cap_std::ambient_authority())?;
                Some(State::new(dir, Some(temp)))
            }
        };
        // Only a writable tree is probed: nothing is written to a volume
        // granted read-only, not even an unnamed file.
        let settle_ns = match access {
            Access::ReadWrite if known::fine_ctime(&dir) => 0,
            _ => known::SETTLE_NS,
        };
        let kept = |name: &str| {
            AtomicBool::new(
                state
                    .as_ref()
                    .is_some_and(|s| s.dir.symlink_metadata(name).is_ok()),
            )
        };
        let (has_partials, has_granules) = (kept(PARTIAL), kept(GRANULES));
        let tree = Self {
            root,
            dir,
            access,
            state,
            has_partials,
            has_granules,
            attributes: AtomicU8::new(0),
            known: KnownHashes::default(),
            store: match access {
                Access::ReadWrite => HashStore::State,
                Access::ReadOnly => HashStore::Off,
            },
            read_all: false,
            settle_ns,
            scanned: Mutex::new(None),
        };
        if access == Access::ReadWrite {
            tree.take_over_legacy()?;
            tree.recover()?;
        }
        Ok(tree)
    }

    /// The state directory, or why there is none (a read-only tree given
    /// none).
    fn state(&self) -> io::Result<&State> {
        self.state.as_ref().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "this volume keeps no state (read-only, without a state directory)",
            )
        })
    }

    /// Replaces `file` in the state directory (in its subdirectory `dir`,
    /// created if missing) with `bytes` whole: a reader sees the old
    /// content or the new, never a torn file.
    fn replace_state_file(&self, dir: Option<&str>, file: &str, bytes: &[u8]) -> io::Result<()> {
        let state = &self.state()?.dir;
        let staged = format!("{file}{STAGING_SUFFIX}");
        if let Some(dir) = dir {
            state.create_dir_all(dir)?;
        }
        state.write(&staged, bytes)?;
        state.rename(&staged, state, file)
    }

    /// Makes the state directory's entries durable.
    fn sync_state_dir(&self) -> io::Result<()> {
        use rustix::fs::{Mode, OFlags};
        // The directory handle is a path only (`O_PATH`): open it to sync.
        let dir = rustix::fs::openat(
            &self.state()?.dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
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
    /// ([`HashStore::State`] needs a state directory).
    pub fn set_hash_store(&mut self, store: HashStore) -> io::Result<()> {
        if store == HashStore::State && self.state.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a read-only volume opened without a state directory cannot keep its hashes there",
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
        path: &OsStr,
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
        let Some(state) = &self.state else {
            return;
        };
        if self.has_partials.swap(false, Ordering::Relaxed) {
            let _ = state.dir.remove_dir_all(PARTIAL);
        }
        if self.has_granules.load(Ordering::Relaxed)
            && let Ok(entries) = state.dir.read_dir(GRANULES)
        {
            for entry in entries.flatten() {
                let name = path::join(OsStr::new(GRANULES), &entry.file_name());
                let kept_for = state
                    .dir
                    .open(&name)
                    .ok()
                    .and_then(|file| kept_hashes::path_of(file.into_std()));
                let gone = kept_for.is_none_or(
                    |path| !matches!(self.dir.symlink_metadata(&path), Ok(meta) if meta.is_file()),
                );
                if gone {
                    let _ = state.dir.remove_file(&name);
                }
            }
            if state.dir.remove_dir(GRANULES).is_ok() {
                self.has_granules.store(false, Ordering::Relaxed);
            }
        }
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
fn checked(path: &OsStr) -> Result<&OsStr, VolumeError> {
    let bad = path.is_empty()
        || path.as_bytes().contains(&0)
        || path::names(path).any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        Err(VolumeError::invalid(path))
    } else {
        Ok(path)
    }
}

/// The longest name Linux file systems take, in bytes.
const NAME_MAX: usize = 255;

/// Where a change to `path` is staged: a hidden name beside it. A name
/// too long to take the dot and suffix keeps a prefix of itself and a
/// hash of the whole, so its staging name is still its own, and the same
/// in every run.
fn staging_path(path: &OsStr) -> OsString {
    let name = path::last_name(path);
    let room = NAME_MAX - 1 - STAGING_SUFFIX.len();
    let mut staged = OsString::from(".");
    if name.len() <= room {
        staged.push(name);
    } else {
        let hash = blake3::hash(name.as_bytes()).to_hex();
        let prefix = &name.as_bytes()[..room - 17];
        staged.push(OsStr::from_bytes(prefix));
        staged.push("~");
        staged.push(&hash[..16]);
    }
    staged.push(STAGING_SUFFIX);
    path::join(path::parent(path), &staged)
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
        let state = tempfile::tempdir().unwrap();
        let tree = Tree::open_with_state(
            root.path(),
            Access::ReadWrite,
            Some(open_state_dir(state.path()).unwrap()),
        )
        .unwrap();
        assert_eq!(tree.settle_ns(), if fine { 0 } else { known::SETTLE_NS });
        tree.digest().unwrap();
        assert_eq!(
            state.path().join(HASHES).exists(),
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
                matches!(checked(OsStr::new(bad)), Err(VolumeError::InvalidPath(_))),
                "{bad:?}"
            );
        }
        for good in [&b"a/b c/\xc3\xbc"[..], b"bad\xff/new\nline", b"-leading"] {
            let good = OsStr::from_bytes(good);
            assert_eq!(checked(good).unwrap(), good);
        }
    }

    /// Every name, the longest too, has a staging name of its own that
    /// the file system takes.
    #[test]
    fn staging_names_fit_and_stay_apart() {
        use std::os::unix::ffi::OsStringExt;
        let long = |last: u8| {
            let mut name = b"d/".to_vec();
            name.extend([b'n'; 254]);
            name.push(last);
            OsString::from_vec(name)
        };
        let (a, b) = (staging_path(&long(b'a')), staging_path(&long(b'b')));
        assert_ne!(a, b);
        for staged in [&a, &b] {
            assert_eq!(path::last_name(staged).len(), NAME_MAX);
            assert!(staged.as_bytes().starts_with(b"d/.nnn"));
            assert!(staged.as_bytes().ends_with(STAGING_SUFFIX.as_bytes()));
        }
        assert_eq!(staging_path(OsStr::new("d/f")), "d/.f.wasmover-tmp");
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("d")).unwrap();
        let volume = Tree::open(root.path(), Access::ReadWrite).unwrap();
        volume.symlink(OsStr::new("target"), &long(b'a')).unwrap();
        volume.create_dir(&long(b'b')).unwrap();
        let listed: Vec<_> = volume.scan().unwrap().into_iter().map(|e| e.path).collect();
        assert_eq!(listed, [OsString::from("d"), long(b'a'), long(b'b')]);
    }

    #[test]
    fn symlinks_cannot_lead_outside_the_volume() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        let volume = Tree::open(root.path(), Access::ReadWrite).unwrap();
        assert!(volume.open_file(OsStr::new("escape/secret")).is_err());
        assert!(volume.create_staged(OsStr::new("escape/secret")).is_err());
        assert!(outside.path().join("secret").exists());
    }

    #[test]
    fn read_only_volume_refuses_changes() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), b"x").unwrap();
        let volume = Tree::open(root.path(), Access::ReadOnly).unwrap();
        assert!(matches!(
            volume.remove(OsStr::new("f")),
            Err(VolumeError::ReadOnly)
        ));
        assert!(matches!(
            volume.create_dir(OsStr::new("d")),
            Err(VolumeError::ReadOnly)
        ));
        assert!(matches!(
            volume.create_staged(OsStr::new("f")),
            Err(VolumeError::ReadOnly)
        ));
        assert!(root.path().join("f").exists());
    }
}
