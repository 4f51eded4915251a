//! The status page: `GET /` is one self-contained HTML page (no external assets) that
//! refreshes itself from `GET /v1/status`, the router's state as JSON: routes with each
//! tenant's filter chain and versions, per-route and per-sink counts and throughput over
//! the last minutes, sink circuits, dead-letter and spill backlogs, Kafka consumer lag and
//! the components' health checks.
//!
//! The numbers are read from the same metric families `/metrics` exposes, so the two
//! agree. The page itself holds no data and is served to anyone; the JSON follows the
//! listener's authentication: an admin (or anyone, on a listener open to anonymous
//! callers) sees everything, a tenant's credential only its own chains, filters and
//! verdicts.

use crate::state::{AppState, Listener};
use crate::tokens::ListenerCaller;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use weir_core::metrics::Sample;

/// The page, with its script and styles inline.
const PAGE: &str = include_str!("status.html");

/// Events leaving a route, as `weir_route_events_total` counts them by outcome.
const ROUTE_OUTCOMES: [&str; 5] = [
    "delivered",
    "routed",
    "dropped",
    "dead_lettered",
    "unmatched",
];

/// `GET /`: the page. It holds no data (its script asks `/v1/status` with the caller's
/// credential), so it is served to anyone.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything is inline; nothing may be loaded from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'",
            ),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /v1/status`: the router's state as JSON, scoped to the caller.
pub async fn status(State(state): State<Arc<AppState>>, Listener(caller): Listener) -> Response {
    let tenant = match &caller {
        // Tenants with producer credentials keep their figures from anonymous readers.
        ListenerCaller::Anonymous if !state.router.producers().is_empty() => {
            return crate::state::Unauthenticated(
                "tenants here authenticate their producers: the status needs a credential",
            )
            .into_response()
        }
        ListenerCaller::Admin | ListenerCaller::Anonymous => None,
        ListenerCaller::Tenant(t) => Some(t.to_string()),
        ListenerCaller::Unbound => {
            return crate::state::error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the client certificate speaks for no tenant: map it in tenancy.producers",
            )
        }
    };
    let build = move || report(&state, tenant.as_deref());
    match tokio::task::spawn_blocking(build).await {
        Ok(value) => axum::Json(value).into_response(),
        Err(_) => crate::state::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the status could not be put together",
        ),
    }
}

/// The status as JSON; with `tenant`, only what that tenant may see.
fn report(state: &AppState, tenant: Option<&str>) -> Value {
    let samples = state.metrics.registry().samples(&[
        "weir_route_events_total",
        "weir_sink_events_total",
        "weir_sink_errors_total",
        "weir_dead_letter_queue_size",
        "weir_filter_verdicts_total",
        "weir_kafka_consumer_lag",
        "weir_events_received_total",
        "weir_events_rejected_total",
    ]);
    let of = |name: &'static str| samples.iter().filter(move |s| s.name == name);
    let sum_where = |name: &'static str, pred: &dyn Fn(&Sample) -> bool| -> f64 {
        of(name).filter(|s| pred(s)).map(|s| s.value).sum()
    };
    let routes: Vec<Value> = state
        .routes
        .iter()
        .map(|route| {
            let mut chains = Vec::new();
            let mut chain_of = |who: Option<&str>, own: &[String]| {
                let filters: Vec<Value> = route
                    .enforced
                    .around(own)
                    .iter()
                    .map(|name| {
                        let enforced = route.enforced.before.contains(name)
                            || route.enforced.after.contains(name);
                        json!({
                            "name": name,
                            "version": state.registry.active(name).map(|a| a.version),
                            "enforced": enforced,
                        })
                    })
                    .collect();
                chains.push(json!({ "tenant": who, "filters": filters }));
            };
            match tenant {
                Some(t) => {
                    let own = state.tenants.chain(t, &route.name);
                    chain_of(Some(t), own.as_deref().unwrap_or(&route.filters));
                }
                None => {
                    chain_of(None, &route.filters);
                    // The configuration's per-tenant chains and those set through the API.
                    for (t, settings) in state.tenants.all() {
                        if let Some(own) = settings.routes.get(&route.name) {
                            chain_of(Some(&t), own);
                        }
                    }
                }
            }
            let mut entry = json!({
                "name": route.name,
                "from": route.from,
                "to": route.to,
                "chains": chains,
                "record_filters": route.record_filters,
            });
            if tenant.is_none() {
                let events: Map<String, Value> = ROUTE_OUTCOMES
                    .iter()
                    .map(|outcome| {
                        let n = sum_where("weir_route_events_total", &|s| {
                            s.label("route") == Some(route.name.as_str())
                                && s.label("outcome") == Some(outcome)
                        });
                        (outcome.to_string(), json!(n as u64))
                    })
                    .collect();
                entry["events"] = Value::Object(events);
                entry["dead_letter"] = json!(route.dead_letter);
            }
            entry
        })
        .collect();
    // Verdicts per tenant and verdict.
    let mut verdicts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for s in of("weir_filter_verdicts_total") {
        let (Some(t), Some(v)) = (s.label("tenant"), s.label("verdict")) else {
            continue;
        };
        if tenant.is_some_and(|only| only != t) {
            continue;
        }
        *verdicts
            .entry(t.to_owned())
            .or_default()
            .entry(v.to_owned())
            .or_default() += s.value as u64;
    }
    let filters: Vec<Value> = state
        .registry
        .list()
        .into_iter()
        .filter(|(name, record)| match tenant {
            None => true,
            // A tenant sees its own filters and those its chains run.
            Some(t) => {
                record.owner.as_deref() == Some(t)
                    || routes.iter().any(|r| {
                        r["chains"].as_array().is_some_and(|chains| {
                            chains.iter().any(|c| {
                                c["filters"]
                                    .as_array()
                                    .is_some_and(|f| f.iter().any(|f| f["name"] == name.as_str()))
                            })
                        })
                    })
            }
        })
        .map(|(name, record)| {
            json!({
                "name": name,
                "version": record.active,
                "versions": record.versions.len(),
                "owner": record.owner,
            })
        })
        .collect();
    let mut out = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "scope": tenant.map_or_else(|| "all".to_owned(), |t| format!("tenant:{t}")),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "ready": state.ready.load(std::sync::atomic::Ordering::Relaxed),
        "routes": routes,
        "filters": filters,
        "verdicts": verdicts,
        "history": state.history.rates(tenant),
    });
    if tenant.is_some() {
        return out;
    }
    let sinks: Vec<Value> = state
        .sinks
        .iter()
        .map(|(name, sink)| {
            let by_sink = |family: &'static str| {
                sum_where(family, &|s| s.label("sink") == Some(name.as_str())) as u64
            };
            let dead_letters = of("weir_dead_letter_queue_size")
                .find(|s| s.label("sink") == Some(name.as_str()))
                .map(|s| s.value as u64);
            json!({
                "name": name,
                "events": by_sink("weir_sink_events_total"),
                "errors": by_sink("weir_sink_errors_total"),
                "circuit": sink.circuit().map(|c| c.state().name()),
                "dead_letters": dead_letters,
                "stats": sink.stats(),
            })
        })
        .collect();
    let lag: Vec<Value> = of("weir_kafka_consumer_lag")
        .map(|s| {
            json!({
                "group": s.label("group"),
                "topic": s.label("topic"),
                "partition": s.label("partition"),
                "lag": s.value as i64,
            })
        })
        .collect();
    let received: Map<String, Value> = of("weir_events_received_total")
        .filter_map(|s| Some((s.label("source")?.to_owned(), json!(s.value as u64))))
        .collect();
    let mut rejected: BTreeMap<String, u64> = BTreeMap::new();
    for s in of("weir_events_rejected_total") {
        if let Some(reason) = s.label("reason") {
            *rejected.entry(reason.to_owned()).or_default() += s.value as u64;
        }
    }
    let checks: Vec<Value> = state
        .health
        .run()
        .into_iter()
        .map(|c| {
            json!({
                "name": c.name,
                "ok": c.failure.is_none(),
                "critical": c.critical,
                "reason": c.failure,
            })
        })
        .collect();
    out["sinks"] = json!(sinks);
    out["kafka_lag"] = json!(lag);
    out["received"] = Value::Object(received);
    out["rejected"] = json!(rejected);
    out["checks"] = json!(checks);
    out
}
