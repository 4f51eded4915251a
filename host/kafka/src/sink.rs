//! The Kafka sink: an idempotent producer (`acks=all`) writing CloudEvents to one topic in
//! binary or structured mode, behind retries for transient errors and a circuit breaker.
//!
//! A sync write returns once the brokers acknowledged every record, or with the indices
//! of the records that failed, so the route dead-letters only those. The same sink used
//! as a route's `dead_letter` writes dead letters: the event (or, for a record that never
//! became an event, the original record's key, headers and value) with `weir_dlq_*`
//! headers naming the route, tenant, failing stage and reason.

use super::binding::{encode_binary, encode_structured, EncodedRecord};
use super::metrics::KafkaMetrics;
use super::settings::{BindingMode, ClusterConfig, KafkaSinkConfig, Publish};
use prometheus::{Histogram, IntCounter};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};
use weir_core::dead_letter::DeadLetter;
use weir_core::resilience::{CircuitBreaker, Permit};
use weir_core::sink::{BuildSink, Capabilities, ConfigProblem, Sink, SinkContext, SinkError};
use weir_core::util::backoff;
use weir_core::Event;

/// What one write waits for: the records still unacknowledged and those that failed.
struct Batch {
    state: Mutex<BatchState>,
    done: Condvar,
    started: Instant,
    /// Async writes are counted as they settle, as nobody waits for them.
    counted_on_delivery: bool,
}

#[derive(Default)]
struct BatchState {
    remaining: usize,
    failed: Vec<(usize, KafkaError)>,
}

/// A record's delivery ticket: its batch and its index there.
type Ticket = Box<(Arc<Batch>, usize)>;

/// The producer's context: delivery reports settle tickets; client errors are logged.
#[derive(Clone)]
struct ProducerHooks {
    sink: String,
    /// `weir_kafka_producer_up` of this sink.
    up: prometheus::IntGauge,
    latency: Histogram,
    async_published: IntCounter,
    async_failed: IntCounter,
}

impl ClientContext for ProducerHooks {
    fn error(&self, error: KafkaError, reason: &str) {
        self.up.set(0);
        tracing::warn!(sink = %self.sink, "kafka client: {error}: {reason}");
    }
}

impl ProducerContext for ProducerHooks {
    type DeliveryOpaque = Ticket;

    fn delivery(&self, result: &DeliveryResult<'_>, ticket: Ticket) {
        let (batch, index) = *ticket;
        self.latency.observe(batch.started.elapsed().as_secs_f64());
        let mut state = batch.state.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(_) => self.up.set(1),
            Err((e, _)) => {
                if is_transient(e) {
                    self.up.set(0);
                }
                state.failed.push((index, e.clone()));
            }
        }
        state.remaining = state.remaining.saturating_sub(1);
        if batch.counted_on_delivery {
            match result {
                Ok(_) => self.async_published.inc(),
                Err((e, m)) => {
                    self.async_failed.inc();
                    tracing::error!(sink = %self.sink, offset = m.offset(), "async publish failed: {e}");
                }
            }
        }
        if state.remaining == 0 {
            batch.done.notify_all();
        }
    }
}

/// Whether a failed record may succeed if sent again: network, timeouts, leadership
/// changes, a full local queue, a topic not (yet) known. Everything else (too large,
/// not authorized, invalid) fails at once.
pub fn is_transient(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageTimedOut
                | C::QueueFull
                | C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::Resolve
                | C::NetworkException
                | C::RequestTimedOut
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
                | C::UnknownTopicOrPartition
                | C::UnknownTopic
                | C::UnknownPartition
                | C::BrokerNotAvailable
                | C::KafkaStorageError
                | C::PreferredLeaderNotAvailable
                | C::TimedOutQueue
        )
    )
}

/// Metric handles of one sink.
struct SinkMetrics {
    failed: IntCounter,
    retries: IntCounter,
    refused: IntCounter,
    published: prometheus::IntCounterVec,
    /// `weir_kafka_event_publish_seconds`.
    event_seconds: prometheus::HistogramVec,
    failed_by_type: prometheus::IntCounterVec,
    types: weir_core::metrics::TypeLabels,
}

impl BuildSink for KafkaSinkConfig {
    fn capabilities(&self) -> Capabilities {
        Capabilities::EVENTS_AND_DEAD_LETTERS
    }

    fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if let Err(e) = self.check() {
            problems.push(ConfigProblem::new(e.0));
        }
        match &self.cluster {
            Some(cluster) => {
                if let Err(e) = cluster.check() {
                    problems.push(ConfigProblem::at("cluster", e.0));
                }
            }
            None => problems.push(ConfigProblem::new(
                "a Kafka sink needs a cluster: set `kafka.cluster` or the sink's `cluster`",
            )),
        }
        problems
    }

    fn build(&self, cx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
        let cluster = self.cluster.as_ref().ok_or_else(|| {
            SinkError::setup_msg(
                cx.name,
                "no Kafka cluster: set `kafka.cluster` or the sink's `cluster`",
            )
        })?;
        let metrics = KafkaMetrics::new(cx.metrics);
        Ok(Arc::new(KafkaSink::open(cx.name, self, cluster, &metrics)?))
    }
}

/// A Kafka sink.
pub struct KafkaSink {
    name: String,
    topic: String,
    mode: BindingMode,
    publish: Publish,
    /// Replaced by a fresh client for each half-open probe (see [`KafkaSink::renew`]).
    producer: RwLock<Arc<ThreadedProducer<ProducerHooks>>>,
    props: rdkafka::ClientConfig,
    context: ProducerHooks,
    breaker: Option<CircuitBreaker>,
    config: KafkaSinkConfig,
    metrics: SinkMetrics,
}

impl KafkaSink {
    /// Creates the producer (it connects in the background: the router starts while the
    /// cluster is down).
    pub fn open(
        name: &str,
        config: &KafkaSinkConfig,
        cluster: &ClusterConfig,
        metrics: &KafkaMetrics,
    ) -> Result<Self, SinkError> {
        let setup = |reason: String| SinkError::setup_msg(name, reason);
        config.check().map_err(|e| setup(e.0))?;
        let props = config.producer_config(cluster).map_err(|e| setup(e.0))?;
        let k = metrics;
        let l = [name, config.topic.as_str(), "*"];
        let context = ProducerHooks {
            sink: name.to_owned(),
            latency: k.publish_seconds.with_label_values(&[name]),
            up: {
                // Up until the client reports an error: an idle sink is not a down one.
                let up = k.producer_up.with_label_values(&[name]);
                up.set(1);
                up
            },
            async_published: k.published.with_label_values(&l),
            async_failed: k.failed.with_label_values(&l),
        };
        let producer: ThreadedProducer<ProducerHooks> = props
            .create_with_context(context.clone())
            .map_err(|e| SinkError::setup(name, "cannot create the producer", e))?;
        let breaker = config
            .circuit_breaker
            .enabled
            .then(|| k.breaker.breaker(name, &config.circuit_breaker));
        Ok(Self {
            name: name.to_owned(),
            topic: config.topic.clone(),
            mode: config.mode,
            publish: config.publish,
            producer: RwLock::new(Arc::new(producer)),
            props,
            context,
            breaker,
            config: config.clone(),
            metrics: SinkMetrics {
                failed: k.failed.with_label_values(&l),
                retries: k.breaker.retries.with_label_values(&[name]),
                refused: k.breaker.refused.with_label_values(&[name]),
                published: k.published.clone(),
                event_seconds: k.event_publish_seconds.clone(),
                failed_by_type: k.failed.clone(),
                types: k.types.clone(),
            },
        })
    }

    fn producer(&self) -> Arc<ThreadedProducer<ProducerHooks>> {
        self.producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the client before a half-open probe. Whatever state the failures left in
    /// the old one goes with it: an idempotent producer whose broker lost its producer
    /// id can loop bumping its epoch, and a fatal idempotence error is never cleared.
    /// Nothing is lost: sync writes of the old client have all been settled.
    fn renew(&self) {
        match self
            .props
            .create_with_context::<_, ThreadedProducer<ProducerHooks>>(self.context.clone())
        {
            Ok(fresh) => {
                let old = std::mem::replace(
                    &mut *self.producer.write().unwrap_or_else(|e| e.into_inner()),
                    Arc::new(fresh),
                );
                tracing::info!(sink = %self.name, "probing with a fresh Kafka client");
                drop(old);
            }
            Err(e) => {
                tracing::warn!(sink = %self.name, "cannot create a fresh Kafka client, probing with the old one: {e}")
            }
        }
    }

    fn encode(&self, event: &Event) -> EncodedRecord {
        let mut record = match self.mode {
            BindingMode::Binary => encode_binary(event),
            BindingMode::Structured => encode_structured(event),
        };
        // W3C Trace Context in Kafka headers: the consumer continues the event's trace.
        if weir_core::trace::enabled() {
            if let Some(w3c) = weir_core::trace::of_event(event) {
                let mut headers = std::mem::replace(&mut record.headers, OwnedHeaders::new());
                headers =
                    super::binding::put(headers, weir_core::trace::TRACEPARENT, &w3c.traceparent);
                if let Some(state) = &w3c.tracestate {
                    headers = super::binding::put(headers, weir_core::trace::TRACESTATE, state);
                }
                record.headers = headers;
            }
        }
        record
    }

    /// Hands records to the client; returns the batch to wait on and the records it
    /// refused at once (a full queue is waited out, up to the message timeout).
    fn enqueue(
        &self,
        records: Vec<(usize, EncodedRecord)>,
        counted_on_delivery: bool,
    ) -> (Arc<Batch>, Vec<(usize, KafkaError)>) {
        let batch = Arc::new(Batch {
            state: Mutex::new(BatchState {
                remaining: records.len(),
                failed: Vec::new(),
            }),
            done: Condvar::new(),
            started: Instant::now(),
            counted_on_delivery,
        });
        let mut refused = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(self.config.message_timeout_ms);
        let producer = self.producer();
        for (index, record) in records {
            let mut base = BaseRecord::<str, [u8], Ticket>::with_opaque_to(
                &self.topic,
                Box::new((batch.clone(), index)),
            )
            .headers(record.headers);
            if let Some(key) = &record.key {
                base = base.key(key.as_str());
            }
            if let Some(payload) = &record.payload {
                base = base.payload(payload.as_ref());
            }
            loop {
                match producer.send(base) {
                    Ok(()) => break,
                    Err((e, back))
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull)
                            && Instant::now() < deadline =>
                    {
                        base = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => {
                        refused.push((index, e));
                        let mut state = batch.state.lock().unwrap_or_else(|e| e.into_inner());
                        state.remaining = state.remaining.saturating_sub(1);
                        break;
                    }
                }
            }
        }
        (batch, refused)
    }

    /// Waits for every record of the batch to be settled.
    fn wait(&self, batch: &Batch) -> Vec<(usize, KafkaError)> {
        // librdkafka settles every record within message.timeout.ms; the margin covers
        // its timer granularity. Past it the rest counts as timed out.
        let limit = Duration::from_millis(self.config.message_timeout_ms) + Duration::from_secs(5);
        let mut state = batch.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.remaining > 0 {
            let left = limit.saturating_sub(batch.started.elapsed());
            if left.is_zero() {
                break;
            }
            state = batch
                .done
                .wait_timeout(state, left)
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        std::mem::take(&mut state.failed)
    }

    /// Sends records, retrying transient failures with backoff; answers the indices that
    /// still failed and why.
    fn send_all(
        &self,
        count: usize,
        encode: impl Fn(usize) -> EncodedRecord,
    ) -> Result<(), (Vec<usize>, String)> {
        if let Some(breaker) = &self.breaker {
            let permit = breaker.permit();
            if permit == Permit::Probe {
                self.renew();
            }
            if let Permit::Refused(wait) = permit {
                self.metrics.refused.inc();
                return Err((
                    (0..count).collect(),
                    format!(
                        "circuit open after repeated failures; next probe in {} ms",
                        wait.as_millis()
                    ),
                ));
            }
        }
        let mut pending: Vec<usize> = (0..count).collect();
        let mut failed_for_good: Vec<usize> = Vec::new();
        let mut last_error = None;
        let mut attempt = 0;
        loop {
            // Records are encoded when sent (again for a retry): the client takes the
            // headers, nothing is copied to keep them.
            let batch_records: Vec<(usize, EncodedRecord)> =
                pending.iter().map(|&i| (i, encode(i))).collect();
            let (batch, mut failed) = self.enqueue(batch_records, false);
            failed.extend(self.wait(&batch));
            let settled = batch
                .state
                .lock()
                .map(|s| s.remaining == 0)
                .unwrap_or(false);
            if !settled {
                // Records not settled in time: treat as timed out (the client will still
                // settle them later; a resend may duplicate, within at-least-once).
                let mut known = vec![false; count];
                for (i, _) in &failed {
                    if let Some(k) = known.get_mut(*i) {
                        *k = true;
                    }
                }
                for &i in &pending {
                    if !known[i] {
                        failed.push((
                            i,
                            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
                        ));
                    }
                }
            }
            let mut retry = Vec::new();
            for (i, e) in failed {
                if is_transient(&e) {
                    retry.push(i);
                } else {
                    failed_for_good.push(i);
                }
                last_error = Some(e);
            }
            let reason = || match &last_error {
                Some(e) => format!("kafka topic `{}`: {e}", self.topic),
                None => String::new(),
            };
            if retry.is_empty() || attempt >= self.config.retry.max_retries {
                let transient_left = !retry.is_empty();
                failed_for_good.extend(retry);
                if let Some(breaker) = &self.breaker {
                    if transient_left {
                        breaker.failure();
                    } else {
                        breaker.success();
                    }
                }
                if failed_for_good.is_empty() {
                    return Ok(());
                }
                failed_for_good.sort_unstable();
                return Err((failed_for_good, reason()));
            }
            attempt += 1;
            self.metrics.retries.inc();
            let pause = backoff(
                attempt,
                Duration::from_millis(self.config.retry.initial_backoff_ms),
                Duration::from_millis(self.config.retry.max_backoff_ms),
            );
            tracing::debug!(sink = %self.name, attempt, records = retry.len(), ?pause, "retrying: {}", reason());
            std::thread::sleep(pause);
            pending = retry;
        }
    }

    /// Counts the published and failed events of a batch by type, and observes each
    /// published one's publish duration (`took`, the batch's).
    fn count(&self, events: &[&Event], failed: &[usize], took: Duration) {
        let mut f = failed.iter().peekable();
        let mut i = 0;
        while i < events.len() {
            let ty = &events[i].ty;
            let (mut ok, mut bad) = (0u64, 0u64);
            while i < events.len() && events[i].ty == *ty {
                if f.peek() == Some(&&i) {
                    f.next();
                    bad += 1;
                } else {
                    ok += 1;
                }
                i += 1;
            }
            let l = [
                self.name.as_str(),
                self.topic.as_str(),
                self.metrics.types.label(ty),
            ];
            if ok > 0 {
                self.metrics.published.with_label_values(&l).inc_by(ok);
                let seconds = self.metrics.event_seconds.with_label_values(&[l[0], l[2]]);
                for _ in 0..ok {
                    seconds.observe(took.as_secs_f64());
                }
            }
            if bad > 0 {
                self.metrics
                    .failed_by_type
                    .with_label_values(&l)
                    .inc_by(bad);
            }
        }
    }

    fn dead_letter_record(&self, letter: &DeadLetter<'_>) -> EncodedRecord {
        let record = match (letter.original, letter.event) {
            (Some(raw), _) => {
                let mut headers = OwnedHeaders::new_with_capacity(raw.headers.len() + 8);
                for (k, v) in &raw.headers {
                    headers = headers.insert(Header {
                        key: k,
                        value: v.as_deref(),
                    });
                }
                headers = headers
                    .insert(Header {
                        key: "weir_dlq_topic",
                        value: Some(raw.topic.as_bytes()),
                    })
                    .insert(Header {
                        key: "weir_dlq_partition",
                        value: Some(raw.partition.to_string().as_bytes()),
                    })
                    .insert(Header {
                        key: "weir_dlq_offset",
                        value: Some(raw.offset.to_string().as_bytes()),
                    });
                EncodedRecord {
                    headers,
                    key: raw
                        .key
                        .as_ref()
                        .map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: raw.payload.clone(),
                }
            }
            (None, Some(event)) => self.encode(event),
            (None, None) => EncodedRecord {
                headers: OwnedHeaders::new(),
                key: None,
                payload: None,
            },
        };
        let EncodedRecord {
            mut headers,
            key,
            payload,
        } = record;
        for (name, value) in [
            ("weir_dlq_route", letter.route),
            ("weir_dlq_tenant", letter.tenant),
            ("weir_dlq_stage", letter.stage),
            ("weir_dlq_reason", letter.reason),
        ] {
            headers = super::binding::put(headers, name, value);
        }
        if let Some(version) = letter.filter_version {
            headers = super::binding::put(headers, "weir_dlq_filter_version", &version.to_string());
        }
        EncodedRecord {
            headers,
            key,
            payload,
        }
    }
}

impl Sink for KafkaSink {
    fn write(&self, events: &[&Event]) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        if self.publish == Publish::Async {
            let indexed: Vec<(usize, EncodedRecord)> = events
                .iter()
                .enumerate()
                .map(|(i, e)| (i, self.encode(e)))
                .collect();
            let (_, refused) = self.enqueue(indexed, true);
            if refused.is_empty() {
                return Ok(());
            }
            self.metrics.failed.inc_by(refused.len() as u64);
            return Err(SinkError::Partial {
                sink: self.name.clone(),
                reason: format!("kafka topic `{}`: {}", self.topic, refused[0].1),
                failed: refused.into_iter().map(|(i, _)| i).collect(),
                // Already retried by the client and by this sink's own loop.
                retry: Vec::new(),
            });
        }
        let started = Instant::now();
        match self.send_all(events.len(), |i| self.encode(events[i])) {
            Ok(()) => {
                self.count(events, &[], started.elapsed());
                Ok(())
            }
            Err((failed, reason)) => {
                self.count(events, &failed, started.elapsed());
                Err(SinkError::Partial {
                    sink: self.name.clone(),
                    failed,
                    retry: Vec::new(),
                    reason,
                })
            }
        }
    }

    fn write_dead_letters(&self, letters: &[DeadLetter<'_>]) -> Result<(), SinkError> {
        if letters.is_empty() {
            return Ok(());
        }
        // Dead letters always wait for the brokers: they must be durable before the
        // source is told the events are taken care of.
        match self.send_all(letters.len(), |i| self.dead_letter_record(&letters[i])) {
            Ok(()) => Ok(()),
            Err((failed, reason)) => Err(SinkError::Refused {
                sink: self.name.clone(),
                reason: format!(
                    "{} of {} dead letters not written: {reason}",
                    failed.len(),
                    letters.len()
                ),
            }),
        }
    }

    fn close(&self) {
        if let Err(e) = self
            .producer()
            .flush(Duration::from_millis(self.config.message_timeout_ms))
        {
            tracing::warn!(sink = %self.name, "records still unacknowledged at shutdown: {e}");
        }
    }

    fn circuit(&self) -> Option<&CircuitBreaker> {
        self.breaker.as_ref()
    }

    fn stats(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "type": "kafka",
            "topic": self.topic,
            "circuit": self.breaker.as_ref().map_or("closed", |b| b.state().name()),
            "in_flight": self.producer().in_flight_count(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_errors_are_retried() {
        let e = |c| KafkaError::MessageProduction(c);
        assert!(is_transient(&e(RDKafkaErrorCode::MessageTimedOut)));
        assert!(is_transient(&e(RDKafkaErrorCode::AllBrokersDown)));
        assert!(is_transient(&e(RDKafkaErrorCode::NotLeaderForPartition)));
        assert!(!is_transient(&e(RDKafkaErrorCode::MessageSizeTooLarge)));
        assert!(!is_transient(&e(
            RDKafkaErrorCode::TopicAuthorizationFailed
        )));
        assert!(!is_transient(&e(RDKafkaErrorCode::InvalidRecord)));
    }
}
