//! A mover that misbehaves on request, to prove that the host stops it with
//! a clear error and keeps serving other modules.
//!
//! It claims a spec whose parameters contain `hostile=<mode>`; `synchronize`
//! then does what the mode says. It has no `validate` capability, so the
//! host must cope with its absence.

use std::hint::black_box;

use wasmover_sdk::control::{GuestMover, ModuleInfo, Mover};
use wasmover_sdk::types::{DestinationSpec, Error, Outcome, Parameter, SourceSpec, TransferReport};
use wasmover_sdk::{Params, clock, error, log};

struct Hostile;

/// The mover resource: the mode it was built with.
struct HostileMover {
    mode: String,
}

fn mode(parameters: Vec<Parameter>) -> Option<String> {
    Params::from(parameters).get("hostile").map(str::to_owned)
}

/// Recurses without bound; the array keeps frames large and the call real.
#[allow(unconditional_recursion, reason = "overflowing the stack is the point")]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 64]);
    recurse(depth + 1) + frame[0]
}

impl GuestMover for HostileMover {
    fn name(&self) -> String {
        format!("hostile-{}", self.mode)
    }

    fn synchronize(&self) -> Result<Outcome, Error> {
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
            "log-flood" => {
                let line = "x".repeat(1024);
                for _ in 0..10_000 {
                    log::info(&line);
                }
                Ok(Outcome::Completed(None))
            }
            "error" => Err(error("Deliberate", "this mover always fails")),
            _ => Ok(Outcome::Completed(None)),
        }
    }

    fn cleanup(&self) -> Result<Outcome, Error> {
        Ok(Outcome::Completed(None))
    }
}

impl wasmover_sdk::control::Guest for Hostile {
    type Mover = HostileMover;

    fn from_source(spec: SourceSpec) -> Result<Option<Mover>, Error> {
        Ok(mode(spec.parameters).map(|mode| Mover::new(HostileMover { mode })))
    }

    fn from_destination(spec: DestinationSpec) -> Result<Option<Mover>, Error> {
        Ok(mode(spec.parameters).map(|mode| Mover::new(HostileMover { mode })))
    }

    fn version_info() -> ModuleInfo {
        ModuleInfo {
            name: "hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            contract: "0.1.0".into(),
        }
    }
}

impl wasmover_sdk::transfer::Guest for Hostile {
    fn send(_: Vec<Parameter>) -> Result<TransferReport, Error> {
        Err(error("Unsupported", "hostile moves no data"))
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
        assert_eq!(super::mode(vec![]), None);
    }

    /// Always fails: the test suite runs it on purpose to prove that a
    /// failing guest test fails the run (`cargo xtask guest-tests`).
    #[test]
    fn deliberately_failing() {
        assert_eq!(1 + 1, 3, "this guest test fails on purpose");
    }
}
