//! The Kubernetes Events API over HTTP, in one process: creates per second (concurrent
//! clients, every create durable before its answer), a field-selector list over 100,000
//! stored events, Activity's EventQuery and EventFacetQuery over everything stored, and
//! 1,000 concurrent watchers receiving a burst. Event times are spread one second apart
//! (event `i` is `i` seconds before 2026-11-22T04:00:00Z).
//!
//! Run: `cargo bench -p weir --bench events_api` (`WEIR_BENCH_EVENTS`, default 100,000;
//! `WEIR_BENCH_CLICKHOUSE=http://127.0.0.1:8123` stores them in that ClickHouse instead;
//! `WEIR_BENCH_WATCHERS`, default 1,000; `WEIR_BENCH_CREATES_ONLY=1` stops after the
//! creates, for profiling them; `WEIR_TRANSPARENT_HUGE_PAGES=on` leaves transparent huge pages
//! on, as for `weir serve`; `WEIR_BENCH_ADMISSION=path/to/scope_inject.wasm` makes every
//! create pass the scope-inject filter first).

#![allow(missing_docs, clippy::unwrap_used)]

use futures_util::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn event(i: usize) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("pod-{}.{i:08}", i % 1000), "labels": {"app": format!("app-{}", i % 10)}},
        "involvedObject": {"kind": "Pod", "name": format!("pod-{}", i % 1000), "namespace": "bench"},
        "reason": if i.is_multiple_of(7) { "BackOff" } else { "Started" },
        "type": if i.is_multiple_of(7) { "Warning" } else { "Normal" },
        "message": format!("container {i} started"),
        "source": {"component": "kubelet", "host": format!("node-{}", i % 50)},
        "firstTimestamp": time(i), "lastTimestamp": time(i), "count": 1,
    })
    .to_string()
}

/// Event `i`'s time: `i` seconds before 2026-11-22T04:00:00Z.
fn time(i: usize) -> String {
    const BASE: i64 = 1_795_320_000;
    chrono::DateTime::from_timestamp(BASE - i as i64, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Creates events `from..to` over `WEIR_BENCH_CLIENTS` (64) keep-alive HTTP/1.1 connections (bare hyper:
/// the load generator shares the server's 2 cores, so it should cost as little as it can),
/// with bodies made before the clock starts; every answer must be 201.
async fn creates(addr: std::net::SocketAddr, path: &str, from: usize, to: usize) -> Duration {
    let clients = env("WEIR_BENCH_CLIENTS", 64);
    use http_body_util::{BodyExt, Full};
    let next = Arc::new(AtomicUsize::new(from));
    let bodies: Arc<Vec<bytes::Bytes>> =
        Arc::new((from..to).map(|i| bytes::Bytes::from(event(i))).collect());
    let mut senders = Vec::new();
    for _ in 0..clients {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        senders.push(sender);
    }
    let started = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            let (next, bodies, path) = (next.clone(), bodies.clone(), path.to_owned());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= to {
                        return;
                    }
                    let request = hyper::Request::post(path.as_str())
                        .header("host", "bench")
                        .header("content-type", "application/json")
                        .body(Full::new(bodies[i - from].clone()))
                        .unwrap();
                    let response = sender.send_request(request).await.unwrap();
                    assert_eq!(response.status(), 201);
                    response.into_body().collect().await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

fn main() {
    // As `weir serve` does.
    weir::process::disable_transparent_huge_pages();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let total = env("WEIR_BENCH_EVENTS", 100_000);
    let watchers = env("WEIR_BENCH_WATCHERS", 1_000);
    let dir = tempfile::tempdir().unwrap();
    let store = match std::env::var("WEIR_BENCH_CLICKHOUSE") {
        Ok(url) => format!(
            ", clickhouse: {{ url: \"{url}\", table: bench_{} }}",
            std::process::id()
        ),
        Err(_) => String::new(),
    };
    let mut yaml = format!(
        "listen: 127.0.0.1:0\ndata_dir: {}\nevents_api: {{ enabled: true{store} }}\nroutes:\n  - {{ name: r, to: [tail] }}\n",
        dir.path().display()
    );
    // With WEIR_BENCH_ADMISSION=<scope_inject.wasm>, every create first passes the
    // scope-inject filter on a `from: [k8s]` route (and the stored change goes on to a
    // null sink), as in a multi-tenant deployment.
    if let Ok(wasm) = std::env::var("WEIR_BENCH_ADMISSION") {
        yaml.push_str(&format!(
            "  - {{ name: scoped, from: [k8s], filters: [scope-inject], to: [void] }}\nsinks:\n  void: {{ type: null }}\nfilters:\n  scope-inject: {{ path: {wasm} }}\n"
        ));
    }
    let config = weir::config::Config::parse("bench", &yaml, &[]).unwrap();
    let running = weir::serve::start(config).await.unwrap();
    let base = format!("http://{}", running.addr);
    let collection = format!("{base}/api/v1/namespaces/bench/events");

    // (1) Creates.
    eprintln!(
        "creating {total} events with {} concurrent clients...",
        env("WEIR_BENCH_CLIENTS", 64)
    );
    let create_path = "/api/v1/namespaces/bench/events";
    let elapsed = creates(running.addr, create_path, 0, total).await;
    eprintln!(
        "creates: {total} in {:.2} s = {:.0} creates/s (each durable before its 201)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );

    if std::env::var_os("WEIR_BENCH_CREATES_ONLY").is_some() {
        return;
    }

    // (2) Field-selector lists over everything stored.
    let client = reqwest::Client::new();
    for (what, selector) in [
        (
            "involvedObject.name=pod-42 (100 of them)",
            "involvedObject.name=pod-42",
        ),
        (
            "type=Warning,source=kubelet (1 in 7)",
            "type=Warning,source=kubelet",
        ),
    ] {
        let mut times = Vec::new();
        let mut items = 0;
        for _ in 0..20 {
            let started = Instant::now();
            let body = get_json(
                &client,
                &format!("{base}/api/v1/events?fieldSelector={selector}"),
            )
            .await;
            times.push(started.elapsed());
            items = body["items"].as_array().unwrap().len();
        }
        times.sort();
        eprintln!(
            "list over {total} with {what}: {items} items, median {:.1} ms, worst {:.1} ms",
            times[10].as_secs_f64() * 1e3,
            times[19].as_secs_f64() * 1e3
        );
    }

    // (3) Activity's queries over everything stored.
    let queries = format!("{base}/apis/activity.miloapis.com/v1alpha1");
    let span_days = (total / 86_400 + 1) as i64;
    let start = chrono::DateTime::from_timestamp(1_795_320_000 - (span_days + 1) * 86_400, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let end = time(0).replace("04:00:00", "04:00:01");
    for (what, kind, body) in [
        (
            "EventQuery, whole range, first page of 100",
            "eventqueries",
            serde_json::json!({"spec": {"startTime": start, "endTime": end}}),
        ),
        (
            "EventQuery, the last hour of data, 1000",
            "eventqueries",
            serde_json::json!({"spec": {"startTime": time(3600), "endTime": end, "limit": 1000}}),
        ),
        (
            "EventQuery, whole range, fieldSelector regarding.name=pod-42",
            "eventqueries",
            serde_json::json!({"spec": {"startTime": start, "endTime": end, "fieldSelector": "regarding.name=pod-42"}}),
        ),
        (
            "EventQuery, whole range, filter k8stype = 'Warning' AND k8sobject = 'pod-42'",
            "eventqueries",
            serde_json::json!({"spec": {"startTime": start, "endTime": end, "filter": "k8stype = 'Warning' AND k8sobject = 'pod-42'"}}),
        ),
        (
            "EventFacetQuery, whole range, reason + type + source.component",
            "eventfacetqueries",
            serde_json::json!({"spec": {"timeRange": {"start": start, "end": end}, "facets": [{"field": "reason"}, {"field": "type"}, {"field": "source.component"}]}}),
        ),
    ] {
        let mut times = Vec::new();
        let mut answer = serde_json::Value::Null;
        for _ in 0..5 {
            let started = Instant::now();
            let resp = client
                .post(format!("{queries}/{kind}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201);
            answer = resp.json().await.unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        let size = answer["status"]["results"]
            .as_array()
            .map(|r| format!("{} results", r.len()))
            .unwrap_or_else(|| {
                format!(
                    "{} facets",
                    answer["status"]["facets"].as_array().map_or(0, Vec::len)
                )
            });
        eprintln!(
            "{what} over {total}: {size}, median {:.1} ms, worst {:.1} ms",
            times[2].as_secs_f64() * 1e3,
            times[4].as_secs_f64() * 1e3
        );
    }

    // (4) Watchers and a burst.
    let burst = 1_000;
    let rv = weir_rv(&client, &base).await;
    eprintln!("opening {watchers} watches from resourceVersion {rv}...");
    let received = Arc::new(AtomicUsize::new(0));
    let complete = Arc::new(AtomicUsize::new(0));
    let watch_client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let url = format!("{collection}?watch=true&resourceVersion={rv}&timeoutSeconds=120");
        let (client, received, complete) =
            (watch_client.clone(), received.clone(), complete.clone());
        let resp = client.get(&url).send().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut stream = resp.bytes_stream();
            let mut lines = 0;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.unwrap();
                let n = chunk.iter().filter(|b| **b == b'\n').count();
                lines += n;
                received.fetch_add(n, Ordering::Relaxed);
                if lines >= burst {
                    complete.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }));
    }
    let started = Instant::now();
    creates(running.addr, create_path, total, total + burst).await;
    let created = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while complete.load(Ordering::Relaxed) < watchers && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all = started.elapsed();
    eprintln!(
        "watch: {} of {watchers} watchers received all {burst} events ({} deliveries) {:.2} s after the burst began (burst written in {:.2} s)",
        complete.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
        all.as_secs_f64(),
        created.as_secs_f64()
    );
    for t in tasks {
        t.abort();
    }
    running.stop().await.unwrap();
}

async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let bytes = client.get(url).send().await.unwrap().bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn weir_rv(client: &reqwest::Client, base: &str) -> String {
    let body = get_json(client, &format!("{base}/api/v1/events?limit=1")).await;
    body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned()
}
