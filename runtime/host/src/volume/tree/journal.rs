//! Patching a tree's large file in place under an undo journal, and
//! rolling back on the next open what an interrupted run left half done.

use std::io;

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::OpenOptions;

use super::mutate::set_file_metadata;
use super::{JOURNAL, JOURNAL_TARGET, STATE_DIR, Tree, checked};
use crate::volume::error::VolumeError;
use crate::volume::known::Stamp;

impl Tree {
    /// Rolls back the file a patch in place was rewriting when its run was
    /// interrupted (see [`Tree::begin_journal`]), so it is old again.
    pub(super) fn recover(&self) -> io::Result<()> {
        let target = match self.dir.read_to_string(JOURNAL_TARGET) {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let failed = |e: &dyn std::fmt::Display| {
            io::Error::other(format!(
                "{target}: could not roll back the patch in place an interrupted run \
                 left (journal {}): {e}",
                self.root.join(JOURNAL).display()
            ))
        };
        match self.dir.open(JOURNAL) {
            Ok(journal) => {
                let path = checked(&target).map_err(|e| failed(&e))?;
                let opened = self
                    .dir
                    .open_with(path, OpenOptions::new().read(true).write(true));
                match opened {
                    Ok(file) => {
                        let outcome =
                            wasmover_block::roll_back(&journal.into_std(), &file.into_std())
                                .map_err(|e| failed(&e))?;
                        tracing::warn!(
                            path = target,
                            ?outcome,
                            "rolled back a patch in place that an interrupted run left"
                        );
                    }
                    // Removed since: nothing is left to roll back.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        tracing::warn!(
                            path = target,
                            "dropping the journal of a patch in place: its file is gone"
                        );
                    }
                    Err(e) => return Err(failed(&e)),
                }
                self.dir.remove_file(JOURNAL)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(&e)),
        }
        self.dir.remove_file(JOURNAL_TARGET)?;
        self.sync_state_dir()
    }

    /// Opens `path` for patching in place: a regular file with one link
    /// (a patch in place would change every link; a rename beside breaks
    /// them instead), with its length. `None` for anything else.
    pub(crate) fn open_in_place(
        &self,
        path: &str,
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
        Ok(
            (meta.is_file() && std::os::unix::fs::MetadataExt::nlink(&meta) == 1)
                .then_some((file, meta.len())),
        )
    }

    /// Creates the (empty) undo journal for patching `path` in place,
    /// after recording which file it belongs to; both durably, so a crash
    /// after the patch started always finds them.
    pub(crate) fn begin_journal(&self, path: &str) -> Result<std::fs::File, VolumeError> {
        let path = checked(path)?;
        self.writable()?;
        let journal_error = VolumeError::io(JOURNAL);
        self.dir
            .create_dir_all(STATE_DIR)
            .map_err(VolumeError::io(STATE_DIR))?;
        let target = self
            .dir
            .create(JOURNAL_TARGET)
            .and_then(|mut f| {
                io::Write::write_all(&mut f, path.as_bytes())?;
                f.sync_all()
            })
            .map_err(VolumeError::io(JOURNAL_TARGET));
        target?;
        let journal = self
            .dir
            .open_with(
                JOURNAL,
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true),
            )
            .map_err(VolumeError::io(JOURNAL))?;
        self.sync_state_dir().map_err(journal_error)?;
        Ok(journal.into_std())
    }

    /// Deletes the undo journal once the patch is complete and synced (or
    /// rolled back), and makes that durable.
    pub(crate) fn end_journal(&self) -> Result<(), VolumeError> {
        self.dir
            .remove_file(JOURNAL)
            .and_then(|()| self.dir.remove_file(JOURNAL_TARGET))
            .and_then(|()| self.sync_state_dir())
            .map_err(VolumeError::io(JOURNAL))
    }

    /// Sets `path`'s metadata after a patch in place through the open
    /// file, and remembers that its content hashes to `hash`. Returns the
    /// file's stamp after that.
    pub(crate) fn commit_in_place(
        &self,
        file: &std::fs::File,
        path: &str,
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
        assert_eq!(opened("one"), Some(1));
        assert_eq!(opened("linked"), None);
        assert_eq!(opened("sym"), None);
        assert_eq!(opened("missing"), None);
        let read_only = Tree::open(root.path(), Access::ReadOnly).unwrap();
        assert!(matches!(
            read_only.open_in_place("one"),
            Err(VolumeError::ReadOnly)
        ));
    }

    /// A patch in place that a run left half done (its journal complete,
    /// the file partly rewritten) is rolled back when the tree is next
    /// opened for writing, and the journal goes.
    #[test]
    fn an_interrupted_patch_in_place_is_rolled_back_on_open() {
        use std::io::Write;
        let root = tempfile::tempdir().unwrap();
        let old = wasmover_block::fuzzing::pseudo_random(300_000, 1);
        let mut new = old.clone();
        new[100_000..140_000].fill(7);
        std::fs::create_dir(root.path().join("d")).unwrap();
        let path = root.path().join("d/f");
        std::fs::write(&path, &old).unwrap();
        let tree = Tree::open(root.path(), Access::ReadWrite).unwrap();
        let (mut file, _) = tree.open_in_place("d/f").unwrap().unwrap();
        let delta = wasmover_block::fuzzing::delta_of(&old, &new, 4096);
        let patch = wasmover_block::InPlacePatch::read(
            &mut file,
            &delta[..],
            &wasmover_block::Limits::default(),
            None,
        )
        .unwrap();
        let journal = tree.begin_journal("d/f").unwrap();
        wasmover_block::write_undo(&file, &patch, &journal).unwrap();
        // The run dies while it writes.
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(100_000)).unwrap();
        file.write_all(&new[100_000..120_000]).unwrap();
        drop((file, journal, tree));
        assert!(std::fs::read(&path).unwrap() != old);

        let tree = Tree::open(root.path(), Access::ReadWrite).unwrap();
        assert!(std::fs::read(&path).unwrap() == old, "rolled back");
        assert!(!root.path().join(JOURNAL).exists());
        assert!(!root.path().join(JOURNAL_TARGET).exists());
        assert_eq!(
            tree.scan().unwrap().len(),
            2,
            "the state directory is not part of the tree"
        );

        // A journal whose file was removed since is dropped, not an error.
        let journal = tree.begin_journal("d/f").unwrap();
        drop(journal);
        std::fs::remove_file(&path).unwrap();
        drop(tree);
        Tree::open(root.path(), Access::ReadWrite).unwrap();
        assert!(!root.path().join(JOURNAL).exists());
        assert!(!root.path().join(JOURNAL_TARGET).exists());
    }
}
