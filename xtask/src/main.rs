//! Project automation: build guest components and run their wasm unit tests.
//!
//! ```text
//! cargo xtask build-guests     movers and test guests → target/guests/wasm/*.wasm
//!                              (and builtin.txt, the movers the operator embeds)
//! cargo xtask guest-tests      every guest crate's #[test]s, run inside the runtime
//! cargo xtask image            the container image → target/image (OCI layout) and target/image.tar
//! ```
//!
//! Guests build for wasm32 with whichever toolchain the machine has:
//! rustup's `wasm32-wasip2` target when installed (its output is already a
//! component), otherwise Debian's `rustc-web` with `-Zbuild-std` for
//! `wasm32-wasip1`, made a component here with the WASI preview1 adapter
//! (`scripts/setup` installs it; see README "Toolchain").

mod guests;
mod image;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::guests::{BUILTIN_LIST, Guests, WORKSPACE as GUEST_WORKSPACE, cargo};

/// The package whose binary runs guest test harnesses (`wasmover test`).
const HOST_PACKAGE: &str = "wasmover-operator";
/// The guest test that fails on purpose.
const DELIBERATE_FAILURE: &str = "tests::deliberately_failing";

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the repository")?
        .to_path_buf();
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "build-guests" => build_guests(&root, &Toolchain::detect()?, &Guests::load(&root)?),
        "guest-tests" => guest_tests(&root, &Toolchain::detect()?, &Guests::load(&root)?),
        "image" => build_image(&root),
        _ => bail!("usage: cargo xtask <build-guests|guest-tests|image>"),
    }
}

/// The image's name; its tag is the version, and Pods name it by digest.
const IMAGE_NAME: &str = "ghcr.io/wasmover/wasmover";

/// Builds the release binary and writes the container image of it.
fn build_image(root: &Path) -> Result<()> {
    let binary = build_host(root)?;
    let git = |args: &[&str]| -> Result<String> {
        let out = Command::new("git").args(args).current_dir(root).output()?;
        ensure!(out.status.success(), "git {args:?} failed");
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    };
    let mut revision = git(&["rev-parse", "HEAD"])?;
    if !git(&["status", "--porcelain"])?.is_empty() {
        revision.push_str("-dirty");
    }
    // Every timestamp in the image: the commit's, so a rebuild of one
    // commit is byte for byte the same (SOURCE_DATE_EPOCH overrides it).
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(epoch) => epoch.parse().context("SOURCE_DATE_EPOCH is not a number")?,
        Err(_) => git(&["log", "-1", "--format=%ct"])?.parse()?,
    };
    let spec = image::ImageSpec {
        binary,
        name: IMAGE_NAME.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        revision,
        epoch,
        source: env!("CARGO_PKG_REPOSITORY").into(),
    };
    let image = image::write(&spec, &root.join("target/image"))?;
    eprintln!(
        "xtask: image {}:{} written to {} and {}",
        spec.name,
        spec.version,
        image.layout.display(),
        image.archive.display()
    );
    println!("{}@{}", spec.name, image.digest);
    Ok(())
}

/// How guests are compiled on this machine.
enum Toolchain {
    /// rustup with the `wasm32-wasip2` target.
    Wasip2,
    /// Debian's rustc-web with the std source, for `wasm32-wasip1`.
    DebianWasip1 { rust_lld: PathBuf },
}

const WASI_LIBC: &str = "/usr/lib/wasm32-wasi";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";

impl Toolchain {
    fn detect() -> Result<Self> {
        let installed = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-wasip2"))
            .unwrap_or(false);
        if installed {
            return Ok(Toolchain::Wasip2);
        }
        ensure!(
            Path::new(DEBIAN_CARGO).exists()
                && Path::new("/usr/lib/rustlib/src/rust/library").exists()
                && Path::new(WASI_LIBC).join("libc.a").exists(),
            "no wasm toolchain: neither rustup's wasm32-wasip2 target nor Debian's \
             rustc-web + rust-web-src + wasi-libc is installed; run scripts/setup"
        );
        let sysroot = Command::new("rustc")
            .args(["--print", "sysroot"])
            .output()?;
        let sysroot = String::from_utf8(sysroot.stdout)?.trim().to_owned();
        let rust_lld =
            Path::new(&sysroot).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld");
        ensure!(
            rust_lld.exists(),
            "rust-lld not found at {}",
            rust_lld.display()
        );
        Ok(Toolchain::DebianWasip1 { rust_lld })
    }

    fn target(&self) -> &'static str {
        match self {
            Toolchain::Wasip2 => "wasm32-wasip2",
            Toolchain::DebianWasip1 { .. } => "wasm32-wasip1",
        }
    }

    /// A cargo command for guests; `tests` adds what test harnesses need.
    fn cargo(&self, root: &Path, subcommand: &str, tests: bool) -> Command {
        let flavour = if tests { "test" } else { "build" };
        let mut cmd = match self {
            Toolchain::Wasip2 => Command::new("cargo"),
            Toolchain::DebianWasip1 { rust_lld } => {
                let mut cmd = Command::new(DEBIAN_CARGO);
                // Debian's cargo must use Debian's rustc, whose std source
                // -Zbuild-std compiles; nothing of the outer rustup cargo.
                for var in [
                    "RUSTC",
                    "RUSTDOC",
                    "RUSTC_WRAPPER",
                    "RUSTUP_TOOLCHAIN",
                    "RUSTFLAGS",
                    "CARGO_ENCODED_RUSTFLAGS",
                ] {
                    cmd.env_remove(var);
                }
                cmd.env("RUSTC", "/usr/bin/rustc")
                    .env("RUSTDOC", "/usr/bin/rustdoc")
                    .env("RUSTC_BOOTSTRAP", "1");
                let mut flags = vec![
                    "-Clink-self-contained=no".to_owned(),
                    format!("-L{WASI_LIBC}"),
                ];
                if tests {
                    flags.push(format!("-Clink-arg={WASI_LIBC}/crt1-command.o"));
                    flags.extend(["--cfg".to_owned(), "wasmover_pthread_stubs".to_owned()]);
                }
                let flags = flags
                    .iter()
                    .map(|f| format!("{f:?}"))
                    .collect::<Vec<_>>()
                    .join(",");
                let std = if tests {
                    "std,panic_abort,test"
                } else {
                    "std,panic_abort"
                };
                cmd.arg(subcommand)
                    .arg(format!("-Zbuild-std={std}"))
                    .args([
                        "--config",
                        &format!(
                            "target.wasm32-wasip1.linker={:?}",
                            rust_lld.display().to_string()
                        ),
                    ])
                    .args([
                        "--config",
                        &format!("target.wasm32-wasip1.rustflags=[{flags}]"),
                    ]);
                cmd.env("CARGO_TARGET_DIR", root.join("target/guests").join(flavour));
                cmd.current_dir(root.join(GUEST_WORKSPACE))
                    .args(["--target", self.target()]);
                return cmd;
            }
        };
        cmd.arg(subcommand)
            .env("CARGO_TARGET_DIR", root.join("target/guests").join(flavour))
            .current_dir(root.join(GUEST_WORKSPACE))
            .args(["--target", self.target()]);
        cmd
    }

    /// The bytes of a component from what cargo produced.
    fn componentize(&self, wasm: &Path, command: bool) -> Result<Vec<u8>> {
        let bytes = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
        if matches!(self, Toolchain::Wasip2) {
            return Ok(bytes);
        }
        let adapter = if command {
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER
        } else {
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER
        };
        wit_component::ComponentEncoder::default()
            .module(&bytes)?
            .validate(true)
            .adapter("wasi_snapshot_preview1", adapter)?
            .encode()
            .with_context(|| format!("making a component of {}", wasm.display()))
    }
}

/// Runs cargo, returning the artifacts it reported (JSON messages).
fn run_cargo(mut cmd: Command) -> Result<Vec<Value>> {
    cmd.arg("--message-format=json-render-diagnostics");
    eprintln!("xtask: {cmd:?}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo")?;
    ensure!(out.status.success(), "cargo failed: {}", out.status);
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .collect())
}

fn build_guests(root: &Path, toolchain: &Toolchain, guests: &Guests) -> Result<()> {
    let out_dir = root.join("target/guests/wasm");
    std::fs::create_dir_all(&out_dir)?;
    // One package at a time: their features differ (only some export
    // `validate`), and a joint build would unify them.
    for name in &guests.components {
        let mut cmd = toolchain.cargo(root, "build", false);
        cmd.args(["--release", "--package", name.as_str()]);
        let artifacts = run_cargo(cmd)?;
        let wasm = artifacts
            .iter()
            // Cargo names a package's lib target with `_` for `-`.
            .filter(|a| a["target"]["name"] == name.replace('-', "_"))
            .flat_map(|a| a["filenames"].as_array().cloned().unwrap_or_default())
            .filter_map(|f| f.as_str().map(PathBuf::from))
            .find(|f| f.extension().is_some_and(|e| e == "wasm"))
            .with_context(|| format!("cargo built no .wasm for {name}"))?;
        let component = toolchain.componentize(&wasm, false)?;
        let dest = out_dir.join(format!("{name}.wasm"));
        std::fs::write(&dest, &component)?;
        eprintln!("xtask: {} ({} bytes)", dest.display(), component.len());
    }
    // Rewritten only on a change: operator/build.rs reruns when it is touched.
    let list = out_dir.join(BUILTIN_LIST);
    let builtin = guests.builtin_list();
    if std::fs::read_to_string(&list).ok().as_deref() != Some(builtin.as_str()) {
        std::fs::write(&list, builtin)?;
    }
    Ok(())
}

/// Builds the operator's binary, which runs guest test harnesses, and
/// returns its path.
fn build_host(root: &Path) -> Result<PathBuf> {
    let mut cmd = Command::new(cargo());
    cmd.args(["build", "--release", "--package", HOST_PACKAGE, "--bins"])
        .current_dir(root);
    // `cargo run` gave this process the variables it sets for xtask
    // itself. Build scripts that name them in `rerun-if-env-changed`
    // (ring's: CARGO_PKG_NAME, CARGO_MANIFEST_DIR, …) would see other
    // values than a plain `cargo build` or `cargo test` does, so cargo
    // would rebuild them and everything above them, here and again in the
    // next plain build.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let from_cargo_run = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_BIN_",
            "CARGO_CRATE_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || matches!(name, "CARGO_PRIMARY_PACKAGE" | "OUT_DIR");
        if from_cargo_run {
            cmd.env_remove(name);
        }
    }
    // The package's main binary, whatever its name; not `src/bin/*`.
    run_cargo(cmd)?
        .iter()
        .filter(|a| {
            a["target"]["src_path"]
                .as_str()
                .is_some_and(|p| p.ends_with("src/main.rs"))
        })
        .find_map(|a| a["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo built no binary of {HOST_PACKAGE}"))
}

fn guest_tests(root: &Path, toolchain: &Toolchain, guests: &Guests) -> Result<()> {
    let wasmover = build_host(root)?;

    let out_dir = root.join("target/guests/tests");
    std::fs::create_dir_all(&out_dir)?;
    let mut harnesses = Vec::new();
    for name in &guests.crates {
        let mut cmd = toolchain.cargo(root, "test", true);
        cmd.args(["--no-run", "--lib", "--package", name.as_str()]);
        for artifact in run_cargo(cmd)? {
            if artifact["profile"]["test"] != true {
                continue;
            }
            let Some(exe) = artifact["executable"].as_str() else {
                continue;
            };
            let component = toolchain.componentize(Path::new(exe), true)?;
            let dest = out_dir.join(format!(
                "{}.wasm",
                artifact["target"]["name"].as_str().unwrap_or(name.as_str())
            ));
            std::fs::write(&dest, component)?;
            harnesses.push(dest);
        }
    }
    ensure!(!harnesses.is_empty(), "no guest test harness was built");

    let mut failed = Vec::new();
    for harness in &harnesses {
        let mut cmd = Command::new(&wasmover);
        // --nocapture: with panic=abort a failing test ends the process,
        // and only uncaptured output shows its panic message.
        cmd.arg("test")
            .arg(harness)
            .args(["--", "--nocapture", "--skip", DELIBERATE_FAILURE]);
        eprintln!("xtask: {cmd:?}");
        if !cmd.status()?.success() {
            failed.push(harness.display().to_string());
        }
    }

    // The suite must be able to fail: run the test that fails on purpose
    // and require that `wasmover test` reports it.
    let hostile = out_dir.join("hostile.wasm");
    let status = Command::new(&wasmover)
        .arg("test")
        .arg(&hostile)
        .args(["--", "--exact", DELIBERATE_FAILURE])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    if status.success() {
        failed.push(format!(
            "{} (the deliberately failing test passed)",
            hostile.display()
        ));
    } else {
        eprintln!("xtask: the deliberately failing guest test failed the run, as it must");
    }

    ensure!(
        failed.is_empty(),
        "guest tests failed: {}",
        failed.join(", ")
    );
    eprintln!("xtask: guest tests passed in {} harnesses", harnesses.len());
    Ok(())
}
