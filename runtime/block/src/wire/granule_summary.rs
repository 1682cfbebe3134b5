//! The granule summary message (`WMGS`), for granule-first matching of
//! large files.
//!
//! For a large basis, the side that has it sends a [`GranuleSummary`]
//! instead of a block signature: a 32-bit tag of the BLAKE3 chaining value
//! of each aligned granule ([`BasisHashes`](crate::BasisHashes)), hashes it needs anyway for
//! its patch. The side with the new file hashes its own granules at the
//! same offsets, which it needs anyway for the file's BLAKE3, and takes
//! every granule whose tag is alike as a copy, with no block search
//! ([`Plan::from_granules`](crate::Plan::from_granules)). Block signatures
//! are then asked for only where granules differ
//! ([`Plan::refinement`](crate::Plan::refinement)), so a file changed in
//! place costs each side one BLAKE3 pass and no rolling checksum. Tags
//! are keyed by a seed drawn for each summary, so a collision is a matter
//! of chance (2^-32 per changed granule) that data cannot be crafted for,
//! and the whole-file BLAKE3 the delta ends with catches it.

use std::io::{self, Read, Write};

use blake3::hazmat::ChainingValue;

use crate::error::FormatError;
use crate::format::{self, GRANULE_SUMMARY_MAGIC, Limits, TAG_BYTES, granule_for};
use crate::rolling::tag;

/// The tag of each granule of a basis file: 32 bits of a seeded hash of
/// its BLAKE3 chaining value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GranuleSummary {
    granule: u64,
    basis_len: u64,
    seed: u64,
    tags: Vec<u32>,
}

impl GranuleSummary {
    pub(crate) fn new(granule: u64, basis_len: u64, seed: u64, cvs: &[ChainingValue]) -> Self {
        Self {
            granule,
            basis_len,
            seed,
            tags: cvs.iter().map(|cv| tag(seed, cv)).collect(),
        }
    }

    /// The tag of a granule's chaining value under this summary's seed.
    pub(crate) fn tag(&self, cv: &ChainingValue) -> u32 {
        tag(self.seed, cv)
    }

    /// Bytes of one granule.
    pub fn granule(&self) -> u64 {
        self.granule
    }

    /// The length of the basis.
    pub fn basis_len(&self) -> u64 {
        self.basis_len
    }

    /// The tag of granule `i`, and its length in the basis (the last one
    /// may be short).
    pub(crate) fn granule_at(&self, i: usize) -> Option<(u32, u64)> {
        let tag = *self.tags.get(i)?;
        let start = i as u64 * self.granule;
        Some((tag, (start + self.granule).min(self.basis_len) - start))
    }

    /// Writes the encoding: magic `WMGS`, version, the granule, the basis
    /// length and the tags' seed (u64), then each granule's tag (u32),
    /// big-endian. Returns the bytes written.
    pub fn write_to<W: Write>(&self, mut w: W) -> io::Result<u64> {
        format::write_header(&mut w, GRANULE_SUMMARY_MAGIC, format::VERSION)?;
        let mut encoded = Vec::with_capacity(24 + TAG_BYTES * self.tags.len());
        encoded.extend_from_slice(&self.granule.to_be_bytes());
        encoded.extend_from_slice(&self.basis_len.to_be_bytes());
        encoded.extend_from_slice(&self.seed.to_be_bytes());
        for tag in &self.tags {
            encoded.extend_from_slice(&tag.to_be_bytes());
        }
        w.write_all(&encoded)?;
        Ok(5 + encoded.len() as u64)
    }

    /// Reads a summary's body, after its magic number. A granule the
    /// engine would not choose for the basis length is refused, which
    /// bounds the tags to 65,536.
    pub(crate) fn read_body<R: Read>(mut r: R, limits: &Limits) -> Result<Self, FormatError> {
        format::read_version(&mut r, format::VERSION, "granule summary header")?;
        let granule = format::read_u64(&mut r, "granule")?;
        let basis_len = format::read_u64(&mut r, "basis length")?;
        if basis_len > limits.max_file_len {
            return Err(FormatError::TooLarge {
                what: "basis length",
                value: basis_len,
                limit: limits.max_file_len,
            });
        }
        if granule != granule_for(basis_len) {
            return Err(FormatError::Malformed {
                reason: "a granule the engine does not choose for that length",
            });
        }
        let seed = format::read_u64(&mut r, "granule tag seed")?;
        let mut raw = vec![0u8; TAG_BYTES * basis_len.div_ceil(granule) as usize];
        r.read_exact(&mut raw)
            .map_err(FormatError::reading("granule tags"))?;
        let tags = raw
            .chunks_exact(TAG_BYTES)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
            .collect();
        Ok(Self {
            granule,
            basis_len,
            seed,
            tags,
        })
    }
}
