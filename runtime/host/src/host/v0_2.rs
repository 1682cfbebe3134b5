//! The imports of contract 0.2 as adapters over the current contract's.
//!
//! A module built for `wasmover:mover@0.2.0` links against these: each
//! converts its arguments, calls the current implementation (which meters
//! the call) and converts the result back. What 0.2 cannot express it
//! never sees: a name that is not UTF-8 fails as `invalid-path`, naming it
//! escaped, as a 0.2 host did; special files are left out of a scan, with
//! the warning a 0.2 host gave; literals travel as the host's default
//! compression has them; attributes are neither fingerprinted nor copied.

use crate::bindings::v0_2::{blocks, channel, clock, events, kube, log, progress, types, volume};
use crate::bindings::{self as current};
use crate::state::HostState;
use wasmover_contract::escape_path;

/// Converts between the two versions' copies of a record or variant that
/// did not change: the same fields, or the same cases each with its one
/// value (`String`), or the same unit cases.
macro_rules! same_shape {
    (enum $from:path => $to:path { $($case:ident),* $(,)? }) => {
        impl From<$from> for $to {
            fn from(value: $from) -> Self {
                use $from as From_;
                match value {
                    $(From_::$case => Self::$case,)*
                }
            }
        }
    };
    (variant $from:path => $to:path { $($case:ident),* $(,)? }) => {
        impl From<$from> for $to {
            fn from(value: $from) -> Self {
                use $from as From_;
                match value {
                    $(From_::$case(v) => Self::$case(v),)*
                }
            }
        }
    };
    (record $from:path => $to:path { $($field:ident),* $(,)? }) => {
        impl From<$from> for $to {
            fn from(value: $from) -> Self {
                Self { $($field: value.$field,)* }
            }
        }
    };
}

same_shape!(enum log::Level => current::log::Level { Trace, Debug, Info, Warn, Error });
same_shape!(enum events::EventType => current::events::EventType { Normal, Warning });
same_shape!(record kube::ObjectKey => current::kube::ObjectKey { api_version, kind, name });
same_shape!(variant current::kube::KubeError => kube::KubeError {
    Forbidden, NotFound, Conflict, Invalid, Unavailable, Other,
});
same_shape!(record current::volume::TreeDigest => volume::TreeDigest { root, entries, bytes });

impl From<current::channel::ChannelError> for channel::ChannelError {
    fn from(e: current::channel::ChannelError) -> Self {
        use current::channel::ChannelError as E;
        match e {
            E::Closed => Self::Closed,
            E::TooLarge(n) => Self::TooLarge(n),
            E::Io(m) => Self::Io(m),
            E::Aborted(m) => Self::Aborted(m),
        }
    }
}

impl From<current::volume::VolumeError> for volume::VolumeError {
    fn from(e: current::volume::VolumeError) -> Self {
        use current::volume::VolumeError as E;
        match e {
            E::ReadOnly => Self::ReadOnly,
            E::InvalidPath(m) => Self::InvalidPath(m),
            E::NotFound(m) => Self::NotFound(m),
            E::Io(m) => Self::Io(m),
        }
    }
}

impl From<current::blocks::BlockError> for blocks::BlockError {
    fn from(e: current::blocks::BlockError) -> Self {
        use current::blocks::BlockError as E;
        match e {
            E::ReadOnly => Self::ReadOnly,
            E::InvalidPath(m) => Self::InvalidPath(m),
            E::NotFound(m) => Self::NotFound(m),
            E::Channel(c) => Self::Channel(c.into()),
            E::Protocol(m) => Self::Protocol(m),
            E::Verification(m) => Self::Verification(m),
            E::Io(m) => Self::Io(m),
            // Only `set-compression` fails so, which 0.2 cannot call.
            E::Invalid(m) => Self::Io(m),
        }
    }
}

impl From<current::blocks::BlockStats> for blocks::BlockStats {
    fn from(s: current::blocks::BlockStats) -> Self {
        Self {
            file_bytes: s.file_bytes,
            matched_bytes: s.matched_bytes,
            literal_bytes: s.literal_bytes,
            wire_bytes: s.wire_bytes,
        }
    }
}

/// A current entry as 0.2 lists it: `None` for a kind 0.2 does not know
/// (a special file); an error for a name that is not UTF-8.
fn entry(e: current::volume::Entry) -> Result<Option<volume::Entry>, volume::VolumeError> {
    use current::volume::EntryKind as K;
    let kind = match e.kind {
        K::File => volume::EntryKind::File,
        K::Directory => volume::EntryKind::Directory,
        K::Symlink => volume::EntryKind::Symlink,
        K::Block => volume::EntryKind::Block,
        K::Fifo | K::Socket | K::CharDevice | K::BlockDevice => return Ok(None),
    };
    let utf8 = |bytes: Vec<u8>| {
        String::from_utf8(bytes).map_err(|e| {
            volume::VolumeError::InvalidPath(format!(
                "{}: file name is not UTF-8",
                escape_path(e.as_bytes())
            ))
        })
    };
    Ok(Some(volume::Entry {
        path: utf8(e.path)?,
        kind,
        mode: e.mode,
        size: e.size,
        mtime_ns: e.mtime_ns,
        link_target: utf8(e.link_target)?,
        uid: e.uid,
        gid: e.gid,
        inode: e.inode,
        links: e.links,
    }))
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        current::log::Host::log(self, level.into(), message)
    }
}

impl events::Host for HostState {
    fn publish(
        &mut self,
        event_type: events::EventType,
        reason: String,
        action: String,
        note: String,
    ) -> wasmtime::Result<()> {
        current::events::Host::publish(self, event_type.into(), reason, action, note)
    }
}

impl progress::Host for HostState {
    fn report(
        &mut self,
        bytes_done: u64,
        bytes_total: u64,
        entries_done: u64,
        entries_total: u64,
    ) -> wasmtime::Result<()> {
        current::progress::Host::report(self, bytes_done, bytes_total, entries_done, entries_total)
    }
}

impl clock::Host for HostState {
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        current::clock::Host::now_ms(self)
    }
}

impl kube::Host for HostState {
    fn get(
        &mut self,
        key: kube::ObjectKey,
    ) -> wasmtime::Result<Result<Option<String>, kube::KubeError>> {
        Ok(current::kube::Host::get(self, key.into())?.map_err(Into::into))
    }

    fn list_objects(
        &mut self,
        api_version: String,
        kind: String,
        label_selector: Option<String>,
    ) -> wasmtime::Result<Result<Vec<String>, kube::KubeError>> {
        let listed = current::kube::Host::list_objects(self, api_version, kind, label_selector)?;
        Ok(listed.map_err(Into::into))
    }

    fn create(&mut self, object: String) -> wasmtime::Result<Result<String, kube::KubeError>> {
        Ok(current::kube::Host::create(self, object)?.map_err(Into::into))
    }

    fn patch(
        &mut self,
        key: kube::ObjectKey,
        merge_patch: String,
    ) -> wasmtime::Result<Result<String, kube::KubeError>> {
        Ok(current::kube::Host::patch(self, key.into(), merge_patch)?.map_err(Into::into))
    }

    fn delete(&mut self, key: kube::ObjectKey) -> wasmtime::Result<Result<bool, kube::KubeError>> {
        Ok(current::kube::Host::delete(self, key.into())?.map_err(Into::into))
    }
}

impl volume::Host for HostState {
    fn scan(&mut self) -> wasmtime::Result<Result<Vec<volume::Entry>, volume::VolumeError>> {
        let entries = match current::volume::Host::scan(self)? {
            Ok(entries) => entries,
            Err(e) => return Ok(Err(e.into())),
        };
        let mut listed = Vec::with_capacity(entries.len());
        let mut special = Vec::new();
        for e in entries {
            let path = e.path.clone();
            match entry(e) {
                Ok(Some(e)) => listed.push(e),
                Ok(None) => special.push(path),
                Err(e) => return Ok(Err(e)),
            }
        }
        if let Some(first) = special.first() {
            tracing::warn!(
                module = &*self.module,
                special = special.len(),
                first = escape_path(first),
                "skipping special files (fifos, sockets, device nodes): the module is built for contract 0.2, which cannot list them"
            );
        }
        // Its digest leaves them out too, as a 0.2 host's did, on both
        // sides: each leaves out those it has.
        self.unlisted = special;
        Ok(Ok(listed))
    }

    fn digest(&mut self) -> wasmtime::Result<Result<volume::TreeDigest, volume::VolumeError>> {
        let unlisted = self.unlisted.clone();
        let digest = current::volume::Host::digest(self, unlisted)?;
        Ok(digest.map(Into::into).map_err(Into::into))
    }

    fn create_dir(&mut self, path: String) -> wasmtime::Result<Result<(), volume::VolumeError>> {
        Ok(current::volume::Host::create_dir(self, path.into_bytes())?.map_err(Into::into))
    }

    fn symlink(
        &mut self,
        target: String,
        path: String,
    ) -> wasmtime::Result<Result<(), volume::VolumeError>> {
        let made = current::volume::Host::symlink(self, target.into_bytes(), path.into_bytes())?;
        Ok(made.map_err(Into::into))
    }

    fn remove(&mut self, path: String) -> wasmtime::Result<Result<(), volume::VolumeError>> {
        Ok(current::volume::Host::remove(self, path.into_bytes())?.map_err(Into::into))
    }

    fn set_metadata(
        &mut self,
        path: String,
        mode: u32,
        mtime_ns: i64,
    ) -> wasmtime::Result<Result<(), volume::VolumeError>> {
        let set = current::volume::Host::set_metadata(self, path.into_bytes(), mode, mtime_ns)?;
        Ok(set.map_err(Into::into))
    }

    fn set_owner(
        &mut self,
        path: String,
        uid: u32,
        gid: u32,
    ) -> wasmtime::Result<Result<bool, volume::VolumeError>> {
        let set = current::volume::Host::set_owner(self, path.into_bytes(), uid, gid)?;
        Ok(set.map_err(Into::into))
    }

    fn hard_link(
        &mut self,
        existing: String,
        path: String,
    ) -> wasmtime::Result<Result<(), volume::VolumeError>> {
        let linked =
            current::volume::Host::hard_link(self, existing.into_bytes(), path.into_bytes())?;
        Ok(linked.map_err(Into::into))
    }
}

impl channel::Host for HostState {
    fn send(&mut self, message: Vec<u8>) -> wasmtime::Result<Result<(), channel::ChannelError>> {
        Ok(current::channel::Host::send(self, message)?.map_err(Into::into))
    }

    fn receive(&mut self) -> wasmtime::Result<Result<Vec<u8>, channel::ChannelError>> {
        Ok(current::channel::Host::receive(self)?.map_err(Into::into))
    }

    fn abort(&mut self, reason: String) -> wasmtime::Result<()> {
        current::channel::Host::abort(self, reason)
    }
}

impl blocks::Host for HostState {
    fn send_signature(
        &mut self,
        path: String,
        block_size: Option<u32>,
    ) -> wasmtime::Result<Result<blocks::BlockStats, blocks::BlockError>> {
        let sent = current::blocks::Host::send_signature(self, path.into_bytes(), block_size)?;
        Ok(sent.map(Into::into).map_err(Into::into))
    }

    fn send_delta(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<blocks::BlockStats, blocks::BlockError>> {
        let sent = current::blocks::Host::send_delta(self, path.into_bytes())?;
        Ok(sent.map(Into::into).map_err(Into::into))
    }

    fn receive_patch(
        &mut self,
        path: String,
        mode: u32,
        mtime_ns: i64,
    ) -> wasmtime::Result<Result<blocks::BlockStats, blocks::BlockError>> {
        let patched =
            current::blocks::Host::receive_patch(self, path.into_bytes(), mode, mtime_ns)?;
        Ok(patched.map(Into::into).map_err(Into::into))
    }
}
