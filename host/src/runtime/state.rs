//! Per-tenant key-value state with expiry and a size cap, for stateful filters
//! (deduplication, rate limiting, aggregation).
//!
//! Kept in memory for now; keys are namespaced by filter so two filters of one tenant do
//! not collide.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// All tenants' state.
#[derive(Debug, Default)]
pub struct StateStore {
    tenants: Mutex<HashMap<String, Arc<TenantState>>>,
}

impl StateStore {
    /// The state of one tenant, created on first use with the given cap.
    pub fn tenant(&self, tenant: &str, cap_bytes: usize) -> Arc<TenantState> {
        let mut tenants = lock(&self.tenants);
        tenants
            .entry(tenant.to_owned())
            .or_insert_with(|| {
                Arc::new(TenantState {
                    cap_bytes,
                    inner: Mutex::new(Entries::default()),
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

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<String, (Vec<u8>, Option<u64>)>,
    bytes: usize,
}

impl Entries {
    fn remove(&mut self, key: &str) {
        if let Some((v, _)) = self.map.remove(key) {
            self.bytes -= key.len() + v.len();
        }
    }

    fn sweep(&mut self, now_ms: u64) {
        let expired: Vec<String> = self
            .map
            .iter()
            .filter(|(_, (_, exp))| exp.is_some_and(|e| e <= now_ms))
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.remove(&k);
        }
    }
}

/// One tenant's state.
#[derive(Debug)]
pub struct TenantState {
    cap_bytes: usize,
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
        e.remove(key);
        let size = key.len() + value.len();
        if e.bytes + size > self.cap_bytes {
            e.sweep(now_ms);
            if e.bytes + size > self.cap_bytes {
                return Err(format!(
                    "tenant state cap of {} bytes reached",
                    self.cap_bytes
                ));
            }
        }
        e.bytes += size;
        e.map.insert(
            key.to_owned(),
            (value, ttl_ms.map(|t| now_ms.saturating_add(t))),
        );
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_cap() {
        let store = StateStore::default();
        let t = store.tenant("a", 32);
        t.set("k", b"v".to_vec(), Some(10), 100).expect("fits");
        assert_eq!(t.get("k", 105), Some(b"v".to_vec()));
        assert_eq!(t.get("k", 110), None);
        assert_eq!(t.bytes(), 0);
        t.set("big", vec![0; 20], Some(5), 0).expect("fits");
        assert!(t.set("other", vec![0; 20], None, 1).is_err());
        t.set("other", vec![0; 20], None, 10)
            .expect("expired entry swept");
        assert_eq!(store.tenant("a", 0).bytes(), t.bytes());
    }
}
