//! The answer to a refinement: a signature of the ranges asked for, or
//! their aligned tags.

use std::io::{self, Read, Seek, Write};

use crate::error::FormatError;
use crate::wire::aligned_tags::AlignedTags;
use crate::wire::refinement::Refinement;
use crate::wire::signature::Signature;

/// The basis side's answer to a [`Refinement`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Weak and strong hashes of the blocks of the ranges asked for, to be
    /// searched for at any offset.
    Signature(Signature),
    /// Tags of the blocks of the ranges asked for, to be compared in place.
    Aligned(AlignedTags),
}

impl Answer {
    /// Answers `request` from `basis`, which holds `len` bytes, with hashes
    /// under `seed` (drawn at random for each answer). A range beyond the
    /// basis is an error (the request came from the peer).
    pub fn compute<R: Read + Seek>(
        basis: R,
        len: u64,
        request: &Refinement,
        seed: u64,
    ) -> Result<Self, FormatError> {
        Ok(match request.aligned() {
            true => Self::Aligned(AlignedTags::compute(basis, len, request, seed)?),
            false => Self::Signature(Signature::compute_refinement(basis, len, request, seed)?),
        })
    }

    /// The number of blocks hashed.
    pub fn block_count(&self) -> usize {
        match self {
            Self::Signature(signature) => signature.block_count(),
            Self::Aligned(tags) => tags.block_count(),
        }
    }

    /// Writes the encoding; returns the bytes written.
    pub fn write_to<W: Write>(&self, w: W) -> io::Result<u64> {
        match self {
            Self::Signature(signature) => signature.write_to(w),
            Self::Aligned(tags) => tags.write_to(w),
        }
    }
}
