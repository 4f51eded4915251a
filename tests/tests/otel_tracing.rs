//! OpenTelemetry tracing across weir: a producer starts a trace, weir's spans (receive,
//! route, each filter call with its name and version, each sink send) join it, and the
//! next hop continues it, over HTTP (spans exported with OTLP HTTP/protobuf) and over
//! Kafka through the `tansu` broker (spans exported with OTLP gRPC).
//!
//! The collector is this test's own OTLP receiver: no OpenTelemetry Collector binary can
//! run here. It speaks the real protocol (the `opentelemetry-proto` messages, HTTP POST
//! `/v1/traces` and the gRPC `TraceService/Export`), and the spans it checks are what
//! weir's real exporter sent.

#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use common::kafka::{binary_event, produce, read_all, Broker};
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A span as the collector received it.
#[derive(Debug, Clone)]
struct Got {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: Vec<(String, String)>,
    service: String,
}

impl Got {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default, Clone)]
struct Collector(Arc<Mutex<Vec<Got>>>);

impl Collector {
    fn take(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().unwrap();
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let attributes = span
                        .attributes
                        .iter()
                        .map(|a| {
                            let value = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(AnyValue::StringValue(s)) => s.clone(),
                                Some(AnyValue::IntValue(i)) => i.to_string(),
                                Some(other) => format!("{other:?}"),
                                None => String::new(),
                            };
                            (a.key.clone(), value)
                        })
                        .collect();
                    spans.push(Got {
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent: hex(&span.parent_span_id),
                        attributes,
                        service: service.clone(),
                    });
                }
            }
        }
    }

    /// Waits until spans named `names` of `trace` arrived.
    fn wait(&self, trace: &str, names: &[&str]) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans: Vec<Got> = self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == trace)
                .cloned()
                .collect();
            if names.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "spans {names:?} of trace {trace} did not arrive; got {:#?}",
                self.0.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body.
async fn http_collector(collector: Collector) -> String {
    async fn traces(State(c): State<Collector>, body: Bytes) -> Vec<u8> {
        c.take(ExportTraceServiceRequest::decode(body).unwrap());
        ExportTraceServiceResponse::default().encode_to_vec()
    }
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(traces))
        .with_state(collector);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// An OTLP/gRPC receiver.
async fn grpc_collector(collector: Collector) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    url
}

/// The next hop: records the headers of each request.
async fn next_hop(seen: Arc<Mutex<Vec<HeaderMap>>>) -> String {
    async fn take(
        State(seen): State<Arc<Mutex<Vec<HeaderMap>>>>,
        headers: HeaderMap,
    ) -> &'static str {
        seen.lock().unwrap().push(headers);
        "ok"
    }
    let app = axum::Router::new().fallback(take).with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN: &str = "00f067aa0ba902b7";

/// Checks weir's spans of `TRACE`: receive under the producer's span, route under
/// receive, the filter call (name and version) and the sink send under the route.
fn check_spans(spans: &[Got], filter: &str, sink: &str) -> Got {
    let one = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {spans:#?}"))
            .clone()
    };
    let receive = one("weir.receive");
    assert_eq!(receive.parent, PRODUCER_SPAN, "{receive:?}");
    assert_eq!(receive.service, "weir-under-test", "{receive:?}");
    let route = one("weir.route");
    assert_eq!(route.parent, receive.span_id, "{route:?}");
    let call = one("weir.filter");
    assert_eq!(call.parent, route.span_id, "{call:?}");
    assert_eq!(call.attribute("weir.filter"), Some(filter), "{call:?}");
    assert_eq!(call.attribute("weir.filter.version"), Some("1"), "{call:?}");
    assert_eq!(call.attribute("weir.outcome"), Some("ok"), "{call:?}");
    assert_eq!(call.attribute("weir.tenant"), Some("default"), "{call:?}");
    let send = one("weir.sink");
    assert_eq!(send.parent, route.span_id, "{send:?}");
    assert_eq!(send.attribute("weir.sink"), Some(sink), "{send:?}");
    receive
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trace_crosses_weir_over_http_and_continues_at_the_next_hop() {
    let collector = Collector::default();
    let endpoint = http_collector(collector.clone()).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hop = next_hop(seen.clone()).await;
    let config = format!(
        "filters:\n{}sinks:\n  out:\n    type: http\n    url: {hop}/in\n    mode: binary\nroutes:\n  - name: main\n    filters: [severity]\n    to: [out]\n",
        filter_yaml("severity", wasm::SEVERITY, "{min: info}"),
    );
    let weir = Weir::start_env(
        &config,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "weir-under-test"),
        ],
    );
    let traceparent = format!("00-{TRACE}-{PRODUCER_SPAN}-01");
    let (status, answer) = post(
        &format!("{}/v1/events", weir.url),
        &[
            ("content-type", "application/cloudevents+json"),
            ("traceparent", &traceparent),
            ("tracestate", "producer=1"),
        ],
        event("traced", "t", json!({"severity": "info"})).to_string(),
    )
    .await;
    assert_eq!(
        (status, answer["delivered"].as_u64()),
        (202, Some(1)),
        "{answer}"
    );
    let spans = collector.wait(
        TRACE,
        &["weir.receive", "weir.route", "weir.filter", "weir.sink"],
    );
    let receive = check_spans(&spans, "severity", "out");
    // The next hop got the trace in W3C headers (and the event's extension): it continues
    // from weir's receive span, in the producer's trace.
    let headers = seen
        .lock()
        .unwrap()
        .pop()
        .expect("the next hop got the event");
    let got = headers
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        got,
        format!("00-{TRACE}-{}-01", receive.span_id),
        "{headers:?}"
    );
    assert_eq!(
        headers.get("ce-traceparent").unwrap().to_str().unwrap(),
        got
    );
    assert_eq!(
        headers.get("tracestate").unwrap().to_str().unwrap(),
        "producer=1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trace_crosses_weir_over_kafka_with_spans_exported_over_grpc() {
    let collector = Collector::default();
    let endpoint = grpc_collector(collector.clone()).await;
    let broker = Broker::start();
    broker.create_topics(&["in", "out"], 1).await;
    let mut record = binary_event("k-1", "t", "info", None, b"{}");
    record.1.push((
        "traceparent".into(),
        format!("00-{TRACE}-{PRODUCER_SPAN}-01").into_bytes(),
    ));
    // A second record without a context, in the same batch.
    let plain = binary_event("k-2", "t", "info", None, b"{}");
    produce(&broker.producer(true), "in", vec![record, plain]).await;
    let config = format!(
        "filters:\n{}kafka:\n  cluster:\n    brokers: [\"{}\"]\n  sources:\n    input:\n      topics: [in]\n      group_id: traced\n      auto_offset_reset: earliest\nsinks:\n  out:\n    type: kafka\n    topic: out\nroutes:\n  - name: kafka\n    from: [kafka]\n    filters: [severity]\n    to: [out]\n",
        filter_yaml("severity", wasm::SEVERITY, "{min: info}"),
        broker.addr()
    );
    let _weir = Weir::start_env(
        &config,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "weir-under-test"),
        ],
    );
    let out = read_all(&broker, "out", 1, 2, Duration::from_secs(60));
    assert_eq!(out.len(), 2, "{out:?}");
    let spans = collector.wait(
        TRACE,
        &["weir.receive", "weir.route", "weir.filter", "weir.sink"],
    );
    let receive = check_spans(&spans, "severity", "out");
    // The consumer of `out` continues the trace from weir's receive span.
    let traced = out
        .iter()
        .find(|r| r.header("ce_id").as_deref() == Some("k-1"))
        .unwrap();
    assert_eq!(
        traced.header("traceparent"),
        Some(format!("00-{TRACE}-{}-01", receive.span_id))
    );
    // A record that came without a context was received in the same span: it carries
    // that span's context on.
    let plain = out
        .iter()
        .find(|r| r.header("ce_id").as_deref() == Some("k-2"))
        .unwrap();
    assert_eq!(plain.header("traceparent"), traced.header("traceparent"));
}
