//! `k8s-filter`: which Kubernetes Events are worth syncing — the kcp event syncer's
//! `EventFilter` and the filtering half of its `EventSyncConfig`.
//!
//! An event passes when all of these hold (an empty list allows everything):
//! - `minimum_severity`: its type ranks at least this (`Normal` < `Warning`; other types
//!   rank as `Normal`);
//! - `include_types` names its type and `exclude_types` does not;
//! - `reasons` matches its reason and `exclude_reasons` does not;
//! - `namespaces` matches its namespace and `exclude_namespaces` does not;
//! - `objects` matches its involved object as `Kind/name` and `exclude_objects` does not;
//! - its source is within `max_events_per_minute` (a token bucket per source — by
//!   default the cluster and the reporting component, `k8scluster` and `k8scomponent` —
//!   holding one minute's worth, kept in the tenant's state).
//!
//! Patterns are shell globs (`*`, `?`, `[a-z]`). The event's fields come from the
//! `k8s*` extensions the cluster watch and the Events API set, else from its JSON data.
//! A filtered event is dropped with its reason (counted as `filtered`, by the rule); an
//! event over its rate is dropped or routed to a sink (`over_limit`), counted as
//! `rate_limited`.

use glob::Pattern;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use weir_guest::bucket::{key_of, OverLimit, TokenBuckets};
use weir_guest::{host, Context, Event, Filter, Verdict};

/// Configuration.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The lowest type that passes: `Normal` (default, everything) or `Warning`.
    #[serde(default)]
    pub minimum_severity: Option<String>,
    /// Types that pass (empty: all).
    #[serde(default)]
    pub include_types: Vec<String>,
    /// Types that never pass.
    #[serde(default)]
    pub exclude_types: Vec<String>,
    /// Reason patterns that pass (empty: all).
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Reason patterns that never pass.
    #[serde(default)]
    pub exclude_reasons: Vec<String>,
    /// Namespace patterns that pass (empty: all).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Namespace patterns that never pass.
    #[serde(default)]
    pub exclude_namespaces: Vec<String>,
    /// Involved-object patterns, `Kind/name` (`Pod/web-*`), that pass (empty: all).
    #[serde(default)]
    pub objects: Vec<String>,
    /// Involved-object patterns that never pass.
    #[serde(default)]
    pub exclude_objects: Vec<String>,
    /// Events per minute per source (0 or absent: no limit).
    #[serde(default)]
    pub max_events_per_minute: u32,
    /// The attributes that make a source (default `k8scluster`, `k8scomponent`).
    #[serde(default = "default_source_key")]
    pub source_key: Vec<String>,
    /// What happens over the rate.
    #[serde(default)]
    pub over_limit: OverLimit,
}

fn default_source_key() -> Vec<String> {
    vec!["k8scluster".into(), "k8scomponent".into()]
}

/// Include and exclude patterns of one field.
#[derive(Debug, Default)]
struct Rule {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

impl Rule {
    fn new(field: &str, include: &[String], exclude: &[String]) -> Result<Self, String> {
        let compile = |list: &[String], setting: String| {
            list.iter()
                .map(|p| Pattern::new(p).map_err(|e| format!("{setting}: `{p}`: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            include: compile(include, field.to_owned())?,
            exclude: compile(exclude, format!("exclude_{field}"))?,
        })
    }

    /// Whether the rule allows everything (no patterns), so its value need not be built.
    fn is_open(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    fn allows(&self, value: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(value)))
            && !self.exclude.iter().any(|p| p.matches(value))
    }
}

/// The filter.
pub struct K8sFilter {
    config: Config,
    minimum: u8,
    types: Rule,
    reasons: Rule,
    namespaces: Rule,
    objects: Rule,
    buckets: Option<TokenBuckets>,
}

/// `Normal` < `Warning`; any other type ranks as `Normal`.
fn rank(ty: &str) -> u8 {
    u8::from(ty.eq_ignore_ascii_case("warning"))
}

/// The fields a decision looks at: borrowed from the extensions, or else read from the
/// data (parsed once, only when an extension is missing).
struct Fields<'a> {
    ty: Cow<'a, str>,
    reason: Cow<'a, str>,
    namespace: Cow<'a, str>,
    kind: Cow<'a, str>,
    name: Cow<'a, str>,
}

impl<'a> Fields<'a> {
    fn of(event: &Event<'a>) -> Self {
        let mut parsed: Option<Value> = None;
        let mut field = |ext_name: &str, path: &[&str]| -> Cow<'a, str> {
            if let Some(v) = event.extension(ext_name) {
                return Cow::Borrowed(v);
            }
            let json = parsed.get_or_insert_with(|| {
                event
                    .is_json()
                    .then(|| event.json_value().ok())
                    .flatten()
                    .unwrap_or(Value::Null)
            });
            let mut cur = &*json;
            for key in path {
                cur = &cur[*key];
            }
            Cow::Owned(cur.as_str().unwrap_or("").to_owned())
        };
        Self {
            ty: field("k8stype", &["type"]),
            reason: field("k8sreason", &["reason"]),
            namespace: field("k8snamespace", &["metadata", "namespace"]),
            kind: field("k8skind", &["involvedObject", "kind"]),
            name: field("k8sobject", &["involvedObject", "name"]),
        }
    }
}

impl Filter for K8sFilter {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let minimum = match config.minimum_severity.as_deref() {
            None => 0,
            Some(s) if s.eq_ignore_ascii_case("normal") => 0,
            Some(s) if s.eq_ignore_ascii_case("warning") => 1,
            Some(other) => {
                return Err(format!(
                    "minimum_severity: `{other}` is not Normal or Warning"
                ))
            }
        };
        let buckets = match config.max_events_per_minute {
            0 => None,
            n => Some(
                TokenBuckets::new(f64::from(n) / 60.0, f64::from(n))
                    .map_err(|e| format!("max_events_per_minute: {e}"))?,
            ),
        };
        if buckets.is_some() && config.source_key.is_empty() {
            return Err("source_key must name at least one attribute".into());
        }
        Ok(Self {
            types: Rule::new("types", &config.include_types, &config.exclude_types)?,
            reasons: Rule::new("reasons", &config.reasons, &config.exclude_reasons)?,
            namespaces: Rule::new("namespaces", &config.namespaces, &config.exclude_namespaces)?,
            objects: Rule::new("objects", &config.objects, &config.exclude_objects)?,
            minimum,
            buckets,
            config,
        })
    }

    fn process(&mut self, _ctx: &Context, event: &Event<'_>) -> Verdict {
        let f = Fields::of(event);
        let refused = if rank(&f.ty) < self.minimum {
            Some("severity")
        } else if !self.types.allows(&f.ty) {
            Some("type")
        } else if !self.reasons.allows(&f.reason) {
            Some("reason")
        } else if !self.namespaces.allows(&f.namespace) {
            Some("namespace")
        } else if !self.objects.is_open() && !self.objects.allows(&format!("{}/{}", f.kind, f.name))
        {
            Some("object")
        } else {
            None
        };
        if let Some(rule) = refused {
            host::counter_add(&format!("filtered_by_{rule}"), 1);
            return Verdict::drop(format!("k8s-filter: {rule}"));
        }
        let Some(buckets) = &self.buckets else {
            return Verdict::Keep;
        };
        let key = key_of("k8s-filter:", event, &self.config.source_key);
        if buckets.take(&key, host::now_ms()) {
            return Verdict::Keep;
        }
        host::counter_add("rate_limited", 1);
        self.config
            .over_limit
            .verdict("k8s-filter: over max_events_per_minute")
    }
}

weir_guest::export_filter!(K8sFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use weir_guest::testing::{with_mock_host, Harness};
    use weir_guest::OwnedEvent;

    fn event(ty: &str, reason: &str, ns: &str, kind: &str, name: &str) -> OwnedEvent {
        OwnedEvent::new("1", "/x", "io.k8s.core.v1.Event")
            .with("k8stype", ty)
            .with("k8sreason", reason)
            .with("k8snamespace", ns)
            .with("k8skind", kind)
            .with("k8sobject", name)
            .with("k8scluster", "east")
            .with("k8scomponent", "kubelet")
    }

    fn kept(config: &str, events: &[OwnedEvent]) -> Vec<bool> {
        let mut h = Harness::<K8sFilter>::new(config).expect("config");
        h.run(events).iter().map(|o| o.kept().is_some()).collect()
    }

    #[test]
    fn every_rule_of_the_event_filter_applies() {
        let events = [
            event("Normal", "Started", "shop", "Pod", "web-1"),
            event("Warning", "BackOff", "shop", "Pod", "web-1"),
            event("Warning", "FailedMount", "kube-system", "Pod", "dns"),
            event("Warning", "BackOff", "shop", "Deployment", "web"),
            event("Warning", "Unhealthy", "shop", "Pod", "db-0"),
        ];
        assert_eq!(
            kept(r#"{"minimum_severity": "Warning"}"#, &events),
            [false, true, true, true, true]
        );
        assert_eq!(
            kept(
                r#"{"exclude_namespaces": ["kube-*"], "reasons": ["BackOff", "Failed*"]}"#,
                &events
            ),
            [false, true, false, true, false]
        );
        assert_eq!(
            kept(
                r#"{"objects": ["Pod/web-*", "Pod/db-?"], "exclude_types": ["Normal"]}"#,
                &events
            ),
            [false, true, false, false, true]
        );
        assert_eq!(
            kept(r#"{"include_types": ["Normal"]}"#, &events),
            [true, false, false, false, false]
        );
        assert_eq!(kept("{}", &events), [true; 5]);
        assert!(Harness::<K8sFilter>::new(r#"{"minimum_severity": "Loud"}"#).is_err());
        let bad = Harness::<K8sFilter>::new(r#"{"reasons": ["[unclosed"]}"#)
            .err()
            .expect("refused");
        assert!(bad.contains("reasons: `[unclosed`"), "{bad}");
    }

    #[test]
    fn without_extensions_the_data_is_read() {
        let e = OwnedEvent::new("1", "/x", "io.k8s.core.v1.Event").with_json(&json!({
            "metadata": {"namespace": "kube-system"},
            "involvedObject": {"kind": "Node", "name": "n1"},
            "type": "Warning", "reason": "NodeNotReady",
        }));
        assert_eq!(
            kept(
                r#"{"objects": ["Node/*"], "minimum_severity": "Warning"}"#,
                std::slice::from_ref(&e)
            ),
            [true]
        );
        assert_eq!(
            kept(r#"{"exclude_namespaces": ["kube-system"]}"#, &[e]),
            [false]
        );
    }

    #[test]
    fn each_source_gets_its_events_per_minute() {
        with_mock_host(|m| m.now_ms = 1_000_000);
        let mut h = Harness::<K8sFilter>::new(r#"{"max_events_per_minute": 3}"#).expect("config");
        let burst: Vec<OwnedEvent> = (0..5)
            .map(|_| event("Normal", "Pulled", "a", "Pod", "p"))
            .collect();
        let out = h.run(&burst);
        let passed = out.iter().filter(|o| o.kept().is_some()).count();
        assert_eq!(passed, 3, "a minute's worth");
        // Another source has its own bucket.
        let other = event("Normal", "Pulled", "a", "Pod", "p").with("k8scluster", "west");
        assert!(h.run(&[other])[0].kept().is_some());
        // 20 s later one more token (3 per minute).
        with_mock_host(|m| m.now_ms = 1_020_000);
        let out = h.run(&burst[..2]);
        assert_eq!(out.iter().filter(|o| o.kept().is_some()).count(), 1);
        assert_eq!(
            with_mock_host(|m| m.counters.get("rate_limited").copied()),
            Some(3)
        );
    }
}
