//! The Toggle sink's metric families (`weir_toggle_*`), labelled by sink: the fields of
//! Toggle's GetStats and more.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use weir_core::metrics::MetricsRegistry;

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
    /// Batches Toggle received but answered `success: false` for (logged, not resent).
    pub problem_batches: IntCounterVec,
}

impl ToggleMetrics {
    /// Registers (or finds) the families in `r`.
    pub fn new(r: &MetricsRegistry) -> Self {
        let c = |name: &str, help: &str| r.counter(name, help, &["sink"]);
        let gauge = |name: &str, help: &str| r.gauge(name, help, &["sink"]);
        Self {
            buffer_events: gauge(
                "weir_toggle_buffer_events",
                "Events in the Toggle sink's memory buffer.",
            ),
            buffer_capacity: gauge(
                "weir_toggle_buffer_capacity",
                "Capacity of the Toggle sink's memory buffer.",
            ),
            flush_threshold: gauge(
                "weir_toggle_flush_threshold",
                "Buffered events that make the Toggle sink write to disk.",
            ),
            pending_events: gauge(
                "weir_toggle_pending_events",
                "Events not yet acknowledged by Toggle: buffered and spilled.",
            ),
            shutdown: gauge(
                "weir_toggle_shutdown",
                "1 once the Toggle sink has shut down.",
            ),
            spill_files: gauge("weir_toggle_spill_files", "Spill files waiting for replay."),
            spill_bytes: gauge(
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
            problem_batches: c(
                "weir_toggle_problem_batches_total",
                "Batches Toggle received but answered success=false for; logged, not resent.",
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
    pub problem_batches: IntCounter,
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
            problem_batches: self.problem_batches.with_label_values(l),
        }
    }
}
