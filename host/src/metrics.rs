//! Prometheus metrics. Hot paths take a labelled handle once per batch and add counts.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
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
    /// Dead letters written, by dead-letter sink and failing stage.
    pub dead_letters: IntCounterVec,
    /// Dead letters written to a dead-letter sink since start (its size), by sink.
    pub dead_letter_size: IntGaugeVec,
    /// Toggle sink buffer, spill and replay figures (`weir_toggle_*`), by sink.
    pub toggle: ToggleMetrics,
    /// Kafka source and sink figures (`weir_kafka_*`) and sink circuit breakers.
    pub kafka: crate::kafka::metrics::KafkaMetrics,
    recycled: IntCounterVec,
    guest_counters: IntCounterVec,
    guest_histograms: HistogramVec,
    guest_series: Mutex<HashSet<(String, String, String)>>,
}

pub(crate) fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is well-formed: {e}"));
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered once: {e}"));
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), &["sink"])
        .unwrap_or_else(|e| panic!("metric {name} is well-formed: {e}"));
    registry
        .register(Box::new(g.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered once: {e}"));
    g
}

/// The Toggle sink's metric families, labelled by sink (the GetStats fields and more).
pub struct ToggleMetrics {
    /// Events in memory not yet acknowledged by Toggle or written to disk.
    pub buffer_events: IntGaugeVec,
    /// The buffer's capacity.
    pub buffer_capacity: IntGaugeVec,
    /// Buffered events that trigger a write to disk.
    pub flush_threshold: IntGaugeVec,
    /// Events not yet delivered: buffered plus spilled.
    pub pending_events: IntGaugeVec,
    /// 1 once the sink shut down.
    pub shutdown: IntGaugeVec,
    /// Spill files waiting for replay.
    pub spill_files: IntGaugeVec,
    /// Bytes of spill files waiting for replay.
    pub spill_bytes: IntGaugeVec,
    /// Events acknowledged by Toggle from live batches.
    pub sent_events: IntCounterVec,
    /// Requests to Toggle that failed.
    pub send_failures: IntCounterVec,
    /// Spill files written.
    pub spilled_files: IntCounterVec,
    /// Events written to spill files.
    pub spilled_events: IntCounterVec,
    /// Bytes written to spill files.
    pub spilled_bytes: IntCounterVec,
    /// Spill files replayed and deleted.
    pub replayed_files: IntCounterVec,
    /// Events acknowledged by Toggle from spill files.
    pub replayed_events: IntCounterVec,
    /// Spill files moved to quarantine.
    pub quarantined_files: IntCounterVec,
    /// Spill files dropped at the disk cap.
    pub dropped_files: IntCounterVec,
    /// Events in dropped spill files.
    pub dropped_events: IntCounterVec,
    /// Events Toggle acknowledged but refused (its `rejected` count).
    pub rejected_events: IntCounterVec,
}

impl ToggleMetrics {
    fn new(r: &Registry) -> Self {
        let c = |name: &str, help: &str| counter(r, name, help, &["sink"]);
        Self {
            buffer_events: gauge(
                r,
                "weir_toggle_buffer_events",
                "Events in the Toggle sink's memory buffer.",
            ),
            buffer_capacity: gauge(
                r,
                "weir_toggle_buffer_capacity",
                "Capacity of the Toggle sink's memory buffer.",
            ),
            flush_threshold: gauge(
                r,
                "weir_toggle_flush_threshold",
                "Buffered events that make the Toggle sink write to disk.",
            ),
            pending_events: gauge(
                r,
                "weir_toggle_pending_events",
                "Events not yet acknowledged by Toggle: buffered and spilled.",
            ),
            shutdown: gauge(
                r,
                "weir_toggle_shutdown",
                "1 once the Toggle sink has shut down.",
            ),
            spill_files: gauge(
                r,
                "weir_toggle_spill_files",
                "Spill files waiting for replay.",
            ),
            spill_bytes: gauge(
                r,
                "weir_toggle_spill_bytes",
                "Bytes of spill files waiting for replay.",
            ),
            sent_events: c(
                "weir_toggle_sent_events_total",
                "Events Toggle acknowledged from live batches.",
            ),
            send_failures: c(
                "weir_toggle_send_failures_total",
                "Requests to Toggle that failed.",
            ),
            spilled_files: c("weir_toggle_spilled_files_total", "Spill files written."),
            spilled_events: c(
                "weir_toggle_spilled_events_total",
                "Events written to spill files.",
            ),
            spilled_bytes: c(
                "weir_toggle_spilled_bytes_total",
                "Bytes written to spill files.",
            ),
            replayed_files: c(
                "weir_toggle_replayed_files_total",
                "Spill files replayed to Toggle and deleted.",
            ),
            replayed_events: c(
                "weir_toggle_replayed_events_total",
                "Events Toggle acknowledged from spill files.",
            ),
            quarantined_files: c(
                "weir_toggle_quarantined_files_total",
                "Corrupt or refused spill files moved to quarantine.",
            ),
            dropped_files: c(
                "weir_toggle_dropped_files_total",
                "Spill files dropped at the disk cap.",
            ),
            dropped_events: c(
                "weir_toggle_dropped_events_total",
                "Events in spill files dropped at the disk cap.",
            ),
            rejected_events: c(
                "weir_toggle_rejected_events_total",
                "Events Toggle refused one by one.",
            ),
        }
    }
}

/// One Toggle sink's metric handles.
#[allow(missing_docs)]
pub struct ToggleSinkMetrics {
    pub buffer_events: IntGauge,
    pub buffer_capacity: IntGauge,
    pub flush_threshold: IntGauge,
    pub pending_events: IntGauge,
    pub shutdown: IntGauge,
    pub spill_files: IntGauge,
    pub spill_bytes: IntGauge,
    pub sent_events: IntCounter,
    pub send_failures: IntCounter,
    pub spilled_files: IntCounter,
    pub spilled_events: IntCounter,
    pub spilled_bytes: IntCounter,
    pub replayed_files: IntCounter,
    pub replayed_events: IntCounter,
    pub quarantined_files: IntCounter,
    pub dropped_files: IntCounter,
    pub dropped_events: IntCounter,
    pub rejected_events: IntCounter,
}

impl ToggleMetrics {
    /// The handles of one sink.
    pub fn for_sink(&self, sink: &str) -> ToggleSinkMetrics {
        let l = &[sink];
        ToggleSinkMetrics {
            buffer_events: self.buffer_events.with_label_values(l),
            buffer_capacity: self.buffer_capacity.with_label_values(l),
            flush_threshold: self.flush_threshold.with_label_values(l),
            pending_events: self.pending_events.with_label_values(l),
            shutdown: self.shutdown.with_label_values(l),
            spill_files: self.spill_files.with_label_values(l),
            spill_bytes: self.spill_bytes.with_label_values(l),
            sent_events: self.sent_events.with_label_values(l),
            send_failures: self.send_failures.with_label_values(l),
            spilled_files: self.spilled_files.with_label_values(l),
            spilled_events: self.spilled_events.with_label_values(l),
            spilled_bytes: self.spilled_bytes.with_label_values(l),
            replayed_files: self.replayed_files.with_label_values(l),
            replayed_events: self.replayed_events.with_label_values(l),
            quarantined_files: self.quarantined_files.with_label_values(l),
            dropped_files: self.dropped_files.with_label_values(l),
            dropped_events: self.dropped_events.with_label_values(l),
            rejected_events: self.rejected_events.with_label_values(l),
        }
    }
}

pub(crate) fn histogram(registry: &Registry, opts: HistogramOpts, labels: &[&str]) -> HistogramVec {
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
            dead_letters: counter(
                &r,
                "weir_dead_letters_total",
                "Dead letters written, by sink and failing stage.",
                &["sink", "stage"],
            ),
            dead_letter_size: gauge(
                &r,
                "weir_dead_letter_queue_size",
                "Dead letters written to a dead-letter sink since start.",
            ),
            toggle: ToggleMetrics::new(&r),
            kafka: crate::kafka::metrics::KafkaMetrics::new(&r),
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
