//! Proxy mode (`EventsProxy=true`): every Events API request is forwarded over HTTPS with
//! mutual TLS to a remote provider (an Activity server, or another weir in embedded mode),
//! with the caller named in `X-Remote-User`, `X-Remote-Group` and `X-Remote-Extra-*`
//! (an anonymous caller as `system:anonymous` in `system:unauthenticated`).
//!
//! Creates and updates pass the admission filters here first (so `scope-inject` stamps the
//! caller's scope before the provider sees the event); a patch is applied here to the
//! provider's current object, admitted, and sent as an update with a resourceVersion
//! precondition. Transient failures are retried with jittered exponential backoff (a
//! `Retry-After` honoured): reads and updates on network errors, timeouts, 5xx and 429;
//! deletes only where the provider certainly did not act on the request (it could not be
//! connected to, or answered 429 or 503). A named create is also repeated after a failure
//! the provider may have acted on, but only after reading the event back by name (see
//! `EventsProxy::create_confirmed`), so it is never stored twice. Everything else is
//! answered at once with the provider's own `Status`.

use super::admission::{Admitted, Admitter, Passage};
use super::api::version;
use super::auth::{anonymous_principal, remote_headers, Authenticator, Caller};
use super::convert::{self, to_core, to_version, ApiVersion};
use super::settings::{ProviderApi, ProviderConfig};
use super::status::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt as _;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_core::util::error_chain;

/// Why the proxy could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The mutual TLS settings are unusable (a PEM file, or what rustls says of them).
    #[error("events provider TLS: {0}")]
    Tls(#[from] weir_core::tls::TlsError),
    /// The HTTP client could not be built.
    #[error("events provider client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The forwarding state.
pub struct EventsProxy {
    client: reqwest::Client,
    base: String,
    timeout: Duration,
    retries: u32,
    forward_extras: Vec<String>,
    /// The provider's API: `Some(Activity)` sends everything there, converting; `None`
    /// forwards each request to its own path.
    provider_api: Option<ApiVersion>,
    auth: Arc<Authenticator>,
    admitter: Arc<Admitter>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// The outcome of the last request to the provider (`/readyz?verbose`).
    health: Arc<weir_core::health::PeerHealth>,
}

impl FromRequestParts<Arc<EventsProxy>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        proxy: &Arc<EventsProxy>,
    ) -> Result<Self, ApiError> {
        proxy.auth.admit(parts).await
    }
}

/// The mTLS client configuration for a provider (ring, HTTP/1.1).
fn tls_config(p: &ProviderConfig) -> Result<rustls::ClientConfig, ProxyError> {
    Ok(weir_core::tls::client_config(
        &weir_core::tls::ClientTlsSettings {
            ca: p.ca_file.clone(),
            cert: Some(p.client_cert.clone()),
            key: Some(p.client_key.clone()),
        },
    )?)
}

impl EventsProxy {
    /// A proxy to `provider`; `auth` authenticates callers, `admitter` admits writes.
    pub fn new(
        provider: &ProviderConfig,
        auth: Arc<Authenticator>,
        admitter: Arc<Admitter>,
        shutdown: tokio::sync::watch::Receiver<bool>,
        health: Arc<weir_core::health::PeerHealth>,
    ) -> Result<Self, ProxyError> {
        let timeout = Duration::from_secs(provider.timeout_seconds.max(1));
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(provider)?)
            .connect_timeout(timeout)
            .build()
            .map_err(ProxyError::Client)?;
        Ok(Self {
            client,
            base: provider.url.trim_end_matches('/').to_owned(),
            timeout,
            retries: provider.retries,
            forward_extras: provider.forward_extras.clone(),
            provider_api: match provider.api {
                ProviderApi::Core => None,
                ProviderApi::Activity => Some(ApiVersion::Activity),
            },
            auth,
            admitter,
            shutdown,
            health,
        })
    }

    /// Sends one request to the provider, retrying transient failures within the
    /// timeout budget (see [`Budget`]). `long` is the time a watch may stream on top of it.
    async fn send(
        &self,
        caller: &Caller,
        method: Method,
        path_and_query: &str,
        incoming: &HeaderMap,
        body: Option<Bytes>,
        long: Option<Duration>,
    ) -> Result<reqwest::Response, ApiError> {
        let url = format!("{}{path_and_query}", self.base);
        let headers = self.outgoing(caller, incoming, body.is_some());
        let budget = Budget::new(self.timeout, self.retries);
        let mut attempt = 0u32;
        loop {
            let timeout = budget.attempt_timeout(attempt) + long.unwrap_or_default();
            let outcome = self
                .attempt(&method, &url, &headers, body.as_ref(), timeout)
                .await;
            let wait = match &outcome {
                Ok(r) if may_retry(&method, Failure::Status(r.status())) => {
                    retry_after(r.headers())
                        .unwrap_or_default()
                        .max(backoff(attempt))
                }
                Err(e) if may_retry(&method, Failure::of(e)) => backoff(attempt),
                _ => return self.answer(outcome, &method, attempt),
            };
            if !budget.allows_retry(attempt, wait) {
                return self.answer(outcome, &method, attempt);
            }
            match &outcome {
                Ok(r) => {
                    tracing::info!(status = %r.status(), attempt, ?wait, %method, path = path_and_query, "events provider answered a transient error; retrying")
                }
                Err(e) => {
                    tracing::info!(attempt, ?wait, %method, path = path_and_query, "events provider unreachable ({e}); retrying")
                }
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// The client's answer from the last attempt (0-based `attempt`).
    fn answer(
        &self,
        outcome: Result<reqwest::Response, reqwest::Error>,
        method: &Method,
        attempt: u32,
    ) -> Result<reqwest::Response, ApiError> {
        outcome.map_err(|e| self.no_answer(&e, method, attempt.saturating_add(1)))
    }

    /// One attempt.
    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        headers: &reqwest::header::HeaderMap,
        body: Option<&Bytes>,
        timeout: Duration,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let mut request = self
            .client
            .request(method.clone(), url)
            .headers(headers.clone())
            .timeout(timeout);
        if let Some(body) = body {
            request = request.body(body.clone());
        }
        let outcome = request.send().await;
        match &outcome {
            Ok(r) if r.status().is_server_error() => self
                .health
                .failed(format_args!("the provider answered {}", r.status())),
            Ok(_) => self.health.succeeded(),
            Err(e) => self.health.failed(e),
        }
        outcome
    }

    /// The answer to a request that got none after `attempts`: retryable (503) when it
    /// never left or may be sent again; for a create or delete the provider may have
    /// carried out, an error without Retry-After, so clients do not repeat it blindly.
    fn no_answer(&self, e: &reqwest::Error, method: &Method, attempts: u32) -> ApiError {
        let timeout = self.timeout;
        if Failure::of(e) == Failure::Unsent || repeatable(method) {
            unanswered(e, timeout, attempts, || {
                ApiError::unavailable(
                    format!(
                        "the events provider {} is unreachable after {attempts} attempts: {}",
                        self.base,
                        error_chain(e)
                    ),
                    1,
                )
            })
        } else {
            unanswered(e, timeout, attempts, || {
                ApiError::internal(format!(
                    "the connection to the events provider {} broke after the request was sent; it may have been carried out: {}",
                    self.base,
                    error_chain(e)
                ))
            })
        }
    }

    /// A create of a named event that is safe to repeat. Like any create it is repeated
    /// where the provider did not act (unreachable, 429, 503). Where it may have acted — a
    /// timeout, a connection broken after the request left, another 5xx, or a 409 after
    /// such an attempt — the proxy reads the event by name before anything else: stored
    /// and holding what was sent, the create succeeded (201 with it); stored and
    /// different, the name was taken (409 AlreadyExists); not there, the create is sent
    /// again. So a retry never stores the event twice (even on a provider that does not
    /// refuse duplicate names) and never reports a create it did as a conflict.
    async fn create_confirmed(
        &self,
        caller: &Caller,
        path: &str,
        item: &str,
        incoming: &HeaderMap,
        body: Bytes,
    ) -> Result<Created, ApiError> {
        let url = format!("{}{path}", self.base);
        let item_url = format!("{}{item}", self.base);
        let headers = self.outgoing(caller, incoming, true);
        let mut read_headers = self.outgoing(caller, &HeaderMap::new(), false);
        read_headers.insert(
            header::ACCEPT,
            header::HeaderValue::from_static("application/json"),
        );
        let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let method = Method::POST;
        let budget = Budget::new(self.timeout, self.retries);
        let mut attempt = 0u32;
        let mut outcome = self
            .attempt(
                &method,
                &url,
                &headers,
                Some(&body),
                budget.attempt_timeout(0),
            )
            .await;
        loop {
            // `outcome` is the latest create's.
            let carried_out_maybe = match &outcome {
                Ok(r) if r.status() == reqwest::StatusCode::CONFLICT => attempt > 0,
                Ok(r) => {
                    r.status().is_server_error() && !may_retry(&method, Failure::Status(r.status()))
                }
                Err(e) => Failure::of(e) == Failure::Unknown,
            };
            let retry_unsent = match &outcome {
                Ok(r) => may_retry(&method, Failure::Status(r.status())),
                Err(e) => Failure::of(e) == Failure::Unsent,
            };
            if carried_out_maybe {
                tracing::info!(
                    attempt,
                    path = item,
                    "a create may have been stored; reading it before anything else"
                );
                // Read until the event is found or known absent.
                loop {
                    let wait = backoff(attempt);
                    if !budget.allows_retry(attempt, wait) {
                        return self.answer(outcome, &method, attempt).map(Created::Answer);
                    }
                    tokio::time::sleep(wait).await;
                    attempt = attempt.saturating_add(1);
                    let read = self
                        .attempt(
                            &Method::GET,
                            &item_url,
                            &read_headers,
                            None,
                            budget.attempt_timeout(attempt),
                        )
                        .await;
                    match read {
                        Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => break,
                        Ok(r) if r.status().is_success() => {
                            let stored = r.bytes().await.unwrap_or_default();
                            let found: Value =
                                serde_json::from_slice(&stored).unwrap_or(Value::Null);
                            if holds(&found, &sent) {
                                tracing::info!(
                                    path = item,
                                    "the create had been stored: answered as created"
                                );
                                return Ok(Created::Stored(stored));
                            }
                            return Err(ApiError::already_exists(
                                item.rsplit('/').next().unwrap_or(""),
                            ));
                        }
                        _ => {}
                    }
                }
                // Not stored: sent again at once.
                if !budget.allows_retry(attempt, Duration::ZERO) {
                    return self.answer(outcome, &method, attempt).map(Created::Answer);
                }
            } else if retry_unsent {
                let wait = backoff(attempt);
                if !budget.allows_retry(attempt, wait) {
                    return self.answer(outcome, &method, attempt).map(Created::Answer);
                }
                tokio::time::sleep(wait).await;
            } else {
                return self.answer(outcome, &method, attempt).map(Created::Answer);
            }
            attempt = attempt.saturating_add(1);
            outcome = self
                .attempt(
                    &method,
                    &url,
                    &headers,
                    Some(&body),
                    budget.attempt_timeout(attempt),
                )
                .await;
        }
    }

    /// The headers of a request to the provider: content negotiation from the client,
    /// and the caller's identity (never whatever X-Remote-* headers the client sent).
    fn outgoing(
        &self,
        caller: &Caller,
        incoming: &HeaderMap,
        has_body: bool,
    ) -> reqwest::header::HeaderMap {
        let mut headers = reqwest::header::HeaderMap::new();
        for name in [header::ACCEPT, header::CONTENT_TYPE, header::USER_AGENT] {
            if let Some(v) = incoming.get(&name) {
                headers.insert(name, v.clone());
            }
        }
        if has_body && !headers.contains_key(header::CONTENT_TYPE) {
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
        }
        // The caller's identity, never whatever X-Remote-* headers the client sent; an
        // anonymous caller as the apiserver names one.
        let anonymous;
        let principal = match &caller.principal {
            Some(principal) => principal.as_ref(),
            None => {
                anonymous = anonymous_principal();
                &anonymous
            }
        };
        for (name, value) in remote_headers(principal, &self.forward_extras) {
            headers.append(name, value);
        }
        headers
    }

    /// A provider answer passed on to the client (status, content type, warnings,
    /// Retry-After, and the body as it streams; a watch ends when the router shuts down).
    fn relay(&self, response: reqwest::Response) -> Response {
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut out = Response::builder().status(status);
        for name in [
            header::CONTENT_TYPE,
            header::RETRY_AFTER,
            header::CACHE_CONTROL,
            header::WARNING,
        ] {
            for v in response.headers().get_all(&name) {
                out = out.header(&name, v.clone());
            }
        }
        let mut shutdown = self.shutdown.clone();
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let stream = response.bytes_stream().take_until(Box::pin(stop));
        out.body(Body::from_stream(stream)).unwrap_or_else(|_| {
            ApiError::internal("cannot relay the provider's answer").into_response()
        })
    }

    /// The API the provider is asked in for a request of `version`.
    fn target(&self, version: ApiVersion) -> ApiVersion {
        self.provider_api.unwrap_or(version)
    }

    /// The provider path (and query) for a request of `version` to `uri`.
    fn provider_path(&self, uri: &axum::http::Uri, version: ApiVersion) -> String {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        provider_path(path, version, self.target(version))
    }

    /// Forwards a read or delete (converting the answer when the provider speaks
    /// another version).
    async fn pass(
        &self,
        caller: &Caller,
        method: Method,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        version: ApiVersion,
    ) -> Result<Response, ApiError> {
        let path = self.provider_path(uri, version);
        let long = is_watch(uri).then(|| watch_timeout(uri));
        let response = self
            .send(caller, method, &path, headers, None, long)
            .await?;
        let from = self.target(version);
        if from == version {
            return Ok(self.relay(response));
        }
        if is_watch(uri) {
            return Ok(self.relay_watch(response, from, version));
        }
        self.relay_converted(response, from, version).await
    }

    /// A provider answer (an Event, an EventList or a Status) converted from `from` to
    /// `to`; anything that is not an Event or EventList passes unchanged.
    async fn relay_converted(
        &self,
        response: reqwest::Response,
        from: ApiVersion,
        to: ApiVersion,
    ) -> Result<Response, ApiError> {
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let body = response.bytes().await.map_err(|e| {
            ApiError::unavailable(format!("the events provider's answer broke off: {e}"), 1)
        })?;
        let body = match serde_json::from_slice::<Value>(&body) {
            Ok(mut answer) => {
                convert_answer(&mut answer, from, to);
                Bytes::from(serde_json::to_vec(&answer).unwrap_or_default())
            }
            Err(_) => body,
        };
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// A watch stream converted line by line (each line one watch event), bookmarks and
    /// in-stream errors (`410 Gone`) kept as they are apart from the object's version.
    fn relay_watch(
        &self,
        response: reqwest::Response,
        from: ApiVersion,
        to: ApiVersion,
    ) -> Response {
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        if !status.is_success() {
            return self.relay(response);
        }
        let mut shutdown = self.shutdown.clone();
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let mut pending: Vec<u8> = Vec::new();
        let stream = response
            .bytes_stream()
            .take_until(Box::pin(stop))
            .map(move |chunk| {
                let chunk = chunk?;
                pending.extend_from_slice(&chunk);
                let mut out = Vec::with_capacity(pending.len());
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    out.extend_from_slice(&convert_watch_line(&line, from, to));
                }
                Ok::<_, reqwest::Error>(Bytes::from(out))
            });
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(stream))
            .unwrap_or_else(|_| {
                ApiError::internal("cannot relay the provider's watch").into_response()
            })
    }

    /// Forwards a create or update after admitting its body.
    async fn write(
        &self,
        caller: &Caller,
        method: Method,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        body: &[u8],
        version: ApiVersion,
    ) -> Result<Response, ApiError> {
        let obj = super::status::json_object(body)?;
        let create = method == Method::POST;
        let target = self.target(version);
        let name = convert::meta_str(&obj, "name").to_owned();
        if !name.is_empty() && !super::api::valid_name(&name) {
            // It becomes part of the provider's URL: never anything but a DNS-1123 name.
            return Err(ApiError::bad_request(format!(
                "invalid name {:?}: a lowercase RFC 1123 subdomain is required",
                name.chars().take(64).collect::<String>()
            )));
        }
        let (admitted, passage) = self.admit(caller, create, obj, version, target).await?;
        let path = self.provider_path(uri, version);
        let dry_run = query_param(uri, "dryRun").is_some();
        if create && !name.is_empty() && !dry_run {
            let item = format!("{}/{name}", uri.path());
            let item = provider_path(&item, version, target);
            return match self
                .create_confirmed(caller, &path, &item, headers, admitted)
                .await?
            {
                Created::Answer(response) => {
                    self.relay_stored(caller, "ADDED", response, version, false, passage)
                        .await
                }
                Created::Stored(body) => {
                    self.stored_answer(
                        caller,
                        "ADDED",
                        StatusCode::CREATED,
                        Vec::new(),
                        body,
                        version,
                        passage,
                    )
                    .await
                }
            };
        }
        let response = self
            .send(caller, method, &path, headers, Some(admitted), None)
            .await?;
        let change = match (create, response.status()) {
            (_, reqwest::StatusCode::CREATED) | (true, _) => "ADDED",
            _ => "MODIFIED",
        };
        self.relay_stored(caller, change, response, version, dry_run, passage)
            .await
    }

    /// Relays the provider's answer to a write (in the request's `version`) and, when it
    /// accepted the write, hands the stored object on to the `k8s` routes (as the embedded
    /// store does; `passage` is how admission saw the write).
    async fn relay_stored(
        &self,
        caller: &Caller,
        change: &str,
        response: reqwest::Response,
        version: ApiVersion,
        dry_run: bool,
        passage: Passage,
    ) -> Result<Response, ApiError> {
        let from = self.target(version);
        if !response.status().is_success() || dry_run {
            return if from == version {
                Ok(self.relay(response))
            } else {
                self.relay_converted(response, from, version).await
            };
        }
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let warnings: Vec<header::HeaderValue> = response
            .headers()
            .get_all(header::WARNING)
            .iter()
            .cloned()
            .collect();
        let body = response.bytes().await.map_err(|e| {
            ApiError::unavailable(format!("the events provider's answer broke off: {e}"), 1)
        })?;
        self.stored_answer(caller, change, status, warnings, body, version, passage)
            .await
    }

    /// The answer to a write the provider stored (its `body`, in the provider's version),
    /// in the request's `version`; the stored event is handed on to the `k8s` routes.
    #[allow(clippy::too_many_arguments)]
    async fn stored_answer(
        &self,
        caller: &Caller,
        change: &str,
        status: StatusCode,
        warnings: Vec<header::HeaderValue>,
        body: Bytes,
        version: ApiVersion,
        passage: Passage,
    ) -> Result<Response, ApiError> {
        let from = self.target(version);
        let mut out = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json");
        for v in warnings {
            out = out.header(header::WARNING, v);
        }
        let mut body = body;
        if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(&body) {
            let is_event = obj.get("kind").and_then(Value::as_str) == Some("Event");
            if is_event {
                let core = to_core(obj, from);
                if from != version {
                    let answer = to_version(&core, version);
                    body = Bytes::from(serde_json::to_vec(&answer).unwrap_or_default());
                }
                let rv = convert::meta_str(&core, "resourceVersion")
                    .parse()
                    .unwrap_or(0);
                if let Ok(json) = serde_json::to_vec(&core) {
                    self.admitter
                        .stored(caller, change, &core, rv, Bytes::from(json), passage)
                        .await;
                }
            }
        }
        out.body(Body::from(body))
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// Validates a body of `version` as the API would and runs it through the admission
    /// filters; the admitted body in the provider's API version `out`, and how admission
    /// saw it.
    async fn admit(
        &self,
        caller: &Caller,
        create: bool,
        obj: Map<String, Value>,
        version: ApiVersion,
        out: ApiVersion,
    ) -> Result<(Bytes, Passage), ApiError> {
        let name = convert::meta_str(&obj, "name").to_owned();
        if let Err((field, message)) = convert::validate(&obj, version) {
            return Err(if field == "kind" || field == "apiVersion" {
                ApiError::bad_request(format!("{field}: {message}"))
            } else {
                ApiError::invalid(&name, &field, &message)
            });
        }
        // The provider assigns identity and versions; admission sees the content.
        let mut core = to_core(obj, version);
        let rv = match core.get_mut("metadata") {
            Some(Value::Object(meta)) => meta.remove("resourceVersion"),
            _ => None,
        };
        let change = if create { "ADDED" } else { "MODIFIED" };
        let Admitted {
            object: mut core,
            passage,
        } = self.admitter.admit(caller, change, core).await?;
        if let (Some(rv), Some(Value::Object(meta))) = (rv, core.get_mut("metadata")) {
            meta.insert("resourceVersion".into(), rv);
        }
        let body = serde_json::to_vec(&to_version(&core, out))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok((Bytes::from(body), passage))
    }

    /// A merge patch: read the provider's object, patch and admit it here, and update it
    /// with its resourceVersion as precondition (again on a conflict).
    async fn patch(
        &self,
        caller: &Caller,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        body: &[u8],
        version: ApiVersion,
    ) -> Result<Response, ApiError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let base = content_type.split(';').next().unwrap_or("").trim();
        if ![
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ]
        .contains(&base)
        {
            return Err(ApiError::unsupported_media(content_type));
        }
        let patch: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("couldn't decode the patch: {e}")))?;
        if !patch.is_object() {
            return Err(ApiError::bad_request("the patch must be a JSON object"));
        }
        let target = self.target(version);
        let path = provider_path(uri.path(), version, target);
        let path = path.as_str();
        let mut json_headers = HeaderMap::new();
        json_headers.insert(
            header::ACCEPT,
            header::HeaderValue::from_static("application/json"),
        );
        for _ in 0..5 {
            let current = self
                .send(caller, Method::GET, path, &json_headers, None, None)
                .await?;
            if !current.status().is_success() {
                return Ok(self.relay(current));
            }
            let mut object: Value = current.json().await.map_err(|e| {
                ApiError::internal(format!("the events provider sent an unreadable Event: {e}"))
            })?;
            // The patch speaks the request's version.
            if target != version {
                convert_answer(&mut object, target, version);
            }
            super::api::merge_patch(&mut object, &patch);
            let Value::Object(obj) = object else {
                return Err(ApiError::bad_request("the patch must leave an object"));
            };
            let (admitted, passage) = self.admit(caller, false, obj, version, target).await?;
            let response = self
                .send(
                    caller,
                    Method::PUT,
                    path,
                    &json_headers,
                    Some(admitted),
                    None,
                )
                .await?;
            if response.status() == reqwest::StatusCode::CONFLICT {
                continue;
            }
            return self
                .relay_stored(caller, "MODIFIED", response, version, false, passage)
                .await;
        }
        Err(ApiError::conflict(
            "the event kept changing while it was patched; try again".into(),
            path.rsplit('/').next().unwrap_or(""),
        ))
    }
}

/// How a confirmed create ended.
enum Created {
    /// The provider's answer (created, refused, or the last uncertain one).
    Answer(reqwest::Response),
    /// The event was found stored as sent after an uncertain attempt: its JSON.
    Stored(Bytes),
}

/// Whether `stored` holds everything `sent` says: every non-empty field of `sent` equal
/// in `stored` (objects compared field by field), the fields a provider assigns on create
/// (`resourceVersion`, `uid`, `creationTimestamp`, `managedFields`, `generation`) aside.
fn holds(stored: &Value, sent: &Value) -> bool {
    const ASSIGNED: [&str; 5] = [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
        "generation",
    ];
    match (stored, sent) {
        (Value::Object(stored), Value::Object(sent)) => sent.iter().all(|(k, v)| {
            let empty = match v {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Object(o) => o.is_empty(),
                Value::Array(a) => a.is_empty(),
                _ => false,
            };
            empty || ASSIGNED.contains(&k.as_str()) || stored.get(k).is_some_and(|s| holds(s, v))
        }),
        (stored, sent) => stored == sent,
    }
}

/// The time and the attempts one request to the provider may take. The timeout bounds
/// the whole request, retries included, so a caller's wait is bounded by it. Each
/// attempt but the last may use half of the time that remains: an attempt that stalls
/// still leaves time to retry it (or, for a create, to read back whether it was
/// stored), while a slow but healthy answer gets the larger share.
struct Budget {
    deadline: Instant,
    retries: u32,
}

impl Budget {
    /// The shortest time an attempt is given; a retry that cannot have it is not made.
    const MIN_ATTEMPT: Duration = Duration::from_millis(100);

    fn new(timeout: Duration, retries: u32) -> Self {
        let now = Instant::now();
        Self {
            deadline: now
                .checked_add(timeout)
                .unwrap_or(now + Duration::from_secs(86_400)),
            retries,
        }
    }

    /// The timeout of attempt `attempt` (0-based), starting now.
    fn attempt_timeout(&self, attempt: u32) -> Duration {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let share = if attempt >= self.retries {
            left
        } else {
            left / 2
        };
        share.max(Self::MIN_ATTEMPT)
    }

    /// Whether attempt `attempt` may be followed by another after waiting `wait`.
    fn allows_retry(&self, attempt: u32, wait: Duration) -> bool {
        attempt < self.retries
            && Instant::now()
                .checked_add(wait.saturating_add(Self::MIN_ATTEMPT))
                .is_some_and(|t| t <= self.deadline)
    }
}

/// How an attempt failed, as far as retrying it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The provider answered with this status.
    Status(reqwest::StatusCode),
    /// The provider could not be connected to: the request never left.
    Unsent,
    /// The request may have reached the provider (a timeout, or the connection broke
    /// after it was sent): whether the provider acted on it is unknown.
    Unknown,
    /// Anything else (the request could not be built, a redirect loop...): not retried.
    Other,
}

impl Failure {
    fn of(e: &reqwest::Error) -> Self {
        if e.is_connect() {
            Failure::Unsent
        } else if e.is_timeout() || e.is_request() {
            Failure::Unknown
        } else {
            Failure::Other
        }
    }
}

/// Whether a request may be sent again after `failure`. Reads and updates (GET, PUT,
/// whose repeat leaves the provider as one attempt would) are retried on any transient
/// failure: network errors, timeouts, 5xx and 429. Creates and deletes (POST, DELETE)
/// only where the provider did not act on the first attempt: it could not be connected
/// to, or answered 429 or 503 (refused before processing). After a timeout, a broken
/// connection or another 5xx a create may have been stored or a delete done, and a
/// repeat could fail on its own success (409, 404) or delete an event created since.
fn may_retry(method: &Method, failure: Failure) -> bool {
    match failure {
        Failure::Unsent => true,
        Failure::Unknown => repeatable(method),
        Failure::Other => false,
        Failure::Status(status) if repeatable(method) => {
            status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        }
        Failure::Status(status) => matches!(
            status,
            reqwest::StatusCode::TOO_MANY_REQUESTS | reqwest::StatusCode::SERVICE_UNAVAILABLE
        ),
    }
}

/// Whether sending a request twice leaves the provider as sending it once would.
fn repeatable(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::PUT)
}

/// The answer to a request that got none: 504 after a timeout, else `otherwise`.
fn unanswered(
    e: &reqwest::Error,
    timeout: Duration,
    attempts: u32,
    otherwise: impl FnOnce() -> ApiError,
) -> ApiError {
    if e.is_timeout() && !e.is_connect() {
        ApiError::timeout(format!(
            "the events provider did not answer within {} s ({attempts} attempts)",
            timeout.as_secs()
        ))
    } else {
        otherwise()
    }
}

/// The provider's `Retry-After` in seconds (capped at a minute).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(60)))
}

/// 200 ms doubling per attempt (0-based) up to 5 s, with ±25 % jitter.
fn backoff(attempt: u32) -> Duration {
    weir_core::util::backoff(
        attempt.saturating_add(1),
        Duration::from_millis(200),
        Duration::from_secs(5),
    )
}

/// The path prefix of an API version's Events.
fn prefix(api: ApiVersion) -> String {
    match api {
        ApiVersion::Core => "/api/v1".into(),
        other => format!("/apis/{}", other.as_str()),
    }
}

/// `path` (a request of `from`) as the same request of `to`: its prefix swapped.
fn provider_path(path: &str, from: ApiVersion, to: ApiVersion) -> String {
    if from == to {
        return path.to_owned();
    }
    let old = prefix(from);
    match path.strip_prefix(old.as_str()) {
        Some(rest) => format!("{}{rest}", prefix(to)),
        None => path.to_owned(),
    }
}

/// Converts a provider answer in place: an Event, or an EventList with its items, from
/// `from` to `to`. A watch BOOKMARK (an Event holding only metadata) keeps just that, with
/// the new apiVersion; anything else (a Status) is left as it is.
fn convert_answer(answer: &mut Value, from: ApiVersion, to: ApiVersion) {
    let Value::Object(obj) = answer else {
        return;
    };
    match obj.get("kind").and_then(Value::as_str) {
        Some("Event") => {
            let bookmark = obj.len() <= 3
                && obj
                    .keys()
                    .all(|k| ["kind", "apiVersion", "metadata"].contains(&k.as_str()));
            if bookmark {
                obj.insert("apiVersion".into(), to.as_str().into());
            } else {
                let core = to_core(std::mem::take(obj), from);
                *obj = to_version(&core, to);
            }
        }
        Some("EventList") => {
            obj.insert("apiVersion".into(), to.as_str().into());
            if let Some(Value::Array(items)) = obj.get_mut("items") {
                for item in items {
                    if let Value::Object(event) = item {
                        let core = to_core(std::mem::take(event), from);
                        *event = to_version(&core, to);
                    }
                }
            }
        }
        _ => {}
    }
}

/// One line of a watch stream (`{"type": ..., "object": ...}\n`) converted; a line that
/// is not such an event passes unchanged.
fn convert_watch_line(line: &[u8], from: ApiVersion, to: ApiVersion) -> Vec<u8> {
    let Ok(Value::Object(mut event)) = serde_json::from_slice::<Value>(line) else {
        return line.to_vec();
    };
    if let Some(object) = event.get_mut("object") {
        convert_answer(object, from, to);
    }
    let mut out = serde_json::to_vec(&event).unwrap_or_else(|_| line.to_vec());
    out.push(b'\n');
    out
}

fn query_param<'a>(uri: &'a axum::http::Uri, key: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Whether a request is a watch, read as its authorization read it.
fn is_watch(uri: &axum::http::Uri) -> bool {
    super::authz::asks_watch(uri.query())
}

/// How long a forwarded watch may stream: its `timeoutSeconds`, else the provider's
/// default of 30 minutes.
fn watch_timeout(uri: &axum::http::Uri) -> Duration {
    super::api::watch_timeout(query_param(uri, "timeoutSeconds"))
}

type Shared = State<Arc<EventsProxy>>;

fn answer(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn query_h(
    s: Shared,
    c: Caller,
    uri: axum::http::Uri,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    answer(
        s.send(&c, Method::POST, &path, &h, Some(body), None)
            .await
            .map(|r| s.relay(r)),
    )
}
/// A path's namespace and name (when it has them), checked as the embedded API checks
/// them (DNS-1123) before anything is forwarded.
type PathParams = axum::extract::Path<HashMap<String, String>>;

fn check_params(params: &HashMap<String, String>) -> Result<(), ApiError> {
    match params.get("ns") {
        Some(ns) => super::api::check_path(ns, params.get("name").map(String::as_str)),
        None => Ok(()),
    }
}

async fn read_h<const API: u8>(
    s: Shared,
    c: Caller,
    p: Option<PathParams>,
    uri: axum::http::Uri,
    h: HeaderMap,
) -> Response {
    // `.../events` across namespaces has no parameters.
    if let Some(axum::extract::Path(p)) = p {
        if let Err(e) = check_params(&p) {
            return e.into_response();
        }
    }
    answer(s.pass(&c, Method::GET, &uri, &h, version::<API>()).await)
}
async fn delete_h<const API: u8>(
    s: Shared,
    c: Caller,
    axum::extract::Path(p): PathParams,
    uri: axum::http::Uri,
    h: HeaderMap,
) -> Response {
    // A producer bound to a tenant deletes only in its tenant's namespaces.
    let checked = check_params(&p).and_then(|()| match p.get("ns") {
        Some(ns) => s.admitter.check_delete(&c, ns),
        None => Ok(()),
    });
    if let Err(e) = checked {
        return e.into_response();
    }
    answer(s.pass(&c, Method::DELETE, &uri, &h, version::<API>()).await)
}
async fn create_h<const API: u8>(
    s: Shared,
    c: Caller,
    axum::extract::Path(p): PathParams,
    uri: axum::http::Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    if let Err(e) = check_params(&p) {
        return e.into_response();
    }
    answer(
        s.write(&c, Method::POST, &uri, &h, &b, version::<API>())
            .await,
    )
}
async fn put_h<const API: u8>(
    s: Shared,
    c: Caller,
    axum::extract::Path(p): PathParams,
    uri: axum::http::Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    if let Err(e) = check_params(&p) {
        return e.into_response();
    }
    answer(
        s.write(&c, Method::PUT, &uri, &h, &b, version::<API>())
            .await,
    )
}
async fn patch_h<const API: u8>(
    s: Shared,
    c: Caller,
    axum::extract::Path(p): PathParams,
    uri: axum::http::Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    if let Err(e) = check_params(&p) {
        return e.into_response();
    }
    answer(s.patch(&c, &uri, &h, &b, version::<API>()).await)
}

fn event_routes<const API: u8>(
    router: Router<Arc<EventsProxy>>,
    prefix: &str,
) -> Router<Arc<EventsProxy>> {
    router
        .route(&format!("{prefix}/events"), get(read_h::<API>))
        .route(
            &format!("{prefix}/namespaces/{{ns}}/events"),
            get(read_h::<API>)
                .post(create_h::<API>)
                .delete(delete_h::<API>),
        )
        .route(
            &format!("{prefix}/namespaces/{{ns}}/events/{{name}}"),
            get(read_h::<API>)
                .put(put_h::<API>)
                .patch(patch_h::<API>)
                .delete(delete_h::<API>),
        )
}

/// The proxy's routes: discovery answered here, every Events path forwarded.
pub fn routes(proxy: Arc<EventsProxy>) -> Router {
    use super::api::{ACTIVITY, CORE, EVENTS};
    let events = event_routes::<CORE>(Router::new(), "/api/v1");
    let events = event_routes::<EVENTS>(events, "/apis/events.k8s.io/v1");
    let events = event_routes::<ACTIVITY>(events, &format!("/apis/{}", convert::ACTIVITY));
    // Activity's query resources go to the provider as they are.
    let queries =
        super::api::query_routes(axum::routing::post(query_h), axum::routing::post(query_h));
    super::api::discovery_routes(proxy.auth.clone())
        .merge(events)
        .merge(queries)
        .with_state(proxy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_event_holds_what_was_sent_apart_from_assigned_fields() {
        let sent = serde_json::json!({
            "kind": "Event", "apiVersion": "v1",
            "metadata": {"name": "e", "namespace": "x", "annotations": {"a": "1"}, "labels": {}},
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "m", "count": 1,
            "firstTimestamp": null, "reportingComponent": "",
        });
        let mut stored = sent.clone();
        stored["metadata"]["resourceVersion"] = "9".into();
        stored["metadata"]["uid"] = "u".into();
        stored["metadata"]["annotations"]["added-by-provider"] = "y".into();
        stored["firstTimestamp"] = "2026-12-06T00:00:00Z".into();
        assert!(holds(&stored, &sent));
        let mut other = stored.clone();
        other["message"] = "n".into();
        assert!(!holds(&other, &sent));
        let mut missing = stored;
        missing["metadata"]["annotations"] = serde_json::json!({});
        assert!(!holds(&missing, &sent));
    }

    #[test]
    fn paths_and_answers_convert_between_versions() {
        let a = ApiVersion::Activity;
        assert_eq!(
            provider_path(
                "/apis/events.k8s.io/v1/namespaces/x/events/e?dryRun=All",
                ApiVersion::Events,
                a
            ),
            "/apis/activity.miloapis.com/v1alpha1/namespaces/x/events/e?dryRun=All"
        );
        assert_eq!(
            provider_path("/api/v1/events?watch=1", ApiVersion::Core, a),
            "/apis/activity.miloapis.com/v1alpha1/events?watch=1"
        );
        assert_eq!(
            provider_path("/api/v1/events", ApiVersion::Core, ApiVersion::Core),
            "/api/v1/events"
        );
        let event = serde_json::json!({
            "kind": "Event", "apiVersion": "activity.miloapis.com/v1alpha1",
            "metadata": {"name": "e", "namespace": "x", "resourceVersion": "7"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "hello", "reason": "R",
            "type": "Normal", "reportingComponent": "", "reportingInstance": "",
        });
        let mut list = serde_json::json!({
            "kind": "EventList", "apiVersion": "activity.miloapis.com/v1alpha1",
            "metadata": {"resourceVersion": "7"}, "items": [event.clone()],
        });
        convert_answer(&mut list, a, ApiVersion::Events);
        assert_eq!(list["apiVersion"], "events.k8s.io/v1");
        assert_eq!(list["items"][0]["apiVersion"], "events.k8s.io/v1");
        assert_eq!(list["items"][0]["regarding"]["name"], "p");
        assert_eq!(list["items"][0]["note"], "hello");
        // A watch line: an event converts, a bookmark keeps only its metadata, an
        // in-stream 410 passes unchanged.
        let line = serde_json::to_vec(&serde_json::json!({"type": "ADDED", "object": event}))
            .expect("json");
        let out: Value =
            serde_json::from_slice(&convert_watch_line(&line, a, ApiVersion::Core)).expect("json");
        assert_eq!(out["object"]["apiVersion"], "v1");
        assert_eq!(out["object"]["involvedObject"]["name"], "p");
        let bookmark = br#"{"type":"BOOKMARK","object":{"kind":"Event","apiVersion":"activity.miloapis.com/v1alpha1","metadata":{"resourceVersion":"9"}}}"#;
        let out: Value =
            serde_json::from_slice(&convert_watch_line(bookmark, a, ApiVersion::Events))
                .expect("json");
        assert_eq!(
            out["object"],
            serde_json::json!({"kind": "Event", "apiVersion": "events.k8s.io/v1", "metadata": {"resourceVersion": "9"}})
        );
        let gone = br#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","code":410,"reason":"Expired"}}"#;
        let out: Value =
            serde_json::from_slice(&convert_watch_line(gone, a, ApiVersion::Events)).expect("json");
        assert_eq!(out["object"]["code"], 410);
        assert_eq!(out["object"]["apiVersion"], "v1");
    }

    fn status(code: u16) -> Failure {
        Failure::Status(reqwest::StatusCode::from_u16(code).expect("code"))
    }

    #[test]
    fn reads_and_updates_retry_every_transient_failure() {
        for method in [Method::GET, Method::PUT] {
            for code in [500u16, 502, 503, 504, 429] {
                assert!(may_retry(&method, status(code)), "{method} {code}");
            }
            for code in [400u16, 401, 403, 404, 409, 422, 200] {
                assert!(!may_retry(&method, status(code)), "{method} {code}");
            }
            assert!(may_retry(&method, Failure::Unsent));
            assert!(may_retry(&method, Failure::Unknown));
            assert!(!may_retry(&method, Failure::Other));
        }
    }

    #[test]
    fn the_budget_bounds_all_attempts_and_leaves_the_last_the_rest() {
        let budget = Budget::new(Duration::from_secs(8), 2);
        // Half of what remains for attempts before the last, all of it for the last.
        let first = budget.attempt_timeout(0);
        assert!(first <= Duration::from_secs(4) && first > Duration::from_millis(3_900));
        let last = budget.attempt_timeout(2);
        assert!(last <= Duration::from_secs(8) && last > Duration::from_millis(7_900));
        assert!(budget.allows_retry(0, Duration::from_secs(7)));
        assert!(
            !budget.allows_retry(0, Duration::from_secs(8)),
            "past the deadline"
        );
        assert!(!budget.allows_retry(2, Duration::ZERO), "retries spent");
        // No retries: one attempt with the whole timeout.
        let once = Budget::new(Duration::from_secs(8), 0);
        assert!(once.attempt_timeout(0) > Duration::from_millis(7_900));
        assert!(!once.allows_retry(0, Duration::ZERO));
        // Spent: attempts still get a floor, retries none; huge values do not panic.
        let spent = Budget::new(Duration::ZERO, 3);
        assert_eq!(spent.attempt_timeout(1), Budget::MIN_ATTEMPT);
        assert!(!spent.allows_retry(0, Duration::ZERO));
        let huge = Budget::new(Duration::MAX, u32::MAX);
        assert!(!huge.allows_retry(0, Duration::MAX));
        assert!(huge.attempt_timeout(u32::MAX) > Duration::ZERO);
    }

    #[test]
    fn creates_and_deletes_retry_only_what_the_provider_did_not_act_on() {
        for method in [Method::POST, Method::DELETE] {
            assert!(
                may_retry(&method, Failure::Unsent),
                "{method}: not connected"
            );
            assert!(may_retry(&method, status(429)), "{method} 429");
            assert!(may_retry(&method, status(503)), "{method} 503");
            assert!(!may_retry(&method, Failure::Unknown), "{method}: timeout");
            for code in [500u16, 502, 504, 400, 404, 409, 422, 200] {
                assert!(!may_retry(&method, status(code)), "{method} {code}");
            }
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) <= Duration::from_millis(250));
        assert!(backoff(3) >= Duration::from_millis(1200));
        assert!(backoff(30) <= Duration::from_millis(6250));
    }

    #[test]
    fn watch_parameters_are_read_from_the_query() {
        let uri: axum::http::Uri = "/api/v1/events?watch=1&timeoutSeconds=7"
            .parse()
            .expect("uri");
        assert!(is_watch(&uri));
        assert_eq!(watch_timeout(&uri), Duration::from_secs(7));
        let uri: axum::http::Uri = "/api/v1/events?watch=false".parse().expect("uri");
        assert!(!is_watch(&uri));
    }
}
