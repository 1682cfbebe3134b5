//! What the block protocol keeps between calls of one run: summaries that
//! arrived early, the granule hashes a basis's summary took for its patch,
//! and the large files to patch in place.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;

use wasmover_block::{BasisHashes, Summary};

use crate::volume::path::shown;
use crate::volume::{KeptHashes, Stamp};

/// Signatures of later files the peer may send ahead of the answer to a
/// refinement (the blocksync mover keeps at most 64 in flight).
pub(super) const MAX_SIGNATURES_AHEAD: usize = 1024;

/// Basis hashes (and large files) kept for patches to come (the blocksync
/// mover has at most 64 signatures in flight).
const MAX_BASIS_HASHES: usize = 128;

/// State of the block protocol between calls.
#[derive(Debug, Default)]
pub(crate) struct BlockSession {
    /// Summaries that arrived while a refinement answer was awaited.
    pub(super) ahead: VecDeque<Summary>,
    /// What the signature pass of bases kept for their patches.
    basis_hashes: VecDeque<BasisKept>,
    /// Files of a tree whose signature went out, large enough to be
    /// patched in place ([`IN_PLACE_MIN_FILE`](super::in_place::IN_PLACE_MIN_FILE)).
    large: VecDeque<OsString>,
}

/// What the summary pass of a basis kept for its patch: the stamp the
/// basis had before it was read and its granule hashes.
#[derive(Debug)]
pub(crate) struct BasisKept {
    pub(super) path: OsString,
    pub(super) stamp: Stamp,
    pub(super) hashes: BasisHashes,
}

impl BasisKept {
    /// The granule hashes of the file a patch of this basis just wrote
    /// (`file`, `len` bytes, now stamped `stamp`), from these and the
    /// ranges the patch left as they were in the basis: to keep for the
    /// next run. `None` where the new length calls for another granule, or
    /// the file cannot be read.
    pub(super) fn updated(
        &self,
        file: &File,
        len: u64,
        unchanged: &[(u64, u64)],
        stamp: Stamp,
    ) -> Option<KeptHashes> {
        match self.hashes.updated(file, len, unchanged) {
            Ok(Some(hashes)) => Some(KeptHashes { stamp, hashes }),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(
                    path = shown(&self.path),
                    "could not update its granule hashes: {e}"
                );
                None
            }
        }
    }
}

impl BlockSession {
    /// The summary of a later file that arrived while a refinement answer
    /// was awaited, if one did.
    pub(crate) fn next_ahead(&mut self) -> Option<Summary> {
        self.ahead.pop_front()
    }

    pub(super) fn keep_basis_hashes(&mut self, kept: BasisKept) {
        if self.basis_hashes.len() == MAX_BASIS_HASHES {
            self.basis_hashes.pop_front();
        }
        self.basis_hashes.push_back(kept);
    }

    pub(crate) fn keep_large(&mut self, path: &OsStr) {
        if self.large.len() == MAX_BASIS_HASHES {
            self.large.pop_front();
        }
        self.large.push_back(path.to_owned());
    }

    pub(crate) fn take_large(&mut self, path: &OsStr) -> bool {
        let found = self.large.iter().position(|p| p == path);
        found.and_then(|i| self.large.remove(i)).is_some()
    }

    pub(crate) fn take_basis_hashes(&mut self, path: &OsStr) -> Option<BasisKept> {
        let i = self.basis_hashes.iter().position(|k| k.path == path)?;
        self.basis_hashes.remove(i)
    }
}
