//! Refinement: further rounds of matching, with smaller blocks, only where
//! the first round left literals.
//!
//! A 1 GiB file with scattered 4 KiB changes spoils one 32 KiB block per
//! change, so a single round sends eight times the changed bytes; a single
//! round at 4 KiB instead sends a signature eight times larger for the
//! whole file. A [`Plan`] does both cheaply: it matches the new file
//! against the coarse signature, then asks the basis side for a finer
//! signature of only the basis ranges no copy used ([`Refinement`]), and
//! matches only its literal runs against that. Each round is worth it or
//! not asked for: the finer signature must cost a small fraction of the
//! literals it may save, and the round before must have found something.
//! Blocks shrink fourfold a round, down to 64 bytes, so a small write
//! into a large file costs a few dozen block hashes and about its own
//! bytes, not a page or a block; rounds after the second, each a round
//! trip, only while many literals are left. Where the changes were made
//! in place, a round is aligned ([`crate::AlignedTags`]): it compares
//! each block with the basis block at its own offset, for a third of a
//! signature's bytes.

mod first_round;
mod ops;

use std::io::{self, Read, Seek, SeekFrom};

use crate::delta::{Sink, search};
use crate::format::TAG_BYTES;
use crate::index::Index;
use crate::wire::delta::{DeltaOutput, LITERAL_CHUNK};
use crate::wire::{
    AlignedTags, Answer, DeltaStats, Encoder, Refinement, Signature, SignatureOptions,
};
use ops::{Op, Recorder};

/// Each round asks for blocks this many times smaller.
const REFINE_FACTOR: u32 = 4;

/// When a [`Plan`] asks for another round.
#[derive(Clone, Debug)]
pub struct RefineOptions {
    /// Blocks smaller than this are never asked for (at least 1).
    pub min_block_size: u32,
    /// At most this many rounds after the first.
    pub max_rounds: u32,
    /// A round is asked for only if its signature costs at most
    /// 1/`cost_fraction` of the literal bytes it could save (0: always).
    pub cost_fraction: u64,
    /// A round that turned less than 1/`min_yield` of its literals into
    /// copies is the last (0: never): finer blocks over the same ranges
    /// would find even less, since new data is new at every scale.
    pub min_yield: u64,
    /// Rounds after the second are asked for only while at least this
    /// many literal bytes are left: each round stalls the sending side
    /// for a round trip, which costs as much time as a few hundred
    /// kilobytes on most links.
    pub deep_round_min_literal: u64,
}

impl Default for RefineOptions {
    fn default() -> Self {
        Self {
            min_block_size: 64,
            max_rounds: 5,
            cost_fraction: 4,
            min_yield: 4,
            deep_round_min_literal: 64 << 10,
        }
    }
}

/// Bytes one block takes in a signature's encoding.
const SIGNATURE_BLOCK_BYTES: u64 = 12;
/// Bytes a range takes, about, as two varints of a few bytes: a signature
/// names it again, aligned tags do not.
const RANGE_BYTES: u64 = 5;

/// A delta being worked out over rounds: the new file as copies and
/// literal runs, which later rounds may turn into more copies. Memory is
/// one entry per run; literal bytes are read again from the new file when
/// the delta is written.
///
/// ```
/// use std::io::Cursor;
/// use wasmover_block::{Answer, Incoming, Limits, Plan, RefineOptions, Signature, SignatureOptions, patch};
///
/// let old: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
/// let mut new = old.clone();
/// new[300_000..300_100].fill(0);
/// let limits = Limits::default();
///
/// // Seeds are drawn at random by the side that sends the signatures.
/// let options = SignatureOptions { seed: 0x5eed, ..Default::default() };
/// let sig = Signature::compute(&old[..], old.len() as u64, &options)?;
/// let mut plan = Plan::new(&sig, &new[..])?;
/// while let Some(request) = plan.refinement(&RefineOptions::default()) {
///     // Over the wire: the request one way, the answer back.
///     let answer = Answer::compute(Cursor::new(&old), old.len() as u64, &request, 7)?;
///     plan.refine(&answer, Cursor::new(&new))?;
/// }
/// let mut delta = Vec::new();
/// let stats = plan.write(Cursor::new(&new), &mut delta)?;
/// assert!(stats.literal_bytes <= 2 << 10);
///
/// let Incoming::Delta(reader) = Incoming::read_from(&delta[..], &limits)? else { unreachable!() };
/// let mut rebuilt = Vec::new();
/// patch(Cursor::new(&old), reader, &mut rebuilt, &limits)?;
/// assert_eq!(rebuilt, new);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Plan {
    ops: Vec<Op>,
    new_len: u64,
    hash: blake3::Hash,
    basis_len: u64,
    /// The block size of the last round's signature; none after a
    /// granule-first round.
    block_size: Option<u32>,
    /// Whether a round searched for blocks at any offset; if not, every
    /// refinement round so far was aligned.
    searched: bool,
    rounds: u32,
    /// The literal bytes the last refinement round looked at (all of them
    /// for a search), and how many of those it left literal.
    last_round: Option<(u64, u64)>,
}

fn changed_underneath() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the new file became shorter while its delta was computed",
    )
}

/// Bytes of the new file an aligned round reads at a time.
const ALIGNED_READ: u64 = 1 << 20;

impl Plan {
    /// Bytes still to be sent as literals.
    pub fn literal_bytes(&self) -> u64 {
        self.ops
            .iter()
            .map(|op| match *op {
                Op::Literal { len, .. } => len,
                Op::Copy { .. } => 0,
            })
            .sum()
    }

    /// The refinement worth asking for next under `options`, if any:
    /// blocks four times smaller than the last round's over the basis
    /// ranges no copy uses, when that signature is cheap enough and the
    /// last round found enough; a mostly-new file (over half literal
    /// after a block search) is not refined at all. After a granule-first
    /// round the blocks are a quarter of the average unused range, no
    /// larger than a whole-file signature of those ranges would use: small
    /// around scattered changes, large over a long stretch that may have
    /// moved.
    ///
    /// The round is aligned when every literal run lies exactly where an
    /// unused basis range does: changes made in place. If the round after
    /// a granule-first one was aligned and found little, the same ranges
    /// are searched again at any offset, with the same blocks, for data
    /// that moved; once a round found changes in place, the rest are taken
    /// to be in place too.
    pub fn refinement(&self, options: &RefineOptions) -> Option<Refinement> {
        let literal = self.literal_bytes();
        let found_little = self.last_round_found_little(options.min_yield);
        let search_again = found_little && !self.searched && self.rounds == 1;
        if self.rounds >= options.max_rounds
            || literal == 0
            || (self.rounds >= 2 && literal < options.deep_round_min_literal)
            || (self.block_size.is_some() && literal > self.new_len / 2 && !search_again)
            || (found_little && !search_again)
        {
            return None;
        }
        let gaps = self.unused();
        let unused: u64 = gaps.iter().map(|r| r.1).sum();
        if unused == 0 {
            return None;
        }
        let in_place = self.in_common(&gaps);
        let aligned = !search_again && in_place == self.in_common(&self.literal_runs());
        let block_size = match self.block_size {
            Some(last) if search_again => last,
            Some(last) => (last / REFINE_FACTOR).max(options.min_block_size).max(1),
            None => {
                let part = unused / gaps.len() as u64 / u64::from(REFINE_FACTOR);
                let whole = SignatureOptions::default().block_size_for(unused);
                (part.min(whole.into()) as u32 / 1024 * 1024)
                    .max(options.min_block_size)
                    .max(1)
            }
        };
        if !search_again && self.block_size.is_some_and(|last| block_size >= last) {
            return None;
        }
        let ranges: Vec<(u64, u64)> = if aligned { in_place } else { gaps }
            .into_iter()
            .filter(|r| r.1 >= u64::from(block_size))
            .collect();
        let unused: u64 = ranges.iter().map(|r| r.1).sum();
        let (block_bytes, range_bytes) = match aligned {
            true => (TAG_BYTES as u64, RANGE_BYTES),
            false => (SIGNATURE_BLOCK_BYTES, 2 * RANGE_BYTES),
        };
        let cost = unused / u64::from(block_size) * block_bytes + range_bytes * ranges.len() as u64;
        if unused == 0 || cost.saturating_mul(options.cost_fraction) > literal {
            return None;
        }
        Some(Refinement::new(block_size, aligned, ranges))
    }

    /// The parts of `ranges` within the length the basis and the new file
    /// share: where a block can lie in both at the same offset.
    fn in_common(&self, ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
        ranges
            .iter()
            .map(|&(offset, len)| (offset, self.len_in_common(offset, len)))
            .filter(|r| r.1 > 0)
            .collect()
    }

    /// The length of the part of `len` bytes at `offset` within the length
    /// the basis and the new file share.
    fn len_in_common(&self, offset: u64, len: u64) -> u64 {
        let common = self.basis_len.min(self.new_len);
        len.min(common.saturating_sub(offset))
    }

    /// The `(offset, len)` of each literal run.
    fn literal_runs(&self) -> Vec<(u64, u64)> {
        self.ops
            .iter()
            .filter_map(|op| match *op {
                Op::Literal { at, len } => Some((at, len)),
                Op::Copy { .. } => None,
            })
            .collect()
    }

    /// Whether the last refinement round turned less than 1/`min_yield`
    /// of its literals into copies (never, for `min_yield` 0).
    fn last_round_found_little(&self, min_yield: u64) -> bool {
        self.last_round.is_some_and(|(before, after)| {
            min_yield > 0 && before.saturating_sub(after).saturating_mul(min_yield) < before
        })
    }

    /// The `(offset, len)` ranges of the basis no copy uses.
    fn unused(&self) -> Vec<(u64, u64)> {
        let mut used: Vec<(u64, u64)> = self
            .ops
            .iter()
            .filter_map(|op| match *op {
                Op::Copy { offset, len } => Some((offset, offset + len)),
                Op::Literal { .. } => None,
            })
            .collect();
        used.sort_unstable();
        let mut ranges = Vec::new();
        let mut cursor = 0u64;
        for (start, end) in used.into_iter().chain([(self.basis_len, self.basis_len)]) {
            if start > cursor {
                ranges.push((cursor, start - cursor));
            }
            cursor = cursor.max(end);
        }
        ranges
    }

    /// Matches the literal runs of the plan against `answer`, the basis
    /// side's answer to [`Plan::refinement`], reading them again from
    /// `new`.
    pub fn refine<R: Read + Seek>(&mut self, answer: &Answer, new: R) -> io::Result<()> {
        let before = self.literal_bytes();
        let (ops, block_size, looked_at) = match answer {
            Answer::Signature(fine) => (self.search(fine, new)?, fine.block_size(), before),
            Answer::Aligned(tags) => {
                let (ops, compared) = self.compare_aligned(tags, new)?;
                (ops, tags.block_size(), compared)
            }
        };
        self.ops = ops;
        let found = before - self.literal_bytes();
        self.last_round = Some((looked_at, looked_at - found));
        self.block_size = Some(block_size);
        self.searched |= matches!(answer, Answer::Signature(_));
        self.rounds += 1;
        Ok(())
    }

    /// The ops after searching the literal runs for the blocks of `fine`
    /// at any offset.
    fn search<R: Read + Seek>(&self, fine: &Signature, mut new: R) -> io::Result<Vec<Op>> {
        if fine.basis_len() != self.basis_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the refined signature is of a basis of {} bytes, not {}",
                    fine.basis_len(),
                    self.basis_len
                ),
            ));
        }
        let index = Index::new(fine);
        let mut ops = Vec::with_capacity(self.ops.len());
        // The ops cover the new file in order, so one recorder walks it.
        let mut recorder = Recorder {
            ops: &mut ops,
            at: 0,
        };
        for &op in &self.ops {
            match op {
                Op::Copy { offset, len } => recorder.copy(offset, len)?,
                Op::Literal { at, len } => {
                    debug_assert_eq!(recorder.at, at);
                    new.seek(SeekFrom::Start(at))?;
                    let read = search(fine, &index, (&mut new).take(len), &mut recorder, None)?;
                    if read != len {
                        return Err(changed_underneath());
                    }
                }
            }
        }
        Ok(ops)
    }

    /// The ops after comparing each block of the literal runs an aligned
    /// round asked for (their parts within both files, where at least a
    /// block long) with its tag: the basis block at the same offset; and
    /// the bytes compared.
    fn compare_aligned<R: Read + Seek>(
        &self,
        tags: &AlignedTags,
        mut new: R,
    ) -> io::Result<(Vec<Op>, u64)> {
        let mismatch = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the aligned tags answer {what} than the round asked for"),
            )
        };
        let bs = u64::from(tags.block_size());
        let chunk = (ALIGNED_READ / bs).max(1) * bs;
        let mut buf = Vec::new();
        let mut ops = Vec::with_capacity(self.ops.len());
        let mut recorder = Recorder {
            ops: &mut ops,
            at: 0,
        };
        let (mut next, mut compared) = (0, 0);
        for &op in &self.ops {
            match op {
                Op::Copy { offset, len } => recorder.copy(offset, len)?,
                Op::Literal { at, len } => {
                    let inside = self.len_in_common(at, len);
                    if inside < bs {
                        recorder.skip(len);
                        continue;
                    }
                    compared += inside;
                    new.seek(SeekFrom::Start(at))?;
                    let mut done = 0;
                    while done < inside {
                        buf.resize((inside - done).min(chunk) as usize, 0);
                        new.read_exact(&mut buf).map_err(|e| match e.kind() {
                            io::ErrorKind::UnexpectedEof => changed_underneath(),
                            _ => e,
                        })?;
                        for block in buf.chunks(bs as usize) {
                            let tag = tags.tag_at(next).ok_or_else(|| mismatch("fewer blocks"))?;
                            next += 1;
                            match tag == tags.tag_of(block) {
                                true => recorder.copy(at + done, block.len() as u64)?,
                                false => recorder.skip(block.len() as u64),
                            }
                            done += block.len() as u64;
                        }
                    }
                    recorder.skip(len - inside);
                }
            }
        }
        if next != tags.block_count() {
            return Err(mismatch("more blocks"));
        }
        Ok((ops, compared))
    }

    /// Writes the delta, reading its literals from `new`, and ending with
    /// the length and hash the first round read (so a file changed since
    /// then fails verification on the other side instead of producing a
    /// mix).
    pub fn write<R: Read + Seek, W: DeltaOutput>(
        &self,
        mut new: R,
        out: W,
    ) -> io::Result<DeltaStats> {
        let mut enc = Encoder::new(out, self.basis_len)?;
        let mut buf = vec![0u8; LITERAL_CHUNK];
        for &op in &self.ops {
            match op {
                Op::Copy { offset, len } => enc.copy(offset, len)?,
                Op::Literal { at, len } => {
                    new.seek(SeekFrom::Start(at))?;
                    let mut left = len;
                    while left > 0 {
                        let n = left.min(buf.len() as u64) as usize;
                        new.read_exact(&mut buf[..n]).map_err(|e| match e.kind() {
                            io::ErrorKind::UnexpectedEof => changed_underneath(),
                            _ => e,
                        })?;
                        enc.literal(&buf[..n])?;
                        left -= n as u64;
                    }
                }
            }
        }
        let stats = enc.finish(self.hash)?;
        debug_assert_eq!(stats.new_len, self.new_len);
        Ok(stats)
    }
}
