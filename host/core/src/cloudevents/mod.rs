//! CloudEvents formats and protocol bindings.

pub mod http;
pub mod json;
pub mod protobuf;
