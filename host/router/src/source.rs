//! The source side of the connector contract: what a source gets when it starts
//! ([`SourceContext`]) and what it hands back ([`RunningSource`]). A source never sees the
//! HTTP server's state: it submits batches to the [`Router`] and learns their outcome,
//! stops reading when the shutdown signal turns, registers its metrics in the registry,
//! and keeps its files in its data directory.

use crate::router::Router;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_core::metrics::MetricsRegistry;
use weir_core::sink::Sink;

/// What a source gets when it starts.
#[derive(Clone)]
pub struct SourceContext {
    /// Where batches go: [`Router::submit_to`] answers with their outcome once every route
    /// has written them (or dead-lettered them).
    pub router: Arc<Router>,
    /// Turns `true` when the router shuts down: stop reading, finish what is in flight.
    pub shutdown: watch::Receiver<bool>,
    /// Where the source registers its metric families.
    pub metrics: Arc<MetricsRegistry>,
    /// The router's data directory; a source keeps its files in a folder of its own
    /// inside it.
    pub data_dir: PathBuf,
    /// The largest event the router accepts, bytes.
    pub max_event_bytes: usize,
    /// The largest request (or message) the router accepts, bytes.
    pub max_request_bytes: usize,
    /// The sinks that can hold dead letters, by name (for a source's own `dead_letter`).
    pub dead_letter_sinks: BTreeMap<String, Arc<dyn Sink>>,
    /// Where the source registers its health checks (`/readyz?verbose`).
    pub health: weir_core::health::HealthChecks,
    /// The bounds of a listening source's connections.
    pub connections: weir_core::listener::ConnectionLimits,
}

impl SourceContext {
    /// A future that completes when the router shuts down.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

/// A started source: its tasks (awaited at shutdown, after they saw the signal) and the
/// address it listens on, if it listens.
#[derive(Default)]
pub struct RunningSource {
    /// Tasks that end after the shutdown signal, once what they hold is delivered.
    pub tasks: Vec<JoinHandle<()>>,
    /// The listener's address, for sources that accept connections.
    pub addr: Option<SocketAddr>,
}

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
#[error("source `{source_name}`: {reason}")]
pub struct SourceError {
    /// The source.
    pub source_name: String,
    /// What is wrong.
    pub reason: String,
    /// The underlying failure, when there is one.
    #[source]
    pub cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SourceError {
    /// A failure of `source_name` caused by `cause`.
    pub fn new(
        source_name: &str,
        reason: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            source_name: source_name.to_owned(),
            reason: reason.into(),
            cause: Some(cause.into()),
        }
    }

    /// A failure of `source_name` with no underlying error.
    pub fn msg(source_name: &str, reason: impl Into<String>) -> Self {
        Self {
            source_name: source_name.to_owned(),
            reason: reason.into(),
            cause: None,
        }
    }
}

/// A source's configuration: it starts the source.
pub trait StartSource {
    /// Starts reading; the source runs until `cx.shutdown` turns.
    fn start(
        &self,
        name: &str,
        cx: SourceContext,
    ) -> impl std::future::Future<Output = Result<RunningSource, SourceError>> + Send;
}
