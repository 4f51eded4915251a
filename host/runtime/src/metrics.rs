//! The filter runtime's metrics: recycled instances and the counters and histograms that
//! filters define through the host API.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec};
use std::collections::HashSet;
use std::sync::Mutex;
use weir_core::metrics::MetricsRegistry;

/// How many distinct guest-defined metric series may exist; beyond that, samples are
/// counted under the name `other` (a filter must not blow up the metrics endpoint).
const MAX_GUEST_SERIES: usize = 1000;

/// The filter runtime's metric families.
pub struct FilterMetrics {
    recycled: IntCounterVec,
    guest_counters: IntCounterVec,
    guest_histograms: HistogramVec,
    guest_series: Mutex<HashSet<(String, String, String)>>,
}

impl FilterMetrics {
    /// Registers (or finds) the families in `registry`.
    pub fn new(registry: &MetricsRegistry) -> Self {
        Self {
            recycled: registry.counter(
                "weir_filter_instances_recycled_total",
                "Filter instances thrown away after a failure.",
                &["filter", "tenant"],
            ),
            guest_counters: registry.counter(
                "weir_filter_counter_total",
                "Counters defined by filters.",
                &["filter", "tenant", "name"],
            ),
            guest_histograms: registry.histogram(
                HistogramOpts::new("weir_filter_histogram", "Histograms defined by filters."),
                &["filter", "tenant", "name"],
            ),
            guest_series: Mutex::new(HashSet::new()),
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
    pub fn filter_histogram(&self, filter: &str, tenant: &str, name: &str) -> Histogram {
        let name = self.guest_name(filter, tenant, name);
        self.guest_histograms
            .with_label_values(&[filter, tenant, &name])
    }
}
