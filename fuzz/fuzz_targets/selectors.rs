//! Kubernetes field and label selectors (`?fieldSelector=`, `?labelSelector=`): parsed or
//! refused, and a parsed one evaluates against an event's fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_k8s::fuzzing::{FieldSelector, LabelSelector};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for events_api in [false, true] {
        if let Ok(selector) = FieldSelector::parse(text, events_api) {
            let _ = selector.matches(|field| if field == "reason" { "BackOff" } else { "" });
        }
    }
    if let Ok(selector) = LabelSelector::parse(text) {
        let _ = selector.matches(|key| (key == "app").then_some("web"));
    }
});
