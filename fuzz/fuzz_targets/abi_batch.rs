//! The guest ABI's packed batch: the decoder a guest runs over what the host packs, and
//! the host's packing of what it decoded (the round trip must give the same events).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_abi::{BatchReader, BatchWriter};

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = BatchReader::new(data) else {
        return;
    };
    // A malformed record ends the batch with an error: the rest is not read.
    let Ok(events) = reader.collect::<Result<Vec<_>, _>>() else {
        return;
    };
    let mut writer = BatchWriter::new();
    for e in &events {
        writer.push(&e.core, e.extensions(), e.data);
    }
    let packed = writer.finish();
    let again: Vec<_> = BatchReader::new(&packed)
        .expect("what the writer packs, the reader reads")
        .collect::<Result<_, _>>()
        .expect("every packed event reads back");
    assert_eq!(again.len(), events.len());
    for (a, b) in again.iter().zip(&events) {
        assert_eq!(a.core, b.core);
        assert_eq!(a.data, b.data);
        assert!(a.extensions().eq(b.extensions()));
    }
});
