//! Patch: rebuild a new file from its basis and a delta, verified.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use blake3::hazmat::ChainingValue;

use crate::content_hash::ContentHasher;
use crate::error::{FormatError, PatchError};
use crate::format::{Limits, granule_for};
use crate::sparse::{DataRanges, SparseWriter};
use crate::tree_hash::BasisHashes;
use crate::wire;
use crate::wire::delta::Instruction;

/// What a patch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PatchStats {
    /// Bytes of the rebuilt file.
    pub written_bytes: u64,
    /// Bytes copied from the basis.
    pub copied_bytes: u64,
    /// Bytes taken from the delta's literals.
    pub literal_bytes: u64,
    /// What those literals took in the delta: compressed where they came
    /// compressed.
    pub literal_wire_bytes: u64,
    /// Bytes the delta gave as runs of zeros.
    pub zero_bytes: u64,
    /// Content hash of the rebuilt file, verified against the delta's.
    pub hash: [u8; 32],
}

/// Where a patch writes: any writer, or a sparse file that takes ranges of
/// the basis file straight from the kernel.
trait Sink: Write {
    /// Appends `len` bytes of `from` at `offset`.
    fn copy_range(
        &mut self,
        from: &File,
        data: &DataRanges,
        offset: u64,
        len: u64,
    ) -> io::Result<()>;

    /// Appends `len` zero bytes.
    fn zeros(&mut self, len: u64) -> io::Result<()>;
}

/// Any writer, which is given bytes only.
struct Plain<W>(W);

impl<W: Write> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> Sink for Plain<W> {
    fn copy_range(&mut self, _: &File, _: &DataRanges, _: u64, _: u64) -> io::Result<()> {
        unreachable!("a plain patch has no basis file to copy from")
    }

    fn zeros(&mut self, mut len: u64) -> io::Result<()> {
        let zeros = [0u8; 64 << 10];
        while len > 0 {
            let n = len.min(zeros.len() as u64) as usize;
            self.0.write_all(&zeros[..n])?;
            len -= n as u64;
        }
        Ok(())
    }
}

impl Sink for &mut SparseWriter<File> {
    fn copy_range(
        &mut self,
        from: &File,
        data: &DataRanges,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        SparseWriter::copy_range(self, from, data, offset, len)
    }

    fn zeros(&mut self, len: u64) -> io::Result<()> {
        SparseWriter::zeros(self, len)
    }
}

/// Writes to `out` while hashing and counting, within a length limit.
///
/// Pieces go through two buffers: while one is filled (from the basis or
/// the delta) and written, the previous one is hashed on the rayon pool,
/// so BLAKE3 overlaps the copying instead of adding to it.
struct Output<'p, W> {
    out: W,
    /// Told the bytes written so far after each piece.
    progress: &'p mut dyn FnMut(u64),
    hasher: ContentHasher,
    /// The granule of the chaining values [`Output::copy_known`] is given.
    granule: u64,
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

impl<'p, W: Sink> Output<'p, W> {
    fn new(out: W, limit: u64, granule: u64, progress: &'p mut dyn FnMut(u64)) -> Self {
        Self {
            out,
            progress,
            hasher: ContentHasher::new(),
            granule,
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
        self.grow(n as u64)?;
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
        (self.progress)(self.written);
        Ok(())
    }

    fn grow(&mut self, n: u64) -> Result<(), PatchError> {
        self.written += n;
        if self.written > self.limit {
            return Err(FormatError::TooLarge {
                what: "rebuilt file length",
                value: self.written,
                limit: self.limit,
            }
            .into());
        }
        Ok(())
    }

    /// Hashes the piece still waiting for it.
    fn hash_pending(&mut self) {
        let prev = &self.bufs[self.cur ^ 1][..self.unhashed];
        self.hasher.update(prev);
        self.unhashed = 0;
    }

    /// Appends whole granules of the basis `from`, copied by the kernel,
    /// whose chaining values `cvs` are known: they are not read.
    fn copy_known(
        &mut self,
        (from, data): (&File, &DataRanges),
        offset: u64,
        len: u64,
        cvs: &[ChainingValue],
    ) -> Result<(), PatchError> {
        self.grow(len)?;
        self.hash_pending();
        self.hasher.push_known(cvs, self.granule);
        self.out.copy_range(from, data, offset, len)?;
        (self.progress)(self.written);
        Ok(())
    }

    /// Appends `len` zero bytes, hashed by their length; a sparse file
    /// gets a hole.
    fn zeros(&mut self, len: u64) -> Result<(), PatchError> {
        self.grow(len)?;
        self.hash_pending();
        self.hasher.zeros(len);
        self.out.zeros(len)?;
        (self.progress)(self.written);
        Ok(())
    }

    /// The hash of everything written.
    fn finalize(&mut self) -> blake3::Hash {
        self.hash_pending();
        std::mem::take(&mut self.hasher).finalize()
    }
}

/// Copies `len` bytes of `basis` at `offset` through `out`.
fn copy_through<B: Read + Seek, W: Sink>(
    basis: &mut B,
    out: &mut Output<'_, W>,
    offset: u64,
    len: u64,
    basis_len: u64,
) -> Result<(), PatchError> {
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
    Ok(())
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
    basis: B,
    delta: D,
    out: W,
    limits: &Limits,
) -> Result<PatchStats, PatchError> {
    patch_reporting(basis, delta, out, limits, &mut |_| {})
}

/// [`patch`], calling `progress` with the bytes rebuilt so far as they
/// are written.
pub fn patch_reporting<B: Read + Seek, D: Read, W: Write>(
    basis: B,
    delta: D,
    out: W,
    limits: &Limits,
    progress: &mut dyn FnMut(u64),
) -> Result<PatchStats, PatchError> {
    let output = Output::new(Plain(out), limits.max_file_len, granule_for(0), progress);
    patch_into(basis, delta, output, None)
}

/// [`patch`] of a basis that is one file into a new sparse file, for a
/// basis whose granule hashes are known
/// ([`BasisHashes::compute`](crate::BasisHashes::compute)):
/// each whole granule a copy puts back in its own place is copied by the
/// kernel and accounted for by its known hash instead of being read,
/// written and hashed here. The result is verified the same way, against
/// the new file's BLAKE3 the delta ends with.
///
/// `hashes` must describe `basis` as it is now: the caller checks that the
/// file did not change since they were computed (by its stamp), or the
/// verification would vouch for granules as they were. `progress` is
/// called with the bytes rebuilt so far.
///
/// Also returns the ranges of the new file that were copied from the same
/// place of the basis (sorted and disjoint), where the new file's
/// signature and granule hashes are the basis's
/// ([`BasisHashes::updated`](crate::BasisHashes::updated)).
pub fn patch_from_file<D: Read>(
    basis: &File,
    hashes: &BasisHashes,
    delta: D,
    out: &mut SparseWriter<File>,
    limits: &Limits,
    progress: &mut dyn FnMut(u64),
) -> Result<(PatchStats, Vec<(u64, u64)>), PatchError> {
    let output = Output::new(out, limits.max_file_len, hashes.granule(), progress);
    let data = DataRanges::of(basis)?;
    let mut in_place = Vec::new();
    let known = Known {
        file: basis,
        data: &data,
        hashes,
        in_place: &mut in_place,
    };
    let stats = patch_into(basis, delta, output, Some(known))?;
    Ok((stats, in_place))
}

/// What [`patch_from_file`] knows of its basis, and where it notes the
/// copies that stay in place.
struct Known<'a> {
    file: &'a File,
    data: &'a DataRanges,
    hashes: &'a BasisHashes,
    in_place: &'a mut Vec<(u64, u64)>,
}

fn patch_into<B: Read + Seek, D: Read, W: Sink>(
    mut basis: B,
    delta: D,
    mut out: Output<'_, W>,
    mut known: Option<Known>,
) -> Result<PatchStats, PatchError> {
    let mut delta = wire::delta::Decoder::new(delta)?;
    let basis_len = delta.basis_len();
    let mut stats = PatchStats::default();
    loop {
        match delta.next()? {
            Instruction::Copy { offset, len } => {
                let end = offset + len;
                let mut at = offset;
                // Whole granules (after the first) that stay in place.
                if let Some(Known {
                    file,
                    data,
                    hashes,
                    in_place,
                }) = &mut known
                    && offset == out.written
                {
                    match in_place.last_mut() {
                        Some((o, l)) if *o + *l == offset => *l += len,
                        _ => in_place.push((offset, len)),
                    }
                    let g = hashes.granule();
                    let first = offset.div_ceil(g).max(1);
                    let last = end.min(hashes.len()) / g;
                    if let Some(cvs) = hashes.whole(first, last.saturating_sub(first))
                        && !cvs.is_empty()
                    {
                        copy_through(&mut basis, &mut out, at, first * g - at, basis_len)?;
                        out.copy_known((*file, *data), first * g, (last - first) * g, cvs)
                            .map_err(|e| match e {
                                PatchError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                                    PatchError::OutOfBasis {
                                        offset,
                                        len,
                                        basis_len,
                                    }
                                }
                                e => e,
                            })?;
                        at = last * g;
                    }
                }
                copy_through(&mut basis, &mut out, at, end - at, basis_len)?;
                stats.copied_bytes += len;
            }
            Instruction::Literal { len } => {
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
            Instruction::Zeros { len } => {
                out.zeros(len)?;
                stats.zero_bytes += len;
            }
            Instruction::End { new_len, hash } => {
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
                stats.literal_wire_bytes = delta.literal_wire_bytes();
                stats.hash = hash;
                return Ok(stats);
            }
        }
    }
}
