//! `rate-limit`: a token bucket per key.
//!
//! Each key (built from configured attributes, default `source`) gets `burst` tokens that
//! refill at `rate_per_sec`. An event takes a token; without one it is over the limit and
//! is dropped, or routed to a named sink (`"over_limit": {"route": "slow-lane"}`). Buckets
//! live in the router's per-tenant state, so limits hold across restarts and versions.
//!
//! Config: `{"key": ["source"], "rate_per_sec": 100, "burst": 200, "over_limit": "drop"}`.

use serde::Deserialize;
use std::time::Duration;
use weir_guest::host::{self, state};
use weir_guest::{Context, Event, Filter, Verdict};

/// What happens to events over the limit.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OverLimit {
    /// Drop them (default).
    #[default]
    Drop,
    /// Send them to this sink instead of the route's sinks.
    Route(String),
}

/// Configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Attributes whose values form the bucket key.
    #[serde(default = "default_key")]
    pub key: Vec<String>,
    /// Tokens added per second.
    pub rate_per_sec: f64,
    /// Bucket size (default: one second's worth).
    #[serde(default)]
    pub burst: Option<f64>,
    /// What to do over the limit.
    #[serde(default)]
    pub over_limit: OverLimit,
}

fn default_key() -> Vec<String> {
    vec!["source".into()]
}

/// The filter.
pub struct RateLimit {
    config: Config,
    burst: f64,
    ttl: Duration,
}

/// A bucket as stored: tokens (f64) and last refill (ms), little-endian.
fn decode(raw: &[u8]) -> Option<(f64, u64)> {
    let tokens = f64::from_le_bytes(raw.get(..8)?.try_into().ok()?);
    let last = u64::from_le_bytes(raw.get(8..16)?.try_into().ok()?);
    Some((tokens, last))
}

fn encode(tokens: f64, last: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&tokens.to_le_bytes());
    out[8..].copy_from_slice(&last.to_le_bytes());
    out
}

impl RateLimit {
    /// Takes a token for `key` at `now_ms`; whether one was available.
    fn take(&self, key: &str, now_ms: u64) -> bool {
        let (tokens, last) = state::get(key)
            .as_deref()
            .and_then(decode)
            .unwrap_or((self.burst, now_ms));
        let elapsed = now_ms.saturating_sub(last) as f64 / 1000.0;
        let tokens = (tokens + elapsed * self.config.rate_per_sec).min(self.burst);
        let (allowed, left) = if tokens >= 1.0 {
            (true, tokens - 1.0)
        } else {
            (false, tokens)
        };
        // When the cap is full the bucket is not remembered: fail open, counted.
        if state::set(key, &encode(left, now_ms), Some(self.ttl)).is_err() {
            host::counter_add("rate_limit_state_full", 1);
        }
        allowed
    }
}

impl Filter for RateLimit {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if !(config.rate_per_sec > 0.0 && config.rate_per_sec.is_finite()) {
            return Err("rate_per_sec must be a positive number".into());
        }
        let burst = config.burst.unwrap_or(config.rate_per_sec.max(1.0));
        if !(burst >= 1.0 && burst.is_finite()) {
            return Err("burst must be at least 1".into());
        }
        if config.key.is_empty() {
            return Err("key must name at least one attribute".into());
        }
        // A bucket untouched for this long is full again: it can be forgotten.
        let ttl = Duration::from_secs_f64(burst / config.rate_per_sec + 1.0);
        Ok(Self { config, burst, ttl })
    }

    fn process(&mut self, _ctx: &Context, event: &Event<'_>) -> Verdict {
        let mut key = String::from("bucket:");
        for (i, attr) in self.config.key.iter().enumerate() {
            if i > 0 {
                key.push('\u{1f}');
            }
            key.push_str(event.attribute(attr).unwrap_or(""));
        }
        if self.take(&key, host::now_ms()) {
            return Verdict::Keep;
        }
        host::counter_add("over_limit", 1);
        match &self.config.over_limit {
            OverLimit::Drop => Verdict::drop("over the rate limit"),
            OverLimit::Route(sink) => Verdict::route(sink.clone()),
        }
    }
}

weir_guest::export_filter!(RateLimit);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_guest::testing::{with_mock_host, Harness, Outcome};
    use weir_guest::OwnedEvent;

    fn from(source: &str) -> OwnedEvent {
        OwnedEvent::new("x", source, "t")
    }

    #[test]
    fn bursts_then_refills_per_key() {
        with_mock_host(|m| m.now_ms = 10_000);
        let mut h =
            Harness::<RateLimit>::new(r#"{"rate_per_sec": 2, "burst": 3}"#).expect("config");
        let out = h.run(&[from("a"), from("a"), from("a"), from("a"), from("b")]);
        let kept: Vec<bool> = out.iter().map(|o| o.kept().is_some()).collect();
        assert_eq!(
            kept,
            [true, true, true, false, true],
            "burst of 3 for a, b separate"
        );
        with_mock_host(|m| m.now_ms = 10_500); // half a second: one token
        let out = h.run(&[from("a"), from("a")]);
        assert_eq!(
            out.iter().map(|o| o.kept().is_some()).collect::<Vec<_>>(),
            [true, false]
        );
    }

    #[test]
    fn over_limit_can_route_to_a_sink() {
        with_mock_host(|m| m.now_ms = 0);
        let mut h = Harness::<RateLimit>::new(
            r#"{"rate_per_sec": 1, "burst": 1, "over_limit": {"route": "slow-lane"}}"#,
        )
        .expect("config");
        let out = h.run(&[from("a"), from("a")]);
        assert!(out[0].kept().is_some());
        assert!(matches!(&out[1], Outcome::Route { sink, .. } if sink == "slow-lane"));
        assert!(Harness::<RateLimit>::new(r#"{"rate_per_sec": 0}"#).is_err());
        assert!(Harness::<RateLimit>::new(r#"{"rate_per_sec": 1, "burst": 0.5}"#).is_err());
    }
}
