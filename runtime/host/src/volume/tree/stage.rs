//! Rebuilding a file beside the old one: a staging file, renamed over it
//! once complete, whose content hash is then known.

use std::ffi::{OsStr, OsString};
use std::io;

use cap_fs_ext::DirExt;
use cap_std::fs::{File, OpenOptions};

use super::mutate::set_file_metadata;
use super::{Tree, checked, staging_path};
use crate::volume::error::VolumeError;
use crate::volume::known::Stamp;
use crate::volume::path;
use crate::volume::watch::Watch;

impl Tree {
    /// Creates the staging file for `path`, replacing a stale one.
    pub(crate) fn create_staged(
        &self,
        path: &OsStr,
    ) -> Result<(std::fs::File, OsString), VolumeError> {
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
    /// remembers that its content hashes to `hash` (see [`KnownHashes`](crate::volume::known::KnownHashes)).
    /// Returns the file's stamp after all that.
    pub(crate) fn commit_staged(
        &self,
        file: &std::fs::File,
        staged: &OsStr,
        path: &OsStr,
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
    fn rename_staged(&self, staged: &OsStr, path: &OsStr) -> io::Result<()> {
        let (parent, name) = match path::split_last(path) {
            Some((parent, name)) => (Some(self.dir.open_dir_nofollow(parent)?), name),
            None => (None, path),
        };
        let staged = path::last_name(staged);
        let dir = parent.as_ref().unwrap_or(&self.dir);
        rustix::fs::renameat(dir, staged, dir, name)?;
        Ok(())
    }

    /// Remembers that `path`, just written through `file`, hashes to
    /// `hash` under the stamp it has now, and returns that stamp.
    pub(super) fn remember_written(
        &self,
        file: &std::fs::File,
        path: &OsStr,
        hash: [u8; 32],
    ) -> Option<Stamp> {
        let stamp = Stamp::of_file(file);
        if let Some(stamp) = stamp {
            self.known.remember(path, stamp, hash);
        }
        stamp
    }

    /// Removes a staged file after a failure; best effort.
    pub(crate) fn discard_staged(&self, staged: &OsStr) {
        let _ = self.dir.remove_file(staged);
    }
}
