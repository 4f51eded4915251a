//! Activity's query resources, on both stores: `EventQuery` (events in a time range with a
//! field selector, newest first, paged) and `EventFacetQuery` (distinct values with
//! counts), served as `activity.miloapis.com/v1alpha1` create-only, cluster-scoped
//! resources whose answer is the object with its `status` filled in — the contract of
//! Milo's Activity server (`datum-cloud/activity`, `types_eventquery.go`,
//! `types_eventfacetquery.go`).
//!
//! Differences, on purpose:
//! - The time range may span the whole retention (Activity caps it at 60 days).
//! - `spec.filter` (a weir extension) is a CloudEvents SQL expression evaluated on each
//!   event as a CloudEvent ([`event_view`]). weir already evaluates CESQL for route
//!   conditions, so one expression language serves routes and queries; Activity's other
//!   query types use CEL, which weir would have to embed a second interpreter for.
//! - Field selectors accept both core/v1 (`involvedObject.name`) and events.k8s.io/v1
//!   (`regarding.name`) labels.

use super::ce::{event_time, event_view};
use super::convert::{self, ApiVersion};
use super::selector::FieldSelector;
use super::status::ApiError;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use weir_core::cesql::Expr;

/// The most results of one EventQuery page (and the default page).
pub const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;
/// The most facets of one EventFacetQuery, and values per facet.
const MAX_FACETS: usize = 10;
const MAX_FACET_VALUES: usize = 100;
const DEFAULT_FACET_VALUES: usize = 20;

/// A parsed, validated EventQuery.
pub struct EventQuery {
    /// The request as it came (echoed with `status`).
    pub object: Map<String, Value>,
    /// `[start, end)`, ms since the epoch.
    pub start_ms: i64,
    /// End of the range (exclusive).
    pub end_ms: i64,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// The field selector (core/v1 labels).
    pub fields: FieldSelector,
    /// The filter expression.
    pub filter: Option<Expr>,
    /// Results per page.
    pub limit: usize,
    /// Results to skip (from `continue`).
    pub offset: usize,
    /// What a cursor must match to be used with this query.
    fingerprint: String,
}

/// A parsed, validated EventFacetQuery.
pub struct FacetQuery {
    /// The request as it came.
    pub object: Map<String, Value>,
    /// `[start, end)`, ms since the epoch.
    pub start_ms: i64,
    /// End of the range (exclusive).
    pub end_ms: i64,
    /// `(field as asked, core/v1 path, values)` per facet.
    pub facets: Vec<(String, &'static [&'static str], usize)>,
}

/// Facet fields: the names Activity accepts (both generations) and where a core/v1
/// event holds them.
const FACET_FIELDS: [(&str, &[&str]); 11] = [
    ("regarding.kind", &["involvedObject", "kind"]),
    ("regarding.namespace", &["involvedObject", "namespace"]),
    ("involvedObject.kind", &["involvedObject", "kind"]),
    ("involvedObject.namespace", &["involvedObject", "namespace"]),
    ("related.kind", &["related", "kind"]),
    ("related.namespace", &["related", "namespace"]),
    ("reason", &["reason"]),
    ("type", &["type"]),
    ("source.component", &["source", "component"]),
    ("reportingController", &["reportingComponent"]),
    ("namespace", &["metadata", "namespace"]),
];

fn invalid(kind: &str, object: &Map<String, Value>, field: &str, message: &str) -> ApiError {
    ApiError::invalid_kind(kind, convert::meta_str(object, "name"), field, message)
}

/// The request body as an object of `kind`.
fn body(kind: &str, bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let object = super::status::json_object(bytes)?;
    match object.get("kind").and_then(Value::as_str) {
        Some(k) if k == kind => {}
        None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "kind `{other}` is not {kind}"
            )))
        }
    }
    match object.get("apiVersion").and_then(Value::as_str) {
        Some(convert::ACTIVITY) | None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "apiVersion `{other}` does not match this endpoint ({})",
                convert::ACTIVITY
            )))
        }
    }
    Ok(object)
}

fn spec_str<'a>(spec: &'a Map<String, Value>, key: &str) -> &'a str {
    spec.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A time as Activity reads it: RFC 3339, `now`, or `now-<N><s|m|h|d|w>`; never in the
/// future. Answers ms since the epoch.
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now_ms);
    }
    let ms = if let Some(rel) = text.strip_prefix("now-") {
        let (number, unit) = rel.split_at(rel.len().saturating_sub(1));
        let n: i64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a time: use RFC 3339 or now-<N><s|m|h|d|w>"))?;
        let unit_ms: i64 = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return Err(format!("`{text}`: the unit must be s, m, h, d or w")),
        };
        now_ms.saturating_sub(n.saturating_mul(unit_ms))
    } else {
        chrono::DateTime::parse_from_rfc3339(text)
            .map_err(|e| {
                format!("`{text}` is not a time ({e}): use RFC 3339 or now-<N><s|m|h|d|w>")
            })?
            .timestamp_millis()
    };
    if ms > now_ms + 1_000 {
        return Err("time cannot be in the future".into());
    }
    Ok(ms)
}

/// The opaque `continue` of the page after `offset` results of a query with this
/// fingerprint.
fn cursor(offset: usize, fingerprint: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"o": offset, "h": fingerprint}).to_string())
}

impl EventQuery {
    /// Parses and checks a request (422 naming the field otherwise).
    pub fn parse(bytes: &[u8], now_ms: i64) -> Result<Self, ApiError> {
        const KIND: &str = "EventQuery";
        let object = body(KIND, bytes)?;
        let spec = match object.get("spec") {
            Some(Value::Object(spec)) => spec.clone(),
            _ => return Err(invalid(KIND, &object, "spec", "Required value")),
        };
        let bad = |field: &str, message: &str| invalid(KIND, &object, field, message);
        let time = |key: &str| {
            let text = spec_str(&spec, key);
            if text.is_empty() {
                return Err(bad(&format!("spec.{key}"), "Required value"));
            }
            parse_time(text, now_ms).map_err(|m| bad(&format!("spec.{key}"), &m))
        };
        let (start_ms, end_ms) = (time("startTime")?, time("endTime")?);
        if end_ms <= start_ms {
            return Err(bad("spec.endTime", "must be after spec.startTime"));
        }
        let selector = spec_str(&spec, "fieldSelector");
        let fields = FieldSelector::parse(selector, false)
            .or_else(|_| FieldSelector::parse(selector, true))
            .map_err(|e| bad("spec.fieldSelector", &e.0))?;
        let filter = match spec_str(&spec, "filter") {
            "" => None,
            text => Some(
                weir_core::cesql::parse(text)
                    .map_err(|e| bad("spec.filter", &format!("not CloudEvents SQL: {e}")))?,
            ),
        };
        let limit = match spec.get("limit") {
            None | Some(Value::Null) => DEFAULT_LIMIT,
            Some(v) => match v.as_i64() {
                Some(0) => DEFAULT_LIMIT,
                Some(n) if n > 0 && (n as usize) <= MAX_LIMIT => n as usize,
                _ => {
                    return Err(bad(
                        "spec.limit",
                        &format!("must be between 0 and {MAX_LIMIT}"),
                    ))
                }
            },
        };
        let namespace = Some(spec_str(&spec, "namespace"))
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for key in [
                "startTime",
                "endTime",
                "namespace",
                "fieldSelector",
                "filter",
            ] {
                spec_str(&spec, key).hash(&mut h);
            }
            limit.hash(&mut h);
            format!("{:016x}", h.finish())
        };
        let offset = match spec_str(&spec, "continue") {
            "" => 0,
            token => {
                let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(token)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
                match decoded {
                    Some(c) if c["h"].as_str() == Some(fingerprint.as_str()) => c["o"]
                        .as_u64()
                        .and_then(|o| usize::try_from(o).ok())
                        .ok_or_else(|| bad("spec.continue", "not a cursor of this query"))?,
                    _ => {
                        return Err(bad(
                            "spec.continue",
                            "not a cursor of this query (it must come with the same spec)",
                        ))
                    }
                }
            }
        };
        Ok(Self {
            object,
            start_ms,
            end_ms,
            namespace,
            fields,
            filter,
            limit,
            offset,
            fingerprint,
        })
    }

    /// The field selector plus what the filter requires that a selector can say: the
    /// top-level `AND`ed equalities of a `k8s*` extension with a string
    /// (`k8stype = 'Warning'` is `type=Warning`), so a store can narrow with its index or
    /// columns before the filter runs. The filter still decides.
    pub fn narrowing_fields(&self) -> FieldSelector {
        use weir_core::cesql::{BinOp, Value as Lit};
        fn equalities(e: &Expr, out: &mut Vec<super::selector::FieldRequirement>) {
            match e {
                Expr::Bin(BinOp::And, a, b) => {
                    equalities(a, out);
                    equalities(b, out);
                }
                Expr::Bin(BinOp::Eq, a, b) => {
                    let pair = match (a.as_ref(), b.as_ref()) {
                        (Expr::Attr(attr), Expr::Lit(Lit::Str(v)))
                        | (Expr::Lit(Lit::Str(v)), Expr::Attr(attr)) => Some((attr, v)),
                        _ => None,
                    };
                    let label = pair.and_then(|(attr, _)| match attr.as_str() {
                        "k8stype" => Some("type"),
                        "k8sreason" => Some("reason"),
                        "k8sobject" => Some("involvedObject.name"),
                        "k8skind" => Some("involvedObject.kind"),
                        "k8snamespace" => Some("metadata.namespace"),
                        "k8sname" => Some("metadata.name"),
                        _ => None,
                    });
                    if let (Some(label), Some((_, value))) = (label, pair) {
                        out.push(super::selector::FieldRequirement {
                            field: label.to_owned(),
                            value: value.clone(),
                            negated: false,
                        });
                    }
                }
                _ => {}
            }
        }
        let mut fields = self.fields.0.clone();
        if let Some(filter) = &self.filter {
            equalities(filter, &mut fields);
        }
        FieldSelector(fields)
    }

    /// Whether a stored (core/v1) event is in the answer, scope aside.
    pub fn matches(&self, core: &Map<String, Value>) -> bool {
        let at = event_time(core);
        if at < self.start_ms || at >= self.end_ms {
            return false;
        }
        if let Some(ns) = &self.namespace {
            if convert::meta_str(core, "namespace") != ns {
                return false;
            }
        }
        if !self.fields.matches(|label| convert::field(core, label)) {
            return false;
        }
        match &self.filter {
            None => true,
            Some(expr) => matches!(
                weir_core::cesql::evaluate(expr, &event_view(core)),
                Ok(weir_core::cesql::Value::Bool(true))
            ),
        }
    }

    /// The answer: the request with `status` — `results` (EventRecords holding the
    /// events.k8s.io/v1 Event), `continue` when more matched, and the effective range.
    pub fn answer(mut self, page: &[&Map<String, Value>], more: bool) -> Value {
        let results: Vec<Value> = page
            .iter()
            .map(|core| {
                json!({
                    "apiVersion": convert::ACTIVITY,
                    "kind": "EventRecord",
                    "metadata": core.get("metadata").cloned().unwrap_or_else(|| json!({})),
                    "event": convert::to_version(core, ApiVersion::Events),
                })
            })
            .collect();
        let mut status = json!({
            "results": results,
            "effectiveStartTime": convert::rfc3339_seconds(self.start_ms),
            "effectiveEndTime": convert::rfc3339_seconds(self.end_ms),
        });
        if more {
            status["continue"] = cursor(self.offset + page.len(), &self.fingerprint).into();
        }
        self.object
            .insert("apiVersion".into(), convert::ACTIVITY.into());
        self.object.insert("kind".into(), "EventQuery".into());
        self.object.insert("status".into(), status);
        Value::Object(self.object)
    }
}

impl FacetQuery {
    /// Parses and checks a request (422 naming the field otherwise).
    pub fn parse(bytes: &[u8], now_ms: i64) -> Result<Self, ApiError> {
        const KIND: &str = "EventFacetQuery";
        let object = body(KIND, bytes)?;
        let spec = match object.get("spec") {
            Some(Value::Object(spec)) => spec.clone(),
            _ => return Err(invalid(KIND, &object, "spec", "Required value")),
        };
        let bad = |field: &str, message: &str| invalid(KIND, &object, field, message);
        let range = spec
            .get("timeRange")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let start_ms = match spec_str(&range, "start") {
            "" => now_ms - 7 * 86_400_000,
            text => parse_time(text, now_ms).map_err(|m| bad("spec.timeRange.start", &m))?,
        };
        let end_ms = match spec_str(&range, "end") {
            "" => now_ms + 1,
            text => parse_time(text, now_ms).map_err(|m| bad("spec.timeRange.end", &m))?,
        };
        if end_ms <= start_ms {
            return Err(bad(
                "spec.timeRange.end",
                "must be after spec.timeRange.start",
            ));
        }
        let asked = match spec.get("facets") {
            Some(Value::Array(a)) if !a.is_empty() => a.clone(),
            _ => return Err(bad("spec.facets", "Required value")),
        };
        if asked.len() > MAX_FACETS {
            return Err(bad(
                "spec.facets",
                &format!(
                    "Too many: {}: must have at most {MAX_FACETS} items",
                    asked.len()
                ),
            ));
        }
        let mut facets = Vec::with_capacity(asked.len());
        for (i, f) in asked.iter().enumerate() {
            let field = f["field"].as_str().unwrap_or("");
            let Some((_, path)) = FACET_FIELDS.iter().find(|(name, _)| *name == field) else {
                let known: Vec<&str> = FACET_FIELDS.iter().map(|(n, _)| *n).collect();
                return Err(bad(
                    &format!("spec.facets[{i}].field"),
                    &format!(
                        "Unsupported value: \"{field}\": supported values: {}",
                        known.join(", ")
                    ),
                ));
            };
            let limit = match f.get("limit").and_then(Value::as_i64) {
                None | Some(0) => DEFAULT_FACET_VALUES,
                Some(n) if n > 0 => (n as usize).min(MAX_FACET_VALUES),
                Some(_) => {
                    return Err(bad(
                        &format!("spec.facets[{i}].limit"),
                        "must not be negative",
                    ))
                }
            };
            facets.push((field.to_owned(), *path, limit));
        }
        Ok(Self {
            object,
            start_ms,
            end_ms,
            facets,
        })
    }

    /// Whether an event's time is in the range.
    pub fn in_range(&self, core: &Map<String, Value>) -> bool {
        let at = event_time(core);
        at >= self.start_ms && at < self.end_ms
    }

    /// The answer from `(value, count)` lists per facet (each sorted by count descending,
    /// then value, and cut to its limit here).
    pub fn answer(mut self, mut counted: Vec<Vec<(String, u64)>>) -> Value {
        let facets: Vec<Value> = self
            .facets
            .iter()
            .zip(counted.iter_mut())
            .map(|((field, _, limit), values)| {
                values.retain(|(v, _)| !v.is_empty());
                values.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                values.truncate(*limit);
                json!({
                    "field": field,
                    "values": values.iter().map(|(value, count)| json!({"value": value, "count": count})).collect::<Vec<_>>(),
                })
            })
            .collect();
        self.object
            .insert("apiVersion".into(), convert::ACTIVITY.into());
        self.object.insert("kind".into(), "EventFacetQuery".into());
        self.object
            .insert("status".into(), json!({ "facets": facets }));
        Value::Object(self.object)
    }
}

/// Counts facet values over events (in the range; the caller filters). Values are
/// borrowed from the events while counting: no allocation per event.
pub fn count_facets<'a>(
    query: &FacetQuery,
    events: impl Iterator<Item = &'a Map<String, Value>>,
) -> Vec<Vec<(String, u64)>> {
    let mut counts: Vec<std::collections::HashMap<&'a str, u64>> =
        vec![Default::default(); query.facets.len()];
    for core in events {
        for (i, (_, path, _)) in query.facets.iter().enumerate() {
            *counts[i].entry(convert::str_at(core, path)).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|c| c.into_iter().map(|(v, n)| (v.to_owned(), n)).collect())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NOW: i64 = 1_765_000_000_000;

    #[test]
    fn times_are_rfc3339_or_relative_and_never_future() {
        assert_eq!(parse_time("now", NOW), Ok(NOW));
        assert_eq!(parse_time("now-7d", NOW), Ok(NOW - 7 * 86_400_000));
        assert_eq!(parse_time("now-90m", NOW), Ok(NOW - 90 * 60_000));
        assert!(parse_time("now-7y", NOW).is_err());
        assert!(parse_time("yesterday", NOW).is_err());
        let future = convert::rfc3339_seconds(NOW + 86_400_000);
        assert_eq!(
            parse_time(&future, NOW),
            Err("time cannot be in the future".into())
        );
    }

    #[test]
    fn a_query_is_checked_and_its_cursor_belongs_to_it() {
        let q = |spec: Value| {
            EventQuery::parse(
                json!({"apiVersion": convert::ACTIVITY, "kind": "EventQuery", "spec": spec})
                    .to_string()
                    .as_bytes(),
                NOW,
            )
        };
        let err = q(json!({"endTime": "now"})).err().unwrap();
        assert_eq!(
            err.status()["details"]["causes"][0]["field"],
            "spec.startTime"
        );
        let err = q(json!({"startTime": "now", "endTime": "now-1h"}))
            .err()
            .unwrap();
        assert_eq!(err.status()["code"], 422);
        let err = q(json!({"startTime": "now-1h", "endTime": "now", "limit": 5000}))
            .err()
            .unwrap();
        assert_eq!(err.status()["details"]["causes"][0]["field"], "spec.limit");
        let err = q(json!({"startTime": "now-1h", "endTime": "now", "filter": "k8sreason = "}))
            .err()
            .unwrap();
        assert_eq!(err.status()["details"]["causes"][0]["field"], "spec.filter");
        let spec = json!({"startTime": "now-1h", "endTime": "now", "limit": 2, "fieldSelector": "regarding.name=p"});
        let first = q(spec.clone()).unwrap();
        assert_eq!(first.fields.0[0].field, "involvedObject.name");
        let token = cursor(2, &first.fingerprint);
        let mut next = spec.clone();
        next["continue"] = token.clone().into();
        assert_eq!(q(next).unwrap().offset, 2);
        let mut other = spec;
        other["limit"] = 3.into();
        other["continue"] = token.into();
        assert!(q(other).is_err(), "a cursor of another query is refused");
    }

    #[test]
    fn the_filter_sees_the_event_as_a_cloudevent() {
        let core: Map<String, Value> = serde_json::from_value(json!({
            "metadata": {"name": "e1", "namespace": "prod", "uid": "u1"},
            "involvedObject": {"kind": "Pod", "namespace": "prod", "name": "web-1"},
            "reason": "BackOff", "type": "Warning", "count": 7,
            "source": {"component": "kubelet"},
            "lastTimestamp": convert::rfc3339_seconds(NOW - 60_000),
        }))
        .unwrap();
        let view = event_view(&core);
        assert_eq!(view.subject.as_deref(), Some("Pod/prod/web-1"));
        assert_eq!(view.extension("k8scount"), Some("7"));
        let query = EventQuery::parse(
            json!({"spec": {"startTime": "now-1h", "endTime": "now",
                "filter": "k8stype = 'Warning' AND k8sreason LIKE 'Back%' AND k8scount > 5"}})
            .to_string()
            .as_bytes(),
            NOW,
        )
        .unwrap();
        assert!(query.matches(&core));
        let narrowed = query.narrowing_fields();
        assert_eq!(narrowed.0.len(), 1, "only k8stype = 'Warning' can narrow");
        assert_eq!(
            (narrowed.0[0].field.as_str(), narrowed.0[0].value.as_str()),
            ("type", "Warning")
        );
        let mut normal = core.clone();
        normal.insert("type".into(), "Normal".into());
        assert!(!query.matches(&normal));
        let mut old = core;
        old.insert(
            "lastTimestamp".into(),
            convert::rfc3339_seconds(NOW - 7_200_000).into(),
        );
        assert!(!query.matches(&old), "outside the time range");
    }

    #[test]
    fn facets_count_and_order_by_count_then_value() {
        let query = FacetQuery::parse(
            json!({"spec": {"facets": [{"field": "reason", "limit": 2}, {"field": "regarding.kind"}]}})
                .to_string()
                .as_bytes(),
            NOW,
        )
        .unwrap();
        let events: Vec<Map<String, Value>> = ["A", "B", "B", "C", "C"]
            .iter()
            .map(|r| {
                serde_json::from_value(json!({"reason": r, "involvedObject": {"kind": "Pod"}}))
                    .unwrap()
            })
            .collect();
        let counted = count_facets(&query, events.iter());
        let answer = query.answer(counted);
        let facets = &answer["status"]["facets"];
        assert_eq!(
            facets[0]["values"],
            json!([{"value": "B", "count": 2}, {"value": "C", "count": 2}])
        );
        assert_eq!(facets[1]["values"], json!([{"value": "Pod", "count": 5}]));
        let bad = FacetQuery::parse(
            json!({"spec": {"facets": [{"field": "message"}]}})
                .to_string()
                .as_bytes(),
            NOW,
        );
        assert!(bad.is_err());
    }
}
