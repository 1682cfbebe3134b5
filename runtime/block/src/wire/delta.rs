//! The delta message (`WMDL`): a basis length, copy, literal and zero-run
//! instructions, and an end with the new file's length and content hash
//! ([`crate::ContentHasher`]).
//!
//! Literals may travel zstd-compressed ([`OP_ZSTD_LITERAL`]), chunk by
//! chunk, when the output asks for it ([`DeltaOutput`]); a chunk that
//! does not shrink goes as it is, and after a batch of them the encoder
//! tries fewer batches until one shrinks again, so incompressible data
//! costs almost no compression time.

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
/// Delta opcode: literal bytes follow, zstd-compressed: their length, the
/// compressed length (less than theirs), then one zstd frame.
pub(crate) const OP_ZSTD_LITERAL: u8 = 4;
/// Delta opcode: end, with the new length and content hash.
pub(crate) const OP_END: u8 = 0;

/// Literal bytes compressed together in one [`OP_ZSTD_LITERAL`]: large
/// enough for most of zstd's ratio, small enough to bound both sides'
/// memory (two buffers of this size each).
pub(crate) const ZSTD_CHUNK: usize = 512 << 10;
/// Chunks compressed at once, in parallel.
const ZSTD_BATCH: usize = 4;
/// A compressed chunk is sent only if it saves at least 1/this of its
/// bytes; otherwise the chunk goes raw.
const MIN_SAVING: usize = 32;
/// After a batch of which no chunk compressed, the encoder skips 1, 2, 4,
/// ... batches before it tries again, up to this many (128 MiB of
/// literals).
const MAX_SKIP: u32 = 64;

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
    /// What the literals took on the wire: their compressed size where
    /// they were compressed, their size elsewhere (instruction headers
    /// not counted). `literal_bytes / literal_wire_bytes` is the ratio.
    pub literal_wire_bytes: u64,
    /// Bytes sent as runs of zeros: a hole, or zeros written.
    pub zero_bytes: u64,
    /// Bytes of the encoded delta.
    pub encoded_bytes: u64,
    /// Content hash of the new file as it was read, which the delta ends
    /// with.
    pub hash: [u8; 32],
}

/// Where a delta is written, and how its literals travel there.
///
/// A plain buffer sends them as they are; wrap an output in
/// [`Compressed`] to compress them, or implement this for a channel that
/// knows its own setting.
pub trait DeltaOutput: Write {
    /// The zstd level literals are compressed at, `None` to send them as
    /// they are.
    fn literal_compression(&self) -> Option<i32>;
}

impl DeltaOutput for Vec<u8> {
    fn literal_compression(&self) -> Option<i32> {
        None
    }
}

impl DeltaOutput for io::Sink {
    fn literal_compression(&self) -> Option<i32> {
        None
    }
}

impl<T: DeltaOutput + ?Sized> DeltaOutput for &mut T {
    fn literal_compression(&self) -> Option<i32> {
        (**self).literal_compression()
    }
}

/// An output whose delta literals are compressed at `level` (zstd;
/// `None`: not compressed).
#[derive(Debug)]
pub struct Compressed<W> {
    /// Where the delta goes.
    pub out: W,
    /// The zstd level, `None` for none.
    pub level: Option<i32>,
}

impl<W: Write> Write for Compressed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write> DeltaOutput for Compressed<W> {
    fn literal_compression(&self) -> Option<i32> {
        self.level
    }
}

/// The zstd level a setting means: `level` brought into zstd's range.
pub fn zstd_level(level: i32) -> i32 {
    let range = zstd::compression_level_range();
    level.clamp(*range.start(), *range.end())
}

/// Literal bytes held for compression, and what compresses them: a
/// batch of [`ZSTD_BATCH`] chunks, compressed at once on the rayon pool
/// (zstd level 3 takes 150 to 400 MB/s of one core, about what the rest
/// of a transfer takes of the other).
struct Squeezer {
    /// The level its contexts compress at.
    level: i32,
    ctxs: Vec<zstd::bulk::Compressor<'static>>,
    pending: Vec<u8>,
    squeezed: Vec<Vec<u8>>,
    /// Batches still to send raw before the next try.
    skip: u32,
    /// Batches to skip after the next one of which no chunk compresses.
    backoff: u32,
}

impl Squeezer {
    fn new(level: i32) -> io::Result<Self> {
        let ctxs = (0..ZSTD_BATCH)
            .map(|_| {
                let mut ctx = zstd::bulk::Compressor::new(zstd_level(level))?;
                // A corrupted frame then fails as such, not as the
                // whole file's verification.
                ctx.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
                Ok(ctx)
            })
            .collect::<io::Result<_>>()?;
        Ok(Self {
            level,
            ctxs,
            pending: Vec::new(),
            squeezed: vec![Vec::new(); ZSTD_BATCH],
            skip: 0,
            backoff: 1,
        })
    }

    /// A squeezer for `level`: this thread's spare one if it compresses
    /// at that level, with nothing pending and no batch to skip, else a
    /// new one.
    fn take(level: i32) -> io::Result<Self> {
        match SPARE.with_borrow_mut(Option::take) {
            Some(mut spare) if spare.level == level => {
                spare.pending.clear();
                spare.skip = 0;
                spare.backoff = 1;
                Ok(spare)
            }
            _ => Self::new(level),
        }
    }

    /// Compresses the pending chunks; the compressed length of each that
    /// saves enough, `None` for each to send as it is.
    fn squeeze(&mut self) -> Vec<Option<usize>> {
        use rayon::prelude::*;
        let chunks: Vec<&[u8]> = self.pending.chunks(ZSTD_CHUNK).collect();
        if self.skip > 0 {
            self.skip -= 1;
            return vec![None; chunks.len()];
        }
        let sizes: Vec<Option<usize>> = chunks
            .par_iter()
            .zip(self.ctxs.par_iter_mut())
            .zip(self.squeezed.par_iter_mut())
            .map(|((chunk, ctx), out)| {
                let room = chunk.len() - chunk.len() / MIN_SAVING;
                out.resize(room, 0);
                // An error is above all a frame that does not fit in the
                // room: the chunk does not compress.
                match ctx.compress_to_buffer(chunk, &mut out[..]) {
                    Ok(n) if n < room => Some(n),
                    _ => None,
                }
            })
            .collect();
        if sizes.iter().all(Option::is_none) {
            self.skip = self.backoff;
            self.backoff = (self.backoff * 2).min(MAX_SKIP);
        } else {
            self.backoff = 1;
        }
        sizes
    }
}

thread_local! {
    /// The squeezer of this thread's last encoder, for its next one: zstd
    /// sizes and clears a context's tables on its first use, which cost
    /// more than compressing a small file (a tree of 100,000 small files,
    /// an encoder each, took 12.6 s with a squeezer made per file and 6.9 s
    /// uncompressed).
    static SPARE: std::cell::RefCell<Option<Squeezer>> = const { std::cell::RefCell::new(None) };
}

/// Writes instructions, coalescing copies of adjacent basis ranges and
/// adjacent runs of zeros.
pub(crate) struct Encoder<W> {
    out: W,
    stats: DeltaStats,
    run: Option<(u64, u64)>,
    zeros: u64,
    squeezer: Option<Squeezer>,
}

impl<W: DeltaOutput> Encoder<W> {
    /// Writes the delta header for a basis of `basis_len` bytes.
    pub(crate) fn new(mut out: W, basis_len: u64) -> io::Result<Self> {
        let squeezer = match out.literal_compression() {
            Some(level) => Some(Squeezer::take(level)?),
            None => None,
        };
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
            squeezer,
        })
    }
}

impl<W> Drop for Encoder<W> {
    fn drop(&mut self) {
        if let Some(squeezer) = self.squeezer.take() {
            SPARE.with_borrow_mut(|spare| *spare = Some(squeezer));
        }
    }
}

impl<W: Write> Encoder<W> {
    /// Sends the literal bytes held for compression: each chunk
    /// compressed if that saves enough, else as it is.
    fn flush_literals(&mut self) -> io::Result<()> {
        // Out of `self` while `put` borrows it.
        let Some(mut sq) = self.squeezer.take() else {
            return Ok(());
        };
        let sent = self.send_squeezed(&mut sq);
        sq.pending.clear();
        self.squeezer = Some(sq);
        sent
    }

    fn send_squeezed(&mut self, sq: &mut Squeezer) -> io::Result<()> {
        if sq.pending.is_empty() {
            return Ok(());
        }
        let sizes = sq.squeeze();
        for ((chunk, size), squeezed) in sq.pending.chunks(ZSTD_CHUNK).zip(sizes).zip(&sq.squeezed)
        {
            match size {
                Some(n) => {
                    let mut op = [0u8; 9];
                    op[0] = OP_ZSTD_LITERAL;
                    op[1..5].copy_from_slice(&(chunk.len() as u32).to_be_bytes());
                    op[5..].copy_from_slice(&(n as u32).to_be_bytes());
                    self.stats.literal_wire_bytes += n as u64;
                    self.put(&op)?;
                    self.put(&squeezed[..n])?;
                }
                None => self.raw_literal(chunk)?,
            }
        }
        Ok(())
    }

    /// Literal bytes as they are, in instructions of at most
    /// [`LITERAL_CHUNK`].
    fn raw_literal(&mut self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(LITERAL_CHUNK) {
            let mut op = [0u8; 5];
            op[0] = OP_LITERAL;
            op[1..].copy_from_slice(&(chunk.len() as u32).to_be_bytes());
            self.put(&op)?;
            self.put(chunk)?;
        }
        self.stats.literal_wire_bytes += data.len() as u64;
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stats.encoded_bytes += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    fn flush_run(&mut self) -> io::Result<()> {
        self.flush_literals()?;
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
        if self.run.is_some() || self.zeros > 0 {
            self.flush_run()?;
        }
        self.stats.literal_bytes += data.len() as u64;
        self.stats.new_len += data.len() as u64;
        if self.squeezer.is_none() {
            return self.raw_literal(data);
        }
        let mut data = data;
        while !data.is_empty() {
            let sq = self.squeezer.as_mut().expect("squeezer");
            // A batch not to be tried goes raw without a copy.
            if sq.skip > 0 && sq.pending.is_empty() && data.len() >= ZSTD_CHUNK * ZSTD_BATCH {
                sq.skip -= 1;
                let (batch, rest) = data.split_at(ZSTD_CHUNK * ZSTD_BATCH);
                self.raw_literal(batch)?;
                data = rest;
                continue;
            }
            let n = data.len().min(ZSTD_CHUNK * ZSTD_BATCH - sq.pending.len());
            sq.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
            if sq.pending.len() == ZSTD_CHUNK * ZSTD_BATCH {
                self.flush_literals()?;
            }
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

/// Reads a delta: its header, then one instruction after another
/// ([`Decoder::next`]); after a [`Instruction::Literal`] the decoder reads
/// as that literal's bytes, decompressed if they came compressed, and
/// then as the end of the stream until the next instruction.
pub(crate) struct Decoder<R> {
    inner: R,
    basis_len: u64,
    /// Bytes of the current raw literal still in `inner`.
    raw_left: u64,
    /// The current compressed literal, decompressed, and how much of it
    /// was read.
    unpacked: Vec<u8>,
    at: usize,
    packed: Vec<u8>,
    ctx: Option<zstd::bulk::Decompressor<'static>>,
    literal_wire_bytes: u64,
}

impl<R: Read> Decoder<R> {
    /// Reads a delta's header (magic, version and the length of the basis
    /// it was computed against).
    pub(crate) fn new(mut inner: R) -> Result<Self, FormatError> {
        format::read_header(&mut inner, DELTA_MAGIC, format::VERSION, "delta header")?;
        let basis_len = format::read_u64(&mut inner, "basis length")?;
        Ok(Self {
            inner,
            basis_len,
            raw_left: 0,
            unpacked: Vec::new(),
            at: 0,
            packed: Vec::new(),
            ctx: None,
            literal_wire_bytes: 0,
        })
    }

    /// The length of the basis the delta was computed against.
    pub(crate) fn basis_len(&self) -> u64 {
        self.basis_len
    }

    /// What the literals so far took on the wire (compressed or not).
    pub(crate) fn literal_wire_bytes(&self) -> u64 {
        self.literal_wire_bytes
    }

    /// Reads the next instruction, checking its operands before anything
    /// is read or written for it. The previous literal must have been
    /// read whole.
    pub(crate) fn next(&mut self) -> Result<Instruction, PatchError> {
        if self.raw_left > 0 || self.at < self.unpacked.len() {
            return Err(FormatError::Malformed {
                reason: "an instruction read before the literal ahead of it",
            }
            .into());
        }
        let r = &mut self.inner;
        match format::read_u8(r, "delta instruction")? {
            OP_COPY => {
                let (offset, len) = read_copy(r, self.basis_len)?;
                Ok(Instruction::Copy { offset, len })
            }
            OP_LITERAL => {
                let len = read_literal_len(r)?;
                self.raw_left = len;
                self.literal_wire_bytes += len;
                Ok(Instruction::Literal { len })
            }
            OP_ZSTD_LITERAL => {
                let len = read_literal_len(r)?;
                let packed_len = u64::from(format::read_u32(r, "compressed literal length")?);
                if packed_len == 0 || packed_len >= len {
                    return Err(FormatError::Malformed {
                        reason: "a compressed literal no shorter than its bytes",
                    }
                    .into());
                }
                self.packed.clear();
                // Through `take`: a lying length allocates no more than
                // what arrives.
                r.take(packed_len).read_to_end(&mut self.packed)?;
                if self.packed.len() as u64 != packed_len {
                    return Err(FormatError::Truncated {
                        reading: "compressed literal",
                    }
                    .into());
                }
                let ctx = match &mut self.ctx {
                    Some(ctx) => ctx,
                    None => self.ctx.insert(zstd::bulk::Decompressor::new()?),
                };
                self.unpacked.resize(len as usize, 0);
                // A frame that would decompress to more than `len` bytes
                // fails for want of room.
                match ctx.decompress_to_buffer(&self.packed[..], &mut self.unpacked[..]) {
                    Ok(n) if n as u64 == len => {}
                    _ => {
                        self.unpacked.clear();
                        return Err(FormatError::Malformed {
                            reason: "a compressed literal that does not decompress to its length",
                        }
                        .into());
                    }
                }
                self.at = 0;
                self.literal_wire_bytes += packed_len;
                Ok(Instruction::Literal { len })
            }
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
}

/// The current literal's bytes, then the end of the stream.
impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at < self.unpacked.len() {
            let n = buf.len().min(self.unpacked.len() - self.at);
            buf[..n].copy_from_slice(&self.unpacked[self.at..self.at + n]);
            self.at += n;
            return Ok(n);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.raw_left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        self.raw_left -= n as u64;
        Ok(n)
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
