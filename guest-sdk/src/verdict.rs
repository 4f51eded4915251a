//! What a filter answers for each event.

use crate::OwnedEvent;
use std::borrow::Cow;

/// The fate of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it unchanged.
    Keep,
    /// Deliver it with these changes.
    Patch(Patch),
    /// Do not deliver it.
    Drop(Cow<'static, str>),
    /// Deliver this event instead.
    Replace(OwnedEvent),
    /// Deliver these events instead.
    FanOut(Vec<OwnedEvent>),
    /// Deliver it (with the changes) to the named sink only.
    Route {
        /// The sink's name in the router's configuration.
        sink: String,
        /// Changes to apply first.
        patch: Patch,
    },
    /// This event could not be processed; the route's failure policy applies to it.
    Error(String),
}

impl Verdict {
    /// Drop with a reason (static strings cost no allocation).
    pub fn drop(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::Drop(reason.into())
    }

    /// Route unchanged to a sink.
    pub fn route(sink: impl Into<String>) -> Self {
        Self::Route {
            sink: sink.into(),
            patch: Patch::default(),
        }
    }
}

/// One owned change; see [`Patch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Set(String, String),
    Remove(String),
    SetData(Vec<u8>),
    RemoveData,
}

/// A set of changes to an event, applied by the host to its own copy: cheaper than
/// replacing the whole event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patch {
    pub(crate) ops: Vec<Op>,
}

impl Patch {
    /// No changes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets an attribute (core or extension).
    pub fn set(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.ops.push(Op::Set(name.into(), value.into()));
        self
    }

    /// Removes an optional attribute or extension.
    pub fn remove(mut self, name: impl Into<String>) -> Self {
        self.ops.push(Op::Remove(name.into()));
        self
    }

    /// Replaces the data.
    pub fn data(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.ops.push(Op::SetData(data.into()));
        self
    }

    /// Replaces the data with a JSON value.
    pub fn json(self, value: &serde_json::Value) -> Self {
        self.data(value.to_string())
    }

    /// Removes the data.
    pub fn remove_data(mut self) -> Self {
        self.ops.push(Op::RemoveData);
        self
    }

    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub(crate) fn as_ops(&self) -> Vec<weir_abi::PatchOp<'_>> {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Set(name, value) => weir_abi::PatchOp::Set { name, value },
                Op::Remove(name) => weir_abi::PatchOp::Remove { name },
                Op::SetData(data) => weir_abi::PatchOp::SetData(data),
                Op::RemoveData => weir_abi::PatchOp::RemoveData,
            })
            .collect()
    }
}

/// Where a batch's verdicts go: each one is encoded into the packed answer as it is
/// pushed, so a batch never holds a list of verdicts.
pub struct Verdicts {
    writer: weir_abi::VerdictWriter,
    expected: usize,
}

impl Verdicts {
    pub(crate) fn new(expected: usize) -> Self {
        Self {
            writer: weir_abi::VerdictWriter::with_capacity(16 + expected * 8),
            expected,
        }
    }

    /// Records the verdict for the next event of the batch.
    pub fn push(&mut self, verdict: &Verdict) {
        if self.writer.len() >= self.expected {
            return;
        }
        let out = &mut self.writer;
        match verdict {
            Verdict::Keep => out.keep(&[]),
            Verdict::Patch(patch) => out.keep(&patch.as_ops()),
            Verdict::Drop(reason) => out.drop_event(reason),
            Verdict::Replace(event) => out.replace(
                &event.core(),
                event.extension_pairs(),
                event.data.as_deref(),
            ),
            Verdict::FanOut(events) => {
                out.begin_fan_out(u32::try_from(events.len()).unwrap_or(u32::MAX));
                for event in events {
                    out.fan_out_event(
                        &event.core(),
                        event.extension_pairs(),
                        event.data.as_deref(),
                    );
                }
            }
            Verdict::Route { sink, patch } => out.route(sink, &patch.as_ops()),
            Verdict::Error(reason) => out.error(reason),
        }
    }

    /// How many verdicts were recorded.
    pub fn len(&self) -> usize {
        self.writer.len()
    }

    /// Whether none was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.writer.is_empty()
    }

    /// Adds error verdicts until `n` verdicts are recorded.
    pub(crate) fn pad_to(&mut self, n: usize, reason: &str) {
        while self.writer.len() < n.min(self.expected) {
            self.writer.error(reason);
        }
    }

    /// The packed answer.
    pub(crate) fn finish(self) -> Vec<u8> {
        self.writer.finish()
    }
}
