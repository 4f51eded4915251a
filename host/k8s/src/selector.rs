//! Kubernetes field selectors (`a=b,c!=d`, backslash escapes) and label selectors (the full
//! syntax: `=`, `==`, `!=`, `in`, `notin`, `key`, `!key`), parsed once per request and
//! matched against stored events.

/// Why a selector was refused (a 400 `BadRequest` for the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// One field requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field label, in core/v1 terms (`involvedObject.name`, `reason`, ...).
    pub field: String,
    /// The value compared with.
    pub value: String,
    /// `!=` rather than `=`/`==`.
    pub negated: bool,
}

/// A parsed field selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

/// Field labels core/v1 Events support.
pub const CORE_FIELDS: [&str; 11] = [
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// The core/v1 label an events.k8s.io/v1 field label stands for.
fn core_label(field: &str, events_api: bool) -> Option<String> {
    if field == "metadata.name" || field == "metadata.namespace" {
        return Some(field.to_owned());
    }
    if events_api {
        if let Some(rest) = field.strip_prefix("regarding.") {
            let core = format!("involvedObject.{rest}");
            return CORE_FIELDS.contains(&core.as_str()).then_some(core);
        }
        return match field {
            "reportingController" => Some("reportingComponent".into()),
            "reason" | "source" | "type" => Some(field.to_owned()),
            _ => None,
        };
    }
    CORE_FIELDS.contains(&field).then(|| field.to_owned())
}

/// Splits on unescaped `sep`, keeping escapes for the next stage.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(last) = parts.last_mut() {
                last.push(c);
                if let Some(n) = chars.next() {
                    last.push(n);
                }
            }
        } else if c == sep {
            parts.push(String::new());
        } else if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

fn unescape(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ ('\\' | ',' | '=')) => out.push(n),
                Some(n) => {
                    return Err(SelectorError(format!(
                        "invalid escape sequence `\\{n}` in field selector"
                    )))
                }
                None => return Err(SelectorError("field selector ends in a backslash".into())),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses a field selector; `events_api` accepts the events.k8s.io/v1 labels.
    pub fn parse(text: &str, events_api: bool) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        if text.trim().is_empty() {
            return Ok(Self(reqs));
        }
        for term in split_unescaped(text, ',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            // The operator is the first unescaped `!=`, `==` or `=`.
            let bytes = term.as_bytes();
            let mut at = None;
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' => i += 1,
                    b'!' if bytes.get(i + 1) == Some(&b'=') => {
                        at = Some((i, 2, true));
                        break;
                    }
                    b'=' => {
                        let len = if bytes.get(i + 1) == Some(&b'=') {
                            2
                        } else {
                            1
                        };
                        at = Some((i, len, false));
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
            let Some((i, len, negated)) = at else {
                return Err(SelectorError(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                )));
            };
            let field = term[..i].trim();
            let value = unescape(&term[i + len..])?;
            let Some(field) = core_label(field, events_api) else {
                return Err(SelectorError(format!("field label not supported: {field}")));
            };
            reqs.push(FieldRequirement {
                field,
                value,
                negated,
            });
        }
        Ok(Self(reqs))
    }

    /// Whether an event's fields satisfy every requirement.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> &'a str) -> bool {
        self.0
            .iter()
            .all(|r| (get(&r.field) == r.value) != r.negated)
    }
}

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequirement {
    /// `key=value`, `key==value`, `key in (a,b)`.
    In(String, Vec<String>),
    /// `key!=value`, `key notin (a,b)` (also true when the key is absent).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    NotExists(String),
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelRequirement>);

fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
    });
    name_ok && prefix_ok
}

fn valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

impl LabelSelector {
    /// Parses a label selector.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let err = |what: &str| SelectorError(format!("unable to parse requirement: {what}"));
        let mut reqs = Vec::new();
        // Split on commas outside parentheses.
        let mut terms = Vec::new();
        let (mut depth, mut start) = (0i32, 0);
        for (i, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    terms.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        terms.push(&text[start..]);
        for term in terms {
            let t = term.trim();
            if t.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(err("empty requirement"));
            }
            let check_key = |k: &str| {
                if valid_label_key(k) {
                    Ok(k.to_owned())
                } else {
                    Err(SelectorError(format!("invalid label key \"{k}\"")))
                }
            };
            let check_value = |v: &str| {
                let v = v.trim();
                if valid_label_value(v) {
                    Ok(v.to_owned())
                } else {
                    Err(SelectorError(format!("invalid label value: \"{v}\"")))
                }
            };
            if let Some(key) = t.strip_prefix('!') {
                reqs.push(LabelRequirement::NotExists(check_key(key.trim())?));
            } else if let Some((k, v)) = t.split_once("!=") {
                reqs.push(LabelRequirement::NotIn(
                    check_key(k.trim())?,
                    vec![check_value(v)?],
                ));
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                reqs.push(LabelRequirement::In(
                    check_key(k.trim())?,
                    vec![check_value(v)?],
                ));
            } else if let Some(open) = t.find('(') {
                let head: Vec<&str> = t[..open].split_whitespace().collect();
                let close = t
                    .rfind(')')
                    .filter(|c| *c > open && t[c + 1..].trim().is_empty())
                    .ok_or_else(|| err(t))?;
                let values = t[open + 1..close]
                    .split(',')
                    .map(check_value)
                    .collect::<Result<Vec<_>, _>>()?;
                match head.as_slice() {
                    [k, "in"] => reqs.push(LabelRequirement::In(check_key(k)?, values)),
                    [k, "notin"] => reqs.push(LabelRequirement::NotIn(check_key(k)?, values)),
                    _ => return Err(err(t)),
                }
            } else if t.split_whitespace().count() == 1 {
                reqs.push(LabelRequirement::Exists(check_key(t)?));
            } else {
                return Err(err(t));
            }
        }
        Ok(Self(reqs))
    }

    /// Whether the labels that `get` looks up satisfy every requirement.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        let has = |vs: &[String], v: &str| vs.iter().any(|x| x == v);
        self.0.iter().all(|r| match r {
            LabelRequirement::In(k, vs) => get(k).is_some_and(|v| has(vs, v)),
            LabelRequirement::NotIn(k, vs) => get(k).is_none_or(|v| !has(vs, v)),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::NotExists(k) => get(k).is_none(),
        })
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn field_selectors_parse_operators_escapes_and_api_labels() {
        let s = FieldSelector::parse(
            "involvedObject.kind=Pod,reason!=Pulled,type==Warning,metadata.name=a\\,b",
            false,
        )
        .expect("valid");
        assert_eq!(s.0.len(), 4);
        assert_eq!(s.0[3].value, "a,b");
        assert!(s.0[1].negated);
        let e = FieldSelector::parse("regarding.name=x,reportingController=k", true).expect("ok");
        assert_eq!(e.0[0].field, "involvedObject.name");
        assert_eq!(e.0[1].field, "reportingComponent");
        assert_eq!(
            FieldSelector::parse("spec.foo=1", false)
                .expect_err("unknown")
                .0,
            "field label not supported: spec.foo"
        );
        assert!(FieldSelector::parse("reason", false).is_err());
        let fields = |f: &str| match f {
            "reason" => "Started",
            _ => "",
        };
        assert!(FieldSelector::parse("reason=Started", false)
            .expect("ok")
            .matches(fields));
        assert!(!FieldSelector::parse("reason!=Started", false)
            .expect("ok")
            .matches(fields));
    }

    #[test]
    fn label_selectors_cover_the_whole_syntax() {
        let labels: BTreeMap<String, String> = [("app", "web"), ("tier", "front")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        let yes = [
            "app=web",
            "app==web",
            "app!=db",
            "app in (web, api)",
            "tier notin (back)",
            "app",
            "!missing",
            "app=web,tier=front",
            "",
        ];
        for s in yes {
            let get = |k: &str| labels.get(k).map(String::as_str);
            assert!(LabelSelector::parse(s).expect(s).matches(get), "{s}");
        }
        let no = [
            "app=db",
            "app notin (web)",
            "missing",
            "!app",
            "env in (prod)",
        ];
        for s in no {
            let get = |k: &str| labels.get(k).map(String::as_str);
            assert!(!LabelSelector::parse(s).expect(s).matches(get), "{s}");
        }
        for bad in ["app in web", "a b c", "app=we b", "-x=1", "app in (a"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }
}
