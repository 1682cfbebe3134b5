//! The content hash of a file: BLAKE3, except that zeros cost nothing.
//!
//! BLAKE3 is a tree hash: every aligned power-of-two run of 1 KiB chunks
//! is a subtree with its own chaining value. The content hash is BLAKE3's
//! tree over the file's bytes with one change: in a file longer than one
//! leaf ([`LEAF`], 16 KiB, aligned), the chaining value of every whole leaf
//! whose bytes are all zero is the constant [`zero_leaf`] instead of the
//! leaf's BLAKE3 chaining value. Everything else (leaves with data, a
//! short last leaf, the merges above the leaves, the root flag) is
//! BLAKE3's, so a file without a whole zero leaf hashes to its plain
//! BLAKE3, and a file of at most one leaf always does.
//!
//! The hash is a function of the bytes alone: a hole and written zeros
//! hash alike, so a destination that wrote zeros where the source had
//! holes verifies. But a hole costs no reading, and a run of zero leaves
//! no hashing: aligned runs of them are subtrees whose chaining values do
//! not depend on where they are (BLAKE3's positions enter through its
//! chunks only), computed once per size. A chaining value the constant
//! stands for cannot be told from a real leaf's without inverting BLAKE3.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::sync::OnceLock;

use blake3::Hasher;
use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};
use rayon::iter::{IndexedParallelIterator, ParallelIterator};
use rayon::slice::ParallelSlice;

use crate::sparse::{Piece, may_have_holes, walk};

/// Bytes of a leaf: 16 chunks, the smallest granule.
pub const LEAF: u64 = 16 << 10;

/// The key-derivation context of [`zero_leaf`]; a change of the content
/// hash must change it.
const ZERO_LEAF_CONTEXT: &str = "wasmover content hash v1 zero leaf";

/// Zero bytes to feed a leaf hasher from.
static ZEROS: [u8; LEAF as usize] = [0; LEAF as usize];

/// Leaves hashed in one call below which threads would cost more.
const PARALLEL_LEAVES_MIN: usize = 32;

/// The chaining value of a whole leaf of zeros in a file of more than one
/// leaf.
pub fn zero_leaf() -> ChainingValue {
    zero_subtree(0)
}

/// The chaining value of `leaves` aligned zero leaves (a power of two).
pub(crate) fn zero_leaves(leaves: u64) -> ChainingValue {
    zero_subtree(leaves.ilog2())
}

/// The chaining value of `2^level` aligned zero leaves.
fn zero_subtree(level: u32) -> ChainingValue {
    static LEVELS: OnceLock<Vec<ChainingValue>> = OnceLock::new();
    LEVELS.get_or_init(|| {
        // 2^51 leaves of 16 KiB cover every length a u64 counts.
        let mut levels = vec![blake3::derive_key(ZERO_LEAF_CONTEXT, &[])];
        for _ in 0..51 {
            let below = levels.last().expect("one at least");
            levels.push(merge_subtrees_non_root(below, below, Mode::Hash));
        }
        levels
    })[level as usize]
}

/// Whether `bytes` are all zero (stops at the first 64 bytes that are not).
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    // OR-folding a block vectorizes; stopping per block keeps data cheap.
    bytes
        .chunks(64)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// The chaining value of the leaf `bytes` at `offset` (a multiple of
/// [`LEAF`]) in a file of more than one leaf.
fn leaf_cv(bytes: &[u8], offset: u64) -> ChainingValue {
    if bytes.len() as u64 == LEAF && is_zero(bytes) {
        return zero_leaf();
    }
    let mut hasher = Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(bytes);
    hasher.finalize_non_root()
}

/// The chaining value of the subtree `bytes` at `offset` (aligned to its
/// own size rounded up to a power of two chunks, at least a leaf, as a
/// granule is) in a file longer than it.
pub(crate) fn subtree_cv(bytes: &[u8], offset: u64) -> ChainingValue {
    if bytes.len() as u64 <= LEAF {
        return leaf_cv(bytes, offset);
    }
    let mut hasher = ContentHasher::at(offset);
    hasher.update(bytes);
    hasher.finalize_non_root()
}

/// The content hash of what `file` holds from its start, and its length,
/// read through `buf`. A file with fewer bytes allocated than its length
/// is read by its data ranges: its holes are neither read nor hashed.
pub fn hash_file<F: Read + AsFd>(mut file: F, buf: &mut [u8]) -> io::Result<(blake3::Hash, u64)> {
    let mut hasher = ContentHasher::new();
    if may_have_holes(&file)? {
        let len = walk(file, buf, |piece| {
            match piece {
                Piece::Data(data) => hasher.update(data),
                Piece::Hole(len) => hasher.zeros(len),
            }
            Ok(())
        })?;
        return Ok((hasher.finalize(), len));
    }
    loop {
        match file.read(buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let len = hasher.len();
    Ok((hasher.finalize(), len))
}

/// A complete subtree: its chaining value, its first leaf and its leaves.
#[derive(Clone, Copy, Debug)]
struct Node {
    cv: ChainingValue,
    start: u64,
    leaves: u64,
}

/// Streaming content hash of a file (or of an aligned subtree of one), fed
/// its bytes in order, zero runs by their length, or whole granules by
/// their chaining values. Memory is one leaf and a stack of subtrees.
#[derive(Clone, Debug)]
pub struct ContentHasher {
    /// The leaf the hashed range starts at.
    first: u64,
    /// Complete subtrees before the current leaf, merged when a sibling
    /// of the same size follows and more input comes after it.
    stack: Vec<Node>,
    /// Leaves before the current one, from `first`.
    closed: u64,
    /// The current leaf's hasher, fed only once a byte is not zero.
    current: Hasher,
    /// Bytes of the current leaf so far.
    in_current: u64,
    /// Whether `current` was fed the leaf's bytes; if not, they are all
    /// zero.
    fed: bool,
}

impl Default for ContentHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl ContentHasher {
    /// A hasher of a whole file.
    pub fn new() -> Self {
        Self::at(0)
    }

    /// A hasher of the subtree that starts at `offset` (a multiple of
    /// [`LEAF`]), for [`finalize_non_root`](Self::finalize_non_root).
    pub(crate) fn at(offset: u64) -> Self {
        debug_assert_eq!(offset % LEAF, 0);
        let mut current = Hasher::new();
        if offset > 0 {
            current.set_input_offset(offset);
        }
        Self {
            first: offset / LEAF,
            stack: Vec::new(),
            closed: 0,
            current,
            in_current: 0,
            fed: false,
        }
    }

    /// Bytes hashed or accounted for so far.
    pub fn len(&self) -> u64 {
        self.closed * LEAF + self.in_current
    }

    /// Whether nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next leaf's index.
    fn next_leaf(&self) -> u64 {
        self.first + self.closed
    }

    /// Whether the current leaf may be the whole file, which is then
    /// hashed as BLAKE3's root: it is closed only when more input follows.
    fn at_first_leaf(&self) -> bool {
        self.first == 0 && self.closed == 0
    }

    /// Adds the leaf after the last one, whose chaining value is `cv`.
    fn push_leaf(&mut self, cv: ChainingValue) {
        let start = self.next_leaf();
        self.push(Node {
            cv,
            start,
            leaves: 1,
        });
    }

    /// Adds a complete subtree after merging the siblings it follows.
    fn push(&mut self, node: Node) {
        while let [.., a, b] = self.stack[..] {
            if a.leaves != b.leaves || !a.start.is_multiple_of(2 * a.leaves) {
                break;
            }
            self.stack.truncate(self.stack.len() - 2);
            self.stack.push(Node {
                cv: merge_subtrees_non_root(&a.cv, &b.cv, Mode::Hash),
                start: a.start,
                leaves: 2 * a.leaves,
            });
        }
        self.closed += node.leaves;
        self.stack.push(node);
    }

    /// Starts a fresh current leaf at the next leaf.
    fn restart(&mut self) {
        self.current = Hasher::new();
        self.current.set_input_offset(self.next_leaf() * LEAF);
        self.in_current = 0;
        self.fed = false;
    }

    /// The current leaf's chaining value, in a file longer than it.
    fn current_cv(&mut self) -> ChainingValue {
        if !self.fed {
            if self.in_current == LEAF {
                return zero_leaf();
            }
            self.current.update(&ZEROS[..self.in_current as usize]);
        }
        self.current.finalize_non_root()
    }

    /// Closes the current leaf if it is full (more input follows).
    fn close_full(&mut self) {
        if self.in_current == LEAF {
            let cv = self.current_cv();
            self.push_leaf(cv);
            self.restart();
        }
    }

    /// Feeds bytes of the current leaf, keeping a run of zeros unfed.
    fn feed(&mut self, bytes: &[u8]) {
        if !self.fed {
            if is_zero(bytes) {
                self.in_current += bytes.len() as u64;
                return;
            }
            self.current.update(&ZEROS[..self.in_current as usize]);
            self.fed = true;
        }
        self.current.update(bytes);
        self.in_current += bytes.len() as u64;
    }

    /// Hashes the next bytes of the file.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            self.close_full();
            if self.in_current == 0 && !self.at_first_leaf() && data.len() as u64 >= LEAF {
                let whole = data.len() / LEAF as usize * LEAF as usize;
                self.leaves(&data[..whole]);
                data = &data[whole..];
                continue;
            }
            let take = ((LEAF - self.in_current) as usize).min(data.len());
            self.feed(&data[..take]);
            data = &data[take..];
        }
    }

    /// Hashes whole leaves from the next leaf on, several at once.
    fn leaves(&mut self, data: &[u8]) {
        let base = self.next_leaf() * LEAF;
        let leaf = LEAF as usize;
        let cv = |(i, bytes): (usize, &[u8])| leaf_cv(bytes, base + (i * leaf) as u64);
        let cvs: Vec<ChainingValue> = if data.len() / leaf >= PARALLEL_LEAVES_MIN {
            data.par_chunks(leaf).enumerate().map(cv).collect()
        } else {
            data.chunks(leaf).enumerate().map(cv).collect()
        };
        for cv in cvs {
            self.push_leaf(cv);
        }
        self.restart();
    }

    /// Accounts for the next `n` bytes of the file, all zero, hashing at
    /// most the two leaves they share with other bytes.
    pub fn zeros(&mut self, mut n: u64) {
        while n > 0 {
            self.close_full();
            if self.in_current == 0 && !self.at_first_leaf() && n >= LEAF {
                let mut leaves = n / LEAF;
                n -= leaves * LEAF;
                while leaves > 0 {
                    let start = self.next_leaf();
                    // The largest aligned subtree that fits.
                    let level = start.trailing_zeros().min(leaves.ilog2());
                    self.push(Node {
                        cv: zero_subtree(level),
                        start,
                        leaves: 1 << level,
                    });
                    leaves -= 1 << level;
                }
                self.restart();
                continue;
            }
            let take = (LEAF - self.in_current).min(n);
            if self.fed {
                self.current.update(&ZEROS[..take as usize]);
            }
            self.in_current += take;
            n -= take;
        }
    }

    /// Accounts for whole granules of `granule` bytes (a power of two, at
    /// least a leaf) by their chaining values. Only at a granule boundary,
    /// and never for the file's first granule (a file that turns out to
    /// be that one granule needs its bytes).
    pub(crate) fn push_known(&mut self, cvs: &[ChainingValue], granule: u64) {
        if cvs.is_empty() {
            return;
        }
        self.close_full();
        let leaves = granule / LEAF;
        assert!(
            self.in_current == 0
                && !self.at_first_leaf()
                && self.next_leaf().is_multiple_of(leaves),
            "known granules are pushed at a boundary after the first"
        );
        for cv in cvs {
            let start = self.next_leaf();
            self.push(Node {
                cv: *cv,
                start,
                leaves,
            });
        }
        self.restart();
    }

    /// Closes the current leaf, if it holds bytes, and merges the stack
    /// from its end, the last merge with `last`: below its top the stack
    /// holds BLAKE3's subtrees of the length before, largest first.
    fn fold(
        mut self,
        last: impl FnOnce(&ChainingValue, &ChainingValue) -> ChainingValue,
    ) -> ChainingValue {
        if self.in_current > 0 {
            let cv = self.current_cv();
            self.push_leaf(cv);
        }
        let mut right = self.stack.pop().expect("a subtree at least").cv;
        let mut last = Some(last);
        while let Some(left) = self.stack.pop() {
            right = match self.stack.is_empty() {
                true => last.take().expect("once")(&left.cv, &right),
                false => merge_subtrees_non_root(&left.cv, &right, Mode::Hash),
            };
        }
        right
    }

    /// The content hash of everything hashed, a whole file.
    pub fn finalize(self) -> blake3::Hash {
        debug_assert_eq!(self.first, 0, "a subtree has no root");
        if self.closed == 0 {
            // One leaf at most: its plain BLAKE3.
            return match self.fed {
                true => self.current.finalize(),
                false => blake3::hash(&ZEROS[..self.in_current as usize]),
            };
        }
        blake3::Hash::from(self.fold(|l, r| *merge_subtrees_root(l, r, Mode::Hash).as_bytes()))
    }

    /// The chaining value of the subtree hashed, which must not be empty.
    pub(crate) fn finalize_non_root(self) -> ChainingValue {
        self.fold(|l, r| merge_subtrees_non_root(l, r, Mode::Hash))
    }
}

#[cfg(test)]
mod tests {
    use blake3::hazmat::left_subtree_len;
    use proptest::prelude::*;

    use super::*;

    /// The definition, written plainly: BLAKE3's split of the tree, a
    /// whole zero leaf replaced by the constant.
    fn oracle(data: &[u8]) -> blake3::Hash {
        fn node(data: &[u8], offset: u64) -> ChainingValue {
            if data.len() as u64 <= LEAF {
                if data.len() as u64 == LEAF && data.iter().all(|&b| b == 0) {
                    return blake3::derive_key(ZERO_LEAF_CONTEXT, &[]);
                }
                let mut h = Hasher::new();
                h.set_input_offset(offset);
                h.update(data);
                return h.finalize_non_root();
            }
            let left = left_subtree_len(data.len() as u64) as usize;
            merge_subtrees_non_root(
                &node(&data[..left], offset),
                &node(&data[left..], offset + left as u64),
                Mode::Hash,
            )
        }
        if data.len() as u64 <= LEAF {
            return blake3::hash(data);
        }
        let left = left_subtree_len(data.len() as u64) as usize;
        merge_subtrees_root(
            &node(&data[..left], 0),
            &node(&data[left..], left as u64),
            Mode::Hash,
        )
    }

    /// Data and zero runs, alternating as `runs` says (`(len, zero)`).
    fn file(runs: &[(usize, bool)]) -> Vec<u8> {
        let mut data = Vec::new();
        for (i, &(len, zero)) in runs.iter().enumerate() {
            data.extend((0..len).map(|j| if zero { 0 } else { (i * 31 + j) as u8 | 1 }));
        }
        data
    }

    proptest! {
        /// Zero runs given as bytes, as lengths, or as a mix, split
        /// anywhere: the definition's hash.
        #[test]
        fn holes_and_written_zeros_hash_alike(
            runs in proptest::collection::vec((0usize..70_000, any::<bool>()), 0..8),
            splits in proptest::collection::vec(1usize..40_000, 1..6),
            as_lengths in any::<bool>(),
        ) {
            let data = file(&runs);
            let expected = oracle(&data);
            let mut bytes = ContentHasher::new();
            let mut rest = &data[..];
            for &s in splits.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (now, later) = rest.split_at(s.min(rest.len()));
                bytes.update(now);
                rest = later;
            }
            prop_assert_eq!(bytes.len(), data.len() as u64);
            prop_assert_eq!(bytes.finalize(), expected);

            let mut holes = ContentHasher::new();
            for (i, &(len, zero)) in runs.iter().enumerate() {
                let start: usize = runs[..i].iter().map(|r| r.0).sum();
                match zero && (as_lengths || i % 2 == 0) {
                    true => holes.zeros(len as u64),
                    false => holes.update(&data[start..start + len]),
                }
            }
            prop_assert_eq!(holes.finalize(), expected);
        }

        /// Without a whole zero leaf, the content hash is BLAKE3.
        #[test]
        fn data_without_zero_leaves_hashes_as_blake3(len in 0usize..200_000, seed in 1u8..) {
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed) | 1).collect();
            let mut h = ContentHasher::new();
            h.update(&data);
            prop_assert_eq!(h.finalize(), blake3::hash(&data));
        }
    }

    #[test]
    fn a_long_hole_hashes_like_its_bytes_without_them() {
        // Unaligned on both sides, several aligned subtree sizes inside.
        let (head, hole, tail) = (5_000usize, 40 * LEAF as usize + 777, 3_000usize);
        let mut data = file(&[(head, false)]);
        data.resize(head + hole, 0);
        data.extend(file(&[(tail, false)]));
        let mut h = ContentHasher::new();
        h.update(&data[..head]);
        h.zeros(hole as u64);
        h.update(&data[head + hole..]);
        assert_eq!(h.finalize(), oracle(&data));
        assert_ne!(oracle(&data), blake3::hash(&data), "zero leaves count");
    }

    #[test]
    fn one_leaf_of_zeros_is_its_plain_blake3() {
        let mut h = ContentHasher::new();
        h.zeros(LEAF);
        assert_eq!(h.finalize(), blake3::hash(&ZEROS));
        let mut h = ContentHasher::new();
        h.zeros(LEAF + 1);
        assert_eq!(h.finalize(), oracle(&[0; LEAF as usize + 1]));
    }

    #[test]
    fn a_subtree_at_an_offset_joins_its_file() {
        let mut data = file(&[(3 * LEAF as usize, false)]);
        data.resize(8 * LEAF as usize, 0);
        let mid = 4 * LEAF as usize;
        let mut left = ContentHasher::at(0);
        left.update(&data[..mid]);
        let mut right = ContentHasher::at(mid as u64);
        right.zeros((data.len() - mid) as u64);
        let joined = merge_subtrees_root(
            &left.finalize_non_root(),
            &right.finalize_non_root(),
            Mode::Hash,
        );
        assert_eq!(joined, oracle(&data));
        assert_eq!(right_cv_of_zeros(4), zero_subtree(2));
    }

    fn right_cv_of_zeros(leaves: u64) -> ChainingValue {
        let mut h = ContentHasher::at(leaves * LEAF);
        h.update(&vec![0; (leaves * LEAF) as usize]);
        h.finalize_non_root()
    }
}
