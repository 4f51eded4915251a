//! One filter instance: a store plus the instantiated component, reused across batches,
//! rebuilt after any failure.

use super::bindings::weir::filter::types as wit;
use super::bindings::Filter;
use super::engine::{CompiledFilter, FilterEngine, EPOCH_TICK};
use super::host_api::HostState;
use super::state::TenantState;
use crate::limits::Limits;
use crate::metrics::FilterMetrics;
use std::sync::Arc;
use wasmtime::{Store, StoreLimitsBuilder, Trap};

/// How a filter call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FilterError {
    /// The instance could not be created.
    #[error("cannot instantiate filter: {0}")]
    Instantiate(String),
    /// `init` rejected the configuration.
    #[error("filter rejected its configuration: {0}")]
    Init(String),
    /// The call ran past its deadline.
    #[error("filter exceeded its time limit of {0} ms")]
    Timeout(u64),
    /// The guest tried to grow its memory past the cap.
    #[error("filter exceeded its memory limit of {0} MiB")]
    Memory(u64),
    /// The guest trapped (panic, unreachable, out-of-bounds access...).
    #[error("filter trapped: {0}")]
    Trap(String),
    /// The guest returned an error for the whole batch.
    #[error("filter failed the batch: {0}")]
    Guest(String),
    /// The guest's answer is unusable (wrong size, wrong count, not the layout).
    #[error("filter returned bad output: {0}")]
    BadOutput(String),
}

impl FilterError {
    /// Every [`kind`](Self::kind).
    pub const KINDS: [&'static str; 7] = [
        "instantiate",
        "init",
        "timeout",
        "memory",
        "trap",
        "guest_error",
        "bad_output",
    ];

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            FilterError::Instantiate(_) => "instantiate",
            FilterError::Init(_) => "init",
            FilterError::Timeout(_) => "timeout",
            FilterError::Memory(_) => "memory",
            FilterError::Trap(_) => "trap",
            FilterError::Guest(_) => "guest_error",
            FilterError::BadOutput(_) => "bad_output",
        }
    }
}

/// Who an instance runs for.
#[derive(Debug, Clone)]
pub struct InstanceIdent {
    /// The tenant.
    pub tenant: Arc<str>,
    /// The filter's name.
    pub filter: Arc<str>,
}

struct Live {
    store: Store<HostState>,
    bindings: Filter,
}

/// A reusable filter instance with its limits.
pub struct FilterInstance {
    engine: wasmtime::Engine,
    fuel_per_call: Option<u64>,
    compiled: Arc<CompiledFilter>,
    config_json: String,
    limits: Limits,
    ident: InstanceIdent,
    state: Arc<TenantState>,
    metrics: Arc<FilterMetrics>,
    live: Option<Live>,
}

impl FilterInstance {
    /// Instantiates the component and calls `init` with the configuration.
    pub fn new(
        engine: &FilterEngine,
        compiled: Arc<CompiledFilter>,
        config_json: String,
        limits: Limits,
        ident: InstanceIdent,
        state: Arc<TenantState>,
        metrics: Arc<FilterMetrics>,
    ) -> Result<Self, FilterError> {
        let mut instance = Self {
            engine: engine.engine.clone(),
            fuel_per_call: engine.fuel_per_call,
            compiled,
            config_json,
            limits,
            ident,
            state,
            metrics,
            live: None,
        };
        instance.live = Some(instance.instantiate()?);
        Ok(instance)
    }

    /// The tenant state this instance reads and writes.
    pub fn state(&self) -> &Arc<TenantState> {
        &self.state
    }

    /// Arms a store's per-call budget: the epoch deadline and, when enabled, fuel.
    fn arm(
        limits: &Limits,
        fuel: Option<u64>,
        store: &mut Store<HostState>,
    ) -> Result<(), FilterError> {
        let tick = EPOCH_TICK.as_millis() as u64;
        store.set_epoch_deadline(limits.timeout_ms.div_ceil(tick) + 1);
        match fuel {
            Some(fuel) => store
                .set_fuel(fuel)
                .map_err(|e| FilterError::Trap(e.to_string())),
            None => Ok(()),
        }
    }

    fn instantiate(&self) -> Result<Live, FilterError> {
        let memory_bytes = usize::try_from(self.limits.memory_mb << 20).unwrap_or(usize::MAX);
        let host = HostState {
            wasi: wasmtime_wasi::WasiCtx::builder().build(),
            table: wasmtime::component::ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            tenant: self.ident.tenant.clone(),
            filter: self.ident.filter.clone(),
            state: self.state.clone(),
            metrics: self.metrics.clone(),
            log_budget: Default::default(),
        };
        let mut store = Store::new(&self.engine, host);
        store.limiter(|s| &mut s.limits);
        Self::arm(&self.limits, self.fuel_per_call, &mut store)?;
        let bindings = self
            .compiled
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(e, FilterError::Instantiate))?;
        Self::arm(&self.limits, self.fuel_per_call, &mut store)?;
        match bindings.call_init(&mut store, &self.config_json) {
            Ok(Ok(())) => Ok(Live { store, bindings }),
            Ok(Err(reason)) => Err(FilterError::Init(reason)),
            Err(e) => Err(self.classify(e, FilterError::Init)),
        }
    }

    /// Names a failed call: deadline, fuel, memory cap, trap, or (for an error that is not
    /// a guest trap) the given fallback.
    fn classify(&self, e: wasmtime::Error, fallback: fn(String) -> FilterError) -> FilterError {
        let trap = e.downcast_ref::<Trap>().copied();
        match trap {
            Some(Trap::Interrupt) => return FilterError::Timeout(self.limits.timeout_ms),
            Some(Trap::OutOfFuel) => return FilterError::Trap("out of fuel".into()),
            _ => {}
        }
        let text = format!("{e:?}");
        if text.contains("forcing trap when growing memory") {
            FilterError::Memory(self.limits.memory_mb)
        } else if trap.is_some() {
            FilterError::Trap(text)
        } else {
            fallback(text)
        }
    }

    /// The live instance, instantiated afresh after a failure.
    fn live(&mut self) -> Result<&mut Live, FilterError> {
        if self.live.is_none() {
            self.live = Some(self.instantiate()?);
        }
        let live = self
            .live
            .as_mut()
            .ok_or_else(|| FilterError::Instantiate("no instance".into()))?;
        Self::arm(&self.limits, self.fuel_per_call, &mut live.store)?;
        Ok(live)
    }

    /// Runs one packed batch; on any failure the instance is thrown away and rebuilt for
    /// the next call.
    pub fn process(&mut self, ctx: &wit::Context, batch: &[u8]) -> Result<Vec<u8>, FilterError> {
        let live = self.live()?;
        let result = live.bindings.call_process(&mut live.store, ctx, batch);
        let out = match result {
            Ok(Ok(out)) => out,
            Ok(Err(reason)) => return Err(FilterError::Guest(reason)),
            Err(e) => {
                let err = self.classify(e, FilterError::Trap);
                self.recycle();
                return Err(err);
            }
        };
        let cap = usize::try_from(self.limits.output_mb << 20).unwrap_or(usize::MAX);
        if out.len() > cap {
            self.recycle();
            return Err(FilterError::BadOutput(format!(
                "{} bytes exceed the output limit of {} MiB",
                out.len(),
                self.limits.output_mb
            )));
        }
        Ok(out)
    }

    /// Calls `tick`, returning the events the filter emits. Like `process`'s answer,
    /// what one tick emits is held to the tenant's output limit.
    pub fn tick(&mut self, now_ms: u64) -> Result<Vec<wit::Event>, FilterError> {
        let live = self.live()?;
        let events = match live.bindings.call_tick(&mut live.store, now_ms) {
            Ok(events) => events,
            Err(e) => {
                let err = self.classify(e, FilterError::Trap);
                self.recycle();
                return Err(err);
            }
        };
        let cap = usize::try_from(self.limits.output_mb << 20).unwrap_or(usize::MAX);
        let size = events
            .iter()
            .fold(0usize, |n, e| n.saturating_add(emitted_size(e)));
        if size > cap {
            self.recycle();
            return Err(FilterError::BadOutput(format!(
                "tick emitted {} events of {size} bytes, over the output limit of {} MiB",
                events.len(),
                self.limits.output_mb
            )));
        }
        Ok(events)
    }

    /// Throws the instance away (its memory may be corrupt) and counts it; the next call
    /// instantiates afresh.
    pub fn recycle(&mut self) {
        self.live = None;
        self.metrics
            .instance_recycled(&self.ident.filter, &self.ident.tenant);
    }
}

/// The bytes an emitted event holds: its attributes, extensions and data.
fn emitted_size(e: &wit::Event) -> usize {
    let optional = [&e.subject, &e.time, &e.datacontenttype, &e.dataschema]
        .iter()
        .map(|o| o.as_ref().map_or(0, String::len))
        .sum::<usize>();
    let extensions = e
        .extensions
        .iter()
        .map(|(k, v)| k.len().saturating_add(v.len()))
        .fold(0usize, usize::saturating_add);
    [
        e.id.len(),
        e.source.len(),
        e.type_.len(),
        optional,
        extensions,
        e.data.as_ref().map_or(0, Vec::len),
    ]
    .into_iter()
    .fold(0usize, usize::saturating_add)
}

#[cfg(test)]
mod kind_tests {
    use super::FilterError;

    #[test]
    fn every_kind_is_listed_once() {
        let all = [
            FilterError::Instantiate(String::new()),
            FilterError::Init(String::new()),
            FilterError::Timeout(0),
            FilterError::Memory(0),
            FilterError::Trap(String::new()),
            FilterError::Guest(String::new()),
            FilterError::BadOutput(String::new()),
        ];
        let kinds: Vec<&str> = all.iter().map(FilterError::kind).collect();
        assert_eq!(kinds, FilterError::KINDS);
    }
}
