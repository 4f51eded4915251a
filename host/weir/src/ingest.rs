//! The HTTP CloudEvents source: binary, structured and batch requests, bounded in bytes,
//! handed to the routes fed by `http` (or, for `weir replay`, to one named route).

use crate::state::{error, AppState};
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use std::sync::Arc;
use weir_core::cloudevents::http::{parse_request, BindingError};
use weir_router::{Origin, Producer, RouterError};

/// `POST /v1/events`: events for every route fed by `http`.
pub async fn ingest_all(State(state): State<Arc<AppState>>, request: Request) -> Response {
    from_producer(state, None, request).await
}

/// `POST /v1/routes/{route}/events`: events for one route fed by `http`.
pub async fn ingest_route(
    State(state): State<Arc<AppState>>,
    Path(route): Path<String>,
    request: Request,
) -> Response {
    from_producer(state, Some(route), request).await
}

/// Authenticates the producer before reading the body (`401` at once for a stranger),
/// then ingests its events as its tenant's.
async fn from_producer(state: Arc<AppState>, route: Option<String>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let producer = match state.listener_caller(&parts) {
        Ok(caller) => caller.producer(),
        Err(refused) => {
            reject(&state, "http", "unauthenticated", &refused.0);
            return refused.into_response();
        }
    };
    let request = Request::from_parts(parts, body);
    ingest(state, "http", route, producer, request).await
}

/// Counts a refused request and logs it (one line per reason per window under a storm).
fn reject(
    state: &AppState,
    source_kind: &'static str,
    reason: &'static str,
    detail: &dyn std::fmt::Display,
) {
    state
        .metrics
        .rejected
        .with_label_values(&[source_kind, reason])
        .inc();
    weir_core::rejections::log(source_kind, reason, detail);
}

/// Reads a CloudEvents request from `producer` and hands its events to the routes fed by
/// `source_kind` (`http`), or with `replay` to the named route whatever feeds it
/// (`weir replay`).
pub async fn ingest(
    state: Arc<AppState>,
    source_kind: &'static str,
    route: Option<String>,
    producer: Producer,
    request: Request,
) -> Response {
    let reject = |reason: &'static str, detail: &dyn std::fmt::Display| {
        reject(&state, source_kind, reason, detail)
    };
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.max_request_bytes) {
        reject("too_large", &"the declared body is over the request limit");
        return too_large(state.max_request_bytes);
    }
    let body = match Limited::new(body, state.max_request_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            reject("too_large", &"the body is over the request limit");
            return too_large(state.max_request_bytes);
        }
        Err(e) => {
            reject("body", &e);
            return error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("cannot read body: {e}"),
            );
        }
    };
    let mut events = match parse_request(&parts.headers, body) {
        Ok(events) => events,
        Err(e) => return binding_error(&state, &e),
    };
    if let Some((i, e)) = events
        .iter()
        .enumerate()
        .find(|(_, e)| e.size() > state.max_event_bytes)
    {
        reject(
            "too_large",
            &format_args!("event `{}` is over the event limit", e.id),
        );
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
        producer,
    };
    let span =
        weir_core::trace::receive_span(source_kind, weir_core::trace::Receiving::Request, accepted);
    let carried = weir_core::trace::enabled()
        .then(|| {
            weir_core::trace::from_carrier(|name| {
                parts.headers.get(name).and_then(|v| v.to_str().ok())
            })
        })
        .flatten();
    weir_core::trace::receive(&span, carried.as_ref(), &mut events);
    let submitted = tracing::Instrument::instrument(state.router.submit_to(origin, events), span);
    match submitted.await {
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
            reject("rate_limited", &e);
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string());
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(retry));
            response
        }
        Err(e @ RouterError::TenantRefused { .. }) => {
            reject("tenant_refused", &e);
            error(StatusCode::FORBIDDEN, "tenant_refused", e.to_string())
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
    reject(state, "http", code, e);
    error(status, code, e.to_string())
}
