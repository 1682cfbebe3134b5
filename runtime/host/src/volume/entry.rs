//! The entries of a volume as the host's volume code lists and digests
//! them: the host's own records, which each contract version's `volume`
//! converts at its boundary (`crate::host`).

use std::ffi::OsString;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// The volume itself, a block device or image file.
    Block,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device node.
    CharDevice,
    /// A block device node within a tree.
    BlockDevice,
}

impl EntryKind {
    /// Whether this is a special file: a fifo, a socket or a device node.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            EntryKind::Fifo | EntryKind::Socket | EntryKind::CharDevice | EntryKind::BlockDevice
        )
    }
}

/// One entry of a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the volume root ([`crate::volume::path`]).
    pub path: OsString,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u32,
    /// Length of a regular file or of the block volume; 0 otherwise.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Target of a symlink, as bytes; empty otherwise.
    pub link_target: OsString,
    /// Owning user id.
    pub uid: u32,
    /// Owning group id.
    pub gid: u32,
    /// Inode number.
    pub inode: u64,
    /// Hard link count.
    pub links: u32,
    /// Device number of a device node; 0 otherwise.
    pub rdev: u64,
    /// Fingerprint of its extended attributes; 0 for none, or when the
    /// tree does not cover them.
    pub attributes: u64,
}

/// A digest of a whole tree (`tree-digest` in the contract).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeDigest {
    /// 64 lower-case hex digits.
    pub root: String,
    /// Entries covered.
    pub entries: u64,
    /// Bytes of regular-file content hashed.
    pub bytes: u64,
}
