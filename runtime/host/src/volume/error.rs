//! Why a volume operation failed.

use std::ffi::OsStr;
use std::io;

use super::path::shown;

/// Why a volume operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The volume was opened read-only.
    #[error("the volume is read-only")]
    ReadOnly,
    /// The path is malformed or escapes the volume.
    #[error("invalid path \"{0}\": paths are relative, '/'-separated, without '.' or '..'")]
    InvalidPath(String),
    /// The path does not exist.
    #[error("{0}: not found")]
    NotFound(String),
    /// The volume is a block device or image file, which has no paths.
    #[error("{0}: the volume is a block device or image file, which has no paths")]
    NotATree(String),
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
    /// The error of an operation on `path` that failed with `source`.
    pub(crate) fn io(path: &OsStr) -> impl FnOnce(io::Error) -> VolumeError + '_ {
        move |source| match source.kind() {
            io::ErrorKind::NotFound => VolumeError::NotFound(shown(path)),
            _ => VolumeError::Io {
                path: shown(path),
                source,
            },
        }
    }

    /// `path` is malformed or escapes the volume.
    pub(crate) fn invalid(path: &OsStr) -> VolumeError {
        VolumeError::InvalidPath(shown(path))
    }
}
