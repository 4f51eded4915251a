//! The Kafka transport end to end: the real weir binary between topics of a real
//! Kafka-protocol broker (`tansu`, started per test on loopback with in-memory storage),
//! the `severity` filter component in between. Input is produced and output read with
//! rdkafka; nothing is mocked.

#![allow(clippy::unwrap_used)]

mod common;

use common::kafka::{binary_event, produce, read_all, Broker, Input, Record};
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedHeaders;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use weir::kafka::binding::{decode, RecordView};

const SEVERITIES: [&str; 4] = ["debug", "info", "warning", "error"];

fn data_of(i: usize) -> Vec<u8> {
    format!(r#"{{"roost":"r-{i}","n":{i}}}"#).into_bytes()
}

/// Event `i`: binary mode for even `i`, structured for odd; severity cycles through
/// debug, info, warning, error; the key is one of 97.
fn input(i: usize) -> Input {
    let id = format!("e-{i:06}");
    let key = format!("k{}", i % 97);
    let severity = SEVERITIES[i % 4];
    if i.is_multiple_of(2) {
        return binary_event(
            &id,
            "io.roost-keeper.roost.lifecycle.created",
            severity,
            Some(&key),
            &data_of(i),
        );
    }
    let body = serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "/tests/kafka",
        "type": "io.roost-keeper.roost.lifecycle.created",
        "time": "2026-12-01T10:00:00Z",
        "severity": severity,
        "datacontenttype": "application/json",
        "data": serde_json::from_slice::<serde_json::Value>(&data_of(i)).unwrap(),
    });
    (
        Some(key.into_bytes()),
        vec![(
            "content-type".to_owned(),
            b"application/cloudevents+json; charset=UTF-8".to_vec(),
        )],
        Some(serde_json::to_vec(&body).unwrap()),
    )
}

fn weir_config(broker: &Broker, source: &str, sinks: &str, route: &str) -> String {
    format!(
        "filters:\n{}kafka:\n  cluster:\n    brokers: [\"{}\"]\n  sources:\n{source}sinks:\n{sinks}routes:\n{route}",
        filter_yaml("severity", wasm::SEVERITY, "{min: info}"),
        broker.addr()
    )
}

fn decode_record(r: &Record) -> weir::event::Event {
    let mut headers = OwnedHeaders::new();
    for (k, v) in &r.headers {
        headers = headers.insert(rdkafka::message::Header {
            key: k,
            value: v.as_deref(),
        });
    }
    decode(&RecordView {
        headers: Some(&headers),
        key: r.key.as_deref(),
        payload: r.payload.as_deref(),
    })
    .unwrap_or_else(|e| panic!("output record is not a CloudEvent: {e}: {r:?}"))
}

/// The sum of a topic's high watermarks: how many records it holds.
fn topic_len(broker: &Broker, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = broker.client().create().unwrap();
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map(|(_, high)| high)
                .unwrap_or(0)
        })
        .sum()
}

/// Reads the whole topic again and again until it holds `n` distinct event ids (or two
/// minutes passed); answers every record read, duplicates included.
fn read_until_distinct(broker: &Broker, topic: &str, partitions: i32, n: usize) -> Vec<Record> {
    tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = read_all(
                broker,
                topic,
                partitions,
                usize::MAX,
                Duration::from_secs(3),
            );
            let ids: BTreeSet<String> = out.iter().filter_map(|r| r.header("ce_id")).collect();
            if ids.len() >= n || Instant::now() > deadline {
                return out;
            }
        }
    })
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Input produced one record per batch, as in the crash tests: the two consumers' start-up
/// rebalance moves partitions mid-stream, and the test broker, resuming a fetch from a
/// committed offset inside a multi-record batch, skips to the next batch (a CI run lost 32
/// events that way, in the broker: weir never consumed them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_filter_kafka_100k_in_both_binding_modes() {
    let broker = Broker::start();
    broker
        .create_topics(&["in", "out-bin", "out-struct"], 3)
        .await;
    const N: usize = 100_000;
    let records: Vec<Input> = (0..N).map(input).collect();
    produce(&broker.producer(true), "in", records).await;
    let weir = Weir::start(&weir_config(
        &broker,
        "    input:\n      topics: [in]\n      group_id: e2e\n      auto_offset_reset: earliest\n      instances: 2\n",
        "  out-bin:\n    type: kafka\n    topic: out-bin\n    mode: binary\n    compression: lz4\n  out-struct:\n    type: kafka\n    topic: out-struct\n    mode: structured\n    compression: zstd\n",
        "  - name: kafka\n    from: [kafka]\n    filters: [severity]\n    to: [out-bin, out-struct]\n",
    ));
    let expected: BTreeSet<usize> = (0..N).filter(|i| !i.is_multiple_of(4)).collect();
    for (topic, structured) in [("out-bin", false), ("out-struct", true)] {
        let out = tokio::task::block_in_place(|| {
            read_all(&broker, topic, 3, expected.len(), Duration::from_secs(90))
        });
        if out.len() != expected.len() {
            let consumed = consumed_total(&weir).await;
            panic!(
                "{topic}: {} of {} kept events arrived; weir consumed {consumed} of {N} records",
                out.len(),
                expected.len()
            );
        }
        let mut seen = BTreeSet::new();
        for r in &out {
            let e = decode_record(r);
            let i: usize = e.id.trim_start_matches("e-").parse().unwrap();
            assert!(seen.insert(i), "{topic}: {} twice", e.id);
            assert_eq!(e.source, "/tests/kafka");
            assert_eq!(e.ty, "io.roost-keeper.roost.lifecycle.created");
            assert_eq!(e.time.as_deref(), Some("2026-12-01T10:00:00Z"));
            assert_eq!(e.extension("severity"), Some(SEVERITIES[i % 4]));
            let key = format!("k{}", i % 97);
            assert_eq!(e.extension("partitionkey"), Some(key.as_str()));
            assert_eq!(
                r.key.as_deref(),
                Some(key.as_bytes()),
                "key from partitionkey"
            );
            assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
            let data: serde_json::Value =
                serde_json::from_slice(e.data.as_deref().unwrap()).unwrap();
            assert_eq!(
                data,
                serde_json::from_slice::<serde_json::Value>(&data_of(i)).unwrap()
            );
            if structured {
                assert!(r
                    .header("content-type")
                    .unwrap()
                    .starts_with("application/cloudevents+json"));
            } else {
                assert_eq!(r.header("ce_id").as_deref(), Some(e.id.as_str()));
                assert_eq!(
                    r.header("content-type").as_deref(),
                    Some("application/json")
                );
            }
        }
        assert_eq!(
            seen, expected,
            "{topic}: debug events were filtered, the rest arrived"
        );
        // Nothing more than that: no event twice, even with the group's start-up
        // rebalance between the two consumers (counted by reading the whole topic: the
        // test broker's high watermarks are not its logs' ends).
        let all = tokio::task::block_in_place(|| {
            read_all(&broker, topic, 3, usize::MAX, Duration::from_secs(3))
        });
        assert_eq!(all.len(), expected.len(), "{topic}: nothing arrived twice");
    }
    assert_eq!(consumed_total(&weir).await, N, "consumed counter");
    let (_, metrics) = get_text(&format!("{}/metrics", weir.url)).await;
    assert!(metrics.contains("weir_kafka_publish_seconds_bucket{sink=\"out-bin\""));
}

/// The sum of `weir_kafka_consumed_total` over its labels.
async fn consumed_total(weir: &Weir) -> usize {
    let (_, metrics) = get_text(&format!("{}/metrics", weir.url)).await;
    metric_sum(&metrics, "weir_kafka_consumed_total{") as usize
}

/// Input produced one record per batch: the test broker, resuming a fetch from an
/// offset inside a multi-record batch, skips to the next batch (records would be lost in
/// the broker, not in weir), so a resume from a committed offset is only exact this way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing_and_duplicates_stay_within_the_bound() {
    let broker = Broker::start();
    broker.create_topics(&["in", "out"], 2).await;
    const N: usize = 20_000;
    let records: Vec<Input> = (0..N)
        .map(|i| {
            binary_event(
                &format!("e-{i:06}"),
                "io.roost-keeper.trigger.scale",
                "info",
                Some(&format!("k{}", i % 13)),
                &data_of(i),
            )
        })
        .collect();
    produce(&broker.producer(true), "in", records).await;
    // The documented bound per consumer: max_in_flight × max_batch records handed on but
    // unfinished, plus those finished since the last commit (commit_interval_ms).
    let config = weir_config(
        &broker,
        "    input:\n      topics: [in]\n      group_id: crash\n      auto_offset_reset: earliest\n      max_batch: 200\n      max_in_flight: 2\n      commit_interval_ms: 100\n",
        "  out:\n    type: kafka\n    topic: out\n",
        "  - name: kafka\n    from: [kafka]\n    to: [out]\n",
    );
    let weir = Weir::start(&config);
    wait_for("output before the kill", Duration::from_secs(60), || {
        topic_len(&broker, "out", 2) >= 4000
    });
    let before = topic_len(&broker, "out", 2);
    let dir = weir.kill();
    let after_kill = topic_len(&broker, "out", 2);
    assert!(
        (after_kill as usize) < N,
        "killed mid-stream (got {after_kill} of {N} already)"
    );
    let _weir = Weir::start_in(dir, &config);
    let out = read_until_distinct(&broker, "out", 2, N);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in &out {
        *counts.entry(r.header("ce_id").unwrap()).or_default() += 1;
    }
    let missing: Vec<usize> = (0..N)
        .filter(|i| !counts.contains_key(&format!("e-{i:06}")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} events lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let duplicates = out.len() - N;
    eprintln!("killed after {before}..{after_kill} outputs; {duplicates} duplicates after restart");
    // 2 × 200 in flight, plus at most 100 ms of finished batches (≤ 2,000 at the
    // 20k/s this path runs here), with margin for the commit request's own time.
    assert!(
        duplicates <= 4_000,
        "{duplicates} duplicates exceed the bound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dead_letter_topic_and_the_partition_flows() {
    let broker = Broker::start();
    broker.create_topics(&["in", "out", "dlq"], 1).await;
    let valid = |n: usize| {
        binary_event(
            &format!("ok-{n}"),
            "io.roost-keeper.trigger.teardown",
            "error",
            None,
            b"{}",
        )
    };
    let h = |k: &str, v: &[u8]| (k.to_owned(), v.to_vec());
    let records: Vec<Input> = vec![
        valid(1),
        (
            Some(b"raw".to_vec()),
            vec![h("x-app", b"legacy")],
            Some(b"\x00\x01not a cloud event".to_vec()),
        ),
        valid(2),
        (
            None,
            vec![h("content-type", b"application/cloudevents+json")],
            Some(b"{\"specversion\": \"1.0\", oops".to_vec()),
        ),
        valid(3),
        (
            None,
            vec![
                h("ce_specversion", b"1.0"),
                h("ce_id", b"big"),
                h("ce_source", b"/s"),
                h("ce_type", b"t"),
                h("ce_big", &vec![b'x'; 100_000]),
            ],
            Some(b"{}".to_vec()),
        ),
        valid(4),
        (
            None,
            vec![
                h("ce_specversion", b"1.0"),
                h("ce_id", b"no-type"),
                h("ce_source", b"/s"),
            ],
            Some(b"{}".to_vec()),
        ),
        valid(5),
    ];
    produce(&broker.producer(false), "in", records).await;
    let weir = Weir::start(&weir_config(
        &broker,
        "    input:\n      topics: [in]\n      group_id: poison\n      auto_offset_reset: earliest\n      dead_letter: dlq\n      max_message_bytes: 65536\n",
        "  out:\n    type: kafka\n    topic: out\n  dlq:\n    type: kafka\n    topic: dlq\n",
        "  - name: kafka\n    from: [kafka]\n    filters: [severity]\n    to: [out]\n    dead_letter: dlq\n",
    ));
    let out =
        tokio::task::block_in_place(|| read_all(&broker, "out", 1, 5, Duration::from_secs(60)));
    let ids: Vec<String> = out.iter().filter_map(|r| r.header("ce_id")).collect();
    assert_eq!(
        ids,
        ["ok-1", "ok-2", "ok-3", "ok-4", "ok-5"],
        "the partition flowed in order"
    );
    let dlq =
        tokio::task::block_in_place(|| read_all(&broker, "dlq", 1, 4, Duration::from_secs(30)));
    assert_eq!(dlq.len(), 4, "one dead letter per poison record");
    let reasons: Vec<String> = dlq
        .iter()
        .map(|r| r.header("weir_dlq_reason").unwrap())
        .collect();
    assert!(reasons[0].contains("no ce_specversion"), "{}", reasons[0]);
    assert!(reasons[1].starts_with("structured value"), "{}", reasons[1]);
    assert!(
        reasons[2].contains("larger than the source's limit of 65536"),
        "{}",
        reasons[2]
    );
    assert!(reasons[3].contains("`type`"), "{}", reasons[3]);
    for (r, offset) in dlq.iter().zip([1, 3, 5, 7]) {
        assert_eq!(r.header("weir_dlq_stage").as_deref(), Some("decode"));
        assert_eq!(r.header("weir_dlq_topic").as_deref(), Some("in"));
        assert_eq!(r.header("weir_dlq_offset"), Some(offset.to_string()));
    }
    // The original record, byte for byte: key, headers, value.
    assert_eq!(dlq[0].key.as_deref(), Some(&b"raw"[..]));
    assert_eq!(dlq[0].header("x-app").as_deref(), Some("legacy"));
    assert_eq!(
        dlq[0].payload.as_deref(),
        Some(&b"\x00\x01not a cloud event"[..])
    );
    assert_eq!(dlq[2].header("ce_big").map(|v| v.len()), Some(100_000));
    let (_, metrics) = get_text(&format!("{}/metrics", weir.url)).await;
    assert_eq!(
        metric(
            &metrics,
            "weir_dead_letters_total{sink=\"dlq\",stage=\"decode\"}"
        ),
        Some(4.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "weir_kafka_consumed_total{topic=\"in\",type=\"undecodable\"}"
        ),
        Some(4.0)
    );
    // Replay a range of the input topic by offset: records 0..=2 are ok-1, the garbage
    // record (not replayable, counted) and ok-2.
    let out = std::process::Command::new(weir_bin())
        .args([
            "replay",
            "--topic",
            "in",
            "--from-offset",
            "0",
            "--to-offset",
            "2",
        ])
        .args([
            "--brokers",
            &broker.addr(),
            "--route",
            "kafka",
            "--to",
            &weir.url,
        ])
        .arg("--admin-token-file")
        .arg(weir.data("admin-token"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("replayed 2 events"), "{stderr}\n{stdout}");
    assert!(stderr.contains("1 not replayable"), "{stderr}");
    let again =
        tokio::task::block_in_place(|| read_all(&broker, "out", 1, 7, Duration::from_secs(30)));
    let replayed: Vec<(String, String)> = again
        .iter()
        .filter_map(|r| Some((r.header("ce_id")?, r.header("ce_weirreplay")?)))
        .collect();
    assert_eq!(
        replayed,
        [
            ("ok-1".to_owned(), "kafka:in".to_owned()),
            ("ok-2".to_owned(), "kafka:in".to_owned())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_opens_the_circuit_dead_letters_and_replay_delivers() {
    let input = Broker::start();
    input.create_topics(&["in"], 1).await;
    let mut output = Broker::start();
    output.create_topics(&["out"], 1).await;
    let out_port = output.port;
    let config = format!(
        "kafka:\n  cluster:\n    brokers: [\"{}\"]\n  sources:\n    input:\n      topics: [in]\n      group_id: breaker\n      auto_offset_reset: earliest\n      max_batch: 50\nsinks:\n  out:\n    type: kafka\n    topic: out\n    message_timeout_ms: 1500\n    retry: {{max_retries: 1, initial_backoff_ms: 100, max_backoff_ms: 200}}\n    circuit_breaker: {{failure_threshold: 2, recovery_timeout_ms: 3000}}\n    cluster:\n      brokers: [\"{}\"]\n  dlq:\n    type: file\n    path: dlq.jsonl\nroutes:\n  - name: kafka\n    from: [kafka]\n    to: [out]\n    dead_letter: dlq\n",
        input.addr(),
        output.addr()
    );
    let weir = Weir::start(&config);
    let batch = |prefix: &str, n: usize| -> Vec<Input> {
        (0..n)
            .map(|i| {
                binary_event(
                    &format!("{prefix}-{i:03}"),
                    "io.roost-keeper.trigger.update",
                    "info",
                    None,
                    b"{}",
                )
            })
            .collect()
    };
    let producer = input.producer(false);
    produce(&producer, "in", batch("a", 100)).await;
    let a =
        tokio::task::block_in_place(|| read_all(&output, "out", 1, 100, Duration::from_secs(30)));
    assert_eq!(a.len(), 100, "delivered while the sink's broker is up");

    // The sink's broker goes away: writes fail after the client's timeout and one retry,
    // the events are dead-lettered, and after two failed writes the circuit opens.
    output.stop();
    // Waves of 50 until the circuit has opened and refused a write at once (how the
    // route groups them into writes depends on timing); at least 300 in all.
    let metrics_url = format!("{}/metrics", weir.url);
    let mut saw_open = false;
    let mut sent = 0;
    let refused_once = |letters: &[serde_json::Value]| {
        letters
            .iter()
            .any(|l| l["reason"].as_str().unwrap_or("").contains("circuit open"))
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if sent < 300 || !(saw_open && refused_once(&weir.jsonl("dlq.jsonl"))) {
            produce(&producer, "in", batch(&format!("b{sent}"), 50)).await;
            sent += 50;
        }
        // Each wave is dead-lettered before the next (writes fail or are refused).
        while weir.jsonl("dlq.jsonl").len() < sent {
            assert!(
                Instant::now() < deadline,
                "dead letters: {} of {sent}",
                weir.jsonl("dlq.jsonl").len()
            );
            let (_, m) = get_text(&metrics_url).await;
            saw_open |= metric(&m, "weir_sink_circuit_state{sink=\"out\"}") == Some(1.0);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, m) = get_text(&metrics_url).await;
        saw_open |= metric(&m, "weir_sink_circuit_state{sink=\"out\"}") == Some(1.0);
        if sent >= 300 && saw_open && refused_once(&weir.jsonl("dlq.jsonl")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the circuit never refused a write"
        );
    }
    let letters = weir.jsonl("dlq.jsonl");
    assert!(saw_open, "the circuit opened");
    assert!(
        letters.iter().all(|l| l["stage"] == "out"),
        "failed at the sink"
    );
    assert!(
        letters
            .iter()
            .any(|l| l["reason"].as_str().unwrap().contains("circuit open")),
        "later writes were refused at once by the open circuit"
    );
    assert!(
        letters
            .iter()
            .any(|l| l["reason"].as_str().unwrap().contains("timed out")),
        "the first writes failed with the client's timeout"
    );
    let (_, m) = get_text(&metrics_url).await;
    assert!(
        metric(&m, "weir_sink_retries_total{sink=\"out\"}").unwrap_or(0.0) >= 1.0,
        "retried"
    );
    assert!(metric(&m, "weir_sink_circuit_refused_total{sink=\"out\"}").unwrap_or(0.0) >= 1.0);

    // The broker is back (empty: in-memory storage); after the recovery timeout a probe
    // write goes through and the circuit closes.
    let output = Broker::start_on(out_port);
    output.create_topics(&["out"], 1).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    loop {
        produce(&producer, "in", batch(&format!("c{n}"), 10)).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, m) = get_text(&metrics_url).await;
        if metric(&m, "weir_sink_circuit_state{sink=\"out\"}") == Some(0.0)
            && topic_len(&output, "out", 1) > 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the circuit did not close; last dead letter: {}",
            weir.jsonl("dlq.jsonl")
                .iter()
                .rev()
                .map(|l| l["reason"].to_string())
                .find(|r| !r.contains("circuit open"))
                .unwrap_or_default()
        );
    }

    // Replay the dead letters through the route: they reach the topic, marked as replayed.
    let dead: BTreeSet<String> = weir
        .jsonl("dlq.jsonl")
        .iter()
        .map(|l| l["event"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(dead.len() >= sent);
    let replay = weir.replay_dlq("dlq.jsonl", "kafka");
    assert!(
        replay.status.success(),
        "weir replay: {}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let out = tokio::task::block_in_place(|| {
        read_all(&output, "out", 1, usize::MAX, Duration::from_secs(5))
    });
    let replayed: BTreeSet<String> = out
        .iter()
        .filter(|r| r.header("ce_weirreplay").is_some())
        .filter_map(|r| r.header("ce_id"))
        .collect();
    let missing: Vec<&String> = dead.difference(&replayed).collect();
    assert!(missing.is_empty(), "not replayed: {missing:?}");
    let delivered: BTreeSet<String> = out.iter().filter_map(|r| r.header("ce_id")).collect();
    for c in 0..n {
        for i in 0..10 {
            let id = format!("c{c}-{i:03}");
            assert!(
                delivered.contains(&id),
                "{id} neither delivered nor replayed"
            );
        }
    }
}

/// The Roost Keeper example: lifecycle events published over HTTP land on the lifecycle
/// topic; trigger events consumed from Kafka are routed by the `trigger-route` filter to
/// their handler topics, everything else to the audit topic (published asynchronously).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roost_keeper_lifecycle_publishing_and_trigger_routing() {
    let mut broker = Broker::start();
    broker
        .create_topics(&["triggers", "lifecycle", "teardown", "scale", "audit"], 1)
        .await;
    let config = format!(
        "metrics:\n  event_types: [io.roost-keeper.trigger.scale]\nfilters:\n{}kafka:\n  cluster:\n    brokers: [\"{}\"]\n  sources:\n    triggers:\n      topics: [triggers]\n      group_id: roost\n      auto_offset_reset: earliest\n      route: triggers\nsinks:\n  lifecycle: {{type: kafka, topic: lifecycle}}\n  teardown-handler: {{type: kafka, topic: teardown, compression: gzip}}\n  scale-handler: {{type: kafka, topic: scale, compression: snappy}}\n  audit: {{type: kafka, topic: audit, mode: structured, publish: async}}\nroutes:\n  - name: lifecycle\n    from: [http]\n    to: [lifecycle]\n  - name: triggers\n    from: [kafka]\n    filters: [trigger-route]\n    to: [audit]\n    routable: [teardown-handler, scale-handler]\n",
        filter_yaml(
            "trigger-route",
            wasm::TRIGGER_ROUTE,
            "{routes: {teardown: teardown-handler, scale: scale-handler}}"
        ),
        broker.addr()
    );
    let weir = Weir::start(&config);
    let created = event(
        "l-1",
        "io.roost-keeper.roost.lifecycle.created",
        serde_json::json!({"subject": "roost/default/my-roost", "data": {"roost": {"name": "my-roost"}}}),
    );
    let (status, answer) = post(
        &format!("{}/v1/routes/lifecycle/events", weir.url),
        &[("content-type", "application/cloudevents+json")],
        serde_json::to_vec(&created).unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer["delivered"], 1,
        "acknowledged by the brokers before the answer"
    );
    let lifecycle = tokio::task::block_in_place(|| {
        read_all(&broker, "lifecycle", 1, 1, Duration::from_secs(20))
    });
    assert_eq!(lifecycle.len(), 1);
    assert_eq!(
        lifecycle[0].header("ce_subject").as_deref(),
        Some("roost/default/my-roost")
    );
    let ty = |t: &str| format!("io.roost-keeper.trigger.{t}");
    let triggers: Vec<Input> = [
        ("t-1", ty("teardown")),
        ("t-2", ty("scale")),
        ("t-3", ty("update")),
        ("t-4", "io.roost-keeper.roost.phase.transitioned".to_owned()),
    ]
    .iter()
    .map(|(id, t)| binary_event(id, t, "info", None, b"{}"))
    .collect();
    produce(&broker.producer(false), "triggers", triggers).await;
    let ids = |topic: &str, n: usize| -> Vec<String> {
        tokio::task::block_in_place(|| read_all(&broker, topic, 1, n, Duration::from_secs(30)))
            .iter()
            .map(|r| decode_record(r).id)
            .collect()
    };
    assert_eq!(ids("teardown", 1), ["t-1"]);
    assert_eq!(ids("scale", 1), ["t-2"]);
    assert_eq!(
        ids("audit", 2),
        ["t-3", "t-4"],
        "unrouted triggers and other events go on"
    );
    // The audit sink publishes asynchronously: its records are counted as their
    // acknowledgements come in (which may be just after a reader saw them).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, m) = get_text(&format!("{}/metrics", weir.url)).await;
        let audit_published = metric_sum(&m, "weir_kafka_published_total{sink=\"audit\"");
        if audit_published == 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "async acknowledgements counted: {audit_published}\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Event types are label values only when configured (`metrics.event_types`): the
    // others, which any producer chooses, count as `other`.
    let (_, m) = get_text(&format!("{}/metrics", weir.url)).await;
    let consumed = |ty: &str| {
        metric(
            &m,
            &format!("weir_kafka_consumed_total{{topic=\"triggers\",type=\"{ty}\"}}"),
        )
    };
    assert_eq!(consumed("io.roost-keeper.trigger.scale"), Some(1.0), "{m}");
    assert_eq!(consumed("other"), Some(3.0), "{m}");
    assert!(!m.contains("trigger.teardown\""), "{m}");
    assert_eq!(
        metric(
            &m,
            "weir_kafka_published_total{sink=\"lifecycle\",topic=\"lifecycle\",type=\"other\"}"
        ),
        Some(1.0),
        "{m}"
    );
    // The Roost Keeper's per-type publish and consume durations and health gauges, with
    // the same bounded type labels.
    assert_eq!(
        metric(
            &m,
            "weir_kafka_event_consume_seconds_count{topic=\"triggers\",type=\"io.roost-keeper.trigger.scale\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "weir_kafka_event_consume_seconds_count{topic=\"triggers\",type=\"other\"}"
        ),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "weir_kafka_event_publish_seconds_count{sink=\"lifecycle\",type=\"other\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "weir_kafka_producer_up{sink=\"lifecycle\"}"),
        Some(1.0),
        "{m}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        // The consumer's health comes with the client's statistics (every 5 s).
        let (_, m) = get_text(&format!("{}/metrics", weir.url)).await;
        if metric(&m, "weir_kafka_consumer_up{source=\"triggers\"}") == Some(1.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // With the broker gone, both say so.
    broker.stop();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, m) = get_text(&format!("{}/metrics", weir.url)).await;
        if metric(&m, "weir_kafka_consumer_up{source=\"triggers\"}") == Some(0.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// SIGTERM stops reading, finishes the batches in flight and commits them: a restarted
/// router repeats nothing. Input is one record per batch, as in the SIGKILL test (the
/// test broker loses records when a fetch resumes inside a batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_what_was_delivered_and_a_restart_repeats_nothing() {
    let broker = Broker::start();
    broker.create_topics(&["in", "out"], 2).await;
    const N: usize = 5_000;
    let records: Vec<Input> = (0..N)
        .map(|i| {
            binary_event(
                &format!("e-{i:05}"),
                "io.roost-keeper.roost.health.changed",
                "warning",
                Some(&format!("k{}", i % 7)),
                &data_of(i),
            )
        })
        .collect();
    produce(&broker.producer(true), "in", records).await;
    let config = weir_config(
        &broker,
        "    input:\n      topics: [in]\n      group_id: term\n      auto_offset_reset: earliest\n      max_batch: 10\n      max_in_flight: 1\n",
        "  out:\n    type: kafka\n    topic: out\n",
        "  - name: kafka\n    from: [kafka]\n    filters: [severity]\n    to: [out]\n",
    );
    let weir = Weir::start(&config);
    // Small batches, one at a time: slow enough to stop it mid-stream.
    wait_for("output before SIGTERM", Duration::from_secs(60), || {
        topic_len(&broker, "out", 2) >= 500
    });
    let (ok, dir) = weir.terminate();
    assert!(ok, "clean exit on SIGTERM");
    let before = tokio::task::block_in_place(|| {
        read_all(&broker, "out", 2, usize::MAX, Duration::from_secs(3))
    });
    assert!(
        before.len() < N,
        "stopped mid-stream ({} of {N})",
        before.len()
    );
    let weir = Weir::start_in(dir, &config);
    // The lag gauge comes from the client's statistics (every 5 s).
    let metrics_url = format!("{}/metrics", weir.url);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, m) = get_text(&metrics_url).await;
        if m.contains("weir_kafka_consumer_lag{group=\"term\",partition=\"0\",topic=\"in\"}") {
            break;
        }
        assert!(Instant::now() < deadline, "no consumer lag gauge");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = read_until_distinct(&broker, "out", 2, N);
    let ids: BTreeSet<String> = out.iter().filter_map(|r| r.header("ce_id")).collect();
    assert_eq!(ids.len(), N, "every event arrived");
    assert_eq!(out.len(), N, "none twice across SIGTERM and restart");
}

/// `publish: async` answers once the records are queued in the client; a record the
/// brokers never take (here: a topic that does not exist, which the test broker does not
/// create) is counted in `weir_kafka_publish_failed_total` when its timeout settles it,
/// and the router goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_publishing_counts_records_the_brokers_never_take() {
    let broker = Broker::start();
    broker.create_topics(&["kept"], 1).await;
    let config = format!(
        "kafka:\n  cluster:\n    brokers: [\"{}\"]\nsinks:\n  lost: {{type: kafka, topic: no-such-topic, publish: async, message_timeout_ms: 1500}}\n  kept: {{type: kafka, topic: kept, publish: async}}\nroutes:\n  - name: fire\n    from: [http]\n    to: [lost]\n  - name: keep\n    from: [http]\n    to: [kept]\n",
        broker.addr()
    );
    let mut weir = Weir::start(&config);
    let batch = serde_json::json!([
        event(
            "a-1",
            "io.roost-keeper.trigger.scale",
            serde_json::json!({})
        ),
        event(
            "a-2",
            "io.roost-keeper.trigger.scale",
            serde_json::json!({})
        ),
        event(
            "a-3",
            "io.roost-keeper.trigger.scale",
            serde_json::json!({})
        ),
    ]);
    let (status, answer) = post_batch(&weir.url, &batch).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["delivered"], 6, "queued in the client: {answer}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, m) = get_text(&format!("{}/metrics", weir.url)).await;
        let failed = metric_sum(&m, "weir_kafka_publish_failed_total{sink=\"lost\"");
        let published = metric_sum(&m, "weir_kafka_published_total{sink=\"kept\"");
        if failed == 3.0 && published == 3.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "failed {failed}, published {published}\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kept =
        tokio::task::block_in_place(|| read_all(&broker, "kept", 1, 3, Duration::from_secs(20)));
    assert_eq!(kept.len(), 3, "the other sink's records arrived");
    assert!(weir.alive(), "the router goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_reaches_a_broker_only_over_mutual_tls() {
    let pki = common::pki::Pki::new("kafka test CA");
    let broker = Broker::start_tls(&pki);
    broker.create_topics(&["tls-in", "tls-out"], 3).await;
    const N: usize = 2_000;
    produce(
        &broker.producer(false),
        "tls-in",
        (0..N).map(input).collect(),
    )
    .await;
    let (weir_cert, weir_key) = pki.issue("weir", &[]);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (ca, cert, key) = (
        write("ca.pem", &pki.ca_pem),
        write("weir.pem", &weir_cert),
        write("weir.key", &weir_key),
    );
    let security = format!(
        "    security:\n      protocol: ssl\n      ca: {ca}\n      cert: {cert}\n      key: {key}\n"
    );
    let config = weir_config(
        &broker,
        "    input:\n      topics: [tls-in]\n      group_id: tls\n      auto_offset_reset: earliest\n",
        "  out:\n    type: kafka\n    topic: tls-out\n",
        "  - name: kafka\n    from: [kafka]\n    filters: [severity]\n    to: [out]\n",
    )
    .replacen("\n  sources:", &format!("\n{security}  sources:"), 1);
    assert!(config.contains("protocol: ssl"), "{config}");
    let weir = Weir::start(&config);
    let expected = (0..N).filter(|i| !i.is_multiple_of(4)).count();
    let out = read_until_distinct(&broker, "tls-out", 3, expected);
    let ids: BTreeSet<String> = out.iter().filter_map(|r| r.header("ce_id")).collect();
    assert_eq!(
        ids.len(),
        expected,
        "every kept event crossed TLS both ways"
    );
    let (proxy, _) = broker.tls.as_ref().unwrap();
    let clients = proxy.clients.lock().unwrap().clone();
    assert!(
        clients.iter().filter(|cn| *cn == "weir").count() >= 2,
        "weir's consumer and producer connected with its certificate: {clients:?}"
    );

    // Without a client certificate the terminator refuses the handshake: nothing reaches
    // the broker that does not present one.
    let refused_before = proxy.refused.load(std::sync::atomic::Ordering::SeqCst);
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", broker.addr())
        .set("security.protocol", "ssl")
        .set("ssl.ca.location", &ca);
    let anonymous: BaseConsumer = c.create().unwrap();
    let answer =
        tokio::task::block_in_place(|| anonymous.fetch_metadata(None, Duration::from_secs(3)));
    assert!(
        answer.is_err(),
        "a client without a certificate got metadata"
    );
    assert!(proxy.refused.load(std::sync::atomic::Ordering::SeqCst) > refused_before);
    drop(weir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topics_are_created_at_start_up_with_three_partitions() {
    let broker = Broker::start();
    // Only the input exists, with one partition: weir leaves it as it is and creates
    // the sink's topic and the source's second topic.
    broker.create_topics(&["given"], 1).await;
    let config = weir_config(
        &broker,
        "    input:\n      topics: [given, made-in, \"^pattern-.*\"]\n      group_id: prov\n      auto_offset_reset: earliest\n",
        "  out:\n    type: kafka\n    topic: made-out\n",
        "  - name: kafka\n    from: [kafka]\n    filters: [severity]\n    to: [out]\n",
    )
    .replacen(
        "\n  sources:",
        "\n  topics:\n    auto_create: true\n    default_partitions: 3\n    replication_factor: 1\n  sources:",
        1,
    );
    let weir = Weir::start(&config);
    let partitions = |topic: &str| {
        let consumer: BaseConsumer = broker.client().create().unwrap();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .unwrap();
        metadata
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map_or(0, |t| t.partitions().len())
    };
    tokio::task::block_in_place(|| {
        assert_eq!(partitions("made-in"), 3);
        assert_eq!(partitions("made-out"), 3);
        assert_eq!(partitions("given"), 1, "an existing topic is left as it is");
    });
    // The created topics carry events.
    produce(
        &broker.producer(false),
        "made-in",
        (0..100).map(input).collect(),
    )
    .await;
    let out = read_until_distinct(&broker, "made-out", 3, 75);
    let ids: BTreeSet<String> = out.iter().filter_map(|r| r.header("ce_id")).collect();
    assert_eq!(ids.len(), 75);
    let logs = weir.logs.lock().unwrap().join("\n");
    let created = logs
        .lines()
        .find(|l| l.contains("created Kafka topics"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(
        created.contains(r#"created=["made-in", "made-out"]"#),
        "the sink's and the source's missing topics, no pattern: {created:?}"
    );

    // Nonsense settings are a configuration error naming the field. (A broker's refusal
    // to create a topic also stops the start, with its reason; tansu accepts any
    // replication factor on one broker, so that path is not exercised here.)
    let bad = config.replace("default_partitions: 3", "default_partitions: 0");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    let text = format!(
        "listen: 127.0.0.1:0\ndata_dir: {}\n{bad}",
        dir.path().join("data").display()
    );
    std::fs::write(&path, text).unwrap();
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(weir_bin())
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    });
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kafka.topics") && stderr.contains("default_partitions"),
        "{stderr}"
    );
}
