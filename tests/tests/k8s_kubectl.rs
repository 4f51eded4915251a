//! Real `kubectl` against weir's Kubernetes Events API (embedded store): create from YAML,
//! get as a table, `-o json`, `-o yaml`, `-A`, the field selectors of the Activity proxy's
//! documentation, `--watch` seeing a new event, `kubectl events`, delete, strict field
//! validation and Kubernetes `Status` errors for bad input.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = "events_api: { enabled: true }\nroutes:\n  - { name: r, to: [tail] }\n";

/// A kubeconfig for `url` and an empty discovery cache, in `dir`.
fn kube_setup(dir: &Path, url: &str) {
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: weir\n  cluster: {{ server: \"{url}\" }}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: weir\n  context: {{ cluster: weir, user: u, namespace: default }}\ncurrent-context: weir\n"
    );
    std::fs::write(dir.join("kubeconfig"), config).unwrap();
}

fn kubectl_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("kubectl");
    c.args(args)
        .arg(format!("--cache-dir={}", dir.join("kube-cache").display()))
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .stdin(Stdio::null());
    c
}

fn kubectl(dir: &Path, args: &[&str]) -> Output {
    kubectl_cmd(dir, args).output().expect("kubectl runs")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "kubectl failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn event_yaml(ns: &str, name: &str, pod: &str, reason: &str, ty: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{ app: web }}\ninvolvedObject:\n  kind: Pod\n  name: {pod}\n  namespace: {ns}\nreason: {reason}\nmessage: {reason} on {pod}\ntype: {ty}\nsource: {{ component: kubelet, host: node-1 }}\nfirstTimestamp: \"2026-11-22T04:00:00Z\"\nlastTimestamp: \"2026-11-22T04:00:00Z\"\ncount: 1\n"
    )
}

#[test]
fn kubectl_creates_lists_selects_watches_and_deletes_events() {
    let weir = Weir::start(CONFIG);
    let dir = weir.dir.path().to_owned();
    kube_setup(&dir, &weir.url);
    let file = dir.join("events.yaml");
    let docs = [
        event_yaml("default", "my-pod.started", "my-pod", "Started", "Normal"),
        event_yaml("default", "my-pod.backoff", "my-pod", "BackOff", "Warning"),
        event_yaml("default", "other.pulled", "other", "Pulled", "Normal"),
        event_yaml("team-b", "b-pod.failed", "b-pod", "Failed", "Warning"),
    ]
    .join("---\n");
    std::fs::write(&file, docs).unwrap();
    // Default strict validation: kubectl finds `fieldValidation` in the OpenAPI v3 document.
    let out = ok(&kubectl(
        &dir,
        &["create", "-f", &file.display().to_string()],
    ));
    assert_eq!(out.matches("created").count(), 4, "{out}");

    // Human-readable table with the apiserver's columns.
    let table = ok(&kubectl(&dir, &["get", "events"]));
    let header = table.lines().next().unwrap();
    for col in ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"] {
        assert!(header.contains(col), "{table}");
    }
    assert_eq!(
        table.lines().count(),
        4,
        "three events in default:\n{table}"
    );
    assert!(
        table.contains("pod/my-pod") && table.contains("BackOff"),
        "{table}"
    );
    assert!(!table.contains("b-pod"), "{table}");

    // -o json: items with kind/apiVersion and server-set metadata.
    let json: Value =
        serde_json::from_str(&ok(&kubectl(&dir, &["get", "events", "-o", "json"]))).unwrap();
    let items = json["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    for item in items {
        assert_eq!(item["kind"], "Event");
        assert!(item["metadata"]["uid"].as_str().unwrap().len() == 36);
        assert!(item["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok());
    }
    let yaml = ok(&kubectl(
        &dir,
        &["get", "event", "my-pod.started", "-o", "yaml"],
    ));
    assert!(
        yaml.contains("reason: Started") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );

    // All namespaces.
    let all = ok(&kubectl(&dir, &["get", "events", "-A"]));
    assert!(all.starts_with("NAMESPACE"), "{all}");
    assert!(all.contains("team-b") && all.contains("b-pod"), "{all}");
    assert_eq!(all.lines().count(), 5, "{all}");

    // The field selectors from the Activity proxy's documentation.
    let by_pod = ok(&kubectl(
        &dir,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=my-pod",
            "-o",
            "name",
        ],
    ));
    let mut names: Vec<&str> = by_pod.lines().collect();
    names.sort();
    assert_eq!(names, vec!["event/my-pod.backoff", "event/my-pod.started"]);
    let warnings = ok(&kubectl(
        &dir,
        &[
            "get",
            "events",
            "-A",
            "--field-selector",
            "type=Warning",
            "-o",
            "name",
        ],
    ));
    let mut names: Vec<&str> = warnings.lines().collect();
    names.sort();
    assert_eq!(names, vec!["event/b-pod.failed", "event/my-pod.backoff"]);
    let not_normal = ok(&kubectl(
        &dir,
        &[
            "get",
            "events",
            "--field-selector",
            "type!=Normal,involvedObject.kind=Pod",
            "-o",
            "name",
        ],
    ));
    assert_eq!(not_normal.trim(), "event/my-pod.backoff");
    let labelled = ok(&kubectl(
        &dir,
        &["get", "events", "-l", "app in (web),app!=db", "-o", "name"],
    ));
    assert_eq!(labelled.lines().count(), 3);

    // `kubectl events` (the newer subcommand: list + client-side sort). `--for pod/x`
    // needs discovery of pods, which an events-only server does not serve.
    let events = ok(&kubectl(&dir, &["events"]));
    assert!(
        events.contains("BackOff") && events.contains("Started") && events.contains("Pulled"),
        "{events}"
    );
    assert!(!events.contains("b-pod"), "{events}");
    let warnings_only = ok(&kubectl(&dir, &["events", "-A", "--types=Warning"]));
    assert!(
        warnings_only.contains("b-pod") && !warnings_only.contains("Pulled"),
        "{warnings_only}"
    );

    // --watch sees an event created after it started.
    let mut watch = kubectl_cmd(
        &dir,
        &[
            "get",
            "events",
            "--watch",
            "--field-selector",
            "reason=Killing",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let later = dir.join("later.yaml");
    std::fs::write(
        &later,
        event_yaml("default", "my-pod.killing", "my-pod", "Killing", "Normal"),
    )
    .unwrap();
    ok(&kubectl(
        &dir,
        &["create", "-f", &later.display().to_string()],
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stdout = watch.stdout.take().unwrap();
    let seen = std::thread::spawn(move || {
        let mut buf = String::new();
        let mut chunk = [0u8; 4096];
        // Until the whole row is there (it may arrive in more than one read).
        let done = |b: &str| {
            b.lines()
                .any(|l| l.contains("Killing") && l.contains("pod/my-pod"))
        };
        while Instant::now() < deadline && !done(&buf) {
            match std::io::Read::read(&mut stdout, &mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
        buf
    });
    std::thread::sleep(Duration::from_secs(2));
    let _ = watch.kill();
    let _ = watch.wait();
    let seen = seen.join().unwrap();
    assert!(
        seen.contains("Killing") && seen.contains("pod/my-pod"),
        "watch printed: {seen}"
    );

    // Delete: kubectl waits until the event is gone.
    let deleted = ok(&kubectl(&dir, &["delete", "event", "my-pod.started"]));
    assert!(deleted.contains("deleted"), "{deleted}");
    let gone = kubectl(&dir, &["get", "event", "my-pod.started"]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "{gone:?}"
    );
}

#[test]
fn bad_input_gets_kubernetes_status_errors_and_the_store_survives_a_restart() {
    let weir = Weir::start(CONFIG);
    let dir = weir.dir.path().to_owned();
    kube_setup(&dir, &weir.url);
    let file = dir.join("e.yaml");
    std::fs::write(
        &file,
        event_yaml("default", "a.1", "a", "Started", "Normal"),
    )
    .unwrap();
    ok(&kubectl(
        &dir,
        &["create", "-f", &file.display().to_string()],
    ));
    // Name conflict: 409 AlreadyExists.
    let again = kubectl(&dir, &["create", "-f", &file.display().to_string()]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("AlreadyExists"),
        "{again:?}"
    );
    // An unknown field under strict validation.
    let typo = dir.join("typo.yaml");
    std::fs::write(
        &typo,
        event_yaml("default", "a.2", "a", "Started", "Normal").replace("reason:", "reson:"),
    )
    .unwrap();
    let strict = kubectl(&dir, &["create", "-f", &typo.display().to_string()]);
    let err = String::from_utf8_lossy(&strict.stderr);
    assert!(
        !strict.status.success() && err.contains("unknown field \"reson\""),
        "{err}"
    );
    // An invalid selector: 400 with the apiserver's message.
    let bad = kubectl(
        &dir,
        &["get", "events", "--field-selector", "spec.nodeName=x"],
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("field label not supported: spec.nodeName"),
        "{bad:?}"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let post = |body: &'static str| {
            let url = format!("{}/api/v1/namespaces/default/events", weir.url);
            async move { post(&url, &[("content-type", "application/json")], body).await }
        };
        let (code, status) = post("{not json").await;
        assert_eq!((code, status["kind"].as_str(), status["reason"].as_str()), (400, Some("Status"), Some("BadRequest")), "{status}");
        let (code, status) = post(r#"{"apiVersion":"apps/v1","kind":"Event","metadata":{"name":"x"}}"#).await;
        assert_eq!(code, 400, "{status}");
        assert!(status["message"].as_str().unwrap().contains("apps/v1"), "{status}");
        let (code, status) = post(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}"#).await;
        assert_eq!(code, 400, "{status}");
        let (code, status) = post(r#"{"metadata":{"name":"UPPER"}}"#).await;
        assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")), "{status}");
        assert_eq!(status["details"]["causes"][0]["field"], "metadata.name");
        let (code, status) = post(r#"{"metadata":{}}"#).await;
        assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")), "{status}");
        // events.k8s.io/v1 requires eventTime.
        let url = format!("{}/apis/events.k8s.io/v1/namespaces/default/events", weir.url);
        let (code, status) = post_to(&url, r#"{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"y"},"type":"Normal"}"#).await;
        assert_eq!((code, status["details"]["causes"][0]["field"].as_str()), (422, Some("eventTime")), "{status}");
        let (code, status) = get_json(&format!("{}/api/v1/namespaces/default/events/nope", weir.url)).await;
        assert_eq!((code, status["reason"].as_str()), (404, Some("NotFound")));
        assert_eq!(status["message"], "events \"nope\" not found");
        // Namespaces and names are DNS-1123 on every path, and what becomes a CloudEvent
        // attribute holds no control characters.
        for path in [
            "/api/v1/namespaces/Team_A/events",
            "/api/v1/namespaces/default/events/UPPER",
            "/apis/events.k8s.io/v1/namespaces/a%0Ab/events",
            "/api/v1/namespaces/default/events/a%00b",
        ] {
            let (code, status) = get_json(&format!("{}{path}", weir.url)).await;
            assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")), "{path}: {status}");
        }
        let url = format!("{}/api/v1/namespaces/Bad%0Ans/events", weir.url);
        let (code, status) = post_to(&url, r#"{"metadata":{"name":"x"}}"#).await;
        assert_eq!(code, 400, "{status}");
        assert!(status["message"].as_str().unwrap().starts_with("invalid namespace"), "{status}");
        let (code, status) = post(r#"{"metadata":{"name":"ctl"},"involvedObject":{"kind":"Pod","name":"p\nforged: yes"},"reason":"R"}"#).await;
        assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")), "{status}");
        assert_eq!(status["details"]["causes"][0]["field"], "involvedObject.name", "{status}");
        let (code, status) = post(r#"{"metadata":{"name":"ctl"},"reason":"a\u0007b"}"#).await;
        assert_eq!((code, status["details"]["causes"][0]["field"].as_str()), (422, Some("reason")), "{status}");
        let (code, status) = post(r#"{"metadata":{"name":"ctl"},"involvedObject":{"kind":"Pod","name":"p"},"message":"two\nlines"}"#).await;
        assert_eq!(code, 201, "a message may hold newlines: {status}");
    });
    // Restart: the event and its resourceVersion survive.
    let before: Value =
        serde_json::from_str(&ok(&kubectl(&dir, &["get", "event", "a.1", "-o", "json"]))).unwrap();
    let (clean, tmp) = weir.terminate();
    assert!(clean);
    let weir = Weir::start_in(tmp, CONFIG);
    kube_setup(&dir, &weir.url);
    let after: Value =
        serde_json::from_str(&ok(&kubectl(&dir, &["get", "event", "a.1", "-o", "json"]))).unwrap();
    assert_eq!(before["metadata"], after["metadata"]);
}

async fn post_to(url: &str, body: &'static str) -> (u16, Value) {
    post(url, &[("content-type", "application/json")], body).await
}

async fn get_json(url: &str) -> (u16, Value) {
    let (code, text) = get_text(url).await;
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn events_written_through_the_api_flow_on_to_routes_fed_by_k8s() {
    let config = [
        "events_api: { enabled: true }",
        "sinks:",
        "  out: { type: file, path: k8s.jsonl }",
        "routes:",
        "  - { name: r, to: [tail] }",
        "  - { name: upstream, from: [k8s], to: [out] }",
    ]
    .join("\n");
    let weir = Weir::start(&config);
    let dir = weir.dir.path().to_owned();
    kube_setup(&dir, &weir.url);
    let file = dir.join("e.yaml");
    std::fs::write(
        &file,
        event_yaml("default", "flow.1", "web", "Started", "Normal"),
    )
    .unwrap();
    ok(&kubectl(
        &dir,
        &["create", "-f", &file.display().to_string()],
    ));
    ok(&kubectl(&dir, &["delete", "event", "flow.1"]));
    let lines = weir.jsonl("k8s.jsonl");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["type"], "io.k8s.core.v1.Event");
    // The CloudEvent's subject is the involved object; the k8s* extensions name the rest.
    assert_eq!(lines[0]["subject"], "Pod/default/web");
    for (key, want) in [
        ("k8snamespace", "default"),
        ("k8sname", "flow.1"),
        ("k8sreason", "Started"),
        ("k8stype", "Normal"),
        ("k8skind", "Pod"),
        ("k8sobject", "web"),
        ("k8scomponent", "kubelet"),
        ("k8scount", "1"),
    ] {
        assert_eq!(lines[0][key], want, "{key}");
    }
    assert_eq!(lines[0]["k8schange"], "ADDED");
    assert_eq!(lines[0]["data"]["reason"], "Started");
    assert!(lines[0]["data"]["metadata"]["uid"].as_str().is_some());
    assert_eq!(lines[1]["k8schange"], "DELETED");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_asking_for_the_largest_timeout_streams_instead_of_panicking() {
    let weir = Weir::start(CONFIG);
    let http = reqwest::Client::new();
    // u64::MAX seconds: kube-apiserver would wait that long; weir caps it at a day. Before
    // the cap, adding it to the clock panicked the watch's task and the stream just ended.
    let mut watch = http
        .get(format!(
            "{}/api/v1/namespaces/default/events?watch=1&timeoutSeconds=18446744073709551615",
            weir.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), 200);
    let event = serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "after-the-watch", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
        "reason": "Started", "message": "started", "type": "Normal",
    });
    let created = http
        .post(format!("{}/api/v1/namespaces/default/events", weir.url))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let chunk = tokio::time::timeout(Duration::from_secs(10), watch.chunk())
        .await
        .expect("the watch streams")
        .unwrap()
        .expect("the watch is still open");
    let line = String::from_utf8_lossy(&chunk);
    assert!(line.contains("after-the-watch"), "{line}");
}
