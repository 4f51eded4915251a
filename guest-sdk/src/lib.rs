//! # weir-guest: write weir filters as plain Rust functions
//!
//! A filter is a type that implements [`Filter`]: it is built once from its configuration
//! and then decides, event by event, what happens to each one. [`export_filter!`] turns it
//! into a WebAssembly component implementing the `weir:filter@0.1.0` world; the packed
//! batch layout, the bindings and the WIT stay hidden.
//!
//! ```
//! use weir_guest::{Context, Event, Filter, Verdict};
//!
//! #[derive(serde::Deserialize)]
//! struct Config { drop_type: String }
//!
//! struct DropType(Config);
//!
//! impl Filter for DropType {
//!     type Config = Config;
//!     fn new(config: Config) -> Result<Self, String> { Ok(Self(config)) }
//!     fn process(&mut self, _ctx: &Context, event: &Event<'_>) -> Verdict {
//!         if event.ty() == self.0.drop_type { Verdict::drop("unwanted type") } else { Verdict::Keep }
//!     }
//! }
//! weir_guest::export_filter!(DropType);
//!
//! // Natively testable, through the same packed boundary the router uses:
//! let mut h = weir_guest::testing::Harness::<DropType>::new(r#"{"drop_type":"x"}"#).unwrap();
//! let out = h.run(&[weir_guest::OwnedEvent::new("1", "/src", "x")]);
//! assert!(out[0].is_drop());
//! ```
//!
//! Build the component with `cargo build --target wasm32-wasip2 --release`.

pub mod bucket;
mod context;
mod event;
#[doc(hidden)]
pub mod glue;
pub mod host;
pub mod k8s;
mod owned;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod verdict;

pub use context::{Context, Principal};
pub use event::Event;
pub use owned::OwnedEvent;
pub use verdict::{Patch, Verdict, Verdicts};

#[doc(hidden)]
pub use serde_json;
#[doc(hidden)]
pub use weir_abi;
#[doc(hidden)]
pub use wit_bindgen;

/// The generated bindings of the `weir:filter@0.1.0` world (wasm only; not for authors).
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "filter",
        pub_export_macro: true,
        export_macro_name: "__export_filter_world",
        default_bindings_module: "weir_guest::bindings",
    });
}

/// A filter: built once per instance from its configuration, then asked about every event.
pub trait Filter: Sized + 'static {
    /// The configuration, deserialised from the JSON the operator supplied (`{}` when none).
    /// Use `serde(deny_unknown_fields)` so typos are rejected at upload.
    type Config: serde::de::DeserializeOwned;

    /// Builds the filter; an error rejects the configuration.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// Decides what happens to one event.
    fn process(&mut self, ctx: &Context, event: &Event<'_>) -> Verdict;

    /// Decides what happens to a whole batch (override it to look at events together);
    /// `out` must receive one verdict per event, in order: missing ones become error
    /// verdicts, extra ones are ignored. The default calls [`Filter::process`] per event.
    fn process_batch(&mut self, ctx: &Context, events: &[Event<'_>], out: &mut Verdicts) {
        for event in events {
            out.push(&self.process(ctx, event));
        }
    }

    /// Called periodically by the host; returns events to emit (e.g. closed aggregation
    /// windows). The default emits nothing.
    fn tick(&mut self, _now_ms: u64) -> Vec<OwnedEvent> {
        Vec::new()
    }
}

/// Exports a [`Filter`] type as the `weir:filter` component world.
///
/// On non-wasm targets it expands to nothing, so the crate still builds and tests natively.
#[macro_export]
macro_rules! export_filter {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static WEIR_FILTER: ::std::cell::RefCell<::std::option::Option<$ty>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }
            struct WeirExport;
            impl $crate::bindings::Guest for WeirExport {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    WEIR_FILTER
                        .with(|slot| $crate::glue::init::<$ty>(&mut slot.borrow_mut(), &config))
                }
                fn process(
                    ctx: $crate::bindings::Context,
                    batch: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    let ctx = $crate::glue::context_from_wit(ctx);
                    WEIR_FILTER.with(|slot| {
                        $crate::glue::process::<$ty>(&mut slot.borrow_mut(), &ctx, &batch)
                    })
                }
                fn tick(now_ms: u64) -> ::std::vec::Vec<$crate::bindings::Event> {
                    WEIR_FILTER
                        .with(|slot| $crate::glue::tick::<$ty>(&mut slot.borrow_mut(), now_ms))
                        .into_iter()
                        .map($crate::glue::event_to_wit)
                        .collect()
                }
            }
            $crate::bindings::__export_filter_world!(WeirExport);
        };
    };
}
