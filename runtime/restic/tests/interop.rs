//! Interoperability with the real `restic` (Debian's 0.14): each side
//! restores what the other backed up, bit-exact, and `restic check
//! --read-data` accepts what this crate writes.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::cli::{restic, restic_output};
use common::{PASSWORD, assert_same_tree, generate_tree};
use wasmover_restic::{Error, LocalBackend, Repository};

/// The source tree, the repository and the restore target under `tmp`.
fn places(tmp: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (tmp.join("src"), tmp.join("repo"), tmp.join("dst"))
}

#[test]
fn restic_honours_an_exclusive_lock_this_crate_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo) = (tmp.path().join("src"), tmp.path().join("repo"));
    generate_tree(&src);
    let repository = Repository::create(LocalBackend::new(&repo), PASSWORD).unwrap();
    let lock = repository.lock(true).unwrap();
    let out = restic_output(&repo, &src, &["backup", "."]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("locked exclusively"),
        "restic ran: {stderr}"
    );
    drop(lock);
    restic(&repo, &src, &["backup", "."]);

    // And the other way: while `restic backup --stdin` waits for its
    // input it holds a shared lock, which refuses an exclusive one here.
    let mut child = Command::new("restic")
        .arg("--repo")
        .arg(&repo)
        .args(["--no-cache", "--quiet", "backup", "--stdin"])
        .env("RESTIC_PASSWORD", PASSWORD)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run restic ({e}): install it with scripts/setup"));
    let locks = repo.join("locks");
    // restic writes `<id>-tmp-…`, then renames it to `<id>`.
    let complete = |e: std::fs::DirEntry| e.file_name().len() == 64;
    while !std::fs::read_dir(&locks)
        .unwrap()
        .any(|e| complete(e.unwrap()))
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "restic exited before taking its lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let err = repository.lock(true).expect_err("restic's lock is seen");
    assert!(
        matches!(&err, Error::Locked { holder, .. } if holder.contains(&child.id().to_string())),
        "{err:?}"
    );
    // Its input ends (restic refuses an empty one), so its backup completes.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    assert!(child.wait().unwrap().success());
    drop(repository.lock(true).unwrap());
}

#[test]
fn a_version_1_repository_restic_wrote_restores_bit_exact_and_takes_a_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo, dst) = places(tmp.path());
    generate_tree(&src);
    restic(&repo, tmp.path(), &["init", "--repository-version", "1"]);
    restic(&repo, &src, &["backup", "."]);
    let repository = Repository::open(LocalBackend::new(&repo), PASSWORD).unwrap();
    assert_eq!(repository.config().version, 1);
    repository
        .restore(&repository.find_snapshot("latest").unwrap(), &dst)
        .unwrap();
    assert_same_tree(&src, &dst);
    // What this crate adds to a version 1 repository is uncompressed, as that version requires.
    let (id, _) = repository.backup(&src).unwrap();
    restic(&repo, tmp.path(), &["check", "--read-data"]);
    let restic_dst = tmp.path().join("restic-dst");
    restic(
        &repo,
        tmp.path(),
        &[
            "restore",
            &id.to_hex(),
            "--target",
            restic_dst.to_str().unwrap(),
        ],
    );
    assert_same_tree(&src, &restic_dst);
}

#[test]
fn a_snapshot_restic_wrote_restores_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo, dst) = places(tmp.path());
    generate_tree(&src);
    restic(&repo, tmp.path(), &["init"]);
    let started = Instant::now();
    restic(&repo, &src, &["backup", "."]);
    let restic_backup = started.elapsed();

    let repository = Repository::open(LocalBackend::new(&repo), PASSWORD).unwrap();
    assert_eq!(repository.config().version, 2);
    let id = repository.find_snapshot("latest").unwrap();
    let started = Instant::now();
    let summary = repository.restore(&id, &dst).unwrap();
    let ours = started.elapsed();
    assert_same_tree(&src, &dst);
    assert_eq!(summary.symlinks, 3);

    let restic_dst = tmp.path().join("restic-dst");
    let started = Instant::now();
    restic(
        &repo,
        tmp.path(),
        &[
            "restore",
            &id.to_hex(),
            "--target",
            restic_dst.to_str().unwrap(),
        ],
    );
    eprintln!(
        "restic backup {restic_backup:?}; restore: wasmover-restic {ours:?}, restic {:?} ({} bytes)",
        started.elapsed(),
        summary.bytes
    );
}

#[test]
fn a_snapshot_this_crate_wrote_passes_restic_check_and_restores_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo, dst) = places(tmp.path());
    generate_tree(&src);
    let repository = Repository::create(LocalBackend::new(&repo), PASSWORD).unwrap();
    let started = Instant::now();
    let (id, first) = repository.backup(&src).unwrap();
    let ours = started.elapsed();
    assert!(
        first.blobs_deduplicated >= 1,
        "the copied 3 MiB prefix deduplicates: {first:?}"
    );

    restic(&repo, tmp.path(), &["check", "--read-data"]);
    let listed = restic(&repo, tmp.path(), &["snapshots", "--json"]);
    assert!(
        listed.contains(&id.to_hex()),
        "restic lists the snapshot: {listed}"
    );
    restic(
        &repo,
        tmp.path(),
        &["restore", &id.to_hex(), "--target", dst.to_str().unwrap()],
    );
    assert_same_tree(&src, &dst);

    // A second backup of the same tree reads no file and stores no content again.
    let (second_id, second) = Repository::open(LocalBackend::new(&repo), PASSWORD)
        .unwrap()
        .backup(&src)
        .unwrap();
    assert_ne!(second_id, id);
    assert_eq!(
        (second.bytes_read, second.files_unchanged),
        (0, first.files)
    );
    assert!(
        second.bytes_added < first.bytes_added / 100,
        "only trees are new: {second:?} after {first:?}"
    );
    restic(&repo, tmp.path(), &["check", "--read-data"]);

    let restic_repo = tmp.path().join("restic-repo");
    restic(&restic_repo, tmp.path(), &["init"]);
    let started = Instant::now();
    restic(&restic_repo, &src, &["backup", "."]);
    eprintln!(
        "backup: wasmover-restic {ours:?}, restic {:?} ({} bytes)",
        started.elapsed(),
        first.bytes_read
    );
}
