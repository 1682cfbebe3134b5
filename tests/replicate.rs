//! Local replication end to end: the blocksync component on both sides, on
//! real directories.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmover_host::bindings::types::{Parameter, TransferReport};
use wasmover_host::state::Quiet;
use wasmover_host::{
    Access, Grants, MoverLimits, MoverModule, Observer, Progress, RunError, Volume,
};
use wasmover_operator::replicate::{ReplicateError, ReplicateOptions, StateDir, replicate};
use wasmover_tests::{
    assert_same_tree, bytes, engine, load, make_tree, snapshot, tree_digest, write,
};

/// Where a destination keeps what one run leaves for the next in these
/// tests: beside it, outside it.
fn state_of(dst: &Path) -> PathBuf {
    let mut state = dst.as_os_str().to_owned();
    state.push(".state");
    state.into()
}

/// Options that keep the destination's state at [`state_of`].
fn keeping_state(dst: &Path) -> ReplicateOptions {
    ReplicateOptions {
        state_dir: StateDir::At(state_of(dst)),
        ..ReplicateOptions::default()
    }
}

/// Every entry under `root`, dot entries included, by relative path (as
/// `find` lists them), but the file system's `lost+found` at the root.
fn listing(root: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if dir == root && path.file_name().unwrap() == "lost+found" {
                continue;
            }
            out.insert(path.strip_prefix(root).unwrap().to_owned());
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// Asserts that the destination holds no entry the source lacks: no
/// state of the receiver's, no staging file.
fn assert_nothing_extra(src: &Path, dst: &Path) {
    let source = listing(src);
    let extra: Vec<_> = listing(dst).difference(&source).cloned().collect();
    assert!(
        extra.is_empty(),
        "the destination holds entries the source lacks: {extra:?}"
    );
}

fn run(module: &MoverModule, src: &Path, dst: &Path) -> TransferReport {
    replicate(
        module,
        src,
        dst,
        &keeping_state(dst),
        MoverLimits::default(),
        &[],
        Arc::new(Quiet),
    )
    .expect("replicates")
}

#[test]
fn replicates_a_generated_tree_exactly() {
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    make_tree(&src, 100 << 20);

    let report = run(&blocksync, &src, &dst);
    assert_same_tree(&src, &dst);
    assert_nothing_extra(&src, &dst);
    // --no-dereference compares symlinks as links (a dangling one would
    // otherwise be an error of diff's own). Nothing is excluded: the
    // receiver keeps its state outside the destination.
    let diff = std::process::Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(&src)
        .arg(&dst)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "diff -r: {}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
    assert_eq!(report.entries_total as usize, snapshot(&src).len());
    assert_eq!(report.bytes_matched, 0, "a first copy has nothing to match");
    assert_eq!(report.bytes_literal, report.bytes_total);
    assert!(report.bytes_on_wire > report.bytes_total);
    // Verified end to end, and the digest is the source's own, as the host
    // computes it here independently of the mover.
    assert!(report.verified, "{report:?}");
    assert_eq!(report.tree_digest, tree_digest(&src));
    assert_eq!(report.tree_digest, tree_digest(&dst));
}

/// A mover built for the previous contract, 0.2, still runs: the host
/// links its imports to adapters over the current ones. It replicates a
/// tree, verified, and a name that is not UTF-8, which 0.2 cannot carry,
/// fails its run naming the file.
#[test]
fn a_mover_built_for_contract_0_2_still_replicates() {
    let engine = engine();
    assert_eq!(
        load(&engine, "blocksync").contract(),
        Some(wasmover_host::CONTRACT_VERSION)
    );
    let previous = load(&engine, "contract02");
    assert_eq!(previous.contract(), Some("0.2.0"));
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    make_tree(&src, 4 << 20);
    let report = run(&previous, &src, &dst);
    assert!(report.verified, "{report:?}");
    assert_same_tree(&src, &dst);
    // Its digest covers no extended attributes: 0.2 movers copy none.
    let plain = Volume::open(&src, Access::ReadOnly)
        .unwrap()
        .digest()
        .unwrap();
    assert_eq!(report.tree_digest, plain.root);

    // A fifo, which 0.2 cannot list, is left out of both sides' scans and
    // digests: the rest still replicates, verified.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    write(&src, "after-the-fifo", b"new");
    let report = run(&previous, &src, &dst);
    assert!(report.verified, "{report:?}");
    assert!(!dst.join("pipe").exists());
    assert_eq!(std::fs::read(dst.join("after-the-fifo")).unwrap(), b"new");

    let name = std::ffi::OsStr::from_bytes(b"bad\xffname");
    std::fs::write(src.join(name), b"x").unwrap();
    let err = replicate(
        &previous,
        &src,
        &dst,
        &ReplicateOptions::default(),
        MoverLimits::default(),
        &[],
        Arc::new(Quiet),
    )
    .unwrap_err();
    assert!(err.to_string().contains("bad\\xffname"), "{err}");
}

/// A destination file altered behind the mover's back, keeping its size
/// and modification time, passes the quick check and is not resent; the
/// tree digests catch it, and the transfer fails naming both. They do so
/// even once both sides keep the hashes of their settled files between
/// runs, which spares the digests reading unchanged files.
#[test]
fn a_file_changed_behind_the_movers_back_fails_verification() {
    use std::os::unix::fs::FileExt;
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    make_tree(&src, 1 << 20);
    let options = ReplicateOptions {
        source_hashes: Some(tmp.path().join("source-hashes")),
        ..keeping_state(&dst)
    };
    let run_keeping = || {
        replicate(
            &blocksync,
            &src,
            &dst,
            &options,
            MoverLimits::default(),
            &[],
            Arc::new(Quiet),
        )
    };
    assert!(run_keeping().unwrap().verified);
    // Files that changed within the last two seconds are read again next
    // time rather than kept; these have settled by the second run.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert!(run_keeping().unwrap().verified);
    for store in [
        tmp.path().join("source-hashes"),
        state_of(&dst).join("hashes"),
    ] {
        let kept = std::fs::metadata(&store).map(|m| m.len()).unwrap_or(0);
        assert!(kept > 64 * 5, "{} keeps {kept} bytes", store.display());
    }

    let path = dst.join("big.bin");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, 1000).unwrap();
    file.write_at(&[!byte[0]], 1000).unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    let altered = tree_digest(&dst);
    let source = tree_digest(&src);
    assert_ne!(altered, source);

    let err = run_keeping().unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, ReplicateError::Mover { error: RunError::Mover { reason, .. }, .. } if reason == "VerificationFailed"),
        "{message}"
    );
    assert!(
        message.contains(&altered) && message.contains(&source),
        "{message}"
    );
}

/// Thousands of small files keep both sides writing small messages at once
/// (signatures one way, deltas the other); the in-memory channel must not
/// fill up with them (it once held 16 writes, and this hung).
#[test]
fn a_tree_of_many_small_files_replicates() {
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    for i in 0..5000u64 {
        write(&src, &format!("d{}/f{i}", i % 10), &bytes(1024, i));
    }
    // A deadlock fails the test instead of hanging the run.
    let (done, finished) = std::sync::mpsc::channel();
    let (from, to) = (src.clone(), dst.clone());
    std::thread::spawn(move || done.send(run(&blocksync, &from, &to)).unwrap());
    let report = finished
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the replication finishes (it deadlocked once)");
    assert_eq!(report.files_transferred, 5000);
    assert_same_tree(&src, &dst);
}

#[test]
fn a_second_run_moves_only_the_changed_blocks() {
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    make_tree(&src, 16 << 20);
    run(&blocksync, &src, &dst);

    // Nothing changed: nothing is rebuilt.
    let unchanged = run(&blocksync, &src, &dst);
    assert_eq!(unchanged.files_transferred, 0);
    assert_eq!(unchanged.bytes_literal, 0);

    // 4 KiB changed in the middle of the big file, plus a shift near its
    // start: only about that much moves.
    let mut big = std::fs::read(src.join("big.bin")).unwrap();
    big[8 << 20..(8 << 20) + 4096].copy_from_slice(&bytes(4096, 99));
    big.splice(
        1000..1000,
        b"inserted bytes shift every block after them"
            .iter()
            .copied(),
    );
    std::fs::write(src.join("big.bin"), &big).unwrap();
    let changed = run(&blocksync, &src, &dst);
    assert_same_tree(&src, &dst);
    assert_eq!(changed.files_transferred, 1);
    assert!(
        changed.bytes_literal < 256 << 10,
        "only the changed blocks should be sent, sent {} literal bytes",
        changed.bytes_literal
    );
    assert!(changed.bytes_matched > 15 << 20, "{changed:?}");
    assert!(changed.bytes_on_wire < 1 << 20, "{changed:?}");
}

#[test]
fn extraneous_entries_go_and_changed_kinds_are_replaced() {
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src, "x/file", b"source file");
    write(&src, "became-dir/inner", b"inner");
    std::os::unix::fs::symlink("x/file", src.join("link")).unwrap();

    write(&dst, "extra/deep/tree", b"remove me");
    write(&dst, "extra-file", b"remove me");
    write(
        &dst,
        "became-dir",
        b"a file where the source has a directory",
    );
    std::fs::create_dir_all(dst.join("link")).unwrap();
    write(&dst, ".x.wasmover-tmp", b"left over by an interrupted run");
    // The file systems' own lost+found is neither sent nor removed.
    write(&src, "lost+found/#12", b"the source's orphan");
    write(&dst, "lost+found/#34", b"the destination's orphan");

    let report = run(&blocksync, &src, &dst);
    assert_same_tree(&src, &dst);
    assert_nothing_extra(&src, &dst);
    assert_eq!(report.entries_deleted, 5);
    assert!(!dst.join("lost+found/#12").exists());
    assert_eq!(
        std::fs::read(dst.join("lost+found/#34")).unwrap(),
        b"the destination's orphan"
    );
}

/// Runs both sides over a tampering proxy; returns the receiver's result.
fn run_tampered(
    module: &MoverModule,
    src: &Path,
    dst: &Path,
    cut_after: usize,
    flip_at: Option<usize>,
) -> Result<TransferReport, RunError> {
    let (to_receiver, to_sender) = wasmover_tests::tamper::channels(cut_after, flip_at);
    let sending = Grants::new()
        .with_volume(Volume::open(src, Access::ReadOnly).unwrap())
        .with_channel(to_receiver);
    let receiving = Grants::new()
        .with_volume(open_destination(dst))
        .with_channel(to_sender);
    let limits = MoverLimits::default();
    std::thread::scope(|s| {
        let sender = s.spawn(|| module.instantiate(limits, sending)?.send(&[]));
        let received = module.instantiate(limits, receiving).unwrap().receive(&[]);
        let _ = sender.join();
        received
    })
}

/// Opens `dst` for receiving, with its state at [`state_of`].
fn open_destination(dst: &Path) -> Volume {
    let state = wasmover_host::volume::open_state_dir(&state_of(dst)).unwrap();
    Volume::open_with_state(dst, Access::ReadWrite, None, Some(state)).unwrap()
}

/// Writes the destination's old version with an older mtime, so the quick
/// check (size + mtime) sees it as changed even on coarse-clock filesystems.
fn write_old(dst: &Path, content: &[u8]) {
    write(dst, "data", content);
    let file = std::fs::File::options()
        .write(true)
        .open(dst.join("data"))
        .unwrap();
    file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000))
        .unwrap();
}

fn files_are_old_or_new(dst: &Path, old: &[u8], new: &[u8]) {
    let content = std::fs::read(dst.join("data")).unwrap();
    assert!(
        content == old || content == new,
        "the destination file is neither old nor new ({} bytes)",
        content.len()
    );
    let leftovers: Vec<_> = std::fs::read_dir(dst)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".wasmover-tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staging files left behind: {leftovers:?}"
    );
}

#[test]
fn a_stream_cut_part_way_leaves_the_old_file_and_no_debris() {
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let (old, new) = (bytes(4 << 20, 1), bytes(4 << 20, 2));
    write(&src, "data", &new);
    write_old(&dst, &old);

    // Cut after the tree and about half of the delta.
    let err = run_tampered(&blocksync, &src, &dst, 2 << 20, None).unwrap_err();
    assert!(
        matches!(&err, RunError::Mover { reason, .. } if reason == "PeerGone" || reason == "ProtocolError"),
        "{err}"
    );
    files_are_old_or_new(&dst, &old, &old);

    // The next, uncut run completes the job.
    run(&blocksync, &src, &dst);
    files_are_old_or_new(&dst, &new, &new);
}

/// A byte flipped in a delta's literal data (this channel has no TLS to
/// catch it) fails the file's verification: the rebuilt file is thrown
/// away, and the receiver asks for the file once more, which the proxy
/// now lets through whole. A flipped message length is refused outright.
#[test]
fn a_corrupted_delta_is_refused_and_the_file_asked_for_again() {
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let (old, new) = (bytes(1 << 20, 3), bytes(1 << 20, 4));
    write(&src, "data", &new);
    write_old(&dst, &old);

    // Deep inside the delta's literal data.
    let report = run_tampered(&blocksync, &src, &dst, usize::MAX, Some(512 << 10)).unwrap();
    assert!(report.verified, "{report:?}");
    files_are_old_or_new(&dst, &new, &new);

    // In the length of the first message: refused, nothing written.
    write_old(&dst, &old);
    let err = run_tampered(&blocksync, &src, &dst, usize::MAX, Some(0)).unwrap_err();
    assert!(
        matches!(&err, RunError::Mover { reason, .. } if reason == "ProtocolError"),
        "{err}"
    );
    assert!(err.to_string().contains("blocksync"), "{err}");
    files_are_old_or_new(&dst, &old, &old);
}

#[test]
fn the_source_is_never_written() {
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    make_tree(&src, 1 << 20);
    let before = snapshot(&src);
    run(&blocksync, &src, &dst);
    write(&dst, "only-in-destination", b"x");
    run(&blocksync, &src, &dst);
    assert_eq!(snapshot(&src), before);

    // A module that tries to write to the sending side's volume is refused
    // through WASI and through the host's volume functions alike.
    let hostile = load(&engine, "hostile");
    let grants = Grants::new().with_volume(Volume::open(&src, Access::ReadOnly).unwrap());
    let err = hostile
        .instantiate(MoverLimits::default(), grants)
        .unwrap()
        .send(&[])
        .unwrap_err();
    assert!(
        matches!(&err, RunError::Mover { reason, .. } if reason == "Refused"),
        "{err}"
    );
    assert_eq!(snapshot(&src), before);

    // Control: the same attempts on a writable volume get through, so the
    // refusals above are the read-only grant at work.
    let scratch = tmp.path().join("scratch");
    write(&scratch, "big.bin", b"x");
    let grants = Grants::new().with_volume(Volume::open(&scratch, Access::ReadWrite).unwrap());
    let err = hostile
        .instantiate(MoverLimits::default(), grants)
        .unwrap()
        .send(&[])
        .unwrap_err();
    assert!(
        matches!(&err, RunError::Mover { reason, message, .. }
            if reason == "Wrote" && message.contains("WASI open for writing") && message.contains("volume.remove")),
        "{err}"
    );
}

#[test]
fn errors_name_what_is_wrong_and_touch_nothing() {
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src, "f", b"x");
    let quiet = || Arc::new(Quiet);
    let limits = MoverLimits::default();

    let inside = src.join("copy");
    let err = replicate(
        &blocksync,
        &src,
        &inside,
        &ReplicateOptions::default(),
        limits,
        &[],
        quiet(),
    )
    .unwrap_err();
    assert!(matches!(err, ReplicateError::Overlap { .. }), "{err}");
    assert!(!inside.exists());

    let err = replicate(
        &blocksync,
        &tmp.path().join("nope"),
        &tmp.path().join("d"),
        &ReplicateOptions::default(),
        limits,
        &[],
        quiet(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("not a directory, block device or regular file"),
        "{err}"
    );

    // A module without a data plane is refused before anything runs.
    let not_a_mover = engine
        .load("control-only", include_bytes!("modules/run-only.wat"))
        .unwrap();
    let err = replicate(
        &not_a_mover,
        &src,
        &tmp.path().join("d2"),
        &ReplicateOptions::default(),
        limits,
        &[],
        quiet(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not export wasmover:mover/transfer@0.3.0"),
        "{err}"
    );
    assert!(!tmp.path().join("d2").exists());
}

#[test]
fn scattered_small_changes_in_large_files_cost_about_their_bytes() {
    // Four 4 MiB files at 32 KiB blocks, each with 1% rewritten as
    // scattered 4 KiB pages, and small changed files between them: one
    // round would send 32 KiB per page; refinement rounds send the pages,
    // while the receiver keeps later files' signatures in flight.
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    for i in 0..4u64 {
        write(&src, &format!("big-{i}.img"), &bytes(4 << 20, i));
        write(&src, &format!("small-{i}"), &bytes(3000, 10 + i));
    }
    let block_size = [Parameter {
        key: "block-size".into(),
        value: "32768".into(),
    }];
    let run = |src: &Path, dst: &Path| {
        replicate(
            &blocksync,
            src,
            dst,
            &ReplicateOptions::default(),
            MoverLimits::default(),
            &block_size,
            Arc::new(Quiet),
        )
        .expect("replicates")
    };
    run(&src, &dst);

    let mut changed = 0u64;
    for i in 0..4u64 {
        let path = src.join(format!("big-{i}.img"));
        let mut big = std::fs::read(&path).unwrap();
        for k in 0..10 {
            let at = ((k * 97 + i * 13) % 1024) as usize * 4096;
            big[at..at + 4096].copy_from_slice(&bytes(4096, 1000 + i * 10 + k));
            changed += 4096;
        }
        std::fs::write(&path, &big).unwrap();
        write(&src, &format!("small-{i}"), &bytes(3000, 20 + i));
    }
    let report = run(&src, &dst);
    eprintln!("{changed} bytes changed in the big files: {report:?}");
    assert_same_tree(&src, &dst);
    assert_eq!(report.files_transferred, 8, "{report:?}");
    let small = 4 * 3000;
    assert!(
        report.bytes_literal <= changed + small,
        "{report:?} for {changed} changed bytes"
    );
    assert!(
        report.bytes_on_wire <= 2 * (changed + small),
        "{report:?} for {changed} changed bytes"
    );
}

#[test]
fn small_writes_in_place_cost_a_tag_a_block() {
    // A 64-byte write into 1% of a 32 MiB file's pages, as a database's
    // row updates make: the rounds that narrow each write down are
    // aligned, so the receiver answers each with 4 bytes a block, where a
    // signature would take 12 bytes and name its ranges again.
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let mut data = bytes(32 << 20, 5);
    write(&src, "db", &data);
    run(&blocksync, &src, &dst);

    let pages = data.len() / 4096;
    let writes = pages / 100;
    for k in 0..writes {
        let at = (k * 2_654_435_761 % pages) * 4096 + k * 61 % (4096 - 64);
        data[at..at + 64].copy_from_slice(&bytes(64, 100 + k as u64));
    }
    write(&src, "db", &data);
    let report = run(&blocksync, &src, &dst);
    eprintln!("{writes} writes of 64 bytes: {report:?}");
    assert_same_tree(&src, &dst);
    let writes = writes as u64;
    // Rounds at 4 KiB, 1 KiB and 256 B blocks (the next would be for less
    // than 64 KiB of literals): about 5 blocks a write each round.
    assert!(report.bytes_literal <= writes * 2 * 256, "{report:?}");
    // The granule tags (4 bytes for each 16 KiB), then for each write and
    // round 5 tags and a range, and in the delta its literals and two
    // copies; the tree's listing and digest take a few hundred bytes.
    let granules = (data.len() as u64 >> 14) * 4;
    let bound = granules + writes * (3 * (5 * 4 + 6) + 2 * 18) + report.bytes_literal + 2048;
    assert!(report.bytes_on_wire <= bound, "{report:?}: over {bound}");
}

#[test]
fn zero_runs_arrive_as_holes() {
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    // 8 MiB: data, 6 MiB of zeros, data.
    let mut image = bytes(1 << 20, 5);
    image.resize(7 << 20, 0);
    image.extend_from_slice(&bytes(1 << 20, 6));
    write(&src, "disk.img", &image);
    run(&blocksync, &src, &dst);
    assert_same_tree(&src, &dst);
    let allocated = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(dst.join("disk.img")).unwrap().blocks() * 512
    };
    assert!(
        allocated <= 3 << 20,
        "{allocated} bytes allocated for 2 MiB of data in an 8 MiB file"
    );
}

/// Bytes the file system allocated for `path`.
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// A sparse source is read by its data ranges: its holes cross the wire as
/// runs of zeros and arrive as holes, on a first copy and after a change,
/// and the digest covers its exact content, which a copy holding written
/// zeros where the source has holes shares.
#[test]
fn a_sparse_file_crosses_as_its_data_and_arrives_sparse() {
    use std::os::unix::fs::FileExt;
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    let len = 1u64 << 30;
    let file = std::fs::File::create(src.join("sparse.img")).unwrap();
    file.set_len(len).unwrap();
    for (i, at) in [12_345u64, 300 << 20, (700 << 20) + 1, len - 3]
        .into_iter()
        .enumerate()
    {
        let piece = bytes(if at == len - 3 { 3 } else { 70_000 }, i as u64);
        file.write_all_at(&piece, at).unwrap();
    }
    drop(file);
    assert!(allocated(&src.join("sparse.img")) < 1 << 20);

    let report = run(&blocksync, &src, &dst);
    assert!(report.verified, "{report:?}");
    assert_same_tree(&src, &dst);
    assert_eq!(report.bytes_total, len);
    assert!(
        report.bytes_literal < 1 << 20 && report.bytes_on_wire < 2 << 20,
        "the holes crossed: {report:?}"
    );
    let held = allocated(&dst.join("sparse.img"));
    assert!(held < 1 << 20, "{held} bytes allocated for 210 kB of data");

    // A change inside a hole: the granules in holes match unread.
    std::fs::OpenOptions::new()
        .write(true)
        .open(src.join("sparse.img"))
        .unwrap()
        .write_all_at(&bytes(4096, 9), 500 << 20)
        .unwrap();
    let report = run(&blocksync, &src, &dst);
    assert!(report.verified, "{report:?}");
    assert_same_tree(&src, &dst);
    assert!(report.bytes_on_wire < 1 << 20, "{report:?}");
    assert!(allocated(&dst.join("sparse.img")) < 1 << 20);

    // Written zeros where the source has holes: the same digest.
    let (small, dense) = (tmp.path().join("small"), tmp.path().join("dense"));
    std::fs::create_dir_all(&small).unwrap();
    let sparse = std::fs::File::create(small.join("f")).unwrap();
    sparse.set_len(40 << 20).unwrap();
    sparse.write_all_at(&bytes(5000, 1), 3 << 20 | 77).unwrap();
    let content = std::fs::read(small.join("f")).unwrap();
    write(&dense, "f", &content);
    let epoch = std::fs::FileTimes::new().set_modified(std::time::SystemTime::UNIX_EPOCH);
    for dir in [&small, &dense] {
        let f = std::fs::File::options().write(true).open(dir.join("f"));
        f.unwrap().set_times(epoch).unwrap();
        std::fs::File::open(dir).unwrap().set_times(epoch).unwrap();
    }
    assert!(allocated(&dense.join("f")) >= 40 << 20);
    assert_eq!(tree_digest(&small), tree_digest(&dense));
}

#[test]
fn a_cut_transfer_resumes_without_resending_what_arrived() {
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let (old, new) = (bytes(8 << 20, 1), bytes(8 << 20, 2));
    write(&src, "data", &new);
    write_old(&dst, &old);

    // Cut after about half of the new content crossed: what arrived is
    // kept in the state directory, and the destination holds nothing more
    // than before.
    run_tampered(&blocksync, &src, &dst, 4 << 20, None).unwrap_err();
    files_are_old_or_new(&dst, &old, &old);
    assert_nothing_extra(&src, &dst);
    let partial = std::fs::read(state_of(&dst).join("partial/data")).expect("kept");
    assert!(partial.len() >= 2 << 20, "{} bytes kept", partial.len());
    assert!(new.starts_with(&partial), "the kept part is not a prefix");

    // The next run sends only the rest, and leaves no state behind.
    let report = run(&blocksync, &src, &dst);
    files_are_old_or_new(&dst, &new, &new);
    assert!(
        report.bytes_literal <= new.len() as u64 - partial.len() as u64 + (64 << 10),
        "{report:?} after {} bytes had arrived",
        partial.len()
    );
    assert!(
        !state_of(&dst).join("partial").exists(),
        "partial content left behind"
    );
    assert_same_tree(&src, &dst);
    assert_nothing_extra(&src, &dst);
}

/// A destination an earlier version received into holds its state in
/// `.wasmover/` at its root: the next run takes it over (rolling back a
/// patch it left half done, moving its hashes to the state directory) and
/// removes it, so the replica ends with nothing the source lacks. The
/// state goes where it is told: here, under a directory, named for the
/// destination's canonical path (the command line's default, under the
/// cache directory).
#[test]
fn an_earlier_versions_state_in_the_destination_is_removed() {
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    make_tree(&src, 1 << 20);
    write(
        &dst,
        ".wasmover/partial/big.bin",
        b"what an earlier run received",
    );
    write(&dst, ".wasmover/hashes", b"an earlier version's hashes");
    write(&dst, ".wasmover/granules/0123", b"granule hashes");
    let base = tmp.path().join("cache/state");
    let options = ReplicateOptions {
        state_dir: StateDir::Under(base.clone()),
        ..ReplicateOptions::default()
    };
    let report = replicate(
        &blocksync,
        &src,
        &dst,
        &options,
        MoverLimits::default(),
        &[],
        Arc::new(Quiet),
    )
    .unwrap();
    assert!(report.verified, "{report:?}");
    assert!(!dst.join(".wasmover").exists());
    assert_same_tree(&src, &dst);
    assert_nothing_extra(&src, &dst);
    assert_eq!(listing(&src), listing(&dst));
    let state = options
        .state_dir
        .resolve(&dst.canonicalize().unwrap())
        .unwrap();
    assert_eq!(state.parent().unwrap(), base);
    assert!(state.is_dir());
}

/// Special files and extended attributes replicate: a fifo and a
/// socket's name anywhere, a device node where the receiver may (root);
/// user attributes and a POSIX ACL as they were, on a file and a
/// directory. Both digests cover them, and a second run finds nothing to
/// do. A device node an unprivileged receiver may not make is counted as
/// skipped and left out of both digests.
#[test]
fn special_files_and_extended_attributes_replicate() {
    use rustix::fs::{FileType, Mode, XattrFlags, lgetxattr, lsetxattr, makedev, mknodat};
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src, "d/file", b"content");
    let node = |name: &str, kind, rdev| {
        let mode = Mode::from_raw_mode(0o640);
        mknodat(rustix::fs::CWD, src.join(name), kind, mode, rdev)
    };
    node("d/pipe", FileType::Fifo, 0).unwrap();
    node("d/sock", FileType::Socket, 0).unwrap();
    let root = rustix::process::geteuid().is_root();
    if root {
        node("d/null", FileType::CharacterDevice, makedev(1, 3)).unwrap();
    }
    // user.* attributes are for files and directories only.
    for name in ["d/file", "d"] {
        let value = format!("value of {name}");
        lsetxattr(
            src.join(name),
            "user.test",
            value.as_bytes(),
            XattrFlags::empty(),
        )
        .unwrap();
    }
    let acl = std::process::Command::new("setfacl")
        .args(["-m", "u:1234:r", "-m", "d:u:1234:rx"])
        .arg(src.join("d"))
        .status()
        .expect("setfacl runs (scripts/setup installs acl)");
    assert!(acl.success());

    let report = run(&blocksync, &src, &dst);
    assert!(report.verified, "{report:?}");
    assert_eq!(report.entries_skipped, 0, "{report:?}");
    let kind =
        |path: &Path| FileType::from_raw_mode(std::fs::symlink_metadata(path).unwrap().mode());
    assert_eq!(kind(&dst.join("d/pipe")), FileType::Fifo);
    assert_eq!(kind(&dst.join("d/sock")), FileType::Socket);
    if root {
        let null = std::fs::symlink_metadata(dst.join("d/null")).unwrap();
        assert_eq!(null.rdev(), makedev(1, 3));
    }
    for name in ["d/file", "d"] {
        let mut value = vec![0; 64];
        let len = lgetxattr(dst.join(name), "user.test", &mut value).unwrap();
        assert_eq!(
            &value[..len],
            format!("value of {name}").as_bytes(),
            "{name}"
        );
    }
    let getfacl = |root: &Path| {
        let out = std::process::Command::new("getfacl")
            .args(["--omit-header", "--absolute-names"])
            .arg(root.join("d"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(getfacl(&src).contains("user:1234:r--"), "{}", getfacl(&src));
    assert_eq!(getfacl(&dst), getfacl(&src));
    assert_eq!(report.tree_digest, tree_digest(&src));

    let again = run(&blocksync, &src, &dst);
    assert_eq!((again.files_transferred, again.bytes_literal), (0, 0));
    assert!(again.verified);
}

#[test]
fn hard_links_stay_links_and_owners_are_kept_where_permitted() {
    use std::os::unix::fs::{MetadataExt, chown};
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src, "data/a", &bytes(300_000, 1));
    std::fs::hard_link(src.join("data/a"), src.join("data/b")).unwrap();
    std::fs::create_dir_all(src.join("other")).unwrap();
    std::fs::hard_link(src.join("data/a"), src.join("other/c")).unwrap();
    write(&src, "owned", b"someone else's");
    let privileged = chown(src.join("owned"), Some(1234), Some(5678)).is_ok();
    let meta = |root: &Path, path: &str| std::fs::symlink_metadata(root.join(path)).unwrap();

    let report = run(&blocksync, &src, &dst);
    assert_same_tree(&src, &dst);
    // The linked content crossed once.
    assert!(report.bytes_literal < 400_000, "{report:?}");
    let inode = meta(&dst, "data/a").ino();
    assert_eq!(
        (meta(&dst, "data/b").ino(), meta(&dst, "other/c").ino()),
        (inode, inode)
    );
    assert_eq!(meta(&dst, "data/a").nlink(), 3);
    if privileged {
        let owned = meta(&dst, "owned");
        assert_eq!((owned.uid(), owned.gid()), (1234, 5678));
    } else {
        eprintln!("not privileged: ownership is not checked");
    }

    // The content changes: it is rebuilt once and relinked.
    std::fs::write(src.join("data/b"), bytes(300_000, 2)).unwrap();
    let report = run(&blocksync, &src, &dst);
    assert_same_tree(&src, &dst);
    assert_eq!(report.files_transferred, 1, "{report:?}");
    let inode = meta(&dst, "data/a").ino();
    assert_eq!(
        (meta(&dst, "data/b").ino(), meta(&dst, "other/c").ino()),
        (inode, inode)
    );
}

#[test]
fn partial_content_of_a_file_the_source_dropped_is_discarded() {
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src, "data", &bytes(8 << 20, 2));
    write_old(&dst, &bytes(8 << 20, 1));
    run_tampered(&blocksync, &src, &dst, 4 << 20, None).unwrap_err();
    assert!(state_of(&dst).join("partial/data").exists());

    // The source no longer has the file: the run completes without using
    // the partial content, and drops it.
    std::fs::remove_file(src.join("data")).unwrap();
    write(&src, "other", b"x");
    run(&blocksync, &src, &dst);
    assert!(
        !state_of(&dst).join("partial").exists(),
        "partial content left behind"
    );
    assert_same_tree(&src, &dst);
    assert_nothing_extra(&src, &dst);
}

/// Rewrites `count` 4 KiB pages of `data`, spread over it, unaligned.
fn rewrite_pages(data: &mut [u8], count: usize, seed: u64) -> u64 {
    let stride = data.len() / count;
    for i in 0..count {
        let at = i * stride + 777;
        data[at..at + 4096].copy_from_slice(&bytes(4096, seed + i as u64));
    }
    (count * 4096) as u64
}

#[test]
fn an_image_file_is_patched_in_place_and_only_its_changes_move() {
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src.img"), tmp.path().join("dst.img"));
    let journal = tmp.path().join(".dst.img.wasmover-journal");
    let mut data = bytes(8 << 20, 1);
    std::fs::write(&src, &data).unwrap();

    // The destination image is created and takes the source's content.
    let first = run(&blocksync, &src, &dst);
    assert_eq!(std::fs::read(&dst).unwrap(), data);
    assert!(first.verified, "{first:?}");
    assert_eq!((first.entries_total, first.bytes_total), (1, 8 << 20));
    let inode = std::fs::metadata(&dst).unwrap().ino();

    // 20 scattered pages (1%) change: they cross, the rest is matched, and
    // the image is the same file, patched in place.
    let changed = rewrite_pages(&mut data, 20, 100);
    std::fs::write(&src, &data).unwrap();
    let second = run(&blocksync, &src, &dst);
    assert_eq!(std::fs::read(&dst).unwrap(), data);
    assert!(second.verified, "{second:?}");
    assert_eq!(std::fs::metadata(&dst).unwrap().ino(), inode);
    assert!(
        (changed..changed * 2).contains(&second.bytes_literal),
        "{changed} bytes changed, {} sent as literals",
        second.bytes_literal
    );
    assert!(!journal.exists(), "a finished patch leaves no journal");

    // Unchanged, it is compared by content and nothing is sent; then it
    // shrinks and grows with the source.
    let third = run(&blocksync, &src, &dst);
    assert_eq!(third.bytes_literal, 0);
    for len in [5 << 20, 9 << 20] {
        data.resize(len, 3);
        std::fs::write(&src, &data).unwrap();
        run(&blocksync, &src, &dst);
        assert_eq!(std::fs::read(&dst).unwrap(), data, "{len} bytes");
    }
    eprintln!(
        "image 8 MiB, {changed} bytes changed: {} literal bytes, {} on the wire",
        second.bytes_literal, second.bytes_on_wire
    );
}

/// Loop devices over files, detached when dropped.
struct LoopDevices(Vec<PathBuf>);

impl LoopDevices {
    /// Attaches a loop device to each file; why not where this machine
    /// has no loop devices for us (not root, or no /dev/loop-control).
    fn attach(files: &[&Path]) -> Result<Self, String> {
        let mut devices = Self(Vec::new());
        for file in files {
            let out = std::process::Command::new("losetup")
                .args(["--find", "--show"])
                .arg(file)
                .output()
                .map_err(|e| format!("losetup: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "losetup: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            let device = String::from_utf8(out.stdout).map_err(|e| e.to_string())?;
            devices.0.push(PathBuf::from(device.trim()));
        }
        Ok(devices)
    }
}

impl Drop for LoopDevices {
    fn drop(&mut self) {
        for device in &self.0 {
            let _ = std::process::Command::new("losetup")
                .arg("-d")
                .arg(device)
                .status();
        }
    }
}

#[test]
#[ignore = "needs root: attaches loop devices (scripts/test runs it as root)"]
fn a_block_device_is_patched_in_place_under_its_journal() {
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let files = ["src.img", "dst.img", "small.img"].map(|f| tmp.path().join(f));
    let mut data = bytes(8 << 20, 2);
    std::fs::write(&files[0], &data).unwrap();
    std::fs::write(&files[1], vec![0u8; 8 << 20]).unwrap();
    std::fs::write(&files[2], vec![9u8; 4 << 20]).unwrap();
    let devices =
        LoopDevices::attach(&files.each_ref().map(|f| f.as_path())).unwrap_or_else(|why| {
            panic!("no loop devices here (needs root and /dev/loop-control): {why}")
        });
    let [src, dst, small] = [0, 1, 2].map(|i| devices.0[i].clone());
    let journal = tmp.path().join("journal");
    let replicate_to = |dst: &Path| {
        replicate(
            &blocksync,
            &src,
            dst,
            &ReplicateOptions {
                journal: Some(journal.clone()),
                ..ReplicateOptions::default()
            },
            MoverLimits::default(),
            &[],
            Arc::new(Quiet),
        )
    };

    // A device without a journal is refused before anything runs.
    let err = replicate(
        &blocksync,
        &src,
        &dst,
        &ReplicateOptions::default(),
        MoverLimits::default(),
        &[],
        Arc::new(Quiet),
    )
    .unwrap_err();
    assert!(err.to_string().contains("--journal"), "{err}");

    let first = replicate_to(&dst).expect("replicates");
    assert!(first.verified, "{first:?}");
    assert_eq!(std::fs::read(&dst).unwrap(), data);

    rewrite_pages(&mut data, 20, 200);
    std::fs::write(&src, &data).unwrap();
    let second = replicate_to(&dst).expect("replicates");
    assert_eq!(std::fs::read(&dst).unwrap(), data);
    assert!(second.bytes_literal < 2 * 20 * 4096, "{second:?}");
    assert!(!journal.exists());

    // A device smaller than the source keeps its size and its content.
    let err = replicate_to(&small).unwrap_err();
    assert!(
        err.to_string().contains("must be as large as the source"),
        "{err}"
    );
    assert_eq!(std::fs::read(&small).unwrap(), vec![9u8; 4 << 20]);
    assert!(!journal.exists());
}

/// Keeps every progress report.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<Progress>>);

impl Observer for Recorder {
    fn progress(&self, _: &str, progress: Progress) {
        self.0.lock().unwrap().push(progress);
    }
}

#[test]
fn a_large_file_reports_progress_while_it_moves() {
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let len = 48u64 << 20;
    for image in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = if image {
            let src = tmp.path().join("src.img");
            std::fs::write(&src, bytes(len as usize, 3)).unwrap();
            (src, tmp.path().join("dst.img"))
        } else {
            let src = tmp.path().join("src");
            write(&src, "big", &bytes(len as usize, 3));
            (src, tmp.path().join("dst"))
        };
        let recorder = Arc::new(Recorder::default());
        replicate(
            &blocksync,
            &src,
            &dst,
            &ReplicateOptions::default(),
            MoverLimits::default(),
            &[],
            recorder.clone(),
        )
        .unwrap();
        let reports = recorder.0.lock().unwrap().clone();
        let within = reports
            .iter()
            .filter(|p| p.bytes_done > 0 && p.bytes_done < len)
            .count();
        assert!(within >= 2, "image {image}: {reports:?}");
        assert!(
            reports
                .windows(2)
                .all(|w| w[0].bytes_done <= w[1].bytes_done),
            "{reports:?}"
        );
        assert!(reports.iter().all(|p| p.bytes_total == len), "{reports:?}");
        assert_eq!(reports.last().unwrap().bytes_done, len);
    }
}

/// The replica is exactly the source, as `rsync -aAXHS` run as root makes
/// it: names that are not UTF-8 or hold a newline, extended attributes of
/// every namespace (`security.capability` among them), ACLs, fifos,
/// sockets, device nodes, hard links and a 10 GiB sparse file, checked
/// with the standard tools (`diff -r`, `getfattr`, `getfacl`, `stat`),
/// and with no entry the source lacks. A second run after changes to such
/// names moves only those.
#[test]
#[ignore = "needs root: device nodes, trusted.* and security.capability (scripts/test runs it as root)"]
fn a_tree_of_every_kind_replicates_exactly_as_root() {
    use std::ffi::OsStr;
    use std::os::unix::fs::FileExt;

    use rustix::fs::{FileType, Mode, XattrFlags, lsetxattr, makedev, mknodat};
    assert!(
        rustix::process::geteuid().is_root(),
        "run as root (scripts/test does, as root)"
    );
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let at = |name: &[u8]| src.join(OsStr::from_bytes(name));
    std::fs::create_dir_all(at(b"dir\xfe")).unwrap();
    let long = vec![b'n'; 255];
    for (name, content) in [
        (&b"bad\xffname"[..], &b"not UTF-8"[..]),
        (b"dir\xfe/inside", b"under a name that is not UTF-8"),
        (b"new\nline", b"a newline in the name"),
        (b"-leading-dash", b"looks like an option"),
        (&long, b"the longest name Linux takes"),
        (b"tool", b"a binary with a file capability"),
    ] {
        std::fs::write(at(name), content).unwrap();
    }
    std::os::unix::fs::symlink(OsStr::from_bytes(b"bad\xffname"), at(b"link\xfd")).unwrap();
    std::fs::hard_link(at(b"bad\xffname"), at(b"dir\xfe/hard")).unwrap();
    for (name, kind, rdev) in [
        (&b"fifo"[..], FileType::Fifo, 0),
        (b"socket", FileType::Socket, 0),
        (b"null", FileType::CharacterDevice, makedev(1, 3)),
        (b"loop\xff", FileType::BlockDevice, makedev(7, 200)),
    ] {
        mknodat(
            rustix::fs::CWD,
            at(name),
            kind,
            Mode::from_raw_mode(0o640),
            rdev,
        )
        .unwrap();
    }
    for (name, attribute, value) in [
        (&b"bad\xffname"[..], "user.note", &b"user value"[..]),
        (b"dir\xfe", "user.dir", b"\x00binary\xff"),
        (b"dir\xfe/inside", "trusted.overlay", b"trusted value"),
        (
            b"-leading-dash",
            "security.wasmover-test",
            b"security value",
        ),
    ] {
        lsetxattr(at(name), attribute, value, XattrFlags::empty()).unwrap();
    }
    let tool = |args: &[&str], path: &Path| {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .current_dir(path)
            .output()
            .unwrap_or_else(|e| panic!("{} runs (scripts/setup installs it): {e}", args[0]));
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    tool(&["setcap", "cap_net_raw+ep", "tool"], &src);
    std::fs::create_dir(src.join("acl")).unwrap();
    tool(&["setfacl", "-m", "u:1234:r,d:u:1234:rx", "acl"], &src);
    // 10 GiB holding 1 MiB of data in the middle and 4 bytes at its end.
    let sparse = std::fs::File::create(src.join("sparse.img")).unwrap();
    let len = 10u64 << 30;
    sparse.set_len(len).unwrap();
    sparse.write_all_at(&bytes(1 << 20, 7), 5 << 30).unwrap();
    sparse.write_all_at(b"end!", len - 4).unwrap();
    drop(sparse);

    let report = run(&blocksync, &src, &dst);
    assert!(report.verified, "{report:?}");
    assert_eq!(report.entries_skipped, 0, "{report:?}");
    assert!(
        report.bytes_on_wire < 4 << 20,
        "the sparse file's holes crossed: {report:?}"
    );
    assert!(allocated(&dst.join("sparse.img")) < 4 << 20);
    assert_replica_is_exact(&src, &dst, &tool);

    // Changes under the odd names move only what changed.
    std::fs::write(
        at(b"dir\xfe/inside"),
        b"changed under a name that is not UTF-8",
    )
    .unwrap();
    std::fs::remove_file(at(b"new\nline")).unwrap();
    let again = run(&blocksync, &src, &dst);
    assert!(again.verified, "{again:?}");
    assert_eq!(again.files_transferred, 1, "{again:?}");
    assert!(!dst.join("new\nline").exists(), "extraneous entries go");
    assert_replica_is_exact(&src, &dst, &tool);
}

/// Asserts, with the standard tools, that `dst` is exactly `src`: `diff
/// -r` finds no difference (but that it cannot compare special files,
/// which `stat` then does), `getfattr` and `getfacl` dump the same
/// attributes and ACLs, every entry has the same `stat`, hard links are
/// linked alike, and `dst` holds nothing `src` lacks.
fn assert_replica_is_exact(src: &Path, dst: &Path, tool: &dyn Fn(&[&str], &Path) -> Vec<u8>) {
    let diff = std::process::Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(src)
        .arg(dst)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&diff.stdout);
    for line in out.lines() {
        // "File A is a fifo while file B is a fifo": the same kind.
        let same_kind = line
            .split_once(" while file ")
            .and_then(|(a, b)| Some((a.rsplit_once(" is a ")?.1, b.rsplit_once(" is a ")?.1)))
            .is_some_and(|(a, b)| a == b);
        assert!(same_kind, "diff -r: {line}\n{out}");
    }
    assert_eq!(
        diff.status.code(),
        Some(if out.is_empty() { 0 } else { 1 }),
        "diff -r: {}",
        String::from_utf8_lossy(&diff.stderr)
    );
    let dump = ["getfattr", "-R", "-h", "-d", "-m", "-", "-e", "hex", "."];
    let (from, to) = (tool(&dump, src), tool(&dump, dst));
    let from = String::from_utf8_lossy(&from);
    for present in [
        "user.note",
        "trusted.overlay",
        "security.capability",
        "security.wasmover-test",
        "system.posix_acl_default",
    ] {
        assert!(
            from.contains(present),
            "{present} missing from the source's dump:\n{from}"
        );
    }
    assert_eq!(String::from_utf8_lossy(&to), from, "getfattr");
    let acls = ["getfacl", "-R", "-P", "."];
    assert_eq!(tool(&acls, dst), tool(&acls, src), "getfacl");
    let stat = |root: &Path| {
        let mut links = std::collections::BTreeMap::<u64, Vec<PathBuf>>::new();
        let mut stats = std::collections::BTreeMap::new();
        for path in listing(root) {
            let meta = std::fs::symlink_metadata(root.join(&path)).unwrap();
            links.entry(meta.ino()).or_default().push(path.clone());
            let size = if meta.is_dir() { 0 } else { meta.size() };
            let mtime = (meta.mtime(), meta.mtime_nsec());
            stats.insert(
                path,
                (
                    meta.mode(),
                    meta.uid(),
                    meta.gid(),
                    meta.rdev(),
                    size,
                    meta.nlink(),
                    mtime,
                ),
            );
        }
        let linked: BTreeSet<_> = links.into_values().filter(|l| l.len() > 1).collect();
        (stats, linked)
    };
    assert_eq!(stat(dst), stat(src), "stat");
    assert_nothing_extra(src, dst);
}
