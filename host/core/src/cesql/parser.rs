//! CESQL 1.0 lexer and parser (Pratt), producing an [`Expr`] tree. Errors carry the
//! 1-based column where they were found.

use super::Value;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// An attribute by name.
    Attr(String),
    /// A literal.
    Lit(Value),
    /// `NOT x`.
    Not(Box<Expr>),
    /// `-x`.
    Neg(Box<Expr>),
    /// A binary operator.
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// `x [NOT] LIKE 'pattern'`.
    Like {
        /// The value.
        value: Box<Expr>,
        /// The pattern.
        pattern: String,
        /// `NOT LIKE`.
        negated: bool,
    },
    /// `EXISTS attr`.
    Exists(String),
    /// `x [NOT] IN (a, b, ...)`.
    In {
        /// The value.
        value: Box<Expr>,
        /// The set.
        set: Vec<Expr>,
        /// `NOT IN`.
        negated: bool,
    },
    /// A function call (name upper-case).
    Call(String, Vec<Expr>),
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `AND`
    And,
    /// `OR`
    Or,
    /// `XOR`
    Xor,
    /// `=`
    Eq,
    /// `!=` or `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
}

/// A syntax error and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CESQL syntax error at column {column}: {message}")]
pub struct ParseError {
    /// 1-based column (character).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Func(String),
    Str(String),
    Int(i64),
    Kw(&'static str),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    End,
}

const KEYWORDS: [&str; 9] = [
    "AND", "OR", "XOR", "NOT", "LIKE", "EXISTS", "IN", "TRUE", "FALSE",
];

/// Functions known to the evaluator, with their arity (`None`: variadic, at least 1).
pub const FUNCTIONS: [(&str, Option<&[usize]>); 14] = [
    ("LENGTH", Some(&[1])),
    ("CONCAT", None),
    ("CONCAT_WS", None),
    ("LOWER", Some(&[1])),
    ("UPPER", Some(&[1])),
    ("TRIM", Some(&[1])),
    ("LEFT", Some(&[2])),
    ("RIGHT", Some(&[2])),
    ("SUBSTRING", Some(&[2, 3])),
    ("ABS", Some(&[1])),
    ("INT", Some(&[1])),
    ("BOOL", Some(&[1])),
    ("STRING", Some(&[1])),
    ("IS_INT", Some(&[1])),
];

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, message: String| ParseError {
        column: at + 1,
        message,
    };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let tok = match c {
            '(' => {
                i += 1;
                Tok::LParen
            }
            ')' => {
                i += 1;
                Tok::RParen
            }
            ',' => {
                i += 1;
                Tok::Comma
            }
            '\'' | '"' => {
                let quote = c;
                i += 1;
                let mut s = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err(err(start, "unterminated string".into())),
                        Some('\\') if chars.get(i + 1) == Some(&quote) => {
                            s.push(quote);
                            i += 2;
                        }
                        Some(ch) if *ch == quote => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                Tok::Str(s)
            }
            '0'..='9' => {
                while chars.get(i).is_some_and(char::is_ascii_digit) {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let n: i64 = text
                    .parse()
                    .map_err(|_| err(start, format!("integer `{text}` is too large")))?;
                Tok::Int(n)
            }
            '=' => {
                i += 1;
                Tok::Op("=")
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                i += 2;
                Tok::Op("!=")
            }
            '<' => match chars.get(i + 1) {
                Some('>') => {
                    i += 2;
                    Tok::Op("!=")
                }
                Some('=') => {
                    i += 2;
                    Tok::Op("<=")
                }
                _ => {
                    i += 1;
                    Tok::Op("<")
                }
            },
            '>' => {
                if chars.get(i + 1) == Some(&'=') {
                    i += 2;
                    Tok::Op(">=")
                } else {
                    i += 1;
                    Tok::Op(">")
                }
            }
            '+' | '-' | '*' | '/' | '%' => {
                i += 1;
                Tok::Op(match c {
                    '+' => "+",
                    '-' => "-",
                    '*' => "*",
                    '/' => "/",
                    _ => "%",
                })
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let upper = word.to_ascii_uppercase();
                if let Some(kw) = KEYWORDS.iter().find(|k| **k == upper) {
                    Tok::Kw(kw)
                } else if chars[i..].iter().find(|c| !c.is_whitespace()) == Some(&'(') {
                    if !word
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
                    {
                        return Err(err(
                            start,
                            format!("function names are upper-case: `{word}`"),
                        ));
                    }
                    Tok::Func(word)
                } else if word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                {
                    Tok::Ident(word)
                } else {
                    return Err(err(
                        start,
                        format!(
                            "`{word}` is not an attribute name (lower-case letters and digits)"
                        ),
                    ));
                }
            }
            other => return Err(err(start, format!("unexpected character `{other}`"))),
        };
        out.push((tok, start));
    }
    out.push((Tok::End, chars.len()));
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    /// How deep the parser has recursed (parentheses, prefix operators, arguments).
    depth: usize,
}

/// The most tokens an expression may have. With [`MAX_DEPTH`] it bounds the stack the
/// parser, the evaluator and dropping a tree use: an expression may come from a client
/// (an EventQuery's `filter`), and running out of stack would abort the process.
pub const MAX_TOKENS: usize = 4096;

/// The deepest an expression's tree may be (nesting, and a run of operators such as
/// `a OR b OR ...`, count alike). Deeper is refused with a parse error.
pub const MAX_DEPTH: usize = 256;

/// The depth of a tree, counted without recursion (the tree may be deep).
fn tree_depth(root: &Expr) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(root, 1usize)];
    while let Some((e, d)) = stack.pop() {
        deepest = deepest.max(d);
        match e {
            Expr::Attr(_) | Expr::Lit(_) | Expr::Exists(_) => {}
            Expr::Not(x) | Expr::Neg(x) => stack.push((x, d + 1)),
            Expr::Like { value, .. } => stack.push((value, d + 1)),
            Expr::Bin(_, l, r) => {
                stack.push((l, d + 1));
                stack.push((r, d + 1));
            }
            Expr::In { value, set, .. } => {
                stack.push((value, d + 1));
                stack.extend(set.iter().map(|x| (x, d + 1)));
            }
            Expr::Call(_, args) => stack.extend(args.iter().map(|x| (x, d + 1))),
        }
    }
    deepest
}

/// Binding power of an infix operator (higher binds tighter).
fn infix_bp(tok: &Tok) -> Option<u8> {
    Some(match tok {
        Tok::Kw("AND" | "OR" | "XOR") => 1,
        Tok::Op("=" | "!=" | "<" | "<=" | ">" | ">=") => 2,
        Tok::Op("+" | "-") => 3,
        Tok::Op("*" | "/" | "%") => 4,
        Tok::Kw("IN") => 5,
        Tok::Kw("LIKE") => 7,
        Tok::Kw("NOT") => 5, // NOT IN / NOT LIKE, decided by the next token
        _ => return None,
    })
}

const PREFIX_BP: u8 = 8;

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }

    fn column(&self) -> usize {
        self.toks[self.pos].1 + 1
    }

    fn next(&mut self) -> Tok {
        let t = self.toks[self.pos].0.clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            column: self.column(),
            message: message.into(),
        })
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<(), ParseError> {
        if *self.peek() == tok {
            self.next();
            Ok(())
        } else {
            self.fail(format!("expected {what}"))
        }
    }

    /// An expression of operators binding tighter than `min_bp`, at most [`MAX_DEPTH`]
    /// recursions deep.
    fn expr(&mut self, min_bp: u8) -> Result<Expr, ParseError> {
        if self.depth >= MAX_DEPTH {
            return self.fail(format!("nested more than {MAX_DEPTH} deep"));
        }
        self.depth += 1;
        let parsed = self.expr_at_depth(min_bp);
        self.depth -= 1;
        parsed
    }

    fn expr_at_depth(&mut self, min_bp: u8) -> Result<Expr, ParseError> {
        let mut lhs = self.prefix()?;
        loop {
            let tok = self.peek().clone();
            let Some(bp) = infix_bp(&tok) else { break };
            if bp <= min_bp {
                break;
            }
            self.next();
            lhs = match tok {
                Tok::Kw("NOT") => match self.next() {
                    Tok::Kw("LIKE") => self.like(lhs, true)?,
                    Tok::Kw("IN") => self.in_set(lhs, true)?,
                    _ => return self.fail("expected LIKE or IN after NOT"),
                },
                Tok::Kw("LIKE") => self.like(lhs, false)?,
                Tok::Kw("IN") => self.in_set(lhs, false)?,
                Tok::Kw(kw) => {
                    let op = match kw {
                        "AND" => BinOp::And,
                        "OR" => BinOp::Or,
                        _ => BinOp::Xor,
                    };
                    Expr::Bin(op, Box::new(lhs), Box::new(self.expr(bp)?))
                }
                Tok::Op(op) => {
                    let op = match op {
                        "=" => BinOp::Eq,
                        "!=" => BinOp::Ne,
                        "<" => BinOp::Lt,
                        "<=" => BinOp::Le,
                        ">" => BinOp::Gt,
                        ">=" => BinOp::Ge,
                        "+" => BinOp::Add,
                        "-" => BinOp::Sub,
                        "*" => BinOp::Mul,
                        "/" => BinOp::Div,
                        _ => BinOp::Rem,
                    };
                    Expr::Bin(op, Box::new(lhs), Box::new(self.expr(bp)?))
                }
                _ => return self.fail("unexpected token"),
            };
        }
        Ok(lhs)
    }

    fn like(&mut self, value: Expr, negated: bool) -> Result<Expr, ParseError> {
        let column = self.column();
        match self.next() {
            Tok::Str(pattern) => Ok(Expr::Like {
                value: Box::new(value),
                pattern,
                negated,
            }),
            _ => Err(ParseError {
                column,
                message: "LIKE needs a string literal pattern".into(),
            }),
        }
    }

    fn in_set(&mut self, value: Expr, negated: bool) -> Result<Expr, ParseError> {
        self.expect(Tok::LParen, "`(` after IN")?;
        let mut set = vec![self.expr(0)?];
        while *self.peek() == Tok::Comma {
            self.next();
            set.push(self.expr(0)?);
        }
        self.expect(Tok::RParen, "`)` closing the IN set")?;
        Ok(Expr::In {
            value: Box::new(value),
            set,
            negated,
        })
    }

    fn prefix(&mut self) -> Result<Expr, ParseError> {
        let column = self.column();
        match self.next() {
            Tok::Ident(name) => Ok(Expr::Attr(name)),
            Tok::Str(s) => Ok(Expr::Lit(Value::Str(s))),
            Tok::Int(n) => match i32::try_from(n) {
                Ok(n) => Ok(Expr::Lit(Value::Int(n))),
                Err(_) => Err(ParseError {
                    column,
                    message: format!("integer {n} does not fit 32 bits"),
                }),
            },
            Tok::Kw("TRUE") => Ok(Expr::Lit(Value::Bool(true))),
            Tok::Kw("FALSE") => Ok(Expr::Lit(Value::Bool(false))),
            Tok::Kw("NOT") => Ok(Expr::Not(Box::new(self.expr(PREFIX_BP)?))),
            Tok::Op("-") => {
                // A negative literal keeps its full 32-bit range.
                if let Tok::Int(n) = *self.peek() {
                    self.next();
                    return i32::try_from(-n)
                        .map(|n| Expr::Lit(Value::Int(n)))
                        .map_err(|_| ParseError {
                            column,
                            message: format!("integer -{n} does not fit 32 bits"),
                        });
                }
                Ok(Expr::Neg(Box::new(self.expr(PREFIX_BP)?)))
            }
            Tok::Op("+") => self.expr(PREFIX_BP),
            Tok::Kw("EXISTS") => match self.next() {
                Tok::Ident(name) => Ok(Expr::Exists(name)),
                _ => Err(ParseError {
                    column,
                    message: "EXISTS needs an attribute name".into(),
                }),
            },
            Tok::LParen => {
                let e = self.expr(0)?;
                self.expect(Tok::RParen, "`)`")?;
                Ok(e)
            }
            Tok::Func(name) => {
                let Some((_, arity)) = FUNCTIONS.iter().find(|(f, _)| *f == name) else {
                    return Err(ParseError {
                        column,
                        message: format!("unknown function `{name}`"),
                    });
                };
                self.expect(Tok::LParen, "`(`")?;
                let mut args = Vec::new();
                if *self.peek() != Tok::RParen {
                    args.push(self.expr(0)?);
                    while *self.peek() == Tok::Comma {
                        self.next();
                        args.push(self.expr(0)?);
                    }
                }
                self.expect(Tok::RParen, "`)` closing the arguments")?;
                let ok = match arity {
                    Some(counts) => counts.contains(&args.len()),
                    None => !args.is_empty(),
                };
                if !ok {
                    return Err(ParseError {
                        column,
                        message: format!("{name} does not take {} argument(s)", args.len()),
                    });
                }
                Ok(Expr::Call(name, args))
            }
            Tok::End => Err(ParseError {
                column,
                message: "unexpected end of expression".into(),
            }),
            other => Err(ParseError {
                column,
                message: format!("unexpected {other:?}"),
            }),
        }
    }
}

/// Parses a CESQL expression.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let toks = lex(src)?;
    if toks.len() > MAX_TOKENS {
        return Err(ParseError {
            column: toks[MAX_TOKENS].1 + 1,
            message: format!("longer than {MAX_TOKENS} tokens"),
        });
    }
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.expr(0)?;
    if *p.peek() != Tok::End {
        return p.fail("unexpected text after the expression");
    }
    if tree_depth(&e) > MAX_DEPTH {
        return Err(ParseError {
            column: 1,
            message: format!(
                "more than {MAX_DEPTH} levels of operators (a long run of OR is an IN list)"
            ),
        });
    }
    Ok(e)
}
