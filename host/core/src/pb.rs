//! Protobuf types generated from `proto/` that are not a transport's own: the CloudEvents
//! Protobuf Event Format and weir's dead letters. (Toggle's are in `weir-toggle`.)
//! The modules nest as the packages do, so the generated cross-package paths resolve.

/// `package io.cloudevents.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod io {
    /// `io.cloudevents`.
    pub mod cloudevents {
        /// `io.cloudevents.v1`: the CloudEvents Protobuf Event Format.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/io.cloudevents.v1.rs"));
        }
    }
}

/// `package weir.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod weir {
    /// `weir.v1`: dead letters.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/weir.v1.rs"));
    }
}
