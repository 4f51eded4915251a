//! Prometheus metrics. Hot paths take a labelled handle once per batch and add counts.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};
use std::collections::HashSet;
use std::sync::Mutex;

/// How many distinct guest-defined metric series may exist; beyond that, samples are
/// counted under the name `other` (a filter must not blow up the metrics endpoint).
const MAX_GUEST_SERIES: usize = 1000;

/// Every metric the router exports.
pub struct Metrics {
    registry: Registry,
    /// Events accepted at a source, by source kind.
    pub received: IntCounterVec,
    /// Requests or events refused at a source, by reason.
    pub rejected: IntCounterVec,
    /// Events leaving a route, by route and outcome
    /// (`delivered`, `dropped`, `dead_lettered`, `routed`).
    pub route_events: IntCounterVec,
    /// Verdicts per filter and tenant (`keep`, `drop`, `replace`, `fan_out`, `route`, `error`).
    pub filter_verdicts: IntCounterVec,
    /// Failed filter calls by kind (`timeout`, `memory`, `trap`, `bad_output`, ...).
    pub filter_failures: IntCounterVec,
    /// Duration of one filter batch call, seconds.
    pub filter_seconds: HistogramVec,
    /// Events written per sink.
    pub sink_events: IntCounterVec,
    /// Sink write failures.
    pub sink_errors: IntCounterVec,
    recycled: IntCounterVec,
    guest_counters: IntCounterVec,
    guest_histograms: HistogramVec,
    guest_series: Mutex<HashSet<(String, String, String)>>,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is well-formed: {e}"));
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered once: {e}"));
    c
}

fn histogram(registry: &Registry, opts: HistogramOpts, labels: &[&str]) -> HistogramVec {
    let name = opts.common_opts.name.clone();
    let h = HistogramVec::new(opts, labels)
        .unwrap_or_else(|e| panic!("metric {name} is well-formed: {e}"));
    registry
        .register(Box::new(h.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered once: {e}"));
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let r = Registry::new();
        let buckets = vec![
            0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
        ];
        Self {
            received: counter(
                &r,
                "weir_events_received_total",
                "Events accepted at a source.",
                &["source"],
            ),
            rejected: counter(
                &r,
                "weir_events_rejected_total",
                "Requests or events refused at a source.",
                &["source", "reason"],
            ),
            route_events: counter(
                &r,
                "weir_route_events_total",
                "Events leaving a route, by outcome.",
                &["route", "outcome"],
            ),
            filter_verdicts: counter(
                &r,
                "weir_filter_verdicts_total",
                "Verdicts returned by filters.",
                &["filter", "tenant", "verdict"],
            ),
            filter_failures: counter(
                &r,
                "weir_filter_failures_total",
                "Failed filter batch calls, by kind.",
                &["route", "filter", "tenant", "kind"],
            ),
            filter_seconds: histogram(
                &r,
                HistogramOpts::new(
                    "weir_filter_batch_seconds",
                    "Duration of one filter batch call.",
                )
                .buckets(buckets),
                &["filter", "tenant"],
            ),
            sink_events: counter(
                &r,
                "weir_sink_events_total",
                "Events written by a sink.",
                &["sink"],
            ),
            sink_errors: counter(
                &r,
                "weir_sink_errors_total",
                "Sink write failures.",
                &["sink"],
            ),
            recycled: counter(
                &r,
                "weir_filter_instances_recycled_total",
                "Filter instances thrown away after a failure.",
                &["filter", "tenant"],
            ),
            guest_counters: counter(
                &r,
                "weir_filter_counter_total",
                "Counters defined by filters.",
                &["filter", "tenant", "name"],
            ),
            guest_histograms: histogram(
                &r,
                HistogramOpts::new("weir_filter_histogram", "Histograms defined by filters."),
                &["filter", "tenant", "name"],
            ),
            guest_series: Mutex::new(HashSet::new()),
            registry: r,
        }
    }

    /// Counts a recycled instance.
    pub fn instance_recycled(&self, filter: &str, tenant: &str) {
        self.recycled.with_label_values(&[filter, tenant]).inc();
    }

    fn guest_name(&self, filter: &str, tenant: &str, name: &str) -> String {
        let clean: String = name
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut series = self.guest_series.lock().unwrap_or_else(|e| e.into_inner());
        let key = (filter.to_owned(), tenant.to_owned(), clean);
        if series.contains(&key) || series.len() < MAX_GUEST_SERIES {
            let name = key.2.clone();
            series.insert(key);
            name
        } else {
            "other".to_owned()
        }
    }

    /// A filter-defined counter.
    pub fn filter_counter(&self, filter: &str, tenant: &str, name: &str) -> IntCounter {
        let name = self.guest_name(filter, tenant, name);
        self.guest_counters
            .with_label_values(&[filter, tenant, &name])
    }

    /// A filter-defined histogram.
    pub fn filter_histogram(
        &self,
        filter: &str,
        tenant: &str,
        name: &str,
    ) -> prometheus::Histogram {
        let name = self.guest_name(filter, tenant, name);
        self.guest_histograms
            .with_label_values(&[filter, tenant, &name])
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which `new` excludes.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
