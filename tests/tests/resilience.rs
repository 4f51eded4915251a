//! Failure handling from the connector contract: any sink gets retries and a circuit
//! breaker by configuration (here a file sink writing to `/dev/full`, a real device whose
//! every write fails with "no space left"), an operator resets a breaker through the admin
//! API, and a route runs a failed filter batch again before its failure policy applies.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_sink_is_retried_its_circuit_opens_and_an_admin_resets_it() {
    let config = "\
sinks:
  full:
    type: file
    path: /dev/full
    retry: { max_retries: 2, initial_backoff_ms: 1, max_backoff_ms: 5 }
    circuit_breaker: { failure_threshold: 2, recovery_timeout_ms: 600000 }
  dlq: { type: file, path: dlq.jsonl }
routes:
  - name: main
    to: [full]
    dead_letter: dlq
";
    let weir = Weir::start(config);
    for i in 0..3 {
        let (status, answer) =
            post_batch(&weir.url, &json!([event(&format!("e{i}"), "t", json!({}))])).await;
        assert_eq!(
            (status, answer["dead_lettered"].as_u64()),
            (202, Some(1)),
            "{answer}"
        );
    }
    let letters = weir.jsonl("dlq.jsonl");
    assert_eq!(letters.len(), 3);
    assert!(
        reason(&letters[0]).contains("No space left"),
        "{}",
        letters[0]
    );
    // The third write met an open circuit: refused at once, not retried.
    assert!(
        reason(&letters[2]).contains("circuit open"),
        "{}",
        letters[2]
    );
    let (_, metrics) = get_text(&format!("{}/metrics", weir.url)).await;
    assert_eq!(
        metric(&metrics, "weir_sink_retries_total{sink=\"full\"}"),
        Some(4.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "weir_sink_circuit_state{sink=\"full\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, "weir_sink_circuit_refused_total{sink=\"full\"}"),
        Some(1.0)
    );
    // Readiness lists each component: the route is fine; the open circuit is shown but
    // does not make the router unready (its events go to the dead-letter sink).
    let (status, checks) = get_text(&format!("{}/readyz?verbose", weir.url)).await;
    assert_eq!(status, 200, "{checks}");
    assert!(checks.contains("[+]route/main ok"), "{checks}");
    assert!(
        checks.contains("[-]sink/full failed (informational): circuit open"),
        "{checks}"
    );

    let auth = weir.admin_auth();
    let reset = |sink: &str| format!("{}/v1/sinks/{sink}/circuit/reset", weir.url);
    // Not without a token; not for a sink without a breaker or one that does not exist.
    assert_eq!(post(&reset("full"), &[], "").await.0, 401);
    let (status, answer) = post(&reset("dlq"), &[("authorization", &auth)], "").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("no_circuit")),
        "{answer}"
    );
    assert_eq!(
        post(&reset("nope"), &[("authorization", &auth)], "")
            .await
            .0,
        404
    );
    let (status, answer) = post(&reset("full"), &[("authorization", &auth)], "").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"sink": "full", "was": "open", "circuit": "closed"})
    );
    let (_, metrics) = get_text(&format!("{}/metrics", weir.url)).await;
    assert_eq!(
        metric(&metrics, "weir_sink_circuit_state{sink=\"full\"}"),
        Some(0.0)
    );
    let (_, checks) = get_text(&format!("{}/readyz?verbose", weir.url)).await;
    assert!(checks.contains("[+]sink/full ok"), "{checks}");
    // Closed again: the next write is tried (and retried) instead of refused.
    post_batch(&weir.url, &json!([event("after", "t", json!({}))])).await;
    let letters = weir.jsonl("dlq.jsonl");
    assert!(
        reason(&letters[3]).contains("No space left"),
        "{}",
        letters[3]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_filter_batch_is_run_again_before_the_failure_policy() {
    let config = format!(
        "filters:\n{}{}\
sinks:\n  out: {{ type: file, path: out.jsonl }}\n  dlq: {{ type: file, path: dlq.jsonl }}\n\
routes:\n  - name: flaky\n    filters: [hostile-flaky]\n    filter_retries: 1\n    to: [out]\n    dead_letter: dlq\n  - name: broken\n    filters: [hostile-trap]\n    filter_retries: 2\n    to: [out]\n    dead_letter: dlq\n",
        filter_yaml("hostile-flaky", wasm::HOSTILE, "{ mode: flaky }"),
        filter_yaml("hostile-trap", wasm::HOSTILE, "{ mode: trap }"),
    );
    let weir = Weir::start(&config);
    let batch = json!([event("a", "t", json!({})), event("b", "t", json!({}))]);
    let (status, answer) = post(
        &format!("{}/v1/routes/flaky/events", weir.url),
        &[("content-type", "application/cloudevents-batch+json")],
        batch.to_string(),
    )
    .await;
    assert_eq!(
        (status, answer["delivered"].as_u64()),
        (202, Some(2)),
        "{answer}"
    );
    let (status, answer) = post(
        &format!("{}/v1/routes/broken/events", weir.url),
        &[("content-type", "application/cloudevents-batch+json")],
        batch.to_string(),
    )
    .await;
    assert_eq!(
        (status, answer["dead_lettered"].as_u64()),
        (202, Some(2)),
        "{answer}"
    );
    assert_eq!(weir.jsonl("out.jsonl").len(), 2);
    let letters = weir.jsonl("dlq.jsonl");
    assert_eq!(letters.len(), 2);
    for letter in &letters {
        // The dead letter names the filter and the version that failed.
        assert_eq!(letter["stage"], "hostile-trap", "{letter}");
        assert_eq!(letter["filter_version"], 1, "{letter}");
    }
    let (_, metrics) = get_text(&format!("{}/metrics", weir.url)).await;
    let retries = |route: &str, filter: &str| {
        metric(
            &metrics,
            &format!("weir_filter_retries_total{{filter=\"{filter}\",route=\"{route}\",tenant=\"default\",version=\"1\"}}"),
        )
    };
    assert_eq!(retries("flaky", "hostile-flaky"), Some(1.0), "{metrics}");
    assert_eq!(retries("broken", "hostile-trap"), Some(2.0), "{metrics}");
    // Only the last failure counts as the batch's failure.
    assert_eq!(
        metric(&metrics, "weir_filter_failures_total{filter=\"hostile-trap\",kind=\"trap\",route=\"broken\",tenant=\"default\",version=\"1\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "weir_filter_failures_total{filter=\"hostile-flaky\""
        ),
        0.0
    );
}
