//! Patching in place under an undo journal: a block volume always, a
//! tree's large file with one link. Only the changed bytes are written,
//! and no room for a second copy is needed.

use std::ffi::OsStr;
use std::fs::File;

use wasmover_block::{InPlacePatch, Limits, PatchError, PatchStats};

use super::basis::Basis;
use super::beside::Target;
use super::error::patch_error;
use super::progress::FileProgress;
use super::receive::receive_delta;
use super::session::BasisKept;
use crate::bindings::blocks::BlockError;
use crate::channel::Channel;
use crate::volume::{Image, Stamp, Tree, VolumeError};

/// Files of a tree at least this large (with one link) are patched in
/// place under an undo journal instead of rebuilt beside: only the changed
/// bytes are written, and no room for a second copy is needed.
pub(crate) const IN_PLACE_MIN_FILE: u64 = 64 << 20;

/// Where a patch in place keeps its undo journal and the literals waiting
/// for it.
trait InPlaceTarget {
    /// The partial content, created if missing, for the patch to read and
    /// append its literals to.
    fn spill(&self) -> Result<File, VolumeError>;
    /// Creates the (empty) undo journal, durably.
    fn begin_journal(&self) -> Result<File, VolumeError>;
    /// Deletes the undo journal, durably.
    fn end_journal(&self) -> Result<(), VolumeError>;
    /// Removes the partial content; best effort.
    fn discard_partial(&self);
}

impl InPlaceTarget for Image {
    fn spill(&self) -> Result<File, VolumeError> {
        Image::spill(self)
    }

    fn begin_journal(&self) -> Result<File, VolumeError> {
        Image::begin_journal(self)
    }

    fn end_journal(&self) -> Result<(), VolumeError> {
        Image::end_journal(self)
    }

    fn discard_partial(&self) {
        Image::discard_partial(self)
    }
}

/// A file of a tree being patched in place.
struct TreeFile<'a> {
    tree: &'a Tree,
    path: &'a OsStr,
}

impl InPlaceTarget for TreeFile<'_> {
    fn spill(&self) -> Result<File, VolumeError> {
        self.tree.spill(self.path)
    }

    fn begin_journal(&self) -> Result<File, VolumeError> {
        self.tree.begin_journal(self.path)
    }

    fn end_journal(&self) -> Result<(), VolumeError> {
        self.tree.end_journal()
    }

    fn discard_partial(&self) {
        self.tree.remove_partial(self.path)
    }
}

/// Receives a delta and applies it to `file` in place under `target`'s
/// undo journal: nothing is written until the whole delta arrived and the
/// bytes it overwrites are saved, and a failure rolls the file back.
/// Literals wait in the partial content, which a lost peer leaves for the
/// next transfer to resume from. `check_len` may refuse the new length
/// before anything is written.
///
/// Also returns the ranges the patch left as they were (see
/// [`InPlacePatch::unchanged`]).
#[allow(clippy::too_many_arguments)]
fn receive_in_place_journaled(
    target: &impl InPlaceTarget,
    mut basis: Basis,
    file: &mut File,
    kept: Option<&BasisKept>,
    check_len: impl FnOnce(u64) -> Result<(), BlockError>,
    label: &OsStr,
    channel: &mut Channel,
    limits: &Limits,
    progress: &mut FileProgress,
) -> Result<(PatchStats, Vec<(u64, u64)>), BlockError> {
    // Granule hashes of a file that nothing wrote since they were taken:
    // the verification reads back only what the patch wrote.
    let hashes = kept.map(|kept| kept.hashes.clone());
    let basis_len = basis.len();
    let result = receive_delta(&mut basis, basis_len, channel, limits, label, |_, delta| {
        let spill = Some(target.spill()?);
        let mut report = |done| progress.advance(done);
        let mut patch = InPlacePatch::read_reporting(&mut *file, delta, limits, spill, &mut report)
            .map_err(patch_error(label))?;
        if let Some(hashes) = hashes {
            patch = patch.with_basis_hashes(hashes);
        }
        check_len(patch.new_len())?;
        let unchanged = patch.unchanged();
        let journal = target.begin_journal()?;
        let result = wasmover_block::patch_journaled(file, patch, &journal);
        drop(journal);
        if !matches!(result, Err(PatchError::Unrecovered { .. })) {
            target.end_journal()?;
        }
        Ok((result.map_err(patch_error(label))?, unchanged))
    });
    // The peer is gone: what arrived is kept for the next run.
    if !matches!(result, Err(BlockError::Channel(_))) {
        target.discard_partial();
    }
    result
}

/// Receives a delta for a block volume and applies it in place under the
/// undo journal ([`receive_in_place_journaled`]).
pub(crate) fn receive_in_place(
    image: &Image,
    path: &OsStr,
    hashes: Option<BasisKept>,
    channel: &mut Channel,
    limits: &Limits,
    progress: &mut FileProgress,
) -> Result<PatchStats, BlockError> {
    // The basis the peer's signature covered: the volume, then the partial
    // content.
    let basis = Basis::open_image(image, path)?;
    let (mut file, len) = image.open_write()?;
    let device = image.is_device()?;
    let check_len = |new_len| {
        if device && new_len != len {
            return Err(BlockError::Io(format!(
                "the source volume is {new_len} bytes and this block device {len}: a \
                 device keeps its size, so it must be as large as the source"
            )));
        }
        Ok(())
    };
    // How messages name it: its path is empty.
    let label = OsStr::new("the block volume");
    let kept = basis.still(hashes);
    let (stats, unchanged) = receive_in_place_journaled(
        image,
        basis,
        &mut file,
        kept.as_ref(),
        check_len,
        label,
        channel,
        limits,
        progress,
    )?;
    let stamp = Stamp::of_file(&file);
    if let Some(stamp) = stamp {
        image.remember_hash(stamp, stats.hash);
    }
    let next = kept
        .zip(stamp)
        .and_then(|(kept, stamp)| kept.updated(&file, stats.written_bytes, &unchanged, stamp));
    image.keep_hashes(next.as_ref());
    Ok(stats)
}

/// Receives a delta for a large file of a tree and patches it in place
/// under the tree's undo journal ([`receive_in_place_journaled`]); an
/// interrupted run leaves the journal, and the next open of the tree
/// rolls the file back.
pub(crate) fn receive_in_place_tree(
    tree: &Tree,
    file: Target,
    mut open: File,
    hashes: Option<BasisKept>,
    channel: &mut Channel,
    limits: &Limits,
    progress: &mut FileProgress,
) -> Result<PatchStats, BlockError> {
    let path = file.path;
    let basis = Basis::open_tree(tree, path)?;
    let kept = basis.still(hashes);
    let target = TreeFile { tree, path };
    let (stats, unchanged) = receive_in_place_journaled(
        &target,
        basis,
        &mut open,
        kept.as_ref(),
        |_| Ok(()),
        path,
        channel,
        limits,
        progress,
    )?;
    let stamp = tree.commit_in_place(&open, path, file.mode, file.mtime_ns, stats.hash)?;
    let next = kept
        .zip(stamp)
        .and_then(|(kept, stamp)| kept.updated(&open, stats.written_bytes, &unchanged, stamp));
    tree.keep_hashes(path, next.as_ref());
    Ok(stats)
}
