//! The Toggle path: typed protobuf events (`proto/toggle/v1/events.proto`) and their
//! lossless mapping to and from CloudEvents; the gRPC source serving Toggle's service and
//! the sink calling it, with its spill directory.

pub mod client;
pub mod ingest;
pub mod mapping;
pub mod settings;
pub mod sink;
pub mod spill;

/// Types and gRPC service generated from `proto/toggle/v1/events.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("toggle.v1");
}
