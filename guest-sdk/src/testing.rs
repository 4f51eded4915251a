//! Native test harness: run a filter through the same packed boundary the router uses,
//! without WebAssembly, and inspect its verdicts, state, logs and metrics.

use crate::host::Level;
use crate::{glue, Context, Filter, OwnedEvent};
use std::cell::RefCell;
use std::collections::HashMap;
use weir_abi::{BatchWriter, PatchOp, VerdictReader, VerdictView};

/// The stand-in for the router's host functions in native tests (one per thread).
#[derive(Debug, Default)]
pub struct MockHost {
    /// The clock `host::now_ms` answers.
    pub now_ms: u64,
    /// Key-value state: value and expiry (ms).
    pub state: HashMap<String, (Vec<u8>, Option<u64>)>,
    /// Log lines written.
    pub logs: Vec<(Level, String)>,
    /// Counters.
    pub counters: HashMap<String, u64>,
    /// Histogram samples.
    pub histograms: HashMap<String, Vec<f64>>,
}

impl MockHost {
    pub(crate) fn state_get(&mut self, key: &str) -> Option<Vec<u8>> {
        let now = self.now_ms;
        match self.state.get(key) {
            Some((_, Some(expiry))) if *expiry <= now => {
                self.state.remove(key);
                None
            }
            Some((value, _)) => Some(value.clone()),
            None => None,
        }
    }

    pub(crate) fn state_set(
        &mut self,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<(), String> {
        let expiry = ttl_ms.map(|t| self.now_ms.saturating_add(t));
        self.state.insert(key.to_owned(), (value.to_vec(), expiry));
        Ok(())
    }
}

thread_local! {
    pub(crate) static MOCK: RefCell<MockHost> = RefCell::new(MockHost::default());
}

/// Runs `f` with the thread's mock host (to set the clock or read counters).
pub fn with_mock_host<R>(f: impl FnOnce(&mut MockHost) -> R) -> R {
    MOCK.with(|m| f(&mut m.borrow_mut()))
}

/// What happened to one input event, decoded from the filter's packed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered; the event as the host would deliver it (patch applied).
    Keep(OwnedEvent),
    /// Dropped, with the reason.
    Drop(String),
    /// Replaced by these events.
    FanOut(Vec<OwnedEvent>),
    /// Sent to one sink.
    Route {
        /// The sink.
        sink: String,
        /// The event as delivered there.
        event: OwnedEvent,
    },
    /// The filter failed on the event.
    Error(String),
}

impl Outcome {
    /// Whether the event was dropped.
    pub fn is_drop(&self) -> bool {
        matches!(self, Outcome::Drop(_))
    }

    /// The kept event, if it was kept.
    pub fn kept(&self) -> Option<&OwnedEvent> {
        match self {
            Outcome::Keep(e) => Some(e),
            _ => None,
        }
    }
}

/// Drives one filter natively.
pub struct Harness<F: Filter> {
    slot: Option<F>,
    /// The context passed with every batch.
    pub context: Context,
}

impl<F: Filter> Harness<F> {
    /// Builds the filter from a JSON configuration, as the router's `init` would.
    pub fn new(config: &str) -> Result<Self, String> {
        let mut slot = None;
        glue::init::<F>(&mut slot, config)?;
        Ok(Self {
            slot: Some(slot.ok_or("init built no filter")?),
            context: Context {
                tenant: "default".into(),
                route: "default".into(),
                source_kind: "http".into(),
                principal: None,
            },
        })
    }

    /// Runs one batch through the packed boundary and returns one outcome per event.
    ///
    /// # Panics
    /// If the filter's answer breaks the layout (that is a bug in the SDK, not the filter).
    pub fn run(&mut self, events: &[OwnedEvent]) -> Vec<Outcome> {
        let mut batch = BatchWriter::new();
        for e in events {
            batch.push(&e.core(), e.extension_pairs(), e.data.as_deref());
        }
        let packed = batch.finish();
        let answer = match glue::process(&mut self.slot, &self.context, &packed) {
            Ok(answer) => answer,
            Err(e) => return events.iter().map(|_| Outcome::Error(e.clone())).collect(),
        };
        let reader = VerdictReader::new(&answer).expect("the SDK wrote a valid verdict buffer");
        assert_eq!(reader.len(), events.len(), "one verdict per event");
        reader
            .zip(events)
            .map(|(v, input)| decode(v.expect("valid verdict"), input))
            .collect()
    }

    /// Calls the filter's `tick`.
    pub fn tick(&mut self, now_ms: u64) -> Vec<OwnedEvent> {
        glue::tick(&mut self.slot, now_ms)
    }

    /// The filter itself, for white-box assertions.
    pub fn filter(&mut self) -> &mut F {
        self.slot.as_mut().expect("built in new")
    }
}

fn owned(view: &weir_abi::EventView<'_>) -> OwnedEvent {
    crate::Event::from_view(*view).to_owned_event()
}

fn patched(input: &OwnedEvent, patch: weir_abi::PatchReader<'_>) -> OwnedEvent {
    let mut e = input.clone();
    for op in patch {
        match op {
            PatchOp::Set { name, value } => e.set(name, value.to_owned()),
            PatchOp::Remove { name } => e.remove(name),
            PatchOp::SetData(d) => e.data = Some(d.to_vec()),
            PatchOp::RemoveData => e.data = None,
        }
    }
    e
}

fn decode(v: VerdictView<'_>, input: &OwnedEvent) -> Outcome {
    match v {
        VerdictView::Keep(patch) => Outcome::Keep(patched(input, patch)),
        VerdictView::Drop(reason) => Outcome::Drop(reason.to_owned()),
        VerdictView::Replace(e) => Outcome::Keep(owned(&e)),
        VerdictView::FanOut(es) => Outcome::FanOut(es.iter().map(owned).collect()),
        VerdictView::Route { sink, patch } => Outcome::Route {
            sink: sink.to_owned(),
            event: patched(input, patch),
        },
        VerdictView::Error(reason) => Outcome::Error(reason.to_owned()),
    }
}
