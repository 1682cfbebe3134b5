//! Wire constants and primitive encoders shared by signature and delta.

use std::io::{self, Read, Write};

use crate::error::FormatError;

/// Magic of an encoded signature.
pub(crate) const SIGNATURE_MAGIC: [u8; 4] = *b"WMSG";
/// Magic of an encoded delta.
pub(crate) const DELTA_MAGIC: [u8; 4] = *b"WMDL";
/// Version of both encodings. 2: the strong hash is XXH3-64 (12 bytes per
/// block on the wire instead of 20).
pub(crate) const VERSION: u8 = 2;

/// Delta opcode: copy whole basis blocks.
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

pub(crate) fn read_header<R: Read>(
    r: &mut R,
    magic: [u8; 4],
    what: &'static str,
) -> Result<(), FormatError> {
    let mut found = [0; 4];
    r.read_exact(&mut found)
        .map_err(FormatError::reading(what))?;
    if found != magic {
        return Err(FormatError::BadMagic {
            expected: std::str::from_utf8(if magic == SIGNATURE_MAGIC {
                b"WMSG"
            } else {
                b"WMDL"
            })
            .expect("ascii"),
            found,
        });
    }
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
