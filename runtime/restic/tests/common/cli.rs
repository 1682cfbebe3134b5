//! The real `restic` (Debian's 0.14, installed by `scripts/setup`) on a
//! local repository.

use std::path::Path;
use std::process::{Command, Output};

use super::PASSWORD;

/// Runs restic on `repo`; fails (does not skip) when restic is missing.
pub fn restic_output(repo: &Path, cwd: &Path, args: &[&str]) -> Output {
    Command::new("restic")
        .arg("--repo")
        .arg(repo)
        .args(["--no-cache", "--quiet"])
        .args(args)
        .env("RESTIC_PASSWORD", PASSWORD)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("cannot run restic ({e}): install it with scripts/setup"))
}

/// Runs restic on `repo` and asserts that it succeeds; returns its output.
pub fn restic(repo: &Path, cwd: &Path, args: &[&str]) -> String {
    let out = restic_output(repo, cwd, args);
    assert!(
        out.status.success(),
        "restic {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
