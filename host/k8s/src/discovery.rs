//! Discovery and OpenAPI documents: what `kubectl` reads before it talks about Events.
//! Served in the legacy (unaggregated) discovery format; the OpenAPI v3 documents declare
//! the `fieldValidation` parameter on PATCH, so `kubectl create` lets the server validate
//! strictly instead of validating against a schema itself.

use super::convert::ApiVersion;
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

/// `GET /api/v1`, `GET /apis/events.k8s.io/v1` and
/// `GET /apis/activity.miloapis.com/v1alpha1` (with Activity's create-only query
/// resources).
pub fn resource_list(group_version: &str) -> Value {
    let mut resources = vec![events_resource(group_version == "v1")];
    if group_version == ApiVersion::Activity.as_str() {
        for (name, singular, kind) in [
            ("eventqueries", "eventquery", "EventQuery"),
            ("eventfacetqueries", "eventfacetquery", "EventFacetQuery"),
        ] {
            resources.push(json!({
                "name": name, "singularName": singular, "namespaced": false,
                "kind": kind, "verbs": ["create"],
            }));
        }
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

/// The group and version of a named API (`events.k8s.io`, `v1`).
fn group_version(api: ApiVersion) -> (&'static str, &'static str) {
    api.as_str().split_once('/').unwrap_or(("", "v1"))
}

fn api_group(api: ApiVersion) -> Value {
    let (name, version) = group_version(api);
    let gv = json!({"groupVersion": api.as_str(), "version": version});
    json!({"name": name, "versions": [gv], "preferredVersion": gv})
}

/// `GET /apis`: events.k8s.io and Milo's activity.miloapis.com.
pub fn group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        api_group(ApiVersion::Events),
        api_group(ApiVersion::Activity),
    ]})
}

/// `GET /apis/<group>` of a named API.
pub fn group(api: ApiVersion) -> Value {
    let mut g = api_group(api);
    g["kind"] = "APIGroup".into();
    g["apiVersion"] = "v1".into();
    g
}

/// `GET /openapi/v3`: the index of group-version documents.
pub fn openapi_index() -> Value {
    json!({"paths": {
        "api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=weir1"},
        "apis/events.k8s.io/v1": {"serverRelativeURL": "/openapi/v3/apis/events.k8s.io/v1?hash=weir1"},
        "apis/activity.miloapis.com/v1alpha1": {"serverRelativeURL": "/openapi/v3/apis/activity.miloapis.com/v1alpha1?hash=weir1"},
    }})
}

fn reference_schema() -> Value {
    let s = json!({"type": "string"});
    json!({"type": "object", "properties": {
        "kind": s, "namespace": s, "name": s, "uid": s, "apiVersion": s, "resourceVersion": s, "fieldPath": s,
    }})
}

/// The Event schema of one API version.
fn event_schema(api: ApiVersion) -> Value {
    let core = api.shape() == ApiVersion::Core;
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
    let (group, version) = group_version(api);
    let props = if core {
        json!({
                "apiVersion": s, "kind": s, "metadata": meta,
                "involvedObject": reference_schema(), "reason": s, "message": s, "source": source,
                "firstTimestamp": time, "lastTimestamp": time, "count": {"type": "integer"},
                "type": s, "eventTime": time, "series": series, "action": s,
                "related": reference_schema(), "reportingComponent": s, "reportingInstance": s,
        })
    } else {
        json!({
                "apiVersion": s, "kind": s, "metadata": meta,
                "eventTime": time, "series": series, "reportingController": s, "reportingInstance": s,
                "action": s, "reason": s, "regarding": reference_schema(), "related": reference_schema(),
                "note": s, "type": s, "deprecatedSource": source, "deprecatedFirstTimestamp": time,
                "deprecatedLastTimestamp": time, "deprecatedCount": {"type": "integer"},
        })
    };
    json!({
        "type": "object",
        "properties": props,
        "x-kubernetes-group-version-kind": [{"group": group, "version": version, "kind": "Event"}],
    })
}

/// `GET /openapi/v3/api/v1`, `/openapi/v3/apis/events.k8s.io/v1` or
/// `/openapi/v3/apis/activity.miloapis.com/v1alpha1`.
pub fn openapi_document(api: ApiVersion) -> Value {
    let (prefix, schema_name) = match api {
        ApiVersion::Core => ("/api/v1".to_owned(), "io.k8s.api.core.v1.Event"),
        ApiVersion::Events => (
            "/apis/events.k8s.io/v1".to_owned(),
            "io.k8s.api.events.v1.Event",
        ),
        ApiVersion::Activity => (
            format!("/apis/{}", api.as_str()),
            "com.miloapis.activity.v1alpha1.Event",
        ),
    };
    let (group, version) = group_version(api);
    let gvk = json!({"group": group, "version": version, "kind": "Event"});
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
        "components": {"schemas": {schema_name: event_schema(api)}},
    })
}
