//! Distributed tracing across weir's transports, in W3C Trace Context: a source reads the
//! producer's `traceparent`/`tracestate` (HTTP headers, gRPC metadata, Kafka headers, or
//! the CloudEvents distributed-tracing extension of the event itself), runs its receive
//! span as the producer's child, and writes that span's context into the `traceparent`
//! extension of the events it belongs to; sinks write each event's context on what they
//! send (a Kafka header, an HTTP header, gRPC metadata), so the next hop continues the
//! trace through weir.
//!
//! Spans are `tracing` spans with target [`TARGET`], exported by the binary's
//! OpenTelemetry layer. They are made only while an exporter is installed ([`enabled`]):
//! with tracing off (the default), every helper here is a relaxed atomic load and events
//! are not touched.

use crate::event::Event;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The `tracing` target of weir's spans (the binary exports this target only).
pub const TARGET: &str = "weir_otel";

/// The CloudEvents distributed-tracing extension attributes.
pub const TRACEPARENT: &str = "traceparent";
/// See [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are made and contexts propagated (an exporter is installed).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns tracing on or off (the binary, once its exporter is installed).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// `make()` while tracing is on, else a disabled span (nothing allocated).
#[inline]
pub fn span(make: impl FnOnce() -> Span) -> Span {
    if enabled() {
        make()
    } else {
        Span::none()
    }
}

/// How a source took its events, as the receive span's `otel.kind` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiving {
    /// Answering a request (HTTP, gRPC).
    Request,
    /// Consuming from a log (Kafka).
    Consumed,
}

/// A source's receive span for `events` events (a disabled one while tracing is off);
/// set it up with [`receive`].
pub fn receive_span(source: &'static str, how: Receiving, events: usize) -> Span {
    // The OpenTelemetry layer reads `otel.kind` as the span kind.
    let kind = match how {
        Receiving::Request => "server",
        Receiving::Consumed => "consumer",
    };
    span(|| {
        tracing::info_span!(
            target: TARGET,
            "weir.receive",
            otel.kind = kind,
            weir.source = source,
            weir.events = events,
        )
    })
}

/// A W3C context as its two header values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct W3c {
    /// `traceparent`.
    pub traceparent: String,
    /// `tracestate`, when not empty.
    pub tracestate: Option<String>,
}

struct Pair<'a>(&'a str, Option<&'a str>);

impl Extractor for Pair<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.0),
            TRACESTATE => self.1,
            _ => None,
        }
    }
    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

impl Injector for W3c {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = value,
            TRACESTATE if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

/// The remote span context in a `traceparent` (and `tracestate`), if it is valid.
fn remote(traceparent: &str, tracestate: Option<&str>) -> Option<opentelemetry::Context> {
    let cx = TraceContextPropagator::new().extract(&Pair(traceparent, tracestate));
    cx.span().span_context().is_valid().then_some(cx)
}

/// The trace id in a `traceparent` (`00-<trace id>-<span id>-<flags>`).
fn trace_id(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1)
}

/// The W3C context of `span`, when it is recording.
pub fn context_of(span: &Span) -> Option<W3c> {
    if span.is_disabled() {
        return None;
    }
    let mut w3c = W3c::default();
    TraceContextPropagator::new().inject_context(&span.context(), &mut w3c);
    (!w3c.traceparent.is_empty()).then_some(w3c)
}

/// The W3C context of the current span, for an outgoing request (none while tracing is
/// off).
pub fn current() -> Option<W3c> {
    if !enabled() {
        return None;
    }
    context_of(&Span::current())
}

/// A valid W3C context from a carrier (HTTP headers, gRPC metadata, Kafka headers, an
/// event's extensions), read with `get`; `None` when it has none or it is malformed.
pub fn from_carrier<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<W3c> {
    let traceparent = get(TRACEPARENT)?;
    let cx = remote(traceparent, get(TRACESTATE))?;
    // The trace state as parsed: entries that break the format are not passed on.
    let tracestate = cx.span().span_context().trace_state().header();
    Some(W3c {
        traceparent: traceparent.to_owned(),
        tracestate: (!tracestate.is_empty()).then_some(tracestate),
    })
}

/// An event's own W3C context (its distributed-tracing extension), when valid.
pub fn of_event(event: &Event) -> Option<W3c> {
    from_carrier(|name| event.extension(name))
}

/// Sets up a source's receive `span` for `events`: its parent is the producer's context
/// (`carried`: the request's headers or metadata; else the first event's extension), it
/// links to the other traces the events carry, and the events of its own trace (and
/// those carrying none) get its context as their `traceparent`, so what weir sends on
/// continues the trace from here. Does nothing while tracing is off.
pub fn receive(span: &Span, carried: Option<&W3c>, events: &mut [Event]) {
    if !enabled() || span.is_disabled() {
        return;
    }
    let parent = carried
        .and_then(|w| {
            remote(&w.traceparent, w.tracestate.as_deref()).map(|cx| (w.traceparent.clone(), cx))
        })
        .or_else(|| {
            events.iter().find_map(|e| {
                let tp = e.extension(TRACEPARENT)?;
                remote(tp, e.extension(TRACESTATE)).map(|cx| (tp.to_owned(), cx))
            })
        });
    let parent_trace = parent
        .as_ref()
        .and_then(|(tp, _)| trace_id(tp).map(str::to_owned));
    if let Some((_, cx)) = parent {
        // Fails only when the span was entered already; it is not.
        let _ = span.set_parent(cx);
    }
    let Some(own) = context_of(span) else {
        return;
    };
    let mut linked = 0usize;
    for event in events.iter_mut() {
        match event.extension(TRACEPARENT) {
            Some(tp) if trace_id(tp) != parent_trace.as_deref() => {
                // Another trace: linked (a bounded number), left as the producer sent it.
                if linked < MAX_LINKS {
                    if let Some(cx) = remote(tp, event.extension(TRACESTATE)) {
                        span.add_link(cx.span().span_context().clone());
                        linked += 1;
                    }
                }
            }
            _ => stamp(event, &own),
        }
    }
}

/// The most links one span gets to the other traces its events carry.
const MAX_LINKS: usize = 32;

/// Writes `w3c` as the event's distributed-tracing extension.
pub fn stamp(event: &mut Event, w3c: &W3c) {
    event.set_extension(TRACEPARENT, w3c.traceparent.clone());
    match &w3c.tracestate {
        Some(state) => event.set_extension(TRACESTATE, state.clone()),
        None => event.extensions.retain(|e| e.name != TRACESTATE),
    }
}

/// Makes `span` a child of `parent`'s span (a route round runs for the first job's
/// receive span) and links it to `others`.
pub fn follow(span: &Span, parent: &Span, others: &[&Span]) {
    if span.is_disabled() {
        return;
    }
    let _ = span.set_parent(parent.context());
    for other in others.iter().take(MAX_LINKS) {
        let cx = other.context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            span.add_link(sc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_read_and_garbage_is_not() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = remote(tp, Some("congo=t61rcWkgMzE")).expect("valid");
        let sc = cx.span().span_context().clone();
        assert_eq!(
            format!("{:032x}", sc.trace_id()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(sc.is_remote());
        assert_eq!(sc.trace_state().get("congo"), Some("t61rcWkgMzE"));
        for bad in [
            "",
            "00-xyz",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "garbage\u{7f}",
        ] {
            assert!(remote(bad, None).is_none(), "{bad:?}");
        }
        assert_eq!(trace_id(tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        // From a carrier: only a valid context, an empty tracestate left out.
        let get = |tp: &'static str| {
            move |k: &str| match k {
                TRACEPARENT => Some(tp),
                TRACESTATE => Some(""),
                _ => None,
            }
        };
        let w3c = from_carrier(get(tp)).expect("valid");
        assert_eq!((w3c.traceparent.as_str(), w3c.tracestate), (tp, None));
        assert!(from_carrier(get("00-zz-\n")).is_none());
    }

    #[test]
    fn with_tracing_off_nothing_is_made_and_events_are_untouched() {
        set_enabled(false);
        let span = span(|| tracing::info_span!(target: TARGET, "x"));
        assert!(span.is_disabled());
        let mut events = vec![Event::new("1", "/s", "t")];
        let w3c = W3c {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: None,
        };
        receive(&span, Some(&w3c), &mut events);
        assert!(events[0].extension(TRACEPARENT).is_none());
        assert!(current().is_none());
    }
}
