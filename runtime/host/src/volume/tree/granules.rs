//! The granule hashes of a tree's large files, kept for the next run's
//! summary of them ([`KeptHashes`]).

use std::ffi::OsStr;
use std::io;
use std::sync::atomic::Ordering;

use super::{GRANULES, Tree, granules_path};
use crate::volume::kept_hashes::{self, KeptHashes};

impl Tree {
    /// The granule hashes kept of `path` by an earlier run, if any; the
    /// caller compares their stamp with the file's.
    pub(crate) fn kept_hashes(&self, path: &OsStr) -> Option<KeptHashes> {
        let state = self.state.as_ref()?;
        let shown = || state.shown.join(granules_path(path)).display().to_string();
        match state.dir.read(granules_path(path)) {
            Ok(bytes) => kept_hashes::decode(&bytes, path)
                .inspect_err(|why| {
                    tracing::warn!(file = shown(), "ignoring kept granule hashes: {why}");
                })
                .ok(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(file = shown(), "ignoring kept granule hashes: {e}");
                None
            }
        }
    }

    /// Keeps the granule hashes of `path` for the next run, if its stamp
    /// lets a later run trust them ([`Stamp::settled`]); otherwise drops
    /// what was kept. Best effort: hashes not kept cost the next run one
    /// read of the file.
    pub(crate) fn keep_hashes(&self, path: &OsStr, kept: Option<&KeptHashes>) {
        let file = granules_path(path);
        let Some(kept) = kept.filter(|k| k.stamp.settled(self.settle_ns)) else {
            if self.has_granules.load(Ordering::Relaxed)
                && let Some(state) = &self.state
            {
                let _ = state.dir.remove_file(&file);
            }
            return;
        };
        self.has_granules.store(true, Ordering::Relaxed);
        let kept = self.replace_state_file(Some(GRANULES), &file, &kept_hashes::encode(path, kept));
        if let Err(e) = kept {
            tracing::warn!(
                path = crate::volume::path::shown(path),
                "could not keep its granule hashes for the next run: {e}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Access, known};

    /// Granule hashes are kept only under a stamp a later run may trust,
    /// and a completed transfer drops those of files that are gone.
    #[test]
    fn kept_granule_hashes_go_with_their_files() {
        let root = tempfile::tempdir().unwrap();
        for name in ["a", "b"] {
            std::fs::write(root.path().join(name), name).unwrap();
        }
        let state = tempfile::tempdir().unwrap();
        let open_state = || Some(crate::volume::open_state_dir(state.path()).unwrap());
        let mut tree = Tree::open_with_state(root.path(), Access::ReadWrite, open_state()).unwrap();
        let kept = |path: &OsStr| {
            let (file, len, stamp) = tree.open_file(path).unwrap().unwrap();
            let hashes = wasmover_block::BasisHashes::compute(&file, len).unwrap();
            KeptHashes { stamp, hashes }
        };
        let (a, b) = (kept(OsStr::new("a")), kept(OsStr::new("b")));
        tree.settle_ns = known::SETTLE_NS;
        tree.keep_hashes(OsStr::new("a"), Some(&a));
        assert!(
            tree.kept_hashes(OsStr::new("a")).is_none(),
            "not settled: not kept"
        );
        tree.settle_ns = 0;
        tree.keep_hashes(OsStr::new("a"), Some(&a));
        tree.keep_hashes(OsStr::new("b"), Some(&b));
        assert_eq!(tree.kept_hashes(OsStr::new("a")).unwrap().stamp, a.stamp);
        assert_eq!(tree.kept_hashes(OsStr::new("b")).unwrap().hashes, b.hashes);
        assert_ne!(a.hashes, b.hashes);

        std::fs::remove_file(root.path().join("b")).unwrap();
        tree.discard_leftovers();
        assert!(tree.kept_hashes(OsStr::new("a")).is_some());
        assert!(tree.kept_hashes(OsStr::new("b")).is_none());
        std::fs::remove_file(root.path().join("a")).unwrap();
        tree.discard_leftovers();
        assert!(!state.path().join(GRANULES).exists());
        assert_eq!(
            std::fs::read_dir(root.path()).unwrap().count(),
            0,
            "nothing was kept in the volume"
        );
    }
}
