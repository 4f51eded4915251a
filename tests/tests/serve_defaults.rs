//! `weir serve` with no configuration runs the embedded defaults (the README's first
//! command), and SIGTERM drains and exits cleanly.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use std::path::Path;

#[tokio::test(flavor = "multi_thread")]
async fn embedded_defaults_filter_scope_and_redact_then_drain_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("weir-data").display().to_string();
    let filters = Path::new(wasm::SEVERITY)
        .parent()
        .unwrap()
        .display()
        .to_string();
    let weir = Weir::spawn(
        dir,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data,
            "--filters-dir",
            &filters,
        ],
    );
    let batch = json!([
        event(
            "d1",
            "com.example.login",
            json!({"severity": "debug", "data": {"user": "x"}})
        ),
        event(
            "d2",
            "com.example.login",
            json!({"severity": "info", "data": {"user": "bob", "password": "hunter2"}})
        ),
    ]);
    let (status, answer) = post_batch(&weir.url, &batch).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        (answer["delivered"].as_u64(), answer["dropped"].as_u64()),
        (Some(1), Some(1))
    );
    let (status, ready) = get_text(&format!("{}/readyz", weir.url)).await;
    assert_eq!((status, ready.trim()), (200, "ready"));
    let logs = weir.logs.clone();
    let (clean, dir) = weir.terminate();
    assert!(
        clean,
        "SIGTERM must exit 0:\n{}",
        logs.lock().unwrap().join("\n")
    );
    assert!(logs.lock().unwrap().iter().any(|l| l.contains("stopped")));
    let out = read_jsonl(&dir.path().join("weir-data/events.jsonl"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["id"], "d2");
    assert_eq!(out[0]["data"], json!({"user": "bob", "password": "***"}));
    assert!(
        dir.path()
            .join("weir-data/cache")
            .read_dir()
            .unwrap()
            .count()
            >= 3,
        "compiled filters are cached"
    );
}
