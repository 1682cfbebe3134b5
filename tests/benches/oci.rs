//! What a new OCI module costs before its first call: cold (pull from a real
//! registry + compile), warm (the store's verified copy + the precompiled
//! cache), and instantiating it once loaded.
//!
//! Needs `docker-registry` and the guest components (`scripts/setup`), then
//! `cargo bench -p wasmover-tests --bench oci`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use wasmover_host::{EngineConfig, Grants, MoverEngine, MoverLimits};
use wasmover_oci::{Credentials, ModuleRef, ModuleStore};
use wasmover_operator::modules::{Oci, load};
use wasmover_tests::registry::TestRegistry;

fn oci_module(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let oci = |store: &str| {
        Oci::new(
            ModuleStore::new(dir.path().join(store)),
            false,
            Credentials::default(),
        )
    };
    let engine = MoverEngine::new(EngineConfig::default()).unwrap();
    let tag: ModuleRef = registry.reference("movers/blocksync:v1").parse().unwrap();
    let digest = runtime
        .block_on(oci("push").push(&engine, &wasmover_tests::guest("blocksync"), &tag))
        .unwrap();
    let pinned = tag.pinned(digest);

    let mut group = c.benchmark_group("oci-module");
    group.sample_size(10);
    // Each iteration: an empty store and an empty precompiled cache.
    let mut round = 0;
    group.bench_function("cold pull+compile", |b| {
        b.iter_batched(
            || {
                round += 1;
                let cache = dir.path().join(format!("cold-cache-{round}"));
                let engine =
                    MoverEngine::new(EngineConfig::default().with_cache_dir(cache)).unwrap();
                (engine, oci(&format!("cold-store-{round}")))
            },
            |(engine, oci)| {
                let fetched = runtime.block_on(oci.fetch(&pinned, None)).unwrap();
                assert!(!fetched.from_cache);
                load(&engine, &fetched).unwrap()
            },
            BatchSize::PerIteration,
        )
    });

    // The pull alone, for the split of the cold start.
    group.bench_function("cold pull", |b| {
        b.iter_batched(
            || {
                round += 1;
                oci(&format!("pull-store-{round}"))
            },
            |oci| runtime.block_on(oci.fetch(&pinned, None)).unwrap(),
            BatchSize::PerIteration,
        )
    });

    let cached =
        MoverEngine::new(EngineConfig::default().with_cache_dir(dir.path().join("warm-cache")))
            .unwrap();
    let warm = oci("warm-store");
    load(
        &cached,
        &runtime.block_on(warm.fetch(&pinned, None)).unwrap(),
    )
    .unwrap();
    group.bench_function("warm store+precompiled load", |b| {
        b.iter(|| {
            let fetched = runtime
                .block_on(warm.fetch(black_box(&pinned), None))
                .unwrap();
            assert!(fetched.from_cache);
            load(&cached, &fetched).unwrap()
        })
    });

    let module = load(
        &cached,
        &runtime.block_on(warm.fetch(&pinned, None)).unwrap(),
    )
    .unwrap();
    group.sample_size(100);
    group.bench_function("instantiate", |b| {
        b.iter(|| {
            module
                .instantiate(MoverLimits::default(), Grants::new())
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, oci_module);
criterion_main!(benches);
