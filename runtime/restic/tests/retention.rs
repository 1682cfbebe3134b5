//! Retention against the real `restic` (Debian's 0.14): this crate's
//! forget keeps what `restic forget` keeps, and after its forget and prune
//! `restic check --read-data` passes, `restic snapshots` lists the kept
//! snapshots and they restore bit-exact, also after a prune stopped
//! half-way, and in a format version 1 repository.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use common::cli::restic;
use common::{PASSWORD, assert_same_tree, generate_tree};
use rand::{Rng, SeedableRng};
use wasmover_restic::{
    Backend, Error, FileType, Id, LocalBackend, PruneOptions, Repository, RetainPolicy,
    SnapshotFilter,
};

/// `restic forget --json` output: per group, the IDs kept and removed.
#[derive(serde::Deserialize)]
struct ResticGroup {
    host: String,
    paths: Vec<String>,
    keep: Option<Vec<ResticSnapshot>>,
    remove: Option<Vec<ResticSnapshot>>,
}

#[derive(serde::Deserialize)]
struct ResticSnapshot {
    id: Id,
}

type Groups = BTreeMap<(String, Vec<String>), (BTreeSet<Id>, BTreeSet<Id>)>;

/// Snapshot times over two years, irregular and clustered (several in an
/// hour, a day, a week), some taken in Berlin: `(time, TZ)`.
fn snapshot_times() -> Vec<(String, &'static str)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(28);
    let mut t = chrono::NaiveDate::from_ymd_opt(2023, 1, 1)
        .unwrap()
        .and_hms_opt(0, 30, 0)
        .unwrap();
    (0..36)
        .map(|i| {
            let step = match rng.random_range(0..4) {
                0 => chrono::TimeDelta::minutes(rng.random_range(5..50)),
                1 => chrono::TimeDelta::hours(rng.random_range(1..30)),
                2 => chrono::TimeDelta::days(rng.random_range(1..10)),
                _ => chrono::TimeDelta::days(rng.random_range(10..60)),
            };
            t += step;
            let tz = if i % 3 == 0 { "Europe/Berlin" } else { "UTC" };
            (t.format("%Y-%m-%d %H:%M:%S").to_string(), tz)
        })
        .collect()
}

/// The snapshots' groups in this crate's dry-run forget, with the IDs
/// kept only by the count-left-over rule of restic 0.16+ left out.
fn ours(repo: &Repository, policy: &RetainPolicy) -> (Groups, usize) {
    let mut oldest_only = 0;
    let groups = repo
        .forget(policy, &SnapshotFilter::default(), true)
        .unwrap()
        .into_iter()
        .map(|g| {
            let (mut keep, mut remove) = (BTreeSet::new(), BTreeSet::new());
            for v in g.keep {
                if v.reasons.iter().all(|r| r.starts_with("oldest ")) {
                    oldest_only += 1;
                    remove.insert(v.id);
                } else {
                    keep.insert(v.id);
                }
            }
            remove.extend(g.remove.into_iter().map(|v| v.id));
            ((g.hostname, g.paths), (keep, remove))
        })
        .collect();
    (groups, oldest_only)
}

fn theirs(repo: &Path, args: &[&str]) -> Groups {
    let mut cmd = vec!["forget", "--dry-run", "--json"];
    cmd.extend(args);
    let out = restic(repo, repo, &cmd);
    let groups: Vec<ResticGroup> = serde_json::from_str(&out).unwrap();
    let ids = |l: Option<Vec<ResticSnapshot>>| l.into_iter().flatten().map(|s| s.id).collect();
    groups
        .into_iter()
        .map(|g| ((g.host, g.paths), (ids(g.keep), ids(g.remove))))
        .collect()
}

#[test]
fn forget_keeps_the_snapshots_restic_forget_keeps() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    for dir in [&one, &two] {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("file"), dir.to_str().unwrap()).unwrap();
    }
    let repository = Repository::create(LocalBackend::new(&repo), PASSWORD).unwrap();
    // Three groups: host alpha with each directory, host beta with one.
    for (i, (time, tz)) in snapshot_times().into_iter().enumerate() {
        let (host, dir) = match i % 6 {
            0..=2 => ("alpha", &one),
            3 | 4 => ("alpha", &two),
            _ => ("beta", &one),
        };
        // Each snapshot has data of its own, for prune to remove.
        fs::write(dir.join("n"), i.to_string()).unwrap();
        let out = std::process::Command::new("restic")
            .arg("--repo")
            .arg(&repo)
            .args(["--no-cache", "--quiet", "backup", "--host", host])
            .args(["--time", &time, "."])
            .env("RESTIC_PASSWORD", PASSWORD)
            .env("TZ", tz)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let cases: &[(RetainPolicy, &[&str])] = &[
        (
            RetainPolicy {
                last: 3,
                ..RetainPolicy::default()
            },
            &["--keep-last", "3"],
        ),
        (
            RetainPolicy {
                hourly: 4,
                daily: 3,
                weekly: 2,
                monthly: 3,
                yearly: 1,
                ..RetainPolicy::default()
            },
            &[
                "--keep-hourly",
                "4",
                "--keep-daily",
                "3",
                "--keep-weekly",
                "2",
                "--keep-monthly",
                "3",
                "--keep-yearly",
                "1",
            ],
        ),
        (
            RetainPolicy {
                within: Some("1m15d".parse().unwrap()),
                ..RetainPolicy::default()
            },
            &["--keep-within", "1m15d"],
        ),
        (
            RetainPolicy {
                last: 1,
                weekly: 2,
                within: Some("20d12h".parse().unwrap()),
                ..RetainPolicy::default()
            },
            &[
                "--keep-last",
                "1",
                "--keep-weekly",
                "2",
                "--keep-within",
                "20d12h",
            ],
        ),
        // More periods than there are: restic 0.16+ (and this crate) also
        // keep each group's oldest snapshot, restic 0.14 does not.
        (
            RetainPolicy {
                daily: 100,
                monthly: 100,
                ..RetainPolicy::default()
            },
            &["--keep-daily", "100", "--keep-monthly", "100"],
        ),
    ];
    for (policy, args) in cases {
        let (ours, oldest_only) = ours(&repository, policy);
        let theirs = theirs(&repo, args);
        assert_eq!(ours.len(), 3, "{args:?}");
        assert_eq!(ours, theirs, "{args:?}");
        let removed: usize = ours.values().map(|g| g.1.len()).sum();
        assert!(removed > 0, "{args:?} removes some");
        assert_eq!(oldest_only > 0, args[1] == "100", "{args:?}");
        eprintln!("{args:?}: {removed} of 36 removed, {oldest_only} oldest kept besides");
    }
    assert_eq!(
        repository.snapshots().unwrap().len(),
        36,
        "dry runs remove nothing"
    );

    // Forgotten and pruned for real: restic lists what was kept, finds
    // nothing more to forget by the same policy, and checks the rest.
    let (policy, args) = &cases[1];
    let groups = repository
        .forget(policy, &SnapshotFilter::default(), false)
        .unwrap();
    let kept: BTreeSet<Id> = groups
        .iter()
        .flat_map(|g| g.keep.iter().map(|v| v.id))
        .collect();
    assert_eq!(restic_snapshot_ids(&repo), kept);
    assert!(theirs(&repo, args).values().all(|g| g.1.is_empty()));
    let report = repository.prune(&PruneOptions::default()).unwrap();
    eprintln!("{} of 36 kept, then {report:?}", kept.len());
    assert!(
        report.packs_deleted + report.packs_repacked > 0,
        "{report:?}"
    );
    restic(&repo, &repo, &["check", "--read-data"]);
    assert_eq!(restic_snapshot_ids(&repo), kept);
}

/// A local directory that fails one operation on one kind of file, once
/// armed: a prune interrupted at that point.
struct Interrupted {
    inner: LocalBackend,
    op: &'static str,
    kind: FileType,
    tripped: AtomicBool,
}

impl Interrupted {
    fn check(&self, op: &'static str, kind: FileType) -> wasmover_restic::Result<()> {
        if op == self.op && kind == self.kind && !self.tripped.swap(true, Ordering::SeqCst) {
            return Err(Error::Backend {
                op,
                location: format!("{}/…", kind.dir()),
                reason: "interrupted by the test".into(),
            });
        }
        Ok(())
    }
}

impl Backend for Interrupted {
    fn get(&self, kind: FileType, name: &str) -> wasmover_restic::Result<Vec<u8>> {
        self.inner.get(kind, name)
    }
    fn get_range(
        &self,
        kind: FileType,
        name: &str,
        offset: u64,
        len: u64,
    ) -> wasmover_restic::Result<Vec<u8>> {
        self.inner.get_range(kind, name, offset, len)
    }
    fn size(&self, kind: FileType, name: &str) -> wasmover_restic::Result<u64> {
        self.inner.size(kind, name)
    }
    fn put(&self, kind: FileType, name: &str, data: &mut dyn Read) -> wasmover_restic::Result<()> {
        self.check("put", kind)?;
        self.inner.put(kind, name, data)
    }
    fn list(&self, kind: FileType) -> wasmover_restic::Result<Vec<String>> {
        self.inner.list(kind)
    }
    fn delete(&self, kind: FileType, name: &str) -> wasmover_restic::Result<()> {
        self.check("delete", kind)?;
        self.inner.delete(kind, name)
    }
    fn create(&self) -> wasmover_restic::Result<()> {
        self.inner.create()
    }
}

/// Three backups of a changing tree (the big random file gone from the
/// last), restic's check passing on them; returns the repository and the
/// last snapshot's ID, with the source as it was then.
fn three_backups(tmp: &Path) -> (std::path::PathBuf, Id) {
    let (src, repo) = (tmp.join("src"), tmp.join("repo"));
    generate_tree(&src);
    let repository = Repository::create(LocalBackend::new(&repo), PASSWORD).unwrap();
    repository.backup(&src).unwrap();
    fs::write(src.join("second"), b"second backup").unwrap();
    repository.backup(&src).unwrap();
    fs::remove_file(src.join("a/link to random")).unwrap();
    fs::remove_file(src.join("a/random.bin")).unwrap();
    let (last, _) = repository.backup(&src).unwrap();
    (repo, last)
}

fn pack_bytes(repo: &Path) -> u64 {
    fs::read_dir(repo.join("data"))
        .unwrap()
        .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum()
}

fn restic_snapshot_ids(repo: &Path) -> BTreeSet<Id> {
    let listed: Vec<ResticSnapshot> =
        serde_json::from_str(&restic(repo, repo, &["snapshots", "--json"])).unwrap();
    listed.into_iter().map(|s| s.id).collect()
}

#[test]
fn after_forget_and_prune_restic_checks_lists_and_restores_the_kept_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, last) = three_backups(tmp.path());
    let before = pack_bytes(&repo);
    let repository = Repository::open(LocalBackend::new(&repo), PASSWORD).unwrap();
    let policy = RetainPolicy {
        last: 1,
        ..RetainPolicy::default()
    };
    let groups = repository
        .forget(&policy, &SnapshotFilter::default(), false)
        .unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].keep.len(), 1);
    assert_eq!(groups[0].keep[0].id, last);
    assert_eq!(groups[0].keep[0].reasons, ["last snapshot"]);
    assert_eq!(groups[0].remove.len(), 2);
    assert_eq!(restic_snapshot_ids(&repo), BTreeSet::from([last]));

    let report = repository.prune(&PruneOptions::default()).unwrap();
    eprintln!("{report:?}; pack bytes {before} -> {}", pack_bytes(&repo));
    assert!(
        report.packs_repacked >= 2,
        "the data pack and the tree pack: {report:?}"
    );
    assert!(report.packs_written >= 2, "{report:?}");
    assert!(
        pack_bytes(&repo) < before - (3 << 20),
        "the 3 MiB only forgotten snapshots used are gone"
    );
    assert!(
        report.bytes_unused_after * 20 <= report.bytes_used,
        "{report:?}"
    );
    restic(&repo, &repo, &["check", "--read-data"]);
    assert_eq!(restic_snapshot_ids(&repo), BTreeSet::from([last]));
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    restic(
        &repo,
        &repo,
        &["restore", &last.to_hex(), "--target", dst.to_str().unwrap()],
    );
    assert_same_tree(&src, &dst);
    repository.restore(&last, &tmp.path().join("ours")).unwrap();
    assert_same_tree(&src, &tmp.path().join("ours"));

    // Nothing is left to remove.
    let again = repository.prune(&PruneOptions::default()).unwrap();
    assert_eq!(
        (
            again.packs_deleted,
            again.packs_repacked,
            again.index_files_written
        ),
        (0, 0, 0),
        "{again:?}"
    );
}

#[test]
fn a_prune_stopped_at_any_step_leaves_a_repository_restic_checks() {
    // After the new packs, after the new index, after the old index files.
    for (op, kind) in [
        ("put", FileType::Index),
        ("delete", FileType::Index),
        ("delete", FileType::Data),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let (repo, last) = three_backups(tmp.path());
        let interrupted = Interrupted {
            inner: LocalBackend::new(&repo),
            op,
            kind,
            tripped: AtomicBool::new(false),
        };
        let repository = Repository::open(interrupted, PASSWORD).unwrap();
        let policy = RetainPolicy {
            last: 1,
            ..RetainPolicy::default()
        };
        repository
            .forget(&policy, &SnapshotFilter::default(), false)
            .unwrap();
        let err = repository
            .prune(&PruneOptions::default())
            .expect_err("interrupted");
        assert!(err.to_string().contains("interrupted by the test"), "{err}");
        let check = restic(&repo, &repo, &["check", "--read-data"]);
        eprintln!("stopped at {op} {kind:?}: restic check says {check:?}");
        assert_eq!(restic_snapshot_ids(&repo), BTreeSet::from([last]));
        let dst = tmp.path().join("dst");
        repository.restore(&last, &dst).unwrap();
        assert_same_tree(&tmp.path().join("src"), &dst);

        // A new prune finishes the job.
        let report = repository.prune(&PruneOptions::default()).unwrap();
        eprintln!("then: {report:?}");
        if op == "delete" {
            assert_eq!(
                (report.packs_repacked, report.packs_written),
                (0, 0),
                "the new packs are used: {report:?}"
            );
        }
        restic(&repo, &repo, &["check", "--read-data"]);
        let again = repository.prune(&PruneOptions::default()).unwrap();
        assert_eq!(
            (again.packs_deleted, again.packs_repacked),
            (0, 0),
            "{op} {kind:?}: {again:?}"
        );
    }
}

#[test]
fn a_version_1_repository_restic_wrote_is_pruned_uncompressed() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo) = (tmp.path().join("src"), tmp.path().join("repo"));
    generate_tree(&src);
    restic(&repo, tmp.path(), &["init", "--repository-version", "1"]);
    restic(&repo, &src, &["backup", "."]);
    fs::remove_file(src.join("a/link to random")).unwrap();
    fs::remove_file(src.join("a/random.bin")).unwrap();
    restic(&repo, &src, &["backup", "."]);
    let repository = Repository::open(LocalBackend::new(&repo), PASSWORD).unwrap();
    let policy = RetainPolicy {
        last: 1,
        ..RetainPolicy::default()
    };
    let groups = repository
        .forget(&policy, &SnapshotFilter::default(), false)
        .unwrap();
    let last = groups[0].keep[0].id;
    let report = repository.prune(&PruneOptions::default()).unwrap();
    assert!(report.packs_repacked > 0, "{report:?}");
    restic(&repo, &repo, &["check", "--read-data"]);
    let dst = tmp.path().join("dst");
    restic(
        &repo,
        &repo,
        &["restore", &last.to_hex(), "--target", dst.to_str().unwrap()],
    );
    assert_same_tree(&src, &dst);
}
