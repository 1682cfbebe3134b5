//! Wire constants and primitive encoders shared by signature and delta.

use std::io::{self, Read, Write};

use crate::error::{FormatError, PatchError};

/// Magic of an encoded signature.
pub(crate) const SIGNATURE_MAGIC: [u8; 4] = *b"WMSG";
/// Magic of an encoded delta.
pub(crate) const DELTA_MAGIC: [u8; 4] = *b"WMDL";
/// Magic of an encoded refinement request.
pub(crate) const REFINEMENT_MAGIC: [u8; 4] = *b"WMRF";
/// Magic of an encoded granule summary.
pub(crate) const GRANULE_SUMMARY_MAGIC: [u8; 4] = *b"WMGS";
/// Magic of encoded basis granule hashes (kept on disk, never sent).
pub(crate) const BASIS_HASHES_MAGIC: [u8; 4] = *b"WMGH";
/// Version of every encoding. 2: the strong hash is XXH3-64 (12 bytes per
/// block on the wire instead of 20). 3: signatures cover listed ranges of
/// the basis (a refinement) and copies name basis byte ranges, so one
/// delta can mix blocks of several sizes.
pub(crate) const VERSION: u8 = 3;

/// Delta opcode: copy a byte range of the basis.
pub(crate) const OP_COPY: u8 = 1;
/// Delta opcode: literal bytes follow.
pub(crate) const OP_LITERAL: u8 = 2;
/// Delta opcode: end, with the new length and BLAKE3.
pub(crate) const OP_END: u8 = 0;

/// Largest literal run in one instruction, as written; a decoder accepts
/// up to [`MAX_LITERAL`].
pub(crate) const LITERAL_CHUNK: usize = 256 << 10;
/// Largest literal run a decoder accepts in one instruction.
pub(crate) const MAX_LITERAL: u64 = 16 << 20;

/// Bounds on what decoders accept, so hostile input cannot make them
/// allocate or write without bound.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Blocks in one signature.
    pub max_blocks: u64,
    /// Length of a basis or of a rebuilt file.
    pub max_file_len: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // 64 Mi blocks x 12 bytes: at most 768 MiB of signature.
            max_blocks: 64 << 20,
            max_file_len: 16 << 40,
        }
    }
}

/// Reads a magic number, which must be `magic`, and the version after it.
pub(crate) fn read_header<R: Read>(
    r: &mut R,
    magic: [u8; 4],
    what: &'static str,
) -> Result<(), FormatError> {
    read_magic(r, magic, what)?;
    read_version(r, what)
}

/// Reads a magic number, which must be `magic`.
pub(crate) fn read_magic<R: Read>(
    r: &mut R,
    magic: [u8; 4],
    what: &'static str,
) -> Result<(), FormatError> {
    let mut found = [0; 4];
    r.read_exact(&mut found)
        .map_err(FormatError::reading(what))?;
    if found != magic {
        return Err(FormatError::BadMagic {
            expected: magic_name(magic),
            found,
        });
    }
    Ok(())
}

/// The magic numbers as text, for errors.
fn magic_name(magic: [u8; 4]) -> &'static str {
    match magic {
        SIGNATURE_MAGIC => "WMSG",
        DELTA_MAGIC => "WMDL",
        GRANULE_SUMMARY_MAGIC => "WMGS",
        BASIS_HASHES_MAGIC => "WMGH",
        _ => "WMRF",
    }
}

/// Checks the version byte that follows a magic number.
pub(crate) fn read_version<R: Read>(r: &mut R, what: &'static str) -> Result<(), FormatError> {
    let version = read_u8(r, what)?;
    if version != VERSION {
        return Err(FormatError::UnsupportedVersion {
            found: version,
            supported: VERSION,
        });
    }
    Ok(())
}

pub(crate) fn write_header<W: Write>(w: &mut W, magic: [u8; 4]) -> io::Result<()> {
    w.write_all(&magic)?;
    w.write_all(&[VERSION])
}

pub(crate) fn read_u8<R: Read>(r: &mut R, reading: &'static str) -> Result<u8, FormatError> {
    let mut b = [0; 1];
    r.read_exact(&mut b)
        .map_err(FormatError::reading(reading))?;
    Ok(b[0])
}

/// Reads the length of a literal run, refusing one over [`MAX_LITERAL`].
pub(crate) fn read_literal_len<R: Read>(r: &mut R) -> Result<u64, FormatError> {
    let len = u64::from(read_u32(r, "literal length")?);
    if len > MAX_LITERAL {
        return Err(FormatError::TooLarge {
            what: "literal run",
            value: len,
            limit: MAX_LITERAL,
        });
    }
    Ok(len)
}

pub(crate) fn read_u32<R: Read>(r: &mut R, reading: &'static str) -> Result<u32, FormatError> {
    let mut b = [0; 4];
    r.read_exact(&mut b)
        .map_err(FormatError::reading(reading))?;
    Ok(u32::from_be_bytes(b))
}

pub(crate) fn read_u64<R: Read>(r: &mut R, reading: &'static str) -> Result<u64, FormatError> {
    let mut b = [0; 8];
    r.read_exact(&mut b)
        .map_err(FormatError::reading(reading))?;
    Ok(u64::from_be_bytes(b))
}

/// Reads the operands of [`OP_COPY`], a byte range of the basis, and checks
/// it lies inside the basis the delta was computed against.
pub(crate) fn read_copy<R: Read>(r: &mut R, basis_len: u64) -> Result<(u64, u64), PatchError> {
    let offset = read_u64(r, "copy offset")?;
    let len = read_u64(r, "copy length")?;
    if len == 0 || offset.checked_add(len).is_none_or(|end| end > basis_len) {
        return Err(PatchError::OutOfBasis {
            offset,
            len,
            basis_len,
        });
    }
    Ok((offset, len))
}

/// Reads a count of byte ranges, then each range's offset and length:
/// they must be non-empty, ascending, disjoint and end by `end`, and hold
/// at most `limits.max_blocks` blocks of `block_size` (non-zero) in all.
pub(crate) fn read_ranges<R: Read>(
    r: &mut R,
    block_size: u32,
    end: u64,
    limits: &Limits,
) -> Result<Vec<(u64, u64)>, FormatError> {
    let count = read_u64(r, "range count")?;
    if count > limits.max_blocks {
        return Err(FormatError::TooLarge {
            what: "range count",
            value: count,
            limit: limits.max_blocks,
        });
    }
    // Grows as ranges arrive: a lying count costs nothing.
    let mut ranges = Vec::with_capacity(count.min(1 << 12) as usize);
    let (mut previous_end, mut blocks) = (0u64, 0u64);
    for _ in 0..count {
        let offset = read_u64(r, "range offset")?;
        let len = read_u64(r, "range length")?;
        let valid =
            len > 0 && offset >= previous_end && offset.checked_add(len).is_some_and(|e| e <= end);
        if !valid {
            return Err(FormatError::Malformed {
                reason: "ranges must be non-empty, ascending, disjoint and within bounds",
            });
        }
        previous_end = offset + len;
        blocks += len.div_ceil(block_size.into());
        if blocks > limits.max_blocks {
            return Err(FormatError::TooLarge {
                what: "block count",
                value: blocks,
                limit: limits.max_blocks,
            });
        }
        ranges.push((offset, len));
    }
    Ok(ranges)
}
