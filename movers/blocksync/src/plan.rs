//! What the receiving side must do to make its tree equal the sender's.
//!
//! Pure logic over two scans, so it is unit-tested without a peer.

use std::cmp::Ordering;
use std::collections::HashMap;

use wasmover_sdk::escape_path;
use wasmover_sdk::volume::{Entry, EntryKind};

/// The changes, in the order they are applied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Destination paths to remove (extraneous, or of another kind), top-most
    /// only: removing a directory removes its tree.
    pub remove: Vec<Vec<u8>>,
    /// Source indices of directories to create, parents first.
    pub create_dirs: Vec<usize>,
    /// Source indices of files whose content must be rebuilt.
    pub transfer: Vec<usize>,
    /// Source indices of symlinks to create or retarget.
    pub links: Vec<usize>,
    /// Source indices of special files (fifos, sockets, device nodes) to
    /// make: missing, or a device of another number.
    pub nodes: Vec<usize>,
    /// Source indices of files whose content is current but whose mode
    /// differs, and of special files whose mode or time differs.
    pub metadata: Vec<usize>,
    /// Source indices of every directory, deepest first: their metadata is
    /// set last, after their contents changed.
    pub dirs_deepest_first: Vec<usize>,
    /// Files that are further hard links of an earlier source file, as
    /// `(first, link)` source indices: `link` is linked to `first` after the
    /// content moved, instead of being transferred again.
    pub hard_links: Vec<(usize, usize)>,
    /// Source indices of entries whose owner must be set: new or rebuilt
    /// ones, and those whose owner differs.
    pub owners: Vec<usize>,
    /// Source indices of entries whose extended attributes must be set:
    /// new or rebuilt ones that have any, and those whose attributes
    /// differ (removing them is setting them too). A further hard link
    /// shares its first path's.
    pub attributes: Vec<usize>,
}

/// Compares the source tree with the destination's.
///
/// A file is current when kind, size and modification time agree (rsync's
/// quick check); its mode alone may still need setting. A block volume is
/// always compared by content: its delta costs little when nothing
/// changed.
///
/// Both lists must be in walk order, as a scan lists them (parents before
/// children, siblings by name, each path once): they are paired in one
/// pass over both, without hashing a path. A list out of that order is
/// refused, since pairing it would remove or rebuild the wrong entries.
pub fn plan(source: &[Entry], destination: &[Entry]) -> Result<Plan, String> {
    in_walk_order(source).map_err(|why| format!("the source's entries: {why}"))?;
    in_walk_order(destination).map_err(|why| format!("the destination's entries: {why}"))?;
    // The destination index at each source path, and the reverse.
    let mut to_dst = vec![None; source.len()];
    let mut to_src = vec![None; destination.len()];
    let (mut s, mut d) = (0, 0);
    while s < source.len() && d < destination.len() {
        match walk_order(&source[s].path, &destination[d].path) {
            Ordering::Less => s += 1,
            Ordering::Greater => d += 1,
            Ordering::Equal => {
                to_dst[s] = Some(d);
                to_src[d] = Some(s);
                s += 1;
                d += 1;
            }
        }
    }
    // The destination entry of the same kind at a source entry's path.
    let existing = |i: usize| {
        to_dst[i]
            .map(|d: usize| &destination[d])
            .filter(|dst| dst.kind == source[i].kind)
    };
    let mut plan = Plan::default();
    // The first source path of every file with several links.
    let mut first_link: HashMap<u64, usize> = HashMap::new();
    for (i, e) in source.iter().enumerate() {
        if e.kind == EntryKind::File && e.links > 1 {
            first_link.entry(e.inode).or_insert(i);
        }
    }
    let first_of = |i: usize| {
        let e = &source[i];
        (e.kind == EntryKind::File && e.links > 1)
            .then(|| first_link[&e.inode])
            .filter(|&first| first != i)
    };

    // Destination entries come parents first, so a removed directory is seen
    // before its children and they can be skipped.
    let mut removed_prefix: Option<Vec<u8>> = None;
    for (entry, src) in destination.iter().zip(&to_src) {
        if let Some(prefix) = &removed_prefix {
            if entry.path.starts_with(prefix) {
                continue;
            }
            removed_prefix = None;
        }
        let keep = src.is_some_and(|s: usize| source[s].kind == entry.kind);
        if !keep {
            plan.remove.push(entry.path.clone());
            if entry.kind == EntryKind::Directory {
                removed_prefix = Some([entry.path.as_slice(), b"/"].concat());
            }
        }
    }

    for (index, src) in source.iter().enumerate() {
        let current = existing(index);
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
                _ if first_of(index).is_some() => {}
                Some(dst) if dst.size == src.size && dst.mtime_ns == src.mtime_ns => {
                    if dst.mode != src.mode {
                        plan.metadata.push(index);
                    }
                }
                _ => plan.transfer.push(index),
            },
            // A device has no useful modification time, and its mode and
            // owner belong to the node, not the content.
            EntryKind::Block => {
                plan.transfer.push(index);
                continue;
            }
            EntryKind::Fifo
            | EntryKind::Socket
            | EntryKind::CharDevice
            | EntryKind::BlockDevice => match current {
                Some(dst) if dst.rdev == src.rdev => {
                    if (dst.mode, dst.mtime_ns) != (src.mode, src.mtime_ns) {
                        plan.metadata.push(index);
                    }
                }
                _ => plan.nodes.push(index),
            },
        }
        let owner_differs = current.is_none_or(|dst| (dst.uid, dst.gid) != (src.uid, src.gid));
        if owner_differs && first_of(index).is_none() {
            plan.owners.push(index);
        }
    }

    // A link is made again when its first path's content is rebuilt (a new
    // inode), or when on the destination it is not already that file.
    let mut rebuilt = vec![false; source.len()];
    for &index in &plan.transfer {
        rebuilt[index] = true;
    }
    for index in 0..source.len() {
        let Some(first) = first_of(index) else {
            continue;
        };
        let dst_inode = |i: usize| existing(i).map(|d| d.inode);
        let linked = dst_inode(index).is_some_and(|ino| Some(ino) == dst_inode(first));
        if !linked || rebuilt[first] {
            plan.hard_links.push((first, index));
        }
    }
    // Rebuilt files are new inodes, owned by whoever wrote them.
    plan.owners.extend(
        plan.transfer
            .iter()
            .copied()
            .filter(|&i| source[i].kind == EntryKind::File),
    );
    plan.owners.sort_unstable();
    plan.owners.dedup();

    plan.dirs_deepest_first = source
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == EntryKind::Directory)
        .map(|(i, _)| i)
        .collect();
    let mut fresh = vec![false; source.len()];
    for &i in plan
        .transfer
        .iter()
        .chain(&plan.create_dirs)
        .chain(&plan.links)
        .chain(&plan.nodes)
    {
        fresh[i] = true;
    }
    plan.attributes = (0..source.len())
        .filter(|&i| source[i].kind != EntryKind::Block && first_of(i).is_none())
        .filter(|&i| match (fresh[i], existing(i)) {
            (false, Some(dst)) => dst.attributes != source[i].attributes,
            _ => source[i].attributes != 0,
        })
        .collect();

    let depth = |i: usize| source[i].path.iter().filter(|&&c| c == b'/').count();
    plan.dirs_deepest_first
        .sort_by_key(|&i| std::cmp::Reverse(depth(i)));
    Ok(plan)
}

/// How a scan orders two paths: component by component, so a directory's
/// whole subtree comes before its next sibling. That is byte order with
/// `/` below every other byte (a name holds neither `/` nor NUL).
fn walk_order(a: &[u8], b: &[u8]) -> Ordering {
    let same = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let at = |path: &[u8]| path.get(same).map(|&c| if c == b'/' { 0 } else { c });
    at(a).cmp(&at(b))
}

/// Whether `entries` are in strict [`walk_order`]; else the first path
/// out of place.
fn in_walk_order(entries: &[Entry]) -> Result<(), String> {
    match entries
        .windows(2)
        .find(|pair| walk_order(&pair[0].path, &pair[1].path) != Ordering::Less)
    {
        None => Ok(()),
        Some(pair) => Err(format!(
            "{} comes after {}: not in walk order (parents first, siblings by name, each once)",
            escape_path(&pair[1].path),
            escape_path(&pair[0].path)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: impl AsRef<[u8]>, kind: EntryKind, size: u64, mtime: i64) -> Entry {
        Entry {
            path: path.as_ref().to_vec(),
            kind,
            mode: 0o644,
            size,
            mtime_ns: mtime,
            link_target: Vec::new(),
            uid: 0,
            gid: 0,
            inode: 0,
            links: 1,
            rdev: 0,
            attributes: 0,
        }
    }
    use EntryKind::{Block as B, Directory as D, File as F, Symlink as L};

    #[test]
    fn a_block_volume_is_always_compared_and_keeps_its_node() {
        let src = vec![entry("", B, 4096, 1)];
        let mut dst = vec![entry("", B, 4096, 1)];
        dst[0].uid = 7;
        let p = plan(&src, &dst).unwrap();
        assert_eq!(p.transfer, [0]);
        assert!(p.remove.is_empty() && p.owners.is_empty() && p.metadata.is_empty());
    }

    #[test]
    fn identical_trees_need_only_directory_metadata() {
        let tree = vec![entry("a", D, 0, 1), entry("a/f", F, 3, 1)];
        let p = plan(&tree, &tree).unwrap();
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
        let p = plan(&src, &dst).unwrap();
        assert_eq!(p.remove, [b"gone".to_vec(), b"link".to_vec()]);
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
        let p = plan(&src, &dst).unwrap();
        assert_eq!(p.remove, [b"x".to_vec()]);
        assert_eq!(p.create_dirs, [0]);
        assert_eq!(p.transfer, [1]);
    }

    #[test]
    fn a_retargeted_symlink_is_relinked() {
        let mut src = entry("l", L, 0, 1);
        src.link_target = b"new".to_vec();
        let mut dst = entry("l", L, 0, 1);
        dst.link_target = b"old".to_vec();
        assert_eq!(plan(&[src.clone()], &[dst]).unwrap().links, [0]);
        assert!(plan(&[src.clone()], &[src]).unwrap().links.is_empty());
    }

    #[test]
    fn siblings_sharing_a_prefix_with_a_removed_dir_survive() {
        let src = vec![entry("ab", F, 1, 1)];
        let dst = vec![
            entry("a", D, 0, 1),
            entry("a/x", F, 1, 1),
            entry("ab", F, 1, 1),
        ];
        let p = plan(&src, &dst).unwrap();
        assert_eq!(p.remove, [b"a".to_vec()]);
        assert!(p.transfer.is_empty());
    }

    fn linked(path: &str, inode: u64, size: u64, mtime: i64) -> Entry {
        Entry {
            inode,
            links: 2,
            ..entry(path, F, size, mtime)
        }
    }

    #[test]
    fn hard_links_move_once_and_are_linked() {
        let src = vec![
            linked("a", 7, 5, 1),
            linked("b", 7, 5, 1),
            entry("c", F, 1, 1),
        ];
        // New destination: "a" is transferred, "b" linked to it.
        let p = plan(&src, &[]).unwrap();
        assert_eq!(p.transfer, [0, 2]);
        assert_eq!(p.hard_links, [(0, 1)]);
        assert_eq!(p.owners, [0, 2]);
        // Already linked and current: nothing to do.
        let dst = vec![
            linked("a", 9, 5, 1),
            linked("b", 9, 5, 1),
            entry("c", F, 1, 1),
        ];
        let p = plan(&src, &dst).unwrap();
        assert!(p.transfer.is_empty() && p.hard_links.is_empty(), "{p:?}");
        // Current content, but the destination has two separate files.
        let dst = vec![
            linked("a", 9, 5, 1),
            entry("b", F, 5, 1),
            entry("c", F, 1, 1),
        ];
        assert_eq!(plan(&src, &dst).unwrap().hard_links, [(0, 1)]);
        // The first path is rebuilt (a new inode): the link is made again.
        let dst = vec![
            linked("a", 9, 4, 1),
            linked("b", 9, 4, 1),
            entry("c", F, 1, 1),
        ];
        let p = plan(&src, &dst).unwrap();
        assert_eq!(
            (p.transfer.as_slice(), p.hard_links.as_slice()),
            (&[0][..], &[(0, 1)][..])
        );
    }

    #[test]
    fn owners_are_set_where_they_differ_or_the_entry_is_new() {
        let mut owned = entry("o", F, 1, 1);
        owned.uid = 1000;
        let src = vec![entry("d", D, 0, 1), owned.clone(), entry("same", F, 1, 1)];
        let dst = vec![entry("o", F, 1, 1), entry("same", F, 1, 1)];
        assert_eq!(plan(&src, &dst).unwrap().owners, [0, 1]);
    }

    #[test]
    fn paths_pair_in_walk_order_not_byte_order() {
        // "a.txt" sorts before "a/x" byte by byte ('.' < '/'), but a scan
        // lists a directory's subtree before its next sibling.
        let tree = vec![
            entry("a", D, 0, 1),
            entry("a/x", F, 1, 1),
            entry("a.txt", F, 2, 1),
        ];
        let p = plan(&tree, &tree).unwrap();
        assert!(p.transfer.is_empty() && p.remove.is_empty(), "{p:?}");
        let dst = vec![entry("a", D, 0, 1), entry("a.txt", F, 2, 1)];
        let p = plan(&tree, &dst).unwrap();
        assert_eq!((p.transfer, p.remove), (vec![1], vec![]));
    }

    #[test]
    fn walk_order_is_component_by_component() {
        let mut paths = vec![
            "a.txt", "a/x", "a", "a/b/c", "a/b", "a0", "a/b.c", "b", "a/-", "", "a/b/c/d",
        ];
        paths.sort_by(|a, b| walk_order(a.as_bytes(), b.as_bytes()));
        let mut by_components = paths.clone();
        by_components.sort_by(|a, b| a.split('/').cmp(b.split('/')));
        assert_eq!(paths, by_components);
        assert_eq!(walk_order(b"a/b", b"a/b"), Ordering::Equal);
        // Bytes that are not UTF-8 order as bytes, after every ASCII name.
        assert_eq!(walk_order(b"a/\xff", b"a/z"), Ordering::Greater);
        assert_eq!(walk_order(b"a/\xff", b"a\xff"), Ordering::Less);
    }

    #[test]
    fn attributes_are_set_where_they_differ_or_on_new_entries_that_have_any() {
        let with = |path: &str, kind, attributes| Entry {
            attributes,
            ..entry(path, kind, 1, 1)
        };
        let src = vec![
            with("d", D, 0),
            with("d/changed", F, 8),
            with("d/kept", F, 5),
            with("d/new", F, 6),
            with("d/plain", F, 0),
            with("d/stripped", F, 0),
        ];
        let dst = vec![
            with("d", D, 0),
            with("d/changed", F, 7),
            with("d/kept", F, 5),
            with("d/plain", F, 0),
            with("d/stripped", F, 9),
        ];
        // New with attributes, attributes removed, attributes changed.
        assert_eq!(plan(&src, &dst).unwrap().attributes, [1, 3, 5]);
        // A rebuilt file is a new inode: its attributes are set again.
        let mut older = dst.clone();
        older[2].size = 4;
        assert_eq!(plan(&src, &older).unwrap().attributes, [1, 2, 3, 5]);
    }

    #[test]
    fn special_files_are_made_once_and_remade_as_another_device() {
        use EntryKind::{CharDevice, Fifo, Socket};
        let node = |path: &str, kind, rdev| Entry {
            rdev,
            ..entry(path, kind, 0, 1)
        };
        let src = vec![
            node("null", CharDevice, 0x103),
            node("pipe", Fifo, 0),
            node("sock", Socket, 0),
        ];
        assert_eq!(plan(&src, &[]).unwrap().nodes, [0, 1, 2]);
        assert!(plan(&src, &src).unwrap().nodes.is_empty());
        // Another device number, another kind, another mode.
        let mut moded = node("sock", Socket, 0);
        moded.mode = 0o600;
        let dst = vec![node("null", CharDevice, 0x105), node("pipe", F, 0), moded];
        let p = plan(&src, &dst).unwrap();
        assert_eq!(p.nodes, [0, 1]);
        assert_eq!(p.remove, [b"pipe".to_vec()]);
        assert_eq!(p.metadata, [2]);
    }

    #[test]
    fn lists_out_of_walk_order_are_refused() {
        let sorted = vec![entry("a", F, 1, 1), entry("b", F, 1, 1)];
        let swapped = vec![entry("b", F, 1, 1), entry("a", F, 1, 1)];
        let twice = vec![entry("a", F, 1, 1), entry("a", F, 1, 1)];
        let child_first = vec![entry("d/f", F, 1, 1), entry("d", D, 0, 1)];
        for bad in [&swapped, &twice, &child_first] {
            let why = plan(bad, &sorted).unwrap_err();
            assert!(why.starts_with("the source's entries: "), "{why}");
            assert!(why.contains("not in walk order"), "{why}");
            let why = plan(&sorted, bad).unwrap_err();
            assert!(why.starts_with("the destination's entries: "), "{why}");
        }
    }
}
