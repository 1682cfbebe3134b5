//! Patch: rebuild a new file from its basis and a delta, verified.

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::error::{FormatError, PatchError};
use crate::format::{self, DELTA_MAGIC, Limits, OP_COPY, OP_END, OP_LITERAL};

/// What a patch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PatchStats {
    /// Bytes of the rebuilt file.
    pub written_bytes: u64,
    /// Bytes copied from the basis.
    pub copied_bytes: u64,
    /// Bytes taken from the delta's literals.
    pub literal_bytes: u64,
    /// BLAKE3 of the rebuilt file, verified against the delta's.
    pub hash: [u8; 32],
}

/// Writes to `out` while hashing and counting, within a length limit.
///
/// Pieces go through two buffers: while one is filled (from the basis or
/// the delta) and written, the previous one is hashed on the rayon pool,
/// so BLAKE3 overlaps the copying instead of adding to it.
struct Output<W> {
    out: W,
    hasher: blake3::Hasher,
    written: u64,
    limit: u64,
    bufs: [Vec<u8>; 2],
    /// The buffer the next piece goes to; the other holds `unhashed` bytes.
    cur: usize,
    unhashed: usize,
}

/// Size of one piece, and of each of the two buffers.
const PIECE: usize = 1 << 20;
/// Smaller pieces are hashed inline: a task would cost more.
const HASH_TASK_MIN: usize = 64 << 10;

impl<W: Write> Output<W> {
    fn new(out: W, limit: u64) -> Self {
        Self {
            out,
            hasher: blake3::Hasher::new(),
            written: 0,
            limit,
            // Grown to the largest piece seen: a small file must not pay
            // for zeroing two megabytes.
            bufs: [Vec::new(), Vec::new()],
            cur: 0,
            unhashed: 0,
        }
    }

    /// Appends `n <= PIECE` bytes that `fill` puts into the buffer it is
    /// given.
    fn piece(
        &mut self,
        n: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), PatchError>,
    ) -> Result<(), PatchError> {
        self.written += n as u64;
        if self.written > self.limit {
            return Err(FormatError::TooLarge {
                what: "rebuilt file length",
                value: self.written,
                limit: self.limit,
            }
            .into());
        }
        let [a, b] = &mut self.bufs;
        let (cur, prev) = if self.cur == 0 { (a, b) } else { (b, a) };
        if cur.len() < n {
            cur.resize(n, 0);
        }
        let prev = &prev[..self.unhashed];
        let hasher = &mut self.hasher;
        let out = &mut self.out;
        let cur = &mut cur[..n];
        let result = if prev.len() >= HASH_TASK_MIN {
            rayon::in_place_scope(|scope| {
                scope.spawn(move |_| {
                    hasher.update(prev);
                });
                fill(cur)?;
                Ok::<_, PatchError>(out.write_all(cur)?)
            })
        } else {
            hasher.update(prev);
            fill(cur).and_then(|()| Ok(out.write_all(cur)?))
        };
        result?;
        self.unhashed = n;
        self.cur ^= 1;
        Ok(())
    }

    /// The hash of everything written.
    fn finalize(&mut self) -> blake3::Hash {
        let prev = &self.bufs[self.cur ^ 1][..self.unhashed];
        self.hasher.update(prev);
        self.unhashed = 0;
        self.hasher.finalize()
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
    let basis_len = format::read_u64(&mut delta, "basis length")?;
    let mut out = Output::new(out, limits.max_file_len);
    let mut stats = PatchStats::default();
    loop {
        match format::read_u8(&mut delta, "delta instruction")? {
            OP_COPY => {
                let (offset, len) = format::read_copy(&mut delta, basis_len)?;
                basis.seek(SeekFrom::Start(offset))?;
                let mut left = len;
                while left > 0 {
                    let n = left.min(PIECE as u64) as usize;
                    out.piece(n, |buf| {
                        basis.read_exact(buf).map_err(|e| match e.kind() {
                            // The basis is shorter than its signature said: it
                            // changed underneath us.
                            io::ErrorKind::UnexpectedEof => PatchError::OutOfBasis {
                                offset,
                                len,
                                basis_len,
                            },
                            _ => e.into(),
                        })
                    })?;
                    left -= n as u64;
                }
                stats.copied_bytes += len;
            }
            OP_LITERAL => {
                let len = format::read_literal_len(&mut delta)?;
                let mut left = len as usize;
                while left > 0 {
                    let n = left.min(PIECE);
                    out.piece(n, |buf| {
                        delta
                            .read_exact(buf)
                            .map_err(|e| FormatError::reading("literal bytes")(e).into())
                    })?;
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
                let actual = out.finalize();
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
                stats.hash = hash;
                return Ok(stats);
            }
            opcode => return Err(FormatError::UnknownInstruction { opcode }.into()),
        }
    }
}
