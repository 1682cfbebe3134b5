//! The changes a module makes to a tree by name: directories, symlinks,
//! hard links, owners, removals and metadata.

use std::ffi::OsStr;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cap_fs_ext::{DirExt, SystemTimeSpec};
use cap_std::fs::FileTypeExt;
use cap_std::fs::{Dir, Permissions, PermissionsExt};
use rustix::fs::{AtFlags, FileType, Mode, Timestamps, UTIME_OMIT};
use rustix::time::Timespec;

use super::scan::stat_stamp;
use super::{Tree, checked, staging_path};
use crate::volume::error::VolumeError;
use crate::volume::path;
use crate::volume::watch::Watch;

/// A special file [`Tree::make_node`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// A named pipe.
    Fifo,
    /// A Unix socket's name.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
}

impl Tree {
    /// Creates a directory; fine if it is one already.
    pub fn create_dir(&self, path: &OsStr) -> Result<(), VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        match self.dir.create_dir(path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && self.dir.is_dir(path) => Ok(()),
            r => r.map_err(VolumeError::io(path)),
        }
    }

    /// Creates or atomically replaces a symlink.
    pub fn symlink(&self, target: &OsStr, path: &OsStr) -> Result<(), VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        let staged = staging_path(path);
        let _ = self.dir.remove_file(&staged);
        // The target is stored as text, like rsync's --links: creating a
        // link never follows it, and nothing here ever resolves it outside.
        self.dir
            .symlink_contents(target, &staged)
            .map_err(VolumeError::io(path))?;
        self.dir
            .rename(&staged, &self.dir, path)
            .map_err(VolumeError::io(path))
    }

    /// Makes `path` a hard link to the file at `existing`, replacing what
    /// is at `path` atomically (linked beside it, then renamed over it).
    pub fn hard_link(&self, existing: &OsStr, path: &OsStr) -> Result<(), VolumeError> {
        let (existing, path) = (checked(existing)?, checked(path)?);
        self.writable()?;
        let staged = staging_path(path);
        let _ = self.dir.remove_file(&staged);
        self.dir
            .hard_link(existing, &self.dir, &staged)
            .map_err(VolumeError::io(path))?;
        self.dir.rename(&staged, &self.dir, path).map_err(|e| {
            let _ = self.dir.remove_file(&staged);
            VolumeError::io(path)(e)
        })
    }

    /// Creates or atomically replaces a special file: made beside `path`,
    /// then renamed over it. `Ok(false)`, changing nothing, when this
    /// process may not make it (device nodes need `CAP_MKNOD`).
    pub fn make_node(
        &self,
        path: &OsStr,
        node: Node,
        mode: u32,
        rdev: u64,
    ) -> Result<bool, VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        let staged = staging_path(path);
        let (parent, name) = self.parent_of(&staged)?;
        let dir = parent.as_ref().unwrap_or(&self.dir);
        let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
        let kind = match node {
            Node::Fifo => FileType::Fifo,
            Node::Socket => FileType::Socket,
            Node::CharDevice => FileType::CharacterDevice,
            Node::BlockDevice => FileType::BlockDevice,
        };
        let rdev = match node {
            Node::CharDevice | Node::BlockDevice => rdev,
            Node::Fifo | Node::Socket => 0,
        };
        match rustix::fs::mknodat(dir, name, kind, Mode::from_raw_mode(mode & 0o7777), rdev) {
            Ok(()) => {}
            Err(rustix::io::Errno::PERM) => return Ok(false),
            Err(e) => return Err(VolumeError::io(path)(e.into())),
        }
        // mknod applies the umask; the mode is the source's.
        rustix::fs::chmodat(
            dir,
            name,
            Mode::from_raw_mode(mode & 0o7777),
            AtFlags::empty(),
        )
        .and_then(|()| rustix::fs::renameat(dir, name, &self.dir, path))
        .map_err(|e| {
            let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
            VolumeError::io(path)(e.into())
        })?;
        Ok(true)
    }

    /// The directory holding `path`'s last component, resolved through
    /// cap-std so that the lookup stays inside the volume (`None`: the
    /// root), and that component.
    fn parent_of<'p>(&self, path: &'p OsStr) -> Result<(Option<Dir>, &'p OsStr), VolumeError> {
        Ok(match path::split_last(path) {
            Some((parent, name)) => (
                Some(
                    self.dir
                        .open_dir_nofollow(parent)
                        .map_err(VolumeError::io(path))?,
                ),
                name,
            ),
            None => (None, path),
        })
    }

    /// Sets the owner of `path` (a symlink itself, not its target); one
    /// that has it already is left alone (a chown would still change its
    /// ctime and clear set-id bits). `Ok(false)` when this process may
    /// not: ownership is kept where permitted.
    pub fn set_owner(&self, path: &OsStr, uid: u32, gid: u32) -> Result<bool, VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        // chown the last component without following it.
        let (parent, name) = self.parent_of(path)?;
        let dir = parent.as_ref().unwrap_or(&self.dir);
        let stat = |dir: &Dir| rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW);
        let before = stat(dir).map_err(|e| VolumeError::io(path)(e.into()))?;
        if (before.st_uid, before.st_gid) == (uid, gid) {
            return Ok(true);
        }
        match rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(()) => {
                // A known content hash survives the owner change.
                if self.known.contains(path)
                    && let Ok(after) = stat(dir)
                {
                    self.known
                        .restamp(path, stat_stamp(&before), stat_stamp(&after));
                }
                Ok(true)
            }
            Err(rustix::io::Errno::PERM) => Ok(false),
            Err(e) => Err(VolumeError::io(path)(e.into())),
        }
    }

    /// Removes a file, a symlink or a directory tree; fine if absent.
    pub fn remove(&self, path: &OsStr) -> Result<(), VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        let result = match self.dir.symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => self.dir.remove_dir_all(path),
            Ok(_) => self.dir.remove_file(path),
            Err(e) => Err(e),
        };
        // A directory's tree gone is an event per entry.
        self.read_watch(Watch::update);
        match result {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r.map_err(VolumeError::io(path)),
        }
    }

    /// Sets permission bits (skipped for symlinks) and modification time.
    pub fn set_metadata(&self, path: &OsStr, mode: u32, mtime_ns: i64) -> Result<(), VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        let meta = self
            .dir
            .symlink_metadata(path)
            .map_err(VolumeError::io(path))?;
        let mtime = Some(time_spec(mtime_ns));
        let kind = meta.file_type();
        if kind.is_symlink() {
            self.dir.set_symlink_times(path, None, mtime)
        } else if kind.is_fifo()
            || kind.is_socket()
            || kind.is_char_device()
            || kind.is_block_device()
        {
            // By name, never opened: cap-std's set_times opens the entry,
            // which waits for a writer on a fifo and acts on a device.
            let (parent, name) = self.parent_of(path)?;
            let dir = parent.as_ref().unwrap_or(&self.dir);
            let times = Timestamps {
                last_access: Timespec {
                    tv_sec: 0,
                    tv_nsec: UTIME_OMIT,
                },
                last_modification: Timespec {
                    tv_sec: mtime_ns.div_euclid(1_000_000_000),
                    tv_nsec: mtime_ns.rem_euclid(1_000_000_000),
                },
            };
            let mode = Mode::from_raw_mode(mode & 0o7777);
            rustix::fs::chmodat(dir, name, mode, AtFlags::empty())
                .and_then(|()| rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW))
                .map_err(io::Error::from)
        } else {
            self.dir
                .set_permissions(path, Permissions::from_mode(mode & 0o7777))
                .and_then(|()| self.dir.set_times(path, None, mtime))
        }
        .map_err(VolumeError::io(path))
    }
}

/// Sets a file's permission bits and modification time through the open
/// file (fchmod, futimens): no path lookups.
pub(super) fn set_file_metadata(file: &std::fs::File, mode: u32, mtime_ns: i64) -> io::Result<()> {
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777))?;
    file.set_modified(system_time(mtime_ns))
}

fn system_time(mtime_ns: i64) -> SystemTime {
    if mtime_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(mtime_ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(mtime_ns.unsigned_abs())
    }
}

pub(super) fn time_spec(mtime_ns: i64) -> SystemTimeSpec {
    SystemTimeSpec::Absolute(cap_std::time::SystemTime::from_std(system_time(mtime_ns)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::volume::Access;

    /// Setting the owner a file has already changes nothing, not even its
    /// ctime (a chown would, and would clear set-id bits).
    #[test]
    fn the_owner_a_file_has_is_left_alone() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let f = root.path().join("d/f");
        std::fs::create_dir(root.path().join("d")).unwrap();
        std::fs::write(&f, b"x").unwrap();
        let before = std::fs::symlink_metadata(&f).unwrap();
        // Past the coarse clock's tick, so a chown would show.
        std::thread::sleep(Duration::from_millis(50));
        let volume = Tree::open(root.path(), Access::ReadWrite).unwrap();
        assert!(
            volume
                .set_owner(OsStr::new("d/f"), before.uid(), before.gid())
                .unwrap()
        );
        let after = std::fs::symlink_metadata(&f).unwrap();
        assert_eq!(
            (after.ctime(), after.ctime_nsec()),
            (before.ctime(), before.ctime_nsec())
        );
    }

    /// A fifo and a socket are made by anyone, with the source's mode
    /// whatever the umask, replacing what was there; a device node only by
    /// a privileged process, and otherwise nothing changes.
    #[test]
    fn special_files_are_made_where_permitted() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("d")).unwrap();
        std::fs::write(root.path().join("d/pipe"), b"a file first").unwrap();
        let volume = Tree::open(root.path(), Access::ReadWrite).unwrap();
        assert!(
            volume
                .make_node(OsStr::new("d/pipe"), Node::Fifo, 0o666, 0)
                .unwrap()
        );
        assert!(
            volume
                .make_node(OsStr::new("sock"), Node::Socket, 0o701, 0)
                .unwrap()
        );
        let pipe = std::fs::symlink_metadata(root.path().join("d/pipe")).unwrap();
        assert!(pipe.file_type().is_fifo());
        assert_eq!(pipe.mode() & 0o7777, 0o666);
        let sock = std::fs::symlink_metadata(root.path().join("sock")).unwrap();
        assert!(sock.file_type().is_socket());
        assert_eq!(sock.mode() & 0o7777, 0o701);
        // 1:3 is /dev/null.
        let null = rustix::fs::makedev(1, 3);
        let made = volume
            .make_node(OsStr::new("null"), Node::CharDevice, 0o600, null)
            .unwrap();
        let privileged = rustix::process::geteuid().is_root();
        assert_eq!(made, privileged);
        match std::fs::symlink_metadata(root.path().join("null")) {
            Ok(meta) => {
                assert!(meta.file_type().is_char_device());
                assert_eq!(meta.rdev(), null);
            }
            Err(e) => assert!(!privileged, "{e}"),
        }
        let names = std::fs::read_dir(root.path()).unwrap().count();
        assert_eq!(names, if privileged { 3 } else { 2 }, "no staged node left");
    }
}
