//! The CloudEvents JSON format: one event (structured mode) and a batch. Anything must be
//! refused with an error or give events that pass the CloudEvents rules and survive a
//! round trip through the writer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::cloudevents::json::{parse_batch, parse_event, write_json_line};

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = parse_event(data) {
        assert!(event.validate().is_ok(), "a parsed event is valid");
        let mut line = Vec::new();
        write_json_line(&mut line, &event);
        let again = parse_event(&line).expect("what weir writes, it reads");
        assert_eq!(again, event, "round trip");
    }
    if let Ok(events) = parse_batch(data) {
        assert!(events.iter().all(|e| e.validate().is_ok()));
    }
});
