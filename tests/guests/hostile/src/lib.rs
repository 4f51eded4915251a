//! A deliberately hostile filter for the containment tests. Its `init` configuration picks
//! the misbehaviour: `{"mode": "loop" | "memory" | "trap" | "wrong-count" | "huge-output"
//! | "garbage" | "error" | "reject-config" | "flaky" | "keep" | "tick-emit" | "tick-huge"}`.
//! `tick-emit` emits two events each tick; `tick-huge` emits 20 MiB each tick. `flaky` traps the first
//! time it sees a batch (remembered in the tenant's state, which outlives the instance)
//! and keeps it the next time.
//!
//! It implements the component exports directly (not through the SDK's glue, which would
//! never produce a wrong verdict count or a malformed buffer).

#[cfg(target_arch = "wasm32")]
mod component {
    use std::cell::RefCell;
    use weir_guest::bindings::{Context, Event, Guest};
    use weir_guest::weir_abi::{BatchReader, VerdictWriter};

    thread_local! {
        static MODE: RefCell<String> = const { RefCell::new(String::new()) };
    }

    struct Hostile;

    impl Guest for Hostile {
        fn init(config: String) -> Result<(), String> {
            let value: weir_guest::serde_json::Value =
                weir_guest::serde_json::from_str(&config).map_err(|e| e.to_string())?;
            let mode = value["mode"].as_str().unwrap_or("keep").to_owned();
            if mode == "reject-config" {
                return Err("this configuration is rejected on purpose".into());
            }
            MODE.with(|m| *m.borrow_mut() = mode);
            Ok(())
        }

        fn process(_ctx: Context, batch: Vec<u8>) -> Result<Vec<u8>, String> {
            let reader = BatchReader::new(&batch).map_err(|e| e.to_string())?;
            let count = reader.len();
            let first = reader
                .into_iter()
                .next()
                .and_then(Result::ok)
                .map(|e| e.core.id.to_owned())
                .unwrap_or_default();
            let mode = MODE.with(|m| m.borrow().clone());
            let keep_all = |n: usize| {
                let mut w = VerdictWriter::with_capacity(16 + n * 3);
                for _ in 0..n {
                    w.keep(&[]);
                }
                w.finish()
            };
            match mode.as_str() {
                "loop" => {
                    let mut x: u64 = 0;
                    loop {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                "memory" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                "trap" => panic!("hostile filter traps on purpose"),
                "sleep" => {
                    // A host call the epoch deadline cannot interrupt, were it allowed.
                    std::thread::sleep(std::time::Duration::from_secs(60));
                    Ok(keep_all(count))
                }
                "wrong-count" => Ok(keep_all(count + 1)),
                "huge-output" => Ok(vec![0u8; 20 << 20]),
                "garbage" => Ok(b"these are not verdicts".to_vec()),
                "error" => Err("hostile filter fails the batch on purpose".into()),
                "flaky" => {
                    let key = format!("seen:{first}");
                    if weir_guest::host::state::get(&key).is_none() {
                        weir_guest::host::state::set(&key, b"1", None)?;
                        panic!("flaky filter traps the first time it sees batch {first}");
                    }
                    Ok(keep_all(count))
                }
                _ => Ok(keep_all(count)),
            }
        }

        fn tick(now_ms: u64) -> Vec<Event> {
            let event = |i: u64, data: Vec<u8>| Event {
                id: format!("tick-{now_ms}-{i}"),
                source: "/hostile/tick".into(),
                type_: "hostile.tick".into(),
                subject: None,
                time: None,
                datacontenttype: Some("application/octet-stream".into()),
                dataschema: None,
                extensions: Vec::new(),
                data: Some(data),
            };
            match MODE.with(|m| m.borrow().clone()).as_str() {
                // Two small events every tick.
                "tick-emit" => (0..2).map(|i| event(i, b"tick".to_vec())).collect(),
                // 20 MiB in one tick: over any output limit.
                "tick-huge" => (0..20).map(|i| event(i, vec![0u8; 1 << 20])).collect(),
                _ => Vec::new(),
            }
        }
    }

    weir_guest::bindings::__export_filter_world!(Hostile);
}
