//! `redact`: removes or masks JSON fields whose key matches a pattern, anywhere in the data.
//!
//! A key matches when it contains one of the patterns, ignoring ASCII case (`password`
//! matches `dbPassword`). Events whose data holds none of the patterns anywhere are kept
//! without parsing. JSON data that does not parse is an error verdict (the route's failure
//! policy applies) rather than passing a possibly secret payload through unredacted.
//!
//! Config: `{"patterns": ["password", "token"], "mode": "mask", "mask": "***"}`.

use serde::Deserialize;
use serde_json::Value;
use weir_guest::{Context, Event, Filter, Patch, Verdict};

/// Remove matching fields, or replace their value with the mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Replace the value with `mask` (default).
    #[default]
    Mask,
    /// Remove the field.
    Remove,
}

/// Configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Key patterns (case-insensitive substrings).
    #[serde(default = "default_patterns")]
    pub patterns: Vec<String>,
    /// What to do with a match.
    #[serde(default)]
    pub mode: Mode,
    /// The replacement value in mask mode.
    #[serde(default = "default_mask")]
    pub mask: String,
}

fn default_patterns() -> Vec<String> {
    [
        "password",
        "passwd",
        "secret",
        "token",
        "apikey",
        "api_key",
        "authorization",
        "credential",
        "private_key",
    ]
    .map(String::from)
    .to_vec()
}

fn default_mask() -> String {
    "***".into()
}

/// The filter.
pub struct Redact {
    patterns: Vec<Vec<u8>>,
    mode: Mode,
    mask: Value,
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

impl Redact {
    fn matches(&self, key: &str) -> bool {
        self.patterns
            .iter()
            .any(|p| contains_ignore_case(key.as_bytes(), p))
    }

    /// Redacts in place; returns how many fields were changed.
    fn redact(&self, value: &mut Value) -> usize {
        match value {
            Value::Object(map) => {
                let mut changed = 0;
                if self.mode == Mode::Remove {
                    let before = map.len();
                    map.retain(|k, _| !self.matches(k));
                    changed += before - map.len();
                }
                for (k, v) in map.iter_mut() {
                    if self.mode == Mode::Mask && self.matches(k) {
                        if *v != self.mask {
                            *v = self.mask.clone();
                            changed += 1;
                        }
                    } else {
                        changed += self.redact(v);
                    }
                }
                changed
            }
            Value::Array(items) => items.iter_mut().map(|v| self.redact(v)).sum(),
            _ => 0,
        }
    }
}

impl Filter for Redact {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.patterns.iter().any(String::is_empty) {
            return Err("patterns must not be empty strings".into());
        }
        Ok(Self {
            patterns: config
                .patterns
                .iter()
                .map(|p| p.to_ascii_lowercase().into_bytes())
                .collect(),
            mode: config.mode,
            mask: Value::String(config.mask),
        })
    }

    fn process(&mut self, _ctx: &Context, event: &Event<'_>) -> Verdict {
        let Some(data) = event.data() else {
            return Verdict::Keep;
        };
        if !event.is_json() || !self.patterns.iter().any(|p| contains_ignore_case(data, p)) {
            return Verdict::Keep;
        }
        let mut value: Value = match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(e) => return Verdict::Error(format!("cannot redact invalid JSON data: {e}")),
        };
        if self.redact(&mut value) == 0 {
            return Verdict::Keep;
        }
        weir_guest::host::counter_add("redacted_events", 1);
        Verdict::Patch(Patch::new().json(&value))
    }
}

weir_guest::export_filter!(Redact);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use weir_guest::testing::{with_mock_host, Harness, Outcome};
    use weir_guest::OwnedEvent;

    fn ev(v: serde_json::Value) -> OwnedEvent {
        OwnedEvent::new("1", "/s", "t").with_json(&v)
    }

    #[test]
    fn masks_nested_fields_in_objects_and_arrays() {
        let mut h = Harness::<Redact>::new("{}").expect("config");
        let out = h.run(&[ev(json!({
            "user": "bob",
            "DbPassword": "hunter2",
            "nested": {"apiToken": "abc", "list": [{"client_secret": "s", "ok": 1}]}
        }))]);
        let v = out[0].kept().expect("kept").json_value().expect("json");
        assert_eq!(v["user"], "bob");
        assert_eq!(v["DbPassword"], "***");
        assert_eq!(v["nested"]["apiToken"], "***");
        assert_eq!(v["nested"]["list"][0]["client_secret"], "***");
        assert_eq!(v["nested"]["list"][0]["ok"], 1);
        assert_eq!(
            with_mock_host(|m| m.counters.get("redacted_events").copied()),
            Some(1)
        );
    }

    #[test]
    fn removes_fields_with_custom_patterns() {
        let mut h =
            Harness::<Redact>::new(r#"{"patterns":["ssn"],"mode":"remove"}"#).expect("config");
        let out = h.run(&[ev(json!({"SSN": "1", "name": "x", "password": "kept"}))]);
        let v = out[0].kept().expect("kept").json_value().expect("json");
        assert_eq!(v, json!({"name": "x", "password": "kept"}));
    }

    #[test]
    fn clean_and_non_json_events_pass_unchanged_and_bad_json_is_an_error() {
        let mut h = Harness::<Redact>::new("{}").expect("config");
        let clean = ev(json!({"a": 1}));
        let mut text = OwnedEvent::new("2", "/s", "t");
        text.datacontenttype = Some("text/plain".into());
        text.data = Some(b"password=hunter2".to_vec());
        let mut broken = OwnedEvent::new("3", "/s", "t");
        broken.data = Some(b"{\"password\": ".to_vec());
        let out = h.run(&[clean.clone(), text.clone(), broken]);
        assert_eq!(out[0], Outcome::Keep(clean));
        assert_eq!(out[1], Outcome::Keep(text));
        assert!(matches!(out[2], Outcome::Error(_)));
    }
}
