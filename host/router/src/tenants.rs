//! The tenant directory: each tenant's limits and its filter chain per route. Starts from
//! the configuration file; tenants set through the admin API are stored in
//! `<data_dir>/tenants.json` and take precedence over the file. Route lanes read it
//! between batches and rebuild their instances when it changes.

use crate::settings::{RouteConfig, TenantConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use weir_core::util::{write_atomically, FileError};
use weir_runtime::Limits;

/// Why the stored tenants could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path}: corrupt tenants file: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: serde_json::Error,
    },
    /// The file could not be replaced.
    #[error(transparent)]
    Write(#[from] FileError),
}

/// One tenant's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// Limits on every filter call of the tenant.
    #[serde(default)]
    pub limits: Limits,
    /// The tenant's own chain per route name (routes not listed use their default chain).
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<String>>,
}

/// Every tenant.
pub struct TenantDirectory {
    path: PathBuf,
    /// Tenants from the configuration file.
    base: BTreeMap<String, TenantSettings>,
    /// Tenants set through the API (stored).
    overlay: RwLock<BTreeMap<String, TenantSettings>>,
    generation: AtomicU64,
}

impl TenantDirectory {
    /// The configured tenants (and the routes' per-tenant chains), overlaid with those
    /// stored in `data_dir`.
    pub fn open(
        tenants: &BTreeMap<String, TenantConfig>,
        routes: &[RouteConfig],
        data_dir: &Path,
    ) -> Result<Self, StoreError> {
        let mut base: BTreeMap<String, TenantSettings> = tenants
            .iter()
            .map(|(name, t)| {
                (
                    name.clone(),
                    TenantSettings {
                        limits: t.limits,
                        routes: BTreeMap::new(),
                    },
                )
            })
            .collect();
        for route in routes {
            for (tenant, chain) in &route.tenants {
                base.entry(tenant.clone())
                    .or_default()
                    .routes
                    .insert(route.name.clone(), chain.filters.clone());
            }
        }
        let path = data_dir.join("tenants.json");
        let overlay = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        Ok(Self {
            path,
            base,
            overlay: RwLock::new(overlay),
            generation: AtomicU64::new(0),
        })
    }

    /// Changes whenever any tenant changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A tenant's settings.
    pub fn get(&self, tenant: &str) -> Option<TenantSettings> {
        let overlay = self.overlay.read().unwrap_or_else(|e| e.into_inner());
        overlay
            .get(tenant)
            .or_else(|| self.base.get(tenant))
            .cloned()
    }

    /// Whether the tenant exists.
    pub fn contains(&self, tenant: &str) -> bool {
        self.overlay
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(tenant)
            || self.base.contains_key(tenant)
    }

    /// Every tenant's settings.
    pub fn all(&self) -> BTreeMap<String, TenantSettings> {
        let mut all = self.base.clone();
        all.extend(
            self.overlay
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        );
        all
    }

    /// A tenant's limits (the `default` tenant's when unknown).
    pub fn limits(&self, tenant: &str) -> Limits {
        self.get(tenant)
            .or_else(|| self.get("default"))
            .map(|t| t.limits)
            .unwrap_or_default()
    }

    /// The tenant's chain on a route, when it has its own.
    pub fn chain(&self, tenant: &str, route: &str) -> Option<Vec<String>> {
        self.get(tenant).and_then(|t| t.routes.get(route).cloned())
    }

    /// Stores a tenant's settings (validated by the caller) and publishes them.
    pub fn set(&self, tenant: &str, settings: TenantSettings) -> Result<(), StoreError> {
        let mut overlay = self.overlay.write().unwrap_or_else(|e| e.into_inner());
        let mut next = overlay.clone();
        next.insert(tenant.to_owned(), settings);
        self.save(&next)?;
        *overlay = next;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Removes a tenant set through the API (the configuration's settings, if any, apply
    /// again). Returns whether there was one.
    pub fn remove(&self, tenant: &str) -> Result<bool, StoreError> {
        let mut overlay = self.overlay.write().unwrap_or_else(|e| e.into_inner());
        let mut next = overlay.clone();
        let existed = next.remove(tenant).is_some();
        if existed {
            self.save(&next)?;
            *overlay = next;
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(existed)
    }

    fn save(&self, overlay: &BTreeMap<String, TenantSettings>) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(overlay).map_err(|source| StoreError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        Ok(write_atomically(&self.path, &bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_tenants_overlay_the_config_and_persist() {
        let tenants: BTreeMap<String, TenantConfig> =
            serde_norway::from_str("default: {}\nacme:\n  limits: { timeout_ms: 50 }\n")
                .expect("tenants");
        let routes: Vec<RouteConfig> = serde_norway::from_str(
            "- name: main\n  tenants:\n    acme: { filters: [] }\n  to: [tail]\n",
        )
        .expect("routes");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = TenantDirectory::open(&tenants, &routes, dir.path()).expect("open");
        assert_eq!(d.limits("acme").timeout_ms, 50);
        assert_eq!(d.chain("acme", "main"), Some(vec![]));
        assert!(d.contains("default") && !d.contains("globex"));
        let g0 = d.generation();
        let mut globex = TenantSettings::default();
        globex.routes.insert("main".into(), vec!["severity".into()]);
        d.set("globex", globex.clone()).expect("set");
        assert!(d.generation() > g0);
        let again = TenantDirectory::open(&tenants, &routes, dir.path()).expect("reopen");
        assert_eq!(again.get("globex"), Some(globex));
        assert!(again.remove("globex").expect("remove"));
        assert!(!again.contains("globex"));
        assert_eq!(again.limits("nobody"), again.limits("default"));
    }
}
