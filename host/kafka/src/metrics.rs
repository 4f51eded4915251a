//! The Kafka source's and sinks' metric families (`weir_kafka_*`).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec};
use weir_core::metrics::{MetricsRegistry, TypeLabels};
use weir_core::resilience::BreakerMetrics;

/// Buckets of the Kafka duration histograms, seconds.
const DURATION_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Kafka figures, labelled by topic and event type where they concern events.
pub struct KafkaMetrics {
    /// Records read by a source, by topic and event type (`undecodable` for poison).
    pub consumed: IntCounterVec,
    /// Records acknowledged by the brokers, by sink, topic and event type.
    pub published: IntCounterVec,
    /// Records the brokers did not take (after librdkafka's and weir's retries), by
    /// sink, topic and event type.
    pub failed: IntCounterVec,
    /// Time from handing a record to the client to its acknowledgement, seconds, by sink.
    pub publish_seconds: HistogramVec,
    /// Consumer lag per partition, from the client's statistics, by group, topic and
    /// partition.
    pub consumer_lag: IntGaugeVec,
    /// Time from handing an event to the client to the brokers' acknowledgement of its
    /// batch, per event, by sink and event type (`publish: sync`).
    pub event_publish_seconds: HistogramVec,
    /// Time from reading an event to the routes having handled it, per event, by topic
    /// and event type.
    pub event_consume_seconds: HistogramVec,
    /// 1 while a sink's producer works (its last publish succeeded and the client has
    /// reported no error since), else 0, by sink.
    pub producer_up: IntGaugeVec,
    /// 1 while a source's consumers are connected to a broker (from the client's
    /// statistics; 0 at once on a client error), by source.
    pub consumer_up: IntGaugeVec,
    /// The sinks' circuit breakers and retries (`weir_sink_*`, shared with every sink).
    pub breaker: BreakerMetrics,
    /// Offsets committed by a source's consumer group, by group and topic.
    pub committed: IntCounterVec,
    /// How event types become `type` label values (configured ones, else `other`).
    pub types: TypeLabels,
}

impl KafkaMetrics {
    /// Registers (or finds) the families in `r`.
    pub fn new(r: &MetricsRegistry) -> Self {
        Self {
            consumed: r.counter(
                "weir_kafka_consumed_total",
                "Records read from Kafka, by topic and event type (types listed in metrics.event_types; others `other`).",
                &["topic", "type"],
            ),
            published: r.counter(
                "weir_kafka_published_total",
                "Records acknowledged by Kafka, by sink, topic and event type (types listed in metrics.event_types; others `other`).",
                &["sink", "topic", "type"],
            ),
            failed: r.counter(
                "weir_kafka_publish_failed_total",
                "Records Kafka did not take, by sink, topic and event type (types listed in metrics.event_types; others `other`).",
                &["sink", "topic", "type"],
            ),
            publish_seconds: r.histogram(
                HistogramOpts::new(
                    "weir_kafka_publish_seconds",
                    "Time from handing a record to the Kafka client to its acknowledgement.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["sink"],
            ),
            event_publish_seconds: r.histogram(
                HistogramOpts::new(
                    "weir_kafka_event_publish_seconds",
                    "Time to publish an event (its batch's acknowledgement), by sink and event type (types listed in metrics.event_types; others `other`).",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["sink", "type"],
            ),
            event_consume_seconds: r.histogram(
                HistogramOpts::new(
                    "weir_kafka_event_consume_seconds",
                    "Time from reading an event to the routes having handled it, by topic and event type (types listed in metrics.event_types; others `other`).",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["topic", "type"],
            ),
            producer_up: r.gauge(
                "weir_kafka_producer_up",
                "1 while a Kafka sink's producer works (last publish succeeded, no client error since), else 0.",
                &["sink"],
            ),
            consumer_up: r.gauge(
                "weir_kafka_consumer_up",
                "1 while a Kafka source's consumers are connected to a broker, else 0.",
                &["source"],
            ),
            consumer_lag: r.gauge(
                "weir_kafka_consumer_lag",
                "Records behind the partition's end, by group, topic and partition.",
                &["group", "topic", "partition"],
            ),
            breaker: BreakerMetrics::new(r),
            committed: r.counter(
                "weir_kafka_offsets_stored_total",
                "Records whose offsets a Kafka source stored for commit, by group and topic.",
                &["group", "topic"],
            ),
            types: r.type_labels(),
        }
    }
}
