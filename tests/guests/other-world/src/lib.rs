//! A valid component that implements some other world: the router must refuse it.

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, missing_docs)] // generated bindings
mod component {
    wit_bindgen::generate!({
        inline: "package test:other; world other { export hello: func() -> string; }",
        world: "other",
    });

    struct Other;

    impl Guest for Other {
        fn hello() -> String {
            "not a filter".into()
        }
    }

    export!(Other);
}
