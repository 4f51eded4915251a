//! The wasmtime engine: configuration, compilation with an on-disk cache, epoch ticker.

use super::bindings::{Filter, FilterPre};
use super::host_api::HostState;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Why a component could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine could not be configured.
    #[error("cannot configure the wasm engine: {0}")]
    Setup(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The bytes are not a valid component.
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    /// The component does not fit the `weir:filter` world (imports the host does not
    /// offer, or lacks an export).
    #[error("the component does not implement the weir:filter world: {0}")]
    WrongWorld(String),
    /// Reading or writing the cache or component failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Directory for precompiled components (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
    /// The largest linear memory any instance may have (per-tenant caps are lower).
    pub max_memory_bytes: usize,
    /// How many filter instances may exist at once.
    pub max_instances: u32,
    /// Also meter guest instructions with this much fuel per call. Off by default: fuel
    /// instruments every guest instruction (measured in docs/benchmarks.md), while the
    /// epoch deadline that is always on costs a check per loop header and call.
    pub fuel_per_call: Option<u64>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_memory_bytes: 256 << 20,
            max_instances: 256,
            fuel_per_call: None,
        }
    }
}

/// Hex SHA-256 of a component: its identity in caches and the filter store.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A component ready to instantiate cheaply, many times.
pub struct CompiledFilter {
    pub(crate) pre: FilterPre<HostState>,
    /// Hex SHA-256 of the component bytes.
    pub hash: String,
}

/// The shared engine: one per router.
pub struct FilterEngine {
    pub(crate) engine: Engine,
    linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    pub(crate) fuel_per_call: Option<u64>,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for FilterEngine {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl FilterEngine {
    /// Builds the engine: component model, pooling allocator, epoch interruption (a
    /// 10 ms ticker thread; cheaper than fuel, which instruments every guest instruction).
    pub fn new(options: EngineOptions) -> Result<Self, EngineError> {
        let setup = |e: wasmtime::Error| EngineError::Setup(e.into());
        let mut pool = PoolingAllocationConfig::default();
        let instances = options.max_instances.max(1);
        pool.total_component_instances(instances)
            .total_core_instances(instances * 8)
            .total_memories(instances * 2)
            .total_tables(instances * 8)
            .total_stacks(instances)
            .max_memory_size(options.max_memory_bytes);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(options.fuel_per_call.is_some())
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // `perf` can name the functions of guests' compiled code (`perf record` reads
        // `/tmp/perf-<pid>.map`): how a filter's hot spots are found.
        if std::env::var_os("WEIR_GUEST_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(setup)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(setup)?;
        refuse_blocking(&mut linker).map_err(setup)?;
        Filter::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(setup)?;
        if let Some(dir) = &options.cache_dir {
            std::fs::create_dir_all(dir).map_err(|source| EngineError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let (ticker_engine, stop) = (engine.clone(), stop_ticker.clone());
        std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| EngineError::Setup(e.into()))?;
        Ok(Self {
            engine,
            linker,
            cache_dir: options.cache_dir,
            fuel_per_call: options.fuel_per_call,
            stop_ticker,
        })
    }

    /// Loads a component file.
    pub fn load_file(&self, path: &Path) -> Result<CompiledFilter, EngineError> {
        let bytes = std::fs::read(path).map_err(|source| EngineError::Io {
            path: path.to_owned(),
            source,
        })?;
        self.load(&bytes)
    }

    /// Compiles a component (or loads it precompiled from the cache, keyed by its content
    /// hash and the engine's compatibility hash) and checks it implements the world.
    pub fn load(&self, bytes: &[u8]) -> Result<CompiledFilter, EngineError> {
        let hash = content_hash(bytes);
        let (component, fresh) = match self.cached(&hash) {
            Some(component) => (component, false),
            None => {
                let component = Component::new(&self.engine, bytes)
                    .map_err(|e| EngineError::Invalid(format!("{e:?}")))?;
                (component, true)
            }
        };
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| EngineError::WrongWorld(format!("{e:?}")))?;
        let pre =
            FilterPre::new(instance_pre).map_err(|e| EngineError::WrongWorld(format!("{e:?}")))?;
        // Only what implements the world is kept: a refused component leaves nothing.
        if fresh {
            self.store_cache(&hash, &component);
        }
        Ok(CompiledFilter { pre, hash })
    }

    fn cache_path(&self, hash: &str) -> Option<PathBuf> {
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&self.engine.precompile_compatibility_hash(), &mut h);
        let engine_hash = std::hash::Hasher::finish(&h);
        self.cache_dir
            .as_ref()
            .map(|d| d.join(format!("{hash}-{engine_hash:016x}.cwasm")))
    }

    fn cached(&self, hash: &str) -> Option<Component> {
        let path = self.cache_path(hash)?;
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `store_cache` from `Component::serialize` of this
        // engine configuration (the name carries the engine's compatibility hash) into the
        // router's own data directory; wasmtime also checks the header and version.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize_file(&self.engine, &path) };
        match loaded {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled-filter cache entry");
                None
            }
        }
    }

    /// Writes a compiled component to the cache: atomically (a temporary file of this
    /// writer's own, fsynced, renamed), owner-only. A failure only costs a later compile.
    fn store_cache(&self, hash: &str, component: &Component) {
        let Some(path) = self.cache_path(hash) else {
            return;
        };
        let bytes = match component.serialize() {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot serialize a compiled filter");
                return;
            }
        };
        if let Err(e) = weir_core::util::write_atomically(&path, &bytes) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write compiled-filter cache");
        }
    }

    /// Removes compiled entries of components not in `live` (versions no longer stored),
    /// entries another engine build wrote (they can never load again), and temporary
    /// files of writes that did not finish an hour ago.
    pub fn collect_cache(&self, live: &std::collections::HashSet<&str>) {
        let (Some(dir), Some(probe)) = (&self.cache_dir, self.cache_path("x")) else {
            return;
        };
        // This build's entries end in `-<engine hash>.cwasm`.
        let Some(suffix) = probe
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix('x'))
            .map(str::to_owned)
        else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let stale = |path: &Path| {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600))
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let keep = match name.strip_suffix(&suffix) {
                Some(hash) => live.contains(hash),
                None if name.contains(".tmp-") => !stale(&path),
                None => false,
            };
            if !keep {
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::debug!(path = %path.display(), "removed compiled-filter cache entry")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove compiled-filter cache entry")
                    }
                }
            }
        }
    }
}

/// What a filter that waits is told (its call fails with it).
pub const BLOCKING_REFUSED: &str =
    "filters may not block: a sleep or wait (wasi:io/poll) was refused";

/// Replaces WASI's waiting calls (`poll`, `pollable.block`: a sleep, a blocking read)
/// with ones that fail the call. The epoch deadline interrupts wasm code, not a host call
/// that waits, so a filter that slept would hold its thread and instance past its time
/// limit. Nothing else a filter may reach waits: it has no sockets, files or stdin.
fn refuse_blocking(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::p2::DynPollable;
    linker.allow_shadowing(true);
    let mut poll = linker.instance("wasi:io/poll@0.2.12")?;
    poll.func_wrap(
        "[method]pollable.block",
        |_, (_,): (Resource<DynPollable>,)| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(BLOCKING_REFUSED))
        },
    )?;
    poll.func_wrap(
        "poll",
        |_, (_,): (Vec<Resource<DynPollable>>,)| -> wasmtime::Result<(Vec<u32>,)> {
            Err(wasmtime::Error::msg(BLOCKING_REFUSED))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
