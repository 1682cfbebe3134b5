//! Listing a tree: every entry, parents before children, by one `statx`
//! per entry; a writable tree's scan also watches what changes since and
//! starts hashing its files ahead of the digest.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use cap_fs_ext::DirExt;
use cap_std::fs::Dir;
use rustix::fs::{AtFlags, FileType};

use super::hash_store::load_hashes;
use super::{HIDDEN_AT_ROOT, Scanned, Tree};
use crate::volume::access::Access;
use crate::volume::ahead::{self, Ahead};
use crate::volume::attributes::{self, Namespaces};
use crate::volume::entry::{Entry, EntryKind};
use crate::volume::error::VolumeError;
use crate::volume::known::Stamp;
use crate::volume::path;
use crate::volume::watch::Watch;

impl Tree {
    /// Lists every entry, parents before children, siblings by name, with
    /// the fingerprint of its extended attributes when the tree covers
    /// them ([`Tree::include_attributes`]). The tree remembers what it found, for
    /// its [`digest`](Self::digest); a writable one also watches what
    /// changes since.
    pub fn scan(&self) -> Result<Vec<Entry>, VolumeError> {
        let mut entries = Vec::new();
        let mut stamps = Vec::new();
        let mut attribute_digests = Vec::new();
        let mut watch = (self.access == Access::ReadWrite).then(Watch::new);
        let attributes = self.attributes();
        walk_dir(
            &self.dir,
            OsStr::new(""),
            watch.as_mut(),
            attributes,
            &mut |entry, stamp, digest| {
                stamps.push(stamp);
                entries.push(entry);
                attribute_digests.extend(digest);
                Ok(())
            },
        )?;
        let mut children = HashMap::<OsString, Vec<u32>>::new();
        if watch.is_some() {
            for (i, entry) in entries.iter().enumerate() {
                let parent = path::parent(&entry.path);
                match children.get_mut(parent) {
                    Some(indices) => indices.push(i as u32),
                    None => drop(children.insert(parent.to_owned(), vec![i as u32])),
                }
            }
        }
        let ahead = watch.as_ref().filter(|w| !w.is_lost()).and_then(|_| {
            let files = (entries.iter().zip(&stamps).enumerate())
                .filter(|(_, (e, _))| e.kind == EntryKind::File && e.links == 1)
                .filter(|(_, (e, _))| e.size < ahead::LARGEST)
                .map(|(i, (e, &stamp))| (i as u32, e.path.clone(), stamp))
                .collect();
            let (store, read_all) = (self.store.clone(), self.read_all);
            let state = match &self.state {
                Some(state) => Some((state.dir.try_clone().ok()?, state.shown.clone())),
                None => None,
            };
            let stored = move |_: &Dir| {
                let (dir, shown) = state.as_ref().map(|(d, s)| (d, s.as_path())).unzip();
                load_hashes(
                    dir,
                    shown.unwrap_or(std::path::Path::new("")),
                    &store,
                    read_all,
                )
            };
            let dir = self.dir.try_clone().ok()?;
            Ahead::start(dir, files, stored).ok()
        });
        let scanned = Scanned {
            entries: entries.clone(),
            stamps,
            attributes: (attributes, attribute_digests),
            children,
            watch,
            ahead,
        };
        *self.scanned.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(scanned));
        Ok(entries)
    }

    /// Lets the scan's watch read the events queued so far (`read`), so
    /// that a run that changes many entries does not overflow its queue.
    pub(super) fn read_watch<R>(&self, read: impl FnOnce(&mut Watch) -> R) {
        let mut scanned = self.scanned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(watch) = scanned.as_mut().and_then(|s| s.watch.as_mut()) {
            read(watch);
        }
    }
}

/// The entry `name` in `dir` (the directory at `path`) is, by one
/// `statx` (and `readlink` for a symlink), and its [`Stamp`]; `None` for
/// a kind of file Linux does not name (none is known), with a warning.
pub(super) fn look(
    dir: &Dir,
    path: &OsStr,
    name: &OsStr,
) -> Result<Option<(Entry, Stamp)>, VolumeError> {
    let child = path::join(path, name);
    let io_error = |e: rustix::io::Errno| VolumeError::io(&child)(e.into());
    let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io_error)?;
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::Symlink => EntryKind::Symlink,
        FileType::Directory => EntryKind::Directory,
        FileType::RegularFile => EntryKind::File,
        FileType::Fifo => EntryKind::Fifo,
        FileType::Socket => EntryKind::Socket,
        FileType::CharacterDevice => EntryKind::CharDevice,
        FileType::BlockDevice => EntryKind::BlockDevice,
        FileType::Unknown => {
            tracing::warn!(
                path = path::shown(&child),
                "skipping a file of unknown kind"
            );
            return Ok(None);
        }
    };
    let link_target = match kind {
        EntryKind::Symlink => OsString::from_vec(
            rustix::fs::readlinkat(dir, name, Vec::new())
                .map_err(io_error)?
                .into_bytes(),
        ),
        _ => OsString::new(),
    };
    let stamp = stat_stamp(&stat);
    let entry = Entry {
        path: child,
        kind,
        mode: stat.st_mode & 0o7777,
        size: if kind == EntryKind::File {
            stamp.len
        } else {
            0
        },
        mtime_ns: stamp.mtime_ns,
        link_target,
        uid: stat.st_uid,
        gid: stat.st_gid,
        inode: stamp.inode,
        links: stat.st_nlink.try_into().unwrap_or(u32::MAX),
        rdev: match kind {
            EntryKind::CharDevice | EntryKind::BlockDevice => stat.st_rdev,
            _ => 0,
        },
        attributes: 0,
    };
    Ok(Some((entry, stamp)))
}

/// The names in `dir` (the directory at `path`), sorted; at the root,
/// without [`HIDDEN_AT_ROOT`].
pub(super) fn names_in(dir: &Dir, path: &OsStr) -> Result<Vec<OsString>, VolumeError> {
    let shown = if path.is_empty() {
        OsStr::new(".")
    } else {
        path
    };
    let mut names = Vec::new();
    for entry in dir.entries().map_err(VolumeError::io(shown))? {
        names.push(entry.map_err(VolumeError::io(shown))?.file_name());
    }
    names.sort_unstable();
    if path.is_empty() {
        names.retain(|name| !HIDDEN_AT_ROOT.iter().any(|hidden| name == *hidden));
    }
    Ok(names)
}

/// Opens the subdirectory `name` of `dir` that [`look`] found at `path`;
/// not followed if a symlink took its place since.
pub(super) fn open_sub(dir: &Dir, name: &OsStr, path: &OsStr) -> Result<Dir, VolumeError> {
    dir.open_dir_nofollow(name).map_err(VolumeError::io(path))
}

/// Calls `visit` with every entry under `dir`, the directory at `path`,
/// parents before children, siblings by name. Each directory is opened
/// once and its entries are looked at by their single names, so the cost
/// per entry is one `statx`, whatever the depth.
fn walk_dir(
    dir: &Dir,
    path: &OsStr,
    mut watch: Option<&mut Watch>,
    attributes: Namespaces,
    visit: &mut dyn FnMut(Entry, Stamp, Option<[u8; 32]>) -> Result<(), VolumeError>,
) -> Result<(), VolumeError> {
    if let Some(watch) = watch.as_deref_mut() {
        watch.add(dir, path);
    }
    for name in &names_in(dir, path)? {
        let Some((mut entry, stamp)) = look(dir, path, name)? else {
            continue;
        };
        let digest = match attributes.is_empty() {
            true => None,
            false => Some(attributes_digest(dir, name, &entry.path, attributes)?),
        };
        entry.attributes = digest.as_ref().map_or(0, attributes::fingerprint_of);
        let sub = (entry.kind == EntryKind::Directory).then(|| entry.path.clone());
        visit(entry, stamp, digest)?;
        if let Some(sub) = sub {
            walk_dir(
                &open_sub(dir, name, &sub)?,
                &sub,
                watch.as_deref_mut(),
                attributes,
                visit,
            )?;
        }
    }
    Ok(())
}

/// The digest of the extended attributes in `covered` of the entry
/// `name` in `dir` (the directory at `path`'s parent).
pub(super) fn attributes_digest(
    dir: &Dir,
    name: &OsStr,
    path: &OsStr,
    covered: Namespaces,
) -> Result<[u8; 32], VolumeError> {
    let read = attributes::read_at(dir, name.as_bytes()).map_err(VolumeError::io(path))?;
    Ok(attributes::digest(&read.only(covered)))
}

/// The [`Stamp`] of what `statat` found.
pub(super) fn stat_stamp(stat: &rustix::fs::Stat) -> Stamp {
    Stamp::new(
        stat.st_ino,
        stat.st_size as u64,
        stat.st_mtime * 1_000_000_000 + stat.st_mtime_nsec as i64,
        stat.st_ctime * 1_000_000_000 + stat.st_ctime_nsec as i64,
    )
}

#[cfg(test)]
mod tests {
    use rustix::fs::{FileType, Mode};

    use super::*;
    use crate::volume::unix_nanos;

    /// The walk lists a symlinked directory as a link without entering
    /// it, lists a fifo as one, and digests the files it holds through
    /// the directory handles it walked with, at any depth.
    #[test]
    fn the_walk_does_not_follow_links_and_lists_special_files() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("a/b/c")).unwrap();
        std::fs::write(root.path().join("a/b/c/deep"), b"deep").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("a/out")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.path().join("a/fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let volume = Tree::open(root.path(), Access::ReadOnly).unwrap();
        let paths: Vec<_> = volume
            .scan()
            .unwrap()
            .into_iter()
            .map(|e| (e.path.into_string().unwrap(), e.kind))
            .collect();
        assert_eq!(
            paths,
            [
                ("a".to_owned(), EntryKind::Directory),
                ("a/b".to_owned(), EntryKind::Directory),
                ("a/b/c".to_owned(), EntryKind::Directory),
                ("a/b/c/deep".to_owned(), EntryKind::File),
                ("a/fifo".to_owned(), EntryKind::Fifo),
                ("a/out".to_owned(), EntryKind::Symlink),
            ]
        );
        let before = volume.digest().unwrap();
        assert_eq!((before.entries, before.bytes), (6, 4));
        // Left out, the fifo is not covered; a directory left out takes
        // its tree with it.
        let without = volume.digest_leaving_out(&["a/fifo".into()]).unwrap();
        assert_eq!((without.entries, without.bytes), (5, 4));
        assert_ne!(without.root, before.root);
        let without = volume.digest_leaving_out(&["a/b".into()]).unwrap();
        assert_eq!((without.entries, without.bytes), (3, 0));
        std::fs::write(root.path().join("a/b/c/deep"), b"DEEP").unwrap();
        std::fs::write(outside.path().join("secret"), b"y").unwrap();
        let after = volume.digest().unwrap();
        assert_ne!(after.root, before.root, "the deep file's content counts");
    }

    /// `lost+found` at the root belongs to the file system, not the tree:
    /// neither listed nor digested, while one deeper down is data.
    #[test]
    fn lost_and_found_at_the_root_is_not_part_of_the_tree() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("lost+found")).unwrap();
        std::fs::write(root.path().join("lost+found/#1234"), b"orphan").unwrap();
        std::fs::create_dir_all(root.path().join("d/lost+found")).unwrap();
        let volume = Tree::open(root.path(), Access::ReadWrite).unwrap();
        let paths: Vec<_> = volume.scan().unwrap().into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["d", "d/lost+found"]);
        let with = volume.digest().unwrap();
        std::fs::remove_dir_all(root.path().join("lost+found")).unwrap();
        let without = Tree::open(root.path(), Access::ReadOnly)
            .unwrap()
            .digest()
            .unwrap();
        assert_eq!((with.root, with.entries), (without.root, without.entries));
    }

    #[test]
    fn scan_lists_parents_first_with_metadata() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("b")).unwrap();
        std::fs::write(root.path().join("b/x"), b"hello").unwrap();
        std::fs::write(root.path().join("a"), b"").unwrap();
        std::os::unix::fs::symlink("b/x", root.path().join("c")).unwrap();
        let volume = Tree::open(root.path(), Access::ReadOnly).unwrap();
        let entries = volume.scan().unwrap();
        let paths: Vec<_> = entries.iter().map(|e| e.path.to_str().unwrap()).collect();
        assert_eq!(paths, ["a", "b", "b/x", "c"]);
        assert_eq!(entries[2].size, 5);
        assert_eq!(entries[3].link_target, "b/x");
        let mtime = std::fs::metadata(root.path().join("b/x"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(entries[2].mtime_ns, unix_nanos(mtime));
    }
}
