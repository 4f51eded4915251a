//! The dead-letter readers (`weir replay --dlq`): length-delimited protobuf letters and
//! their events, and a JSON-lines letter's event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::cloudevents::json::parse_event;
use weir::cloudevents::protobuf::from_proto;
use weir::dead_letter::read_delimited;

fuzz_target!(|data: &[u8]| {
    for letter in read_delimited(bytes::Bytes::copy_from_slice(data)).take(1000) {
        let Ok(letter) = letter else { break };
        if let Some(event) = letter.event {
            if let Ok(event) = from_proto(event) {
                assert!(event.validate().is_ok());
            }
        }
    }
    for line in data.split(|b| *b == b'\n') {
        if let Ok(letter) = serde_json::from_slice::<serde_json::Value>(line) {
            if let Some(event) = letter.get("event") {
                let _ = parse_event(event.to_string().as_bytes());
            }
        }
    }
});
