//! Patch in place: rebuild the new file over its own basis, in an order
//! that never reads a byte after it was overwritten.

use std::collections::VecDeque;
use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::error::{FormatError, PatchError};
use crate::format::{self, DELTA_MAGIC, Limits, MAX_LITERAL, OP_COPY, OP_END, OP_LITERAL};
use crate::patch::PatchStats;

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

/// A file [`patch_in_place`] can rewrite: readable, writable, seekable,
/// and resizable to the new length.
pub trait InPlaceFile: Read + Write + Seek {
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

impl InPlaceFile for std::fs::File {
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        std::fs::File::set_len(self, len)
    }
}

impl<F: InPlaceFile> InPlaceFile for &mut F {
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        (**self).set_len(len)
    }
}

impl InPlaceFile for io::Cursor<Vec<u8>> {
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::OutOfMemory)?;
        self.get_mut().resize(len, 0);
        Ok(())
    }
}

/// One instruction with its place in the new file.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// Bytes `src..src + len` of the basis go to `dst`.
    Copy { dst: u64, src: u64, len: u64 },
    /// Bytes `at..at + len` of the literal buffer go to `dst`.
    Literal { dst: u64, at: usize, len: u64 },
}

/// A whole delta, read into memory.
struct Parsed {
    ops: Vec<Op>,
    literals: Vec<u8>,
    new_len: u64,
    hash: [u8; 32],
    copied: u64,
}

fn read_delta<D: Read>(
    mut delta: D,
    basis_len_actual: u64,
    limits: &Limits,
) -> Result<Parsed, PatchError> {
    format::read_header(&mut delta, DELTA_MAGIC, "delta header")?;
    let basis_len = format::read_u64(&mut delta, "basis length")?;
    let mut parsed = Parsed {
        ops: Vec::new(),
        literals: Vec::new(),
        new_len: 0,
        hash: [0; 32],
        copied: 0,
    };
    let too_large = |value| FormatError::TooLarge {
        what: "rebuilt file length",
        value,
        limit: limits.max_file_len,
    };
    loop {
        match format::read_u8(&mut delta, "delta instruction")? {
            OP_COPY => {
                let (src, len) = format::read_copy(&mut delta, basis_len)?;
                if src + len > basis_len_actual {
                    // The file is shorter than its signature said.
                    return Err(PatchError::OutOfBasis {
                        offset: src,
                        len,
                        basis_len,
                    });
                }
                let dst = parsed.new_len;
                parsed.new_len += len;
                if parsed.new_len > limits.max_file_len {
                    return Err(too_large(parsed.new_len).into());
                }
                parsed.copied += len;
                parsed.ops.push(Op::Copy { dst, src, len });
            }
            OP_LITERAL => {
                let len = u64::from(format::read_u32(&mut delta, "literal length")?);
                if len > MAX_LITERAL {
                    return Err(FormatError::TooLarge {
                        what: "literal run",
                        value: len,
                        limit: MAX_LITERAL,
                    }
                    .into());
                }
                let dst = parsed.new_len;
                parsed.new_len += len;
                if parsed.new_len > limits.max_file_len {
                    return Err(too_large(parsed.new_len).into());
                }
                let at = parsed.literals.len();
                if at as u64 + len > IN_PLACE_MAX_HELD {
                    return Err(too_much_held(at as u64 + len));
                }
                // Grows only as bytes arrive: a lying length costs nothing.
                (&mut delta).take(len).read_to_end(&mut parsed.literals)?;
                if ((parsed.literals.len() - at) as u64) < len {
                    return Err(FormatError::Truncated {
                        reading: "literal bytes",
                    }
                    .into());
                }
                parsed.ops.push(Op::Literal { dst, at, len });
            }
            OP_END => {
                let new_len = format::read_u64(&mut delta, "new length")?;
                delta
                    .read_exact(&mut parsed.hash)
                    .map_err(FormatError::reading("new file hash"))?;
                if new_len != parsed.new_len {
                    return Err(PatchError::Verification {
                        expected: format!("{new_len} bytes"),
                        actual: format!("{} bytes of instructions", parsed.new_len),
                    });
                }
                return Ok(parsed);
            }
            opcode => return Err(FormatError::UnknownInstruction { opcode }.into()),
        }
    }
}

/// The copies in an order where none reads bytes an earlier one wrote,
/// and the copies whose sources must be read into memory first because
/// they are on a cycle (block A moves to B's place and B to A's).
///
/// Copies write disjoint ranges in `dst` order, so the copies a source
/// range overlaps are found by binary search; an edge `x -> y` says `x`
/// reads what `y` writes, so `x` goes first.
fn schedule(copies: &[(u64, u64, u64)]) -> (Vec<usize>, Vec<usize>) {
    let n = copies.len();
    let mut waiting = vec![0usize; n];
    for (x, &(_, src, len)) in copies.iter().enumerate() {
        // First copy whose dst range ends after `src`.
        let mut y = copies.partition_point(|&(dst, _, l)| dst + l <= src);
        while y < n && copies[y].0 < src + len {
            if y != x {
                waiting[y] += 1;
            }
            y += 1;
        }
    }
    let mut order = Vec::with_capacity(n);
    let mut buffered = Vec::new();
    let mut done = vec![false; n];
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut next_stuck = 0;
    while order.len() + buffered.len() < n {
        let Some(x) = ready.pop_front() else {
            // A cycle: read one copy's source now, which releases every
            // copy that waited for it to have read.
            while done[next_stuck] {
                next_stuck += 1;
            }
            let x = next_stuck;
            done[x] = true;
            buffered.push(x);
            release(x, copies, &mut waiting, &mut ready, &done);
            continue;
        };
        if done[x] {
            continue;
        }
        done[x] = true;
        order.push(x);
        release(x, copies, &mut waiting, &mut ready, &done);
    }
    (order, buffered)
}

/// `x` has read its source: the copies writing over it may go.
fn release(
    x: usize,
    copies: &[(u64, u64, u64)],
    waiting: &mut [usize],
    ready: &mut VecDeque<usize>,
    done: &[bool],
) {
    let (_, src, len) = copies[x];
    let n = copies.len();
    let mut y = copies.partition_point(|&(dst, _, l)| dst + l <= src);
    while y < n && copies[y].0 < src + len {
        if y != x && !done[y] {
            waiting[y] -= 1;
            if waiting[y] == 0 {
                ready.push_back(y);
            }
        }
        y += 1;
    }
}

/// Moves `len` bytes from `src` to `dst` within `file`, like `memmove`.
fn move_within<F: Read + Write + Seek>(
    file: &mut F,
    src: u64,
    dst: u64,
    len: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    let chunk = buf.len() as u64;
    let mut done = 0;
    while done < len {
        let n = chunk.min(len - done);
        // Backwards when moving up, so no chunk reads what one wrote.
        let off = if dst > src { len - done - n } else { done };
        let piece = &mut buf[..n as usize];
        file.seek(SeekFrom::Start(src + off))?;
        file.read_exact(piece)?;
        file.seek(SeekFrom::Start(dst + off))?;
        file.write_all(piece)?;
        done += n;
    }
    Ok(())
}

/// Rebuilds the new file over its basis `file`, from one delta read from
/// `delta` (never past its end marker), then truncates it to the new
/// length and verifies length and BLAKE3 by reading it back.
///
/// Copies that land where they already are cost nothing, so an unchanged
/// file is only read (for verification), never written. Memory holds the
/// delta's instructions and literals, plus the sources of copies that
/// form cycles, at most [`IN_PLACE_MAX_HELD`] bytes; a delta that needs
/// more is refused before the file is touched.
///
/// # Security
/// Instructions are checked against the basis and `limits` before
/// anything is written, but a delta that fails verification has already
/// rewritten the file: use [`patch`](crate::patch()) into a staging file unless
/// the basis is expendable (it can be fetched whole again).
pub fn patch_in_place<F: InPlaceFile, D: Read>(
    mut file: F,
    delta: D,
    limits: &Limits,
) -> Result<PatchStats, PatchError> {
    let basis_len = file.seek(SeekFrom::End(0))?;
    let parsed = read_delta(delta, basis_len, limits)?;
    let copies: Vec<(u64, u64, u64)> = parsed
        .ops
        .iter()
        .filter_map(|op| match *op {
            Op::Copy { dst, src, len } if dst != src => Some((dst, src, len)),
            _ => None,
        })
        .collect();
    let (order, buffered) = schedule(&copies);
    let held = parsed.literals.len() as u64 + buffered.iter().map(|&x| copies[x].2).sum::<u64>();
    if held > IN_PLACE_MAX_HELD {
        return Err(too_much_held(held));
    }
    let mut saved = Vec::with_capacity(buffered.len());
    for &x in &buffered {
        let (dst, src, len) = copies[x];
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(src))?;
        (&mut file).take(len).read_to_end(&mut bytes)?;
        saved.push((dst, bytes));
    }
    let mut buf = vec![0u8; 1 << 20];
    for x in order {
        let (dst, src, len) = copies[x];
        move_within(&mut file, src, dst, len, &mut buf)?;
    }
    for (dst, bytes) in saved {
        file.seek(SeekFrom::Start(dst))?;
        file.write_all(&bytes)?;
    }
    for op in &parsed.ops {
        if let Op::Literal { dst, at, len } = *op {
            file.seek(SeekFrom::Start(dst))?;
            file.write_all(&parsed.literals[at..at + len as usize])?;
        }
    }
    file.set_len(parsed.new_len)?;
    file.flush()?;

    let mut hasher = blake3::Hasher::new();
    file.seek(SeekFrom::Start(0))?;
    let mut left = parsed.new_len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..n])?;
        crate::delta::hash_input(&mut hasher, &buf[..n]);
        left -= n as u64;
    }
    let actual = hasher.finalize();
    if actual.as_bytes() != &parsed.hash {
        return Err(PatchError::Verification {
            expected: format!(
                "{} bytes, blake3 {}",
                parsed.new_len,
                blake3::Hash::from_bytes(parsed.hash).to_hex()
            ),
            actual: format!("{} bytes, blake3 {}", parsed.new_len, actual.to_hex()),
        });
    }
    Ok(PatchStats {
        written_bytes: parsed.new_len,
        copied_bytes: parsed.copied,
        literal_bytes: parsed.literals.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use proptest::prelude::*;

    use super::*;
    use crate::{Signature, SignatureOptions, delta};

    fn in_place(old: &[u8], new: &[u8], bs: u32) -> (Vec<u8>, PatchStats) {
        let sig = Signature::compute(
            old,
            old.len() as u64,
            &SignatureOptions {
                block_size: Some(bs),
            },
        )
        .unwrap();
        let mut d = Vec::new();
        delta(&sig, new, &mut d).unwrap();
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
    fn too_many_literals_are_refused_before_touching_the_file() {
        let old = vec![1u8; 1000];
        let mut d = Vec::new();
        let new_len = IN_PLACE_MAX_HELD + 1;
        // A header, then literal instructions adding up past the cap
        // (their bytes are never needed: the cap is checked first).
        d.extend_from_slice(b"WMDL");
        d.push(crate::format::VERSION);
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
            let sig = Signature::compute(&old[..], old.len() as u64, &SignatureOptions { block_size: Some(bs as u32) }).unwrap();
            let mut d = Vec::new();
            delta(&sig, &new[..], &mut d).unwrap();
            let mut out = Vec::new();
            let plain = crate::patch(Cursor::new(&old), &d[..], &mut out, &Limits::default()).unwrap();
            prop_assert_eq!(stats, plain);
        }
    }
}
