//! Patch: rebuild a new file from its basis and a delta, verified.

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::error::{FormatError, PatchError};
use crate::format::{self, DELTA_MAGIC, Limits, MAX_LITERAL, OP_COPY, OP_END, OP_LITERAL};

/// What a patch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PatchStats {
    /// Bytes of the rebuilt file.
    pub written_bytes: u64,
    /// Bytes copied from the basis.
    pub copied_bytes: u64,
    /// Bytes taken from the delta's literals.
    pub literal_bytes: u64,
}

/// Writes to `out` while hashing and counting, within a length limit.
struct Output<W> {
    out: W,
    hasher: blake3::Hasher,
    written: u64,
    limit: u64,
}

impl<W: Write> Output<W> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), PatchError> {
        self.written += bytes.len() as u64;
        if self.written > self.limit {
            return Err(FormatError::TooLarge {
                what: "rebuilt file length",
                value: self.written,
                limit: self.limit,
            }
            .into());
        }
        crate::delta::hash_input(&mut self.hasher, bytes);
        Ok(self.out.write_all(bytes)?)
    }
}

/// Reads exactly one delta from `delta`, rebuilds the new file into `out`
/// from `basis`, and verifies its length and BLAKE3 hash against the ones
/// the delta ends with.
///
/// # Security
/// `delta` may be hostile: every instruction is checked against the basis
/// and `limits` before anything is read or written for it, and a file that
/// does not verify is reported as [`PatchError::Verification`]. The caller
/// writes to a staging file and keeps it only on success.
pub fn patch<B: Read + Seek, D: Read, W: Write>(
    mut basis: B,
    mut delta: D,
    out: W,
    limits: &Limits,
) -> Result<PatchStats, PatchError> {
    format::read_header(&mut delta, DELTA_MAGIC, "delta header")?;
    let block_size = u64::from(format::read_u32(&mut delta, "block size")?);
    let basis_len = format::read_u64(&mut delta, "basis length")?;
    if block_size == 0 {
        return Err(FormatError::Malformed {
            reason: "block size is zero",
        }
        .into());
    }
    let mut out = Output {
        out,
        hasher: blake3::Hasher::new(),
        written: 0,
        limit: limits.max_file_len,
    };
    let mut stats = PatchStats::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match format::read_u8(&mut delta, "delta instruction")? {
            OP_COPY => {
                let start = format::read_u64(&mut delta, "copy start")?;
                let count = format::read_u32(&mut delta, "copy count")?;
                let offset = start.checked_mul(block_size);
                let len = offset
                    .map(|o| (u64::from(count) * block_size).min(basis_len.saturating_sub(o)));
                let (Some(offset), Some(len)) = (offset, len) else {
                    return Err(PatchError::OutOfBasis {
                        offset: u64::MAX,
                        len: 0,
                        basis_len,
                    });
                };
                if count == 0 || offset >= basis_len {
                    return Err(PatchError::OutOfBasis {
                        offset,
                        len,
                        basis_len,
                    });
                }
                basis.seek(SeekFrom::Start(offset))?;
                let mut left = len;
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    basis
                        .read_exact(&mut buf[..n])
                        .map_err(|e| match e.kind() {
                            // The basis is shorter than its signature said: it
                            // changed underneath us.
                            io::ErrorKind::UnexpectedEof => PatchError::OutOfBasis {
                                offset,
                                len,
                                basis_len,
                            },
                            _ => e.into(),
                        })?;
                    out.write(&buf[..n])?;
                    left -= n as u64;
                }
                stats.copied_bytes += len;
            }
            OP_LITERAL => {
                let len = u64::from(format::read_u32(&mut delta, "literal length")?);
                if len > MAX_LITERAL {
                    return Err(FormatError::TooLarge {
                        what: "literal run",
                        value: len,
                        limit: MAX_LITERAL,
                    }
                    .into());
                }
                let mut left = len as usize;
                while left > 0 {
                    let n = left.min(buf.len());
                    delta
                        .read_exact(&mut buf[..n])
                        .map_err(FormatError::reading("literal bytes"))?;
                    out.write(&buf[..n])?;
                    left -= n;
                }
                stats.literal_bytes += len;
            }
            OP_END => {
                let new_len = format::read_u64(&mut delta, "new length")?;
                let mut hash = [0u8; 32];
                delta
                    .read_exact(&mut hash)
                    .map_err(FormatError::reading("new file hash"))?;
                let actual = out.hasher.finalize();
                if new_len != out.written || actual.as_bytes() != &hash {
                    return Err(PatchError::Verification {
                        expected: format!(
                            "{new_len} bytes, blake3 {}",
                            blake3::Hash::from_bytes(hash).to_hex()
                        ),
                        actual: format!("{} bytes, blake3 {}", out.written, actual.to_hex()),
                    });
                }
                out.out.flush()?;
                stats.written_bytes = out.written;
                return Ok(stats);
            }
            opcode => return Err(FormatError::UnknownInstruction { opcode }.into()),
        }
    }
}
