//! `wasmover test`: runs a guest's wasm unit-test harness inside the
//! runtime, with the contract's imports provided for real: a scratch volume
//! on a temporary directory, a loopback channel, and an in-memory cluster.

use std::path::Path;
use std::sync::Arc;

use wasmover_host::kube::{InMemoryCluster, Owner, Scope, ScopedCluster};
use wasmover_host::{Access, Capability, Channel, Grants, MoverEngine, MoverLimits, Volume};

/// The namespace the test cluster scopes a guest to.
pub const TEST_NAMESPACE: &str = "wasm-unit-tests";
/// The agent image of the Jobs guests create under test.
pub const TEST_AGENT_IMAGE: &str = "wasmover-agent-under-test";

/// Runs the command component at `harness` with libtest `args`, its output
/// on this process's stdout and stderr. Returns whether it passed.
pub fn run(engine: &MoverEngine, harness: &Path, args: &[String]) -> anyhow::Result<bool> {
    let module = engine.load_file(harness)?;
    module.require(Capability::Command)?;
    let scratch = tempfile::tempdir()?;
    let cluster = ScopedCluster::new(
        Arc::new(InMemoryCluster::new()),
        Scope {
            agents: Ok(crate::workload::template(TEST_AGENT_IMAGE)),
            ..Scope::new(
                TEST_NAMESPACE,
                Owner {
                    api_version: "wasmover.dev/v1alpha1".into(),
                    kind: "ReplicationDestination".into(),
                    name: "wasm-unit-test".into(),
                    uid: None,
                },
            )
        },
    );
    let grants = Grants::new()
        .with_volume(Volume::open(scratch.path(), Access::ReadWrite)?)
        .with_channel(Channel::loopback())
        .with_cluster(cluster)
        .with_args(std::iter::once(module.name().to_owned()).chain(args.iter().cloned()))
        .with_inherited_stdio();
    // Test harnesses run many tests in one call: give them room.
    let limits = MoverLimits {
        cpu_time_ms: 600_000,
        memory_bytes: 1 << 30,
        kube_calls: 1 << 20,
        ..MoverLimits::default()
    };
    match module.instantiate(limits, grants)?.run_command() {
        Ok(()) => Ok(true),
        Err(e) => {
            eprintln!("wasmover test: {e}");
            Ok(false)
        }
    }
}
