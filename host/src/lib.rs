//! weir: a WebAssembly-extensible event router.
//!
//! The host (this crate) moves CloudEvents between sources and sinks; sandboxed filter
//! components decide what happens to each event. Modules, from the edge inwards:
//! [`server`] (HTTP ingest), [`cloudevents`] (formats and bindings), [`pipeline`] (routes),
//! [`runtime`] (the wasm filter runtime), [`sinks`], [`config`], [`metrics`].

pub mod admin;
pub mod cesql;
pub mod cloudevents;
pub mod config;
pub mod dead_letters;
pub mod event;
pub mod k8s;
pub mod kafka;
pub mod metrics;
pub mod pb;
pub mod pipeline;
pub mod process;
pub mod registry;
pub mod runtime;
pub mod serve;
pub mod server;
pub mod sinks;
pub mod tenants;
pub mod tls;
pub mod toggle;
