//! A real Toggle peer for the tests: a tonic `ToggleEvents` server on loopback that records
//! every event it acknowledges, can be stopped and restarted on the same port, made slow,
//! and made to require TLS (certificates from rcgen) and a bearer token.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};
use weir::toggle::pb::{self, toggle_events_server::ToggleEvents};

/// What the server saw and how it behaves; clones share it.
#[derive(Clone, Default)]
pub struct Recorder {
    pub events: Arc<Mutex<Vec<pb::Event>>>,
    pub batch_ids: Arc<Mutex<Vec<String>>>,
    pub delay: Arc<Mutex<Duration>>,
    pub token: Option<String>,
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
    ) -> Result<pb::SendEventsResponse, Status> {
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
        let n = batch.events.len() as u32;
        self.batch_ids.lock().unwrap().push(batch.batch_id);
        self.events.lock().unwrap().extend(batch.events);
        Ok(pb::SendEventsResponse {
            accepted: n,
            rejected: 0,
            errors: vec![],
        })
    }
}

#[tonic::async_trait]
impl ToggleEvents for Recorder {
    async fn send_events(
        &self,
        request: Request<pb::EventBatch>,
    ) -> Result<Response<pb::SendEventsResponse>, Status> {
        let meta = request.metadata().clone();
        self.take(&meta, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn stream_events(
        &self,
        request: Request<Streaming<pb::EventBatch>>,
    ) -> Result<Response<pb::SendEventsResponse>, Status> {
        let meta = request.metadata().clone();
        let mut stream = request.into_inner();
        let mut total = pb::SendEventsResponse::default();
        while let Some(batch) = stream.message().await? {
            total.accepted += self.take(&meta, batch).await?.accepted;
        }
        Ok(Response::new(total))
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
        let service = pb::toggle_events_server::ToggleEventsServer::new(self.recorder.clone())
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
