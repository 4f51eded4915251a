//! The cluster syncer end to end: weir S watches a downstream cluster's Events with
//! kube-rs and writes them to an upstream Kubernetes API with kube-rs. Both clusters are
//! weir Events API instances (embedded store) on TLS, reached through kubeconfigs with
//! generated client certificates, which kube-rs talks to exactly as to a real API server.

#![allow(clippy::unwrap_used)]

mod common;

use common::pki::Pki;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// A cluster played by weir: its kubeconfig (client certificate `syncer`) and an HTTPS
/// client for the test's own reads and writes.
struct Cluster {
    weir: Weir,
    kubeconfig: String,
    http: reqwest::Client,
    base: String,
    listen: String,
    config: String,
}

fn cluster_config(dir: &Path, servers: &Pki, users: &Pki, name: &str) -> String {
    let (cert, key) = servers.issue(name, &["localhost"]);
    std::fs::write(dir.join("server.pem"), cert).unwrap();
    std::fs::write(dir.join("server.key"), key).unwrap();
    std::fs::write(dir.join("users-ca.pem"), &users.ca_pem).unwrap();
    format!(
        "tls: {{ cert: {0}/server.pem, key: {0}/server.key, client_ca: {0}/users-ca.pem }}\nevents_api: {{ enabled: true }}\nroutes: [ {{ name: r, to: [tail] }} ]\n",
        dir.display()
    )
}

fn start_cluster(servers: &Pki, users: &Pki, name: &str, kube_dir: &Path) -> Cluster {
    start_cluster_with(
        servers,
        users,
        name,
        kube_dir,
        "events_api: { enabled: true }",
    )
}

/// A cluster whose `events_api` line is `events_api`.
fn start_cluster_with(
    servers: &Pki,
    users: &Pki,
    name: &str,
    kube_dir: &Path,
    events_api: &str,
) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let config = cluster_config(dir.path(), servers, users, name)
        .replace("events_api: { enabled: true }", events_api);
    let weir = Weir::start_in(dir, &config);
    let base = weir.url.replace("127.0.0.1", "localhost");
    let listen = weir.url.trim_start_matches("https://").to_owned();
    let (cert, key) = users.issue("syncer", &[]);
    let (cert_path, key_path) = (
        kube_dir.join(format!("{name}-syncer.pem")),
        kube_dir.join(format!("{name}-syncer.key")),
    );
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    std::fs::write(kube_dir.join("servers-ca.pem"), &servers.ca_pem).unwrap();
    let kubeconfig = kube_dir.join(format!("{name}.kubeconfig"));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster: {{ server: \"{base}\", certificate-authority: {} }}\nusers:\n- name: syncer\n  user: {{ client-certificate: {}, client-key: {} }}\ncontexts:\n- name: {name}\n  context: {{ cluster: {name}, user: syncer }}\ncurrent-context: {name}\n",
            kube_dir.join("servers-ca.pem").display(),
            cert_path.display(),
            key_path.display()
        ),
    )
    .unwrap();
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(servers.ca_pem.as_bytes()).unwrap())
        .identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap())
        .build()
        .unwrap();
    Cluster {
        weir,
        kubeconfig: kubeconfig.display().to_string(),
        http,
        base,
        listen,
        config,
    }
}

impl Cluster {
    /// Creates an event about pod `object`; every other create helper comes here.
    async fn create_event(&self, name: &str, object: &str, ty: &str, reason: &str, message: &str) {
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": object, "namespace": "default"},
            "reason": reason, "message": message, "type": ty,
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2026-12-06T10:00:00Z", "lastTimestamp": "2026-12-06T10:00:00Z",
            "count": 1,
        });
        let resp = self
            .http
            .post(format!("{}/api/v1/namespaces/default/events", self.base))
            .json(&event)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    }

    async fn create(&self, name: &str, object: &str) {
        let message = format!("back-off restarting {object}");
        self.create_event(name, object, "Warning", "BackOff", &message)
            .await
    }

    async fn events(&self) -> Vec<Value> {
        let list: Value = self
            .http
            .get(format!("{}/api/v1/events", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut items = list["items"].as_array().cloned().unwrap_or_default();
        items.sort_by_key(|e| e["metadata"]["name"].as_str().unwrap_or("").to_owned());
        items
    }

    /// Waits until the cluster holds `n` events (at most 30 s).
    async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let events = self.events().await;
            if events.len() >= n || Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The syncer: the watch of `downstream`, the `k8s-transform` filter (built from
/// `filters/` in this test run), the upstream sink and a file of what the route saw.
fn syncer_config(downstream: &Cluster, upstream: &Cluster) -> String {
    format!(
        "k8s_watch:\n  linger_ms: 20\n  clusters:\n    - {{ name: east, kubeconfig: {}, sync_target: east-target }}\n\
filters:\n  k8s-transform: {{ path: {}, config: {{ namespace_prefix: east-, labels: {{ synced: \"yes\" }} }} }}\n\
sinks:\n  upstream: {{ type: kubernetes, kubeconfig: {} }}\n  seen: {{ type: file, path: seen.jsonl }}\n\
routes:\n  - {{ name: sync, from: [k8s-watch], filters: [k8s-transform], to: [upstream, seen] }}\n",
        downstream.kubeconfig,
        wasm::K8S_TRANSFORM,
        upstream.kubeconfig
    )
}

async fn metrics_of(weir: &Weir) -> String {
    get_text(&format!("{}/metrics", weir.url)).await.1
}

/// Waits until `f` holds of the syncer's metrics (at most 30 s).
async fn wait_metrics(weir: &Weir, what: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics_of(weir).await;
        if f(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the syncer's file sink holds `n` lines, then a little longer to see that
/// no more come.
async fn settled_lines(weir: &Weir, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while weir.jsonl("seen.jsonl").len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    weir.jsonl("seen.jsonl")
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_copied_upstream_once_patched_on_repeat_and_never_re_emitted() {
    let kube_dir = tempfile::tempdir().unwrap();
    let (servers, users) = (Pki::new("servers CA"), Pki::new("users CA"));
    let down = start_cluster(&servers, &users, "east", kube_dir.path());
    let up = start_cluster(&servers, &users, "kcp", kube_dir.path());
    for i in 0..20 {
        down.create(&format!("e{i:02}"), &format!("pod-{}", i % 5))
            .await;
    }

    // What the cluster held before the syncer started is listed and copied.
    let syncer = Weir::start(&syncer_config(&down, &up));
    let copied = up.wait_for(20).await;
    assert_eq!(copied.len(), 20);
    let downstream = down.events().await;
    for (d, u) in downstream.iter().zip(&copied) {
        // Transformed as the kcp syncer does: name, namespaces, labels, annotations.
        let name = d["metadata"]["name"].as_str().unwrap();
        assert_eq!(u["metadata"]["name"], format!("east-target-{name}"));
        assert_eq!(u["metadata"]["namespace"], "east-default");
        assert_eq!(u["involvedObject"]["namespace"], "east-default");
        assert_eq!(u["involvedObject"]["name"], d["involvedObject"]["name"]);
        assert_eq!(u["message"], d["message"]);
        assert_eq!(u["metadata"]["labels"]["kcp.io/sync-target"], "east-target");
        assert_eq!(u["metadata"]["labels"]["synced"], "yes");
        assert_eq!(
            u["metadata"]["annotations"]["kcp.io/source-cluster"],
            "east"
        );
        assert!(u["metadata"]["annotations"]["kcp.io/synced-at"].is_string());
        assert_ne!(
            u["metadata"]["uid"], d["metadata"]["uid"],
            "uid cleared on create"
        );
    }
    // Each as a CloudEvent of the documented shape.
    let lines = settled_lines(&syncer, 20).await;
    assert_eq!(lines.len(), 20);
    let first = lines
        .iter()
        .find(|e| e["k8sname"] == "east-target-e00")
        .expect("e00 handed on");
    assert_eq!(first["type"], "io.k8s.core.v1.Event");
    assert_eq!(first["subject"], "Pod/east-default/pod-0");
    assert_eq!(first["k8scluster"], "east");
    assert_eq!(first["k8ssynctarget"], "east-target");
    assert_eq!(first["k8sreason"], "BackOff");
    assert_eq!(first["k8stype"], "Warning");
    assert_eq!(
        first["source"],
        "/clusters/east/api/v1/namespaces/default/events"
    );
    let uid = downstream[0]["metadata"]["uid"].as_str().unwrap();
    assert!(first["id"].as_str().unwrap().starts_with(uid), "{first}");

    // A repeat (the count went up) patches the upstream event: no second event.
    let resp = down
        .http
        .patch(format!(
            "{}/api/v1/namespaces/default/events/e00",
            down.base
        ))
        .header("content-type", "application/merge-patch+json")
        .body(
            r#"{"count": 5, "lastTimestamp": "2026-12-06T10:05:00Z", "message": "back-off again"}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let e00 = loop {
        let events = up.events().await;
        let e00 = events[0].clone();
        if e00["count"] == 5 || Instant::now() > deadline {
            assert_eq!(events.len(), 20, "patched, not created");
            break e00;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(e00["count"], 5, "{e00}");
    assert_eq!(e00["message"], "back-off again");
    assert_eq!(e00["lastTimestamp"], "2026-12-06T10:05:00Z");
    let text = metrics_of(&syncer).await;
    assert_eq!(
        metric(
            &text,
            "weir_k8s_upstream_writes_total{outcome=\"patched\",sink=\"upstream\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(settled_lines(&syncer, 21).await.len(), 21);

    // Restart the syncer: the relist finds only what it delivered; nothing re-emitted.
    let (clean, dir) = syncer.terminate();
    assert!(clean, "the syncer stopped cleanly");
    let syncer = Weir::start_in(dir, &syncer_config(&down, &up));
    wait_metrics(&syncer, "20 deduplicated after the restart", |m| {
        metric(
            m,
            "weir_k8s_watch_events_total{cluster=\"east\",outcome=\"deduplicated\"}",
        ) == Some(20.0)
    })
    .await;
    assert_eq!(
        settled_lines(&syncer, 21).await.len(),
        21,
        "nothing re-emitted"
    );
    down.create("e20", "pod-new").await;
    assert_eq!(up.wait_for(21).await.len(), 21);
    assert_eq!(settled_lines(&syncer, 22).await.len(), 22);

    // Restart the downstream API: the watch breaks, backs off, resumes (or relists), and
    // goes on without re-emitting what it delivered.
    let Cluster {
        weir: down_weir,
        kubeconfig,
        http,
        base,
        listen,
        config,
    } = down;
    let (_, down_dir) = down_weir.terminate();
    wait_metrics(&syncer, "the watch noticed the downstream was gone", |m| {
        metric(m, "weir_k8s_watch_up{cluster=\"east\"}") == Some(0.0)
    })
    .await;
    // The watch's health in /readyz?verbose: failing, but informational — the router
    // stays ready while one downstream cluster is away.
    let (status, ready) = get_text(&format!("{}/readyz?verbose", syncer.url)).await;
    assert_eq!(status, 200, "{ready}");
    assert!(
        ready.contains("[-]k8s-watch/east failed (informational): ")
            && ready.ends_with("readyz check passed\n"),
        "{ready}"
    );
    let down = Cluster {
        weir: Weir::start_at(down_dir, &listen, &config),
        kubeconfig,
        http,
        base,
        listen,
        config,
    };
    wait_metrics(&syncer, "watching again after the restart", |m| {
        metric(m, "weir_k8s_watch_up{cluster=\"east\"}") == Some(1.0)
            && metric(m, "weir_k8s_watch_errors_total{cluster=\"east\"}").unwrap_or(0.0) >= 1.0
    })
    .await;
    let (_, ready) = get_text(&format!("{}/readyz?verbose", syncer.url)).await;
    assert!(ready.contains("[+]k8s-watch/east ok\n"), "{ready}");
    down.create("e21", "pod-new").await;
    assert_eq!(up.wait_for(22).await.len(), 22);
    let lines = settled_lines(&syncer, 23).await;
    assert_eq!(lines.len(), 23, "only the new event after the relist");
    let names: std::collections::BTreeSet<&str> = lines
        .iter()
        .map(|e| e["k8sname"].as_str().unwrap())
        .collect();
    assert_eq!(
        names.len(),
        22,
        "e00 twice (created, then its repeat), every other once"
    );
}

impl Cluster {
    /// Creates an event of `ty` and `reason` for pod `object`.
    async fn create_typed(&self, name: &str, object: &str, ty: &str, reason: &str) {
        let message = format!("{reason} on {object}");
        self.create_event(name, object, ty, reason, &message).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_k8s_filter_policy_decides_what_syncs_and_a_replacement_applies_from_the_next_batch() {
    let kube_dir = tempfile::tempdir().unwrap();
    let (servers, users) = (Pki::new("servers CA"), Pki::new("users CA"));
    let down = start_cluster(&servers, &users, "east", kube_dir.path());
    let up = start_cluster(&servers, &users, "kcp", kube_dir.path());
    let config = format!(
        "k8s_watch:\n  linger_ms: 20\n  clusters:\n    - {{ name: east, kubeconfig: {} }}\n\
filters:\n  k8s-filter: {{ path: {}, config: {{ minimum_severity: Warning, exclude_reasons: [\"Probe*\"] }} }}\n\
sinks:\n  upstream: {{ type: kubernetes, kubeconfig: {} }}\n\
routes:\n  - {{ name: sync, from: [k8s-watch], filters: [k8s-filter], to: [upstream] }}\n",
        down.kubeconfig,
        wasm::K8S_FILTER,
        up.kubeconfig
    );
    let syncer = Weir::start(&config);
    down.create_typed("n1", "web", "Normal", "Pulled").await;
    down.create_typed("w1", "web", "Warning", "BackOff").await;
    down.create_typed("w2", "web", "Warning", "ProbeFailed")
        .await;
    down.create_typed("w3", "db", "Warning", "FailedMount")
        .await;
    let names = |events: Vec<Value>| -> Vec<String> {
        events
            .iter()
            .map(|e| e["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(up.wait_for(2).await), ["w1", "w3"]);

    // Replace the policy through the admin API: Normal events pass, BackOff does not.
    let wasm = std::fs::read(wasm::K8S_FILTER).unwrap();
    let resp = reqwest::Client::new()
        .put(format!("{}/v1/filters/k8s-filter", syncer.url))
        .header("authorization", syncer.admin_auth())
        .header(
            "x-weir-filter-config",
            r#"{"exclude_reasons": ["BackOff"]}"#,
        )
        .body(wasm)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    down.create_typed("n2", "web", "Normal", "Pulled").await;
    down.create_typed("w4", "web", "Warning", "BackOff").await;
    down.create_typed("w5", "web", "Warning", "ProbeFailed")
        .await;
    assert_eq!(names(up.wait_for(4).await), ["n2", "w1", "w3", "w5"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(up.events().await.len(), 4, "w4 stayed out");
    let text = metrics_of(&syncer).await;
    assert!(text.contains("filtered_by_severity"), "{text}");
}

/// The syncer with the whole policy: `k8s-correlate` then `k8s-transform`.
fn correlating_syncer_config(downstream: &Cluster, upstream: &Cluster) -> String {
    format!(
        "k8s_watch:\n  linger_ms: 20\n  clusters:\n    - {{ name: east, kubeconfig: {} }}\n\
filters:\n  k8s-correlate: {{ path: {}, config: {{ flush_seconds: 1 }} }}\n  k8s-transform: {{ path: {}, config: {{ rename: false }} }}\n\
sinks:\n  upstream: {{ type: kubernetes, kubeconfig: {} }}\n\
routes:\n  - {{ name: sync, from: [k8s-watch], filters: [k8s-correlate, k8s-transform], to: [upstream] }}\n",
        downstream.kubeconfig,
        wasm::K8S_CORRELATE,
        wasm::K8S_TRANSFORM,
        upstream.kubeconfig
    )
}

impl Cluster {
    /// Creates a Warning event about pod `object` with this reason and message.
    async fn create_message(&self, name: &str, object: &str, reason: &str, message: &str) {
        self.create_event(name, object, "Warning", reason, message)
            .await
    }

    /// Sets a downstream event's count (the producer's correlator counting a repeat).
    async fn recount(&self, name: &str, count: u64) {
        let resp = self
            .http
            .patch(format!(
                "{}/api/v1/namespaces/default/events/{name}",
                self.base
            ))
            .header("content-type", "application/merge-patch+json")
            .body(json!({"count": count}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }

    /// Waits until `f` holds of the cluster's events (at most 30 s); returns them.
    async fn wait_until(&self, what: &str, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        self.wait_until_within(what, Duration::from_secs(30), f)
            .await
    }

    /// Waits until `f` holds of the cluster's events (at most `limit`); returns them.
    async fn wait_until_within(
        &self,
        what: &str,
        limit: Duration,
        f: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let events = self.events().await;
            if f(&events) {
                return events;
            }
            if Instant::now() > deadline {
                let shown: Vec<&Value> = events.iter().take(50).collect();
                panic!(
                    "{what}: not within {limit:?}; {} events, {} aggregates; the first: {shown:#?}",
                    events.len(),
                    aggregates(&events).len()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Events `flap-<i>` about pod `web`, one reason, a different message each.
async fn flap(cluster: &Cluster, range: std::ops::Range<usize>) {
    for i in range {
        let (name, message) = (format!("flap-{i:02}"), format!("back-off {i}"));
        cluster
            .create_message(&name, "web", "BackOff", &message)
            .await;
    }
}

fn aggregates(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| is_aggregate(e)).collect()
}

fn is_aggregate(event: &Value) -> bool {
    event["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("(combined from similar events): "))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_storm_is_correlated_upstream_and_a_pending_aggregate_outlives_a_restart() {
    let kube_dir = tempfile::tempdir().unwrap();
    let (servers, users) = (Pki::new("servers CA"), Pki::new("users CA"));
    let down = start_cluster(&servers, &users, "east", kube_dir.path());
    let up = start_cluster(&servers, &users, "kcp", kube_dir.path());
    let syncer = Weir::start(&correlating_syncer_config(&down, &up));
    // A flapping pod: twelve different messages of one reason. Nine pass as they are;
    // from the tenth they are folded into one aggregate, flushed by the tick.
    flap(&down, 0..12).await;
    // A repeating event: its producer counts it up to 5.
    down.create_message("pull", "db", "Pulled", "image pulled")
        .await;
    for count in 2..=5 {
        down.recount("pull", count).await;
    }
    let events = up
        .wait_until(
            "9 single events, the aggregate of 3, the repeat at 5",
            |e| {
                let agg = aggregates(e);
                agg.len() == 1
                    && agg[0]["count"] == 3
                    && e.iter()
                        .any(|x| x["metadata"]["name"] == "pull" && x["count"] == 5)
            },
        )
        .await;
    assert_eq!(events.len(), 11, "9 + 1 aggregate + 1 repeat: {events:#?}");
    let aggregate_name = aggregates(&events)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(aggregate_name.starts_with("web."), "{aggregate_name}");
    // The single events name the aggregate of their group.
    let linked = events
        .iter()
        .filter(|e| {
            e["metadata"]["annotations"]["events.weir.dev/aggregate"] == aggregate_name.as_str()
        })
        .count();
    assert_eq!(linked, 10, "nine single events and the aggregate itself");

    // Restart the syncer; meanwhile the storm goes on. The pending aggregate is in the
    // durable filter state: after the restart it grows under the same name.
    let (clean, dir) = syncer.terminate();
    assert!(clean);
    flap(&down, 12..15).await;
    let syncer = Weir::start_in(dir, &correlating_syncer_config(&down, &up));
    let events = up
        .wait_until("the aggregate at 6 after the restart", |e| {
            aggregates(e).first().is_some_and(|a| a["count"] == 6)
        })
        .await;
    assert_eq!(
        events.len(),
        11,
        "no new event, the aggregate patched: {events:#?}"
    );
    assert_eq!(
        aggregates(&events)[0]["metadata"]["name"],
        aggregate_name.as_str()
    );
    drop(syncer);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_cluster_syncs_into_its_own_kcp_workspace() {
    let kube_dir = tempfile::tempdir().unwrap();
    let (servers, users) = (Pki::new("servers CA"), Pki::new("users CA"));
    let east = start_cluster(&servers, &users, "east", kube_dir.path());
    let west = start_cluster(&servers, &users, "west", kube_dir.path());
    // The upstream plays a kcp: `/clusters/<workspace>/…`, each its own event space.
    let kcp_dir = tempfile::tempdir().unwrap();
    let kcp_config = cluster_config(kcp_dir.path(), &servers, &users, "kcp").replace(
        "events_api: { enabled: true }",
        "events_api: { enabled: true, workspaces: { enabled: true, max: 4 } }",
    );
    let kcp_weir = Weir::start_in(kcp_dir, &kcp_config);
    let kcp_base = kcp_weir.url.replace("127.0.0.1", "localhost");
    let (cert, key) = users.issue("syncer", &[]);
    std::fs::write(kube_dir.path().join("kcp-syncer.pem"), &cert).unwrap();
    std::fs::write(kube_dir.path().join("kcp-syncer.key"), &key).unwrap();
    let kcp_kubeconfig = kube_dir.path().join("kcp.kubeconfig");
    std::fs::write(
        &kcp_kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kcp\n  cluster: {{ server: \"{kcp_base}\", certificate-authority: {0}/servers-ca.pem }}\nusers:\n- name: syncer\n  user: {{ client-certificate: {0}/kcp-syncer.pem, client-key: {0}/kcp-syncer.key }}\ncontexts:\n- name: kcp\n  context: {{ cluster: kcp, user: syncer }}\ncurrent-context: kcp\n",
            kube_dir.path().display()
        ),
    )
    .unwrap();
    let config = format!(
        "k8s_watch:\n  linger_ms: 20\n  clusters:\n    - {{ name: east, kubeconfig: {}, workspace: \"root:acme:prod\" }}\n    - {{ name: west, kubeconfig: {}, workspace: \"root:acme:staging\" }}\n\
sinks:\n  upstream: {{ type: kubernetes, kubeconfig: {} }}\n\
routes:\n  - {{ name: sync, from: [k8s-watch], to: [upstream] }}\n  - {{ name: producers, from: [http], to: [upstream] }}\n",
        east.kubeconfig,
        west.kubeconfig,
        kcp_kubeconfig.display()
    );
    let syncer = Weir::start(&config);
    // A producer naming a workspace no watched cluster names is refused (dead-lettered):
    // it cannot steer writes into another workspace of the upstream.
    let core = json!({
        "metadata": {"name": "steered", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
        "reason": "BackOff", "message": "steered", "type": "Warning", "count": 1,
    });
    let (status, body) = post_batch(
        &syncer.url,
        &json!([event(
            "steer-1",
            "io.k8s.core.v1.Event",
            json!({"k8sworkspace": "root:other", "data": core})
        )]),
    )
    .await;
    assert!(status < 300, "{status} {body}");
    wait_metrics(
        &syncer,
        "the steered event refused and dead-lettered",
        |t| {
            metric(
                t,
                "weir_k8s_upstream_writes_total{outcome=\"failed\",sink=\"upstream\"}",
            ) == Some(1.0)
                && metric_sum(t, "weir_dead_letters_total") == 1.0
        },
    )
    .await;
    let letters = syncer.jsonl("dead-letter.jsonl");
    assert_eq!(letters.len(), 1);
    assert!(reason(&letters[0]).contains("root:other"), "{}", letters[0]);
    // The same name in both clusters: no clash, each in its workspace.
    east.create_message("same", "web", "BackOff", "east's")
        .await;
    west.create_message("same", "web", "BackOff", "west's")
        .await;
    west.create_message("only-west", "db", "BackOff", "west's too")
        .await;
    // A client without credentials is refused before any workspace is opened: it cannot
    // use up `max` or leave stores behind.
    let stranger = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(servers.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    for ws in ["root:junk-1", "root:junk-2"] {
        let resp = stranger
            .get(format!("{kcp_base}/clusters/{ws}/api/v1/events"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{ws}");
    }
    let opened: Vec<String> = std::fs::read_dir(kcp_weir.data("workspaces"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(!opened.iter().any(|w| w.contains("junk")), "{opened:?}");
    let http = &east.http;
    let list = |ws: &'static str| {
        let url = format!("{kcp_base}/clusters/{ws}/api/v1/events");
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let list: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
                let items = list["items"].as_array().cloned().unwrap_or_default();
                if items.len() >= if ws.ends_with("prod") { 1 } else { 2 }
                    || Instant::now() > deadline
                {
                    return items;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let prod = list("root:acme:prod").await;
    let staging = list("root:acme:staging").await;
    assert_eq!(prod.len(), 1, "{prod:?}");
    assert_eq!(prod[0]["message"], "east's");
    assert_eq!(staging.len(), 2, "{staging:?}");
    assert!(staging
        .iter()
        .any(|e| e["metadata"]["name"] == "same" && e["message"] == "west's"));
    // The root space and other workspaces hold none of it.
    for path in ["/api/v1/events", "/clusters/root:other/api/v1/events"] {
        let held: Value = http
            .get(format!("{kcp_base}{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            held["items"].as_array().map(Vec::len),
            Some(0),
            "{path}: {held}"
        );
    }
    // Real kubectl, pointed at a workspace as at a cluster.
    let kdir = kube_dir.path();
    let workspace_config = std::fs::read_to_string(&kcp_kubeconfig).unwrap().replace(
        &format!("server: \"{kcp_base}\""),
        &format!("server: \"{kcp_base}/clusters/root:acme:staging\""),
    );
    std::fs::write(kdir.join("staging.kubeconfig"), workspace_config).unwrap();
    let out = std::process::Command::new("kubectl")
        .args(["get", "events", "-A", "-o", "name"])
        .arg(format!("--cache-dir={}", kdir.join("kube-cache").display()))
        .env("KUBECONFIG", kdir.join("staging.kubeconfig"))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["event/only-west", "event/same"],
        "{names}"
    );
    drop(kcp_weir);
}

/// Creates `events` (name, object, reason, message) in a cluster, 16 at a time.
async fn create_many(cluster: &Cluster, events: Vec<(String, String, String, String)>) {
    use futures_util::StreamExt as _;
    futures_util::stream::iter(events.into_iter().map(
        |(name, object, reason, message)| async move {
            cluster
                .create_message(&name, &object, &reason, &message)
                .await
        },
    ))
    .buffer_unordered(16)
    .collect::<Vec<()>>()
    .await;
}

/// Per downstream cluster of the big test: single events, one per object.
const SINGLES: usize = 400;
/// Objects in a storm, and events about each (a different message each).
const STORM_OBJECTS: usize = 40;
const STORM_EACH: usize = 830;

/// One cluster's share of the big test: singles, a storm over many objects, a flapping
/// object and a noisy source.
fn storm_events() -> Vec<(String, String, String, String)> {
    let mut events = Vec::new();
    for i in 0..SINGLES {
        events.push((
            format!("single-{i:04}"),
            format!("pod-{i}"),
            "Started".into(),
            "started".into(),
        ));
    }
    // The storm: objects interleaved, as a node going bad makes them.
    for i in 0..STORM_EACH {
        for o in 0..STORM_OBJECTS {
            events.push((
                format!("storm-{o:02}-{i:04}"),
                format!("crashing-{o:02}"),
                "BackOff".into(),
                format!("back-off restarting container, attempt {i}"),
            ));
        }
    }
    // A flapping object: 30 different messages of one reason.
    for i in 0..30 {
        events.push((
            format!("flap-{i:02}"),
            "flappy".into(),
            "BackOff".into(),
            format!("back-off {i}"),
        ));
    }
    // A noisy source: 40 identical events about one object.
    for i in 0..40 {
        events.push((
            format!("noise-{i:02}"),
            "noisy".into(),
            "Pulled".into(),
            "image pulled".into(),
        ));
    }
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn three_clusters_with_storms_through_two_replicas_leave_exactly_what_the_correlator_says() {
    let kube_dir = tempfile::tempdir().unwrap();
    let (servers, users) = (Pki::new("servers CA"), Pki::new("users CA"));
    let names = ["east", "west", "north"];
    let clusters: Vec<Cluster> = names
        .iter()
        .map(|name| start_cluster(&servers, &users, name, kube_dir.path()))
        .collect();
    let up = start_cluster(&servers, &users, "kcp", kube_dir.path());
    let config = {
        // The correlator's calls get time to spare: on a loaded CI machine a 1000-event
        // batch can take longer than the default 200 ms, and a timed-out call restarts the
        // instance, whose in-memory groups start afresh (the semantics under test here
        // are the correlator's, not the limits').
        let mut c = String::from(
            "tenants:\n  default:\n    limits: { timeout_ms: 10000 }\nk8s_watch:\n  linger_ms: 20\n  clusters:\n",
        );
        for (cluster, name) in clusters.iter().zip(names) {
            c += &format!(
                "    - {{ name: {name}, kubeconfig: {}, sync_target: {name}-target }}\n",
                cluster.kubeconfig
            );
        }
        c + &format!(
            "filters:\n  k8s-correlate: {{ path: {}, config: {{ flush_seconds: 1 }} }}\n  k8s-transform: {{ path: {}, config: {{ namespace_prefix: synced- }} }}\n\
sinks:\n  upstream: {{ type: kubernetes, kubeconfig: {} }}\n\
routes:\n  - {{ name: sync, from: [k8s-watch], filters: [k8s-correlate, k8s-transform], to: [upstream] }}\n",
            wasm::K8S_CORRELATE,
            wasm::K8S_TRANSFORM,
            up.kubeconfig
        )
    };
    // Two replicas syncing the same clusters into the same upstream, both watching
    // before the storm starts (so each sees every event in the downstream's order).
    let a = Weir::start(&config);
    let b = Weir::start(&config);
    for replica in [&a, &b] {
        wait_metrics(replica, "every watch is up", |text| {
            names.iter().all(|n| {
                metric(text, &format!("weir_k8s_watch_up{{cluster=\"{n}\"}}")) == Some(1.0)
            })
        })
        .await;
    }
    let started = Instant::now();
    futures_util::future::join_all(clusters.iter().map(|c| create_many(c, storm_events()))).await;
    let total = 3 * storm_events().len();
    assert!(total >= 100_000, "{total}");
    eprintln!(
        "created {total} downstream events in {:.1?}",
        started.elapsed()
    );

    // Per cluster: the singles; per storm object 9 events as they are and an aggregate
    // of the other 821; the same for the flapping object (9 and 21); the noise counted
    // under its first name up to the spam budget of 25.
    let per_cluster = SINGLES + STORM_OBJECTS * 10 + 10 + 1;
    let folded = (STORM_EACH - 9) as u64;
    let events = up
        .wait_until_within(
            "everything synced and settled",
            Duration::from_secs(600),
            |e| {
                let aggs = aggregates(e);
                e.len() == 3 * per_cluster
                    && aggs.len() == 3 * (STORM_OBJECTS + 1)
                    && aggs.iter().all(|a| {
                        let want = if a["involvedObject"]["name"] == "flappy" {
                            21
                        } else {
                            folded
                        };
                        a["count"] == want
                    })
                    && e.iter()
                        .filter(|x| x["involvedObject"]["name"] == "noisy")
                        .all(|x| x["count"] == 25)
            },
        )
        .await;
    eprintln!(
        "synced and settled {:.1?} after the first create",
        started.elapsed()
    );
    // No name twice (the API would refuse it anyway).
    let upstream_names: std::collections::BTreeSet<&str> = events
        .iter()
        .map(|e| e["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(upstream_names.len(), events.len());
    for (cluster, name) in clusters.iter().zip(names) {
        let target = format!("{name}-target");
        let mine: Vec<&Value> = events
            .iter()
            .filter(|e| e["metadata"]["labels"]["kcp.io/sync-target"] == target.as_str())
            .collect();
        assert_eq!(mine.len(), per_cluster, "{name}");
        // Names, namespaces, labels and annotations as configured.
        for e in &mine {
            let meta = &e["metadata"];
            assert!(
                meta["name"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{target}-")),
                "{e}"
            );
            assert_eq!(meta["namespace"], "synced-default", "{e}");
            assert_eq!(e["involvedObject"]["namespace"], "synced-default", "{e}");
            assert_eq!(meta["annotations"]["kcp.io/source-cluster"], name, "{e}");
            assert!(meta["annotations"]["kcp.io/synced-at"].is_string(), "{e}");
            assert!(
                meta["annotations"]["events.weir.dev/aggregate"].is_string(),
                "{e}"
            );
        }
        let noisy: Vec<&&Value> = mine
            .iter()
            .filter(|e| e["involvedObject"]["name"] == "noisy")
            .collect();
        assert_eq!(noisy.len(), 1, "{name}: the noise is one event");
        let flaps = mine
            .iter()
            .filter(|e| e["involvedObject"]["name"] == "flappy")
            .count();
        assert_eq!(flaps, 10, "{name}: nine flaps and their aggregate");

        // Order per object: the events that pass as they are are the first nine of their
        // object downstream, and the aggregate's message is its object's last one.
        let downstream = cluster.events().await;
        let mut by_object: std::collections::BTreeMap<&str, Vec<&Value>> = Default::default();
        for e in &downstream {
            by_object
                .entry(e["involvedObject"]["name"].as_str().unwrap())
                .or_default()
                .push(e);
        }
        for o in (0..STORM_OBJECTS)
            .map(|o| format!("crashing-{o:02}"))
            .chain(["flappy".into()])
        {
            let mut theirs = by_object.remove(o.as_str()).unwrap_or_default();
            theirs.sort_by_key(|e| {
                e["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            });
            let first_nine: Vec<String> = theirs[..9]
                .iter()
                .map(|e| format!("{target}-{}", e["metadata"]["name"].as_str().unwrap()))
                .collect();
            let synced: Vec<&&Value> = mine
                .iter()
                .filter(|e| e["involvedObject"]["name"] == o.as_str())
                .collect();
            let mut passed: Vec<String> = synced
                .iter()
                .filter(|e| !is_aggregate(e))
                .map(|e| e["metadata"]["name"].as_str().unwrap().to_owned())
                .collect();
            passed.sort();
            let mut want = first_nine.clone();
            want.sort();
            assert_eq!(passed, want, "{name}/{o}: the first nine pass");
            let aggregate = synced.iter().find(|e| is_aggregate(e)).unwrap();
            let last = theirs.last().unwrap()["message"].as_str().unwrap();
            assert_eq!(
                aggregate["message"],
                format!("(combined from similar events): {last}"),
                "{name}/{o}: the aggregate ends with its object's last message"
            );
        }
    }
    // Both replicas worked: each created, patched, or found the other's write there;
    // each accounts, per cluster, for every watched event: written as it was (the
    // singles, nine per flapping object, the noise up to its budget) or dropped by the
    // correlator (folded into an aggregate, or over the spam budget).
    for replica in [&a, &b] {
        let text = metrics_of(replica).await;
        for name in names {
            let routed = |outcome: &str| {
                metric(
                    &text,
                    &format!(
                        "weir_k8s_watch_routed_total{{cluster=\"{name}\",outcome=\"{outcome}\"}}"
                    ),
                )
            };
            let written = SINGLES + 9 * (STORM_OBJECTS + 1) + 25;
            let dropped = STORM_OBJECTS * (STORM_EACH - 9) + 21 + 15;
            assert_eq!(routed("written"), Some(written as f64), "{name}");
            assert_eq!(routed("dropped"), Some(dropped as f64), "{name}");
        }
        let written: f64 = ["created", "patched", "unchanged"]
            .iter()
            .filter_map(|o| {
                metric(
                    &text,
                    &format!("weir_k8s_upstream_writes_total{{outcome=\"{o}\",sink=\"upstream\"}}"),
                )
            })
            .sum();
        assert!(written >= (3 * per_cluster) as f64, "{text}");
    }
}

/// A TCP relay the test can cut: while cut, open connections are closed and new ones
/// refused; a watch behind it misses what happens meanwhile.
struct Relay {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(upstream: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cuts) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let mut cuts = cuts.clone();
                if *cuts.borrow() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Relay { port, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_that_comes_back_too_late_gets_410_relists_and_re_emits_nothing() {
    let kube_dir = tempfile::tempdir().unwrap();
    let (servers, users) = (Pki::new("servers CA"), Pki::new("users CA"));
    // The downstream keeps only 3 changes for resuming watches; the syncer reaches it
    // through a relay the test can cut.
    let down = start_cluster_with(
        &servers,
        &users,
        "east",
        kube_dir.path(),
        "events_api: { enabled: true, watch_history: 3 }",
    );
    let down_port: u16 = down.listen.rsplit(':').next().unwrap().parse().unwrap();
    let relay = Relay::start(down_port).await;
    let relayed = kube_dir.path().join("relayed.kubeconfig");
    std::fs::write(
        &relayed,
        std::fs::read_to_string(&down.kubeconfig).unwrap().replace(
            &format!("server: \"{}\"", down.base),
            &format!("server: \"https://localhost:{}\"", relay.port),
        ),
    )
    .unwrap();
    let up = start_cluster(&servers, &users, "kcp", kube_dir.path());
    let syncer_config = format!(
        "k8s_watch:\n  linger_ms: 20\n  clusters:\n    - {{ name: east, kubeconfig: {} }}\n\
sinks:\n  upstream: {{ type: kubernetes, kubeconfig: {} }}\n  seen: {{ type: file, path: seen.jsonl }}\n\
routes:\n  - {{ name: sync, from: [k8s-watch], to: [upstream, seen] }}\n",
        relayed.display(),
        up.kubeconfig
    );
    let syncer = Weir::start(&syncer_config);
    for i in 0..3 {
        down.create(&format!("before-{i}"), "web").await;
    }
    assert_eq!(up.wait_for(3).await.len(), 3);
    // Cut the watch; seven changes happen meanwhile, more than the history holds.
    relay.set_cut(true);
    wait_metrics(&syncer, "the watch noticed the cut", |m| {
        metric(m, "weir_k8s_watch_up{cluster=\"east\"}") == Some(0.0)
    })
    .await;
    for i in 0..7 {
        down.create(&format!("during-{i}"), "web").await;
    }
    relay.set_cut(false);
    // Back: the resumed watch is too old (410), so the watch relists; the three it had
    // delivered are recognised, the seven new ones flow, nothing twice.
    let text = wait_metrics(&syncer, "relisted after 410", |m| {
        metric(m, "weir_k8s_watch_relists_total{cluster=\"east\"}").unwrap_or(0.0) >= 2.0
            && metric(
                m,
                "weir_k8s_watch_events_total{cluster=\"east\",outcome=\"delivered\"}",
            ) == Some(10.0)
    })
    .await;
    assert!(
        metric(
            &text,
            "weir_k8s_watch_events_total{cluster=\"east\",outcome=\"deduplicated\"}"
        )
        .unwrap_or(0.0)
            >= 3.0,
        "{text}"
    );
    assert_eq!(up.wait_for(10).await.len(), 10);
    assert_eq!(
        settled_lines(&syncer, 10).await.len(),
        10,
        "nothing re-emitted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_rate_limit_below_the_batch_size_splits_batches_instead_of_stalling() {
    let kube_dir = tempfile::tempdir().unwrap();
    let (servers, users) = (Pki::new("servers CA"), Pki::new("users CA"));
    let down = start_cluster(&servers, &users, "east", kube_dir.path());
    let up = start_cluster(&servers, &users, "kcp", kube_dir.path());
    // 150 events already there: the first list hands them on in one batch of 150, which
    // a limit of 40 events a second can never take whole.
    let events: Vec<(String, String, String, String)> = (0..150)
        .map(|i| {
            (
                format!("e-{i:03}"),
                format!("pod-{i}"),
                "Started".to_owned(),
                "started".to_owned(),
            )
        })
        .collect();
    create_many(&down, events).await;
    let config = format!(
        "tenants:\n  default:\n    limits: {{ events_per_sec: 40 }}\n\
k8s_watch:\n  linger_ms: 200\n  clusters:\n    - {{ name: east, kubeconfig: {} }}\n\
sinks:\n  upstream: {{ type: kubernetes, kubeconfig: {} }}\n\
routes:\n  - {{ name: sync, from: [k8s-watch], to: [upstream] }}\n",
        down.kubeconfig, up.kubeconfig
    );
    let _syncer = Weir::start(&config);
    let synced = up
        .wait_until("all 150 synced at 40 a second", |e| e.len() == 150)
        .await;
    assert_eq!(synced.len(), 150);
}
