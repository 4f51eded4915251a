//! The `weir` command line: config errors, send and tail, filter test, and a scaffolded
//! filter that builds and tests out of the box.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn config_errors_name_file_line_and_field_and_nothing_starts() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "routes:\n  - name: main\n    to: [tail]\n    on_falure: drop\n",
            ":4:",
            "on_falure",
        ),
        (
            "filters:\n  severity:\n    path: /nonexistent.wasm\nroutes:\n  - name: main\n    filters: [severty]\n    to: [tail]\n",
            ":6",
            "field `routes[0].filters[0]`: unknown filter `severty`",
        ),
        (
            "listen: [1, 2]\nroutes: []\n",
            ":1:",
            "field `listen`",
        ),
        (
            "routes:\n  - name: main\n    when:\n      - cesql: \"type LIKE severity\"\n    to: [tail]\n",
            ":4",
            "field `routes[0].when[0]`: CESQL syntax error at column 11: LIKE needs a string literal pattern",
        ),
    ];
    for (i, (yaml, location, message)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let out = Command::new(weir_bin())
            .args(["serve", "--config"])
            .current_dir(dir.path())
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} must not start");
        let expected = format!("{}{location}", path.display());
        assert!(
            stderr.contains(&expected),
            "case {i}: `{stderr}` should name `{expected}`"
        );
        assert!(
            stderr.contains(message),
            "case {i}: `{stderr}` should say `{message}`"
        );
    }
    // A filter that does not exist is named with its path.
    let path = dir.path().join("missing.yaml");
    std::fs::write(&path, "filters:\n  f:\n    path: /nonexistent.wasm\nroutes:\n  - name: main\n    filters: [f]\n    to: [tail]\n").unwrap();
    let out = Command::new(weir_bin())
        .args(["serve", "--config"])
        .current_dir(dir.path())
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("filter `f` (/nonexistent.wasm)"),
        "{stderr}"
    );
}

#[test]
fn send_and_tail_round_trip() {
    let weir = Weir::start(&format!(
        "filters:\n{}routes:\n  - name: main\n    filters: [severity]\n    to: [tail]\n",
        filter_yaml("severity", wasm::SEVERITY, "{ min: warning }")
    ));
    let mut tail = Command::new(weir_bin())
        .args(["tail", "--count", "2", "--url", &weir.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The tail subscribes asynchronously: keep sending (info is dropped, error arrives)
    // until two events came through, bounded in time.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    let mut n = 0;
    while lines.len() < 2 && Instant::now() < deadline {
        for severity in ["info", "error"] {
            n += 1;
            let out = Command::new(weir_bin())
                .args([
                    "send",
                    "--url",
                    &weir.url,
                    "--mode",
                    "binary",
                    "--type",
                    "com.example.cli",
                ])
                .args([
                    "--id",
                    &format!("cli-{n}"),
                    "--ext",
                    &format!("severity={severity}"),
                ])
                .args(["--data", r#"{"hello":"world"}"#])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(String::from_utf8_lossy(&out.stdout).starts_with("202 "));
        }
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(line);
        }
    }
    assert_eq!(lines.len(), 2, "tail printed {lines:?}");
    for line in &lines {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(e["severity"], "error", "only kept events are tailed: {e}");
        assert_eq!(e["data"]["hello"], "world");
    }
    let status = tail.wait().unwrap();
    assert!(status.success(), "tail --count 2 exits by itself");
}

#[test]
fn filter_test_prints_one_verdict_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(
        &input,
        [
            event("1", "t", serde_json::json!({"severity": "info"})),
            event("2", "t", serde_json::json!({"severity": "error"})),
        ]
        .iter()
        .map(|e| e.to_string() + "\n")
        .collect::<String>(),
    )
    .unwrap();
    let out = Command::new(weir_bin())
        .args(["filter", "test", wasm::SEVERITY, "--input"])
        .arg(&input)
        .args(["--config", r#"{"min":"warning"}"#])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["verdict"], "drop");
    assert_eq!(lines[0]["reason"], "below the minimum severity");
    assert_eq!(lines[1]["verdict"], "keep");
    assert_eq!(lines[1]["event"]["id"], "2");

    let out = Command::new(weir_bin())
        .args(["filter", "test", wasm::HOSTILE, "--input"])
        .arg(&input)
        .args(["--config", r#"{"mode":"reject-config"}"#])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rejected its configuration"));
}

#[test]
fn a_new_filter_builds_and_tests_out_of_the_box() {
    let dir = tempfile::tempdir().unwrap();
    let made = dir.path().join("made-here");
    let out = Command::new(weir_bin())
        .args(["filter", "new", "my-filter", "--dir"])
        .arg(&made)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The scaffold carries its SDK and names nothing outside its folder: moved elsewhere
    // (as to another machine), it builds without weir's source tree, offline.
    let manifest = std::fs::read_to_string(made.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains(r#"weir-guest = { path = "weir-sdk/weir-guest" }"#),
        "{manifest}"
    );
    assert!(!manifest.contains(&*root().to_string_lossy()), "{manifest}");
    let crate_dir = dir.path().join("elsewhere/my-filter");
    std::fs::create_dir_all(crate_dir.parent().unwrap()).unwrap();
    std::fs::rename(&made, &crate_dir).unwrap();
    for file in [
        "weir-sdk/weir-guest/src/lib.rs",
        "weir-sdk/weir-abi/src/batch.rs",
        "weir-sdk/wit/filter.wit",
        "Cargo.lock",
    ] {
        assert!(crate_dir.join(file).is_file(), "{file} is missing");
    }
    // Its own target directory, shared across runs, so its dependencies build once.
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().join("scaffold");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Not through a rustc wrapper (scripts/coverage's would instrument the wasm build).
    let test = Command::new(&cargo)
        .args(["test", "--quiet", "--offline", "--manifest-path"])
        .arg(crate_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTC_WRAPPER")
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "cargo test in the scaffold failed:\n{}\n{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(String::from_utf8_lossy(&test.stdout).contains("1 passed"));
    let build = Command::new(weir_bin())
        .args(["filter", "build"])
        .arg(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_NET_OFFLINE", "true")
        .env_remove("RUSTC_WRAPPER")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = String::from_utf8_lossy(&build.stdout).trim().to_owned();
    assert!(wasm.ends_with("my_filter.wasm"), "{wasm}");
    // The built component runs in the router's runtime.
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        event("1", "noise", serde_json::json!({})).to_string()
            + "\n"
            + &event("2", "signal", serde_json::json!({})).to_string(),
    )
    .unwrap();
    let out = Command::new(weir_bin())
        .args(["filter", "test", &wasm, "--input"])
        .arg(&input)
        .args(["--config", r#"{"drop_types":["noise"]}"#])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["verdict"], "drop");
    assert_eq!(lines[1]["event"]["filtered"], "true");

    // `weir filter dev --once`: build, the sample's verdicts, and a push to a running
    // router, whose admin token the CLI finds by itself.
    let weir = Weir::start("routes:\n  - { name: main, to: [tail] }\n");
    let dev = Command::new(weir_bin())
        .args(["filter", "dev"])
        .arg(&crate_dir)
        .args(["--once", "--name", "my-filter", "--input"])
        .arg(&input)
        .args([
            "--config",
            r#"{"drop_types":["noise"]}"#,
            "--url",
            &weir.url,
        ])
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_NET_OFFLINE", "true")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("WEIR_TOKEN")
        .env("XDG_CONFIG_HOME", weir.dir.path().join("config"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&dev.stdout);
    assert!(
        dev.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&dev.stderr)
    );
    assert!(stdout.contains(r#""verdict":"drop""#), "{stdout}");
    let list = Command::new(weir_bin())
        .args(["filter", "list", "--url", &weir.url])
        .env("XDG_CONFIG_HOME", weir.dir.path().join("config"))
        .env_remove("WEIR_TOKEN")
        .output()
        .unwrap();
    let filters: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let pushed = filters["filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "my-filter")
        .unwrap_or_else(|| panic!("my-filter was not pushed: {filters}"));
    assert_eq!(pushed["active"], 1, "{filters}");
}

#[test]
fn spill_inspect_prints_a_files_events_and_names_corrupt_files() {
    use weir::toggle::pb::events::{
        event::EventPayload, service_event, Event, ServiceEvent, ServiceStatusPayload,
    };
    use weir::toggle::wire::WireBatch;
    let dir = tempfile::tempdir().unwrap();
    let spill =
        weir::toggle::spill::SpillDir::open(dir.path(), 1 << 30, Default::default()).unwrap();
    let typed = weir::toggle::pb::EventBatch {
        batch_id: "b".into(),
        batch_timestamp: 1_000,
        events: (0..3)
            .map(|i| Event {
                event_id: format!("e{i}"),
                level: 2,
                category: 5,
                source: "rodent://n".into(),
                timestamp: 1_000 + i,
                metadata: Default::default(),
                event_payload: Some(EventPayload::ServiceEvent(ServiceEvent {
                    event_type: Some(service_event::EventType::StatusEvent(
                        ServiceStatusPayload {
                            service_name: "zfs".into(),
                            status: "running".into(),
                            pid: 7,
                            uptime_seconds: 60,
                            operation: 1,
                        },
                    )),
                })),
            })
            .collect(),
    };
    let batch: WireBatch =
        prost::Message::decode(prost::Message::encode_to_vec(&typed).as_slice()).unwrap();
    let file = spill.write(&batch).unwrap().path;
    let out = Command::new(weir_bin())
        .args(["spill", "inspect"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["id"], "e2");
    assert_eq!(lines[0]["type"], "io.toggle.service.status");
    assert_eq!(lines[0]["level"], "WARN");
    assert_eq!(lines[0]["severity"], "warning");
    assert_eq!(lines[0]["dataschema"], "proto:rodent.events.ServiceEvent");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let out = Command::new(weir_bin())
        .args(["spill", "inspect"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupt"));
}

#[test]
fn the_cli_finds_a_local_routers_generated_token_from_any_folder() {
    // No admin tokens configured: the router generates one and records its file for the
    // CLI in the per-user config (here a temporary XDG_CONFIG_HOME).
    let weir = Weir::start("routes:\n  - { name: main, to: [tail] }\n");
    let config_home = weir.dir.path().join("config");
    let recorded = std::fs::read_to_string(config_home.join("weir/routers.json")).unwrap();
    assert!(recorded.contains(&weir.url), "{recorded}");
    assert!(
        !recorded.contains(&weir.admin_auth().replace("Bearer ", "")),
        "only paths are recorded"
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let list = |env: &[(&str, &std::ffi::OsStr)]| {
        Command::new(weir_bin())
            .args(["filter", "list", "--url", &weir.url])
            .current_dir(elsewhere.path())
            .env_remove("WEIR_TOKEN")
            .env_remove("WEIR_DATA_DIR")
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .output()
            .unwrap()
    };
    // From another folder, without --token-file: through the per-user record.
    let out = list(&[("XDG_CONFIG_HOME", config_home.as_os_str())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Through WEIR_DATA_DIR, with no record.
    let empty = elsewhere.path().join("no-config");
    let data = weir.dir.path().join("data");
    let out = list(&[
        ("XDG_CONFIG_HOME", empty.as_os_str()),
        ("WEIR_DATA_DIR", data.as_os_str()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // WEIR_DATA_DIR's token is never sent to a router on another machine.
    let out = Command::new(weir_bin())
        .args(["filter", "list", "--url", "http://192.0.2.1:9"])
        .env("XDG_CONFIG_HOME", &empty)
        .env("WEIR_DATA_DIR", &data)
        .env_remove("WEIR_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the router is not on this machine"),
        "{stderr}"
    );
    // With neither, the CLI says where it looked.
    let out = list(&[("XDG_CONFIG_HOME", empty.as_os_str())]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("weir-data/admin-token"), "{stderr}");
}

#[test]
fn weir_sdk_unpacks_a_self_contained_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(weir_bin())
        .args(["sdk"])
        .arg(dir.path().join("sdk"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let guest = std::fs::read_to_string(dir.path().join("sdk/weir-guest/Cargo.toml")).unwrap();
    // Nothing inherited from weir's workspace: the copy is a crate of its own.
    assert!(!guest.contains("workspace"), "{guest}");
    assert!(
        guest.contains("weir-abi = { path = \"../weir-abi\" }"),
        "{guest}"
    );
    // Every source file of the SDK, byte for byte.
    for (from, to) in [
        ("guest-sdk/src", "weir-guest/src"),
        ("abi/src", "weir-abi/src"),
        ("wit", "wit"),
    ] {
        for entry in std::fs::read_dir(root().join(from)).unwrap() {
            let entry = entry.unwrap();
            let copy = dir.path().join("sdk").join(to).join(entry.file_name());
            assert_eq!(
                std::fs::read(&copy).unwrap_or_default(),
                std::fs::read(entry.path()).unwrap(),
                "{}",
                copy.display()
            );
        }
    }
}
