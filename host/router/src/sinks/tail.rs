//! The `tail` sink (the stream `weir tail` reads) and the `null` sink.

use serde::Deserialize;
use std::sync::Arc;
use weir_core::cloudevents::json::write_json_line;
use weir_core::dead_letter::DeadLetter;
use weir_core::sink::{BuildSink, Capabilities, Sink, SinkContext, SinkError};
use weir_core::tail::TailHub;
use weir_core::Event;

/// The `tail` sink's configuration (it has no settings).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TailSinkConfig {}

impl BuildSink for TailSinkConfig {
    fn capabilities(&self) -> Capabilities {
        Capabilities::EVENTS_AND_DEAD_LETTERS
    }

    fn build(&self, cx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
        Ok(Arc::new(TailSink(cx.tail.clone())))
    }
}

/// The `null` sink's configuration (it has no settings).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NullSinkConfig {}

impl BuildSink for NullSinkConfig {
    fn capabilities(&self) -> Capabilities {
        Capabilities::EVENTS_AND_DEAD_LETTERS
    }

    fn build(&self, _: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
        Ok(Arc::new(NullSink))
    }
}

/// A sink writing to the tail hub.
pub struct TailSink(pub TailHub);

impl Sink for TailSink {
    /// Events of no known tenant: only readers who see every tenant get them.
    fn write(&self, events: &[&Event]) -> Result<(), SinkError> {
        self.0.publish(None, |buf| {
            for e in events {
                write_json_line(buf, e);
            }
        });
        Ok(())
    }

    fn write_tenant(&self, tenant: &str, events: &[&Event]) -> Result<(), SinkError> {
        self.0.publish(Some(tenant), |buf| {
            for e in events {
                write_json_line(buf, e);
            }
        });
        Ok(())
    }

    fn write_dead_letters(&self, letters: &[DeadLetter<'_>]) -> Result<(), SinkError> {
        // Published per run of one tenant's letters, so each reaches its tenant's readers.
        for run in letters.chunk_by(|a, b| a.tenant == b.tenant) {
            self.0.publish(Some(run[0].tenant), |buf| {
                for letter in run {
                    if serde_json::to_writer(&mut *buf, letter).is_ok() {
                        buf.push(b'\n');
                    }
                }
            });
        }
        Ok(())
    }
}

/// Discards everything.
pub struct NullSink;

impl Sink for NullSink {
    fn write(&self, _: &[&Event]) -> Result<(), SinkError> {
        Ok(())
    }
    fn write_dead_letters(&self, _: &[DeadLetter<'_>]) -> Result<(), SinkError> {
        Ok(())
    }
}
