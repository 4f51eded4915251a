//! The Knative trigger filter dialects (`exact`, `prefix`, `suffix`, `all`, `any`, `not`,
//! `cesql`), compiled once at configuration load and evaluated per event.

use super::eval::evaluate;
use super::parser::{parse, Expr, ParseError};
use super::Value;
use crate::event::{valid_attribute_name, Event};
use serde::Deserialize;
use std::collections::BTreeMap;

/// One filter dialect, as written in the configuration: a map with exactly one key.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(try_from = "RawDialect")]
pub enum Dialect {
    /// Every listed attribute equals its value.
    Exact(BTreeMap<String, String>),
    /// Every listed attribute starts with its value.
    Prefix(BTreeMap<String, String>),
    /// Every listed attribute ends with its value.
    Suffix(BTreeMap<String, String>),
    /// Every sub-filter passes.
    All(Vec<Dialect>),
    /// At least one sub-filter passes.
    Any(Vec<Dialect>),
    /// The sub-filter fails.
    Not(Box<Dialect>),
    /// A CESQL expression that must evaluate to `TRUE`.
    Cesql(String),
}

/// The configuration form: every dialect optional, exactly one required.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDialect {
    exact: Option<BTreeMap<String, String>>,
    prefix: Option<BTreeMap<String, String>>,
    suffix: Option<BTreeMap<String, String>>,
    all: Option<Vec<Dialect>>,
    any: Option<Vec<Dialect>>,
    not: Option<Box<Dialect>>,
    cesql: Option<String>,
}

impl TryFrom<RawDialect> for Dialect {
    type Error = String;

    fn try_from(raw: RawDialect) -> Result<Self, String> {
        let mut found = Vec::new();
        let mut out = None;
        let mut take = |name: &'static str, d: Option<Dialect>| {
            if let Some(d) = d {
                found.push(name);
                out = Some(d);
            }
        };
        take("exact", raw.exact.map(Dialect::Exact));
        take("prefix", raw.prefix.map(Dialect::Prefix));
        take("suffix", raw.suffix.map(Dialect::Suffix));
        take("all", raw.all.map(Dialect::All));
        take("any", raw.any.map(Dialect::Any));
        take("not", raw.not.map(Dialect::Not));
        take("cesql", raw.cesql.map(Dialect::Cesql));
        match (found.len(), out) {
            (1, Some(d)) => Ok(d),
            (0, _) => Err(
                "a filter needs one dialect: exact, prefix, suffix, all, any, not or cesql".into(),
            ),
            _ => Err(format!(
                "multiple dialects found ({}): use one per filter",
                found.join(", ")
            )),
        }
    }
}

/// Why a condition is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    /// A CESQL expression does not parse.
    #[error("{0}")]
    Cesql(#[from] ParseError),
    /// An attribute map is empty or names an invalid attribute or an empty value.
    #[error("{0}")]
    Attributes(String),
}

#[derive(Debug, Clone)]
enum Compiled {
    Exact(Vec<(String, String)>),
    Prefix(Vec<(String, String)>),
    Suffix(Vec<(String, String)>),
    All(Vec<Compiled>),
    Any(Vec<Compiled>),
    Not(Box<Compiled>),
    Cesql(Expr),
}

/// A route's condition: every dialect must pass (an empty list passes everything).
#[derive(Debug, Clone)]
pub struct Condition {
    filters: Vec<Compiled>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Res {
    Pass,
    Fail,
    NoFilter,
}

fn attrs(
    kind: &str,
    map: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ConditionError> {
    if map.is_empty() {
        return Err(ConditionError::Attributes(format!(
            "`{kind}` needs at least one attribute"
        )));
    }
    for (name, value) in map {
        if !valid_attribute_name(name) {
            return Err(ConditionError::Attributes(format!(
                "`{kind}`: `{name}` is not an attribute name"
            )));
        }
        if value.is_empty() {
            return Err(ConditionError::Attributes(format!(
                "`{kind}`: the value for `{name}` is empty"
            )));
        }
    }
    Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn compile(d: &Dialect) -> Result<Compiled, ConditionError> {
    Ok(match d {
        Dialect::Exact(m) => Compiled::Exact(attrs("exact", m)?),
        Dialect::Prefix(m) => Compiled::Prefix(attrs("prefix", m)?),
        Dialect::Suffix(m) => Compiled::Suffix(attrs("suffix", m)?),
        Dialect::All(v) => Compiled::All(v.iter().map(compile).collect::<Result<_, _>>()?),
        Dialect::Any(v) => Compiled::Any(v.iter().map(compile).collect::<Result<_, _>>()?),
        Dialect::Not(d) => Compiled::Not(Box::new(compile(d)?)),
        Dialect::Cesql(src) => Compiled::Cesql(parse(src)?),
    })
}

fn attribute<'e>(event: &'e Event, name: &str) -> Option<&'e str> {
    Some(match name {
        "specversion" => "1.0",
        "id" => &event.id,
        "source" => &event.source,
        "type" => &event.ty,
        "subject" => event.subject.as_deref()?,
        "time" => event.time.as_deref()?,
        "datacontenttype" => event.datacontenttype.as_deref()?,
        "dataschema" | "schemaurl" => event.dataschema.as_deref()?,
        other => event.extension(other)?,
    })
}

fn each(pairs: &[(String, String)], event: &Event, test: fn(&str, &str) -> bool) -> Res {
    let ok = pairs
        .iter()
        .all(|(name, want)| attribute(event, name).is_some_and(|v| test(v, want)));
    if ok {
        Res::Pass
    } else {
        Res::Fail
    }
}

fn run(c: &Compiled, event: &Event) -> Res {
    match c {
        Compiled::Exact(p) => each(p, event, |v, w| v == w),
        Compiled::Prefix(p) => each(p, event, |v, w| v.starts_with(w)),
        Compiled::Suffix(p) => each(p, event, |v, w| v.ends_with(w)),
        Compiled::All(v) => {
            let mut res = Res::NoFilter;
            for c in v {
                match run(c, event) {
                    Res::Fail => return Res::Fail,
                    Res::Pass => res = Res::Pass,
                    Res::NoFilter => {}
                }
            }
            res
        }
        Compiled::Any(v) => {
            let mut res = Res::NoFilter;
            for c in v {
                match run(c, event) {
                    Res::Pass => return Res::Pass,
                    Res::Fail => res = Res::Fail,
                    Res::NoFilter => {}
                }
            }
            res
        }
        Compiled::Not(c) => match run(c, event) {
            Res::Pass => Res::Fail,
            Res::Fail => Res::Pass,
            Res::NoFilter => Res::NoFilter,
        },
        Compiled::Cesql(expr) => match evaluate(expr, event) {
            Ok(Value::Bool(true)) => Res::Pass,
            _ => Res::Fail,
        },
    }
}

impl Condition {
    /// Compiles a list of dialects (ANDed); errors say which one and where.
    pub fn compile(filters: &[Dialect]) -> Result<Self, (usize, ConditionError)> {
        let filters = filters
            .iter()
            .enumerate()
            .map(|(i, d)| compile(d).map_err(|e| (i, e)))
            .collect::<Result<_, _>>()?;
        Ok(Self { filters })
    }

    /// Whether the event passes.
    pub fn matches(&self, event: &Event) -> bool {
        self.filters.iter().all(|c| run(c, event) != Res::Fail)
    }

    /// Whether the condition passes everything.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(yaml: &str) -> Condition {
        let dialects: Vec<Dialect> = serde_norway::from_str(yaml).expect("yaml");
        Condition::compile(&dialects).expect("valid")
    }

    #[test]
    fn dialects_combine_as_knative_does() {
        let mut e = Event::new("1", "/clusters/acme", "io.k8s.event");
        e.set_extension("severity", "warning");
        assert!(cond("[]").matches(&e));
        assert!(
            cond("[{exact: {type: io.k8s.event}}, {prefix: {source: /clusters/}}]").matches(&e)
        );
        assert!(
            !cond("[{exact: {type: io.k8s.event, subject: x}}]").matches(&e),
            "missing attribute fails"
        );
        assert!(cond("[{suffix: {source: acme}}]").matches(&e));
        assert!(
            cond("[{any: [{exact: {severity: error}}, {exact: {severity: warning}}]}]").matches(&e)
        );
        assert!(
            !cond("[{all: [{exact: {severity: error}}, {exact: {severity: warning}}]}]")
                .matches(&e)
        );
        assert!(cond("[{not: {exact: {severity: info}}}]").matches(&e));
        assert!(cond("[{all: []}]").matches(&e), "empty all is no filter");
        assert!(
            cond("[{not: {all: []}}]").matches(&e),
            "not of no filter is no filter"
        );
        assert!(cond(
            "[{cesql: \"severity IN ('warning', 'error') AND source LIKE '/clusters/%'\"}]"
        )
        .matches(&e));
        assert!(
            !cond("[{cesql: \"missing = 'x'\"}]").matches(&e),
            "errors fail"
        );
    }

    #[test]
    fn invalid_conditions_are_refused_with_where() {
        let bad: Vec<Dialect> =
            serde_norway::from_str("[{exact: {type: x}}, {cesql: \"type LIKE\"}]").expect("yaml");
        let (i, e) = Condition::compile(&bad).expect_err("invalid");
        assert_eq!(i, 1);
        assert!(e.to_string().contains("column 10"), "{e}");
        let bad: Vec<Dialect> = serde_norway::from_str("[{exact: {}}]").expect("yaml");
        assert!(Condition::compile(&bad).is_err());
        assert!(
            serde_norway::from_str::<Vec<Dialect>>("[{exact: {a: b}, prefix: {a: b}}]").is_err(),
            "one dialect per element"
        );
    }
}
