//! `volume`: Unix metadata of the granted volume.

use std::os::unix::ffi::OsStringExt;

use super::os;
use crate::bindings::volume::{
    self as wit, AttributeNamespaces, Entry, EntryKind, TreeDigest, VolumeError,
};
use crate::state::HostState;
use crate::volume::entry as host;
use crate::volume::{Node, Volume, VolumeError as Error};
use wasmover_contract::escape_path;

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

impl From<host::Entry> for Entry {
    fn from(e: host::Entry) -> Self {
        Entry {
            path: e.path.into_vec(),
            kind: match e.kind {
                host::EntryKind::File => EntryKind::File,
                host::EntryKind::Directory => EntryKind::Directory,
                host::EntryKind::Symlink => EntryKind::Symlink,
                host::EntryKind::Block => EntryKind::Block,
                host::EntryKind::Fifo => EntryKind::Fifo,
                host::EntryKind::Socket => EntryKind::Socket,
                host::EntryKind::CharDevice => EntryKind::CharDevice,
                host::EntryKind::BlockDevice => EntryKind::BlockDevice,
            },
            mode: e.mode,
            size: e.size,
            mtime_ns: e.mtime_ns,
            link_target: e.link_target.into_vec(),
            uid: e.uid,
            gid: e.gid,
            inode: e.inode,
            links: e.links,
            rdev: e.rdev,
            attributes: e.attributes,
        }
    }
}

impl From<host::TreeDigest> for TreeDigest {
    fn from(d: host::TreeDigest) -> Self {
        TreeDigest {
            root: d.root,
            entries: d.entries,
            bytes: d.bytes,
        }
    }
}

impl HostState {
    /// Runs `f` on the granted volume, or fails when none was granted.
    pub(super) fn with_volume<R>(
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
    fn include_attributes(&mut self, namespaces: AttributeNamespaces) -> wasmtime::Result<()> {
        self.host_call(|s| {
            if let Some(Volume::Tree(tree)) = &s.grants.volume {
                tree.include_attributes(super::blocks::namespaces(namespaces));
            }
        })
    }

    fn scan(&mut self) -> wasmtime::Result<Result<Vec<Entry>, VolumeError>> {
        let started = std::time::Instant::now();
        let scanned = self.with_volume(Volume::scan);
        if let Ok(Ok(entries)) = &scanned {
            tracing::debug!(entries = entries.len(), took = ?started.elapsed(), "scanned the volume");
        }
        Ok(scanned?.map(|entries| entries.into_iter().map(Into::into).collect()))
    }

    fn digest(
        &mut self,
        leave_out: Vec<Vec<u8>>,
    ) -> wasmtime::Result<Result<TreeDigest, VolumeError>> {
        // Hashing a tree takes a while: what this side wrote last (the tail
        // of its final delta) must not wait in the channel's buffer
        // meanwhile, or the peer stalls until the digest is done. A peer
        // already gone shows in the next channel call.
        if let Some(channel) = &mut self.grants.channel {
            let _ = channel.flush();
        }
        let started = std::time::Instant::now();
        let digest = self.with_volume(|v| {
            let leave_out: Vec<_> = leave_out.into_iter().map(os).collect();
            v.digest_leaving_out(&leave_out)
        });
        if let Ok(Ok(digest)) = &digest {
            tracing::debug!(entries = digest.entries, took = ?started.elapsed(), "computed the tree digest");
        }
        Ok(digest?.map(Into::into))
    }

    fn create_dir(&mut self, path: Vec<u8>) -> wasmtime::Result<Result<(), VolumeError>> {
        self.with_volume(|v| {
            let path = os(path);
            v.tree(&path)?.create_dir(&path)
        })
    }

    fn symlink(
        &mut self,
        target: Vec<u8>,
        path: Vec<u8>,
    ) -> wasmtime::Result<Result<(), VolumeError>> {
        self.with_volume(|v| {
            let (target, path) = (os(target), os(path));
            v.tree(&path)?.symlink(&target, &path)
        })
    }

    fn remove(&mut self, path: Vec<u8>) -> wasmtime::Result<Result<(), VolumeError>> {
        self.with_volume(|v| {
            let path = os(path);
            v.tree(&path)?.remove(&path)
        })
    }

    fn set_metadata(
        &mut self,
        path: Vec<u8>,
        mode: u32,
        mtime_ns: i64,
    ) -> wasmtime::Result<Result<(), VolumeError>> {
        self.with_volume(|v| {
            let path = os(path);
            v.tree(&path)?.set_metadata(&path, mode, mtime_ns)
        })
    }

    fn set_owner(
        &mut self,
        path: Vec<u8>,
        uid: u32,
        gid: u32,
    ) -> wasmtime::Result<Result<bool, VolumeError>> {
        self.with_volume(|v| {
            let path = os(path);
            v.tree(&path)?.set_owner(&path, uid, gid)
        })
    }

    fn hard_link(
        &mut self,
        existing: Vec<u8>,
        path: Vec<u8>,
    ) -> wasmtime::Result<Result<(), VolumeError>> {
        self.with_volume(|v| {
            let (existing, path) = (os(existing), os(path));
            v.tree(&path)?.hard_link(&existing, &path)
        })
    }

    fn make_node(
        &mut self,
        path: Vec<u8>,
        kind: EntryKind,
        mode: u32,
        rdev: u64,
    ) -> wasmtime::Result<Result<bool, VolumeError>> {
        self.with_volume(|v| {
            let node = match kind {
                EntryKind::Fifo => Node::Fifo,
                EntryKind::Socket => Node::Socket,
                EntryKind::CharDevice => Node::CharDevice,
                EntryKind::BlockDevice => Node::BlockDevice,
                other => {
                    return Err(Error::InvalidPath(format!(
                        "{}: make-node makes special files, not a {other:?}",
                        escape_path(&path)
                    )));
                }
            };
            let path = os(path);
            v.tree(&path)?.make_node(&path, node, mode, rdev)
        })
    }
}
