//! The signature message (`WMSG`): per-block weak and strong hashes of
//! a basis file, or of the ranges a [`Refinement`] asked for.

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::error::FormatError;
use crate::format::{self, Limits, MAX_BLOCK, SIGNATURE_MAGIC};
use crate::rolling::{Backend, strong};
use crate::wire::refinement::Refinement;

/// Smallest block size the engine chooses by itself.
pub const DEFAULT_MIN_BLOCK: u32 = 4 << 10;
/// Largest block size the engine chooses by itself.
pub const DEFAULT_MAX_BLOCK: u32 = 128 << 10;

/// How to compute a signature.
#[derive(Clone, Debug, Default)]
pub struct SignatureOptions {
    /// Block size; by default the square root of the file length, rounded
    /// up to 1 KiB, within [`DEFAULT_MIN_BLOCK`]..=[`DEFAULT_MAX_BLOCK`].
    pub block_size: Option<u32>,
    /// Seed of the blocks' strong hashes. Draw one at random for each
    /// signature sent to a peer: data crafted to collide then collides
    /// only by chance, and not again when the file is sent again.
    pub seed: u64,
}

impl SignatureOptions {
    /// The block size a signature of a basis of `len` bytes gets.
    pub fn block_size_for(&self, len: u64) -> u32 {
        self.block_size
            .unwrap_or_else(|| {
                let root = (len as f64).sqrt() as u64;
                let rounded = root.div_ceil(1024) * 1024;
                rounded.clamp(DEFAULT_MIN_BLOCK.into(), DEFAULT_MAX_BLOCK.into()) as u32
            })
            .clamp(1, MAX_BLOCK)
    }
}

/// One block of the basis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    pub(crate) weak: u32,
    pub(crate) strong: u64,
}

/// A byte range of the basis that a signature covers, cut into blocks from
/// its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    offset: u64,
    len: u64,
    /// Index of the segment's first block in [`Signature::blocks`].
    first_block: usize,
}

/// The signature of a basis file: its length, block size, and the weak and
/// strong hash of every block of the ranges it covers (the whole file, or
/// the ranges a [`Refinement`] asked for; the last block of a range may be
/// short).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    block_size: u32,
    basis_len: u64,
    /// Seed of the strong hashes.
    seed: u64,
    /// An answer to a [`Refinement`], not a whole-file signature.
    refinement: bool,
    segments: Vec<Segment>,
    blocks: Vec<Block>,
}

/// Bytes of the basis read and hashed per step of [`Signature::compute`].
const PARALLEL_CHUNK: usize = 2 << 20;

impl Block {
    #[inline]
    fn of(backend: Backend, seed: u64, data: &[u8]) -> Self {
        let (a, b) = backend.weak_sum(data);
        Block {
            weak: (b << 16) | a,
            strong: strong(seed, data),
        }
    }
}

/// Hashes the blocks of `data` into `out`.
fn hash_blocks(backend: Backend, seed: u64, data: &[u8], bs: usize, out: &mut Vec<Block>) {
    out.clear();
    out.extend(data.chunks(bs).map(|b| Block::of(backend, seed, b)));
}

/// Bytes one block takes in the encoding.
const BLOCK_BYTES: u64 = 4 + 8;

impl Signature {
    /// Computes the signature of `reader`, which holds `len` bytes.
    ///
    /// Streams: memory is the signature plus two read buffers of 2 MiB.
    /// Each chunk is hashed on the rayon pool while the next one is read
    /// on the calling thread.
    pub fn compute<R: Read>(
        mut reader: R,
        len: u64,
        opts: &SignatureOptions,
    ) -> io::Result<Signature> {
        let block_size = opts.block_size_for(len);
        let seed = opts.seed;
        let bs = block_size as usize;
        let chunk = bs * (PARALLEL_CHUNK.div_ceil(bs)).max(1);
        let count = len.div_ceil(block_size.into());
        let mut blocks = Vec::with_capacity(count.min(1 << 24) as usize);
        let first = (chunk as u64).min(len) as usize;
        let mut current = vec![0u8; first];
        reader.read_exact(&mut current)?;
        let mut remaining = len - first as u64;
        let mut next = Vec::new();
        let backend = Backend::detect();
        let mut hashed = Vec::new();
        loop {
            let want = (chunk as u64).min(remaining) as usize;
            next.resize(want, 0);
            let read = rayon::in_place_scope(|scope| {
                if want > 0 {
                    // NB: one hashing task, not par_chunks: with the reader
                    // on this thread, that already fills two cores, and a
                    // third thread only made them fight (5.3 vs 7.2 GiB/s).
                    scope.spawn(|_| hash_blocks(backend, seed, &current, bs, &mut hashed));
                } else {
                    hash_blocks(backend, seed, &current, bs, &mut hashed);
                }
                reader.read_exact(&mut next)
            });
            read?;
            blocks.extend_from_slice(&hashed);
            if want == 0 {
                break;
            }
            remaining -= want as u64;
            std::mem::swap(&mut current, &mut next);
        }
        Ok(Signature {
            block_size,
            basis_len: len,
            seed: seed_of(&blocks, seed),
            refinement: false,
            segments: whole(len),
            blocks,
        })
    }

    /// Computes the finer signature a [`Refinement`] asks for: blocks of
    /// its block size over its ranges of `basis`, which holds `len` bytes,
    /// with strong hashes under `seed` (see [`SignatureOptions::seed`]). A
    /// range beyond the basis is an error (the request came from the
    /// peer).
    pub fn compute_refinement<R: Read + Seek>(
        mut basis: R,
        len: u64,
        refinement: &Refinement,
        seed: u64,
    ) -> Result<Signature, FormatError> {
        let block_size = refinement.block_size();
        let bs = block_size as usize;
        let backend = Backend::detect();
        let mut segments = Vec::with_capacity(refinement.ranges().len());
        let mut blocks = Vec::new();
        let mut buf = Vec::new();
        let mut hashed = Vec::new();
        let chunk = bs * PARALLEL_CHUNK.div_ceil(bs).max(1);
        for &(offset, range_len) in refinement.ranges() {
            if offset.checked_add(range_len).is_none_or(|end| end > len) {
                return Err(FormatError::Malformed {
                    reason: "a refinement range lies outside the basis",
                });
            }
            segments.push(Segment {
                offset,
                len: range_len,
                first_block: blocks.len(),
            });
            basis.seek(SeekFrom::Start(offset))?;
            let mut left = range_len;
            while left > 0 {
                let n = left.min(chunk as u64) as usize;
                buf.resize(n, 0);
                basis
                    .read_exact(&mut buf)
                    .map_err(FormatError::reading("the basis"))?;
                hash_blocks(backend, seed, &buf, bs, &mut hashed);
                blocks.extend_from_slice(&hashed);
                left -= n as u64;
            }
        }
        Ok(Signature {
            block_size,
            basis_len: len,
            seed: seed_of(&blocks, seed),
            refinement: true,
            segments,
            blocks,
        })
    }

    /// The signature of an empty or absent basis.
    pub fn empty() -> Signature {
        Signature {
            block_size: DEFAULT_MIN_BLOCK,
            basis_len: 0,
            seed: 0,
            refinement: false,
            segments: Vec::new(),
            blocks: Vec::new(),
        }
    }

    /// Whether this signature answers a [`Refinement`] (rather than
    /// covering the whole basis).
    pub fn is_refinement(&self) -> bool {
        self.refinement
    }

    /// The block size.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// The number of blocks.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// The length of the basis.
    pub fn basis_len(&self) -> u64 {
        self.basis_len
    }

    pub(crate) fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// The strong hash of `data` under this signature's seed.
    #[inline]
    pub(crate) fn strong(&self, data: &[u8]) -> u64 {
        strong(self.seed, data)
    }

    /// The segment block `index` belongs to.
    #[inline]
    fn segment_of(&self, index: usize) -> &Segment {
        match &self.segments[..] {
            [only] => only,
            all => &all[all.partition_point(|s| s.first_block <= index) - 1],
        }
    }

    /// Offset of block `index` in the basis.
    #[inline]
    pub(crate) fn block_offset(&self, index: usize) -> u64 {
        let seg = self.segment_of(index);
        seg.offset + (index - seg.first_block) as u64 * u64::from(self.block_size)
    }

    /// Length of block `index` (only the last of a segment may be short).
    #[inline]
    pub(crate) fn block_len(&self, index: usize) -> usize {
        let seg = self.segment_of(index);
        let start = (index - seg.first_block) as u64 * u64::from(self.block_size);
        (seg.len - start).min(self.block_size.into()) as usize
    }

    /// Writes the encoding: magic, version, block size, basis length, kind
    /// (0: the whole file, 1: an answer to a refinement), the ranges
    /// covered (their count, then each one's gap and length as varints),
    /// the block count, the strong
    /// hashes' seed (u64, only if there are blocks), then each block's
    /// weak (u32) and strong (u64) hash, all big-endian. Returns the bytes
    /// written.
    pub fn write_to<W: Write>(&self, mut w: W) -> io::Result<u64> {
        format::write_header(&mut w, SIGNATURE_MAGIC, format::VERSION)?;
        w.write_all(&self.block_size.to_be_bytes())?;
        w.write_all(&self.basis_len.to_be_bytes())?;
        w.write_all(&[u8::from(self.refinement)])?;
        let mut ranges = Vec::with_capacity(8 + 6 * self.segments.len());
        format::put_ranges(&mut ranges, self.segments.iter().map(|s| (s.offset, s.len)));
        w.write_all(&ranges)?;
        w.write_all(&(self.blocks.len() as u64).to_be_bytes())?;
        let seed_bytes = if self.blocks.is_empty() {
            0
        } else {
            w.write_all(&self.seed.to_be_bytes())?;
            8
        };
        let mut encoded = Vec::with_capacity(64 << 10);
        for block in &self.blocks {
            encoded.extend_from_slice(&block.weak.to_be_bytes());
            encoded.extend_from_slice(&block.strong.to_be_bytes());
            if encoded.len() >= 64 << 10 {
                w.write_all(&encoded)?;
                encoded.clear();
            }
        }
        w.write_all(&encoded)?;
        Ok(5 + 4
            + 8
            + 1
            + ranges.len() as u64
            + 8
            + seed_bytes
            + BLOCK_BYTES * self.blocks.len() as u64)
    }

    /// Reads exactly one encoded signature from `r`.
    pub fn read_from<R: Read>(mut r: R, limits: &Limits) -> Result<Signature, FormatError> {
        format::read_magic(&mut r, SIGNATURE_MAGIC, "signature header")?;
        Self::read_body(r, limits)
    }

    /// Reads a signature's body, after its magic number.
    pub(crate) fn read_body<R: Read>(mut r: R, limits: &Limits) -> Result<Signature, FormatError> {
        format::read_version(&mut r, format::VERSION, "signature header")?;
        let block_size = format::read_block_size(&mut r)?;
        let basis_len = format::read_u64(&mut r, "basis length")?;
        if basis_len > limits.max_file_len {
            return Err(FormatError::TooLarge {
                what: "basis length",
                value: basis_len,
                limit: limits.max_file_len,
            });
        }
        let refinement = format::read_kind(&mut r, "signature kind", "unknown signature kind")?;
        let segments = read_segments(&mut r, basis_len, block_size, limits)?;
        if !refinement && segments != whole(basis_len) {
            return Err(FormatError::Malformed {
                reason: "a whole-file signature must cover exactly the whole basis",
            });
        }
        let count = format::read_u64(&mut r, "block count")?;
        let covered = segments.last().map_or(0, |s| {
            s.first_block as u64 + s.len.div_ceil(block_size.into())
        });
        // read_segments bounded the ranges' blocks by the limit already.
        if count != covered {
            return Err(FormatError::Malformed {
                reason: "block count does not match the ranges covered",
            });
        }
        let seed = match count {
            0 => 0,
            _ => format::read_u64(&mut r, "strong hash seed")?,
        };
        // Grow as blocks actually arrive: a lying count costs nothing.
        let mut blocks = Vec::with_capacity(count.min(1 << 16) as usize);
        let mut raw = [0u8; BLOCK_BYTES as usize];
        for _ in 0..count {
            r.read_exact(&mut raw)
                .map_err(FormatError::reading("signature blocks"))?;
            blocks.push(Block {
                weak: u32::from_be_bytes(raw[..4].try_into().expect("4 bytes")),
                strong: u64::from_be_bytes(raw[4..].try_into().expect("8 bytes")),
            });
        }
        Ok(Signature {
            block_size,
            basis_len,
            seed,
            refinement,
            segments,
            blocks,
        })
    }
}

/// The seed a signature of `blocks` keeps: none (0, as it decodes) when
/// there are no blocks, since then none is sent.
fn seed_of(blocks: &[Block], seed: u64) -> u64 {
    if blocks.is_empty() { 0 } else { seed }
}

/// The one segment of a whole-file signature (none for an empty file).
fn whole(len: u64) -> Vec<Segment> {
    if len == 0 {
        return Vec::new();
    }
    vec![Segment {
        offset: 0,
        len,
        first_block: 0,
    }]
}

/// Reads the ranges a signature covers (see [`format::read_ranges`]) and
/// numbers their blocks.
fn read_segments<R: Read>(
    r: &mut R,
    basis_len: u64,
    block_size: u32,
    limits: &Limits,
) -> Result<Vec<Segment>, FormatError> {
    let mut first_block = 0;
    let segments = format::read_ranges(r, block_size, basis_len, limits)?
        .into_iter()
        .map(|(offset, len)| {
            let segment = Segment {
                offset,
                len,
                first_block,
            };
            first_block += len.div_ceil(block_size.into()) as usize;
            segment
        })
        .collect();
    Ok(segments)
}
