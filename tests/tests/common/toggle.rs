//! A Toggle peer for the tests: a tonic server of the public `rodent.RodentService`
//! contract on loopback (Toggle itself is not public, so this stands in for it, built from
//! the same `.proto` a real Toggle serves). It records every event it answers, can be
//! stopped and restarted on the same port, made slow, made to answer `success: false`, and
//! made to require TLS (certificates from rcgen) and a bearer token. `Register` answers
//! with the metadata it saw; `Connect` sends a `system.status` command and acknowledges
//! every message the node sends back, recording them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};
use weir::toggle::pb::events::Event;
use weir::toggle::pb::{self, rodent_service_server::RodentService};

/// What the server saw and how it behaves; clones share it.
#[derive(Clone, Default)]
pub struct Recorder {
    pub events: Arc<Mutex<Vec<Event>>>,
    pub batch_ids: Arc<Mutex<Vec<String>>>,
    pub delay: Arc<Mutex<Duration>>,
    pub token: Option<String>,
    /// Answer `success: false` (received, with problems) to every batch.
    pub problems: Arc<Mutex<bool>>,
    /// `authorization` of each `Register` and `Connect` call.
    pub seen_auth: Arc<Mutex<Vec<String>>>,
    /// What nodes sent on `Connect` streams.
    pub from_nodes: Arc<Mutex<Vec<pb::RodentRequest>>>,
}

impl Recorder {
    /// A recorder that requires `authorization: Bearer <token>`.
    pub fn with_token(token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..Self::default()
        }
    }

    pub fn count(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    /// Event ids per source, in the order they were acknowledged.
    pub fn ids_by_source(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut by = std::collections::BTreeMap::<String, Vec<String>>::new();
        for e in self.events.lock().unwrap().iter() {
            by.entry(e.source.clone())
                .or_default()
                .push(e.event_id.clone());
        }
        by
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    async fn take(
        &self,
        meta: &tonic::metadata::MetadataMap,
        batch: pb::EventBatch,
    ) -> Result<pb::EventBatchResponse, Status> {
        if let Some(token) = &self.token {
            let expected = format!("Bearer {token}");
            if meta.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
                return Err(Status::unauthenticated("bad or missing bearer token"));
            }
        }
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.batch_ids.lock().unwrap().push(batch.batch_id);
        self.events.lock().unwrap().extend(batch.events);
        let problems = *self.problems.lock().unwrap();
        Ok(pb::EventBatchResponse {
            success: !problems,
            message: if problems {
                "stored with problems".into()
            } else {
                String::new()
            },
        })
    }

    fn auth(&self, meta: &tonic::metadata::MetadataMap) {
        let value = meta
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        self.seen_auth.lock().unwrap().push(value);
    }
}

#[tonic::async_trait]
impl RodentService for Recorder {
    async fn send_events(
        &self,
        request: Request<pb::EventBatch>,
    ) -> Result<Response<pb::EventBatchResponse>, Status> {
        let meta = request.metadata().clone();
        self.take(&meta, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        self.auth(request.metadata());
        let info = request.into_inner().system_info.unwrap_or_default();
        Ok(Response::new(pb::RegisterResponse {
            success: true,
            message: format!("registered; cpu {}", info.cpu_usage),
            domain: "node-7.toggle.test".into(),
            certificate: "CERT".into(),
            private_key: "KEY".into(),
            expires_on: "2027-01-01T00:00:00Z".into(),
        }))
    }

    type ConnectStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::ToggleRequest, Status>> + Send>,
    >;

    async fn connect(
        &self,
        request: Request<Streaming<pb::RodentRequest>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        self.auth(request.metadata());
        let mut from_node = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let seen = self.from_nodes.clone();
        tokio::spawn(async move {
            let command = pb::ToggleRequest {
                request_id: "cmd-1".into(),
                payload: Some(pb::toggle_request::Payload::Command(pb::CommandRequest {
                    command_type: "system.status".into(),
                    target: String::new(),
                    payload: b"{}".to_vec().into(),
                })),
            };
            if tx.send(Ok(command)).await.is_err() {
                return;
            }
            while let Ok(Some(message)) = from_node.message().await {
                let ack = pb::ToggleRequest {
                    request_id: format!("ack-{}", message.request_id),
                    payload: Some(pb::toggle_request::Payload::Ack(pb::Acknowledgement {
                        request_id: message.request_id.clone(),
                        success: true,
                        message: String::new(),
                    })),
                };
                seen.lock().unwrap().push(message);
                if tx.send(Ok(ack)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// A running (or stopped) Toggle server.
pub struct ToggleServer {
    pub addr: SocketAddr,
    pub recorder: Recorder,
    tls: Option<ServerTlsConfig>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

/// A loopback address nobody listens on yet (for a Toggle that starts later).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

impl ToggleServer {
    /// A server on `addr` that is not started yet.
    pub fn new(addr: SocketAddr, recorder: Recorder, tls: Option<ServerTlsConfig>) -> Self {
        Self {
            addr,
            recorder,
            tls,
            running: None,
        }
    }

    /// Starts a plain-text server on a free port.
    pub async fn start() -> Self {
        let mut s = Self::new(free_addr(), Recorder::default(), None);
        s.restart().await;
        s
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// (Re)starts listening on the same address.
    pub async fn restart(&mut self) {
        assert!(self.running.is_none(), "already running");
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let service = pb::rodent_service_server::RodentServiceServer::new(self.recorder.clone())
            .max_decoding_message_size(64 << 20);
        let mut builder = Server::builder();
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(tls.clone()).unwrap();
        }
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = builder
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
        });
        self.running = Some((tx, task));
    }

    /// Stops listening and closes its connections (requests in flight finish first).
    pub async fn stop(&mut self) {
        if let Some((tx, mut task)) = self.running.take() {
            let _ = tx.send(());
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

/// A typed `StorageEvent` transfer event as a Rodent agent sends it.
pub fn transfer_event(id: &str, source: &str, level: pb::events::EventLevel) -> Event {
    use pb::events::{event::EventPayload, storage_event, StorageEvent, StorageTransferPayload};
    Event {
        event_id: id.into(),
        level: level as i32,
        category: pb::events::EventCategory::Storage as i32,
        source: source.into(),
        timestamp: 1_765_000_000_000,
        metadata: [("transfer_id".to_owned(), id.to_owned())].into(),
        event_payload: Some(EventPayload::StorageEvent(StorageEvent {
            event_type: Some(storage_event::EventType::TransferEvent(
                StorageTransferPayload {
                    source: "tank/a@s1".into(),
                    destination: "backup/a".into(),
                    size_bytes: 4096,
                    transferred_bytes: 1024,
                    progress_percent: 25,
                    operation: 2,
                },
            )),
        })),
    }
}

/// A batch as an agent sends it.
pub fn batch_of(id: &str, events: Vec<Event>) -> pb::EventBatch {
    pb::EventBatch {
        events,
        batch_timestamp: 1_765_000_000_500,
        batch_id: id.into(),
    }
}

/// A `rodent.RodentService` client, as an agent holds one, connected to `url`.
pub async fn agent_client(
    url: String,
) -> Result<
    pb::rodent_service_client::RodentServiceClient<tonic::transport::Channel>,
    tonic::transport::Error,
> {
    let channel = tonic::transport::Endpoint::from_shared(url)?
        .connect()
        .await?;
    Ok(pb::rodent_service_client::RodentServiceClient::new(channel))
}
