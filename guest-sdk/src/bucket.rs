//! Token buckets kept in the tenant's state, one per key: `burst` tokens that refill at a
//! steady rate; taking one says whether the key is within its limit. They hold across
//! restarts and filter versions, and a bucket untouched long enough to be full again is
//! forgotten (its state expires). Used by `rate-limit`, `k8s-filter` (events per minute
//! per source) and `k8s-correlate` (client-go's spam filter).

use crate::host::{self, state};
use crate::{Event, Verdict};
use serde::Deserialize;
use std::time::Duration;

/// What happens to an event over its limit.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OverLimit {
    /// Drop it (default).
    #[default]
    Drop,
    /// Send it to this sink instead of the route's sinks.
    Route(String),
}

impl OverLimit {
    /// The verdict for an event over its limit; `why` is the drop reason.
    pub fn verdict(&self, why: &'static str) -> Verdict {
        match self {
            OverLimit::Drop => Verdict::drop(why),
            OverLimit::Route(sink) => Verdict::route(sink.clone()),
        }
    }
}

/// A bucket key: `prefix` then the values of `attributes` (absent ones empty), apart.
pub fn key_of(prefix: &str, event: &Event<'_>, attributes: &[String]) -> String {
    let mut key = String::from(prefix);
    for (i, attr) in attributes.iter().enumerate() {
        if i > 0 {
            key.push('\u{1f}');
        }
        key.push_str(event.attribute(attr).unwrap_or(""));
    }
    key
}

/// Buckets of one kind (one rate and size), keyed by the caller.
#[derive(Debug, Clone)]
pub struct TokenBuckets {
    rate_per_sec: f64,
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

impl TokenBuckets {
    /// Buckets of `burst` tokens refilling at `rate_per_sec`; an error names the setting
    /// that is not a positive number (rate) or at least 1 (burst).
    pub fn new(rate_per_sec: f64, burst: f64) -> Result<Self, String> {
        if !(rate_per_sec > 0.0 && rate_per_sec.is_finite()) {
            return Err("the rate must be a positive number".into());
        }
        if !(burst >= 1.0 && burst.is_finite()) {
            return Err("the burst must be at least 1".into());
        }
        // A bucket untouched for this long is full again: it can be forgotten.
        let ttl = Duration::from_secs_f64((burst / rate_per_sec + 1.0).min(1e9));
        Ok(Self {
            rate_per_sec,
            burst,
            ttl,
        })
    }

    /// Takes a token from `key`'s bucket at `now_ms`; whether one was there. When the
    /// tenant's state is full the bucket is not remembered: the event passes (fail open),
    /// counted as `bucket_state_full`.
    pub fn take(&self, key: &str, now_ms: u64) -> bool {
        let (tokens, last) = state::get(key)
            .as_deref()
            .and_then(decode)
            .unwrap_or((self.burst, now_ms));
        let elapsed = now_ms.saturating_sub(last) as f64 / 1000.0;
        let tokens = (tokens + elapsed * self.rate_per_sec).min(self.burst);
        let (allowed, left) = if tokens >= 1.0 {
            (true, tokens - 1.0)
        } else {
            (false, tokens)
        };
        if state::set(key, &encode(left, now_ms), Some(self.ttl)).is_err() {
            host::counter_add("bucket_state_full", 1);
        }
        allowed
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let b = TokenBuckets::new(1.0, 3.0).expect("valid");
        let taken: Vec<bool> = (0..4).map(|_| b.take("k", 1_000)).collect();
        assert_eq!(taken, [true, true, true, false]);
        assert!(!b.take("k", 1_500), "half a token");
        assert!(b.take("k", 2_000), "one second later: one token");
        assert!(b.take("other", 2_000), "keys are apart");
        assert!(TokenBuckets::new(0.0, 1.0).is_err());
        assert!(TokenBuckets::new(1.0, 0.5).is_err());
    }
}
