//! Patch in place: rebuild the new file over its own basis, in an order
//! that never reads a byte after it was overwritten.

mod literals;
mod schedule;

use std::io::{Read, Seek, SeekFrom};

use crate::error::{FormatError, PatchError};
use crate::file::InPlaceFile;
use crate::format::Limits;
use crate::patch::PatchStats;
use crate::tree_hash::{BasisHashes, hash_changed};
use crate::wire;
use crate::wire::delta::Instruction;
use literals::Literals;
use schedule::{move_within, schedule};

/// Most bytes [`patch_in_place`] holds in memory: the delta's literals
/// plus the sources of copies on cycles. Beyond it the patch stops with
/// [`FormatError::TooLarge`] before writing anything, so the caller can
/// fall back to a staged [`patch`](crate::patch()).
pub const IN_PLACE_MAX_HELD: u64 = 256 << 20;

fn too_much_held(value: u64) -> PatchError {
    FormatError::TooLarge {
        what: "bytes an in-place patch holds in memory",
        value,
        limit: IN_PLACE_MAX_HELD,
    }
    .into()
}

/// One instruction with its place in the new file.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// Bytes `src..src + len` of the basis go to `dst`.
    Copy { dst: u64, src: u64, len: u64 },
    /// Bytes `at..at + len` of the literals go to `dst`.
    Literal { dst: u64, at: u64, len: u64 },
    /// `len` zero bytes go to `dst`.
    Zeros { dst: u64, len: u64 },
}

/// A whole delta, read and scheduled to rebuild the new file over its own
/// basis: nothing is written until [`apply`](Self::apply), and
/// [`overwritten`](Self::overwritten) says beforehand which bytes of the
/// basis applying will destroy, so they can be saved first (see
/// [`write_undo`](crate::write_undo)).
pub struct InPlacePatch {
    ops: Vec<Op>,
    literals: Literals,
    /// Length of the file patched.
    basis_len: u64,
    /// Bytes of literals the delta carried.
    literal_bytes: u64,
    /// What the literals took in the delta.
    literal_wire_bytes: u64,
    zero_bytes: u64,
    new_len: u64,
    hash: [u8; 32],
    copied: u64,
    /// `(dst, src, len)` of the copies that move bytes.
    copies: Vec<(u64, u64, u64)>,
    /// Copies in an order where none reads what an earlier one wrote.
    order: Vec<usize>,
    /// Copies on cycles, whose sources are read into memory first.
    buffered: Vec<usize>,
    /// Granule hashes of the file patched, as it is before the patch.
    basis_hashes: Option<BasisHashes>,
}

impl std::fmt::Debug for InPlacePatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InPlacePatch")
            .field("basis_len", &self.basis_len)
            .field("new_len", &self.new_len)
            .field("literal_bytes", &self.literal_bytes)
            .field("zero_bytes", &self.zero_bytes)
            .field("moved_copies", &self.copies.len())
            .finish_non_exhaustive()
    }
}

impl InPlacePatch {
    /// Reads one delta from `delta` (never past its end marker) against
    /// the basis `file`, whose length it takes, and checks every
    /// instruction against that length and `limits`.
    ///
    /// Literals are held in memory, or, when `spill` is given, appended to
    /// that file (opened for appending) so a patch of any size fits. What
    /// memory would hold beyond [`IN_PLACE_MAX_HELD`] is refused with
    /// [`FormatError::TooLarge`], the basis untouched.
    ///
    /// What `spill` already holds continues the basis after `file`: copies
    /// past the end of `file` take their bytes from it. A transfer cut off
    /// while its delta arrived keeps the literals it appended, and the
    /// next one offers them as basis (signature of `file` then `spill`),
    /// so it does not receive them again.
    pub fn read<F: Seek, D: Read>(
        file: &mut F,
        delta: D,
        limits: &Limits,
        spill: Option<std::fs::File>,
    ) -> Result<Self, PatchError> {
        Self::read_reporting(file, delta, limits, spill, &mut |_| {})
    }

    /// [`read`](Self::read), calling `progress` with the length of the new
    /// file the instructions read so far describe: how far the peer's
    /// delta has come.
    pub fn read_reporting<F: Seek, D: Read>(
        file: &mut F,
        delta: D,
        limits: &Limits,
        spill: Option<std::fs::File>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Self, PatchError> {
        let file_len = file.seek(SeekFrom::End(0))?;
        let (literals, spilled) = match spill {
            Some(file) => {
                // New literals go after what it holds.
                let len = (&file).seek(SeekFrom::End(0))?;
                (Literals::Spilled { file, len }, len)
            }
            None => (Literals::Memory(Vec::new()), 0),
        };
        let basis_len_actual = file_len + spilled;
        let mut delta = wire::delta::Decoder::new(delta)?;
        let basis_len = delta.basis_len();
        let mut patch = Self {
            ops: Vec::new(),
            literals,
            basis_len: file_len,
            literal_bytes: 0,
            literal_wire_bytes: 0,
            zero_bytes: 0,
            new_len: 0,
            hash: [0; 32],
            copied: 0,
            copies: Vec::new(),
            order: Vec::new(),
            buffered: Vec::new(),
            basis_hashes: None,
        };
        let too_large = |value| FormatError::TooLarge {
            what: "rebuilt file length",
            value,
            limit: limits.max_file_len,
        };
        loop {
            progress(patch.new_len);
            match delta.next()? {
                Instruction::Copy { offset: src, len } => {
                    if src + len > basis_len_actual {
                        // The file is shorter than its signature said.
                        return Err(PatchError::OutOfBasis {
                            offset: src,
                            len,
                            basis_len,
                        });
                    }
                    let dst = patch.new_len;
                    patch.new_len += len;
                    if patch.new_len > limits.max_file_len {
                        return Err(too_large(patch.new_len).into());
                    }
                    patch.copied += len;
                    // The part past `file` is in the spill: a literal.
                    let inside = len.min(file_len.saturating_sub(src));
                    if inside > 0 {
                        patch.ops.push(Op::Copy {
                            dst,
                            src,
                            len: inside,
                        });
                    }
                    if inside < len {
                        patch.ops.push(Op::Literal {
                            dst: dst + inside,
                            at: src + inside - file_len,
                            len: len - inside,
                        });
                    }
                }
                Instruction::Literal { len } => {
                    let dst = patch.new_len;
                    patch.new_len += len;
                    if patch.new_len > limits.max_file_len {
                        return Err(too_large(patch.new_len).into());
                    }
                    let at = patch.literals.len();
                    if patch.literals.held() + len > IN_PLACE_MAX_HELD {
                        return Err(too_much_held(patch.literals.held() + len));
                    }
                    if patch.literals.append(&mut delta, len)? < len {
                        return Err(FormatError::Truncated {
                            reading: "literal bytes",
                        }
                        .into());
                    }
                    patch.literal_bytes += len;
                    patch.ops.push(Op::Literal { dst, at, len });
                }
                Instruction::Zeros { len } => {
                    let dst = patch.new_len;
                    patch.new_len += len;
                    if patch.new_len > limits.max_file_len {
                        return Err(too_large(patch.new_len).into());
                    }
                    patch.zero_bytes += len;
                    patch.ops.push(Op::Zeros { dst, len });
                }
                Instruction::End { new_len, hash } => {
                    patch.hash = hash;
                    patch.literal_wire_bytes = delta.literal_wire_bytes();
                    if new_len != patch.new_len {
                        return Err(PatchError::Verification {
                            expected: format!("{new_len} bytes"),
                            actual: format!("{} bytes of instructions", patch.new_len),
                        });
                    }
                    break;
                }
            }
        }
        patch.copies = patch
            .ops
            .iter()
            .filter_map(|op| match *op {
                Op::Copy { dst, src, len } if dst != src => Some((dst, src, len)),
                _ => None,
            })
            .collect();
        (patch.order, patch.buffered) = schedule(&patch.copies);
        let held = patch.literals.held()
            + patch
                .buffered
                .iter()
                .map(|&x| patch.copies[x].2)
                .sum::<u64>();
        if held > IN_PLACE_MAX_HELD {
            return Err(too_much_held(held));
        }
        Ok(patch)
    }

    /// Length of the file patched (the basis without what the spill
    /// added).
    pub fn basis_len(&self) -> u64 {
        self.basis_len
    }

    /// Length of the new file.
    pub fn new_len(&self) -> u64 {
        self.new_len
    }

    /// The byte ranges of the new file that [`apply`](Self::apply) leaves
    /// as they are in the basis (`(offset, len)`, ascending and
    /// disjoint): what it neither overwrites nor adds.
    pub fn unchanged(&self) -> Vec<(u64, u64)> {
        let end = self.basis_len.min(self.new_len);
        let mut unchanged = Vec::new();
        let mut at = 0;
        for (offset, len) in self.overwritten() {
            if offset > at {
                unchanged.push((at, offset.min(end) - at));
            }
            at = at.max(offset + len);
            if at >= end {
                break;
            }
        }
        if at < end {
            unchanged.push((at, end - at));
        }
        unchanged.retain(|&(_, len)| len > 0);
        unchanged
    }

    /// Gives the granule hashes of the file to patch
    /// ([`BasisHashes::compute`](crate::BasisHashes::compute)):
    /// [`apply`](Self::apply) then verifies the new file reading only the
    /// granules it wrote, and takes the others by their hashes.
    ///
    /// They must describe the file as it is now: the caller checks that
    /// nothing wrote to it since they were computed.
    pub fn with_basis_hashes(mut self, hashes: BasisHashes) -> Self {
        self.basis_hashes = Some(hashes);
        self
    }

    /// The byte ranges of the basis that [`apply`](Self::apply) changes,
    /// as `(offset, len)`, ascending, disjoint and not adjacent: where
    /// copies and literals land (copies that stay in place excluded) and,
    /// when the file shrinks, its lost tail.
    pub fn overwritten(&self) -> Vec<(u64, u64)> {
        let ranges = self
            .ops
            .iter()
            .filter_map(|op| match *op {
                Op::Copy { dst, src, len } if dst != src => Some((dst, len)),
                Op::Literal { dst, len, .. } | Op::Zeros { dst, len } => Some((dst, len)),
                Op::Copy { .. } => None,
            })
            .chain(
                (self.new_len < self.basis_len)
                    .then(|| (self.new_len, self.basis_len - self.new_len)),
            )
            .filter_map(|(start, len)| {
                let end = (start + len).min(self.basis_len);
                (start < end).then_some((start, end))
            });
        // Ops come in `dst` order, the tail last: already sorted.
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (start, end) in ranges {
            match merged.last_mut() {
                Some((_, last_end)) if *last_end >= start => *last_end = (*last_end).max(end),
                _ => merged.push((start, end)),
            }
        }
        merged.into_iter().map(|(s, e)| (s, e - s)).collect()
    }

    /// Rebuilds the new file over `file` (the basis [`read`](Self::read)
    /// was given), resizes it to the new length (only if that differs, so
    /// a block device of the right size works), and verifies length and
    /// BLAKE3 by reading it back (with [basis
    /// hashes](Self::with_basis_hashes), only the granules it wrote).
    ///
    /// Copies that land where they already are cost nothing, so an
    /// unchanged file is only read, never written.
    ///
    /// # Security
    /// A delta that fails verification has already rewritten the file:
    /// save [`overwritten`](Self::overwritten) first (an undo journal) or
    /// use [`patch`](crate::patch()) into a staging file.
    pub fn apply<F: InPlaceFile>(self, mut file: F) -> Result<PatchStats, PatchError> {
        let copies = &self.copies;
        let mut saved = Vec::with_capacity(self.buffered.len());
        for &x in &self.buffered {
            let (dst, src, len) = copies[x];
            let mut bytes = Vec::new();
            file.seek(SeekFrom::Start(src))?;
            (&mut file).take(len).read_to_end(&mut bytes)?;
            saved.push((dst, bytes));
        }
        let mut buf = vec![0u8; 1 << 20];
        for &x in &self.order {
            let (dst, src, len) = copies[x];
            move_within(&mut file, src, dst, len, &mut buf)?;
        }
        for (dst, bytes) in saved {
            file.seek(SeekFrom::Start(dst))?;
            file.write_all(&bytes)?;
        }
        for op in &self.ops {
            match *op {
                Op::Literal { dst, at, len } => {
                    file.seek(SeekFrom::Start(dst))?;
                    self.literals.write_to(at, len, &mut file, &mut buf)?;
                }
                Op::Zeros { dst, len } => {
                    // Past the old end the file is extended with holes.
                    let end = (dst + len).min(self.basis_len);
                    if dst >= end {
                        continue;
                    }
                    file.seek(SeekFrom::Start(dst))?;
                    buf.fill(0);
                    let mut left = end - dst;
                    while left > 0 {
                        let n = left.min(buf.len() as u64) as usize;
                        file.write_all(&buf[..n])?;
                        left -= n as u64;
                    }
                }
                Op::Copy { .. } => {}
            }
        }
        if self.new_len != self.basis_len {
            file.set_len(self.new_len)?;
        }
        file.flush()?;

        let actual = match &self.basis_hashes {
            Some(hashes) => {
                let mut changed = self.overwritten();
                // What the file grew by is new too.
                if self.new_len > self.basis_len {
                    changed.push((self.basis_len, self.new_len - self.basis_len));
                }
                hash_changed(&mut file, self.new_len, hashes, &changed, &mut buf)?
            }
            None => {
                let mut hasher = crate::ContentHasher::new();
                file.seek(SeekFrom::Start(0))?;
                let mut left = self.new_len;
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    file.read_exact(&mut buf[..n])?;
                    hasher.update(&buf[..n]);
                    left -= n as u64;
                }
                hasher.finalize()
            }
        };
        if actual.as_bytes() != &self.hash {
            return Err(PatchError::Verification {
                expected: format!(
                    "{} bytes, blake3 {}",
                    self.new_len,
                    blake3::Hash::from_bytes(self.hash).to_hex()
                ),
                actual: format!("{} bytes, blake3 {}", self.new_len, actual.to_hex()),
            });
        }
        Ok(PatchStats {
            written_bytes: self.new_len,
            copied_bytes: self.copied,
            literal_bytes: self.literal_bytes,
            literal_wire_bytes: self.literal_wire_bytes,
            zero_bytes: self.zero_bytes,
            hash: self.hash,
        })
    }
}

/// Rebuilds the new file over its basis `file`, from one delta read from
/// `delta`: [`InPlacePatch::read`] (literals in memory) then
/// [`InPlacePatch::apply`].
///
/// # Security
/// Instructions are checked against the basis and `limits` before
/// anything is written, but a delta that fails verification has already
/// rewritten the file: use [`patch_journaled`](crate::patch_journaled), or
/// [`patch`](crate::patch()) into a staging file, unless the basis is
/// expendable (it can be fetched whole again).
pub fn patch_in_place<F: InPlaceFile, D: Read>(
    mut file: F,
    delta: D,
    limits: &Limits,
) -> Result<PatchStats, PatchError> {
    InPlacePatch::read(&mut file, delta, limits, None)?.apply(file)
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use proptest::prelude::*;

    use super::*;
    use crate::format;
    use crate::wire::delta::{MAX_LITERAL, OP_LITERAL};
    use crate::{Signature, SignatureOptions, delta};

    fn in_place(old: &[u8], new: &[u8], bs: u32) -> (Vec<u8>, PatchStats) {
        let d = crate::fuzzing::delta_of(old, new, bs);
        let mut file = Cursor::new(old.to_vec());
        let mut reader = &d[..];
        let stats = patch_in_place(&mut file, &mut reader, &Limits::default()).unwrap();
        assert!(reader.is_empty(), "read past the delta");
        (file.into_inner(), stats)
    }

    fn blocks(seed: u8, n: usize, bs: usize) -> Vec<u8> {
        (0..n * bs)
            .map(|i| (i / bs) as u8 ^ seed ^ (i as u8).wrapping_mul(31))
            .collect()
    }

    #[test]
    fn a_spill_left_by_a_cut_transfer_continues_the_basis() {
        let bs = 256;
        let old = blocks(5, 64, bs);
        let mut new = old[..8 * bs].to_vec();
        new.extend((0..40 * bs).map(|i| (i * 7 % 253) as u8));
        new.extend_from_slice(&old[20 * bs..]);
        let sig = |basis: &[u8]| {
            let options = SignatureOptions {
                block_size: Some(bs as u32),
                ..Default::default()
            };
            Signature::compute(basis, basis.len() as u64, &options).unwrap()
        };
        let spill = tempfile::tempfile().unwrap();
        let mut first = Vec::new();
        delta(&sig(&old), &new[..], &mut first).unwrap();
        // Cut off after 6000 bytes: the literals that arrived stay.
        let mut file = Cursor::new(old.clone());
        let cut = &first[..6000];
        let err = InPlacePatch::read(
            &mut file,
            cut,
            &Limits::default(),
            Some(spill.try_clone().unwrap()),
        )
        .unwrap_err();
        assert!(
            matches!(err, PatchError::Format(FormatError::Truncated { .. })),
            "{err}"
        );
        let kept = spill.metadata().unwrap().len();
        assert!(kept > 4000, "{kept} literal bytes kept");
        assert_eq!(file.get_ref(), &old, "nothing written");

        // The next transfer's basis is the file, then what was kept.
        let mut kept_bytes = vec![0; kept as usize];
        std::os::unix::fs::FileExt::read_exact_at(&spill, &mut kept_bytes, 0).unwrap();
        let mut second = Vec::new();
        delta(
            &sig(&[&old[..], &kept_bytes].concat()),
            &new[..],
            &mut second,
        )
        .unwrap();
        let patch =
            InPlacePatch::read(&mut file, &second[..], &Limits::default(), Some(spill)).unwrap();
        assert_eq!(patch.basis_len(), old.len() as u64);
        let stats = patch.apply(&mut file).unwrap();
        assert_eq!(file.into_inner(), new);
        assert!(
            stats.literal_bytes + kept <= 40 * bs as u64 + bs as u64,
            "the kept literals were sent again: {stats:?}"
        );
    }

    #[test]
    fn swapped_blocks_are_a_cycle_and_still_rebuild() {
        let bs = 64;
        let old = blocks(1, 4, bs);
        let mut new = old.clone();
        let (a, b) = new.split_at_mut(2 * bs);
        a[..bs].swap_with_slice(&mut b[..bs]);
        let (rebuilt, stats) = in_place(&old, &new, bs as u32);
        assert_eq!(rebuilt, new);
        assert_eq!(stats.literal_bytes, 0);
    }

    #[test]
    fn a_real_file_shrinks_and_grows() {
        let bs = 128;
        let old = blocks(2, 50, bs);
        for new in [old[1000..4000].to_vec(), [&old[..], &old[100..]].concat()] {
            let sig = Signature::compute(
                &old[..],
                old.len() as u64,
                &SignatureOptions {
                    block_size: Some(bs as u32),
                    ..Default::default()
                },
            )
            .unwrap();
            let mut d = Vec::new();
            delta(&sig, &new[..], &mut d).unwrap();
            let mut file = tempfile::tempfile().unwrap();
            file.write_all(&old).unwrap();
            patch_in_place(&mut file, &d[..], &Limits::default()).unwrap();
            let mut back = Vec::new();
            file.seek(SeekFrom::Start(0)).unwrap();
            file.read_to_end(&mut back).unwrap();
            assert_eq!(back, new);
        }
    }

    #[test]
    fn zero_runs_over_the_old_bytes_and_past_their_end_read_back_as_zeros() {
        let old = blocks(3, 64, 1024);
        let mut new = old[..16 << 10].to_vec();
        new.resize(56 << 10, 0);
        new.extend_from_slice(&old[..8 << 10]);
        new.resize(300 << 10, 0);
        new.push(1);
        let mut d = Vec::new();
        let stats = delta(&Signature::empty(), &new[..], &mut d).unwrap();
        assert!(stats.zero_bytes >= 200 << 10, "{stats:?}");
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&old).unwrap();
        let patched = patch_in_place(&mut file, &d[..], &Limits::default()).unwrap();
        assert_eq!(patched.zero_bytes, stats.zero_bytes);
        let mut back = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut back).unwrap();
        assert!(back == new, "rebuilt a different file");
    }

    #[test]
    fn too_many_literals_are_refused_before_touching_the_file() {
        let old = vec![1u8; 1000];
        let mut d = Vec::new();
        let new_len = IN_PLACE_MAX_HELD + 1;
        // A header, then literal instructions adding up past the cap
        // (their bytes are never needed: the cap is checked first).
        d.extend_from_slice(b"WMDL");
        d.push(format::VERSION);
        d.extend_from_slice(&1000u64.to_be_bytes());
        let mut file = Cursor::new(old.clone());
        let mut sent = 0u64;
        let chunk = vec![9u8; MAX_LITERAL as usize];
        while sent < new_len {
            d.push(OP_LITERAL);
            d.extend_from_slice(&(MAX_LITERAL as u32).to_be_bytes());
            d.extend_from_slice(&chunk);
            sent += MAX_LITERAL;
        }
        let err = patch_in_place(&mut file, &d[..], &Limits::default()).unwrap_err();
        assert!(
            matches!(err, PatchError::Format(FormatError::TooLarge { .. })),
            "{err}"
        );
        assert_eq!(file.into_inner(), old);
    }

    #[test]
    fn a_tampered_delta_fails_verification() {
        let old = blocks(3, 10, 64);
        let mut new = old.clone();
        new[5] ^= 1;
        let sig = Signature::compute(
            &old[..],
            old.len() as u64,
            &SignatureOptions {
                block_size: Some(64),
                ..Default::default()
            },
        )
        .unwrap();
        let mut d = Vec::new();
        delta(&sig, &new[..], &mut d).unwrap();
        let at = d.len() - 1;
        d[at] ^= 1;
        let err = patch_in_place(Cursor::new(old), &d[..], &Limits::default()).unwrap_err();
        assert!(matches!(err, PatchError::Verification { .. }), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Blocks of the basis permuted, duplicated, dropped and mixed
        /// with new bytes: what the plain patch rebuilds, in place.
        #[test]
        fn in_place_equals_the_plain_patch(
            n in 1usize..24,
            picks in proptest::collection::vec((any::<prop::sample::Index>(), any::<bool>()), 0..40),
            bs in 8usize..80,
            tail in 0usize..7,
        ) {
            let mut old = blocks(7, n, bs);
            old.extend(std::iter::repeat_n(0xAB, tail));
            let mut new = Vec::new();
            for (i, fresh) in picks {
                let b = i.index(n);
                if fresh {
                    new.extend(std::iter::repeat_n(b as u8, bs / 2 + 1));
                } else {
                    new.extend_from_slice(&old[b * bs..(b + 1) * bs]);
                }
            }
            let (rebuilt, stats) = in_place(&old, &new, bs as u32);
            prop_assert_eq!(&rebuilt, &new);
            let sig = Signature::compute(&old[..], old.len() as u64, &SignatureOptions { block_size: Some(bs as u32), ..Default::default() }).unwrap();
            let mut d = Vec::new();
            delta(&sig, &new[..], &mut d).unwrap();
            let mut out = Vec::new();
            let plain = crate::patch(Cursor::new(&old), &d[..], &mut out, &Limits::default()).unwrap();
            prop_assert_eq!(stats, plain);
        }
    }
}
