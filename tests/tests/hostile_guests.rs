//! Hostile filters (compiled from tests/guests/hostile in this test run) are contained:
//! the failure policy applies to their batches, their instances are recycled, other routes
//! keep flowing and the router never exits.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// (mode, expected text in the dead-letter reason, failure kind in metrics)
const MODES: [(&str, &str, &str); 8] = [
    ("loop", "time limit of 1000 ms", "timeout"),
    ("sleep", "may not block", "trap"),
    ("memory", "memory limit of 64 MiB", "memory"),
    ("trap", "trapped", "trap"),
    ("wrong-count", "4 verdicts for 3 events", "bad_output"),
    ("huge-output", "output limit of 16 MiB", "bad_output"),
    ("garbage", "wrong magic bytes", "bad_output"),
    ("error", "fails the batch on purpose", "guest_error"),
];

fn config() -> String {
    let mut filters = filter_yaml("severity", wasm::SEVERITY, "{ min: warning }");
    let mut routes = String::from("  - name: good\n    filters: [severity]\n    to: [good-out]\n");
    for (mode, _, _) in MODES {
        filters += &filter_yaml(
            &format!("hostile-{mode}"),
            wasm::HOSTILE,
            &format!("{{ mode: {mode} }}"),
        );
        routes += &format!(
            "  - name: evil-{mode}\n    filters: [hostile-{mode}]\n    to: [evil-out]\n    dead_letter: dlq\n"
        );
    }
    routes += "  - name: evil-pass\n    filters: [hostile-trap]\n    to: [pass-out]\n    on_failure: pass\n";
    routes += "  - name: evil-drop\n    filters: [hostile-trap]\n    to: [evil-out]\n    on_failure: drop\n";
    format!(
        "tenants:\n  default:\n    limits: {{ timeout_ms: 1000, memory_mb: 64, output_mb: 16 }}\n\
filters:\n{filters}\
sinks:\n  good-out: {{ type: file, path: good.jsonl }}\n  evil-out: {{ type: file, path: evil.jsonl }}\n  pass-out: {{ type: file, path: pass.jsonl }}\n  dlq: {{ type: file, path: dlq.jsonl }}\n\
routes:\n{routes}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_hostile_guest_is_contained_and_the_failure_policy_applies() {
    let mut weir = Weir::start(&config());
    let url = format!("{}/v1/events", weir.url);
    let batch = |round: u32| {
        json!([
            event(&format!("r{round}-a"), "t", json!({"severity": "error"})),
            event(&format!("r{round}-b"), "t", json!({"severity": "info"})),
            event(&format!("r{round}-c"), "t", json!({"severity": "critical"})),
        ])
        .to_string()
    };
    // Two rounds: the second proves recycled instances work again (and fail again).
    for round in 0..2 {
        let (status, answer) = post(
            &url,
            &[("content-type", "application/cloudevents-batch+json")],
            batch(round),
        )
        .await;
        assert_eq!(status, 202, "{answer}");
        // good: 2 delivered, 1 dropped; evil dead-letter routes: 3 each; pass: 3 delivered;
        // drop: 3 dropped.
        assert_eq!(answer["dead_lettered"], 3 * MODES.len() as u64, "{answer}");
        assert_eq!(answer["delivered"], 2 + 3, "{answer}");
        assert_eq!(answer["dropped"], 1 + 3, "{answer}");
    }
    assert!(weir.alive(), "the router must never exit");

    let good: Vec<String> = weir
        .jsonl("good.jsonl")
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(good, ["r0-a", "r0-c", "r1-a", "r1-c"]);
    assert_eq!(
        weir.jsonl("pass.jsonl").len(),
        6,
        "pass policy delivers the failed batch as it was"
    );
    assert!(
        weir.jsonl("evil.jsonl").is_empty(),
        "no hostile route delivered anything"
    );

    let letters = weir.jsonl("dlq.jsonl");
    assert_eq!(letters.len(), 2 * 3 * MODES.len());
    for (mode, reason, _) in MODES {
        let mine: Vec<_> = letters
            .iter()
            .filter(|l| l["stage"] == format!("hostile-{mode}"))
            .collect();
        assert_eq!(mine.len(), 6, "{mode}");
        for l in mine {
            assert_eq!(l["route"], format!("evil-{mode}"));
            let text = l["reason"].as_str().unwrap();
            assert!(
                text.contains(reason),
                "{mode}: `{text}` should mention `{reason}`"
            );
            assert!(
                l["event"]["id"].as_str().unwrap().starts_with('r'),
                "original event kept"
            );
        }
    }

    let (status, metrics) = get_text(&format!("{}/metrics", weir.url)).await;
    assert_eq!(status, 200);
    for (mode, _, kind) in MODES {
        let line = format!(
            "weir_filter_failures_total{{filter=\"hostile-{mode}\",kind=\"{kind}\",route=\"evil-{mode}\",tenant=\"default\",version=\"1\"}}"
        );
        assert_eq!(metric(&metrics, &line), Some(2.0), "{line}\n{metrics}");
    }
    let recycled =
        "weir_filter_instances_recycled_total{filter=\"hostile-loop\",tenant=\"default\"}";
    assert_eq!(metric(&metrics, recycled), Some(2.0), "{metrics}");
    let (status, _) = get_text(&format!("{}/healthz", weir.url)).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_route_does_not_hold_up_another_route() {
    let config = format!(
        "tenants:\n  default:\n    limits: {{ timeout_ms: 3000 }}\nfilters:\n{}{}\
sinks:\n  out: {{ type: file, path: out.jsonl }}\n  dlq: {{ type: file, path: dlq.jsonl }}\n\
routes:\n  - name: good\n    filters: [severity]\n    to: [out]\n  - name: stuck\n    filters: [hostile-loop]\n    to: [out]\n    dead_letter: dlq\n",
        filter_yaml("severity", wasm::SEVERITY, "{ min: warning }"),
        filter_yaml("hostile-loop", wasm::HOSTILE, "{ mode: loop }"),
    );
    let weir = Weir::start(&config);
    let stuck_url = format!("{}/v1/routes/stuck/events", weir.url);
    let good_url = format!("{}/v1/routes/good/events", weir.url);
    let headers = [("content-type", "application/cloudevents+json")];
    let started = Instant::now();
    let stuck = tokio::spawn(async move {
        let (status, answer) = post(
            &stuck_url,
            &headers,
            event("slow", "t", json!({})).to_string(),
        )
        .await;
        (status, answer, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // While the stuck route burns its 3 s budget, the good route serves 200 requests.
    let good_started = Instant::now();
    for i in 0..200 {
        let (status, answer) = post(
            &good_url,
            &headers,
            event(&format!("g{i}"), "t", json!({"severity": "error"})).to_string(),
        )
        .await;
        assert_eq!(
            (status, answer["delivered"].as_u64()),
            (202, Some(1)),
            "{answer}"
        );
    }
    let good_elapsed = good_started.elapsed();
    let (status, answer, stuck_elapsed) = stuck.await.unwrap();
    assert_eq!(
        (status, answer["dead_lettered"].as_u64()),
        (202, Some(1)),
        "{answer}"
    );
    assert!(
        stuck_elapsed >= Duration::from_millis(2900),
        "the loop must have run to its deadline ({stuck_elapsed:?})"
    );
    assert!(
        good_elapsed < stuck_elapsed,
        "200 requests on the good route ({good_elapsed:?}) finished while the stuck route was still running ({stuck_elapsed:?})"
    );
    eprintln!(
        "good route: 200 requests in {good_elapsed:?} ({:.0} req/s) while the stuck route looped for {stuck_elapsed:?}",
        200.0 / good_elapsed.as_secs_f64()
    );
    assert_eq!(weir.jsonl("out.jsonl").len(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_with_a_stuck_filter_does_not_hold_up_other_tenants_on_the_same_route() {
    let config = format!(
        "tenants:\n  noisy:\n    limits: {{ timeout_ms: 3000 }}\n  quiet: {{}}\nfilters:\n{}{}\
sinks:\n  out: {{ type: file, path: out.jsonl }}\n  dlq: {{ type: file, path: dlq.jsonl }}\n\
routes:\n  - name: main\n    filters: [severity]\n    tenants:\n      noisy: {{ filters: [hostile-loop] }}\n    to: [out]\n    dead_letter: dlq\n",
        filter_yaml("severity", wasm::SEVERITY, "{ min: warning }"),
        filter_yaml("hostile-loop", wasm::HOSTILE, "{ mode: loop }"),
    );
    let weir = Weir::start(&config);
    let url = format!("{}/v1/events", weir.url);
    let headers = [("content-type", "application/cloudevents+json")];
    let started = Instant::now();
    let noisy_url = url.clone();
    let noisy = tokio::spawn(async move {
        let e = event("slow", "t", json!({"tenant": "noisy"}));
        let (status, answer) = post(&noisy_url, &headers, e.to_string()).await;
        (status, answer, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let quiet_started = Instant::now();
    for i in 0..200 {
        let e = event(
            &format!("q{i}"),
            "t",
            json!({"tenant": "quiet", "severity": "error"}),
        );
        let (status, answer) = post(&url, &headers, e.to_string()).await;
        assert_eq!(
            (status, answer["delivered"].as_u64()),
            (202, Some(1)),
            "{answer}"
        );
    }
    let quiet_elapsed = quiet_started.elapsed();
    let (status, answer, noisy_elapsed) = noisy.await.unwrap();
    assert_eq!(
        (status, answer["dead_lettered"].as_u64()),
        (202, Some(1)),
        "{answer}"
    );
    assert!(
        noisy_elapsed >= Duration::from_millis(2900),
        "{noisy_elapsed:?}"
    );
    assert!(
        quiet_elapsed < noisy_elapsed,
        "quiet tenant ({quiet_elapsed:?}) must not wait for the noisy one ({noisy_elapsed:?})"
    );
    eprintln!(
        "quiet tenant: 200 requests in {quiet_elapsed:?} ({:.0} req/s) while the noisy tenant's filter looped for {noisy_elapsed:?}",
        200.0 / quiet_elapsed.as_secs_f64()
    );
    let letters = weir.jsonl("dlq.jsonl");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["tenant"], "noisy");
}

/// A `file` dead-letter sink in `format: protobuf` writes length-delimited
/// `weir.v1.DeadLetter` messages with the failing stage, the reason and the whole event;
/// `weir replay --dlq` reads them back (recognising the format by itself), warns about a
/// torn last write instead of failing, and delivers every complete dead letter.
#[tokio::test(flavor = "multi_thread")]
async fn protobuf_dead_letters_keep_the_event_and_weir_replay_delivers_them() {
    let config = format!(
        "filters:\n{}{}sinks:\n  good-out: {{ type: file, path: good.jsonl }}\n  dlq: {{ type: file, path: dlq.pb, format: protobuf }}\n\
routes:\n  - name: good\n    filters: [severity]\n    to: [good-out]\n  - name: evil\n    filters: [hostile-trap]\n    to: [good-out]\n    dead_letter: dlq\n",
        filter_yaml("severity", wasm::SEVERITY, "{ min: warning }"),
        filter_yaml("hostile-trap", wasm::HOSTILE, "{ mode: trap }"),
    );
    let mut weir = Weir::start(&config);
    let events = json!([
        event("p-1", "t", json!({"severity": "error", "data": {"n": 1}})),
        event("p-2", "t", json!({"severity": "info", "data": {"n": 2}})),
        event(
            "p-3",
            "t",
            json!({"severity": "critical", "data": {"n": 3}})
        ),
    ]);
    let (status, answer) = post_batch(&weir.url, &events).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["dead_lettered"], 3, "{answer}");

    let file = std::fs::read(weir.data("dlq.pb")).unwrap();
    let letters: Vec<_> = weir::dead_letter::read_delimited(file.clone().into())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(letters.len(), 3);
    for (letter, n) in letters.iter().zip(1..) {
        assert_eq!(letter.route, "evil");
        assert_eq!(letter.stage, "hostile-trap");
        assert!(letter.reason.contains("trapped"), "{}", letter.reason);
        let e = weir::cloudevents::protobuf::from_proto(letter.event.clone().unwrap()).unwrap();
        assert_eq!(e.id, format!("p-{n}"));
        let data: serde_json::Value = serde_json::from_slice(e.data.as_deref().unwrap()).unwrap();
        assert_eq!(data, json!({"n": n}));
    }

    // A torn last write (the start of a message, as a crash mid-append leaves it).
    let mut torn = file.clone();
    torn.extend_from_slice(&file[..file.len() / 6]);
    std::fs::write(weir.data("dlq.pb"), &torn).unwrap();
    let out = weir.replay_dlq("dlq.pb", "good");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "weir replay: {stderr}");
    assert!(
        stderr.contains("ends inside a dead letter"),
        "the torn write is reported: {stderr}"
    );
    assert!(stderr.contains("replayed 3 events"), "{stderr}");
    let replayed: Vec<String> = weir
        .jsonl("good.jsonl")
        .iter()
        .filter(|e| e["weirreplay"].is_string())
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        replayed,
        ["p-1", "p-3"],
        "the good route's severity filter ran"
    );
    assert!(weir.alive());
}

#[tokio::test(flavor = "multi_thread")]
async fn tick_output_is_held_to_the_output_limit_and_delivered_or_dead_lettered_like_any_other() {
    let config = format!(
        "tenants:\n  default:\n    limits: {{ timeout_ms: 1000, memory_mb: 64, output_mb: 16 }}\n\
filters:\n{}{}\
sinks:\n  out: {{ type: file, path: ticks.jsonl }}\n  dlq: {{ type: file, path: dlq.jsonl }}\n  \
broken: {{ type: http, url: \"http://127.0.0.1:9/in\", retry: {{ max_retries: 0 }} }}\n\
routes:\n  - {{ name: emit-ok, filters: [hostile-tick-emit], to: [out] }}\n  \
- {{ name: emit-broken, filters: [hostile-tick-emit], to: [broken], dead_letter: dlq }}\n  \
- {{ name: huge, filters: [hostile-tick-huge], to: [out] }}\n",
        filter_yaml("hostile-tick-emit", wasm::HOSTILE, "{ mode: tick-emit }"),
        filter_yaml("hostile-tick-huge", wasm::HOSTILE, "{ mode: tick-huge }"),
    );
    let weir = Weir::start(&config);
    // A first event starts each route's lane; ticks run on live lanes.
    let (status, _) = post_batch(&weir.url, &json!([event("start", "t", json!({}))])).await;
    assert!(status < 300, "{status}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (ticks, letters, metrics) = loop {
        let ticks: Vec<_> = weir
            .jsonl("ticks.jsonl")
            .into_iter()
            .filter(|e| e["type"] == "hostile.tick")
            .collect();
        let letters = weir.jsonl("dlq.jsonl");
        let (_, metrics) = get_text(&format!("{}/metrics", weir.url)).await;
        let huge_failed = metric(
            &metrics,
            "weir_filter_failures_total{filter=\"hostile-tick-huge\",kind=\"bad_output\",route=\"huge\",tenant=\"default\",version=\"1\"}",
        )
        .unwrap_or(0.0);
        let tick_letters = letters
            .iter()
            .filter(|l| l["event"]["type"] == "hostile.tick")
            .count();
        if (ticks.len() >= 4 && tick_letters >= 2 && huge_failed >= 1.0)
            || Instant::now() > deadline
        {
            break (ticks, letters, metrics);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Delivered and counted as the route's output.
    assert!(ticks.len() >= 4, "{ticks:?}");
    assert!(
        metric(
            &metrics,
            "weir_route_events_total{outcome=\"delivered\",route=\"emit-ok\"}"
        )
        .unwrap_or(0.0)
            >= 5.0,
        "{metrics}"
    );
    // A sink that fails them: dead letters, with the reason.
    assert!(letters.len() >= 2, "{letters:?}");
    assert!(
        letters.iter().all(|l| l["route"] == "emit-broken"),
        "{letters:?}"
    );
    assert!(
        letters
            .iter()
            .filter(|l| l["event"]["type"] == "hostile.tick")
            .count()
            >= 2,
        "{letters:?}"
    );
    // Over the output limit: refused as bad output, nothing of it delivered.
    assert!(
        metrics.contains(
            "weir_filter_failures_total{filter=\"hostile-tick-huge\",kind=\"bad_output\""
        ),
        "{metrics}"
    );
    assert!(
        ticks
            .iter()
            .all(|e| e["id"].as_str().unwrap_or("").len() < 40 && e.to_string().len() < 10_000),
        "no part of a 20 MiB tick was delivered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_is_held_to_the_callers_tenant_limits() {
    const ACME: &str = "acme-dry-run-token";
    let config = format!(
        "tenants:\n  acme:\n    limits: {{ timeout_ms: 150 }}\n\
admin:\n  tokens:\n    - {{ name: acme-ci, sha256: {}, role: \"tenant:acme\" }}\n\
filters:\n  looping: {{ path: {}, config: {{ mode: loop }}, owner: acme }}\n\
routes:\n  - {{ name: r, to: [tail] }}\n",
        weir::tokens::hash_token(ACME),
        wasm::HOSTILE
    );
    let weir = Weir::start(&config);
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/filters/looping/test", weir.url))
        .bearer_auth(ACME)
        .body(json!([event("d-1", "t", json!({}))]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let answer: serde_json::Value = resp.json().await.unwrap();
    // acme's 150 ms, not the default 200 ms.
    assert!(
        answer["reason"]
            .as_str()
            .unwrap_or("")
            .contains("time limit of 150 ms"),
        "{answer}"
    );
}
