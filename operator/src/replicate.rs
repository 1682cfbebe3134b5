//! `wasmover replicate`: a local replication, both sides of a mover's data
//! plane in this process, joined by an in-memory channel.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmover_host::bindings::types::{Parameter, TransferReport};
use wasmover_host::volume::open_state_dir;
use wasmover_host::{
    Access, Capability, Channel, Grants, HashStore, MoverLimits, MoverModule, Observer, RunError,
    Volume,
};

/// Why a local replication could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    /// The source is missing, or not a directory, block device or file.
    #[error("source {0}: not a directory, block device or regular file")]
    BadSource(PathBuf),
    /// The destination exists but is not of the source's kind.
    #[error("destination {path}: exists and is not {kind}, as the source is")]
    DestinationKind {
        /// The destination.
        path: PathBuf,
        /// What it must be.
        kind: &'static str,
    },
    /// One tree contains the other.
    #[error("{inner} is inside {outer}: source and destination must not overlap")]
    Overlap {
        /// The contained directory.
        inner: PathBuf,
        /// The containing one.
        outer: PathBuf,
    },
    // The causes are part of the messages and not also `source()`s, so
    // that printing the error with its chain says each thing once.
    /// A directory could not be opened or created.
    #[error("{path}: {error}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// A side of the mover failed.
    #[error("{side} side: {error}")]
    Mover {
        /// `sending` or `receiving`.
        side: &'static str,
        /// What stopped it.
        error: RunError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReplicateError + '_ {
    move |error| ReplicateError::Io {
        path: path.to_owned(),
        error,
    }
}

/// Checks the two volumes, creating the destination if needed (a
/// directory, or an empty image file for a block source), and returns
/// their canonical paths.
fn prepare(src: &Path, dst: &Path) -> Result<(PathBuf, PathBuf), ReplicateError> {
    let meta = std::fs::metadata(src).map_err(|_| ReplicateError::BadSource(src.to_owned()))?;
    let block = |m: &std::fs::Metadata| m.is_file() || m.file_type().is_block_device();
    let tree = meta.is_dir();
    if !tree && !block(&meta) {
        return Err(ReplicateError::BadSource(src.to_owned()));
    }
    if let Ok(existing) = std::fs::metadata(dst)
        && (if tree {
            !existing.is_dir()
        } else {
            !block(&existing)
        })
    {
        return Err(ReplicateError::DestinationKind {
            path: dst.to_owned(),
            kind: if tree {
                "a directory"
            } else {
                "a block device or regular file"
            },
        });
    }
    let src = src.canonicalize().map_err(io(src))?;
    // Compare before creating anything, so an overlapping destination is
    // refused without leaving a directory behind.
    let dst_abs = std::path::absolute(dst).map_err(io(dst))?;
    let dst_resolved = match dst_abs.parent().and_then(|p| p.canonicalize().ok()) {
        Some(parent) => parent.join(dst_abs.file_name().unwrap_or_default()),
        None => dst_abs.clone(),
    };
    for (inner, outer) in [(&dst_resolved, &src), (&src, &dst_resolved)] {
        if inner.starts_with(outer) {
            return Err(ReplicateError::Overlap {
                inner: inner.clone(),
                outer: outer.clone(),
            });
        }
    }
    if tree {
        std::fs::create_dir_all(dst).map_err(io(dst))?;
    } else if !dst.exists() {
        std::fs::File::create_new(dst).map_err(io(dst))?;
    }
    let dst = dst.canonicalize().map_err(io(dst))?;
    Ok((src, dst))
}

/// Checks that `module` has a data plane and accepts `parameters`, before
/// anything is touched (validation is a no-op for a module without the
/// validate capability).
pub(crate) fn check_transfer(
    module: &MoverModule,
    limits: MoverLimits,
    parameters: &[Parameter],
) -> Result<(), RunError> {
    module.require(Capability::Transfer)?;
    module
        .instantiate(limits, Grants::new())
        .and_then(|mut instance| instance.validate(parameters))
}

/// Where a receiving tree keeps what one run leaves for the next (partial
/// content, file and granule hashes, the undo journal of a patch in
/// place): a directory outside the volume, so the replica holds nothing
/// the source does not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StateDir {
    /// A temporary directory, removed after the run: nothing carries over.
    #[default]
    Temporary,
    /// This directory, which belongs to this volume alone.
    At(PathBuf),
    /// A directory under this one named for the volume's canonical path
    /// (see [`StateDir::resolve`]).
    Under(PathBuf),
}

impl StateDir {
    /// The directory for the volume at `canonical` (its canonical path),
    /// if not a temporary one: for [`StateDir::Under`], 32 hex digits of
    /// the BLAKE3 of the path.
    pub fn resolve(&self, canonical: &Path) -> Option<PathBuf> {
        match self {
            StateDir::Temporary => None,
            StateDir::At(dir) => Some(dir.clone()),
            StateDir::Under(base) => {
                let key = blake3::hash(canonical.as_os_str().as_encoded_bytes());
                Some(base.join(&key.to_hex()[..32]))
            }
        }
    }

    /// Opens the destination at `canonical` for writing (see
    /// [`Volume::open_with_state`]), with its state directory (created if
    /// missing) if it is a tree.
    pub fn open_volume(
        &self,
        canonical: &Path,
        journal: Option<PathBuf>,
    ) -> std::io::Result<Volume> {
        let state = match self.resolve(canonical) {
            Some(dir) if canonical.is_dir() => Some(open_state_dir(&dir).map_err(|e| {
                std::io::Error::new(e.kind(), format!("state directory {}: {e}", dir.display()))
            })?),
            _ => None,
        };
        Volume::open_with_state(canonical, Access::ReadWrite, journal, state)
    }
}

/// How [`replicate`] opens the two volumes, beyond their paths.
#[derive(Clone, Debug, Default)]
pub struct ReplicateOptions {
    /// Where a tree destination keeps what one run leaves for the next.
    pub state_dir: StateDir,
    /// The undo journal of a block-volume destination (see
    /// [`Volume::open_with_journal`]).
    pub journal: Option<PathBuf>,
    /// Where the source's digest keeps its file hashes between runs, so
    /// that it reads only files changed since [default: nowhere; the
    /// destination keeps its own in its state directory].
    pub source_hashes: Option<PathBuf>,
    /// Both digests read every file, trusting no kept hash.
    pub read_every_file: bool,
}

/// Makes `dst` equal to `src` with `module`'s data plane and returns the
/// receiving side's report.
pub fn replicate(
    module: &MoverModule,
    src: &Path,
    dst: &Path,
    options: &ReplicateOptions,
    limits: MoverLimits,
    parameters: &[Parameter],
    observer: Arc<dyn Observer>,
) -> Result<TransferReport, ReplicateError> {
    let mover_error = |side| move |error| ReplicateError::Mover { side, error };
    check_transfer(module, limits, parameters).map_err(mover_error("receiving"))?;
    let (src, dst) = prepare(src, dst)?;
    let (to_receiver, to_sender) = Channel::pair();
    let mut source = Volume::open(&src, Access::ReadOnly).map_err(io(&src))?;
    if let Some(hashes) = &options.source_hashes {
        source
            .set_hash_store(HashStore::File(hashes.clone()))
            .map_err(io(&src))?;
    }
    let mut destination = options
        .state_dir
        .open_volume(&dst, options.journal.clone())
        .map_err(io(&dst))?;
    if options.read_every_file {
        source.read_every_file();
        destination.read_every_file();
    }
    let sending = Grants::new().with_volume(source).with_channel(to_receiver);
    let receiving = Grants::new()
        .with_volume(destination)
        .with_channel(to_sender)
        .with_observer(observer);

    // Each side owns its end of the channel in its store; when a side
    // fails, its store is dropped, the channel closes and the other side
    // stops with "peer gone" instead of waiting forever.
    let (sent, received) = std::thread::scope(|scope| {
        let sender = scope.spawn(|| module.instantiate(limits, sending)?.send(parameters));
        let receiver = scope.spawn(|| module.instantiate(limits, receiving)?.receive(parameters));
        (
            sender.join().expect("sending side panicked"),
            receiver.join().expect("receiving side panicked"),
        )
    });
    match (sent, received) {
        (Ok(_), Ok(report)) => {
            if dst.is_dir()
                && let Ok(volume) = options.state_dir.open_volume(&dst, None)
            {
                volume.discard_leftovers();
            }
            Ok(report)
        }
        // Report the cause, not the peer's "the channel closed".
        (Err(e), Err(r)) if is_peer_gone(&r) => Err(mover_error("sending")(e)),
        (_, Err(e)) => Err(mover_error("receiving")(e)),
        (Err(e), Ok(_)) => Err(mover_error("sending")(e)),
    }
}

/// Whether a side failed because its peer did: the channel closed or was
/// cut off part-way, or the peer said it failed.
pub(crate) fn is_peer_gone(e: &RunError) -> bool {
    matches!(e, RunError::Mover { reason, .. } if ["PeerGone", "PeerFailed", "ProtocolError"].contains(&reason.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_or_missing_directories_are_refused_without_side_effects() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();

        let inside = src.join("copy");
        assert!(matches!(
            prepare(&src, &inside),
            Err(ReplicateError::Overlap { .. })
        ));
        assert!(
            !inside.exists(),
            "a refused destination must not be created"
        );
        assert!(matches!(
            prepare(&src, &src),
            Err(ReplicateError::Overlap { .. })
        ));
        assert!(matches!(
            prepare(&src, tmp.path()),
            Err(ReplicateError::Overlap { .. })
        ));
        assert!(matches!(
            prepare(&tmp.path().join("missing"), &tmp.path().join("dst")),
            Err(ReplicateError::BadSource(_))
        ));
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            prepare(&src, &file),
            Err(ReplicateError::DestinationKind { .. })
        ));
        // A file source is a block volume: its destination is a file too.
        assert!(matches!(
            prepare(&file, &src),
            Err(ReplicateError::DestinationKind { .. })
        ));
        let (_, image) = prepare(&file, &tmp.path().join("image")).unwrap();
        assert!(image.is_file());

        let (s, d) = prepare(&src, &tmp.path().join("new/dst")).unwrap();
        assert_eq!(s, src.canonicalize().unwrap());
        assert!(d.is_dir());
    }
}
