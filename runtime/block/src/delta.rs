//! Delta: the search that expresses a new file as copies of basis blocks
//! and literals.

use std::fs::File;
use std::io::{self, Read, Write};

use crate::content_hash::ContentHasher;
use crate::error::DeltaError;
use crate::format::read_full;
use crate::index::Index;
use crate::rolling::Rolling;
use crate::sparse::{Piece, may_have_holes, walk};
use crate::wire::delta::{DeltaOutput, DeltaStats, Encoder, LITERAL_CHUNK};
use crate::wire::signature::Signature;

/// Bytes read from the new file at a time.
const READ_CHUNK: usize = 4 << 20;

/// Where the search puts what it finds, in the order of the new file.
pub(crate) trait Sink {
    /// `len` bytes of the new file equal the basis at `offset`.
    fn copy(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// The next bytes of the new file are not in the basis.
    fn literal(&mut self, data: &[u8]) -> io::Result<()>;
}

impl<W: Write> Sink for Encoder<W> {
    fn copy(&mut self, offset: u64, len: u64) -> io::Result<()> {
        Encoder::copy(self, offset, len)
    }

    fn literal(&mut self, data: &[u8]) -> io::Result<()> {
        Encoder::literal(self, data)
    }
}

/// How many blocks past a mismatching one the search probes at their
/// expected offsets before it falls back to rolling byte by byte.
const PROBE_AHEAD: usize = 2;

/// Streams the delta of `new` against `sig` into `out`, its literals
/// compressed if `out` asks for it ([`DeltaOutput`], [`crate::Compressed`]).
///
/// The search first tries the block that follows the last match at its
/// expected offset (one strong hash per block for data that did not move),
/// then any block with the same weak sum, then the next
/// `PROBE_AHEAD` blocks at their expected offsets (a block rewritten in
/// place costs two hashes, not a byte-by-byte scan). Only when all of
/// that fails does it roll the weak sum through every byte offset, so
/// blocks still match after insertions or deletions shift them. Memory is
/// the signature's index plus a few megabytes of window.
pub fn delta<R: Read, W: DeltaOutput>(
    sig: &Signature,
    new: R,
    out: W,
) -> Result<DeltaStats, DeltaError> {
    let mut enc = Encoder::new(out, sig.basis_len())?;
    let mut hasher = ContentHasher::new();
    search(sig, &Index::new(sig), new, &mut enc, Some(&mut hasher))?;
    Ok(enc.finish(hasher.finalize())?)
}

/// [`delta`] of a file. With nothing to search for (an empty basis: a
/// first copy), a file that may have holes is read by its data ranges
/// only: its holes travel as runs of zeros and are hashed by their length
/// ([`crate::ContentHasher`]), never read.
pub fn delta_file<W: DeltaOutput>(
    sig: &Signature,
    file: &File,
    out: W,
) -> Result<DeltaStats, DeltaError> {
    if !sig.blocks().is_empty() || !may_have_holes(file)? {
        return delta(sig, file, out);
    }
    let mut enc = Encoder::new(out, sig.basis_len())?;
    let mut hasher = ContentHasher::new();
    let mut buf = vec![0u8; READ_CHUNK];
    walk(file, &mut buf, |piece| match piece {
        Piece::Data(data) => {
            hasher.update(data);
            enc.literal(data)
        }
        Piece::Hole(len) => {
            hasher.zeros(len);
            enc.zeros(len)
        }
    })?;
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
    mut hasher: Option<&mut ContentHasher>,
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
                h.update(&buf[old..]);
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
                h.update(&buf[..n]);
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
