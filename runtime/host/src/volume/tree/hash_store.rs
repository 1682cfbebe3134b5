//! The content hashes a tree's digest keeps for the next run's, in its
//! [`HashStore`]: loaded before the digest, replaced after it.

use std::io;
use std::path::Path;

use cap_std::fs::Dir;

use super::{HASHES, STAGING_SUFFIX, Tree};
use crate::volume::known::{self, HashStore, Stamp, Stored};

/// The hashes an earlier digest kept in `store` (for [`HashStore::State`],
/// in the state directory `state`, shown as `shown`), unless `read_all`;
/// none if there are none or they cannot be used (said in a warning: the
/// digest then reads every file, which is slower but as sure).
pub(super) fn load_hashes(
    state: Option<&Dir>,
    shown: &Path,
    store: &HashStore,
    read_all: bool,
) -> Stored {
    let bytes = match (store, state) {
        _ if read_all => return Stored::default(),
        (HashStore::Off, _) | (HashStore::State, None) => return Stored::default(),
        (HashStore::State, Some(state)) => state.read(HASHES),
        (HashStore::File(path), _) => std::fs::read(path),
    };
    let shown = || match store {
        HashStore::File(path) => path.display().to_string(),
        _ => shown.join(HASHES).display().to_string(),
    };
    match bytes {
        Ok(bytes) => known::decode(bytes).unwrap_or_else(|why| {
            tracing::warn!(store = shown(), "ignoring the stored hashes: {why}");
            Stored::default()
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Stored::default(),
        Err(e) => {
            tracing::warn!(store = shown(), "ignoring the stored hashes: {e}");
            Stored::default()
        }
    }
}

impl Tree {
    /// The hashes an earlier digest of this tree kept (see [`load_hashes`]).
    pub(super) fn load_hashes(&self) -> Stored {
        let state = self.state.as_ref();
        let shown = state.map_or(Path::new(""), |s| s.shown.as_path());
        load_hashes(state.map(|s| &s.dir), shown, &self.store, self.read_all)
    }

    /// Replaces the stored hashes with `kept`, atomically; best effort (a
    /// store that cannot be written costs the next run reads, nothing
    /// else).
    pub(super) fn save_hashes(&self, kept: &mut [(Stamp, blake3::Hash)]) {
        let saved = match &self.store {
            HashStore::Off => return,
            // Nothing settled yet: no file for that.
            HashStore::State if kept.is_empty() => {
                match self.state().and_then(|s| s.dir.remove_file(HASHES)) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    removed => removed,
                }
            }
            HashStore::State => self.replace_state_file(None, HASHES, &known::encode(kept)),
            HashStore::File(path) if kept.is_empty() => match std::fs::remove_file(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                removed => removed,
            },
            HashStore::File(path) => {
                // Another process may keep the same store (a second sender
                // of the same directory): each stages its own file, and
                // the last rename wins whole.
                let mut staged = path.clone().into_os_string();
                staged.push(format!(".{}{STAGING_SUFFIX}", std::process::id()));
                path.parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::write(&staged, known::encode(kept)))
                    .and_then(|()| std::fs::rename(&staged, path))
            }
        };
        if let Err(e) = saved {
            tracing::warn!(root = %self.root.display(), "could not keep the hashes for the next run: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::volume::Access;

    /// The digest keeps the hashes of settled files, and the next digest
    /// believes them (a store that lies shows), but only for the very file
    /// version, never when told to read every file, and not when the store
    /// is damaged.
    #[test]
    fn kept_hashes_spare_reads_only_for_unchanged_files() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::write(&a, b"aaa").unwrap();
        std::fs::write(&b, b"bbb").unwrap();
        let state = tempfile::tempdir().unwrap();
        let store = state.path().join(HASHES);
        let digest = |read_all: bool| {
            let dir = crate::volume::open_state_dir(state.path()).unwrap();
            let mut tree =
                Tree::open_with_state(root.path(), Access::ReadWrite, Some(dir)).unwrap();
            // The rule of filesystems with a coarse ctime (see
            // `fine_ctime_means_a_change_after_a_stat_always_shows`), with
            // a margin this test can wait out.
            tree.settle_ns = known::TEST_SETTLE_NS;
            if read_all {
                tree.read_every_file();
            }
            tree.digest().unwrap().root
        };
        let honest = digest(false);
        assert!(!store.exists(), "files changed just now are not kept");
        std::thread::sleep(Duration::from_nanos(2 * known::TEST_SETTLE_NS as u64));
        assert_eq!(digest(false), honest);
        let kept = known::decode(std::fs::read(&store).unwrap()).unwrap();
        assert_eq!(kept.decoded().len(), 2);

        let lie = |only: &Path| {
            let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(only).unwrap());
            let mut lies: Vec<_> = kept
                .decoded()
                .into_iter()
                .map(|(stamp, hash)| match stamp.inode == inode {
                    true => (stamp, blake3::hash(b"lie")),
                    false => (stamp, hash),
                })
                .collect();
            std::fs::write(&store, known::encode(&mut lies)).unwrap();
        };
        lie(&a);
        assert_ne!(digest(false), honest, "the kept hash is used");
        lie(&a);
        assert_eq!(digest(true), honest, "read_every_file trusts none");
        lie(&a);
        let mut damaged = std::fs::read(&store).unwrap();
        damaged[10] ^= 1;
        std::fs::write(&store, damaged).unwrap();
        assert_eq!(digest(false), honest, "a damaged store is ignored");

        // Rewritten with the same content and mtime: its ctime moved, so
        // it is read again.
        lie(&a);
        let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
        std::fs::write(&a, b"aaa").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(digest(false), honest, "a changed file is read again");
    }

    /// A read-only tree keeps its hashes only where it is told, never in
    /// itself.
    #[test]
    fn a_read_only_tree_keeps_hashes_only_outside_itself() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("a"), b"aaa").unwrap();
        let mut tree = Tree::open(root.path(), Access::ReadOnly).unwrap();
        assert!(tree.set_hash_store(HashStore::State).is_err());
        // A margin this test can wait out, so that the file settles.
        tree.settle_ns = known::TEST_SETTLE_NS;
        std::thread::sleep(Duration::from_nanos(2 * known::TEST_SETTLE_NS as u64));
        tree.digest().unwrap();
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
        let file = elsewhere.path().join("deep/hashes");
        tree.set_hash_store(HashStore::File(file.clone())).unwrap();
        tree.digest().unwrap();
        assert_eq!(
            known::decode(std::fs::read(&file).unwrap())
                .unwrap()
                .decoded()
                .len(),
            1
        );
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }
}
