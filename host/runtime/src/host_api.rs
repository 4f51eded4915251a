//! The host functions a filter imports (`weir:filter/host`), and the per-store data.

use super::bindings::weir::filter::{host, types};
use super::state::TenantState;
use crate::metrics::FilterMetrics;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::StoreLimits;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use weir_core::util::now_ms;

/// The data of one filter instance's store.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) tenant: Arc<str>,
    pub(crate) filter: Arc<str>,
    pub(crate) state: Arc<TenantState>,
    pub(crate) metrics: Arc<FilterMetrics>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Longest log line a guest may write; longer ones are cut.
const MAX_LOG_LINE: usize = 4096;
/// Longest state key.
const MAX_KEY: usize = 1024;

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, mut message: String) {
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let (tenant, filter) = (&*self.tenant, &*self.filter);
        match level {
            host::Level::Trace => tracing::trace!(tenant, filter, "{message}"),
            host::Level::Debug => tracing::debug!(tenant, filter, "{message}"),
            host::Level::Info => tracing::info!(tenant, filter, "{message}"),
            host::Level::Warn => tracing::warn!(tenant, filter, "{message}"),
            host::Level::Error => tracing::error!(tenant, filter, "{message}"),
        }
    }

    fn now_ms(&mut self) -> u64 {
        now_ms()
    }

    fn state_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.state.get(&self.scoped(&key), now_ms())
    }

    fn state_set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), String> {
        if key.len() > MAX_KEY {
            return Err(format!("state keys are at most {MAX_KEY} bytes"));
        }
        self.state.set(&self.scoped(&key), value, ttl_ms, now_ms())
    }

    fn state_delete(&mut self, key: String) {
        self.state.delete(&self.scoped(&key))
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        self.metrics
            .filter_counter(&self.filter, &self.tenant, &name)
            .inc_by(delta);
    }

    fn histogram_record(&mut self, name: String, value: f64) {
        self.metrics
            .filter_histogram(&self.filter, &self.tenant, &name)
            .observe(value);
    }
}

impl HostState {
    fn scoped(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.filter.len() + 1 + key.len());
        k.push_str(&self.filter);
        k.push('\u{0}');
        k.push_str(key);
        k
    }
}
