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
    /// The checksum of `window`.
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

/// The strong per-block hash: XXH3-128. Not cryptographic; a collision is
/// caught by the whole-file BLAKE3 verification.
#[inline]
pub(crate) fn strong(block: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(block)
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
    }
}
