//! What changed in a writable tree since its scan, as inotify reports it.
//!
//! A scan watches every directory before it looks at the directory's
//! entries. Any later change to an entry (its content, metadata, name or
//! link count, by this run or by anybody else) is then an event naming it
//! in its directory's watch. The digest looks again only at the entries
//! named so, and takes the rest as the scan found them. Where a run
//! rewrote 1,000 of 100,000 files, the receiving side's digest made 2,100
//! `stat` calls instead of 100,100 (1,000 of them for staged names
//! already gone) and listed no directory (`strace -c` of the agent).
//!
//! inotify does not see writes through a shared mapping, nor changes made
//! to a network filesystem by another machine, and it reports a write to
//! a file with several links only under the name it was written through.
//! The digest therefore looks again at every file with several links; the
//! other two it cannot tell, as a walk after them could not either when
//! they leave the file's times alone.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use cap_std::fs::Dir;

use super::path;
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

/// Events that can change what a digest sees in a watched directory.
const EVENTS: WatchFlags = WatchFlags::ATTRIB
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::CREATE)
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR);

/// Events after which a name is another entry, or none.
const REPLACED: ReadFlags = ReadFlags::CREATE
    .union(ReadFlags::DELETE)
    .union(ReadFlags::MOVED_FROM)
    .union(ReadFlags::MOVED_TO);

/// Events on a watched directory itself after which its names are not
/// known from the events alone.
const GONE: ReadFlags = ReadFlags::DELETE_SELF
    .union(ReadFlags::MOVE_SELF)
    .union(ReadFlags::IGNORED)
    .union(ReadFlags::UNMOUNT);

/// How an entry changed since the scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// Its content or metadata: it is looked at again.
    Altered,
    /// The name was created, removed or renamed: it is looked at again,
    /// and nothing the scan found below it holds.
    Replaced,
}

/// The watches a scan put on a tree's directories, and the changes they
/// reported so far.
pub(super) struct Watch {
    inotify: Option<OwnedFd>,
    /// The watch on each directory, by its path in the tree.
    watches: HashMap<OsString, i32>,
    /// The changes seen in each watched directory, by watch.
    changes: HashMap<i32, Changes>,
    /// Why the changes are not all known, if they are not: the digest
    /// then looks at every entry.
    lost: Option<String>,
    /// How many directories may be watched.
    budget: usize,
    /// Files committed since the events were last read.
    unread: u32,
}

/// Files committed between two reads of the events: a rebuilt file makes
/// a handful of events (create, modify, attrib, rename), so the queue
/// (16,384 by default) holds far more than these make, and a full copy
/// does not pay a read per file (it did: 100,001 `read`s that found
/// nothing, in `strace -c` of a 100,000-file receiver).
const COMMITS_PER_READ: u32 = 256;

/// The changes seen in one watched directory.
#[derive(Default)]
pub(super) struct Changes {
    /// The entries named by an event, and how they changed.
    pub(super) names: HashMap<OsString, Change>,
    /// Whether its names may have changed in a way the events do not
    /// tell: the directory itself went away.
    pub(super) relist: bool,
}

impl Watch {
    /// A watch on no directory yet; lost from the start if inotify is not
    /// available.
    pub(super) fn new() -> Self {
        let (inotify, lost) = match inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK) {
            Ok(fd) => (Some(fd), None),
            Err(e) => (None, Some(format!("inotify is not available: {e}"))),
        };
        // The limit is per user, shared with every other program of the
        // same user on the machine (file managers, build tools, kubelet
        // when both run as root): a tree takes at most a quarter of it.
        let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
            .ok()
            .and_then(|limit| limit.trim().parse::<usize>().ok())
            .unwrap_or(8192);
        Self {
            inotify,
            watches: HashMap::new(),
            changes: HashMap::new(),
            lost,
            budget: limit / 4,
            unread: 0,
        }
    }

    /// Watches `dir`, the directory at `path`, before its entries are
    /// looked at. A watch that cannot be added (the limit of watches per
    /// user, no `/proc`) loses the watch as a whole.
    pub(super) fn add(&mut self, dir: &Dir, path: &OsStr) {
        let Some(inotify) = self.inotify.as_ref().filter(|_| self.lost.is_none()) else {
            return;
        };
        if self.watches.len() >= self.budget {
            let why = format!("more directories than {} watches", self.budget);
            return self.lose(why);
        }
        // The directory this handle holds, whatever its path is now.
        let held = format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd());
        match inotify::add_watch(inotify, held, EVENTS) {
            // The same directory under two paths (a bind mount): which of
            // them an event means is not known.
            Ok(wd) if self.changes.contains_key(&wd) => {
                self.lose(format!(
                    "{} is a directory watched already",
                    path::shown(path)
                ));
            }
            Ok(wd) => {
                self.watches.insert(path.to_owned(), wd);
                self.changes.insert(wd, Changes::default());
            }
            Err(e) => self.lose(format!("{} cannot be watched: {e}", path::shown(path))),
        }
    }

    fn lose(&mut self, why: String) {
        if self.lost.is_none() {
            tracing::debug!("the digest will look at every entry: {why}");
            self.lost = Some(why);
        }
        self.inotify = None;
    }

    /// Reads the events reported so far (often enough, and many changes
    /// in one run do not overflow inotify's queue). Returns whether every
    /// change since the scan is known.
    pub(super) fn update(&mut self) -> bool {
        self.unread = 0;
        let Some(inotify) = self.inotify.take() else {
            return false;
        };
        let mut buffer = [MaybeUninit::<u8>::uninit(); 64 << 10];
        let mut events = inotify::Reader::new(&inotify, &mut buffer);
        let mut why = None;
        loop {
            let event = match events.next() {
                Ok(event) => event,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    why = Some(format!("reading its events failed: {}", io::Error::from(e)));
                    break;
                }
            };
            let flags = event.events();
            if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                why = Some("more changed than inotify queues".to_owned());
                break;
            }
            let Some(changes) = self.changes.get_mut(&event.wd()) else {
                continue;
            };
            match event.file_name() {
                None if flags.intersects(GONE) => changes.relist = true,
                None => {}
                Some(name) => {
                    let name = OsStr::from_bytes(name.to_bytes());
                    let change = if flags.intersects(REPLACED) {
                        Change::Replaced
                    } else {
                        Change::Altered
                    };
                    let known = changes.names.entry(name.to_owned()).or_insert(change);
                    if change == Change::Replaced {
                        *known = change;
                    }
                }
            }
        }
        match why {
            Some(why) => {
                self.lose(why);
                false
            }
            None => {
                self.inotify = Some(inotify);
                true
            }
        }
    }

    /// Whether the changes are not all known.
    pub(super) fn is_lost(&self) -> bool {
        self.lost.is_some()
    }

    /// Reads the events after every [`COMMITS_PER_READ`]th committed file.
    pub(super) fn committed(&mut self) {
        self.unread += 1;
        if self.unread >= COMMITS_PER_READ {
            self.update();
        }
    }

    /// The changes in the directory at `path`, if it was watched.
    pub(super) fn changes(&self, path: &OsStr) -> Option<&Changes> {
        self.changes.get(self.watches.get(path)?)
    }
}

impl Changes {
    /// Whether nothing in the directory changed.
    pub(super) fn is_empty(&self) -> bool {
        self.names.is_empty() && !self.relist
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_past_its_share_of_watches_is_not_watched() {
        let root = tempfile::tempdir().unwrap();
        let mut watch = Watch::new();
        watch.budget = 2;
        for name in ["a", "b", "c"] {
            std::fs::create_dir(root.path().join(name)).unwrap();
            let dir = Dir::open_ambient_dir(root.path().join(name), cap_std::ambient_authority());
            watch.add(&dir.unwrap(), OsStr::new(name));
        }
        assert_eq!(watch.watches.len(), 2);
        assert!(watch.is_lost(), "a watch over part of the tree");
        assert!(!watch.update(), "nothing to tell");
    }

    #[test]
    fn events_name_the_entries_and_how_they_changed() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("kept"), b"1").unwrap();
        std::fs::write(root.path().join("gone"), b"1").unwrap();
        let dir = Dir::open_ambient_dir(root.path(), cap_std::ambient_authority()).unwrap();
        let mut watch = Watch::new();
        watch.add(&dir, OsStr::new(""));
        assert!(watch.update() && watch.changes(OsStr::new("")).unwrap().is_empty());
        std::fs::write(root.path().join("kept"), b"2").unwrap();
        std::fs::remove_file(root.path().join("gone")).unwrap();
        std::fs::write(root.path().join("new"), b"").unwrap();
        assert!(watch.update());
        let changes = watch.changes(OsStr::new("")).unwrap();
        assert_eq!(
            changes.names.get(OsStr::new("kept")),
            Some(&Change::Altered)
        );
        assert_eq!(
            changes.names.get(OsStr::new("gone")),
            Some(&Change::Replaced)
        );
        assert_eq!(
            changes.names.get(OsStr::new("new")),
            Some(&Change::Replaced)
        );
        assert!(watch.changes(OsStr::new("other")).is_none());
    }

    #[test]
    fn committed_files_read_the_events_now_and_then() {
        let root = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(root.path(), cap_std::ambient_authority()).unwrap();
        let mut watch = Watch::new();
        watch.add(&dir, OsStr::new(""));
        std::fs::write(root.path().join("new"), b"").unwrap();
        for _ in 1..COMMITS_PER_READ {
            watch.committed();
        }
        assert!(
            watch.changes(OsStr::new("")).unwrap().is_empty(),
            "read too soon"
        );
        watch.committed();
        assert!(
            watch
                .changes(OsStr::new(""))
                .unwrap()
                .names
                .contains_key(OsStr::new("new"))
        );
    }
}
