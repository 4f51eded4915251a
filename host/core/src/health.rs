//! Health checks behind `/readyz?verbose`, as kube-apiserver lists them: each component
//! registers a named check; a *critical* check failing makes the router unready, an
//! *informational* one (a downstream cluster's watch) is shown but does not take the
//! router out of service, since the rest of its traffic still flows.

use std::sync::{Arc, Mutex};

/// A check: `Ok` when healthy, else why not.
pub type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The registered checks, in registration order.
#[derive(Clone, Default)]
pub struct HealthChecks {
    checks: Arc<Mutex<Vec<(String, bool, Check)>>>,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The check's name (`k8s-watch/east`).
    pub name: String,
    /// Whether failing it makes the router unready.
    pub critical: bool,
    /// `None` when healthy, else why not.
    pub failure: Option<String>,
}

impl HealthChecks {
    /// Registers a check; `critical` ones decide readiness.
    pub fn register(&self, name: impl Into<String>, critical: bool, check: Check) {
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.into(), critical, check));
    }

    /// Runs every check.
    pub fn run(&self) -> Vec<CheckResult> {
        let checks = self
            .checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        checks
            .into_iter()
            .map(|(name, critical, check)| CheckResult {
                name,
                critical,
                failure: check().err(),
            })
            .collect()
    }
}

/// The health of a remote peer a component talks to, from the outcome of its last
/// request: a check that needs no I/O of its own (`/readyz` never waits on a peer).
#[derive(Debug, Default)]
pub struct PeerHealth {
    /// Why the last request failed; `None` after a success (or before any request).
    last_failure: Mutex<Option<String>>,
}

impl PeerHealth {
    /// Records a request that got an answer.
    pub fn succeeded(&self) {
        let mut last = self.last_failure.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some() {
            *last = None;
        }
    }

    /// Records a request that failed, and why.
    pub fn failed(&self, why: impl std::fmt::Display) {
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(format!("the last request failed: {why}"));
    }

    /// The check: healthy unless the last request failed.
    pub fn check(self: &Arc<Self>) -> Check {
        let health = Arc::downgrade(self);
        Arc::new(move || match health.upgrade() {
            Some(h) => match h
                .last_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                Some(why) => Err(why.clone()),
                None => Ok(()),
            },
            None => Err("stopped".to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_healthy_until_its_last_request_fails() {
        let peer = Arc::new(PeerHealth::default());
        let check = peer.check();
        assert_eq!(check(), Ok(()));
        peer.failed("connection refused");
        assert_eq!(
            check().unwrap_err(),
            "the last request failed: connection refused"
        );
        peer.succeeded();
        assert_eq!(check(), Ok(()));
    }

    #[test]
    fn checks_run_in_order_and_say_why_they_fail() {
        let h = HealthChecks::default();
        h.register("a", true, Arc::new(|| Ok(())));
        h.register("b", false, Arc::new(|| Err("down".into())));
        let got = h.run();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].name.as_str(), got[0].failure.as_deref()),
            ("a", None)
        );
        assert_eq!(
            (got[1].critical, got[1].failure.as_deref()),
            (false, Some("down"))
        );
    }
}
