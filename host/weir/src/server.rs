//! The HTTP listener: CloudEvents ingest, the tail stream, health, stats and metrics.
//! Each endpoint but the plain probes (`/healthz`, `/readyz`) requires what the listener
//! does: a credential unless it serves anonymous callers; a tenant's tail shows only its
//! events, and the figures about every tenant (stats, metrics) are for admins.

use crate::ingest::{ingest_all, ingest_route};
use crate::state::{not_for_tenants, AppState, Listener};
use crate::tokens::ListenerCaller;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The HTTP listener's routes (the admin API's are merged in by `serve` when it has no
/// listener of its own).
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/v1/events", post(ingest_all))
        .route("/v1/routes/{route}/events", post(ingest_route))
        .route("/v1/tail", get(tail))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/stats", get(stats))
        .route("/", get(crate::status::page))
        .route("/v1/status", get(crate::status::status))
}

/// `GET /v1/stats`: figures of the sinks that have any (the Toggle sink's buffer, spill
/// and replay counts, matching Toggle's GetStats fields).
async fn stats(State(state): State<Arc<AppState>>, Listener(caller): Listener) -> Response {
    if !caller.reads_everything() {
        return not_for_tenants("`/v1/stats`");
    }
    let sinks: serde_json::Map<String, serde_json::Value> = state
        .sinks
        .iter()
        .filter_map(|(name, sink)| sink.stats().map(|s| (name.clone(), s)))
        .collect();
    axum::Json(serde_json::json!({ "sinks": sinks })).into_response()
}

/// `GET /v1/tail`: the events leaving the router, as JSON lines; a tenant's caller gets
/// only that tenant's. A reader too slow to keep up is dropped (its stream ends); every
/// stream ends at shutdown.
async fn tail(State(state): State<Arc<AppState>>, Listener(caller): Listener) -> Response {
    let tenant = match caller {
        // Tenants with producer credentials keep their events from anonymous readers.
        ListenerCaller::Anonymous if !state.router.producers().is_empty() => {
            return crate::state::Unauthenticated(
                "tenants here authenticate their producers: their tail needs a credential",
            )
            .into_response()
        }
        ListenerCaller::Admin | ListenerCaller::Anonymous => None,
        ListenerCaller::Tenant(t) => Some(t),
        ListenerCaller::Unbound => {
            return crate::state::error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the client certificate speaks for no tenant: map it in tenancy.producers",
            )
        }
    };
    let Some(stream) = state.tail.subscribe_to(tenant) else {
        return crate::state::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_readers",
            format!(
                "{} tail readers are connected already",
                weir_core::tail::MAX_READERS
            ),
        );
    };
    let stream = stream.map(Ok::<_, std::convert::Infallible>);
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Readiness: `ready`, or with `?verbose` as kube-apiserver lists it, each check on a line
/// (`[+]name ok`, `[-]name failed: reason`) and `readyz check passed` or `failed`.
/// Informational checks (a downstream cluster's watch) are listed but do not fail it.
async fn readyz(
    State(state): State<Arc<AppState>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    parts: axum::http::request::Parts,
) -> Response {
    let started = state.ready.load(Ordering::Relaxed);
    let results = state.health.run();
    let ready = started && results.iter().all(|r| !r.critical || r.failure.is_none());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let verbose = query.as_deref().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "verbose" || kv.starts_with("verbose="))
    });
    if !verbose {
        let text = if ready { "ready\n" } else { "not ready\n" };
        return (status, text).into_response();
    }
    // The checks' reasons name peers and their errors: only for authenticated callers
    // (anyone when the listener is open to anonymous callers).
    if let Err(refused) = state.listener_caller(&parts) {
        return refused.into_response();
    }
    let mut text = String::new();
    let line = |text: &mut String, name: &str, failure: Option<&str>, critical: bool| match failure
    {
        None => text.push_str(&format!("[+]{name} ok\n")),
        Some(why) if critical => text.push_str(&format!("[-]{name} failed: {why}\n")),
        Some(why) => text.push_str(&format!("[-]{name} failed (informational): {why}\n")),
    };
    line(&mut text, "ping", None, true);
    line(
        &mut text,
        "started",
        (!started).then_some("starting or shutting down"),
        true,
    );
    for r in &results {
        line(&mut text, &r.name, r.failure.as_deref(), r.critical);
    }
    text.push_str(if ready {
        "readyz check passed\n"
    } else {
        "readyz check failed\n"
    });
    (status, text).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>, Listener(caller): Listener) -> Response {
    if !caller.reads_everything() {
        return not_for_tenants("`/metrics`");
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
