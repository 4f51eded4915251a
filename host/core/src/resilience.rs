//! [`Resilient`]: the wrapper that gives any sink retries and a circuit breaker, as its
//! configuration's [`Resilience`] asks. The settings and the breaker are in
//! [`crate::breaker`] and re-exported here.

pub use crate::breaker::{
    BreakerConfig, BreakerMetrics, CircuitBreaker, CircuitState, Permit, Resilience, RetryConfig,
};
use crate::dead_letter::DeadLetter;
use crate::event::Event;
use crate::metrics::MetricsRegistry;
use crate::sink::{Sink, SinkError};
use crate::util::backoff;
use prometheus::IntCounter;
use std::sync::Arc;
use std::time::Duration;

/// A sink behind retries and a circuit breaker: transient failures (I/O, an unavailable
/// peer, events a partial write left out) are retried with jittered backoff; a write that
/// still fails counts against the breaker; an open circuit refuses writes at once until
/// its recovery timeout lets one probe through.
pub struct Resilient {
    name: String,
    inner: Arc<dyn Sink>,
    retry: RetryConfig,
    breaker: Option<CircuitBreaker>,
    retries: IntCounter,
    refused: IntCounter,
}

impl Resilient {
    /// `inner` behind `resilience`; `inner` itself when that asks for nothing.
    pub fn wrap(
        name: &str,
        inner: Arc<dyn Sink>,
        resilience: Resilience,
        metrics: &MetricsRegistry,
    ) -> Arc<dyn Sink> {
        if resilience == Resilience::NONE {
            return inner;
        }
        let m = BreakerMetrics::new(metrics);
        let breaker = resilience
            .breaker
            .filter(|b| b.enabled)
            .map(|b| m.breaker(name, &b));
        Arc::new(Self {
            name: name.to_owned(),
            inner,
            retry: resilience.retry.unwrap_or(RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            }),
            breaker,
            retries: m.retries.with_label_values(&[name]),
            refused: m.refused.with_label_values(&[name]),
        })
    }

    /// Runs `attempt` over the indices still pending, retrying transient failures, and
    /// settles the breaker. `attempt` gets `None` for all `count` items (the first try,
    /// which allocates nothing) or the indices still to write, ascending, and answers
    /// `Ok` or the error of that try (a `Partial` one indexes into what it was given).
    fn run(
        &self,
        count: usize,
        mut attempt: impl FnMut(Option<&[usize]>) -> Result<(), SinkError>,
    ) -> Result<(), SinkError> {
        if let Some(breaker) = &self.breaker {
            if let Permit::Refused(wait) = breaker.permit() {
                self.refused.inc();
                return Err(SinkError::Unavailable {
                    sink: self.name.clone(),
                    reason: format!(
                        "circuit open after repeated failures; next probe in {} ms",
                        wait.as_millis()
                    ),
                });
            }
        }
        // `None`: every index below `count`.
        let mut pending: Option<Vec<usize>> = None;
        let original = |pending: &Option<Vec<usize>>, i: usize| match pending {
            None => (i < count).then_some(i),
            Some(p) => p.get(i).copied(),
        };
        // Events whose failure was final; with `last`, the answer if nothing succeeds.
        let mut given_up: Vec<usize> = Vec::new();
        let mut reason = String::new();
        let mut tries = 0u32;
        let outcome = loop {
            let error = match attempt(pending.as_deref()) {
                Ok(()) => break None,
                Err(e) => e,
            };
            reason = match &error {
                SinkError::Partial { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            let retry: Vec<usize> = match &error {
                SinkError::Partial { failed, retry, .. } => {
                    let mut retry: Vec<usize> = retry
                        .iter()
                        .filter_map(|&i| original(&pending, i))
                        .collect();
                    retry.sort_unstable();
                    retry.dedup();
                    given_up.extend(
                        failed
                            .iter()
                            .filter_map(|&i| original(&pending, i))
                            .filter(|i| retry.binary_search(i).is_err()),
                    );
                    retry
                }
                e if e.is_transient() => pending.take().unwrap_or_else(|| (0..count).collect()),
                _ => {
                    match &pending {
                        None => given_up.extend(0..count),
                        Some(p) => given_up.extend(p),
                    }
                    Vec::new()
                }
            };
            if retry.is_empty() || tries >= self.retry.max_retries {
                given_up.extend(retry.iter().copied());
                break Some((error, !retry.is_empty()));
            }
            tries += 1;
            self.retries.inc();
            let pause = backoff(
                tries,
                Duration::from_millis(self.retry.initial_backoff_ms),
                Duration::from_millis(self.retry.max_backoff_ms),
            );
            tracing::debug!(sink = %self.name, attempt = tries, events = retry.len(), ?pause, "retrying: {error}");
            std::thread::sleep(pause);
            pending = Some(retry);
        };
        let Some((error, transient_left)) = outcome else {
            if let Some(breaker) = &self.breaker {
                breaker.success();
            }
            return if given_up.is_empty() {
                Ok(())
            } else {
                given_up.sort_unstable();
                Err(SinkError::Partial {
                    sink: self.name.clone(),
                    failed: given_up,
                    retry: Vec::new(),
                    reason,
                })
            };
        };
        if let Some(breaker) = &self.breaker {
            // A refusal is the peer answering: it is up.
            if transient_left {
                breaker.failure();
            } else {
                breaker.success();
            }
        }
        given_up.sort_unstable();
        given_up.dedup();
        if given_up.len() == count {
            // Nothing was written: the last error says why.
            return Err(match error {
                SinkError::Partial { sink, .. } if transient_left => {
                    SinkError::Unavailable { sink, reason }
                }
                SinkError::Partial { sink, .. } => SinkError::Refused { sink, reason },
                other => other,
            });
        }
        Err(SinkError::Partial {
            sink: self.name.clone(),
            failed: given_up,
            retry: Vec::new(),
            reason,
        })
    }
}

impl Resilient {
    /// Writes `events` with retries, through `write` (the inner sink's `write` or
    /// `write_tenant`), trying again only the events a partial failure names.
    fn write_with(
        &self,
        events: &[&Event],
        write: impl Fn(&[&Event]) -> Result<(), SinkError>,
    ) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut subset = Vec::new();
        self.run(events.len(), |pending| {
            let Some(pending) = pending else {
                return write(events);
            };
            subset.clear();
            subset.extend(pending.iter().map(|&i| events[i]));
            write(&subset)
        })
    }
}

impl Sink for Resilient {
    fn write(&self, events: &[&Event]) -> Result<(), SinkError> {
        self.write_with(events, |e| self.inner.write(e))
    }

    fn write_tenant(&self, tenant: &str, events: &[&Event]) -> Result<(), SinkError> {
        self.write_with(events, |e| self.inner.write_tenant(tenant, e))
    }

    fn write_dead_letters(&self, letters: &[DeadLetter<'_>]) -> Result<(), SinkError> {
        if letters.is_empty() {
            return Ok(());
        }
        self.run(letters.len(), |pending| {
            let Some(pending) = pending else {
                return self.inner.write_dead_letters(letters);
            };
            let subset: Vec<DeadLetter<'_>> = pending.iter().map(|&i| letters[i].clone()).collect();
            self.inner.write_dead_letters(&subset)
        })
    }

    fn close(&self) {
        self.inner.close();
    }

    fn stats(&self) -> Option<serde_json::Value> {
        let mut stats = self.inner.stats().unwrap_or_else(|| serde_json::json!({}));
        if let (Some(breaker), Some(map)) = (&self.breaker, stats.as_object_mut()) {
            map.insert("circuit".into(), breaker.state().name().into());
        }
        Some(stats)
    }

    fn circuit(&self) -> Option<&CircuitBreaker> {
        self.breaker.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dead_letter::DeadLetter;
    use std::sync::Mutex;

    use crate::sink::SinkError;

    /// A sink that fails its first `fail` writes with `error`, then takes everything.
    struct Flaky {
        fail: Mutex<u32>,
        error: fn() -> SinkError,
        written: Mutex<Vec<String>>,
    }

    impl Sink for Flaky {
        fn write(&self, events: &[&Event]) -> Result<(), SinkError> {
            let mut fail = self.fail.lock().expect("lock");
            if *fail > 0 {
                *fail -= 1;
                return Err((self.error)());
            }
            let mut w = self.written.lock().expect("lock");
            w.extend(events.iter().map(|e| e.id.clone()));
            Ok(())
        }
        fn write_dead_letters(&self, _: &[DeadLetter<'_>]) -> Result<(), SinkError> {
            Ok(())
        }
    }

    fn flaky(fail: u32, error: fn() -> SinkError) -> Arc<Flaky> {
        Arc::new(Flaky {
            fail: Mutex::new(fail),
            error,
            written: Mutex::new(Vec::new()),
        })
    }

    fn unavailable() -> SinkError {
        SinkError::Unavailable {
            sink: "s".into(),
            reason: "down".into(),
        }
    }

    fn resilience(retries: u32, threshold: u32) -> Resilience {
        Resilience {
            retry: Some(RetryConfig {
                max_retries: retries,
                initial_backoff_ms: 1,
                max_backoff_ms: 2,
            }),
            breaker: Some(BreakerConfig {
                enabled: true,
                failure_threshold: threshold,
                recovery_timeout_ms: 50,
            }),
        }
    }

    #[test]
    fn transient_failures_are_retried_and_refusals_are_not() {
        let events = [Event::new("a", "/s", "t"), Event::new("b", "/s", "t")];
        let refs: Vec<&Event> = events.iter().collect();
        let metrics = MetricsRegistry::new();
        let inner = flaky(2, unavailable);
        let sink = Resilient::wrap("s", inner.clone(), resilience(3, 5), &metrics);
        sink.write(&refs).expect("the third try goes through");
        assert_eq!(*inner.written.lock().expect("lock"), ["a", "b"]);
        assert!(metrics
            .render()
            .contains("weir_sink_retries_total{sink=\"s\"} 2"));

        let refused = || SinkError::Refused {
            sink: "s".into(),
            reason: "bad request".into(),
        };
        let inner = flaky(1, refused);
        let sink = Resilient::wrap("r", inner.clone(), resilience(3, 5), &metrics);
        assert!(matches!(sink.write(&refs), Err(SinkError::Refused { .. })));
        assert!(
            inner.written.lock().expect("lock").is_empty(),
            "not retried"
        );
        assert_eq!(
            sink.circuit().map(|b| b.state()),
            Some(CircuitState::Closed)
        );
    }

    #[test]
    fn a_partial_write_retries_only_the_events_left_out() {
        let events = [
            Event::new("a", "/s", "t"),
            Event::new("b", "/s", "t"),
            Event::new("c", "/s", "t"),
        ];
        let refs: Vec<&Event> = events.iter().collect();
        let partial = || SinkError::Partial {
            sink: "s".into(),
            failed: vec![0, 1],
            retry: vec![1],
            reason: "a refused, b timed out".into(),
        };
        let inner = flaky(1, partial);
        let sink = Resilient::wrap(
            "p",
            inner.clone(),
            resilience(1, 5),
            &MetricsRegistry::new(),
        );
        match sink.write(&refs) {
            Err(SinkError::Partial { failed, retry, .. }) => {
                assert_eq!(
                    (failed, retry),
                    (vec![0], vec![]),
                    "a stays failed, for good"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            *inner.written.lock().expect("lock"),
            ["b"],
            "only b was retried"
        );
    }

    #[test]
    fn the_breaker_opens_refuses_at_once_probes_and_can_be_reset() {
        let e = Event::new("a", "/s", "t");
        let metrics = MetricsRegistry::new();
        let inner = flaky(u32::MAX, unavailable);
        let sink = Resilient::wrap("b", inner, resilience(0, 2), &metrics);
        assert!(sink.write(&[&e]).is_err());
        assert!(sink.write(&[&e]).is_err());
        let breaker = sink.circuit().expect("a breaker");
        assert_eq!(breaker.state(), CircuitState::Open);
        assert!(metrics
            .render()
            .contains("weir_sink_circuit_state{sink=\"b\"} 1"));
        let refused = sink.write(&[&e]).expect_err("refused at once");
        assert!(refused.to_string().contains("circuit open"), "{refused}");
        assert!(metrics
            .render()
            .contains("weir_sink_circuit_refused_total{sink=\"b\"} 1"));
        breaker.reset();
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert!(metrics
            .render()
            .contains("weir_sink_circuit_state{sink=\"b\"} 0"));
    }

    #[test]
    fn nothing_asked_means_no_wrapper() {
        let inner: Arc<dyn Sink> = flaky(0, unavailable);
        let same = Resilient::wrap(
            "n",
            inner.clone(),
            Resilience::NONE,
            &MetricsRegistry::new(),
        );
        assert!(Arc::ptr_eq(&inner, &same));
    }
}
