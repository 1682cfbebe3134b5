//! What starting a mover costs: loading a module (compiling vs the
//! precompiled cache), instantiating it warm (pooling vs on-demand), a call
//! of an export, and a host-call round trip.
//!
//! Needs the guest components: `cargo xtask build-guests`, then
//! `cargo bench -p wasmover-host --bench instantiate`.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use wasmover_host::bindings::types::{CopyMethod, Parameter, SourceSpec};
use wasmover_host::{EngineConfig, Grants, MoverEngine, MoverLimits};

fn guest(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../target/guests/wasm/{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask build-guests`", path.display()))
}

fn load(c: &mut Criterion) {
    let bytes = guest("blocksync");
    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    let engine = MoverEngine::new(EngineConfig::default()).unwrap();
    group.bench_function("compile", |b| {
        b.iter(|| engine.load("blocksync", black_box(&bytes)).unwrap())
    });

    let cache = tempfile::tempdir().unwrap();
    let cached = MoverEngine::new(EngineConfig::default().with_cache_dir(cache.path())).unwrap();
    cached.load("blocksync", &bytes).unwrap();
    group.bench_function("precompiled", |b| {
        b.iter(|| cached.load("blocksync", black_box(&bytes)).unwrap())
    });
    group.finish();
}

fn instantiate(c: &mut Criterion) {
    let bytes = guest("blocksync");
    let mut group = c.benchmark_group("instantiate");
    for (name, pooling) in [("pooling", true), ("on-demand", false)] {
        let engine = MoverEngine::new(EngineConfig {
            pooling,
            ..EngineConfig::default()
        })
        .unwrap();
        let module = engine.load("blocksync", &bytes).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                module
                    .instantiate(MoverLimits::default(), Grants::new())
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn calls(c: &mut Criterion) {
    let engine = MoverEngine::new(EngineConfig::default()).unwrap();
    let hostile = engine.load("hostile", &guest("hostile")).unwrap();
    let mut instance = hostile
        .instantiate(MoverLimits::default(), Grants::new())
        .unwrap();
    let spec = SourceSpec {
        namespace: "bench".into(),
        name: "bench".into(),
        source_pvc: "data".into(),
        copy_method: CopyMethod::Direct,
        storage_class_name: None,
        volume_snapshot_class_name: None,
        access_modes: vec![],
        parameters: vec![Parameter {
            key: "hostile".into(),
            value: "calls-1000".into(),
        }],
    };
    let mover = instance.from_source(&spec).unwrap().unwrap();
    let mut group = c.benchmark_group("call");
    group.bench_function("export (version-info)", |b| {
        b.iter(|| instance.version_info().unwrap())
    });
    // One synchronize making a thousand host calls: divide by 1000.
    group.bench_function("1000 host calls (clock.now-ms)", |b| {
        b.iter(|| instance.synchronize(mover).unwrap())
    });
    group.finish();
}

criterion_group!(benches, load, instantiate, calls);
criterion_main!(benches);
