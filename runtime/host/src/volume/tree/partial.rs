//! Partial content: what a lost peer left of a file's new content, kept
//! for the next run to offer as basis instead of receiving it again.

use std::io;
use std::sync::atomic::Ordering;

use cap_std::fs::{File, OpenOptions};

use super::{STATE_DIR, Tree, checked, partial_path};
use crate::volume::error::VolumeError;

impl Tree {
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
