//! `volume`: Unix metadata of the granted volume.

use crate::bindings::volume::{self as wit, Entry, TreeDigest, VolumeError};
use crate::state::HostState;
use crate::volume::{Volume, VolumeError as Error};

impl From<Error> for VolumeError {
    fn from(e: Error) -> Self {
        match e {
            Error::ReadOnly => VolumeError::ReadOnly,
            Error::InvalidPath(p) => VolumeError::InvalidPath(p),
            Error::NotFound(p) => VolumeError::NotFound(p),
            e @ Error::NotATree(_) => VolumeError::InvalidPath(e.to_string()),
            e @ Error::Io { .. } => VolumeError::Io(e.to_string()),
        }
    }
}

impl HostState {
    /// Runs `f` on the granted volume, or fails when none was granted.
    fn with_volume<R>(
        &mut self,
        f: impl FnOnce(&Volume) -> Result<R, Error>,
    ) -> wasmtime::Result<Result<R, VolumeError>> {
        self.host_call(|s| match &s.grants.volume {
            Some(volume) => f(volume).map_err(Into::into),
            None => Err(VolumeError::Io("this run grants no volume".into())),
        })
    }
}

impl wit::Host for HostState {
    fn scan(&mut self) -> wasmtime::Result<Result<Vec<Entry>, VolumeError>> {
        let started = std::time::Instant::now();
        let scanned = self.with_volume(Volume::scan);
        if let Ok(Ok(entries)) = &scanned {
            tracing::debug!(entries = entries.len(), took = ?started.elapsed(), "scanned the volume");
        }
        scanned
    }

    fn digest(&mut self) -> wasmtime::Result<Result<TreeDigest, VolumeError>> {
        // Hashing a tree takes a while: what this side wrote last (the tail
        // of its final delta) must not wait in the channel's buffer
        // meanwhile, or the peer stalls until the digest is done. A peer
        // already gone shows in the next channel call.
        if let Some(channel) = &mut self.grants.channel {
            let _ = channel.flush();
        }
        let started = std::time::Instant::now();
        let digest = self.with_volume(Volume::digest);
        if let Ok(Ok(digest)) = &digest {
            tracing::debug!(entries = digest.entries, took = ?started.elapsed(), "computed the tree digest");
        }
        digest
    }

    fn create_dir(&mut self, path: String) -> wasmtime::Result<Result<(), VolumeError>> {
        self.with_volume(|v| v.tree(&path)?.create_dir(&path))
    }

    fn symlink(
        &mut self,
        target: String,
        path: String,
    ) -> wasmtime::Result<Result<(), VolumeError>> {
        self.with_volume(|v| v.tree(&path)?.symlink(&target, &path))
    }

    fn remove(&mut self, path: String) -> wasmtime::Result<Result<(), VolumeError>> {
        self.with_volume(|v| v.tree(&path)?.remove(&path))
    }

    fn set_metadata(
        &mut self,
        path: String,
        mode: u32,
        mtime_ns: i64,
    ) -> wasmtime::Result<Result<(), VolumeError>> {
        self.with_volume(|v| v.tree(&path)?.set_metadata(&path, mode, mtime_ns))
    }

    fn set_owner(
        &mut self,
        path: String,
        uid: u32,
        gid: u32,
    ) -> wasmtime::Result<Result<bool, VolumeError>> {
        self.with_volume(|v| v.tree(&path)?.set_owner(&path, uid, gid))
    }

    fn hard_link(
        &mut self,
        existing: String,
        path: String,
    ) -> wasmtime::Result<Result<(), VolumeError>> {
        self.with_volume(|v| v.tree(&path)?.hard_link(&existing, &path))
    }
}
