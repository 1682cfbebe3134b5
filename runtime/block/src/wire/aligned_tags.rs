//! The aligned tags message (`WMAT`): the answer to a refinement of data
//! that changed in place.
//!
//! When every literal run of a [`Plan`](crate::Plan) lies where the basis
//! range no copy uses lies, at the same offset and of the same length, the
//! changes were made in place (a database's pages, a disk image's blocks)
//! and a block of the new file can only be equal to the basis block at its
//! own offset. The round then compares blocks there and nowhere else: no
//! rolling search, so no weak checksum, and a keyed 32-bit tag per block
//! instead of 12 bytes of hashes. A tag is compared once, so a chance
//! collision is 2^-32 per block, and the whole-file BLAKE3 the delta ends
//! with catches it. The answer names no ranges: they are the request's.

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::error::FormatError;
use crate::format::{self, ALIGNED_TAGS_MAGIC, Limits, TAG_BYTES};
use crate::rolling::tag;
use crate::wire::refinement::Refinement;

/// The tags of the basis blocks over the ranges of an aligned
/// [`Refinement`], in order: each range cut into blocks from its start,
/// the last one of a range possibly short.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlignedTags {
    block_size: u32,
    seed: u64,
    tags: Vec<u32>,
}

/// Bytes of the basis read at a time.
const READ_CHUNK: u64 = 1 << 20;

impl AlignedTags {
    /// Tags the blocks of `request`'s ranges of `basis`, which holds `len`
    /// bytes, under `seed` (drawn at random for each answer). A range
    /// beyond the basis is an error (the request came from the peer).
    pub fn compute<R: Read + Seek>(
        mut basis: R,
        len: u64,
        request: &Refinement,
        seed: u64,
    ) -> Result<Self, FormatError> {
        let bs = u64::from(request.block_size());
        let chunk = READ_CHUNK.div_ceil(bs) * bs;
        let mut tags = Vec::new();
        let mut buf = Vec::new();
        for &(offset, range_len) in request.ranges() {
            if offset.checked_add(range_len).is_none_or(|end| end > len) {
                return Err(FormatError::Malformed {
                    reason: "a refinement range lies outside the basis",
                });
            }
            basis.seek(SeekFrom::Start(offset))?;
            let mut left = range_len;
            while left > 0 {
                buf.resize(left.min(chunk) as usize, 0);
                basis
                    .read_exact(&mut buf)
                    .map_err(FormatError::reading("the basis"))?;
                tags.extend(buf.chunks(bs as usize).map(|block| tag(seed, block)));
                left -= buf.len() as u64;
            }
        }
        Ok(Self {
            block_size: request.block_size(),
            seed,
            tags,
        })
    }

    /// The block size.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// The number of blocks tagged.
    pub fn block_count(&self) -> usize {
        self.tags.len()
    }

    /// The tag of block `i`.
    pub(crate) fn tag_at(&self, i: usize) -> Option<u32> {
        self.tags.get(i).copied()
    }

    /// The tag of a block of the new file, under this answer's seed.
    pub(crate) fn tag_of(&self, block: &[u8]) -> u32 {
        tag(self.seed, block)
    }

    /// Writes the encoding: magic `WMAT`, version, block size (u32), seed
    /// and tag count (u64), then the tags (u32), big-endian. Returns the
    /// bytes written.
    pub fn write_to<W: Write>(&self, mut w: W) -> io::Result<u64> {
        format::write_header(&mut w, ALIGNED_TAGS_MAGIC, format::VERSION)?;
        let mut encoded = Vec::with_capacity(20 + TAG_BYTES * self.tags.len());
        encoded.extend_from_slice(&self.block_size.to_be_bytes());
        encoded.extend_from_slice(&self.seed.to_be_bytes());
        encoded.extend_from_slice(&(self.tags.len() as u64).to_be_bytes());
        for tag in &self.tags {
            encoded.extend_from_slice(&tag.to_be_bytes());
        }
        w.write_all(&encoded)?;
        Ok(5 + encoded.len() as u64)
    }

    /// Reads the body, after its magic number. The count is checked
    /// against the request only when the tags are used
    /// ([`Plan::refine`](crate::Plan::refine)); here it is bounded by
    /// `limits.max_blocks`.
    pub(crate) fn read_body<R: Read>(mut r: R, limits: &Limits) -> Result<Self, FormatError> {
        format::read_version(&mut r, format::VERSION, "aligned tags header")?;
        let block_size = format::read_block_size(&mut r)?;
        let seed = format::read_u64(&mut r, "aligned tag seed")?;
        let count = format::read_count(&mut r, "aligned tag count", limits.max_blocks)?;
        // Grow as tags actually arrive: a lying count costs nothing.
        let mut tags = Vec::with_capacity(count.min(1 << 16) as usize);
        let mut raw = [0u8; TAG_BYTES];
        for _ in 0..count {
            r.read_exact(&mut raw)
                .map_err(FormatError::reading("aligned tags"))?;
            tags.push(u32::from_be_bytes(raw));
        }
        Ok(Self {
            block_size,
            seed,
            tags,
        })
    }
}
