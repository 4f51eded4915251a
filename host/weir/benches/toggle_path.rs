//! The Toggle path end to end, in one process: agents (tonic clients) send `EventBatch`es
//! to weir's gRPC source, a route without filters delivers them through the Toggle sink to
//! a counting tonic Toggle server, all over loopback.
//!
//! Phases: (0) the same load into a null sink (the cost of ingest, mapping and routing
//! alone, for comparison); (1) Toggle up: gRPC ingest → Toggle sink, every write acknowledged by Toggle;
//! (2) Toggle down: the same load, every write made durable in spill files; (3) Toggle
//! comes back: the backlog replays from disk.
//!
//! Run: `cargo bench -p weir --bench toggle_path` (`WEIR_BENCH_EVENTS`, default 1,000,000;
//! `WEIR_BENCH_PROFILE`, default `high-throughput`).

#![allow(missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status, Streaming};
use weir::toggle::pb::events::{
    event::EventPayload, storage_event, Event, StorageEvent, StorageTransferPayload,
};
use weir::toggle::pb::{self, rodent_service_client::RodentServiceClient};
use weir::toggle::pb::{
    rodent_service_server::RodentService, rodent_service_server::RodentServiceServer,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const AGENTS: usize = 4;
const AGENT_BATCH: usize = 1_000;

#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>);

#[tonic::async_trait]
impl RodentService for Counter {
    async fn send_events(
        &self,
        request: Request<pb::EventBatch>,
    ) -> Result<Response<pb::EventBatchResponse>, Status> {
        let n = request.get_ref().events.len() as u64;
        self.0.fetch_add(n, Ordering::Relaxed);
        Ok(Response::new(pb::EventBatchResponse {
            success: true,
            message: String::new(),
        }))
    }

    async fn register(
        &self,
        _: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        Err(Status::unimplemented("not used"))
    }

    type ConnectStream = tokio_stream::Empty<Result<pb::ToggleRequest, Status>>;

    async fn connect(
        &self,
        _: Request<Streaming<pb::RodentRequest>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        Err(Status::unimplemented("not used"))
    }
}

async fn start_toggle(addr: SocketAddr, counter: Counter) -> tokio::sync::oneshot::Sender<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(RodentServiceServer::new(counter).max_decoding_message_size(64 << 20))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = rx.await;
                },
            )
            .await
            .unwrap();
    });
    tx
}

fn event(agent: usize, seq: usize) -> Event {
    Event {
        event_id: format!("0193a6f0-{agent}-{seq:08}"),
        level: 1 + (seq % 7) as i32,
        category: 2,
        source: format!("rodent://node-{agent}"),
        timestamp: 1_765_000_000_000 + seq as i64,
        metadata: [("transfer_id".to_owned(), format!("t{seq}"))].into(),
        event_payload: Some(EventPayload::StorageEvent(StorageEvent {
            event_type: Some(storage_event::EventType::TransferEvent(
                StorageTransferPayload {
                    source: format!("tank/data@snap{seq}"),
                    destination: "backup/data".into(),
                    size_bytes: 1 << 20,
                    transferred_bytes: 1 << 19,
                    progress_percent: 50,
                    operation: 2,
                },
            )),
        })),
    }
}

/// Sends `per_agent` events from each agent; returns (elapsed, bytes sent).
async fn load(url: &str, per_agent: usize) -> (Duration, u64) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..AGENTS)
        .map(|a| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let channel = tonic::transport::Endpoint::from_shared(url)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let mut client =
                    RodentServiceClient::new(channel).max_encoding_message_size(64 << 20);
                let mut bytes = 0u64;
                for start in (0..per_agent).step_by(AGENT_BATCH) {
                    let batch = pb::EventBatch {
                        batch_id: String::new(),
                        batch_timestamp: 0,
                        events: (start..(start + AGENT_BATCH).min(per_agent))
                            .map(|i| event(a, i))
                            .collect(),
                    };
                    bytes += prost::Message::encoded_len(&batch) as u64;
                    let answer = client.send_events(batch).await.unwrap().into_inner();
                    assert!(answer.success, "{answer:?}");
                }
                bytes
            })
        })
        .collect();
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await.unwrap();
    }
    (started.elapsed(), bytes)
}

fn report(phase: &str, events: u64, elapsed: Duration, bytes: u64) {
    let secs = elapsed.as_secs_f64();
    eprintln!(
        "{phase}: {events} events in {secs:.2} s = {:.0} events/s, {:.1} MB/s",
        events as f64 / secs,
        bytes as f64 / secs / 1e6
    );
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("WEIR_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let profile = std::env::var("WEIR_BENCH_PROFILE").unwrap_or_else(|_| "high-throughput".into());
    let per_agent = total / AGENTS;
    let total = (per_agent * AGENTS) as u64;
    let dir = tempfile::tempdir().unwrap();
    let toggle_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = [
        "listen: 127.0.0.1:0".to_owned(),
        format!("data_dir: {}", dir.path().display()),
        "grpc: { listen: 127.0.0.1:0, max_batch_events: 5000 }".to_owned(),
        "sinks:".to_owned(),
        format!("  toggle: {{ type: toggle, url: http://{toggle_addr}, profile: {profile}, retry_max_ms: 200 }}"),
        "routes:".to_owned(),
        "  - { name: upstream, from: [grpc], to: [toggle] }".to_owned(),
    ]
    .join("\n");
    let config = weir::config::Config::parse("bench", &yaml, &[]).unwrap();
    let running = weir::serve::start(config).await.unwrap();
    let url = format!("http://{}", running.grpc_addr.unwrap());
    eprintln!("toggle path: {AGENTS} agents × {per_agent} events in batches of {AGENT_BATCH}, profile {profile}");

    // (0) Baseline: a null sink.
    let null_dir = tempfile::tempdir().unwrap();
    let null_yaml = [
        "listen: 127.0.0.1:0".to_owned(),
        format!("data_dir: {}", null_dir.path().display()),
        "grpc: { listen: 127.0.0.1:0, max_batch_events: 5000 }".to_owned(),
        "sinks: { discard: { type: null } }".to_owned(),
        "routes:".to_owned(),
        "  - { name: upstream, from: [grpc], to: [discard] }".to_owned(),
    ]
    .join("\n");
    let null_config = weir::config::Config::parse("bench", &null_yaml, &[]).unwrap();
    let null_router = weir::serve::start(null_config).await.unwrap();
    let (elapsed, bytes) = load(
        &format!("http://{}", null_router.grpc_addr.unwrap()),
        per_agent,
    )
    .await;
    report("gRPC ingest -> null sink (baseline)", total, elapsed, bytes);
    null_router.stop().await.unwrap();

    // (1) Toggle up.
    let counter = Counter::default();
    let stop = start_toggle(toggle_addr, counter.clone()).await;
    let (elapsed, bytes) = load(&url, per_agent).await;
    assert_eq!(counter.0.load(Ordering::Relaxed), total);
    report(
        "gRPC ingest -> Toggle sink (acknowledged by Toggle)",
        total,
        elapsed,
        bytes,
    );

    // (2) Toggle down: everything goes to spill files.
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (elapsed, bytes) = load(&url, per_agent).await;
    report(
        "gRPC ingest -> spill files (Toggle down)",
        total,
        elapsed,
        bytes,
    );
    let spill = dir.path().join("spill/toggle");
    let files = std::fs::read_dir(&spill).unwrap().count() - 1;
    let size: u64 = std::fs::read_dir(&spill)
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    eprintln!("  {files} spill files, {:.1} MB", size as f64 / 1e6);

    // (3) Toggle back: the backlog replays.
    let counter = Counter::default();
    let started = Instant::now();
    let _stop = start_toggle(toggle_addr, counter.clone()).await;
    while counter.0.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    report(
        "replay of the spill files to Toggle",
        total,
        started.elapsed(),
        size,
    );
    running.stop().await.unwrap();
}
