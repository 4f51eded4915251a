//! `k8s-correlate`: client-go's event correlator (`tools/record/events_cache.go`) applied
//! to Kubernetes Events synced from downstream clusters, so the upstream gets counted,
//! aggregated, spam-limited events instead of a storm.
//!
//! For each event, in client-go's order:
//! 1. **Repeats of one downstream event** (same uid) count by how much its `count` grew;
//!    the same uid at the same count again is a duplicate and is dropped.
//! 2. **Aggregation** (`EventAggregatorByReasonFunc`): events alike in source (component,
//!    host), involved object (kind, namespace, name, uid, apiVersion), type, reason and
//!    reporting controller/instance — the *aggregate key* — but different in message are
//!    similar. Once `max_events` (10) different messages were seen within
//!    `interval_seconds` (600) of each other, further similar events are **folded** into
//!    one aggregate event whose message is `(combined from similar events): <message>`
//!    and whose count is the number of occurrences folded. Folded events are not passed
//!    on; the aggregate is kept in the tenant's durable state and emitted by `tick` every
//!    `flush_seconds` (10) while it grows, so a restart loses no pending aggregate.
//! 3. **Counting** (`eventLogger`): an event alike in everything including its message
//!    (the *event key*) to one seen before gets that first event's name and
//!    `firstTimestamp` and the running `count` — the upstream sink then patches the one
//!    upstream event instead of creating another.
//! 4. **Spam filter** (`EventSourceObjectSpamFilter`): per source and involved object a
//!    token bucket of `spam_burst` (25) events refilled at `spam_qps` (one per 300 s);
//!    without a token the event is dropped.
//!
//! Every passed event and every aggregate carries the annotation
//! `events.weir.dev/aggregate` naming the aggregate of its group and window, which links
//! related events. With `across_clusters`, the aggregate key leaves out the cluster and
//! the source host and uid, so the same object's events from several clusters (once the
//! namespaces are mapped alike) are grouped; `k8scluster` is in the key otherwise.
//!
//! Deliberate differences from client-go:
//! - Aggregate names are deterministic — `<object>.<hash of aggregate key and window>`,
//!   windows being `interval_seconds` long and aligned to the epoch — where client-go
//!   uses the current time. Two weir replicas syncing the same clusters name (and so
//!   patch) the same upstream aggregate instead of creating two.
//! - Aggregates are held and flushed by `tick` (the kcp syncer's `AggregationWindow`),
//!   where client-go writes each occurrence of the aggregate at once.
//! - Memory: event logs, aggregate groups and downstream uids are kept in the instance,
//!   in least-recently-used maps of `max_keys` (65,536) entries each — client-go's are
//!   4,096, which a syncer watching a whole cluster outgrows. They start empty after a
//!   restart, as client-go's do. What must survive a restart is durable in the tenant's
//!   state: each aggregating group's record with its pending aggregate (at most
//!   `max_pending`, 65,536) and the spam buckets.
//! - Counts add up downstream counts (an event that arrives with count 5 counts 5).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::Duration;
use weir_guest::bucket::TokenBuckets;
use weir_guest::host::{self, state};
use weir_guest::{Context, Event, Filter, OwnedEvent, Patch, Verdict, Verdicts};

/// The annotation naming an event's aggregate.
pub const AGGREGATE_ANNOTATION: &str = "events.weir.dev/aggregate";
/// What an aggregate's message starts with (client-go's words).
pub const COMBINED: &str = "(combined from similar events): ";
/// The state key of the pending aggregates' index.
const PENDING: &str = "correlate:pending";

/// Configuration (client-go's defaults).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Different messages of similar events before they are aggregated (10).
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// The aggregation window, seconds (600).
    #[serde(default = "default_interval")]
    pub interval_seconds: u64,
    /// How often a growing aggregate is emitted, seconds (10).
    #[serde(default = "default_flush")]
    pub flush_seconds: u64,
    /// Events a source may send about one object at once (25).
    #[serde(default = "default_burst")]
    pub spam_burst: u32,
    /// Refill of that budget per second (1/300).
    #[serde(default = "default_qps")]
    pub spam_qps: f64,
    /// Group the same object's events across clusters.
    #[serde(default)]
    pub across_clusters: bool,
    /// The most event keys, aggregate groups and downstream uids remembered, each
    /// (65,536); beyond it the least recently used go, as client-go's LRU caches do.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// The most aggregates pending at once (65,536); beyond it, new aggregates pass
    /// their events through uncombined.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
}

fn default_max_events() -> usize {
    10
}
fn default_interval() -> u64 {
    600
}
fn default_flush() -> u64 {
    10
}
fn default_burst() -> u32 {
    25
}
fn default_qps() -> f64 {
    1.0 / 300.0
}
fn default_max_keys() -> usize {
    65_536
}
fn default_max_pending() -> usize {
    65_536
}

/// An aggregate group's record (client-go's `aggregateRecord`) and, once it aggregates,
/// the pending aggregate event.
#[derive(Debug, Default, Serialize, Deserialize)]
struct AggregateRecord {
    /// Hashes of the different messages seen (at most `max_events`).
    messages: Vec<u64>,
    /// When a similar event was last seen (host clock, ms).
    last_ms: u64,
    /// The aggregate event, once the group aggregates.
    aggregate: Option<Aggregate>,
}

/// A pending aggregate event.
#[derive(Debug, Serialize, Deserialize)]
struct Aggregate {
    name: String,
    count: u64,
    /// The count last emitted.
    flushed: u64,
    /// When it was last emitted (host clock, ms).
    flushed_ms: u64,
    first_timestamp: String,
    last_timestamp: String,
    message: String,
    /// What the aggregate repeats from its first event; durable under a key of its own,
    /// written when the aggregate starts and when it is emitted, so the record written
    /// per batch stays small.
    #[serde(skip)]
    shape: Shape,
}

/// What an aggregate repeats from the event that started it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Shape {
    /// The event's core/v1 fields (namespace, involved object, type, reason, source,
    /// reporting fields).
    template: Map<String, Value>,
    /// The CloudEvent attributes carried on (subject, `k8s*` extensions).
    attributes: Vec<(String, String)>,
}

/// The state key of an aggregate group's record.
fn record_key(key: u64) -> String {
    format!("correlate:agg:{key:016x}")
}

/// The state key of a pending aggregate's [`Shape`].
fn shape_key(key: u64) -> String {
    format!("correlate:shape:{key:016x}")
}

/// An event key's record (client-go's `eventLog`).
#[derive(Debug, Serialize, Deserialize)]
struct EventLog {
    count: u64,
    first_timestamp: String,
    name: String,
}

/// FNV-1a, 64 bits: state keys and names must hash alike in every build and version of
/// the filter (std's hasher promises no such thing), and this is all it takes.
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0x1f)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for key in path {
        cur = &cur[*key];
    }
    cur.as_str().unwrap_or("")
}

/// A group's durable record with its aggregate's shape; a record whose shape is gone (it
/// cannot be emitted) loses its aggregate.
fn load_group(key: u64) -> Option<AggregateRecord> {
    let mut record: AggregateRecord = get_json(&record_key(key))?;
    if let Some(aggregate) = record.aggregate.as_mut() {
        match get_json::<Shape>(&shape_key(key)) {
            Some(shape) => aggregate.shape = shape,
            None => {
                host::counter_add("aggregates_lost", 1);
                record.aggregate = None;
            }
        }
    }
    Some(record)
}

fn get_json<T: for<'de> Deserialize<'de>>(key: &str) -> Option<T> {
    state::get(key).and_then(|raw| serde_json::from_slice(&raw).ok())
}

fn put_json<T: Serialize>(key: &str, value: &T, ttl: Duration) {
    let Ok(raw) = serde_json::to_vec(value) else {
        return;
    };
    if state::set(key, &raw, Some(ttl)).is_err() {
        host::counter_add("state_full", 1);
    }
}

/// RFC 3339 seconds of host milliseconds.
fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A map of at most `cap` entries: beyond it, the least recently used tenth goes (in
/// one pass, so the cost is amortised). Hand-written: a few lines, and no dependency for
/// the guest to carry.
struct Bounded<V> {
    map: HashMap<u64, (V, u64)>,
    cap: usize,
    clock: u64,
}

impl<V> Bounded<V> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            cap: cap.max(1),
            clock: 0,
        }
    }

    fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        self.clock += 1;
        let now = self.clock;
        self.map.get_mut(&key).map(|(v, used)| {
            *used = now;
            v
        })
    }

    /// Inserts `value`; returns the entries that went to make room.
    fn insert(&mut self, key: u64, value: V) -> Vec<(u64, V)> {
        self.clock += 1;
        self.map.insert(key, (value, self.clock));
        if self.map.len() <= self.cap {
            return Vec::new();
        }
        let mut ages: Vec<u64> = self.map.values().map(|(_, used)| *used).collect();
        let drop = (self.cap / 10).max(1);
        let (_, cutoff, _) = ages.select_nth_unstable(drop);
        let cutoff = *cutoff;
        let old: Vec<u64> = self
            .map
            .iter()
            .filter(|(_, (_, used))| *used <= cutoff)
            .map(|(k, _)| *k)
            .collect();
        old.into_iter()
            .filter_map(|k| self.map.remove(&k).map(|(v, _)| (k, v)))
            .collect()
    }

    fn get(&self, key: u64) -> Option<&V> {
        self.map.get(&key).map(|(v, _)| v)
    }

    fn remove(&mut self, key: u64) {
        self.map.remove(&key);
    }
}

/// The filter.
pub struct Correlate {
    config: Config,
    spam: TokenBuckets,
    interval_ms: u64,
    groups: Bounded<AggregateRecord>,
    logs: Bounded<EventLog>,
    uids: Bounded<u64>,
    /// The groups with a pending aggregate (their aggregate keys), read from state on
    /// first use and written back once per tick when they changed.
    pending: Option<std::collections::BTreeSet<u64>>,
    pending_changed: bool,
    /// Aggregating groups changed in this batch: their records are written once, after it.
    dirty: std::collections::BTreeSet<u64>,
}

impl Correlate {
    /// The aggregate key (client-go's `EventAggregatorByReasonFunc`, plus the cluster
    /// unless grouping across clusters).
    fn aggregate_key(&self, e: &Value, cluster: &str) -> u64 {
        let o = |k: &str| str_at(e, &["involvedObject", k]);
        let mut parts = vec![
            str_at(e, &["source", "component"]),
            o("kind"),
            o("namespace"),
            o("name"),
            o("apiVersion"),
            str_at(e, &["type"]),
            str_at(e, &["reason"]),
            str_at(e, &["reportingComponent"]),
            str_at(e, &["reportingInstance"]),
        ];
        if !self.config.across_clusters {
            parts.extend([cluster, str_at(e, &["source", "host"]), o("uid")]);
        }
        fnv(&parts)
    }

    /// The name of the aggregate of `key` in the window holding `now_ms`.
    fn aggregate_name(&self, e: &Value, key: u64, now_ms: u64) -> String {
        use std::fmt::Write as _;
        let window = now_ms / self.interval_ms.max(1);
        let object = str_at(e, &["involvedObject", "name"]);
        let object = if object.is_empty() { "event" } else { object };
        // The object's part is cut so the hash always fits (names stay distinct).
        let mut name = object.to_owned();
        weir_guest::k8s::cut_name(&mut name, weir_guest::k8s::MAX_NAME - 17);
        let _ = write!(
            name,
            ".{:016x}",
            fnv(&[&key.to_string(), &window.to_string()])
        );
        name
    }

    /// Step 1: how many occurrences this event stands for; 0 for a duplicate.
    fn occurrences(&mut self, e: &Value) -> u64 {
        let count = e["count"].as_u64().unwrap_or(1).max(1);
        let uid = str_at(e, &["metadata", "uid"]);
        if uid.is_empty() {
            return count;
        }
        let key = fnv(&[uid]);
        let last = self.uids.get_mut(key).map_or(0, |c| *c);
        if count <= last {
            return 0;
        }
        self.uids.insert(key, count);
        count - last
    }

    /// Step 2: records the event in its aggregate group; `true` when it was folded into
    /// the group's aggregate.
    fn aggregate(
        &mut self,
        e: &Value,
        event: &Event<'_>,
        key: u64,
        occurrences: u64,
        now_ms: u64,
    ) -> bool {
        // In memory; else, for a group that was aggregating before a restart, in state.
        let mut record = match self.groups.get_mut(key) {
            Some(r) => std::mem::take(r),
            None => load_group(key).unwrap_or_default(),
        };
        if now_ms.saturating_sub(record.last_ms) > self.interval_ms {
            record = AggregateRecord::default();
        }
        let message = str_at(e, &["message"]);
        let local = fnv(&[message]);
        if !record.messages.contains(&local) && record.messages.len() < self.config.max_events {
            record.messages.push(local);
        }
        record.last_ms = now_ms;
        let folded = record.messages.len() >= self.config.max_events
            && (record.aggregate.is_some() || self.add_pending(key));
        if folded {
            let last_timestamp = match str_at(e, &["lastTimestamp"]) {
                "" => rfc3339(now_ms),
                t => t.to_owned(),
            };
            if record.aggregate.is_none() {
                let shape = Shape {
                    template: template(e),
                    attributes: event
                        .extensions()
                        .filter(|(k, _)| {
                            k.starts_with("k8s") && *k != "k8scount" && *k != "k8sname"
                        })
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .chain(
                            event
                                .subject()
                                .map(|s| ("subject".to_owned(), s.to_owned())),
                        )
                        .collect(),
                };
                put_json(&shape_key(key), &shape, self.state_ttl());
                record.aggregate = Some(Aggregate {
                    name: self.aggregate_name(e, key, now_ms),
                    count: 0,
                    flushed: 0,
                    flushed_ms: 0,
                    first_timestamp: last_timestamp.clone(),
                    last_timestamp: String::new(),
                    message: String::new(),
                    shape,
                });
            }
            if let Some(aggregate) = record.aggregate.as_mut() {
                aggregate.count = aggregate.count.saturating_add(occurrences);
                aggregate.last_timestamp = last_timestamp;
                aggregate.message.clear();
                aggregate.message.push_str(COMBINED);
                aggregate.message.push_str(message);
            }
        }
        if record.aggregate.is_some() {
            self.dirty.insert(key);
        }
        self.keep_group(key, record);
        folded
    }

    /// How long a group's durable record outlives its last event.
    fn state_ttl(&self) -> Duration {
        Duration::from_millis(self.interval_ms.saturating_add(60_000))
    }

    /// Keeps a group in memory; a group pushed out while it has unwritten changes is
    /// written now.
    fn keep_group(&mut self, key: u64, record: AggregateRecord) {
        for (old, record) in self.groups.insert(key, record) {
            if self.dirty.remove(&old) {
                put_json(&record_key(old), &record, self.state_ttl());
            }
        }
    }

    /// Writes the records of the groups changed since the last call.
    fn save_groups(&mut self) {
        let ttl = self.state_ttl();
        for key in std::mem::take(&mut self.dirty) {
            if let Some(record) = self.groups.get(key) {
                put_json(&record_key(key), record, ttl);
            }
        }
    }

    /// The pending index, read from state on first use.
    fn pending(&mut self) -> &mut std::collections::BTreeSet<u64> {
        self.pending.get_or_insert_with(|| {
            get_json::<Vec<u64>>(PENDING)
                .unwrap_or_default()
                .into_iter()
                .collect()
        })
    }

    /// Writes the pending index when it changed.
    fn save_pending(&mut self) {
        if self.pending_changed {
            let list: Vec<u64> = self.pending().iter().copied().collect();
            put_json(PENDING, &list, Duration::from_secs(86_400 * 365));
            self.pending_changed = false;
        }
    }

    /// Adds a group to the pending index; `false` when the index is full.
    fn add_pending(&mut self, key: u64) -> bool {
        let max = self.config.max_pending;
        let pending = self.pending();
        if pending.len() >= max {
            host::counter_add("pending_full", 1);
            return false;
        }
        pending.insert(key);
        self.pending_changed = true;
        true
    }

    /// Step 3: the running count, first name and first timestamp of the event key.
    fn observe(&mut self, map: &mut Map<String, Value>, cluster: &str, occurrences: u64) {
        let at = |path: &[&str]| -> &str {
            let mut cur = map.get(path[0]);
            for key in &path[1..] {
                cur = cur.and_then(|v| v.get(*key));
            }
            cur.and_then(Value::as_str).unwrap_or("")
        };
        let o = |k: &'static str| at(&["involvedObject", k]);
        let key = fnv(&[
            cluster,
            at(&["source", "component"]),
            at(&["source", "host"]),
            o("kind"),
            o("namespace"),
            o("name"),
            o("fieldPath"),
            o("uid"),
            o("apiVersion"),
            at(&["type"]),
            at(&["reason"]),
            at(&["message"]),
        ]);
        let log = match self.logs.get_mut(key) {
            Some(log) => {
                log.count = log.count.saturating_add(occurrences);
                EventLog {
                    count: log.count,
                    first_timestamp: log.first_timestamp.clone(),
                    name: log.name.clone(),
                }
            }
            None => EventLog {
                count: occurrences,
                first_timestamp: at(&["firstTimestamp"]).to_owned(),
                name: at(&["metadata", "name"]).to_owned(),
            },
        };
        map.insert("count".into(), log.count.into());
        if !log.first_timestamp.is_empty() {
            map.insert("firstTimestamp".into(), log.first_timestamp.clone().into());
        }
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            if !log.name.is_empty() {
                meta.insert("name".into(), log.name.clone().into());
            }
        }
        self.logs.insert(key, log);
    }
}

/// The fields an aggregate repeats from the event that started it.
fn template(e: &Value) -> Map<String, Value> {
    let mut t = Map::new();
    for field in [
        "involvedObject",
        "type",
        "reason",
        "source",
        "reportingComponent",
        "reportingInstance",
    ] {
        if let Some(v) = e.get(field) {
            t.insert(field.into(), v.clone());
        }
    }
    if let Some(ns) = e["metadata"]["namespace"].as_str() {
        t.insert("namespace".into(), ns.into());
    }
    t
}

fn set_annotation(e: &mut Map<String, Value>, key: &str, value: &str) {
    let meta = e
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !annotations.is_object() {
            *annotations = Value::Object(Map::new());
        }
        if let Value::Object(a) = annotations {
            a.insert(key.into(), value.into());
        }
    }
}

impl Filter for Correlate {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.max_events < 1 {
            return Err("max_events must be at least 1".into());
        }
        if config.interval_seconds == 0 || config.flush_seconds == 0 {
            return Err("interval_seconds and flush_seconds must be at least 1".into());
        }
        let spam = TokenBuckets::new(config.spam_qps, f64::from(config.spam_burst))
            .map_err(|e| format!("spam_qps and spam_burst: {e}"))?;
        Ok(Self {
            spam,
            interval_ms: config.interval_seconds.saturating_mul(1000),
            groups: Bounded::new(config.max_keys),
            logs: Bounded::new(config.max_keys),
            uids: Bounded::new(config.max_keys),
            pending: None,
            pending_changed: false,
            dirty: Default::default(),
            config,
        })
    }

    fn process(&mut self, _ctx: &Context, event: &Event<'_>) -> Verdict {
        // Parsed once; every key is read from it by reference.
        let Ok(mut value) = event.json_value() else {
            return Verdict::Keep;
        };
        if !value.is_object() {
            return Verdict::Keep;
        }
        let now = host::now_ms();
        let occurrences = self.occurrences(&value);
        if occurrences == 0 {
            host::counter_add("duplicates", 1);
            return Verdict::drop("k8s-correlate: already seen at this count");
        }
        let cluster = event.extension("k8scluster").unwrap_or("");
        let key = self.aggregate_key(&value, cluster);
        if self.aggregate(&value, event, key, occurrences, now) {
            host::counter_add("aggregated", 1);
            let name = self.groups.get(key).and_then(|r| r.aggregate.as_ref());
            return Verdict::drop(format!(
                "k8s-correlate: folded into {}",
                name.map_or("its aggregate", |a| a.name.as_str())
            ));
        }
        // The spam key, per source and object (counting changes neither).
        let spam_key = {
            let o = |k: &str| str_at(&value, &["involvedObject", k]);
            format!(
                "correlate:spam:{:016x}",
                fnv(&[
                    cluster,
                    str_at(&value, &["source", "component"]),
                    str_at(&value, &["source", "host"]),
                    o("kind"),
                    o("namespace"),
                    o("name"),
                    o("uid"),
                    o("apiVersion"),
                ])
            )
        };
        let Value::Object(core) = &mut value else {
            return Verdict::Keep;
        };
        self.observe(core, cluster, occurrences);
        if !self.spam.take(&spam_key, now) {
            host::counter_add("spam_filtered", 1);
            return Verdict::drop("k8s-correlate: over the spam budget of its source and object");
        }
        let aggregate_name = match self.groups.get(key).and_then(|r| r.aggregate.as_ref()) {
            Some(a) => a.name.clone(),
            None => self.aggregate_name(&value, key, now),
        };
        let Value::Object(core) = &mut value else {
            return Verdict::Keep;
        };
        set_annotation(core, AGGREGATE_ANNOTATION, &aggregate_name);
        let count = core.get("count").and_then(Value::as_u64).unwrap_or(1);
        let name = core
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let mut patch = Patch::new().set("k8scount", count.to_string());
        if !name.is_empty() {
            patch = patch.set("k8sname", name);
        }
        Verdict::Patch(patch.json(&value))
    }

    /// Each event as [`Filter::process`]; the pending index is written once per batch
    /// when it changed (so a restart finds every pending aggregate).
    fn process_batch(&mut self, ctx: &Context, events: &[Event<'_>], out: &mut Verdicts) {
        for event in events {
            out.push(&self.process(ctx, event));
        }
        self.save_groups();
        self.save_pending();
    }

    fn tick(&mut self, now_ms: u64) -> Vec<OwnedEvent> {
        let keys: Vec<u64> = self.pending().iter().copied().collect();
        let flush_ms = self.config.flush_seconds.saturating_mul(1000);
        let ttl = self.state_ttl();
        let mut out = Vec::new();
        for key in keys {
            // The instance's copy when it has one (a restart leaves only the state's).
            let in_memory = self.groups.get_mut(key).map(std::mem::take);
            let Some(mut record) = in_memory.or_else(|| load_group(key)) else {
                self.pending().remove(&key);
                self.pending_changed = true;
                continue;
            };
            let expired = now_ms.saturating_sub(record.last_ms) > self.interval_ms;
            let Some(aggregate) = record.aggregate.as_mut() else {
                self.pending().remove(&key);
                self.pending_changed = true;
                // Its message history stays.
                self.keep_group(key, record);
                continue;
            };
            let due = aggregate.count > aggregate.flushed
                && (expired || now_ms.saturating_sub(aggregate.flushed_ms) >= flush_ms);
            if due {
                out.push(aggregate_event(aggregate));
                aggregate.flushed = aggregate.count;
                aggregate.flushed_ms = now_ms;
                host::counter_add("aggregates_emitted", 1);
            }
            if expired && aggregate.count == aggregate.flushed {
                // The window closed and its last count went out: a later similar event
                // starts afresh.
                state::delete(&record_key(key));
                state::delete(&shape_key(key));
                self.groups.remove(key);
                self.dirty.remove(&key);
                self.pending().remove(&key);
                self.pending_changed = true;
                continue;
            }
            if due {
                put_json(&record_key(key), &record, ttl);
                // The shape lives as long as its record.
                if let Some(aggregate) = &record.aggregate {
                    put_json(&shape_key(key), &aggregate.shape, ttl);
                }
                self.dirty.remove(&key);
            }
            self.keep_group(key, record);
        }
        self.save_pending();
        out
    }
}

/// A pending aggregate as the core/v1 Event it stands for.
fn aggregate_event(a: &Aggregate) -> OwnedEvent {
    let mut core = a.shape.template.clone();
    let namespace = core
        .remove("namespace")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut meta = Map::new();
    meta.insert("name".into(), a.name.clone().into());
    meta.insert("namespace".into(), namespace.into());
    core.insert("metadata".into(), Value::Object(meta));
    core.insert("apiVersion".into(), "v1".into());
    core.insert("kind".into(), "Event".into());
    core.insert("message".into(), a.message.clone().into());
    core.insert("count".into(), a.count.into());
    core.insert("firstTimestamp".into(), a.first_timestamp.clone().into());
    core.insert("lastTimestamp".into(), a.last_timestamp.clone().into());
    set_annotation(&mut core, AGGREGATE_ANNOTATION, &a.name);
    let mut event = OwnedEvent::new(
        format!("{}.{}", a.name, a.count),
        "/k8s-correlate",
        "io.k8s.core.v1.Event",
    )
    .with_json(&Value::Object(core));
    for (k, v) in &a.shape.attributes {
        event.set(k, v.clone());
    }
    event.set("k8sname", a.name.clone());
    event.set("k8scount", a.count.to_string());
    event
}

weir_guest::export_filter!(Correlate);

#[cfg(test)]
mod tests;
