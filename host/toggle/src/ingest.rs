//! The gRPC source: weir serves `rodent.RodentService`, so an unmodified Rodent agent
//! pointed at weir instead of Toggle works.
//!
//! - `SendEvents`: each event of the `EventBatch` is mapped to a CloudEvent (its payload
//!   bytes kept exactly) and submitted to the routes fed by `grpc`. Invalid events (no id
//!   or source, unknown category or level, no or undecodable payload) are refused one by
//!   one: the answer is `success: false` with a message naming them, and the rest of the
//!   batch goes on. A batch larger than the configured limit is refused whole
//!   (`RESOURCE_EXHAUSTED`); a router that cannot take the batch answers `UNAVAILABLE`, so
//!   the agent keeps it and retries.
//! - The caller is the producer its `authorization: Bearer` metadata names in
//!   `tenancy.producers`: its events are its tenant's (a batch naming another tenant is
//!   refused with `PERMISSION_DENIED`). Any other caller (no token, or an agent's Toggle
//!   JWT under that key) is refused (`UNAUTHENTICATED`) unless anonymous producers are
//!   allowed, and then produces unbound.
//! - `Register` and `Connect` pass through to the configured upstream Toggle
//!   ([`crate::passthrough`]).

use super::mapping::{to_cloudevent, validate};
use super::passthrough::Passthrough;
use super::pb;
use super::wire::WireBatch;
use crate::settings::GrpcConfig;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};
use weir_router::source::{RunningSource, SourceContext, SourceError, StartSource};
use weir_router::{Origin, Producer, Router, RouterError};

/// The gRPC path of `SendEvents`.
const SEND_EVENTS: &str = crate::client::SEND_EVENTS;
/// At most this many refused events are named in an answer's message.
const NAMED_ERRORS: usize = 10;

/// `SendEvents` backed by the router.
pub struct GrpcIngest {
    router: Arc<Router>,
    type_prefix: String,
    max_batch_events: usize,
    /// Calls without a producer token are taken.
    anonymous: bool,
}

impl GrpcIngest {
    /// The service for a running router.
    /// `anonymous`: take calls that carry no producer token.
    pub fn new(
        router: Arc<Router>,
        type_prefix: String,
        max_batch_events: usize,
        anonymous: bool,
    ) -> Self {
        Self {
            router,
            type_prefix,
            max_batch_events,
            anonymous,
        }
    }

    /// The producer a call's metadata names, or `UNAUTHENTICATED`.
    fn producer(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Producer, Status> {
        let bearer = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(weir_core::auth::bearer);
        let refuse = |why: &str| {
            self.router
                .metrics()
                .rejected
                .with_label_values(&["grpc", "unauthenticated"])
                .inc();
            weir_core::rejections::log("grpc", "unauthenticated", &why);
            Status::unauthenticated(why.to_owned())
        };
        match bearer.and_then(|token| self.router.producers().by_token(token)) {
            Some(tenant) => Ok(Producer::Tenant(tenant)),
            // An agent sends its Toggle token (a JWT) under the same key: not weir's to
            // judge. It produces unbound where anonymous producers may.
            None if self.anonymous => Ok(Producer::Unbound),
            None if bearer.is_some() => Err(refuse("unknown producer token")),
            None => Err(refuse(
                "send `authorization: Bearer <token>` metadata with a producer token",
            )),
        }
    }

    /// Validates a batch and submits its events; `carried` is the caller's W3C Trace
    /// Context (its metadata), while tracing is on.
    async fn take(
        &self,
        producer: Producer,
        batch: WireBatch,
        carried: Option<weir_core::trace::W3c>,
    ) -> Result<pb::EventBatchResponse, Status> {
        let total = batch.events.len();
        if total > self.max_batch_events {
            self.router
                .metrics()
                .rejected
                .with_label_values(&["grpc", "batch_too_large"])
                .inc();
            weir_core::rejections::log(
                "grpc",
                "batch_too_large",
                &format_args!("a batch of {total} events"),
            );
            return Err(Status::resource_exhausted(format!(
                "batch of {total} events exceeds the limit of {}",
                self.max_batch_events
            )));
        }
        let mut events = Vec::with_capacity(total);
        let mut refused = 0usize;
        let mut message = String::new();
        for e in &batch.events {
            match validate(e).and_then(|()| to_cloudevent(e, &self.type_prefix)) {
                Ok(ce) => events.push(ce),
                Err(reason) => {
                    refused += 1;
                    if refused <= NAMED_ERRORS {
                        let _ = write!(message, "; `{}`: {reason}", e.event_id);
                    }
                }
            }
        }
        if refused > 0 {
            self.router
                .metrics()
                .rejected
                .with_label_values(&["grpc", "invalid_event"])
                .inc_by(refused as u64);
            weir_core::rejections::log(
                "grpc",
                "invalid_event",
                &format_args!("{refused} of {total} events{message}"),
            );
        }
        if !events.is_empty() {
            let origin = Origin {
                source_kind: "grpc",
                producer,
                ..Origin::default()
            };
            let span = weir_core::trace::receive_span(
                "grpc",
                weir_core::trace::Receiving::Request,
                events.len(),
            );
            weir_core::trace::receive(&span, carried.as_ref(), &mut events);
            tracing::Instrument::instrument(self.router.submit_to(origin, events), span)
                .await
                .map_err(|e| match e {
                    RouterError::RateLimited { .. } => Status::resource_exhausted(e.to_string()),
                    RouterError::TenantRefused { .. } => {
                        self.router
                            .metrics()
                            .rejected
                            .with_label_values(&["grpc", "tenant_refused"])
                            .inc();
                        weir_core::rejections::log("grpc", "tenant_refused", &e);
                        Status::permission_denied(e.to_string())
                    }
                    other => Status::unavailable(other.to_string()),
                })?;
        }
        Ok(if refused == 0 {
            pb::EventBatchResponse {
                success: true,
                message: String::new(),
            }
        } else {
            let more = refused.saturating_sub(NAMED_ERRORS);
            let tail = if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            };
            pb::EventBatchResponse {
                success: false,
                message: format!(
                    "{refused} of {total} events refused{message}{tail}; the others were accepted"
                ),
            }
        })
    }
}

/// `rodent.RodentService`: `SendEvents` here, the other methods passed through.
#[derive(Clone)]
pub struct RodentService {
    ingest: Arc<GrpcIngest>,
    passthrough: Passthrough,
    max_decoding_bytes: usize,
}

impl NamedService for RodentService {
    const NAME: &'static str = "rodent.RodentService";
}

struct SendEventsCall(Arc<GrpcIngest>);

impl UnaryService<WireBatch> for SendEventsCall {
    type Response = pb::EventBatchResponse;
    type Future = BoxFuture<Response<pb::EventBatchResponse>, Status>;

    fn call(&mut self, request: Request<WireBatch>) -> Self::Future {
        let ingest = self.0.clone();
        Box::pin(async move {
            let producer = ingest.producer(request.metadata())?;
            // W3C Trace Context in the call's metadata.
            let carried = weir_core::trace::enabled()
                .then(|| {
                    weir_core::trace::from_carrier(|name| {
                        request.metadata().get(name).and_then(|v| v.to_str().ok())
                    })
                })
                .flatten();
            ingest
                .take(producer, request.into_inner(), carried)
                .await
                .map(Response::new)
        })
    }
}

impl Service<http::Request<Body>> for RodentService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != SEND_EVENTS {
            return self.passthrough.forward(request);
        }
        let call = SendEventsCall(self.ingest.clone());
        let max = self.max_decoding_bytes;
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<pb::EventBatchResponse, WireBatch>::default();
            let mut grpc =
                tonic::server::Grpc::new(codec).apply_max_message_size_config(Some(max), None);
            Ok(grpc.unary(call, request).await)
        })
    }
}

impl StartSource for GrpcConfig {
    async fn start(&self, name: &str, cx: SourceContext) -> Result<RunningSource, SourceError> {
        let Some(listen) = self.listen else {
            return Ok(RunningSource::default());
        };
        let passthrough = Passthrough::new(self.upstream.as_ref())
            .map_err(|e| SourceError::new(name, "upstream Toggle", e))?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| SourceError::new(name, format!("cannot listen on {listen}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| SourceError::new(name, format!("cannot listen on {listen}"), e))?;
        let service = RodentService {
            ingest: Arc::new(GrpcIngest::new(
                cx.router.clone(),
                self.type_prefix.clone(),
                self.max_batch_events,
                self.anonymous
                    .unwrap_or_else(|| cx.router.producers().is_empty()),
            )),
            passthrough,
            max_decoding_bytes: cx.max_request_bytes,
        };
        let done = cx.stopped();
        let limits = cx.connections;
        let keepalive = std::time::Duration::from_millis(limits.header_timeout_ms.max(1));
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                // A peer that stops answering pings is let go; one connection carries at
                // most 128 calls at once.
                .http2_keepalive_interval(Some(keepalive))
                .http2_keepalive_timeout(Some(keepalive))
                .max_concurrent_streams(Some(128))
                .add_service(service)
                .serve_with_incoming_shutdown(
                    capped_incoming(listener, limits.max_connections),
                    done,
                )
                .await;
            if let Err(e) = served {
                tracing::error!("gRPC source stopped: {e}");
            }
        });
        Ok(RunningSource {
            tasks: vec![task],
            addr: Some(addr),
        })
    }
}

/// The listener's connections, at most `max` open at once: beyond it nothing more is
/// accepted until one closes (new clients wait in the kernel's backlog).
fn capped_incoming(
    listener: tokio::net::TcpListener,
    max: usize,
) -> impl futures_core::Stream<Item = std::io::Result<CappedConnection>> {
    let slots = Arc::new(tokio::sync::Semaphore::new(max.max(1)));
    futures_util::stream::unfold((listener, slots), |(listener, slots)| async move {
        let slot = slots.clone().acquire_owned().await.ok()?;
        let accepted = listener
            .accept()
            .await
            .map(|(tcp, _)| CappedConnection { tcp, _slot: slot });
        Some((accepted, (listener, slots)))
    })
}

/// A connection holding one of the listener's slots until it closes.
struct CappedConnection {
    tcp: tokio::net::TcpStream,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for CappedConnection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp.connect_info()
    }
}

impl tokio::io::AsyncRead for CappedConnection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CappedConnection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}
