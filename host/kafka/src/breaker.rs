//! A circuit breaker for a sink.
//!
//! Written here rather than taken from a crate: the breaker must be shared by route
//! threads without an async runtime, report its state to Prometheus, and count only
//! whole failed writes — a few lines over a mutex, where the crates on offer
//! (`failsafe`, `tower`'s) bring futures-based policies weir would have to adapt.

use std::sync::Mutex;
use std::time::{Duration, Instant};

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
