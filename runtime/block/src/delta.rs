//! Delta: a new file expressed as copies of basis blocks and literals.

use std::io::{self, Read, Write};

use crate::error::DeltaError;
use crate::format::{self, DELTA_MAGIC, LITERAL_CHUNK, OP_COPY, OP_END, OP_LITERAL};
use crate::rolling::Rolling;
use crate::signature::{Index, Signature};

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

/// Bytes read from the new file at a time.
const READ_CHUNK: usize = 4 << 20;

/// Where the search puts what it finds, in the order of the new file.
pub(crate) trait Sink {
    /// `len` bytes of the new file equal the basis at `offset`.
    fn copy(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// The next bytes of the new file are not in the basis.
    fn literal(&mut self, data: &[u8]) -> io::Result<()>;
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
}

impl<W: Write> Sink for Encoder<W> {
    fn copy(&mut self, offset: u64, len: u64) -> io::Result<()> {
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

    fn literal(&mut self, data: &[u8]) -> io::Result<()> {
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

/// Reads as much as `buf` holds or the reader has.
pub(crate) fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Hashes what was read for the end marker, on the rayon pool when the
/// piece is large enough to be worth splitting.
pub(crate) fn hash_input(hasher: &mut blake3::Hasher, data: &[u8]) {
    if data.len() >= PARALLEL_HASH_MIN {
        hasher.update_rayon(data);
    } else {
        hasher.update(data);
    }
}

/// Below this, BLAKE3 on one thread beats splitting the work.
pub(crate) const PARALLEL_HASH_MIN: usize = 512 << 10;

/// How many blocks past a mismatching one the search probes at their
/// expected offsets before it falls back to rolling byte by byte.
const PROBE_AHEAD: usize = 2;

/// Streams the delta of `new` against `sig` into `out`.
///
/// The search first tries the block that follows the last match at its
/// expected offset (one strong hash per block for data that did not move),
/// then any block with the same weak sum, then the next
/// `PROBE_AHEAD` blocks at their expected offsets (a block rewritten in
/// place costs two hashes, not a byte-by-byte scan). Only when all of
/// that fails does it roll the weak sum through every byte offset, so
/// blocks still match after insertions or deletions shift them. Memory is
/// the signature's index plus a few megabytes of window.
pub fn delta<R: Read, W: Write>(sig: &Signature, new: R, out: W) -> Result<DeltaStats, DeltaError> {
    let mut enc = Encoder::new(out, sig.basis_len())?;
    let mut hasher = blake3::Hasher::new();
    search(sig, &Index::new(sig), new, &mut enc, Some(&mut hasher))?;
    Ok(enc.finish(hasher.finalize())?)
}

/// The search of [`delta`]: finds the blocks of `sig` (indexed by
/// `index`) in `new` and tells `sink`, hashing what it reads into `hasher`
/// if given. Returns the bytes read.
pub(crate) fn search<R: Read, S: Sink>(
    sig: &Signature,
    index: &Index,
    mut new: R,
    enc: &mut S,
    mut hasher: Option<&mut blake3::Hasher>,
) -> io::Result<u64> {
    let mut new_len = 0u64;
    let bs = sig.block_size() as usize;
    let blocks = sig.blocks();
    let searchable = !blocks.is_empty();
    // Blocks that can match anywhere but at the very end (not a short last).
    let full = |i: usize| i < blocks.len() && sig.block_len(i) == bs;
    let lookahead = (PROBE_AHEAD + 1) * bs + 1;

    // Short inputs (a literal run being refined) get a buffer their size.
    let mut chunk = READ_CHUNK.min(2 * lookahead);
    let mut buf: Vec<u8> = Vec::with_capacity(chunk + lookahead);
    let (mut pos, mut lit) = (0usize, 0usize);
    let mut eof = false;
    let mut rolling: Option<Rolling> = None;
    // The block expected at `pos` if the data did not move: the one after
    // the last match.
    let mut expected = 0usize;
    loop {
        if !eof && buf.len() < pos + lookahead {
            buf.drain(..lit);
            pos -= lit;
            lit = 0;
            let old = buf.len();
            buf.resize(old + chunk, 0);
            let n = read_full(&mut new, &mut buf[old..])?;
            buf.truncate(old + n);
            chunk = (chunk * 2).min(READ_CHUNK);
            if let Some(h) = hasher.as_deref_mut() {
                hash_input(h, &buf[old..]);
            }
            new_len += n as u64;
            eof = n == 0;
            continue;
        }
        if !searchable || buf.len() - pos < bs {
            break;
        }
        let window = &buf[pos..pos + bs];
        let found = match &mut rolling {
            None => {
                if full(expected) && sig.strong(window) == blocks[expected].strong {
                    Some(expected)
                } else {
                    let r = Rolling::fast(window);
                    let found = index.find(sig, r.digest(), window, expected);
                    if found.is_none() {
                        let skip = (1..=PROBE_AHEAD).find(|&j| {
                            let at = pos + j * bs;
                            full(expected + j)
                                && at + bs <= buf.len()
                                && sig.strong(&buf[at..at + bs]) == blocks[expected + j].strong
                        });
                        if let Some(j) = skip {
                            // Rewritten in place: literal up to the block
                            // that matches where it always was.
                            pos += j * bs;
                            expected += j;
                            continue;
                        }
                        rolling = Some(r);
                    }
                    found
                }
            }
            Some(r) => {
                // Roll in a tight loop to the next offset the filter lets
                // through, stopping where the window needs a refill or the
                // literal run a flush.
                let end = if eof {
                    buf.len() - bs
                } else {
                    buf.len() - lookahead
                };
                let stop = end.min(lit + LITERAL_CHUNK).max(pos);
                pos = index.scan(r, &buf, bs, pos, stop);
                index.find(sig, r.digest(), &buf[pos..pos + bs], expected)
            }
        };
        if let Some(block) = found {
            enc.literal(&buf[lit..pos])?;
            enc.copy(sig.block_offset(block), bs as u64)?;
            pos += bs;
            lit = pos;
            rolling = None;
            expected = block + 1;
            continue;
        }
        if eof && pos + bs == buf.len() {
            // At the end of the input with no match: the rest is literal.
            break;
        }
        rolling
            .as_mut()
            .expect("set above")
            .roll(buf[pos], buf[pos + bs]);
        pos += 1;
        if pos - lit >= LITERAL_CHUNK {
            enc.literal(&buf[lit..pos])?;
            lit = pos;
        }
    }
    if !eof {
        // Nothing to search for (an empty basis): the rest is literal.
        enc.literal(&buf[lit..])?;
        loop {
            buf.resize(chunk, 0);
            let n = read_full(&mut new, &mut buf)?;
            if n == 0 {
                break;
            }
            chunk = (chunk * 2).min(READ_CHUNK);
            if let Some(h) = hasher.as_deref_mut() {
                hash_input(h, &buf[..n]);
            }
            new_len += n as u64;
            enc.literal(&buf[..n])?;
        }
    } else {
        // The tail may be the basis's short last block.
        let tail = &buf[pos..];
        let last = blocks.len().wrapping_sub(1);
        let tail_matches = searchable
            && !tail.is_empty()
            && sig.block_len(last) == tail.len()
            && blocks[last].strong == sig.strong(tail);
        if tail_matches {
            enc.literal(&buf[lit..pos])?;
            enc.copy(sig.block_offset(last), tail.len() as u64)?;
        } else {
            enc.literal(&buf[lit..])?;
        }
    }
    Ok(new_len)
}
