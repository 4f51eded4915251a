//! Retries and circuit breaking, the settings and the state: what a sink's configuration
//! carries ([`RetryConfig`], [`BreakerConfig`], together [`Resilience`]) and the
//! [`CircuitBreaker`] with its metrics. [`crate::resilience::Resilient`] applies them to a
//! sink.
//!
//! The breaker is written here rather than taken from a crate: it must be shared by route
//! threads without an async runtime, report its state to Prometheus, and count only whole
//! failed writes — a few lines over a mutex, where the crates on offer (`failsafe`,
//! `tower`'s) bring futures-based policies weir would have to adapt.

use crate::metrics::MetricsRegistry;
use crate::problem::ConfigProblem;
use serde::Deserialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Retries of failed writes: exponential backoff with jitter, transient errors only.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts after the first (default 3; 0 turns retries off).
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// First pause, milliseconds (default 100); doubles per attempt.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff_ms: u64,
    /// Longest pause, milliseconds (default 5000).
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: default_retries(),
            initial_backoff_ms: default_initial_backoff(),
            max_backoff_ms: default_max_backoff(),
        }
    }
}

fn default_retries() -> u32 {
    3
}
fn default_initial_backoff() -> u64 {
    100
}
fn default_max_backoff() -> u64 {
    5000
}

/// The circuit breaker in front of a sink.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Off turns the breaker off (default on).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Consecutive failed writes that open the circuit (default 5).
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long the circuit stays open before one probe write is let through,
    /// milliseconds (default 30000).
    #[serde(default = "default_recovery")]
    pub recovery_timeout_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_threshold: default_failure_threshold(),
            recovery_timeout_ms: default_recovery(),
        }
    }
}

fn default_failure_threshold() -> u32 {
    5
}
fn default_recovery() -> u64 {
    30_000
}

fn yes() -> bool {
    true
}

/// The breaker's state, as the `weir_sink_circuit_state` gauge reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Writes go through (gauge 0).
    Closed,
    /// Writes fail at once until the recovery timeout has passed (gauge 1).
    Open,
    /// One probe write is going through; its result closes or reopens (gauge 2).
    HalfOpen,
}

impl CircuitState {
    /// How `/v1/stats` and the admin API name the state.
    pub fn name(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }

    /// The gauge value.
    pub fn gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        }
    }
}

struct Inner {
    state: CircuitState,
    failures: u32,
    opened_at: Instant,
}

/// Opens after `threshold` consecutive failed writes; after `recovery` lets one probe
/// through (half-open): its success closes the circuit, its failure opens it again.
pub struct CircuitBreaker {
    threshold: u32,
    recovery: Duration,
    inner: Mutex<Inner>,
    on_change: Box<dyn Fn(CircuitState) + Send + Sync>,
}

/// What the breaker says about a write about to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Go ahead.
    Go,
    /// Go ahead: this write is the half-open probe.
    Probe,
    /// The circuit is open: fail the write at once; it may be retried in this long.
    Refused(Duration),
}

impl CircuitBreaker {
    /// A closed breaker; `on_change` hears every state change (for metrics and logs).
    pub fn new(
        threshold: u32,
        recovery: Duration,
        on_change: impl Fn(CircuitState) + Send + Sync + 'static,
    ) -> Self {
        on_change(CircuitState::Closed);
        Self {
            threshold: threshold.max(1),
            recovery,
            inner: Mutex::new(Inner {
                state: CircuitState::Closed,
                failures: 0,
                opened_at: Instant::now(),
            }),
            on_change: Box::new(on_change),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        self.lock().state
    }

    /// Asks whether a write may be made now.
    pub fn permit(&self) -> Permit {
        let mut inner = self.lock();
        match inner.state {
            CircuitState::Closed => Permit::Go,
            CircuitState::HalfOpen => Permit::Refused(self.recovery),
            CircuitState::Open => {
                let open_for = inner.opened_at.elapsed();
                if open_for >= self.recovery {
                    inner.state = CircuitState::HalfOpen;
                    drop(inner);
                    (self.on_change)(CircuitState::HalfOpen);
                    Permit::Probe
                } else {
                    Permit::Refused(self.recovery - open_for)
                }
            }
        }
    }

    /// Closes the circuit by hand (an operator's reset): the next write goes through.
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.failures = 0;
        let was = inner.state;
        inner.state = CircuitState::Closed;
        drop(inner);
        if was != CircuitState::Closed {
            (self.on_change)(CircuitState::Closed);
        }
    }

    /// Reports a write that succeeded.
    pub fn success(&self) {
        let mut inner = self.lock();
        inner.failures = 0;
        if inner.state != CircuitState::Closed {
            inner.state = CircuitState::Closed;
            drop(inner);
            (self.on_change)(CircuitState::Closed);
        }
    }

    /// Reports a write that failed (after its retries).
    pub fn failure(&self) {
        let mut inner = self.lock();
        inner.failures = inner.failures.saturating_add(1);
        let open = match inner.state {
            CircuitState::HalfOpen => true,
            CircuitState::Closed => inner.failures >= self.threshold,
            CircuitState::Open => false,
        };
        if open {
            inner.state = CircuitState::Open;
            inner.opened_at = Instant::now();
            drop(inner);
            (self.on_change)(CircuitState::Open);
        }
    }
}

/// How a sink copes with failed writes, as its configuration says: retries, a breaker,
/// both or neither.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resilience {
    /// Retries of transient failures.
    pub retry: Option<RetryConfig>,
    /// The circuit breaker.
    pub breaker: Option<BreakerConfig>,
}

impl Resilience {
    /// Neither retries nor a breaker.
    pub const NONE: Self = Self {
        retry: None,
        breaker: None,
    };

    /// Every problem of the settings, with fields `retry.*` and `circuit_breaker.*`.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if let Some(r) = &self.retry {
            if r.max_retries > 100 {
                problems.push(ConfigProblem::at("retry.max_retries", "at most 100"));
            }
            if r.initial_backoff_ms > r.max_backoff_ms {
                problems.push(ConfigProblem::at(
                    "retry.initial_backoff_ms",
                    "must not exceed retry.max_backoff_ms",
                ));
            }
            if r.max_backoff_ms > 600_000 {
                problems.push(ConfigProblem::at(
                    "retry.max_backoff_ms",
                    "at most 600000 (10 minutes)",
                ));
            }
        }
        if let Some(b) = &self.breaker {
            if b.enabled && b.failure_threshold == 0 {
                problems.push(ConfigProblem::at(
                    "circuit_breaker.failure_threshold",
                    "must be at least 1",
                ));
            }
            if b.recovery_timeout_ms > 86_400_000 {
                problems.push(ConfigProblem::at(
                    "circuit_breaker.recovery_timeout_ms",
                    "at most 86400000 (a day)",
                ));
            }
        }
        problems
    }
}

/// The breaker's metric families, shared by every sink that has a breaker.
pub struct BreakerMetrics {
    /// `weir_sink_circuit_state{sink}`: 0 closed, 1 open, 2 half-open.
    pub state: prometheus::IntGaugeVec,
    /// `weir_sink_circuit_refused_total{sink}`: writes refused at once by an open circuit.
    pub refused: prometheus::IntCounterVec,
    /// `weir_sink_retries_total{sink}`: retries of failed writes.
    pub retries: prometheus::IntCounterVec,
}

impl BreakerMetrics {
    /// Registers (or finds) the families.
    pub fn new(r: &MetricsRegistry) -> Self {
        Self {
            state: r.gauge(
                "weir_sink_circuit_state",
                "Circuit breaker state of a sink: 0 closed, 1 open, 2 half-open.",
                &["sink"],
            ),
            refused: r.counter(
                "weir_sink_circuit_refused_total",
                "Writes refused at once because the sink's circuit was open.",
                &["sink"],
            ),
            retries: r.counter(
                "weir_sink_retries_total",
                "Retries of failed sink writes.",
                &["sink"],
            ),
        }
    }

    /// A breaker for sink `name` that reports its state to the gauge and the log.
    pub fn breaker(&self, name: &str, config: &BreakerConfig) -> CircuitBreaker {
        let gauge = self.state.with_label_values(&[name]);
        let sink = name.to_owned();
        CircuitBreaker::new(
            config.failure_threshold,
            Duration::from_millis(config.recovery_timeout_ms),
            move |state| {
                gauge.set(state.gauge());
                match state {
                    CircuitState::Open => {
                        tracing::warn!(sink = %sink, "circuit opened: writes fail at once until the recovery timeout")
                    }
                    CircuitState::HalfOpen => {
                        tracing::info!(sink = %sink, "circuit half-open: probing")
                    }
                    CircuitState::Closed => tracing::debug!(sink = %sink, "circuit closed"),
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex as StdMutex};

    #[test]
    fn opens_after_the_threshold_probes_after_recovery_and_closes_on_success() {
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let log = seen.clone();
        let b = CircuitBreaker::new(3, Duration::from_millis(50), move |s| {
            log.lock().expect("log").push(s)
        });
        b.failure();
        b.failure();
        assert_eq!(b.permit(), Permit::Go);
        b.success();
        b.failure();
        b.failure();
        assert_eq!(b.state(), CircuitState::Closed, "a success reset the count");
        b.failure();
        assert_eq!(b.state(), CircuitState::Open);
        assert!(matches!(b.permit(), Permit::Refused(_)));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.permit(), Permit::Probe);
        assert!(
            matches!(b.permit(), Permit::Refused(_)),
            "one probe at a time"
        );
        b.failure();
        assert_eq!(b.state(), CircuitState::Open, "a failed probe reopens");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.permit(), Permit::Probe);
        b.success();
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(
            *seen.lock().expect("log"),
            [
                CircuitState::Closed,
                CircuitState::Open,
                CircuitState::HalfOpen,
                CircuitState::Open,
                CircuitState::HalfOpen,
                CircuitState::Closed
            ]
        );
    }
}
