//! CESQL evaluation over an [`Event`], with the specification's casting rules. Any error
//! (missing attribute, failed cast, division by zero) makes a filter fail, so evaluation
//! stops at the first one; `AND` and `OR` short-circuit.

use super::parser::{BinOp, Expr};
use super::Value;
use crate::event::{Event, ExtKind};

/// Why an expression could not be evaluated for an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The event lacks an attribute the expression reads.
    #[error("missing attribute `{0}`")]
    Missing(String),
    /// A value could not be cast.
    #[error("cannot cast {0:?} to {1}")]
    Cast(Value, &'static str),
    /// Division by zero or overflow.
    #[error("math error: {0}")]
    Math(&'static str),
}

fn attribute(event: &Event, name: &str) -> Option<Value> {
    let s = |v: &str| Some(Value::Str(v.to_owned()));
    match name {
        "specversion" => s("1.0"),
        "id" => s(&event.id),
        "source" => s(&event.source),
        "type" => s(&event.ty),
        "subject" => event.subject.as_deref().and_then(s),
        "time" => event.time.as_deref().and_then(s),
        "datacontenttype" => event.datacontenttype.as_deref().and_then(s),
        "dataschema" => event.dataschema.as_deref().and_then(s),
        _ => event
            .extensions
            .iter()
            .find(|e| e.name == name)
            .map(|e| match e.kind {
                ExtKind::Integer => e
                    .value
                    .parse()
                    .map(Value::Int)
                    .unwrap_or(Value::Str(e.value.clone())),
                ExtKind::Bool => Value::Bool(e.value == "true"),
                ExtKind::String => Value::Str(e.value.clone()),
            }),
    }
}

fn to_int(v: Value) -> Result<i32, EvalError> {
    match v {
        Value::Int(i) => Ok(i),
        Value::Bool(b) => Ok(i32::from(b)),
        Value::Str(ref s) => s.trim().parse().map_err(|_| EvalError::Cast(v, "Integer")),
    }
}

fn to_bool(v: Value) -> Result<bool, EvalError> {
    match v {
        Value::Bool(b) => Ok(b),
        Value::Int(i) => Ok(i != 0),
        Value::Str(ref s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::Str(ref s) if s.eq_ignore_ascii_case("false") => Ok(false),
        Value::Str(_) => Err(EvalError::Cast(v, "Boolean")),
    }
}

fn to_str(v: Value) -> String {
    match v {
        Value::Str(s) => s,
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
    }
}

/// Casts `v` to the type of `like`.
fn cast_as(v: Value, like: &Value) -> Result<Value, EvalError> {
    Ok(match like {
        Value::Str(_) => Value::Str(to_str(v)),
        Value::Int(_) => Value::Int(to_int(v)?),
        Value::Bool(_) => Value::Bool(to_bool(v)?),
    })
}

/// One element of a LIKE pattern.
#[derive(Clone, Copy, PartialEq)]
enum Wild {
    /// `%`: any run of characters.
    Any,
    /// `_`: one character.
    One,
    /// A character (escaped with `\\` or plain).
    Lit(char),
}

/// `%` any run, `_` one character, `\` escapes; case-sensitive. Matched without
/// recursion, backtracking only to the last `%`: time is at most text × pattern, so a
/// client's pattern of many `%` cannot hang the caller (the `cesql` fuzz target found the
/// recursive matcher taking exponential time and a stack frame per character).
fn like(text: &[char], pattern: &[char]) -> bool {
    let mut wild = Vec::with_capacity(pattern.len());
    let mut chars = pattern.iter().copied().peekable();
    while let Some(c) = chars.next() {
        wild.push(match c {
            '%' => Wild::Any,
            '_' => Wild::One,
            '\\' => Wild::Lit(chars.next().unwrap_or('\\')),
            c => Wild::Lit(c),
        });
    }
    let (mut t, mut p) = (0, 0);
    // After the last `%`: where the pattern goes on, and where its run ends in the text.
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        match wild.get(p) {
            Some(Wild::Any) => {
                p += 1;
                resume = Some((p, t));
            }
            Some(Wild::One) => {
                t += 1;
                p += 1;
            }
            Some(Wild::Lit(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            _ => match resume {
                // The last `%` takes one more character; try the rest again from there.
                Some((after, run_end)) => {
                    p = after;
                    t = run_end + 1;
                    resume = Some((after, run_end + 1));
                }
                None => return false,
            },
        }
    }
    wild[p..].iter().all(|w| *w == Wild::Any)
}

/// Evaluates an expression for an event.
pub fn evaluate(expr: &Expr, event: &Event) -> Result<Value, EvalError> {
    Ok(match expr {
        Expr::Attr(name) => {
            attribute(event, name).ok_or_else(|| EvalError::Missing(name.clone()))?
        }
        Expr::Lit(v) => v.clone(),
        Expr::Not(e) => Value::Bool(!to_bool(evaluate(e, event)?)?),
        Expr::Neg(e) => Value::Int(
            to_int(evaluate(e, event)?)?
                .checked_neg()
                .ok_or(EvalError::Math("overflow"))?,
        ),
        Expr::Exists(name) => Value::Bool(attribute(event, name).is_some()),
        Expr::Like {
            value,
            pattern,
            negated,
        } => {
            let text: Vec<char> = to_str(evaluate(value, event)?).chars().collect();
            let pattern: Vec<char> = pattern.chars().collect();
            Value::Bool(like(&text, &pattern) != *negated)
        }
        Expr::In {
            value,
            set,
            negated,
        } => {
            let v = evaluate(value, event)?;
            let mut found = false;
            for item in set {
                if cast_as(evaluate(item, event)?, &v)? == v {
                    found = true;
                    break;
                }
            }
            Value::Bool(found != *negated)
        }
        Expr::Bin(op, l, r) => binary(*op, l, r, event)?,
        Expr::Call(name, args) => call(name, args, event)?,
    })
}

fn binary(op: BinOp, l: &Expr, r: &Expr, event: &Event) -> Result<Value, EvalError> {
    match op {
        BinOp::And => {
            if !to_bool(evaluate(l, event)?)? {
                return Ok(Value::Bool(false));
            }
            return Ok(Value::Bool(to_bool(evaluate(r, event)?)?));
        }
        BinOp::Or => {
            if to_bool(evaluate(l, event)?)? {
                return Ok(Value::Bool(true));
            }
            return Ok(Value::Bool(to_bool(evaluate(r, event)?)?));
        }
        _ => {}
    }
    let (a, b) = (evaluate(l, event)?, evaluate(r, event)?);
    Ok(match op {
        BinOp::Xor => Value::Bool(to_bool(a)? != to_bool(b)?),
        // Overloaded by the right operand's type; the left is cast to it.
        BinOp::Eq => Value::Bool(cast_as(a, &b)? == b),
        BinOp::Ne => Value::Bool(cast_as(a, &b)? != b),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let ord = match (&a, &b) {
                (Value::Str(x), Value::Str(y)) => x.cmp(y),
                _ => to_int(a)?.cmp(&to_int(b)?),
            };
            Value::Bool(match op {
                BinOp::Lt => ord.is_lt(),
                BinOp::Le => ord.is_le(),
                BinOp::Gt => ord.is_gt(),
                _ => ord.is_ge(),
            })
        }
        _ => {
            let (x, y) = (to_int(a)?, to_int(b)?);
            let r = match op {
                BinOp::Add => x.checked_add(y),
                BinOp::Sub => x.checked_sub(y),
                BinOp::Mul => x.checked_mul(y),
                BinOp::Div if y == 0 => return Err(EvalError::Math("division by zero")),
                BinOp::Div => x.checked_div(y),
                BinOp::Rem if y == 0 => return Err(EvalError::Math("modulo by zero")),
                _ => x.checked_rem(y),
            };
            Value::Int(r.ok_or(EvalError::Math("overflow"))?)
        }
    })
}

fn call(name: &str, args: &[Expr], event: &Event) -> Result<Value, EvalError> {
    let mut vals = Vec::with_capacity(args.len());
    for a in args {
        vals.push(evaluate(a, event)?);
    }
    let mut it = vals.into_iter();
    let mut next = || it.next().unwrap_or(Value::Str(String::new()));
    Ok(match name {
        "LENGTH" => Value::Int(i32::try_from(to_str(next()).chars().count()).unwrap_or(i32::MAX)),
        "CONCAT" => Value::Str(args.iter().map(|_| to_str(next())).collect()),
        "CONCAT_WS" => {
            let sep = to_str(next());
            let parts: Vec<String> = args[1..].iter().map(|_| to_str(next())).collect();
            Value::Str(parts.join(&sep))
        }
        "LOWER" => Value::Str(to_str(next()).to_lowercase()),
        "UPPER" => Value::Str(to_str(next()).to_uppercase()),
        "TRIM" => Value::Str(to_str(next()).trim().to_owned()),
        "LEFT" | "RIGHT" => {
            let s: Vec<char> = to_str(next()).chars().collect();
            let n =
                usize::try_from(to_int(next())?).map_err(|_| EvalError::Math("negative length"))?;
            let n = n.min(s.len());
            Value::Str(if name == "LEFT" {
                s[..n].iter().collect()
            } else {
                s[s.len() - n..].iter().collect()
            })
        }
        "SUBSTRING" => {
            let s: Vec<char> = to_str(next()).chars().collect();
            let pos = to_int(next())?;
            let len = if args.len() == 3 {
                Some(to_int(next())?)
            } else {
                None
            };
            let start = match pos {
                0 => return Ok(Value::Str(String::new())),
                p if p > 0 => (p - 1) as usize,
                p => s.len().saturating_sub(p.unsigned_abs() as usize),
            };
            if start > s.len() {
                return Err(EvalError::Math("SUBSTRING position out of range"));
            }
            let end = match len {
                Some(l) if l < 0 => return Err(EvalError::Math("negative length")),
                Some(l) => (start + l as usize).min(s.len()),
                None => s.len(),
            };
            Value::Str(s[start..end].iter().collect())
        }
        "ABS" => Value::Int(
            to_int(next())?
                .checked_abs()
                .ok_or(EvalError::Math("overflow"))?,
        ),
        "INT" => Value::Int(to_int(next())?),
        "BOOL" => Value::Bool(to_bool(next())?),
        "STRING" => Value::Str(to_str(next())),
        "IS_INT" => Value::Bool(to_int(next()).is_ok()),
        _ => return Err(EvalError::Missing(format!("function {name}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    fn ev() -> Event {
        let mut e = Event::new("1", "/clusters/acme/ns", "io.k8s.event.warning");
        e.subject = Some("pods/web-1".into());
        e.set_extension("severity", "warning");
        e.extensions.push(crate::event::Extension {
            name: "count".into(),
            value: "7".into(),
            kind: ExtKind::Integer,
        });
        e
    }

    fn eval(src: &str) -> Result<Value, EvalError> {
        evaluate(&parse(src).unwrap_or_else(|e| panic!("{src}: {e}")), &ev())
    }

    /// Found by the `cesql` fuzz target: a deeply nested expression (an EventQuery's
    /// `filter` is a client's) overflowed the stack and aborted the process. On a thread
    /// with a tokio worker's 2 MiB stack, deep input is refused and the deepest accepted
    /// one parses, evaluates and drops.
    #[test]
    fn deep_expressions_are_refused_not_a_stack_overflow() {
        let worker = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let nested = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
                let e = parse(&nested).expect_err("too deep");
                assert!(e.message.contains("tokens"), "{e}");
                let nested = format!("{}TRUE{}", "(".repeat(300), ")".repeat(300));
                let e = parse(&nested).expect_err("too deep");
                assert!(e.message.contains("nested more than 256"), "{e}");
                let nots = format!("{}TRUE", "NOT ".repeat(1000));
                assert!(parse(&nots).is_err());
                let ors = vec!["severity = 'x'"; 1000].join(" OR ");
                let e = parse(&ors).expect_err("a run too long");
                assert!(e.message.contains("IN list"), "{e}");
                let sums = format!("count{}", " + 1".repeat(2000));
                assert!(parse(&sums).is_err());
                // The deepest accepted: 250 alternatives, and 250 levels of parentheses.
                let ors = format!(
                    "{} OR severity = 'warning'",
                    vec!["severity = 'x'"; 249].join(" OR ")
                );
                assert_eq!(
                    evaluate(&parse(&ors).expect("accepted"), &ev()),
                    Ok(Value::Bool(true))
                );
                let nested = format!("{}count = 7{}", "(".repeat(250), ")".repeat(250));
                assert_eq!(
                    evaluate(&parse(&nested).expect("accepted"), &ev()),
                    Ok(Value::Bool(true))
                );
            })
            .expect("thread");
        worker.join().expect("no stack overflow");
    }

    #[test]
    fn like_takes_time_proportional_to_text_and_pattern() {
        // The fuzz target's input: many `%` took exponential time before.
        let pattern: Vec<char> = format!("'%{}_%%_I'", "%".repeat(90)).chars().collect();
        let text: Vec<char> = "&\\I'LIKE '".repeat(10).chars().collect();
        let started = std::time::Instant::now();
        assert!(!like(&text, &pattern));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // A long text takes no stack frame per character.
        let long: Vec<char> = "ab".repeat(500_000).chars().collect();
        let p = |s: &str| s.chars().collect::<Vec<_>>();
        assert!(like(&long, &p("%ab")));
        assert!(like(&long, &p("a%b%a%b")));
        assert!(!like(&long, &p("%ba")));
        // The semantics, as before.
        for (text, pattern, expected) in [
            ("abc", "abc", true),
            ("abc", "a_c", true),
            ("abc", "a%", true),
            ("abc", "%c", true),
            ("abc", "%b%", true),
            ("abc", "%d%", false),
            ("", "%", true),
            ("", "_", false),
            ("a%c", "a\\%c", true),
            ("abc", "a\\%c", false),
            ("a_c", "a\\_c", true),
            ("back\\", "back\\", true),
            ("aaa", "a%a%a", true),
            ("aa", "a%a%a", false),
            ("mississippi", "m%iss%ppi", true),
            ("mississippi", "m%is_ip%", true),
        ] {
            assert_eq!(
                like(&p(text), &p(pattern)),
                expected,
                "{text} LIKE {pattern}"
            );
        }
    }

    #[test]
    fn evaluates_the_spec_operators() {
        let truthy = [
            "type LIKE 'io.k8s.%'",
            "type NOT LIKE '%.normal'",
            "source LIKE '/clusters/_cme/%'",
            "severity = 'warning' AND EXISTS subject",
            "NOT EXISTS dataschema",
            "severity IN ('error', 'warning')",
            "count > 5 AND count * 2 = 14",
            "count = '7'",
            "'7' = count",
            "count % 4 = 3 AND -count = -7",
            "LENGTH(subject) = 10",
            "UPPER(severity) = 'WARNING' AND LOWER('A') = 'a'",
            "CONCAT_WS('/', 'a', 'b') = 'a/b' AND CONCAT('a', 1) = 'a1'",
            "SUBSTRING(subject, 1, 4) = 'pods' AND SUBSTRING(subject, -5) = 'web-1'",
            "LEFT(subject, 4) = 'pods' AND RIGHT(subject, 1) = '1'",
            "TRUE XOR FALSE",
            "FALSE OR TRUE",
            "NOT (FALSE AND missing = 1)",
            "TRUE = 'true' OR 1 = 1",
            "ABS(-3) = 3 AND INT('12') = 12 AND BOOL('TRUE')",
        ];
        for src in truthy {
            assert_eq!(eval(src), Ok(Value::Bool(true)), "{src}");
        }
        assert_eq!(eval("severity = 'error'"), Ok(Value::Bool(false)));
        assert_eq!(
            eval("missing = 'x'"),
            Err(EvalError::Missing("missing".into()))
        );
        assert!(matches!(eval("count / 0"), Err(EvalError::Math(_))));
        assert!(matches!(eval("INT('x')"), Err(EvalError::Cast(..))));
    }

    #[test]
    fn syntax_errors_say_where() {
        for (src, column) in [
            ("type = ", 8),
            ("type LIKE severity", 11),
            ("NOPE(type)", 1),
            ("type = 'x", 8),
            ("type IN ()", 10),
            ("Type = 'x'", 1),
            ("type = 'a' 'b'", 12),
            ("count = 99999999999", 9),
        ] {
            let e = parse(src).expect_err(src);
            assert_eq!(e.column, column, "{src}: {e}");
        }
    }
}
