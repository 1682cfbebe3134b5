//! A directory tree as a volume, opened without ambient authority.
//!
//! Every path a module names is relative to the volume root and is resolved
//! by `cap-std`, which refuses `..` and symlinks that lead outside. A volume
//! opened read-only refuses every change.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt, SystemTimeSpec};
use cap_std::fs::{
    Dir, File, MetadataExt, OpenOptions, OpenOptionsExt, Permissions, PermissionsExt,
};
use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::ahead::{self, Ahead};
use super::kept_hashes::{self, KeptHashes};
use super::known::{self, Stored};
use super::watch::{Change, Changes, Watch};
use super::{Access, DIGEST_BUFFER, DIGEST_CONTEXT, HashStore, KnownHashes, Stamp, VolumeError};
use crate::bindings::volume::{Entry, EntryKind, TreeDigest};

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

    /// Rolls back the file a patch in place was rewriting when its run was
    /// interrupted (see [`Tree::begin_journal`]), so it is old again.
    fn recover(&self) -> io::Result<()> {
        let target = match self.dir.read_to_string(JOURNAL_TARGET) {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let failed = |e: &dyn std::fmt::Display| {
            io::Error::other(format!(
                "{target}: could not roll back the patch in place an interrupted run \
                 left (journal {}): {e}",
                self.root.join(JOURNAL).display()
            ))
        };
        match self.dir.open(JOURNAL) {
            Ok(journal) => {
                let path = checked(&target).map_err(|e| failed(&e))?;
                let opened = self
                    .dir
                    .open_with(path, OpenOptions::new().read(true).write(true));
                match opened {
                    Ok(file) => {
                        let outcome =
                            wasmover_block::roll_back(&journal.into_std(), &file.into_std())
                                .map_err(|e| failed(&e))?;
                        tracing::warn!(
                            path = target,
                            ?outcome,
                            "rolled back a patch in place that an interrupted run left"
                        );
                    }
                    // Removed since: nothing is left to roll back.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        tracing::warn!(
                            path = target,
                            "dropping the journal of a patch in place: its file is gone"
                        );
                    }
                    Err(e) => return Err(failed(&e)),
                }
                self.dir.remove_file(JOURNAL)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(&e)),
        }
        self.dir.remove_file(JOURNAL_TARGET)?;
        self.sync_state_dir()
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

    /// Lists every entry, parents before children, siblings by name.
    /// Entries that are neither files, directories nor symlinks (sockets,
    /// devices, fifos) are skipped. The tree remembers what it found, for
    /// its [`digest`](Self::digest); a writable one also watches what
    /// changes since.
    pub fn scan(&self) -> Result<Vec<Entry>, VolumeError> {
        let mut entries = Vec::new();
        let mut stamps = Vec::new();
        let mut watch = (self.access == Access::ReadWrite).then(Watch::new);
        walk_dir(&self.dir, "", watch.as_mut(), &mut |entry, stamp| {
            stamps.push(stamp);
            entries.push(entry);
            Ok(())
        })?;
        let mut children = HashMap::<String, Vec<u32>>::new();
        if watch.is_some() {
            for (i, entry) in entries.iter().enumerate() {
                let parent = entry.path.rsplit_once('/').map_or("", |(parent, _)| parent);
                match children.get_mut(parent) {
                    Some(indices) => indices.push(i as u32),
                    None => drop(children.insert(parent.to_owned(), vec![i as u32])),
                }
            }
        }
        let ahead = watch.as_ref().filter(|w| !w.is_lost()).and_then(|_| {
            let files = (entries.iter().zip(&stamps).enumerate())
                .filter(|(_, (e, _))| e.kind == EntryKind::File && e.links == 1)
                .filter(|(_, (e, _))| e.size < ahead::LARGEST)
                .map(|(i, (e, &stamp))| (i as u32, e.path.clone(), stamp))
                .collect();
            let (store, root, read_all) = (self.store.clone(), self.root.clone(), self.read_all);
            let stored = move |dir: &Dir| load_hashes(dir, &store, &root, read_all);
            let dir = self.dir.try_clone().ok()?;
            Ahead::start(dir, files, stored).ok()
        });
        let scanned = Scanned {
            entries: entries.clone(),
            stamps,
            children,
            watch,
            ahead,
        };
        *self.scanned.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(scanned));
        Ok(entries)
    }

    /// The tree digest (see `tree-digest` in `wit/mover.wit`): the entries
    /// in [`scan`](Self::scan) order, each hashed as it is met, with the
    /// content of every regular file hashed natively, unless its hash is
    /// known for the file's unchanged [`Stamp`]: learned this run, or kept
    /// in the [`HashStore`] by an earlier digest. The hashes of files that
    /// had settled are kept for the next run. Memory is a read buffer per
    /// thread, the names of the directories being walked, a window of
    /// their entries ([`DIGEST_WINDOW`]), and 64 bytes per file of kept
    /// hashes.
    ///
    /// A read-only tree that was scanned is not walked again: nothing
    /// this run does changes it, and its digest is of the entries as the
    /// scan found them (what the run sent), so a source that changed
    /// since shows as a mismatch with the destination, not as a second
    /// version of the source. A writable tree that was scanned is walked
    /// again only where its watch saw changes (see [`super::watch`]).
    pub fn digest(&self) -> Result<TreeDigest, VolumeError> {
        let mut scanned = self.scanned.lock().unwrap_or_else(|e| e.into_inner());
        let ahead = scanned
            .as_mut()
            .and_then(|s| s.ahead.take())
            .and_then(Ahead::finish);
        // The thread loaded the kept hashes already, if there was one.
        let (stored, early) = ahead.unwrap_or_else(|| {
            let stored = load_hashes(&self.dir, &self.store, &self.root, self.read_all);
            (stored, Vec::new())
        });
        let mut digest = Digester {
            tree: self,
            hasher: blake3::Hasher::new_derive_key(DIGEST_CONTEXT),
            records: Vec::with_capacity(2 * RECORDS),
            entries: 0,
            bytes: 0,
            stored,
            kept: Vec::new(),
        };
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
                digest_dir(&self.dir, "", Some(reuse), &mut digest)?;
            }
            Some(scanned) if self.access == Access::ReadOnly => {
                self.digest_scanned(scanned, &mut digest)?
            }
            _ => digest_dir(&self.dir, "", None, &mut digest)?,
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
        for (entry, &stamp) in scanned.entries.iter().zip(&scanned.stamps) {
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
            digest.add(entry, file);
        }
        Ok(())
    }

    /// BLAKE3 of the content of the regular file at `path`, and its length
    /// as read; not followed if a symlink took its place.
    fn content_hash(
        &self,
        path: &str,
        buffer: &mut [u8],
    ) -> Result<(blake3::Hash, u64), VolumeError> {
        let file = open_to_read(&self.dir, checked(path)?).map_err(VolumeError::io(path))?;
        super::content_hash(file.into_std(), buffer).map_err(VolumeError::io(path))
    }

    /// Replaces the stored hashes with `kept`, atomically; best effort (a
    /// store that cannot be written costs the next run reads, nothing
    /// else).
    fn save_hashes(&self, kept: &mut [(Stamp, blake3::Hash)]) {
        let saved = match &self.store {
            HashStore::Off => return,
            // Nothing settled yet: no file (nor state directory) for that.
            HashStore::InVolume if kept.is_empty() => match self.dir.remove_file(HASHES) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                removed => removed,
            },
            HashStore::InVolume => self.replace_state_file(STATE_DIR, HASHES, &known::encode(kept)),
            HashStore::File(path) if kept.is_empty() => match std::fs::remove_file(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                removed => removed,
            },
            HashStore::File(path) => {
                // Another process may keep the same store (a second sender
                // of the same directory): each stages its own file, and
                // the last rename wins whole.
                let mut staged = path.clone().into_os_string();
                staged.push(format!(".{}{STAGING_SUFFIX}", std::process::id()));
                path.parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::write(&staged, known::encode(kept)))
                    .and_then(|()| std::fs::rename(&staged, path))
            }
        };
        if let Err(e) = saved {
            tracing::warn!(root = %self.root.display(), "could not keep the hashes for the next run: {e}");
        }
    }

    /// Creates a directory; fine if it is one already.
    pub fn create_dir(&self, path: &str) -> Result<(), VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        match self.dir.create_dir(path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && self.dir.is_dir(path) => Ok(()),
            r => r.map_err(VolumeError::io(path)),
        }
    }

    /// Creates or atomically replaces a symlink.
    pub fn symlink(&self, target: &str, path: &str) -> Result<(), VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        let staged = staging_path(path);
        let _ = self.dir.remove_file(&staged);
        // The target is stored as text, like rsync's --links: creating a
        // link never follows it, and nothing here ever resolves it outside.
        self.dir
            .symlink_contents(target, &staged)
            .map_err(VolumeError::io(path))?;
        self.dir
            .rename(&staged, &self.dir, path)
            .map_err(VolumeError::io(path))
    }

    /// Makes `path` a hard link to the file at `existing`, replacing what
    /// is at `path` atomically (linked beside it, then renamed over it).
    pub fn hard_link(&self, existing: &str, path: &str) -> Result<(), VolumeError> {
        let (existing, path) = (checked(existing)?, checked(path)?);
        self.writable()?;
        let staged = staging_path(path);
        let _ = self.dir.remove_file(&staged);
        self.dir
            .hard_link(existing, &self.dir, &staged)
            .map_err(VolumeError::io(path))?;
        self.dir.rename(&staged, &self.dir, path).map_err(|e| {
            let _ = self.dir.remove_file(&staged);
            VolumeError::io(path)(e)
        })
    }

    /// Sets the owner of `path` (a symlink itself, not its target); one
    /// that has it already is left alone (a chown would still change its
    /// ctime and clear set-id bits). `Ok(false)` when this process may
    /// not: ownership is kept where permitted.
    pub fn set_owner(&self, path: &str, uid: u32, gid: u32) -> Result<bool, VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        // Resolve the parent through cap-std, which keeps the lookup
        // inside the volume; chown the last component without following it.
        let (parent, name) = match path.rsplit_once('/') {
            Some((parent, name)) => (
                Some(
                    self.dir
                        .open_dir_nofollow(parent)
                        .map_err(VolumeError::io(path))?,
                ),
                name,
            ),
            None => (None, path),
        };
        let dir = parent.as_ref().unwrap_or(&self.dir);
        let stat = |dir: &Dir| rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW);
        let before = stat(dir).map_err(|e| VolumeError::io(path)(e.into()))?;
        if (before.st_uid, before.st_gid) == (uid, gid) {
            return Ok(true);
        }
        match rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(()) => {
                // A known content hash survives the owner change.
                if self.known.contains(path)
                    && let Ok(after) = stat(dir)
                {
                    self.known
                        .restamp(path, stat_stamp(&before), stat_stamp(&after));
                }
                Ok(true)
            }
            Err(rustix::io::Errno::PERM) => Ok(false),
            Err(e) => Err(VolumeError::io(path)(e.into())),
        }
    }

    /// Removes a file, a symlink or a directory tree; fine if absent.
    pub fn remove(&self, path: &str) -> Result<(), VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        let result = match self.dir.symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => self.dir.remove_dir_all(path),
            Ok(_) => self.dir.remove_file(path),
            Err(e) => Err(e),
        };
        // A directory's tree gone is an event per entry.
        self.read_watch(Watch::update);
        match result {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r.map_err(VolumeError::io(path)),
        }
    }

    /// Lets the scan's watch read the events queued so far (`read`), so
    /// that a run that changes many entries does not overflow its queue.
    fn read_watch<R>(&self, read: impl FnOnce(&mut Watch) -> R) {
        let mut scanned = self.scanned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(watch) = scanned.as_mut().and_then(|s| s.watch.as_mut()) {
            read(watch);
        }
    }

    /// Sets permission bits (skipped for symlinks) and modification time.
    pub fn set_metadata(&self, path: &str, mode: u32, mtime_ns: i64) -> Result<(), VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        let meta = self
            .dir
            .symlink_metadata(path)
            .map_err(VolumeError::io(path))?;
        let mtime = Some(time_spec(mtime_ns));
        if meta.file_type().is_symlink() {
            self.dir.set_symlink_times(path, None, mtime)
        } else {
            self.dir
                .set_permissions(path, Permissions::from_mode(mode & 0o7777))
                .and_then(|()| self.dir.set_times(path, None, mtime))
        }
        .map_err(VolumeError::io(path))
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

    /// Creates the staging file for `path`, replacing a stale one.
    pub(crate) fn create_staged(&self, path: &str) -> Result<(std::fs::File, String), VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        let staged = staging_path(path);
        let create = || {
            self.dir.open_with(
                &staged,
                OpenOptions::new().read(true).write(true).create_new(true),
            )
        };
        // A stale one, which an interrupted run left, is replaced; looked
        // for only then, at no cost to every other file.
        let file: File = match create() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = self.dir.remove_file(&staged);
                create()
            }
            created => created,
        }
        .map_err(VolumeError::io(path))?;
        Ok((file.into_std(), staged))
    }

    /// Renames a staged file over `path` after applying its metadata, and
    /// remembers that its content hashes to `hash` (see [`KnownHashes`]).
    /// Returns the file's stamp after all that.
    pub(crate) fn commit_staged(
        &self,
        file: &std::fs::File,
        staged: &str,
        path: &str,
        mode: u32,
        mtime_ns: i64,
        hash: [u8; 32],
    ) -> Result<Option<Stamp>, VolumeError> {
        set_file_metadata(file, mode, mtime_ns)
            .and_then(|()| self.rename_staged(staged, path))
            .map_err(VolumeError::io(path))?;
        self.read_watch(Watch::committed);
        // After the rename, which may change the inode's ctime.
        Ok(self.remember_written(file, path, hash))
    }

    /// Renames the staged file `staged` (beside `path`: see
    /// [`staging_path`]) over `path`, in their directory opened once.
    fn rename_staged(&self, staged: &str, path: &str) -> io::Result<()> {
        let (parent, name) = match path.rsplit_once('/') {
            Some((parent, name)) => (Some(self.dir.open_dir_nofollow(parent)?), name),
            None => (None, path),
        };
        let staged = staged.rsplit_once('/').map_or(staged, |(_, staged)| staged);
        let dir = parent.as_ref().unwrap_or(&self.dir);
        rustix::fs::renameat(dir, staged, dir, name)?;
        Ok(())
    }

    /// Remembers that `path`, just written through `file`, hashes to
    /// `hash` under the stamp it has now, and returns that stamp.
    fn remember_written(&self, file: &std::fs::File, path: &str, hash: [u8; 32]) -> Option<Stamp> {
        let stamp = Stamp::of_file(file);
        if let Some(stamp) = stamp {
            self.known.remember(path, stamp, hash);
        }
        stamp
    }

    /// Opens `path` for patching in place: a regular file with one link
    /// (a patch in place would change every link; a rename beside breaks
    /// them instead), with its length. `None` for anything else.
    pub(crate) fn open_in_place(
        &self,
        path: &str,
    ) -> Result<Option<(std::fs::File, u64)>, VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        let file = match self.dir.open_with(
            path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .follow(FollowSymlinks::No),
        ) {
            Ok(file) => file.into_std(),
            Err(_) => return Ok(None),
        };
        let meta = file.metadata().map_err(VolumeError::io(path))?;
        Ok(
            (meta.is_file() && std::os::unix::fs::MetadataExt::nlink(&meta) == 1)
                .then_some((file, meta.len())),
        )
    }

    /// Creates the (empty) undo journal for patching `path` in place,
    /// after recording which file it belongs to; both durably, so a crash
    /// after the patch started always finds them.
    pub(crate) fn begin_journal(&self, path: &str) -> Result<std::fs::File, VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        let journal_error = VolumeError::io(JOURNAL);
        self.dir
            .create_dir_all(STATE_DIR)
            .map_err(VolumeError::io(STATE_DIR))?;
        let target = self
            .dir
            .create(JOURNAL_TARGET)
            .and_then(|mut f| {
                io::Write::write_all(&mut f, path.as_bytes())?;
                f.sync_all()
            })
            .map_err(VolumeError::io(JOURNAL_TARGET));
        target?;
        let journal = self
            .dir
            .open_with(
                JOURNAL,
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true),
            )
            .map_err(VolumeError::io(JOURNAL))?;
        self.sync_state_dir().map_err(journal_error)?;
        Ok(journal.into_std())
    }

    /// Deletes the undo journal once the patch is complete and synced (or
    /// rolled back), and makes that durable.
    pub(crate) fn end_journal(&self) -> Result<(), VolumeError> {
        self.dir
            .remove_file(JOURNAL)
            .and_then(|()| self.dir.remove_file(JOURNAL_TARGET))
            .and_then(|()| self.sync_state_dir())
            .map_err(VolumeError::io(JOURNAL))
    }

    /// `path`'s partial content, created if missing, for a patch in place
    /// to read and append its literals to: kept when the peer is lost, so
    /// the next run offers them as basis (after the file) instead of
    /// receiving them again.
    pub(crate) fn spill(&self, path: &str) -> Result<std::fs::File, VolumeError> {
        let partial = partial_path(checked(path)?);
        self.writable()?;
        self.partial_parent(&partial)
            .and_then(|()| {
                self.dir.open_with(
                    &partial,
                    OpenOptions::new().read(true).append(true).create(true),
                )
            })
            .map(File::into_std)
            .map_err(VolumeError::io(path))
    }

    /// Sets `path`'s metadata after a patch in place through the open
    /// file, and remembers that its content hashes to `hash`. Returns the
    /// file's stamp after that.
    pub(crate) fn commit_in_place(
        &self,
        file: &std::fs::File,
        path: &str,
        mode: u32,
        mtime_ns: i64,
        hash: [u8; 32],
    ) -> Result<Option<Stamp>, VolumeError> {
        set_file_metadata(file, mode, mtime_ns).map_err(VolumeError::io(path))?;
        Ok(self.remember_written(file, path, hash))
    }

    /// The granule hashes kept of `path` by an earlier run, if any; the
    /// caller compares their stamp with the file's.
    pub(crate) fn kept_hashes(&self, path: &str) -> Option<KeptHashes> {
        let shown = || self.root.join(granules_path(path)).display().to_string();
        match self.dir.read(granules_path(path)) {
            Ok(bytes) => kept_hashes::decode(&bytes, path)
                .inspect_err(|why| {
                    tracing::warn!(file = shown(), "ignoring kept granule hashes: {why}");
                })
                .ok(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(file = shown(), "ignoring kept granule hashes: {e}");
                None
            }
        }
    }

    /// Keeps the granule hashes of `path` for the next run, if its stamp
    /// lets a later run trust them ([`Stamp::settled`]); otherwise drops
    /// what was kept. Best effort: hashes not kept cost the next run one
    /// read of the file.
    pub(crate) fn keep_hashes(&self, path: &str, kept: Option<&KeptHashes>) {
        let file = granules_path(path);
        let Some(kept) = kept.filter(|k| k.stamp.settled(self.settle_ns)) else {
            if self.has_granules.load(Ordering::Relaxed) {
                let _ = self.dir.remove_file(&file);
            }
            return;
        };
        self.has_granules.store(true, Ordering::Relaxed);
        let kept = self.replace_state_file(GRANULES, &file, &kept_hashes::encode(path, kept));
        if let Err(e) = kept {
            tracing::warn!(
                path,
                "could not keep its granule hashes for the next run: {e}"
            );
        }
    }

    /// Removes a staged file after a failure; best effort.
    pub(crate) fn discard_staged(&self, staged: &str) {
        let _ = self.dir.remove_file(staged);
    }

    /// What an interrupted run received of `path`'s new content, if any.
    pub(crate) fn open_partial(
        &self,
        path: &str,
    ) -> Result<Option<(std::fs::File, u64)>, VolumeError> {
        let path = checked(path)?;
        if !self.has_partials.load(Ordering::Relaxed) {
            return Ok(None);
        }
        Ok(self
            .open_file(&partial_path(path))?
            .map(|(file, len, _)| (file, len)))
    }

    /// Creates the directory the partial content `partial` goes in, and
    /// notes that partial content may now exist.
    fn partial_parent(&self, partial: &str) -> io::Result<()> {
        let parent = partial.rsplit_once('/').map_or(STATE_DIR, |(dir, _)| dir);
        self.has_partials.store(true, Ordering::Relaxed);
        self.dir.create_dir_all(parent)
    }

    /// Keeps a staged file that a lost peer left unfinished as `path`'s
    /// partial content, unless the partial kept before is longer; best
    /// effort (resuming is an optimisation).
    pub(crate) fn keep_partial(&self, staged: &str, path: &str) {
        let partial = partial_path(path);
        let len = |p: &str| self.dir.metadata(p).map(|m| m.len()).unwrap_or(0);
        if len(staged) <= len(&partial) {
            self.discard_staged(staged);
            return;
        }
        if self.partial_parent(&partial).is_err()
            || self.dir.rename(staged, &self.dir, &partial).is_err()
        {
            self.discard_staged(staged);
        }
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

    /// Removes `path`'s partial content and the state directories it
    /// empties; best effort.
    pub(crate) fn remove_partial(&self, path: &str) {
        if !self.has_partials.load(Ordering::Relaxed) {
            return;
        }
        let mut partial = partial_path(path);
        if self.dir.remove_file(&partial).is_err() {
            return;
        }
        while let Some((dir, _)) = partial.rsplit_once('/') {
            if self.dir.remove_dir(dir).is_err() {
                break;
            }
            partial = dir.to_owned();
        }
    }
}

/// Opens the regular file at `path` under `dir` to read its content; not
/// followed if a symlink took its place, and a fifo swapped in meanwhile
/// is not waited on.
pub(super) fn open_to_read(dir: &Dir, path: &str) -> io::Result<File> {
    dir.open_with(
        path,
        OpenOptions::new()
            .read(true)
            .follow(FollowSymlinks::No)
            .custom_flags((OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32),
    )
}

/// The hashes an earlier digest of the tree at `root` (opened as `dir`)
/// kept in `store`, unless `read_all`; none if there are none or they
/// cannot be used (said in a warning: the digest then reads every file,
/// which is slower but as sure).
fn load_hashes(dir: &Dir, store: &HashStore, root: &Path, read_all: bool) -> Stored {
    let bytes = match store {
        _ if read_all => return Stored::default(),
        HashStore::Off => return Stored::default(),
        HashStore::InVolume => dir.read(HASHES),
        HashStore::File(path) => std::fs::read(path),
    };
    let shown = || match store {
        HashStore::File(path) => path.display().to_string(),
        _ => root.join(HASHES).display().to_string(),
    };
    match bytes {
        Ok(bytes) => known::decode(bytes).unwrap_or_else(|why| {
            tracing::warn!(store = shown(), "ignoring the stored hashes: {why}");
            Stored::default()
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Stored::default(),
        Err(e) => {
            tracing::warn!(store = shown(), "ignoring the stored hashes: {e}");
            Stored::default()
        }
    }
}

/// Bytes of entry records gathered before they are hashed: BLAKE3 hashes
/// many 1 KiB chunks at once only when it is given them at once.
const RECORDS: usize = 64 << 10;

/// A tree digest being computed, entry by entry.
struct Digester<'t> {
    tree: &'t Tree,
    hasher: blake3::Hasher,
    /// Records not hashed yet.
    records: Vec<u8>,
    entries: u64,
    bytes: u64,
    stored: Stored,
    /// The hashes to keep for the next run.
    kept: Vec<(Stamp, blake3::Hash)>,
}

/// A regular file's content hash and its length as read.
struct FileHash {
    hash: blake3::Hash,
    len: u64,
    /// The stamp to keep the hash under for the next run, if it may be.
    keep: Option<Stamp>,
}

impl Digester<'_> {
    /// The content hash of the regular file `entry` with `stamp`, if it
    /// is known for that stamp: learned this run, or kept by an earlier
    /// digest.
    fn known_hash(&self, entry: &Entry, stamp: Stamp) -> Option<FileHash> {
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
    fn read_hash(
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

    /// Adds one entry, with its content hash if it is a regular file.
    fn add(&mut self, entry: &Entry, file: Option<FileHash>) {
        let kind: u8 = match entry.kind {
            EntryKind::File => 0,
            EntryKind::Directory => 1,
            EntryKind::Symlink => 2,
            EntryKind::Block => 3,
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
            _ => {}
        }
        self.entries += 1;
        if self.records.len() >= RECORDS {
            self.hasher.update(&self.records);
            self.records.clear();
        }
    }

    /// The digest, and the hashes to keep for the next run.
    fn finish(mut self) -> (TreeDigest, Vec<(Stamp, blake3::Hash)>) {
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

/// The entry `name` in `dir` (the directory at `path`) is, by one
/// `statx` (and `readlink` for a symlink), and its [`Stamp`]; `None` for
/// what a tree does not hold (sockets, devices, fifos), with a warning.
fn look(dir: &Dir, path: &str, name: &str) -> Result<Option<(Entry, Stamp)>, VolumeError> {
    let child = if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}/{name}")
    };
    let io_error = |e: rustix::io::Errno| VolumeError::io(&child)(e.into());
    let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io_error)?;
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::Symlink => EntryKind::Symlink,
        FileType::Directory => EntryKind::Directory,
        FileType::RegularFile => EntryKind::File,
        _ => {
            tracing::warn!(path = child, "skipping special file");
            return Ok(None);
        }
    };
    let link_target = match kind {
        EntryKind::Symlink => rustix::fs::readlinkat(dir, name, Vec::new())
            .map_err(io_error)?
            .into_string()
            .map_err(|_| VolumeError::Io {
                path: child.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, "symlink target is not UTF-8"),
            })?,
        _ => String::new(),
    };
    let stamp = stat_stamp(&stat);
    let entry = Entry {
        path: child,
        kind,
        mode: stat.st_mode & 0o7777,
        size: if kind == EntryKind::File {
            stamp.len
        } else {
            0
        },
        mtime_ns: stamp.mtime_ns,
        link_target,
        uid: stat.st_uid,
        gid: stat.st_gid,
        inode: stamp.inode,
        links: stat.st_nlink.try_into().unwrap_or(u32::MAX),
    };
    Ok(Some((entry, stamp)))
}

/// The names in `dir` (the directory at `path`), sorted; at the root,
/// without [`STATE_DIR`].
fn names_in(dir: &Dir, path: &str) -> Result<Vec<String>, VolumeError> {
    let shown = if path.is_empty() { "." } else { path };
    let mut names = Vec::new();
    for entry in dir.entries().map_err(VolumeError::io(shown))? {
        let name = entry.map_err(VolumeError::io(shown))?.file_name();
        let name = name.into_string().map_err(|name| VolumeError::Io {
            path: format!("{shown}/{}", name.to_string_lossy()),
            source: io::Error::new(io::ErrorKind::InvalidData, "file name is not UTF-8"),
        })?;
        names.push(name);
    }
    names.sort_unstable();
    if path.is_empty() {
        names.retain(|name| name != STATE_DIR);
    }
    Ok(names)
}

/// Opens the subdirectory `name` of `dir` that [`look`] found at `path`;
/// not followed if a symlink took its place since.
fn open_sub(dir: &Dir, name: &str, path: &str) -> Result<Dir, VolumeError> {
    dir.open_dir_nofollow(name).map_err(VolumeError::io(path))
}

/// Calls `visit` with every entry under `dir`, the directory at `path`,
/// parents before children, siblings by name. Each directory is opened
/// once and its entries are looked at by their single names, so the cost
/// per entry is one `statx`, whatever the depth.
fn walk_dir(
    dir: &Dir,
    path: &str,
    mut watch: Option<&mut Watch>,
    visit: &mut dyn FnMut(Entry, Stamp) -> Result<(), VolumeError>,
) -> Result<(), VolumeError> {
    if let Some(watch) = watch.as_deref_mut() {
        watch.add(dir, path);
    }
    for name in &names_in(dir, path)? {
        let Some((entry, stamp)) = look(dir, path, name)? else {
            continue;
        };
        let sub = (entry.kind == EntryKind::Directory).then(|| entry.path.clone());
        visit(entry, stamp)?;
        if let Some(sub) = sub {
            walk_dir(
                &open_sub(dir, name, &sub)?,
                &sub,
                watch.as_deref_mut(),
                visit,
            )?;
        }
    }
    Ok(())
}

/// Names of one directory the digest looks at at once: the files among
/// them whose hashes are not known are read together, on the rayon pool
/// when there are at least [`READ_PARALLEL_MIN`] of them. Reading and
/// hashing a tree's files on the two cores of a test machine took 0.51
/// instead of 0.69 s (100,000 files, 684 MB in tmpfs); looking at the
/// entries in parallel too gained nothing there and cost more CPU.
const DIGEST_WINDOW: usize = 256;
const READ_PARALLEL_MIN: usize = 16;

/// What a writable tree's scan found, and what its watch saw change
/// since: the digest takes from the scan the entries no event named.
#[derive(Clone, Copy)]
struct Reuse<'s> {
    scanned: &'s Scanned,
    watch: &'s Watch,
    /// The hashes read ahead of the digest, by scan index.
    early: &'s [(u32, blake3::Hash, u64)],
}

impl<'s> Reuse<'s> {
    /// The indices of the scanned entries of the directory at `path`, and
    /// the changes seen in it; `None` if it was not watched, or its names
    /// are not known from the events.
    fn dir(self, path: &str) -> Option<(&'s [u32], &'s Changes)> {
        let changes = self.watch.changes(path).filter(|c| !c.relist)?;
        let children = self
            .scanned
            .children
            .get(path)
            .map_or(&[][..], Vec::as_slice);
        Some((children, changes))
    }
}

/// The entries of one watched directory as the digest sees them.
#[derive(Clone, Copy)]
struct Here<'s> {
    reuse: Reuse<'s>,
    children: &'s [u32],
    changes: &'s Changes,
}

impl<'s> Here<'s> {
    /// The directory's names now: the scan's, and those events named
    /// (some of which may be gone), in order; at the root, without
    /// [`STATE_DIR`].
    fn names(self, path: &str) -> Vec<&'s str> {
        let entries = &self.reuse.scanned.entries;
        let mut names: Vec<&str> = self
            .children
            .iter()
            .map(|&i| last_name(&entries[i as usize].path))
            .collect();
        let scanned = names.len();
        for name in self.changes.names.keys() {
            let seen = names[..scanned].binary_search(&name.as_str()).is_ok();
            let hidden = path.is_empty() && name == STATE_DIR;
            if !(seen || hidden) {
                names.push(name);
            }
        }
        if names.len() > scanned {
            names.sort_unstable();
        }
        names
    }

    /// The scanned entry `name` and its stamp, if nothing since can have
    /// changed what the digest takes from it, with its content hash and
    /// length if they were read ahead.
    fn unchanged(self, name: &str) -> Option<(&'s Entry, Stamp, Option<Read>)> {
        if self.changes.names.contains_key(name) {
            return None;
        }
        let scanned = self.reuse.scanned;
        let at = self
            .children
            .binary_search_by(|&i| last_name(&scanned.entries[i as usize].path).cmp(name))
            .ok()?;
        let i = self.children[at] as usize;
        let entry = &scanned.entries[i];
        let unseen = match entry.kind {
            // Written through another of its names, it changes unseen here.
            EntryKind::File => entry.links > 1,
            // A change among its entries changed its times.
            EntryKind::Directory => !self
                .reuse
                .watch
                .changes(&entry.path)
                .is_some_and(Changes::is_empty),
            _ => false,
        };
        let early = self.reuse.early;
        let read = early.binary_search_by_key(&(i as u32), |&(index, ..)| index);
        let read = read.ok().map(|at| (early[at].1, early[at].2));
        (!unseen).then(|| (entry, scanned.stamps[i], read))
    }

    /// What the digest may reuse below the subdirectory `name`: nothing if
    /// the name was replaced since the scan.
    fn below(self, name: &str) -> Option<Reuse<'s>> {
        (self.changes.names.get(name) != Some(&Change::Replaced)).then_some(self.reuse)
    }
}

/// A file's content hash and its length, as read.
type Read = (blake3::Hash, u64);

/// The last component of a path.
fn last_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, name)| name)
}

/// Adds every entry under `dir` (the directory at `path`) to `digest`,
/// in [`walk_dir`]'s order. With `reuse`, the entries of watched
/// directories that no event named since the scan are taken from it, and
/// a watched directory is not listed again.
fn digest_dir(
    dir: &Dir,
    path: &str,
    reuse: Option<Reuse<'_>>,
    digest: &mut Digester<'_>,
) -> Result<(), VolumeError> {
    let here = reuse.and_then(|reuse| {
        let (children, changes) = reuse.dir(path)?;
        Some(Here {
            reuse,
            children,
            changes,
        })
    });
    let listed;
    let names = match here {
        Some(here) => here.names(path),
        None => {
            listed = names_in(dir, path)?;
            listed.iter().map(String::as_str).collect()
        }
    };
    for window in names.chunks(DIGEST_WINDOW) {
        // Each entry that is there, with its file's hash if it is known.
        let mut looked = Vec::with_capacity(window.len());
        let mut unread = Vec::new();
        for &name in window {
            let (entry, stamp, early) = match here.and_then(|here| here.unchanged(name)) {
                Some((entry, stamp, early)) => (Cow::Borrowed(entry), stamp, early),
                None => match look(dir, path, name) {
                    Ok(Some((entry, stamp))) => (Cow::Owned(entry), stamp, None),
                    Ok(None) => continue,
                    // A name an event gave that is gone again.
                    Err(VolumeError::NotFound(_)) if here.is_some() => continue,
                    Err(e) => return Err(e),
                },
            };
            let file = match (entry.kind, early) {
                (EntryKind::File, early) => match (digest.known_hash(&entry, stamp), early) {
                    (Some(known), _) => Some(known),
                    (None, Some(read)) => Some(digest.read_hash(&entry, stamp, || Ok(read))?),
                    (None, None) => {
                        unread.push(looked.len());
                        None
                    }
                },
                _ => None,
            };
            looked.push((name, entry, stamp, file));
        }
        let read = |&i: &usize| {
            let (name, entry, stamp, _) = &looked[i];
            let file = digest.read_hash(entry, *stamp, || read_file(dir, name, &entry.path))?;
            Ok::<_, VolumeError>((i, file))
        };
        let read: Vec<_> = if unread.len() < READ_PARALLEL_MIN {
            unread.iter().map(read).collect()
        } else {
            unread.par_iter().map(read).collect()
        };
        for result in read {
            let (i, file) = result?;
            looked[i].3 = Some(file);
        }
        for (name, entry, _, file) in looked {
            digest.add(&entry, file);
            if entry.kind == EntryKind::Directory {
                let below = here.and_then(|here| here.below(name));
                digest_dir(
                    &open_sub(dir, name, &entry.path)?,
                    &entry.path,
                    below,
                    digest,
                )?;
            }
        }
    }
    Ok(())
}

/// BLAKE3 of the content of the regular file `name` in `dir` (at `path`),
/// and its length as read, through this thread's read buffer. One name,
/// straight from the directory's listing, under a handle already inside
/// the volume: nothing to resolve, no symlink followed; a fifo swapped in
/// meanwhile is not waited on.
fn read_file(dir: &Dir, name: &str, path: &str) -> Result<(blake3::Hash, u64), VolumeError> {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let file = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| VolumeError::io(path)(e.into()))?;
    BUFFER
        .with_borrow_mut(|buffer| {
            if buffer.is_empty() {
                buffer.resize(DIGEST_BUFFER, 0);
            }
            super::content_hash(std::fs::File::from(file), buffer)
        })
        .map_err(VolumeError::io(path))
}

/// Sets a file's permission bits and modification time through the open
/// file (fchmod, futimens): no path lookups.
fn set_file_metadata(file: &std::fs::File, mode: u32, mtime_ns: i64) -> io::Result<()> {
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777))?;
    file.set_modified(system_time(mtime_ns))
}

/// The [`Stamp`] of what `statat` found.
fn stat_stamp(stat: &rustix::fs::Stat) -> Stamp {
    Stamp::new(
        stat.st_ino,
        stat.st_size as u64,
        stat.st_mtime * 1_000_000_000 + stat.st_mtime_nsec as i64,
        stat.st_ctime * 1_000_000_000 + stat.st_ctime_nsec as i64,
    )
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

fn system_time(mtime_ns: i64) -> SystemTime {
    if mtime_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(mtime_ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(mtime_ns.unsigned_abs())
    }
}

fn time_spec(mtime_ns: i64) -> SystemTimeSpec {
    SystemTimeSpec::Absolute(cap_std::time::SystemTime::from_std(system_time(mtime_ns)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::unix_nanos;

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
        let (_, _, stamp) = volume.open_file("read").unwrap().unwrap();
        let (mut file, staged) = volume.create_staged("written").unwrap();
        std::io::Write::write_all(&mut file, b"xyz").unwrap();
        let honest = |v: &Tree| {
            v.known.take("read", stamp, 0);
            v.known.take("written", Stamp::new(0, 0, 0, 0), 0);
            v.digest().unwrap().root
        };
        volume
            .commit_staged(&file, &staged, "written", 0o644, 1_000_000_000, [7; 32])
            .unwrap();
        let with_written = volume.digest().unwrap().root;
        assert_ne!(
            with_written,
            honest(&volume),
            "the committed file's hash was not used"
        );
        volume.known.remember("read", stamp, [7; 32]);
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
        volume.known.remember("f", Stamp::of(&meta), [7; 32]);
        assert_ne!(
            volume.digest().unwrap().root,
            honest,
            "the known hash is used"
        );
        assert_eq!(volume.digest().unwrap().root, honest, "and only once");

        // Rewritten with the same length and mtime after the hash was
        // learned: the change time differs, so the file is read again.
        volume.known.remember("f", Stamp::of(&meta), [7; 32]);
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

    /// The walk lists a symlinked directory as a link without entering
    /// it, skips a fifo, and digests the files it holds through the
    /// directory handles it walked with, at any depth.
    #[test]
    fn the_walk_does_not_follow_links_and_skips_special_files() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("a/b/c")).unwrap();
        std::fs::write(root.path().join("a/b/c/deep"), b"deep").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("a/out")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.path().join("a/fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let volume = Tree::open(root.path(), Access::ReadOnly).unwrap();
        let paths: Vec<_> = volume
            .scan()
            .unwrap()
            .into_iter()
            .map(|e| (e.path, e.kind))
            .collect();
        assert_eq!(
            paths,
            [
                ("a".to_owned(), EntryKind::Directory),
                ("a/b".to_owned(), EntryKind::Directory),
                ("a/b/c".to_owned(), EntryKind::Directory),
                ("a/b/c/deep".to_owned(), EntryKind::File),
                ("a/out".to_owned(), EntryKind::Symlink),
            ]
        );
        let before = volume.digest().unwrap();
        assert_eq!((before.entries, before.bytes), (5, 4));
        std::fs::write(root.path().join("a/b/c/deep"), b"DEEP").unwrap();
        std::fs::write(outside.path().join("secret"), b"y").unwrap();
        let after = volume.digest().unwrap();
        assert_ne!(after.root, before.root, "the deep file's content counts");
    }

    /// The digest keeps the hashes of settled files, and the next digest
    /// believes them (a store that lies shows), but only for the very file
    /// version, never when told to read every file, and not when the store
    /// is damaged.
    #[test]
    fn kept_hashes_spare_reads_only_for_unchanged_files() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::write(&a, b"aaa").unwrap();
        std::fs::write(&b, b"bbb").unwrap();
        let store = root.path().join(HASHES);
        let digest = |read_all: bool| {
            let mut tree = Tree::open(root.path(), Access::ReadWrite).unwrap();
            // The rule of filesystems with a coarse ctime (see
            // `fine_ctime_means_a_change_after_a_stat_always_shows`).
            tree.settle_ns = known::SETTLE_NS;
            if read_all {
                tree.read_every_file();
            }
            tree.digest().unwrap().root
        };
        let honest = digest(false);
        assert!(!store.exists(), "files changed just now are not kept");
        std::thread::sleep(Duration::from_nanos(2 * known::SETTLE_NS as u64));
        assert_eq!(digest(false), honest);
        let kept = known::decode(std::fs::read(&store).unwrap()).unwrap();
        assert_eq!(kept.decoded().len(), 2);

        let lie = |only: &Path| {
            let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(only).unwrap());
            let mut lies: Vec<_> = kept
                .decoded()
                .into_iter()
                .map(|(stamp, hash)| match stamp.inode == inode {
                    true => (stamp, blake3::hash(b"lie")),
                    false => (stamp, hash),
                })
                .collect();
            std::fs::write(&store, known::encode(&mut lies)).unwrap();
        };
        lie(&a);
        assert_ne!(digest(false), honest, "the kept hash is used");
        lie(&a);
        assert_eq!(digest(true), honest, "read_every_file trusts none");
        lie(&a);
        let mut damaged = std::fs::read(&store).unwrap();
        damaged[10] ^= 1;
        std::fs::write(&store, damaged).unwrap();
        assert_eq!(digest(false), honest, "a damaged store is ignored");

        // Rewritten with the same content and mtime: its ctime moved, so
        // it is read again.
        lie(&a);
        let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
        std::fs::write(&a, b"aaa").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(digest(false), honest, "a changed file is read again");
    }

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

    /// Only a regular file with one link is patched in place: a hard
    /// link would change with it, a symlink is not followed.
    #[test]
    fn only_a_file_with_one_link_is_opened_for_patching_in_place() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("one"), b"1").unwrap();
        std::fs::write(root.path().join("linked"), b"2").unwrap();
        std::fs::hard_link(root.path().join("linked"), root.path().join("other")).unwrap();
        std::os::unix::fs::symlink("one", root.path().join("sym")).unwrap();
        let tree = Tree::open(root.path(), Access::ReadWrite).unwrap();
        let opened = |path| tree.open_in_place(path).unwrap().map(|(_, len)| len);
        assert_eq!(opened("one"), Some(1));
        assert_eq!(opened("linked"), None);
        assert_eq!(opened("sym"), None);
        assert_eq!(opened("missing"), None);
        let read_only = Tree::open(root.path(), Access::ReadOnly).unwrap();
        assert!(matches!(
            read_only.open_in_place("one"),
            Err(VolumeError::ReadOnly)
        ));
    }

    /// A patch in place that a run left half done (its journal complete,
    /// the file partly rewritten) is rolled back when the tree is next
    /// opened for writing, and the journal goes.
    #[test]
    fn an_interrupted_patch_in_place_is_rolled_back_on_open() {
        use std::io::Write;
        let root = tempfile::tempdir().unwrap();
        let old = wasmover_block::fuzzing::pseudo_random(300_000, 1);
        let mut new = old.clone();
        new[100_000..140_000].fill(7);
        std::fs::create_dir(root.path().join("d")).unwrap();
        let path = root.path().join("d/f");
        std::fs::write(&path, &old).unwrap();
        let tree = Tree::open(root.path(), Access::ReadWrite).unwrap();
        let (mut file, _) = tree.open_in_place("d/f").unwrap().unwrap();
        let delta = wasmover_block::fuzzing::delta_of(&old, &new, 4096);
        let patch = wasmover_block::InPlacePatch::read(
            &mut file,
            &delta[..],
            &wasmover_block::Limits::default(),
            None,
        )
        .unwrap();
        let journal = tree.begin_journal("d/f").unwrap();
        wasmover_block::write_undo(&file, &patch, &journal).unwrap();
        // The run dies while it writes.
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(100_000)).unwrap();
        file.write_all(&new[100_000..120_000]).unwrap();
        drop((file, journal, tree));
        assert!(std::fs::read(&path).unwrap() != old);

        let tree = Tree::open(root.path(), Access::ReadWrite).unwrap();
        assert!(std::fs::read(&path).unwrap() == old, "rolled back");
        assert!(!root.path().join(JOURNAL).exists());
        assert!(!root.path().join(JOURNAL_TARGET).exists());
        assert_eq!(
            tree.scan().unwrap().len(),
            2,
            "the state directory is not part of the tree"
        );

        // A journal whose file was removed since is dropped, not an error.
        let journal = tree.begin_journal("d/f").unwrap();
        drop(journal);
        std::fs::remove_file(&path).unwrap();
        drop(tree);
        Tree::open(root.path(), Access::ReadWrite).unwrap();
        assert!(!root.path().join(JOURNAL).exists());
        assert!(!root.path().join(JOURNAL_TARGET).exists());
    }

    /// Granule hashes are kept only under a stamp a later run may trust,
    /// and a completed transfer drops those of files that are gone.
    #[test]
    fn kept_granule_hashes_go_with_their_files() {
        let root = tempfile::tempdir().unwrap();
        for name in ["a", "b"] {
            std::fs::write(root.path().join(name), name).unwrap();
        }
        let mut tree = Tree::open(root.path(), Access::ReadWrite).unwrap();
        let kept = |path: &str| {
            let (file, len, stamp) = tree.open_file(path).unwrap().unwrap();
            let hashes = wasmover_block::BasisHashes::compute(&file, len).unwrap();
            KeptHashes { stamp, hashes }
        };
        let (a, b) = (kept("a"), kept("b"));
        tree.settle_ns = known::SETTLE_NS;
        tree.keep_hashes("a", Some(&a));
        assert!(tree.kept_hashes("a").is_none(), "not settled: not kept");
        tree.settle_ns = 0;
        tree.keep_hashes("a", Some(&a));
        tree.keep_hashes("b", Some(&b));
        assert_eq!(tree.kept_hashes("a").unwrap().stamp, a.stamp);
        assert_eq!(tree.kept_hashes("b").unwrap().hashes, b.hashes);
        assert_ne!(a.hashes, b.hashes);

        std::fs::remove_file(root.path().join("b")).unwrap();
        tree.discard_leftovers();
        assert!(tree.kept_hashes("a").is_some());
        assert!(tree.kept_hashes("b").is_none());
        std::fs::remove_file(root.path().join("a")).unwrap();
        tree.discard_leftovers();
        assert!(!root.path().join(GRANULES).exists());
    }

    /// A read-only tree keeps its hashes only where it is told, never in
    /// itself.
    #[test]
    fn a_read_only_tree_keeps_hashes_only_outside_itself() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("a"), b"aaa").unwrap();
        let mut tree = Tree::open(root.path(), Access::ReadOnly).unwrap();
        assert!(tree.set_hash_store(HashStore::InVolume).is_err());
        std::thread::sleep(Duration::from_nanos(2 * known::SETTLE_NS as u64));
        tree.digest().unwrap();
        assert!(!root.path().join(STATE_DIR).exists());
        let file = elsewhere.path().join("deep/hashes");
        tree.set_hash_store(HashStore::File(file.clone())).unwrap();
        tree.digest().unwrap();
        assert_eq!(
            known::decode(std::fs::read(&file).unwrap())
                .unwrap()
                .decoded()
                .len(),
            1
        );
        assert!(!root.path().join(STATE_DIR).exists());
    }

    /// Setting the owner a file has already changes nothing, not even its
    /// ctime (a chown would, and would clear set-id bits).
    #[test]
    fn the_owner_a_file_has_is_left_alone() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let f = root.path().join("d/f");
        std::fs::create_dir(root.path().join("d")).unwrap();
        std::fs::write(&f, b"x").unwrap();
        let before = std::fs::symlink_metadata(&f).unwrap();
        // Past the coarse clock's tick, so a chown would show.
        std::thread::sleep(Duration::from_millis(50));
        let volume = Tree::open(root.path(), Access::ReadWrite).unwrap();
        assert!(volume.set_owner("d/f", before.uid(), before.gid()).unwrap());
        let after = std::fs::symlink_metadata(&f).unwrap();
        assert_eq!(
            (after.ctime(), after.ctime_nsec()),
            (before.ctime(), before.ctime_nsec())
        );
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

    #[test]
    fn scan_lists_parents_first_with_metadata() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("b")).unwrap();
        std::fs::write(root.path().join("b/x"), b"hello").unwrap();
        std::fs::write(root.path().join("a"), b"").unwrap();
        std::os::unix::fs::symlink("b/x", root.path().join("c")).unwrap();
        let volume = Tree::open(root.path(), Access::ReadOnly).unwrap();
        let entries = volume.scan().unwrap();
        let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "b", "b/x", "c"]);
        assert_eq!(entries[2].size, 5);
        assert_eq!(entries[3].link_target, "b/x");
        let mtime = std::fs::metadata(root.path().join("b/x"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(entries[2].mtime_ns, unix_nanos(mtime));
    }

    /// A small tree with every kind of entry, fixed metadata.
    fn digest_tree(root: &Path) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(root.join("d/e/f"), b"some content").unwrap();
        std::fs::write(root.join("empty"), b"").unwrap();
        std::fs::write(root.join("big"), vec![7u8; 3 << 20]).unwrap();
        std::os::unix::fs::symlink("d/e/f", root.join("link")).unwrap();
        let when = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for file in ["d/e/f", "empty", "big"] {
            let path = root.join(file);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        for dir in ["d/e", "d"] {
            std::fs::File::open(root.join(dir))
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
    }

    /// Sets the symlink's own mtime, as a receiver does.
    fn pin_link(root: &Path) {
        let dir = Dir::open_ambient_dir(root, cap_std::ambient_authority()).unwrap();
        dir.set_symlink_times("link", None, Some(time_spec(5_000_000_000)))
            .unwrap();
    }

    fn digest_of(root: &Path) -> TreeDigest {
        Tree::open(root, Access::ReadOnly)
            .unwrap()
            .digest()
            .unwrap()
    }

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
    /// or how must change [`DIGEST_CONTEXT`] (and this value).
    #[test]
    fn the_digest_of_a_fixed_tree_is_the_same_in_every_version() {
        let root = tempfile::tempdir().unwrap();
        digest_tree(root.path());
        pin_link(root.path());
        assert_eq!(
            digest_of(root.path()).root,
            "5f805e57bcdd8db8e77274a3b936968c7315b95674c2396d3198b978a2559baa"
        );
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

    /// A directory of more names than a window, files read in parallel
    /// between subdirectories: the walk's digest (windows, parallel reads)
    /// equals the one a scan's entries give (one file after another).
    #[test]
    fn the_digest_reads_files_in_parallel_and_adds_them_in_order() {
        let root = tempfile::tempdir().unwrap();
        let names = DIGEST_WINDOW + 100;
        for i in 0..names {
            if i % 50 == 7 {
                std::fs::create_dir(root.path().join(format!("n{i:04}"))).unwrap();
                std::fs::write(root.path().join(format!("n{i:04}/inner")), [i as u8; 9]).unwrap();
            } else {
                std::fs::write(root.path().join(format!("n{i:04}")), vec![i as u8; i]).unwrap();
            }
        }
        let mut walked = Tree::open(root.path(), Access::ReadWrite).unwrap();
        walked.set_hash_store(HashStore::Off).unwrap();
        let walked = walked.digest().unwrap();
        let scanned = Tree::open(root.path(), Access::ReadOnly).unwrap();
        let inner = (0..names).filter(|i| i % 50 == 7).count();
        assert_eq!(scanned.scan().unwrap().len(), names + inner);
        let scanned = scanned.digest().unwrap();
        assert_eq!(
            (walked.root, walked.entries, walked.bytes),
            (scanned.root, scanned.entries, scanned.bytes)
        );
    }

    /// What a change is, and how to make it under a root.
    type TreeChange = (&'static str, fn(&Path));

    impl Tree {
        /// Waits for the files of the last scan to be hashed ahead, then
        /// makes the hash read ahead for `path` a lie.
        fn lie_ahead(&self, path: &str) {
            let mut scanned = self.scanned.lock().unwrap();
            let scanned = scanned.as_mut().expect("scanned");
            let index = scanned.entries.iter().position(|e| e.path == path).unwrap();
            let hashes = scanned.ahead.as_mut().expect("hashing ahead").wait();
            let read = hashes.iter_mut().find(|(i, ..)| *i as usize == index);
            read.expect("read ahead").1 = blake3::hash(b"lie");
        }
    }

    /// A hash read ahead serves the digest for a file the watch saw
    /// unchanged since the scan, and not for one that changed.
    #[test]
    fn hashes_read_ahead_serve_only_unchanged_files() {
        let root = tempfile::tempdir().unwrap();
        digest_tree(root.path());
        pin_link(root.path());
        settle_root(root.path());
        let mut volume = Tree::open(root.path(), Access::ReadWrite).unwrap();
        // No kept hashes: every file is hashed ahead.
        volume.set_hash_store(HashStore::Off).unwrap();
        let honest = digest_of(root.path()).root;
        volume.scan().unwrap();
        volume.lie_ahead("d/e/f");
        assert_ne!(volume.digest().unwrap().root, honest, "not used");
        volume.scan().unwrap();
        volume.lie_ahead("d/e/f");
        (tree_changes()[0].1)(root.path());
        assert_eq!(volume.digest().unwrap().root, digest_of(root.path()).root);
    }

    /// One change to [`digest_tree`] of each property the digest covers.
    fn tree_changes() -> [TreeChange; 10] {
        use std::os::unix::fs::PermissionsExt as _;
        [
            ("one byte of a small file", |r| {
                let mut f = std::fs::File::options()
                    .write(true)
                    .open(r.join("d/e/f"))
                    .unwrap();
                std::io::Write::write_all(&mut f, b"S").unwrap();
                f.set_modified(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
                    .unwrap();
            }),
            ("one byte in the middle of a big file", |r| {
                use std::os::unix::fs::FileExt;
                let f = std::fs::File::options()
                    .write(true)
                    .open(r.join("big"))
                    .unwrap();
                f.write_at(b"\x08", 2 << 20).unwrap();
                f.set_modified(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
                    .unwrap();
            }),
            ("a mode", |r| {
                std::fs::set_permissions(r.join("empty"), std::fs::Permissions::from_mode(0o600))
                    .unwrap();
            }),
            ("a file's mtime by 1 ns", |r| {
                std::fs::File::options()
                    .write(true)
                    .open(r.join("empty"))
                    .unwrap()
                    .set_modified(UNIX_EPOCH + Duration::new(1_700_000_000, 1))
                    .unwrap();
            }),
            ("a directory's mtime", |r| {
                std::fs::File::open(r.join("d/e"))
                    .unwrap()
                    .set_modified(UNIX_EPOCH + Duration::from_secs(1))
                    .unwrap();
            }),
            ("a name", |r| {
                std::fs::rename(r.join("empty"), r.join("empty2")).unwrap();
            }),
            ("a symlink's target", |r| {
                std::fs::remove_file(r.join("link")).unwrap();
                std::os::unix::fs::symlink("d/e/g", r.join("link")).unwrap();
            }),
            ("a file became a symlink", |r| {
                std::fs::remove_file(r.join("empty")).unwrap();
                std::os::unix::fs::symlink("x", r.join("empty")).unwrap();
            }),
            ("an added empty directory", |r| {
                std::fs::create_dir(r.join("new")).unwrap();
            }),
            // And the times of the directory it is added to.
            ("a file added below the root", |r| {
                std::fs::write(r.join("d/new"), b"").unwrap();
            }),
        ]
    }

    /// The root directory's own metadata is not covered; a symlink's own
    /// mtime is set as a receiver sets it.
    fn settle_root(root: &Path) {
        if root.join("link").is_symlink() {
            pin_link(root);
        }
        std::fs::File::open(root)
            .unwrap()
            .set_modified(UNIX_EPOCH)
            .unwrap();
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

    /// A writable tree that kept its hashes and was scanned: its digest
    /// takes from the scan only what its watch saw no change to.
    fn watched_tree() -> (tempfile::TempDir, Tree, String) {
        let root = tempfile::tempdir().unwrap();
        digest_tree(root.path());
        pin_link(root.path());
        settle_root(root.path());
        let volume = Tree::open(root.path(), Access::ReadWrite).unwrap();
        let before = volume.digest().unwrap().root;
        assert_eq!(before, digest_of(root.path()).root);
        volume.scan().unwrap();
        (root, volume, before)
    }

    /// Whatever changed after the scan (content under the same size and
    /// mtime, whose stamp alone the kept hash would vouch for, names,
    /// kinds, modes), the digest is the one a walk of the changed tree
    /// reading every file gives.
    #[test]
    fn a_watched_tree_digests_every_change_since_its_scan() {
        for (what, change) in tree_changes() {
            let (root, volume, before) = watched_tree();
            change(root.path());
            settle_root(root.path());
            let after = volume.digest().unwrap().root;
            assert_ne!(after, before, "{what} did not change the digest");
            assert_eq!(after, digest_of(root.path()).root, "{what}");
            // And again, from the same scan.
            assert_eq!(volume.digest().unwrap().root, after, "{what}, twice");
        }
    }

    /// A write through a name outside the tree is reported there only: a
    /// file with several links is looked at again whatever the watch saw.
    #[test]
    fn a_file_with_several_links_is_looked_at_again() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        digest_tree(root.path());
        pin_link(root.path());
        std::fs::hard_link(root.path().join("d/e/f"), outside.path().join("f")).unwrap();
        settle_root(root.path());
        let volume = Tree::open(root.path(), Access::ReadWrite).unwrap();
        let before = volume.digest().unwrap().root;
        volume.scan().unwrap();
        // The first change of `tree_changes`, through the other name.
        let mut f = std::fs::File::options()
            .write(true)
            .open(outside.path().join("f"))
            .unwrap();
        std::io::Write::write_all(&mut f, b"S").unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
            .unwrap();
        let after = volume.digest().unwrap().root;
        assert_ne!(after, before, "the write did not change the digest");
        assert_eq!(after, digest_of(root.path()).root);
    }

    /// When more changed than inotify could queue, the digest walks the
    /// whole tree again.
    #[test]
    fn a_watch_that_lost_events_walks_the_tree() {
        use std::os::unix::fs::PermissionsExt as _;
        let (root, volume, before) = watched_tree();
        let queued: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Alternating, so that no event repeats the one before it.
        for i in 0..queued + 2 {
            let file = if i % 2 == 0 { "empty" } else { "big" };
            std::fs::set_permissions(
                root.path().join(file),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        // Past the overflow: its event is lost.
        (tree_changes()[0].1)(root.path());
        settle_root(root.path());
        let after = volume.digest().unwrap().root;
        assert_ne!(after, before);
        assert_eq!(after, digest_of(root.path()).root);
    }
}
