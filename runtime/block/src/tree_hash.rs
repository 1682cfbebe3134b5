//! A file's content hash from the hashes of its aligned granules.
//!
//! The content hash ([`crate::ContentHasher`]) is a tree hash: every
//! aligned power-of-two run of leaves is a subtree with its own chaining
//! value. [`BasisHashes`] keeps the chaining values of a basis file's
//! granules, learned in one pass over it ([`BasisHashes::compute`]); a
//! patch that copies a granule to the same place in the new file takes
//! its chaining value from there instead of reading and hashing the bytes
//! again ([`ContentHasher::push_known`]), and still ends with the new
//! file's content hash, checked against the sender's.

use std::io::{self, Read, Seek, SeekFrom, Write};

use rayon::iter::{IndexedParallelIterator, ParallelExtend, ParallelIterator};
use rayon::slice::ParallelSlice;

use blake3::hazmat::{
    ChainingValue, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::content_hash::{ContentHasher, LEAF, subtree_cv, zero_leaves};
use crate::error::FormatError;
use crate::format::{self, BASIS_HASHES_MAGIC, DISK_VERSION, granule_for, read_full};
use crate::sparse::{Piece, may_have_holes, walk};
use crate::wire::granule_summary::GranuleSummary;

/// The chaining values of every granule of a basis file of `len` bytes
/// (the last one may be short), as read when its signature was computed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasisHashes {
    granule: u64,
    len: u64,
    cvs: Vec<ChainingValue>,
}

impl BasisHashes {
    /// Bytes of one granule.
    pub fn granule(&self) -> u64 {
        self.granule
    }

    /// Length of the file hashed.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file hashed was empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chaining values of the whole granules `[first, first + count)`,
    /// if the basis has them all (a short last granule is never whole).
    pub(crate) fn whole(&self, first: u64, count: u64) -> Option<&[ChainingValue]> {
        let end = first.checked_add(count)?;
        if end.checked_mul(self.granule)? > self.len {
            return None;
        }
        self.cvs.get(first as usize..end as usize)
    }
}

impl BasisHashes {
    /// Hashes the granules of `reader`, which holds `len` bytes: one
    /// BLAKE3 pass, several granules at once.
    pub fn compute<R: Read + Send>(reader: R, len: u64) -> io::Result<BasisHashes> {
        let granule = granule_for(len);
        let read = hash_granules(reader.take(len), granule)?;
        if read.len != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the basis ended at {} of {len} bytes", read.len),
            ));
        }
        Ok(BasisHashes {
            granule,
            len,
            cvs: read.cvs,
        })
    }

    /// [`compute`](Self::compute) of a whole file: one that may have
    /// holes is read by its data ranges, and a granule inside a hole is
    /// neither read nor hashed.
    pub fn of_file(file: &std::fs::File) -> io::Result<BasisHashes> {
        let len = file.metadata()?.len();
        let granule = granule_for(len);
        let read = hash_granules_of_file(file, granule)?;
        if read.len != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the basis changed from {len} to {} bytes", read.len),
            ));
        }
        Ok(BasisHashes {
            granule,
            len,
            cvs: read.cvs,
        })
    }

    /// The summary the basis side sends for granule-first matching, its
    /// tags under `seed` (draw one at random for each summary sent to a
    /// peer, as [`SignatureOptions::seed`](crate::SignatureOptions::seed)).
    pub fn summary(&self, seed: u64) -> GranuleSummary {
        GranuleSummary::new(self.granule, self.len, seed, &self.cvs)
    }

    /// The granule hashes of `file` as it is now, `len` bytes that equal
    /// the basis these describe inside the `unchanged` ranges (sorted and
    /// disjoint): granules wholly inside one keep their hash, the others
    /// are read. `None` when `len` calls for another granule.
    pub fn updated(
        &self,
        file: &std::fs::File,
        len: u64,
        unchanged: &[(u64, u64)],
    ) -> io::Result<Option<BasisHashes>> {
        use std::os::unix::fs::FileExt;
        let g = self.granule;
        if granule_for(len) != g {
            return Ok(None);
        }
        let mut buf = vec![0u8; g as usize];
        let mut cvs = Vec::with_capacity(len.div_ceil(g) as usize);
        for (i, start) in (0..len).step_by(g as usize).enumerate() {
            let end = (start + g).min(len);
            let old_end = (start + g).min(self.len);
            match self.cvs.get(i) {
                Some(cv) if old_end == end && inside(unchanged, start, end) => cvs.push(*cv),
                _ => {
                    let n = (end - start) as usize;
                    file.read_exact_at(&mut buf[..n], start)?;
                    cvs.push(subtree_cv(&buf[..n], start));
                }
            }
        }
        Ok(Some(BasisHashes {
            granule: g,
            len,
            cvs,
        }))
    }

    /// Writes the encoding: magic, version, granule, length, then every
    /// chaining value; returns the bytes written.
    pub fn write_to<W: Write>(&self, mut w: W) -> io::Result<u64> {
        format::write_header(&mut w, BASIS_HASHES_MAGIC, DISK_VERSION)?;
        w.write_all(&self.granule.to_be_bytes())?;
        w.write_all(&self.len.to_be_bytes())?;
        for cv in &self.cvs {
            w.write_all(cv)?;
        }
        Ok(5 + 16 + 32 * self.cvs.len() as u64)
    }

    /// Reads what [`write_to`](Self::write_to) wrote; a granule or count
    /// the engine would not have chosen is refused.
    pub fn read_from<R: Read>(mut r: R) -> Result<BasisHashes, FormatError> {
        format::read_header(
            &mut r,
            BASIS_HASHES_MAGIC,
            DISK_VERSION,
            "granule hashes header",
        )?;
        let granule = format::read_u64(&mut r, "granule")?;
        let len = format::read_u64(&mut r, "length")?;
        if granule != granule_for(len) {
            return Err(FormatError::Malformed {
                reason: "a granule the engine does not choose for that length",
            });
        }
        let mut cvs = vec![[0u8; 32]; len.div_ceil(granule) as usize];
        for cv in &mut cvs {
            r.read_exact(cv)
                .map_err(FormatError::reading("chaining value"))?;
        }
        Ok(BasisHashes { granule, len, cvs })
    }
}

/// Whether `[start, end)` lies inside one of `ranges` (`(offset, len)`,
/// sorted and disjoint).
pub(crate) fn inside(ranges: &[(u64, u64)], start: u64, end: u64) -> bool {
    let i = ranges.partition_point(|&(o, _)| o <= start);
    i > 0 && {
        let (o, l) = ranges[i - 1];
        o + l >= end
    }
}

/// The content hash of a file of `len` bytes, more than one granule, from the
/// chaining values of all its granules.
fn root(cvs: &[ChainingValue], granule: u64, len: u64) -> blake3::Hash {
    let left = left_subtree_len(len);
    merge_subtrees_root(
        &subtree(cvs, granule, 0, left),
        &subtree(cvs, granule, left, len - left),
        Mode::Hash,
    )
}

/// A whole stream hashed by granules: its length, the chaining value of
/// every granule and its content hash.
pub(crate) struct Granules {
    pub(crate) len: u64,
    pub(crate) cvs: Vec<ChainingValue>,
    pub(crate) hash: blake3::Hash,
}

/// Bytes read per step of [`hash_granules`] (at least two granules).
const GRANULES_CHUNK: u64 = 4 << 20;

/// Hashes `reader` to its end by granules of `granule` bytes, several
/// granules at once on the rayon pool while the next chunk is read.
pub(crate) fn hash_granules<R: Read + Send>(mut reader: R, granule: u64) -> io::Result<Granules> {
    debug_assert!(granule.is_power_of_two() && granule >= blake3::CHUNK_LEN as u64);
    let chunk = (GRANULES_CHUNK / granule).max(2) * granule;
    let mut current = vec![0u8; chunk as usize];
    let mut next = vec![0u8; chunk as usize];
    let mut n = read_full(&mut reader, &mut current)?;
    if n as u64 <= granule {
        // The whole stream (a chunk is two granules or more): its root,
        // and for a granule summary the chaining value of its one granule.
        let bytes = &current[..n];
        let cvs = match n {
            0 => Vec::new(),
            _ => vec![subtree_cv(bytes, 0)],
        };
        let mut hasher = ContentHasher::new();
        hasher.update(bytes);
        return Ok(Granules {
            len: n as u64,
            cvs,
            hash: hasher.finalize(),
        });
    }
    let mut cvs = Vec::new();
    let mut len = 0u64;
    while n > 0 {
        let at = len;
        let (read, ()) = rayon::join(
            || read_full(&mut reader, &mut next),
            || {
                cvs.par_extend(
                    current[..n]
                        .par_chunks(granule as usize)
                        .enumerate()
                        .map(|(i, bytes)| subtree_cv(bytes, at + i as u64 * granule)),
                )
            },
        );
        len += n as u64;
        n = read?;
        std::mem::swap(&mut current, &mut next);
    }
    Ok(Granules {
        hash: root(&cvs, granule, len),
        len,
        cvs,
    })
}

/// [`hash_granules`] of a whole file: one that may have holes is read by
/// its data ranges, and a granule inside a hole is neither read nor
/// hashed.
pub(crate) fn hash_granules_of_file(file: &std::fs::File, granule: u64) -> io::Result<Granules> {
    use std::io::Seek;
    if !may_have_holes(file)? {
        return hash_granules(file, granule);
    }
    let zero_granule = zero_leaves(granule / LEAF);
    let mut cvs = Vec::new();
    let mut current = ContentHasher::new();
    let mut at = 0u64;
    // Closes the current granule if it is full.
    let close = |current: &mut ContentHasher, cvs: &mut Vec<ChainingValue>, at: u64| {
        if current.len() == granule {
            cvs.push(std::mem::replace(current, ContentHasher::at(at)).finalize_non_root());
        }
    };
    let mut buf = vec![0u8; GRANULES_CHUNK as usize];
    let len = walk(file, &mut buf, |piece| {
        match piece {
            Piece::Data(mut bytes) => {
                while !bytes.is_empty() {
                    let take = ((granule - current.len()) as usize).min(bytes.len());
                    current.update(&bytes[..take]);
                    at += take as u64;
                    close(&mut current, &mut cvs, at);
                    bytes = &bytes[take..];
                }
            }
            Piece::Hole(mut n) => {
                if !current.is_empty() {
                    let take = (granule - current.len()).min(n);
                    current.zeros(take);
                    at += take;
                    n -= take;
                    close(&mut current, &mut cvs, at);
                }
                // The current granule is empty unless the hole ended in it.
                let whole = n / granule;
                if whole > 0 {
                    cvs.extend(std::iter::repeat_n(zero_granule, whole as usize));
                    at += whole * granule;
                    current = ContentHasher::at(at);
                }
                current.zeros(n - whole * granule);
                at += n - whole * granule;
            }
        }
        Ok(())
    })?;
    if len <= granule {
        // One granule, which is the whole file's root: read it again.
        let mut file = file;
        file.rewind()?;
        return hash_granules(file, granule);
    }
    if !current.is_empty() {
        cvs.push(current.finalize_non_root());
    }
    Ok(Granules {
        hash: root(&cvs, granule, len),
        len,
        cvs,
    })
}

/// The content hash of `file`, `len` bytes that differ from the basis `hashes`
/// describe at most in the `changed` ranges (`(offset, len)`, sorted and
/// disjoint):
/// every other whole granule is taken by its hash, the rest is read.
pub(crate) fn hash_changed<F: Read + Seek>(
    mut file: F,
    len: u64,
    hashes: &BasisHashes,
    changed: &[(u64, u64)],
    buf: &mut [u8],
) -> io::Result<blake3::Hash> {
    let g = hashes.granule;
    let touched = |start: u64, end: u64| {
        let i = changed.partition_point(|&(o, l)| o + l <= start);
        changed.get(i).is_some_and(|&(o, _)| o < end)
    };
    let known = |i: u64| {
        let (start, end) = (i * g, (i + 1) * g);
        i >= 1 && end <= len && !touched(start, end)
    };
    let count = len.div_ceil(g);
    let mut tree = ContentHasher::new();
    let mut i = 0;
    while i < count {
        let first = i;
        if let Some(cvs) = known(i).then(|| hashes.whole(i, 1)).flatten() {
            let mut cvs_len = cvs.len() as u64;
            while first + cvs_len < count
                && known(first + cvs_len)
                && hashes.whole(first, cvs_len + 1).is_some()
            {
                cvs_len += 1;
            }
            tree.push_known(hashes.whole(first, cvs_len).expect("checked above"), g);
            i += cvs_len;
            continue;
        }
        while i < count && !(known(i) && hashes.whole(i, 1).is_some()) {
            i += 1;
        }
        let (mut at, end) = (first * g, (i * g).min(len));
        file.seek(SeekFrom::Start(at))?;
        while at < end {
            let n = (end - at).min(buf.len() as u64) as usize;
            file.read_exact(&mut buf[..n])?;
            tree.update(&buf[..n]);
            at += n as u64;
        }
    }
    Ok(tree.finalize())
}

/// The chaining value of the subtree over `[offset, offset + len)`, built
/// from granule chaining values the way BLAKE3 splits its tree: the left
/// side is the largest power of two of chunks short of the whole, so every
/// split falls on a granule boundary.
fn subtree(cvs: &[ChainingValue], granule: u64, offset: u64, len: u64) -> ChainingValue {
    if len <= granule {
        return cvs[(offset / granule) as usize];
    }
    let left = left_subtree_len(len);
    merge_subtrees_non_root(
        &subtree(cvs, granule, offset, left),
        &subtree(cvs, granule, offset + left, len - left),
        Mode::Hash,
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The granule hashes of `data` by granules of `granule` bytes.
    fn hashed(data: &[u8], granule: u64) -> BasisHashes {
        let read = hash_granules(data, granule).unwrap();
        assert_eq!(read.hash, blake3::hash(data));
        BasisHashes {
            granule,
            len: read.len,
            cvs: read.cvs,
        }
    }

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 10) as u8)
            .collect()
    }

    proptest! {
        /// Any length, any split of the input: the standard BLAKE3 (the
        /// data has no zero leaf).
        #[test]
        fn streamed_granules_hash_as_blake3(
            len in 0usize..300_000,
            splits in proptest::collection::vec(1usize..70_000, 1..6),
        ) {
            let data = bytes(len, 3);
            let mut h = ContentHasher::new();
            let mut rest = &data[..];
            for &s in splits.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (now, later) = rest.split_at(s.min(rest.len()));
                h.update(now);
                rest = later;
            }
            prop_assert_eq!(h.len(), len as u64);
            prop_assert_eq!(h.finalize(), blake3::hash(&data));
        }

        /// A new file made of a basis's granules (pushed by their hashes)
        /// and new bytes: the standard BLAKE3 of the new file.
        #[test]
        fn known_granules_stand_in_for_their_bytes(
            granules in 2u64..40,
            tail in 0usize..20_000,
            known in proptest::collection::vec(any::<bool>(), 40),
        ) {
            let g = 16384u64;
            let basis = bytes((granules * g) as usize + 777, 9);
            let hashes = hashed(&basis, g);
            prop_assert_eq!(hashes.len(), basis.len() as u64);

            let mut new = Vec::new();
            let mut h = ContentHasher::new();
            for i in 0..granules {
                let range = (i * g) as usize..((i + 1) * g) as usize;
                if i > 0 && known[i as usize] {
                    h.push_known(hashes.whole(i, 1).unwrap(), g);
                    new.extend_from_slice(&basis[range]);
                } else {
                    let fresh = bytes(g as usize, i as u8);
                    h.update(&fresh);
                    new.extend_from_slice(&fresh);
                }
            }
            let end = bytes(tail, 1);
            h.update(&end);
            new.extend_from_slice(&end);
            prop_assert_eq!(h.finalize(), blake3::hash(&new));
        }
    }

    proptest! {
        /// A file changed in some ranges, grown or shrunk: its BLAKE3 from
        /// the basis's granule hashes and the changed granules' bytes.
        #[test]
        fn a_changed_file_hashes_from_its_basis_and_its_changes(
            basis_len in 0usize..200_000,
            len in 0usize..200_000,
            changes in proptest::collection::vec((0usize..200_000, 1usize..5000), 0..5),
        ) {
            let g = 16384;
            let basis = bytes(basis_len, 4);
            let hashes = hashed(&basis, g);
            let mut new = basis.clone();
            new.resize(len, 9);
            let mut changed = Vec::new();
            for &(at, n) in &changes {
                let at = at.min(len);
                let end = (at + n).min(len);
                new[at..end].fill(0x5a);
                changed.push((at as u64, (end - at) as u64));
            }
            if len > basis_len {
                changed.push((basis_len as u64, (len - basis_len) as u64));
            }
            // Sorted and disjoint, as the contract says.
            changed.sort();
            let mut merged: Vec<(u64, u64)> = Vec::new();
            for (o, l) in changed {
                match merged.last_mut() {
                    Some((mo, ml)) if *mo + *ml >= o => *ml = (*ml).max(o + l - *mo),
                    _ => merged.push((o, l)),
                }
            }
            let changed = merged;
            let mut buf = vec![0; 1000];
            let hash = hash_changed(std::io::Cursor::new(&new), len as u64, &hashes, &changed, &mut buf)
                .unwrap();
            prop_assert_eq!(hash, blake3::hash(&new));
        }
    }

    #[test]
    fn a_short_last_granule_is_not_whole() {
        let hashes = hashed(&bytes(3 * 16384 + 1, 0), 16384);
        assert!(hashes.whole(1, 2).is_some());
        assert!(
            hashes.whole(1, 3).is_none(),
            "the fourth granule has one byte"
        );
        assert!(hashes.whole(u64::MAX, 2).is_none());
    }
}
