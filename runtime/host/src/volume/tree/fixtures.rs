//! Trees the digest tests build, and the changes they make to them.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use cap_fs_ext::DirExt;
use cap_std::fs::Dir;

use super::Tree;
use super::mutate::time_spec;
use crate::volume::Access;
use crate::volume::entry::TreeDigest;

/// A small tree with every kind of entry, fixed metadata.
pub(super) fn digest_tree(root: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(root.join("d/e")).unwrap();
    std::fs::write(root.join("d/e/f"), b"some content").unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("big"), vec![7u8; 3 << 20]).unwrap();
    std::os::unix::fs::symlink("d/e/f", root.join("link")).unwrap();
    let when = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for file in ["d/e/f", "empty", "big"] {
        let path = root.join(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }
    for dir in ["d/e", "d"] {
        std::fs::File::open(root.join(dir))
            .unwrap()
            .set_modified(when)
            .unwrap();
    }
}

/// Sets the symlink's own mtime, as a receiver does.
pub(super) fn pin_link(root: &Path) {
    let dir = Dir::open_ambient_dir(root, cap_std::ambient_authority()).unwrap();
    dir.set_symlink_times("link", None, Some(time_spec(5_000_000_000)))
        .unwrap();
}

pub(super) fn digest_of(root: &Path) -> TreeDigest {
    Tree::open(root, Access::ReadOnly)
        .unwrap()
        .digest()
        .unwrap()
}

/// What a change is, and how to make it under a root.
pub(super) type TreeChange = (&'static str, fn(&Path));

/// One change to [`digest_tree`] of each property the digest covers.
pub(super) fn tree_changes() -> [TreeChange; 10] {
    use std::os::unix::fs::PermissionsExt as _;
    [
        ("one byte of a small file", |r| {
            let mut f = std::fs::File::options()
                .write(true)
                .open(r.join("d/e/f"))
                .unwrap();
            std::io::Write::write_all(&mut f, b"S").unwrap();
            f.set_modified(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
                .unwrap();
        }),
        ("one byte in the middle of a big file", |r| {
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::options()
                .write(true)
                .open(r.join("big"))
                .unwrap();
            f.write_at(b"\x08", 2 << 20).unwrap();
            f.set_modified(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
                .unwrap();
        }),
        ("a mode", |r| {
            std::fs::set_permissions(r.join("empty"), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }),
        ("a file's mtime by 1 ns", |r| {
            std::fs::File::options()
                .write(true)
                .open(r.join("empty"))
                .unwrap()
                .set_modified(UNIX_EPOCH + Duration::new(1_700_000_000, 1))
                .unwrap();
        }),
        ("a directory's mtime", |r| {
            std::fs::File::open(r.join("d/e"))
                .unwrap()
                .set_modified(UNIX_EPOCH + Duration::from_secs(1))
                .unwrap();
        }),
        ("a name", |r| {
            std::fs::rename(r.join("empty"), r.join("empty2")).unwrap();
        }),
        ("a symlink's target", |r| {
            std::fs::remove_file(r.join("link")).unwrap();
            std::os::unix::fs::symlink("d/e/g", r.join("link")).unwrap();
        }),
        ("a file became a symlink", |r| {
            std::fs::remove_file(r.join("empty")).unwrap();
            std::os::unix::fs::symlink("x", r.join("empty")).unwrap();
        }),
        ("an added empty directory", |r| {
            std::fs::create_dir(r.join("new")).unwrap();
        }),
        // And the times of the directory it is added to.
        ("a file added below the root", |r| {
            std::fs::write(r.join("d/new"), b"").unwrap();
        }),
    ]
}

/// The root directory's own metadata is not covered; a symlink's own
/// mtime is set as a receiver sets it.
pub(super) fn settle_root(root: &Path) {
    if root.join("link").is_symlink() {
        pin_link(root);
    }
    std::fs::File::open(root)
        .unwrap()
        .set_modified(UNIX_EPOCH)
        .unwrap();
}
