//! This crate on its own: round trips, forget and prune, and the errors a
//! user sees for a wrong password, damaged or missing repository files.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{PASSWORD, assert_same_tree, generate_tree};
use wasmover_restic::{
    Error, LocalBackend, PruneOptions, Repository, RetainPolicy, SnapshotFilter,
};

/// A repository with one snapshot of the test tree.
fn backed_up(tmp: &Path) -> (PathBuf, PathBuf, wasmover_restic::Id) {
    let (src, repo) = (tmp.join("src"), tmp.join("repo"));
    generate_tree(&src);
    let (id, _) = Repository::create(LocalBackend::new(&repo), PASSWORD)
        .unwrap()
        .backup(&src)
        .unwrap();
    (src, repo, id)
}

/// The largest pack: the one holding the random data.
fn largest_pack(repo: &Path) -> PathBuf {
    let mut packs: Vec<PathBuf> = fs::read_dir(repo.join("data"))
        .unwrap()
        .flat_map(|d| {
            fs::read_dir(d.unwrap().path())
                .unwrap()
                .map(|f| f.unwrap().path())
        })
        .collect();
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let pack = packs.pop().expect("the backup wrote packs");
    fs::set_permissions(&pack, fs::Permissions::from_mode(0o600)).unwrap();
    pack
}

fn open(repo: &Path) -> Repository {
    Repository::open(LocalBackend::new(repo), PASSWORD).unwrap()
}

#[test]
fn a_backup_restores_bit_exact_and_finds_its_snapshot_by_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo, id) = backed_up(tmp.path());
    let repository = open(&repo);
    assert_eq!(repository.find_snapshot(&id.to_hex()[..8]).unwrap(), id);
    assert_eq!(repository.find_snapshot("latest").unwrap(), id);
    assert!(matches!(
        repository.find_snapshot("ffff0000"),
        Err(Error::NotFound { .. })
    ));
    let snapshots = repository.snapshots().unwrap();
    assert_eq!(snapshots.len(), 1);
    assert_eq!(
        snapshots[0].1.paths,
        [fs::canonicalize(&src).unwrap().to_string_lossy()]
    );
    repository.restore(&id, &tmp.path().join("dst")).unwrap();
    assert_same_tree(&src, &tmp.path().join("dst"));
}

#[test]
fn a_wrong_password_is_refused_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    Repository::create(LocalBackend::new(tmp.path().join("repo")), PASSWORD).unwrap();
    let err = Repository::open(LocalBackend::new(tmp.path().join("repo")), "not it")
        .expect_err("refused");
    assert!(matches!(err, Error::WrongPassword { keys: 1 }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "wrong password: none of the 1 key files opens with it"
    );
    let err = Repository::open(LocalBackend::new(tmp.path().join("nothing")), PASSWORD)
        .expect_err("refused");
    assert!(matches!(err, Error::NoKeys), "{err:?}");
    assert!(matches!(
        Repository::create(LocalBackend::new(tmp.path().join("repo")), PASSWORD),
        Err(Error::Format { reason, .. }) if reason.contains("exists here already")
    ));
}

#[test]
fn a_corrupted_pack_fails_the_restore_naming_the_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, repo, id) = backed_up(tmp.path());
    let pack = largest_pack(&repo);
    let mut bytes = fs::read(&pack).unwrap();
    bytes[100] ^= 0x40;
    fs::write(&pack, bytes).unwrap();
    let err = open(&repo)
        .restore(&id, &tmp.path().join("dst"))
        .expect_err("refused");
    let name = pack.file_name().unwrap().to_str().unwrap();
    assert!(
        matches!(&err, Error::Mac { file } if file.contains(name)),
        "{err:?}"
    );
    assert!(err.to_string().contains("authentication failed"), "{err}");
}

#[test]
fn a_truncated_pack_fails_the_restore_naming_the_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, repo, id) = backed_up(tmp.path());
    let pack = largest_pack(&repo);
    let len = fs::metadata(&pack).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = open(&repo)
        .restore(&id, &tmp.path().join("dst"))
        .expect_err("refused");
    let name = pack.file_name().unwrap().to_str().unwrap();
    assert!(
        matches!(&err, Error::Truncated { file, .. } if file.contains(name)),
        "{err:?}"
    );
}

#[test]
fn a_modified_snapshot_file_is_refused_by_its_storage_id() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, repo, id) = backed_up(tmp.path());
    let file = repo.join("snapshots").join(id.to_hex());
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let mut bytes = fs::read(&file).unwrap();
    bytes[20] ^= 1;
    fs::write(&file, bytes).unwrap();
    let err = open(&repo).load_snapshot(&id).expect_err("refused");
    assert!(
        matches!(&err, Error::StorageId { file, .. } if file.contains(&id.to_hex())),
        "{err:?}"
    );
}

#[test]
fn an_exclusive_lock_refuses_backups_and_restores_until_released() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo, id) = backed_up(tmp.path());
    let repository = open(&repo);
    let lock = repository.lock(true).unwrap();
    let err = repository.backup(&src).expect_err("refused");
    let pid = format!("exclusive lock of pid {}", std::process::id());
    assert!(
        matches!(&err, Error::Locked { holder, .. } if holder.contains(&pid)),
        "{err:?}"
    );
    assert!(err.to_string().contains("restic unlock"), "{err}");
    let err = repository
        .restore(&id, &tmp.path().join("dst"))
        .expect_err("refused");
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    assert!(matches!(repository.lock(false), Err(Error::Locked { .. })));
    drop(lock);
    repository.backup(&src).unwrap();
    let shared = repository.lock(false).unwrap();
    assert!(
        matches!(repository.lock(true), Err(Error::Locked { .. })),
        "a shared lock blocks an exclusive one"
    );
    drop(shared);
    assert_eq!(
        fs::read_dir(repo.join("locks")).unwrap().count(),
        0,
        "every lock was removed"
    );
}

#[test]
fn a_second_backup_reads_only_the_files_changed_since_its_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo, first) = backed_up(tmp.path());
    let repository = open(&repo);
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(src.join("a/b/c/text.log"))
        .unwrap();
    std::io::Write::write_all(&mut log, b"one more line\n").unwrap();
    drop(log);
    fs::write(src.join("new file"), b"new").unwrap();
    let (second, summary) = repository.backup(&src).unwrap();
    assert_eq!(
        repository.load_snapshot(&second).unwrap().parent,
        Some(first)
    );
    assert_eq!(summary.files, 2, "{summary:?}");
    let changed = fs::metadata(src.join("a/b/c/text.log")).unwrap().len() + 3;
    assert_eq!(summary.bytes_read, changed);
    repository
        .restore(&second, &tmp.path().join("dst"))
        .unwrap();
    assert_same_tree(&src, &tmp.path().join("dst"));
}

fn files_in(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                files_in(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn prune_refuses_to_run_when_a_pack_a_snapshot_needs_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo, _) = backed_up(tmp.path());
    let repository = open(&repo);
    fs::write(src.join("more"), b"a second snapshot").unwrap();
    repository.backup(&src).unwrap();
    fs::remove_file(largest_pack(&repo)).unwrap();
    let files = (files_in(&repo.join("data")), files_in(&repo.join("index")));
    let err = repository
        .prune(&PruneOptions::default())
        .expect_err("refused");
    assert!(
        matches!(&err, Error::Incomplete { reason } if reason.contains("data blob")),
        "{err:?}"
    );
    assert!(err.to_string().contains("nothing was removed"), "{err}");
    assert_eq!(
        (files_in(&repo.join("data")), files_in(&repo.join("index"))),
        files
    );
    let err = repository
        .prune(&PruneOptions {
            max_unused_percent: 100.0,
        })
        .expect_err("refused");
    assert!(matches!(err, Error::Policy { .. }), "{err:?}");
}

#[test]
fn forget_takes_only_the_snapshots_its_filter_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo, first) = backed_up(tmp.path());
    let repository = open(&repo);
    let (second, _) = repository.backup(&src).unwrap();
    let last = RetainPolicy {
        last: 1,
        ..RetainPolicy::default()
    };
    let elsewhere = SnapshotFilter {
        hosts: vec!["elsewhere".into()],
        ..SnapshotFilter::default()
    };
    assert!(
        repository
            .forget(&last, &elsewhere, false)
            .unwrap()
            .is_empty()
    );
    let tagged = SnapshotFilter {
        tags: vec!["daily".into()],
        ..SnapshotFilter::default()
    };
    assert!(repository.forget(&last, &tagged, false).unwrap().is_empty());
    assert_eq!(repository.snapshots().unwrap().len(), 2);
    let path = fs::canonicalize(&src)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let this = SnapshotFilter {
        paths: vec![path.clone()],
        ..SnapshotFilter::default()
    };
    let groups = repository.forget(&last, &this, false).unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].paths, [path]);
    assert_eq!(groups[0].keep.len(), 1);
    assert_eq!(groups[0].keep[0].id, second);
    assert_eq!(groups[0].remove[0].id, first);
    assert_eq!(
        repository
            .snapshots()
            .unwrap()
            .into_iter()
            .map(|s| s.0)
            .collect::<Vec<_>>(),
        [second]
    );
}

#[test]
fn prune_keeps_a_data_pack_little_of_which_is_unused_unless_told_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo, _) = backed_up(tmp.path());
    let repository = open(&repo);
    let small = fs::read_dir(src.join("a/b"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("small-"))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let gone = fs::metadata(&small).unwrap().len();
    fs::remove_file(&small).unwrap();
    let (last, _) = repository.backup(&src).unwrap();
    let policy = RetainPolicy {
        last: 1,
        ..RetainPolicy::default()
    };
    repository
        .forget(&policy, &SnapshotFilter::default(), false)
        .unwrap();

    // Only the first backup's tree pack is repacked (trees always are);
    // the data pack, 0.2% unused, is kept.
    let report = repository.prune(&PruneOptions::default()).unwrap();
    assert_eq!(report.packs_repacked, 1, "{report:?}");
    assert!(
        report.bytes_unused_after >= gone && report.bytes_unused_after < gone + 1024,
        "the removed file's blob is left: {report:?}"
    );
    // With no unused data tolerated, it goes too.
    let report = repository
        .prune(&PruneOptions {
            max_unused_percent: 0.0,
        })
        .unwrap();
    assert_eq!(report.packs_repacked, 1, "{report:?}");
    assert_eq!(report.bytes_unused_after, 0, "{report:?}");
    repository.restore(&last, &tmp.path().join("dst")).unwrap();
    assert_same_tree(&src, &tmp.path().join("dst"));
}

#[test]
fn forget_and_prune_wait_for_no_one_else_to_hold_a_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, repo, _) = backed_up(tmp.path());
    let repository = open(&repo);
    let shared = repository.lock(false).unwrap();
    let policy = RetainPolicy {
        last: 1,
        ..RetainPolicy::default()
    };
    let all = SnapshotFilter::default();
    assert!(matches!(
        repository.prune(&PruneOptions::default()),
        Err(Error::Locked { .. })
    ));
    assert!(matches!(
        repository.forget(&policy, &all, false),
        Err(Error::Locked { .. })
    ));
    // A dry run only reads.
    assert_eq!(repository.forget(&policy, &all, true).unwrap().len(), 1);
    drop(shared);
    repository.prune(&PruneOptions::default()).unwrap();
}
