//! End to end over HTTP with the real `weir` binary and the real example filters.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

fn pipeline_config() -> String {
    format!(
        "filters:\n{}{}{}\
sinks:\n  out: {{ type: file, path: out.jsonl }}\n\
routes:\n  - name: main\n    filters: [scope-inject, severity, redact]\n    to: [out, tail]\n",
        filter_yaml("scope-inject", wasm::SCOPE_INJECT, "{}"),
        filter_yaml("severity", wasm::SEVERITY, "{ min: warning }"),
        filter_yaml("redact", wasm::REDACT, "{}"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn all_three_http_modes_are_filtered_scoped_and_redacted() {
    let weir = Weir::start(&pipeline_config());
    let url = format!("{}/v1/events", weir.url);

    // Binary mode: attributes in ce- headers, data in the body.
    let binary = |id: &'static str, severity: &'static str, body: &'static str| {
        let url = url.clone();
        async move {
            post(
                &url,
                &[
                    ("ce-specversion", "1.0"),
                    ("ce-id", id),
                    ("ce-source", "/tests/binary"),
                    ("ce-type", "com.example.login"),
                    ("ce-severity", severity),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await
        }
    };
    let (status, answer) = binary("b1", "info", r#"{"user":"ann"}"#).await;
    assert_eq!(
        (status, answer["dropped"].as_u64()),
        (202, Some(1)),
        "{answer}"
    );
    let (status, answer) = binary("b2", "error", r#"{"user":"bob","password":"hunter2"}"#).await;
    assert_eq!(
        (status, answer["delivered"].as_u64()),
        (202, Some(1)),
        "{answer}"
    );

    // Structured mode: a Kubernetes Event whose client tried to claim a scope.
    let tampered = event(
        "s1",
        "io.k8s.event",
        json!({
            "datacontenttype": "application/json",
            "data": {
                "metadata": {"name": "pod-a.1", "namespace": "default", "annotations": {
                    "platform.miloapis.com/scope.type": "Organization",
                    "platform.miloapis.com/scope.name": "someone-else",
                    "team": "blue"
                }},
                "type": "Warning", "reason": "BackOff"
            }
        }),
    );
    let normal = event(
        "s2",
        "io.k8s.event",
        json!({"data": {"metadata": {"name": "pod-b.1"}, "type": "Normal", "reason": "Pulled"}}),
    );
    for e in [&tampered, &normal] {
        let (status, answer) = post(
            &url,
            &[(
                "content-type",
                "application/cloudevents+json; charset=utf-8",
            )],
            e.to_string(),
        )
        .await;
        assert_eq!(status, 202, "{answer}");
    }

    // Batch mode.
    let batch = json!([
        event(
            "c1",
            "com.example.deploy",
            json!({"severity": "critical", "data": {"token": "t0k", "nested": [{"apiKey": "k"}], "ok": true}})
        ),
        event(
            "c2",
            "com.example.deploy",
            json!({"severity": "debug", "data": {"token": "t"}})
        ),
    ]);
    let (status, answer) = post(
        &url,
        &[("content-type", "application/cloudevents-batch+json")],
        batch.to_string(),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 2);
    assert_eq!(
        (answer["delivered"].as_u64(), answer["dropped"].as_u64()),
        (Some(1), Some(1))
    );

    let out = weir.jsonl("out.jsonl");
    let ids: Vec<&str> = out.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["b2", "s1", "c1"],
        "exactly the expected events, in order"
    );

    let b2 = &out[0];
    assert_eq!(b2["data"], json!({"user": "bob", "password": "***"}));
    assert_eq!(b2["source"], "/tests/binary");
    assert_eq!(b2["severity"], "error");

    let s1 = &out[1];
    let annotations = &s1["data"]["metadata"]["annotations"];
    assert!(
        annotations
            .get("platform.miloapis.com/scope.type")
            .is_none(),
        "{s1}"
    );
    assert!(
        annotations
            .get("platform.miloapis.com/scope.name")
            .is_none(),
        "{s1}"
    );
    assert_eq!(annotations["team"], "blue");

    let c1 = &out[2];
    assert_eq!(
        c1["data"],
        json!({"token": "***", "nested": [{"apiKey": "***"}], "ok": true})
    );

    let (_, metrics) = get_text(&format!("{}/metrics", weir.url)).await;
    assert_eq!(
        metric(&metrics, "weir_events_received_total{source=\"http\"}"),
        Some(6.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "weir_route_events_total{outcome=\"delivered\",route=\"main\"}"
        ),
        Some(3.0),
        "{metrics}"
    );
}

/// (name, headers, body, status, error code, text the reason must contain)
type Case<'a> = (
    &'a str,
    Vec<(&'a str, &'a str)>,
    String,
    u16,
    &'a str,
    &'a str,
);

#[tokio::test(flavor = "multi_thread")]
async fn malformed_input_gets_the_documented_status_and_reason() {
    let config = format!(
        "ingest:\n  max_event_bytes: 2048\n  max_request_bytes: 65536\n{}",
        pipeline_config()
    );
    let weir = Weir::start(&config);
    let url = format!("{}/v1/events", weir.url);
    let structured = [("content-type", "application/cloudevents+json")];
    let big = "x".repeat(4096);
    let huge = "y".repeat(70_000);
    let cases: Vec<Case<'_>> = vec![
        (
            "bad JSON",
            structured.to_vec(),
            "{\"specversion\": ".into(),
            400,
            "malformed_event",
            "invalid JSON",
        ),
        (
            "missing id",
            structured.to_vec(),
            event("x", "t", json!({}))
                .to_string()
                .replace("\"id\":\"x\",", ""),
            400,
            "malformed_event",
            "`id`",
        ),
        (
            "wrong specversion",
            structured.to_vec(),
            event("x", "t", json!({"specversion": "0.3"})).to_string(),
            400,
            "malformed_event",
            "specversion `0.3`",
        ),
        (
            "bad extension name",
            structured.to_vec(),
            event("x", "t", json!({"Bad_Name": "v"})).to_string(),
            400,
            "malformed_event",
            "Bad_Name",
        ),
        (
            "bad time",
            structured.to_vec(),
            event("x", "t", json!({"time": "yesterday"})).to_string(),
            400,
            "malformed_event",
            "RFC 3339",
        ),
        (
            "binary without type",
            vec![
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
            ],
            "{}".into(),
            400,
            "malformed_event",
            "`type`",
        ),
        (
            "oversized event",
            structured.to_vec(),
            event("x", "t", json!({"data": {"blob": big}})).to_string(),
            413,
            "event_too_large",
            "limit is 2048 bytes",
        ),
        (
            "oversized request",
            structured.to_vec(),
            huge,
            413,
            "request_too_large",
            "65536",
        ),
        (
            "unknown content type",
            vec![("content-type", "text/csv")],
            "a,b".into(),
            415,
            "unsupported_media_type",
            "text/csv",
        ),
        (
            "unsupported format",
            vec![("content-type", "application/cloudevents+avro")],
            "x".into(),
            415,
            "unsupported_media_type",
            "cloudevents+avro",
        ),
        (
            "bad event in batch",
            vec![("content-type", "application/cloudevents-batch+json")],
            json!([event("ok", "t", json!({})), {"id": "nope"}]).to_string(),
            400,
            "malformed_event",
            "event 1 of the batch",
        ),
    ];
    for (name, headers, body, status, code, reason) in cases {
        let (got, answer) = post(&url, &headers, body).await;
        assert_eq!(got, status, "{name}: {answer}");
        assert_eq!(answer["error"], code, "{name}: {answer}");
        let text = answer["reason"].as_str().unwrap_or_default();
        assert!(
            text.contains(reason),
            "{name}: reason `{text}` should mention `{reason}`"
        );
    }
    // Nothing was disturbed: a valid event still flows, and only it arrived.
    let (status, _) = post(
        &url,
        &structured,
        event("fine", "t", json!({"severity": "error"})).to_string(),
    )
    .await;
    assert_eq!(status, 202);
    let ids: Vec<Value> = weir
        .jsonl("out.jsonl")
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(ids, [json!("fine")]);
    let (_, metrics) = get_text(&format!("{}/metrics", weir.url)).await;
    assert_eq!(
        metric(
            &metrics,
            "weir_events_rejected_total{reason=\"malformed_event\",source=\"http\"}"
        ),
        Some(7.0),
        "{metrics}"
    );
    // Each rejection is logged with its reason, but a storm of them is not a storm of
    // lines: seven malformed events, one line for them (within the 10 s window).
    let rejected = |reason: &str| {
        weir.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("rejected:") && l.contains(&format!("reason=\"{reason}\"")))
            .count()
    };
    assert_eq!(
        rejected("malformed_event"),
        1,
        "{:#?}",
        weir.logs.lock().unwrap()
    );
    assert_eq!(rejected("unsupported_media_type"), 1);
    assert_eq!(rejected("too_large"), 1, "two oversized requests, one line");
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_come_from_source_mapping_then_extension_then_header() {
    let config = format!(
        "tenants:\n  acme: {{}}\n  globex: {{}}\n\
tenancy:\n  sources:\n    - {{ prefix: /clusters/acme/, tenant: acme }}\n  header: x-weir-tenant\n\
filters:\n{}{}{}\
sinks:\n  out: {{ type: file, path: out.jsonl }}\n\
routes:\n  - name: main\n    filters: [s-default]\n    tenants:\n      acme: {{ filters: [s-acme] }}\n      globex: {{ filters: [s-globex] }}\n    to: [out]\n",
        filter_yaml("s-default", wasm::STAMP, "{ stamp: d }"),
        filter_yaml("s-acme", wasm::STAMP, "{ stamp: a }"),
        filter_yaml("s-globex", wasm::STAMP, "{ stamp: g }"),
    );
    let weir = Weir::start(&config);
    let url = format!("{}/v1/events", weir.url);
    let mut mapped = event("mapped", "t", json!({"tenant": "globex"}));
    mapped["source"] = json!("/clusters/acme/ns/default");
    let batch = json!([
        mapped,
        event("extension", "t", json!({"tenant": "globex"})),
        event("unknown", "t", json!({"tenant": "initech"})),
    ]);
    let (status, _) = post(
        &url,
        &[("content-type", "application/cloudevents-batch+json")],
        batch.to_string(),
    )
    .await;
    assert_eq!(status, 202);
    let (status, _) = post(
        &url,
        &[
            ("content-type", "application/cloudevents+json"),
            ("x-weir-tenant", "acme"),
        ],
        event("header", "t", json!({})).to_string(),
    )
    .await;
    assert_eq!(status, 202);
    let stamps: std::collections::BTreeMap<String, String> = weir
        .jsonl("out.jsonl")
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["stamps"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        stamps["mapped"], "a",
        "the source mapping wins over the extension"
    );
    assert_eq!(stamps["extension"], "g");
    assert_eq!(
        stamps["unknown"], "d",
        "unknown tenants fall back to default"
    );
    assert_eq!(stamps["header"], "a");
}

#[tokio::test(flavor = "multi_thread")]
async fn route_conditions_select_events_natively_before_any_filter() {
    let config = [
        "sinks:",
        "  warn-out: { type: file, path: warn.jsonl }",
        "  k8s-out: { type: file, path: k8s.jsonl }",
        "routes:",
        "  - name: warnings",
        "    when:",
        "      - cesql: \"severity IN ('warning', 'error') AND NOT (source LIKE '/test/%')\"",
        "    to: [warn-out]",
        "  - name: kube",
        "    when:",
        "      - prefix: { type: io.k8s. }",
        "      - not: { exact: { reason: Pulled } }",
        "    to: [k8s-out]",
    ]
    .join("\n");
    let weir = Weir::start(&config);
    let mut k8s_warning = event(
        "k1",
        "io.k8s.event",
        json!({"severity": "warning", "reason": "BackOff"}),
    );
    k8s_warning["source"] = json!("/clusters/a");
    let mut pulled = event("k2", "io.k8s.event", json!({"reason": "Pulled"}));
    pulled["source"] = json!("/clusters/a");
    let mut app_error = event("a1", "com.example.app", json!({"severity": "error"}));
    app_error["source"] = json!("/apps/shop");
    let mut test_error = event("t1", "com.example.app", json!({"severity": "error"}));
    test_error["source"] = json!("/test/x");
    let batch = json!([k8s_warning, pulled, app_error, test_error]);
    let (status, answer) = post_batch(&weir.url, &batch).await;
    assert_eq!(status, 202, "{answer}");
    // 4 events x 2 routes: warnings takes k1 and a1, kube takes k1.
    assert_eq!(
        (answer["delivered"].as_u64(), answer["skipped"].as_u64()),
        (Some(3), Some(5)),
        "{answer}"
    );
    let ids = |file: &str| -> Vec<String> {
        weir.jsonl(file)
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids("warn.jsonl"), ["k1", "a1"]);
    assert_eq!(ids("k8s.jsonl"), ["k1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_over_its_events_per_second_limit_gets_429_and_others_do_not() {
    let config = "tenants:\n  small:\n    limits: { events_per_sec: 5 }\n  big: {}\n\
sinks:\n  out: { type: file, path: out.jsonl }\nroutes:\n  - { name: main, to: [out] }\n";
    let weir = Weir::start(config);
    let url = format!("{}/v1/events", weir.url);
    let batch = |tenant: &str, n: usize, tag: &str| {
        json!((0..n)
            .map(|i| event(&format!("{tag}{i}"), "t", json!({"tenant": tenant})))
            .collect::<Vec<_>>())
        .to_string()
    };
    let headers = [("content-type", "application/cloudevents-batch+json")];
    let (status, answer) = post(&url, &headers, batch("small", 5, "a")).await;
    assert_eq!(status, 202, "{answer}");
    let client = reqwest::Client::new();
    let resp = client
        .post(&url)
        .header("content-type", "application/cloudevents-batch+json")
        .body(batch("small", 3, "b"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().get("retry-after").is_some());
    let answer: Value = resp.json().await.unwrap();
    assert!(
        answer["reason"].as_str().unwrap().contains("5 events/s"),
        "{answer}"
    );
    let (status, _) = post(&url, &headers, batch("big", 50, "c")).await;
    assert_eq!(status, 202, "other tenants are not limited");
    assert_eq!(
        weir.jsonl("out.jsonl").len(),
        55,
        "the refused request took nothing"
    );
    let (status, answer) = post(
        &format!("{}/v1/routes/nope/events", weir.url),
        &headers,
        batch("big", 1, "d"),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("unknown_route"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_tail_ends_at_shutdown_and_does_not_hold_it_up() {
    let weir = Weir::start("routes:\n  - { name: r, to: [tail] }\n");
    let mut tail = reqwest::Client::new()
        .get(format!("{}/v1/tail", weir.url))
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), 200);
    let (status, _) = post_batch(
        &weir.url,
        &serde_json::json!([event("t-1", "demo", serde_json::json!({}))]),
    )
    .await;
    assert!(status < 300);
    let line = tokio::time::timeout(std::time::Duration::from_secs(10), tail.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&line).contains("t-1"));
    // SIGTERM with the tail still open: weir stops (before, it waited for the tail's
    // client forever), and the tail's stream ends cleanly.
    let started = std::time::Instant::now();
    let (clean, _dir) = tokio::task::spawn_blocking(move || weir.terminate())
        .await
        .unwrap();
    assert!(clean, "weir did not stop cleanly");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let rest = tokio::time::timeout(std::time::Duration::from_secs(5), tail.chunk())
        .await
        .expect("the stream ended");
    assert!(matches!(rest, Ok(None) | Err(_)), "{rest:?}");
}
