//! The filter runtime: wasmtime components compiled once and cached, instances reused
//! across batches, every call bounded in time, memory and output.

mod bindings;
pub mod decide;
pub mod engine;
mod host_api;
pub mod instance;
pub mod state;

pub use decide::{apply_verdicts, for_each_decision, Decision};
pub use engine::{CompiledFilter, EngineOptions, FilterEngine};
pub use instance::{FilterError, FilterInstance, InstanceIdent};
pub use state::{StateStore, TenantState};

/// The WIT types, as the host sees them.
pub mod wit {
    pub use super::bindings::weir::filter::host::Level;
    pub use super::bindings::weir::filter::types::{Context, Event, Principal};
}

pub use host_api::now_ms;

/// Converts an event a filter emitted from `tick` into the host's type, validating it.
pub fn event_from_wit(e: wit::Event) -> Result<crate::event::Event, crate::event::EventError> {
    use crate::event::{ExtKind, Extension};
    let event = crate::event::Event {
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
