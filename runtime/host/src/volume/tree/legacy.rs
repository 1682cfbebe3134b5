//! What versions before the state directory moved out of the volume kept
//! in it, at `.wasmover/` ([`LEGACY_STATE_DIR`]): taken over and removed
//! when a writable tree is opened, so the replica ends with nothing the
//! source does not hold.

use std::io;
use std::sync::atomic::Ordering;

use super::journal::Journal;
use super::{GRANULES, HASHES, LEGACY_STATE_DIR, Tree};

impl Tree {
    /// Takes over what an earlier version kept in the volume, then
    /// removes it: a patch in place it left half done is rolled back
    /// first, its file hashes and granule hashes are moved into the state
    /// directory (where it has none of its own: they spare the next digest
    /// and summaries their reads), and its partial content is dropped (it
    /// only saves a resumed transfer some bytes).
    pub(super) fn take_over_legacy(&self) -> io::Result<()> {
        match self.dir.symlink_metadata(LEGACY_STATE_DIR) {
            Ok(meta) if meta.is_dir() => {}
            _ => return Ok(()),
        }
        let legacy = |name: &str| format!("{LEGACY_STATE_DIR}/{name}");
        let (journal, target) = (legacy("journal"), legacy("journal-target"));
        self.roll_back(&Journal {
            dir: &self.dir,
            journal: &journal,
            target: &target,
            shown: self.root.join(&journal),
            path_only: true,
        })?;
        let state = &self.state()?.dir;
        let missing = |name: &str| matches!(state.symlink_metadata(name), Err(e) if e.kind() == io::ErrorKind::NotFound);
        if missing(HASHES)
            && let Ok(bytes) = self.dir.read(legacy(HASHES))
        {
            let _ = self.replace_state_file(None, HASHES, &bytes);
        }
        if let Ok(entries) = self.dir.read_dir(legacy(GRANULES)) {
            for entry in entries.flatten() {
                let name = format!("{GRANULES}/{}", entry.file_name().to_string_lossy());
                if missing(&name)
                    && let Ok(bytes) = self.dir.read(legacy(&name))
                    && self
                        .replace_state_file(Some(GRANULES), &name, &bytes)
                        .is_ok()
                {
                    self.has_granules.store(true, Ordering::Relaxed);
                }
            }
        }
        match self.dir.remove_dir_all(LEGACY_STATE_DIR) {
            Ok(()) => tracing::info!(
                volume = %self.root.display(),
                "moved what an earlier version kept in {LEGACY_STATE_DIR} out of the volume"
            ),
            // Still not listed, digested or sent.
            Err(e) => tracing::warn!(
                volume = %self.root.display(),
                "could not remove {LEGACY_STATE_DIR}, which an earlier version kept its state in: {e}"
            ),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Access, open_state_dir};

    /// A volume an earlier version received into: its `.wasmover/` goes
    /// when the tree is opened for writing, after its half-done patch in
    /// place is rolled back and its hashes are moved to the state
    /// directory; a read-only tree leaves it and does not list it.
    #[test]
    fn an_earlier_versions_state_in_the_volume_is_taken_over_and_removed() {
        use std::io::Write;
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let old = wasmover_block::fuzzing::pseudo_random(200_000, 2);
        let mut new = old.clone();
        new[50_000..90_000].fill(3);
        let path = root.path().join("f");
        std::fs::write(&path, &old).unwrap();
        // What an earlier version left: a journal of a patch it was
        // writing, its hashes, granule hashes and partial content.
        let legacy = root.path().join(LEGACY_STATE_DIR);
        std::fs::create_dir_all(legacy.join("partial/d")).unwrap();
        std::fs::create_dir_all(legacy.join("granules")).unwrap();
        std::fs::write(legacy.join("partial/d/x"), b"partial").unwrap();
        std::fs::write(legacy.join("hashes"), b"kept hashes").unwrap();
        std::fs::write(legacy.join("granules/0123"), b"kept granules").unwrap();
        let mut file = std::fs::File::options()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let delta = wasmover_block::fuzzing::delta_of(&old, &new, 4096);
        let patch = wasmover_block::InPlacePatch::read(
            &mut file,
            &delta[..],
            &wasmover_block::Limits::default(),
            None,
        )
        .unwrap();
        std::fs::write(legacy.join("journal-target"), "f").unwrap();
        let journal = std::fs::File::create(legacy.join("journal")).unwrap();
        wasmover_block::write_undo(&file, &patch, &journal).unwrap();
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(50_000)).unwrap();
        file.write_all(&new[50_000..70_000]).unwrap();
        drop((file, journal));

        let read_only = Tree::open(root.path(), Access::ReadOnly).unwrap();
        assert_eq!(read_only.scan().unwrap().len(), 1, "not listed");
        assert!(legacy.exists(), "a read-only tree changes nothing");

        let dir = open_state_dir(state.path()).unwrap();
        let tree = Tree::open_with_state(root.path(), Access::ReadWrite, Some(dir)).unwrap();
        assert!(std::fs::read(&path).unwrap() == old, "rolled back");
        assert!(!legacy.exists(), "removed");
        let names: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"]);
        assert_eq!(
            std::fs::read(state.path().join(HASHES)).unwrap(),
            b"kept hashes"
        );
        assert_eq!(
            std::fs::read(state.path().join("granules/0123")).unwrap(),
            b"kept granules"
        );
        assert!(!state.path().join("partial").exists(), "dropped");
        assert_eq!(tree.scan().unwrap().len(), 1);
    }
}
