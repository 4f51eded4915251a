//! Throughput over the last minutes, for the status page: running totals of the metric
//! families sampled every [`HISTORY_INTERVAL`], turned into events per second.

use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use weir_core::metrics::MetricsRegistry;

/// How often the throughput history takes a sample.
pub const HISTORY_INTERVAL: Duration = Duration::from_secs(5);
/// How many samples the history keeps (ten minutes at [`HISTORY_INTERVAL`]).
const HISTORY_POINTS: usize = 120;

/// Running totals at one moment, from which the history computes rates.
#[derive(Default)]
struct Totals {
    /// Events that left each route (every outcome but `unmatched`).
    routes: BTreeMap<String, f64>,
    /// Events each sink wrote.
    sinks: BTreeMap<String, f64>,
    /// Verdicts of each tenant's filters.
    tenants: BTreeMap<String, f64>,
}

impl Totals {
    fn read(metrics: &MetricsRegistry) -> Self {
        let mut totals = Totals::default();
        for s in metrics.samples(&[
            "weir_route_events_total",
            "weir_sink_events_total",
            "weir_filter_verdicts_total",
        ]) {
            let (map, key) = match s.name.as_str() {
                "weir_route_events_total" if s.label("outcome") != Some("unmatched") => {
                    (&mut totals.routes, s.label("route"))
                }
                "weir_sink_events_total" => (&mut totals.sinks, s.label("sink")),
                "weir_filter_verdicts_total" => (&mut totals.tenants, s.label("tenant")),
                _ => continue,
            };
            if let Some(key) = key {
                *map.entry(key.to_owned()).or_default() += s.value;
            }
        }
        totals
    }
}

/// Throughput over the last minutes: totals sampled every [`HISTORY_INTERVAL`].
#[derive(Default)]
pub struct History {
    points: Mutex<VecDeque<(Instant, Totals)>>,
}

impl History {
    /// Takes a sample now (the oldest goes once [`HISTORY_POINTS`] are kept).
    pub fn sample(&self, metrics: &MetricsRegistry) {
        let totals = Totals::read(metrics);
        let mut points = self.points.lock().unwrap_or_else(|e| e.into_inner());
        if points.len() == HISTORY_POINTS {
            points.pop_front();
        }
        points.push_back((Instant::now(), totals));
    }

    /// Events per second between consecutive samples, per route, sink and (with `only`,
    /// that one) tenant; the newest rate last.
    pub fn rates(&self, only: Option<&str>) -> Value {
        let points = self.points.lock().unwrap_or_else(|e| e.into_inner());
        let series = |pick: fn(&Totals) -> &BTreeMap<String, f64>, keep: &dyn Fn(&str) -> bool| {
            let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            let pairs: Vec<_> = points.iter().zip(points.iter().skip(1)).collect();
            for ((t0, a), (t1, b)) in &pairs {
                let seconds = t1.duration_since(*t0).as_secs_f64().max(0.001);
                for (name, now) in pick(b).iter().filter(|(n, _)| keep(n)) {
                    let before = pick(a).get(name).copied().unwrap_or(0.0);
                    // A series dropped and started again (a swapped filter version) counts
                    // from zero; a negative rate would be a lie.
                    let rate = ((now - before).max(0.0) / seconds * 100.0).round() / 100.0;
                    out.entry(name.clone()).or_default().push(rate);
                }
            }
            let len = pairs.len();
            // Series that appeared late are padded at the front, so all line up.
            for rates in out.values_mut() {
                let missing = len.saturating_sub(rates.len());
                rates.splice(0..0, std::iter::repeat_n(0.0, missing));
            }
            json!(out)
        };
        let everything = |_: &str| true;
        match only {
            None => json!({
                "interval_seconds": HISTORY_INTERVAL.as_secs(),
                "routes": series(|t| &t.routes, &everything),
                "sinks": series(|t| &t.sinks, &everything),
                "tenants": series(|t| &t.tenants, &everything),
            }),
            Some(tenant) => json!({
                "interval_seconds": HISTORY_INTERVAL.as_secs(),
                "routes": {},
                "sinks": {},
                "tenants": series(|t| &t.tenants, &|n| n == tenant),
            }),
        }
    }
}
