//! Extended attributes and POSIX ACLs of a volume's entries, natively:
//! read without following a final symlink, fingerprinted for scans and
//! the tree digest, carried between hosts in bounded batches, and applied
//! on the receiving side (what `blocks.send-attributes` and
//! `blocks.receive-attributes` of contract 0.3 do; values never enter the
//! module).
//!
//! POSIX ACLs are the attributes `system.posix_acl_access` and
//! `system.posix_acl_default`, whose values are the kernel's binary ACL
//! format (a version, then tag, permissions and numeric id per entry):
//! copying the raw value between Linux hosts copies the ACL, with ids
//! kept as numbers (as `rsync --numeric-ids`; the kernel maps them through
//! the caller's user namespace on both ends).
//!
//! # Order of a receiver's changes
//!
//! A file's attributes are set after its content and owner, and before
//! its mode bits:
//! - writing to a file, and changing its owner, make the kernel drop its
//!   `security.capability` (and chown its set-id bits); a chmod does not;
//! - setting `system.posix_acl_access` sets the group bits of the mode to
//!   the ACL's mask entry, and a later chmod sets the mask to the new
//!   group bits. The sender's mode shows its mask as group bits already,
//!   so a chmod to the sender's exact mode after the ACL leaves the mask
//!   as sent; a mode computed any other way (a umask, a default) rewrites
//!   the mask. Removing an ACL leaves the mode as it was, which the chmod
//!   then corrects.
//!
//! `the_mask_follows_the_acl_then_the_mode` and
//! `capabilities_survive_a_chmod_but_not_a_chown` check both.
//!
//! # Reaching an entry without leaving the volume
//!
//! Linux has no `*xattrat` calls before 6.13, and `fgetxattr` on an
//! `O_PATH` descriptor fails with `EBADF` (checked on 6.18); opening the entry itself for reading would follow a
//! final symlink unless `O_NOFOLLOW`, which then fails on symlinks, and
//! would block on a fifo or act on a device. So an entry is named as
//! `/proc/self/fd/<parent>/<name>` with the `l*` calls: the kernel resolves
//! `/proc/self/fd/<parent>` by the open descriptor, not by its text (a
//! "magic link" to the very directory cap-std opened inside the volume,
//! wherever it is now), then looks up `<name>`, one component that is
//! never `.`, `..` or holds a `/`, in that directory, and the `l*` calls
//! do not follow it if it is a symlink. Nothing in the volume can make
//! that lookup leave it. `/proc` is checked to be procfs once.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

use cap_fs_ext::DirExt;
use cap_std::fs::Dir;
use rustix::fs::XattrFlags;
use rustix::io::Errno;

/// A name or path as bytes, shown on one line: printable ASCII as it
/// is, anything else escaped (`\xNN`, `\n`, `\\`).
fn escaped(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Longest attribute name, `XATTR_NAME_MAX`.
pub const MAX_NAME: usize = 255;
/// Largest attribute value, `XATTR_SIZE_MAX`.
pub const MAX_VALUE: usize = 64 * 1024;
/// Most bytes the names of one entry take with a NUL after each,
/// `XATTR_LIST_MAX`: what `listxattr` can return at most. It also bounds
/// the attributes of an entry (32,768 one-byte names at most).
pub const MAX_NAMES_BYTES: usize = 64 * 1024;
/// Longest path in a batch.
pub const MAX_PATH: usize = 64 * 1024;
/// Most bytes of one encoded batch: a receiver refuses a larger frame
/// before reading it.
pub const MAX_BATCH_BYTES: usize = 16 << 20;
/// Most entries in one batch.
pub const MAX_BATCH_ENTRIES: usize = 16 * 1024;
/// Most attributes in one batch, all entries together (at least what one
/// entry may have, so that every entry fits a batch of its own by count).
pub const MAX_BATCH_ATTRIBUTES: usize = 64 * 1024;
/// The batch encoding's version, its first byte.
pub const WIRE_VERSION: u8 = 1;

/// The key context of [`digest`] and [`fingerprint`].
const DIGEST_CONTEXT: &str = "wasmover extended attributes v1";

/// The extended attributes of one entry, by name (sorted, unique), within
/// the kernel's limits ([`MAX_NAME`], [`MAX_VALUE`], [`MAX_NAMES_BYTES`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The names' bytes with a NUL after each.
    names_bytes: usize,
}

impl Attributes {
    /// No attributes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an attribute. `InvalidInput` for an empty name,
    /// one with a NUL or longer than [`MAX_NAME`], a value longer than
    /// [`MAX_VALUE`], or names beyond [`MAX_NAMES_BYTES`].
    pub fn insert(
        &mut self,
        name: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> io::Result<()> {
        let (name, value) = (name.into(), value.into());
        if let Some(problem) = name_problem(&name).or_else(|| value_problem(&value)) {
            return Err(invalid(io::ErrorKind::InvalidInput, &name, problem));
        }
        let added = if self.map.contains_key(&name) {
            0
        } else {
            name.len() + 1
        };
        if self.names_bytes + added > MAX_NAMES_BYTES {
            return Err(invalid(
                io::ErrorKind::InvalidInput,
                &name,
                format!("names of one entry exceed {MAX_NAMES_BYTES} bytes"),
            ));
        }
        self.names_bytes += added;
        self.map.insert(name, value);
        Ok(())
    }

    /// The value of `name`.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.map.get(name).map(Vec::as_slice)
    }

    /// Every attribute, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.map.iter().map(|(n, v)| (n.as_slice(), v.as_slice()))
    }

    /// How many attributes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Only the attributes in `namespaces`.
    pub fn only(mut self, namespaces: Namespaces) -> Self {
        self.map
            .retain(|name, _| namespaces.contains(Namespace::of(name)));
        self.names_bytes = self.map.keys().map(|n| n.len() + 1).sum();
        self
    }
}

fn name_problem(name: &[u8]) -> Option<String> {
    if name.is_empty() {
        Some("empty attribute name".into())
    } else if name.len() > MAX_NAME {
        Some(format!("attribute name longer than {MAX_NAME} bytes"))
    } else if name.contains(&0) {
        Some("attribute name holds a NUL byte".into())
    } else {
        None
    }
}

fn value_problem(value: &[u8]) -> Option<String> {
    (value.len() > MAX_VALUE).then(|| {
        format!(
            "attribute value of {} bytes, more than {MAX_VALUE}",
            value.len()
        )
    })
}

fn invalid(kind: io::ErrorKind, name: &[u8], problem: impl std::fmt::Display) -> io::Error {
    io::Error::new(kind, format!("{problem}: {}", escaped(name)))
}

/// The namespace of an attribute name: the part before the first dot,
/// which decides who may set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Namespace {
    /// `user.*`: the file's owner (regular files and directories only).
    User,
    /// `trusted.*`: `CAP_SYS_ADMIN` only, to read as to write.
    Trusted,
    /// `security.*`: as the security modules say (`security.capability`
    /// needs `CAP_SETFCAP`).
    Security,
    /// `system.*`: POSIX ACLs, by the file's owner.
    System,
    /// Any other prefix, which Linux file systems refuse.
    Other,
}

impl Namespace {
    /// The namespace of `name`.
    pub fn of(name: &[u8]) -> Self {
        match name.split(|&b| b == b'.').next() {
            Some(b"user") => Self::User,
            Some(b"trusted") => Self::Trusted,
            Some(b"security") => Self::Security,
            Some(b"system") => Self::System,
            _ => Self::Other,
        }
    }
}

/// A set of [`Namespace`]s: those a tree covers. [`Namespace::Other`]
/// is in none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Namespaces(u8);

impl Namespaces {
    /// No namespace: attributes are not covered.
    pub const NONE: Self = Self(0);
    /// Every namespace Linux has.
    pub const ALL: Self = Self(0b1111);

    fn bit(namespace: Namespace) -> u8 {
        match namespace {
            Namespace::User => 1,
            Namespace::System => 2,
            Namespace::Security => 4,
            Namespace::Trusted => 8,
            Namespace::Other => 0,
        }
    }

    /// The set of these namespaces.
    pub fn of(namespaces: impl IntoIterator<Item = Namespace>) -> Self {
        Self(namespaces.into_iter().map(Self::bit).fold(0, |a, b| a | b))
    }

    /// Whether `namespace` is in the set.
    pub fn contains(self, namespace: Namespace) -> bool {
        self.0 & Self::bit(namespace) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The set as its bits, for an atomic.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// The set of `bits`, as [`Namespaces::bits`] gave them.
    pub fn from_bits(bits: u8) -> Self {
        Self(bits & Self::ALL.0)
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::User => "user",
            Self::Trusted => "trusted",
            Self::Security => "security",
            Self::System => "system",
            Self::Other => "other",
        })
    }
}

/// A full-strength digest of `attributes` for the tree digest: all zeros
/// when there are none, else BLAKE3 (key derived from `wasmover extended
/// attributes v1`) over the count, then each name and value with their
/// lengths, by name.
pub fn digest(attributes: &Attributes) -> [u8; 32] {
    if attributes.is_empty() {
        return [0; 32];
    }
    let mut hasher = blake3::Hasher::new_derive_key(DIGEST_CONTEXT);
    hasher.update(&(attributes.len() as u64).to_le_bytes());
    for (name, value) in attributes.iter() {
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name);
        hasher.update(&(value.len() as u64).to_le_bytes());
        hasher.update(value);
    }
    *hasher.finalize().as_bytes()
}

/// `entry.attributes`: 0 when there are none, else the first 8 bytes of
/// [`digest`] (little-endian), never 0.
pub fn fingerprint(attributes: &Attributes) -> u64 {
    fingerprint_of(&digest(attributes))
}

/// The [`fingerprint`] of the attributes whose [`digest`] is `digest`.
pub fn fingerprint_of(digest: &[u8; 32]) -> u64 {
    if *digest == [0; 32] {
        return 0;
    }
    let head = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    head.max(1)
}

/// The entry `path` names: the directory holding its last component,
/// resolved through cap-std so that the lookup stays inside the volume
/// (`None`: `dir` itself), and that component (empty: `dir` itself, for
/// the path `` or `.`).
fn split(path: &[u8]) -> io::Result<(Option<&[u8]>, &[u8])> {
    if path.is_empty() || path == b"." {
        return Ok((None, b""));
    }
    let bad = path.starts_with(b"/")
        || path.contains(&0)
        || path
            .split(|&b| b == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b"..");
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid path {}", escaped(path)),
        ));
    }
    Ok(match path.iter().rposition(|&b| b == b'/') {
        Some(at) => (Some(&path[..at]), &path[at + 1..]),
        None => (None, path),
    })
}

/// Runs `f` on the directory holding `path`'s last component and that
/// component.
fn at_parent<R>(
    dir: &Dir,
    path: &[u8],
    f: impl FnOnce(&Dir, &[u8]) -> io::Result<R>,
) -> io::Result<R> {
    let (parent, name) = split(path)?;
    match parent {
        Some(parent) => {
            let parent = dir
                .open_dir_nofollow(OsStr::from_bytes(parent))
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", escaped(path))))?;
            f(&parent, name)
        }
        None => f(dir, name),
    }
}

/// An entry as the `*xattr` calls reach it (see the module's notes).
struct Target {
    path: CString,
    /// The directory itself (`/proc/self/fd/<dir>`, a magic link the
    /// calls must follow); else an entry in it, never followed.
    follow: bool,
}

impl Target {
    fn new(parent: impl AsFd, name: &[u8]) -> io::Result<Self> {
        if name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid name {}", escaped(name)),
            ));
        }
        proc_checked()?;
        let mut path = format!("/proc/self/fd/{}", parent.as_fd().as_raw_fd()).into_bytes();
        if !name.is_empty() {
            path.push(b'/');
            path.extend_from_slice(name);
        }
        Ok(Self {
            path: CString::new(path).expect("no NUL"),
            follow: name.is_empty(),
        })
    }

    fn list(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        if self.follow {
            rustix::fs::listxattr(&self.path, buf)
        } else {
            rustix::fs::llistxattr(&self.path, buf)
        }
    }

    fn list_len(&self) -> Result<usize, Errno> {
        if self.follow {
            rustix::fs::listxattr_query(&self.path)
        } else {
            rustix::fs::llistxattr_query(&self.path)
        }
    }

    fn get(&self, name: &CString, buf: &mut [u8]) -> Result<usize, Errno> {
        if self.follow {
            rustix::fs::getxattr(&self.path, name, buf)
        } else {
            rustix::fs::lgetxattr(&self.path, name, buf)
        }
    }

    fn get_len(&self, name: &CString) -> Result<usize, Errno> {
        if self.follow {
            rustix::fs::getxattr_query(&self.path, name)
        } else {
            rustix::fs::lgetxattr_query(&self.path, name)
        }
    }

    fn set(&self, name: &CString, value: &[u8]) -> Result<(), Errno> {
        if self.follow {
            rustix::fs::setxattr(&self.path, name, value, XattrFlags::empty())
        } else {
            rustix::fs::lsetxattr(&self.path, name, value, XattrFlags::empty())
        }
    }

    fn remove(&self, name: &CString) -> Result<(), Errno> {
        if self.follow {
            rustix::fs::removexattr(&self.path, name)
        } else {
            rustix::fs::lremovexattr(&self.path, name)
        }
    }
}

/// Fails unless `/proc` is procfs, checked once per process.
fn proc_checked() -> io::Result<()> {
    static PROC: OnceLock<Result<(), String>> = OnceLock::new();
    const PROC_SUPER_MAGIC: u64 = 0x9fa0;
    PROC.get_or_init(|| match rustix::fs::statfs("/proc/self/fd") {
        Ok(fs) if fs.f_type as u64 == PROC_SUPER_MAGIC => Ok(()),
        Ok(_) => Err("/proc is not procfs: extended attributes need it".into()),
        Err(e) => Err(format!(
            "/proc/self/fd: {e}: extended attributes need procfs"
        )),
    })
    .clone()
    .map_err(|e| io::Error::new(io::ErrorKind::Unsupported, e))
}

/// Whether a file system said it keeps no extended attributes (of this
/// kind).
fn unsupported(e: Errno) -> bool {
    e == Errno::NOTSUP || e == Errno::OPNOTSUPP
}

/// An error of `what` on attribute `name` (none: the entry's list) of the
/// entry `entry` (a name in its directory; empty: the directory itself).
fn context(entry: &[u8], what: &str, name: &[u8], e: Errno) -> io::Error {
    let entry = if entry.is_empty() {
        ".".into()
    } else {
        escaped(entry)
    };
    let name = if name.is_empty() {
        String::new()
    } else {
        format!(" {}", escaped(name))
    };
    io::Error::new(
        io::Error::from(e).kind(),
        format!("{entry}: {what}{name}: {e}"),
    )
}

/// Every extended attribute of the entry at `path` (relative to `dir`,
/// `` for `dir` itself), a symlink's own and not its target's. A file
/// system without extended attributes gives none. Attributes this process
/// may not read are not listed by the kernel (`trusted.*` without
/// `CAP_SYS_ADMIN`).
pub fn read(dir: &Dir, path: &[u8]) -> io::Result<Attributes> {
    at_parent(dir, path, |parent, name| read_at(parent, name))
}

/// [`read`] for the entry `name` (one component; empty for `parent`
/// itself) of an open directory, such as the one a scan walks: no lookup
/// of the parent's path.
pub fn read_at(parent: impl AsFd, name: &[u8]) -> io::Result<Attributes> {
    let target = Target::new(parent, name)?;
    let mut attributes = Attributes::new();
    // Most entries have none: one listxattr into the stack.
    let mut small = [0u8; 256];
    let mut large = Vec::new();
    let names: &[u8] = match target.list(&mut small) {
        Ok(len) => &small[..len],
        Err(e) if unsupported(e) => return Ok(attributes),
        Err(Errno::RANGE) => loop {
            // Grown since the first call: ask the size, try again.
            let len = match target.list_len() {
                Ok(len) => len,
                Err(e) => return Err(context(name, "list attributes", b"", e)),
            };
            large.resize(len.max(1), 0);
            match target.list(&mut large) {
                Ok(len) => break &large[..len],
                Err(Errno::RANGE) => continue,
                Err(e) => return Err(context(name, "list attributes", b"", e)),
            }
        },
        Err(e) => return Err(context(name, "list attributes", b"", e)),
    };
    let mut value = vec![0u8; 256];
    for attribute in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let c_name = CString::new(attribute).expect("split at NUL");
        let got = loop {
            match target.get(&c_name, &mut value) {
                Ok(len) => break Some(len),
                // Removed since it was listed.
                Err(Errno::NODATA) => break None,
                Err(Errno::RANGE) => match target.get_len(&c_name) {
                    Ok(len) => value.resize(len.max(value.len() + 1), 0),
                    Err(Errno::NODATA) => break None,
                    Err(e) => return Err(context(name, "read attribute", attribute, e)),
                },
                Err(e) => return Err(context(name, "read attribute", attribute, e)),
            }
        };
        if let Some(len) = got {
            attributes.insert(attribute, &value[..len])?;
        }
    }
    Ok(attributes)
}

/// What [`apply`] did to one entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Attributes set (new or with another value).
    pub set: u64,
    /// Attributes removed because the sender lacks them.
    pub removed: u64,
    /// Attributes left as they were because this process may not change
    /// them (`trusted.*` unless privileged; `trusted.*` and `security.*`
    /// the kernel refused) or the file system keeps none of that kind,
    /// by namespace.
    pub skipped: BTreeMap<Namespace, u64>,
}

impl Applied {
    /// All attributes skipped.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        self.set + self.removed > 0
    }

    fn skip(&mut self, name: &[u8]) {
        *self.skipped.entry(Namespace::of(name)).or_default() += 1;
    }
}

/// Makes the attributes of the entry at `path` (as for [`read`]) in
/// `covered` equal to `want`: sets those that differ and removes those
/// `want` lacks; attributes of other namespaces are left alone.
/// `trusted.*` is left alone unless `privileged` (set and removed only
/// then); a change the kernel refuses to `trusted.*` or `security.*`
/// (`EPERM`, `EACCES`), or to any attribute the file system does not keep
/// (`ENOTSUP`), is skipped and counted; any other failure is an error.
/// Call it after the entry's content and owner, before its mode (see the
/// module's notes).
pub fn apply(
    dir: &Dir,
    path: &[u8],
    want: &Attributes,
    covered: Namespaces,
    privileged: bool,
) -> io::Result<Applied> {
    at_parent(dir, path, |parent, name| {
        apply_at(parent, name, want, covered, privileged)
    })
}

/// [`apply`] for the entry `name` of an open directory.
pub fn apply_at(
    parent: impl AsFd,
    name: &[u8],
    want: &Attributes,
    covered: Namespaces,
    privileged: bool,
) -> io::Result<Applied> {
    let parent = parent.as_fd();
    let have = read_at(parent, name)?.only(covered);
    let target = Target::new(parent, name)?;
    let mut applied = Applied::default();
    let may_skip = |attribute: &[u8], e: Errno| {
        unsupported(e)
            || (matches!(
                Namespace::of(attribute),
                Namespace::Trusted | Namespace::Security
            ) && (e == Errno::PERM || e == Errno::ACCESS))
    };
    for (attribute, _) in have.iter().filter(|(n, _)| want.get(n).is_none()) {
        if Namespace::of(attribute) == Namespace::Trusted && !privileged {
            continue;
        }
        let c_name = CString::new(attribute).expect("no NUL in a listed name");
        match target.remove(&c_name) {
            Ok(()) => applied.removed += 1,
            Err(Errno::NODATA) => {}
            Err(e) if may_skip(attribute, e) => applied.skip(attribute),
            Err(e) => return Err(context(name, "remove attribute", attribute, e)),
        }
    }
    for (attribute, value) in want.iter() {
        if have.get(attribute) == Some(value) {
            continue;
        }
        if Namespace::of(attribute) == Namespace::Trusted && !privileged {
            applied.skip(attribute);
            continue;
        }
        let c_name = CString::new(attribute).expect("Attributes holds no NUL");
        match target.set(&c_name, value) {
            Ok(()) => applied.set += 1,
            Err(e) if may_skip(attribute, e) => applied.skip(attribute),
            Err(e) => return Err(context(name, "set attribute", attribute, e)),
        }
    }
    Ok(applied)
}

/// A batch of `(path, attributes)` pairs being encoded for the wire:
///
/// ```text
/// batch     = version:u8 (1)  count:u32  entry{count}
/// entry     = path_len:u32  path  attr_count:u32  attribute{attr_count}
/// attribute = name_len:u8 (1..=255)  name  value_len:u32 (<= 65536)  value
/// ```
///
/// Integers are little-endian; names are sorted and unique within an
/// entry. A batch holds at most [`MAX_BATCH_BYTES`], [`MAX_BATCH_ENTRIES`]
/// and [`MAX_BATCH_ATTRIBUTES`]: [`Batch::fits`] says whether an entry
/// still fits; one that fits no batch (more than 16 MiB of attributes) is
/// an error of [`Batch::push`].
#[derive(Debug)]
pub struct Batch {
    buf: Vec<u8>,
    entries: u32,
    attributes: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(4096);
        buf.push(WIRE_VERSION);
        buf.extend_from_slice(&0u32.to_le_bytes());
        Self {
            buf,
            entries: 0,
            attributes: 0,
        }
    }

    /// The bytes one entry takes in a batch.
    pub fn entry_len(path: &[u8], attributes: &Attributes) -> usize {
        4 + path.len()
            + 4
            + attributes
                .iter()
                .map(|(n, v)| 1 + n.len() + 4 + v.len())
                .sum::<usize>()
    }

    /// Whether `path` with `attributes` fits in this batch.
    pub fn fits(&self, path: &[u8], attributes: &Attributes) -> bool {
        self.buf.len() + Self::entry_len(path, attributes) <= MAX_BATCH_BYTES
            && (self.entries as usize) < MAX_BATCH_ENTRIES
            && self.attributes + attributes.len() <= MAX_BATCH_ATTRIBUTES
    }

    /// Adds an entry; `InvalidInput` if it does not fit ([`Batch::fits`])
    /// or its path is longer than [`MAX_PATH`].
    pub fn push(&mut self, path: &[u8], attributes: &Attributes) -> io::Result<()> {
        if path.len() > MAX_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("path longer than {MAX_PATH} bytes: {}", escaped(path)),
            ));
        }
        if !self.fits(path, attributes) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the attributes of {} ({} bytes) do not fit {}",
                    escaped(path),
                    Self::entry_len(path, attributes),
                    if self.is_empty() {
                        "any batch"
                    } else {
                        "this batch"
                    },
                ),
            ));
        }
        self.buf
            .extend_from_slice(&(path.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(path);
        self.buf
            .extend_from_slice(&(attributes.len() as u32).to_le_bytes());
        for (name, value) in attributes.iter() {
            self.buf.push(name.len() as u8);
            self.buf.extend_from_slice(name);
            self.buf
                .extend_from_slice(&(value.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(value);
        }
        self.entries += 1;
        self.attributes += attributes.len();
        Ok(())
    }

    /// Entries in the batch.
    pub fn len(&self) -> usize {
        self.entries as usize
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Bytes encoded so far.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// The encoded batch.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[1..5].copy_from_slice(&self.entries.to_le_bytes());
        self.buf
    }
}

/// Reads a batch's fields, with errors naming what is wrong.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &str) -> io::Result<&'a [u8]> {
        let left = self.bytes.len() - self.at;
        if len > left {
            return Err(bad_batch(format!(
                "truncated at byte {}: {what} needs {len} bytes, {left} left",
                self.at
            )));
        }
        let taken = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(taken)
    }

    fn u8(&mut self, what: &str) -> io::Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> io::Result<usize> {
        let bytes = self.take(4, what)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize)
    }
}

fn bad_batch(message: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("attribute batch: {message}"),
    )
}

/// Decodes a batch [`Batch`] encoded. Anything malformed (truncated,
/// trailing bytes, over a limit, names unsorted, repeated, empty or with
/// a NUL) is `InvalidData` with a message. Memory stays proportional to
/// `bytes`, which must not exceed [`MAX_BATCH_BYTES`] (a receiver checks
/// a frame's length before reading it).
pub fn decode_batch(bytes: &[u8]) -> io::Result<Vec<(Vec<u8>, Attributes)>> {
    if bytes.len() > MAX_BATCH_BYTES {
        return Err(bad_batch(format!(
            "{} bytes, more than {MAX_BATCH_BYTES}",
            bytes.len()
        )));
    }
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.u8("the version")?;
    if version != WIRE_VERSION {
        return Err(bad_batch(format!("version {version}, not {WIRE_VERSION}")));
    }
    let count = reader.u32("the entry count")?;
    if count > MAX_BATCH_ENTRIES {
        return Err(bad_batch(format!(
            "{count} entries, more than {MAX_BATCH_ENTRIES}"
        )));
    }
    // Not allocated ahead by the declared count: each entry takes bytes.
    let mut entries = Vec::new();
    let mut total_attributes = 0usize;
    for _ in 0..count {
        let path_len = reader.u32("a path length")?;
        if path_len > MAX_PATH {
            return Err(bad_batch(format!(
                "path of {path_len} bytes, more than {MAX_PATH}"
            )));
        }
        let path = reader.take(path_len, "a path")?.to_vec();
        let attr_count = reader.u32("an attribute count")?;
        total_attributes = total_attributes.saturating_add(attr_count);
        if total_attributes > MAX_BATCH_ATTRIBUTES {
            return Err(bad_batch(format!(
                "more than {MAX_BATCH_ATTRIBUTES} attributes"
            )));
        }
        let mut attributes = Attributes::new();
        let mut last: Option<&[u8]> = None;
        for _ in 0..attr_count {
            let name_len = reader.u8("a name length")? as usize;
            let name = reader.take(name_len, "a name")?;
            if let Some(problem) = name_problem(name) {
                return Err(bad_batch(format!("{problem} for {}", escaped(&path))));
            }
            if last.is_some_and(|last| last >= name) {
                return Err(bad_batch(format!(
                    "attribute names of {} unsorted or repeated at {}",
                    escaped(&path),
                    escaped(name)
                )));
            }
            last = Some(name);
            let value_len = reader.u32("a value length")?;
            if value_len > MAX_VALUE {
                return Err(bad_batch(format!(
                    "value of {value_len} bytes, more than {MAX_VALUE}, for {} {}",
                    escaped(&path),
                    escaped(name)
                )));
            }
            let value = reader.take(value_len, "a value")?;
            attributes
                .insert(name, value)
                .map_err(|e| bad_batch(format!("{}: {e}", escaped(&path))))?;
        }
        entries.push((path, attributes));
    }
    if reader.at != bytes.len() {
        return Err(bad_batch(format!(
            "{} bytes after the last entry",
            bytes.len() - reader.at
        )));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;
    use std::process::Command;
    use std::time::Instant;

    use cap_std::ambient_authority;
    use proptest::prelude::*;

    use super::*;

    fn privileged() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// A fresh directory whose file system keeps `user.*` attributes; a
    /// test directory without them fails the test, loudly.
    fn volume() -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        let probe = tmp.path().join("probe");
        std::fs::write(&probe, b"").unwrap();
        if let Err(e) = rustix::fs::setxattr(&probe, "user.probe", b"1", XattrFlags::empty()) {
            panic!(
                "{} keeps no user.* extended attributes ({e}): run the tests with \
                 TMPDIR on ext4, XFS, Btrfs or tmpfs (Linux 6.6 and later)",
                tmp.path().display()
            );
        }
        std::fs::remove_file(&probe).unwrap();
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
        (tmp, dir)
    }

    fn attrs(pairs: &[(&str, &[u8])]) -> Attributes {
        let mut attributes = Attributes::new();
        for (name, value) in pairs {
            attributes.insert(name.as_bytes(), *value).unwrap();
        }
        attributes
    }

    fn run(command: &str, args: &[&str]) -> String {
        let out = Command::new(command)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{command}: {e} (scripts/setup installs it)"));
        assert!(
            out.status.success(),
            "{command} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `getfacl`'s ACL of `path` without its `# file:` line.
    fn getfacl(path: &Path) -> String {
        run("getfacl", &["-n", path.to_str().unwrap()])
            .lines()
            .filter(|l| !l.starts_with("# file:"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn user_attributes_are_read_fingerprinted_applied_and_removed() {
        let (tmp, dir) = volume();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        // Names need not be UTF-8.
        let src = b"d/s\xffrc";
        let dst = b"d/dst";
        std::fs::write(tmp.path().join(OsStr::from_bytes(src)), b"x").unwrap();
        std::fs::write(tmp.path().join(OsStr::from_bytes(dst)), b"x").unwrap();

        assert!(read(&dir, src).unwrap().is_empty());
        assert_eq!(fingerprint(&Attributes::new()), 0);
        assert_eq!(digest(&Attributes::new()), [0; 32]);

        let want = attrs(&[("user.b", b"two"), ("user.a", b"one"), ("user.empty", b"")]);
        let applied = apply(&dir, src, &want, Namespaces::ALL, false).unwrap();
        assert_eq!(
            (applied.set, applied.removed, applied.skipped_total()),
            (3, 0, 0)
        );
        let got = read(&dir, src).unwrap();
        assert_eq!(got, want);
        let names: Vec<_> = got.iter().map(|(n, _)| n.to_vec()).collect();
        assert_eq!(names, [&b"user.a"[..], b"user.b", b"user.empty"]);
        assert_eq!(got.get(b"user.empty"), Some(&b""[..]));

        // The fingerprint tells values and names apart.
        let fp = fingerprint(&got);
        assert_ne!(fp, 0);
        assert_eq!(fp, fingerprint(&want));
        let mut other = want.clone();
        other.insert("user.b", "twO").unwrap();
        assert_ne!(fingerprint(&other), fp);
        assert_ne!(
            fingerprint(&attrs(&[("user.ab", b"")])),
            fingerprint(&attrs(&[("user.a", b"b")]))
        );

        // The destination has a stale one and a different value.
        apply(
            &dir,
            dst,
            &attrs(&[("user.stale", b"x"), ("user.a", b"old")]),
            Namespaces::ALL,
            false,
        )
        .unwrap();
        let applied = apply(&dir, dst, &got, Namespaces::ALL, false).unwrap();
        assert_eq!((applied.set, applied.removed), (3, 1));
        assert_eq!(read(&dir, dst).unwrap(), want);
        assert_eq!(fingerprint(&read(&dir, dst).unwrap()), fp);
        // Equal already: nothing to do.
        assert!(
            !apply(&dir, dst, &got, Namespaces::ALL, false)
                .unwrap()
                .changed()
        );
        // Outside the covered namespaces nothing is set or removed.
        let users = Namespaces::of([Namespace::User]);
        assert_eq!(
            got.clone().only(Namespaces::of([Namespace::System])),
            Attributes::new()
        );
        assert_eq!(got.clone().only(users), got);
        let applied = apply(&dir, dst, &Attributes::new(), Namespaces::NONE, false).unwrap();
        assert!(!applied.changed());
        assert_eq!(read(&dir, dst).unwrap(), want);
        // Everything removed when the sender has none.
        let applied = apply(&dir, dst, &Attributes::new(), Namespaces::ALL, false).unwrap();
        assert_eq!((applied.set, applied.removed), (0, 3));
        assert!(read(&dir, dst).unwrap().is_empty());

        // A value over the stack buffer, up to the kernel's limit where
        // the file system takes it (ext4 keeps a block's worth).
        let big = vec![7u8; 3000];
        apply(
            &dir,
            dst,
            &attrs(&[("user.big", &big)]),
            Namespaces::ALL,
            false,
        )
        .unwrap();
        assert_eq!(read(&dir, dst).unwrap().get(b"user.big"), Some(&big[..]));
        // The volume's root by the empty path.
        apply(
            &dir,
            b"",
            &attrs(&[("user.root", b"r")]),
            Namespaces::ALL,
            false,
        )
        .unwrap();
        assert_eq!(read(&dir, b".").unwrap(), attrs(&[("user.root", b"r")]));
    }

    #[test]
    fn many_names_grow_the_list_buffer() {
        let (tmp, dir) = volume();
        std::fs::write(tmp.path().join("f"), b"").unwrap();
        let mut want = Attributes::new();
        for i in 0..40 {
            want.insert(format!("user.a-rather-long-name-{i:03}"), vec![i as u8; 8])
                .unwrap();
        }
        apply(&dir, b"f", &want, Namespaces::ALL, false).unwrap();
        assert_eq!(read(&dir, b"f").unwrap(), want);
    }

    #[test]
    fn paths_stay_inside_the_volume() {
        let (tmp, dir) = volume();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        for path in [
            &b"../x"[..],
            b"/etc",
            b"d/../d",
            b"d//x",
            b"d/./x",
            b"a\0b",
            b"d/",
        ] {
            let e = read(&dir, path).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{}", escaped(path));
        }
        // A symlinked directory that leads out is not followed out.
        std::os::unix::fs::symlink("/", tmp.path().join("out")).unwrap();
        assert!(read(&dir, b"out/etc").is_err());
        assert!(
            apply(
                &dir,
                b"out/tmp",
                &attrs(&[("user.x", b"1")]),
                Namespaces::ALL,
                false
            )
            .is_err()
        );
        assert_eq!(
            read(&dir, b"d/missing").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn a_symlink_has_its_own_attributes_not_its_targets() {
        let (tmp, dir) = volume();
        std::fs::write(tmp.path().join("target"), b"t").unwrap();
        std::os::unix::fs::symlink("target", tmp.path().join("link")).unwrap();
        apply(
            &dir,
            b"target",
            &attrs(&[("user.t", b"target's")]),
            Namespaces::ALL,
            false,
        )
        .unwrap();
        assert!(read(&dir, b"link").unwrap().is_empty());
        // A dangling one reads too.
        std::os::unix::fs::symlink("nowhere", tmp.path().join("dangling")).unwrap();
        assert!(read(&dir, b"dangling").unwrap().is_empty());
        if !privileged() {
            eprintln!("not root: a symlink's own trusted.* attribute not checked");
            return;
        }
        // Linux keeps no user.* on symlinks; trusted.* it does.
        let own = attrs(&[("trusted.link", b"link's")]);
        let applied = apply(&dir, b"link", &own, Namespaces::ALL, true).unwrap();
        assert_eq!(applied.set, 1);
        assert_eq!(read(&dir, b"link").unwrap(), own);
        assert_eq!(
            read(&dir, b"target").unwrap(),
            attrs(&[("user.t", b"target's")])
        );
        // Removing the link's leaves the target's.
        apply(&dir, b"link", &Attributes::new(), Namespaces::ALL, true).unwrap();
        assert!(read(&dir, b"link").unwrap().is_empty());
        assert_eq!(read(&dir, b"target").unwrap().len(), 1);
    }

    #[test]
    fn trusted_attributes_are_skipped_unless_privileged() {
        let (tmp, dir) = volume();
        std::fs::write(tmp.path().join("f"), b"").unwrap();
        let want = attrs(&[("trusted.t", b"1"), ("user.u", b"2")]);
        let applied = apply(&dir, b"f", &want, Namespaces::ALL, false).unwrap();
        assert_eq!(applied.set, 1);
        assert_eq!(applied.skipped, BTreeMap::from([(Namespace::Trusted, 1)]));
        assert_eq!(read(&dir, b"f").unwrap(), attrs(&[("user.u", b"2")]));
        if !privileged() {
            eprintln!("not root: setting trusted.* as privileged not checked");
            return;
        }
        let applied = apply(&dir, b"f", &want, Namespaces::ALL, true).unwrap();
        assert_eq!((applied.set, applied.skipped_total()), (1, 0));
        assert_eq!(read(&dir, b"f").unwrap(), want);
        // Unprivileged, one present is neither seen as extra nor removed.
        let applied = apply(
            &dir,
            b"f",
            &attrs(&[("user.u", b"2")]),
            Namespaces::ALL,
            false,
        )
        .unwrap();
        assert_eq!((applied.removed, applied.skipped_total()), (0, 0));
        assert_eq!(read(&dir, b"f").unwrap(), want);
    }

    /// A version 2 file capability: cap_net_bind_service (10) permitted
    /// and effective.
    fn net_bind_service_capability() -> Vec<u8> {
        let mut value = Vec::new();
        value.extend_from_slice(&0x0200_0001u32.to_le_bytes()); // v2, effective
        value.extend_from_slice(&(1u32 << 10).to_le_bytes()); // permitted, low
        value.extend_from_slice(&0u32.to_le_bytes()); // inheritable, low
        value.extend_from_slice(&0u32.to_le_bytes()); // permitted, high
        value.extend_from_slice(&0u32.to_le_bytes()); // inheritable, high
        value
    }

    #[test]
    fn a_file_capability_is_copied_as_root_and_counted_as_skipped_otherwise() {
        let (tmp, dir) = volume();
        std::fs::write(tmp.path().join("dst"), b"binary").unwrap();
        if !privileged() {
            let want = attrs(&[("security.capability", &net_bind_service_capability())]);
            let applied = apply(&dir, b"dst", &want, Namespaces::ALL, false).unwrap();
            assert_eq!(applied.skipped, BTreeMap::from([(Namespace::Security, 1)]));
            assert!(read(&dir, b"dst").unwrap().is_empty());
            eprintln!("not root: security.capability skipped, as expected");
            return;
        }
        std::fs::write(tmp.path().join("src"), b"binary").unwrap();
        let src = tmp.path().join("src");
        run(
            "setcap",
            &["cap_net_bind_service+ep", src.to_str().unwrap()],
        );
        let got = read(&dir, b"src").unwrap();
        assert_eq!(
            got.get(b"security.capability"),
            Some(&net_bind_service_capability()[..])
        );
        let applied = apply(&dir, b"dst", &got, Namespaces::ALL, true).unwrap();
        assert_eq!((applied.set, applied.skipped_total()), (1, 0));
        let dst = tmp.path().join("dst");
        let shown = run("getcap", &[dst.to_str().unwrap()]);
        assert!(shown.contains("cap_net_bind_service=ep"), "{shown}");
    }

    #[test]
    fn capabilities_survive_a_chmod_but_not_a_chown() {
        if !privileged() {
            eprintln!("not root: setting security.capability not checked");
            return;
        }
        let (tmp, dir) = volume();
        let path = tmp.path().join("f");
        std::fs::write(&path, b"binary").unwrap();
        let caps = attrs(&[("security.capability", &net_bind_service_capability())]);
        apply(&dir, b"f", &caps, Namespaces::ALL, true).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert_eq!(read(&dir, b"f").unwrap(), caps, "a chmod keeps it");
        std::os::unix::fs::chown(&path, Some(1234), Some(1234)).unwrap();
        assert!(read(&dir, b"f").unwrap().is_empty(), "a chown drops it");
        apply(&dir, b"f", &caps, Namespaces::ALL, true).unwrap();
        std::fs::write(&path, b"rewritten").unwrap();
        assert!(read(&dir, b"f").unwrap().is_empty(), "a write drops it");
    }

    #[test]
    fn acls_are_copied_as_getfacl_shows_them() {
        let (tmp, dir) = volume();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&dst).unwrap();
        let file = src.join("f");
        std::fs::write(&file, b"x").unwrap();
        std::fs::write(dst.join("f"), b"x").unwrap();
        run(
            "setfacl",
            &["-m", "u:1234:rwx,g:2345:r,m::r-x", file.to_str().unwrap()],
        );
        run(
            "setfacl",
            &[
                "-m",
                "u:1234:rx",
                "-d",
                "-m",
                "u:1234:rwx,g::r",
                src.to_str().unwrap(),
            ],
        );
        let file_acl = read(&dir, b"src/f").unwrap();
        assert!(file_acl.get(b"system.posix_acl_access").is_some());
        let dir_acl = read(&dir, b"src").unwrap();
        let names: Vec<_> = dir_acl.iter().map(|(n, _)| n.to_vec()).collect();
        assert_eq!(
            names,
            [&b"system.posix_acl_access"[..], b"system.posix_acl_default"]
        );

        apply(&dir, b"dst/f", &file_acl, Namespaces::ALL, false).unwrap();
        apply(&dir, b"dst", &dir_acl, Namespaces::ALL, false).unwrap();
        assert_eq!(getfacl(&dst.join("f")), getfacl(&file));
        assert_eq!(getfacl(&dst), getfacl(&src));
        assert_eq!(read(&dir, b"dst/f").unwrap(), file_acl);
        assert_eq!(
            fingerprint(&read(&dir, b"dst").unwrap()),
            fingerprint(&dir_acl)
        );
        // A file made in the copied directory inherits the default ACL.
        std::fs::write(dst.join("new"), b"").unwrap();
        assert!(getfacl(&dst.join("new")).contains("user:1234:rwx"));

        // The sender has none: removed (the mode then says the rest).
        apply(&dir, b"dst/new", &Attributes::new(), Namespaces::ALL, false).unwrap();
        assert!(read(&dir, b"dst/new").unwrap().is_empty());
        assert!(!getfacl(&dst.join("new")).contains("user:1234"));
    }

    #[test]
    fn the_mask_follows_the_acl_then_the_mode() {
        let (tmp, dir) = volume();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::write(&src, b"x").unwrap();
        std::fs::write(&dst, b"x").unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
        run(
            "setfacl",
            &["-m", "u:1234:rwx,m::r-x", src.to_str().unwrap()],
        );
        // The source's mode shows the mask as its group bits.
        let src_mode = mode(&src);
        assert_eq!(src_mode & 0o070, 0o050);

        // Setting the ACL sets the destination's group bits to its mask.
        apply(
            &dir,
            b"dst",
            &read(&dir, b"src").unwrap(),
            Namespaces::ALL,
            false,
        )
        .unwrap();
        assert_eq!(mode(&dst), 0o650);
        // A chmod to the sender's mode afterwards keeps the mask as sent.
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(src_mode)).unwrap();
        assert_eq!(getfacl(&dst), getfacl(&src));
        // Any other mode afterwards rewrites the mask: the mover must set
        // the sender's mode, and set it after the attributes.
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(getfacl(&dst).contains("mask::---"), "{}", getfacl(&dst));
        assert_ne!(read(&dir, b"dst").unwrap(), read(&dir, b"src").unwrap());
        // Removing the ACL leaves the group bits as the mask had them.
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o650)).unwrap();
        apply(&dir, b"dst", &Attributes::new(), Namespaces::ALL, false).unwrap();
        assert_eq!(mode(&dst), 0o650);
    }

    #[test]
    fn special_files_are_read_without_opening_them() {
        let (tmp, dir) = volume();
        // Opening a fifo to read it would block until a writer comes.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            tmp.path().join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(read(&dir, b"fifo").unwrap().is_empty());
        if privileged() {
            let own = attrs(&[("trusted.f", b"1")]);
            apply(&dir, b"fifo", &own, Namespaces::ALL, true).unwrap();
            assert_eq!(read(&dir, b"fifo").unwrap(), own);
        }
    }

    fn attributes_strategy() -> impl Strategy<Value = Attributes> {
        let name = proptest::collection::vec(1u8..=255, 1..=24);
        let value = proptest::collection::vec(any::<u8>(), 0..64);
        proptest::collection::btree_map(name, value, 0..6).prop_map(|map| {
            let mut attributes = Attributes::new();
            for (name, value) in map {
                attributes.insert(name, value).unwrap();
            }
            attributes
        })
    }

    fn batch_strategy() -> impl Strategy<Value = Vec<(Vec<u8>, Attributes)>> {
        let path = proptest::collection::vec(any::<u8>(), 0..40);
        proptest::collection::vec((path, attributes_strategy()), 0..8)
    }

    fn encode(entries: &[(Vec<u8>, Attributes)]) -> Vec<u8> {
        let mut batch = Batch::new();
        for (path, attributes) in entries {
            batch.push(path, attributes).unwrap();
        }
        assert_eq!(batch.len(), entries.len());
        batch.finish()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn batches_round_trip(entries in batch_strategy()) {
            let bytes = encode(&entries);
            prop_assert_eq!(decode_batch(&bytes).unwrap(), entries);
        }

        #[test]
        fn every_cut_of_a_batch_is_refused(entries in batch_strategy()) {
            let bytes = encode(&entries);
            for len in 0..bytes.len() {
                let e = decode_batch(&bytes[..len]).unwrap_err();
                prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            }
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert_eq!(
                decode_batch(&longer).unwrap_err().kind(),
                io::ErrorKind::InvalidData
            );
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..200)
        ) {
            if let Some(first) = bytes.first_mut() {
                *first = WIRE_VERSION;
            }
            if let Err(e) = decode_batch(&bytes) {
                prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            }
        }
    }

    #[test]
    fn a_truncated_batch_says_where() {
        let entries = vec![(b"a/b".to_vec(), attrs(&[("user.x", b"value")]))];
        let bytes = encode(&entries);
        let e = decode_batch(&bytes[..bytes.len() - 2]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(
            e.to_string().contains("a value needs 5 bytes, 3 left"),
            "{e}"
        );
    }

    /// Bytes of a batch with one entry `a` holding the given raw
    /// attributes, `(name, declared value length, value)`.
    fn raw_batch(attributes: &[(&[u8], u32, &[u8])]) -> Vec<u8> {
        let mut bytes = vec![WIRE_VERSION];
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.push(b'a');
        bytes.extend_from_slice(&(attributes.len() as u32).to_le_bytes());
        for (name, len, value) in attributes {
            bytes.push(name.len() as u8);
            bytes.extend_from_slice(name);
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(value);
        }
        bytes
    }

    #[test]
    fn hostile_batches_are_refused_before_allocating() {
        let refused = |bytes: &[u8], says: &str| {
            let e = decode_batch(bytes).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(e.to_string().contains(says), "{e} should say {says}");
        };
        refused(&raw_batch(&[(b"user.x", 1 << 20, b"")]), "more than 65536");
        refused(&raw_batch(&[(b"user.x", u32::MAX, b"")]), "more than 65536");
        refused(&raw_batch(&[(b"", 0, b"")]), "empty attribute name");
        refused(&raw_batch(&[(b"user\0x", 0, b"")]), "NUL");
        refused(
            &raw_batch(&[(b"user.b", 0, b""), (b"user.a", 0, b"")]),
            "unsorted or repeated",
        );
        refused(
            &raw_batch(&[(b"user.a", 0, b""), (b"user.a", 0, b"")]),
            "unsorted or repeated",
        );
        // Counts far beyond the bytes: refused by limit or by truncation,
        // not by allocating what they declare.
        let mut bytes = vec![WIRE_VERSION];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        refused(&bytes, "entries, more than");
        let mut bytes = vec![WIRE_VERSION];
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        refused(&bytes, "path of");
        let mut bytes = raw_batch(&[]);
        let at = bytes.len() - 4;
        bytes[at..].copy_from_slice(&1_000_000u32.to_le_bytes());
        refused(&bytes, "attributes");
        refused(&[2, 0, 0, 0, 0], "version 2");
        refused(&vec![WIRE_VERSION; MAX_BATCH_BYTES + 1], "more than");
    }

    #[test]
    fn limits_are_kept_when_encoding() {
        let mut attributes = Attributes::new();
        assert!(attributes.insert(vec![b'n'; 256], b"").is_err());
        assert!(attributes.insert("user.x", vec![0; MAX_VALUE + 1]).is_err());
        assert!(attributes.insert("user.x", vec![0; MAX_VALUE]).is_ok());
        // 300 values of 64 KiB are more than a batch can carry.
        for i in 0..300 {
            attributes
                .insert(format!("user.{i}"), vec![0; MAX_VALUE])
                .unwrap();
        }
        let mut batch = Batch::new();
        assert!(!batch.fits(b"f", &attributes));
        let e = batch.push(b"f", &attributes).unwrap_err();
        assert!(e.to_string().contains("do not fit any batch"), "{e}");
        // Names of one entry are bounded as listxattr bounds them.
        let mut many = Attributes::new();
        let result = (0..10_000).try_for_each(|i| many.insert(format!("user.{i:08}"), b""));
        assert!(result.is_err());
        assert!(many.len() < 10_000);
        let mut batch = Batch::new();
        for _ in 0..MAX_BATCH_ENTRIES {
            batch.push(b"p", &Attributes::new()).unwrap();
        }
        assert!(!batch.fits(b"p", &Attributes::new()));
        assert_eq!(
            decode_batch(&batch.finish()).unwrap().len(),
            MAX_BATCH_ENTRIES
        );
    }

    /// What a scan pays per entry with attributes on: `read` and
    /// `fingerprint` of 100,000 files without attributes, by path from the
    /// volume root and by name in an open directory (as a walk holds it).
    /// `cargo test --release -p wasmover-host --lib attributes::tests::cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check: run it by name with --ignored --nocapture"]
    fn cost_of_reading_no_attributes() {
        let (tmp, dir) = volume();
        let files = 100_000;
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        for i in 0..files {
            std::fs::write(tmp.path().join(format!("d/{i:06}")), b"").unwrap();
        }
        let sub = dir.open_dir("d").unwrap();
        for round in 0..3 {
            let start = Instant::now();
            let mut sum = 0u64;
            for i in 0..files {
                let name = format!("{i:06}");
                sum += fingerprint(&read_at(&sub, name.as_bytes()).unwrap());
            }
            let by_name = start.elapsed();
            let start = Instant::now();
            for i in 0..files {
                let path = format!("d/{i:06}");
                sum += fingerprint(&read(&dir, path.as_bytes()).unwrap());
            }
            let by_path = start.elapsed();
            let start = Instant::now();
            for i in 0..files {
                let name = format!("{i:06}");
                let stat =
                    rustix::fs::statat(&sub, name.as_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
                sum += stat.unwrap().st_size as u64;
            }
            let stat = start.elapsed();
            assert_eq!(sum, 0);
            eprintln!(
                "round {round}: {files} files without attributes on {}: read_at+fingerprint \
                 {:.2} µs/file ({by_name:.2?}), read+fingerprint by path {:.2} µs/file \
                 ({by_path:.2?}); for scale, fstatat {:.2} µs/file",
                tmp.path().display(),
                by_name.as_secs_f64() * 1e6 / files as f64,
                by_path.as_secs_f64() * 1e6 / files as f64,
                stat.as_secs_f64() * 1e6 / files as f64,
            );
        }
    }
}
