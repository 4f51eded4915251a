//! Kafka → `severity` filter → Kafka through the test broker (`tansu`, in-memory storage,
//! started on loopback), side by side with the transport's own ceiling: a bare rdkafka
//! consume → produce loop with the same client settings (consumer group with manual
//! offset store, idempotent producer with `acks=all`, the same linger and batch sizes),
//! no filters and no CloudEvents decoding.
//!
//! Two measurements per system:
//! - throughput: a backlog of N records is drained; the rate is taken between the first
//!   and the last output record (start-up excluded for both);
//! - latency: a paced producer sends R records/s for S seconds, each stamped with its
//!   send time; a reader of the output topic reports p50/p99/max end to end (weir with
//!   the same source and route settings as the drain, `WEIR_BENCH_BATCH` included).
//!
//! Every event is `info` or above, so the filter runs on each and keeps each: both
//! systems move the same records.
//!
//! Run: `cargo bench -p weir --bench kafka_path` (needs `tansu` on the PATH or in
//! `$TANSU_BIN`, and `severity.wasm`: `cargo build --release --target wasm32-wasip2 -p
//! severity`, or `WEIR_BENCH_WASM`). `WEIR_BENCH_EVENTS` (default 200,000),
//! `WEIR_BENCH_RATE` (default 5,000/s), `WEIR_BENCH_SECONDS` (default 5),
//! `WEIR_BENCH_ROUNDS` (default 3: drain rounds per system, in alternating order; the
//! medians are compared), `WEIR_BENCH_FETCH_WAIT` (`fetch.wait.max.ms` of both systems'
//! consumers, default weir's 100).

#![allow(missing_docs, clippy::unwrap_used)]

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod support;
use support::wasm_path;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PARTITIONS: i32 = 3;
const SEVERITIES: [&str; 3] = ["info", "warning", "error"];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return p.into();
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let bin = home.join("bin/tansu");
    if bin.exists() {
        bin
    } else {
        "tansu".into()
    }
}

struct Broker(Child, String);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_broker() -> Broker {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu_bin())
        .args(["broker", "--storage-engine", "memory://tansu/"])
        .args(["--listener-url", &url, "--advertised-listener-url", &url])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu (cargo install --locked tansu --features dynostore)");
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "tansu did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Broker(child, addr)
}

fn client(addr: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr);
    c
}

/// The producer settings weir's Kafka sink uses by default.
fn producer_config(addr: &str) -> ClientConfig {
    let mut c = client(addr);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.codec", "none")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "10000")
        .set("message.timeout.ms", "30000");
    c
}

/// `fetch.wait.max.ms` for both systems: weir's default (`fetch_wait_max_ms`, 100), or
/// `WEIR_BENCH_FETCH_WAIT`.
fn fetch_wait() -> u64 {
    env_or("WEIR_BENCH_FETCH_WAIT", 100)
}

/// The consumer settings weir's Kafka source uses.
fn consumer_config(addr: &str, group: &str) -> ClientConfig {
    let mut c = client(addr);
    c.set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", fetch_wait().to_string());
    for (k, v) in FETCH {
        c.set(k, v);
    }
    c
}

/// Fetch sizes above any batch the producers here make: the test broker, asked for a
/// fetch that starts inside a batch (one cut by the fetch size), skips the rest of that
/// batch — records would vanish in the broker. Both systems get the same settings.
const FETCH: [(&str, &str); 2] = [
    ("max.partition.fetch.bytes", "67108864"),
    ("fetch.max.bytes", "134217728"),
];

async fn create_topics(addr: &str, names: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = client(addr).create().unwrap();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for r in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A binary-mode CloudEvent record of about 250 bytes.
fn record(i: u64, sent_ns: Option<u64>) -> (String, OwnedHeaders, Vec<u8>) {
    let id = format!("e-{i:08}");
    let mut h = OwnedHeaders::new_with_capacity(8);
    let sev = SEVERITIES[(i % 3) as usize];
    let sent = sent_ns.map(|s| s.to_string());
    for (k, v) in [
        ("ce_specversion", "1.0"),
        ("ce_id", id.as_str()),
        ("ce_source", "/bench/kafka"),
        ("ce_type", "io.roost-keeper.roost.phase.transitioned"),
        ("ce_severity", sev),
        ("content-type", "application/json"),
    ] {
        h = h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    if let Some(s) = &sent {
        h = h.insert(Header {
            key: "ce_sentns",
            value: Some(s.as_bytes()),
        });
    }
    let data = format!(
        r#"{{"roost":"r-{}","namespace":"default","from":"pending","to":"running","seq":{i}}}"#,
        i % 1000
    );
    (format!("k{}", i % 64), h, data.into_bytes())
}

async fn produce(producer: &FutureProducer, topic: &str, n: u64) {
    let mut pending = Vec::with_capacity(10_000);
    for i in 0..n {
        let (key, headers, payload) = record(i, None);
        let mut rec = FutureRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .headers(headers);
        loop {
            match producer.send_result(rec) {
                Ok(f) => break pending.push(f),
                Err((_, back)) => {
                    rec = back;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
        if pending.len() == 10_000 {
            for f in pending.drain(..) {
                f.await.unwrap().unwrap();
            }
        }
    }
    for f in pending {
        f.await.unwrap().unwrap();
    }
}

fn topic_len(consumer: &BaseConsumer, topic: &str) -> i64 {
    (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map(|(_, h)| h)
                .unwrap_or(0)
        })
        .sum()
}

/// Throughput between the first output record and 95 % of N (the rate, records/s),
/// then how many arrived in all once nothing more came for 5 s.
async fn drain_rate(addr: &str, topic: &str, n: u64) -> (f64, i64) {
    let consumer: BaseConsumer = client(addr).create().unwrap();
    let len = || tokio::task::block_in_place(|| topic_len(&consumer, topic));
    let (mut first, mut first_at) = (None::<i64>, Instant::now());
    let mut last_report = Instant::now();
    let goal = (n as f64 * 0.95) as i64;
    // Bounded: a run that stops making progress ends instead of waiting forever.
    let (mut seen, mut moved_at) = (0, Instant::now());
    let rate = loop {
        let now = len();
        if first.is_none() && now > 0 {
            first = Some(now);
            first_at = Instant::now();
        }
        if now != seen {
            (seen, moved_at) = (now, Instant::now());
        }
        assert!(
            moved_at.elapsed() < Duration::from_secs(60),
            "{topic}: stuck at {now} of {n} records for 60 s (the rate is taken at {goal})"
        );
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  {topic}: {now} of {n}");
            last_report = Instant::now();
        }
        if now >= goal {
            let moved = (now - first.unwrap_or(0)) as f64;
            break moved / first_at.elapsed().as_secs_f64().max(1e-9);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (mut last, mut since) = (len(), Instant::now());
    while since.elapsed() < Duration::from_secs(5) && (last as u64) < n {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = len();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    (rate, last)
}

/// The bare ceiling: consume, copy key/headers/value into a produce, store the offsets
/// once the brokers acknowledged.
async fn bare_loop(addr: String, input: String, output: String, stop: Arc<AtomicBool>) {
    let consumer: StreamConsumer = consumer_config(&addr, &format!("bare-{input}"))
        .create()
        .unwrap();
    consumer.subscribe(&[&input]).unwrap();
    let producer: FutureProducer = producer_config(&addr).create().unwrap();
    let mut pending = Vec::with_capacity(1000);
    let mut next: std::collections::HashMap<i32, i64> = Default::default();
    let store = |next: &std::collections::HashMap<i32, i64>| {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in next {
            let _ = tpl.add_partition_offset(&input, *p, Offset::Offset(*o));
        }
        let _ = consumer.store_offsets(&tpl);
    };
    while !stop.load(Ordering::Relaxed) {
        let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(5), consumer.recv()).await
        else {
            if !pending.is_empty() {
                for f in pending.drain(..) {
                    let _ = f.await;
                }
                store(&next);
            }
            continue;
        };
        let mut headers = OwnedHeaders::new_with_capacity(8);
        if let Some(h) = m.headers() {
            for h in h.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&output).headers(headers);
        if let Some(k) = m.key() {
            rec = rec.key(k);
        }
        if let Some(p) = m.payload() {
            rec = rec.payload(p);
        }
        pending.push(producer.send_result(rec).map_err(|(e, _)| e).unwrap());
        next.insert(m.partition(), m.offset() + 1);
        if pending.len() == 1000 {
            for f in pending.drain(..) {
                if let Ok(Err((e, _))) = f.await {
                    eprintln!("  bare loop: delivery failed: {e}");
                }
            }
            store(&next);
        }
    }
}

/// Paced producer + output reader: end-to-end latency percentiles (ms).
async fn latency(
    addr: &str,
    input: &str,
    output: &str,
    rate: u64,
    secs: u64,
) -> (f64, f64, f64, usize) {
    let reader: StreamConsumer = {
        let mut c = client(addr);
        c.set("group.id", format!("lat-{output}"))
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10");
        c.create().unwrap()
    };
    reader.subscribe(&[output]).unwrap();
    let producer: FutureProducer = {
        let mut c = producer_config(addr);
        c.set("linger.ms", "1");
        c.create().unwrap()
    };
    let total = rate * secs;
    let input = input.to_owned();
    let sender = tokio::spawn(async move {
        let started = Instant::now();
        for i in 0..total {
            let due = started + Duration::from_nanos(i * 1_000_000_000 / rate);
            tokio::time::sleep_until(due.into()).await;
            let (key, headers, payload) = record(i, Some(now_ns()));
            let rec = FutureRecord::to(&input)
                .key(&key)
                .payload(&payload)
                .headers(headers);
            let _ = producer.send_result(rec);
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    });
    let mut samples = Vec::with_capacity(total as usize);
    let deadline = Instant::now() + Duration::from_secs(secs + 30);
    while samples.len() < total as usize && Instant::now() < deadline {
        let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(200), reader.recv()).await
        else {
            continue;
        };
        let sent = m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == "ce_sentns")
                .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse::<u64>().ok())
        });
        if let Some(sent) = sent {
            samples.push(now_ns().saturating_sub(sent) as f64 / 1e6);
        }
    }
    sender.await.unwrap();
    samples.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (
        pct(0.50),
        pct(0.99),
        *samples.last().unwrap(),
        samples.len(),
    )
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// weir's configuration for one drain round (`bulk`) and the latency run (`lat`).
fn weir_yaml(dir: &std::path::Path, wasm: &std::path::Path, addr: &str, round: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\ndata_dir: {}\nfilters:\n  severity: {{ path: {}, config: {{ min: info }} }}\nkafka:\n  cluster: {{ brokers: [\"{addr}\"], client: {{ max.partition.fetch.bytes: \"67108864\", fetch.max.bytes: \"134217728\" }} }}\n  sources:\n    bulk: {{ topics: [weir-in-{round}], group_id: weir-bulk-{round}, auto_offset_reset: earliest, route: bulk, max_batch: {batch}, fetch_wait_max_ms: {wait} }}\nsinks:\n  out: {{ type: kafka, topic: weir-out-{round} }}\nroutes:\n  - {{ name: bulk, from: [kafka], filters: [severity], to: [out], batch: {{ max_events: {batch} }} }}\n",
        dir.display(),
        wasm.display(),
        batch = env_or("WEIR_BENCH_BATCH", 1000),
        wait = fetch_wait(),
    )
}

/// Drains `n` records through the bare loop from `bare-in-{round}`: (records/s, arrived).
async fn bare_round(addr: &str, round: &str, n: u64) -> (f64, i64) {
    let stop = Arc::new(AtomicBool::new(false));
    let out = format!("bare-out-{round}");
    let task = tokio::spawn(bare_loop(
        addr.to_owned(),
        format!("bare-in-{round}"),
        out.clone(),
        stop.clone(),
    ));
    let result = drain_rate(addr, &out, n).await;
    stop.store(true, Ordering::Relaxed);
    let _ = task.await;
    result
}

/// Drains `n` records through a weir router from `weir-in-{round}`: (records/s, arrived).
async fn weir_round(addr: &str, wasm: &std::path::Path, round: &str, n: u64) -> (f64, i64) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = weir_yaml(dir.path(), wasm, addr, round);
    let config = weir::config::Config::parse("bench", &yaml, &[]).unwrap();
    let running = weir::serve::start(config).await.unwrap();
    let result = drain_rate(addr, &format!("weir-out-{round}"), n).await;
    running.stop().await.unwrap();
    result
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let n = env_or("WEIR_BENCH_EVENTS", 200_000);
    let rate = env_or("WEIR_BENCH_RATE", 5_000);
    let secs = env_or("WEIR_BENCH_SECONDS", 5);
    let rounds = env_or("WEIR_BENCH_ROUNDS", 3).max(1);
    let wasm = wasm_path();
    assert!(
        wasm.exists(),
        "{} is missing: cargo build --release --target wasm32-wasip2 -p severity",
        wasm.display()
    );
    let broker = start_broker();
    let addr = broker.1.clone();
    let mut topics: Vec<String> = ["bare-lat-in", "bare-lat-out", "weir-in-lat", "weir-out-lat"]
        .map(String::from)
        .to_vec();
    for r in 0..rounds {
        for t in ["bare-in", "bare-out", "weir-in", "weir-out"] {
            topics.push(format!("{t}-{r}"));
        }
    }
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    create_topics(&addr, &names).await;
    eprintln!("kafka path: {rounds} rounds of a {n}-record backlog per system (the order alternating), then {rate}/s for {secs} s (latency); {PARTITIONS} partitions, tansu on {addr}");
    // Input batches of at most 500 records (~130 KB): the test broker, asked for a fetch
    // that starts inside a batch (a fetch cut by max.partition.fetch.bytes), skips the
    // rest of that batch — records would vanish in the broker, for both systems alike.
    let seed: FutureProducer = {
        let mut c = producer_config(&addr);
        c.set("batch.num.messages", "500");
        c.create().unwrap()
    };

    // Throughput, in rounds: each system drains its own fresh backlog, and the order
    // alternates, so neither always meets a fuller broker (tansu's in-memory storage grows
    // over the run) nor always runs first.
    let (mut bare_rates, mut weir_rates) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let round = r.to_string();
        let t = Instant::now();
        produce(&seed, &format!("bare-in-{round}"), n).await;
        produce(&seed, &format!("weir-in-{round}"), n).await;
        eprintln!(
            "round {}/{rounds}: seeded 2 × {n} records in {:.1} s",
            r + 1,
            t.elapsed().as_secs_f64()
        );
        let weir_first = r % 2 == 1;
        let (mut bare, mut weir) = ((0.0, 0), (0.0, 0));
        for turn in 0..2 {
            if (turn == 0) == weir_first {
                weir = weir_round(&addr, &wasm, &round, n).await;
            } else {
                bare = bare_round(&addr, &round, n).await;
            }
        }
        eprintln!(
            "  bare loop {:.0} records/s ({} of {n} arrived), weir {:.0} records/s ({} of {n} arrived): {:.0} %",
            bare.0,
            bare.1,
            weir.0,
            weir.1,
            100.0 * weir.0 / bare.0
        );
        bare_rates.push(bare.0);
        weir_rates.push(weir.0);
    }

    // Latency: a paced stream through each system.
    let stop = Arc::new(AtomicBool::new(false));
    let lat_bare = tokio::spawn(bare_loop(
        addr.clone(),
        "bare-lat-in".into(),
        "bare-lat-out".into(),
        stop.clone(),
    ));
    let (b50, b99, bmax, bn) = latency(&addr, "bare-lat-in", "bare-lat-out", rate, secs).await;
    stop.store(true, Ordering::Relaxed);
    let _ = lat_bare.await;
    let dir = tempfile::tempdir().unwrap();
    // The latency run is one more round, named `lat`, with its own topics.
    let yaml = weir_yaml(dir.path(), &wasm, &addr, "lat");
    let config = weir::config::Config::parse("bench", &yaml, &[]).unwrap();
    let running = weir::serve::start(config).await.unwrap();
    let (w50, w99, wmax, wn) = latency(&addr, "weir-in-lat", "weir-out-lat", rate, secs).await;
    running.stop().await.unwrap();

    let ratios: Vec<String> = bare_rates
        .iter()
        .zip(&weir_rates)
        .map(|(b, w)| format!("{:.0} %", 100.0 * w / b))
        .collect();
    let (bare_rate, weir_rate) = (median(bare_rates), median(weir_rates));
    eprintln!("bare rdkafka consume->produce: median {bare_rate:.0} records/s; latency p50 {b50:.1} ms, p99 {b99:.1} ms, max {bmax:.1} ms ({bn} samples)");
    eprintln!("weir kafka -> severity -> kafka: median {weir_rate:.0} records/s; latency p50 {w50:.1} ms, p99 {w99:.1} ms, max {wmax:.1} ms ({wn} samples)");
    eprintln!(
        "weir / ceiling: {:.0} % of the bare loop's median throughput (per round: {}); peak RSS of this process {:.0} MiB",
        100.0 * weir_rate / bare_rate,
        ratios.join(", "),
        peak_rss_mib()
    );
    drop(broker);
}
