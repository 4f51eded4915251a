//! The filter runtime: wasmtime components compiled once and cached, instances reused
//! across batches, every call bounded in time, memory and output ([`Limits`]); the
//! [`registry`] of uploaded filter versions, and the per-tenant key-value [`state`]
//! filters keep.

mod bindings;
mod decide;
mod engine;
mod host_api;
mod instance;
mod limits;
mod metrics;
pub mod registry;
mod state;

pub use decide::{apply_verdicts, for_each_decision, Decision};
pub use engine::{content_hash, CompiledFilter, EngineError, EngineOptions, FilterEngine};
pub use instance::{FilterError, FilterInstance, InstanceIdent};
pub use limits::Limits;
pub use metrics::FilterMetrics;
pub use state::{StateError, StateStore, TenantState};

/// The WIT types, as the host sees them.
pub mod wit {
    pub use super::bindings::weir::filter::host::Level;
    pub use super::bindings::weir::filter::types::{Context, Event, Principal};
}

/// Converts an event a filter emitted from `tick` into the host's type, validating it.
pub fn event_from_wit(e: wit::Event) -> Result<weir_core::Event, weir_core::event::EventError> {
    use weir_core::event::{ExtKind, Extension};
    let event = weir_core::Event {
        id: e.id,
        source: e.source,
        ty: e.type_,
        subject: e.subject,
        time: e.time,
        datacontenttype: e.datacontenttype,
        dataschema: e.dataschema,
        extensions: e
            .extensions
            .into_iter()
            .map(|(name, value)| Extension {
                name,
                value,
                kind: ExtKind::String,
            })
            .collect(),
        data: e.data.map(bytes::Bytes::from),
    };
    event.validate()?;
    Ok(event)
}
