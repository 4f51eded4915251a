//! weir: a WebAssembly-extensible event router.
//!
//! This crate is the `weir` binary's library: the configuration file ([`config`]), the
//! wiring that starts a router from it ([`serve`]), the HTTP listener and the admin API.
//! The parts live in their own crates, re-exported here under the names the command line,
//! tests and benchmarks use: `weir-core` (events, codecs, the connector contract),
//! `weir-runtime` (the filter runtime), `weir-router` (routes and delivery), and one crate
//! per connector family behind a cargo feature (`kafka`, `toggle`, `k8s`).

pub mod admin;
pub mod config;
mod ingest;
pub mod known_routers;
pub mod serve;
mod server;
mod state;
mod status;
pub mod telemetry;
mod throughput;
pub mod tokens;

pub use weir_core::util::error_chain;
pub use weir_core::{cesql, cloudevents, dead_letter, event, listener, process, tls, trace};
#[cfg(feature = "k8s")]
pub use weir_k8s as k8s;
#[cfg(feature = "kafka")]
pub use weir_kafka as kafka;
pub use weir_router as router;
pub use weir_runtime as runtime;
#[cfg(feature = "toggle")]
pub use weir_toggle as toggle;
