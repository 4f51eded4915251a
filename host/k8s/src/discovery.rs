//! Discovery and OpenAPI documents: what `kubectl` reads before it talks about Events.
//! Served in the legacy (unaggregated) discovery format; the OpenAPI v3 documents declare
//! the `fieldValidation` parameter on PATCH, so `kubectl create` lets the server validate
//! strictly instead of validating against a schema itself.

use serde_json::{json, Value};

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": format!("v1.32.0+weir-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "2026-11-22T00:00:00Z",
        "goVersion": "n/a (weir is written in Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// `GET /api`.
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

fn events_resource(short_names: bool) -> Value {
    let mut r = json!({
        "name": "events",
        "singularName": "event",
        "namespaced": true,
        "kind": "Event",
        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
    });
    // As on a real apiserver, only core/v1 has the short name `ev`.
    if short_names {
        r["shortNames"] = json!(["ev"]);
    }
    r
}

/// `GET /api/v1` and `GET /apis/events.k8s.io/v1`.
pub fn resource_list(group_version: &str) -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [events_resource(group_version == "v1")],
    })
}

fn events_group() -> Value {
    json!({
        "name": "events.k8s.io",
        "versions": [{"groupVersion": "events.k8s.io/v1", "version": "v1"}],
        "preferredVersion": {"groupVersion": "events.k8s.io/v1", "version": "v1"},
    })
}

/// `GET /apis`.
pub fn group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [events_group()]})
}

/// `GET /apis/events.k8s.io`.
pub fn group() -> Value {
    let mut g = events_group();
    g["kind"] = "APIGroup".into();
    g["apiVersion"] = "v1".into();
    g
}

/// `GET /openapi/v3`: the index of group-version documents.
pub fn openapi_index() -> Value {
    json!({"paths": {
        "api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=weir1"},
        "apis/events.k8s.io/v1": {"serverRelativeURL": "/openapi/v3/apis/events.k8s.io/v1?hash=weir1"},
    }})
}

fn reference_schema() -> Value {
    let s = json!({"type": "string"});
    json!({"type": "object", "properties": {
        "kind": s, "namespace": s, "name": s, "uid": s, "apiVersion": s, "resourceVersion": s, "fieldPath": s,
    }})
}

/// The Event schema of one API version.
fn event_schema(core: bool) -> Value {
    let s = json!({"type": "string"});
    let time = json!({"type": "string", "format": "date-time"});
    let series = json!({"type": "object", "properties": {"count": {"type": "integer"}, "lastObservedTime": time}});
    let source = json!({"type": "object", "properties": {"component": s, "host": s}});
    let meta = json!({"type": "object", "properties": {
        "name": s, "generateName": s, "namespace": s, "uid": s, "resourceVersion": s,
        "creationTimestamp": time,
        "labels": {"type": "object", "additionalProperties": s},
        "annotations": {"type": "object", "additionalProperties": s},
    }});
    let (group, version, props) = if core {
        (
            "",
            "v1",
            json!({
                "apiVersion": s, "kind": s, "metadata": meta,
                "involvedObject": reference_schema(), "reason": s, "message": s, "source": source,
                "firstTimestamp": time, "lastTimestamp": time, "count": {"type": "integer"},
                "type": s, "eventTime": time, "series": series, "action": s,
                "related": reference_schema(), "reportingComponent": s, "reportingInstance": s,
            }),
        )
    } else {
        (
            "events.k8s.io",
            "v1",
            json!({
                "apiVersion": s, "kind": s, "metadata": meta,
                "eventTime": time, "series": series, "reportingController": s, "reportingInstance": s,
                "action": s, "reason": s, "regarding": reference_schema(), "related": reference_schema(),
                "note": s, "type": s, "deprecatedSource": source, "deprecatedFirstTimestamp": time,
                "deprecatedLastTimestamp": time, "deprecatedCount": {"type": "integer"},
            }),
        )
    };
    json!({
        "type": "object",
        "properties": props,
        "x-kubernetes-group-version-kind": [{"group": group, "version": version, "kind": "Event"}],
    })
}

/// `GET /openapi/v3/api/v1` (`core`) or `/openapi/v3/apis/events.k8s.io/v1`.
pub fn openapi_document(core: bool) -> Value {
    let (prefix, schema_name, group) = if core {
        ("/api/v1", "io.k8s.api.core.v1.Event", "")
    } else {
        (
            "/apis/events.k8s.io/v1",
            "io.k8s.api.events.v1.Event",
            "events.k8s.io",
        )
    };
    let gvk = json!({"group": group, "version": "v1", "kind": "Event"});
    let body = json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema_name}")}}}});
    let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}, "uniqueItems": true});
    let params = json!([
        query("dryRun"),
        query("fieldManager"),
        query("fieldValidation")
    ]);
    let op = |action: &str, with_body: bool| {
        let mut o = json!({
            "operationId": format!("{action}NamespacedEvent"),
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema_name}")}}}}},
        });
        if with_body {
            o["requestBody"] = body.clone();
            o["parameters"] = params.clone();
        }
        o
    };
    let mut patch = op("patch", true);
    patch["requestBody"] = json!({"content": {
        "application/merge-patch+json": {"schema": {"type": "object"}},
        "application/strategic-merge-patch+json": {"schema": {"type": "object"}},
    }});
    json!({
        "openapi": "3.0.0",
        "info": {"title": "weir Events API", "version": env!("CARGO_PKG_VERSION")},
        "paths": {
            format!("{prefix}/namespaces/{{namespace}}/events"): {
                "get": op("list", false),
                "post": op("post", true),
                "delete": op("deletecollection", false),
            },
            format!("{prefix}/namespaces/{{namespace}}/events/{{name}}"): {
                "get": op("get", false),
                "put": op("put", true),
                "patch": patch,
                "delete": op("delete", false),
            },
        },
        "components": {"schemas": {schema_name: event_schema(core)}},
    })
}
