//! `kubectl get` tables: the columns a real apiserver prints for Events.

use serde_json::{json, Map, Value};

use super::convert::{parse_ms, str_at as s};

/// Whether an `Accept` header asks for a `meta.k8s.io` Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .any(|part| part.contains("as=Table") && part.contains("g=meta.k8s.io"))
}

/// The column definitions (priority 1 columns show with `-o wide`).
pub fn columns() -> Value {
    let col = |name: &str, ty: &str, format: &str, description: &str, priority: u8| json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority});
    json!([
        col(
            "Last Seen",
            "string",
            "",
            "Time when the event was last observed.",
            0
        ),
        col(
            "Type",
            "string",
            "",
            "Type of this event (Normal, Warning).",
            0
        ),
        col("Reason", "string", "", "Why the action was taken.", 0),
        col("Object", "string", "", "The object this event is about.", 0),
        col(
            "Subobject",
            "string",
            "",
            "The part of the object (fieldPath).",
            1
        ),
        col(
            "Source",
            "string",
            "",
            "The component reporting this event.",
            1
        ),
        col("Message", "string", "", "A human-readable description.", 0),
        col(
            "First Seen",
            "string",
            "",
            "Time when the event was first observed.",
            1
        ),
        col(
            "Count",
            "integer",
            "",
            "How many times this event occurred.",
            1
        ),
        col("Name", "string", "name", "The event's name.", 1),
    ])
}

/// A duration the way kubectl prints ages (`5s`, `3m`, `2h5m`, `4d`).
fn age(since_ms: i64, now_ms: i64) -> String {
    if since_ms <= 0 {
        return "<unknown>".into();
    }
    let s = ((now_ms - since_ms).max(0) / 1000) as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=599 => format!("{}m{}s", s / 60, s % 60).replace("m0s", "m"),
        600..=10_799 => format!("{}m", s / 60),
        10_800..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// One row for a stored (core/v1) event; `object` is what the row carries.
pub fn row(core: &Map<String, Value>, object: Value, now_ms: i64) -> Value {
    let first = match parse_ms(core.get("firstTimestamp")) {
        0 => parse_ms(core.get("eventTime")),
        t => t,
    };
    let mut last = match parse_ms(core.get("lastTimestamp")) {
        0 => first,
        t => t,
    };
    let mut count = core.get("count").and_then(Value::as_i64).unwrap_or(0);
    if let Some(series) = core.get("series").and_then(Value::as_object) {
        last = parse_ms(series.get("lastObservedTime")).max(last);
        count = series.get("count").and_then(Value::as_i64).unwrap_or(count);
    }
    let kind = s(core, &["involvedObject", "kind"]).to_lowercase();
    let name = s(core, &["involvedObject", "name"]);
    let target = if name.is_empty() {
        kind
    } else {
        format!("{kind}/{name}")
    };
    let mut source = s(core, &["source", "component"]).to_owned();
    if source.is_empty() {
        source = s(core, &["reportingComponent"]).to_owned();
    }
    let host = s(core, &["source", "host"]);
    if !host.is_empty() {
        source = format!("{source}, {host}");
    }
    let message = s(core, &["message"]).trim().to_owned();
    json!({
        "cells": [
            age(last, now_ms),
            s(core, &["type"]),
            s(core, &["reason"]),
            target,
            s(core, &["involvedObject", "fieldPath"]),
            source,
            message,
            age(first, now_ms),
            count.max(1),
            s(core, &["metadata", "name"]),
        ],
        "object": object,
    })
}

/// The row's embedded object: by default the metadata only (`PartialObjectMetadata`).
pub fn row_object(core: &Map<String, Value>, full: Value, include: &str) -> Value {
    match include {
        "Object" => full,
        "None" => Value::Null,
        _ => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": core.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    }
}

/// A whole table.
pub fn table(rows: Vec<Value>, resource_version: u64, cont: &str, with_columns: bool) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string(), "continue": cont},
        "columnDefinitions": if with_columns { columns() } else { json!([]) },
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_follow_the_apiserver_cell_rules() {
        let core = json!({
            "metadata": {"name": "e1"},
            "involvedObject": {"kind": "Pod", "name": "web"},
            "reason": "Pulled", "type": "Normal", "message": " done \n",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2026-11-22T04:00:00Z", "lastTimestamp": "2026-11-22T04:01:00Z",
            "count": 0,
        });
        let now = parse_ms(Some(&json!("2026-11-22T04:02:00Z")));
        let r = row(core.as_object().expect("object"), Value::Null, now);
        let cells = r["cells"].as_array().expect("cells");
        assert_eq!(cells[0], "60s");
        assert_eq!(cells[3], "pod/web");
        assert_eq!(cells[5], "kubelet, n1");
        assert_eq!(cells[6], "done");
        assert_eq!(cells[7], "2m");
        assert_eq!(cells[8], 1, "count 0 shows as 1");
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
        assert_eq!(age(0, 5), "<unknown>");
        assert_eq!(age(1, 1 + 7_200_000), "120m");
        assert_eq!(age(1, 1 + 200_000_000), "2d");
    }
}
