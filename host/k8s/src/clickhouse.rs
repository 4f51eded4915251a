//! The ClickHouse event store, for deployments that outgrow one machine's memory and disk:
//! every version of an event is a row of a `ReplacingMergeTree(rv)` table ordered by
//! (namespace, name) and partitioned by the day the event was created, so all versions of
//! an event share a partition and `FINAL` reads see only its newest one; deletions are
//! tombstone rows. Every field-selector label and the caller's scope are columns, so lists
//! are answered by SQL (label selectors are checked on the returned rows). Retention drops
//! whole day partitions older than the retention period (the Debian server, 18.16,
//! predates table TTLs).
//!
//! Writes go through one writer task that groups concurrent writes: one query reads the
//! current versions of the events a group touches, one `INSERT` writes the group. Watches
//! are fed from this write path (a bounded history plus a broadcast), like the embedded
//! store's; a resourceVersion is `max(previous + 1, now in µs)`, so it grows across restarts
//! and stays unique when several routers write one table (each router's watches see its
//! own writes).

use super::convert::{self, meta_str, now_ms};
use super::selector::FieldSelector;
use super::settings::{ClickHouseConfig, ScopeConfig};
use super::store::{Change, ChangeKind, Precondition, StoreError, Stored};
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

/// Field-selector labels (core/v1 terms) and the columns holding them.
const FIELD_COLUMNS: [(&str, &str); 13] = [
    ("metadata.name", "name"),
    ("metadata.namespace", "namespace"),
    ("involvedObject.kind", "io_kind"),
    ("involvedObject.namespace", "io_namespace"),
    ("involvedObject.name", "io_name"),
    ("involvedObject.uid", "io_uid"),
    ("involvedObject.apiVersion", "io_api_version"),
    ("involvedObject.resourceVersion", "io_resource_version"),
    ("involvedObject.fieldPath", "io_field_path"),
    ("reason", "reason"),
    ("reportingComponent", "reporting_component"),
    ("source", "source"),
    ("type", "ev_type"),
];

/// The most writes one group (one INSERT) carries.
const MAX_GROUP: usize = 2000;

/// Rows fetched per query when label selectors or other checks thin them out.
const CHUNK: usize = 1000;

/// Rows fetched per query when an EventQuery's filter thins them out.
const QUERY_CHUNK: usize = 20_000;

/// The start of every query for events: the columns a [`Row`] reads.
const SELECT: &str = "SELECT namespace, name, toString(rv) AS rv, object FROM";

/// A ClickHouse string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The HTTP interface of one table.
struct Client {
    http: reqwest::Client,
    /// The outcome of the last request (`/readyz?verbose`).
    health: Arc<weir_core::health::PeerHealth>,
    url: String,
    table: String,
    database: String,
    user: String,
    password: Option<String>,
}

#[derive(serde::Deserialize)]
struct Row {
    namespace: String,
    name: String,
    rv: String,
    object: String,
}

/// What one query for events answered.
struct Rows {
    /// The events that could be read.
    events: Vec<Arc<Stored>>,
    /// How many rows came, readable or not.
    count: usize,
    /// The (namespace, name) of the last row, readable or not.
    last: Option<(String, String)>,
}

/// Reads a `JSONEachRow` answer to a [`SELECT`]. An event that cannot be read is skipped
/// (and logged) but still counted: paging goes by the rows the query returned.
fn decode(text: &str) -> Result<Rows, StoreError> {
    let mut rows = Rows {
        events: Vec::new(),
        count: 0,
        last: None,
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: Row = serde_json::from_str(line)
            .map_err(|e| StoreError::Storage(format!("unreadable ClickHouse row: {e}")))?;
        rows.count += 1;
        match (
            row.rv.parse::<u64>(),
            serde_json::from_str::<Value>(&row.object),
        ) {
            (Ok(rv), Ok(Value::Object(object))) => {
                rows.events
                    .push(Arc::new(Stored::new(rv, object, now_ms())));
            }
            _ => tracing::error!(
                namespace = %row.namespace,
                name = %row.name,
                "ClickHouse event store: skipping an unreadable event"
            ),
        }
        rows.last = Some((row.namespace, row.name));
    }
    Ok(rows)
}

/// Pages through events in (namespace, name) order after `after`: `fetch(cursor, n)`
/// answers at most `n` rows after `cursor` (all of them for `None`). The events `keep`
/// accepts, at most `limit`, and whether more matched. A short page (fewer rows than
/// asked for) ends the paging; rows are counted whether they could be read or not, so an
/// unreadable row neither ends it early nor holds the cursor back.
async fn page<F, Fut>(
    mut fetch: F,
    after: Option<&(String, String)>,
    limit: usize,
    keep: impl Fn(&Stored) -> bool,
) -> Result<(Vec<Arc<Stored>>, bool), StoreError>
where
    F: FnMut(Option<(String, String)>, Option<usize>) -> Fut,
    Fut: std::future::Future<Output = Result<Rows, StoreError>>,
{
    let mut out = Vec::new();
    let mut cursor = after.cloned();
    let want = limit.saturating_add(1);
    let chunk = (want != usize::MAX).then(|| want.max(CHUNK));
    loop {
        let Rows {
            events,
            count,
            last,
        } = fetch(cursor.clone(), chunk).await?;
        let exhausted = chunk.is_none_or(|n| count < n);
        if last.is_some() {
            cursor = last;
        }
        for stored in events {
            if keep(&stored) {
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(stored);
            }
        }
        if exhausted {
            return Ok((out, false));
        }
    }
}

impl Client {
    async fn post(&self, query: Option<&str>, body: Vec<u8>) -> Result<String, StoreError> {
        let mut request = self
            .http
            .post(&self.url)
            .query(&[("database", self.database.as_str())])
            .query(&[("optimize_move_to_prewhere", "0")]);
        if let Some(q) = query {
            request = request.query(&[("query", q)]);
        }
        request = request.basic_auth(&self.user, self.password.as_deref());
        let answer = async {
            let response = request
                .body(body)
                .send()
                .await
                .map_err(|e| StoreError::Storage(format!("ClickHouse {}: {e}", self.url)))?;
            let status = response.status();
            let text = response
                .text()
                .await
                .map_err(|e| StoreError::Storage(format!("ClickHouse {}: {e}", self.url)))?;
            if status.is_server_error() {
                let first = text.lines().next().unwrap_or("").trim();
                return Err(StoreError::Storage(format!(
                    "ClickHouse answered {status}: {first}"
                )));
            }
            Ok((status, text))
        }
        .await;
        // A refused query (4xx) is the query's fault; no answer or a 5xx is the server's.
        let (status, text) = match answer {
            Ok(answer) => {
                self.health.succeeded();
                answer
            }
            Err(e) => {
                self.health.failed(&e);
                return Err(e);
            }
        };
        if !status.is_success() {
            let first = text.lines().next().unwrap_or("").trim();
            return Err(StoreError::Storage(format!(
                "ClickHouse answered {status}: {first}"
            )));
        }
        Ok(text)
    }

    async fn execute(&self, sql: &str) -> Result<String, StoreError> {
        self.post(None, sql.as_bytes().to_vec()).await
    }

    /// The answer to a [`SELECT`] query.
    async fn rows(&self, sql: &str) -> Result<Rows, StoreError> {
        decode(&self.execute(&format!("{sql} FORMAT JSONEachRow")).await?)
    }

    /// The events a [`SELECT`] query answers (unreadable ones skipped).
    async fn events(&self, sql: &str) -> Result<Vec<Arc<Stored>>, StoreError> {
        Ok(self.rows(sql).await?.events)
    }

    fn table(&self) -> String {
        format!("{}.{}", self.database, self.table)
    }
}

enum Op {
    Create(Map<String, Value>),
    Update {
        object: Map<String, Value>,
        expected_rv: Option<u64>,
    },
    Delete {
        namespace: String,
        name: String,
        precondition: Precondition,
    },
}

impl Op {
    fn key(&self) -> (String, String) {
        match self {
            Op::Create(o) | Op::Update { object: o, .. } => (
                meta_str(o, "namespace").to_owned(),
                meta_str(o, "name").to_owned(),
            ),
            Op::Delete {
                namespace, name, ..
            } => (namespace.clone(), name.clone()),
        }
    }
}

type Reply = oneshot::Sender<Result<Arc<Stored>, StoreError>>;

/// Recent changes for watches resuming from a resourceVersion.
struct History {
    changes: VecDeque<Change>,
    floor: u64,
    cap: usize,
}

/// What a list asks for, translated to SQL where the table has columns for it.
pub struct Narrowing<'a> {
    /// Only this namespace.
    pub namespace: Option<&'a str>,
    /// The field selector (every label has a column).
    pub fields: &'a FieldSelector,
    /// Only events with these scope annotations (type, name).
    pub scope: Option<(&'a str, &'a str)>,
}

/// The store.
pub struct ClickHouseStore {
    client: Arc<Client>,
    rv: Arc<AtomicU64>,
    ops: mpsc::Sender<(Op, Reply)>,
    history: Arc<RwLock<History>>,
    changes: broadcast::Sender<Change>,
}

impl ClickHouseStore {
    /// Connects, creates the table when missing, drops partitions older than `retention`
    /// (and again every hour), and starts the writer.
    pub async fn open(
        config: &ClickHouseConfig,
        scope: &ScopeConfig,
        retention: Duration,
        watch_history: usize,
        health: Arc<weir_core::health::PeerHealth>,
    ) -> Result<Arc<Self>, StoreError> {
        let password = match &config.password_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                StoreError::Storage(format!(
                    "ClickHouse password: environment variable {var} is not set"
                ))
            })?),
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_seconds.max(1)))
            .build()
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        let client = Arc::new(Client {
            http,
            health,
            url: config.url.clone(),
            table: config.table.clone(),
            database: config.database.clone(),
            user: config.user.clone(),
            password,
        });
        let mut columns = String::new();
        for (_, column) in FIELD_COLUMNS.iter().skip(2) {
            let _ = write!(columns, "{column} String, ");
        }
        client
            .execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} (namespace String, name String, rv UInt64, \
                 deleted UInt8, created Date, {columns}scope_type String, scope_name String, \
                 object String) ENGINE = ReplacingMergeTree(rv) \
                 PARTITION BY toYYYYMMDD(created) ORDER BY (namespace, name)",
                client.table()
            ))
            .await?;
        let text = client
            .execute(&format!(
                "SELECT toString(max(rv)) AS rv FROM {} FORMAT JSONEachRow",
                client.table()
            ))
            .await?;
        let rv = serde_json::from_str::<Value>(text.trim())
            .ok()
            .and_then(|v| v["rv"].as_str().and_then(|s| s.parse::<u64>().ok()))
            .unwrap_or(0);
        let retention_days = retention.as_secs().div_ceil(86_400).max(1);
        drop_expired(&client, retention_days).await?;
        let retain = client.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            every.tick().await;
            loop {
                every.tick().await;
                if let Err(e) = drop_expired(&retain, retention_days).await {
                    tracing::warn!("ClickHouse retention: {e}");
                }
            }
        });
        tracing::info!(url = %config.url, table = %client.table(), resource_version = rv, "ClickHouse event store opened");
        let rv = Arc::new(AtomicU64::new(rv));
        let history = Arc::new(RwLock::new(History {
            changes: VecDeque::new(),
            floor: rv.load(Ordering::SeqCst),
            cap: watch_history.max(1),
        }));
        let (changes, _) = broadcast::channel(watch_history.clamp(1024, 65_536));
        let (tx, rx) = mpsc::channel(4096);
        let writer = Writer {
            client: client.clone(),
            rv: rv.clone(),
            history: history.clone(),
            changes: changes.clone(),
            scope: scope.clone(),
        };
        tokio::spawn(writer.run(rx));
        Ok(Arc::new(Self {
            client,
            rv,
            ops: tx,
            history,
            changes,
        }))
    }

    async fn submit(&self, op: Op) -> Result<Arc<Stored>, StoreError> {
        let stopped = || StoreError::Storage("the ClickHouse writer stopped".into());
        let (tx, rx) = oneshot::channel();
        self.ops.send((op, tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Stores a new event (core/v1 form with namespace and name set).
    pub async fn create(&self, object: Map<String, Value>) -> Result<Arc<Stored>, StoreError> {
        self.submit(Op::Create(object)).await
    }

    /// Replaces an event; with `expected_rv`, only if that is its current version.
    pub async fn update(
        &self,
        object: Map<String, Value>,
        expected_rv: Option<u64>,
    ) -> Result<Arc<Stored>, StoreError> {
        self.submit(Op::Update {
            object,
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
    pub async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Stored>>, StoreError> {
        let sql = format!(
            "{SELECT} {} FINAL WHERE namespace = {} AND name = {} AND deleted = 0 LIMIT 1",
            self.client.table(),
            quote(namespace),
            quote(name)
        );
        Ok(self.client.events(&sql).await?.pop())
    }

    /// The newest resourceVersion this router wrote or found.
    pub fn resource_version(&self) -> u64 {
        self.rv.load(Ordering::SeqCst)
    }

    /// Events matching `narrow` in (namespace, name) order after `after`, that `keep`
    /// accepts too, at most `limit`; with the resourceVersion and whether more matched.
    pub async fn list(
        &self,
        narrow: &Narrowing<'_>,
        after: Option<&(String, String)>,
        limit: usize,
        keep: impl Fn(&Stored) -> bool,
    ) -> Result<(u64, Vec<Arc<Stored>>, bool), StoreError> {
        let rv = self.resource_version();
        let fetch = |cursor: Option<(String, String)>, chunk: Option<usize>| {
            let mut sql = format!("{SELECT} {} FINAL WHERE deleted = 0", self.client.table());
            where_clause(&mut sql, narrow, cursor.as_ref());
            sql.push_str(" ORDER BY namespace, name");
            if let Some(n) = chunk {
                let _ = write!(sql, " LIMIT {n}");
            }
            async move { self.client.rows(&sql).await }
        };
        let (out, more) = page(fetch, after, limit, keep).await?;
        Ok((rv, out, more))
    }

    /// Changes after `rv` and a receiver of the ones to come, or `Err(oldest)` when `rv`
    /// is older than this router's history.
    pub fn watch_from(&self, rv: u64) -> Result<(Vec<Change>, broadcast::Receiver<Change>), u64> {
        let history = self.history.read().unwrap_or_else(|e| e.into_inner());
        if rv < history.floor {
            return Err(history.floor);
        }
        let backlog = history
            .changes
            .iter()
            .filter(|c| c.rv > rv)
            .cloned()
            .collect();
        Ok((backlog, self.changes.subscribe()))
    }

    /// The events matching `narrow` and a receiver of later changes (subscribed first, so
    /// nothing is missed; a change made during the read may be seen twice).
    pub async fn snapshot_and_watch(
        &self,
        narrow: &Narrowing<'_>,
    ) -> Result<(u64, Vec<Arc<Stored>>, broadcast::Receiver<Change>), StoreError> {
        let changes = self.changes.subscribe();
        let (rv, items, _) = self.list(narrow, None, usize::MAX, |_| true).await?;
        Ok((rv, items, changes))
    }
}

/// An event's time (ms since the epoch, to the second) computed from its JSON in SQL,
/// as [`super::ce::event_time`] does: `lastTimestamp`, else `lastObservedTime` (of
/// `series`), `eventTime`, `firstTimestamp`, `creationTimestamp`. Written for the oldest
/// ClickHouse weir supports (Debian's 18.16: no `JSONExtract*`, no `DateTime64`):
/// `visitParamExtractString` finds a key at any depth, and these keys occur once in an
/// Event.
const EVENT_TIME_SQL: &str = "(toUnixTimestamp(parseDateTimeBestEffortOrZero(multiIf(\
    visitParamExtractString(object, 'lastTimestamp') != '', visitParamExtractString(object, 'lastTimestamp'), \
    visitParamExtractString(object, 'lastObservedTime') != '', visitParamExtractString(object, 'lastObservedTime'), \
    visitParamExtractString(object, 'eventTime') != '', visitParamExtractString(object, 'eventTime'), \
    visitParamExtractString(object, 'firstTimestamp') != '', visitParamExtractString(object, 'firstTimestamp'), \
    visitParamExtractString(object, 'creationTimestamp')))) * 1000)";

/// Where a facet field's values are in SQL: a column where the table has one, the JSON
/// where the key is unique in an Event; `None`: counted here from the rows.
fn facet_sql(field: &str) -> Option<&'static str> {
    Some(match field {
        "regarding.kind" | "involvedObject.kind" => "io_kind",
        "regarding.namespace" | "involvedObject.namespace" => "io_namespace",
        "reason" => "reason",
        "type" => "ev_type",
        "reportingController" => "reporting_component",
        "namespace" => "namespace",
        "source.component" => "visitParamExtractString(object, 'component')",
        _ => return None,
    })
}

impl ClickHouseStore {
    /// One page of an EventQuery: the time range, namespace, field selector and scope run
    /// as SQL (`ORDER BY` the event's time descending, then namespace and name); the
    /// CESQL filter and `keep` are applied here to the rows as they stream in chunks.
    pub async fn query(
        &self,
        query: &super::query::EventQuery,
        scope: Option<(&str, &str)>,
        keep: impl Fn(&Stored) -> bool,
    ) -> Result<(Vec<Arc<Stored>>, bool), StoreError> {
        let fields = query.narrowing_fields();
        let narrow = Narrowing {
            namespace: query.namespace.as_deref(),
            fields: &fields,
            scope,
        };
        let mut base = format!("{SELECT} {} FINAL WHERE deleted = 0", self.client.table());
        where_clause(&mut base, &narrow, None);
        let _ = write!(
            base,
            " AND {EVENT_TIME_SQL} >= {} AND {EVENT_TIME_SQL} < {} ORDER BY {EVENT_TIME_SQL} DESC, namespace, name",
            query.start_ms, query.end_ms
        );
        // Without checks made here, SQL pages exactly; else it is read in chunks (large
        // ones: every chunk sorts the range again).
        let exact = query.filter.is_none();
        let (mut sql_offset, mut skipped) = (if exact { query.offset } else { 0 }, 0usize);
        let mut out = Vec::with_capacity(query.limit.min(1024));
        loop {
            let chunk = if exact { query.limit + 1 } else { QUERY_CHUNK };
            let rows = self
                .client
                .events(&format!("{base} LIMIT {chunk} OFFSET {sql_offset}"))
                .await?;
            let n = rows.len();
            for row in rows {
                if !(query.matches(&row.object) && keep(&row)) {
                    continue;
                }
                if !exact && skipped < query.offset {
                    skipped += 1;
                    continue;
                }
                if out.len() == query.limit {
                    return Ok((out, true));
                }
                out.push(row);
            }
            if exact || n < chunk {
                return Ok((out, false));
            }
            sql_offset += chunk;
        }
    }

    /// An EventFacetQuery as one `GROUP BY` per facet over the time range and scope.
    pub async fn facets(
        &self,
        query: &super::query::FacetQuery,
        scope: Option<(&str, &str)>,
    ) -> Result<Vec<Vec<(String, u64)>>, StoreError> {
        let fields = super::selector::FieldSelector(Vec::new());
        let narrow = Narrowing {
            namespace: None,
            fields: &fields,
            scope,
        };
        let mut out = Vec::with_capacity(query.facets.len());
        for (i, (field, _, limit)) in query.facets.iter().enumerate() {
            let Some(expr) = facet_sql(field) else {
                out.push(self.facet_here(query, i, &narrow).await?);
                continue;
            };
            let mut sql = format!(
                "SELECT {expr} AS value, toString(count()) AS n FROM {} FINAL WHERE deleted = 0",
                self.client.table()
            );
            where_clause(&mut sql, &narrow, None);
            let _ = write!(
                sql,
                " AND {EVENT_TIME_SQL} >= {} AND {EVENT_TIME_SQL} < {} AND value != '' GROUP BY value ORDER BY count() DESC, value ASC LIMIT {limit} FORMAT JSONEachRow",
                query.start_ms, query.end_ms
            );
            let text = self.client.execute(&sql).await?;
            let values = text
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .map(|v| {
                    (
                        v["value"].as_str().unwrap_or("").to_owned(),
                        v["n"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0),
                    )
                })
                .collect();
            out.push(values);
        }
        Ok(out)
    }

    /// Facet `i` counted here, from the rows of the range read in chunks (for fields the
    /// table has no column for and SQL cannot extract reliably, e.g. `related.kind`).
    async fn facet_here(
        &self,
        query: &super::query::FacetQuery,
        i: usize,
        narrow: &Narrowing<'_>,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut base = format!("{SELECT} {} FINAL WHERE deleted = 0", self.client.table());
        where_clause(&mut base, narrow, None);
        let _ = write!(
            base,
            " AND {EVENT_TIME_SQL} >= {} AND {EVENT_TIME_SQL} < {} ORDER BY namespace, name",
            query.start_ms, query.end_ms
        );
        let mut counts = std::collections::HashMap::<String, u64>::new();
        let path = query.facets[i].1;
        let mut offset = 0;
        loop {
            let rows = self
                .client
                .events(&format!("{base} LIMIT {CHUNK} OFFSET {offset}"))
                .await?;
            let n = rows.len();
            for row in &rows {
                *counts
                    .entry(convert::str_at(&row.object, path).to_owned())
                    .or_default() += 1;
            }
            if n < CHUNK {
                return Ok(counts.into_iter().collect());
            }
            offset += CHUNK;
        }
    }
}

/// Appends the SQL conditions of a narrowing and a paging cursor.
fn where_clause(sql: &mut String, narrow: &Narrowing<'_>, after: Option<&(String, String)>) {
    if let Some(ns) = narrow.namespace {
        let _ = write!(sql, " AND namespace = {}", quote(ns));
    }
    if let Some((ns, name)) = after {
        let (ns, name) = (quote(ns), quote(name));
        let _ = write!(
            sql,
            " AND (namespace > {ns} OR (namespace = {ns} AND name > {name}))"
        );
    }
    for r in &narrow.fields.0 {
        if let Some((_, column)) = FIELD_COLUMNS.iter().find(|(label, _)| *label == r.field) {
            let op = if r.negated { "!=" } else { "=" };
            let _ = write!(sql, " AND {column} {op} {}", quote(&r.value));
        }
    }
    if let Some((ty, name)) = narrow.scope {
        let _ = write!(
            sql,
            " AND scope_type = {} AND scope_name = {}",
            quote(ty),
            quote(name)
        );
    }
}

/// The UTC day (`YYYY-MM-DD`) of a time in ms since the epoch.
fn day(ms: i64) -> String {
    let mut text = convert::rfc3339_seconds(ms);
    text.truncate(10);
    text
}

/// Drops day partitions older than `days`.
async fn drop_expired(client: &Client, days: u64) -> Result<(), StoreError> {
    let days_ms = i64::try_from(days.saturating_mul(86_400_000)).unwrap_or(i64::MAX);
    let cutoff: u32 = day(now_ms().saturating_sub(days_ms))
        .replace('-', "")
        .parse()
        .unwrap_or(0);
    let text = client
        .execute(&format!(
            "SELECT DISTINCT partition FROM system.parts WHERE database = {} AND table = {} AND active FORMAT JSONEachRow",
            quote(&client.database),
            quote(&client.table)
        ))
        .await?;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Some(partition) = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v["partition"].as_str().and_then(|p| p.parse::<u32>().ok()))
        else {
            continue;
        };
        if partition < cutoff {
            client
                .execute(&format!(
                    "ALTER TABLE {} DROP PARTITION {partition}",
                    client.table()
                ))
                .await?;
            tracing::info!(
                partition,
                "ClickHouse event store: dropped a day past retention"
            );
        }
    }
    Ok(())
}

struct Writer {
    client: Arc<Client>,
    rv: Arc<AtomicU64>,
    history: Arc<RwLock<History>>,
    changes: broadcast::Sender<Change>,
    scope: ScopeConfig,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<(Op, Reply)>) {
        while let Some(first) = rx.recv().await {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            self.apply(group).await;
        }
    }

    fn next_rv(&self) -> u64 {
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let next = self.rv.load(Ordering::SeqCst).saturating_add(1).max(now_us);
        self.rv.store(next, Ordering::SeqCst);
        next
    }

    /// The current versions of the events a group touches.
    async fn current(
        &self,
        keys: &[(String, String)],
    ) -> Result<HashMap<(String, String), Arc<Stored>>, StoreError> {
        let mut list = String::new();
        for (i, (ns, name)) in keys.iter().enumerate() {
            if i > 0 {
                list.push(',');
            }
            let _ = write!(list, "({}, {})", quote(ns), quote(name));
        }
        let sql = format!(
            "{SELECT} {} FINAL WHERE deleted = 0 AND (namespace, name) IN ({list})",
            self.client.table()
        );
        Ok(self
            .client
            .events(&sql)
            .await?
            .into_iter()
            .map(|s| ((s.namespace().to_owned(), s.name().to_owned()), s))
            .collect())
    }

    fn row(&self, stored: &Stored, deleted: bool, out: &mut Vec<u8>) {
        let o = &stored.object;
        let created = meta_str(o, "creationTimestamp");
        let created = if created.len() >= 10 && created.is_char_boundary(10) {
            created[..10].to_owned()
        } else {
            day(now_ms())
        };
        let annotation = |key: &str| convert::annotation(o, key).unwrap_or("");
        let mut row = Map::new();
        row.insert("namespace".into(), stored.namespace().into());
        row.insert("name".into(), stored.name().into());
        row.insert("rv".into(), stored.rv.into());
        row.insert("deleted".into(), u8::from(deleted).into());
        row.insert("created".into(), created.into());
        for (label, column) in FIELD_COLUMNS.iter().skip(2) {
            row.insert((*column).into(), convert::field(o, label).into());
        }
        row.insert(
            "scope_type".into(),
            annotation(&self.scope.type_annotation).into(),
        );
        row.insert(
            "scope_name".into(),
            annotation(&self.scope.name_annotation).into(),
        );
        row.insert(
            "object".into(),
            serde_json::to_string(o).unwrap_or_default().into(),
        );
        if serde_json::to_writer(&mut *out, &row).is_ok() {
            out.push(b'\n');
        }
    }

    async fn apply(&self, group: Vec<(Op, Reply)>) {
        let mut keys: Vec<(String, String)> = group.iter().map(|(op, _)| op.key()).collect();
        keys.sort();
        keys.dedup();
        let mut current = match self.current(&keys).await {
            Ok(c) => c,
            Err(e) => {
                for (_, reply) in group {
                    let _ = reply.send(Err(e.clone()));
                }
                return;
            }
        };
        let mut rows = Vec::new();
        let mut results: Vec<(Reply, Result<Change, StoreError>)> = Vec::new();
        for (op, reply) in group {
            let key = op.key();
            let result = match op {
                Op::Create(object) => match current.contains_key(&key) {
                    true => Err(StoreError::AlreadyExists(key.1.clone())),
                    false => Ok((ChangeKind::Added, object)),
                },
                Op::Update {
                    object,
                    expected_rv,
                } => match current.get(&key) {
                    None => Err(StoreError::NotFound(key.1.clone())),
                    Some(old) if expected_rv.is_some_and(|rv| rv != old.rv) => {
                        Err(StoreError::Conflict(key.1.clone()))
                    }
                    Some(_) => Ok((ChangeKind::Modified, object)),
                },
                Op::Delete { precondition, .. } => match current.get(&key) {
                    None => Err(StoreError::NotFound(key.1.clone())),
                    Some(old) if !precondition.holds(old) => {
                        Err(StoreError::Conflict(key.1.clone()))
                    }
                    Some(old) => {
                        let object = old.object.clone();
                        current.remove(&key);
                        Ok((ChangeKind::Deleted, object))
                    }
                },
            };
            let change = result.map(|(kind, mut object)| {
                let rv = self.next_rv();
                if let Some(Value::Object(meta)) = object.get_mut("metadata") {
                    meta.insert("resourceVersion".into(), rv.to_string().into());
                }
                let stored = Arc::new(Stored::new(rv, object, now_ms()));
                self.row(&stored, kind == ChangeKind::Deleted, &mut rows);
                if kind != ChangeKind::Deleted {
                    current.insert(key, stored.clone());
                }
                Change {
                    rv,
                    kind,
                    event: stored,
                }
            });
            results.push((reply, change));
        }
        if !rows.is_empty() {
            let insert = format!("INSERT INTO {} FORMAT JSONEachRow", self.client.table());
            if let Err(e) = self.client.post(Some(&insert), rows).await {
                tracing::error!("ClickHouse event store: a write group failed: {e}");
                for (reply, result) in results {
                    let _ = reply.send(result.and(Err(e.clone())));
                }
                return;
            }
        }
        let mut history = self.history.write().unwrap_or_else(|e| e.into_inner());
        for (reply, result) in results {
            let answer = result.map(|change| {
                let stored = change.event.clone();
                history.changes.push_back(change.clone());
                if history.changes.len() > history.cap {
                    if let Some(old) = history.changes.pop_front() {
                        history.floor = old.rv;
                    }
                }
                let _ = self.changes.send(change);
                stored
            });
            let _ = reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::FieldSelector;

    #[test]
    fn literals_are_escaped() {
        assert_eq!(quote("a'b\\c"), "'a\\'b\\\\c'");
        assert_eq!(quote("x\ny"), "'x\\ny'");
    }

    #[test]
    fn selectors_become_sql_on_columns() {
        let fields =
            FieldSelector::parse("involvedObject.name=my-pod,type!=Normal,reason=it's", false)
                .expect("valid");
        let narrow = Narrowing {
            namespace: Some("default"),
            fields: &fields,
            scope: Some(("Project", "p1")),
        };
        let mut sql = String::new();
        where_clause(&mut sql, &narrow, Some(&("default".into(), "b".into())));
        assert_eq!(
            sql,
            " AND namespace = 'default' AND (namespace > 'default' OR (namespace = 'default' AND name > 'b')) \
             AND io_name = 'my-pod' AND ev_type != 'Normal' AND reason = 'it\\'s' \
             AND scope_type = 'Project' AND scope_name = 'p1'"
        );
    }

    /// A JSONEachRow answer of `SELECT` for rows `ns/e0000`... `unreadable` rows hold
    /// an object that is not JSON.
    fn answer(names: &[String], unreadable: &[&str]) -> String {
        let mut text = String::new();
        for name in names {
            let object = if unreadable.contains(&name.as_str()) {
                "{not json".to_owned()
            } else {
                serde_json::json!({"metadata": {"namespace": "ns", "name": name}}).to_string()
            };
            let row =
                serde_json::json!({"namespace": "ns", "name": name, "rv": "1", "object": object});
            text.push_str(&row.to_string());
            text.push('\n');
        }
        text
    }

    #[test]
    fn unreadable_events_are_skipped_but_counted() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|n| (*n).to_owned()).collect();
        let rows = decode(&answer(&names, &["c"])).expect("rows");
        assert_eq!(rows.events.len(), 2);
        assert_eq!(rows.count, 3);
        assert_eq!(rows.last, Some(("ns".into(), "c".into())));
        assert!(decode("{\"rv\": 1}").is_err(), "not a row at all");
    }

    #[tokio::test]
    async fn an_unreadable_row_neither_ends_paging_nor_holds_the_cursor_back() {
        let table: Vec<String> = (0..2500).map(|i| format!("e{i:04}")).collect();
        // The last row of the first page cannot be read.
        let unreadable = ["e0999"];
        let cursors = std::sync::Mutex::new(Vec::new());
        let fetch = |cursor: Option<(String, String)>, chunk: Option<usize>| {
            cursors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(cursor.clone());
            let after: Vec<String> = table
                .iter()
                .filter(|n| cursor.as_ref().is_none_or(|(_, c)| n.as_str() > c.as_str()))
                .take(chunk.unwrap_or(usize::MAX))
                .cloned()
                .collect();
            let text = answer(&after, &unreadable);
            async move { decode(&text) }
        };
        // Ten events from e1500 on: they are on the second page.
        let (out, more) = page(fetch, None, 10, |s| s.name() >= "e1500")
            .await
            .expect("paged");
        let names: Vec<&str> = out.iter().map(|s| s.name()).collect();
        let want: Vec<String> = (1500..1510).map(|i| format!("e{i:04}")).collect();
        assert_eq!(names, want);
        assert!(more);
        let cursors = cursors.into_inner().unwrap_or_else(|e| e.into_inner());
        assert_eq!(
            cursors,
            [None, Some(("ns".to_owned(), "e0999".to_owned()))],
            "the second page starts after the unreadable row"
        );
    }

    #[test]
    fn every_field_label_has_a_column() {
        for label in crate::selector::CORE_FIELDS {
            assert!(FIELD_COLUMNS.iter().any(|(l, _)| *l == label), "{label}");
        }
    }
}
