//! Hostile and broken modules are stopped with an error naming the module
//! and the limit or missing export, and the host keeps serving others.

use std::sync::Arc;

use wasmover_host::bindings::types::{Completion, CopyMethod, Outcome, Parameter, SourceSpec};
use wasmover_host::state::Quiet;
use wasmover_host::{
    Capability, Catalog, CatalogError, Grants, LimitExceeded, MoverEngine, MoverLimits,
    MoverModule, RunError,
};
use wasmover_tests::{engine, load, make_tree};

fn spec(parameters: &[(&str, &str)]) -> SourceSpec {
    SourceSpec {
        namespace: "team-a".into(),
        name: "app".into(),
        source_pvc: "data".into(),
        copy_method: CopyMethod::Direct,
        storage_class_name: None,
        volume_snapshot_class_name: None,
        access_modes: vec![],
        parameters: parameters
            .iter()
            .map(|(k, v)| Parameter {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
    }
}

/// Builds the hostile mover in `mode` and calls `synchronize` once.
fn synchronize(module: &MoverModule, mode: &str, limits: MoverLimits) -> Result<Outcome, RunError> {
    let mut instance = module.instantiate(limits, Grants::new())?;
    let mover = instance
        .from_source(&spec(&[("hostile", mode)]))?
        .expect("hostile claims a spec with its parameter");
    instance.synchronize(mover)
}

fn limits() -> MoverLimits {
    MoverLimits {
        cpu_time_ms: 300,
        memory_bytes: 64 << 20,
        host_calls: 10_000,
        ..MoverLimits::default()
    }
}

/// After a hostile module was stopped, the same engine still replicates.
fn still_serves(engine: &MoverEngine) {
    let blocksync = load(engine, "blocksync");
    let tmp = tempfile::tempdir().unwrap();
    make_tree(&tmp.path().join("src"), 64 << 10);
    wasmover_operator::replicate::replicate(
        &blocksync,
        &tmp.path().join("src"),
        &tmp.path().join("dst"),
        &wasmover_operator::replicate::ReplicateOptions::default(),
        MoverLimits::default(),
        &[],
        Arc::new(Quiet),
    )
    .expect("the host keeps serving other modules");
}

#[test]
fn an_endless_loop_is_stopped_at_its_cpu_time() {
    let engine = engine();
    let hostile = load(&engine, "hostile");
    let started = std::time::Instant::now();
    let err = synchronize(&hostile, "loop", limits()).unwrap_err();
    assert!(
        matches!(
            &err,
            RunError::Limit {
                limit: LimitExceeded::CpuTime { limit_ms: 300 },
                export: "synchronize",
                ..
            }
        ),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(
        err.to_string(),
        "module hostile was stopped in synchronize: CPU time limit of 300 ms exceeded"
    );
    still_serves(&engine);
}

#[test]
fn unbounded_allocation_is_stopped_at_its_memory_limit() {
    let engine = engine();
    let hostile = load(&engine, "hostile");
    // Growing 64 MiB of memory takes page faults, whose CPU time a loaded
    // machine stretches: the CPU limit here is not what is tested.
    let mut limits = limits();
    limits.cpu_time_ms = 10_000;
    let err = synchronize(&hostile, "alloc", limits).unwrap_err();
    assert!(
        matches!(&err, RunError::Limit { limit: LimitExceeded::Memory { limit, .. }, .. } if *limit == 64 << 20),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("memory limit of 67108864 bytes exceeded"),
        "{err}"
    );
    still_serves(&engine);
}

#[test]
fn unbounded_recursion_is_a_stack_overflow() {
    let engine = engine();
    let hostile = load(&engine, "hostile");
    let err = synchronize(&hostile, "recurse", limits()).unwrap_err();
    assert!(matches!(&err, RunError::StackOverflow { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("module hostile was stopped in synchronize: wasm stack overflow"),
        "{err}"
    );
    still_serves(&engine);
}

#[test]
fn a_panic_is_a_trap_quoting_the_panic_message() {
    let engine = engine();
    let hostile = load(&engine, "hostile");
    let err = synchronize(&hostile, "trap", limits()).unwrap_err();
    assert!(matches!(&err, RunError::Trap { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with("module hostile trapped in synchronize"),
        "{message}"
    );
    assert!(
        message.contains("deliberate panic in synchronize"),
        "{message}"
    );
    still_serves(&engine);
}

#[test]
fn flooding_the_host_with_calls_exhausts_the_budget() {
    let engine = engine();
    let hostile = load(&engine, "hostile");
    let mut limits = limits();
    limits.cpu_time_ms = 60_000;
    let err = synchronize(&hostile, "host-calls", limits).unwrap_err();
    assert!(
        matches!(
            &err,
            RunError::Limit {
                limit: LimitExceeded::HostCalls { limit: 10_000 },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn flooding_the_log_is_bounded_but_not_fatal() {
    let engine = engine();
    let hostile = load(&engine, "hostile");
    // 10 MB of log lines against a 1 MiB budget: dropped, and the call ends.
    let outcome = synchronize(&hostile, "log-flood", MoverLimits::default()).unwrap();
    assert!(matches!(
        outcome,
        Outcome::Completed(Completion {
            image: None,
            transfer: None
        })
    ));
}

#[test]
fn a_clean_mover_error_is_not_a_trap() {
    let engine = engine();
    let hostile = load(&engine, "hostile");
    let err = synchronize(&hostile, "error", limits()).unwrap_err();
    assert!(
        matches!(&err, RunError::Mover { reason, export: "synchronize", .. } if reason == "Deliberate"),
        "{err}"
    );
}

#[test]
fn invalid_and_incompatible_modules_are_refused_at_load() {
    let engine = engine();
    let err = engine
        .load("core", include_bytes!("modules/core-module.wat"))
        .unwrap_err();
    assert!(
        matches!(&err, RunError::Compile { module, .. } if module == "core"),
        "{err}"
    );

    let err = engine
        .load("garbage", b"\0asm\x0d\0\x01\0 truncated")
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("module garbage is not a valid WebAssembly component"),
        "{err}"
    );

    let err = engine
        .load("future", include_bytes!("modules/future-contract.wat"))
        .unwrap_err();
    assert!(matches!(&err, RunError::Incompatible { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("module future is not compatible"),
        "{message}"
    );
    assert!(message.contains("wasmover:mover/log@9.0.0"), "{message}");

    // A guest of the previous, incompatible contract names what it lacks.
    let err = engine
        .load("old", include_bytes!("modules/contract-0.1.wat"))
        .unwrap_err();
    assert!(matches!(&err, RunError::Incompatible { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("wasmover:mover/clock@0.1.0")
            && message.contains("contract wasmover:mover@0.3.0"),
        "{message}"
    );

    let err = engine
        .load("empty", include_bytes!("modules/empty.wat"))
        .unwrap_err();
    assert!(matches!(&err, RunError::MissingExport { .. }), "{err}");
    assert!(
        err.to_string().contains("wasmover:mover/control@0.3.0"),
        "{err}"
    );

    let command = engine
        .load("run-only", include_bytes!("modules/run-only.wat"))
        .unwrap();
    assert_eq!(command.capabilities(), [Capability::Command]);
    let err = command
        .instantiate(MoverLimits::default(), Grants::new())
        .unwrap()
        .from_source(&spec(&[]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "module run-only does not export wasmover:mover/control@0.3.0"
    );
    still_serves(&engine);
}

#[test]
fn optional_capabilities_are_detected_and_honoured() {
    let engine = engine();
    let blocksync = load(&engine, "blocksync");
    let hostile = load(&engine, "hostile");
    assert!(blocksync.has(Capability::Validate));
    assert!(!hostile.has(Capability::Validate));
    for module in [&blocksync, &hostile] {
        assert!(module.has(Capability::Control) && module.has(Capability::Transfer));
        assert!(module.digest().starts_with("sha256:"));
    }

    let bad = [Parameter {
        key: "block-size".into(),
        value: "seven".into(),
    }];
    let err = blocksync
        .instantiate(MoverLimits::default(), Grants::new())
        .unwrap()
        .validate(&bad)
        .unwrap_err();
    assert!(
        matches!(&err, RunError::Mover { reason, .. } if reason == "InvalidParameter"),
        "{err}"
    );
    // Without the capability the host skips validation instead of failing.
    hostile
        .instantiate(MoverLimits::default(), Grants::new())
        .unwrap()
        .validate(&bad)
        .unwrap();
}

#[test]
fn the_catalog_requires_exactly_one_claim() {
    let engine = engine();
    let blocksync = std::fs::read(wasmover_tests::guest("blocksync")).unwrap();
    let mut catalog = Catalog::new();
    catalog
        .register(engine.load("blocksync", &blocksync).unwrap())
        .unwrap();
    catalog.register(load(&engine, "hostile")).unwrap();
    let grants = |_: &MoverModule| Grants::new();
    let limits = MoverLimits::default();

    let claimed = catalog
        .claim_source(&spec(&[("address", "10.0.0.1")]), None, limits, grants)
        .unwrap();
    assert_eq!(claimed.module, "blocksync");
    let claimed = catalog
        .claim_source(&spec(&[("hostile", "error")]), None, limits, grants)
        .unwrap();
    assert_eq!(claimed.module, "hostile");

    let err = catalog
        .claim_source(
            &spec(&[("repository", "s3://bucket")]),
            None,
            limits,
            grants,
        )
        .unwrap_err();
    assert!(
        matches!(&err, CatalogError::NoMoverFound { tried, .. } if tried.len() == 2),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "no mover found for this source: blocksync, hostile declined it"
    );

    let err = catalog
        .claim_source(&spec(&[]), Some("rclone"), limits, grants)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no mover named rclone (known: blocksync, hostile)"
    );

    // A second copy of blocksync claims the same specs.
    catalog
        .register(engine.load("blocksync-copy", &blocksync).unwrap())
        .unwrap();
    let err = catalog
        .claim_source(&spec(&[]), None, limits, grants)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "multiple movers claim this source: blocksync, blocksync-copy; select one with spec.mover.module"
    );
    // Selecting one by name resolves the ambiguity.
    let claimed = catalog
        .claim_source(&spec(&[]), Some("blocksync-copy"), limits, grants)
        .unwrap();
    assert_eq!(claimed.module, "blocksync-copy");
    assert!(matches!(
        catalog.register(engine.load("hostile", &blocksync).unwrap()),
        Err(CatalogError::Duplicate(_))
    ));
}
