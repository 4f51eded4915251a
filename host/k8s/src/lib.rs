//! The Kubernetes Events API: what `kubectl` and kube-rs talk to, served from weir's own
//! embedded event store (durable, retained far longer than etcd's hour, queryable by field
//! and label selectors, watchable with resume), from ClickHouse, or forwarded to a remote
//! provider over mTLS (proxy mode). [`events_api`] builds its HTTP routes.

mod admission;
mod api;
mod auth;
mod authz;
mod backend;
mod ce;
mod clickhouse;
mod convert;
mod discovery;
mod kubeclient;
mod proxy;
mod query;
mod selector;
mod service;
pub mod settings;
mod status;
mod store;
mod table;
pub mod upstream;
pub mod watch;
mod workspaces;

pub use service::{events_api, EventsApiError, EventsApiSetup};

/// The decoders the fuzz targets (`fuzz/`) drive; not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::selector::{FieldSelector, LabelSelector};
}
