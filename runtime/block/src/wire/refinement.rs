//! The refinement message (`WMRF`): the side that has the new file asks
//! for a finer look at some ranges of the basis.

use std::io::{self, Read, Write};

use crate::error::FormatError;
use crate::format::{self, Limits, REFINEMENT_MAGIC};

/// A request, from the side that has the new file, for a finer signature
/// of some ranges of the basis, or for their aligned tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refinement {
    block_size: u32,
    aligned: bool,
    ranges: Vec<(u64, u64)>,
}

impl Refinement {
    /// A request for blocks of `block_size` over `ranges` of the basis
    /// (non-empty, ascending and disjoint), aligned or not.
    pub(crate) fn new(block_size: u32, aligned: bool, ranges: Vec<(u64, u64)>) -> Self {
        Self {
            block_size,
            aligned,
            ranges,
        }
    }

    /// The block size asked for.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Whether the blocks are to be compared only at their own offsets:
    /// answered with [`AlignedTags`](crate::AlignedTags) instead of a
    /// [`Signature`](crate::Signature).
    pub fn aligned(&self) -> bool {
        self.aligned
    }

    /// The `(offset, length)` ranges of the basis asked for: non-empty,
    /// ascending and disjoint.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Writes the encoding: magic `WMRF`, version, block size (u32,
    /// big-endian), kind (0: a signature, 1: aligned tags), then the
    /// ranges (their count, then each one's gap and length as varints).
    /// Returns the bytes written.
    pub fn write_to<W: Write>(&self, mut w: W) -> io::Result<u64> {
        format::write_header(&mut w, REFINEMENT_MAGIC, format::VERSION)?;
        let mut encoded = Vec::with_capacity(13 + 6 * self.ranges.len());
        encoded.extend_from_slice(&self.block_size.to_be_bytes());
        encoded.push(u8::from(self.aligned));
        format::put_ranges(&mut encoded, self.ranges.iter().copied());
        w.write_all(&encoded)?;
        Ok(5 + encoded.len() as u64)
    }

    /// Reads a refinement's body, after its magic number.
    pub(crate) fn read_body<R: Read>(mut r: R, limits: &Limits) -> Result<Self, FormatError> {
        format::read_version(&mut r, format::VERSION, "refinement header")?;
        let block_size = format::read_block_size(&mut r)?;
        let aligned = format::read_kind(&mut r, "refinement kind", "unknown refinement kind")?;
        let ranges = format::read_ranges(&mut r, block_size, limits.max_file_len, limits)?;
        Ok(Self {
            block_size,
            aligned,
            ranges,
        })
    }
}
