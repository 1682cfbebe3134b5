//! The engine: configured once, shared by every module, with its epoch
//! ticker and the on-disk cache of precompiled components.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::{MoverValidating, v0_2};
use crate::cache::{CacheKey, CacheStats, Counters, Precompiled};
use crate::error::RunError;
use crate::state::HostState;

/// How often the epoch advances; the granularity of CPU-time limits.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Settings of a [`MoverEngine`].
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Use the pooling allocator: instance slots are reserved up front and
    /// reused, which makes instantiation cheap.
    pub pooling: bool,
    /// Instances that may be alive at once (pooling only).
    pub max_instances: u32,
    /// Largest linear memory any module may reserve (pooling only). Each
    /// call's own limit is [`crate::MoverLimits::memory_bytes`].
    pub max_memory_bytes: usize,
    /// Wasm stack per call. Prevents unbounded recursion.
    pub max_wasm_stack: usize,
    /// Where compiled components are kept between runs; `None` compiles
    /// every time. It must be owned by this user and writable by no one
    /// else, or it is not used (with a warning).
    pub cache_dir: Option<PathBuf>,
    /// The key that signs cached components; `None` uses a random key
    /// kept in `cache_dir` (created on first use, readable only by this
    /// user). Only components signed with it are loaded.
    pub cache_key: Option<CacheKey>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            pooling: true,
            max_instances: 64,
            max_memory_bytes: 1 << 30,
            max_wasm_stack: 1 << 20,
            cache_dir: None,
            cache_key: None,
        }
    }
}

impl EngineConfig {
    /// The default settings with the precompiled cache in `dir`.
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// These settings with `key` signing the precompiled cache, e.g. one
    /// the operator derives from a Secret, instead of a key file in the
    /// cache directory.
    pub fn with_cache_key(mut self, key: [u8; 32]) -> Self {
        self.cache_key = Some(CacheKey::new(key));
        self
    }
}

/// A wasmtime engine set up for movers: epoch interruption, optional
/// pooling, the contract's imports linked, and a precompiled cache.
///
/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct MoverEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    config: EngineConfig,
    cache: Option<Precompiled>,
    counters: Counters,
    ticker: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

impl std::fmt::Debug for MoverEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MoverEngine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl MoverEngine {
    /// Builds the engine, its linker and its epoch ticker.
    pub fn new(config: EngineConfig) -> Result<Self, RunError> {
        let engine_error = |e: wasmtime::Error| RunError::Engine(e.into());
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack)
            .parallel_compilation(true);
        if config.pooling {
            let mut pool = PoolingAllocationConfig::default();
            // A component built with the WASI adapter holds a handful of core
            // instances, memories and tables; size the pool for that.
            pool.total_component_instances(config.max_instances)
                .total_core_instances(config.max_instances * 8)
                .total_memories(config.max_instances * 2)
                .total_tables(config.max_instances * 8)
                .total_stacks(config.max_instances)
                .max_memory_size(config.max_memory_bytes);
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&wasm).map_err(engine_error)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_error)?;
        MoverValidating::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(engine_error)?;
        // Modules built for the previous contract link against adapters
        // over the current imports (`crate::host::v0_2`).
        v0_2::MoverValidating::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(engine_error)?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.weak();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("wasmover-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        match engine.upgrade() {
                            Some(engine) => engine.increment_epoch(),
                            None => return,
                        }
                    }
                })
                .map_err(|e| RunError::Engine(e.into()))?
        };

        let cache = config
            .cache_dir
            .as_deref()
            .and_then(|dir| Precompiled::open(dir, config.cache_key.clone()));
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                cache,
                counters: Counters::default(),
                ticker: Some(ticker),
                stop,
            }),
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn linker(&self) -> &Linker<HostState> {
        &self.inner.linker
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// What the precompiled cache has done so far: hits, compilations and
    /// refused files.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.counters.snapshot()
    }

    /// Compiles `bytes` (or fetches them from the precompiled cache) as
    /// the component of the module `name`; with the digest of `bytes`,
    /// `sha256:<hex>`, which keys the cache.
    pub(crate) fn component(
        &self,
        name: &str,
        bytes: &[u8],
    ) -> Result<(Component, String), RunError> {
        let digest = format!("sha256:{:x}", Sha256::digest(bytes));
        let component = self.cached_component(name, &digest, bytes)?;
        Ok((component, digest))
    }

    fn cached_component(
        &self,
        name: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Component, RunError> {
        let compile = || {
            self.inner.counters.compiled();
            Component::new(self.engine(), bytes).map_err(|e| RunError::Compile {
                module: name.to_owned(),
                source: e.into(),
            })
        };
        let Some(cache) = &self.inner.cache else {
            return compile();
        };
        let file = self.cache_file(digest);
        if let Some(component) = cache.load(self.engine(), &file, &self.inner.counters) {
            return Ok(component);
        }
        let component = compile()?;
        cache.store(&file, &component);
        Ok(component)
    }

    /// The cache's file name for a module: its digest plus everything that
    /// makes compiled code incompatible, wasmtime's version and the
    /// engine's settings.
    fn cache_file(&self, digest: &str) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine()
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let hex = digest.trim_start_matches("sha256:");
        format!("{hex}-{:016x}.cwasm", hasher.finish())
    }
}
