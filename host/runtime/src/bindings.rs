//! Host bindings generated from `wit/filter.wit` (the one copy the guest SDK also uses).

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "filter",
});
