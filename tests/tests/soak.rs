//! A bounded soak: HTTP, gRPC (the `rodent.RodentService` contract) and Kafka (the
//! `tansu` broker) feed one route for `WEIR_SOAK_SECONDS` (default 90) while the filter is
//! swapped every few seconds, a tenant's filter traps on every batch, and the HTTP sink's
//! receiver goes down for 3 s in every 10. At the end every event is accounted for:
//! dropped by the severity filter (the debug ones, and only those), dead-lettered with a
//! reason, or delivered to both sinks; the route's counters agree; and resident memory
//! stayed flat (sampled every 2 s; the series is printed for `docs/benchmarks.md`).

#![allow(clippy::unwrap_used)]

mod common;

use common::kafka::{binary_event, produce, Broker};
use common::toggle::{agent_client, batch_of, transfer_event};
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir::toggle::pb::events::EventLevel;

/// Events per source per second.
const RATE: usize = 40;

/// Whether event `n` of a source is a debug event (the severity filter drops it).
fn debug(n: usize) -> bool {
    n.is_multiple_of(10)
}

/// The HTTP sink's receiver: records event ids; answers 503 while `down`.
async fn hop(got: Arc<Mutex<HashSet<String>>>, down: Arc<AtomicBool>) -> String {
    type Shared = (Arc<Mutex<HashSet<String>>>, Arc<AtomicBool>);
    async fn take(
        axum::extract::State((got, down)): axum::extract::State<Shared>,
        headers: axum::http::HeaderMap,
    ) -> axum::http::StatusCode {
        if down.load(Ordering::SeqCst) {
            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
        }
        if let Some(id) = headers.get("ce-id").and_then(|v| v.to_str().ok()) {
            got.lock().unwrap().insert(id.to_owned());
        }
        axum::http::StatusCode::ACCEPTED
    }
    let app = axum::Router::new().fallback(take).with_state((got, down));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn median(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn soak_mixed_sources_swaps_a_hostile_tenant_and_sink_outages_account_for_every_event() {
    let seconds: u64 = std::env::var("WEIR_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let broker = Broker::start();
    broker.create_topics(&["in"], 2).await;
    let got = Arc::new(Mutex::new(HashSet::new()));
    let down = Arc::new(AtomicBool::new(false));
    let hop_url = hop(got.clone(), down.clone()).await;
    let config = format!(
        "grpc:\n  listen: 127.0.0.1:0\ntenants:\n  acme: {{}}\nfilters:\n{}{}\
kafka:\n  cluster:\n    brokers: [\"{}\"]\n  sources:\n    input:\n      topics: [in]\n      group_id: soak\n      auto_offset_reset: earliest\n\
sinks:\n  out: {{ type: file, path: out.jsonl }}\n  hop:\n    type: http\n    url: {hop_url}/in\n    mode: binary\n    retry: {{ max_retries: 1, initial_backoff_ms: 5, max_backoff_ms: 20 }}\n    circuit_breaker: {{ failure_threshold: 3, recovery_timeout_ms: 1000 }}\n  dlq: {{ type: file, path: dlq.jsonl }}\n\
routes:\n  - name: main\n    from: [http, grpc, kafka]\n    filters: [severity]\n    tenants:\n      acme: {{ filters: [hostile-trap] }}\n    to: [out, hop]\n    dead_letter: dlq\n",
        filter_yaml("severity", wasm::SEVERITY, "{ min: info }"),
        filter_yaml("hostile-trap", wasm::HOSTILE, "{ mode: trap }"),
        broker.addr(),
    );
    let weir = Weir::start(&config);
    let pid = weir.pid();
    let url = weir.url.clone();
    let auth = weir.admin_auth();
    let mut grpc = agent_client(weir.grpc_url().unwrap()).await.unwrap();
    let producer = broker.producer(false);
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut rss: Vec<(u64, u64)> = Vec::new();
    let (mut sent, mut swaps) = (BTreeMap::<&str, usize>::new(), 0u32);
    let mut second = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        let tick = Instant::now();
        // The receiver is down for 3 s in every 10.
        down.store(second % 10 >= 7, Ordering::SeqCst);
        let range = second * RATE..(second + 1) * RATE;
        // HTTP: the default tenant and acme (whose filter traps).
        for (prefix, tenant) in [("h", None), ("a", Some("acme"))] {
            let batch: Vec<Value> = range
                .clone()
                .map(|n| {
                    let severity = if debug(n) { "debug" } else { "info" };
                    let mut extra = json!({ "severity": severity });
                    if let Some(t) = tenant {
                        extra["tenant"] = json!(t);
                    }
                    event(&format!("{prefix}-{n}"), "soak", extra)
                })
                .collect();
            let (status, answer) = post(
                &format!("{url}/v1/events"),
                &[("content-type", "application/cloudevents-batch+json")],
                Value::Array(batch).to_string(),
            )
            .await;
            assert_eq!(status, 202, "{answer}");
            *sent.entry(prefix).or_default() += RATE;
        }
        // gRPC: a Rodent agent's batch.
        let events = range
            .clone()
            .map(|n| {
                let level = if debug(n) {
                    EventLevel::Debug
                } else {
                    EventLevel::Info
                };
                transfer_event(&format!("g-{n}"), "rodent://soak", level)
            })
            .collect();
        let answer = grpc
            .send_events(batch_of(&format!("b{second}"), events))
            .await
            .unwrap()
            .into_inner();
        assert!(answer.success, "{}", answer.message);
        *sent.entry("g").or_default() += RATE;
        // Kafka.
        let records = range
            .clone()
            .map(|n| {
                let severity = if debug(n) { "debug" } else { "info" };
                binary_event(
                    &format!("k-{n}"),
                    "soak",
                    severity,
                    Some(&n.to_string()),
                    b"{}",
                )
            })
            .collect();
        produce(&producer, "in", records).await;
        *sent.entry("k").or_default() += RATE;
        // A new version of the severity filter every 5 s (not in the last seconds: the
        // active version must have run when the metrics are read).
        let time_left = Duration::from_secs(seconds).saturating_sub(started.elapsed());
        if second % 5 == 4 && time_left > Duration::from_secs(3) {
            let resp = http
                .put(format!("{url}/v1/filters/severity"))
                .header("authorization", &auth)
                .header("x-weir-filter-config", r#"{"min":"info"}"#)
                .body(std::fs::read(wasm::SEVERITY).unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201);
            swaps += 1;
        }
        if second.is_multiple_of(2) {
            rss.push((started.elapsed().as_secs(), rss_kib(pid)));
        }
        second += 1;
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    }
    down.store(false, Ordering::SeqCst);
    let total: usize = sent.values().sum();

    // Every event that is not a debug one ends in the dead letters or the file sink.
    let expected: HashSet<String> = sent
        .iter()
        .flat_map(|(prefix, n)| {
            (0..*n)
                .filter(move |i| *prefix == "a" || !debug(*i))
                .map(move |i| format!("{prefix}-{i}"))
        })
        .collect();
    let ids = |file: &str| -> Vec<String> {
        weir.jsonl(file)
            .iter()
            .map(|v| {
                v.get("event")
                    .unwrap_or(v)
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let (out, dead) = loop {
        let (out, dead) = (ids("out.jsonl"), ids("dlq.jsonl"));
        let seen: HashSet<&String> = out.iter().chain(&dead).collect();
        if expected.iter().all(|id| seen.contains(id)) || Instant::now() > deadline {
            break (out, dead);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let out_set: HashSet<&String> = out.iter().collect();
    let dead_set: HashSet<&String> = dead.iter().collect();
    let got = got.lock().unwrap().clone();
    let mut missing = Vec::new();
    let mut delivered = 0usize;
    for id in &expected {
        if dead_set.contains(id) {
            continue;
        }
        // Not dead-lettered: both sinks took it.
        if out_set.contains(id) && got.contains(id) {
            delivered += 1;
        } else {
            missing.push(id.clone());
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "{} events unaccounted for: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    // The debug events, and only those, were dropped: none reached a sink or the dead letters.
    let dropped_ids: Vec<&String> = out_set
        .iter()
        .chain(dead_set.iter())
        .copied()
        .filter(|id| !expected.contains(*id))
        .collect();
    assert!(dropped_ids.is_empty(), "{dropped_ids:?}");
    // Every dead letter says why; acme's name its trapping filter and its version. The
    // outages happened: some events were dead-lettered at the HTTP sink.
    let letters = weir.jsonl("dlq.jsonl");
    assert!(
        letters.iter().any(|l| l["stage"] == "hop"),
        "no outage dead letters"
    );
    for letter in letters {
        assert!(!reason(&letter).is_empty(), "{letter}");
        if letter["tenant"] == "acme" {
            assert_eq!(letter["stage"], "hostile-trap", "{letter}");
            assert_eq!(letter["filter_version"], 1, "{letter}");
        } else {
            assert_eq!(
                letter["stage"], "hop",
                "only the outages dead-letter: {letter}"
            );
        }
    }
    // The route's counters agree with the events.
    let (_, metrics) = get_text(&format!("{url}/metrics")).await;
    let counted = |outcome: &str| {
        metric(
            &metrics,
            &format!("weir_route_events_total{{outcome=\"{outcome}\",route=\"main\"}}"),
        )
        .unwrap_or(0.0) as usize
    };
    let debug_events = total - expected.len();
    // The swaps happened: the severity filter's verdicts are counted under its active
    // version only (the versions it ran before are forgotten).
    let versions: HashSet<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("weir_filter_verdicts_total{filter=\"severity\""))
        .filter_map(|l| l.split("version=\"").nth(1)?.split('"').next())
        .collect();
    let active = (swaps + 1).to_string();
    assert_eq!(versions, HashSet::from([active.as_str()]), "{metrics}");
    assert_eq!(counted("dropped"), debug_events, "{metrics}");
    assert_eq!(counted("dead_lettered"), dead_set.len(), "{metrics}");
    assert_eq!(counted("delivered"), delivered, "{metrics}");
    assert_eq!(
        counted("dropped") + counted("dead_lettered") + counted("delivered"),
        total
    );
    // Resident memory stayed flat: the second half's median within 25 % (plus 16 MiB of
    // allocator slack) of the first half's after the first 10 s.
    assert!(rss.iter().all(|(_, kib)| *kib > 0), "RSS not read: {rss:?}");
    let warm: Vec<u64> = rss
        .iter()
        .filter(|(t, _)| *t >= 10)
        .map(|(_, k)| *k)
        .collect();
    let (early, late) = warm.split_at(warm.len() / 2);
    let (early, late) = (median(early), median(late));
    eprintln!(
        "soak: {seconds} s, {total} events ({} delivered, {} dead-lettered, {debug_events} dropped), {swaps} filter swaps; RSS KiB over time: {rss:?}",
        delivered,
        dead_set.len()
    );
    assert!(
        late <= early + early / 4 + 16 * 1024,
        "resident memory grew from {early} KiB to {late} KiB: {rss:?}"
    );
}
