//! Shared pieces of the end-to-end tests: the guest components and the
//! `wasmover` binary, generated trees on real filesystems, and a strict tree
//! comparison; in modules, the servers and stand-ins the tests run against.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use wasmover_host::volume::attributes::Namespaces;
use wasmover_host::{Access, EngineConfig, MoverEngine, MoverModule, Volume};

pub mod apiserver;
pub mod cluster;
pub mod node;
pub mod operator;
pub mod registry;
pub mod tamper;
pub mod volsync;

/// The agent image the test operators hand their movers: nothing pulls it
/// (the tests run agents as local processes), but it is pinned, as the
/// operator requires.
pub const AGENT_IMAGE: &str = "registry.test/wasmover/wasmover@sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// A guest component built by `cargo xtask build-guests`.
pub fn guest(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/guests/wasm")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask build-guests` first",
        path.display()
    );
    path
}

/// The `wasmover` binary cargo built beside the running test, in the same
/// target directory and profile (`scripts/setup`, which `scripts/test` runs
/// first, builds it).
pub fn wasmover_bin() -> PathBuf {
    // A test runs as <target>/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("wasmover");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release -p wasmover-operator` first (same profile)",
        path.display()
    );
    path
}

/// An engine with default settings and no on-disk cache.
pub fn engine() -> MoverEngine {
    MoverEngine::new(EngineConfig::default()).expect("engine")
}

/// Loads a guest component.
pub fn load(engine: &MoverEngine, name: &str) -> MoverModule {
    engine.load_file(&guest(name)).expect("guest loads")
}

/// Deterministic bytes (xorshift), so trees are reproducible.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes a file, creating its parents.
pub fn write(root: &Path, path: &str, content: &[u8]) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().expect("has a parent")).unwrap();
    std::fs::write(full, content).unwrap();
}

/// A tree with nested directories, symlinks (relative, absolute-looking,
/// dangling), an empty file and an empty directory, odd names, unusual
/// modes, and one file of `big` bytes.
pub fn make_tree(root: &Path, big: usize) {
    write(root, "big.bin", &bytes(big, 1));
    write(root, "empty", b"");
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    for (i, name) in [
        "a/b/c/d/e/deep.txt",
        "a/spaces in name.txt",
        "a/ünïcödé – ✓.txt",
        "a/-leading-dash",
        "a/#hash & amp;semicolon",
        "a/new\nline",
        "a/.hidden",
        &format!("a/{}", "long".repeat(60)),
    ]
    .iter()
    .enumerate()
    {
        write(root, name, &bytes(i * 777 + 1, i as u64 + 10));
    }
    for i in 0..40 {
        write(
            root,
            &format!("many/file-{i:03}"),
            &bytes(i * 1013, i as u64 + 100),
        );
    }
    symlink("b/c", root.join("a/link-to-dir")).unwrap();
    symlink("../big.bin", root.join("a/link-to-big")).unwrap();
    symlink("/nonexistent/target", root.join("a/dangling")).unwrap();
    set_mode(root, "many/file-001", 0o600);
    set_mode(root, "many/file-002", 0o755);
    set_mode(root, "a/b", 0o750);
}

/// Sets permission bits.
pub fn set_mode(root: &Path, path: &str, mode: u32) {
    std::fs::set_permissions(root.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
}

/// What a tree comparison looks at for one entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    /// Mode, mtime (ns) and BLAKE3 of the content.
    File(u32, i64, String),
    /// Mode and mtime (ns).
    Dir(u32, i64),
    /// Link target and mtime (ns).
    Link(PathBuf, i64),
}

/// Every entry under `root` (not `root` itself), by relative path; the
/// state directory a receiving volume keeps for its next run
/// (`.wasmover` at the root) and the file system's `lost+found` are not
/// part of the tree.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if dir == root
                && [".wasmover", "lost+found"].map(std::ffi::OsStr::new)[..]
                    .contains(&path.file_name().unwrap())
            {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_owned();
            let mtime = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
            let mode = meta.mode() & 0o7777;
            let node = if meta.file_type().is_symlink() {
                Node::Link(std::fs::read_link(&path).unwrap(), mtime)
            } else if meta.is_dir() {
                walk(root, &path, out);
                Node::Dir(mode, mtime)
            } else {
                let hash = blake3::hash(&std::fs::read(&path).unwrap())
                    .to_hex()
                    .to_string();
                Node::File(mode, mtime, hash)
            };
            out.insert(rel, node);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The tree digest of a directory or volume, as the host (and so the
/// agents) compute it, independently of any mover: covering extended
/// attributes of every namespace, as blocksync's transfers do by default.
pub fn tree_digest(root: &Path) -> String {
    let volume = Volume::open(root, Access::ReadOnly).unwrap();
    if let Volume::Tree(tree) = &volume {
        tree.include_attributes(Namespaces::ALL);
    }
    volume.digest().unwrap().root
}

/// Asserts that two trees are equal in content, kinds, modes, link targets
/// and modification times, naming the first difference.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (a, b) = (snapshot(a), snapshot(b));
    for (path, node) in &a {
        assert_eq!(Some(node), b.get(path), "{} differs", path.display());
    }
    for path in b.keys() {
        assert!(a.contains_key(path), "{} is extraneous", path.display());
    }
}
