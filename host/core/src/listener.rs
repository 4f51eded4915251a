//! HTTP listeners, plain or TLS, held to bounds a hostile client cannot stretch: at most
//! `max_connections` open at once (beyond it the listener stops accepting, so new clients
//! wait in the kernel's backlog), a deadline for each request's headers that also ends a
//! kept-alive connection left idle, a deadline between two pieces of a request body, and
//! one for a TLS handshake. Requests over TLS carry the client's
//! [`PeerIdentity`](crate::tls::PeerIdentity) as an extension.

use crate::tls::{identity_of, PeerTrust};
use axum::body::Body;
use axum::extract::Request;
use rustls::ServerConfig;
use serde::Deserialize;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// The bounds of a listener's connections (`connections` in the configuration).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLimits {
    /// The most connections open at once (default 1024).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, and how long a kept-alive
    /// connection may wait for its next request, ms (default 10,000).
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// The longest pause between two pieces of a request body, ms (default 30,000).
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// How long a TLS handshake may take, ms (default 10,000).
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            header_timeout_ms: default_header_timeout_ms(),
            body_timeout_ms: default_body_timeout_ms(),
            handshake_timeout_ms: default_handshake_timeout_ms(),
        }
    }
}

fn default_max_connections() -> usize {
    1024
}

fn default_header_timeout_ms() -> u64 {
    10_000
}

fn default_body_timeout_ms() -> u64 {
    30_000
}

fn default_handshake_timeout_ms() -> u64 {
    10_000
}

impl ConnectionLimits {
    /// Every problem of the settings: `(field, message)`.
    pub fn problems(&self) -> Vec<(&'static str, &'static str)> {
        let mut problems = Vec::new();
        if self.max_connections == 0 {
            problems.push(("max_connections", "must be at least 1"));
        }
        for (field, ms) in [
            ("header_timeout_ms", self.header_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
        ] {
            if ms == 0 {
                problems.push((field, "must be at least 1"));
            }
        }
        problems
    }

    fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms.max(1))
    }

    fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms.max(1))
    }

    fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms.max(1))
    }
}

/// A listener's TLS: the server configuration, and what client certificates chain to.
pub struct Tls {
    /// The server configuration (certificate, client verification).
    pub config: Arc<ServerConfig>,
    /// Without it, any verified client certificate names a user.
    pub trust: Option<Arc<PeerTrust>>,
}

/// Serves `app` (over TLS with `tls`) until `shutdown` completes; then stops accepting
/// and lets open connections finish their requests (at most 30 s).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Tls>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    let tls = tls.map(|t| (TlsAcceptor::from(t.config), t.trust));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = Arc::new(hyper_util::server::graceful::GracefulShutdown::new());
    tokio::pin!(shutdown);
    loop {
        // A connection slot first: at the cap, nothing more is accepted until one frees.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (tcp, peer_addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors, most often: pause rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let (tls, app, graceful) = (tls.clone(), app.clone(), graceful.clone());
        tokio::spawn(async move {
            let _slot = slot;
            // HTTP/1.1 only (TLS offers only it, too): its header deadline also ends an idle
            // connection, where an HTTP/2 peer answering pings could hold a slot forever.
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .http1_only();
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout());
            let body_timeout = limits.body_timeout();
            match tls {
                None => {
                    let service = app.map_request(move |req: Request<hyper::body::Incoming>| {
                        bounded_body(req, body_timeout)
                    });
                    drive(&builder, tcp, service, graceful, peer_addr).await;
                }
                Some((acceptor, trust)) => {
                    let stream = match tokio::time::timeout(
                        limits.handshake_timeout(),
                        acceptor.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer_addr, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer_addr, "TLS handshake timed out");
                            return;
                        }
                    };
                    let chain = stream.get_ref().1.peer_certificates();
                    let identity = chain.and_then(|c| c.first()).map(|leaf| {
                        let mut identity = identity_of(leaf);
                        if let (Some(trust), Some(chain)) = (&trust, chain) {
                            trust.classify(chain, &mut identity);
                        }
                        identity
                    });
                    let service = app.map_request(move |req: Request<hyper::body::Incoming>| {
                        let mut req = bounded_body(req, body_timeout);
                        if let Some(id) = &identity {
                            req.extensions_mut().insert(id.clone());
                        }
                        req
                    });
                    drive(&builder, stream, service, graceful, peer_addr).await;
                }
            }
        });
    }
    drop(listener);
    // Handshakes in flight still hold a handle (at most their timeout).
    let mut graceful = graceful;
    let deadline =
        tokio::time::Instant::now() + limits.handshake_timeout() + Duration::from_secs(1);
    let graceful = loop {
        match Arc::try_unwrap(graceful) {
            Ok(g) => break Some(g),
            Err(g) if tokio::time::Instant::now() < deadline => {
                graceful = g;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => break None,
        }
    };
    if let Some(graceful) = graceful {
        if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open 30 s after shutdown began");
        }
    }
    Ok(())
}

/// Serves one connection until it ends (or, after shutdown began, finishes its requests).
async fn drive<I, S>(
    builder: &hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    io: I,
    service: S,
    graceful: Arc<hyper_util::server::graceful::GracefulShutdown>,
    peer_addr: std::net::SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<hyper::body::Incoming>, Response = axum::response::Response>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = hyper_util::service::TowerToHyperService::new(service);
    let io = hyper_util::rt::TokioIo::new(io);
    let connection = graceful.watch(builder.serve_connection(io, service).into_owned());
    drop(graceful);
    if let Err(e) = connection.await {
        tracing::debug!(%peer_addr, "connection ended: {e}");
    }
}

/// The request with a body that fails when the client pauses longer than `timeout`
/// between two pieces of it (handlers answer 400/408 instead of waiting forever).
fn bounded_body(req: Request<hyper::body::Incoming>, timeout: Duration) -> Request {
    req.map(|body| Body::new(tower_http::timeout::TimeoutBody::new(timeout, body)))
}
