//! The Kubernetes-compatible Events REST API over the embedded store: core/v1 and
//! events.k8s.io/v1, namespaced and all-namespaces paths, create, get, list, update, patch
//! (merge and strategic merge), delete, deletecollection and watch, with discovery,
//! OpenAPI, `Status` errors and `kubectl get` tables.

use super::admission::{Admitted, Admitter, Passage};
use super::auth::{Authenticator, Caller};
use super::backend::Backend;
use super::clickhouse::Narrowing;
use super::convert::{self, to_core, to_version, ApiVersion};
use super::discovery;
use super::query::{EventQuery, FacetQuery};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Change, Precondition, StoreError, Stored};
use super::table;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use weir_core::tls::PeerIdentity;

/// The API's shared state.
pub struct EventsApi {
    store: Backend,
    /// Becomes true when the router shuts down: open watches end, so the graceful
    /// shutdown does not wait for their timeouts.
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// Who callers are and what they may see.
    auth: Arc<Authenticator>,
    /// The filters writes pass and the routes stored changes flow on to.
    admitter: Arc<Admitter>,
}

impl FromRequestParts<Arc<EventsApi>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        api: &Arc<EventsApi>,
    ) -> Result<Self, ApiError> {
        api.auth.admit(parts).await
    }
}

type Shared = State<Arc<EventsApi>>;
type Params = Query<HashMap<String, String>>;

/// The routes, for merging into the router's HTTP application; watches end when
/// `shutdown` becomes true; `auth` authenticates callers and limits what they see,
/// `admitter` runs writes through the admission filters and hands stored changes on.
pub fn routes(
    store: Backend,
    shutdown: tokio::sync::watch::Receiver<bool>,
    auth: Arc<Authenticator>,
    admitter: Arc<Admitter>,
) -> Router {
    let auth_for_discovery = auth.clone();
    let state = Arc::new(EventsApi {
        store,
        shutdown,
        auth,
        admitter,
    });
    let events = event_routes::<CORE>(Router::new(), "/api/v1");
    let events = event_routes::<EVENTS>(events, "/apis/events.k8s.io/v1");
    let events = event_routes::<ACTIVITY>(events, &format!("/apis/{}", convert::ACTIVITY));
    let queries = query_routes(
        axum::routing::post(event_query_h),
        axum::routing::post(facet_query_h),
    );
    discovery_routes(auth_for_discovery)
        .merge(events)
        .merge(queries)
        .with_state(state)
}

/// The routes of Activity's query resources (`eventqueries`, `eventfacetqueries`).
pub(crate) fn query_routes<S: Clone + Send + Sync + 'static>(
    queries: axum::routing::MethodRouter<S>,
    facets: axum::routing::MethodRouter<S>,
) -> Router<S> {
    Router::new()
        .route(
            &format!("/apis/{}/eventqueries", convert::ACTIVITY),
            queries,
        )
        .route(
            &format!("/apis/{}/eventfacetqueries", convert::ACTIVITY),
            facets,
        )
}

/// Discovery and OpenAPI documents (static: they hold no events), for callers `auth`
/// authenticates: as the apiserver, a listener that refuses anonymous callers answers
/// them 401 here too.
pub fn discovery_routes<S: Clone + Send + Sync + 'static>(auth: Arc<Authenticator>) -> Router<S> {
    let json_doc = |v: Value| move || async move { json_response(StatusCode::OK, &v) };
    Router::new()
        .route("/version", get(json_doc(discovery::version())))
        .route("/api", get(json_doc(discovery::api_versions())))
        .route("/api/v1", get(json_doc(discovery::resource_list("v1"))))
        .route("/apis", get(json_doc(discovery::group_list())))
        .route(
            "/apis/events.k8s.io",
            get(json_doc(discovery::group(ApiVersion::Events))),
        )
        .route(
            "/apis/events.k8s.io/v1",
            get(json_doc(discovery::resource_list("events.k8s.io/v1"))),
        )
        .route(
            "/apis/activity.miloapis.com",
            get(json_doc(discovery::group(ApiVersion::Activity))),
        )
        .route(
            "/apis/activity.miloapis.com/v1alpha1",
            get(json_doc(discovery::resource_list(convert::ACTIVITY))),
        )
        .route("/openapi/v3", get(json_doc(discovery::openapi_index())))
        .route(
            "/openapi/v3/api/v1",
            get(json_doc(discovery::openapi_document(ApiVersion::Core))),
        )
        .route(
            "/openapi/v3/apis/events.k8s.io/v1",
            get(json_doc(discovery::openapi_document(ApiVersion::Events))),
        )
        .route(
            "/openapi/v3/apis/activity.miloapis.com/v1alpha1",
            get(json_doc(discovery::openapi_document(ApiVersion::Activity))),
        )
        .route_layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let auth = auth.clone();
                async move {
                    let peer = request.extensions().get::<PeerIdentity>();
                    if let Err(e) = auth.authenticate(request.headers(), peer) {
                        return e.into_response();
                    }
                    next.run(request).await
                }
            },
        ))
}

/// Hands a stored change on to the routes; `passage` tells how admission saw it.
async fn forward(
    api: &EventsApi,
    caller: &Caller,
    change: &str,
    stored: &Stored,
    passage: Passage,
) {
    if !api.admitter.active() {
        return;
    }
    // Serialized for the routes alone: the stored event's JSON cache is for watchers (it
    // would otherwise hold a second copy of every event written).
    let json = match serde_json::to_vec(&convert::Versioned(&stored.object, ApiVersion::Core)) {
        Ok(json) => Bytes::from(json),
        Err(e) => {
            tracing::error!("cannot serialize a stored event for the routes: {e}");
            return;
        }
    };
    api.admitter
        .stored(caller, change, &stored.object, stored.rv, json, passage)
        .await;
}

/// A scoped caller may only write events it can see afterwards: whatever the filters did
/// (or did not do), a write never lands in another tenant's scope.
fn within_scope(
    api: &EventsApi,
    caller: &Caller,
    core: &Map<String, Value>,
) -> Result<(), ApiError> {
    if api.auth.visible(caller, core) {
        return Ok(());
    }
    let name = convert::meta_str(core, "name");
    Err(ApiError::forbidden(
        name,
        format!("events \"{name}\" is forbidden: its scope annotations are not the caller's scope"),
    ))
}

/// The scope annotations a caller is limited to (none for platform callers).
fn scope_of(caller: &Caller) -> Option<(&str, &str)> {
    match &caller.scope {
        super::auth::Scope::Platform => None,
        super::auth::Scope::Parent { kind, name } => Some((kind, name)),
    }
}

/// Whether the caller may see the event: hidden events are answered as not found.
fn visible(api: &EventsApi, caller: &Caller, stored: &Stored) -> bool {
    api.auth.visible(caller, &stored.object)
}

pub(crate) fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// An event as `version` shows it. Serialized here rather than through the stored
/// event's JSON cache: caching every written event's JSON would double the store's memory
/// (and slow every list scan) for a body that is usually sent once.
fn versioned_response(code: StatusCode, stored: &Stored, version: ApiVersion) -> Response {
    match serde_json::to_vec(&convert::Versioned(&stored.object, version)) {
        Ok(body) => (code, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

use convert::now_ms;

/// `API` of the handlers serving core/v1.
pub(crate) const CORE: u8 = 0;
/// `API` of the handlers serving events.k8s.io/v1.
pub(crate) const EVENTS: u8 = 1;
/// `API` of the handlers serving activity.miloapis.com/v1alpha1.
pub(crate) const ACTIVITY: u8 = 2;

/// The API version a handler serves (one of [`CORE`], [`EVENTS`], [`ACTIVITY`]).
pub(crate) const fn version<const API: u8>() -> ApiVersion {
    match API {
        EVENTS => ApiVersion::Events,
        ACTIVITY => ApiVersion::Activity,
        _ => ApiVersion::Core,
    }
}

// Handlers per verb and path shape, instantiated once per API version.
async fn all_h<const API: u8>(s: Shared, c: Caller, q: Params, h: HeaderMap) -> Response {
    collection_get(s, c, q, h, version::<API>(), None).await
}
async fn list_h<const API: u8>(
    s: Shared,
    c: Caller,
    Path(ns): Path<String>,
    q: Params,
    h: HeaderMap,
) -> Response {
    if let Err(e) = check_path(&ns, None) {
        return e.into_response();
    }
    collection_get(s, c, q, h, version::<API>(), Some(ns)).await
}
async fn create_h<const API: u8>(
    s: Shared,
    c: Caller,
    Path(ns): Path<String>,
    q: Params,
    h: HeaderMap,
    b: Bytes,
) -> Result<Response, ApiError> {
    check_path(&ns, None)?;
    create(s, c, ns, q, h, b, version::<API>()).await
}
async fn delete_collection_h<const API: u8>(
    s: Shared,
    c: Caller,
    Path(ns): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    check_path(&ns, None)?;
    delete_collection(s, c, ns, q, version::<API>()).await
}
async fn get_h<const API: u8>(
    s: Shared,
    c: Caller,
    Path((ns, name)): Path<(String, String)>,
    q: Params,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    check_path(&ns, Some(&name))?;
    get_one(s, c, ns, name, q, h, version::<API>()).await
}
async fn put_h<const API: u8>(
    s: Shared,
    c: Caller,
    Path((ns, name)): Path<(String, String)>,
    q: Params,
    h: HeaderMap,
    b: Bytes,
) -> Result<Response, ApiError> {
    check_path(&ns, Some(&name))?;
    put(s, c, (ns, name), q, h, b, version::<API>()).await
}
async fn patch_h<const API: u8>(
    s: Shared,
    c: Caller,
    Path((ns, name)): Path<(String, String)>,
    h: HeaderMap,
    b: Bytes,
) -> Result<Response, ApiError> {
    check_path(&ns, Some(&name))?;
    patch(s, c, ns, name, h, b, version::<API>()).await
}
async fn delete_h(
    s: Shared,
    c: Caller,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_path(&ns, Some(&name))?;
    delete(s, c, ns, name).await
}

/// A request path's namespace must be a DNS-1123 label and its name a DNS-1123
/// subdomain, as the apiserver requires of every stored Event: anything else is refused
/// before it reaches a store, a filter or a CloudEvent's `source` and `subject`.
pub(crate) fn check_path(ns: &str, name: Option<&str>) -> Result<(), ApiError> {
    if !valid_namespace(ns) {
        return Err(ApiError::bad_request(format!(
            "invalid namespace {:?}: {DNS_LABEL}",
            cut(ns)
        )));
    }
    match name {
        Some(name) if !valid_name(name) => Err(ApiError::bad_request(format!(
            "invalid name {:?}: {DNS_SUBDOMAIN}",
            cut(name)
        ))),
        _ => Ok(()),
    }
}

/// At most 64 characters of a refused value, for the message.
fn cut(value: &str) -> &str {
    value
        .char_indices()
        .nth(64)
        .map_or(value, |(at, _)| &value[..at])
}

const DNS_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', start and end with an alphanumeric character, and be at most 63 characters";

const DNS_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

/// A DNS-1123 label (a namespace).
fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 63
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && ns.starts_with(|c: char| c.is_ascii_alphanumeric())
        && ns.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// `POST .../eventqueries`: one page of the events of a time range, newest first, in the
/// caller's scope (see [`super::query`]); answered 201 with the query and its `status`.
async fn event_query_h(State(api): Shared, caller: Caller, body: Bytes) -> Response {
    let query = match EventQuery::parse(&body, now_ms()) {
        Ok(query) => query,
        Err(e) => return e.into_response(),
    };
    let found = api
        .store
        .query(&query, scope_of(&caller), |s| visible(&api, &caller, s))
        .await;
    match found {
        Ok((page, more)) => {
            let events: Vec<&Map<String, Value>> = page.iter().map(|s| &s.object).collect();
            json_response(StatusCode::CREATED, &query.answer(&events, more))
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `POST .../eventfacetqueries`: distinct values with counts in the caller's scope.
async fn facet_query_h(State(api): Shared, caller: Caller, body: Bytes) -> Response {
    let query = match FacetQuery::parse(&body, now_ms()) {
        Ok(query) => query,
        Err(e) => return e.into_response(),
    };
    let counted = api
        .store
        .facets(&query, scope_of(&caller), |s| visible(&api, &caller, s))
        .await;
    match counted {
        Ok(counted) => json_response(StatusCode::CREATED, &query.answer(counted)),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The Event routes of one API version under `prefix` (`/api/v1`, `/apis/events.k8s.io/v1`).
fn event_routes<const API: u8>(
    router: Router<Arc<EventsApi>>,
    prefix: &str,
) -> Router<Arc<EventsApi>> {
    router
        .route(&format!("{prefix}/events"), get(all_h::<API>))
        .route(
            &format!("{prefix}/namespaces/{{ns}}/events"),
            get(list_h::<API>)
                .post(create_h::<API>)
                .delete(delete_collection_h::<API>),
        )
        .route(
            &format!("{prefix}/namespaces/{{ns}}/events/{{name}}"),
            get(get_h::<API>)
                .put(put_h::<API>)
                .patch(patch_h::<API>)
                .delete(delete_h),
        )
}

/// The longest a watch may stream, whatever its `timeoutSeconds` asks (a day).
pub const MAX_WATCH_TIMEOUT: Duration = Duration::from_secs(86_400);

/// How long a watch streams: its `timeoutSeconds` (at most [`MAX_WATCH_TIMEOUT`]), else
/// (absent, 0 or not a number) kube-apiserver's default of 30 minutes. A client's number
/// never reaches time arithmetic unbounded.
pub fn watch_timeout(raw: Option<&str>) -> Duration {
    match raw.and_then(|t| t.trim().parse::<u64>().ok()) {
        None | Some(0) => Duration::from_secs(1800),
        Some(secs) => Duration::from_secs(secs).min(MAX_WATCH_TIMEOUT),
    }
}

/// The selectors and options of a list or watch.
struct ListQuery {
    fields: FieldSelector,
    labels: LabelSelector,
    limit: usize,
    cont: Option<(u64, (String, String))>,
    include: String,
}

impl ListQuery {
    fn parse(q: &HashMap<String, String>, api: ApiVersion) -> Result<Self, ApiError> {
        let fields = FieldSelector::parse(
            q.get("fieldSelector").map_or("", String::as_str),
            api == ApiVersion::Events,
        )
        .map_err(|e| ApiError::bad_request(e.0))?;
        let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(e.0))?;
        let limit = match q.get("limit").map(String::as_str) {
            None | Some("") | Some("0") => usize::MAX,
            Some(l) => l
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit `{l}`")))?,
        };
        let cont = match q.get("continue").map(String::as_str) {
            None | Some("") => None,
            Some(token) => Some(decode_continue(token)?),
        };
        if q.get("resourceVersionMatch").is_some_and(|m| !m.is_empty()) {
            let rv = q.get("resourceVersion").map_or("", String::as_str);
            if rv.is_empty() || cont.is_some() {
                let mut e = ApiError::invalid("", "resourceVersionMatch", "resourceVersionMatch is forbidden unless resourceVersion is provided, and with continue");
                e.details["kind"] = "ListOptions".into();
                return Err(e);
            }
        }
        Ok(Self {
            fields,
            labels,
            limit,
            cont,
            include: q.get("includeObject").cloned().unwrap_or_default(),
        })
    }

    fn matches(&self, ns: Option<&str>, stored: &Stored) -> bool {
        ns.is_none_or(|n| n == stored.namespace())
            && self.fields.matches(|f| convert::field(&stored.object, f))
            && (self.labels.is_empty()
                || self.labels.matches(|k| convert::label(&stored.object, k)))
    }
}

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{rv}\n{ns}\n{name}"))
}

fn decode_continue(token: &str) -> Result<(u64, (String, String)), ApiError> {
    let bad = || ApiError::bad_request("invalid continue token");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.splitn(3, '\n');
    let rv = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let ns = parts.next().ok_or_else(bad)?.to_owned();
    let name = parts.next().ok_or_else(bad)?.to_owned();
    Ok((rv, (ns, name)))
}

fn accept(h: &HeaderMap) -> &str {
    h.get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn is_watch(q: &HashMap<String, String>) -> bool {
    q.get("watch").is_some_and(|w| super::authz::go_true(w))
}

async fn collection_get(
    State(api): Shared,
    caller: Caller,
    Query(q): Params,
    h: HeaderMap,
    version: ApiVersion,
    ns: Option<String>,
) -> Response {
    let query = match ListQuery::parse(&q, version) {
        Ok(query) => query,
        Err(e) => return e.into_response(),
    };
    let as_table = table::wants_table(accept(&h));
    if is_watch(&q) {
        return watch(api, caller, q, query, version, ns, as_table);
    }
    let after = query.cont.as_ref().map(|(_, k)| k.clone());
    let narrow = Narrowing {
        namespace: ns.as_deref(),
        fields: &query.fields,
        scope: scope_of(&caller),
    };
    let listed = api
        .store
        .list(&narrow, after.as_ref(), query.limit, |s| {
            query.matches(ns.as_deref(), s) && visible(&api, &caller, s)
        })
        .await;
    let (rv, items, more) = match listed {
        Ok(listed) => listed,
        Err(e) => return ApiError::from(e).into_response(),
    };
    // Every page reports the first page's resourceVersion.
    let rv = query.cont.as_ref().map_or(rv, |(first, _)| *first);
    let cont = match (more, items.last()) {
        (true, Some(last)) => encode_continue(rv, last.namespace(), last.name()),
        _ => String::new(),
    };
    if as_table {
        let now = now_ms();
        let rows = items
            .iter()
            .map(|s| {
                table::row(
                    &s.object,
                    table::row_object(
                        &s.object,
                        Value::Object(to_version(&s.object, version)),
                        &query.include,
                    ),
                    now,
                )
            })
            .collect();
        return json_response(StatusCode::OK, &table::table(rows, rv, &cont, true));
    }
    #[derive(serde::Serialize)]
    struct ListMeta {
        #[serde(rename = "resourceVersion")]
        resource_version: String,
        #[serde(rename = "continue", skip_serializing_if = "String::is_empty")]
        cont: String,
    }
    #[derive(serde::Serialize)]
    struct List<'a> {
        kind: &'static str,
        #[serde(rename = "apiVersion")]
        api_version: &'static str,
        metadata: ListMeta,
        items: Vec<convert::Versioned<'a>>,
    }
    let list = List {
        kind: "EventList",
        api_version: version.as_str(),
        metadata: ListMeta {
            resource_version: rv.to_string(),
            cont,
        },
        items: items
            .iter()
            .map(|s| convert::Versioned(&s.object, version))
            .collect(),
    };
    match serde_json::to_vec(&list) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

async fn get_one(
    State(api): Shared,
    caller: Caller,
    ns: String,
    name: String,
    Query(q): Params,
    h: HeaderMap,
    version: ApiVersion,
) -> Result<Response, ApiError> {
    let stored = api
        .store
        .get(&ns, &name)
        .await?
        .filter(|s| visible(&api, &caller, s))
        .ok_or_else(|| ApiError::not_found(&name))?;
    if table::wants_table(accept(&h)) {
        let object = Value::Object(to_version(&stored.object, version));
        let include = q.get("includeObject").cloned().unwrap_or_default();
        let row = table::row(
            &stored.object,
            table::row_object(&stored.object, object, &include),
            now_ms(),
        );
        return Ok(json_response(
            StatusCode::OK,
            &table::table(vec![row], stored.rv, "", true),
        ));
    }
    Ok(versioned_response(StatusCode::OK, &stored, version))
}

/// Parses a JSON object body; YAML and protobuf bodies are refused.
fn parse_body(
    h: &HeaderMap,
    body: &[u8],
    allowed: &[&str],
) -> Result<Map<String, Value>, ApiError> {
    let content_type = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let base = content_type.split(';').next().unwrap_or("").trim();
    if !allowed.contains(&base) {
        return Err(ApiError::unsupported_media(content_type));
    }
    super::status::json_object(body)
}

/// Applies strictness (`fieldValidation`) and the API's validation rules to a body.
fn check_body(
    obj: &Map<String, Value>,
    q: &HashMap<String, String>,
    version: ApiVersion,
    name: &str,
) -> Result<Vec<String>, ApiError> {
    if let Err((field, message)) = convert::validate(obj, version) {
        return Err(if field == "kind" || field == "apiVersion" {
            ApiError::bad_request(format!("{field}: {message}"))
        } else {
            ApiError::invalid(name, &field, &message)
        });
    }
    let unknown = convert::unknown_fields(obj, version);
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        match q.get("fieldValidation").map(String::as_str) {
            Some("Strict") => {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    list.join(", ")
                )));
            }
            Some("Ignore") => {}
            _ => warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\""))),
        }
    }
    Ok(warnings)
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn meta_mut(obj: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    match meta {
        Value::Object(m) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(v) = format!("299 - \"{w}\"").parse() {
            response.headers_mut().append("warning", v);
        }
    }
    response
}

async fn create(
    State(api): Shared,
    caller: Caller,
    ns: String,
    Query(q): Params,
    h: HeaderMap,
    body: Bytes,
    version: ApiVersion,
) -> Result<Response, ApiError> {
    let obj = parse_body(&h, &body, &["application/json"])?;
    let name = convert::meta_str(&obj, "name").to_owned();
    let warnings = check_body(&obj, &q, version, &name)?;
    let mut core = to_core(obj, version);
    let meta = meta_mut(&mut core);
    match meta.get("namespace").and_then(Value::as_str) {
        Some(n) if !n.is_empty() && n != ns => return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {}
    }
    meta.insert("namespace".into(), ns.clone().into());
    let mut name = name;
    if name.is_empty() {
        let generate = meta
            .get("generateName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if generate.is_empty() {
            return Err(ApiError::invalid(
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        }
        let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].to_owned();
        name = format!("{generate}{suffix}");
    }
    if !valid_name(&name) {
        return Err(ApiError::invalid(
            &name,
            "metadata.name",
            &format!("Invalid value: {DNS_SUBDOMAIN}"),
        ));
    }
    meta.insert("name".into(), name.clone().into());
    let Admitted {
        object: core,
        passage,
    } = admit_new(&api, &caller, core).await?;
    if q.get("dryRun").is_some_and(|d| d == "All") {
        return Ok(with_warnings(
            json_response(
                StatusCode::CREATED,
                &Value::Object(to_version(&core, version)),
            ),
            &warnings,
        ));
    }
    let stored = api.store.create(core).await?;
    forward(&api, &caller, "ADDED", &stored, passage).await;
    Ok(with_warnings(
        versioned_response(StatusCode::CREATED, &stored, version),
        &warnings,
    ))
}

async fn put(
    State(api): Shared,
    caller: Caller,
    (ns, name): (String, String),
    Query(q): Params,
    h: HeaderMap,
    body: Bytes,
    version: ApiVersion,
) -> Result<Response, ApiError> {
    let obj = parse_body(&h, &body, &["application/json"])?;
    let warnings = check_body(&obj, &q, version, &name)?;
    let mut core = to_core(obj, version);
    let expected = {
        let meta = meta_mut(&mut core);
        for (key, want) in [("name", &name), ("namespace", &ns)] {
            match meta.get(key).and_then(Value::as_str) {
                Some(v) if !v.is_empty() && v != want.as_str() => {
                    return Err(ApiError::bad_request(format!("the {key} of the object ({v}) does not match the {key} on the URL ({want})")))
                }
                _ => {}
            }
        }
        meta.insert("name".into(), name.clone().into());
        meta.insert("namespace".into(), ns.clone().into());
        match meta.get("resourceVersion").and_then(Value::as_str) {
            Some(rv) if !rv.is_empty() => {
                Some(rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion `{rv}`"))
                })?)
            }
            _ => None,
        }
    };
    // The update is conditioned on the version whose visibility was checked (the
    // client's resourceVersion, else the one read here): a concurrent replacement cannot
    // slip in between the check and the write. Without a client version, a conflict
    // reads and checks again, as the apiserver's unconditional update retries.
    for _attempt in 0..5 {
        let Some(old) = api.store.get(&ns, &name).await? else {
            // Events may be created by an update (as the apiserver allows).
            let Admitted {
                object: fresh,
                passage,
            } = admit_new(&api, &caller, core).await?;
            let stored = api.store.create(fresh).await?;
            forward(&api, &caller, "ADDED", &stored, passage).await;
            return Ok(with_warnings(
                versioned_response(StatusCode::CREATED, &stored, version),
                &warnings,
            ));
        };
        if !visible(&api, &caller, &old) {
            return Err(ApiError::not_found(&name));
        }
        let condition = Some(expected.unwrap_or(old.rv));
        let mut attempt = core.clone();
        keep_immutable(&mut attempt, &old);
        let (attempt, passage) = admit_update(&api, &caller, attempt, condition).await?;
        match api.store.update(attempt, condition).await {
            Ok(stored) => {
                forward(&api, &caller, "MODIFIED", &stored, passage).await;
                return Ok(with_warnings(
                    versioned_response(StatusCode::OK, &stored, version),
                    &warnings,
                ));
            }
            Err(StoreError::Conflict(_)) if expected.is_none() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(
        "the event kept changing while it was replaced; try again".into(),
        &name,
    ))
}

/// A new event as it is stored: stamped (a uid, its creation time, no resourceVersion),
/// admitted by the filters and within the caller's scope. What a create, and an update
/// that creates, do before storing.
async fn admit_new(
    api: &EventsApi,
    caller: &Caller,
    mut core: Map<String, Value>,
) -> Result<Admitted, ApiError> {
    let meta = meta_mut(&mut core);
    meta.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
    meta.insert(
        "creationTimestamp".into(),
        convert::rfc3339_seconds(now_ms()).into(),
    );
    meta.remove("resourceVersion");
    let admitted = api.admitter.admit(caller, "ADDED", core).await?;
    within_scope(api, caller, &admitted.object)?;
    Ok(admitted)
}

/// Runs an update through the admission filters, keeping the resourceVersion
/// precondition (the filters never see or set it).
async fn admit_update(
    api: &EventsApi,
    caller: &Caller,
    mut core: Map<String, Value>,
    expected: Option<u64>,
) -> Result<(Map<String, Value>, Passage), ApiError> {
    meta_mut(&mut core).remove("resourceVersion");
    let Admitted {
        object: mut core,
        passage,
    } = api.admitter.admit(caller, "MODIFIED", core).await?;
    within_scope(api, caller, &core)?;
    if let Some(rv) = expected {
        meta_mut(&mut core).insert("resourceVersion".into(), rv.to_string().into());
    }
    Ok((core, passage))
}

/// uid and creationTimestamp never change.
fn keep_immutable(core: &mut Map<String, Value>, old: &Stored) {
    let meta = meta_mut(core);
    for key in ["uid", "creationTimestamp"] {
        if let Some(v) = convert::metadata(&old.object).and_then(|m| m.get(key)) {
            meta.insert(key.into(), v.clone());
        }
    }
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

async fn patch(
    State(api): Shared,
    caller: Caller,
    ns: String,
    name: String,
    h: HeaderMap,
    body: Bytes,
    version: ApiVersion,
) -> Result<Response, ApiError> {
    // Strategic merge is a merge patch for Events: none of their lists has merge keys
    // that clients patch element by element.
    let patch = parse_body(
        &h,
        &body,
        &[
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ],
    )?;
    let patch = Value::Object(patch);
    // A resourceVersion in the patch is a precondition, as the apiserver has it.
    let precondition = match patch["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion `{rv}`")))?,
        ),
        _ => None,
    };
    for _attempt in 0..5 {
        let old = api
            .store
            .get(&ns, &name)
            .await?
            .filter(|s| visible(&api, &caller, s))
            .ok_or_else(|| ApiError::not_found(&name))?;
        if precondition.is_some_and(|rv| rv != old.rv) {
            return Err(StoreError::Conflict(name).into());
        }
        let mut current = Value::Object(to_version(&old.object, version));
        merge_patch(&mut current, &patch);
        let Value::Object(obj) = current else {
            return Err(ApiError::bad_request("the patch must leave an object"));
        };
        if let Err((field, message)) = convert::validate(&obj, version) {
            return Err(ApiError::invalid(&name, &field, &message));
        }
        let mut core = to_core(obj, version);
        {
            let meta = meta_mut(&mut core);
            meta.insert("name".into(), name.clone().into());
            meta.insert("namespace".into(), ns.clone().into());
        }
        keep_immutable(&mut core, &old);
        let (core, passage) = admit_update(&api, &caller, core, Some(old.rv)).await?;
        match api.store.update(core, Some(old.rv)).await {
            Ok(stored) => {
                forward(&api, &caller, "MODIFIED", &stored, passage).await;
                return Ok(versioned_response(StatusCode::OK, &stored, version));
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(
        "the event kept changing while it was patched; try again".into(),
        &name,
    ))
}

fn success(name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": name, "kind": "events", "uid": uid},
    })
}

/// Deletes `checked` (an event the caller may see that `wanted` takes) as it was when
/// checked: the store deletes it only if its uid and resourceVersion are unchanged. When
/// it changed meanwhile (updated, or deleted and created again), what is there now is
/// checked again, so a delete never removes an event the caller was not allowed to.
/// `None`: nothing of that name the caller may delete is left.
async fn delete_checked(
    api: &EventsApi,
    caller: &Caller,
    checked: Arc<Stored>,
    wanted: impl Fn(&Stored) -> bool,
) -> Result<Option<Arc<Stored>>, ApiError> {
    let (ns, name) = (checked.namespace().to_owned(), checked.name().to_owned());
    let mut checked = checked;
    for _attempt in 0..5 {
        match api
            .store
            .delete(&ns, &name, &Precondition::unchanged(&checked))
            .await
        {
            Ok(old) => return Ok(Some(old)),
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        match api
            .store
            .get(&ns, &name)
            .await?
            .filter(|s| visible(api, caller, s) && wanted(s))
        {
            Some(now) => checked = now,
            None => return Ok(None),
        }
    }
    Err(ApiError::conflict(
        "the event kept changing while it was deleted; try again".into(),
        &name,
    ))
}

async fn delete(
    State(api): Shared,
    caller: Caller,
    ns: String,
    name: String,
) -> Result<Response, ApiError> {
    api.admitter.check_delete(&caller, &ns)?;
    let checked = api
        .store
        .get(&ns, &name)
        .await?
        .filter(|s| visible(&api, &caller, s))
        .ok_or_else(|| ApiError::not_found(&name))?;
    let old = delete_checked(&api, &caller, checked, |_| true)
        .await?
        .ok_or_else(|| ApiError::not_found(&name))?;
    forward(&api, &caller, "DELETED", &old, Passage::Unseen).await;
    Ok(json_response(
        StatusCode::OK,
        &success(&name, convert::meta_str(&old.object, "uid")),
    ))
}

async fn delete_collection(
    State(api): Shared,
    caller: Caller,
    ns: String,
    Query(q): Params,
    version: ApiVersion,
) -> Result<Response, ApiError> {
    api.admitter.check_delete(&caller, &ns)?;
    let query = ListQuery::parse(&q, version)?;
    let narrow = Narrowing {
        namespace: Some(&ns),
        fields: &query.fields,
        scope: scope_of(&caller),
    };
    let matches = |s: &Stored| query.matches(Some(&ns), s);
    let (_, items, _) = api
        .store
        .list(&narrow, None, usize::MAX, |s| {
            matches(s) && visible(&api, &caller, s)
        })
        .await?;
    let mut deleted = Vec::new();
    for s in items {
        if let Some(old) = delete_checked(&api, &caller, s, matches).await? {
            forward(&api, &caller, "DELETED", &old, Passage::Unseen).await;
            deleted.push(Value::Object(to_version(&old.object, version)));
        }
    }
    let rv = api.store.resource_version();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": "EventList", "apiVersion": version.as_str(),
            "metadata": {"resourceVersion": rv.to_string()}, "items": deleted,
        }),
    ))
}

/// A watch stream: newline-delimited `{"type", "object"}` events, flushed one by one.
fn watch(
    api: Arc<EventsApi>,
    caller: Caller,
    q: HashMap<String, String>,
    query: ListQuery,
    version: ApiVersion,
    ns: Option<String>,
    as_table: bool,
) -> Response {
    if q.get("sendInitialEvents").is_some_and(|v| v == "true") {
        let mut e = ApiError::invalid(
            "",
            "sendInitialEvents",
            "Forbidden: sendInitialEvents is not supported by this server; list, then watch",
        );
        e.details["kind"] = "ListOptions".into();
        return e.into_response();
    }
    let from = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(rv) => match rv.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => {
                return ApiError::bad_request(format!("invalid resourceVersion `{rv}`"))
                    .into_response()
            }
        },
    };
    let timeout = watch_timeout(q.get("timeoutSeconds").map(String::as_str));
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    tokio::spawn(async move {
        let wanted = |s: &Stored| query.matches(ns.as_deref(), s) && visible(&api, &caller, s);
        let mut writer = WatchWriter {
            tx,
            version,
            as_table,
            first: true,
            include: query.include.clone(),
        };
        let (mut last_rv, mut changes) = match from {
            None => {
                let narrow = Narrowing {
                    namespace: ns.as_deref(),
                    fields: &query.fields,
                    scope: scope_of(&caller),
                };
                let (rv, items, changes) = match api.store.snapshot_and_watch(&narrow).await {
                    Ok(snapshot) => snapshot,
                    Err(e) => {
                        writer.error(ApiError::from(e)).await;
                        return;
                    }
                };
                for s in items.iter().filter(|s| wanted(s)) {
                    if !writer.send("ADDED", s).await {
                        return;
                    }
                }
                (rv, changes)
            }
            Some(rv) => match api.store.watch_from(rv) {
                Ok((backlog, changes)) => {
                    let mut last = rv;
                    for c in backlog {
                        last = c.rv;
                        if wanted(&c.event) && !writer.send(c.kind.as_str(), &c.event).await {
                            return;
                        }
                    }
                    (last, changes)
                }
                Err(oldest) => {
                    tracing::info!(
                        requested = rv,
                        oldest,
                        "watch from a resourceVersion older than the history: 410 Expired"
                    );
                    writer.error(ApiError::expired(rv, oldest)).await;
                    return;
                }
            },
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut shutdown = api.shutdown.clone();
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        tokio::pin!(stop);
        let mut bookmark = tokio::time::interval(Duration::from_secs(30));
        bookmark.tick().await;
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(Change { rv, kind, event }) => {
                        if rv <= last_rv {
                            continue;
                        }
                        last_rv = rv;
                        if wanted(&event) && !writer.send(kind.as_str(), &event).await {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        writer.error(ApiError::expired(last_rv, api.store.resource_version())).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = bookmark.tick(), if bookmarks => {
                    if !writer.bookmark(last_rv).await {
                        return;
                    }
                }
                () = tokio::time::sleep_until(deadline) => return,
                () = &mut stop => return,
                () = writer.tx.closed() => return,
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .unwrap_or_else(|_| ApiError::internal("cannot start the watch").into_response())
}

struct WatchWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    version: ApiVersion,
    as_table: bool,
    first: bool,
    include: String,
}

impl WatchWriter {
    async fn line(&mut self, v: Value) -> bool {
        let mut text = v.to_string();
        text.push('\n');
        self.tx.send(Ok(Bytes::from(text))).await.is_ok()
    }

    async fn send(&mut self, kind: &str, s: &Stored) -> bool {
        if !self.as_table {
            // `{"type":...,"object":<the event's cached JSON>}`
            let json = s.json(self.version);
            let mut line = Vec::with_capacity(json.len() + 40);
            line.extend_from_slice(b"{\"type\":\"");
            line.extend_from_slice(kind.as_bytes());
            line.extend_from_slice(b"\",\"object\":");
            line.extend_from_slice(json);
            line.extend_from_slice(b"}\n");
            return self.tx.send(Ok(Bytes::from(line))).await.is_ok();
        }
        let object = Value::Object(to_version(&s.object, self.version));
        let object = if self.as_table {
            let row = table::row(
                &s.object,
                table::row_object(&s.object, object, &self.include),
                now_ms(),
            );
            let t = table::table(vec![row], s.rv, "", self.first);
            self.first = false;
            t
        } else {
            object
        };
        self.line(json!({"type": kind, "object": object})).await
    }

    async fn bookmark(&mut self, rv: u64) -> bool {
        let object = json!({"kind": "Event", "apiVersion": self.version.as_str(), "metadata": {"resourceVersion": rv.to_string()}});
        self.line(json!({"type": "BOOKMARK", "object": object}))
            .await
    }

    async fn error(&mut self, e: ApiError) {
        let _ = self
            .line(json!({"type": "ERROR", "object": e.status()}))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        merge_patch(
            &mut target,
            &json!({"a": null, "b": {"c": 5}, "e": [2], "f": "x"}),
        );
        assert_eq!(target, json!({"b": {"c": 5, "d": 3}, "e": [2], "f": "x"}));
    }

    #[test]
    fn continue_tokens_round_trip_and_garbage_is_refused() {
        let t = encode_continue(42, "ns", "a.b");
        assert_eq!(
            decode_continue(&t).expect("valid"),
            (42, ("ns".into(), "a.b".into()))
        );
        assert!(decode_continue("%%%").is_err());
    }

    /// A query parameter's value as a hostile client might send it: extreme numbers,
    /// signs, exponents, whitespace, junk.
    fn hostile_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            Just(u64::MAX.to_string()),
            Just("18446744073709551616".to_owned()),
            Just("1e309".to_owned()),
            Just(" 5".to_owned()),
            "[0-9]{15,40}",
            ".{0,40}",
        ]
    }

    proptest::proptest! {
        /// Whatever a client puts in the list and watch parameters, parsing answers (a
        /// query or a 400) and the watch's deadline is bounded: nothing panics.
        #[test]
        fn hostile_query_parameters_never_panic_and_watch_deadlines_stay_bounded(
            values in proptest::collection::vec(hostile_value(), 10),
        ) {
            let keys = [
                "limit", "continue", "timeoutSeconds", "resourceVersion",
                "resourceVersionMatch", "fieldSelector", "labelSelector", "watch",
                "allowWatchBookmarks", "includeObject",
            ];
            let q: HashMap<String, String> = keys
                .iter()
                .zip(&values)
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
            for api in [ApiVersion::Core, ApiVersion::Events] {
                let _ = ListQuery::parse(&q, api);
            }
            let timeout = watch_timeout(q.get("timeoutSeconds").map(String::as_str));
            proptest::prop_assert!(timeout <= MAX_WATCH_TIMEOUT);
            proptest::prop_assert!(timeout > Duration::ZERO);
            let _deadline = tokio::time::Instant::now() + timeout;
        }
    }

    #[test]
    fn the_reported_timeout_is_capped_not_a_panic() {
        assert_eq!(
            watch_timeout(Some("18446744073709551615")),
            MAX_WATCH_TIMEOUT
        );
        assert_eq!(watch_timeout(Some("0")), Duration::from_secs(1800));
        assert_eq!(watch_timeout(Some("-1")), Duration::from_secs(1800));
        assert_eq!(watch_timeout(Some("60")), Duration::from_secs(60));
        assert_eq!(watch_timeout(None), Duration::from_secs(1800));
    }
}
