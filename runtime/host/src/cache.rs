//! The on-disk cache of precompiled components, trusted only for what this
//! installation wrote: each artifact carries a keyed BLAKE3 MAC over its
//! cache key and bytes, checked before wasmtime may deserialize it.
//!
//! File layout, big-endian: `MAGIC` (8 bytes), `VERSION` (u32), the
//! 32-byte tag, then the bytes of `Component::serialize`.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Marks a file as a wasmover precompiled artifact.
const MAGIC: [u8; 8] = *b"wmvrcwsm";
/// The header's format; another version is refused and recompiled.
const VERSION: u32 = 1;
/// Magic, version and tag.
const HEADER_LEN: usize = MAGIC.len() + 4 + blake3::OUT_LEN;
/// The installation's key when the embedder supplies none.
const KEY_FILE: &str = "mac.key";

/// The secret that makes a precompiled artifact this installation's own.
///
/// Whoever knows it can make the host run native code, so keep it as
/// secret as the host's binary is trusted: an operator may derive it from
/// a Kubernetes Secret (`blake3::derive_key("wasmover precompiled cache",
/// &secret)`). Its `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct CacheKey([u8; blake3::KEY_LEN]);

impl CacheKey {
    /// A key from its 32 bytes.
    pub fn new(bytes: [u8; blake3::KEY_LEN]) -> Self {
        Self(bytes)
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheKey(..)")
    }
}

/// What the precompiled cache did since the engine was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Components deserialized from a verified cached artifact.
    pub hits: u64,
    /// Components compiled: no cache, a miss, or a refused artifact.
    pub compiled: u64,
    /// Cached files refused: not written by this installation, or changed.
    pub refused: u64,
}

/// The live counters behind [`CacheStats`].
#[derive(Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    compiled: AtomicU64,
    refused: AtomicU64,
}

impl Counters {
    pub(crate) fn compiled(&self) {
        self.compiled.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            compiled: self.compiled.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// Why a cache directory or key file is not trusted.
#[derive(Debug, thiserror::Error)]
enum Distrust {
    #[error("is not a {0}")]
    Kind(&'static str),
    #[error("is owned by uid {owner}, not by this user (uid {me})")]
    Owner { owner: u32, me: u32 },
    #[error("is writable by group or others (mode {0:o})")]
    Writable(u32),
    #[error("is accessible to group or others (mode {0:o})")]
    Readable(u32),
}

impl From<Distrust> for io::Error {
    fn from(distrust: Distrust) -> Self {
        io::Error::new(io::ErrorKind::PermissionDenied, distrust)
    }
}

/// Checks that `meta` is a directory (or, if `secret`, a file readable
/// only by its owner) owned by this user and writable by nobody else.
fn check_private(meta: &std::fs::Metadata, secret: bool) -> Result<(), Distrust> {
    let me = rustix::process::geteuid().as_raw();
    let mode = meta.mode() & 0o7777;
    if secret && !meta.is_file() {
        return Err(Distrust::Kind("regular file"));
    }
    if !secret && !meta.is_dir() {
        return Err(Distrust::Kind("directory"));
    }
    if meta.uid() != me {
        return Err(Distrust::Owner {
            owner: meta.uid(),
            me,
        });
    }
    if mode & 0o022 != 0 {
        return Err(Distrust::Writable(mode));
    }
    if secret && mode & 0o077 != 0 {
        return Err(Distrust::Readable(mode));
    }
    Ok(())
}

/// A cache directory and the key its artifacts are signed with.
pub(crate) struct Precompiled {
    dir: PathBuf,
    key: CacheKey,
    /// Set once the directory failed its re-check, so that is warned once.
    distrusted: AtomicBool,
}

impl Precompiled {
    /// Opens the cache in `dir` (created private to this user) with `key`,
    /// or with the installation's key file there. `None`, after a warning
    /// naming the rule and the path, if the directory or key file is not
    /// private: the engine then compiles every time.
    pub(crate) fn open(dir: &Path, key: Option<CacheKey>) -> Option<Self> {
        let opened = DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .and_then(|()| Ok(check_private(&std::fs::symlink_metadata(dir)?, false)?))
            .map_err(|e| (dir.to_owned(), e))
            .and_then(|()| match key {
                Some(key) => Ok(key),
                None => installation_key(dir),
            });
        match opened {
            Ok(key) => Some(Self {
                dir: dir.to_owned(),
                key,
                distrusted: AtomicBool::new(false),
            }),
            Err((path, e)) => {
                tracing::warn!(path = %path.display(), "not using the precompiled cache: {e}");
                None
            }
        }
    }

    /// Re-checks the directory before a use; warns once if it is no longer
    /// private.
    fn usable(&self) -> bool {
        let checked =
            std::fs::symlink_metadata(&self.dir).and_then(|meta| Ok(check_private(&meta, false)?));
        match checked {
            Ok(()) => true,
            Err(e) => {
                if !self.distrusted.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        path = %self.dir.display(),
                        "not using the precompiled cache any more: {e}"
                    );
                }
                false
            }
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The tag of `artifact` stored under `name`.
    fn tag(&self, name: &str, artifact: &[u8]) -> blake3::Hash {
        let mut mac = blake3::Hasher::new_keyed(&self.key.0);
        mac.update(&MAGIC)
            .update(&VERSION.to_be_bytes())
            .update(&(name.len() as u64).to_be_bytes())
            .update(name.as_bytes())
            .update(artifact);
        mac.finalize()
    }

    /// The component stored under `name`, if this installation wrote it
    /// exactly so. A file that fails is warned about, counted as refused
    /// and removed.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        name: &str,
        counters: &Counters,
    ) -> Option<Component> {
        if !self.usable() {
            return None;
        }
        let path = self.path(name);
        let bytes = match read_regular(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read the precompiled module: {e}");
                return None;
            }
        };
        let refuse = |why: String| {
            tracing::warn!(path = %path.display(), "{why}");
            counters.refused.fetch_add(1, Ordering::Relaxed);
            let _ = std::fs::remove_file(&path);
            None
        };
        let artifact = match self.verify(name, &bytes) {
            Ok(artifact) => artifact,
            Err(reason) => {
                return refuse(format!(
                    "refusing a precompiled module not written by this installation or changed: {reason}"
                ));
            }
        };
        // SAFETY: `artifact` is in memory, so it cannot change after the
        // check, and its tag, compared in constant time, is the MAC under
        // this installation's secret key of exactly these bytes stored
        // under this name. Only `store` makes such tags, from
        // `Component::serialize` of this host; the name holds the engine's
        // compatibility hash. So these are bytes this host compiled, with
        // these settings, which is what `deserialize` requires.
        match unsafe { Component::deserialize(engine, artifact) } {
            Ok(component) => {
                counters.hits.fetch_add(1, Ordering::Relaxed);
                Some(component)
            }
            Err(e) => refuse(format!(
                "discarding a precompiled module wasmtime cannot load: {e}"
            )),
        }
    }

    /// The artifact inside `bytes`, if its header and tag are right.
    fn verify<'a>(&self, name: &str, bytes: &'a [u8]) -> Result<&'a [u8], &'static str> {
        let (header, artifact) = bytes
            .split_at_checked(HEADER_LEN)
            .ok_or("shorter than the header")?;
        let (magic, rest) = header.split_at(MAGIC.len());
        let (version, tag) = rest.split_at(4);
        if magic != MAGIC {
            return Err("no wasmover header");
        }
        if version != VERSION.to_be_bytes() {
            return Err("another header version");
        }
        let tag = blake3::Hash::from_bytes(tag.try_into().expect("split at OUT_LEN"));
        // `blake3::Hash`'s `==` is constant-time.
        if tag != self.tag(name, artifact) {
            return Err("the MAC does not match");
        }
        Ok(artifact)
    }

    /// Stores `component` under `name`, atomically, with its tag; warns
    /// on failure (the component is still used).
    pub(crate) fn store(&self, name: &str, component: &Component) {
        if !self.usable() {
            return;
        }
        let path = self.path(name);
        if let Err(e) = self.write(&path, name, component) {
            tracing::warn!(path = %path.display(), "cannot cache the compiled module: {e}");
        }
    }

    fn write(&self, path: &Path, name: &str, component: &Component) -> io::Result<()> {
        let artifact = component
            .serialize()
            .map_err(|e| io::Error::other(e.to_string()))?;
        let tag = self.tag(name, &artifact);
        let (staged, mut file) = create_staged(path)?;
        let published = (|| {
            file.write_all(&MAGIC)?;
            file.write_all(&VERSION.to_be_bytes())?;
            file.write_all(tag.as_bytes())?;
            file.write_all(&artifact)?;
            std::fs::rename(&staged, path)
        })();
        if published.is_err() {
            let _ = std::fs::remove_file(&staged);
        }
        published
    }
}

/// Creates a new file beside `path`, readable only by this user, to be
/// published as `path`. Its name is unique per writer: two threads storing
/// the same file must not write into one staging file (publishing could
/// expose a torn file).
fn create_staged(path: &Path) -> io::Result<(PathBuf, File)> {
    static STAGED: AtomicU64 = AtomicU64::new(0);
    let n = STAGED.fetch_add(1, Ordering::Relaxed);
    let staged = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged)?;
    Ok((staged, file))
}

/// Opens `path` to read, without following a symlink or waiting on a FIFO.
fn open_unfollowed(path: &Path) -> io::Result<File> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
}

/// Reads all of `path`, which must be a regular file and not a symlink.
fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = open_unfollowed(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Distrust::Kind("regular file").into());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// This installation's key: read from `dir`'s key file after checking it,
/// or created there, at random, if there is none. Publishing by `link`
/// makes a concurrent creator read the one key that won.
fn installation_key(dir: &Path) -> Result<CacheKey, (PathBuf, io::Error)> {
    let path = dir.join(KEY_FILE);
    let read = |path: &Path| -> io::Result<CacheKey> {
        let mut file = open_unfollowed(path)?;
        check_private(&file.metadata()?, true)?;
        let mut key = [0; blake3::KEY_LEN];
        let mut rest = Vec::new();
        file.read_exact(&mut key)?;
        file.read_to_end(&mut rest)?;
        if !rest.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "longer than a key",
            ));
        }
        Ok(CacheKey(key))
    };
    match read(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        read => return read.map_err(|e| (path, e)),
    }
    let (staged, mut file) = create_staged(&path).map_err(|e| (path.clone(), e))?;
    let linked = file
        .write_all(&rand::random::<[u8; blake3::KEY_LEN]>())
        .and_then(|()| std::fs::hard_link(&staged, &path));
    let _ = std::fs::remove_file(&staged);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err((path, e)),
    }
    read(&path).map_err(|e| (path, e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::{EngineConfig, MoverEngine};

    const ONE: &str = "(component)";
    const OTHER: &str = "(component (core module))";

    fn engine(dir: &Path, key: Option<[u8; 32]>) -> MoverEngine {
        let mut config = EngineConfig {
            pooling: false,
            ..EngineConfig::default()
        }
        .with_cache_dir(dir);
        config.cache_key = key.map(CacheKey::new);
        MoverEngine::new(config).unwrap()
    }

    /// Loads `wat` with a fresh engine and returns what its cache did.
    fn load(dir: &Path, key: Option<[u8; 32]>, wat: &str) -> CacheStats {
        let engine = engine(dir, key);
        engine.component("test", wat.as_bytes()).unwrap();
        engine.cache_stats()
    }

    fn stats(hits: u64, compiled: u64, refused: u64) -> CacheStats {
        CacheStats {
            hits,
            compiled,
            refused,
        }
    }

    fn artifacts(dir: &Path) -> Vec<PathBuf> {
        let mut found: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
            .collect();
        found.sort();
        found
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_second_engine_loads_what_the_first_stored() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), None, ONE), stats(0, 1, 0));
        let key = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap();
        assert_eq!((key.len(), key.mode() & 0o777), (32, 0o600));
        assert_eq!(load(dir.path(), None, ONE), stats(1, 0, 0));

        let keyed = tempfile::tempdir().unwrap();
        assert_eq!(load(keyed.path(), Some([7; 32]), ONE), stats(0, 1, 0));
        assert!(!keyed.path().join(KEY_FILE).exists());
        assert_eq!(load(keyed.path(), Some([7; 32]), ONE), stats(1, 0, 0));
    }

    #[test]
    fn a_changed_artifact_is_refused_recompiled_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        load(dir.path(), None, ONE);
        let [path] = &artifacts(dir.path())[..] else {
            panic!("one artifact")
        };
        let good = std::fs::read(path).unwrap();
        let raw = {
            let engine = engine(dir.path(), None);
            Component::new(engine.engine(), ONE)
                .unwrap()
                .serialize()
                .unwrap()
        };
        let flip = |at: usize| {
            let mut bad = good.clone();
            bad[at] ^= 1;
            bad
        };
        let changes = [
            ("a flipped artifact byte", flip(good.len() - 1)),
            ("a flipped tag byte", flip(HEADER_LEN - 1)),
            ("a flipped magic byte", flip(0)),
            ("a short header", good[..HEADER_LEN - 1].to_vec()),
            ("an empty file", Vec::new()),
            ("wasmtime's artifact without a header", raw),
        ];
        for (change, bytes) in changes {
            std::fs::write(path, bytes).unwrap();
            assert_eq!(load(dir.path(), None, ONE), stats(0, 1, 1), "{change}");
            assert_eq!(std::fs::read(path).unwrap(), good, "{change}: rewritten");
            assert_eq!(load(dir.path(), None, ONE), stats(1, 0, 0), "{change}");
        }
    }

    #[test]
    fn another_modules_artifact_under_this_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        load(dir.path(), None, ONE);
        let [one] = &artifacts(dir.path())[..] else {
            panic!("one artifact")
        };
        load(dir.path(), None, OTHER);
        let other = artifacts(dir.path())
            .into_iter()
            .find(|p| p != one)
            .unwrap();
        std::fs::copy(&other, one).unwrap();
        assert_eq!(load(dir.path(), None, ONE), stats(0, 1, 1));
        assert_eq!(load(dir.path(), None, ONE), stats(1, 0, 0));
    }

    #[test]
    fn an_artifact_of_another_installation_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), Some([1; 32]), ONE), stats(0, 1, 0));
        assert_eq!(load(dir.path(), Some([2; 32]), ONE), stats(0, 1, 1));
        assert_eq!(load(dir.path(), Some([2; 32]), ONE), stats(1, 0, 0));

        // Another installation's key file, copied in with its artifact.
        let theirs = tempfile::tempdir().unwrap();
        load(theirs.path(), None, ONE);
        let ours = tempfile::tempdir().unwrap();
        load(ours.path(), None, OTHER);
        let [artifact] = &artifacts(theirs.path())[..] else {
            panic!("one artifact")
        };
        std::fs::copy(artifact, ours.path().join(artifact.file_name().unwrap())).unwrap();
        assert_eq!(load(ours.path(), None, ONE), stats(0, 1, 1));
    }

    #[test]
    fn a_cache_others_may_write_or_read_the_key_of_is_not_used() {
        let shared = tempfile::tempdir().unwrap();
        chmod(shared.path(), 0o777);
        let engine = engine(shared.path(), None);
        engine.component("test", ONE.as_bytes()).unwrap();
        engine.component("test", ONE.as_bytes()).unwrap();
        assert_eq!(engine.cache_stats(), stats(0, 2, 0));
        assert!(std::fs::read_dir(shared.path()).unwrap().next().is_none());

        // Opened while private, opened to others afterwards.
        let dir = tempfile::tempdir().unwrap();
        let engine = self::engine(dir.path(), None);
        chmod(dir.path(), 0o770);
        engine.component("test", ONE.as_bytes()).unwrap();
        engine.component("test", ONE.as_bytes()).unwrap();
        assert_eq!(engine.cache_stats(), stats(0, 2, 0));
        assert!(artifacts(dir.path()).is_empty());

        chmod(dir.path(), 0o700);
        load(dir.path(), None, ONE);
        chmod(&dir.path().join(KEY_FILE), 0o640);
        assert_eq!(load(dir.path(), None, ONE), stats(0, 1, 0));
    }
}
