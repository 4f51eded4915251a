//! The host's reading of a guest's answer: any bytes a filter returns for a batch must be
//! refused cleanly (the batch handed back whole) or give one decision per event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::event::Event;
use weir::runtime::apply_verdicts;

fuzz_target!(|data: &[u8]| {
    let Some((&n, answer)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8);
    let batch: Vec<Event> = (0..n)
        .map(|i| {
            let mut e = Event::new(format!("e{i}"), "/fuzz", "fuzz.event");
            e.set_extension("severity", "info");
            e
        })
        .collect();
    match apply_verdicts(batch, answer) {
        Ok(decisions) => assert_eq!(decisions.len(), n, "one decision per event"),
        Err((events, _)) => assert_eq!(events.len(), n, "a refused answer loses nothing"),
    }
});
