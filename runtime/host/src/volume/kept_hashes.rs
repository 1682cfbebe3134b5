//! Granule hashes a receiving volume keeps of the large files a run wrote,
//! so the next run sends their summary without reading those files again:
//! the hashes of a file are updated from the old ones and the bytes a
//! patch changed ([`wasmover_block::BasisHashes::updated`]). They are used
//! only while the file's [`Stamp`] is the one they were kept with.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use wasmover_block::BasisHashes;

use super::known::{Stamp, seal, unseal};

const MAGIC: &[u8; 4] = b"WMKG";
/// 2: chaining values of the content hash ([`wasmover_block::ContentHasher`]),
/// not BLAKE3's; kept hashes of 1 are ignored and the file read again.
const VERSION: u8 = 2;

/// What is kept of one file.
#[derive(Debug)]
pub(crate) struct KeptHashes {
    pub(crate) stamp: Stamp,
    pub(crate) hashes: BasisHashes,
}

/// Encodes what is kept of `path`: magic `WMKG`, version, the path (its
/// length as u64, then its bytes), the stamp (inode, length, mtime, ctime),
/// the granule hashes in the block engine's encoding, then a BLAKE3 of all
/// that, so a torn or damaged file is ignored rather than trusted.
/// Big-endian.
pub(crate) fn encode(path: &OsStr, kept: &KeptHashes) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(path.len() as u64).to_be_bytes());
    out.extend_from_slice(path.as_bytes());
    let stamp = &kept.stamp;
    for value in [stamp.inode, stamp.len] {
        out.extend_from_slice(&value.to_be_bytes());
    }
    for value in [stamp.mtime_ns, stamp.ctime_ns] {
        out.extend_from_slice(&value.to_be_bytes());
    }
    kept.hashes.write_to(&mut out).expect("writing to memory");
    seal(out)
}

/// Decodes what [`encode`] wrote for `path`, or says why it cannot be
/// used.
pub(crate) fn decode(bytes: &[u8], path: &OsStr) -> Result<KeptHashes, String> {
    use std::io::Read;
    let body = unseal(bytes, MAGIC.len() + 1)?;
    if &body[..4] != MAGIC || body[4] != VERSION {
        return Err("it is not kept granule hashes of this version".into());
    }
    let mut r = &body[5..];
    let u64_of = |r: &mut &[u8]| {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)
            .map_err(|_| "it is truncated".to_owned())?;
        Ok::<_, String>(u64::from_be_bytes(b))
    };
    let path_len = u64_of(&mut r)?;
    if path_len != path.len() as u64 || !r.starts_with(path.as_bytes()) {
        return Err("it was kept for another path".into());
    }
    r = &r[path.len()..];
    let (inode, len) = (u64_of(&mut r)?, u64_of(&mut r)?);
    let (mtime_ns, ctime_ns) = (u64_of(&mut r)? as i64, u64_of(&mut r)? as i64);
    let hashes = BasisHashes::read_from(&mut r).map_err(|e| e.to_string())?;
    if !r.is_empty() || hashes.len() != len {
        return Err("its parts do not agree".into());
    }
    Ok(KeptHashes {
        stamp: Stamp::stored(inode, len, mtime_ns, ctime_ns),
        hashes,
    })
}

/// The path granule hashes were kept for, read from the start of its
/// file (not checked: enough to tell whether the file is still there).
pub(crate) fn path_of(mut file: impl std::io::Read) -> Option<OsString> {
    let mut head = [0u8; 13];
    file.read_exact(&mut head).ok()?;
    if &head[..4] != MAGIC || head[4] != VERSION {
        return None;
    }
    let len = u64::from_be_bytes(head[5..].try_into().expect("8 bytes"));
    // A path the kernel would take.
    if len > 4096 {
        return None;
    }
    let mut path = vec![0u8; len as usize];
    file.read_exact(&mut path).ok()?;
    Some(OsString::from_vec(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_hashes_read_back_only_whole_and_for_their_path() {
        let data = wasmover_block::fuzzing::pseudo_random(100_000, 3);
        let kept = KeptHashes {
            stamp: Stamp::stored(7, 100_000, 1, 2),
            hashes: BasisHashes::compute(&data[..], 100_000).unwrap(),
        };
        let bytes = encode(OsStr::new("d/big"), &kept);
        assert_eq!(path_of(&bytes[..]).as_deref(), Some(OsStr::new("d/big")));
        let back = decode(&bytes, OsStr::new("d/big")).unwrap();
        assert_eq!(back.stamp, kept.stamp);
        assert_eq!(back.hashes, kept.hashes);
        assert!(decode(&bytes, OsStr::new("d/other")).is_err());
        for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                decode(&bytes[..cut], OsStr::new("d/big")).is_err(),
                "cut at {cut}"
            );
        }
        for flip in [5, 20, bytes.len() / 2, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[flip] ^= 1;
            assert!(
                decode(&damaged, OsStr::new("d/big")).is_err(),
                "flip at {flip}"
            );
        }
    }
}
