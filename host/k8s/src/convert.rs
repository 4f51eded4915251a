//! Event objects: the stored form is the core/v1 JSON object; events.k8s.io/v1 is a view
//! converted field by field. Also: the fields selectors read, strict unknown-field checks,
//! and the defaults the apiserver fills in on create.

use serde_json::{Map, Value};

/// Which Events API a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// `v1` (core).
    Core,
    /// `events.k8s.io/v1`.
    Events,
    /// `activity.miloapis.com/v1alpha1`: Milo's Activity provider API, core/v1 Event
    /// objects under that group and version.
    Activity,
}

impl ApiVersion {
    /// The `apiVersion` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::Core => "v1",
            ApiVersion::Events => "events.k8s.io/v1",
            ApiVersion::Activity => ACTIVITY,
        }
    }

    /// The object layout: core/v1 or events.k8s.io/v1 (Activity serves core/v1 objects).
    pub fn shape(self) -> ApiVersion {
        match self {
            ApiVersion::Activity => ApiVersion::Core,
            other => other,
        }
    }
}

/// The Activity API's group and version.
pub const ACTIVITY: &str = "activity.miloapis.com/v1alpha1";

/// core/v1 field ⇄ events.k8s.io/v1 field, for the fields whose names differ.
const RENAMES: [(&str, &str); 7] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

const CORE_TOP: [&str; 17] = [
    "apiVersion",
    "kind",
    "metadata",
    "involvedObject",
    "reason",
    "message",
    "source",
    "firstTimestamp",
    "lastTimestamp",
    "count",
    "type",
    "eventTime",
    "series",
    "action",
    "related",
    "reportingComponent",
    "reportingInstance",
];

const EVENTS_TOP: [&str; 17] = [
    "apiVersion",
    "kind",
    "metadata",
    "eventTime",
    "series",
    "reportingController",
    "reportingInstance",
    "action",
    "reason",
    "regarding",
    "related",
    "note",
    "type",
    "deprecatedSource",
    "deprecatedFirstTimestamp",
    "deprecatedLastTimestamp",
    "deprecatedCount",
];

const META: [&str; 15] = [
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

const OBJECT_REFERENCE: [&str; 7] = [
    "kind",
    "namespace",
    "name",
    "uid",
    "apiVersion",
    "resourceVersion",
    "fieldPath",
];

/// The fields of a stored (core/v1) event as `api` names them, without `kind` and
/// `apiVersion`; events.k8s.io omits what core always prints empty.
fn version_fields(
    core: &Map<String, Value>,
    api: ApiVersion,
) -> impl Iterator<Item = (&str, &Value)> {
    core.iter().filter_map(move |(k, v)| {
        if k == "kind" || k == "apiVersion" {
            return None;
        }
        match api.shape() {
            ApiVersion::Core | ApiVersion::Activity => Some((k.as_str(), v)),
            ApiVersion::Events => {
                let empty = match v {
                    Value::Null => true,
                    Value::String(s) => s.is_empty(),
                    Value::Object(o) => o.is_empty(),
                    _ => false,
                };
                let name = RENAMES
                    .iter()
                    .find(|(c, _)| c == k)
                    .map_or(k.as_str(), |(_, e)| e);
                (!empty).then_some((name, v))
            }
        }
    })
}

/// Converts a stored (core/v1) event to the requested version, with `kind`/`apiVersion`.
pub fn to_version(core: &Map<String, Value>, api: ApiVersion) -> Map<String, Value> {
    let mut out = Map::with_capacity(core.len() + 2);
    out.insert("kind".into(), "Event".into());
    out.insert("apiVersion".into(), api.as_str().into());
    for (name, v) in version_fields(core, api) {
        out.insert(name.to_owned(), v.clone());
    }
    out
}

/// A stored event as `api` shows it, serialized without copying it first.
pub struct Versioned<'a>(pub &'a Map<String, Value>, pub ApiVersion);

impl serde::Serialize for Versioned<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Versioned(core, api) = *self;
        let mut map = ser.serialize_map(None)?;
        map.serialize_entry("kind", "Event")?;
        map.serialize_entry("apiVersion", api.as_str())?;
        for (name, v) in version_fields(core, api) {
            map.serialize_entry(name, v)?;
        }
        map.end()
    }
}

/// Converts a request body of `api` to the stored core/v1 form (without kind/apiVersion).
pub fn to_core(obj: Map<String, Value>, api: ApiVersion) -> Map<String, Value> {
    let mut out = Map::with_capacity(obj.len() + 3);
    for (k, v) in obj {
        if k == "kind" || k == "apiVersion" {
            continue;
        }
        let name = match api.shape() {
            ApiVersion::Core | ApiVersion::Activity => k,
            ApiVersion::Events => RENAMES
                .iter()
                .find(|(_, e)| *e == k)
                .map_or(k, |(c, _)| (*c).to_owned()),
        };
        out.insert(name, v);
    }
    // Always present in core/v1 JSON.
    out.entry("involvedObject")
        .or_insert_with(|| Value::Object(Map::new()));
    out.entry("reportingComponent").or_insert_with(|| "".into());
    out.entry("reportingInstance").or_insert_with(|| "".into());
    out
}

/// Fields of `obj` (a request body of `api`) that the schema does not know, as paths.
pub fn unknown_fields(obj: &Map<String, Value>, api: ApiVersion) -> Vec<String> {
    let top: &[&str] = match api.shape() {
        ApiVersion::Core | ApiVersion::Activity => &CORE_TOP,
        ApiVersion::Events => &EVENTS_TOP,
    };
    let mut unknown: Vec<String> = obj
        .keys()
        .filter(|k| !top.contains(&k.as_str()))
        .cloned()
        .collect();
    let mut check = |prefix: &str, value: Option<&Value>, known: &[&str]| {
        if let Some(Value::Object(m)) = value {
            for k in m.keys() {
                if !known.contains(&k.as_str()) {
                    unknown.push(format!("{prefix}{k}"));
                }
            }
        }
    };
    check("metadata.", obj.get("metadata"), &META);
    let reference = if api == ApiVersion::Core {
        "involvedObject"
    } else {
        "regarding"
    };
    check(
        &format!("{reference}."),
        obj.get(reference),
        &OBJECT_REFERENCE,
    );
    check("related.", obj.get("related"), &OBJECT_REFERENCE);
    let source = if api == ApiVersion::Core {
        "source"
    } else {
        "deprecatedSource"
    };
    check(
        &format!("{source}."),
        obj.get(source),
        &["component", "host"],
    );
    check(
        "series.",
        obj.get("series"),
        &["count", "lastObservedTime", "state"],
    );
    unknown
}

/// The string at `path` in nested objects (empty when absent or not a string).
pub fn str_at<'a>(obj: &'a Map<String, Value>, path: &[&str]) -> &'a str {
    let mut cur = obj;
    for (i, key) in path.iter().enumerate() {
        match cur.get(*key) {
            Some(Value::Object(m)) if i + 1 < path.len() => cur = m,
            Some(Value::String(s)) if i + 1 == path.len() => return s,
            _ => return "",
        }
    }
    ""
}

/// The value of a core/v1 field label (for field selectors), borrowed from the event.
pub fn field<'a>(core: &'a Map<String, Value>, label: &str) -> &'a str {
    match label.split_once('.') {
        None if label == "source" => {
            let component = str_at(core, &["source", "component"]);
            if component.is_empty() {
                str_at(core, &["reportingComponent"])
            } else {
                component
            }
        }
        None => str_at(core, &[label]),
        Some((head, rest)) => str_at(core, &[head, rest]),
    }
}

/// The metadata object of an event (empty when missing).
pub fn metadata(obj: &Map<String, Value>) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

/// A string in `metadata`.
pub fn meta_str<'a>(obj: &'a Map<String, Value>, key: &str) -> &'a str {
    metadata(obj)
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// One annotation's value.
pub fn annotation<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    metadata(obj)?
        .get("annotations")?
        .as_object()?
        .get(key)?
        .as_str()
}

/// One label's value.
pub fn label<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    metadata(obj)?
        .get("labels")?
        .as_object()?
        .get(key)?
        .as_str()
}

/// Now, in ms since the epoch.
pub fn now_ms() -> i64 {
    weir_core::util::now_ms() as i64
}

/// RFC 3339 seconds, as Kubernetes `Time` is written.
pub fn rfc3339_seconds(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Milliseconds of an RFC 3339 time (0 when absent or unparsable).
pub fn parse_ms(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map_or(0, |t| t.timestamp_millis())
}

/// Validates a request body of `api`: right kind and apiVersion, and the
/// events.k8s.io/v1 create rules. Returns `(field, message)` of the first problem.
pub fn validate(obj: &Map<String, Value>, api: ApiVersion) -> Result<(), (String, String)> {
    match obj.get("kind").and_then(Value::as_str) {
        Some("Event") | None => {}
        Some(other) => return Err(("kind".into(), format!("kind `{other}` is not Event"))),
    }
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != api.as_str() => {
            return Err((
                "apiVersion".into(),
                format!(
                    "apiVersion `{v}` does not match this endpoint ({})",
                    api.as_str()
                ),
            ))
        }
        _ => {}
    }
    if !matches!(obj.get("metadata"), Some(Value::Object(_)) | None) {
        return Err(("metadata".into(), "must be an object".into()));
    }
    if let Some(t) = obj.get("type").and_then(Value::as_str) {
        if api == ApiVersion::Events && t != "Normal" && t != "Warning" {
            return Err((
                "type".into(),
                format!("Unsupported value: \"{t}\": supported values: \"Normal\", \"Warning\""),
            ));
        }
    }
    if api == ApiVersion::Events && obj.get("eventTime").is_none_or(Value::is_null) {
        return Err(("eventTime".into(), "Required value".into()));
    }
    for (k, max) in [
        ("reason", 128),
        ("action", 128),
        ("note", 1024),
        ("message", 1024),
    ] {
        if obj
            .get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| s.len() > max)
        {
            return Err((
                k.into(),
                format!("Too long: may not be more than {max} bytes"),
            ));
        }
    }
    for path in ATTRIBUTE_FIELDS {
        let mut at = Some(obj);
        let mut value = None;
        for (i, key) in path.iter().enumerate() {
            let Some(map) = at else { break };
            match map.get(*key) {
                Some(Value::Object(inner)) if i + 1 < path.len() => at = Some(inner),
                Some(Value::String(s)) if i + 1 == path.len() => value = Some(s),
                _ => at = None,
            }
        }
        if value.is_some_and(|s| s.chars().any(char::is_control)) {
            return Err((
                path.join("."),
                "Invalid value: may not contain control characters".into(),
            ));
        }
    }
    Ok(())
}

/// The fields (of either API version) that become a CloudEvent's attributes (`subject`,
/// the `k8s*` extensions) or label values: no control characters in them, as a
/// CloudEvent attribute may hold none. Free text (`message`, `note`) may hold newlines.
const ATTRIBUTE_FIELDS: &[&[&str]] = &[
    &["involvedObject", "kind"],
    &["involvedObject", "namespace"],
    &["involvedObject", "name"],
    &["involvedObject", "apiVersion"],
    &["involvedObject", "fieldPath"],
    &["involvedObject", "uid"],
    &["regarding", "kind"],
    &["regarding", "namespace"],
    &["regarding", "name"],
    &["regarding", "apiVersion"],
    &["regarding", "fieldPath"],
    &["regarding", "uid"],
    &["related", "kind"],
    &["related", "namespace"],
    &["related", "name"],
    &["reason"],
    &["type"],
    &["action"],
    &["source", "component"],
    &["source", "host"],
    &["deprecatedSource", "component"],
    &["deprecatedSource", "host"],
    &["reportingComponent"],
    &["reportingController"],
    &["reportingInstance"],
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_versions_see_the_same_event_field_by_field() {
        let events = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e1", "namespace": "ns"},
            "regarding": {"kind": "Pod", "name": "web-1", "namespace": "ns"},
            "note": "pulled", "reason": "Pulled", "type": "Normal",
            "reportingController": "kubelet", "reportingInstance": "node-1",
            "eventTime": "2026-11-22T04:00:00.000000Z", "action": "Pull",
            "deprecatedCount": 3,
        });
        let core = to_core(
            events.as_object().expect("object").clone(),
            ApiVersion::Events,
        );
        assert_eq!(core["involvedObject"]["name"], "web-1");
        assert_eq!(core["message"], "pulled");
        assert_eq!(core["reportingComponent"], "kubelet");
        assert_eq!(core["count"], 3);
        let back = to_version(&core, ApiVersion::Events);
        assert_eq!(Value::Object(back.clone()), events);
        let streamed = serde_json::to_value(Versioned(&core, ApiVersion::Events)).expect("json");
        assert_eq!(streamed, Value::Object(back));
        let as_core = to_version(&core, ApiVersion::Core);
        assert_eq!(as_core["apiVersion"], "v1");
        assert_eq!(field(&core, "involvedObject.kind"), "Pod");
        assert_eq!(
            field(&core, "source"),
            "kubelet",
            "falls back to reportingComponent"
        );
    }

    #[test]
    fn strict_checks_and_validation_say_which_field() {
        let obj = json!({"metadata": {"name": "x", "nmae": 1}, "reson": "a", "involvedObject": {"knd": "Pod"}});
        let unknown = unknown_fields(obj.as_object().expect("object"), ApiVersion::Core);
        assert_eq!(
            unknown,
            vec!["reson", "metadata.nmae", "involvedObject.knd"]
        );
        let wrong = json!({"kind": "Pod"});
        assert_eq!(
            validate(wrong.as_object().expect("object"), ApiVersion::Core)
                .expect_err("wrong kind")
                .0,
            "kind"
        );
        let no_time = json!({"type": "Normal"});
        assert_eq!(
            validate(no_time.as_object().expect("object"), ApiVersion::Events)
                .expect_err("eventTime")
                .0,
            "eventTime"
        );
    }
}
