//! Why a volume operation failed.

use std::io;

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
    pub(crate) fn io(path: &str) -> impl FnOnce(io::Error) -> VolumeError + '_ {
        move |source| match source.kind() {
            io::ErrorKind::NotFound => VolumeError::NotFound(path.to_owned()),
            _ => VolumeError::Io {
                path: path.to_owned(),
                source,
            },
        }
    }
}
