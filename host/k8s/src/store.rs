//! The embedded event store: durable on local disk (redb), served from memory.
//!
//! Every change gets the next resourceVersion (a global counter, kept across restarts with
//! the objects). One writer thread applies changes in groups — one transaction, one fsync
//! per group — so concurrent creates share the disk's cost. Readers never wait for the
//! disk: lists read an in-memory map (all events, by namespace and name), watches read a
//! bounded history of recent changes and a broadcast of new ones. A watch from a version
//! older than the history is answered `410 Expired`, which clients answer by re-listing.
//!
//! Retention: events not changed for `retention` are deleted (a DELETED watch event each),
//! and beyond `max_events` the least recently changed go first.
//!
//! redb was chosen because it is pure Rust, crash-safe (copy-on-write B-trees with
//! checksummed commits), already used by weir for filter state, and fast enough that the
//! memory map, not the disk, bounds reads.

use super::convert::{meta_str, now_ms};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};

/// Events by resourceVersion: a group of writes appends at the end of the tree instead of
/// dirtying a page per event across it. Values are [`Record`]s without `rv`.
const EVENTS_BY_RV: TableDefinition<u64, &[u8]> = TableDefinition::new("events_by_rv");
/// The first layout (by "namespace/name"), migrated to [`EVENTS_BY_RV`] when opened.
const EVENTS_BY_NAME: TableDefinition<&str, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// An event of that name exists.
    #[error("events \"{0}\" already exists")]
    AlreadyExists(String),
    /// No event of that name.
    #[error("events \"{0}\" not found")]
    NotFound(String),
    /// The caller's resourceVersion is not the current one.
    #[error("Operation cannot be fulfilled on events \"{0}\": the object has been modified; please apply your changes to the latest version and try again")]
    Conflict(String),
    /// The disk failed.
    #[error("event store: {0}")]
    Storage(String),
}

/// A stored event.
#[derive(Debug)]
pub struct Stored {
    /// Its resourceVersion.
    pub rv: u64,
    /// The core/v1 object, `metadata.resourceVersion` included.
    pub object: Map<String, Value>,
    /// When it was last written, ms since the epoch.
    pub written_ms: i64,
    /// Its JSON in each API version, made once when first needed (a burst to a thousand
    /// watchers serializes each event once, not once per watcher).
    json: [std::sync::OnceLock<bytes::Bytes>; 3],
}

impl Stored {
    /// A stored event.
    pub fn new(rv: u64, object: Map<String, Value>, written_ms: i64) -> Self {
        Self {
            rv,
            object,
            written_ms,
            json: Default::default(),
        }
    }

    /// Its JSON as `version` shows it.
    pub fn json(&self, version: super::convert::ApiVersion) -> &bytes::Bytes {
        let slot = match version {
            super::convert::ApiVersion::Core => &self.json[0],
            super::convert::ApiVersion::Events => &self.json[1],
            super::convert::ApiVersion::Activity => &self.json[2],
        };
        slot.get_or_init(|| {
            serde_json::to_vec(&super::convert::Versioned(&self.object, version))
                .unwrap_or_default()
                .into()
        })
    }

    /// Its namespace.
    pub fn namespace(&self) -> &str {
        meta_str(&self.object, "namespace")
    }
    /// Its name.
    pub fn name(&self) -> &str {
        meta_str(&self.object, "name")
    }
}

/// What a delete requires of the event it deletes (Kubernetes' delete preconditions):
/// an event that no longer meets it is not deleted, and the delete answers
/// [`StoreError::Conflict`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Precondition {
    /// The uid it must have (another uid is another event of the same name).
    pub uid: Option<String>,
    /// The resourceVersion it must have.
    pub rv: Option<u64>,
}

impl Precondition {
    /// None: whatever event has the name.
    #[cfg(test)]
    pub fn none() -> Self {
        Self::default()
    }

    /// `stored` as it is: its uid and resourceVersion.
    pub fn unchanged(stored: &Stored) -> Self {
        Self {
            uid: Some(meta_str(&stored.object, "uid").to_owned()),
            rv: Some(stored.rv),
        }
    }

    /// Whether `stored` meets it.
    pub fn holds(&self, stored: &Stored) -> bool {
        self.uid
            .as_deref()
            .is_none_or(|uid| uid == meta_str(&stored.object, "uid"))
            && self.rv.is_none_or(|rv| rv == stored.rv)
    }
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created.
    Added,
    /// Replaced.
    Modified,
    /// Deleted (the object as it was).
    Deleted,
}

impl ChangeKind {
    /// The watch event type.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
            ChangeKind::Deleted => "DELETED",
        }
    }
}

/// One change, as watchers see it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// What happened.
    pub kind: ChangeKind,
    /// The object after the change (before it, for deletions, with the deletion's rv).
    pub event: Arc<Stored>,
}

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Events unchanged for this long are deleted.
    pub retention: Duration,
    /// The most events kept.
    pub max_events: usize,
    /// Recent changes kept for watches resuming from a resourceVersion.
    pub watch_history: usize,
}

type Key = (String, String);

/// Field labels with an equality index: selective ones that clients filter by (what an
/// object's events are, `kubectl describe`, `kubectl events --for`).
pub const INDEXED_FIELDS: [&str; 3] = ["involvedObject.name", "involvedObject.uid", "reason"];

/// Keys of events by (indexed field label, value). Hash sets, not ordered sets: a write
/// costs a hash per field instead of a dozen key comparisons in a set that may hold most
/// events (`reason=Started`); a list sorts the keys it matched.
#[derive(Default)]
struct FieldIndex(HashMap<(&'static str, String), std::collections::HashSet<Arc<Key>>>);

impl FieldIndex {
    fn add(&mut self, key: &Key, stored: &Stored) {
        let shared = Arc::new(key.clone());
        for label in INDEXED_FIELDS {
            let value = super::convert::field(&stored.object, label);
            match self.0.get_mut(&(label, value.to_owned())) {
                Some(keys) => {
                    keys.insert(shared.clone());
                }
                None => {
                    self.0
                        .insert((label, value.to_owned()), [shared.clone()].into());
                }
            }
        }
    }

    fn remove(&mut self, key: &Key, stored: &Stored) {
        for label in INDEXED_FIELDS {
            let value = super::convert::field(&stored.object, label);
            let entry = (label, value.to_owned());
            if let Some(keys) = self.0.get_mut(&entry) {
                keys.remove(key);
                if keys.is_empty() {
                    self.0.remove(&entry);
                }
            }
        }
    }

    /// The keys with this field value after `start`, in order.
    fn sorted(&self, label: &'static str, value: &str, start: &std::ops::Bound<Key>) -> Vec<&Key> {
        use std::ops::{Bound, RangeBounds};
        let Some(keys) = self.0.get(&(label, value.to_owned())) else {
            return Vec::new();
        };
        let range = (start.clone(), Bound::Unbounded);
        let mut out: Vec<&Key> = keys
            .iter()
            .map(|k| &**k)
            .filter(|k| range.contains(*k))
            .collect();
        out.sort_unstable();
        out
    }
}

struct Inner {
    events: BTreeMap<Key, Arc<Stored>>,
    index: FieldIndex,
    /// Keys by the resourceVersion of their last write (oldest first), for the size cap.
    by_rv: BTreeMap<u64, Key>,
    rv: u64,
    history: VecDeque<Change>,
    /// Every change after this resourceVersion is in `history`.
    history_floor: u64,
}

/// An object to write and its JSON without `resourceVersion`, encoded by the caller's task
/// (in parallel, off the writer thread).
struct Prepared {
    object: Map<String, Value>,
    json: Vec<u8>,
}

impl Prepared {
    fn new(mut object: Map<String, Value>) -> Result<Self, StoreError> {
        if let Some(Value::Object(meta)) = object.get_mut("metadata") {
            meta.remove("resourceVersion");
        }
        let json = serde_json::to_vec(&object).map_err(|e| StoreError::Storage(e.to_string()))?;
        Ok(Self { object, json })
    }
}

/// A change requested of the writer.
enum Op {
    Create(Prepared),
    Update {
        object: Prepared,
        expected_rv: Option<u64>,
    },
    Delete {
        namespace: String,
        name: String,
        precondition: Precondition,
    },
    Expire,
}

/// What an operation answers.
type Outcome = Result<Arc<Stored>, StoreError>;
type Reply = oneshot::Sender<Outcome>;

/// The store.
pub struct EventStore {
    inner: Arc<RwLock<Inner>>,
    ops: std::sync::mpsc::SyncSender<(Op, Option<Reply>)>,
    changes: broadcast::Sender<Change>,
}

impl EventStore {
    /// Opens (creating) the store at `path` and starts its writer thread.
    pub fn open(path: &Path, settings: StoreSettings) -> Result<Arc<Self>, StoreError> {
        let storage =
            |e: &dyn std::fmt::Display| StoreError::Storage(format!("{}: {e}", path.display()));
        weir_core::util::create_private(path).map_err(|e| storage(&e))?;
        let db = redb::Database::create(path).map_err(|e| storage(&e))?;
        let mut events = BTreeMap::new();
        let mut index = FieldIndex::default();
        let mut by_rv = BTreeMap::new();
        let mut rv = 0;
        migrate_by_name(&db).map_err(|e| storage(&e))?;
        {
            let txn = db.begin_write().map_err(|e| storage(&e))?;
            txn.open_table(EVENTS_BY_RV).map_err(|e| storage(&e))?;
            txn.open_table(META).map_err(|e| storage(&e))?;
            txn.commit().map_err(|e| storage(&e))?;
            let read = db.begin_read().map_err(|e| storage(&e))?;
            let meta = read.open_table(META).map_err(|e| storage(&e))?;
            if let Some(v) = meta.get("rv").map_err(|e| storage(&e))? {
                rv = v.value();
            }
            let table = read.open_table(EVENTS_BY_RV).map_err(|e| storage(&e))?;
            for entry in table.iter().map_err(|e| storage(&e))? {
                let (key, value) = entry.map_err(|e| storage(&e))?;
                let Ok(mut record) = serde_json::from_slice::<Record>(value.value()) else {
                    tracing::error!("event store: skipping an unreadable record");
                    continue;
                };
                let event_rv = key.value();
                set_rv(&mut record.object, event_rv);
                let stored = Arc::new(Stored::new(event_rv, record.object, record.written_ms));
                let k = (stored.namespace().to_owned(), stored.name().to_owned());
                by_rv.insert(stored.rv, k.clone());
                index.add(&k, &stored);
                events.insert(k, stored);
            }
        }
        tracing::info!(
            events = events.len(),
            resource_version = rv,
            "event store opened"
        );
        let inner = Arc::new(RwLock::new(Inner {
            events,
            index,
            by_rv,
            rv,
            history: VecDeque::new(),
            history_floor: rv,
        }));
        let (tx, rx) = std::sync::mpsc::sync_channel(4096);
        let (changes, _) = broadcast::channel(settings.watch_history.max(1024));
        let writer = Writer {
            db,
            inner: inner.clone(),
            changes: changes.clone(),
            settings: settings.clone(),
        };
        std::thread::Builder::new()
            .name("weir-event-store".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| storage(&e))?;
        let store = Arc::new(Self {
            inner,
            ops: tx,
            changes,
        });
        Ok(store)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    async fn submit(&self, op: Op) -> Result<Arc<Stored>, StoreError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || StoreError::Storage("the store's writer stopped".into());
        // The queue is bounded: when it is full the caller waits, off the async threads.
        match self.ops.try_send((op, Some(tx))) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(item)) => {
                let ops = self.ops.clone();
                tokio::task::spawn_blocking(move || ops.send(item))
                    .await
                    .map_err(|e| StoreError::Storage(e.to_string()))?
                    .map_err(|_| stopped())?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(stopped()),
        }
        rx.await.map_err(|_| stopped())?
    }

    /// Stores a new event (core/v1 form with namespace and name set).
    pub async fn create(&self, object: Map<String, Value>) -> Result<Arc<Stored>, StoreError> {
        self.submit(Op::Create(Prepared::new(object)?)).await
    }

    /// Replaces an event; with `expected_rv`, only if that is its current version.
    pub async fn update(
        &self,
        object: Map<String, Value>,
        expected_rv: Option<u64>,
    ) -> Result<Arc<Stored>, StoreError> {
        self.submit(Op::Update {
            object: Prepared::new(object)?,
            expected_rv,
        })
        .await
    }

    /// Deletes an event if it meets `precondition` (else [`StoreError::Conflict`]);
    /// answers it as it was.
    pub async fn delete(
        &self,
        namespace: &str,
        name: &str,
        precondition: &Precondition,
    ) -> Result<Arc<Stored>, StoreError> {
        self.submit(Op::Delete {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            precondition: precondition.clone(),
        })
        .await
    }

    /// One event.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Stored>> {
        self.read()
            .events
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.read().rv
    }

    /// Events of a namespace (or all), in (namespace, name) order, after `after`, that
    /// `keep` accepts, at most `limit`; with the resourceVersion they were read at and
    /// whether more matched. With `indexed = Some((label, value))` (a label of
    /// [`INDEXED_FIELDS`]), only events whose field equals the value are visited.
    pub fn list(
        &self,
        namespace: Option<&str>,
        after: Option<&Key>,
        limit: usize,
        indexed: Option<(&str, &str)>,
        keep: impl Fn(&Stored) -> bool,
    ) -> (u64, Vec<Arc<Stored>>, bool) {
        use std::ops::Bound;
        let inner = self.read();
        let start = match (after, namespace) {
            (Some(k), _) => Bound::Excluded(k.clone()),
            (None, Some(ns)) => Bound::Included((ns.to_owned(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let mut out = Vec::new();
        let mut more = false;
        let mut visit = |ns: &str, stored: &Arc<Stored>| -> bool {
            if namespace.is_some_and(|n| n != ns) {
                return false;
            }
            if keep(stored) {
                if out.len() == limit {
                    more = true;
                    return false;
                }
                out.push(stored.clone());
            }
            true
        };
        match indexed.and_then(|(label, value)| {
            let label = INDEXED_FIELDS.iter().find(|l| **l == label)?;
            Some((*label, value))
        }) {
            Some((label, value)) => {
                for k in inner.index.sorted(label, value, &start) {
                    if let Some(stored) = inner.events.get(k) {
                        if !visit(&k.0, stored) {
                            break;
                        }
                    }
                }
            }
            None => {
                for ((ns, _), stored) in inner.events.range((start, Bound::Unbounded)) {
                    if !visit(ns, stored) {
                        break;
                    }
                }
            }
        }
        (inner.rv, out, more)
    }

    /// Changes after `rv` and a receiver of the ones to come, or `Err(oldest)` when `rv`
    /// is older than the history.
    pub fn watch_from(&self, rv: u64) -> Result<(Vec<Change>, broadcast::Receiver<Change>), u64> {
        let inner = self.read();
        if rv < inner.history_floor {
            return Err(inner.history_floor);
        }
        let backlog = inner
            .history
            .iter()
            .filter(|c| c.rv > rv)
            .cloned()
            .collect();
        // Subscribed under the read lock: the writer publishes under the write lock, so
        // nothing falls between the backlog and the receiver.
        Ok((backlog, self.changes.subscribe()))
    }

    /// Every current event and a receiver of later changes (for watches from "" or "0").
    pub fn snapshot_and_watch(&self) -> (u64, Vec<Arc<Stored>>, broadcast::Receiver<Change>) {
        let inner = self.read();
        (
            inner.rv,
            inner.events.values().cloned().collect(),
            self.changes.subscribe(),
        )
    }
}

/// An event as written to disk (in [`EVENTS_BY_RV`] its rv is the key, `rv` is absent).
#[derive(serde::Deserialize)]
struct Record {
    #[serde(default)]
    rv: u64,
    written_ms: i64,
    object: Map<String, Value>,
}

/// Moves records of the first layout (keyed by name) into [`EVENTS_BY_RV`], once.
fn migrate_by_name(db: &redb::Database) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let txn = db.begin_write().map_err(|x| e(&x))?;
    let moved = {
        let old = match txn.open_table(EVENTS_BY_NAME) {
            Ok(t) => t,
            Err(x) => return Err(e(&x)),
        };
        let mut new = txn.open_table(EVENTS_BY_RV).map_err(|x| e(&x))?;
        let mut moved = 0usize;
        for entry in old.iter().map_err(|x| e(&x))? {
            let (_, value) = entry.map_err(|x| e(&x))?;
            let Ok(mut record) = serde_json::from_slice::<Record>(value.value()) else {
                tracing::error!("event store: skipping an unreadable record while migrating");
                continue;
            };
            if let Some(Value::Object(meta)) = record.object.get_mut("metadata") {
                meta.remove("resourceVersion");
            }
            let json = serde_json::to_vec(&record.object).map_err(|x| e(&x))?;
            new.insert(record.rv, record_bytes(record.written_ms, &json).as_slice())
                .map_err(|x| e(&x))?;
            moved += 1;
        }
        moved
    };
    txn.delete_table(EVENTS_BY_NAME).map_err(|x| e(&x))?;
    txn.commit().map_err(|x| e(&x))?;
    if moved > 0 {
        tracing::info!(
            events = moved,
            "event store: migrated to the by-resourceVersion layout"
        );
    }
    Ok(())
}

/// A record's bytes around an object's JSON.
fn record_bytes(written_ms: i64, object_json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(object_json.len() + 40);
    out.extend_from_slice(b"{\"written_ms\":");
    out.extend_from_slice(written_ms.to_string().as_bytes());
    out.extend_from_slice(b",\"object\":");
    out.extend_from_slice(object_json);
    out.push(b'}');
    out
}

struct Writer {
    db: redb::Database,
    inner: Arc<RwLock<Inner>>,
    changes: broadcast::Sender<Change>,
    settings: StoreSettings,
}

impl Writer {
    /// Applies queued operations in groups until the store is dropped; retention runs
    /// at start and once a minute.
    fn run(self, rx: std::sync::mpsc::Receiver<(Op, Option<Reply>)>) {
        use std::sync::mpsc::RecvTimeoutError;
        const RETENTION_EVERY: Duration = Duration::from_secs(60);
        let mut next_expire = std::time::Instant::now();
        loop {
            let wait = next_expire.saturating_duration_since(std::time::Instant::now());
            let mut batch = match rx.recv_timeout(wait) {
                Ok(first) => vec![first],
                Err(RecvTimeoutError::Timeout) => Vec::new(),
                Err(RecvTimeoutError::Disconnected) => return,
            };
            while batch.len() < 2048 {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            if std::time::Instant::now() >= next_expire {
                batch.push((Op::Expire, None));
                next_expire = std::time::Instant::now() + RETENTION_EVERY;
            }
            self.apply(batch);
        }
    }

    /// Applies a group of operations in one transaction, then publishes them.
    fn apply(&self, batch: Vec<(Op, Option<Reply>)>) {
        let mut group = Staging {
            rv: self.inner.read().unwrap_or_else(|e| e.into_inner()).rv,
            staged: HashMap::new(),
            changes: Vec::new(),
            bodies: HashMap::new(),
        };
        let mut replies: Vec<(Option<Reply>, Outcome)> = Vec::new();
        let now = now_ms();
        let current =
            |staged: &HashMap<Key, Option<Arc<Stored>>>, k: &Key| -> Option<Arc<Stored>> {
                match staged.get(k) {
                    Some(s) => s.clone(),
                    None => self
                        .inner
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .events
                        .get(k)
                        .cloned(),
                }
            };
        let mut expire = false;
        for (op, reply) in batch {
            let result = match op {
                Op::Expire => {
                    expire = true;
                    continue;
                }
                Op::Create(object) => {
                    let k = key_of_object(&object.object);
                    if current(&group.staged, &k).is_some() {
                        Err(StoreError::AlreadyExists(k.1))
                    } else {
                        Ok(group.write(k, object, ChangeKind::Added, now))
                    }
                }
                Op::Update {
                    object,
                    expected_rv,
                } => {
                    let k = key_of_object(&object.object);
                    match current(&group.staged, &k) {
                        None => Err(StoreError::NotFound(k.1)),
                        Some(old) if expected_rv.is_some_and(|e| e != old.rv) => {
                            Err(StoreError::Conflict(k.1))
                        }
                        Some(_) => Ok(group.write(k, object, ChangeKind::Modified, now)),
                    }
                }
                Op::Delete {
                    namespace,
                    name,
                    precondition,
                } => {
                    let k = (namespace, name);
                    match current(&group.staged, &k) {
                        None => Err(StoreError::NotFound(k.1)),
                        Some(old) if !precondition.holds(&old) => Err(StoreError::Conflict(k.1)),
                        Some(old) => {
                            group.delete(k, &old);
                            Ok(old)
                        }
                    }
                }
            };
            replies.push((reply, result));
        }
        // Retention and the size cap delete too.
        {
            let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
            let cutoff = now - self.settings.retention.as_millis() as i64;
            let mut victims: Vec<Arc<Stored>> = Vec::new();
            if expire {
                victims.extend(
                    inner
                        .events
                        .values()
                        .filter(|s| s.written_ms < cutoff)
                        .cloned(),
                );
            }
            let added = group
                .staged
                .iter()
                .filter(|(k, v)| v.is_some() && !inner.events.contains_key(*k))
                .count();
            let removed = group
                .staged
                .iter()
                .filter(|(k, v)| v.is_none() && inner.events.contains_key(*k))
                .count();
            let after = inner.events.len() + added - removed.min(inner.events.len() + added);
            if after > self.settings.max_events {
                let excess = after - self.settings.max_events;
                victims.extend(
                    inner
                        .by_rv
                        .values()
                        .filter_map(|k| inner.events.get(k))
                        .filter(|s| !group.staged.contains_key(&key_of_object(&s.object)))
                        .take(excess)
                        .cloned(),
                );
            }
            for old in victims {
                let k = key_of_object(&old.object);
                if !group.staged.contains_key(&k) {
                    group.delete(k, &old);
                }
            }
        }
        let Staging {
            rv,
            staged,
            changes,
            bodies,
        } = group;
        if staged.is_empty() {
            for (reply, result) in replies {
                if let Some(r) = reply {
                    let _ = r.send(result);
                }
            }
            return;
        }
        if let Err(e) = self.persist(&staged, bodies, rv) {
            tracing::error!("event store: {e}");
            for (reply, result) in replies {
                if let Some(r) = reply {
                    let _ = r.send(result.and(Err(e.clone())));
                }
            }
            return;
        }
        // Durable: publish to memory and watchers.
        {
            let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
            for (k, state) in staged {
                if let Some(old) = inner.events.remove(&k) {
                    inner.by_rv.remove(&old.rv);
                    inner.index.remove(&k, &old);
                }
                if let Some(new) = state {
                    inner.by_rv.insert(new.rv, k.clone());
                    inner.index.add(&k, &new);
                    inner.events.insert(k, new);
                }
            }
            inner.rv = rv;
            for change in changes {
                inner.history.push_back(change.clone());
                let _ = self.changes.send(change);
            }
            while inner.history.len() > self.settings.watch_history {
                if let Some(old) = inner.history.pop_front() {
                    inner.history_floor = old.rv;
                }
            }
        }
        for (reply, result) in replies {
            if let Some(r) = reply {
                let _ = r.send(result);
            }
        }
    }

    /// Writes a group in one transaction: each changed event's old record goes, its new
    /// one is appended under its new resourceVersion.
    fn persist(
        &self,
        staged: &HashMap<Key, Option<Arc<Stored>>>,
        mut bodies: HashMap<u64, Vec<u8>>,
        rv: u64,
    ) -> Result<(), StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::Storage(e.to_string());
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
            let mut table = txn.open_table(EVENTS_BY_RV).map_err(|e| err(&e))?;
            for (k, state) in staged {
                if let Some(old) = inner.events.get(k) {
                    table.remove(old.rv).map_err(|e| err(&e))?;
                }
                if let Some(s) = state {
                    let json = match bodies.remove(&s.rv) {
                        Some(json) => json,
                        None => Prepared::new(s.object.clone())?.json,
                    };
                    table
                        .insert(s.rv, record_bytes(s.written_ms, &json).as_slice())
                        .map_err(|e| err(&e))?;
                }
            }
            let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
            meta.insert("rv", rv).map_err(|e| err(&e))?;
        }
        txn.commit().map_err(|e| err(&e))
    }
}

/// The changes of one group, before they are durable: key → new state (None = deleted),
/// the watch events they make, and the last resourceVersion given out.
struct Staging {
    rv: u64,
    staged: HashMap<Key, Option<Arc<Stored>>>,
    changes: Vec<Change>,
    /// The JSON (without resourceVersion) of staged objects, by their new rv.
    bodies: HashMap<u64, Vec<u8>>,
}

impl Staging {
    /// Stages `object` as the new state of `k`.
    fn write(&mut self, k: Key, prepared: Prepared, kind: ChangeKind, now: i64) -> Arc<Stored> {
        let Prepared { mut object, json } = prepared;
        self.rv += 1;
        self.bodies.insert(self.rv, json);
        set_rv(&mut object, self.rv);
        let stored = Arc::new(Stored::new(self.rv, object, now));
        self.staged.insert(k, Some(stored.clone()));
        self.changes.push(Change {
            rv: self.rv,
            kind,
            event: stored.clone(),
        });
        stored
    }

    /// Stages the deletion of `old`.
    fn delete(&mut self, k: Key, old: &Stored) {
        self.rv += 1;
        self.staged.insert(k, None);
        let mut object = old.object.clone();
        set_rv(&mut object, self.rv);
        self.changes.push(Change {
            rv: self.rv,
            kind: ChangeKind::Deleted,
            event: Arc::new(Stored::new(self.rv, object, old.written_ms)),
        });
    }
}

/// (namespace, name) of an object.
fn key_of_object(object: &Map<String, Value>) -> Key {
    (
        meta_str(object, "namespace").to_owned(),
        meta_str(object, "name").to_owned(),
    )
}

fn set_rv(object: &mut Map<String, Value>, rv: u64) {
    if let Some(Value::Object(meta)) = object.get_mut("metadata") {
        meta.insert("resourceVersion".into(), rv.to_string().into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(ns: &str, name: &str) -> Map<String, Value> {
        json!({"metadata": {"name": name, "namespace": ns}, "reason": "Test"})
            .as_object()
            .cloned()
            .expect("object")
    }

    fn settings() -> StoreSettings {
        StoreSettings {
            retention: Duration::from_secs(3600),
            max_events: 1000,
            watch_history: 100,
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_first_layout_is_migrated_with_its_resource_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.redb");
        {
            let db = redb::Database::create(&path).expect("db");
            let txn = db.begin_write().expect("txn");
            {
                let mut t = txn.open_table(EVENTS_BY_NAME).expect("table");
                for (rv, name) in [(7u64, "a"), (9, "b")] {
                    let mut object = event("ns", name);
                    set_rv(&mut object, rv);
                    let record = json!({"rv": rv, "written_ms": now_ms(), "object": object});
                    let bytes = serde_json::to_vec(&record).expect("json");
                    t.insert(format!("ns/{name}").as_str(), bytes.as_slice())
                        .expect("insert");
                }
                let mut meta = txn.open_table(META).expect("meta");
                meta.insert("rv", 9).expect("rv");
            }
            txn.commit().expect("commit");
        }
        let store = EventStore::open(&path, settings()).expect("open");
        assert_eq!(store.get("ns", "a").expect("a").rv, 7);
        assert_eq!(
            meta_str(&store.get("ns", "b").expect("b").object, "resourceVersion"),
            "9"
        );
        let c = store.create(event("ns", "c")).await.expect("create");
        assert_eq!(c.rv, 10);
        drop(store);
        // The writer thread lets go of the file when it sees the queue closed.
        std::thread::sleep(Duration::from_millis(100));
        let store = EventStore::open(&path, settings()).expect("reopen");
        assert_eq!(store.resource_version(), 10);
        assert_eq!(store.get("ns", "c").expect("c").rv, 10);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn versions_conflicts_and_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.redb");
        let store = EventStore::open(&path, settings()).expect("open");
        let a = store.create(event("ns", "a")).await.expect("create");
        assert_eq!(a.rv, 1);
        assert_eq!(meta_str(&a.object, "resourceVersion"), "1");
        assert_eq!(
            store.create(event("ns", "a")).await.expect_err("dup"),
            StoreError::AlreadyExists("a".into())
        );
        store.create(event("other", "b")).await.expect("create");
        let stale = store.update(event("ns", "a"), Some(99)).await;
        assert_eq!(
            stale.expect_err("conflict"),
            StoreError::Conflict("a".into())
        );
        let a2 = store
            .update(event("ns", "a"), Some(1))
            .await
            .expect("update");
        assert_eq!(a2.rv, 3);
        let (rv, items, more) = store.list(Some("ns"), None, 10, None, |_| true);
        let by_reason = store.list(None, None, 10, Some(("reason", "Test")), |_| true);
        assert_eq!(by_reason.1.len(), 2);
        assert!(store
            .list(None, None, 10, Some(("reason", "Nope")), |_| true)
            .1
            .is_empty());
        assert_eq!((rv, items.len(), more), (3, 1, false));
        let (backlog, _rx) = store.watch_from(1).expect("in history");
        assert_eq!(backlog.iter().map(|c| c.rv).collect::<Vec<_>>(), vec![2, 3]);
        store
            .delete("other", "b", &Precondition::none())
            .await
            .expect("delete");
        drop(store);
        // Reopened: objects and the counter survive; history starts at the current rv.
        std::thread::sleep(Duration::from_millis(100));
        let store = EventStore::open(&path, settings()).expect("reopen");
        assert_eq!(store.resource_version(), 4);
        assert_eq!(store.get("ns", "a").expect("kept").rv, 3);
        assert!(store.get("other", "b").is_none());
        assert_eq!(store.watch_from(2).err(), Some(4));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_delete_checked_against_one_event_never_deletes_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EventStore::open(&dir.path().join("e.redb"), settings()).expect("open");
        let with_uid = |uid: &str| {
            let mut e = event("ns", "a");
            if let Some(Value::Object(meta)) = e.get_mut("metadata") {
                meta.insert("uid".into(), uid.into());
            }
            e
        };
        // The API checks the event it sees (visible to the caller), then deletes it...
        let checked = store.create(with_uid("u1")).await.expect("create");
        let precondition = Precondition::unchanged(&checked);
        // ...but meanwhile another caller deletes it and creates another of that name.
        store
            .delete("ns", "a", &Precondition::none())
            .await
            .expect("concurrent delete");
        let other = store.create(with_uid("u2")).await.expect("recreate");
        assert_eq!(
            store
                .delete("ns", "a", &precondition)
                .await
                .expect_err("stale"),
            StoreError::Conflict("a".into())
        );
        assert_eq!(store.get("ns", "a").expect("kept").rv, other.rv);
        // An update of the same event changes its resourceVersion: a conflict too.
        let updated = store.update(with_uid("u2"), None).await.expect("update");
        let before_update = Precondition::unchanged(&other);
        assert_eq!(
            store
                .delete("ns", "a", &before_update)
                .await
                .expect_err("changed"),
            StoreError::Conflict("a".into())
        );
        // A uid alone holds across updates; the current version deletes.
        let same_uid = Precondition {
            uid: Some("u2".into()),
            rv: None,
        };
        assert!(same_uid.holds(&updated));
        let gone = store
            .delete("ns", "a", &Precondition::unchanged(&updated))
            .await
            .expect("delete");
        assert_eq!(meta_str(&gone.object, "uid"), "u2");
        assert!(store.get("ns", "a").is_none());
        assert_eq!(
            store
                .delete("ns", "a", &precondition)
                .await
                .expect_err("gone"),
            StoreError::NotFound("a".into())
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_size_cap_deletes_the_oldest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EventStore::open(
            &dir.path().join("e.redb"),
            StoreSettings {
                max_events: 3,
                ..settings()
            },
        )
        .expect("open");
        for i in 0..5 {
            store
                .create(event("ns", &format!("e{i}")))
                .await
                .expect("create");
        }
        let (_, items, _) = store.list(None, None, 10, None, |_| true);
        let names: Vec<&str> = items.iter().map(|s| s.name()).collect();
        assert_eq!(names, vec!["e2", "e3", "e4"]);
    }
}
