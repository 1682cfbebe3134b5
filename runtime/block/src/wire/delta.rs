//! The delta message (`WMDL`): a basis length, copy and literal
//! instructions, and an end with the new file's length and BLAKE3.

use std::io::{self, Write};

use crate::format::{self, DELTA_MAGIC, LITERAL_CHUNK, OP_COPY, OP_END, OP_LITERAL};

/// What a delta contains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeltaStats {
    /// Length of the new file.
    pub new_len: u64,
    /// Bytes of the new file found in the basis.
    pub matched_bytes: u64,
    /// Bytes sent as literals.
    pub literal_bytes: u64,
    /// Bytes of the encoded delta.
    pub encoded_bytes: u64,
    /// BLAKE3 of the new file as it was read, which the delta ends with.
    pub hash: [u8; 32],
}

/// Writes instructions, coalescing copies of adjacent basis ranges.
pub(crate) struct Encoder<W> {
    out: W,
    stats: DeltaStats,
    run: Option<(u64, u64)>,
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
        })
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stats.encoded_bytes += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    fn flush_run(&mut self) -> io::Result<()> {
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

    /// The next bytes of the new file, not in the basis.
    pub(crate) fn literal(&mut self, data: &[u8]) -> io::Result<()> {
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
