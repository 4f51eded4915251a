//! The CloudEvents Kafka binding: a record's headers, key and value, binary or
//! structured mode. Input: the key on the first line, then header lines (`name=value`),
//! a NUL byte, then the value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdkafka::message::{Header, OwnedHeaders};
use weir::kafka::binding::{decode, encode_binary, RecordView};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let head = parts.next().unwrap_or_default();
    let rest = parts.next().unwrap_or_default();
    let mut headers = OwnedHeaders::new();
    let mut lines = head.split(|b| *b == b'\n');
    let key = lines.next().filter(|k| !k.is_empty());
    for line in lines {
        let (name, value) = match line.iter().position(|b| *b == b'=') {
            Some(eq) => (&line[..eq], Some(&line[eq + 1..])),
            None => (line, None),
        };
        let name = String::from_utf8_lossy(name);
        headers = headers.insert(Header { key: &name, value });
    }
    let record = RecordView {
        headers: Some(&headers),
        key,
        payload: Some(rest),
    };
    if let Ok(event) = decode(&record) {
        assert!(event.validate().is_ok(), "a decoded event is valid");
        // What weir would publish of it encodes without panicking.
        let _ = encode_binary(&event);
    }
});
