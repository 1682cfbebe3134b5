//! The network backends against real servers on loopback: restic's
//! rest-server and MinIO (S3), built by `tests/objectstore/install.sh` and
//! started per test (`common::servers`). Round trips through each backend,
//! interoperability with the `restic` CLI on the same server (each restores
//! what the other wrote, bit-exact), and the faults a user meets: a server
//! killed mid-backup (and the rerun that reuses its packs), a wrong password, wrong credentials, a missing
//! bucket, an unknown certificate authority. Forget and prune through each
//! leave a repository restic checks.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::servers::{RestServer, S3Server};
use common::{PASSWORD, assert_same_tree, generate_tree};
use wasmover_restic::{
    Backend, BackendOptions, Error, PruneOptions, Repository, RetainPolicy, SnapshotFilter,
    open_backend, open_from_vars,
};

/// Runs restic on the repository string with `vars` in its environment;
/// asserts that it succeeds and returns its output. Fails (does not skip)
/// when restic is missing.
fn restic(repository: &str, vars: &[(&str, String)], cwd: &Path, args: &[&str]) -> String {
    let out = Command::new("restic")
        .args(["--no-cache", "--quiet"])
        .args(args)
        .env("RESTIC_REPOSITORY", repository)
        .env("RESTIC_PASSWORD", PASSWORD)
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("cannot run restic ({e}): install it with scripts/setup"));
    assert!(
        out.status.success(),
        "restic {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn backend(repository: &str, vars: &[(&str, String)]) -> Box<dyn Backend> {
    let options = BackendOptions::from_vars(vars.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
    open_backend(repository, &options).unwrap()
}

/// Backs up the test tree through `repository` with this crate, restores it
/// with this crate, then backs up again (nothing new is read).
fn round_trip(repository: &str, vars: &[(&str, String)]) {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    generate_tree(&src);
    let repo = Repository::create(backend(repository, vars), PASSWORD).unwrap();
    let started = Instant::now();
    let (id, first) = repo.backup(&src).unwrap();
    let backup = started.elapsed();

    // Opened again from restic's variable names, as a VolSync Secret has them.
    let mut secret = vars.to_vec();
    secret.push(("RESTIC_REPOSITORY", repository.to_owned()));
    secret.push(("RESTIC_PASSWORD", PASSWORD.to_owned()));
    let repo = open_from_vars(secret.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
    assert_eq!(repo.find_snapshot("latest").unwrap(), id);
    let started = Instant::now();
    repo.restore(&id, &dst).unwrap();
    let restore = started.elapsed();
    assert_same_tree(&src, &dst);

    let (_, second) = repo.backup(&src).unwrap();
    assert_eq!(
        (second.bytes_read, second.files_unchanged),
        (0, first.files)
    );
    assert_eq!(repo.snapshots().unwrap().len(), 2);
    eprintln!(
        "{repository}: backup {backup:?}, restore {restore:?} ({} bytes, {} packs)",
        first.bytes_read, first.packs
    );
}

#[test]
fn a_backup_through_the_rest_server_restores_bit_exact() {
    let server = RestServer::start_with_auth("alice", "s3cr3t:pass");
    round_trip(&server.repository("alice"), &[]);
}

#[test]
fn a_backup_through_s3_restores_bit_exact() {
    let server = S3Server::start();
    // The bucket does not exist yet: creating the repository makes it.
    round_trip(&server.repository("backups/volumes/db"), &server.vars());
}

/// Two backups through `repository`, the second without the big random
/// file; forget keeps the last, prune removes what only the first used:
/// restic check passes, restic lists the last only, and it restores bit-exact.
fn forget_and_prune(repository: &str, vars: &[(&str, String)]) {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    generate_tree(&src);
    let repo = Repository::create(backend(repository, vars), PASSWORD).unwrap();
    repo.backup(&src).unwrap();
    std::fs::remove_file(src.join("a/link to random")).unwrap();
    std::fs::remove_file(src.join("a/random.bin")).unwrap();
    let (last, _) = repo.backup(&src).unwrap();
    let policy = RetainPolicy {
        last: 1,
        ..RetainPolicy::default()
    };
    let groups = repo
        .forget(&policy, &SnapshotFilter::default(), false)
        .unwrap();
    assert_eq!(groups[0].remove.len(), 1);
    let started = Instant::now();
    let report = repo.prune(&PruneOptions::default()).unwrap();
    eprintln!("{repository}: prune {:?}: {report:?}", started.elapsed());
    assert!(report.packs_repacked >= 2, "{report:?}");
    assert!(
        report.bytes_repacked > report.bytes_written + (3 << 20),
        "{report:?}"
    );
    restic(repository, vars, tmp.path(), &["check", "--read-data"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&restic(
        repository,
        vars,
        tmp.path(),
        &["snapshots", "--json"],
    ))
    .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], last.to_hex());
    repo.restore(&last, &dst).unwrap();
    assert_same_tree(&src, &dst);
}

#[test]
fn forget_and_prune_through_the_rest_server_leave_what_restic_checks() {
    let server = RestServer::start_with_auth("alice", "s3cr3t:pass");
    forget_and_prune(&server.repository("alice"), &[]);
}

#[test]
fn forget_and_prune_through_s3_leave_what_restic_checks() {
    let server = S3Server::start();
    forget_and_prune(&server.repository("backups/pruned"), &server.vars());
}

/// restic backs up into `repository` and this crate restores it bit-exact;
/// this crate backs up into it and restic checks and restores it bit-exact.
fn interop(repository: &str, vars: &[(&str, String)]) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    generate_tree(&src);
    restic(repository, vars, tmp.path(), &["init"]);
    restic(repository, vars, &src, &["backup", "."]);
    let repo = Repository::open(backend(repository, vars), PASSWORD).unwrap();
    assert_eq!(repo.config().version, 2);
    let dst = tmp.path().join("from-restic");
    repo.restore(&repo.find_snapshot("latest").unwrap(), &dst)
        .unwrap();
    assert_same_tree(&src, &dst);

    // This crate's backup of the same tree, in the same repository: restic's
    // snapshot is not its parent (another path), but its blobs deduplicate.
    let (id, summary) = repo.backup(&src).unwrap();
    assert!(
        summary.bytes_added < 1 << 20,
        "restic's blobs are reused: {summary:?}"
    );
    restic(repository, vars, tmp.path(), &["check", "--read-data"]);
    let dst = tmp.path().join("from-wasmover");
    restic(
        repository,
        vars,
        tmp.path(),
        &["restore", &id.to_hex(), "--target", dst.to_str().unwrap()],
    );
    assert_same_tree(&src, &dst);

    // And a repository this crate made, which restic then writes to.
    let (other, _) = repository.rsplit_once('/').unwrap();
    let other = format!("{other}/made-by-wasmover");
    let made = Repository::create(backend(&other, vars), PASSWORD).unwrap();
    made.backup(&src).unwrap();
    restic(&other, vars, &src, &["backup", "."]);
    restic(&other, vars, tmp.path(), &["check", "--read-data"]);
    assert_eq!(made.snapshots().unwrap().len(), 2);
}

#[test]
fn restic_and_this_crate_restore_each_others_backups_on_the_rest_server() {
    let server = RestServer::start_with_auth("bob", "hunter2");
    interop(&server.repository("repo"), &[]);
}

#[test]
fn restic_and_this_crate_restore_each_others_backups_on_s3() {
    let server = S3Server::start();
    interop(&server.repository("interop/repo"), &server.vars());
}

/// A tree of `n` files of 8 MiB of random data (one pack each, about).
fn large_tree(root: &Path, n: usize) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(2828);
    std::fs::create_dir_all(root).unwrap();
    for i in 0..n {
        let mut data = vec![0u8; 8 << 20];
        rng.fill(&mut data[..]);
        std::fs::write(root.join(format!("big-{i:02}")), data).unwrap();
    }
}

/// Kills the server once the backup has stored its first pack: the backup
/// fails with an error naming the server, and after a restart no snapshot
/// is visible; a second backup reuses the packs stored before the kill,
/// completes, passes restic check and restores bit-exact.
fn killed_mid_backup(
    repository: &str,
    vars: &[(&str, String)],
    packs_stored: impl Fn() -> usize,
    kill: impl FnOnce(),
    restart: impl FnOnce(),
) {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    large_tree(&src, 12);
    let repo = Repository::create(backend(repository, vars), PASSWORD).unwrap();
    let (result, left) = std::thread::scope(|s| {
        let backup = s.spawn(|| repo.backup(&src));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut stored = 0;
        while stored == 0 {
            assert!(!backup.is_finished(), "the backup ended before the kill");
            assert!(Instant::now() < deadline, "no pack stored in 60 s");
            std::thread::sleep(Duration::from_millis(5));
            stored = packs_stored();
        }
        kill();
        (backup.join().unwrap(), stored)
    });
    let err = result.expect_err("the backup fails once its server is gone");
    assert!(
        matches!(&err, Error::Backend { reason, .. } if reason.contains("tried 4 times")),
        "{err:?}"
    );
    eprintln!("killed after {left} packs: {err}");
    restart();
    let repo = Repository::open(backend(repository, vars), PASSWORD).unwrap();
    assert!(
        repo.snapshots().unwrap().is_empty(),
        "a failed backup leaves no snapshot"
    );
    let (id, summary) = repo.backup(&src).unwrap();
    eprintln!("the backup after the restart: {summary:?}");
    // The packs stored before the kill are indexed and used, not uploaded again.
    assert!(
        summary.packs_reused >= left as u64 && summary.blobs_deduplicated > 0,
        "{summary:?}"
    );
    assert!(summary.bytes_added + (left as u64) * (8 << 20) <= 12 * (8 << 20) + (1 << 20));
    // The failed backup's lock is still there (removing it failed with the
    // server gone) and its process, this test, lives: restic's check, which
    // locks exclusively, needs it removed, as VolSync's `unlock` does.
    restic(repository, vars, &src, &["unlock", "--remove-all"]);
    restic(repository, vars, &src, &["check", "--read-data"]);
    repo.restore(&id, &dst).unwrap();
    let mut same = true;
    for i in 0..12 {
        let name = format!("big-{i:02}");
        same &= std::fs::read(src.join(&name)).unwrap() == std::fs::read(dst.join(&name)).unwrap();
    }
    assert!(same, "the restore after the restart is bit-exact");
}

/// Files named by a storage ID under `dir`, recursively.
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                count_files(&e.path())
            } else {
                // Not the server's temporary files: complete packs only.
                usize::from(e.file_name().len() == 64)
            }
        })
        .sum()
}

#[test]
fn a_rest_server_killed_mid_backup_leaves_no_snapshot() {
    let server = std::cell::RefCell::new(RestServer::start());
    let data = server.borrow().data("repo").join("data");
    let repository = server.borrow().repository("repo");
    killed_mid_backup(
        &repository,
        &[],
        || count_files(&data),
        || server.borrow_mut().kill(),
        || server.borrow_mut().restart(),
    );
}

#[test]
fn an_s3_server_killed_mid_backup_leaves_no_snapshot() {
    let server = std::cell::RefCell::new(S3Server::start());
    let vars = server.borrow().vars();
    let repository = server.borrow().repository("bucket/repo");
    // Asked over S3 itself: MinIO's files on disk are its own format.
    let probe = backend(&repository, &vars);
    killed_mid_backup(
        &repository,
        &vars,
        || {
            probe
                .list(wasmover_restic::FileType::Data)
                .map_or(usize::MAX, |l| l.len())
        },
        || server.borrow_mut().kill(),
        || server.borrow_mut().restart(),
    );
}

#[test]
fn a_wrong_password_is_refused_over_the_network() {
    let server = RestServer::start();
    let repository = server.repository("repo");
    Repository::create(backend(&repository, &[]), PASSWORD).unwrap();
    let err = Repository::open(backend(&repository, &[]), "not the password").unwrap_err();
    assert!(matches!(err, Error::WrongPassword { keys: 1 }), "{err:?}");
}

#[test]
fn wrong_rest_credentials_name_the_setting_to_check() {
    let server = RestServer::start_with_auth("alice", "right");
    let good = server.repository("alice");
    Repository::create(backend(&good, &[]), PASSWORD).unwrap();
    let wrong = good.replace("alice:right@", "alice:wrong@");
    let err = Repository::open(backend(&wrong, &[]), PASSWORD).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Denied { .. }), "{err:?}");
    assert!(
        text.contains("401") && text.contains("RESTIC_REST_PASSWORD") && !text.contains("wrong@"),
        "{text}"
    );
    // Credentials from RESTIC_REST_USERNAME / RESTIC_REST_PASSWORD instead of the URL.
    let bare = good.replace("alice:right@", "");
    let vars = [
        ("RESTIC_REST_USERNAME", "alice".to_owned()),
        ("RESTIC_REST_PASSWORD", "right".to_owned()),
    ];
    Repository::open(backend(&bare, &vars), PASSWORD).unwrap();
    let err = Repository::open(backend(&bare, &[]), PASSWORD).unwrap_err();
    assert!(matches!(err, Error::Denied { .. }), "{err:?}");
}

#[test]
fn wrong_s3_credentials_and_a_missing_bucket_say_what_to_check() {
    let server = S3Server::start();
    let repository = server.repository("bucket/repo");
    Repository::create(backend(&repository, &server.vars()), PASSWORD).unwrap();

    let wrong_secret = [
        (
            "AWS_ACCESS_KEY_ID",
            common::servers::S3_ACCESS_KEY.to_owned(),
        ),
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret".to_owned()),
    ];
    let err = Repository::open(backend(&repository, &wrong_secret), PASSWORD).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Denied { .. }), "{err:?}");
    assert!(
        text.contains("SignatureDoesNotMatch") && text.contains("AWS_SECRET_ACCESS_KEY"),
        "{text}"
    );
    assert!(!text.contains("not-the-secret"), "{text}");

    let wrong_key = [
        ("AWS_ACCESS_KEY_ID", "nobody".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "whatever-secret".to_owned()),
    ];
    let err = Repository::open(backend(&repository, &wrong_key), PASSWORD).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("InvalidAccessKeyId") && text.contains("AWS_ACCESS_KEY_ID"),
        "{text}"
    );

    let missing = server.repository("no-such-bucket/repo");
    let err = Repository::open(backend(&missing, &server.vars()), PASSWORD).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::Backend { .. })
            && text.contains("NoSuchBucket")
            && text.contains("no-such-bucket"),
        "{text}"
    );
}

#[test]
fn a_custom_ca_is_trusted_and_nothing_else() {
    let (server, ca) = RestServer::start_tls();
    let repository = server.repository("repo");
    // The system's roots do not know the test CA.
    let err = Repository::create(backend(&repository, &[]), PASSWORD).unwrap_err();
    assert!(
        matches!(&err, Error::Backend { reason, .. } if reason.contains("certificate")),
        "{err:?}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let vars = [("RESTIC_CACERT", ca_file.to_str().unwrap().to_owned())];
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    generate_tree(&src);
    let repo = Repository::create(backend(&repository, &vars), PASSWORD).unwrap();
    let (id, _) = repo.backup(&src).unwrap();
    // restic trusts the same CA with --cacert, and sees the snapshot.
    let listed = restic(
        &repository,
        &[],
        tmp.path(),
        &["--cacert", ca_file.to_str().unwrap(), "snapshots", "--json"],
    );
    assert!(listed.contains(&id.to_hex()), "{listed}");
    repo.restore(&id, &dst).unwrap();
    assert_same_tree(&src, &dst);
}
