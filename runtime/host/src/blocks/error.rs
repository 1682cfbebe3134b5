//! How the block calls' failures reach the guest: each as the
//! [`BlockError`] variant that names its class.

use std::ffi::OsStr;
use std::io;

use wasmover_block::{FormatError, PatchError};

use crate::bindings::blocks::BlockError;
use crate::bindings::channel::ChannelError;
use crate::volume::VolumeError;
use crate::volume::path::shown;

impl From<VolumeError> for BlockError {
    fn from(e: VolumeError) -> Self {
        match e {
            VolumeError::ReadOnly => BlockError::ReadOnly,
            VolumeError::InvalidPath(p) => BlockError::InvalidPath(p),
            VolumeError::NotFound(p) => BlockError::NotFound(p),
            e @ VolumeError::NotATree(_) => BlockError::InvalidPath(e.to_string()),
            e @ VolumeError::Io { .. } => BlockError::Io(e.to_string()),
        }
    }
}

pub(crate) fn io_error(context: &str, path: &OsStr) -> impl FnOnce(io::Error) -> BlockError {
    move |e| match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => {
            BlockError::Channel(ChannelError::Closed)
        }
        _ => BlockError::Io(format!("{context} {}: {e}", shown(path))),
    }
}

pub(super) fn protocol_error(what: &str, path: &OsStr) -> impl FnOnce(FormatError) -> BlockError {
    move |e| match e {
        FormatError::Io(e) => io_error(what, path)(e),
        // The stream ended part-way: the peer went away.
        FormatError::Truncated { .. } => BlockError::Channel(ChannelError::Closed),
        e => BlockError::Protocol(format!("{what} {}: {e}", shown(path))),
    }
}

/// The peer's abort, when what was read as a stream's magic number was an
/// abort record's ([`crate::channel::ABORT_MAGIC`]).
pub(super) fn aborted(e: &FormatError, reader: &mut impl io::Read) -> Option<BlockError> {
    match e {
        FormatError::BadMagic { found, .. } if *found == crate::channel::ABORT_MAGIC => {
            Some(BlockError::Channel(ChannelError::Aborted(
                crate::channel::read_abort_reason(reader),
            )))
        }
        _ => None,
    }
}

/// Maps a patch's failure to the guest's error.
pub(super) fn patch_error(path: &OsStr) -> impl FnOnce(PatchError) -> BlockError + '_ {
    move |e| match e {
        PatchError::Verification { .. } => {
            BlockError::Verification(format!("{}: {e}", shown(path)))
        }
        PatchError::Io(e) => io_error("patching", path)(e),
        PatchError::Format(e) => protocol_error("delta of", path)(e),
        e @ PatchError::Unrecovered { .. } => {
            BlockError::Io(format!("patching {}: {e}", shown(path)))
        }
        e => BlockError::Protocol(format!("delta of {}: {e}", shown(path))),
    }
}
