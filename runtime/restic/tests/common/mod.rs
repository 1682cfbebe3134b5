//! Shared by the tests: a generated tree with the cases that break
//! backups, and a bit-exact comparison of two trees.

#![allow(dead_code)] // each test binary uses its own part

pub mod cli;
pub mod servers;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use rand::{Rng, SeedableRng};

pub const PASSWORD: &str = "correct horse battery staple";

/// Writes the test tree under `root`: nested directories, odd names (one
/// not UTF-8), an empty file, 6 MiB of random data, a compressible file and a duplicate
/// (dedup), symlinks (relative, absolute, dangling), special modes and
/// fixed times with nanoseconds.
pub fn generate_tree(root: &Path) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(28);
    let dirs = [
        "a",
        "a/b",
        "a/b/c",
        "spaces in name",
        "ünïcødé ✓",
        "-dash",
        "empty dir",
    ];
    for d in dirs {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let mut random = vec![0u8; 6 << 20];
    rng.fill(&mut random[..]);
    let text: Vec<u8> = (0..300_000)
        .flat_map(|i| format!("line {i} of a compressible file\n").into_bytes())
        .collect();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("a/random.bin", random.clone()),
        ("a/b/copy of random.bin", random[..3 << 20].to_vec()),
        ("a/b/c/text.log", text),
        ("spaces in name/quote\"and\\backslash", b"odd".to_vec()),
        ("ünïcødé ✓/日本語.txt", "こんにちは".as_bytes().to_vec()),
        ("-dash/new\nline", b"newline in name".to_vec()),
        ("tiny", b"x".to_vec()),
    ];
    for (name, data) in &files {
        fs::write(root.join(name), data).unwrap();
    }
    // Not UTF-8: restic keeps names as bytes.
    fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9")),
        b"bytes",
    )
    .unwrap();
    for i in 0..40 {
        let mut data = vec![0u8; rng.random_range(0..20_000)];
        rng.fill(&mut data[..]);
        fs::write(root.join(format!("a/b/small-{i:02}")), data).unwrap();
    }
    symlink("random.bin", root.join("a/link to random")).unwrap();
    symlink("/etc/hostname", root.join("absolute link")).unwrap();
    symlink("does/not/exist", root.join("a/b/dangling")).unwrap();
    fs::set_permissions(root.join("tiny"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(
        root.join("a/b/c/text.log"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::set_permissions(
        root.join("spaces in name"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    // Times last, deepest first, so that writing children does not change them.
    let mut all = list(root);
    all.reverse();
    for (i, path) in all.iter().enumerate() {
        let t = FileTime::from_unix_time(1_600_000_000 + i as i64 * 3600, 123_456_789 + i as u32);
        filetime::set_symlink_file_times(root.join(path), t, t).unwrap();
    }
}

/// Every path under `root`, relative, sorted.
fn list(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in fs::read_dir(root.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let path = rel.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

/// What is compared of each entry.
#[derive(Debug, PartialEq)]
enum Entry {
    Dir {
        mode: u32,
        mtime: (i64, i64),
    },
    File {
        mode: u32,
        mtime: (i64, i64),
        content_sha: [u8; 32],
        len: u64,
    },
    Symlink {
        target: PathBuf,
        mtime: (i64, i64),
    },
}

fn describe(root: &Path) -> BTreeMap<PathBuf, Entry> {
    use sha2::Digest;
    list(root)
        .into_iter()
        .map(|rel| {
            let path = root.join(&rel);
            let meta = fs::symlink_metadata(&path).unwrap();
            let mtime = (meta.mtime(), meta.mtime_nsec());
            let mode = meta.mode() & 0o7777;
            let entry = if meta.is_dir() {
                Entry::Dir { mode, mtime }
            } else if meta.file_type().is_symlink() {
                Entry::Symlink {
                    target: fs::read_link(&path).unwrap(),
                    mtime,
                }
            } else {
                let data = fs::read(&path).unwrap();
                Entry::File {
                    mode,
                    mtime,
                    content_sha: sha2::Sha256::digest(&data).into(),
                    len: data.len() as u64,
                }
            };
            (rel, entry)
        })
        .collect()
}

/// Asserts that `b` holds exactly the entries of `a`: kinds, bytes,
/// symlink targets, permission bits and modification times.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (da, db) = (describe(a), describe(b));
    let names_a: Vec<_> = da.keys().collect();
    let names_b: Vec<_> = db.keys().collect();
    assert_eq!(names_a, names_b, "the trees hold different paths");
    for (path, entry) in &da {
        assert_eq!(Some(entry), db.get(path), "{} differs", path.display());
    }
    assert!(
        da.len() > 50,
        "the comparison saw the whole tree ({} entries)",
        da.len()
    );
}
