//! What the router offers a filter: logging, the clock, per-tenant key-value state with
//! expiry, and metrics. Inside a component these call the host; natively (in tests) they
//! use an in-memory stand-in that [`crate::testing`] can inspect and steer.

use std::time::Duration;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed.
    Trace,
    /// Debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected.
    Warn,
    /// A failure.
    Error,
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;
    use crate::bindings::weir::filter::host as h;

    pub fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => h::Level::Trace,
            Level::Debug => h::Level::Debug,
            Level::Info => h::Level::Info,
            Level::Warn => h::Level::Warn,
            Level::Error => h::Level::Error,
        };
        h::log(level, message)
    }
    pub fn now_ms() -> u64 {
        h::now_ms()
    }
    pub fn state_get(key: &str) -> Option<Vec<u8>> {
        h::state_get(key)
    }
    pub fn state_set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), String> {
        h::state_set(key, value, ttl_ms)
    }
    pub fn state_delete(key: &str) {
        h::state_delete(key)
    }
    pub fn counter_add(name: &str, delta: u64) {
        h::counter_add(name, delta)
    }
    pub fn histogram_record(name: &str, value: f64) {
        h::histogram_record(name, value)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Level;
    use crate::testing::MOCK;

    pub fn log(level: Level, message: &str) {
        MOCK.with(|m| m.borrow_mut().logs.push((level, message.to_owned())));
    }
    pub fn now_ms() -> u64 {
        MOCK.with(|m| m.borrow().now_ms)
    }
    pub fn state_get(key: &str) -> Option<Vec<u8>> {
        MOCK.with(|m| m.borrow_mut().state_get(key))
    }
    pub fn state_set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), String> {
        MOCK.with(|m| m.borrow_mut().state_set(key, value, ttl_ms))
    }
    pub fn state_delete(key: &str) {
        MOCK.with(|m| m.borrow_mut().state.remove(key));
    }
    pub fn counter_add(name: &str, delta: u64) {
        MOCK.with(|m| *m.borrow_mut().counters.entry(name.to_owned()).or_default() += delta);
    }
    pub fn histogram_record(name: &str, value: f64) {
        MOCK.with(|m| {
            m.borrow_mut()
                .histograms
                .entry(name.to_owned())
                .or_default()
                .push(value)
        });
    }
}

/// Writes a log line into the router's log, tagged with tenant, route and filter.
pub fn log(level: Level, message: &str) {
    imp::log(level, message)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    imp::now_ms()
}

/// Per-tenant key-value state kept by the host.
pub mod state {
    use super::{imp, Duration};

    /// Reads a key; `None` when absent or expired.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        imp::state_get(key)
    }

    /// Writes a key, expiring after `ttl` when given; fails over the tenant's size cap.
    pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), String> {
        let ttl_ms = ttl.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        imp::state_set(key, value, ttl_ms)
    }

    /// Removes a key.
    pub fn delete(key: &str) {
        imp::state_delete(key)
    }
}

/// Adds to a counter shown in the router's metrics.
pub fn counter_add(name: &str, delta: u64) {
    imp::counter_add(name, delta)
}

/// Records a value in a histogram shown in the router's metrics.
pub fn histogram_record(name: &str, value: f64) {
    imp::histogram_record(name, value)
}
