//! Delta: a new file expressed as copies of basis blocks and literals.

use std::io::{self, Read, Write};

use crate::error::DeltaError;
use crate::format::{self, DELTA_MAGIC, LITERAL_CHUNK, OP_COPY, OP_END, OP_LITERAL};
use crate::rolling::{Rolling, strong};
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
}

/// Bytes read from the new file at a time.
const READ_CHUNK: usize = 4 << 20;

/// Writes instructions, coalescing runs of consecutive blocks.
struct Encoder<W> {
    out: W,
    stats: DeltaStats,
    run: Option<(u64, u32)>,
}

impl<W: Write> Encoder<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stats.encoded_bytes += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    fn flush_run(&mut self) -> io::Result<()> {
        if let Some((start, count)) = self.run.take() {
            let mut op = [0u8; 13];
            op[0] = OP_COPY;
            op[1..9].copy_from_slice(&start.to_be_bytes());
            op[9..].copy_from_slice(&count.to_be_bytes());
            self.put(&op)?;
        }
        Ok(())
    }

    fn copy(&mut self, block: usize, data: &[u8]) -> io::Result<()> {
        self.stats.matched_bytes += data.len() as u64;
        self.stats.new_len += data.len() as u64;
        match &mut self.run {
            Some((start, count))
                if *start + u64::from(*count) == block as u64 && *count < u32::MAX =>
            {
                *count += 1;
                Ok(())
            }
            _ => {
                self.flush_run()?;
                self.run = Some((block as u64, 1));
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

    fn finish(mut self, hash: blake3::Hash) -> io::Result<DeltaStats> {
        self.flush_run()?;
        let mut end = [0u8; 41];
        end[0] = OP_END;
        end[1..9].copy_from_slice(&self.stats.new_len.to_be_bytes());
        end[9..].copy_from_slice(hash.as_bytes());
        self.put(&end)?;
        Ok(self.stats)
    }
}

/// Reads as much as `buf` holds or the reader has.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
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
pub fn delta<R: Read, W: Write>(
    sig: &Signature,
    mut new: R,
    mut out: W,
) -> Result<DeltaStats, DeltaError> {
    format::write_header(&mut out, DELTA_MAGIC)?;
    out.write_all(&sig.block_size().to_be_bytes())?;
    out.write_all(&sig.basis_len().to_be_bytes())?;
    let mut enc = Encoder {
        out,
        stats: DeltaStats {
            encoded_bytes: 5 + 4 + 8,
            ..DeltaStats::default()
        },
        run: None,
    };
    let mut hasher = blake3::Hasher::new();
    let mut new_len = 0u64;
    let bs = sig.block_size() as usize;
    let index = Index::new(sig);
    let blocks = sig.blocks();
    let searchable = !blocks.is_empty();
    // Blocks that can match anywhere but at the very end (not a short last).
    let full_blocks = (sig.basis_len() / u64::from(sig.block_size())) as usize;
    let lookahead = (PROBE_AHEAD + 1) * bs + 1;

    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK + lookahead + LITERAL_CHUNK);
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
            buf.resize(old + READ_CHUNK, 0);
            let n = read_full(&mut new, &mut buf[old..])?;
            buf.truncate(old + n);
            hash_input(&mut hasher, &buf[old..]);
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
                if expected < full_blocks && strong(window) == blocks[expected].strong {
                    Some(expected)
                } else {
                    let r = Rolling::fast(window);
                    let found = index.find(sig, r.digest(), window, expected);
                    if found.is_none() {
                        let skip = (1..=PROBE_AHEAD).find(|&j| {
                            let at = pos + j * bs;
                            expected + j < full_blocks
                                && at + bs <= buf.len()
                                && strong(&buf[at..at + bs]) == blocks[expected + j].strong
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
            enc.copy(block, &buf[pos..pos + bs])?;
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
        buf.resize(READ_CHUNK, 0);
        loop {
            let n = read_full(&mut new, &mut buf)?;
            if n == 0 {
                break;
            }
            hash_input(&mut hasher, &buf[..n]);
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
            && blocks[last].strong == strong(tail);
        if tail_matches {
            enc.literal(&buf[lit..pos])?;
            enc.copy(last, tail)?;
        } else {
            enc.literal(&buf[lit..])?;
        }
    }
    debug_assert_eq!(new_len, enc.stats.new_len);
    Ok(enc.finish(hasher.finalize())?)
}
