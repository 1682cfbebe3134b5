//! `cargo xtask image`: the wasmover container image, written as an OCI
//! image layout without a container daemon or a base image.
//!
//! The image holds the release binary, the shared libraries it loads (as
//! `ldd` finds them on the build machine), the CA bundle the registry and
//! API clients trust, and an `/etc/passwd` naming the non-root user it runs
//! as. It is reproducible: every tar header is fixed (owner root, mode from a
//! table, mtime the commit's time), entries are sorted, and the JSON is
//! serialized from ordered maps, so the same binary and libraries always
//! give the same digest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The user (and group) the image runs as: not root, and not a user any
/// distribution allocates.
pub const USER: u32 = 65532;

/// Where the binary lands in the image (also its entrypoint).
const BINARY_PATH: &str = "usr/local/bin/wasmover";

/// The CA bundle of Debian's `ca-certificates`, copied when present.
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// What an image is made from.
pub struct ImageSpec {
    /// The `wasmover` executable to ship.
    pub binary: PathBuf,
    /// The image name without tag (`ghcr.io/wasmover/wasmover`).
    pub name: String,
    /// The tag, also the version annotation.
    pub version: String,
    /// The commit the binary was built from (`org.opencontainers.image.revision`).
    pub revision: String,
    /// Seconds since the epoch for every timestamp in the image.
    pub epoch: u64,
    /// The source repository (`org.opencontainers.image.source`).
    pub source: String,
}

/// A written image: its manifest digest and where the layout is.
pub struct Image {
    /// `sha256:…` of the manifest: what a Pod names with `image@digest`.
    pub digest: String,
    /// The OCI image layout directory.
    pub layout: PathBuf,
    /// The layout as one tar (`ctr images import` takes it).
    pub archive: PathBuf,
}

/// Writes the image for `spec` as an OCI layout under `out` (replaced) and
/// as `out.tar`.
pub fn write(spec: &ImageSpec, out: &Path) -> Result<Image> {
    let layer = layer(spec)?;
    let diff_id = sha256(&layer);
    let created = rfc3339(spec.epoch);
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "User": format!("{USER}:{USER}"),
            "Entrypoint": [format!("/{BINARY_PATH}")],
            "Env": [
                "PATH=/usr/local/bin:/usr/bin:/bin",
                "HOME=/home/wasmover",
                "XDG_CACHE_HOME=/home/wasmover/.cache",
            ],
            "WorkingDir": "/home/wasmover",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "cargo xtask image"}],
    });
    let config = serde_json::to_vec(&config)?;
    let annotations = json!({
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.source": spec.source,
        "org.opencontainers.image.revision": spec.revision,
        "org.opencontainers.image.version": spec.version,
        "org.opencontainers.image.title": "wasmover",
        "org.opencontainers.image.description":
            "wasmover: the operator and the agent that moves volume data",
    });
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
        "annotations": annotations,
    });
    let manifest = serde_json::to_vec(&manifest)?;
    let digest = sha256(&manifest);
    let reference = format!("{}:{}", spec.name, spec.version);
    let mut tagged = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    tagged["annotations"] = json!({
        "io.containerd.image.name": reference,
        "org.opencontainers.image.ref.name": spec.version,
    });
    // The same manifest named by its digest: `ctr images import` makes an
    // image of each entry, and Pods name the image `name@digest` (the
    // operator hands agents nothing else), which a node that only has
    // `name:tag` cannot resolve without a registry.
    let mut pinned = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    pinned["annotations"] = json!({
        "io.containerd.image.name": format!("{}@{digest}", spec.name),
    });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [tagged, pinned],
    }))?;

    // The layout's files, by path: written as a directory and as a tar.
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );
    files.insert("index.json".into(), index);
    for blob in [layer, config, manifest] {
        files.insert(blob_path(&sha256(&blob)), blob);
    }

    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    }
    for (path, bytes) in &files {
        let dest = out.join(path);
        std::fs::create_dir_all(dest.parent().expect("a path in the layout"))?;
        std::fs::write(&dest, bytes).with_context(|| format!("writing {}", dest.display()))?;
    }
    let mut archive = Archive::new(spec.epoch);
    for dir in ["blobs", "blobs/sha256"] {
        archive.dir(dir, 0o755, 0)?;
    }
    for (path, bytes) in &files {
        archive.file(path, 0o644, 0, bytes)?;
    }
    let archive_path = out.with_extension("tar");
    std::fs::write(&archive_path, archive.finish()?)
        .with_context(|| format!("writing {}", archive_path.display()))?;
    Ok(Image {
        digest,
        layout: out.to_path_buf(),
        archive: archive_path,
    })
}

/// The one layer: the binary, its libraries, users, the CA bundle and the
/// directories they live in.
fn layer(spec: &ImageSpec) -> Result<Vec<u8>> {
    // Path in the image → (mode, owner, content); directories have none.
    let mut entries: BTreeMap<String, (u32, u32, Option<Vec<u8>>)> = BTreeMap::new();
    let mut add_file = |path: &str, mode: u32, bytes: Vec<u8>| {
        let path = path.trim_start_matches('/');
        for dir in Path::new(path).ancestors().skip(1) {
            if let Some(dir) = dir.to_str().filter(|d| !d.is_empty()) {
                entries.entry(dir.to_owned()).or_insert((0o755, 0, None));
            }
        }
        entries.insert(path.to_owned(), (mode, 0, Some(bytes)));
    };
    add_file(BINARY_PATH, 0o755, without_debug_info(&spec.binary)?);
    for library in shared_libraries(&spec.binary)? {
        let bytes =
            std::fs::read(&library).with_context(|| format!("reading {}", library.display()))?;
        add_file(
            library.to_str().context("a library path is UTF-8")?,
            0o755,
            bytes,
        );
    }
    add_file(
        "etc/passwd",
        0o644,
        format!(
            "root:x:0:0:root:/root:/usr/sbin/nologin\n\
             wasmover:x:{USER}:{USER}:wasmover:/home/wasmover:/usr/sbin/nologin\n"
        )
        .into_bytes(),
    );
    add_file(
        "etc/group",
        0o644,
        format!("root:x:0:\nwasmover:x:{USER}:\n").into_bytes(),
    );
    let ca = Path::new("/").join(CA_BUNDLE);
    if ca.exists() {
        add_file(CA_BUNDLE, 0o644, std::fs::read(&ca)?);
    }
    // Writable places: the user's home (module store, precompiled cache)
    // and a sticky /tmp.
    entries.insert("home".into(), (0o755, 0, None));
    entries.insert("home/wasmover".into(), (0o700, USER, None));
    entries.insert("tmp".into(), (0o1777, 0, None));

    let mut archive = Archive::new(spec.epoch);
    for (path, (mode, owner, content)) in &entries {
        match content {
            Some(bytes) => archive.file(path, *mode, *owner, bytes)?,
            None => archive.dir(path, *mode, *owner)?,
        }
    }
    archive.finish()
}

/// The bytes of `binary` without its debug sections (binutils' `strip
/// --strip-debug`): the release profile keeps line tables, four fifths of
/// the binary's size, which a container has no use for. Symbols stay, so a
/// panic's backtrace still names functions.
fn without_debug_info(binary: &Path) -> Result<Vec<u8>> {
    let out = tempfile::NamedTempFile::new()?;
    let status = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(out.path())
        .arg(binary)
        .status()
        .context("running strip (Debian's binutils)")?;
    ensure!(
        status.success(),
        "strip {} failed: {status}",
        binary.display()
    );
    Ok(std::fs::read(out.path())?)
}

/// The shared libraries `binary` loads, the dynamic loader included, as
/// `ldd` resolves them on this machine.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd (Debian's libc-bin)")?;
    let text = String::from_utf8(out.stdout)?;
    if !out.status.success() {
        // A static binary: nothing to add.
        ensure!(
            text.contains("not a dynamic executable")
                || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable"),
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        return Ok(Vec::new());
    }
    let mut libraries = Vec::new();
    for line in text.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or
        // `/lib64/ld-linux-x86-64.so.2 (0x…)`; `linux-vdso.so.1 (0x…)` has no file.
        let path = match line.split_once("=>") {
            Some((_, target)) => target.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        match path {
            Some("not") => bail!("{}: a library is not found: {line}", binary.display()),
            Some(path) if path.starts_with('/') => libraries.push(PathBuf::from(path)),
            _ => {}
        }
    }
    libraries.sort();
    libraries.dedup();
    Ok(libraries)
}

/// A tar written with fixed headers: owner root (or `owner`), the given
/// mode, one mtime, no user or group names.
struct Archive {
    builder: tar::Builder<Vec<u8>>,
    mtime: u64,
}

impl Archive {
    fn new(mtime: u64) -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
            mtime,
        }
    }

    fn header(&self, kind: tar::EntryType, mode: u32, owner: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(owner.into());
        header.set_gid(owner.into());
        header.set_mtime(self.mtime);
        header.set_size(size);
        header
    }

    fn dir(&mut self, path: &str, mode: u32, owner: u32) -> Result<()> {
        let mut header = self.header(tar::EntryType::Directory, mode, owner, 0);
        self.builder
            .append_data(&mut header, format!("{path}/"), std::io::empty())?;
        Ok(())
    }

    fn file(&mut self, path: &str, mode: u32, owner: u32, bytes: &[u8]) -> Result<()> {
        let mut header = self.header(tar::EntryType::Regular, mode, owner, bytes.len() as u64);
        self.builder.append_data(&mut header, path, bytes)?;
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>> {
        Ok(self.builder.into_inner()?)
    }
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()})
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// `epoch` as RFC 3339 UTC (days to civil date: Howard Hinnant's algorithm).
fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(binary: PathBuf) -> ImageSpec {
        ImageSpec {
            binary,
            name: "example.test/wasmover".into(),
            version: "0.0.0-test".into(),
            revision: "0123456789abcdef".into(),
            epoch: 1_764_979_200,
            source: "https://example.test/wasmover".into(),
        }
    }

    fn tar_entries(bytes: &[u8]) -> Vec<(String, u32, u64)> {
        tar::Archive::new(bytes)
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                )
            })
            .collect()
    }

    /// Two builds from the same inputs give the same digest and the same
    /// bytes; the image runs as the non-root user and carries the libraries
    /// the binary loads.
    #[test]
    fn an_image_is_reproducible_non_root_and_self_contained() {
        // This test's own executable is a dynamically linked binary like
        // wasmover, with a loader and libc to find.
        let binary = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let first = write(&spec(binary.clone()), &dir.path().join("a")).unwrap();
        let second = write(&spec(binary), &dir.path().join("b")).unwrap();
        assert_eq!(first.digest, second.digest);
        assert_eq!(
            std::fs::read(&first.archive).unwrap(),
            std::fs::read(&second.archive).unwrap()
        );

        let blob = |digest: &str| std::fs::read(first.layout.join(blob_path(digest))).unwrap();
        let manifest: Value = serde_json::from_slice(&blob(&first.digest)).unwrap();
        assert_eq!(
            manifest["annotations"]["org.opencontainers.image.revision"],
            "0123456789abcdef"
        );
        assert_eq!(
            manifest["annotations"]["org.opencontainers.image.created"],
            "2025-12-06T00:00:00Z"
        );
        let config: Value =
            serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/wasmover");

        let layer = blob(manifest["layers"][0]["digest"].as_str().unwrap());
        assert_eq!(config["rootfs"]["diff_ids"][0], sha256(&layer));
        let entries = tar_entries(&layer);
        let names: Vec<&str> = entries.iter().map(|(p, ..)| p.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "entries are in a fixed order");
        assert!(entries.contains(&("usr/local/bin/wasmover".into(), 0o755, 0)));
        let shipped = tar::Archive::new(&layer[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().ends_with("usr/local/bin/wasmover"))
            .unwrap()
            .header()
            .size()
            .unwrap();
        let built = std::fs::metadata(std::env::current_exe().unwrap())
            .unwrap()
            .len();
        assert!(
            shipped < built,
            "the debug info is stripped: {shipped} of {built} bytes"
        );
        assert!(entries.contains(&("home/wasmover/".into(), 0o700, USER.into())));
        assert!(
            names.iter().any(|n| n.contains("libc.so")),
            "libc is in the image: {names:?}"
        );
        assert!(
            names.iter().any(|n| n.contains("ld-linux")),
            "the loader too"
        );
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }
}
