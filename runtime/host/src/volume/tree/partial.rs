//! Partial content: what a lost peer left of a file's new content, kept
//! in the state directory for the next run to offer as basis instead of
//! receiving it again.

use std::ffi::OsStr;
use std::io;
use std::sync::atomic::Ordering;

use cap_std::fs::{File, OpenOptions};

use super::{STAGING_SUFFIX, State, Tree, checked, partial_path};
use crate::volume::error::VolumeError;
use crate::volume::path;

impl Tree {
    /// `path`'s partial content, created if missing, for a patch in place
    /// to read and append its literals to: kept when the peer is lost, so
    /// the next run offers them as basis (after the file) instead of
    /// receiving them again.
    pub(crate) fn spill(&self, path: &OsStr) -> Result<std::fs::File, VolumeError> {
        let partial = partial_path(checked(path)?);
        self.writable()?;
        self.state()
            .and_then(|state| {
                self.partial_parent(state, &partial)?;
                state.dir.open_with(
                    &partial,
                    OpenOptions::new().read(true).append(true).create(true),
                )
            })
            .map(File::into_std)
            .map_err(VolumeError::io(path))
    }

    /// What an interrupted run received of `path`'s new content, if any.
    pub(crate) fn open_partial(
        &self,
        path: &OsStr,
    ) -> Result<Option<(std::fs::File, u64)>, VolumeError> {
        let path = checked(path)?;
        let Some(state) = &self.state else {
            return Ok(None);
        };
        if !self.has_partials.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let partial = partial_path(path);
        let meta = match state.dir.symlink_metadata(&partial) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(VolumeError::io(path)(e)),
        };
        let file = state.dir.open(&partial).map_err(VolumeError::io(path))?;
        Ok(Some((file.into_std(), meta.len())))
    }

    /// Creates the directory the partial content `partial` goes in, and
    /// notes that partial content may now exist.
    fn partial_parent(&self, state: &State, partial: &OsStr) -> io::Result<()> {
        let parent = path::parent(partial);
        self.has_partials.store(true, Ordering::Relaxed);
        state.dir.create_dir_all(parent)
    }

    /// Keeps a staged file that a lost peer left unfinished as `path`'s
    /// partial content, unless the partial kept before is longer; best
    /// effort (resuming is an optimisation). The staged file leaves the
    /// volume either way: renamed into the state directory where both are
    /// on one filesystem, else copied there if it has room.
    pub(crate) fn keep_partial(&self, staged: &OsStr, path: &OsStr) {
        let kept = self.state().and_then(|state| {
            let partial = partial_path(path);
            let len = self.dir.metadata(staged)?.len();
            let before = state.dir.metadata(&partial).map_or(0, |m| m.len());
            if len <= before {
                return Ok(false);
            }
            self.partial_parent(state, &partial)?;
            match self.dir.rename(staged, &state.dir, &partial) {
                Ok(()) => return Ok(true),
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {}
                Err(e) => return Err(e),
            }
            // Leave a margin: the state directory also keeps hashes and
            // journals.
            if len.saturating_mul(2) > state.room() {
                return Ok(false);
            }
            let copy = path::with_suffix(&partial, STAGING_SUFFIX);
            let mut from = self.dir.open(staged)?.into_std();
            let copied = (|| {
                let mut to = state.dir.create(&copy)?.into_std();
                io::copy(&mut from, &mut to)?;
                state.dir.rename(&copy, &state.dir, &partial)
            })();
            if copied.is_err() {
                let _ = state.dir.remove_file(&copy);
            }
            copied.map(|()| false)
        });
        match kept {
            // Renamed: nothing left in the volume.
            Ok(true) => {}
            Ok(false) => self.discard_staged(staged),
            Err(e) => {
                tracing::debug!(
                    path = path::shown(path),
                    "not keeping the partial content: {e}"
                );
                self.discard_staged(staged);
            }
        }
    }

    /// Removes `path`'s partial content and the state directories it
    /// empties; best effort.
    pub(crate) fn remove_partial(&self, path: &OsStr) {
        let Some(state) = &self.state else {
            return;
        };
        if !self.has_partials.load(Ordering::Relaxed) {
            return;
        }
        let mut partial = partial_path(path);
        if state.dir.remove_file(&partial).is_err() {
            return;
        }
        while let Some((dir, _)) = path::split_last(&partial) {
            if state.dir.remove_dir(dir).is_err() {
                break;
            }
            partial = dir.to_owned();
        }
    }
}
