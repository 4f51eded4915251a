//! The Toggle path, speaking the public Rodent ⇄ Toggle contract (`proto/rodent/`,
//! packages `rodent` and `rodent.events`): typed events and their lossless mapping to and
//! from CloudEvents; the gRPC source serving `rodent.RodentService` (`SendEvents` into the
//! routes, `Register` and `Connect` passed through to the upstream Toggle —
//! [`settings::GrpcConfig`] starts it) and the sink calling `SendEvents`, with its spill
//! directory ([`settings::ToggleSinkConfig`] builds it).

pub mod client;
mod ingest;
pub mod mapping;
mod metrics;
mod passthrough;
pub mod settings;
mod sink;
pub mod spill;
pub mod wire;

pub use ingest::GrpcIngest;
pub use sink::ToggleSink;

/// Types and gRPC service generated from `proto/rodent/base.proto` (package `rodent`),
/// with the typed events of `proto/rodent/events/event_messages.proto` in [`pb::events`].
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("rodent");

    /// Package `rodent.events`.
    pub mod events {
        tonic::include_proto!("rodent.events");
    }
}
