//! `weir bench`: an end-to-end load run of HTTP ingest → filter chain → file sink, on
//! loopback, in one process; prints events/s, request latency percentiles and peak RSS.

use anyhow::{Context as _, Result};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::config::Config;

/// Arguments of `weir bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// How many events to send (the run stops by itself after them).
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Events per request (batch mode).
    #[arg(long, default_value_t = 500)]
    batch_size: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: u64,
    /// Router configuration (default: the embedded defaults with the example filters).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Where the example filter components are, for the embedded defaults.
    #[arg(long, env = "WEIR_FILTERS_DIR")]
    filters_dir: Option<PathBuf>,
}

/// One request body: `batch_size` events, 6 string attributes and ~200 bytes of JSON data,
/// a quarter below the default minimum severity, half carrying a password to redact.
fn body(batch: u64, batch_size: u64) -> Vec<u8> {
    let severities = ["debug", "info", "warning", "error"];
    let events: Vec<serde_json::Value> = (0..batch_size)
        .map(|i| {
            let n = batch * batch_size + i;
            serde_json::json!({
                "specversion": "1.0", "id": format!("bench-{n}"), "source": "/weir/bench",
                "type": "com.example.bench", "subject": format!("item/{n}"),
                "severity": severities[(n % 4) as usize], "tenant": "default",
                "data": {"n": n, "user": "bench", "password": if n.is_multiple_of(2) { "s3cret" } else { "" },
                         "payload": "x".repeat(120)}
            })
        })
        .collect();
    serde_json::to_vec(&events).unwrap_or_default()
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Runs the load and prints the results.
pub async fn run(args: BenchArgs) -> Result<ExitCode> {
    let dir = tempfile::tempdir().context("cannot create a scratch data directory")?;
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded(
            &args
                .filters_dir
                .clone()
                .unwrap_or_else(super::default_filters_dir),
            &weir::config::env_overrides(),
        )?,
    };
    config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.data_dir = dir.path().to_owned();
    let running = weir::serve::start(config).await?;
    let url = format!("http://{}/v1/events", running.addr);
    let batches = args.events.div_ceil(args.batch_size.max(1));
    eprintln!(
        "weir bench: {} events in {batches} requests of {}, {} in flight, to {url}",
        args.events, args.batch_size, args.concurrency
    );
    let bodies: Arc<Vec<bytes::Bytes>> = Arc::new(
        (0..batches.min(64))
            .map(|b| bytes::Bytes::from(body(b, args.batch_size)))
            .collect(),
    );
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, url, next, sent, bodies) = (
            client.clone(),
            url.clone(),
            next.clone(),
            sent.clone(),
            bodies.clone(),
        );
        let batch_size = args.batch_size;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    break;
                }
                let body = bodies[(b % bodies.len() as u64) as usize].clone();
                let t = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/cloudevents-batch+json")
                    .body(body)
                    .send()
                    .await?;
                if response.status().as_u16() != 202 {
                    anyhow::bail!("router answered {}", response.status());
                }
                latencies.push(t.elapsed());
                sent.fetch_add(batch_size, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let progress_sent = sent.clone();
    let total = args.events;
    let progress = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let n = progress_sent.load(Ordering::Relaxed);
            eprintln!(
                "  {n:>9}/{total} events  {:>9.0} events/s",
                n as f64 / started.elapsed().as_secs_f64()
            );
        }
    });
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await??);
    }
    let elapsed = started.elapsed();
    progress.abort();
    running.stop().await?;
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let events = sent.load(Ordering::Relaxed);
    println!("events:          {events}");
    println!("elapsed:         {:.2} s", elapsed.as_secs_f64());
    println!(
        "throughput:      {:.0} events/s",
        events as f64 / elapsed.as_secs_f64()
    );
    println!(
        "request latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} events per request)",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        args.batch_size
    );
    if let Some(kib) = peak_rss_kib() {
        println!(
            "peak RSS:        {:.1} MiB (router and load generator)",
            kib as f64 / 1024.0
        );
    }
    Ok(ExitCode::SUCCESS)
}
