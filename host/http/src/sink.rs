//! The HTTP sink: one request per event (binary, structured) or per batch, with the
//! receiver's answer sorted into success, a transient failure (retried by the contract's
//! wrapper) or a refusal.

use crate::config::{HttpMode, HttpSinkConfig};
use futures_util::StreamExt;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Client, RequestBuilder, StatusCode, Url};
use std::sync::Arc;
use std::time::Duration;
use weir_core::cloudevents::http::{binary_headers, BATCH_JSON, STRUCTURED_JSON};
use weir_core::cloudevents::json::Structured;
use weir_core::dead_letter::DeadLetter;
use weir_core::resilience::Resilience;
use weir_core::sink::{BuildSink, Capabilities, ConfigProblem, Sink, SinkContext, SinkError};
use weir_core::util::error_chain;
use weir_core::Event;

/// A sink POSTing CloudEvents to one URL.
pub struct HttpSink {
    name: String,
    url: Url,
    mode: HttpMode,
    client: Client,
    token: Option<HeaderValue>,
    max_in_flight: usize,
    /// Route threads are not the runtime's: requests run on it through this handle.
    runtime: tokio::runtime::Handle,
}

/// How one request failed.
enum Failure {
    /// Worth trying again: no answer, a timeout, 408, 429 or 5xx.
    Transient(String),
    /// The receiver refused the event (another 4xx), or the request could not be made.
    Refused(String),
}

impl HttpSink {
    /// A client for `config` (it connects on the first write; the router starts while the
    /// receiver is down). Needs a tokio runtime.
    pub fn open(name: &str, config: &HttpSinkConfig) -> Result<Self, SinkError> {
        let url = Url::parse(&config.url).map_err(|e| SinkError::setup(name, "url", e))?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let mut client = Client::builder().timeout(timeout).connect_timeout(timeout);
        if let Some(tls) = &config.tls {
            let tls =
                weir_core::tls::client_config(tls).map_err(|e| SinkError::setup(name, "TLS", e))?;
            client = client.use_preconfigured_tls(tls);
        }
        let client = client
            .build()
            .map_err(|e| SinkError::setup(name, "HTTP client", e))?;
        let token = match &config.token {
            Some(source) => {
                let token = source
                    .read()
                    .map_err(|e| SinkError::setup(name, "token", e))?;
                let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| {
                    SinkError::setup(name, "the token is not a valid header value", e)
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| SinkError::setup(name, "an HTTP sink needs a tokio runtime", e))?;
        Ok(Self {
            name: name.to_owned(),
            url,
            mode: config.mode,
            client,
            token,
            max_in_flight: config.max_in_flight,
            runtime,
        })
    }

    /// A request to the endpoint, carrying `trace` (W3C Trace Context) when tracing is on.
    fn request(&self, trace: Option<weir_core::trace::W3c>) -> RequestBuilder {
        let mut request = self.client.post(self.url.clone());
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, token.clone());
        }
        if let Some(w3c) = trace {
            request = request.header(weir_core::trace::TRACEPARENT, w3c.traceparent);
            if let Some(state) = w3c.tracestate {
                request = request.header(weir_core::trace::TRACESTATE, state);
            }
        }
        request
    }

    /// An event's own trace context, to continue its trace on the request that carries it.
    fn event_trace(event: &Event) -> Option<weir_core::trace::W3c> {
        weir_core::trace::enabled()
            .then(|| weir_core::trace::of_event(event))
            .flatten()
    }

    /// The request carrying one event in binary or structured mode; an event that cannot
    /// be encoded is refused (sending an empty body instead would lose it silently).
    fn event_request(&self, event: &Event) -> Result<RequestBuilder, Failure> {
        Ok(match self.mode {
            HttpMode::Structured => {
                let body = serde_json::to_vec(&Structured(event)).map_err(|e| {
                    Failure::Refused(format!("cannot encode event `{}`: {e}", event.id))
                })?;
                self.request(Self::event_trace(event))
                    .header(CONTENT_TYPE, STRUCTURED_JSON)
                    .body(body)
            }
            HttpMode::Binary | HttpMode::Batch => {
                let mut request = self.request(Self::event_trace(event));
                for (name, value) in binary_headers(event) {
                    request = request.header(name, value);
                }
                request.body(event.data.clone().unwrap_or_default())
            }
        })
    }

    fn refused(&self, reason: String) -> SinkError {
        SinkError::Refused {
            sink: self.name.clone(),
            reason,
        }
    }

    fn unavailable(&self, reason: String) -> SinkError {
        SinkError::Unavailable {
            sink: self.name.clone(),
            reason,
        }
    }
}

/// Sends a request and sorts its outcome.
async fn send(request: RequestBuilder) -> Result<(), Failure> {
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let reason = format!("the receiver answered {status}");
            let transient = status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT;
            Err(if transient {
                Failure::Transient(reason)
            } else {
                Failure::Refused(reason)
            })
        }
        Err(e) if e.is_builder() => Err(Failure::Refused(format!("cannot make the request: {e}"))),
        Err(e) => Err(Failure::Transient(format!(
            "no answer: {}",
            error_chain(&e)
        ))),
    }
}

impl BuildSink for HttpSinkConfig {
    /// Events only: a receiver is no place for dead letters.
    fn capabilities(&self) -> Capabilities {
        Capabilities::EVENTS
    }

    fn problems(&self) -> Vec<ConfigProblem> {
        HttpSinkConfig::problems(self)
    }

    fn resilience(&self) -> Resilience {
        HttpSinkConfig::resilience(self)
    }

    fn build(&self, cx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
        Ok(Arc::new(HttpSink::open(cx.name, self)?))
    }
}

impl Sink for HttpSink {
    fn write(&self, events: &[&Event]) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        if self.mode == HttpMode::Batch {
            let batch: Vec<Structured<'_>> = events.iter().map(|e| Structured(e)).collect();
            let body = serde_json::to_vec(&batch)
                .map_err(|e| self.refused(format!("cannot encode the batch: {e}")))?;
            // A batch request continues the trace of the sink span that sends it.
            let request = self
                .request(weir_core::trace::current())
                .header(CONTENT_TYPE, BATCH_JSON)
                .body(body);
            return match self.runtime.block_on(send(request)) {
                Ok(()) => Ok(()),
                Err(Failure::Transient(reason)) => Err(self.unavailable(reason)),
                Err(Failure::Refused(reason)) => Err(self.refused(reason)),
            };
        }
        let requests = events.iter().map(|e| self.event_request(e));
        let answers: Vec<Result<(), Failure>> = self.runtime.block_on(
            futures_util::stream::iter(requests.map(|request| async move {
                match request {
                    Ok(request) => send(request).await,
                    Err(failure) => Err(failure),
                }
            }))
            .buffered(self.max_in_flight)
            .collect(),
        );
        let (mut failed, mut retry, mut reason) = (Vec::new(), Vec::new(), None);
        for (i, answer) in answers.into_iter().enumerate() {
            let why = match answer {
                Ok(()) => continue,
                Err(Failure::Transient(why)) => {
                    retry.push(i);
                    why
                }
                Err(Failure::Refused(why)) => why,
            };
            failed.push(i);
            reason.get_or_insert(why);
        }
        match reason {
            None => Ok(()),
            Some(reason) => Err(SinkError::Partial {
                sink: self.name.clone(),
                failed,
                retry,
                reason: format!("{}: {reason}", self.url),
            }),
        }
    }

    fn write_dead_letters(&self, _: &[DeadLetter<'_>]) -> Result<(), SinkError> {
        Err(self.refused("an HTTP sink cannot hold dead letters".into()))
    }

    fn stats(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "type": "http",
            "url": self.url.as_str(),
            "mode": match self.mode {
                HttpMode::Binary => "binary",
                HttpMode::Structured => "structured",
                HttpMode::Batch => "batch",
            },
        }))
    }
}
