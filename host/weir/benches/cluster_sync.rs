//! The cluster syncer end to end, in one process: the `k8s_watch` source lists a
//! downstream cluster's events, the route runs `k8s-filter`, `k8s-correlate` and
//! `k8s-transform` (components built from `filters/`), and the `kubernetes` sink writes
//! what is left to an upstream API.
//!
//! Both APIs are small axum servers in this process, so that only weir's work is
//! measured. They are stand-ins, not real API servers. The downstream renders its list
//! pages on the fly (about a microsecond per event) and holds watches open empty. The
//! upstream answers every create with 201 and every read and patch at once. The event mix
//! is a storm: `WEIR_BENCH_OBJECTS` objects (10,000), each with events whose messages
//! differ, so the correlator lets 9 per object through as they are and folds the rest
//! into one aggregate per object.
//!
//! Reports watched events per minute (the time from start to the last event delivered to
//! the routes), the upstream writes, weir's CPU time per watched event (every thread but
//! the stand-ins' own), and the process's peak resident memory.
//!
//! Run: `cargo build --release --target wasm32-wasip2 -p k8s-filter -p k8s-correlate
//! -p k8s-transform`, then `cargo bench -p weir --bench cluster_sync`
//! (`WEIR_BENCH_EVENTS`, default 1,000,000; `WEIR_BENCH_FILTERS_DIR`, default
//! `$CARGO_TARGET_DIR/wasm32-wasip2/release`).

#![allow(missing_docs, clippy::unwrap_used)]

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PAGE: usize = 500;

#[derive(Clone)]
struct Downstream {
    total: usize,
    objects: usize,
}

/// Event `i` as the downstream lists it.
fn event_json(out: &mut String, i: usize, objects: usize) {
    use std::fmt::Write as _;
    let object = i % objects;
    let _ = write!(
        out,
        r#"{{"metadata":{{"name":"pod-{object}.{i:08x}","namespace":"ns-{ns}","uid":"u-{i}","resourceVersion":"{rv}"}},"involvedObject":{{"kind":"Pod","name":"pod-{object}","namespace":"ns-{ns}","uid":"p-{object}"}},"reason":"BackOff","message":"back-off restarting container, attempt {i}","type":"Warning","source":{{"component":"kubelet","host":"node-{node}"}},"firstTimestamp":"2026-12-06T10:00:00Z","lastTimestamp":"2026-12-06T10:00:00Z","count":1}}"#,
        ns = object % 50,
        rv = i + 1,
        node = object % 100,
    );
}

async fn list(
    State(d): State<Downstream>,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        // Nothing changes: the watch stays open, empty, until it times out.
        let secs = q
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(290u64);
        tokio::time::sleep(Duration::from_secs(secs)).await;
        return "".into_response();
    }
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(PAGE)
        .clamp(1, 10_000);
    let from: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let to = (from + limit).min(d.total);
    let mut body = String::with_capacity((to - from) * 520 + 200);
    body.push_str(r#"{"kind":"EventList","apiVersion":"v1","metadata":{"resourceVersion":""#);
    body.push_str(&d.total.to_string());
    body.push('"');
    if to < d.total {
        body.push_str(r#","continue":""#);
        body.push_str(&to.to_string());
        body.push('"');
    }
    body.push_str(r#"},"items":["#);
    for i in from..to {
        if i > from {
            body.push(',');
        }
        event_json(&mut body, i, d.objects);
    }
    body.push_str("]}");
    ([("content-type", "application/json")], body).into_response()
}

/// The upstream stand-in: counts creates and patches.
#[derive(Clone, Default)]
struct Upstream {
    creates: Arc<AtomicU64>,
    patches: Arc<AtomicU64>,
}

async fn upstream(
    State(u): State<Upstream>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> axum::response::Response {
    let name = uri.path().rsplit('/').next().unwrap_or("x").to_owned();
    let object = |count: u64| {
        serde_json::json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": "x", "resourceVersion": "1"}, "count": count})
            .to_string()
    };
    let (status, body) = match method {
        axum::http::Method::POST => {
            u.creates.fetch_add(1, Ordering::Relaxed);
            (201, object(1))
        }
        axum::http::Method::PATCH => {
            u.patches.fetch_add(1, Ordering::Relaxed);
            (200, object(2))
        }
        _ => (200, object(0)),
    };
    axum::response::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .unwrap()
}

/// The name of the thread the stand-in servers run on (its CPU is not weir's).
const STAND_IN_THREAD: &str = "stand-ins";

/// Serves both stand-ins on a thread of their own (a current-thread runtime), so that
/// their CPU time can be told apart from weir's.
fn serve_stand_ins(apps: Vec<axum::Router>) -> Vec<std::net::SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(STAND_IN_THREAD.into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut addrs = Vec::new();
                for app in apps {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    addrs.push(listener.local_addr().unwrap());
                    tokio::spawn(async move { axum::serve(listener, app).await });
                }
                tx.send(addrs).unwrap();
                std::future::pending::<()>().await;
            });
        })
        .unwrap();
    rx.recv().unwrap()
}

/// User plus system CPU seconds of this process's threads, from `/proc/self/task/*/stat`:
/// (weir's, the stand-ins').
fn cpu_seconds() -> (f64, f64) {
    let (mut weir, mut stand_ins) = (0.0, 0.0);
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map_or("", |(_, n)| n);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 (1-based), 11 and 12 after the name.
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        if name == STAND_IN_THREAD {
            stand_ins += ticks / 100.0;
        } else {
            weir += ticks / 100.0;
        }
    }
    (weir, stand_ins)
}

/// Peak resident memory, MiB (`VmHWM`).
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn kubeconfig(dir: &std::path::Path, name: &str, addr: std::net::SocketAddr) -> String {
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{ server: \"http://{addr}\" }}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context: {{ cluster: c, user: u }}\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

async fn scrape(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let total = env("WEIR_BENCH_EVENTS", 1_000_000);
    let objects = env("WEIR_BENCH_OBJECTS", 10_000).max(1);
    let filters = std::env::var("WEIR_BENCH_FILTERS_DIR").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        format!("{target}/wasm32-wasip2/release")
    });
    for f in ["k8s_filter", "k8s_correlate", "k8s_transform"] {
        let path = format!("{filters}/{f}.wasm");
        assert!(
            std::path::Path::new(&path).exists(),
            "{path} is missing: cargo build --release --target wasm32-wasip2 -p k8s-filter -p k8s-correlate -p k8s-transform"
        );
    }
    let counts = Upstream::default();
    let addrs = serve_stand_ins(vec![
        axum::Router::new()
            .route("/api/v1/events", axum::routing::get(list))
            .with_state(Downstream { total, objects }),
        axum::Router::new()
            .fallback(upstream)
            .with_state(counts.clone()),
    ]);
    let (down, up) = (addrs[0], addrs[1]);
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "listen: 127.0.0.1:0\ndata_dir: {data}\n\
tenants:\n  default:\n    limits: {{ timeout_ms: 10000, memory_mb: 256 }}\n\
k8s_watch:\n  clusters:\n    - {{ name: east, kubeconfig: {down_kc}, workspace: \"root:bench\" }}\n\
filters:\n  k8s-filter: {{ path: {filters}/k8s_filter.wasm, config: {{ exclude_namespaces: [\"kube-*\"] }} }}\n  \
k8s-correlate: {{ path: {filters}/k8s_correlate.wasm, config: {{}} }}\n  \
k8s-transform: {{ path: {filters}/k8s_transform.wasm, config: {{ namespace_prefix: east- }} }}\n\
sinks:\n  upstream: {{ type: kubernetes, kubeconfig: {up_kc}, max_in_flight: 64 }}\n\
routes:\n  - name: sync\n    from: [k8s-watch]\n    filters: [k8s-filter, k8s-correlate, k8s-transform]\n    to: [upstream]\n    batch: {{ max_events: 1000 }}\n",
        data = dir.path().display(),
        down_kc = kubeconfig(dir.path(), "down", down),
        up_kc = kubeconfig(dir.path(), "up", up),
    );
    let config = weir::config::Config::parse("bench", &yaml, &[]).unwrap();
    eprintln!("cluster sync: {total} watched events over {objects} objects through k8s-filter, k8s-correlate, k8s-transform");
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let running = weir::serve::start(config).await.unwrap();
    let metrics_url = format!("http://{}/metrics", running.addr);
    let http = reqwest::Client::new();
    let mut last_report = Instant::now();
    // The first delivery: start-up (compiling three components) is over.
    let mut first: Option<(Instant, usize)> = None;
    let (elapsed, finished) = loop {
        let text = scrape(&http, &metrics_url).await;
        let delivered = metric(
            &text,
            "weir_k8s_watch_events_total{cluster=\"east\",outcome=\"delivered\"}",
        ) as usize;
        if first.is_none() && delivered > 0 {
            first = Some((Instant::now(), delivered));
        }
        if delivered >= total {
            break (started.elapsed(), Instant::now());
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  {delivered} delivered after {:.0?}", started.elapsed());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let cpu1 = cpu_seconds();
    let (cpu, stand_in_cpu) = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
    // Let the last aggregates flush (every 10 s by default).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let creates = counts.creates.load(Ordering::Relaxed);
    let patches = counts.patches.load(Ordering::Relaxed);
    let per_minute = total as f64 / elapsed.as_secs_f64() * 60.0;
    println!(
        "watched {total} events in {:.2} s: {:.0} events/min ({:.0}/s)",
        elapsed.as_secs_f64(),
        per_minute,
        total as f64 / elapsed.as_secs_f64()
    );
    if let Some((at, n)) = first {
        let steady = (total - n) as f64 / (finished - at).as_secs_f64();
        println!(
            "after start-up ({:.1} s, compiling the filters): {:.0} events/min ({:.0}/s)",
            (at - started).as_secs_f64(),
            steady * 60.0,
            steady
        );
    }
    println!(
        "upstream writes: {creates} creates, {patches} patches ({:.1} % of watched events)",
        (creates + patches) as f64 * 100.0 / total as f64
    );
    println!(
        "CPU of weir {:.1} s: {:.1} µs per watched event (the stand-in servers: {:.1} s more); peak RSS {:.0} MiB (stand-ins included)",
        cpu,
        cpu * 1e6 / total as f64,
        stand_in_cpu,
        peak_mib()
    );
    let text = scrape(&http, &metrics_url).await;
    for line in text.lines().filter(|l| {
        (l.starts_with("weir_filter_failures_total") || l.starts_with("weir_filter_counter_total"))
            && !l.ends_with(" 0")
    }) {
        println!("  {line}");
    }
    running.stop().await.unwrap();
}
