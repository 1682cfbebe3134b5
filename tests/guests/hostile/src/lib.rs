//! A mover that misbehaves on request, to prove that the host stops it with
//! a clear error and keeps serving other modules.
//!
//! It claims a spec whose parameters contain `hostile=<mode>`; `synchronize`
//! then does what the mode says. It has no `validate` capability, so the
//! host must cope with its absence. The modes:
//!
//! - `loop`: spins forever (the CPU-time limit).
//! - `alloc`: allocates without bound (the memory limit).
//! - `recurse`: recurses without bound (the wasm stack).
//! - `trap`: panics.
//! - `host-calls`: calls the host forever (the host-call budget).
//! - `calls-1000`: a thousand host calls, then completes (benchmarks).
//! - `log-flood`: logs 10 MB (the log budget), then completes.
//! - `error`: fails with a clean mover error.
//! - `progress`: reports progress, then completes with a transfer report.
//! - `huge-error`: fails with a 16 MiB message.
//! - `other-namespace`: creates a ConfigMap in `kube-system`.
//! - `privileged-pod`: creates a Job whose container is privileged.
//! - `host-path`: creates a Job that mounts the node's `/`.
//! - `host-network`: creates a Job on the node's network.
//! - `foreign-image`: creates a Job running `busybox` with a command.
//! - `read-secret`: reads Secret `user-credentials`, which the CR does not name.
//! - `list-secrets`: lists Secrets.
//! - `delete-pvc`: deletes the PVC named by parameter `victim`.
//! - `api-flood`: reads a ConfigMap forever (the Kubernetes-call budget).
//! - any other: completes at once (a trivial mover for the operator).
//!
//! The escapes (`other-namespace` to `delete-pvc`) fail with
//! `Escape<kube-error>` and the host's message when refused, and with
//! `EscapeSucceeded` when they got through (see [`escape`]).

use std::hint::black_box;

use wasmover_sdk::control::{GuestMover, ModuleInfo, Mover};
use wasmover_sdk::types::{
    Completion, DestinationSpec, Error, Outcome, Parameter, SourceSpec, TransferReport,
};
use wasmover_sdk::{Params, blocks, clock, error, log, progress, volume};

mod escape;

struct Hostile;

/// The tree digest the `progress` mode reports.
const REPORTED_DIGEST: &str = "5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e";

/// Completed, with nothing to show.
fn done() -> Outcome {
    Outcome::Completed(Completion {
        image: None,
        transfer: None,
    })
}

/// The size of the message `huge-error` returns.
const HUGE: usize = 16 << 20;

/// The mover resource: the mode it was built with.
struct HostileMover {
    mode: String,
    /// The PVC `delete-pvc` deletes: parameter `victim`.
    victim: Option<String>,
}

/// The mover for `parameters`, or `None` without a `hostile` mode.
fn mover(parameters: Vec<Parameter>) -> Option<Mover> {
    let params = Params::from(parameters);
    let mode = params.get("hostile")?.to_owned();
    let victim = params.get("victim").map(str::to_owned);
    Some(Mover::new(HostileMover { mode, victim }))
}

/// Recurses without bound. Nothing is kept in linear memory, so the frames
/// land on wasm's own call stack, which the host bounds.
#[allow(unconditional_recursion, reason = "overflowing the stack is the point")]
fn recurse(depth: u64) -> u64 {
    recurse(black_box(depth + 1)).wrapping_add(black_box(depth))
}

impl GuestMover for HostileMover {
    fn name(&self) -> String {
        format!("hostile-{}", self.mode)
    }

    fn synchronize(&self) -> Result<Outcome, Error> {
        if let Some(escape) = escape::attempt(&self.mode, self.victim.as_deref()) {
            return escape;
        }
        match self.mode.as_str() {
            "loop" => loop {
                black_box(());
            },
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "recurse" => Ok(Outcome::InProgress(Some(recurse(0)))),
            "trap" => panic!("deliberate panic in synchronize"),
            "host-calls" => loop {
                black_box(clock::now_ms());
            },
            // For benchmarks: a thousand host-call round trips.
            "calls-1000" => {
                for _ in 0..1000 {
                    black_box(clock::now_ms());
                }
                Ok(done())
            }
            "log-flood" => {
                let line = "x".repeat(1024);
                for _ in 0..10_000 {
                    log::info(&line);
                }
                Ok(done())
            }
            "error" => Err(error("Deliberate", "this mover always fails")),
            "huge-error" => Err(error("Huge", "e".repeat(HUGE))),
            // Well behaved: reports what it moved, then completes with the
            // report of a verified transfer.
            "progress" => {
                progress::report(1000, 4096, 1, 2);
                progress::report(4096, 4096, 2, 2);
                Ok(Outcome::Completed(Completion {
                    image: None,
                    transfer: Some(TransferReport {
                        entries_total: 2,
                        files_transferred: 2,
                        entries_deleted: 0,
                        bytes_total: 4096,
                        bytes_matched: 0,
                        bytes_literal: 4096,
                        bytes_literal_wire: 4096,
                        entries_skipped: 0,
                        bytes_on_wire: 4096,
                        tree_digest: REPORTED_DIGEST.into(),
                        verified: true,
                    }),
                }))
            }
            _ => Ok(done()),
        }
    }

    fn cleanup(&self) -> Result<Outcome, Error> {
        Ok(done())
    }
}

impl wasmover_sdk::control::Guest for Hostile {
    type Mover = HostileMover;

    fn from_source(spec: SourceSpec) -> Result<Option<Mover>, Error> {
        Ok(mover(spec.parameters))
    }

    fn from_destination(spec: DestinationSpec) -> Result<Option<Mover>, Error> {
        Ok(mover(spec.parameters))
    }

    fn version_info() -> ModuleInfo {
        ModuleInfo {
            name: "hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            contract: wasmover_sdk::CONTRACT_VERSION.into(),
        }
    }
}

/// The preopened volume, through WASI preview 2 directly (as std::fs
/// would, minus Debian's 2022 wasi-libc, which does not resolve preopens).
fn volume_dir() -> Option<wasi::filesystem::types::Descriptor> {
    wasi::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, path)| path == "/volume")
        .map(|(dir, _)| dir)
}

fn wasi_create(path: &str) -> bool {
    use wasi::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
    volume_dir().is_some_and(|dir| {
        dir.open_at(
            PathFlags::empty(),
            path,
            OpenFlags::CREATE,
            DescriptorFlags::WRITE,
        )
        .and_then(|file| file.write(b"x", 0))
        .is_ok()
    })
}

fn wasi_mkdir(path: &str) -> bool {
    volume_dir().is_some_and(|dir| dir.create_directory_at(path).is_ok())
}

impl wasmover_sdk::transfer::Guest for Hostile {
    /// Tries to write to the sending side's volume, which the host grants
    /// read-only, through WASI and through the host's functions.
    fn send(_: Vec<Parameter>) -> Result<TransferReport, Error> {
        let attempts = [
            ("WASI open for writing", wasi_create("intruder")),
            ("WASI mkdir", wasi_mkdir("intruder-dir")),
            (
                "volume.create-dir",
                volume::create_dir(b"intruder-dir").is_ok(),
            ),
            ("volume.remove", volume::remove(b"big.bin").is_ok()),
            (
                "volume.set-metadata",
                volume::set_metadata(b"big.bin", 0o777, 0).is_ok(),
            ),
            (
                "blocks.receive-patch",
                blocks::receive_patch(b"big.bin", 0o644, 0).is_ok(),
            ),
        ];
        let wrote: Vec<&str> = attempts
            .iter()
            .filter(|(_, ok)| *ok)
            .map(|(what, _)| *what)
            .collect();
        if wrote.is_empty() {
            Err(error(
                "Refused",
                "every write to the read-only volume was refused",
            ))
        } else {
            Err(error(
                "Wrote",
                format!("writes got through: {}", wrote.join(", ")),
            ))
        }
    }

    fn receive(_: Vec<Parameter>) -> Result<TransferReport, Error> {
        Err(error("Unsupported", "hostile moves no data"))
    }
}

wasmover_sdk::export_mover!(Hostile);

#[cfg(test)]
mod tests {
    #[test]
    fn passes() {
        assert!(super::mover(vec![]).is_none());
    }

    /// Always fails: the test suite runs it on purpose to prove that a
    /// failing guest test fails the run (`cargo xtask guest-tests`).
    #[test]
    fn deliberately_failing() {
        assert_eq!(1 + 1, 3, "this guest test fails on purpose");
    }
}
