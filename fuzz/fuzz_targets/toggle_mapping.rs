//! The Toggle (rodent.proto) mapping: any `EventBatch` bytes an agent sends. Each event
//! is mapped to a CloudEvent or refused; a mapped event maps back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use weir::toggle::mapping::{from_cloudevent, to_cloudevent, validate};
use weir::toggle::wire::WireBatch;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = WireBatch::decode(data) else {
        return;
    };
    for e in &batch.events {
        let _ = validate(e);
        if let Ok(ce) = to_cloudevent(e, "io.toggle") {
            assert!(ce.validate().is_ok());
            let back = from_cloudevent(&ce).expect("a mapped event maps back");
            assert_eq!(&back, e, "round trip");
        }
    }
});
