//! `weir serve` with no configuration runs the embedded defaults (the README's first
//! command), and SIGTERM drains and exits cleanly.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use std::path::Path;

/// `weir serve` with no configuration (data in `<dir>/weir-data`, the filters built for
/// this test run), with these environment variables.
fn serve_embedded(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Weir {
    let data = dir.path().join("weir-data").display().to_string();
    let filters = Path::new(wasm::SEVERITY)
        .parent()
        .unwrap()
        .display()
        .to_string();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--filters-dir",
        &filters,
    ];
    Weir::spawn_env(dir, &args, env)
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_defaults_filter_scope_and_redact_then_drain_on_sigterm() {
    let weir = serve_embedded(tempfile::tempdir().unwrap(), &[]);
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

/// Every file weir keeps in its data directory (state and event databases, the compiled
/// cache, stored components, the token, file sinks and dead letters) is its owner's
/// only.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn every_file_in_the_data_directory_is_the_owners_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let config = format!(
        "events_api: {{ enabled: true }}\nfilters:\n{}\
sinks:\n  out: {{ type: file, path: out.jsonl }}\n\
routes:\n  - name: main\n    filters: [dedup]\n    to: [out]\n  - name: activity\n    from: [k8s]\n    to: [out]\n",
        filter_yaml("dedup", wasm::DEDUP, "{ window_ms: 3600000 }"),
    );
    let weir = Weir::start(&config);
    let (status, _) = post_batch(&weir.url, &json!([event("e1", "t", json!({}))])).await;
    assert_eq!(status, 202);
    let (dir, data) = {
        let (clean, dir) = weir.terminate();
        assert!(clean);
        let data = dir.path().join("data");
        (dir, data)
    };
    let mut files = Vec::new();
    let mut pending = vec![data.clone()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    let names: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&data).unwrap().display().to_string())
        .collect();
    for expected in [
        "admin-token",
        "state.redb",
        "events.redb",
        "filters/index.json",
        "out.jsonl",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(names.iter().any(|n| n.starts_with("cache/")), "{names:?}");
    for (file, name) in files.iter().zip(&names) {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} is {mode:o}");
    }
    drop(dir);
}

/// The README's first command as a new user tries it: `WEIR__…` overrides apply to the
/// embedded defaults too, and real `kubectl` reads and writes Events on them.
#[tokio::test(flavor = "multi_thread")]
async fn embedded_defaults_take_overrides_and_serve_the_events_api_to_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_owned();
    let weir = serve_embedded(dir, &[("WEIR__INGEST__MAX_EVENT_BYTES", "400")]);
    let small = json!([event("s1", "t", json!({"severity": "info"}))]);
    let (status, answer) = post_batch(&weir.url, &small).await;
    assert_eq!(status, 202, "{answer}");
    let big = json!([event(
        "b1",
        "t",
        json!({"severity": "info", "data": "x".repeat(500)})
    )]);
    let (status, answer) = post_batch(&weir.url, &big).await;
    assert_eq!(status, 413, "the override holds: {answer}");

    let kubectl = |args: &[&str]| {
        std::process::Command::new("kubectl")
            .arg(format!("--server={}", weir.url))
            .arg(format!("--cache-dir={}", home.join("kube-cache").display()))
            .args(args)
            .env("KUBECONFIG", home.join("no-kubeconfig"))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("kubectl runs")
    };
    let event = home.join("event.yaml");
    std::fs::write(
        &event,
        "apiVersion: v1\nkind: Event\nmetadata: { name: hello.1, namespace: default }\ninvolvedObject: { kind: Pod, name: hello, namespace: default }\nreason: Started\nmessage: hello from kubectl\ntype: Normal\n",
    )
    .unwrap();
    let created = kubectl(&["create", "-f", &event.display().to_string()]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let listed = kubectl(&["get", "events", "-A"]);
    let out = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(out.contains("hello from kubectl"), "{out}");
}

/// `--log-json`: every line weir writes to stderr, the listening address included, is one
/// JSON object with `timestamp`, `level`, `target` and `fields.message`, and a refused
/// request is logged with its fields.
#[tokio::test(flavor = "multi_thread")]
async fn log_json_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.yaml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndata_dir: {}\nroutes:\n  - {{ name: main, to: [tail] }}\n",
            data.display()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let weir = Weir::spawn_env(
        dir,
        &["--log-json", "serve", "--config", &config],
        &[("WEIR_LOG", "info")],
    );
    let (status, _) = post_batch(&weir.url, &json!([event("j1", "t", json!({}))])).await;
    assert_eq!(status, 202);
    let logs = weir.logs.clone();
    let (clean, _dir) = weir.terminate();
    assert!(clean);
    let lines = logs.lock().unwrap().clone();
    assert!(lines.len() >= 3, "{lines:?}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target"] {
            assert!(v[key].is_string(), "{key} in {line}");
        }
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
    assert!(lines
        .iter()
        .any(|l| message(l).starts_with("weir listening on http://")));
    assert!(
        lines.iter().any(|l| message(l).contains("stopped")),
        "{lines:?}"
    );
}
