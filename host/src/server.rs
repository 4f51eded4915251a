//! The HTTP listener: CloudEvents ingest, the tail stream, health and metrics.

use crate::cloudevents::http::{parse_request, BindingError};
use crate::metrics::Metrics;
use crate::pipeline::{Origin, Router, RouterError};
use crate::sinks::TailHub;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use futures_util::StreamExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_stream::wrappers::BroadcastStream;

/// What the handlers share.
pub struct AppState {
    /// The running routes.
    pub router: Router,
    /// The filters and their versions.
    pub registry: Arc<crate::registry::FilterRegistry>,
    /// Tenants: limits and chains.
    pub tenants: Arc<crate::tenants::TenantDirectory>,
    /// Admin API tokens.
    pub tokens: crate::admin::Tokens,
    /// The configured routes (to tell which use a filter).
    pub routes: Vec<crate::config::RouteConfig>,
    /// The largest memory limit a tenant may get (the engine's pool size), MiB.
    pub max_memory_mb: u64,
    /// Largest component upload, bytes.
    pub max_component_bytes: usize,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The tail stream.
    pub tail: TailHub,
    /// The request header naming the tenant, when configured.
    pub tenant_header: Option<String>,
    /// Largest accepted event, bytes.
    pub max_event_bytes: usize,
    /// Largest accepted request body, bytes.
    pub max_request_bytes: usize,
    /// Set once everything is started; cleared while shutting down.
    pub ready: AtomicBool,
    /// The open sinks by name (for `GET /v1/stats`).
    pub sinks: std::collections::BTreeMap<String, Arc<dyn crate::sinks::Sink>>,
}

/// The HTTP application; with `with_admin`, the admin API is on it too.
pub fn app(state: Arc<AppState>, with_admin: bool) -> axum::Router {
    let app = axum::Router::new()
        .route("/v1/events", post(ingest_all))
        .route("/v1/routes/{route}/events", post(ingest_route))
        .route("/v1/tail", get(tail))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/stats", get(stats));
    let app = if with_admin {
        app.merge(crate::admin::routes())
    } else {
        app
    };
    app.with_state(state)
}

/// The admin API alone, for its own listener.
pub fn admin_app(state: Arc<AppState>) -> axum::Router {
    crate::admin::routes()
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

/// Serves until `shutdown` completes, then stops accepting and finishes open requests.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A JSON error answer: `{"error": code, "reason": text}`.
fn error(status: StatusCode, code: &str, reason: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": code, "reason": reason.into() })),
    )
        .into_response()
}

async fn ingest_all(State(state): State<Arc<AppState>>, request: Request) -> Response {
    ingest(state, "http", None, request).await
}

/// `GET /v1/stats`: figures of the sinks that have any (the Toggle sink's buffer, spill
/// and replay counts, matching Toggle's GetStats fields).
async fn stats(State(state): State<Arc<AppState>>) -> axum::Json<serde_json::Value> {
    let sinks: serde_json::Map<String, serde_json::Value> = state
        .sinks
        .iter()
        .filter_map(|(name, sink)| sink.stats().map(|s| (name.clone(), s)))
        .collect();
    axum::Json(serde_json::json!({ "sinks": sinks }))
}

async fn ingest_route(
    State(state): State<Arc<AppState>>,
    Path(route): Path<String>,
    request: Request,
) -> Response {
    ingest(state, "http", Some(route), request).await
}

/// Reads a CloudEvents request and hands its events to the routes fed by `source_kind`
/// (`http`), or with `replay` to the named route whatever feeds it (`weir replay`).
pub async fn ingest(
    state: Arc<AppState>,
    source_kind: &'static str,
    route: Option<String>,
    request: Request,
) -> Response {
    let reject = |reason: &str| {
        state
            .metrics
            .rejected
            .with_label_values(&[source_kind, reason])
            .inc();
    };
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.max_request_bytes) {
        reject("too_large");
        return too_large(state.max_request_bytes);
    }
    let body = match Limited::new(body, state.max_request_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            reject("too_large");
            return too_large(state.max_request_bytes);
        }
        Err(e) => {
            reject("body");
            return error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("cannot read body: {e}"),
            );
        }
    };
    let events = match parse_request(&parts.headers, body) {
        Ok(events) => events,
        Err(e) => return binding_error(&state, &e),
    };
    if let Some((i, e)) = events
        .iter()
        .enumerate()
        .find(|(_, e)| e.size() > state.max_event_bytes)
    {
        reject("too_large");
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "event_too_large",
            format!(
                "event {i} (id `{}`) is {} bytes; the limit is {} bytes",
                e.id,
                e.size(),
                state.max_event_bytes
            ),
        );
    }
    let accepted = events.len();
    let tenant_hint = state
        .tenant_header
        .as_deref()
        .and_then(|h| parts.headers.get(h))
        .and_then(|v| v.to_str().ok());
    let origin = Origin {
        source_kind,
        route: route.as_deref(),
        principal: None,
        tenant_hint,
    };
    match state.router.submit_to(origin, events).await {
        Ok(outcome) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "accepted": accepted,
                "delivered": outcome.delivered,
                "routed": outcome.routed,
                "dropped": outcome.dropped,
                "dead_lettered": outcome.dead_lettered,
                "skipped": outcome.skipped,
            })),
        )
            .into_response(),
        Err(e @ RouterError::RateLimited { .. }) => {
            let retry = match &e {
                RouterError::RateLimited {
                    retry_after_secs, ..
                } => *retry_after_secs,
                _ => 1,
            };
            state
                .metrics
                .rejected
                .with_label_values(&[source_kind, "rate_limited"])
                .inc();
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string());
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(retry));
            response
        }
        Err(e @ RouterError::UnknownRoute(_)) => {
            error(StatusCode::NOT_FOUND, "unknown_route", e.to_string())
        }
        Err(e @ RouterError::Stopped(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "delivery_failed",
            e.to_string(),
        ),
    }
}

fn too_large(limit: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        format!("the request body exceeds the limit of {limit} bytes"),
    )
}

fn binding_error(state: &AppState, e: &BindingError) -> Response {
    let (status, code) = match e.status() {
        415 => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        _ => (StatusCode::BAD_REQUEST, "malformed_event"),
    };
    state
        .metrics
        .rejected
        .with_label_values(&["http", code])
        .inc();
    error(status, code, e.to_string())
}

async fn tail(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let _ = headers;
    let stream = BroadcastStream::new(state.tail.subscribe()).map(|item| {
        Ok::<_, std::convert::Infallible>(match item {
            Ok(line) => line,
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                bytes::Bytes::from(format!("{{\"lagged\":{n}}}\n"))
            }
        })
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
