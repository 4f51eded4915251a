//! Kafka: a consumer-group source and producer sinks speaking the CloudEvents Kafka
//! binding, with at-least-once delivery from input offsets to every sink, retries for
//! transient errors, a circuit breaker per sink and dead letters to a topic or to disk.
//!
//! [`KafkaSourceConfig`] starts a source ([`weir_router::source::StartSource`]);
//! [`KafkaSinkConfig`] builds a sink ([`weir_core::sink::BuildSink`]).

pub mod binding;
mod ledger;
mod metrics;
pub mod settings;
mod sink;
mod source;
mod topics;

pub use settings::{
    BindingMode, ClusterConfig, KafkaConfig, KafkaSettingsError, KafkaSinkConfig,
    KafkaSourceConfig, Publish, TopicsConfig,
};
pub use sink::KafkaSink;
pub use topics::{provision, ProvisionError};
