//! The configuration loader: any YAML is accepted or refused with problems naming file,
//! line and field, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::parse("fuzz.yaml", text, &[]) {
        assert!(!e.issues.is_empty(), "a refusal says why");
        let _ = e.to_string();
    }
});
