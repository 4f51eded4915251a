//! What the HTTP handlers (ingest, tail, metrics and the admin API) share, and the one
//! JSON error body they all answer with.

use crate::tokens::{ListenerCaller, Tokens};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use weir_core::sink::Sink;
use weir_core::tail::TailHub;
use weir_router::settings::RouteConfig;
use weir_router::{Metrics, Router, TenantDirectory};
use weir_runtime::registry::FilterRegistry;

/// What the handlers share.
pub struct AppState {
    /// The running routes.
    pub router: Arc<Router>,
    /// The filters and their versions.
    pub registry: Arc<FilterRegistry>,
    /// Tenants: limits and chains.
    pub tenants: Arc<TenantDirectory>,
    /// Admin API tokens.
    pub tokens: Tokens,
    /// The configured routes (to tell which use a filter).
    pub routes: Vec<RouteConfig>,
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
    pub sinks: BTreeMap<String, Arc<dyn Sink>>,
    /// The components' health checks (`/readyz?verbose`).
    pub health: weir_core::health::HealthChecks,
    /// Whether the main listener serves callers without credentials.
    pub anonymous_allowed: bool,
    /// When the router started (the status page's uptime).
    pub started: std::time::Instant,
    /// Throughput over the last minutes, for the status page.
    pub history: crate::throughput::History,
}

impl AppState {
    /// Who calls the main listener, or why it is refused.
    pub fn listener_caller(
        &self,
        parts: &axum::http::request::Parts,
    ) -> Result<ListenerCaller, Unauthenticated> {
        ListenerCaller::authenticate(
            &self.tokens,
            self.router.producers(),
            self.anonymous_allowed,
            &parts.headers,
            parts.extensions.get::<weir_core::tls::PeerIdentity>(),
        )
        .map_err(Unauthenticated)
    }
}

/// Why a caller is not authenticated; answered `401`.
#[derive(Debug)]
pub struct Unauthenticated(pub &'static str);

impl IntoResponse for Unauthenticated {
    fn into_response(self) -> Response {
        error(StatusCode::UNAUTHORIZED, "unauthenticated", self.0)
    }
}

/// An authenticated caller of the main listener (the extractor answers `401`).
pub struct Listener(pub ListenerCaller);

impl axum::extract::FromRequestParts<Arc<AppState>> for Listener {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Response> {
        state
            .listener_caller(parts)
            .map(Listener)
            .map_err(IntoResponse::into_response)
    }
}

/// The answer refusing a caller that may not read what every tenant does.
pub fn not_for_tenants(what: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("{what} covers every tenant: it needs an admin credential"),
    )
}

/// A JSON error answer: `{"error": code, "reason": text}`.
pub fn error(status: StatusCode, code: &str, reason: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": code, "reason": reason.into() })),
    )
        .into_response()
}
