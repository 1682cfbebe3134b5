//! What the digests of trees and block volumes share: the key context of
//! the tree digest, and reading a file's content for its hash (also for
//! the files hashed ahead of a digest).

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, File, OpenOptions, OpenOptionsExt};
use rustix::fs::OFlags;

/// The BLAKE3 key-derivation context of the tree digest; a change of what
/// the digest covers or how it is encoded must change it. v2: files by
/// their content hash ([`wasmover_block::ContentHasher`]), not BLAKE3.
pub(crate) const DIGEST_CONTEXT: &str = "wasmover tree digest v2";

/// The read buffer of the digests. Plain reads and one thread: a 1 GiB
/// file in the page cache hashes in 0.25 s (4.3 GB/s) that way, and in
/// 0.30–0.43 s with `update_rayon` on the two shared cores it was measured
/// on; a reader keeps up without mmap.
pub(super) const DIGEST_BUFFER: usize = 1 << 20;

/// The content hash of everything `file` holds, and its length, read
/// through `buffer`; its holes are not read.
pub(super) fn content_hash(
    file: impl io::Read + AsFd,
    buffer: &mut [u8],
) -> io::Result<(blake3::Hash, u64)> {
    wasmover_block::hash_file(file, buffer)
}

/// Opens the regular file at `path` under `dir` to read its content; not
/// followed if a symlink took its place, and a fifo swapped in meanwhile
/// is not waited on.
pub(super) fn open_to_read(dir: &Dir, path: &OsStr) -> io::Result<File> {
    dir.open_with(
        path,
        OpenOptions::new()
            .read(true)
            .follow(FollowSymlinks::No)
            .custom_flags((OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32),
    )
}
