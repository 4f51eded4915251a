//! The HTTP CloudEvents sink (`type: http`): events POSTed to a receiver in the
//! CloudEvents HTTP binding's binary, structured or batch mode, over plain HTTP, TLS or
//! mutual TLS, with a bearer token from a file or the environment. Retries and a circuit
//! breaker come from the connector contract (`weir_core::resilience`), on by default.
//!
//! [`HttpSinkConfig`] builds the sink ([`weir_core::sink::BuildSink`]).

mod config;
mod sink;

pub use config::{HttpMode, HttpSinkConfig};
pub use sink::HttpSink;
