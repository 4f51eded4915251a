//! The router's metrics: events received, refused and routed, filter verdicts, failures
//! and durations, sink writes and dead letters. Connectors register their own families
//! in the same registry.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec};
use std::sync::Arc;
use weir_core::metrics::MetricsRegistry;
use weir_runtime::FilterMetrics;

/// The `verdict` label values of `weir_filter_verdicts_total`.
pub const VERDICTS: [&str; 5] = ["keep", "drop", "fan_out", "route", "error"];

/// The router's metric families.
pub struct Metrics {
    registry: Arc<MetricsRegistry>,
    /// Events accepted at a source, by source kind.
    pub received: IntCounterVec,
    /// Requests or events refused at a source, by reason.
    pub rejected: IntCounterVec,
    /// Events leaving a route, by route and outcome
    /// (`delivered`, `dropped`, `dead_lettered`, `routed`).
    pub route_events: IntCounterVec,
    /// Verdicts per filter and tenant and filter version (`keep`, `drop`, `fan_out`, `route`, `error`;
    /// a changed event counts as `keep`).
    pub filter_verdicts: IntCounterVec,
    /// Failed filter calls by kind (`timeout`, `memory`, `trap`, `bad_output`, ...).
    pub filter_failures: IntCounterVec,
    /// Batches run again after their filter failed, by route, filter and tenant.
    pub filter_retries: IntCounterVec,
    /// Duration of one filter batch call, seconds.
    pub filter_seconds: HistogramVec,
    /// Events written per sink.
    pub sink_events: IntCounterVec,
    /// Sink write failures.
    pub sink_errors: IntCounterVec,
    /// Dead letters written, by dead-letter sink and failing stage.
    pub dead_letters: IntCounterVec,
    /// Dead letters written to a dead-letter sink since start (its size), by sink.
    pub dead_letter_size: IntGaugeVec,
    /// The filter runtime's families (recycled instances, filter-defined metrics).
    pub filters: Arc<FilterMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Arc::new(MetricsRegistry::new()))
    }
}

impl Metrics {
    /// Registers (or finds) the router's families in `registry`.
    pub fn new(registry: Arc<MetricsRegistry>) -> Self {
        let r = &*registry;
        let buckets = vec![
            0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
        ];
        Self {
            received: r.counter(
                "weir_events_received_total",
                "Events accepted at a source.",
                &["source"],
            ),
            rejected: r.counter(
                "weir_events_rejected_total",
                "Requests or events refused at a source.",
                &["source", "reason"],
            ),
            route_events: r.counter(
                "weir_route_events_total",
                "Events leaving a route, by outcome.",
                &["route", "outcome"],
            ),
            filter_verdicts: r.counter(
                "weir_filter_verdicts_total",
                "Verdicts returned by filters, by filter version.",
                &["filter", "version", "tenant", "verdict"],
            ),
            filter_failures: r.counter(
                "weir_filter_failures_total",
                "Failed filter batch calls, by filter version and kind.",
                &["route", "filter", "version", "tenant", "kind"],
            ),
            filter_retries: r.counter(
                "weir_filter_retries_total",
                "Filter batches run again after a failure.",
                &["route", "filter", "version", "tenant"],
            ),
            filter_seconds: r.histogram(
                HistogramOpts::new(
                    "weir_filter_batch_seconds",
                    "Duration of one filter batch call.",
                )
                .buckets(buckets),
                &["filter", "version", "tenant"],
            ),
            sink_events: r.counter(
                "weir_sink_events_total",
                "Events written by a sink.",
                &["sink"],
            ),
            sink_errors: r.counter("weir_sink_errors_total", "Sink write failures.", &["sink"]),
            dead_letters: r.counter(
                "weir_dead_letters_total",
                "Dead letters written, by sink and failing stage.",
                &["sink", "stage"],
            ),
            dead_letter_size: r.gauge(
                "weir_dead_letter_queue_size",
                "Dead letters written to a dead-letter sink since start.",
                &["sink"],
            ),
            filters: Arc::new(FilterMetrics::new(r)),
            registry,
        }
    }

    /// The registry every family is in (connectors register theirs here too).
    pub fn registry(&self) -> &Arc<MetricsRegistry> {
        &self.registry
    }

    /// The Prometheus text exposition of every family in the registry.
    pub fn render(&self) -> String {
        self.registry.render()
    }

    /// Removes the per-version series of a filter version a lane stopped running.
    pub fn forget_filter_version(&self, route: &str, filter: &str, version: &str, tenant: &str) {
        // Removing a series that was never written is not an error worth reporting.
        for verdict in VERDICTS {
            let _ = self
                .filter_verdicts
                .remove_label_values(&[filter, version, tenant, verdict]);
        }
        for kind in weir_runtime::FilterError::KINDS {
            let _ = self
                .filter_failures
                .remove_label_values(&[route, filter, version, tenant, kind]);
        }
        let _ = self
            .filter_retries
            .remove_label_values(&[route, filter, version, tenant]);
        let _ = self
            .filter_seconds
            .remove_label_values(&[filter, version, tenant]);
    }

    /// Counts dead letters written to a dead-letter sink, by failing stage.
    pub fn dead_lettered<'a>(&self, sink: &str, stages: impl Iterator<Item = &'a str>) {
        let mut counts: Vec<(&str, u64)> = Vec::new();
        for stage in stages {
            match counts.iter_mut().find(|(s, _)| *s == stage) {
                Some((_, n)) => *n += 1,
                None => counts.push((stage, 1)),
            }
        }
        let mut total = 0;
        for (stage, n) in counts {
            self.dead_letters
                .with_label_values(&[sink, stage])
                .inc_by(n);
            total += n;
        }
        self.dead_letter_size
            .with_label_values(&[sink])
            .add(i64::try_from(total).unwrap_or(i64::MAX));
    }
}
