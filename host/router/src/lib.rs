//! weir's router: routes chosen by `when` conditions, tenants and their lanes, filter
//! chains run over packed batches, verdicts applied, and survivors written to sinks before
//! the source is answered (or dead-lettered). Also the source side of the connector
//! contract ([`source`]) and the sinks every router has ([`sinks`]).
//!
//! The path of one event: a source calls [`Router::submit_to`] → the router picks the
//! routes whose `when` takes it and the event's tenant → the tenant's lane of each route
//! batches it → the filter chain runs once per batch → verdicts are applied → the route's
//! sinks write the survivors → the source gets the [`Outcome`].

mod metrics;
mod producers;
mod router;
pub mod settings;
pub mod sinks;
pub mod source;
mod tenants;

pub use metrics::Metrics;
pub use producers::{Producer, Producers};
pub use router::{
    Admission, Origin, Outcome, Principal, Refused, Router, RouterError, Submission, REPLAY_SOURCE,
    TICK_INTERVAL,
};
pub use tenants::{StoreError as TenantStoreError, TenantDirectory, TenantSettings};
