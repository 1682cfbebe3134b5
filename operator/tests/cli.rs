//! The `wasmover` command as a user runs it: one clear line and a non-zero
//! exit on bad input, a summary on success.

use std::path::Path;
use std::process::{Command, Output};

fn wasmover(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmover"))
        .args(args)
        .env("WASMOVER_CACHE_DIR", cache)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn fails_with(out: &Output, needle: &str) {
    assert!(
        !out.status.success(),
        "expected failure, got {:?}",
        out.status
    );
    let err = stderr(out);
    assert!(err.contains(needle), "stderr {err:?} lacks {needle:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line, not {err:?}");
}

#[test]
fn replicate_reports_what_it_did_and_refuses_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), vec![7u8; 100_000]).unwrap();
    let (s, d) = (src.to_str().unwrap(), dst.to_str().unwrap());

    let out = wasmover(&["replicate", s, d], &cache);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("with blocksync"), "{summary}");
    assert!(
        summary.contains("2 entries (1 files rebuilt, 0 removed)"),
        "{summary}"
    );
    assert_eq!(std::fs::read(dst.join("d/f")).unwrap(), vec![7u8; 100_000]);
    // The module was compiled once and cached (beside it, the cache's key
    // and the source's file hashes in `hashes/`).
    let cached = std::fs::read_dir(&cache)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("cwasm".as_ref()))
        .count();
    assert_eq!(cached, 1);

    let missing = tmp.path().join("missing");
    fails_with(
        &wasmover(&["replicate", missing.to_str().unwrap(), d], &cache),
        "not a directory",
    );
    let inside = src.join("inside");
    fails_with(
        &wasmover(&["replicate", s, inside.to_str().unwrap()], &cache),
        "source and destination must not overlap",
    );
    assert!(!inside.exists());
    fails_with(
        &wasmover(&["replicate", s, d, "--mover", "rclone"], &cache),
        "no built-in mover named \"rclone\"",
    );
    fails_with(
        &wasmover(
            &["replicate", s, d, "--mover", "/nonexistent/m.wasm"],
            &cache,
        ),
        "/nonexistent/m.wasm",
    );
    fails_with(
        &wasmover(&["replicate", s, d, "--param", "block-size=seven"], &cache),
        "block-size",
    );
}

#[test]
fn a_module_that_fails_is_named_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let hostile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/guests/wasm/hostile.wasm");
    let out = wasmover(
        &[
            "replicate",
            src.to_str().unwrap(),
            tmp.path().join("dst").to_str().unwrap(),
            "--mover",
            hostile.to_str().unwrap(),
        ],
        &tmp.path().join("cache"),
    );
    fails_with(&out, "module hostile failed in transfer.");
}

/// The command calls itself `wasmover`, whatever its package is named.
#[test]
fn the_command_is_named_wasmover() {
    let tmp = tempfile::tempdir().unwrap();
    let out = wasmover(&["--version"], tmp.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("wasmover {}", env!("CARGO_PKG_VERSION"))
    );
    let help = wasmover(&["--help"], tmp.path());
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage: wasmover "));
}

/// A policy file that is not one stops the operator before it serves.
#[test]
fn the_operator_refuses_a_policy_it_cannot_read() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy.yaml");
    std::fs::write(&policy, "allowedModules: [docker://x]\n").unwrap();
    let out = wasmover(
        &["operator", "--policy", policy.to_str().unwrap()],
        tmp.path(),
    );
    fails_with(&out, "is not a module source");
    let missing = tmp.path().join("missing.yaml");
    let out = wasmover(
        &["operator", "--policy", missing.to_str().unwrap()],
        tmp.path(),
    );
    fails_with(&out, "cannot read the policy");
}
