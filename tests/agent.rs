//! `wasmover agent send` and `receive` as real processes on loopback, with
//! the faults a network brings: a wrong key, a silent or frozen peer, a
//! sender killed part-way, and a stream cut or corrupted in transit.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use wasmover_tests::{
    Node, assert_same_tree, bytes, make_tree, snapshot, tree_digest, wasmover_bin, write,
};

/// Where the agents keep precompiled modules (shared by the tests).
fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("agent-cache")
}

fn wasmover() -> Command {
    let mut command = Command::new(wasmover_bin());
    command.arg("--cache-dir").arg(cache_dir());
    command
}

/// Where a receiving agent keeps what one run leaves for the next in these
/// tests (`--state-dir`): beside its volume, outside it.
fn state_of(dst: &Path) -> PathBuf {
    let mut state = dst.as_os_str().to_owned();
    state.push(".state");
    state.into()
}

/// The names in `dir`, sorted, dot entries included.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A key file of 32 random-looking bytes as hex, as blocksync's Secret.
fn key_file(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let hex: String = bytes(32, seed).iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(name);
    std::fs::write(&path, hex).unwrap();
    path
}

/// A running `wasmover agent receive`, its stderr collected.
struct Receiver {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Receiver {
    fn start(dst: &Path, key: &Path, extra: &[&str]) -> Self {
        Self::start_logging(dst, key, extra, "warn")
    }

    /// [`start`](Self::start) with `WASMOVER_LOG` set to `log`.
    fn start_logging(dst: &Path, key: &Path, extra: &[&str], log: &str) -> Self {
        let mut child = wasmover()
            .env("WASMOVER_LOG", log)
            .args(["agent", "receive", "--listen", "127.0.0.1:0", "--volume"])
            .arg(dst)
            .arg("--key-file")
            .arg(key)
            .arg("--state-dir")
            .arg(state_of(dst))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        // Log lines may come first (a journal rolled back when it opened
        // the volume).
        let mut before = String::new();
        let addr = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("the receiver exited before listening: {before}"))
                .unwrap();
            match line.strip_prefix("wasmover: listening on ") {
                Some(addr) => break addr.parse().unwrap(),
                None => before.push_str(&line),
            }
        };
        let stderr = Arc::new(Mutex::new(before));
        let collected = stderr.clone();
        thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut all = collected.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        Self {
            child,
            addr,
            stderr,
        }
    }

    /// Waits (at most `limit`) for it to exit; returns success, stdout and
    /// stderr.
    fn wait(mut self, limit: Duration) -> (bool, String, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "the receiver still runs after {limit:?}; stderr: {}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        // Let the collector see the end of stderr.
        thread::sleep(Duration::from_millis(50));
        (status.success(), stdout, self.stderr())
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn send_command(src: &Path, addr: &str, key: &Path, extra: &[&str]) -> Command {
    let mut command = wasmover();
    command
        .args(["agent", "send", "--connect", addr, "--volume"])
        .arg(src)
        .arg("--key-file")
        .arg(key)
        .args(extra);
    command
}

fn send(src: &Path, addr: &str, key: &Path, extra: &[&str]) -> Output {
    send_command(src, addr, key, extra).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `diff -r --no-dereference` finds no difference, dot entries included:
/// the receiver keeps nothing of its own in its volume.
fn assert_diff_clean(a: &Path, b: &Path) {
    let diff = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        diff.status.success() && diff.stdout.is_empty(),
        "diff -r: {}",
        text(&diff.stdout)
    );
}

/// The count in a summary's "(N files rebuilt".
fn files_rebuilt(summary: &str) -> u64 {
    let (before, _) = summary.split_once(" files rebuilt").expect(summary);
    before.rsplit('(').next().unwrap().parse().unwrap()
}

fn staging_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.is_symlink() {
            found.extend(staging_files(&path));
        } else if path.to_string_lossy().ends_with(".wasmover-tmp") {
            found.push(path);
        }
    }
    found
}

#[test]
fn send_to_receive_replicates_a_tree_then_only_the_change() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    make_tree(&src, 4 << 20);
    let key = key_file(tmp.path(), "key", 1);

    for round in 0..2 {
        let receiver = Receiver::start(&dst, &key, &[]);
        let sent = send(&src, &receiver.addr.to_string(), &key, &[]);
        assert!(sent.status.success(), "send: {}", text(&sent.stderr));
        let (ok, stdout, stderr) = receiver.wait(Duration::from_secs(20));
        assert!(ok, "receive: {stderr}");
        assert!(stdout.starts_with("received "), "{stdout}");
        let sent = text(&sent.stdout);
        assert!(sent.starts_with("sent "), "{sent}");
        assert_diff_clean(&src, &dst);
        assert_same_tree(&src, &dst);
        // Both ends report the end-to-end verification, with the source's
        // tree digest as this process computes it.
        let verified = format!("verified: tree digest {}", tree_digest(&src));
        assert!(stdout.contains(&format!("; {verified};")), "{stdout}");
        assert!(sent.contains(&format!("; {verified};")), "{sent}");
        if round == 0 {
            // Change 4 KiB in the middle of the big file for round two.
            let mut big = std::fs::read(src.join("big.bin")).unwrap();
            big[2 << 20..(2 << 20) + 4096].copy_from_slice(&bytes(4096, 99));
            write(&src, "big.bin", &big);
        } else {
            assert_eq!(files_rebuilt(&stdout), 1, "{stdout}");
            assert!(sent.contains("(1 files rebuilt, 0 removed)"), "{sent}");
        }
    }
}

/// Both agents keep the content hash of every settled file between runs
/// (the sender where `--hashes` says, the receiver in its state
/// directory), one 64-byte entry per file, and still verify every run,
/// with `--read-every-file` too.
#[test]
fn the_agents_keep_file_hashes_between_runs_and_still_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    make_tree(&src, 1 << 20);
    let key = key_file(tmp.path(), "key", 1);
    let sent_hashes = tmp.path().join("kept/source");
    let hashes = sent_hashes.to_str().unwrap();
    let files = snapshot(&src)
        .values()
        .filter(|n| matches!(n, Node::File(..)))
        .count() as u64;
    let run = |extra: &[&str]| {
        let receiver = Receiver::start(&dst, &key, extra);
        let sent = send(
            &src,
            &receiver.addr.to_string(),
            &key,
            &[&["--hashes", hashes], extra].concat(),
        );
        assert!(sent.status.success(), "send: {}", text(&sent.stderr));
        let (ok, stdout, stderr) = receiver.wait(Duration::from_secs(20));
        assert!(ok, "receive: {stderr}");
        assert!(stdout.contains("; verified: tree digest"), "{stdout}");
        assert_diff_clean(&src, &dst);
    };
    run(&[]);
    // What changed within the last 2 s is read again next time, not kept.
    thread::sleep(Duration::from_millis(2100));
    run(&[]);
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    // Magic and version, 64 bytes per file, the count and a checksum.
    let expected = 5 + 64 * files + 8 + 32;
    assert_eq!(size(&sent_hashes), expected, "the sender's store");
    assert_eq!(
        size(&state_of(&dst).join("hashes")),
        expected,
        "the receiver's"
    );
    run(&["--read-every-file"]);
    assert_eq!(size(&sent_hashes), expected, "kept again after a full read");
}

/// A large file a run rebuilt keeps its granule hashes in the receiver's
/// state directory, and the next run sends their summary instead of
/// reading the file: still verified, and only the change crosses. (Where
/// the filesystem's ctime could miss a change right after a write, none
/// are kept.)
#[test]
fn the_next_run_sends_the_granule_hashes_the_last_one_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    let kept = state_of(&dst).join("granules");
    next_runs_send_kept_hashes(tmp.path(), (&src, &src.join("big.bin")), &dst, &kept);
}

/// An image file keeps its granule hashes beside its journal.
#[test]
fn the_next_run_sends_the_granule_hashes_the_last_one_kept_of_an_image() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src.img"), tmp.path().join("dst.img"));
    std::fs::write(&dst, b"").unwrap();
    let kept = tmp.path().join(".dst.img.wasmover-journal.granules");
    next_runs_send_kept_hashes(tmp.path(), (&src, &src), &dst, &kept);
}

/// Four runs from `src` (whose file `src_file` changes 4 KiB each time
/// after the first) to `dst`; a run sends kept granule hashes exactly when
/// `kept` existed before it.
fn next_runs_send_kept_hashes(
    tmp: &Path,
    (src, src_file): (&Path, &Path),
    dst: &Path,
    kept: &Path,
) {
    let key = key_file(tmp, "key", 7);
    let mut big = bytes(12 << 20, 8);
    let mut kept_used = Vec::new();
    for round in 0..4u64 {
        if round > 0 {
            let at = (round as usize) << 20;
            big[at..at + 4096].copy_from_slice(&bytes(4096, round));
        }
        std::fs::write(src_file, &big).unwrap();
        let kept_before = kept.exists();
        let receiver = Receiver::start_logging(dst, &key, &[], "wasmover=debug");
        let sent = send(src, &receiver.addr.to_string(), &key, &[]);
        assert!(sent.status.success(), "send: {}", text(&sent.stderr));
        let (ok, stdout, stderr) = receiver.wait(Duration::from_secs(20));
        assert!(ok, "receive: {stderr}");
        assert!(stdout.contains("; verified: tree digest"), "{stdout}");
        if src.is_dir() {
            assert_diff_clean(src, dst);
        } else {
            assert!(std::fs::read(dst).unwrap() == big);
        }
        let used = stderr.contains("sending the granule hashes kept by the run that wrote it");
        assert_eq!(used, kept_before, "round {round}: {stderr}");
        kept_used.push(used);
        if round > 0 {
            assert!(stdout.contains("4.10 kB sent as literals"), "{stdout}");
        }
    }
    // Kept from the second run on wherever a stamp can be trusted at once.
    eprintln!("kept granule hashes used by rounds: {kept_used:?}");
}

/// `name@digest` of the built-in blocksync, as an agent names the module
/// that ran (loaded as the agents load it, through their cache).
fn blocksync_id() -> String {
    let engine = wasmover_host::MoverEngine::new(wasmover_host::EngineConfig {
        cache_dir: Some(cache_dir()),
        ..wasmover_host::EngineConfig::default()
    })
    .unwrap();
    let module = wasmover_operator::builtin::resolve(&engine, "blocksync").unwrap();
    format!("{}@{}", module.name(), module.digest())
}

/// Agents pinned (`--module-digest`) to a digest other than their
/// module's refuse before they listen or connect, naming the module, both
/// digests and the pin; nothing is transferred.
#[test]
fn agents_pinned_to_another_modules_digest_refuse_to_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    make_tree(&src, 1 << 20);
    let key = key_file(tmp.path(), "key", 1);
    let blocksync = blocksync_id();
    let digest = blocksync.strip_prefix("blocksync@").unwrap();
    let pinned = format!("sha256:{}", "0".repeat(64));
    assert_ne!(digest, pinned);
    let refused = |said: &str| {
        assert_eq!(said.lines().count(), 1, "one line: {said}");
        assert!(
            said.contains(&format!(
                "module blocksync has digest {digest}, but the operator pinned {pinned}"
            )),
            "{said}"
        );
    };

    let received = wasmover()
        .args(["agent", "receive", "--listen", "127.0.0.1:0", "--volume"])
        .arg(&dst)
        .arg("--key-file")
        .arg(&key)
        .args(["--module-digest", &pinned])
        .output()
        .unwrap();
    assert!(!received.status.success());
    let said = text(&received.stderr);
    refused(&said);
    assert!(!dst.exists(), "the refusing receiver created its volume");

    // A receiver that would take the transfer: the pinned sender never
    // connects to it.
    let receiver = Receiver::start(&dst, &key, &[]);
    let sent = send(
        &src,
        &receiver.addr.to_string(),
        &key,
        &["--module-digest", &pinned],
    );
    assert!(!sent.status.success());
    refused(&text(&sent.stderr));
    thread::sleep(Duration::from_millis(200));
    assert_eq!(receiver.stderr(), "", "the receiver heard from the sender");
    assert_eq!(std::fs::read_dir(&dst).unwrap().count(), 0, "written");
}

/// Agents pinned to their module's digest run, and name the module that
/// ran, `blocksync@<digest>`, in their summaries and reports.
#[test]
fn pinned_agents_run_and_report_the_module_that_ran() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    make_tree(&src, 1 << 20);
    let key = key_file(tmp.path(), "key", 1);
    let blocksync = blocksync_id();
    let digest = blocksync.strip_prefix("blocksync@").unwrap();
    let reports = ["received.json", "sent.json"].map(|f| tmp.path().join(f));
    let [received, sent] = reports.each_ref().map(|p| p.to_str().unwrap());
    let receiver = Receiver::start(
        &dst,
        &key,
        &["--module-digest", digest, "--report-file", received],
    );
    let sent = send(
        &src,
        &receiver.addr.to_string(),
        &key,
        &["--module-digest", digest, "--report-file", sent],
    );
    assert!(sent.status.success(), "send: {}", text(&sent.stderr));
    let (ok, stdout, stderr) = receiver.wait(Duration::from_secs(20));
    assert!(ok, "receive: {stderr}");
    assert_same_tree(&src, &dst);
    for summary in [stdout, text(&sent.stdout)] {
        assert!(
            summary.contains(&format!(" with {blocksync} in ")),
            "{summary}"
        );
    }
    for report in &reports {
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
        assert_eq!(report["module"], blocksync.as_str(), "{report}");
        assert_eq!(report["treeDigest"], tree_digest(&src).as_str(), "{report}");
    }
}

#[test]
fn a_wrong_key_is_refused_by_both_ends_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    make_tree(&src, 1 << 20);
    let receiver = Receiver::start(
        &dst,
        &key_file(tmp.path(), "key", 1),
        &["--max-failures", "0"],
    );
    let sent = send(
        &src,
        &receiver.addr.to_string(),
        &key_file(tmp.path(), "other", 2),
        &[],
    );
    let (ok, _, stderr) = receiver.wait(Duration::from_secs(10));
    assert!(!ok && !sent.status.success());
    let sender_error = text(&sent.stderr);
    for said in [&sender_error, &stderr] {
        assert!(
            said.contains("peer failed pre-shared-key authentication"),
            "{said}"
        );
    }
    assert_eq!(sender_error.lines().count(), 1, "one line: {sender_error}");
    assert_eq!(std::fs::read_dir(&dst).unwrap().count(), 0);
}

#[test]
fn a_peer_that_never_answers_times_out() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 0);
    let key = key_file(tmp.path(), "key", 1);

    // A listener that accepts and says nothing.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    thread::spawn(move || {
        let held = silent.accept();
        thread::sleep(Duration::from_secs(10));
        drop(held);
    });
    let started = Instant::now();
    let sent = send(&src, &addr, &key, &["--handshake-timeout-secs", "1"]);
    let took = started.elapsed();
    assert!(!sent.status.success());
    let said = text(&sent.stderr);
    assert!(
        said.contains("did not complete the TLS handshake and greeting within 1 s"),
        "{said}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    // A client that connects and says nothing.
    let dst = tmp.path().join("dst");
    let receiver = Receiver::start(
        &dst,
        &key,
        &["--handshake-timeout-secs", "1", "--max-failures", "0"],
    );
    let _quiet = TcpStream::connect(receiver.addr).unwrap();
    let (ok, _, stderr) = receiver.wait(Duration::from_secs(5));
    assert!(!ok);
    assert!(
        stderr.contains("did not complete the TLS handshake"),
        "{stderr}"
    );
}

/// 16 files of 2 MiB, sent at 8 MB/s: about 4 s unless interrupted.
fn sixteen_files(src: &Path) -> Vec<String> {
    (0..16)
        .map(|i| {
            let name = format!("f{i:02}");
            write(src, &name, &bytes(2 << 20, i + 1));
            name
        })
        .collect()
}

/// Files of `src` present in `dst`, each checked to be complete.
fn complete_files(src: &Path, dst: &Path, names: &[String]) -> usize {
    names
        .iter()
        .filter(|name| {
            let Ok(got) = std::fs::read(dst.join(name)) else {
                return false;
            };
            assert!(
                got == std::fs::read(src.join(name)).unwrap(),
                "{name} is in the destination but not complete"
            );
            true
        })
        .count()
}

/// Runs a sender rate-limited to 8 MB/s to `receiver`, kills it once
/// `arrived` holds, and waits until the receiver is listening again.
fn kill_sender_once(src: &Path, key: &Path, receiver: &Receiver, arrived: impl Fn() -> bool) {
    let addr = receiver.addr.to_string();
    let mut slow = send_command(src, &addr, key, &["--rate-limit", "8000000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !arrived() {
        assert!(started.elapsed() < Duration::from_secs(10), "no progress");
        thread::sleep(Duration::from_millis(5));
    }
    slow.kill().unwrap();
    slow.wait().unwrap();
    let killed = Instant::now();
    while !receiver
        .stderr()
        .contains("waiting for the next connection")
    {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "{}",
            receiver.stderr()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_sender_killed_part_way_then_rerun_sends_only_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let names = sixteen_files(&src);
    let key = key_file(tmp.path(), "key", 1);
    let receiver = Receiver::start(&dst, &key, &[]);
    let addr = receiver.addr.to_string();

    kill_sender_once(&src, &key, &receiver, || {
        std::fs::read_dir(&dst).map_or(0, |d| d.count()) >= 4
    });
    let done = complete_files(&src, &dst, &names);
    assert!(
        (3..16).contains(&done),
        "{done} files arrived before the kill"
    );
    assert!(staging_files(&dst).is_empty(), "{:?}", staging_files(&dst));
    let said = receiver.stderr();
    assert!(said.contains("transfer from"), "{said}");

    let sent = send(&src, &addr, &key, &[]);
    assert!(sent.status.success(), "{}", text(&sent.stderr));
    let (ok, stdout, stderr) = receiver.wait(Duration::from_secs(20));
    assert!(ok, "{stderr}");
    assert_same_tree(&src, &dst);
    let rebuilt = files_rebuilt(&stdout);
    eprintln!("{done} of 16 files arrived before the kill; the re-run rebuilt {rebuilt}: {stdout}");
    assert!(
        rebuilt <= 16 - done as u64,
        "the re-run resent finished files: {stdout}"
    );
}

/// A destination file that changes after its signature left no longer
/// matches the delta's copies: its patch fails verification and leaves it
/// as it was, and the receiver asks for it once more (a fresh signature,
/// under fresh seeds, as after a chance collision of hashes), so the run
/// still ends verified.
#[test]
fn a_file_that_fails_its_verification_is_asked_for_again_in_the_same_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    // `a` arrives slowly (new, 4 MiB at 4 MB/s); `b` is patched after it.
    write(&src, "a", &bytes(4 << 20, 1));
    let old_b = bytes(256 << 10, 2);
    let mut new_b = old_b.clone();
    new_b[100_000..100_100].copy_from_slice(&bytes(100, 3));
    write(&src, "b", &new_b);
    write(&dst, "b", &old_b);
    let old_time = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let file = std::fs::File::options().write(true).open(dst.join("b"));
    file.unwrap().set_modified(old_time).unwrap();
    let key = key_file(tmp.path(), "key", 5);

    let receiver = Receiver::start(&dst, &key, &[]);
    let addr = receiver.addr.to_string();
    let sender = send_command(&src, &addr, &key, &["--rate-limit", "4000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The receiver sends every signature before its first patch; once
    // `a` is being written, `b`'s signature is on its way.
    let started = Instant::now();
    while staging_files(&dst).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "no progress");
        thread::sleep(Duration::from_millis(5));
    }
    let changed = bytes(256 << 10, 4);
    std::fs::write(dst.join("b"), &changed).unwrap();

    let sent = sender.wait_with_output().unwrap();
    let (ok, stdout, stderr) = receiver.wait(Duration::from_secs(20));
    assert!(sent.status.success(), "send: {}", text(&sent.stderr));
    assert!(ok, "receive: {stderr}");
    assert!(stderr.contains("b: "), "{stderr}");
    assert!(
        stderr.contains("asking the sender for it again"),
        "{stderr}"
    );
    assert!(
        text(&sent.stderr).contains("asks again for 1 files"),
        "{}",
        text(&sent.stderr)
    );
    assert!(stdout.contains("verified: tree digest"), "{stdout}");
    assert_diff_clean(&src, &dst);
}

#[test]
fn a_frozen_sender_is_detected_by_the_idle_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let names = sixteen_files(&src);
    let key = key_file(tmp.path(), "key", 1);
    let receiver = Receiver::start(
        &dst,
        &key,
        &["--idle-timeout-secs", "1", "--max-failures", "0"],
    );
    let mut slow = send_command(
        &src,
        &receiver.addr.to_string(),
        &key,
        &["--rate-limit", "8000000"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let started = Instant::now();
    while std::fs::read_dir(&dst).map_or(0, |d| d.count()) < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "no progress");
        thread::sleep(Duration::from_millis(10));
    }
    // Freeze it: the connection stays open but nothing comes.
    let stop = |signal: &str| {
        let status = Command::new("kill")
            .args([signal, &slow.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    stop("-STOP");
    let frozen = Instant::now();
    let (ok, _, stderr) = receiver.wait(Duration::from_secs(10));
    let took = frozen.elapsed();
    stop("-CONT");
    let _ = slow.kill();
    let _ = slow.wait();
    assert!(!ok);
    assert!(
        stderr.contains("nothing received from the peer for 1 s"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
    complete_files(&src, &dst, &names);
    assert!(staging_files(&dst).is_empty());
}

#[test]
fn a_cut_or_corrupted_stream_is_refused_and_the_old_file_kept() {
    // A cut shows as the stream ending early (where the block engine
    // reads it, as a truncated delta), a flipped bit as a TLS record that
    // fails authentication.
    for (cut_after, flip_at, expected) in [
        (3 << 20, None, ["cut off", "truncated"]),
        (usize::MAX, Some(3 << 20), ["TLS", "TLS"]),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        let (old, new) = (bytes(6 << 20, 1), bytes(6 << 20, 2));
        write(&src, "data", &new);
        write(&dst, "data", &old);
        let old_time = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        std::fs::File::options()
            .write(true)
            .open(dst.join("data"))
            .unwrap()
            .set_modified(old_time)
            .unwrap();
        let key = key_file(tmp.path(), "key", 1);
        let receiver = Receiver::start(&dst, &key, &["--max-failures", "0"]);
        let proxy = wasmover_tests::tamper::tcp(receiver.addr, cut_after, flip_at);
        let sent = send(&src, &proxy.to_string(), &key, &[]);
        let (ok, _, stderr) = receiver.wait(Duration::from_secs(10));
        assert!(!ok && !sent.status.success(), "{stderr}");
        assert!(expected.iter().any(|e| stderr.contains(e)), "{stderr}");
        assert!(
            std::fs::read(dst.join("data")).unwrap() == old,
            "the old file is kept"
        );
        assert!(staging_files(&dst).is_empty());
    }
}

/// A small filesystem mounted on a directory for one test; unmounted when
/// dropped, whatever the test did.
struct SmallFs {
    mountpoint: PathBuf,
}

impl SmallFs {
    /// Mounts a filesystem of `mib` MiB on `mountpoint`: tmpfs if this
    /// process may mount, else a loop-mounted ext4 image beside it; the
    /// reasons when neither works here.
    fn mount(mountpoint: &Path, mib: u32) -> Result<Self, String> {
        std::fs::create_dir_all(mountpoint).unwrap();
        let run = |cmd: &mut Command| match cmd.output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(text(&o.stderr).trim().to_owned()),
            Err(e) => Err(e.to_string()),
        };
        let tmpfs = run(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m"),
                "wasmover-test",
            ])
            .arg(mountpoint));
        let Err(tmpfs) = tmpfs else {
            return Ok(Self {
                mountpoint: mountpoint.to_owned(),
            });
        };
        let image = mountpoint.with_extension("ext4");
        let ext4 = std::fs::File::create(&image)
            .and_then(|f| f.set_len(u64::from(mib) << 20))
            .map_err(|e| e.to_string())
            .and_then(|()| run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image)))
            .and_then(|()| {
                run(Command::new("mount")
                    .args(["-o", "loop"])
                    .arg(&image)
                    .arg(mountpoint))
            });
        match ext4 {
            Ok(()) => Ok(Self {
                mountpoint: mountpoint.to_owned(),
            }),
            Err(ext4) => Err(format!("tmpfs: {tmpfs}; loop-mounted ext4: {ext4}")),
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mountpoint)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a receiver that outlived a failed assertion): detach it.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
        }
    }
}

/// The receiver's volume is an 8 MiB filesystem and the sender's tree is
/// 16 MiB: the receiver fails naming the lack of space, both agents exit
/// non-zero, and every destination file is its old or its new content,
/// with no staging file left behind.
#[test]
#[ignore = "needs root: mounts a small filesystem (scripts/test runs it as root)"]
fn a_full_destination_fails_both_ends_and_leaves_files_old_or_new() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let _fs = SmallFs::mount(&dst, 8)
        .unwrap_or_else(|why| panic!("cannot mount a small filesystem here (needs root): {why}"));
    let names: Vec<String> = (0..8).map(|i| format!("f{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        write(&src, name, &bytes(2 << 20, i as u64 + 1));
    }
    // Old versions (a quarter of the size, older in time) of the two files
    // rebuilt last, which the disk is full before.
    let old: Vec<Vec<u8>> = (0..2).map(|i| bytes(512 << 10, i + 50)).collect();
    let old_names = &names[6..];
    for (name, content) in old_names.iter().zip(&old) {
        write(&dst, name, content);
        std::fs::File::options()
            .write(true)
            .open(dst.join(name))
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
            .unwrap();
    }
    let key = key_file(tmp.path(), "key", 1);
    let receiver = Receiver::start(&dst, &key, &["--max-failures", "0"]);
    let sent = send(&src, &receiver.addr.to_string(), &key, &[]);
    let (ok, stdout, stderr) = receiver.wait(Duration::from_secs(20));
    let sender_error = text(&sent.stderr);
    eprintln!("receiver: {stderr}sender: {sender_error}");
    assert!(!ok, "the receiver succeeded: {stdout}");
    assert!(!sent.status.success(), "the sender succeeded");
    assert!(
        stderr.contains("No space left on device"),
        "the receiver does not say why: {stderr}"
    );
    // The sender learns why from the receiver.
    assert!(
        sender_error.contains("PeerFailed: the peer failed: VolumeError")
            && sender_error.contains("No space left on device"),
        "{sender_error}"
    );

    let (mut new_files, mut old_files) = (0, 0);
    for name in &names {
        let Ok(got) = std::fs::read(dst.join(name)) else {
            continue;
        };
        let old = old_names.iter().position(|n| n == name).map(|i| &old[i]);
        if got == std::fs::read(src.join(name)).unwrap() {
            new_files += 1;
        } else {
            assert!(
                old == Some(&got),
                "{name} is neither its old nor its new content ({} bytes)",
                got.len()
            );
            old_files += 1;
        }
    }
    assert!(
        new_files > 0 && new_files < names.len(),
        "{new_files} new files"
    );
    assert_eq!(old_files, 2, "the files not reached keep their old content");
    assert!(staging_files(&dst).is_empty(), "{:?}", staging_files(&dst));
    // Nor partial content kept for a resumption: the disk is full, not the
    // connection lost.
    assert!(
        !state_of(&dst).join("partial").exists(),
        "partial content kept"
    );
    eprintln!(
        "{new_files} of {} files arrived before the disk was full",
        names.len()
    );
}

/// Sends `src` to `receiver`, requires both to succeed, and returns the
/// sender's report (`--report-file`).
fn send_to_completion(
    src: &Path,
    receiver: Receiver,
    key: &Path,
    scratch: &Path,
) -> serde_json::Value {
    let report = scratch.join("report.json");
    let addr = receiver.addr.to_string();
    let sent = send(
        src,
        &addr,
        key,
        &["--report-file", report.to_str().unwrap()],
    );
    assert!(sent.status.success(), "{}", text(&sent.stderr));
    let (ok, _, stderr) = receiver.wait(Duration::from_secs(20));
    assert!(ok, "{stderr}");
    serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap()
}

#[test]
fn a_sender_killed_inside_a_large_file_resumes_from_what_arrived() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let big = bytes(24 << 20, 5);
    write(&src, "big.img", &big);
    let key = key_file(tmp.path(), "key", 1);
    let receiver = Receiver::start(&dst, &key, &[]);

    // At 8 MB/s the file takes three seconds: kill the sender once at
    // least 6 MiB of it are written on the receiving side.
    let staged = dst.join(".big.img.wasmover-tmp");
    kill_sender_once(&src, &key, &receiver, || {
        std::fs::metadata(&staged).map_or(0, |m| m.len()) >= 6 << 20
    });
    assert!(
        !dst.join("big.img").exists(),
        "no half-written file in place"
    );
    // What arrived moved to the state directory, outside the volume,
    // which holds nothing the source lacks.
    assert_eq!(names(&dst), Vec::<String>::new());
    let kept = std::fs::read(state_of(&dst).join("partial/big.img")).expect("kept");
    assert!(
        kept.len() >= 6 << 20 && big.starts_with(&kept),
        "{} bytes kept",
        kept.len()
    );

    let report = send_to_completion(&src, receiver, &key, tmp.path());
    assert_same_tree(&src, &dst);
    assert_diff_clean(&src, &dst);
    assert!(
        !state_of(&dst).join("partial").exists(),
        "partial content left behind"
    );
    let literal = report["bytesLiteral"].as_u64().unwrap();
    eprintln!(
        "{} bytes kept after the kill; the re-run sent {literal} as literals",
        kept.len()
    );
    assert!(
        literal <= (big.len() - kept.len()) as u64 + (256 << 10),
        "the re-run resent what had arrived: {report}"
    );
}

#[test]
fn a_receiver_killed_while_patching_an_image_is_rolled_back_then_completed() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src.img"), tmp.path().join("dst.img"));
    let journal = tmp.path().join(".dst.img.wasmover-journal");
    killed_while_patching_in_place(tmp.path(), (&src, &src), (&dst, &dst), &journal, 32 << 20);
}

/// A large file of a tree is patched in place too, under the tree's
/// journal in its state directory.
#[test]
fn a_receiver_killed_while_patching_a_large_file_in_place_is_rolled_back_then_completed() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    let journal = state_of(&dst).join("journal");
    let (src_file, dst_file) = (src.join("big"), dst.join("big"));
    // Files of 64 MiB and more are patched in place.
    killed_while_patching_in_place(
        tmp.path(),
        (&src, &src_file),
        (&dst, &dst_file),
        &journal,
        64 << 20,
    );
}

/// Kills the receiver twice while it patches `dst_file` in place (of the
/// volume `dst`, with its undo journal at `journal`), then checks the next
/// receiver rolls it back and completes the transfer.
fn killed_while_patching_in_place(
    tmp: &Path,
    (src, src_file): (&Path, &Path),
    (dst, dst_file): (&Path, &Path),
    journal: &Path,
    len: usize,
) {
    let old = bytes(len, 5);
    let mut new = old.clone();
    // A quarter rewritten in 64 KiB pieces: the patch has megabytes to
    // save and write.
    for at in (0..new.len()).step_by(256 << 10) {
        new[at..at + (64 << 10)].copy_from_slice(&bytes(64 << 10, at as u64));
    }
    std::fs::write(src_file, &new).unwrap();
    std::fs::write(dst_file, &old).unwrap();
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(dst_file).unwrap());
    let key = key_file(tmp, "key", 4);

    // SIGKILL the receiver once its journal exists (it is saving what
    // the patch overwrites), then once the image's first rewritten page
    // changed (the journal is complete and the patch is writing). Either
    // way the next receiver finds the old image. A patch that finishes
    // before the second kill lands leaves the image new: it is made old
    // again for another try.
    let first_page_changed = || {
        let mut page = [0u8; 4096];
        let image = std::fs::File::open(dst_file).unwrap();
        std::os::unix::fs::FileExt::read_exact_at(&image, &mut page, 0).unwrap();
        page[..] != old[..4096]
    };
    let mut outcomes = Vec::new();
    let mut caught = 0;
    for attempt in 0..8 {
        let writing = attempt > 0;
        let mut receiver = Receiver::start(dst, &key, &[]);
        outcomes.push(receiver.stderr());
        let mut sender = send_command(src, &receiver.addr.to_string(), &key, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !(if writing {
            first_page_changed()
        } else {
            journal.exists()
        }) {
            assert!(
                started.elapsed() < Duration::from_secs(20) && sender.try_wait().unwrap().is_none(),
                "the patch never started: {}",
                receiver.stderr()
            );
            if !writing {
                thread::sleep(Duration::from_millis(1));
            }
        }
        receiver.child.kill().unwrap();
        receiver.child.wait().unwrap();
        sender.wait().unwrap();
        // The journal is outside the volume, which holds nothing else.
        if dst.is_dir() {
            assert_eq!(names(dst), ["big"]);
        }
        if !journal.exists() {
            assert!(
                std::fs::read(dst_file).unwrap() == new,
                "neither journal nor new image"
            );
            std::fs::write(dst_file, &old).unwrap();
            continue;
        }
        caught += 1;
        if caught == 2 {
            break;
        }
    }
    assert_eq!(caught, 2, "the receiver was never caught patching");

    // The next receiver rolls the image back before it listens, then
    // completes the transfer.
    let receiver = Receiver::start(dst, &key, &[]);
    outcomes.push(receiver.stderr());
    assert!(
        std::fs::read(dst_file).unwrap() == old,
        "not rolled back to the old image"
    );
    assert!(!journal.exists());
    let rolled_back: Vec<&str> = outcomes
        .iter()
        .filter_map(|said| said.split("outcome").nth(1))
        .collect();
    assert_eq!(rolled_back.len(), 2, "{outcomes:?}");
    assert!(
        rolled_back[1].contains("Restored"),
        "a complete journal was rolled back: {outcomes:?}"
    );
    let sent = send(src, &receiver.addr.to_string(), &key, &[]);
    assert!(sent.status.success(), "{}", text(&sent.stderr));
    let (ok, stdout, stderr) = receiver.wait(Duration::from_secs(30));
    assert!(ok, "{stderr}");
    assert!(std::fs::read(dst_file).unwrap() == new, "{stdout}");
    assert!(!journal.exists());
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(dst_file).unwrap()),
        inode,
        "patched in place, not replaced"
    );
    eprintln!("rolled back after two crashes ({rolled_back:?}), then: {stdout}");
}

#[test]
fn a_block_volume_into_a_directory_is_refused_on_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src.img"), tmp.path().join("dst"));
    std::fs::write(&src, bytes(1 << 20, 6)).unwrap();
    make_tree(&dst, 4096);
    let before = tree_digest(&dst);
    let key = key_file(tmp.path(), "key", 5);
    let receiver = Receiver::start(&dst, &key, &["--max-failures", "0"]);
    let sent = send(&src, &receiver.addr.to_string(), &key, &[]);
    assert!(!sent.status.success());
    let (ok, _, stderr) = receiver.wait(Duration::from_secs(20));
    assert!(!ok);
    assert!(
        stderr.contains("VolumeModeMismatch") && stderr.contains("a block volume"),
        "{stderr}"
    );
    // The sender learns why: the receiver said so before it hung up.
    let said = text(&sent.stderr);
    assert!(
        said.contains("PeerFailed: the peer failed: VolumeModeMismatch: the source is a block"),
        "{said}"
    );
    assert_eq!(tree_digest(&dst), before, "nothing written");
}

#[test]
fn a_sender_killed_while_an_image_streams_resumes_and_the_image_stays_old_meanwhile() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src.img"), tmp.path().join("dst.img"));
    let old = bytes(24 << 20, 6);
    let new = bytes(24 << 20, 7);
    std::fs::write(&src, &new).unwrap();
    std::fs::write(&dst, &old).unwrap();
    let key = key_file(tmp.path(), "key", 6);
    let receiver = Receiver::start(&dst, &key, &[]);

    // At 8 MB/s the image takes three seconds: kill the sender once at
    // least 6 MiB of literals wait beside the journal.
    let partial = tmp.path().join(".dst.img.wasmover-journal.partial");
    kill_sender_once(&src, &key, &receiver, || {
        std::fs::metadata(&partial).map_or(0, |m| m.len()) >= 6 << 20
    });
    assert!(std::fs::read(&dst).unwrap() == old, "the image was touched");
    let kept = std::fs::metadata(&partial).expect("kept").len();

    let report = send_to_completion(&src, receiver, &key, tmp.path());
    assert!(std::fs::read(&dst).unwrap() == new);
    assert!(!partial.exists(), "state left behind");
    let literal = report["bytesLiteral"].as_u64().unwrap();
    eprintln!("{kept} bytes kept after the kill; the re-run sent {literal} as literals");
    assert!(
        literal <= new.len() as u64 - kept + (256 << 10),
        "the re-run resent what had arrived: {report}"
    );
}

/// With `WASMOVER_LOG_FORMAT=json` every log line is one JSON object (for
/// log collectors); a format it does not know is refused, naming it.
#[test]
fn logs_are_json_lines_when_asked_and_an_unknown_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    make_tree(&src, 1 << 16);
    let out = wasmover()
        .env("WASMOVER_LOG", "debug")
        .env("WASMOVER_LOG_FORMAT", "json")
        .arg("replicate")
        .args([&src, &dst])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<_> = stderr.lines().collect();
    assert!(!lines.is_empty(), "debug logging says something");
    for line in lines {
        let record: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            record["level"].is_string() && record["fields"].is_object(),
            "{line}"
        );
    }

    let out = wasmover()
        .env("WASMOVER_LOG_FORMAT", "xml")
        .arg("movers")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "wasmover: WASMOVER_LOG_FORMAT must be text or json, not \"xml\""
    );
}

/// The progress lines of an agent's stderr, parsed, in order.
fn progress_lines(stderr: &str) -> Vec<wasmover_host::Progress> {
    stderr
        .lines()
        .filter_map(wasmover_operator::agent_log::parse_progress)
        .collect()
}

/// The lines one agent wrote: at most one a second (with the first and
/// the last), moving forward, some part-way, the last complete.
fn assert_paced_progress(side: &str, lines: &[wasmover_host::Progress], took: Duration) {
    let most = took.as_secs() as usize + 2;
    assert!(
        (3..=most).contains(&lines.len()),
        "{side}: {} lines in {took:.1?}: {lines:?}",
        lines.len()
    );
    assert!(
        lines.windows(2).all(|w| w[0].bytes_done <= w[1].bytes_done),
        "{side}: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|p| 0 < p.entries_done && p.entries_done < p.entries_total),
        "{side}: some line is part-way: {lines:?}"
    );
    let last = lines.last().unwrap();
    assert_eq!(
        (
            last.bytes_done,
            last.bytes_total,
            last.entries_done,
            last.entries_total
        ),
        (32 << 20, 32 << 20, 16, 16),
        "{side}: the last line is complete"
    );
}

/// `--rate-limit` (blocksync's `bandwidth-limit`) paces what the sender
/// sends, and both agents, without a terminal, log their progress at most
/// once a second and the final one at the end, for the operator to read.
#[test]
fn a_rate_limited_transfer_is_paced_and_both_agents_log_their_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    sixteen_files(&src);
    let key = key_file(tmp.path(), "key", 7);
    let receiver = Receiver::start(&dst, &key, &[]);
    let rate = 8_000_000;
    let started = Instant::now();
    let sent = send(
        &src,
        &receiver.addr.to_string(),
        &key,
        &["--rate-limit", &rate.to_string()],
    );
    let took = started.elapsed();
    assert!(sent.status.success(), "{}", text(&sent.stderr));
    let (ok, _, received) = receiver.wait(Duration::from_secs(20));
    assert!(ok, "{received}");
    assert_same_tree(&src, &dst);
    // 32 MiB of literals and their framing at 8 MB/s: 4.2 s at least.
    let least = (32 << 20) as f64 / rate as f64;
    assert!(
        took.as_secs_f64() > least * 0.95 && took.as_secs_f64() < least * 3.0,
        "{took:.2?} for {least:.2}s"
    );
    assert_paced_progress("sender", &progress_lines(&text(&sent.stderr)), took);
    assert_paced_progress("receiver", &progress_lines(&received), took);
}
