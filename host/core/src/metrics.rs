//! The metrics registry every part of the router registers its families in. Families are
//! registered on first use and shared after that, so each connector declares its own
//! metrics beside its code, and building a second sink of a kind reuses the family.
//! Hot paths take a labelled handle once (per batch or per sink) and add counts.

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::any::Any;
use std::collections::HashMap;
use std::sync::Mutex;

/// A Prometheus registry whose families are registered once, by name.
#[derive(Default)]
pub struct MetricsRegistry {
    registry: Registry,
    families: Mutex<HashMap<String, Box<dyn Any + Send + Sync>>>,
    /// The event types that may be label values (`metrics.event_types`).
    event_types: TypeLabels,
}

/// Event types as `type` label values: the configured ones as they are, any other as
/// [`OTHER_TYPE`]. Event types are chosen by producers; as label values unbounded, they
/// would grow the series without end.
#[derive(Debug, Clone, Default)]
pub struct TypeLabels(std::sync::Arc<std::collections::HashSet<String>>);

impl TypeLabels {
    /// The label value of `ty`.
    pub fn label<'a>(&self, ty: &'a str) -> &'a str {
        if self.0.contains(ty) {
            ty
        } else {
            OTHER_TYPE
        }
    }
}

/// One series' current value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The family's name.
    pub name: String,
    /// The series' labels, by name.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The value of the label called `name`, if the series has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The label value of event types not configured as labels.
pub const OTHER_TYPE: &str = "other";

impl MetricsRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry whose `type` labels take only these event types ([`TypeLabels`]).
    pub fn with_event_types(types: impl IntoIterator<Item = String>) -> Self {
        Self {
            event_types: TypeLabels(std::sync::Arc::new(types.into_iter().collect())),
            ..Self::default()
        }
    }

    /// How event types become `type` label values here.
    pub fn type_labels(&self) -> TypeLabels {
        self.event_types.clone()
    }

    /// The family called `name`, registering it with `make` the first time. Names and
    /// labels are the program's own constants, so a malformed or clashing family is a
    /// bug found by the first test that builds it.
    fn family<C>(&self, name: &str, make: impl FnOnce() -> prometheus::Result<C>) -> C
    where
        C: Collector + Clone + Send + Sync + 'static,
    {
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = families.get(name) {
            return existing
                .downcast_ref::<C>()
                .unwrap_or_else(|| panic!("metric {name} registered twice with different kinds"))
                .clone();
        }
        let family = make().unwrap_or_else(|e| panic!("metric {name} is well-formed: {e}"));
        self.registry
            .register(Box::new(family.clone()))
            .unwrap_or_else(|e| panic!("metric {name} registered once: {e}"));
        families.insert(name.to_owned(), Box::new(family.clone()));
        family
    }

    /// A counter family.
    pub fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.family(name, || IntCounterVec::new(Opts::new(name, help), labels))
    }

    /// A gauge family.
    pub fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.family(name, || IntGaugeVec::new(Opts::new(name, help), labels))
    }

    /// A histogram family.
    pub fn histogram(&self, opts: HistogramOpts, labels: &[&str]) -> HistogramVec {
        let name = opts.common_opts.name.clone();
        self.family(&name, || HistogramVec::new(opts, labels))
    }

    /// The current values of the counter and gauge families called `names` (a
    /// histogram's sample count), as `/metrics` would show them at this moment.
    pub fn samples(&self, names: &[&str]) -> Vec<Sample> {
        use prometheus::proto::MetricType;
        let mut out = Vec::new();
        for family in self.registry.gather() {
            if !names.contains(&family.name()) {
                continue;
            }
            for metric in family.get_metric() {
                let value = match family.get_field_type() {
                    MetricType::COUNTER => metric.get_counter().get_value(),
                    MetricType::GAUGE => metric.get_gauge().get_value(),
                    MetricType::HISTOGRAM => metric.get_histogram().get_sample_count() as f64,
                    _ => continue,
                };
                out.push(Sample {
                    name: family.name().to_owned(),
                    labels: metric
                        .get_label()
                        .iter()
                        .map(|l| (l.name().to_owned(), l.value().to_owned()))
                        .collect(),
                    value,
                });
            }
        }
        out
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid families, which registration excludes.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_is_registered_once_and_shared() {
        let r = MetricsRegistry::new();
        let a = r.counter("weir_test_total", "Test.", &["sink"]);
        let b = r.counter("weir_test_total", "Test.", &["sink"]);
        a.with_label_values(&["x"]).inc();
        b.with_label_values(&["x"]).inc();
        assert!(
            r.render().contains("weir_test_total{sink=\"x\"} 2"),
            "{}",
            r.render()
        );
    }

    #[test]
    #[should_panic(expected = "different kinds")]
    fn one_name_cannot_be_two_kinds() {
        let r = MetricsRegistry::new();
        r.counter("weir_test", "Test.", &["sink"]);
        r.gauge("weir_test", "Test.", &["sink"]);
    }
}

#[cfg(test)]
mod type_label_tests {
    use super::*;

    #[test]
    fn only_configured_types_become_label_values() {
        let r = MetricsRegistry::with_event_types(["order.created".to_owned()]);
        let labels = r.type_labels();
        assert_eq!(labels.label("order.created"), "order.created");
        assert_eq!(labels.label("made.up.by.a.producer.42"), OTHER_TYPE);
        assert_eq!(MetricsRegistry::new().type_labels().label("x"), OTHER_TYPE);
    }
}
