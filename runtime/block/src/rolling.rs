//! The weak rolling checksum (rsync's Adler-style sum) and the strong hash.

/// Rolling checksum over a window: `a` is the sum of the bytes, `b` the sum
/// of the running `a`s, both modulo 2^16, combined as `b << 16 | a`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Rolling {
    a: u32,
    b: u32,
    len: u32,
}

impl Rolling {
    /// The checksum of `window`, byte by byte: the oracle of [`Rolling::fast`].
    #[cfg(test)]
    pub(crate) fn new(window: &[u8]) -> Self {
        let (mut a, mut b) = (0u32, 0u32);
        for &byte in window {
            a = a.wrapping_add(u32::from(byte));
            b = b.wrapping_add(a);
        }
        Self {
            a,
            b,
            len: window.len() as u32,
        }
    }

    /// The checksum of `window`, computed with the vectorized [`weak_sum`];
    /// equal to [`Rolling::new`] modulo 2^16, which is all `digest` keeps.
    #[inline]
    pub(crate) fn fast(window: &[u8]) -> Self {
        let (a, b) = Backend::detect().weak_sum(window);
        Self {
            a,
            b,
            len: window.len() as u32,
        }
    }

    /// Slides the window one byte: `out` leaves, `inp` enters.
    #[inline]
    pub(crate) fn roll(&mut self, out: u8, inp: u8) {
        self.a = self
            .a
            .wrapping_sub(u32::from(out))
            .wrapping_add(u32::from(inp));
        self.b = self
            .b
            .wrapping_sub(self.len.wrapping_mul(u32::from(out)))
            .wrapping_add(self.a);
    }

    /// The combined 32-bit value.
    #[inline]
    pub(crate) fn digest(&self) -> u32 {
        (self.b << 16) | (self.a & 0xffff)
    }
}

/// The `(a, b)` halves of the weak sum of a whole window, each modulo 2^16.
///
/// With `x_i` the bytes and `n` the length, `a = Σ x_i` and `b = Σ (n - i) x_i`.
/// The window is cut into 32-byte rows: lane `j` accumulates its column
/// (`col[j]`) and the running column sums (`run[j]`), so that
/// `b = 32 Σ run[j] - Σ j col[j]` over the rows; the tail continues the
/// scalar recurrence. Only 16 bits survive in the digest, so `u16` lanes
/// wrap harmlessly and twice as many fit in a vector register.
#[inline(always)]
fn weak_sum_lanes(data: &[u8]) -> (u32, u32) {
    const LANES: usize = 32;
    let mut rows = data.chunks_exact(LANES);
    let mut col = [0u16; LANES];
    let mut run = [0u16; LANES];
    for row in &mut rows {
        for j in 0..LANES {
            col[j] = col[j].wrapping_add(u16::from(row[j]));
            run[j] = run[j].wrapping_add(col[j]);
        }
    }
    let (mut a, mut b) = (0u32, 0u32);
    for j in 0..LANES {
        a = a.wrapping_add(u32::from(col[j]));
        b = b
            .wrapping_add((LANES as u32).wrapping_mul(u32::from(run[j])))
            .wrapping_sub((j as u32).wrapping_mul(u32::from(col[j])));
    }
    for &byte in rows.remainder() {
        a = a.wrapping_add(u32::from(byte));
        b = b.wrapping_add(a);
    }
    (a & 0xffff, b & 0xffff)
}

/// The plain weak sum: fallback and oracle of the vectorized ones.
fn weak_sum_scalar(data: &[u8]) -> (u32, u32) {
    weak_sum_lanes(data)
}

/// AVX2 weak sum, Adler-32 style: per 32-byte row, `vpsadbw` adds the
/// bytes into `a` and `vpmaddubsw` weights them 32..=1 into `b`; `b` also
/// gains 32 times every earlier row's sum (`prior`). The tail continues
/// the scalar recurrence.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn weak_sum_avx2(data: &[u8]) -> (u32, u32) {
    use std::arch::x86_64::*;
    const ROW: usize = 32;
    let mut rows = data.chunks_exact(ROW);
    let zero = _mm256_setzero_si256();
    let ones = _mm256_set1_epi16(1);
    let weights = _mm256_setr_epi8(
        32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10,
        9, 8, 7, 6, 5, 4, 3, 2, 1,
    );
    let (mut sums, mut prior, mut weighted) = (zero, zero, zero);
    for row in &mut rows {
        // Safety: `row` is 32 readable bytes; loadu has no alignment need.
        let x = unsafe { _mm256_loadu_si256(row.as_ptr().cast()) };
        prior = _mm256_add_epi32(prior, sums);
        sums = _mm256_add_epi32(sums, _mm256_sad_epu8(x, zero));
        let pairs = _mm256_maddubs_epi16(x, weights);
        weighted = _mm256_add_epi32(weighted, _mm256_madd_epi16(pairs, ones));
    }
    let lanes = |v: __m256i| -> u32 {
        let mut out = [0u32; 8];
        // Safety: `out` is 32 writable bytes.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) };
        out.iter().fold(0u32, |acc, &x| acc.wrapping_add(x))
    };
    let mut a = lanes(sums);
    let mut b = (ROW as u32)
        .wrapping_mul(lanes(prior))
        .wrapping_add(lanes(weighted));
    for &byte in rows.remainder() {
        a = a.wrapping_add(u32::from(byte));
        b = b.wrapping_add(a);
    }
    (a & 0xffff, b & 0xffff)
}

/// The instruction sets the hot loops are compiled for, chosen at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// Baseline instructions (SSE2 on x86_64): fallback and oracle.
    Scalar,
    /// AVX2, detected at run time.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Backend {
    /// The best backend this CPU supports (cached by std's detection).
    #[inline]
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if !cfg!(miri) && std::is_x86_feature_detected!("avx2") {
            return Backend::Avx2;
        }
        Backend::Scalar
    }

    /// The `(a, b)` halves of the weak sum of `data`, modulo 2^16.
    #[inline]
    pub(crate) fn weak_sum(self, data: &[u8]) -> (u32, u32) {
        match self {
            Backend::Scalar => weak_sum_scalar(data),
            // Safety: detect() returns Avx2 only after checking the CPU flag.
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => unsafe { weak_sum_avx2(data) },
        }
    }
}

/// The strong per-block hash: XXH3-64 under the signature's seed (with
/// the 32-bit weak sum, 96 bits per block; a false match needs both to
/// collide). Not cryptographic: under a seed drawn at random for each
/// signature, data crafted to collide collides only by chance (about
/// 2^-27 for XXH3's known pairs of 17 to 240 bytes, Cyan4973/xxHash#1127),
/// and a collision is caught by the whole-file BLAKE3 verification.
#[inline]
pub(crate) fn strong(seed: u64, block: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(block, seed)
}

/// A 32-bit tag of `data` under `seed`: the low half of its [`strong`]
/// hash. Granule tags (of chaining values) and aligned block tags are
/// compared where they lie, once each, so 32 bits keep a chance match
/// at 2^-32.
#[inline]
pub(crate) fn tag(seed: u64, data: &[u8]) -> u32 {
    strong(seed, data) as u32
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn rolling_equals_recomputing(data in proptest::collection::vec(any::<u8>(), 2..600), window in 1usize..64) {
            let window = window.min(data.len() - 1);
            let mut r = Rolling::new(&data[..window]);
            for start in 1..=data.len() - window {
                r.roll(data[start - 1], data[start + window - 1]);
                prop_assert_eq!(r.digest(), Rolling::new(&data[start..start + window]).digest());
            }
        }

        #[test]
        fn every_backend_equals_the_plain_sum(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let plain = Rolling::new(&data).digest();
            prop_assert_eq!(Rolling::fast(&data).digest(), plain);
            let (a, b) = Backend::Scalar.weak_sum(&data);
            prop_assert_eq!((b << 16) | a, plain);
        }

        #[test]
        fn a_fast_start_rolls_like_a_plain_one(data in proptest::collection::vec(any::<u8>(), 70..600)) {
            let window = 64;
            let mut r = Rolling::fast(&data[..window]);
            for start in 1..=data.len() - window {
                r.roll(data[start - 1], data[start + window - 1]);
                prop_assert_eq!(r.digest(), Rolling::new(&data[start..start + window]).digest());
            }
        }
    }
}
