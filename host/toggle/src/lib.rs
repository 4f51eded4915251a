//! The Toggle path: typed protobuf events (`proto/toggle/v1/events.proto`) and their
//! lossless mapping to and from CloudEvents; the gRPC source serving Toggle's service
//! ([`settings::GrpcConfig`] starts it) and the sink calling it, with its spill directory
//! ([`settings::ToggleSinkConfig`] builds it).

pub mod client;
mod ingest;
pub mod mapping;
mod metrics;
pub mod settings;
mod sink;
pub mod spill;

pub use ingest::GrpcIngest;
pub use sink::ToggleSink;

/// Types and gRPC service generated from `proto/toggle/v1/events.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("toggle.v1");
}
