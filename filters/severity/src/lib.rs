//! `severity`: drops events below a configured minimum severity.
//!
//! The severity of an event is read, in order, from the CloudEvents `severity` extension
//! (`trace`, `debug`, `info`, `notice`, `warning`/`warn`, `error`, `critical`/`fatal`,
//! `essential`, any case), the Rodent/Toggle `level` extension (`TRACE`, `DEBUG`, `INFO`,
//! `WARN`, `ERROR`, `CRITICAL`, `ESSENTIAL`), the Kubernetes
//! `k8stype` extension or, for JSON data, the Kubernetes Event's own `type` field
//! (`Normal` counts as info, `Warning` as warning). Events whose severity cannot be told
//! are kept unless `unknown: drop` is configured.
//!
//! Config: `{"min": "warning", "unknown": "keep"}`.

use serde::Deserialize;
use weir_guest::{Context, Event, Filter, Verdict};

/// Severities in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Finest detail (Rodent `TRACE`).
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation (Kubernetes `Normal`).
    Info,
    /// Normal but significant.
    Notice,
    /// Something may be wrong (Kubernetes `Warning`).
    #[serde(alias = "warn")]
    Warning,
    /// Something failed.
    Error,
    /// Something failed badly.
    #[serde(alias = "fatal")]
    Critical,
    /// Must always be delivered (Rodent `ESSENTIAL`: registrations, audit trails): ranks
    /// above every other severity, so every minimum keeps it.
    Essential,
}

impl Severity {
    /// Parses a severity name from any of the vocabularies the filter understands.
    pub fn parse(s: &str) -> Option<Self> {
        const NAMES: [(&str, Severity); 13] = [
            ("trace", Severity::Trace),
            ("debug", Severity::Debug),
            ("info", Severity::Info),
            ("normal", Severity::Info),
            ("notice", Severity::Notice),
            ("warning", Severity::Warning),
            ("warn", Severity::Warning),
            ("error", Severity::Error),
            ("err", Severity::Error),
            ("critical", Severity::Critical),
            ("crit", Severity::Critical),
            ("fatal", Severity::Critical),
            ("essential", Severity::Essential),
        ];
        NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(_, sev)| *sev)
    }
}

/// What to do with events whose severity is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unknown {
    /// Keep them (default).
    #[default]
    Keep,
    /// Drop them.
    Drop,
}

/// The filter's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The lowest severity kept (default `warning`).
    #[serde(default = "default_min")]
    pub min: Severity,
    /// What to do with events of unknown severity.
    #[serde(default)]
    pub unknown: Unknown,
}

fn default_min() -> Severity {
    Severity::Warning
}

/// Drops events below `min`.
pub struct SeverityFilter {
    config: Config,
}

#[derive(Deserialize)]
struct KubeType<'a> {
    #[serde(rename = "type", borrow)]
    ty: Option<&'a str>,
}

/// The severity of an event, if it can be told.
pub fn severity_of(event: &Event<'_>) -> Option<Severity> {
    severity_from(|name| event.extension(name), event.is_json(), event.data())
}

/// The rule itself, over any event representation: `extension` looks up an extension
/// attribute, `data` is the payload when it is JSON. (The router's benchmark runs exactly
/// this function natively as the baseline for the component.)
pub fn severity_from<'a>(
    extension: impl Fn(&str) -> Option<&'a str>,
    is_json: bool,
    data: Option<&'a [u8]>,
) -> Option<Severity> {
    for name in ["severity", "level", "k8stype"] {
        if let Some(value) = extension(name) {
            return Severity::parse(value);
        }
    }
    match (is_json, data) {
        (true, Some(data)) => match serde_json::from_slice::<KubeType<'_>>(data) {
            Ok(KubeType { ty: Some(ty) }) => Severity::parse(ty),
            _ => None,
        },
        _ => None,
    }
}

impl SeverityFilter {
    /// Whether an event of this severity is kept.
    pub fn keeps(&self, severity: Option<Severity>) -> Result<(), &'static str> {
        match severity {
            Some(sev) if sev >= self.config.min => Ok(()),
            Some(_) => Err("below the minimum severity"),
            None if self.config.unknown == Unknown::Drop => Err("unknown severity"),
            None => Ok(()),
        }
    }
}

impl Filter for SeverityFilter {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Self { config })
    }

    fn process(&mut self, _ctx: &Context, event: &Event<'_>) -> Verdict {
        match self.keeps(severity_of(event)) {
            Ok(()) => Verdict::Keep,
            Err(reason) => Verdict::drop(reason),
        }
    }
}

weir_guest::export_filter!(SeverityFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use weir_guest::testing::Harness;
    use weir_guest::OwnedEvent;

    fn ev(ext: &str, value: &str) -> OwnedEvent {
        OwnedEvent::new("1", "/test", "t").with(ext, value)
    }

    #[test]
    fn drops_below_minimum_across_vocabularies() {
        let mut h = Harness::<SeverityFilter>::new(r#"{"min":"warning"}"#).expect("config");
        let kube_normal = OwnedEvent::new("k", "/k8s", "k8s.event")
            .with_json(&json!({"type": "Normal", "reason": "Pulled"}));
        let kube_warning = OwnedEvent::new("k", "/k8s", "k8s.event")
            .with_json(&json!({"type": "Warning", "reason": "BackOff"}));
        let out = h.run(&[
            ev("severity", "info"),
            ev("severity", "ERROR"),
            ev("level", "INFO"),
            ev("level", "CRITICAL"),
            ev("level", "WARN"),
            ev("k8stype", "Normal"),
            ev("k8stype", "Warning"),
            kube_normal,
            kube_warning,
            OwnedEvent::new("x", "/x", "no.severity"),
        ]);
        let kept: Vec<bool> = out.iter().map(|o| o.kept().is_some()).collect();
        assert_eq!(
            kept,
            [false, true, false, true, true, false, true, false, true, true]
        );
    }

    #[test]
    fn rodent_levels_trace_and_essential() {
        let mut h = Harness::<SeverityFilter>::new(r#"{"min":"critical"}"#).expect("config");
        let out = h.run(&[
            ev("level", "TRACE"),
            ev("level", "ESSENTIAL"),
            ev("severity", "essential"),
            ev("level", "CRITICAL"),
        ]);
        let kept: Vec<bool> = out.iter().map(|o| o.kept().is_some()).collect();
        assert_eq!(
            kept,
            [false, true, true, true],
            "essential passes every minimum"
        );
        let mut all = Harness::<SeverityFilter>::new(r#"{"min":"trace"}"#).expect("config");
        assert!(all.run(&[ev("level", "TRACE")])[0].kept().is_some());
        let mut debug = Harness::<SeverityFilter>::new(r#"{"min":"debug"}"#).expect("config");
        assert!(debug.run(&[ev("level", "TRACE")])[0].is_drop());
    }

    #[test]
    fn unknown_can_be_dropped_and_typos_are_rejected() {
        let mut h =
            Harness::<SeverityFilter>::new(r#"{"min":"error","unknown":"drop"}"#).expect("config");
        let out = h.run(&[OwnedEvent::new("x", "/x", "t"), ev("severity", "fatal")]);
        assert!(out[0].is_drop());
        assert!(out[1].kept().is_some());
        let err = Harness::<SeverityFilter>::new(r#"{"minimum":"error"}"#).err();
        assert!(err.is_some_and(|e| e.contains("unknown field")));
        assert!(Harness::<SeverityFilter>::new(r#"{"min":"loud"}"#).is_err());
    }
}
