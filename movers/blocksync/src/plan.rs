//! What the receiving side must do to make its tree equal the sender's.
//!
//! Pure logic over two scans, so it is unit-tested without a peer.

use std::collections::HashMap;

use wasmover_sdk::volume::{Entry, EntryKind};

/// The changes, in the order they are applied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Destination paths to remove (extraneous, or of another kind), top-most
    /// only: removing a directory removes its tree.
    pub remove: Vec<String>,
    /// Source indices of directories to create, parents first.
    pub create_dirs: Vec<usize>,
    /// Source indices of files whose content must be rebuilt.
    pub transfer: Vec<usize>,
    /// Source indices of symlinks to create or retarget.
    pub links: Vec<usize>,
    /// Source indices of files whose content is current but whose mode
    /// differs.
    pub metadata: Vec<usize>,
    /// Source indices of every directory, deepest first: their metadata is
    /// set last, after their contents changed.
    pub dirs_deepest_first: Vec<usize>,
}

/// Compares the source tree with the destination's.
///
/// A file is current when kind, size and modification time agree (rsync's
/// quick check); its mode alone may still need setting.
pub fn plan(source: &[Entry], destination: &[Entry]) -> Plan {
    let wanted: HashMap<&str, &Entry> = source.iter().map(|e| (e.path.as_str(), e)).collect();
    let existing: HashMap<&str, &Entry> =
        destination.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut plan = Plan::default();

    // Destination entries come parents first, so a removed directory is seen
    // before its children and they can be skipped.
    let mut removed_prefix: Option<String> = None;
    for entry in destination {
        if let Some(prefix) = &removed_prefix {
            if entry.path.starts_with(prefix.as_str()) {
                continue;
            }
            removed_prefix = None;
        }
        let keep = wanted
            .get(entry.path.as_str())
            .is_some_and(|src| src.kind == entry.kind);
        if !keep {
            plan.remove.push(entry.path.clone());
            if entry.kind == EntryKind::Directory {
                removed_prefix = Some(format!("{}/", entry.path));
            }
        }
    }

    for (index, src) in source.iter().enumerate() {
        let current = existing
            .get(src.path.as_str())
            .filter(|dst| dst.kind == src.kind);
        match src.kind {
            EntryKind::Directory => {
                if current.is_none() {
                    plan.create_dirs.push(index);
                }
            }
            EntryKind::Symlink => {
                if current.is_none_or(|dst| dst.link_target != src.link_target) {
                    plan.links.push(index);
                }
            }
            EntryKind::File => match current {
                Some(dst) if dst.size == src.size && dst.mtime_ns == src.mtime_ns => {
                    if dst.mode != src.mode {
                        plan.metadata.push(index);
                    }
                }
                _ => plan.transfer.push(index),
            },
        }
    }

    plan.dirs_deepest_first = source
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == EntryKind::Directory)
        .map(|(i, _)| i)
        .collect();
    plan.dirs_deepest_first
        .sort_by_key(|&i| std::cmp::Reverse(source[i].path.matches('/').count()));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind, size: u64, mtime: i64) -> Entry {
        Entry {
            path: path.into(),
            kind,
            mode: 0o644,
            size,
            mtime_ns: mtime,
            link_target: String::new(),
        }
    }
    use EntryKind::{Directory as D, File as F, Symlink as L};

    #[test]
    fn identical_trees_need_only_directory_metadata() {
        let tree = vec![entry("a", D, 0, 1), entry("a/f", F, 3, 1)];
        let p = plan(&tree, &tree);
        assert!(p.remove.is_empty() && p.transfer.is_empty() && p.create_dirs.is_empty());
        assert_eq!(p.dirs_deepest_first, [0]);
    }

    #[test]
    fn changed_new_and_extraneous_entries() {
        let src = vec![
            entry("a", D, 0, 1),
            entry("a/b", D, 0, 1),
            entry("a/b/new", F, 1, 1),
            entry("a/same", F, 3, 1),
            entry("a/size", F, 4, 1),
            entry("a/time", F, 3, 2),
            entry("link", L, 0, 1),
        ];
        let mut mode = entry("a/same", F, 3, 1);
        mode.mode = 0o600;
        let dst = vec![
            entry("a", D, 0, 1),
            mode,
            entry("a/size", F, 3, 1),
            entry("a/time", F, 3, 1),
            entry("gone", D, 0, 1),
            entry("gone/x", F, 1, 1),
            entry("gone/y", D, 0, 1),
            entry("link", F, 1, 1),
        ];
        let p = plan(&src, &dst);
        assert_eq!(p.remove, ["gone", "link"]);
        assert_eq!(p.create_dirs, [1]);
        assert_eq!(p.transfer, [2, 4, 5]);
        assert_eq!(p.metadata, [3]);
        assert_eq!(p.links, [6]);
        assert_eq!(p.dirs_deepest_first, [1, 0]);
    }

    #[test]
    fn a_file_that_became_a_directory_is_replaced() {
        let src = vec![entry("x", D, 0, 1), entry("x/f", F, 1, 1)];
        let dst = vec![entry("x", F, 5, 1)];
        let p = plan(&src, &dst);
        assert_eq!(p.remove, ["x"]);
        assert_eq!(p.create_dirs, [0]);
        assert_eq!(p.transfer, [1]);
    }

    #[test]
    fn a_retargeted_symlink_is_relinked() {
        let mut src = entry("l", L, 0, 1);
        src.link_target = "new".into();
        let mut dst = entry("l", L, 0, 1);
        dst.link_target = "old".into();
        assert_eq!(plan(&[src.clone()], &[dst]).links, [0]);
        assert!(plan(&[src.clone()], &[src]).links.is_empty());
    }

    #[test]
    fn siblings_sharing_a_prefix_with_a_removed_dir_survive() {
        let src = vec![entry("ab", F, 1, 1)];
        let dst = vec![
            entry("a", D, 0, 1),
            entry("a/x", F, 1, 1),
            entry("ab", F, 1, 1),
        ];
        let p = plan(&src, &dst);
        assert_eq!(p.remove, ["a"]);
        assert!(p.transfer.is_empty());
    }
}
