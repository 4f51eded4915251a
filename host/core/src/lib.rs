//! weir's core, which depends on no connector: the CloudEvents [`event`] envelope and its
//! [`cloudevents`] formats, [`cesql`] conditions, [`dead_letter`]s, the [`metrics`]
//! registry, [`tls`] listeners and clients, and the sink side of the connector contract
//! ([`sink`]). Every other weir crate builds on it; dependencies point one way:
//! connectors → router → runtime → core.

pub mod auth;
pub mod breaker;
pub mod cesql;
pub mod cloudevents;
pub mod dead_letter;
pub mod event;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod pb;
mod problem;
pub mod process;
pub mod rejections;
pub mod resilience;
pub mod sink;
pub mod tail;
pub mod tls;
pub mod trace;
pub mod util;

pub use event::Event;
