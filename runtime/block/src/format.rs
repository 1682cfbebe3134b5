//! The bottom layer of every encoding: magics, versions, limits, and the
//! primitive, bounded encoders and decoders the messages are built of.

use std::io::{self, Read, Write};

use crate::error::FormatError;

/// Magic of an encoded signature.
pub(crate) const SIGNATURE_MAGIC: [u8; 4] = *b"WMSG";
/// Magic of an encoded delta.
pub(crate) const DELTA_MAGIC: [u8; 4] = *b"WMDL";
/// Magic of an encoded refinement request.
pub(crate) const REFINEMENT_MAGIC: [u8; 4] = *b"WMRF";
/// Magic of an encoded granule summary.
pub(crate) const GRANULE_SUMMARY_MAGIC: [u8; 4] = *b"WMGS";
/// Magic of encoded aligned tags, the answer to an aligned refinement.
pub(crate) const ALIGNED_TAGS_MAGIC: [u8; 4] = *b"WMAT";
/// Magic of encoded basis granule hashes (kept on disk, never sent).
pub(crate) const BASIS_HASHES_MAGIC: [u8; 4] = *b"WMGH";
/// Version of every encoding that crosses the wire. 2: the strong hash
/// is XXH3-64 (12 bytes per block on the wire instead of 20). 3:
/// signatures cover listed ranges of the basis (a refinement) and copies
/// name basis byte ranges, so one delta can mix blocks of several sizes.
/// 4: the ranges a refinement asks for and its answer covers are varints
/// ([`put_ranges`]). 5: strong hashes and granule tags are keyed by a
/// seed the basis side draws for each signature or summary, and a tag
/// takes 32 bits instead of 64. 6: a refinement says whether it is
/// aligned, and an aligned one is answered with 32-bit tags
/// ([`crate::AlignedTags`]) instead of a signature. 7: a delta ends with
/// the content hash ([`crate::ContentHasher`]: zero leaves hash as a
/// constant) instead of BLAKE3, and carries runs of zeros by their length.
/// 8: a delta's literals may come zstd-compressed
/// ([`OP_ZSTD_LITERAL`](crate::wire::delta::OP_ZSTD_LITERAL)).
pub(crate) const VERSION: u8 = 8;
/// Version of the encodings kept on disk: the undo journal and granule
/// hashes. Apart from [`VERSION`], so that an upgrade still reads what the
/// version before left behind, a journal above all: it is an interrupted
/// patch's way back.
pub(crate) const DISK_VERSION: u8 = 3;

/// Bytes of a granule tag or an aligned block tag (a `u32`).
pub(crate) const TAG_BYTES: usize = 4;

/// Largest block size a signature may declare.
pub(crate) const MAX_BLOCK: u32 = 16 << 20;

/// Smallest granule: 16 chunks, what one AVX-512 pass hashes at once.
const MIN_GRANULE: u64 = 16 << 10;
/// Most granules one file keeps hashes of (2 MiB of chaining values).
const MAX_GRANULES: u64 = 1 << 16;

/// The granule used for a file of `len` bytes: a power of two of at least
/// 16 KiB, large enough that the file has at most 65,536 of them. A
/// decoder refuses any other, which bounds the granules of a message.
pub(crate) fn granule_for(len: u64) -> u64 {
    len.div_ceil(MAX_GRANULES)
        .next_power_of_two()
        .max(MIN_GRANULE)
}

/// Bounds on what decoders accept, so hostile input cannot make them
/// allocate or write without bound.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Blocks in one signature.
    pub max_blocks: u64,
    /// Length of a basis or of a rebuilt file.
    pub max_file_len: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // 64 Mi blocks x 12 bytes: at most 768 MiB of signature.
            max_blocks: 64 << 20,
            max_file_len: 16 << 40,
        }
    }
}

/// Reads a magic number, which must be `magic`, and the version after it.
pub(crate) fn read_header<R: Read>(
    r: &mut R,
    magic: [u8; 4],
    version: u8,
    what: &'static str,
) -> Result<(), FormatError> {
    read_magic(r, magic, what)?;
    read_version(r, version, what)
}

/// Reads a magic number, which must be `magic`.
pub(crate) fn read_magic<R: Read>(
    r: &mut R,
    magic: [u8; 4],
    what: &'static str,
) -> Result<(), FormatError> {
    let mut found = [0; 4];
    r.read_exact(&mut found)
        .map_err(FormatError::reading(what))?;
    if found != magic {
        return Err(FormatError::BadMagic {
            expected: magic_name(magic),
            found,
        });
    }
    Ok(())
}

/// The magic numbers as text, for errors.
fn magic_name(magic: [u8; 4]) -> &'static str {
    match magic {
        SIGNATURE_MAGIC => "WMSG",
        DELTA_MAGIC => "WMDL",
        GRANULE_SUMMARY_MAGIC => "WMGS",
        BASIS_HASHES_MAGIC => "WMGH",
        ALIGNED_TAGS_MAGIC => "WMAT",
        _ => "WMRF",
    }
}

/// Checks the version byte that follows a magic number: it must be
/// `version` ([`VERSION`] or [`DISK_VERSION`]).
pub(crate) fn read_version<R: Read>(
    r: &mut R,
    version: u8,
    what: &'static str,
) -> Result<(), FormatError> {
    let found = read_u8(r, what)?;
    if found != version {
        return Err(FormatError::UnsupportedVersion {
            found,
            supported: version,
        });
    }
    Ok(())
}

/// Writes a magic number and `version` after it.
pub(crate) fn write_header<W: Write>(w: &mut W, magic: [u8; 4], version: u8) -> io::Result<()> {
    w.write_all(&magic)?;
    w.write_all(&[version])
}

pub(crate) fn read_u8<R: Read>(r: &mut R, reading: &'static str) -> Result<u8, FormatError> {
    let mut b = [0; 1];
    r.read_exact(&mut b)
        .map_err(FormatError::reading(reading))?;
    Ok(b[0])
}

pub(crate) fn read_u32<R: Read>(r: &mut R, reading: &'static str) -> Result<u32, FormatError> {
    let mut b = [0; 4];
    r.read_exact(&mut b)
        .map_err(FormatError::reading(reading))?;
    Ok(u32::from_be_bytes(b))
}

pub(crate) fn read_u64<R: Read>(r: &mut R, reading: &'static str) -> Result<u64, FormatError> {
    let mut b = [0; 8];
    r.read_exact(&mut b)
        .map_err(FormatError::reading(reading))?;
    Ok(u64::from_be_bytes(b))
}

/// Reads a block size (u32), which must be 1 to [`MAX_BLOCK`].
pub(crate) fn read_block_size<R: Read>(r: &mut R) -> Result<u32, FormatError> {
    let block_size = read_u32(r, "block size")?;
    if block_size == 0 || block_size > MAX_BLOCK {
        return Err(FormatError::Malformed {
            reason: "block size out of range",
        });
    }
    Ok(block_size)
}

/// Reads the count (u64) of `what` follows, which must be at most `limit`.
pub(crate) fn read_count<R: Read>(
    r: &mut R,
    what: &'static str,
    limit: u64,
) -> Result<u64, FormatError> {
    let count = read_u64(r, what)?;
    if count > limit {
        return Err(FormatError::TooLarge {
            what,
            value: count,
            limit,
        });
    }
    Ok(count)
}

/// Reads a kind byte, 0 or 1; `unknown` says what any other value is.
pub(crate) fn read_kind<R: Read>(
    r: &mut R,
    reading: &'static str,
    unknown: &'static str,
) -> Result<bool, FormatError> {
    match read_u8(r, reading)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(FormatError::Malformed { reason: unknown }),
    }
}

/// Reads as much as `buf` holds or the reader has.
pub(crate) fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
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

/// Appends `v` as an unsigned LEB128 varint: seven bits a byte, the low
/// ones first, the top bit set on every byte but the last.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint [`put_varint`] wrote: in its shortest form (so every
/// value has one encoding) and within 64 bits.
fn read_varint<R: Read>(r: &mut R, reading: &'static str) -> Result<u64, FormatError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = read_u8(r, reading)?;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(FormatError::Malformed {
                reason: "a varint beyond 64 bits",
            });
        }
        v |= bits << shift;
        if byte & 0x80 == 0 {
            if byte == 0 && shift > 0 {
                return Err(FormatError::Malformed {
                    reason: "a varint longer than it needs to be",
                });
            }
            return Ok(v);
        }
    }
    Err(FormatError::Malformed {
        reason: "a varint beyond 64 bits",
    })
}

/// Appends the count of `ranges` (u64), then each range as two varints:
/// its distance from the end of the one before (from 0 for the first)
/// and its length. The ranges must be non-empty, ascending and disjoint;
/// scattered ranges then take 3 to 6 bytes each instead of 16.
pub(crate) fn put_ranges(out: &mut Vec<u8>, ranges: impl ExactSizeIterator<Item = (u64, u64)>) {
    out.extend_from_slice(&(ranges.len() as u64).to_be_bytes());
    let mut previous_end = 0;
    for (offset, len) in ranges {
        debug_assert!(len > 0 && offset >= previous_end);
        put_varint(out, offset - previous_end);
        put_varint(out, len);
        previous_end = offset + len;
    }
}

/// Reads what [`put_ranges`] wrote: the ranges must be non-empty, end by
/// `end`, and hold at most `limits.max_blocks` blocks of `block_size`
/// (non-zero) in all.
pub(crate) fn read_ranges<R: Read>(
    r: &mut R,
    block_size: u32,
    end: u64,
    limits: &Limits,
) -> Result<Vec<(u64, u64)>, FormatError> {
    let count = read_count(r, "range count", limits.max_blocks)?;
    // Grows as ranges arrive: a lying count costs nothing.
    let mut ranges = Vec::with_capacity(count.min(1 << 12) as usize);
    let (mut previous_end, mut blocks) = (0u64, 0u64);
    for _ in 0..count {
        let gap = read_varint(r, "range offset")?;
        let len = read_varint(r, "range length")?;
        let offset = previous_end.checked_add(gap);
        let range_end = offset.and_then(|o| o.checked_add(len));
        let (Some(offset), Some(range_end)) = (offset, range_end) else {
            return Err(FormatError::Malformed {
                reason: "a range beyond 64 bits",
            });
        };
        if len == 0 || range_end > end {
            return Err(FormatError::Malformed {
                reason: "ranges must be non-empty and within bounds",
            });
        }
        previous_end = range_end;
        blocks += len.div_ceil(block_size.into());
        if blocks > limits.max_blocks {
            return Err(FormatError::TooLarge {
                what: "block count",
                value: blocks,
                limit: limits.max_blocks,
            });
        }
        ranges.push((offset, len));
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_trip_in_their_shortest_form() {
        let ranges = [
            (0, 1),
            (1, 127),
            (300, 128),
            (1 << 40, 16 << 10),
            (u64::MAX - 10, 10),
        ];
        let mut encoded = Vec::new();
        put_ranges(&mut encoded, ranges.iter().copied());
        // The count, then gap and length: 1+1, 1+1, 2+2, 6+3, 10+1 bytes.
        assert_eq!(encoded.len(), 8 + 2 + 2 + 4 + 9 + 11);
        let limits = Limits {
            max_blocks: u64::MAX,
            max_file_len: u64::MAX,
        };
        let read = read_ranges(&mut &encoded[..], 1, u64::MAX, &limits).unwrap();
        assert_eq!(read, ranges);
        // Within bounds only.
        assert!(read_ranges(&mut &encoded[..], 1, u64::MAX - 1, &limits).is_err());
        let mut v = Vec::new();
        for value in [0, 127, 128, 16_383, 16_384, u64::MAX] {
            v.clear();
            put_varint(&mut v, value);
            assert_eq!(
                v.len(),
                (64 - value.leading_zeros()).div_ceil(7).max(1) as usize
            );
            assert_eq!(read_varint(&mut &v[..], "varint").unwrap(), value);
        }
    }

    #[test]
    fn granules_grow_with_the_file_and_stay_few() {
        assert_eq!(granule_for(0), 16 << 10);
        assert_eq!(granule_for(1 << 30), 16 << 10);
        assert_eq!(granule_for((1 << 30) + 1), 32 << 10);
        assert_eq!(granule_for(1 << 40), 16 << 20);
        assert!((1u64 << 40).div_ceil(granule_for(1 << 40)) <= MAX_GRANULES);
    }
}
