//! Kubernetes Events as CloudEvents: one shape for every CloudEvent weir makes from a
//! core/v1 Event — the Events API's stored changes, the cluster watch, and the view a
//! query's `filter` evaluates — so that filters and route conditions select on the same
//! attributes whichever way an event came in.
//!
//! `type` is `io.k8s.core.v1.Event`, `subject` the involved object as
//! `kind/namespace/name`, `time` the event's time, data the core/v1 JSON; extensions:
//!
//! | extension | value |
//! | --- | --- |
//! | `k8snamespace` | the event's namespace |
//! | `k8sname` | the event's name |
//! | `k8sreason` | `reason` |
//! | `k8stype` | `type` (`Normal`, `Warning`) |
//! | `k8skind` | the involved object's kind |
//! | `k8sobject` | the involved object's name |
//! | `k8scomponent` | `source.component`, else `reportingComponent` |
//! | `k8scount` | `count`, when above 0 |
//! | `k8scluster` | the cluster a watch read it from (cluster watch only) |
//! | `k8sworkspace` | the upstream workspace configured for that cluster (cluster watch) |
//! | `k8schange` | `ADDED`, `MODIFIED`, `DELETED` (Events API changes only) |

use super::convert;
use serde_json::{Map, Value};
use weir_core::Event;

/// When an event happened, for time ranges: `lastTimestamp`, else `series.lastObservedTime`,
/// `eventTime`, `firstTimestamp`, `metadata.creationTimestamp`; ms since the epoch.
pub fn event_time(core: &Map<String, Value>) -> i64 {
    let series = core.get("series").and_then(Value::as_object);
    [
        core.get("lastTimestamp"),
        series.and_then(|s| s.get("lastObservedTime")),
        core.get("eventTime"),
        core.get("firstTimestamp"),
        convert::metadata(core).and_then(|m| m.get("creationTimestamp")),
    ]
    .into_iter()
    .map(convert::parse_ms)
    .find(|ms| *ms != 0)
    .unwrap_or(0)
}

/// The CloudEvent `source` of the events of namespace `ns`.
pub fn source_of(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/events")
}

/// A stored event as the CloudEvent a query's `filter` sees: `id` the uid (else
/// namespace/name), `source` `/api/v1/namespaces/<ns>/events`, `type`
/// `io.k8s.core.v1.Event`, `subject` the involved object as `kind/namespace/name`, `time`
/// the event's time, and extensions `k8snamespace`, `k8sname`, `k8sreason`, `k8stype`
/// (Normal or Warning), `k8skind` and `k8sobject` (the involved object's kind and name),
/// `k8scomponent` (source or reporting component) and `k8scount`.
pub fn event_view(core: &Map<String, Value>) -> Event {
    let ns = convert::meta_str(core, "namespace");
    let name = convert::meta_str(core, "name");
    let uid = convert::meta_str(core, "uid");
    let id = if uid.is_empty() {
        format!("{ns}/{name}")
    } else {
        uid.to_owned()
    };
    let mut e = Event::new(id, source_of(ns), "io.k8s.core.v1.Event");
    let at = |path: &[&str]| convert::str_at(core, path);
    let (kind, object_ns, object) = (
        at(&["involvedObject", "kind"]),
        at(&["involvedObject", "namespace"]),
        at(&["involvedObject", "name"]),
    );
    e.subject = Some(format!("{kind}/{object_ns}/{object}"));
    let time = event_time(core);
    if time != 0 {
        e.time = Some(convert::rfc3339_seconds(time));
    }
    let component = match at(&["source", "component"]) {
        "" => at(&["reportingComponent"]),
        c => c,
    };
    let count = core.get("count").and_then(Value::as_i64).unwrap_or(0);
    for (key, value) in [
        ("k8snamespace", ns),
        ("k8sname", name),
        ("k8sreason", at(&["reason"])),
        ("k8stype", at(&["type"])),
        ("k8skind", kind),
        ("k8sobject", object),
        ("k8scomponent", component),
    ] {
        if !value.is_empty() {
            e.set_extension(key, value);
        }
    }
    if count > 0 {
        e.set_extension("k8scount", count.to_string());
    }
    e
}
