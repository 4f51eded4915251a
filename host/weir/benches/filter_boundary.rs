//! Cost per event of the same filter logic (`severity`) run natively and as a wasm
//! component, per-event calls and batches, counting the host's encoding of the batch and
//! its handling of the answer (verdicts decoded and applied to the host's events).
//!
//! Run: `scripts/bench` (builds the filter component first), or
//! `WEIR_BENCH_WASM=path/to/severity.wasm cargo bench -p weir --bench filter_boundary`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::sync::Arc;
use weir::event::Event;
use weir::runtime::{
    apply_verdicts, wit, Decision, EngineOptions, FilterEngine, FilterInstance, FilterMetrics,
    InstanceIdent, Limits, StateStore,
};
use weir_abi::BatchWriter;

/// The same allocator as the `weir` binary.
mod support;
use support::wasm_path;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEVERITIES: [&str; 4] = ["info", "error", "debug", "warning"];

/// Six string attributes (four core, two extensions) and 200 bytes of JSON data.
fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut e = Event::new(
                format!("evt-{i:08}"),
                "/bench/producer-17",
                "com.example.orders.created",
            );
            e.subject = Some(format!("order/{i}"));
            e.set_extension("severity", SEVERITIES[i % SEVERITIES.len()]);
            e.set_extension("tenant", "acme");
            let mut data = format!("{{\"order\":{i},\"customer\":\"c-{}\",\"items\":[", i % 97);
            while data.len() < 190 {
                data.push_str("{\"sku\":\"x\"},");
            }
            data.push_str("{}]}");
            e.datacontenttype = Some("application/json".into());
            e.data = Some(bytes::Bytes::from(data.into_bytes()));
            e
        })
        .collect()
}

fn context() -> wit::Context {
    wit::Context {
        tenant: "acme".into(),
        route: "bench".into(),
        source_kind: "http".into(),
        principal: None,
    }
}

const CONFIG: &str = r#"{"min":"warning"}"#;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("severity per event");
    let config: severity::Config = serde_json::from_str(CONFIG).unwrap();
    let native = <severity::SeverityFilter as weir_guest::Filter>::new(config).unwrap();

    // 1. Native, direct: the filter's rule as a plain function over the host's events.
    {
        let below: std::sync::Arc<str> = std::sync::Arc::from("below the minimum severity");
        let input = events(1000);
        group.throughput(Throughput::Elements(1000));
        group.bench_function("native direct (batch 1000)", |b| {
            b.iter_batched(
                || input.clone(),
                |batch| {
                    let mut out = Vec::with_capacity(batch.len());
                    for e in batch {
                        let sev = severity::severity_from(
                            |name| e.extension(name),
                            true,
                            e.data.as_deref(),
                        );
                        out.push(match native.keeps(sev) {
                            Ok(()) => Decision::Keep(e),
                            Err(reason) => Decision::Drop {
                                event: e,
                                reason: if &*below == reason {
                                    below.clone()
                                } else {
                                    reason.into()
                                },
                            },
                        });
                    }
                    out
                },
                BatchSize::LargeInput,
            )
        });
    }

    // 2. Native, through the packed boundary: the SDK glue compiled natively.
    {
        let input = events(1000);
        let mut slot = None;
        weir_guest::glue::init::<severity::SeverityFilter>(&mut slot, CONFIG).unwrap();
        let ctx = weir_guest::Context::default();
        let mut writer = BatchWriter::new();
        group.throughput(Throughput::Elements(1000));
        group.bench_function("native packed (batch 1000)", |b| {
            b.iter_batched(
                || input.clone(),
                |batch| {
                    writer.clear();
                    for e in &batch {
                        writer.push(&e.core(), e.extension_pairs(), e.data.as_deref());
                    }
                    let answer =
                        weir_guest::glue::process(&mut slot, &ctx, writer.as_bytes()).unwrap();
                    apply_verdicts(batch, &answer).unwrap()
                },
                BatchSize::LargeInput,
            )
        });
    }

    // 3. The component, per-event calls and batches; then the same with fuel metering on
    //    top of the epoch deadline, to show what fuel would cost.
    let path = wasm_path();
    let ctx = context();
    let runs: [(Option<u64>, usize, &str); 4] = [
        (None, 1, "wasm per-event call"),
        (None, 100, "wasm batch 100"),
        (None, 1000, "wasm batch 1000"),
        (Some(10_000_000_000), 1000, "wasm batch 1000 with fuel"),
    ];
    for (fuel, batch_size, name) in runs {
        let engine = FilterEngine::new(EngineOptions {
            fuel_per_call: fuel,
            ..EngineOptions::default()
        })
        .unwrap();
        let compiled = Arc::new(engine.load_file(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (build it with scripts/bench or set WEIR_BENCH_WASM)",
                path.display()
            )
        }));
        let state = StateStore::in_memory().tenant("acme", 1 << 20);
        let mut instance = FilterInstance::new(
            &engine,
            compiled,
            CONFIG.into(),
            Limits::default(),
            InstanceIdent {
                tenant: Arc::from("acme"),
                filter: Arc::from("severity"),
            },
            state,
            Arc::new(FilterMetrics::new(
                &weir_core::metrics::MetricsRegistry::new(),
            )),
        )
        .unwrap();
        let input = events(1000);
        let mut writer = BatchWriter::new();
        group.throughput(Throughput::Elements(1000));
        group.bench_function(name, |b| {
            b.iter_batched(
                || input.clone(),
                |mut all| {
                    let mut out = Vec::with_capacity(all.len());
                    while !all.is_empty() {
                        let rest = all.split_off(batch_size.min(all.len()));
                        let batch = std::mem::replace(&mut all, rest);
                        writer.clear();
                        for e in &batch {
                            writer.push(&e.core(), e.extension_pairs(), e.data.as_deref());
                        }
                        let answer = instance.process(&ctx, writer.as_bytes()).unwrap();
                        out.extend(apply_verdicts(batch, &answer).unwrap());
                    }
                    out
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
