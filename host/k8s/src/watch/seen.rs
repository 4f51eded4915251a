//! What the cluster watch has handed on: per cluster, each downstream event's uid and the
//! resourceVersion last delivered, kept in a redb file so that a relist (after `410
//! Gone`, an API restart, or weir's own restart) re-emits nothing already delivered while
//! a changed event (a new resourceVersion) still flows. Bounded: entries older than the
//! configured age go, and beyond the most entries the oldest go first.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// `cluster \0 uid` → 8 bytes of milliseconds (little endian), then the resourceVersion.
const SEEN: TableDefinition<&str, &[u8]> = TableDefinition::new("seen");

/// Why the memory could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum SeenError {
    /// The file could not be opened or created.
    #[error("cannot open {path}")]
    Open {
        /// The file.
        path: String,
        /// What redb said.
        #[source]
        source: redb::DatabaseError,
    },
    /// A read or write failed.
    #[error("seen-event memory")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn store(e: impl std::error::Error + Send + Sync + 'static) -> SeenError {
    SeenError::Store(Box::new(e))
}

/// One remembered event: its resourceVersion and when it was delivered.
struct Entry {
    version: Box<str>,
    at_ms: u64,
}

/// One cluster's remembered events.
#[derive(Default)]
struct Cluster {
    /// uid → entry.
    entries: HashMap<String, Entry>,
    /// When the age pass last ran.
    pruned_ms: u64,
}

/// The delivered resourceVersions of every watched cluster.
pub struct Seen {
    db: redb::Database,
    /// cluster → its events (the file's content, for lookups without a read).
    clusters: Mutex<HashMap<String, Cluster>>,
    max_entries: usize,
    max_age_ms: u64,
}

impl Seen {
    /// Opens (or creates) the memory at `path`, keeping at most `max_entries` per cluster
    /// for at most `max_age_ms`.
    pub fn open(path: &Path, max_entries: usize, max_age_ms: u64) -> Result<Self, SeenError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(store)?;
        }
        weir_core::util::create_private(path).map_err(store)?;
        let db = redb::Database::create(path).map_err(|source| SeenError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let mut clusters: HashMap<String, Cluster> = HashMap::new();
        {
            let txn = db.begin_read().map_err(store)?;
            match txn.open_table(SEEN) {
                Ok(table) => {
                    for row in table.iter().map_err(store)? {
                        let (key, value) = row.map_err(store)?;
                        let (key, value) = (key.value(), value.value());
                        let (Some((cluster, uid)), Some((ms, version))) =
                            (key.split_once('\0'), value.split_first_chunk::<8>())
                        else {
                            continue;
                        };
                        clusters
                            .entry(cluster.to_owned())
                            .or_default()
                            .entries
                            .insert(
                                uid.to_owned(),
                                Entry {
                                    version: String::from_utf8_lossy(version).into(),
                                    at_ms: u64::from_le_bytes(*ms),
                                },
                            );
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(store(e)),
            }
        }
        Ok(Self {
            db,
            clusters: Mutex::new(clusters),
            max_entries: max_entries.max(1),
            max_age_ms,
        })
    }

    /// How many events of `cluster` are remembered.
    pub fn len(&self, cluster: &str) -> usize {
        self.lock().get(cluster).map_or(0, |c| c.entries.len())
    }

    /// Whether `uid` at `version` was already delivered for `cluster`.
    pub fn delivered(&self, cluster: &str, uid: &str, version: &str) -> bool {
        self.lock()
            .get(cluster)
            .and_then(|c| c.entries.get(uid))
            .is_some_and(|e| &*e.version == version)
    }

    /// Records `(uid, version)` pairs as delivered at `now_ms`, durably, and forgets what
    /// is too old or too many.
    pub fn record(
        &self,
        cluster: &str,
        delivered: &[(String, String)],
        now_ms: u64,
    ) -> Result<(), SeenError> {
        // The memory first, under the lock; the file after, without it (a commit waits
        // for the disk, and every cluster's lookups take this lock).
        let forgotten = {
            let mut clusters = self.lock();
            let Cluster { entries, pruned_ms } = clusters.entry(cluster.to_owned()).or_default();
            for (uid, version) in delivered {
                entries.insert(
                    uid.clone(),
                    Entry {
                        version: version.as_str().into(),
                        at_ms: now_ms,
                    },
                );
            }
            forget(
                entries,
                pruned_ms,
                now_ms,
                self.max_age_ms,
                self.max_entries,
            )
        };
        let key_of = |key: &mut String, uid: &str| {
            key.clear();
            key.push_str(cluster);
            key.push('\0');
            key.push_str(uid);
        };
        let txn = self.db.begin_write().map_err(store)?;
        {
            let mut table = txn.open_table(SEEN).map_err(store)?;
            let mut key = String::new();
            let mut value = Vec::new();
            for (uid, version) in delivered {
                key_of(&mut key, uid);
                value.clear();
                value.extend_from_slice(&now_ms.to_le_bytes());
                value.extend_from_slice(version.as_bytes());
                table
                    .insert(key.as_str(), value.as_slice())
                    .map_err(store)?;
            }
            for uid in forgotten {
                key_of(&mut key, &uid);
                table.remove(key.as_str()).map_err(store)?;
            }
        }
        txn.commit().map_err(store)?;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cluster>> {
        self.clusters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How often the age pass runs at most, unless the memory is over its bound.
const PRUNE_EVERY_MS: u64 = 60_000;

/// Removes from `entries` what is older than `max_age_ms`, then — when there are more
/// than `max_entries` — the oldest down to 90 % of the bound (so this does not run every
/// batch); returns the uids removed. The pass runs when the map is over its bound, or a
/// minute after the last one (`pruned_ms`).
fn forget(
    entries: &mut HashMap<String, Entry>,
    pruned_ms: &mut u64,
    now_ms: u64,
    max_age_ms: u64,
    max_entries: usize,
) -> Vec<String> {
    let cutoff = now_ms.saturating_sub(max_age_ms);
    if entries.len() <= max_entries && now_ms.saturating_sub(*pruned_ms) < PRUNE_EVERY_MS {
        return Vec::new();
    }
    *pruned_ms = now_ms;
    let mut removed: Vec<String> = entries
        .iter()
        .filter(|(_, e)| e.at_ms < cutoff)
        .map(|(uid, _)| uid.clone())
        .collect();
    for uid in &removed {
        entries.remove(uid);
    }
    if entries.len() > max_entries {
        let keep = max_entries - max_entries / 10;
        let mut by_age: Vec<(u64, String)> = entries
            .iter()
            .map(|(uid, e)| (e.at_ms, uid.clone()))
            .collect();
        by_age.sort_unstable();
        for (_, uid) in by_age.into_iter().take(entries.len() - keep) {
            entries.remove(&uid);
            removed.push(uid);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(u, v)| (u.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn delivered_versions_survive_a_reopen_and_a_new_version_is_new() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen.redb");
        let seen = Seen::open(&path, 100, 3_600_000).unwrap();
        seen.record("east", &pairs(&[("u1", "10"), ("u2", "11")]), 1_000)
            .unwrap();
        seen.record("west", &pairs(&[("u1", "99")]), 1_000).unwrap();
        drop(seen);
        let seen = Seen::open(&path, 100, 3_600_000).unwrap();
        assert!(seen.delivered("east", "u1", "10"));
        assert!(
            !seen.delivered("east", "u1", "12"),
            "a changed event is new"
        );
        assert!(!seen.delivered("east", "u3", "10"));
        assert!(seen.delivered("west", "u1", "99"));
        assert!(!seen.delivered("west", "u1", "10"), "clusters are apart");
    }

    #[test]
    fn memory_is_bounded_by_age_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen.redb");
        let seen = Seen::open(&path, 100, 10_000).unwrap();
        let many: Vec<(String, String)> = (0..150).map(|i| (format!("u{i}"), "1".into())).collect();
        seen.record("c", &many[..50], 1_000).unwrap();
        seen.record("c", &many[50..], 2_000).unwrap();
        assert_eq!(seen.len("c"), 90, "down to 90 % of the bound, oldest first");
        assert!(!seen.delivered("c", "u0", "1"));
        assert!(seen.delivered("c", "u149", "1"));
        // A minute later, everything past the age goes.
        seen.record("c", &pairs(&[("late", "1")]), 70_000).unwrap();
        assert_eq!(seen.len("c"), 1);
        drop(seen);
        assert_eq!(
            Seen::open(&path, 100, 10_000).unwrap().len("c"),
            1,
            "durably"
        );
    }
}
