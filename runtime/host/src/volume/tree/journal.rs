//! Patching a tree's large file in place under an undo journal, and
//! rolling back on the next open what an interrupted run left half done.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, MetadataExt, OpenOptions};

use super::mutate::set_file_metadata;
use super::{JOURNAL, JOURNAL_TARGET, Tree, checked};
use crate::volume::error::VolumeError;
use crate::volume::known::Stamp;
use crate::volume::path;

/// Where an undo journal and the record of its file are, in which
/// directory, and how that record reads.
pub(super) struct Journal<'a> {
    pub(super) dir: &'a Dir,
    pub(super) journal: &'a str,
    pub(super) target: &'a str,
    /// Where the journal is, for messages.
    pub(super) shown: std::path::PathBuf,
    /// Whether the record holds only the path (an earlier version's, in
    /// the volume), not the inode and the path.
    pub(super) path_only: bool,
}

impl Tree {
    /// Rolls back the file a patch in place was rewriting when its run was
    /// interrupted (see [`Tree::begin_journal`]), so it is old again.
    pub(super) fn recover(&self) -> io::Result<()> {
        let state = self.state()?;
        self.roll_back(&Journal {
            dir: &state.dir,
            journal: JOURNAL,
            target: JOURNAL_TARGET,
            shown: state.shown.join(JOURNAL),
            path_only: false,
        })?;
        self.sync_state_dir()
    }

    /// Rolls back the file the journal `j` names, if there is one, and
    /// removes the journal. The record names the file by path and, but
    /// for an earlier version's, by inode: a file at that path with
    /// another inode is not the one patched (a state directory used with
    /// another volume, or the file replaced since), and is left alone.
    pub(super) fn roll_back(&self, j: &Journal) -> io::Result<()> {
        let record = match j.dir.read(j.target) {
            Ok(record) => record,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        // The path is the rest of the record: it may hold a newline.
        let (inode, target) = match j.path_only {
            true => (None, &record[..]),
            false => match record.iter().position(|&b| b == b'\n') {
                Some(end) => (
                    std::str::from_utf8(&record[..end])
                        .ok()
                        .and_then(|inode| inode.parse::<u64>().ok()),
                    &record[end + 1..],
                ),
                None => (None, &b""[..]),
            },
        };
        let target = OsStr::from_bytes(target);
        let failed = |e: &dyn std::fmt::Display| {
            io::Error::other(format!(
                "{}: could not roll back the patch in place an interrupted run \
                 left (journal {}): {e}",
                path::shown(target),
                j.shown.display()
            ))
        };
        match j.dir.open(j.journal) {
            Ok(journal) => {
                let path = checked(target).map_err(|e| failed(&e))?;
                let opened = self.dir.open_with(
                    path,
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .follow(FollowSymlinks::No),
                );
                let opened = match opened {
                    Ok(file) if !j.path_only => {
                        let meta = file.metadata().map_err(|e| failed(&e))?;
                        match Some(meta.ino()) == inode {
                            true => Ok(file),
                            false => Err(io::ErrorKind::NotFound.into()),
                        }
                    }
                    opened => opened,
                };
                match opened {
                    Ok(file) => {
                        let outcome =
                            wasmover_block::roll_back(&journal.into_std(), &file.into_std())
                                .map_err(|e| failed(&e))?;
                        tracing::warn!(
                            path = path::shown(target),
                            ?outcome,
                            "rolled back a patch in place that an interrupted run left"
                        );
                    }
                    // Removed or replaced since: nothing is left to roll
                    // back.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        tracing::warn!(
                            path = path::shown(target),
                            "dropping the journal of a patch in place: its file is gone"
                        );
                    }
                    Err(e) => return Err(failed(&e)),
                }
                j.dir.remove_file(j.journal)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(&e)),
        }
        j.dir.remove_file(j.target)
    }

    /// Opens `path` for patching in place: a regular file with one link
    /// (a patch in place would change every link; a rename beside breaks
    /// them instead), with its length. `None` for anything else.
    pub(crate) fn open_in_place(
        &self,
        path: &OsStr,
    ) -> Result<Option<(std::fs::File, u64)>, VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        let file = match self.dir.open_with(
            path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .follow(FollowSymlinks::No),
        ) {
            Ok(file) => file.into_std(),
            Err(_) => return Ok(None),
        };
        let meta = file.metadata().map_err(VolumeError::io(path))?;
        if !meta.is_file() || std::os::unix::fs::MetadataExt::nlink(&meta) != 1 {
            return Ok(None);
        }
        // The journal (the old bytes a patch overwrites) and the literals
        // waiting for it go to the state directory, outside the volume:
        // only where it has room for a rewrite of the whole file, so that
        // a patch never fails for want of it. Elsewhere the file is rebuilt
        // beside, as a smaller one is.
        let room = self.state.as_ref().map_or(0, |s| s.room());
        if room < meta.len().saturating_mul(2) {
            tracing::debug!(
                path = path::shown(path),
                room,
                "rebuilding beside: the state directory has no room for patching in place"
            );
            return Ok(None);
        }
        Ok(Some((file, meta.len())))
    }

    /// Creates the (empty) undo journal for patching `path` in place,
    /// after recording which file it belongs to (its inode and path); both
    /// durably, so a crash after the patch started always finds them.
    pub(crate) fn begin_journal(&self, path: &OsStr) -> Result<std::fs::File, VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        let state = self.state().map_err(VolumeError::io(OsStr::new(JOURNAL)))?;
        let inode = self
            .dir
            .symlink_metadata(path)
            .map_err(VolumeError::io(path))?
            .ino();
        let target = state
            .dir
            .create(JOURNAL_TARGET)
            .and_then(|mut f| {
                let record = [format!("{inode}\n").as_bytes(), path.as_bytes()].concat();
                io::Write::write_all(&mut f, &record)?;
                f.sync_all()
            })
            .map_err(VolumeError::io(OsStr::new(JOURNAL_TARGET)));
        target?;
        let journal = state
            .dir
            .open_with(
                JOURNAL,
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true),
            )
            .map_err(VolumeError::io(OsStr::new(JOURNAL)))?;
        self.sync_state_dir()
            .map_err(VolumeError::io(OsStr::new(JOURNAL)))?;
        Ok(journal.into_std())
    }

    /// Deletes the undo journal once the patch is complete and synced (or
    /// rolled back), and makes that durable.
    pub(crate) fn end_journal(&self) -> Result<(), VolumeError> {
        self.state()
            .and_then(|state| {
                state.dir.remove_file(JOURNAL)?;
                state.dir.remove_file(JOURNAL_TARGET)
            })
            .and_then(|()| self.sync_state_dir())
            .map_err(VolumeError::io(OsStr::new(JOURNAL)))
    }

    /// Sets `path`'s metadata after a patch in place through the open
    /// file, and remembers that its content hashes to `hash`. Returns the
    /// file's stamp after that.
    pub(crate) fn commit_in_place(
        &self,
        file: &std::fs::File,
        path: &OsStr,
        mode: u32,
        mtime_ns: i64,
        hash: [u8; 32],
    ) -> Result<Option<Stamp>, VolumeError> {
        set_file_metadata(file, mode, mtime_ns).map_err(VolumeError::io(path))?;
        Ok(self.remember_written(file, path, hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Access;

    /// Only a regular file with one link is patched in place: a hard
    /// link would change with it, a symlink is not followed.
    #[test]
    fn only_a_file_with_one_link_is_opened_for_patching_in_place() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("one"), b"1").unwrap();
        std::fs::write(root.path().join("linked"), b"2").unwrap();
        std::fs::hard_link(root.path().join("linked"), root.path().join("other")).unwrap();
        std::os::unix::fs::symlink("one", root.path().join("sym")).unwrap();
        let tree = Tree::open(root.path(), Access::ReadWrite).unwrap();
        let opened = |path| tree.open_in_place(path).unwrap().map(|(_, len)| len);
        assert_eq!(opened(OsStr::new("one")), Some(1));
        assert_eq!(opened(OsStr::new("linked")), None);
        assert_eq!(opened(OsStr::new("sym")), None);
        assert_eq!(opened(OsStr::new("missing")), None);
        let read_only = Tree::open(root.path(), Access::ReadOnly).unwrap();
        assert!(matches!(
            read_only.open_in_place(OsStr::new("one")),
            Err(VolumeError::ReadOnly)
        ));
    }

    /// A patch in place that a run left half done (its journal complete,
    /// the file partly rewritten) is rolled back when the tree is next
    /// opened for writing with the same state directory, and the journal
    /// goes; none of it was ever in the volume.
    #[test]
    fn an_interrupted_patch_in_place_is_rolled_back_on_open() {
        use std::io::Write;
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let open = || {
            let dir = crate::volume::open_state_dir(state.path()).unwrap();
            Tree::open_with_state(root.path(), Access::ReadWrite, Some(dir)).unwrap()
        };
        let old = wasmover_block::fuzzing::pseudo_random(300_000, 1);
        let mut new = old.clone();
        new[100_000..140_000].fill(7);
        std::fs::create_dir(root.path().join("d")).unwrap();
        let path = root.path().join("d/f");
        std::fs::write(&path, &old).unwrap();
        let tree = open();
        let (mut file, _) = tree.open_in_place(OsStr::new("d/f")).unwrap().unwrap();
        let delta = wasmover_block::fuzzing::delta_of(&old, &new, 4096);
        let patch = wasmover_block::InPlacePatch::read(
            &mut file,
            &delta[..],
            &wasmover_block::Limits::default(),
            Some(tree.spill(OsStr::new("d/f")).unwrap()),
        )
        .unwrap();
        let journal = tree.begin_journal(OsStr::new("d/f")).unwrap();
        wasmover_block::write_undo(&file, &patch, &journal).unwrap();
        // The run dies while it writes.
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(100_000)).unwrap();
        file.write_all(&new[100_000..120_000]).unwrap();
        drop((file, journal, tree));
        assert!(std::fs::read(&path).unwrap() != old);
        assert!(state.path().join(JOURNAL).exists());
        let listed = |dir: &std::path::Path| {
            let mut names: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            names
        };
        assert_eq!(listed(root.path()), ["d"], "nothing of it in the volume");
        assert_eq!(listed(&root.path().join("d")), ["f"]);

        let tree = open();
        assert!(std::fs::read(&path).unwrap() == old, "rolled back");
        assert!(!state.path().join(JOURNAL).exists());
        assert!(!state.path().join(JOURNAL_TARGET).exists());
        assert_eq!(tree.scan().unwrap().len(), 2);

        // A journal whose file was removed since is dropped, not an error.
        drop(tree.begin_journal(OsStr::new("d/f")).unwrap());
        std::fs::remove_file(&path).unwrap();
        drop(open());
        assert!(!state.path().join(JOURNAL).exists());
        assert!(!state.path().join(JOURNAL_TARGET).exists());
        // So is a whole one whose path now holds another file (another
        // inode: the old one is held open, so its number is not reused).
        std::fs::write(&path, &old).unwrap();
        let held = std::fs::File::open(&path).unwrap();
        let journal = tree.begin_journal(OsStr::new("d/f")).unwrap();
        wasmover_block::write_undo(&held, &patch, &journal).unwrap();
        drop(journal);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"another file").unwrap();
        drop(open());
        assert_eq!(std::fs::read(&path).unwrap(), b"another file");
        assert!(!state.path().join(JOURNAL).exists());
        drop(held);
    }

    /// A file is patched in place only where the state directory has room
    /// for a rewrite of all of it; without a state directory (read-only)
    /// never.
    #[test]
    fn a_file_is_patched_in_place_only_with_room_for_its_journal() {
        let root = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(root.path().join("huge")).unwrap();
        // Sparse, 4 TiB (ext4 takes up to 16): more than a test machine
        // has free, twice.
        file.set_len(1 << 42).unwrap();
        std::fs::write(root.path().join("small"), b"s").unwrap();
        let tree = Tree::open(root.path(), Access::ReadWrite).unwrap();
        assert!(tree.open_in_place(OsStr::new("huge")).unwrap().is_none());
        assert!(tree.open_in_place(OsStr::new("small")).unwrap().is_some());
    }
}
