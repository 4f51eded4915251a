//! The sink side of the connector contract: what a sink is ([`Sink`]), what it can do
//! ([`Capabilities`], declared by its configuration before anything starts), and how one
//! is built from its configuration ([`BuildSink`] with a narrow [`SinkContext`]).
//!
//! A connector's configuration struct implements [`BuildSink`]; the router's
//! configuration only names it in its sink enum. Validation, capabilities and building
//! all live with the connector.

use crate::breaker::{CircuitBreaker, Resilience};
use crate::dead_letter::DeadLetter;
use crate::event::Event;
use crate::metrics::MetricsRegistry;
pub use crate::problem::ConfigProblem;
use crate::tail::TailHub;
use std::path::Path;
use std::sync::Arc;

/// Why a sink could not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing failed.
    #[error("sink `{sink}`: {source}")]
    Io {
        /// The sink.
        sink: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The sink refused the events, saying why.
    #[error("sink `{sink}`: {reason}")]
    Refused {
        /// The sink.
        sink: String,
        /// Why.
        reason: String,
    },
    /// Some events of the batch were not written (the others were).
    #[error("sink `{sink}`: {} events not written: {reason}", failed.len())]
    Partial {
        /// The sink.
        sink: String,
        /// Indices (in the batch given) of the events not written, ascending.
        failed: Vec<usize>,
        /// Those of `failed` that may be written if tried again (their failure was
        /// transient), ascending.
        retry: Vec<usize>,
        /// Why.
        reason: String,
    },
    /// The peer is unavailable for now (network, timeout, 5xx, 429, an open circuit):
    /// the same write may succeed later.
    #[error("sink `{sink}`: {reason}")]
    Unavailable {
        /// The sink.
        sink: String,
        /// Why.
        reason: String,
    },
    /// The sink could not be set up.
    #[error("sink `{sink}`: {reason}")]
    Setup {
        /// The sink.
        sink: String,
        /// What is wrong.
        reason: String,
        /// The failure behind it, when there is one.
        #[source]
        cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl SinkError {
    /// Sink `sink` could not be set up: `reason`, caused by `cause`.
    pub fn setup(
        sink: &str,
        reason: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        SinkError::Setup {
            sink: sink.to_owned(),
            reason: reason.into(),
            cause: Some(cause.into()),
        }
    }

    /// Sink `sink` could not be set up: `reason` (no underlying error).
    pub fn setup_msg(sink: &str, reason: impl Into<String>) -> Self {
        SinkError::Setup {
            sink: sink.to_owned(),
            reason: reason.into(),
            cause: None,
        }
    }

    /// Whether the same write may succeed if tried again: I/O errors, an unavailable
    /// peer, and a partial write with events worth retrying. A refusal is final.
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::Io { .. } | SinkError::Unavailable { .. } => true,
            SinkError::Partial { retry, .. } => !retry.is_empty(),
            SinkError::Refused { .. } | SinkError::Setup { .. } => false,
        }
    }
}

/// A destination for events.
pub trait Sink: Send + Sync {
    /// Writes a batch of events; returns only when they are written (or failed).
    fn write(&self, events: &[&Event]) -> Result<(), SinkError>;
    /// Writes a batch of one tenant's events (what a route's lane calls). A sink that
    /// keeps tenants apart (the tail) overrides it; others write as [`Sink::write`].
    fn write_tenant(&self, tenant: &str, events: &[&Event]) -> Result<(), SinkError> {
        let _ = tenant;
        self.write(events)
    }
    /// Writes dead letters.
    fn write_dead_letters(&self, letters: &[DeadLetter<'_>]) -> Result<(), SinkError>;
    /// Delivers or persists what the sink still holds; called once after every route
    /// has drained.
    fn close(&self) {}
    /// Figures for `GET /v1/stats`, for sinks that have any.
    fn stats(&self) -> Option<serde_json::Value> {
        None
    }
    /// The sink's circuit breaker, when it has one (the admin API resets it).
    fn circuit(&self) -> Option<&CircuitBreaker> {
        None
    }
}

/// What a sink can do, declared by its configuration so configuration checks refuse what
/// it cannot do before anything starts (instead of the sink refusing at run time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// It can hold dead letters: a route's or a source's `dead_letter` may name it.
    pub dead_letters: bool,
    /// It cannot hold events and dead letters together (a protobuf file: the two message
    /// types carry no tag), so a dead-letter sink of this kind must not also be a route's
    /// destination.
    pub dead_letters_apart: bool,
}

impl Capabilities {
    /// Events only.
    pub const EVENTS: Self = Self {
        dead_letters: false,
        dead_letters_apart: false,
    };
    /// Events and dead letters, in one stream.
    pub const EVENTS_AND_DEAD_LETTERS: Self = Self {
        dead_letters: true,
        dead_letters_apart: false,
    };
}

/// What a sink gets when it is built: its name, the router's data directory, the metrics
/// registry it registers its families in, and the in-process tail stream. Nothing else of
/// the router.
pub struct SinkContext<'a> {
    /// The sink's configured name (its metrics label and error prefix).
    pub name: &'a str,
    /// The router's data directory: relative paths of the sink live inside it.
    pub data_dir: &'a Path,
    /// Where the sink's metric families are registered.
    pub metrics: &'a MetricsRegistry,
    /// The stream behind `GET /v1/tail`.
    pub tail: &'a TailHub,
}

/// A sink's configuration: it checks itself, says what the sink can do, and builds it.
pub trait BuildSink {
    /// What the sink can do.
    fn capabilities(&self) -> Capabilities;
    /// Every problem of the configuration (empty when it is valid).
    fn problems(&self) -> Vec<ConfigProblem> {
        Vec::new()
    }
    /// Retries and a breaker to put in front of the sink ([`crate::resilience::Resilient`]);
    /// none by default. A sink that copes with failures itself (Kafka retries only the
    /// records that failed and probes on a fresh client) answers none and carries its
    /// own.
    fn resilience(&self) -> Resilience {
        Resilience::NONE
    }
    /// Opens the sink (sinks with background tasks need a tokio runtime).
    fn build(&self, cx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError>;
}
