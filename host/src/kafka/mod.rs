//! Kafka: a consumer-group source and producer sinks speaking the CloudEvents Kafka
//! binding, with at-least-once delivery from input offsets to every sink, retries for
//! transient errors, a circuit breaker per sink and dead letters to a topic or to disk.

pub mod binding;
pub mod breaker;
pub mod ledger;
pub mod metrics;
pub mod settings;
pub mod sink;
pub mod source;
