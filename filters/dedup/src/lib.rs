//! `dedup`: drops repeats of the same key within a time window.
//!
//! The key is built from configured attributes (core or extension; default `source` and
//! `id`, the CloudEvents identity of an event). The first event of a key is kept and the
//! key remembered in the router's per-tenant state for `window_ms`; repeats inside the
//! window are dropped. State is kept by the router, so it survives restarts and new
//! versions of this filter. When the tenant's state cap is full the event is kept (a
//! dedup filter must not lose events) and `dedup_state_full` is counted.
//!
//! Config: `{"key": ["source", "id"], "window_ms": 600000}`.

use serde::Deserialize;
use std::time::Duration;
use weir_guest::host::{self, state, Level};
use weir_guest::{Context, Event, Filter, Verdict};

/// Configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Attributes whose values form the key.
    #[serde(default = "default_key")]
    pub key: Vec<String>,
    /// How long a key is remembered, in milliseconds.
    #[serde(default = "default_window")]
    pub window_ms: u64,
}

fn default_key() -> Vec<String> {
    vec!["source".into(), "id".into()]
}

fn default_window() -> u64 {
    600_000
}

/// The filter.
pub struct Dedup {
    config: Config,
    key: String,
}

impl Dedup {
    fn key_of(&mut self, event: &Event<'_>) -> &str {
        self.key.clear();
        self.key.push_str("seen:");
        for (i, attr) in self.config.key.iter().enumerate() {
            if i > 0 {
                self.key.push('\u{1f}');
            }
            self.key.push_str(event.attribute(attr).unwrap_or(""));
        }
        &self.key
    }
}

impl Filter for Dedup {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.key.is_empty() {
            return Err("key must name at least one attribute".into());
        }
        if config.window_ms == 0 {
            return Err("window_ms must be positive".into());
        }
        Ok(Self {
            config,
            key: String::new(),
        })
    }

    fn process(&mut self, _ctx: &Context, event: &Event<'_>) -> Verdict {
        let window = Duration::from_millis(self.config.window_ms);
        let key = self.key_of(event).to_owned();
        if state::get(&key).is_some() {
            host::counter_add("duplicates", 1);
            return Verdict::drop("duplicate within the window");
        }
        if let Err(e) = state::set(&key, &[], Some(window)) {
            host::counter_add("dedup_state_full", 1);
            host::log(Level::Warn, &format!("cannot remember {key}: {e}"));
        }
        Verdict::Keep
    }
}

weir_guest::export_filter!(Dedup);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_guest::testing::{with_mock_host, Harness};
    use weir_guest::OwnedEvent;

    #[test]
    fn drops_repeats_within_the_window_only() {
        with_mock_host(|m| m.now_ms = 1_000);
        let mut h = Harness::<Dedup>::new(r#"{"window_ms": 100}"#).expect("config");
        let e = |id: &str| OwnedEvent::new(id, "/s", "t");
        let out = h.run(&[e("a"), e("b"), e("a")]);
        assert_eq!(
            out.iter().map(|o| o.is_drop()).collect::<Vec<_>>(),
            [false, false, true]
        );
        with_mock_host(|m| m.now_ms = 1_050);
        assert!(h.run(&[e("a")])[0].is_drop());
        with_mock_host(|m| m.now_ms = 1_101);
        assert!(!h.run(&[e("a")])[0].is_drop(), "window passed");
        assert_eq!(
            with_mock_host(|m| m.counters.get("duplicates").copied()),
            Some(2)
        );
    }

    #[test]
    fn key_from_configured_attributes() {
        let mut h = Harness::<Dedup>::new(r#"{"key": ["type", "subject"]}"#).expect("config");
        let e = |id: &str, subject: &str| {
            OwnedEvent::new(id, "/s", "pod.restarted").with("subject", subject)
        };
        let out = h.run(&[e("1", "pod-a"), e("2", "pod-a"), e("3", "pod-b")]);
        assert_eq!(
            out.iter().map(|o| o.is_drop()).collect::<Vec<_>>(),
            [false, true, false]
        );
        assert!(Harness::<Dedup>::new(r#"{"key": []}"#).is_err());
    }
}
