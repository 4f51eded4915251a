//! CloudEvents SQL (route `when` conditions): parsed or refused, and a parsed expression
//! evaluates against an event without panicking (errors are values).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::cesql::{evaluate, parse};
use weir::event::Event;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(expr) = parse(text) else {
        return;
    };
    let mut event = Event::new("1", "/fuzz", "fuzz.event");
    event.subject = Some("pods/web-1".into());
    event.set_extension("severity", "warning");
    event.set_extension("count", "42");
    let _ = evaluate(&expr, &event);
});
