//! What the basis side reads after its summary: a refinement request or
//! the delta, told apart by their magic numbers.

use std::io::{self, Read};

use crate::error::FormatError;
use crate::format::{DELTA_MAGIC, Limits, REFINEMENT_MAGIC};
use crate::wire::refinement::Refinement;

/// What the side that has the basis receives after sending a signature:
/// a request for a finer one, or the delta.
pub enum Incoming<R> {
    /// The peer asks for a finer signature of part of the basis.
    Refinement(Refinement),
    /// The delta, whole: hand this reader to [`patch`](crate::patch()) or
    /// [`crate::patch_in_place`].
    Delta(io::Chain<&'static [u8], R>),
}

impl<R: Read> Incoming<R> {
    /// Reads the next message's magic number and, for a refinement, the
    /// rest of it.
    pub fn read_from(mut r: R, limits: &Limits) -> Result<Self, FormatError> {
        let mut magic = [0u8; 4];
        r.read_exact(&mut magic)
            .map_err(FormatError::reading("delta or refinement"))?;
        match magic {
            REFINEMENT_MAGIC => Ok(Self::Refinement(Refinement::read_body(r, limits)?)),
            DELTA_MAGIC => Ok(Self::Delta((&DELTA_MAGIC[..]).chain(r))),
            found => Err(FormatError::BadMagic {
                expected: "WMDL or WMRF",
                found,
            }),
        }
    }
}
