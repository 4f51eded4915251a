//! The filter registry: every filter's versions, which one is active, and the compiled
//! component behind it. Uploads are validated completely before anything changes;
//! swapping and rolling back only move the active pointer, which route workers read
//! between batches.

pub mod store;

use crate::engine::EngineError;
use crate::engine::{CompiledFilter, FilterEngine};
use crate::instance::{FilterError, FilterInstance, InstanceIdent};
use crate::limits::Limits;
use crate::metrics::FilterMetrics;
use crate::state::StateStore;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
pub use store::{FilterRecord, FilterStore, FilterVersion, StoreError};
use weir_core::util::now_ms;

/// The version of a filter that route workers run.
pub struct ActiveFilter {
    /// Its version number.
    pub version: u32,
    /// The compiled component.
    pub compiled: Arc<CompiledFilter>,
    /// The configuration passed to `init`.
    pub config: String,
}

/// Why an upload, rollback or removal was refused; each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The filter name breaks the naming rules (400).
    #[error("invalid filter name `{0}`: use 1-64 lower-case letters, digits, `-` and `_`, starting with a letter or digit")]
    BadName(String),
    /// The component is larger than allowed (413).
    #[error("component is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The configuration is not JSON (400).
    #[error("filter config is not valid JSON: {0}")]
    BadConfig(#[source] serde_json::Error),
    /// The bytes are not a WebAssembly component (400).
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The component does not implement a compatible `weir:filter` world (422).
    #[error("the component does not implement weir:filter@0.1.x: {0}")]
    WrongWorld(String),
    /// `init` rejected the configuration, or the filter could not start (422).
    #[error("{0}")]
    Rejected(FilterError),
    /// No such filter (404).
    #[error("no filter named `{0}`")]
    NotFound(String),
    /// The name belongs to another owner: the platform (named in the configuration) or
    /// another tenant (403).
    #[error("filter `{0}` belongs to another tenant or to the platform")]
    Forbidden(String),
    /// No such version (404).
    #[error("filter `{name}` has no version {version}")]
    NoVersion {
        /// The filter.
        name: String,
        /// The version asked for.
        version: u32,
    },
    /// Nothing to roll back to (409).
    #[error("filter `{0}` has no earlier version to roll back to")]
    NoPrevious(String),
    /// The store failed (500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegistryError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            RegistryError::BadName(_)
            | RegistryError::BadConfig(_)
            | RegistryError::NotAComponent(_) => 400,
            RegistryError::TooLarge { .. } => 413,
            RegistryError::WrongWorld(_) | RegistryError::Rejected(_) => 422,
            RegistryError::NotFound(_) | RegistryError::NoVersion { .. } => 404,
            RegistryError::Forbidden(_) => 403,
            RegistryError::NoPrevious(_) => 409,
            RegistryError::Store(_) => 500,
        }
    }

    /// A short machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::BadName(_) => "bad_name",
            RegistryError::TooLarge { .. } => "too_large",
            RegistryError::BadConfig(_) => "bad_config",
            RegistryError::NotAComponent(_) => "not_a_component",
            RegistryError::WrongWorld(_) => "wrong_world",
            RegistryError::Rejected(_) => "config_rejected",
            RegistryError::NotFound(_) | RegistryError::NoVersion { .. } => "not_found",
            RegistryError::Forbidden(_) => "forbidden",
            RegistryError::NoPrevious(_) => "no_previous_version",
            RegistryError::Store(_) => "store_failed",
        }
    }
}

/// The most versions kept per filter; an upload beyond it drops the oldest (and its
/// component, when no other version uses it). Rolling back reaches only kept versions.
pub const MAX_VERSIONS: usize = 20;

/// Whether `name` is a valid filter name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// What a new version is.
pub struct Upload<'a> {
    /// The component bytes.
    pub component: &'a [u8],
    /// The configuration (JSON text; empty means `{}`).
    pub config: &'a str,
    /// The tenant uploading (`None`: an admin, for the platform). A tenant may add
    /// versions only to a filter it owns, or create a filter no one holds; an admin to
    /// any. A new filter belongs to the uploading tenant (or the platform).
    pub owner: Option<&'a str>,
    /// Who uploads (for the record).
    pub by: &'a str,
}

/// All filters.
pub struct FilterRegistry {
    engine: Arc<FilterEngine>,
    store: FilterStore,
    metrics: Arc<FilterMetrics>,
    max_component_bytes: usize,
    index: RwLock<store::Index>,
    active: RwLock<BTreeMap<String, Arc<ActiveFilter>>>,
    /// Serialises changes so the index on disk follows one order.
    writer: Mutex<()>,
}

impl FilterRegistry {
    /// Opens the registry in `data_dir`, compiling (or loading precompiled) every active
    /// version. A version whose component is missing or unusable is logged and left
    /// inactive; the router still starts.
    pub fn open(
        engine: Arc<FilterEngine>,
        data_dir: &Path,
        max_component_bytes: usize,
        metrics: Arc<FilterMetrics>,
    ) -> Result<Self, RegistryError> {
        let store = FilterStore::open(data_dir)?;
        let index = store.load_index()?;
        let mut active = BTreeMap::new();
        for (name, record) in &index.filters {
            let Some(v) = record.active_version() else {
                continue;
            };
            let loaded = store
                .get_blob(&v.hash)
                .map_err(|e| e.to_string())
                .and_then(|bytes| engine.load(&bytes).map_err(|e| e.to_string()));
            match loaded {
                Ok(compiled) => {
                    active.insert(
                        name.clone(),
                        Arc::new(ActiveFilter {
                            version: v.version,
                            compiled: Arc::new(compiled),
                            config: v.config.clone(),
                        }),
                    );
                }
                Err(e) => {
                    tracing::error!(filter = %name, version = v.version, "cannot load stored filter: {e}")
                }
            }
        }
        store.collect_garbage(&index);
        engine.collect_cache(&index.hashes());
        Ok(Self {
            engine,
            store,
            metrics,
            max_component_bytes,
            index: RwLock::new(index),
            active: RwLock::new(active),
            writer: Mutex::new(()),
        })
    }

    /// The engine components are compiled with.
    pub fn engine(&self) -> &FilterEngine {
        &self.engine
    }

    /// The active version of a filter.
    pub fn active(&self, name: &str) -> Option<Arc<ActiveFilter>> {
        self.active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// A filter's record.
    pub fn record(&self, name: &str) -> Option<FilterRecord> {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .filters
            .get(name)
            .cloned()
    }

    /// Every filter's record.
    pub fn list(&self) -> BTreeMap<String, FilterRecord> {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .filters
            .clone()
    }

    /// Validates a component and configuration without storing anything: size, that it is
    /// a component implementing the world, and that `init` accepts the configuration.
    pub fn validate(
        &self,
        component: &[u8],
        config: &str,
    ) -> Result<Arc<CompiledFilter>, RegistryError> {
        if component.len() > self.max_component_bytes {
            return Err(RegistryError::TooLarge {
                size: component.len(),
                limit: self.max_component_bytes,
            });
        }
        serde_json::from_str::<serde_json::Value>(if config.is_empty() { "{}" } else { config })
            .map_err(RegistryError::BadConfig)?;
        if wasmparser_is_core_module(component) {
            return Err(RegistryError::NotAComponent(
                "this is a core WebAssembly module; build the filter as a component (cargo build --target wasm32-wasip2)".into(),
            ));
        }
        if !component.starts_with(b"\0asm") {
            return Err(RegistryError::NotAComponent(
                "the bytes do not start with the WebAssembly magic number".into(),
            ));
        }
        let compiled = self.engine.load(component).map_err(|e| match e {
            EngineError::WrongWorld(reason) => RegistryError::WrongWorld(first_line(&reason)),
            EngineError::Invalid(reason) => RegistryError::NotAComponent(first_line(&reason)),
            other => RegistryError::NotAComponent(first_line(&other.to_string())),
        })?;
        let compiled = Arc::new(compiled);
        if let Err(e) = self.instantiate(&compiled, config, "validation", Limits::default()) {
            // A refused upload leaves no compiled code behind (unless a stored version
            // has the same component).
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            self.engine.collect_cache(&index.hashes());
            return Err(RegistryError::Rejected(e));
        }
        Ok(compiled)
    }

    /// A fresh instance of a compiled filter (for validation and dry runs).
    pub fn instantiate(
        &self,
        compiled: &Arc<CompiledFilter>,
        config: &str,
        tenant: &str,
        limits: Limits,
    ) -> Result<FilterInstance, FilterError> {
        FilterInstance::new(
            &self.engine,
            compiled.clone(),
            if config.is_empty() {
                "{}".into()
            } else {
                config.to_owned()
            },
            limits,
            InstanceIdent {
                tenant: Arc::from(tenant),
                filter: Arc::from("dry-run"),
            },
            StateStore::in_memory().tenant(tenant, 1 << 20),
            self.metrics.clone(),
        )
    }

    /// Validates and stores a new version and makes it active. Nothing changes when it
    /// is refused. Returns the new version.
    pub fn upload(&self, name: &str, upload: Upload<'_>) -> Result<FilterVersion, RegistryError> {
        if !valid_name(name) {
            return Err(RegistryError::BadName(name.to_owned()));
        }
        let config = if upload.config.trim().is_empty() {
            "{}"
        } else {
            upload.config
        };
        let compiled = self.validate(upload.component, config)?;
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.store.put_blob(&compiled.hash, upload.component)?;
        let mut index = self.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        // Ownership is decided here, under the writer lock, where the version is added: a
        // check before it could race another upload creating the filter.
        if let (Some(tenant), Some(record)) = (upload.owner, index.filters.get(name)) {
            if record.owner.as_deref() != Some(tenant) {
                return Err(RegistryError::Forbidden(name.to_owned()));
            }
        }
        let record = index
            .filters
            .entry(name.to_owned())
            .or_insert_with(|| FilterRecord {
                owner: upload.owner.map(str::to_owned),
                active: 0,
                versions: Vec::new(),
            });
        let version = FilterVersion {
            version: record.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1,
            hash: compiled.hash.clone(),
            size: upload.component.len() as u64,
            uploaded_at_ms: now_ms(),
            config: config.to_owned(),
            uploaded_by: upload.by.to_owned(),
        };
        record.active = version.version;
        record.versions.push(version.clone());
        // Only the newest versions are kept: uploads cannot grow the store without end.
        let dropped = record.versions.len().saturating_sub(MAX_VERSIONS);
        record.versions.drain(..dropped);
        self.store.save_index(&index)?;
        if dropped > 0 {
            self.store.collect_garbage(&index);
            self.engine.collect_cache(&index.hashes());
        }
        self.publish(
            index,
            name,
            Some(Arc::new(ActiveFilter {
                version: version.version,
                compiled,
                config: config.to_owned(),
            })),
        );
        tracing::info!(filter = name, version = version.version, hash = %version.hash, by = upload.by, "filter version active");
        Ok(version)
    }

    /// Claims a name the configuration file names for its owner (`None`: the platform),
    /// before any upload can: the record is made (without versions) when missing. The
    /// configuration is authoritative: a record held by another owner changes hands and
    /// loses its versions, so code uploaded by a squatter never runs under the name.
    pub fn claim(&self, name: &str, owner: Option<&str>) -> Result<(), RegistryError> {
        if !valid_name(name) {
            return Err(RegistryError::BadName(name.to_owned()));
        }
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut index = self.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        match index.filters.get_mut(name) {
            Some(record) if record.owner.as_deref() == owner => return Ok(()),
            Some(record) => {
                tracing::warn!(
                    filter = name,
                    held_by = record.owner.as_deref().unwrap_or("the platform"),
                    owner = owner.unwrap_or("the platform"),
                    dropped_versions = record.versions.len(),
                    "the configuration names this filter for another owner: it changes hands and its versions are dropped"
                );
                record.owner = owner.map(str::to_owned);
                record.versions.clear();
                record.active = 0;
            }
            None => {
                index.filters.insert(
                    name.to_owned(),
                    FilterRecord {
                        owner: owner.map(str::to_owned),
                        active: 0,
                        versions: Vec::new(),
                    },
                );
            }
        }
        self.store.save_index(&index)?;
        self.publish(index, name, None);
        Ok(())
    }

    /// Makes the configuration file's component the active version unless the active
    /// version already is exactly it (same component and configuration).
    pub fn seed(&self, name: &str, path: &Path, config: &str) -> Result<u32, RegistryError> {
        let bytes = std::fs::read(path).map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })?;
        let hash = crate::engine::content_hash(&bytes);
        if let Some(record) = self.record(name) {
            if let Some(v) = record.active_version() {
                if v.hash == hash && v.config == config && self.active(name).is_some() {
                    return Ok(v.version);
                }
            }
        }
        let v = self.upload(
            name,
            Upload {
                component: &bytes,
                config,
                owner: None,
                by: "config",
            },
        )?;
        Ok(v.version)
    }

    /// Makes an earlier version active again: `to`, or the version before the active one.
    pub fn rollback(&self, name: &str, to: Option<u32>) -> Result<FilterVersion, RegistryError> {
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut index = self.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        let record = index
            .filters
            .get_mut(name)
            .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
        let target = match to {
            Some(version) => record
                .versions
                .iter()
                .find(|v| v.version == version)
                .cloned()
                .ok_or(RegistryError::NoVersion {
                    name: name.to_owned(),
                    version,
                })?,
            None => {
                let at = record
                    .versions
                    .iter()
                    .position(|v| v.version == record.active)
                    .unwrap_or(0);
                match at.checked_sub(1).and_then(|i| record.versions.get(i)) {
                    Some(v) => v.clone(),
                    None => return Err(RegistryError::NoPrevious(name.to_owned())),
                }
            }
        };
        let bytes = self.store.get_blob(&target.hash)?;
        let compiled = self
            .engine
            .load(&bytes)
            .map_err(|e| RegistryError::NotAComponent(e.to_string()))?;
        record.active = target.version;
        self.store.save_index(&index)?;
        self.publish(
            index,
            name,
            Some(Arc::new(ActiveFilter {
                version: target.version,
                compiled: Arc::new(compiled),
                config: target.config.clone(),
            })),
        );
        tracing::info!(
            filter = name,
            version = target.version,
            "filter rolled back"
        );
        Ok(target)
    }

    /// Removes a filter and all its versions (the caller checks it is unused).
    pub fn remove(&self, name: &str) -> Result<FilterRecord, RegistryError> {
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut index = self.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        let record = index
            .filters
            .remove(name)
            .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
        self.store.save_index(&index)?;
        self.store.collect_garbage(&index);
        self.engine.collect_cache(&index.hashes());
        self.publish(index, name, None);
        Ok(record)
    }

    fn publish(&self, index: store::Index, name: &str, active: Option<Arc<ActiveFilter>>) {
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = index;
        let mut map = self.active.write().unwrap_or_else(|e| e.into_inner());
        match active {
            Some(a) => map.insert(name.to_owned(), a),
            None => map.remove(name),
        };
    }
}

/// Whether the bytes are a core module (version 1) rather than a component.
fn wasmparser_is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_owned()
}
