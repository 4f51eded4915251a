//! The Kafka source's and sinks' metric families (`weir_kafka_*`) and the sink circuit
//! breakers' state gauge.

use crate::metrics::{counter, histogram};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

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
    /// Circuit breaker state per sink: 0 closed, 1 open, 2 half-open.
    pub circuit_state: IntGaugeVec,
    /// Writes refused at once by an open circuit, by sink.
    pub circuit_refused: IntCounterVec,
    /// Retries of failed writes, by sink.
    pub retries: IntCounterVec,
    /// Offsets committed by a source's consumer group, by group and topic.
    pub committed: IntCounterVec,
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is well-formed: {e}"));
    r.register(Box::new(g.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered once: {e}"));
    g
}

impl KafkaMetrics {
    /// Registers the families.
    pub fn new(r: &Registry) -> Self {
        Self {
            consumed: counter(
                r,
                "weir_kafka_consumed_total",
                "Records read from Kafka, by topic and event type.",
                &["topic", "type"],
            ),
            published: counter(
                r,
                "weir_kafka_published_total",
                "Records acknowledged by Kafka, by sink, topic and event type.",
                &["sink", "topic", "type"],
            ),
            failed: counter(
                r,
                "weir_kafka_publish_failed_total",
                "Records Kafka did not take, by sink, topic and event type.",
                &["sink", "topic", "type"],
            ),
            publish_seconds: histogram(
                r,
                HistogramOpts::new(
                    "weir_kafka_publish_seconds",
                    "Time from handing a record to the Kafka client to its acknowledgement.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ]),
                &["sink"],
            ),
            consumer_lag: gauge(
                r,
                "weir_kafka_consumer_lag",
                "Records behind the partition's end, by group, topic and partition.",
                &["group", "topic", "partition"],
            ),
            circuit_state: gauge(
                r,
                "weir_sink_circuit_state",
                "Circuit breaker state of a sink: 0 closed, 1 open, 2 half-open.",
                &["sink"],
            ),
            circuit_refused: counter(
                r,
                "weir_sink_circuit_refused_total",
                "Writes refused at once because the sink's circuit was open.",
                &["sink"],
            ),
            retries: counter(
                r,
                "weir_sink_retries_total",
                "Retries of failed sink writes.",
                &["sink"],
            ),
            committed: counter(
                r,
                "weir_kafka_offsets_stored_total",
                "Records whose offsets a Kafka source stored for commit, by group and topic.",
                &["group", "topic"],
            ),
        }
    }
}
