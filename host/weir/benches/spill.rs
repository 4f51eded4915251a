//! Spill and replay throughput of the Toggle sink's disk buffer: one file per flush of
//! 18,000 events (the default flush threshold), written crash-safe (fsync, rename) and
//! read back and decoded.
//!
//! Run: `cargo bench -p weir --bench spill`.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weir::toggle::pb::events::{
    event::EventPayload, storage_event, Event, StorageEvent, StorageTransferPayload,
};
use weir::toggle::spill::{SpillDir, WhenFull};
use weir::toggle::wire::WireBatch;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS: usize = 18_000;

fn batch() -> WireBatch {
    let typed = weir::toggle::pb::EventBatch {
        batch_id: "bench".into(),
        batch_timestamp: 1_765_000_000_000,
        events: (0..EVENTS)
            .map(|i| Event {
                event_id: format!("0193a6f0-{i:08}"),
                level: 1 + (i % 7) as i32,
                category: 2,
                source: "rodent://node-17".into(),
                timestamp: 1_765_000_000_000 + i as i64,
                metadata: [("transfer_id".to_owned(), format!("t{i}"))].into(),
                event_payload: Some(EventPayload::StorageEvent(StorageEvent {
                    event_type: Some(storage_event::EventType::TransferEvent(
                        StorageTransferPayload {
                            source: format!("tank/data@snap{i}"),
                            destination: "backup/data".into(),
                            size_bytes: 1 << 20,
                            transferred_bytes: 1 << 19,
                            progress_percent: 50,
                            operation: 2,
                        },
                    )),
                })),
            })
            .collect(),
    };
    prost::Message::decode(prost::Message::encode_to_vec(&typed).as_slice()).unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let spill = SpillDir::open(dir.path(), u64::MAX, WhenFull::DropOldest).unwrap();
    let batch = batch();
    let size = prost::Message::encoded_len(&batch);
    eprintln!("one spill file: {EVENTS} events, {size} bytes");
    let mut group = c.benchmark_group("spill");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("write 18k-event file (encode, fsync, rename)", |b| {
        b.iter(|| {
            let written = spill.write(&batch).unwrap();
            std::fs::remove_file(written.path).unwrap();
        })
    });
    let file = spill.write(&batch).unwrap().path;
    group.bench_function("replay 18k-event file (read, decode)", |b| {
        b.iter(|| spill.read(&file).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
