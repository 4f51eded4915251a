//! Limits on every filter call, set per tenant.

use serde::Deserialize;

/// Limits on every filter call.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock budget for one batch call, in milliseconds (epoch deadline).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The most linear memory one instance may grow to, in MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// The largest verdict buffer one batch call may return, in MiB.
    #[serde(default = "default_output_mb")]
    pub output_mb: u64,
    /// The most key-value state the tenant may hold, in MiB.
    #[serde(default = "default_state_mb")]
    pub state_mb: u64,
    /// The most events per second the tenant may submit (0: unlimited); a request over
    /// it is refused whole with `429` and `Retry-After`.
    #[serde(default)]
    pub events_per_sec: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_ms: default_timeout_ms(),
            memory_mb: default_memory_mb(),
            output_mb: default_output_mb(),
            state_mb: default_state_mb(),
            events_per_sec: 0,
        }
    }
}

fn default_timeout_ms() -> u64 {
    200
}

fn default_memory_mb() -> u64 {
    64
}

fn default_output_mb() -> u64 {
    16
}

fn default_state_mb() -> u64 {
    16
}
