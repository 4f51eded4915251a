//! CloudEvents SQL (CESQL 1.0) and the Knative trigger filter dialects, evaluated natively
//! in the host before any filter runs: a route's `when` conditions.
//!
//! Written here rather than taken from a crate: no maintained Rust CESQL implementation
//! exists on crates.io, and the evaluator must read weir's own event type without copies.

mod eval;
mod knative;
mod parser;

pub use eval::{evaluate, EvalError};
pub use knative::{Condition, ConditionError, Dialect};
pub use parser::{parse, BinOp, Expr, ParseError};

/// A CESQL value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// String (also URI, URI-reference and Timestamp attributes).
    Str(String),
    /// 32-bit signed integer.
    Int(i32),
    /// Boolean.
    Bool(bool),
}
