//! A raw block device or image file as a volume (a block volume), the way
//! Longhorn and Kopia move block-mode PVCs.
//!
//! Its content is the volume. A device cannot be rebuilt beside itself and
//! renamed, so the receiving side patches it in place, under an undo
//! journal ([`wasmover_block::patch_journaled`]): the bytes a patch will
//! overwrite are saved on a filesystem first. Opening the volume for
//! writing rolls back a patch a crash cut off, so every run starts from a
//! volume that is either old or new.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::access::Access;
use super::content::{DIGEST_BUFFER, DIGEST_CONTEXT, content_hash};
use super::error::VolumeError;
use super::kept_hashes::{self, KeptHashes};
use super::known::{self, KnownHashes, Stamp};
use crate::volume::entry::{Entry, EntryKind, TreeDigest};

/// Suffix of the undo journal an image file keeps beside itself while a
/// patch is applied: `disk.img` has `.disk.img.wasmover-journal`.
const JOURNAL_SUFFIX: &str = ".wasmover-journal";

/// How errors name the volume: its host path is not the module's business.
const LABEL: &str = "(block volume)";

/// A block device or image file granted to one run.
#[derive(Debug)]
pub struct Image {
    path: PathBuf,
    access: Access,
    /// Where the undo journal lives while a patch is applied; `None` on the
    /// read-only side.
    journal: Option<PathBuf>,
    /// The content hash this run learned, for an image file (a device's
    /// node does not change when its content does, so it has no stamp).
    pub(super) known: KnownHashes,
    /// How long before a stamp the file must have changed for what was
    /// read after it to be trusted later ([`Stamp::settled`]).
    settle_ns: i64,
}

fn io_error(source: io::Error) -> VolumeError {
    VolumeError::io(OsStr::new(LABEL))(source)
}

/// Syncs the directory holding `path`, making a created or removed entry
/// durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    File::open(parent_of(path))?.sync_all()
}

/// The directory holding `path`.
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl Image {
    /// Opens `path` (a block device or regular file). The writable side
    /// needs an undo journal: `journal`, or for an image file the default
    /// beside it; a journal left by an interrupted patch is rolled back
    /// here, before anything else reads the volume.
    pub(super) fn open(
        path: PathBuf,
        access: Access,
        journal: Option<PathBuf>,
    ) -> io::Result<Self> {
        let meta = std::fs::metadata(&path)?;
        let device = meta.file_type().is_block_device();
        if !device && !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: not a directory, block device or regular file",
                    path.display()
                ),
            ));
        }
        let journal = match (journal, access) {
            (Some(journal), _) => Some(journal),
            (None, Access::ReadOnly) => None,
            (None, Access::ReadWrite) if device => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} is a block device: name a file for its undo journal on a \
                         filesystem that outlives the run (--journal FILE)",
                        path.display()
                    ),
                ));
            }
            (None, Access::ReadWrite) => Some(default_journal(&path)),
        };
        // An image file written here: its directory (where its journal
        // goes too) tells whether a change always shows in its stamp.
        let fine = access == Access::ReadWrite
            && !device
            && File::open(parent_of(&path)).is_ok_and(|dir| known::fine_ctime(&dir));
        let image = Self {
            path,
            access,
            journal,
            known: KnownHashes::default(),
            settle_ns: if fine { 0 } else { known::SETTLE_NS },
        };
        if access == Access::ReadWrite {
            image.recover()?;
        }
        Ok(image)
    }

    /// Rolls back the patch an interrupted run left, if any.
    fn recover(&self) -> io::Result<()> {
        let Some(journal_path) = &self.journal else {
            return Ok(());
        };
        let journal = match File::open(journal_path) {
            Ok(journal) => journal,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let target = OpenOptions::new().write(true).open(&self.path)?;
        let outcome = wasmover_block::roll_back(&journal, &target).map_err(|e| {
            io::Error::other(format!(
                "{}: rolling back the interrupted patch from {} failed: {e}",
                self.path.display(),
                journal_path.display()
            ))
        })?;
        tracing::warn!(
            volume = %self.path.display(),
            journal = %journal_path.display(),
            ?outcome,
            "an earlier patch was interrupted: the volume is back to its old content"
        );
        std::fs::remove_file(journal_path)?;
        sync_parent(journal_path)
    }

    /// The device or file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How the volume was opened.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Whether the volume is a block device (fixed length) rather than an
    /// image file.
    pub(crate) fn is_device(&self) -> Result<bool, VolumeError> {
        let meta = std::fs::metadata(&self.path).map_err(io_error)?;
        Ok(meta.file_type().is_block_device())
    }

    /// The volume as its only entry (path ``, kind `block`).
    pub(crate) fn entry(&self) -> Result<Entry, VolumeError> {
        let meta = std::fs::metadata(&self.path).map_err(io_error)?;
        let (_, size) = self.open_read()?;
        Ok(Entry {
            path: OsString::new(),
            kind: EntryKind::Block,
            mode: meta.mode() & 0o7777,
            size,
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            link_target: OsString::new(),
            uid: meta.uid(),
            gid: meta.gid(),
            inode: meta.ino(),
            links: meta.nlink().try_into().unwrap_or(u32::MAX),
            rdev: 0,
            attributes: 0,
        })
    }

    /// The digest of a block volume: its kind, length and content hash.
    pub(crate) fn digest(&self) -> Result<TreeDigest, VolumeError> {
        let (file, _) = self.open_read()?;
        let meta = file.metadata().map_err(io_error)?;
        let (hash, len) = match self.known.take(OsStr::new(""), Stamp::of(&meta), 0) {
            Some((hash, _)) if meta.is_file() => (hash, meta.len()),
            _ => content_hash(file, &mut vec![0; DIGEST_BUFFER]).map_err(io_error)?,
        };
        let mut tree = blake3::Hasher::new_derive_key(DIGEST_CONTEXT);
        tree.update(&[3]);
        tree.update(&0u64.to_le_bytes());
        tree.update(&len.to_le_bytes());
        tree.update(hash.as_bytes());
        tree.update(&1u64.to_le_bytes());
        tree.update(&len.to_le_bytes());
        Ok(TreeDigest {
            root: tree.finalize().to_hex().to_string(),
            entries: 1,
            bytes: len,
        })
    }

    /// Records that the volume, as `stamp` identifies it, hashes to `hash`
    /// (see [`KnownHashes`]).
    pub(crate) fn remember_hash(&self, stamp: Stamp, hash: [u8; 32]) {
        self.known.remember(OsStr::new(""), stamp, hash);
    }

    /// Opens the volume for reading, with its length (a device's is found
    /// by seeking to its end).
    pub(crate) fn open_read(&self) -> Result<(File, u64), VolumeError> {
        let mut file = File::open(&self.path).map_err(io_error)?;
        let len = file.seek(SeekFrom::End(0)).map_err(io_error)?;
        file.rewind().map_err(io_error)?;
        Ok((file, len))
    }

    /// Opens the volume for patching in place, with its length.
    pub(crate) fn open_write(&self) -> Result<(File, u64), VolumeError> {
        if self.access == Access::ReadOnly {
            return Err(VolumeError::ReadOnly);
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(io_error)?;
        let len = file.seek(SeekFrom::End(0)).map_err(io_error)?;
        Ok((file, len))
    }

    fn journal_path(&self) -> Result<&Path, VolumeError> {
        self.journal.as_deref().ok_or(VolumeError::ReadOnly)
    }

    /// Creates the (empty) undo journal and makes its directory entry
    /// durable, so a crash after the patch started always finds it.
    pub(crate) fn begin_journal(&self) -> Result<File, VolumeError> {
        let path = self.journal_path()?;
        let journal_error = |e: io::Error| VolumeError::Io {
            path: format!("the undo journal of {LABEL}"),
            source: e,
        };
        let journal = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(journal_error)?;
        sync_parent(path).map_err(journal_error)?;
        Ok(journal)
    }

    /// Deletes the undo journal once the patch is complete and synced (or
    /// rolled back), and makes that durable.
    pub(crate) fn end_journal(&self) -> Result<(), VolumeError> {
        let path = self.journal_path()?;
        std::fs::remove_file(path)
            .and_then(|()| sync_parent(path))
            .map_err(io_error)
    }

    /// Where the literals of the patch being received wait, beside the
    /// journal: appended as they arrive, kept when the peer is lost so the
    /// next transfer offers them as basis (after the volume) instead of
    /// receiving them again.
    fn partial_path(&self) -> Result<PathBuf, VolumeError> {
        let mut path = self.journal_path()?.as_os_str().to_owned();
        path.push(".partial");
        Ok(PathBuf::from(path))
    }

    /// What an interrupted transfer received, if anything; `None` on the
    /// read-only side.
    pub(crate) fn open_partial(&self) -> Result<Option<(File, u64)>, VolumeError> {
        if self.journal.is_none() {
            return Ok(None);
        }
        match File::open(self.partial_path()?) {
            Ok(file) => {
                let len = file.metadata().map_err(io_error)?.len();
                Ok((len > 0).then_some((file, len)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }

    /// The partial content, created if missing, for a patch to read and
    /// append its literals to (see [`wasmover_block::InPlacePatch::read`]).
    pub(crate) fn spill(&self) -> Result<File, VolumeError> {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(self.partial_path()?)
            .map_err(io_error)
    }

    /// How long before a stamp the file must have changed for what was read
    /// after it to be trusted later: 0 where a later change always shows
    /// in the stamp ([`known::fine_ctime`]).
    pub(crate) fn settle_ns(&self) -> i64 {
        self.settle_ns
    }

    /// Where the granule hashes of the image are kept, beside its journal.
    fn granules_path(&self) -> Option<PathBuf> {
        let mut path = self.journal.as_ref()?.as_os_str().to_owned();
        path.push(".granules");
        Some(PathBuf::from(path))
    }

    /// The granule hashes kept by an earlier run, if any; the caller
    /// compares their stamp with the image's.
    pub(crate) fn kept_hashes(&self) -> Option<KeptHashes> {
        let path = self.granules_path()?;
        match std::fs::read(&path) {
            Ok(bytes) => kept_hashes::decode(&bytes, OsStr::new(""))
                .inspect_err(|why| {
                    tracing::warn!(file = %path.display(), "ignoring kept granule hashes: {why}");
                })
                .ok(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(file = %path.display(), "ignoring kept granule hashes: {e}");
                None
            }
        }
    }

    /// Keeps the image's granule hashes for the next run, if their stamp
    /// lets a later run trust them; otherwise drops what was kept. Best
    /// effort.
    pub(crate) fn keep_hashes(&self, kept: Option<&KeptHashes>) {
        let Some(path) = self.granules_path() else {
            return;
        };
        let Some(kept) = kept.filter(|k| k.stamp.settled(self.settle_ns)) else {
            let _ = std::fs::remove_file(&path);
            return;
        };
        let mut staged = path.clone().into_os_string();
        staged.push(super::tree::STAGING_SUFFIX);
        let written = std::fs::write(&staged, kept_hashes::encode(OsStr::new(""), kept))
            .and_then(|()| std::fs::rename(&staged, &path));
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), "could not keep the granule hashes for the next run: {e}");
        }
    }

    /// Removes the partial content after a transfer completed or failed
    /// for a reason other than a lost peer; best effort.
    pub(crate) fn discard_partial(&self) {
        if let Ok(path) = self.partial_path() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `dir/.name.wasmover-journal` for the image file `dir/name`.
fn default_journal(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}{JOURNAL_SUFFIX}"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    use std::time::SystemTime;

    use wasmover_block::{InPlacePatch, Limits, Signature, SignatureOptions};

    use super::*;
    use crate::volume::Volume;

    fn image_with(dir: &Path, bytes: &[u8]) -> PathBuf {
        let path = dir.join("disk.img");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn a_block_volume_is_one_entry_and_refuses_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = image_with(dir.path(), &[7; 10_000]);
        let volume = Volume::open(&path, Access::ReadOnly).unwrap();
        let entries = volume.scan().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            (entries[0].path.as_os_str(), entries[0].kind),
            (OsStr::new(""), EntryKind::Block)
        );
        assert_eq!(entries[0].size, 10_000);
        assert!(matches!(
            volume.tree(OsStr::new("a")),
            Err(VolumeError::NotATree(p)) if p == "a"
        ));
        // The digest covers the content, not the node's time.
        let before = volume.digest().unwrap();
        assert_eq!((before.entries, before.bytes), (1, 10_000));
        let file = File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(volume.digest().unwrap().root, before.root);
        file.write_all_at(&[8], 5000).unwrap();
        assert_ne!(volume.digest().unwrap().root, before.root);
    }

    #[test]
    fn opening_for_writing_rolls_back_an_interrupted_patch() {
        let dir = tempfile::tempdir().unwrap();
        let old: Vec<u8> = (0..64 << 10).map(|i| (i * 7 % 251) as u8).collect();
        let mut new = old.clone();
        new[20_000..24_096].fill(0xAB);
        new.extend_from_slice(&[1; 5000]);
        let path = image_with(dir.path(), &old);

        // A patch applied in full, but the run died before it deleted its
        // journal: the volume is new, and the journal can undo it.
        let sig =
            Signature::compute(&old[..], old.len() as u64, &SignatureOptions::default()).unwrap();
        let mut delta = Vec::new();
        wasmover_block::delta(&sig, &new[..], &mut delta).unwrap();
        let mut target = File::options().read(true).write(true).open(&path).unwrap();
        let patch = InPlacePatch::read(&mut target, &delta[..], &Limits::default(), None).unwrap();
        let journal_path = dir.path().join(".disk.img.wasmover-journal");
        let mut journal = File::create(&journal_path).unwrap();
        wasmover_block::write_undo(&target, &patch, &journal).unwrap();
        patch.apply(&mut target).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), new);

        // The sending side never writes.
        Volume::open(&path, Access::ReadOnly).unwrap();
        assert!(journal_path.exists());
        // The receiving side undoes it before anything else.
        Volume::open(&path, Access::ReadWrite).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), old);
        assert!(!journal_path.exists());

        // A journal torn while it was written means the target was never
        // touched: it is dropped.
        journal = File::create(&journal_path).unwrap();
        journal.write_all(b"WMUJ\x03\x00\x00").unwrap();
        Volume::open(&path, Access::ReadWrite).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), old);
        assert!(!journal_path.exists());
    }

    #[test]
    fn a_directory_takes_no_journal_and_a_character_device_is_no_volume() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            Volume::open_with_journal(dir.path(), Access::ReadWrite, Some(dir.path().join("j")))
                .unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        let err = Volume::open("/dev/null", Access::ReadOnly).unwrap_err();
        assert!(
            err.to_string().contains("not a directory, block device"),
            "{err}"
        );
    }
}
