//! Per-tenant key-value state with expiry and a size cap, for stateful filters
//! (deduplication, rate limiting, aggregation).
//!
//! Reads are served from memory. Writes are kept as dirty entries and made durable in one
//! `redb` transaction per filter batch ([`TenantState::flush`]), so state survives a
//! restart and a filter version swap (keys are namespaced by filter name, not version).
//! `redb` was chosen for being a pure-Rust, crash-safe (copy-on-write B-tree with
//! checksummed commits), well-kept embedded store with no background threads.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// Rows: `tenant \0 filter \0 key` → expiry (u64 LE ms, 0 = never) followed by the value.
const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("filter_state");

/// Why state could not be read or persisted.
#[derive(Debug, thiserror::Error)]
#[error("filter state store: {0}")]
pub struct StateError(String);

fn state_err(e: impl std::fmt::Display) -> StateError {
    StateError(e.to_string())
}

/// Entries read at start-up, per tenant: (key, value, expiry), until the tenant is used.
type Loaded = HashMap<String, Vec<(String, Vec<u8>, Option<u64>)>>;

/// All tenants' state.
#[derive(Default)]
pub struct StateStore {
    db: Option<Arc<redb::Database>>,
    tenants: Mutex<HashMap<String, Arc<TenantState>>>,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("durable", &self.db.is_some())
            .finish()
    }
}

impl StateStore {
    /// A store that keeps state in memory only (tests, dry runs).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Opens (creating) the durable store at `path` and reads every unexpired entry.
    pub fn open(path: &Path, now_ms: u64) -> Result<Self, StateError> {
        weir_core::util::create_private(path).map_err(state_err)?;
        let db = redb::Database::create(path).map_err(state_err)?;
        let mut loaded = Loaded::new();
        {
            let tx = db.begin_write().map_err(state_err)?;
            // Creates the table on first use.
            tx.open_table(TABLE).map_err(state_err)?;
            tx.commit().map_err(state_err)?;
        }
        let tx = db.begin_read().map_err(state_err)?;
        let table = tx.open_table(TABLE).map_err(state_err)?;
        for row in table.iter().map_err(state_err)? {
            let (k, v) = row.map_err(state_err)?;
            let (key, raw) = (k.value(), v.value());
            let Some((tenant, scoped)) = key.split_once('\0') else {
                continue;
            };
            if raw.len() < 8 {
                continue;
            }
            let mut exp = [0u8; 8];
            exp.copy_from_slice(&raw[..8]);
            let expiry = match u64::from_le_bytes(exp) {
                0 => None,
                e => Some(e),
            };
            if expiry.is_some_and(|e| e <= now_ms) {
                continue;
            }
            loaded.entry(tenant.to_owned()).or_default().push((
                scoped.to_owned(),
                raw[8..].to_vec(),
                expiry,
            ));
        }
        Ok(Self {
            db: Some(Arc::new(db)),
            tenants: Mutex::new(HashMap::new()),
            loaded: Mutex::new(loaded),
        })
    }

    /// The state of one tenant, created on first use with the given cap.
    pub fn tenant(&self, tenant: &str, cap_bytes: usize) -> Arc<TenantState> {
        let mut tenants = lock(&self.tenants);
        tenants
            .entry(tenant.to_owned())
            .or_insert_with(|| {
                let mut entries = Entries::default();
                for (k, v, exp) in lock(&self.loaded).remove(tenant).unwrap_or_default() {
                    entries.insert(k, v, exp);
                }
                Arc::new(TenantState {
                    tenant: tenant.to_owned(),
                    cap_bytes,
                    db: self.db.clone(),
                    inner: Mutex::new(entries),
                })
            })
            .clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the map half-updated in a way that
    // matters more than losing the router: keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Dirty = HashMap<String, Option<(Vec<u8>, Option<u64>)>>;

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<String, (Vec<u8>, Option<u64>)>,
    bytes: usize,
    /// Changes not yet persisted: `None` means deleted.
    dirty: Dirty,
    /// Keys with an expiry, soonest first: a sweep takes only what has expired instead
    /// of reading every entry (which, on a full tenant, it did on every write).
    by_expiry: BTreeSet<(u64, String)>,
}

impl Entries {
    fn remove(&mut self, key: &str) {
        if let Some((v, exp)) = self.map.remove(key) {
            self.bytes -= key.len() + v.len();
            if let Some(exp) = exp {
                self.by_expiry.remove(&(exp, key.to_owned()));
            }
            self.dirty.insert(key.to_owned(), None);
        }
    }

    fn insert(&mut self, key: String, value: Vec<u8>, expiry: Option<u64>) {
        if let Some(exp) = expiry {
            self.by_expiry.insert((exp, key.clone()));
        }
        self.bytes += key.len() + value.len();
        self.map.insert(key, (value, expiry));
    }

    /// Removes every expired entry: only those, soonest first.
    fn sweep(&mut self, now_ms: u64) {
        while let Some((exp, key)) = self.by_expiry.first().cloned() {
            if exp > now_ms {
                break;
            }
            self.remove(&key);
        }
    }
}

/// One tenant's state.
#[derive(Debug)]
pub struct TenantState {
    tenant: String,
    cap_bytes: usize,
    db: Option<Arc<redb::Database>>,
    inner: Mutex<Entries>,
}

impl TenantState {
    /// Reads a key; `None` when absent or expired.
    pub fn get(&self, key: &str, now_ms: u64) -> Option<Vec<u8>> {
        let mut e = lock(&self.inner);
        match e.map.get(key) {
            Some((_, Some(exp))) if *exp <= now_ms => {
                e.remove(key);
                None
            }
            Some((v, _)) => Some(v.clone()),
            None => None,
        }
    }

    /// Writes a key, failing when the tenant's cap would be exceeded even after expired
    /// entries are swept.
    pub fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<(), String> {
        let mut e = lock(&self.inner);
        let old = e.map.get(key).map_or(0, |(v, _)| key.len() + v.len());
        let size = key.len() + value.len();
        if e.bytes - old + size > self.cap_bytes {
            e.sweep(now_ms);
            let old = e.map.get(key).map_or(0, |(v, _)| key.len() + v.len());
            if e.bytes - old + size > self.cap_bytes {
                return Err(format!(
                    "tenant state cap of {} bytes reached",
                    self.cap_bytes
                ));
            }
        }
        e.remove(key);
        let expiry = ttl_ms.map(|t| now_ms.saturating_add(t).max(1));
        e.dirty
            .insert(key.to_owned(), Some((value.clone(), expiry)));
        e.insert(key.to_owned(), value, expiry);
        Ok(())
    }

    /// Removes a key.
    pub fn delete(&self, key: &str) {
        lock(&self.inner).remove(key);
    }

    /// Bytes held (keys plus values).
    pub fn bytes(&self) -> usize {
        lock(&self.inner).bytes
    }

    /// Persists every change since the last flush in one transaction (no-op in memory or
    /// when nothing changed). On failure the changes stay pending for the next flush.
    pub fn flush(&self) -> Result<usize, StateError> {
        let Some(db) = &self.db else {
            lock(&self.inner).dirty.clear();
            return Ok(0);
        };
        let dirty = std::mem::take(&mut lock(&self.inner).dirty);
        if dirty.is_empty() {
            return Ok(0);
        }
        let n = dirty.len();
        let result = (|| {
            let tx = db.begin_write().map_err(state_err)?;
            {
                let mut table = tx.open_table(TABLE).map_err(state_err)?;
                let mut row_key = String::new();
                let mut row = Vec::new();
                for (key, change) in &dirty {
                    row_key.clear();
                    row_key.push_str(&self.tenant);
                    row_key.push('\0');
                    row_key.push_str(key);
                    match change {
                        Some((value, expiry)) => {
                            row.clear();
                            row.extend_from_slice(&expiry.unwrap_or(0).to_le_bytes());
                            row.extend_from_slice(value);
                            table
                                .insert(row_key.as_str(), row.as_slice())
                                .map_err(state_err)?;
                        }
                        None => {
                            table.remove(row_key.as_str()).map_err(state_err)?;
                        }
                    }
                }
            }
            tx.commit().map_err(state_err)
        })();
        if let Err(e) = result {
            // Keep the changes (newer ones win) for the next attempt.
            let mut inner = lock(&self.inner);
            for (k, v) in dirty {
                inner.dirty.entry(k).or_insert(v);
            }
            return Err(e);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_cap() {
        let store = StateStore::in_memory();
        let t = store.tenant("a", 32);
        t.set("k", b"v".to_vec(), Some(10), 100).expect("fits");
        assert_eq!(t.get("k", 105), Some(b"v".to_vec()));
        assert_eq!(t.get("k", 110), None);
        assert_eq!(t.bytes(), 0);
        t.set("big", vec![0; 20], Some(5), 0).expect("fits");
        assert!(t.set("other", vec![0; 20], None, 1).is_err());
        t.set("other", vec![0; 20], None, 10)
            .expect("expired entry swept");
        t.set("other", vec![0; 25], None, 10)
            .expect("replacing counts the old size");
        assert_eq!(store.tenant("a", 0).bytes(), t.bytes());
    }

    #[test]
    fn state_survives_reopening_and_expired_entries_do_not_come_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        {
            let store = StateStore::open(&path, 0).expect("open");
            let t = store.tenant("acme", 1 << 20);
            t.set("dedup\0k1", b"1".to_vec(), None, 100).expect("set");
            t.set("dedup\0k2", b"2".to_vec(), Some(50), 100)
                .expect("set");
            t.set("dedup\0gone", b"x".to_vec(), None, 100).expect("set");
            assert_eq!(t.flush().expect("flush"), 3);
            t.delete("dedup\0gone");
            assert_eq!(t.flush().expect("flush"), 1);
            store
                .tenant("globex", 1 << 20)
                .set("f\0k", b"g".to_vec(), None, 100)
                .expect("set");
            store.tenant("globex", 1 << 20).flush().expect("flush");
        }
        let store = StateStore::open(&path, 120).expect("reopen");
        let t = store.tenant("acme", 1 << 20);
        assert_eq!(t.get("dedup\0k1", 120), Some(b"1".to_vec()));
        assert_eq!(
            t.get("dedup\0k2", 120),
            Some(b"2".to_vec()),
            "not yet expired"
        );
        assert_eq!(t.get("dedup\0gone", 120), None);
        assert_eq!(
            store.tenant("globex", 1 << 20).get("f\0k", 120),
            Some(b"g".to_vec())
        );
        drop((t, store));
        let store = StateStore::open(&path, 1_000).expect("reopen later");
        assert_eq!(
            store.tenant("acme", 1 << 20).get("dedup\0k2", 1_000),
            None,
            "expired"
        );
    }
}
