//! Stateful filters on the host's durable per-tenant state: dedup survives a filter
//! version swap and a router restart; rate-limit routes over-limit events to a sink.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

fn config() -> String {
    format!(
        "filters:\n{}{}\
sinks:\n  out: {{ type: file, path: out.jsonl }}\n  slow: {{ type: file, path: slow.jsonl }}\n\
routes:\n  - name: dedup\n    filters: [dedup]\n    to: [out]\n  - name: limited\n    filters: [rate-limit]\n    to: [out]\n    routable: [slow]\n  - name: unlisted\n    filters: [rate-limit]\n    to: [out]\n",
        filter_yaml("dedup", wasm::DEDUP, "{ window_ms: 3600000 }"),
        filter_yaml(
            "rate-limit",
            wasm::RATE_LIMIT,
            "{ rate_per_sec: 0.001, burst: 3, over_limit: { route: slow } }"
        ),
    )
}

async fn send(weir: &Weir, route: &str, ids: &[&str]) -> Value {
    let batch: Vec<Value> = ids.iter().map(|id| event(id, "t", json!({}))).collect();
    let (status, answer) = post(
        &format!("{}/v1/routes/{route}/events", weir.url),
        &[("content-type", "application/cloudevents-batch+json")],
        Value::Array(batch).to_string(),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn dedup_state_survives_a_version_swap_and_a_restart() {
    let weir = Weir::start(&config());
    let answer = send(&weir, "dedup", &["e1", "e2", "e1"]).await;
    assert_eq!(
        (answer["delivered"].as_u64(), answer["dropped"].as_u64()),
        (Some(2), Some(1))
    );

    // A new version of the filter (another window) sees the same state.
    let token = std::fs::read_to_string(weir.data("admin-token")).unwrap();
    let resp = reqwest::Client::new()
        .put(format!("{}/v1/filters/dedup", weir.url))
        .bearer_auth(token.trim())
        .header("x-weir-filter-config", r#"{"window_ms": 7200000}"#)
        .body(std::fs::read(wasm::DEDUP).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let answer = send(&weir, "dedup", &["e2", "e3"]).await;
    assert_eq!(
        (answer["delivered"].as_u64(), answer["dropped"].as_u64()),
        (Some(1), Some(1)),
        "e2 is still known after the swap"
    );

    let (clean, dir) = weir.terminate();
    assert!(clean);
    let weir = Weir::start_in(dir, &config());
    let answer = send(&weir, "dedup", &["e1", "e3", "e4"]).await;
    assert_eq!(
        (answer["delivered"].as_u64(), answer["dropped"].as_u64()),
        (Some(1), Some(2)),
        "e1 and e3 are still known after the restart"
    );
    let ids: Vec<String> = weir
        .jsonl("out.jsonl")
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["e1", "e2", "e3", "e4"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_routes_over_limit_events_and_remembers_buckets_across_restarts() {
    let weir = Weir::start(&config());
    let ids: Vec<String> = (0..5).map(|i| format!("r{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let answer = send(&weir, "limited", &refs).await;
    assert_eq!(
        (answer["delivered"].as_u64(), answer["routed"].as_u64()),
        (Some(3), Some(2)),
        "{answer}"
    );
    assert_eq!(weir.jsonl("slow.jsonl").len(), 2);
    let (clean, dir) = weir.terminate();
    assert!(clean);
    let weir = Weir::start_in(dir, &config());
    // The bucket (refilling one token per 1000 s) is still empty after the restart.
    let answer = send(&weir, "limited", &["r5"]).await;
    assert_eq!(answer["routed"].as_u64(), Some(1), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_verdict_may_only_name_the_sinks_its_route_lists() {
    let weir = Weir::start(&config());
    // The same filter on a route that does not list `slow` as routable: what it routes
    // there is dead-lettered, and nothing reaches `slow`.
    let answer = send(&weir, "unlisted", &["u1", "u2", "u3", "u4", "u5"]).await;
    assert_eq!(answer["delivered"], 3, "{answer}");
    assert_eq!(answer["dead_lettered"], 2, "{answer}");
    assert!(weir.jsonl("slow.jsonl").is_empty());
    let letters = weir.jsonl("dead-letter.jsonl");
    assert_eq!(letters.len(), 2);
    assert!(
        reason(&letters[0]).contains("may not send events to sink `slow`"),
        "{}",
        letters[0]
    );
}
