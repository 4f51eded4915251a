//! The Kubernetes Events API: what `kubectl` and kube-rs talk to, served from weir's own
//! embedded event store (durable, retained far longer than etcd's hour, queryable by field
//! and label selectors, watchable with resume).

pub mod admission;
pub mod api;
pub mod auth;
pub mod backend;
pub mod clickhouse;
pub mod convert;
pub mod discovery;
pub mod proxy;
pub mod selector;
pub mod settings;
pub mod status;
pub mod store;
pub mod table;
