//! The admin API: upload, inspect, roll back, remove and dry-run filters, behind bearer
//! tokens with roles (`admin`, or `tenant:<id>` for one tenant's filters).

use crate::state::{error, AppState};
use crate::tokens::Role;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Json;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{json, Value};
use std::sync::Arc;
use weir_abi::BatchWriter;
use weir_core::cloudevents::json::{parse_batch, Structured};
use weir_core::tls::PeerIdentity;
use weir_router::settings::RouteConfig;
use weir_router::{TenantDirectory, TenantSettings};
use weir_runtime::registry::{FilterRecord, RegistryError, Upload};
use weir_runtime::{apply_verdicts, wit, Decision, Limits};

fn registry_error(e: &RegistryError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, e.code(), e.to_string())
}

fn forbidden(name: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("filter `{name}` belongs to another tenant"),
    )
}

/// An authenticated admin caller: its name and role (the extractor answers `401`).
pub struct Caller(pub String, pub Role);

impl axum::extract::FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Response> {
        state
            .tokens
            .check(&parts.headers, parts.extensions.get::<PeerIdentity>())
            .map(|(name, role)| Caller(name, role))
            .map_err(|reason| error(StatusCode::UNAUTHORIZED, "unauthenticated", reason))
    }
}

/// The answer refusing `role` access to an existing filter: `404` when there is none,
/// `403` when it belongs to another tenant.
fn refuse_filter(state: &AppState, role: &Role, name: &str) -> Option<Response> {
    match state.registry.record(name) {
        Some(r) if !role.may_touch(&r) => Some(forbidden(name)),
        None => Some(registry_error(&RegistryError::NotFound(name.to_owned()))),
        Some(_) => None,
    }
}

/// The admin routes.
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/v1/filters", get(list_filters))
        .route(
            "/v1/filters/{name}",
            put(put_filter).get(get_filter).delete(delete_filter),
        )
        .route("/v1/filters/{name}/rollback", post(rollback))
        .route("/v1/filters/{name}/test", post(dry_run))
        .route("/v1/tenants", get(list_tenants))
        .route("/v1/replay/{route}", post(replay))
        .route("/v1/sinks/{sink}/circuit/reset", post(reset_circuit))
        .route(
            "/v1/tenants/{tenant}",
            put(put_tenant).get(get_tenant).delete(delete_tenant),
        )
}

/// `POST /v1/replay/{route}`: CloudEvents resent by an operator (`weir replay`) through
/// one route, whichever sources feed it. Admins only.
async fn replay(
    State(state): State<Arc<AppState>>,
    Caller(_, role): Caller,
    Path(route): Path<String>,
    request: Request,
) -> Response {
    if !matches!(role, Role::Admin) {
        return error(StatusCode::FORBIDDEN, "forbidden", "replay is for admins");
    }
    let producer = weir_router::Producer::Platform;
    crate::ingest::ingest(
        state,
        weir_router::REPLAY_SOURCE,
        Some(route),
        producer,
        request,
    )
    .await
}

/// `POST /v1/sinks/{sink}/circuit/reset`: closes a sink's circuit breaker by hand, so
/// the next write goes through without waiting for the recovery timeout. Admins only;
/// `404` for an unknown sink, `409` for a sink without a breaker.
async fn reset_circuit(
    State(state): State<Arc<AppState>>,
    Caller(who, role): Caller,
    Path(sink): Path<String>,
) -> Response {
    if !matches!(role, Role::Admin) {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "resetting a circuit is for admins",
        );
    }
    let Some(found) = state.sinks.get(&sink) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_sink",
            format!("no sink `{sink}`"),
        );
    };
    let Some(breaker) = found.circuit() else {
        return error(
            StatusCode::CONFLICT,
            "no_circuit",
            format!("sink `{sink}` has no circuit breaker"),
        );
    };
    let was = breaker.state();
    breaker.reset();
    tracing::info!(sink = %sink, by = %who, was = was.name(), "circuit reset by hand");
    Json(json!({ "sink": sink, "was": was.name(), "circuit": breaker.state().name() }))
        .into_response()
}

/// Which routes and tenants run a filter (`default` stands for the route's default chain,
/// `*` for an enforced filter, run for every tenant).
fn used_by(routes: &[RouteConfig], tenants: &TenantDirectory, name: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for r in routes {
        if r.filters.iter().any(|f| f == name) {
            out.push(json!({"route": r.name, "tenant": "default"}));
        }
        let enforced = r.enforced.before.iter().chain(&r.enforced.after);
        if enforced.into_iter().any(|f| f == name) {
            // Run for every tenant, whatever its chain.
            out.push(json!({"route": r.name, "tenant": "*", "enforced": true}));
        }
    }
    for (tenant, settings) in tenants.all() {
        for (route, chain) in &settings.routes {
            if chain.iter().any(|f| f == name) {
                out.push(json!({"route": route, "tenant": tenant}));
            }
        }
    }
    out
}

fn describe(state: &AppState, name: &str, record: &FilterRecord) -> Value {
    json!({
        "name": name,
        "owner": record.owner,
        "active": record.active,
        "versions": record.versions,
        "used_by": used_by(&state.routes, &state.tenants, name),
    })
}

async fn list_filters(State(state): State<Arc<AppState>>, Caller(_, role): Caller) -> Response {
    let filters: Vec<Value> = state
        .registry
        .list()
        .iter()
        .filter(|(_, r)| role.may_touch(r))
        .map(|(name, r)| describe(&state, name, r))
        .collect();
    Json(json!({ "filters": filters })).into_response()
}

async fn get_filter(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Caller(_, role): Caller,
) -> Response {
    match state.registry.record(&name) {
        Some(r) if role.may_touch(&r) => Json(describe(&state, &name, &r)).into_response(),
        Some(_) => forbidden(&name),
        None => registry_error(&RegistryError::NotFound(name)),
    }
}

#[derive(serde::Deserialize)]
struct PutQuery {
    config: Option<String>,
}

/// The header carrying a filter's JSON configuration on upload.
pub const CONFIG_HEADER: &str = "x-weir-filter-config";

async fn put_filter(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(query): Query<PutQuery>,
    request: Request,
) -> Response {
    // Who is asking is settled before the (up to `max_component_bytes`) body is read: an
    // unauthenticated client gets its 401 at once and the connection closes.
    let (parts, body) = request.into_parts();
    let (caller, role) = match state
        .tokens
        .check(&parts.headers, parts.extensions.get::<PeerIdentity>())
    {
        Ok(who) => who,
        Err(reason) => {
            let mut refusal = error(StatusCode::UNAUTHORIZED, "unauthenticated", reason);
            refusal.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return refusal;
        }
    };
    let limit = state.max_component_bytes;
    let body = match Limited::new(body, limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the component exceeds the limit of {limit} bytes"),
            )
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_body", e.to_string()),
    };
    if let Some(existing) = state.registry.record(&name) {
        if !role.may_touch(&existing) {
            return forbidden(&name);
        }
    }
    let config = parts
        .headers
        .get(CONFIG_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.config)
        .unwrap_or_else(|| "{}".into());
    let owner = match &role {
        Role::Tenant(t) => Some(t.clone()),
        Role::Admin => None,
    };
    let registry = state.registry.clone();
    let upload_name = name.clone();
    let result = tokio::task::spawn_blocking(move || {
        registry.upload(
            &upload_name,
            Upload {
                component: &body,
                config: &config,
                owner: owner.as_deref(),
                by: &caller,
            },
        )
    })
    .await;
    match result {
        Ok(Ok(v)) => (
            StatusCode::CREATED,
            Json(json!({"name": name, "version": v.version, "hash": v.hash, "size": v.size})),
        )
            .into_response(),
        Ok(Err(e)) => registry_error(&e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn delete_filter(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Caller(_, role): Caller,
) -> Response {
    if let Some(refusal) = refuse_filter(&state, &role, &name) {
        return refusal;
    }
    let users = used_by(&state.routes, &state.tenants, &name);
    if !users.is_empty() {
        return (
            StatusCode::CONFLICT,
            Json(json!({
                "error": "in_use",
                "reason": format!("filter `{name}` is used by {} route chain(s)", users.len()),
                "used_by": users,
            })),
        )
            .into_response();
    }
    match state.registry.remove(&name) {
        Ok(_) => Json(json!({"removed": name})).into_response(),
        Err(e) => registry_error(&e),
    }
}

#[derive(serde::Deserialize, Default)]
struct RollbackBody {
    version: Option<u32>,
}

async fn rollback(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Caller(_, role): Caller,
    body: Bytes,
) -> Response {
    if let Some(refusal) = refuse_filter(&state, &role, &name) {
        return refusal;
    }
    let wanted: RollbackBody = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("expected {{\"version\": N}}: {e}"),
                )
            }
        }
    };
    let registry = state.registry.clone();
    let result =
        tokio::task::spawn_blocking(move || registry.rollback(&name, wanted.version)).await;
    match result {
        Ok(Ok(v)) => Json(json!({"active": v.version, "hash": v.hash})).into_response(),
        Ok(Err(e)) => registry_error(&e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// Runs a batch of events (CloudEvents batch JSON) through the filter's active version in
/// a throwaway instance and answers the verdicts; nothing is delivered.
async fn dry_run(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Caller(_, role): Caller,
    body: Bytes,
) -> Response {
    if let Some(refusal) = refuse_filter(&state, &role, &name) {
        return refusal;
    }
    let Some(active) = state.registry.active(&name) else {
        return error(
            StatusCode::CONFLICT,
            "no_active_version",
            format!("filter `{name}` has no active version"),
        );
    };
    let events = match parse_batch(&body) {
        Ok(events) => events,
        Err(e) => return error(StatusCode::BAD_REQUEST, "malformed_event", e.to_string()),
    };
    let tenant = match &role {
        Role::Tenant(t) => t.clone(),
        Role::Admin => "default".to_owned(),
    };
    let registry = state.registry.clone();
    // The caller's tenant's limits: a dry run is held to what a real run would be.
    let limits = state.tenants.limits(&tenant);
    let result = tokio::task::spawn_blocking(move || {
        let mut instance = registry
            .instantiate(&active.compiled, &active.config, &tenant, limits)
            .map_err(|e| e.to_string())?;
        let mut writer = BatchWriter::new();
        for e in &events {
            writer.push(&e.core(), e.extension_pairs(), e.data.as_deref());
        }
        let ctx = wit::Context {
            tenant,
            route: "dry-run".into(),
            source_kind: "admin".into(),
            principal: None,
        };
        let answer = instance
            .process(&ctx, writer.as_bytes())
            .map_err(|e| e.to_string())?;
        let decisions = apply_verdicts(events, &answer).map_err(|(_, e)| e.to_string())?;
        Ok::<_, String>((active.version, decisions))
    })
    .await;
    match result {
        Ok(Ok((version, decisions))) => {
            let verdicts: Vec<Value> = decisions.iter().map(decision_json).collect();
            Json(json!({"version": version, "verdicts": verdicts})).into_response()
        }
        Ok(Err(reason)) => error(StatusCode::UNPROCESSABLE_ENTITY, "filter_failed", reason),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// A decision as JSON, for dry runs and `weir filter test`.
pub fn decision_json(d: &Decision) -> Value {
    match d {
        Decision::Keep(e) => json!({"verdict": "keep", "event": Structured(e)}),
        Decision::Drop { event, reason } => {
            json!({"verdict": "drop", "id": event.id, "reason": &**reason})
        }
        Decision::FanOut(es) => {
            json!({"verdict": "fan-out", "events": es.iter().map(Structured).collect::<Vec<_>>()})
        }
        Decision::Route { sink, event } => {
            json!({"verdict": "route", "sink": sink, "event": Structured(event)})
        }
        Decision::Error { event, reason } => {
            json!({"verdict": "error", "id": event.id, "reason": reason})
        }
    }
}

fn may_see_tenant(role: &Role, tenant: &str) -> bool {
    match role {
        Role::Admin => true,
        Role::Tenant(t) => t == tenant,
    }
}

async fn list_tenants(State(state): State<Arc<AppState>>, Caller(_, role): Caller) -> Response {
    let tenants: serde_json::Map<String, Value> = state
        .tenants
        .all()
        .into_iter()
        .filter(|(name, _)| may_see_tenant(&role, name))
        .map(|(name, t)| (name, json!(t)))
        .collect();
    Json(json!({ "tenants": tenants })).into_response()
}

async fn get_tenant(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    Caller(_, role): Caller,
) -> Response {
    if !may_see_tenant(&role, &tenant) {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("tenant `{tenant}` is not yours"),
        );
    }
    match state.tenants.get(&tenant) {
        Some(t) => {
            Json(json!({"tenant": tenant, "limits": t.limits, "routes": t.routes})).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no tenant `{tenant}`"),
        ),
    }
}

/// A tenant change: fields left out keep their current value.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantUpdate {
    limits: Option<Limits>,
    routes: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

async fn put_tenant(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    Caller(caller, role): Caller,
    body: Bytes,
) -> Response {
    if !may_see_tenant(&role, &tenant) {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("tenant `{tenant}` is not yours"),
        );
    }
    if !weir_runtime::registry::valid_name(&tenant) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_name",
            format!("invalid tenant name `{tenant}`"),
        );
    }
    let update: TenantUpdate = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!(
                "expected {{\"limits\": {{...}}, \"routes\": {{\"ROUTE\": [FILTER, ...]}}}}: {e}"
            ),
            )
        }
    };
    let current = state
        .tenants
        .get(&tenant)
        .unwrap_or_else(|| TenantSettings {
            limits: state.tenants.limits("default"),
            routes: Default::default(),
        });
    if let (Role::Tenant(_), Some(limits)) = (&role, &update.limits) {
        if *limits != current.limits {
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a tenant's limits are set by admins",
            );
        }
    }
    let next = TenantSettings {
        limits: update.limits.unwrap_or(current.limits),
        routes: update.routes.unwrap_or(current.routes),
    };
    if next.limits.timeout_ms == 0 || next.limits.memory_mb == 0 || next.limits.output_mb == 0 {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_limits",
            "timeout_ms, memory_mb and output_mb must be positive",
        );
    }
    if next.limits.memory_mb > state.max_memory_mb {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_limits",
            format!(
                "memory_mb is at most {} on this router",
                state.max_memory_mb
            ),
        );
    }
    for (route, chain) in &next.routes {
        if !state.routes.iter().any(|r| &r.name == route) {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_route",
                format!("no route `{route}`"),
            );
        }
        for filter in chain {
            match state.registry.record(filter) {
                None => {
                    return error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "unknown_filter",
                        format!("no filter `{filter}`: upload it first"),
                    )
                }
                Some(r) if r.owner.is_some() && !role.may_touch(&r) => return forbidden(filter),
                Some(_) => {}
            }
        }
    }
    match state.tenants.set(&tenant, next.clone()) {
        Ok(()) => {
            tracing::info!(tenant, by = caller, "tenant settings changed");
            Json(json!({"tenant": tenant, "limits": next.limits, "routes": next.routes}))
                .into_response()
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_failed",
            e.to_string(),
        ),
    }
}

async fn delete_tenant(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    Caller(_, role): Caller,
) -> Response {
    if role != Role::Admin {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only admins remove tenants",
        );
    }
    match state.tenants.remove(&tenant) {
        Ok(true) => Json(json!({"removed": tenant})).into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("tenant `{tenant}` was not set through the API (tenants from the configuration file stay)"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store_failed", e.to_string()),
    }
}
