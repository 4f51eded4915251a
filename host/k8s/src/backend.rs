//! Where the Events API keeps events: the embedded store (default) or ClickHouse, behind
//! one set of calls.

use super::clickhouse::{ClickHouseStore, Narrowing};
use super::query::{count_facets, event_time, EventQuery, FacetQuery};
use super::store::{Change, EventStore, Precondition, StoreError, Stored, INDEXED_FIELDS};
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::sync::broadcast;

/// A list's result: the resourceVersion it was read at, the events, whether more matched.
pub type Listed = (u64, Vec<Arc<Stored>>, bool);

/// A snapshot for a watch: resourceVersion, events, and a receiver of later changes.
pub type Snapshot = (u64, Vec<Arc<Stored>>, broadcast::Receiver<Change>);

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
                let indexed = query
                    .fields
                    .0
                    .iter()
                    .find(|r| !r.negated && INDEXED_FIELDS.contains(&r.field.as_str()))
                    .map(|r| (r.field.as_str(), r.value.as_str()));
                let (_, mut found, _) =
                    s.list(query.namespace.as_deref(), None, usize::MAX, indexed, |e| {
                        query.matches(&e.object) && keep(e)
                    });
                found.sort_by_cached_key(|e| std::cmp::Reverse(event_time(&e.object)));
                let more = found.len() > query.offset.saturating_add(query.limit);
                let page = found
                    .into_iter()
                    .skip(query.offset)
                    .take(query.limit)
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
