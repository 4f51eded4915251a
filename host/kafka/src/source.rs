//! The Kafka source: consumers of one group reading CloudEvents into the routes, at least
//! once.
//!
//! Each consumer reads a batch (up to `max_batch` records or `batch_linger_ms`), decodes
//! it, and hands the events to the routes; records that are not CloudEvents go to the
//! source's dead-letter sink with the reason and their original key, headers and value.
//! A batch's offsets are stored for commit only after every route wrote its events (or
//! dead-lettered them) and its poison records are written to the dead-letter sink.
//! Several batches may be in flight; their offsets are stored in the order they were
//! read, so a committed offset never passes an unfinished record. librdkafka commits the
//! stored offsets every second, on rebalance and at shutdown. Offsets of partitions
//! revoked while their batch was in flight are not stored: the partition's new owner
//! reads those records again.

use super::binding::{decode, RecordView};
use super::ledger::{Ledger, Partition, Ready, Span};
use super::settings::{ClusterConfig, KafkaSourceConfig};
use crate::metrics::KafkaMetrics;
use prometheus::IntGaugeVec;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_core::dead_letter::{DeadLetter, RawRecord};
use weir_core::sink::Sink;
use weir_core::util::backoff;
use weir_core::Event;
use weir_router::source::{SourceContext, SourceError};
use weir_router::{Origin, Producer, Router, RouterError};

/// The consumer's context: rebalances and client errors are logged, statistics feed the
/// lag gauge.
struct ConsumerHooks {
    group: String,
    lag: IntGaugeVec,
    /// `weir_kafka_consumer_up` of this group.
    up: prometheus::IntGauge,
    ledger: Arc<Ledger>,
    /// Longest a rebalance waits for the batches of the partitions given up.
    drain_limit: Duration,
}

fn partitions(tpl: &TopicPartitionList) -> HashSet<Partition> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

/// A partition list holding these next offsets.
fn offset_list<'a>(offsets: impl Iterator<Item = (&'a Partition, i64)>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(offset));
    }
    tpl
}

/// Stores offsets for the next commit; partitions no longer assigned are skipped by the
/// client (their new owner reads those records again).
fn store_offsets<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    ready: &Ready,
) -> Result<(), rdkafka::error::KafkaError> {
    if ready.is_empty() {
        return Ok(());
    }
    consumer.store_offsets(&offset_list(ready.iter().map(|(p, s)| (p, s.next))))
}

/// Commits the offsets last stored for these partitions, waiting for the broker.
fn commit_stored<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    ledger: &Ledger,
    partitions: &HashSet<Partition>,
) -> Result<usize, rdkafka::error::KafkaError> {
    let stored = ledger.stored(partitions);
    if stored.is_empty() {
        return Ok(0);
    }
    let tpl = offset_list(stored.iter().map(|(p, o)| (p, *o)));
    consumer
        .commit(&tpl, CommitMode::Sync)
        .map(|()| stored.len())
}

/// Runs a blocking wait from async code: on a multi-threaded runtime's worker the other
/// tasks move to another thread meanwhile.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl ClientContext for ConsumerHooks {
    fn stats_raw(&self, statistics: &[u8]) {
        let Ok(stats) = serde_json::from_slice::<serde_json::Value>(statistics) else {
            return;
        };
        // Connected when a real broker's connection is up (librdkafka's internal broker,
        // node id -1, is always "UP").
        let connected = stats
            .get("brokers")
            .and_then(|b| b.as_object())
            .is_some_and(|brokers| {
                brokers.values().any(|b| {
                    b.get("nodeid")
                        .and_then(|n| n.as_i64())
                        .is_some_and(|n| n >= 0)
                        && b.get("state").and_then(|s| s.as_str()) == Some("UP")
                })
            });
        self.up.set(i64::from(connected));
        let Some(topics) = stats.get("topics").and_then(|t| t.as_object()) else {
            return;
        };
        for (topic, t) in topics {
            let Some(parts) = t.get("partitions").and_then(|p| p.as_object()) else {
                continue;
            };
            for (partition, p) in parts {
                if partition == "-1" {
                    continue;
                }
                let lag = p.get("consumer_lag").and_then(|l| l.as_i64());
                if let Some(lag) = lag.filter(|l| *l >= 0) {
                    self.lag
                        .with_label_values(&[self.group.as_str(), topic, partition])
                        .set(lag);
                }
            }
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.up.set(0);
        tracing::warn!(group = %self.group, "kafka client: {error}: {reason}");
    }
}

impl ConsumerContext for ConsumerHooks {
    /// Before partitions are given up, their batches in flight finish and their offsets
    /// are committed, so the next owner starts after them (no repeats on rebalance).
    fn pre_rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let gone = partitions(tpl);
        if gone.is_empty() {
            return;
        }
        let finished = blocking(|| self.ledger.wait_for(&gone, self.drain_limit));
        if !finished {
            tracing::warn!(group = %self.group, "batches of revoked partitions still running after {:?}: their records will be read again by the new owner", self.drain_limit);
        }
        let ready = self.ledger.ready();
        if let Err(e) = store_offsets(consumer, &ready) {
            tracing::info!(group = %self.group, "offsets not stored at rebalance: {e}");
        }
        if let Err(e) = commit_stored(consumer, &self.ledger, &gone) {
            tracing::warn!(group = %self.group, "commit at rebalance failed (the new owner repeats from the last commit): {e}");
        }
        self.ledger.revoke(&gone);
    }

    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let list = |tpl: &TopicPartitionList| {
            tpl.elements()
                .iter()
                .map(|e| format!("{}/{}", e.topic(), e.partition()))
                .collect::<Vec<_>>()
                .join(",")
        };
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.ledger.assign(&partitions(tpl));
                tracing::info!(group = %self.group, partitions = %list(tpl), "partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                for e in tpl.elements() {
                    let _ = self.lag.remove_label_values(&[
                        self.group.as_str(),
                        e.topic(),
                        &e.partition().to_string(),
                    ]);
                }
                tracing::info!(group = %self.group, partitions = %list(tpl), "partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(group = %self.group, "rebalance failed: {e}"),
        }
    }
}

type GroupConsumer = StreamConsumer<ConsumerHooks>;

/// Completes once the shutdown flag is set.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

impl weir_router::source::StartSource for KafkaSourceConfig {
    async fn start(
        &self,
        name: &str,
        cx: SourceContext,
    ) -> Result<weir_router::source::RunningSource, SourceError> {
        let cluster = self.cluster.as_ref().ok_or_else(|| {
            SourceError::msg(
                name,
                "no Kafka cluster: set `kafka.cluster` or the source's `cluster`",
            )
        })?;
        let dead_letter = cx
            .dead_letter_sinks
            .get(&self.dead_letter)
            .cloned()
            .ok_or_else(|| SourceError::msg(name, format!("no sink `{}`", self.dead_letter)))?;
        let tasks = start(name, self, cluster, &cx, dead_letter)?;
        Ok(weir_router::source::RunningSource { tasks, addr: None })
    }
}

/// Starts the consumers of a source; they run until `cx.shutdown` turns true, then finish
/// their batches in flight, store and commit what finished, and leave the group.
fn start(
    name: &str,
    config: &KafkaSourceConfig,
    cluster: &ClusterConfig,
    cx: &SourceContext,
    dead_letter: Arc<dyn Sink>,
) -> Result<Vec<JoinHandle<()>>, SourceError> {
    let err = |reason: String| SourceError::msg(name, reason);
    let metrics = Arc::new(KafkaMetrics::new(&cx.metrics));
    config.check().map_err(|e| err(e.0))?;
    let mut tasks = Vec::with_capacity(config.instances);
    for instance in 0..config.instances {
        let props = config
            .consumer_config(cluster, instance)
            .map_err(|e| err(e.0))?;
        let ledger = Arc::new(Ledger::default());
        let context = ConsumerHooks {
            group: config.group_id.clone(),
            lag: metrics.consumer_lag.clone(),
            up: metrics.consumer_up.with_label_values(&[name]),
            ledger: ledger.clone(),
            drain_limit: Duration::from_secs(30),
        };
        let consumer: GroupConsumer = props
            .create_with_context(context)
            .map_err(|e| SourceError::new(name, "cannot create consumer", e))?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| SourceError::new(name, format!("cannot subscribe to {topics:?}"), e))?;
        let worker = Worker {
            name: Arc::from(name),
            config: config.clone(),
            consumer,
            router: cx.router.clone(),
            metrics: metrics.clone(),
            dead_letter: dead_letter.clone(),
            shutdown: cx.shutdown.clone(),
            max_bytes: config.max_message_bytes.unwrap_or(cx.max_event_bytes),
            ledger,
        };
        tasks.push(tokio::spawn(worker.run()));
    }
    tracing::info!(source = name, group = %config.group_id, topics = ?config.topics, instances = config.instances, "kafka source started");
    Ok(tasks)
}

/// One batch read from the consumer, owned, ready to be handed on.
struct ReadBatch {
    events: Vec<Event>,
    poison: Vec<(RawRecord, String)>,
    /// Per partition: the next offset to commit and how many records the batch has.
    offsets: HashMap<Partition, Span>,
    /// The partition of each event, in order (to drop records of partitions revoked
    /// while the batch was read).
    parts: Vec<Partition>,
    /// When its first record was read.
    read_at: Instant,
}

struct Worker {
    name: Arc<str>,
    config: KafkaSourceConfig,
    consumer: GroupConsumer,
    router: Arc<Router>,
    metrics: Arc<KafkaMetrics>,
    dead_letter: Arc<dyn Sink>,
    shutdown: watch::Receiver<bool>,
    max_bytes: usize,
    ledger: Arc<Ledger>,
}

/// What happened to a batch handed on.
enum Handled {
    /// Every event and poison record is taken care of: its offsets may be stored.
    Done,
    /// Abandoned at shutdown: its records will be read again.
    Abandoned,
}

impl Worker {
    async fn run(self) {
        let mut stopping = self.shutdown.clone();
        let mut topic_names: HashMap<String, Arc<str>> = HashMap::new();
        loop {
            let room = self.ledger.in_flight() < self.config.max_in_flight;
            tokio::select! {
                biased;
                () = stopped(&mut stopping) => break,
                () = self.ledger.wake.notified() => self.store_ready(),
                first = self.consumer.recv(), if room => {
                    match first {
                        Ok(message) => {
                            let batch = self.read_batch(message, &mut topic_names).await;
                            if batch.offsets.is_empty() {
                                continue;
                            }
                            let id = self.ledger.begin(&batch.offsets);
                            let ledger = self.ledger.clone();
                            let handling = self.hand_on(batch);
                            tokio::spawn(async move {
                                let handled = handling.await;
                                ledger.finish(id, matches!(handled, Handled::Done));
                            });
                        }
                        Err(e) => {
                            tracing::warn!(source = %self.name, "kafka consumer: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }
        // Shutdown: finish what was handed on (routes still run), then commit.
        while self.ledger.in_flight() > 0 {
            self.ledger.wake.notified().await;
            self.store_ready();
        }
        self.store_ready();
        let assigned: HashSet<Partition> = self
            .consumer
            .assignment()
            .map(|tpl| partitions(&tpl))
            .unwrap_or_default();
        match commit_stored(&self.consumer, &self.ledger, &assigned) {
            Ok(0) => {}
            Ok(partitions) => {
                tracing::info!(source = %self.name, partitions, "offsets committed at shutdown")
            }
            Err(e) => {
                tracing::warn!(source = %self.name, "final commit failed (the group re-reads from the last commit): {e}")
            }
        }
        self.consumer.unsubscribe();
    }

    /// Stores the offsets of finished batches for the next commit.
    fn store_ready(&self) {
        let ready = self.ledger.ready();
        if ready.is_empty() {
            return;
        }
        match store_offsets(&self.consumer, &ready) {
            Ok(()) => {
                for ((topic, _), span) in &ready {
                    self.metrics
                        .committed
                        .with_label_values(&[self.config.group_id.as_str(), topic])
                        .inc_by(span.records);
                }
            }
            // A partition revoked meanwhile: its new owner reads the batch again.
            Err(e) => {
                tracing::info!(source = %self.name, "offsets not stored (partition revoked?): {e}")
            }
        }
    }

    /// Reads up to `max_batch` records, starting with `first`, waiting at most the
    /// linger time for more.
    async fn read_batch(
        &self,
        first: BorrowedMessage<'_>,
        topic_names: &mut HashMap<String, Arc<str>>,
    ) -> ReadBatch {
        let mark = self.ledger.mark();
        let mut batch = ReadBatch {
            events: Vec::with_capacity(self.config.max_batch.min(4096)),
            poison: Vec::new(),
            offsets: HashMap::new(),
            parts: Vec::with_capacity(self.config.max_batch.min(4096)),
            read_at: Instant::now(),
        };
        self.take(first, &mut batch, topic_names);
        let deadline = tokio::time::Instant::now() + self.config.linger();
        while batch.events.len() + batch.poison.len() < self.config.max_batch {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(m)) => self.take(m, &mut batch, topic_names),
                Ok(Err(e)) => {
                    tracing::warn!(source = %self.name, "kafka consumer: {e}");
                    break;
                }
                Err(_) => break,
            }
        }
        if self.ledger.mark() != mark {
            // Partitions were given up while this batch was read: their records belong to
            // the new owner, which starts at the committed offset.
            let gone = |p: &Partition| self.ledger.revoked_since(mark, p);
            let parts = std::mem::take(&mut batch.parts);
            let events = std::mem::take(&mut batch.events);
            let before = events.len() + batch.poison.len();
            for (event, part) in events.into_iter().zip(parts) {
                if !gone(&part) {
                    batch.events.push(event);
                    batch.parts.push(part);
                }
            }
            batch
                .poison
                .retain(|(raw, _)| !gone(&(Arc::from(raw.topic.as_str()), raw.partition)));
            batch.offsets.retain(|p, _| !gone(p));
            let dropped = before - batch.events.len() - batch.poison.len();
            if dropped > 0 {
                tracing::info!(source = %self.name, dropped, "records of partitions revoked while read are left to their new owner");
            }
        }
        let mut consumed: HashMap<(&str, &str), u64> = HashMap::new();
        for (event, (topic, _)) in batch.events.iter().zip(&batch.parts) {
            *consumed
                .entry((topic, self.metrics.types.label(&event.ty)))
                .or_default() += 1;
        }
        for (raw, _) in &batch.poison {
            *consumed
                .entry((raw.topic.as_str(), "undecodable"))
                .or_default() += 1;
        }
        for ((topic, ty), n) in consumed {
            self.metrics
                .consumed
                .with_label_values(&[topic, ty])
                .inc_by(n);
        }
        batch
    }

    fn take(
        &self,
        m: BorrowedMessage<'_>,
        batch: &mut ReadBatch,
        topic_names: &mut HashMap<String, Arc<str>>,
    ) {
        let topic = match topic_names.get(m.topic()) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<str> = Arc::from(m.topic());
                topic_names.insert(m.topic().to_owned(), t.clone());
                t
            }
        };
        let span = batch
            .offsets
            .entry((topic.clone(), m.partition()))
            .or_insert(Span {
                next: 0,
                records: 0,
            });
        span.next = m.offset() + 1;
        span.records += 1;
        let headers = m.headers();
        let size = m.payload_len()
            + m.key().map_or(0, <[u8]>::len)
            + headers.map_or(0, |h| {
                h.iter()
                    .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
                    .sum()
            });
        let decoded = if size > self.max_bytes {
            Err(format!(
                "record of {size} bytes is larger than the source's limit of {} bytes",
                self.max_bytes
            ))
        } else {
            decode(&RecordView {
                headers,
                key: m.key(),
                payload: m.payload(),
            })
            .map_err(|e| e.to_string())
        };
        match decoded {
            Ok(mut event) => {
                // W3C Trace Context in the record's headers, when the event carries none.
                if weir_core::trace::enabled()
                    && event.extension(weir_core::trace::TRACEPARENT).is_none()
                {
                    let carried = weir_core::trace::from_carrier(|name| {
                        headers?
                            .iter()
                            .find(|h| h.key == name)
                            .and_then(|h| std::str::from_utf8(h.value?).ok())
                    });
                    if let Some(w3c) = carried {
                        weir_core::trace::stamp(&mut event, &w3c);
                    }
                }
                batch.events.push(event);
                batch.parts.push((topic.clone(), m.partition()));
            }
            Err(reason) => {
                weir_core::rejections::log(
                    "kafka",
                    "undecodable",
                    &format_args!(
                        "record {topic}/{}@{} of source `{}` is not a valid CloudEvent, dead-lettering it: {reason}",
                        m.partition(),
                        m.offset(),
                        self.name
                    ),
                );
                batch.poison.push((
                    RawRecord {
                        topic: topic.to_string(),
                        partition: m.partition(),
                        offset: m.offset(),
                        timestamp_ms: m.timestamp().to_millis(),
                        key: m.key().map(bytes::Bytes::copy_from_slice),
                        headers: headers
                            .map(|h| {
                                h.iter()
                                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        payload: m.payload().map(bytes::Bytes::copy_from_slice),
                    },
                    reason,
                ));
            }
        }
    }

    /// Hands a batch to the routes and its poison records to the dead-letter sink,
    /// retrying until both are done or the router shuts down.
    fn hand_on(&self, batch: ReadBatch) -> impl std::future::Future<Output = Handled> + 'static {
        let router = self.router.clone();
        let dead_letter = self.dead_letter.clone();
        let name = self.name.clone();
        let route = self.config.route.clone();
        let shutdown = self.shutdown.clone();
        let dlq_name = self.config.dead_letter.clone();
        let metrics = self.metrics.clone();
        async move {
            let ReadBatch {
                mut events,
                poison,
                parts,
                read_at,
                ..
            } = batch;
            let stopping = || *shutdown.borrow();
            if !poison.is_empty() {
                let poison = Arc::new(poison);
                let written = persist(stopping, || {
                    let (sink, letters, source) =
                        (dead_letter.clone(), poison.clone(), name.clone());
                    let (router, dlq_name) = (router.clone(), dlq_name.clone());
                    async move {
                        let n = letters.len();
                        let written = tokio::task::spawn_blocking(move || {
                            let route = format!("kafka:{source}");
                            let letters: Vec<DeadLetter<'_>> = letters
                                .iter()
                                .map(|(raw, reason)| DeadLetter {
                                    route: &route,
                                    tenant: "default",
                                    stage: "decode",
                                    filter_version: None,
                                    reason,
                                    event: None,
                                    original: Some(raw),
                                })
                                .collect();
                            sink.write_dead_letters(&letters)
                        })
                        .await;
                        match written {
                            Ok(Ok(())) => {
                                router
                                    .metrics()
                                    .dead_lettered(&dlq_name, std::iter::repeat_n("decode", n));
                                Attempt::Done
                            }
                            Ok(Err(e)) => {
                                tracing::error!("cannot dead-letter undecodable records (retrying, offsets held): {e}");
                                Attempt::Again(None)
                            }
                            Err(e) => {
                                tracing::error!("dead-letter task failed: {e}");
                                Attempt::Again(None)
                            }
                        }
                    }
                })
                .await;
                if matches!(written, Handled::Abandoned) || events.is_empty() {
                    return written;
                }
            }
            if events.is_empty() {
                return Handled::Done;
            }
            let started = Instant::now();
            let span = weir_core::trace::receive_span(
                "kafka",
                weir_core::trace::Receiving::Consumed,
                events.len(),
            );
            weir_core::trace::receive(&span, None, &mut events);
            let handled = persist(stopping, || {
                let origin = Origin {
                    source_kind: "kafka",
                    route: route.as_deref(),
                    principal: None,
                    tenant_hint: None,
                    // Whoever may write the topic the operator configured.
                    producer: Producer::Platform,
                };
                // A copy per attempt: the router consumes what it is given.
                let batch = events.clone();
                let (router, name) = (router.clone(), name.clone());
                let span = span.clone();
                async move {
                    let submitted =
                        tracing::Instrument::instrument(router.submit_to(origin, batch), span);
                    match submitted.await {
                        Ok(_) => Attempt::Done,
                        Err(RouterError::Stopped(_)) => Attempt::Abandon,
                        Err(RouterError::RateLimited {
                            retry_after_secs, ..
                        }) => Attempt::Again(Some(Duration::from_secs(retry_after_secs))),
                        Err(e) => {
                            tracing::error!(source = %name, waited_ms = started.elapsed().as_millis() as u64, "batch not taken (offsets held, retrying): {e}");
                            Attempt::Again(None)
                        }
                    }
                }
            })
            .await;
            if matches!(handled, Handled::Done) {
                // The Roost Keeper's consume duration, per event by type.
                let seconds = read_at.elapsed().as_secs_f64();
                for (event, (topic, _)) in events.iter().zip(&parts) {
                    metrics
                        .event_consume_seconds
                        .with_label_values(&[topic, metrics.types.label(&event.ty)])
                        .observe(seconds);
                }
            }
            handled
        }
    }
}

/// What one attempt at handing a batch on came to.
enum Attempt {
    /// Taken care of.
    Done,
    /// Give up: the router is stopping.
    Abandon,
    /// Try again after this pause (default: the backoff).
    Again(Option<Duration>),
}

/// Repeats `attempt` with jittered backoff (100 ms to 10 s) until it is done, gives up,
/// or shutdown begins.
async fn persist<F, Fut>(stopping: impl Fn() -> bool, mut attempt: F) -> Handled
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Attempt>,
{
    let mut failures = 0;
    loop {
        let pause = match attempt().await {
            Attempt::Done => return Handled::Done,
            Attempt::Abandon => return Handled::Abandoned,
            Attempt::Again(pause) => {
                failures += 1;
                pause.unwrap_or_else(|| {
                    backoff(
                        failures,
                        Duration::from_millis(100),
                        Duration::from_secs(10),
                    )
                })
            }
        };
        if stopping() {
            return Handled::Abandoned;
        }
        tokio::time::sleep(pause).await;
    }
}
