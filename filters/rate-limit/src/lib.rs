//! `rate-limit`: a token bucket per key.
//!
//! Each key (built from configured attributes, default `source`) gets `burst` tokens that
//! refill at `rate_per_sec`. An event takes a token; without one it is over the limit and
//! is dropped, or routed to a named sink (`"over_limit": {"route": "slow-lane"}`). Buckets
//! live in the router's per-tenant state, so limits hold across restarts and versions.
//!
//! Config: `{"key": ["source"], "rate_per_sec": 100, "burst": 200, "over_limit": "drop"}`.

use serde::Deserialize;
use weir_guest::bucket::{key_of, OverLimit, TokenBuckets};
use weir_guest::host;
use weir_guest::{Context, Event, Filter, Verdict};

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
    buckets: TokenBuckets,
}

impl Filter for RateLimit {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let burst = config.burst.unwrap_or(config.rate_per_sec.max(1.0));
        let buckets = TokenBuckets::new(config.rate_per_sec, burst)
            .map_err(|e| format!("rate_per_sec and burst: {e}"))?;
        if config.key.is_empty() {
            return Err("key must name at least one attribute".into());
        }
        Ok(Self { config, buckets })
    }

    fn process(&mut self, _ctx: &Context, event: &Event<'_>) -> Verdict {
        let key = key_of("bucket:", event, &self.config.key);
        if self.buckets.take(&key, host::now_ms()) {
            return Verdict::Keep;
        }
        host::counter_add("over_limit", 1);
        self.config.over_limit.verdict("over the rate limit")
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
