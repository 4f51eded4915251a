//! Where the Events API keeps events: the embedded store (default) or ClickHouse, behind
//! one set of calls.

use super::ce::event_time;
use super::clickhouse::{ClickHouseStore, Narrowing};
use super::query::{count_facets, EventQuery, FacetQuery};
use super::store::{Change, EventStore, Precondition, StoreError, Stored, INDEXED_FIELDS};
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::sync::broadcast;

/// A list's result: the resourceVersion it was read at, the events, whether more matched.
pub type Listed = (u64, Vec<Arc<Stored>>, bool);

/// A snapshot for a watch: resourceVersion, events, and a receiver of later changes.
pub type Snapshot = (u64, Vec<Arc<Stored>>, broadcast::Receiver<Change>);

/// An event ranked for an EventQuery: newer first, then by namespace and name.
struct Ranked {
    time: i64,
    namespace: String,
    name: String,
}

impl Ranked {
    fn new(time: i64, stored: &Stored) -> Self {
        Self {
            time,
            namespace: stored.namespace().to_owned(),
            name: stored.name().to_owned(),
        }
    }

    /// Greater is earlier in the answer.
    fn rank(&self) -> (i64, std::cmp::Reverse<(&str, &str)>) {
        (
            self.time,
            std::cmp::Reverse((self.namespace.as_str(), self.name.as_str())),
        )
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.rank() == other.rank()
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

/// The store behind the API.
#[derive(Clone)]
pub enum Backend {
    /// redb on local disk, served from memory.
    Embedded(Arc<EventStore>),
    /// A ClickHouse table.
    ClickHouse(Arc<ClickHouseStore>),
}

impl Backend {
    /// Stores a new event.
    pub async fn create(&self, object: Map<String, Value>) -> Result<Arc<Stored>, StoreError> {
        match self {
            Backend::Embedded(s) => s.create(object).await,
            Backend::ClickHouse(s) => s.create(object).await,
        }
    }

    /// Replaces an event; with `expected_rv`, only if that is its current version.
    pub async fn update(
        &self,
        object: Map<String, Value>,
        expected_rv: Option<u64>,
    ) -> Result<Arc<Stored>, StoreError> {
        match self {
            Backend::Embedded(s) => s.update(object, expected_rv).await,
            Backend::ClickHouse(s) => s.update(object, expected_rv).await,
        }
    }

    /// Deletes an event if it meets `precondition` (else a conflict); answers it as it
    /// was.
    pub async fn delete(
        &self,
        namespace: &str,
        name: &str,
        precondition: &Precondition,
    ) -> Result<Arc<Stored>, StoreError> {
        match self {
            Backend::Embedded(s) => s.delete(namespace, name, precondition).await,
            Backend::ClickHouse(s) => s.delete(namespace, name, precondition).await,
        }
    }

    /// One event.
    pub async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Stored>>, StoreError> {
        match self {
            Backend::Embedded(s) => Ok(s.get(namespace, name)),
            Backend::ClickHouse(s) => s.get(namespace, name).await,
        }
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        match self {
            Backend::Embedded(s) => s.resource_version(),
            Backend::ClickHouse(s) => s.resource_version(),
        }
    }

    /// Events matching `narrow` (the embedded store uses its field index; ClickHouse
    /// translates it to SQL) that `keep` accepts, in (namespace, name) order after `after`,
    /// at most `limit`.
    pub async fn list(
        &self,
        narrow: &Narrowing<'_>,
        after: Option<&(String, String)>,
        limit: usize,
        keep: impl Fn(&Stored) -> bool,
    ) -> Result<Listed, StoreError> {
        match self {
            Backend::Embedded(s) => {
                let indexed = narrow
                    .fields
                    .0
                    .iter()
                    .find(|r| !r.negated && INDEXED_FIELDS.contains(&r.field.as_str()))
                    .map(|r| (r.field.as_str(), r.value.as_str()));
                Ok(s.list(narrow.namespace, after, limit, indexed, keep))
            }
            Backend::ClickHouse(s) => s.list(narrow, after, limit, keep).await,
        }
    }

    /// One page of an EventQuery's events that `keep` (the caller's scope) accepts,
    /// newest first (then namespace, name), and whether more matched.
    pub async fn query(
        &self,
        query: &EventQuery,
        scope: Option<(&str, &str)>,
        keep: impl Fn(&Stored) -> bool,
    ) -> Result<(Vec<Arc<Stored>>, bool), StoreError> {
        match self {
            Backend::Embedded(s) => {
                let narrowed = query.narrowing_fields();
                let indexed = narrowed
                    .0
                    .iter()
                    .find(|r| !r.negated && INDEXED_FIELDS.contains(&r.field.as_str()))
                    .map(|r| (r.field.as_str(), r.value.as_str()));
                // One pass keeping only the newest `offset + limit + 1` matches (a
                // bounded heap), each event's time parsed once; nothing else is collected.
                let want = query.offset.saturating_add(query.limit).saturating_add(1);
                let newest = std::cell::RefCell::new(std::collections::BinaryHeap::new());
                s.list(query.namespace.as_deref(), None, 0, indexed, |e| {
                    if query.matches(&e.object) && keep(e) {
                        let mut heap = newest.borrow_mut();
                        let time = event_time(&e.object);
                        let rank = (time, std::cmp::Reverse((e.namespace(), e.name())));
                        if heap.len() < want {
                            heap.push(std::cmp::Reverse(Ranked::new(time, e)));
                        } else if heap
                            .peek()
                            .is_some_and(|least: &std::cmp::Reverse<Ranked>| rank > least.0.rank())
                        {
                            heap.pop();
                            heap.push(std::cmp::Reverse(Ranked::new(time, e)));
                        }
                    }
                    false
                });
                let mut found: Vec<Ranked> = newest.into_inner().into_iter().map(|r| r.0).collect();
                found.sort_unstable_by(|a, b| b.cmp(a));
                let more = found.len() > query.offset.saturating_add(query.limit);
                let page = found
                    .iter()
                    .skip(query.offset)
                    .take(query.limit)
                    .filter_map(|r| s.get(&r.namespace, &r.name))
                    .collect();
                Ok((page, more))
            }
            Backend::ClickHouse(s) => s.query(query, scope, keep).await,
        }
    }

    /// The value counts of an EventFacetQuery over the events `keep` accepts (on
    /// ClickHouse: the events of `scope`, counted in SQL).
    pub async fn facets(
        &self,
        query: &FacetQuery,
        scope: Option<(&str, &str)>,
        keep: impl Fn(&Stored) -> bool,
    ) -> Result<Vec<Vec<(String, u64)>>, StoreError> {
        match self {
            Backend::Embedded(s) => {
                let (_, found, _) = s.list(None, None, usize::MAX, None, |e| {
                    query.in_range(&e.object) && keep(e)
                });
                Ok(count_facets(query, found.iter().map(|e| &e.object)))
            }
            Backend::ClickHouse(s) => s.facets(query, scope).await,
        }
    }

    /// Changes after `rv` and a receiver of the ones to come, or `Err(oldest)`.
    pub fn watch_from(&self, rv: u64) -> Result<(Vec<Change>, broadcast::Receiver<Change>), u64> {
        match self {
            Backend::Embedded(s) => s.watch_from(rv),
            Backend::ClickHouse(s) => s.watch_from(rv),
        }
    }

    /// The events a watch starts with and a receiver of later changes.
    pub async fn snapshot_and_watch(&self, narrow: &Narrowing<'_>) -> Result<Snapshot, StoreError> {
        match self {
            Backend::Embedded(s) => Ok(s.snapshot_and_watch()),
            Backend::ClickHouse(s) => s.snapshot_and_watch(narrow).await,
        }
    }
}
