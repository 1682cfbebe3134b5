//! The volume a data-plane call runs on, opened without ambient authority.
//!
//! Every path a module names is relative to the volume root and is resolved
//! by `cap-std`, which refuses `..` and symlinks that lead outside. A volume
//! opened read-only refuses every change.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cap_fs_ext::{DirExt, SystemTimeSpec};
use cap_std::fs::{Dir, File, MetadataExt, OpenOptions, Permissions, PermissionsExt};

use crate::bindings::volume::{Entry, EntryKind};

/// Whether a volume may be changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The sending side: nothing may be written.
    ReadOnly,
    /// The receiving side.
    ReadWrite,
}

/// Why a volume operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The volume was opened read-only.
    #[error("the volume is read-only")]
    ReadOnly,
    /// The path is malformed or escapes the volume.
    #[error("invalid path {0:?}: paths are relative, '/'-separated, without '.' or '..'")]
    InvalidPath(String),
    /// The path does not exist.
    #[error("{0}: not found")]
    NotFound(String),
    /// Any other I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The path operated on.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl VolumeError {
    fn io(path: &str) -> impl FnOnce(io::Error) -> VolumeError + '_ {
        move |source| match source.kind() {
            io::ErrorKind::NotFound => VolumeError::NotFound(path.to_owned()),
            _ => VolumeError::Io {
                path: path.to_owned(),
                source,
            },
        }
    }
}

/// A directory tree granted to one run.
pub struct Volume {
    root: PathBuf,
    dir: Dir,
    access: Access,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("root", &self.root)
            .field("access", &self.access)
            .finish()
    }
}

/// Suffix of the temporary files and links a change is staged in before it
/// is renamed into place; a run interrupted part-way leaves at most these
/// behind, and the next run removes them as extraneous.
pub const STAGING_SUFFIX: &str = ".wasmover-tmp";

impl Volume {
    /// Opens the directory `root`.
    pub fn open(root: impl Into<PathBuf>, access: Access) -> io::Result<Self> {
        let root = root.into();
        let dir = Dir::open_ambient_dir(&root, cap_std::ambient_authority())?;
        Ok(Self { root, dir, access })
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
    /// devices, fifos) are skipped.
    pub fn scan(&self) -> Result<Vec<Entry>, VolumeError> {
        let mut entries = Vec::new();
        self.scan_dir("", &mut entries)?;
        Ok(entries)
    }

    fn scan_dir(&self, dir: &str, out: &mut Vec<Entry>) -> Result<(), VolumeError> {
        let shown = if dir.is_empty() { "." } else { dir };
        let mut names = Vec::new();
        for entry in self.dir.read_dir(shown).map_err(VolumeError::io(shown))? {
            let name = entry.map_err(VolumeError::io(shown))?.file_name();
            let name = name.into_string().map_err(|name| VolumeError::Io {
                path: format!("{shown}/{}", name.to_string_lossy()),
                source: io::Error::new(io::ErrorKind::InvalidData, "file name is not UTF-8"),
            })?;
            names.push(name);
        }
        names.sort_unstable();
        for name in names {
            let path = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let meta = self
                .dir
                .symlink_metadata(&path)
                .map_err(VolumeError::io(&path))?;
            let file_type = meta.file_type();
            let kind = if file_type.is_symlink() {
                EntryKind::Symlink
            } else if file_type.is_dir() {
                EntryKind::Directory
            } else if file_type.is_file() {
                EntryKind::File
            } else {
                tracing::warn!(path, "skipping special file");
                continue;
            };
            let link_target = match kind {
                EntryKind::Symlink => {
                    let target = self
                        .dir
                        .read_link_contents(&path)
                        .map_err(VolumeError::io(&path))?;
                    target
                        .into_os_string()
                        .into_string()
                        .map_err(|_| VolumeError::Io {
                            path: path.clone(),
                            source: io::Error::new(
                                io::ErrorKind::InvalidData,
                                "symlink target is not UTF-8",
                            ),
                        })?
                }
                _ => String::new(),
            };
            out.push(Entry {
                path: path.clone(),
                kind,
                mode: meta.mode() & 0o7777,
                size: if kind == EntryKind::File {
                    meta.len()
                } else {
                    0
                },
                mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                link_target,
            });
            if kind == EntryKind::Directory {
                self.scan_dir(&path, out)?;
            }
        }
        Ok(())
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

    /// Removes a file, a symlink or a directory tree; fine if absent.
    pub fn remove(&self, path: &str) -> Result<(), VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        let result = match self.dir.symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => self.dir.remove_dir_all(path),
            Ok(_) => self.dir.remove_file(path),
            Err(e) => Err(e),
        };
        match result {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r.map_err(VolumeError::io(path)),
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

    /// Opens a regular file for reading; `None` if there is none at `path`.
    pub(crate) fn open_file(
        &self,
        path: &str,
    ) -> Result<Option<(std::fs::File, u64)>, VolumeError> {
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
        Ok(Some((file.into_std(), meta.len())))
    }

    /// Creates the staging file for `path`, replacing a stale one.
    pub(crate) fn create_staged(&self, path: &str) -> Result<(std::fs::File, String), VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        let staged = staging_path(path);
        let _ = self.dir.remove_file(&staged);
        let file: File = self
            .dir
            .open_with(&staged, OpenOptions::new().write(true).create_new(true))
            .map_err(VolumeError::io(path))?;
        Ok((file.into_std(), staged))
    }

    /// Renames a staged file over `path` after applying its metadata.
    pub(crate) fn commit_staged(
        &self,
        staged: &str,
        path: &str,
        mode: u32,
        mtime_ns: i64,
    ) -> Result<(), VolumeError> {
        self.dir
            .set_permissions(staged, Permissions::from_mode(mode & 0o7777))
            .and_then(|()| self.dir.set_times(staged, None, Some(time_spec(mtime_ns))))
            .and_then(|()| self.dir.rename(staged, &self.dir, path))
            .map_err(VolumeError::io(path))
    }

    /// Removes a staged file after a failure; best effort.
    pub(crate) fn discard_staged(&self, staged: &str) {
        let _ = self.dir.remove_file(staged);
    }
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

fn time_spec(mtime_ns: i64) -> SystemTimeSpec {
    let time = if mtime_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(mtime_ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(mtime_ns.unsigned_abs())
    };
    SystemTimeSpec::Absolute(cap_std::time::SystemTime::from_std(time))
}

/// Nanoseconds since the epoch of a [`SystemTime`], for tests and callers
/// that compare trees.
pub fn unix_nanos(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let volume = Volume::open(root.path(), Access::ReadWrite).unwrap();
        assert!(volume.open_file("escape/secret").is_err());
        assert!(volume.create_staged("escape/secret").is_err());
        assert!(outside.path().join("secret").exists());
    }

    #[test]
    fn read_only_volume_refuses_changes() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), b"x").unwrap();
        let volume = Volume::open(root.path(), Access::ReadOnly).unwrap();
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
        let volume = Volume::open(root.path(), Access::ReadOnly).unwrap();
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
}
