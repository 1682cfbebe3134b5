//! The delta message (`WMDL`): a basis length, copy, literal and zero-run
//! instructions, and an end with the new file's length and content hash
//! ([`crate::ContentHasher`]).

use std::io::{self, Read, Write};

use crate::content_hash::is_zero;
use crate::error::{FormatError, PatchError};
use crate::format::{self, DELTA_MAGIC};

/// Delta opcode: copy a byte range of the basis.
pub(crate) const OP_COPY: u8 = 1;
/// Delta opcode: literal bytes follow.
pub(crate) const OP_LITERAL: u8 = 2;
/// Delta opcode: a run of zero bytes, by its length.
pub(crate) const OP_ZEROS: u8 = 3;
/// Delta opcode: end, with the new length and content hash.
pub(crate) const OP_END: u8 = 0;

/// Runs of zeros this long, aligned to it in the new file (a file-system
/// block), travel as [`OP_ZEROS`] instead of literals.
pub(crate) const ZERO_RUN_MIN: usize = 4096;

/// Largest literal run in one instruction, as written; a decoder accepts
/// up to [`MAX_LITERAL`].
pub(crate) const LITERAL_CHUNK: usize = 256 << 10;
/// Largest literal run a decoder accepts in one instruction.
pub(crate) const MAX_LITERAL: u64 = 16 << 20;

/// What a delta contains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeltaStats {
    /// Length of the new file.
    pub new_len: u64,
    /// Bytes of the new file found in the basis.
    pub matched_bytes: u64,
    /// Bytes sent as literals.
    pub literal_bytes: u64,
    /// Bytes sent as runs of zeros: a hole, or zeros written.
    pub zero_bytes: u64,
    /// Bytes of the encoded delta.
    pub encoded_bytes: u64,
    /// Content hash of the new file as it was read, which the delta ends
    /// with.
    pub hash: [u8; 32],
}

/// Writes instructions, coalescing copies of adjacent basis ranges and
/// adjacent runs of zeros.
pub(crate) struct Encoder<W> {
    out: W,
    stats: DeltaStats,
    run: Option<(u64, u64)>,
    zeros: u64,
}

impl<W: Write> Encoder<W> {
    /// Writes the delta header for a basis of `basis_len` bytes.
    pub(crate) fn new(mut out: W, basis_len: u64) -> io::Result<Self> {
        format::write_header(&mut out, DELTA_MAGIC, format::VERSION)?;
        out.write_all(&basis_len.to_be_bytes())?;
        Ok(Self {
            out,
            stats: DeltaStats {
                encoded_bytes: 5 + 8,
                ..DeltaStats::default()
            },
            run: None,
            zeros: 0,
        })
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stats.encoded_bytes += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    fn flush_run(&mut self) -> io::Result<()> {
        if self.zeros > 0 {
            let mut op = [0u8; 9];
            op[0] = OP_ZEROS;
            op[1..].copy_from_slice(&self.zeros.to_be_bytes());
            self.zeros = 0;
            self.put(&op)?;
        }
        if let Some((offset, len)) = self.run.take() {
            let mut op = [0u8; 17];
            op[0] = OP_COPY;
            op[1..9].copy_from_slice(&offset.to_be_bytes());
            op[9..].copy_from_slice(&len.to_be_bytes());
            self.put(&op)?;
        }
        Ok(())
    }

    /// Ends the delta with the new file's length and hash.
    pub(crate) fn finish(mut self, hash: blake3::Hash) -> io::Result<DeltaStats> {
        self.flush_run()?;
        let mut end = [0u8; 41];
        end[0] = OP_END;
        end[1..9].copy_from_slice(&self.stats.new_len.to_be_bytes());
        end[9..].copy_from_slice(hash.as_bytes());
        self.put(&end)?;
        self.stats.hash = *hash.as_bytes();
        Ok(self.stats)
    }

    /// `len` bytes of the new file equal the basis at `offset`.
    pub(crate) fn copy(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.stats.matched_bytes += len;
        self.stats.new_len += len;
        match &mut self.run {
            Some((start, run)) if *start + *run == offset => {
                *run += len;
                Ok(())
            }
            _ => {
                self.flush_run()?;
                self.run = Some((offset, len));
                Ok(())
            }
        }
    }

    /// The next `len` bytes of the new file are zeros.
    pub(crate) fn zeros(&mut self, len: u64) -> io::Result<()> {
        if self.run.is_some() {
            self.flush_run()?;
        }
        self.stats.zero_bytes += len;
        self.stats.new_len += len;
        self.zeros += len;
        Ok(())
    }

    /// The next bytes of the new file, not in the basis: runs of zeros
    /// ([`ZERO_RUN_MIN`]) as such, the rest as literals.
    pub(crate) fn literal(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let (bytes, zeros) = zero_run(data, self.stats.new_len);
            self.bytes(&data[..bytes])?;
            if zeros > 0 {
                self.zeros(zeros as u64)?;
            }
            data = &data[bytes + zeros..];
        }
        Ok(())
    }

    /// Literal bytes.
    fn bytes(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.flush_run()?;
        self.stats.literal_bytes += data.len() as u64;
        self.stats.new_len += data.len() as u64;
        for chunk in data.chunks(LITERAL_CHUNK) {
            let mut op = [0u8; 5];
            op[0] = OP_LITERAL;
            op[1..].copy_from_slice(&(chunk.len() as u32).to_be_bytes());
            self.put(&op)?;
            self.put(chunk)?;
        }
        Ok(())
    }
}

/// Where the first run of zeros starts in `data` (the new file's bytes
/// from `at`) and how long it is: whole pieces of [`ZERO_RUN_MIN`] bytes,
/// aligned to it in the file. `(data.len(), 0)` if there is none.
fn zero_run(data: &[u8], at: u64) -> (usize, usize) {
    let piece = ZERO_RUN_MIN;
    let mut start = ((piece as u64 - at % piece as u64) % piece as u64) as usize;
    while start + piece <= data.len() {
        if is_zero(&data[start..start + piece]) {
            let mut end = start + piece;
            while end + piece <= data.len() && is_zero(&data[end..end + piece]) {
                end += piece;
            }
            return (start, end - start);
        }
        start += piece;
    }
    (data.len(), 0)
}

/// One instruction of a delta, as decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Instruction {
    /// `len` bytes of the basis at `offset`, which lie inside it.
    Copy { offset: u64, len: u64 },
    /// `len` literal bytes (at most [`MAX_LITERAL`]), which follow in the
    /// stream for the caller to read.
    Literal { len: u64 },
    /// `len` zero bytes.
    Zeros { len: u64 },
    /// The end: the new file's length and content hash.
    End { new_len: u64, hash: [u8; 32] },
}

/// Reads a delta's header (magic and version) and returns the length of
/// the basis it was computed against.
pub(crate) fn read_header<R: Read>(r: &mut R) -> Result<u64, FormatError> {
    format::read_header(r, DELTA_MAGIC, format::VERSION, "delta header")?;
    format::read_u64(r, "basis length")
}

/// Reads the next instruction of a delta against a basis of `basis_len`
/// bytes, checking its operands before anything is read or written for
/// it.
pub(crate) fn read_instruction<R: Read>(
    r: &mut R,
    basis_len: u64,
) -> Result<Instruction, PatchError> {
    match format::read_u8(r, "delta instruction")? {
        OP_COPY => {
            let (offset, len) = read_copy(r, basis_len)?;
            Ok(Instruction::Copy { offset, len })
        }
        OP_LITERAL => Ok(Instruction::Literal {
            len: read_literal_len(r)?,
        }),
        OP_ZEROS => match format::read_u64(r, "zero run length")? {
            0 => Err(FormatError::Malformed {
                reason: "an empty run of zeros",
            }
            .into()),
            len => Ok(Instruction::Zeros { len }),
        },
        OP_END => {
            let new_len = format::read_u64(r, "new length")?;
            let mut hash = [0u8; 32];
            r.read_exact(&mut hash)
                .map_err(FormatError::reading("new file hash"))?;
            Ok(Instruction::End { new_len, hash })
        }
        opcode => Err(FormatError::UnknownInstruction { opcode }.into()),
    }
}

/// Reads the operands of [`OP_COPY`], a byte range of the basis, and checks
/// it lies inside the basis the delta was computed against.
fn read_copy<R: Read>(r: &mut R, basis_len: u64) -> Result<(u64, u64), PatchError> {
    let offset = format::read_u64(r, "copy offset")?;
    let len = format::read_u64(r, "copy length")?;
    if len == 0 || offset.checked_add(len).is_none_or(|end| end > basis_len) {
        return Err(PatchError::OutOfBasis {
            offset,
            len,
            basis_len,
        });
    }
    Ok((offset, len))
}

/// Reads the length of a literal run, refusing one over [`MAX_LITERAL`].
fn read_literal_len<R: Read>(r: &mut R) -> Result<u64, FormatError> {
    let len = u64::from(format::read_u32(r, "literal length")?);
    if len > MAX_LITERAL {
        return Err(FormatError::TooLarge {
            what: "literal run",
            value: len,
            limit: MAX_LITERAL,
        });
    }
    Ok(len)
}
