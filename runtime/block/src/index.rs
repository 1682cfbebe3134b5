//! The index a delta search looks blocks up in: from weak checksum to the
//! blocks of a signature, behind a bit filter.

use std::collections::HashMap;

use crate::rolling::Rolling;
use crate::wire::signature::Signature;

/// Lookup from weak checksum to blocks, with a bit filter in front so that
/// the common miss costs one cache-resident memory access.
pub(crate) struct Index {
    filter: Vec<u64>,
    first: HashMap<u32, u32, BuildWeakHasher>,
    next: Vec<u32>,
}

const NONE: u32 = u32::MAX;
/// Size of the filter, fixed so the scan loop shifts by a constant: 256
/// KiB stays in L2, and a miss passes with chance blocks / 2^21 (1/64
/// for the 32 Ki blocks of a 1 GiB basis).
const FILTER_BITS: u32 = 21;
const FILTER_WORDS: usize = (1 << FILTER_BITS) / 64;

/// Weak sums are hashed by one multiplication: SipHash would cost more
/// than the whole probe, and the keys are not attacker-chosen in a way
/// that matters (a flood of equal weak sums only slows one delta).
#[derive(Clone, Copy, Default)]
pub(crate) struct BuildWeakHasher;

/// See [`BuildWeakHasher`].
#[derive(Default)]
pub(crate) struct WeakHasher(u64);

impl std::hash::Hasher for WeakHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl std::hash::BuildHasher for BuildWeakHasher {
    type Hasher = WeakHasher;
    fn build_hasher(&self) -> WeakHasher {
        WeakHasher(0)
    }
}

#[inline(always)]
fn filter_slot(weak: u32) -> usize {
    (weak.wrapping_mul(0x9E37_79B1) >> (32 - FILTER_BITS)) as usize
}

impl Index {
    /// Indexes the full-size blocks of `sig` (a short last block can only
    /// match at the end of the new file and is checked there).
    pub(crate) fn new(sig: &Signature) -> Self {
        if sig.blocks().is_empty() {
            // Nothing to find: no filter to zero (a new file's delta).
            return Self {
                filter: Vec::new(),
                first: HashMap::default(),
                next: Vec::new(),
            };
        }
        let mut filter = vec![0u64; FILTER_WORDS];
        let mut first = HashMap::with_capacity_and_hasher(sig.blocks().len(), BuildWeakHasher);
        let mut next = vec![NONE; sig.blocks().len()];
        for (i, block) in sig.blocks().iter().enumerate().rev() {
            if sig.block_len(i) != sig.block_size() as usize {
                continue;
            }
            let slot = filter_slot(block.weak);
            filter[slot / 64] |= 1 << (slot % 64);
            if let Some(prev) = first.insert(block.weak, i as u32) {
                next[i] = prev;
            }
        }
        Self {
            filter,
            first,
            next,
        }
    }

    /// Whether some block may have weak sum `weak`.
    #[inline(always)]
    fn may_contain(&self, weak: u32) -> bool {
        let slot = filter_slot(weak);
        self.filter[slot / 64] & (1 << (slot % 64)) != 0
    }

    /// Rolls `r` (the sum of the window at `pos`) forward until the window
    /// at the returned position may match a block, or that position is
    /// `stop`. `data` must hold `stop + bs` bytes.
    #[inline]
    pub(crate) fn scan(
        &self,
        r: &mut Rolling,
        data: &[u8],
        bs: usize,
        pos: usize,
        stop: usize,
    ) -> usize {
        let leaving = &data[pos..stop];
        let entering = &data[pos + bs..stop + bs];
        // Locals, so the loop keeps them in registers.
        let filter: &[u64; FILTER_WORDS] = self.filter[..].try_into().expect("sized in new");
        let mut rolled = *r;
        for (i, (&out, &inp)) in leaving.iter().zip(entering).enumerate() {
            let slot = filter_slot(rolled.digest());
            if filter[slot / 64] & (1 << (slot % 64)) != 0 {
                *r = rolled;
                return pos + i;
            }
            rolled.roll(out, inp);
        }
        *r = rolled;
        stop
    }

    /// A block whose hashes match `window`, preferring `preferred` (the
    /// block after the last match) so that runs stay contiguous.
    #[inline]
    pub(crate) fn find(
        &self,
        sig: &Signature,
        weak: u32,
        window: &[u8],
        preferred: usize,
    ) -> Option<usize> {
        if !self.may_contain(weak) {
            return None;
        }
        let mut candidate = *self.first.get(&weak)?;
        let hash = sig.strong(window);
        let mut found = None;
        while candidate != NONE {
            let i = candidate as usize;
            if sig.blocks()[i].strong == hash {
                if i == preferred {
                    return Some(i);
                }
                found.get_or_insert(i);
            }
            candidate = self.next[i];
        }
        found
    }
}
