//! Rebuilding a tree's file beside the old one, renamed into place once
//! the patch verified.

use std::ffi::OsStr;

use wasmover_block::{Limits, PatchStats, SparseWriter};

use super::basis::Basis;
use super::error::{io_error, patch_error};
use super::progress::FileProgress;
use super::receive::receive_delta;
use super::session::BasisKept;
use crate::bindings::blocks::BlockError;
use crate::channel::Channel;
use crate::volume::path::shown;
use crate::volume::{Stamp, Tree};

/// A file of a tree to rebuild, and the metadata it gets.
pub(crate) struct Target<'a> {
    pub(crate) path: &'a OsStr,
    pub(crate) mode: u32,
    pub(crate) mtime_ns: i64,
}

/// Receives a delta for a file of a tree, rebuilds it beside the old one
/// and renames it into place; a peer lost part-way leaves what arrived for
/// the next run to resume from.
///
/// With the hashes of the old file's granules (`hashes`, from its
/// signature), granules the delta keeps in place are copied by the kernel
/// and not read again, as long as the old file still has the stamp it had
/// when they were hashed.
pub(crate) fn receive_beside(
    tree: &Tree,
    file: Target,
    hashes: Option<BasisKept>,
    channel: &mut Channel,
    limits: &Limits,
    progress: &mut FileProgress,
) -> Result<PatchStats, BlockError> {
    let path = file.path;
    let mut basis = Basis::open_tree(tree, path)?;
    let known = basis.still(hashes);
    let (staged_file, staged) = tree.create_staged(path)?;
    let result = (|| {
        // Zero runs become holes: the staged file starts empty.
        let mut out = SparseWriter::new(staged_file);
        let len = basis.len();
        let (stats, in_place) = receive_delta(
            &mut basis,
            len,
            channel,
            limits,
            path,
            |basis, delta| match (&known, basis.only_file()) {
                (Some(kept), Some((old, _))) => {
                    let mut report = |done| progress.advance(done);
                    let (stats, in_place) = wasmover_block::patch_from_file(
                        old,
                        &kept.hashes,
                        delta,
                        &mut out,
                        limits,
                        &mut report,
                    )
                    .map_err(patch_error(path))?;
                    if Stamp::of_file(old).is_none_or(|now| now != kept.stamp) {
                        return Err(BlockError::Verification(format!(
                            "{}: the old file changed while it was the basis of its new \
                             content: the next run rebuilds it again",
                            shown(path)
                        )));
                    }
                    Ok((stats, Some(in_place)))
                }
                _ => {
                    let mut report = |done| progress.advance(done);
                    let stats = wasmover_block::patch_reporting(
                        basis,
                        delta,
                        &mut out,
                        limits,
                        &mut report,
                    )
                    .map_err(patch_error(path))?;
                    Ok((stats, None))
                }
            },
        )?;
        let file = out.finish().map_err(io_error("writing", path))?;
        Ok((stats, in_place, file))
    })();
    match result {
        Ok((stats, in_place, staged_file)) => {
            let stamp = tree.commit_staged(
                &staged_file,
                &staged,
                path,
                file.mode,
                file.mtime_ns,
                stats.hash,
            )?;
            tree.remove_partial(path);
            let next = match (known, in_place, stamp) {
                (Some(kept), Some(in_place), Some(stamp)) => {
                    kept.updated(&staged_file, stats.written_bytes, &in_place, stamp)
                }
                _ => None,
            };
            tree.keep_hashes(path, next.as_ref());
            Ok(stats)
        }
        // The peer is gone: what arrived is kept for the next run.
        Err(e @ BlockError::Channel(_)) => {
            tree.keep_partial(&staged, path);
            Err(e)
        }
        Err(e) => {
            tree.discard_staged(&staged);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use wasmover_block::{BasisHashes, Signature, SignatureOptions};

    use super::*;
    use crate::observer::Progress;

    /// Rebuilds `path` of `tree` from `new` through [`receive_beside`],
    /// with the old file's granule hashes as its signature left them,
    /// after `meanwhile` ran; the peer's delta is against the old file as
    /// it was hashed.
    fn rebuild_with_hashes(
        tree: &Tree,
        path: &OsStr,
        new: &[u8],
        meanwhile: impl FnOnce(),
    ) -> Result<PatchStats, BlockError> {
        let mut basis = Basis::open_tree(tree, path).unwrap();
        let (_, stamp) = basis.only_file().unwrap();
        // Old enough for its stamp to be trusted: past a coarse clock's
        // tick, as a settled stamp is, so that the change `meanwhile` makes
        // shows in the stamp.
        std::thread::sleep(std::time::Duration::from_nanos(
            crate::volume::known::TEST_SETTLE_NS as u64 + 50_000_000,
        ));
        let stamp = Stamp::of_file(basis.only_file().unwrap().0)
            .filter(|s| *s == stamp)
            .unwrap();
        let len = basis.len();
        let signature = Signature::compute(&mut basis, len, &SignatureOptions::default()).unwrap();
        io::Seek::seek(&mut basis, io::SeekFrom::Start(0)).unwrap();
        let hashes = BasisHashes::compute(&mut basis, len).unwrap();
        drop(basis);
        meanwhile();
        let (mut here, mut peer) = Channel::pair();
        let new = new.to_vec();
        let for_sender = signature.clone();
        let sender = std::thread::spawn(move || {
            wasmover_block::delta(&for_sender, &new[..], peer.writer()).unwrap();
            peer.flush().unwrap();
            peer
        });
        let observer = crate::observer::Quiet;
        let mut progress = FileProgress::new(&observer, "test", Progress::default());
        let target = Target {
            path,
            mode: 0o644,
            mtime_ns: 1_000_000_000,
        };
        let kept = BasisKept {
            path: path.to_owned(),
            stamp,
            hashes,
        };
        let result = receive_beside(
            tree,
            target,
            Some(kept),
            &mut here,
            &Limits::default(),
            &mut progress,
        );
        drop(sender.join().unwrap());
        result
    }

    #[test]
    fn granules_in_place_are_taken_by_their_hashes_only_while_the_old_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let old = wasmover_block::fuzzing::pseudo_random(9 << 20, 5);
        let mut new = old.clone();
        new[5_000_000..5_004_096].fill(1);
        std::fs::write(dir.path().join("f"), &old).unwrap();
        let tree = Tree::open(dir.path(), crate::volume::Access::ReadWrite).unwrap();

        let stats = rebuild_with_hashes(&tree, OsStr::new("f"), &new, || {}).unwrap();
        assert_eq!(stats.hash, *blake3::hash(&new).as_bytes());
        assert!(std::fs::read(dir.path().join("f")).unwrap() == new);
        // What is kept for the next run is what reading the new file gives,
        // under the stamp it has now; nothing where the filesystem's ctime
        // could miss a change made right after it was written.
        let kept = tree.kept_hashes(OsStr::new("f"));
        if tree.settle_ns() > 0 {
            assert!(kept.is_none());
        } else {
            let kept = kept.expect("granule hashes are kept");
            let (file, len, stamp) = tree.open_file(OsStr::new("f")).unwrap().unwrap();
            assert_eq!(kept.stamp, stamp);
            assert_eq!(kept.hashes, BasisHashes::compute(&file, len).unwrap());
        }

        // The old file changes (same length) after its hashes were taken:
        // they are not believed, so the patch reads what is there now, and
        // the rebuilt file does not verify instead of passing with hashes
        // of bytes that are gone. The file is left as it was.
        let mut changed = new.clone();
        changed[1 << 20] ^= 0xff;
        let path = dir.path().join("f");
        let err = rebuild_with_hashes(&tree, OsStr::new("f"), &old, || {
            std::fs::write(&path, &changed).unwrap();
        })
        .unwrap_err();
        assert!(matches!(err, BlockError::Verification(_)), "{err:?}");
        assert!(std::fs::read(dir.path().join("f")).unwrap() == changed);
    }
}
