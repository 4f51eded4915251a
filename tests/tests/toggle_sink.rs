//! The Toggle path end to end: an agent (tonic client) sends `EventBatch`es to the real
//! weir binary's gRPC source, the route delivers them through the Toggle sink to a real
//! tonic Toggle server on loopback (`common::toggle`). Toggle is stopped, restarted, made
//! slow; weir is killed; spill files are corrupted — and every acknowledged event arrives,
//! in order per source.

#![allow(clippy::unwrap_used)]

mod common;

use common::toggle::{agent_client, batch_of, free_addr, transfer_event, Recorder, ToggleServer};
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use weir::toggle::pb::events::{Event, EventLevel};

fn agent_event(source: &str, seq: usize) -> Event {
    let mut e = transfer_event(&format!("{source}-{seq:07}"), source, EventLevel::Info);
    e.level = 1 + (seq % 7) as i32;
    e.timestamp = 1_765_000_000_000 + seq as i64;
    e.metadata = [("seq".to_owned(), seq.to_string())].into();
    e
}

/// weir with the gRPC source feeding a Toggle sink at `toggle_url`; `sink_extra` are more
/// lines of the sink's settings (indented by four spaces).
fn config(toggle_url: &str, sink_extra: &[&str]) -> String {
    let mut lines = vec![
        "grpc:".to_owned(),
        "  listen: 127.0.0.1:0".to_owned(),
        "  max_batch_events: 5000".to_owned(),
        "sinks:".to_owned(),
        "  toggle:".to_owned(),
        "    type: toggle".to_owned(),
        format!("    url: {toggle_url}"),
    ];
    lines.extend(sink_extra.iter().map(|l| format!("    {l}")));
    lines.extend(
        [
            "routes:",
            "  - name: upstream",
            "    from: [grpc]",
            "    to: [toggle]",
        ]
        .map(str::to_owned),
    );
    lines.join("\n") + "\n"
}

/// Sends `count` events of `source` in batches of `batch`; returns the ids weir
/// acknowledged (it stops at the first failed request).
async fn agent(url: String, source: String, count: usize, batch: usize) -> Vec<String> {
    let mut acked = Vec::new();
    let Ok(mut client) = agent_client(url).await else {
        return acked;
    };
    let mut seq = 0;
    while seq < count {
        let events: Vec<Event> = (seq..(seq + batch).min(count))
            .map(|i| agent_event(&source, i))
            .collect();
        let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
        let request = batch_of(&format!("{source}-{seq}"), events);
        match client.send_events(request).await {
            Ok(answer) if answer.get_ref().success => acked.extend(ids),
            _ => break,
        }
        seq += batch;
    }
    acked
}

async fn stats(weir: &Weir) -> Value {
    let (status, text) = get_text(&format!("{}/v1/stats", weir.url)).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["sinks"]["toggle"].clone()
}

async fn wait_until<F: FnMut() -> bool>(what: &str, timeout: Duration, mut done: F) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spill_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "pb"))
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that per source, Toggle saw exactly `expected` (once each, in order).
fn assert_exactly_once_in_order(
    got: &BTreeMap<String, Vec<String>>,
    expected: &BTreeMap<String, Vec<String>>,
) {
    for (source, ids) in expected {
        let seen = got.get(source).cloned().unwrap_or_default();
        assert_eq!(
            seen.len(),
            ids.len(),
            "{source}: {} events arrived, {} expected",
            seen.len(),
            ids.len()
        );
        if let Some(i) = (0..ids.len()).find(|&i| seen[i] != ids[i]) {
            panic!(
                "{source}: at {i} Toggle saw {} where {} was expected",
                seen[i], ids[i]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_thousand_events_arrive_exactly_once_in_order_per_source() {
    let toggle = ToggleServer::start().await;
    let weir = Weir::start(&config(&toggle.url(), &["profile: high-throughput"]));
    let url = weir.grpc_url().unwrap();
    let sources: Vec<String> = (0..4).map(|i| format!("rodent://node-{i}")).collect();
    let agents: Vec<_> = sources
        .iter()
        .map(|s| tokio::spawn(agent(url.clone(), s.clone(), 50_000, 1_000)))
        .collect();
    let mut expected = BTreeMap::new();
    for (source, agent) in sources.iter().zip(agents) {
        let acked = agent.await.unwrap();
        assert_eq!(
            acked.len(),
            50_000,
            "{source}: weir acknowledged every batch"
        );
        expected.insert(source.clone(), acked);
    }
    // Every write returned only after Toggle acknowledged it (nothing spilled here).
    assert_eq!(toggle.recorder.count(), 200_000);
    assert_exactly_once_in_order(&toggle.recorder.ids_by_source(), &expected);
    let s = stats(&weir).await;
    assert_eq!(s["sent_events"], 200_000, "{s}");
    assert_eq!(s["spilled_files"], 0, "{s}");
    assert_eq!(s["pending_events"], 0, "{s}");
    assert_eq!(s["max_buffer_size"], 100_000, "{s}");
    assert_eq!(s["flush_threshold"], 90_000, "{s}");
    assert_eq!(s["is_shutdown"], false, "{s}");
    // Toggle received batches of the configured size (1000), each with a UUIDv7 id.
    let ids = toggle.recorder.batch_ids.lock().unwrap().clone();
    assert!(
        ids.len() >= 200 && ids.len() <= 400,
        "{} batches",
        ids.len()
    );
    assert!(
        ids.iter().all(|id| id.len() == 36 && &id[14..15] == "7"),
        "{:?}",
        &ids[..2]
    );
    let (_, metrics) = get_text(&format!("{}/metrics", weir.url)).await;
    assert_eq!(
        metric(&metrics, "weir_toggle_sent_events_total{sink=\"toggle\"}"),
        Some(200_000.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn toggle_down_under_load_spills_to_disk_then_everything_arrives_in_order_when_recovery_is_ordered(
) {
    let mut toggle = ToggleServer::start().await;
    let weir = Weir::start(&config(
        &toggle.url(),
        &[
            "recovery: ordered",
            "batch_timeout_ms: 10",
            "retry_max_ms: 300",
            "max_block_ms: 1000",
        ],
    ));
    let url = weir.grpc_url().unwrap();
    let sources: Vec<String> = (0..4).map(|i| format!("rodent://node-{i}")).collect();
    let agents: Vec<_> = sources
        .iter()
        .map(|s| tokio::spawn(agent(url.clone(), s.clone(), 25_000, 250)))
        .collect();
    // Under load: Toggle goes away until weir has spilled, then comes back.
    let recorder = toggle.recorder.clone();
    wait_until("first events at Toggle", Duration::from_secs(30), || {
        recorder.count() > 5_000
    })
    .await;
    toggle.stop().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = stats(&weir).await;
        if s["spilled_files"].as_u64().unwrap() >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "weir never spilled: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    toggle.restart().await;
    let mut expected = BTreeMap::new();
    for (source, agent) in sources.iter().zip(agents) {
        let acked = agent.await.unwrap();
        assert_eq!(
            acked.len(),
            25_000,
            "{source}: weir acknowledged every batch while Toggle was down"
        );
        expected.insert(source.clone(), acked);
    }
    let recorder = toggle.recorder.clone();
    wait_until("all events at Toggle", Duration::from_secs(60), || {
        recorder.count() >= 100_000
    })
    .await;
    let spill_dir = weir.data("spill/toggle");
    wait_until("an empty spill directory", Duration::from_secs(30), || {
        spill_files(&spill_dir).is_empty()
    })
    .await;
    assert_exactly_once_in_order(&toggle.recorder.ids_by_source(), &expected);
    let s = stats(&weir).await;
    assert!(s["spilled_events"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["spilled_events"], s["replayed_events"], "{s}");
    assert_eq!(
        s["sent_events"].as_u64().unwrap() + s["replayed_events"].as_u64().unwrap(),
        100_000,
        "{s}"
    );
    assert_eq!(s["pending_events"], 0, "{s}");
    assert_eq!(s["spill_files"], 0, "{s}");
    assert!(s["send_failures"].as_u64().unwrap() > 0, "{s}");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_an_outage_new_events_go_directly_while_the_backlog_replays() {
    // Toggle down: 20 spill files of 500 events wait. Toggle back but slow (250 ms per
    // request): replaying the backlog takes ~5 s, and events sent meanwhile must not wait
    // behind it (the default, `recovery: direct`).
    let mut toggle = ToggleServer::new(free_addr(), Recorder::default(), None);
    let weir = Weir::start(&config(
        &toggle.url(),
        &[
            "batch_timeout_ms: 5",
            "retry_max_ms: 200",
            "flush_threshold: 500",
            "buffer_size: 1000",
            "batch_size: 100",
        ],
    ));
    let url = weir.grpc_url().unwrap();
    let backlog = agent(url.clone(), "rodent://old".into(), 10_000, 500).await;
    assert_eq!(backlog.len(), 10_000);
    let files = spill_files(&weir.data("spill/toggle"));
    assert!(files.len() >= 10, "{} files", files.len());
    assert_eq!(stats(&weir).await["recovery"], "direct");

    toggle.recorder.set_delay(Duration::from_millis(250));
    toggle.restart().await;
    let recorder = toggle.recorder.clone();
    wait_until("the replay to start", Duration::from_secs(30), || {
        recorder.count() > 0
    })
    .await;
    let started = Instant::now();
    let fresh = agent(url, "rodent://new".into(), 300, 100).await;
    let fresh_took = started.elapsed();
    assert_eq!(fresh.len(), 300);
    let spill_dir = weir.data("spill/toggle");
    let still_spilled = spill_files(&spill_dir).len();
    assert!(
        still_spilled > 0,
        "the backlog was still replaying when the new events were acknowledged \
         (took {fresh_took:?})"
    );
    let by_source = toggle.recorder.ids_by_source();
    assert_eq!(
        by_source.get("rodent://new").map(Vec::len),
        Some(300),
        "new events reached Toggle directly, before the backlog ({still_spilled} files left)"
    );
    wait_until("the backlog replayed", Duration::from_secs(60), || {
        spill_files(&spill_dir).is_empty()
    })
    .await;
    let mut expected = BTreeMap::new();
    expected.insert("rodent://old".to_owned(), backlog);
    expected.insert("rodent://new".to_owned(), fresh);
    // Each source's events still arrive once each and in order: the backlog is one
    // source's, replayed oldest first; the new source's went directly.
    assert_exactly_once_in_order(&toggle.recorder.ids_by_source(), &expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_toggle_received_with_problems_is_logged_and_counted_not_resent() {
    let toggle = ToggleServer::start().await;
    *toggle.recorder.problems.lock().unwrap() = true;
    let weir = Weir::start(&config(&toggle.url(), &["batch_timeout_ms: 5"]));
    let acked = agent(weir.grpc_url().unwrap(), "rodent://p".into(), 200, 100).await;
    assert_eq!(
        acked.len(),
        200,
        "success: false is an answer, not a failure"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(toggle.recorder.count(), 200, "nothing was sent twice");
    let s = stats(&weir).await;
    assert!(s["problem_batches"].as_u64().unwrap() >= 2, "{s}");
    assert_eq!(s["pending_events"], 0, "{s}");
    assert_eq!(s["spilled_files"], 0, "{s}");
    let (_, metrics) = get_text(&format!("{}/metrics", weir.url)).await;
    assert!(
        metric(
            &metrics,
            "weir_toggle_problem_batches_total{sink=\"toggle\"}"
        )
        .unwrap()
            >= 2.0
    );
    let logs = weir.logs.lock().unwrap().join("\n");
    assert!(logs.contains("stored with problems"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_with_spilled_files_and_a_replay_in_flight_loses_nothing_acknowledged() {
    // Toggle is down at first: everything weir acknowledges is on disk.
    let mut toggle = ToggleServer::new(free_addr(), Recorder::default(), None);
    let cfg = config(
        &toggle.url(),
        &[
            "recovery: ordered",
            "batch_timeout_ms: 10",
            "retry_max_ms: 200",
            "flush_threshold: 2000",
            "buffer_size: 4000",
        ],
    );
    let weir = Weir::start(&cfg);
    let url = weir.grpc_url().unwrap();
    let first = agent(url.clone(), "rodent://a".into(), 10_000, 500).await;
    assert_eq!(first.len(), 10_000);
    let files = spill_files(&weir.data("spill/toggle"));
    assert!(files.len() >= 2, "{files:?}");
    // Toggle comes back slow: a replay request is in flight when weir is killed, while
    // the agent keeps sending.
    toggle.recorder.set_delay(Duration::from_millis(400));
    toggle.restart().await;
    let more = tokio::spawn(agent(url.clone(), "rodent://b".into(), 1_000_000, 200));
    let recorder = toggle.recorder.clone();
    wait_until("a replay at Toggle", Duration::from_secs(30), || {
        recorder.count() > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let dir = weir.kill();
    let second = more.await.unwrap();
    assert!(
        !second.is_empty(),
        "the agent got acknowledgements before the kill"
    );
    // Restart on the same data directory with Toggle at full speed.
    toggle.recorder.set_delay(Duration::ZERO);
    let weir = Weir::start_in(dir, &cfg);
    let spill_dir = weir.data("spill/toggle");
    let recorder = toggle.recorder.clone();
    let wanted = first.len() + second.len();
    wait_until("the replay after restart", Duration::from_secs(60), || {
        spill_files(&spill_dir).is_empty() && recorder.count() >= wanted
    })
    .await;
    let got = toggle.recorder.ids_by_source();
    for (source, acked) in [("rodent://a", &first), ("rodent://b", &second)] {
        let seen = got.get(source).cloned().unwrap_or_default();
        // Every acknowledged event arrived, in order (counting first arrivals).
        let mut firsts = Vec::new();
        let mut set = std::collections::HashSet::new();
        for id in &seen {
            if set.insert(id.clone()) {
                firsts.push(id.clone());
            }
        }
        assert!(
            firsts.len() >= acked.len(),
            "{source}: {} of {} acknowledged events arrived",
            firsts.len(),
            acked.len()
        );
        assert_eq!(
            &firsts[..acked.len()],
            &acked[..],
            "{source}: acknowledged events in order"
        );
    }
    // Duplicates are bounded by the batch in flight at the kill: one spill file
    // (at most the flush threshold) or one live batch.
    let total: usize = got.values().map(Vec::len).sum();
    let distinct: std::collections::HashSet<&String> = got.values().flatten().collect();
    assert!(
        total - distinct.len() <= 2_000,
        "{} duplicates",
        total - distinct.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_and_truncated_spill_files_are_quarantined_and_the_rest_replay() {
    use weir::toggle::spill::{next_batch_id, SpillDir, WhenFull};
    use weir::toggle::wire::WireBatch;
    let toggle = ToggleServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spill_dir = dir.path().join("data/spill/toggle");
    let spill = SpillDir::open(&spill_dir, u64::MAX, WhenFull::DropOldest).unwrap();
    let mut expected = Vec::new();
    let mut paths = Vec::new();
    for f in 0..5 {
        let events: Vec<Event> = (0..100)
            .map(|i| agent_event("rodent://s", f * 100 + i))
            .collect();
        expected.extend(events.iter().map(|e| e.event_id.clone()));
        let typed = batch_of(&next_batch_id().to_string(), events);
        let batch: WireBatch =
            prost::Message::decode(prost::Message::encode_to_vec(&typed).as_slice()).unwrap();
        paths.push(spill.write(&batch).unwrap().path);
    }
    // File 1 truncated, file 3 overwritten with garbage: their events are lost to
    // quarantine (kept there for inspection), the other three files replay.
    let bytes = std::fs::read(&paths[1]).unwrap();
    std::fs::write(&paths[1], &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(&paths[3], b"\xff\xff\xff\xff not protobuf").unwrap();
    expected.retain(|id| {
        let seq: usize = id.rsplit('-').next().unwrap().parse().unwrap();
        !(100..200).contains(&seq) && !(300..400).contains(&seq)
    });
    let weir = Weir::start_in(dir, &config(&toggle.url(), &[]));
    let recorder = toggle.recorder.clone();
    wait_until("the valid files at Toggle", Duration::from_secs(30), || {
        recorder.count() >= 300
    })
    .await;
    wait_until("an empty spill directory", Duration::from_secs(10), || {
        spill_files(&spill_dir).is_empty()
    })
    .await;
    assert_eq!(toggle.recorder.ids_by_source()["rodent://s"], expected);
    let quarantined = spill_files(&spill_dir.join("quarantine"));
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    let s = stats(&weir).await;
    assert_eq!(s["quarantined_files"], 2, "{s}");
    assert_eq!(s["replayed_files"], 3, "{s}");
    let logs = weir.logs.lock().unwrap().join("\n");
    assert!(logs.contains("quarantined"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_toggle_down_leaves_every_event_on_disk_and_weir_replay_delivers_them() {
    let mut toggle = ToggleServer::new(free_addr(), Recorder::default(), None);
    let weir = Weir::start(&config(&toggle.url(), &["batch_timeout_ms: 10"]));
    let url = weir.grpc_url().unwrap();
    let acked = agent(url, "rodent://t".into(), 3_000, 300).await;
    assert_eq!(acked.len(), 3_000);
    let s = stats(&weir).await;
    assert_eq!(s["pending_events"], 3_000, "{s}");
    let (ok, dir) = weir.terminate();
    assert!(ok, "clean exit on SIGTERM");
    let spill_dir = dir.path().join("data/spill/toggle");
    assert!(!spill_files(&spill_dir).is_empty());
    // `weir replay --spill` sends them to Toggle, oldest first, and deletes them.
    toggle.restart().await;
    let out = tokio::task::spawn_blocking({
        let spill_dir = spill_dir.clone();
        let url = toggle.url();
        move || {
            std::process::Command::new(weir_bin())
                .args([
                    "replay",
                    "--spill",
                    &spill_dir.display().to_string(),
                    "--to",
                    &url,
                ])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("replayed 3000 events"), "{stderr}");
    assert!(spill_files(&spill_dir).is_empty());
    let mut expected = BTreeMap::new();
    expected.insert("rodent://t".to_owned(), acked);
    assert_exactly_once_in_order(&toggle.recorder.ids_by_source(), &expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_that_are_not_toggle_events_are_dead_lettered_with_the_reason() {
    let toggle = ToggleServer::start().await;
    let cfg = config(&toggle.url(), &["batch_timeout_ms: 5"])
        .replace("from: [grpc]", "from: [http, grpc]");
    let weir = Weir::start(&cfg);
    let body = serde_json::to_string(&event(
        "plain-1",
        "com.example.plain",
        serde_json::json!({}),
    ))
    .unwrap();
    let (status, answer) = post(
        &format!("{}/v1/events", weir.url),
        &[("content-type", "application/cloudevents+json")],
        body,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let dead = weir.jsonl("dead-letter.jsonl");
    assert_eq!(dead.len(), 1, "{answer} {dead:?}");
    assert_eq!(answer["dead_lettered"], 1, "{answer}");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("plain-1") && reason.contains("not a Toggle event"),
        "{reason}"
    );
    assert_eq!(toggle.recorder.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_and_a_bearer_token_reach_toggle_and_a_wrong_token_spills_instead_of_losing() {
    use common::pki::Pki;
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let pki = Pki::new("toggle test CA");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (server_cert, server_key) = pki.issue("toggle", &["localhost", "127.0.0.1"]);
    let (client_cert, client_key) = pki.issue("weir-agent-relay", &[]);
    let ca = write("ca.pem", &pki.ca_pem);
    let cert = write("client.pem", &client_cert);
    let key = write("client.key", &client_key);
    let good_token = write("token", "s3cret-token\n");
    let bad_token = write("bad-token", "wrong");
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&server_cert, &server_key))
        .client_ca_root(Certificate::from_pem(&pki.ca_pem));
    let mut toggle =
        ToggleServer::new(free_addr(), Recorder::with_token("s3cret-token"), Some(tls));
    toggle.restart().await;
    let url = toggle.url();
    assert!(url.starts_with("https://"));
    let tls_line = format!("tls: {{ ca: {ca}, cert: {cert}, key: {key} }}");

    let weir = Weir::start(&config(
        &url,
        &[
            &tls_line,
            &format!("token: {{ file: {good_token} }}"),
            "batch_timeout_ms: 5",
        ],
    ));
    let acked = agent(weir.grpc_url().unwrap(), "rodent://tls".into(), 1_000, 100).await;
    assert_eq!(acked.len(), 1_000);
    assert_eq!(toggle.recorder.count(), 1_000);
    let s = stats(&weir).await;
    assert_eq!(s["sent_events"], 1_000, "{s}");

    // A wrong token: Toggle answers UNAUTHENTICATED; weir keeps the events on disk (an
    // operator can fix the token) instead of dropping them.
    let weir = Weir::start(&config(
        &url,
        &[
            &tls_line,
            &format!("token: {{ file: {bad_token} }}"),
            "batch_timeout_ms: 5",
        ],
    ));
    let acked = agent(weir.grpc_url().unwrap(), "rodent://tls".into(), 500, 100).await;
    assert_eq!(acked.len(), 500);
    assert_eq!(
        toggle.recorder.count(),
        1_000,
        "nothing accepted without the token"
    );
    let s = stats(&weir).await;
    assert_eq!(s["pending_events"], 500, "{s}");
    assert!(s["send_failures"].as_u64().unwrap() >= 1, "{s}");
    let logs = weir.logs.lock().unwrap().join("\n");
    assert!(logs.contains("Unauthenticated"), "{logs}");
    assert!(
        !logs.contains("wrong") && !logs.contains("s3cret"),
        "tokens are never logged"
    );

    // Without a client certificate the TLS handshake fails: spilled too.
    let weir = Weir::start(&config(
        &url,
        &[
            &format!("tls: {{ ca: {ca} }}"),
            &format!("token: {{ file: {good_token} }}"),
            "batch_timeout_ms: 5",
        ],
    ));
    let acked = agent(weir.grpc_url().unwrap(), "rodent://tls".into(), 200, 100).await;
    assert_eq!(acked.len(), 200);
    assert_eq!(toggle.recorder.count(), 1_000);
    assert_eq!(stats(&weir).await["pending_events"], 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_toggle_never_blocks_the_agent_beyond_max_block_and_loses_nothing() {
    let toggle = ToggleServer::start().await;
    // Toggle accepts connections but answers nothing for a minute.
    toggle.recorder.set_delay(Duration::from_secs(60));
    let weir = Weir::start(&config(
        &toggle.url(),
        &[
            "max_block_ms: 300",
            "replay_timeout_ms: 500",
            "retry_max_ms: 200",
        ],
    ));
    // If a write waited for Toggle, this agent would hang for a minute per batch.
    let acked = tokio::time::timeout(
        Duration::from_secs(30),
        agent(weir.grpc_url().unwrap(), "rodent://slow".into(), 2_000, 200),
    )
    .await
    .expect("the agent was acknowledged while Toggle stalled");
    assert_eq!(acked.len(), 2_000);
    let s = stats(&weir).await;
    assert!(s["spilled_events"].as_u64().unwrap() >= 2_000 - 200, "{s}");
    assert_eq!(toggle.recorder.count(), 0);
    // Toggle recovers: everything arrives from disk, once and in order.
    toggle.recorder.set_delay(Duration::ZERO);
    let recorder = toggle.recorder.clone();
    wait_until("recovery", Duration::from_secs(30), || {
        recorder.count() >= 2_000
    })
    .await;
    let spill_dir = weir.data("spill/toggle");
    wait_until("an empty spill directory", Duration::from_secs(10), || {
        spill_files(&spill_dir).is_empty()
    })
    .await;
    let mut expected = BTreeMap::new();
    expected.insert("rodent://slow".to_owned(), acked);
    assert_exactly_once_in_order(&toggle.recorder.ids_by_source(), &expected);
}
