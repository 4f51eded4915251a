//! What weir's tracing costs on the hot path: the work a route round, a filter call, a
//! sink write and a source's receive do for tracing, with tracing off (the default: no
//! exporter, no spans) and on (an OpenTelemetry layer and an SDK provider whose
//! exporter discards, so the cost measured is weir's and the SDK's span work, not the
//! network's). Per round of one 500-event request.
//!
//! Run: `cargo bench -p weir --bench tracing_overhead`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry::trace::TracerProvider as _;
use tracing::Span;
use tracing_subscriber::layer::SubscriberExt as _;
use weir::event::Event;
use weir::trace as wt;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS: usize = 500;

fn events() -> Vec<Event> {
    (0..EVENTS)
        .map(|i| Event::new(format!("evt-{i:08}"), "/bench", "com.example.created"))
        .collect()
}

/// The tracing work of one request's way through weir: the receive span (reading the
/// producer's context, stamping the events), the route round following it, three
/// filter calls and one sink write, each a span entered and left.
fn one_round(mut batch: Vec<Event>) -> Vec<Event> {
    let receive = wt::receive_span("http", wt::Receiving::Request, EVENTS);
    wt::receive(
        &receive,
        Some(&wt::W3c {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: None,
        }),
        &mut batch,
    );
    let job_span = receive.in_scope(|| wt::span(Span::current));
    let round =
        wt::span(|| tracing::info_span!(target: wt::TARGET, "weir.route", weir.events = EVENTS));
    wt::follow(&round, &job_span, &[]);
    let _round = round.enter();
    for filter in ["scope-inject", "severity", "redact"] {
        let call = wt::span(
            || tracing::info_span!(target: wt::TARGET, "weir.filter", weir.filter = filter, weir.outcome = tracing::field::Empty),
        );
        let _call = call.enter();
        call.record("weir.outcome", "ok");
    }
    let sink =
        wt::span(|| tracing::info_span!(target: wt::TARGET, "weir.sink", weir.events = EVENTS));
    let _sink = sink.enter();
    batch
}

/// An exporter that drops every batch.
#[derive(Debug)]
struct Discard;

impl opentelemetry_sdk::trace::SpanExporter for Discard {
    async fn export(
        &self,
        _: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracing_per_500_event_request");
    group.throughput(Throughput::Elements(EVENTS as u64));
    wt::set_enabled(false);
    group.bench_function("off", |b| {
        b.iter_batched(events, one_round, BatchSize::SmallInput)
    });
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(Discard)
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"));
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        wt::set_enabled(true);
        group.bench_function("on", |b| {
            b.iter_batched(events, one_round, BatchSize::SmallInput)
        });
        wt::set_enabled(false);
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
