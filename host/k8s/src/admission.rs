//! Writes through the Events API meet the router: before a create or update is stored (or
//! forwarded to the provider), the admission route's filter chain runs on it with the
//! caller as principal (`scope-inject` stamps the caller's scope there, overwriting what
//! the client sent; any filter may refuse the write). After it is stored, the change
//! flows on to the admission route's sinks (when the route took it: a change its `when`
//! condition does not match never reaches them; a deletion, which was not admitted, runs
//! the route's whole chain) and through the other routes fed by `k8s`.

use super::auth::Caller;
use super::convert::{self, ApiVersion};
use super::status::ApiError;
use bytes::Bytes;
use serde_json::{Map, Value};
use std::sync::{Arc, Weak};
use weir_core::Event;
use weir_router::{Admission, Origin, Producer, Router, RouterError};

/// What the admission route made of a change, and so how the stored change reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passage {
    /// The route's filters admitted it: the stored change goes to the route's sinks
    /// (the filters ran already).
    Filtered,
    /// The route's condition does not take it: the stored change does not reach the route.
    NotTaken,
    /// The route has not seen it (a deletion, or no admission route): the stored change
    /// runs the route's condition and chain like any event.
    Unseen,
}

/// A write as admission leaves it.
#[derive(Debug)]
pub struct Admitted {
    /// The object to store.
    pub object: Map<String, Value>,
    /// How its stored change reaches the admission route.
    pub passage: Passage,
}

/// The routes Events API writes pass through.
pub struct Admitter {
    /// The router (weak: the API must not keep it alive at shutdown).
    router: Option<Weak<Router>>,
    /// The route whose filters admit writes.
    route: Option<String>,
    /// Other routes fed by `k8s`: stored changes run their full chains.
    others: Vec<String>,
}

impl Admitter {
    /// Writes pass `route`'s filters; stored changes also feed `others`.
    pub fn new(router: Option<Weak<Router>>, route: Option<String>, others: Vec<String>) -> Self {
        Self {
            router,
            route,
            others,
        }
    }

    /// Nothing to run: writes are stored as they come.
    pub fn none() -> Self {
        Self::new(None, None, Vec::new())
    }

    /// Whether any route takes the API's writes.
    pub fn active(&self) -> bool {
        self.router.is_some()
    }

    fn router(&self) -> Option<Arc<Router>> {
        self.router.as_ref().and_then(Weak::upgrade)
    }

    /// Refuses (403) a caller whose producer binding does not let it write `event`'s tenant
    /// (`tenancy.producers`), before anything is stored or forwarded: with or without an
    /// admission route, for creates, updates and deletes alike.
    pub fn check_producer(&self, caller: &Caller, event: &Event) -> Result<(), ApiError> {
        let Some(router) = self.router() else {
            return Ok(());
        };
        let producer = origin(&router, caller, None).producer;
        router
            .check_producer(&producer, event)
            .map_err(router_error)
    }

    /// [`Admitter::check_producer`] for a delete in `ns` (an event's tenant comes from its
    /// source, which only its namespace decides).
    pub fn check_delete(&self, caller: &Caller, ns: &str) -> Result<(), ApiError> {
        let event = Event::new("delete", super::ce::source_of(ns), "io.k8s.core.v1.Event");
        self.check_producer(caller, &event)
    }

    /// Runs the admission route's filters on a write (a core/v1 object with its name,
    /// namespace and uid set) and returns the object to store. Identity fields are kept
    /// as they were: filters change content, not which event it is.
    pub async fn admit(
        &self,
        caller: &Caller,
        change: &str,
        core: Map<String, Value>,
    ) -> Result<Admitted, ApiError> {
        self.check_producer(caller, &super::ce::event_view(&core))?;
        let Some(route) = &self.route else {
            return Ok(Admitted {
                object: core,
                passage: Passage::Unseen,
            });
        };
        let Some(router) = self.router() else {
            // Never store a write its filters did not see.
            return Err(ApiError::unavailable("the router is shutting down", 1));
        };
        let name = convert::meta_str(&core, "name").to_owned();
        let body = serde_json::to_vec(&core).map_err(|e| ApiError::internal(e.to_string()))?;
        let uid = convert::meta_str(&core, "uid");
        let event = cloud_event(&core, format!("{uid}-admission"), change, Bytes::from(body));
        let admitted = match router
            .admit(origin(&router, caller, Some(route)), event)
            .await
        {
            Ok(Admission::Admitted(event)) => event,
            Ok(Admission::NotTaken(_)) => {
                return Ok(Admitted {
                    object: core,
                    passage: Passage::NotTaken,
                })
            }
            Ok(Admission::Refused(reason)) => {
                return Err(ApiError::forbidden(
                    &name,
                    format!("events \"{name}\" is forbidden: {reason}"),
                ))
            }
            Ok(Admission::Failed { stage, reason }) => {
                return Err(ApiError::rejected(&name, &stage, &reason))
            }
            Ok(Admission::FannedOut(n)) => {
                return Err(ApiError::rejected(
                    &name,
                    route,
                    &format!(
                        "the filters made {n} events of one write; a write must stay one event"
                    ),
                ))
            }
            Err(e) => return Err(router_error(e)),
        };
        let data = admitted.data.as_deref().unwrap_or(b"");
        let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(data) else {
            return Err(ApiError::rejected(
                &name,
                route,
                "the filters replaced the Event with data that is not a JSON object",
            ));
        };
        if let Err((field, message)) = convert::validate(&object, ApiVersion::Core) {
            return Err(ApiError::rejected(
                &name,
                route,
                &format!("the filters left an invalid Event: {field}: {message}"),
            ));
        }
        // Identity is the API's, not the filters'.
        if let (Some(Value::Object(meta)), Some(original)) =
            (object.get_mut("metadata"), convert::metadata(&core))
        {
            for key in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "resourceVersion",
            ] {
                match original.get(key) {
                    Some(v) => meta.insert(key.to_owned(), v.clone()),
                    None => meta.remove(key),
                };
            }
        }
        Ok(Admitted {
            object,
            passage: Passage::Filtered,
        })
    }

    /// Hands a stored change on: to the admission route as `passage` says (its sinks
    /// when its filters admitted the change, its whole chain when it has not seen it,
    /// nothing when its condition does not take it) and through the other `k8s` routes.
    /// The change is already durable; a route that fails is logged, not reported to the
    /// writer.
    pub async fn stored(
        &self,
        caller: &Caller,
        change: &str,
        core: &Map<String, Value>,
        rv: u64,
        json: Bytes,
        passage: Passage,
    ) {
        let Some(router) = self.router() else { return };
        let uid = convert::meta_str(core, "uid");
        let id = if change == "DELETED" {
            format!("{uid}-deleted")
        } else {
            format!("{uid}-{rv}")
        };
        let event = cloud_event(core, id, change, json);
        let origin = |route| origin(&router, caller, route);
        let (ns, name) = (
            convert::meta_str(core, "namespace"),
            convert::meta_str(core, "name"),
        );
        let mut results = Vec::new();
        match &self.route {
            Some(route) => {
                let to_route = match passage {
                    Passage::Filtered => Some(
                        router
                            .deliver_admitted(origin(Some(route)), vec![event.clone()])
                            .await,
                    ),
                    // Uncharged, as every stored change handed on is (a write was
                    // charged once, at admission).
                    Passage::Unseen => Some(
                        router
                            .run_admitted(origin(Some(route)), vec![event.clone()])
                            .await,
                    ),
                    Passage::NotTaken => None,
                };
                if let Some(result) = to_route {
                    results.push((route.as_str(), result));
                }
                for other in &self.others {
                    let ran = router
                        .run_admitted(origin(Some(other)), vec![event.clone()])
                        .await;
                    results.push((other.as_str(), ran));
                }
            }
            None => results.push(("k8s", router.submit_to(origin(None), vec![event]).await)),
        }
        for (route, result) in results {
            if let Err(e) = result {
                tracing::warn!(
                    namespace = ns,
                    name,
                    route,
                    "stored event not delivered: {e}"
                );
            }
        }
    }
}

/// Where a caller's write comes from: a producer bound to the tenant its user or one of
/// its groups is mapped to in `tenancy.producers`, else unbound.
fn origin<'a>(router: &Router, caller: &Caller, route: Option<&'a str>) -> Origin<'a> {
    let producer = caller
        .principal
        .as_deref()
        .and_then(|p| router.producers().by_identity(&p.user, &p.groups))
        .map_or(Producer::Unbound, Producer::Tenant);
    Origin {
        source_kind: "k8s",
        route,
        principal: caller.principal.clone(),
        tenant_hint: None,
        producer,
    }
}

/// A change as a CloudEvent: the shape of [`super::ce`] (subject the involved object,
/// the `k8s*` extensions), data the core/v1 JSON, extension `k8schange`.
fn cloud_event(core: &Map<String, Value>, id: String, change: &str, json: Bytes) -> Event {
    let mut event = super::ce::event_view(core);
    event.id = id;
    if event.time.is_none() {
        event.time = Some(convert::rfc3339_seconds(convert::now_ms()));
    }
    event.datacontenttype = Some("application/json".into());
    event.data = Some(json);
    event.set_extension("k8schange", change);
    event
}

/// A router refusal as the API answers it.
fn router_error(e: RouterError) -> ApiError {
    match e {
        RouterError::RateLimited {
            retry_after_secs, ..
        } => ApiError::too_many_requests(e.to_string(), retry_after_secs),
        RouterError::Stopped(_) => ApiError::unavailable(e.to_string(), 1),
        RouterError::TenantRefused { reason } => ApiError::forbidden_request(reason),
        other => ApiError::internal(other.to_string()),
    }
}
