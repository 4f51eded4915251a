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
    pub(crate) log_budget: LogBudget,
}

/// How many log lines an instance may write: a burst of [`LOG_BURST`], refilled at
/// [`LOG_PER_SECOND`]; lines over it are dropped and counted (a filter must not flood the
/// router's log).
pub(crate) struct LogBudget {
    tokens: f64,
    at: std::time::Instant,
    /// Lines dropped since the last one that went out.
    dropped: u64,
}

/// Log lines an instance may write at once.
const LOG_BURST: f64 = 100.0;
/// Log lines an instance may write per second, on average.
const LOG_PER_SECOND: f64 = 10.0;

impl Default for LogBudget {
    fn default() -> Self {
        Self {
            tokens: LOG_BURST,
            at: std::time::Instant::now(),
            dropped: 0,
        }
    }
}

impl LogBudget {
    /// Whether a line may go out now.
    fn take(&mut self, now: std::time::Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * LOG_PER_SECOND).min(LOG_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped = self.dropped.saturating_add(1);
            false
        }
    }
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
        if !self.log_budget.take(std::time::Instant::now()) {
            self.metrics
                .log_lines_dropped(&self.filter, &self.tenant, 1);
            return;
        }
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let dropped = std::mem::take(&mut self.log_budget.dropped);
        if dropped > 0 {
            message.insert_str(0, &format!("[{dropped} earlier lines dropped] "));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_storm_is_held_to_the_budget() {
        let mut budget = LogBudget::default();
        let start = std::time::Instant::now();
        let passed = (0..10_000).filter(|_| budget.take(start)).count();
        assert_eq!(passed, LOG_BURST as usize);
        assert_eq!(budget.dropped, 10_000 - LOG_BURST as u64);
        // A second later, ten more.
        let later = start + std::time::Duration::from_secs(1);
        let passed = (0..1000).filter(|_| budget.take(later)).count();
        assert_eq!(passed, LOG_PER_SECOND as usize);
    }
}
