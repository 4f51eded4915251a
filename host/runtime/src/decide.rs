//! Turning a filter's packed verdicts into decisions about the host's own events.

use super::instance::FilterError;
use std::sync::Arc;
use weir_abi::{VerdictReader, VerdictView};
use weir_core::Event;

/// What a filter decided for one event, with the verdict already applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Deliver this event (the input with its patch applied, or the replacement).
    Keep(Event),
    /// Do not deliver.
    Drop {
        /// The input event.
        event: Event,
        /// The filter's reason (shared between events dropped for the same reason).
        reason: Arc<str>,
    },
    /// Deliver these events instead of the input (never empty: an empty fan-out is a drop).
    FanOut(Vec<Event>),
    /// Deliver the (patched) event to one named sink.
    Route {
        /// The sink.
        sink: String,
        /// The event.
        event: Event,
    },
    /// The filter failed on this event, or answered with something invalid for it.
    Error {
        /// The input event, unchanged.
        event: Event,
        /// What went wrong.
        reason: String,
    },
}

impl Decision {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Keep(_) => "keep",
            Decision::Drop { .. } => "drop",
            Decision::FanOut(_) => "fan_out",
            Decision::Route { .. } => "route",
            Decision::Error { .. } => "error",
        }
    }
}

/// Applies a verdict buffer to the batch it answers. The whole buffer is checked first
/// (layout, one verdict per event): if it is unusable, nothing is applied and the batch is
/// handed back with the error so the caller can apply its failure policy.
pub fn apply_verdicts(
    batch: Vec<Event>,
    answer: &[u8],
) -> Result<Vec<Decision>, (Vec<Event>, FilterError)> {
    let mut out = Vec::with_capacity(batch.len());
    for_each_decision(batch, answer, |_, decision| out.push(decision))?;
    Ok(out)
}

/// Like [`apply_verdicts`], handing each decision (with the event's index in the batch)
/// to `f` instead of collecting them: the hot path keeps no list of decisions.
pub fn for_each_decision(
    batch: Vec<Event>,
    answer: &[u8],
    mut f: impl FnMut(usize, Decision),
) -> Result<(), (Vec<Event>, FilterError)> {
    if let Err(e) = validate(answer, batch.len()) {
        return Err((batch, e));
    }
    let reader = match VerdictReader::new(answer) {
        Ok(reader) => reader,
        Err(e) => return Err((batch, FilterError::BadOutput(e.to_string()))),
    };
    let mut last_reason: Option<Arc<str>> = None;
    for (i, (event, verdict)) in batch.into_iter().zip(reader.flatten()).enumerate() {
        f(i, decide(event, verdict, &mut last_reason));
    }
    Ok(())
}

/// One pass over the answer without keeping anything: the layout and the count.
fn validate(answer: &[u8], expected: usize) -> Result<(), FilterError> {
    let reader = VerdictReader::new(answer).map_err(|e| FilterError::BadOutput(e.to_string()))?;
    if reader.len() != expected {
        return Err(FilterError::BadOutput(format!(
            "{} verdicts for {expected} events",
            reader.len()
        )));
    }
    for verdict in reader {
        verdict.map_err(|e| FilterError::BadOutput(e.to_string()))?;
    }
    Ok(())
}

/// Applies a patch; on an invalid operation the event is kept unchanged in an error
/// decision.
fn patched(
    mut event: Event,
    patch: weir_abi::PatchReader<'_>,
    wrap: impl FnOnce(Event) -> Decision,
) -> Decision {
    if patch.is_empty() {
        return wrap(event);
    }
    let original = event.clone();
    for op in patch {
        if let Err(e) = event.apply(op) {
            return Decision::Error {
                event: original,
                reason: format!("invalid patch: {e}"),
            };
        }
    }
    wrap(event)
}

fn decide(event: Event, verdict: VerdictView<'_>, last_reason: &mut Option<Arc<str>>) -> Decision {
    match verdict {
        VerdictView::Keep(patch) => patched(event, patch, Decision::Keep),
        VerdictView::Drop(reason) => {
            let reason = match last_reason {
                Some(last) if **last == *reason => last.clone(),
                _ => last_reason.insert(Arc::from(reason)).clone(),
            };
            Decision::Drop { event, reason }
        }
        VerdictView::Replace(view) => match Event::from_view(&view) {
            Ok(replacement) => Decision::Keep(replacement),
            Err(e) => Decision::Error {
                event,
                reason: format!("invalid replacement event: {e}"),
            },
        },
        VerdictView::FanOut(views) => {
            match views
                .iter()
                .map(Event::from_view)
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(events) if events.is_empty() => Decision::Drop {
                    event,
                    reason: Arc::from("fan-out to no events"),
                },
                Ok(events) => Decision::FanOut(events),
                Err(e) => Decision::Error {
                    event,
                    reason: format!("invalid fan-out event: {e}"),
                },
            }
        }
        VerdictView::Route { sink, patch } => patched(event, patch, |event| Decision::Route {
            sink: sink.to_owned(),
            event,
        }),
        VerdictView::Error(reason) => Decision::Error {
            event,
            reason: reason.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_abi::{CoreAttrs, PatchOp, VerdictWriter};

    #[test]
    fn applies_each_verdict_and_refuses_bad_buffers_whole() {
        let batch = vec![
            Event::new("1", "/s", "t"),
            Event::new("2", "/s", "t"),
            Event::new("3", "/s", "t"),
        ];
        let mut w = VerdictWriter::with_capacity(64);
        w.keep(&[PatchOp::Set {
            name: "subject",
            value: "x",
        }]);
        w.drop_event("no");
        w.keep(&[PatchOp::Set {
            name: "Bad Name",
            value: "x",
        }]);
        let d = apply_verdicts(batch.clone(), &w.finish()).expect("valid");
        assert!(matches!(&d[0], Decision::Keep(e) if e.subject.as_deref() == Some("x")));
        assert!(matches!(&d[1], Decision::Drop { reason, .. } if &**reason == "no"));
        assert!(matches!(&d[2], Decision::Error { event, .. } if *event == batch[2]));
        let mut w = VerdictWriter::with_capacity(64);
        w.keep(&[]);
        let (back, err) = apply_verdicts(batch.clone(), &w.finish()).expect_err("count");
        assert_eq!(back, batch);
        assert!(err.to_string().contains("1 verdicts for 3 events"));
        let mut w = VerdictWriter::with_capacity(64);
        w.begin_fan_out(1);
        w.fan_out_event(
            &CoreAttrs {
                id: "n",
                source: "s",
                ty: "t",
                ..Default::default()
            },
            [],
            None,
        );
        let d = apply_verdicts(vec![Event::new("1", "/s", "t")], &w.finish()).expect("valid");
        assert!(matches!(&d[0], Decision::FanOut(e) if e[0].id == "n"));
    }
}
