//! The filter runtime's metrics: recycled instances and the counters and histograms that
//! filters define through the host API.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use weir_core::metrics::MetricsRegistry;

/// How many distinct guest-defined metric series one tenant's filters may make; beyond
/// that, that tenant's samples are counted under the name `other` (a filter must not blow
/// up the metrics endpoint, and one tenant must not use up another's series).
const MAX_GUEST_SERIES_PER_TENANT: usize = 200;

/// The filter runtime's metric families.
pub struct FilterMetrics {
    recycled: IntCounterVec,
    guest_counters: IntCounterVec,
    guest_histograms: HistogramVec,
    /// tenant → its series (filter, name).
    guest_series: Mutex<HashMap<String, HashSet<(String, String)>>>,
    log_dropped: IntCounterVec,
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
            guest_series: Mutex::new(HashMap::new()),
            log_dropped: registry.counter(
                "weir_filter_log_lines_dropped_total",
                "Log lines of filters dropped for going over the per-instance budget (a burst of 100, then 10 a second).",
                &["filter", "tenant"],
            ),
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
        let mut all = self.guest_series.lock().unwrap_or_else(|e| e.into_inner());
        // The tenant's set is made once; a counter call on a known tenant allocates nothing
        // for it.
        if !all.contains_key(tenant) {
            all.insert(tenant.to_owned(), HashSet::new());
        }
        let Some(series) = all.get_mut(tenant) else {
            return "other".to_owned();
        };
        let key = (filter.to_owned(), clean);
        if series.contains(&key) || series.len() < MAX_GUEST_SERIES_PER_TENANT {
            let name = key.1.clone();
            series.insert(key);
            name
        } else {
            "other".to_owned()
        }
    }

    /// Counts log lines of a filter dropped over its budget.
    pub fn log_lines_dropped(&self, filter: &str, tenant: &str, n: u64) {
        self.log_dropped
            .with_label_values(&[filter, tenant])
            .inc_by(n);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tenant_has_its_own_series_budget() {
        let m = FilterMetrics::new(&MetricsRegistry::new());
        // A noisy tenant uses up its own budget...
        for i in 0..MAX_GUEST_SERIES_PER_TENANT + 50 {
            m.filter_counter("f", "noisy", &format!("n{i}")).inc();
        }
        assert_eq!(m.guest_name("f", "noisy", "one-more"), "other");
        // ...and another tenant still gets its own names.
        assert_eq!(m.guest_name("f", "quiet", "mine"), "mine");
    }
}
