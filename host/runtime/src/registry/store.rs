//! Durable storage of uploaded filters: content-addressed component files and one index
//! file, each written to a temporary name, fsynced and renamed, so a crash in the middle of
//! an upload never leaves a half-written filter active.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use weir_core::util::write_atomically;

/// Why the filter store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A file could not be replaced atomically.
    #[error(transparent)]
    Write(#[from] weir_core::util::FileError),
    /// The index file is not valid.
    #[error("{path}: corrupt filter index: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// One version of a filter: a component and the configuration it runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterVersion {
    /// 1, 2, 3... per filter name.
    pub version: u32,
    /// Hex SHA-256 of the component.
    pub hash: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// Upload time, milliseconds since the Unix epoch.
    pub uploaded_at_ms: u64,
    /// The configuration (JSON text) passed to `init`.
    pub config: String,
    /// Who uploaded it (`config` for versions from the configuration file).
    pub uploaded_by: String,
}

/// A filter and its versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterRecord {
    /// The tenant owning it (`None`: platform-owned, managed by admins only).
    pub owner: Option<String>,
    /// The active version.
    pub active: u32,
    /// Every version, oldest first.
    pub versions: Vec<FilterVersion>,
}

impl FilterRecord {
    /// The active version's record.
    pub fn active_version(&self) -> Option<&FilterVersion> {
        self.versions.iter().find(|v| v.version == self.active)
    }
}

/// The on-disk index: every filter by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Layout version of this file.
    pub format: u32,
    /// Filters by name.
    pub filters: BTreeMap<String, FilterRecord>,
}

impl Index {
    /// The content hashes of every stored version: what the store and the compiled
    /// cache keep.
    pub fn hashes(&self) -> std::collections::HashSet<&str> {
        self.filters
            .values()
            .flat_map(|f| f.versions.iter().map(|v| v.hash.as_str()))
            .collect()
    }
}

/// The directory `<data>/filters/`: `index.json` and `blobs/<sha256>.wasm`.
#[derive(Debug, Clone)]
pub struct FilterStore {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

impl FilterStore {
    /// Opens (creating) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let dir = data_dir.join("filters");
        let blobs = dir.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
        Ok(Self { dir })
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    /// The path of a component by hash.
    pub fn blob_path(&self, hash: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{hash}.wasm"))
    }

    /// Reads the index (empty when there is none yet).
    pub fn load_index(&self) -> Result<Index, StoreError> {
        let path = self.index_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index {
                format: 1,
                filters: BTreeMap::new(),
            }),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// Replaces the index atomically.
    pub fn save_index(&self, index: &Index) -> Result<(), StoreError> {
        let path = self.index_path();
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(write_atomically(&path, &bytes)?)
    }

    /// Stores a component under its hash (no-op when already there).
    pub fn put_blob(&self, hash: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.blob_path(hash);
        if path.exists() {
            return Ok(());
        }
        Ok(write_atomically(&path, bytes)?)
    }

    /// Reads a component by hash.
    pub fn get_blob(&self, hash: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(hash);
        std::fs::read(&path).map_err(io(&path))
    }

    /// Removes components no version refers to any more.
    pub fn collect_garbage(&self, index: &Index) {
        let live = index.hashes();
        if let Ok(entries) = std::fs::read_dir(self.dir.join("blobs")) {
            for entry in entries.flatten() {
                let path = entry.path();
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                let is_tmp = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e.starts_with("tmp"));
                if is_tmp || !live.contains(stem) {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_blobs_round_trip_and_garbage_is_collected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FilterStore::open(dir.path()).expect("open");
        assert!(store.load_index().expect("empty").filters.is_empty());
        store.put_blob("aa", b"one").expect("blob");
        store.put_blob("bb", b"two").expect("blob");
        let mut index = Index::default();
        index.filters.insert(
            "f".into(),
            FilterRecord {
                owner: Some("acme".into()),
                active: 1,
                versions: vec![FilterVersion {
                    version: 1,
                    hash: "aa".into(),
                    size: 3,
                    uploaded_at_ms: 1,
                    config: "{}".into(),
                    uploaded_by: "test".into(),
                }],
            },
        );
        store.save_index(&index).expect("save");
        assert_eq!(store.load_index().expect("load"), index);
        store.collect_garbage(&index);
        assert_eq!(store.get_blob("aa").expect("kept"), b"one");
        assert!(store.get_blob("bb").is_err(), "unreferenced blob removed");
        std::fs::write(dir.path().join("filters/index.json"), b"{oops").expect("write");
        assert!(matches!(
            store.load_index(),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
