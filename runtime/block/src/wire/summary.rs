//! What the basis side sends: a granule summary or a signature to start a
//! file, an answer to each refinement, told apart by their magic numbers.

use std::io::{self, Read, Write};

use crate::error::FormatError;
use crate::format::{ALIGNED_TAGS_MAGIC, GRANULE_SUMMARY_MAGIC, Limits, SIGNATURE_MAGIC};
use crate::wire::aligned_tags::AlignedTags;
use crate::wire::answer::Answer;
use crate::wire::granule_summary::GranuleSummary;
use crate::wire::signature::Signature;

/// What the basis side sends for a file: first a granule summary for
/// granule-first matching or a block signature, then an answer to each
/// refinement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Summary {
    /// Tags of the basis's granules.
    Granules(GranuleSummary),
    /// Weak and strong hashes of the basis's blocks.
    Signature(Signature),
    /// The answer to a [`Refinement`](crate::Refinement): it travels on
    /// the same stream, where summaries of later files may come first.
    Answer(Answer),
}

impl Summary {
    /// Reads one summary of any kind.
    pub fn read_from<R: Read>(mut r: R, limits: &Limits) -> Result<Self, FormatError> {
        let mut magic = [0u8; 4];
        r.read_exact(&mut magic)
            .map_err(FormatError::reading("summary or answer"))?;
        match magic {
            GRANULE_SUMMARY_MAGIC => Ok(Self::Granules(GranuleSummary::read_body(r, limits)?)),
            SIGNATURE_MAGIC => {
                let signature = Signature::read_body(r, limits)?;
                Ok(match signature.is_refinement() {
                    true => Self::Answer(Answer::Signature(signature)),
                    false => Self::Signature(signature),
                })
            }
            ALIGNED_TAGS_MAGIC => Ok(Self::Answer(Answer::Aligned(AlignedTags::read_body(
                r, limits,
            )?))),
            found => Err(FormatError::BadMagic {
                expected: "WMGS, WMSG or WMAT",
                found,
            }),
        }
    }

    /// Writes the encoding of any kind; returns the bytes written.
    pub fn write_to<W: Write>(&self, w: W) -> io::Result<u64> {
        match self {
            Self::Granules(summary) => summary.write_to(w),
            Self::Signature(signature) => signature.write_to(w),
            Self::Answer(answer) => answer.write_to(w),
        }
    }
}
