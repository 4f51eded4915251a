//! The Events API behind authentication and tenant scope, and proxy mode: weir A
//! (`EventsProxy=true`, mTLS client) forwards every verb to weir B (embedded store, which
//! verifies A's certificate and reads the `X-Remote-*` headers). Certificates come from
//! rcgen. The test plays the trusted front proxy in front of A (it sends the
//! request-header identity of each tenant), and real `kubectl` talks to A with a client
//! certificate.

#![allow(clippy::unwrap_used)]

mod common;

use common::pki::Pki;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PARENT_TYPE: &str = "Iam.miloapis.com%2Fparent-type";
const PARENT_NAME: &str = "iam.miloapis.com%2Fparent-name";
const SCOPE_TYPE: &str = "platform.miloapis.com/scope.type";
const SCOPE_NAME: &str = "platform.miloapis.com/scope.name";

/// Every certificate the tests need, written to a directory.
struct Certs {
    servers: Pki,
    proxies: Pki,
    users: Pki,
    dir: PathBuf,
}

impl Certs {
    fn new(dir: &Path) -> Certs {
        let c = Certs {
            servers: Pki::new("servers CA"),
            proxies: Pki::new("front proxies CA"),
            users: Pki::new("users CA"),
            dir: dir.to_owned(),
        };
        c.write("servers-ca.pem", &c.servers.ca_pem);
        c.write("proxies-ca.pem", &c.proxies.ca_pem);
        c.write("users-ca.pem", &c.users.ca_pem);
        c
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// Writes a certificate pair; returns (cert path, key path).
    fn pair(&self, name: &str, (cert, key): (String, String)) -> (String, String) {
        (
            self.write(&format!("{name}.pem"), &cert),
            self.write(&format!("{name}.key"), &key),
        )
    }

    fn server(&self, name: &str) -> (String, String) {
        self.pair(name, self.servers.issue(name, &["localhost", "127.0.0.1"]))
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// An HTTPS client trusting the servers CA, presenting `identity`.
fn client(certs: &Certs, identity: Option<&(String, String)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certs.servers.ca_pem.as_bytes()).unwrap(),
        );
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// A tenant as the front proxy names it: user plus parent type and name extras.
#[derive(Clone, Copy)]
struct Tenant {
    user: &'static str,
    parent: Option<(&'static str, &'static str)>,
}

const P1: Tenant = Tenant {
    user: "pat",
    parent: Some(("Project", "p1")),
};
const P2: Tenant = Tenant {
    user: "quinn",
    parent: Some(("Project", "p2")),
};
const O1: Tenant = Tenant {
    user: "olga",
    parent: Some(("Organization", "o1")),
};
const PLATFORM: Tenant = Tenant {
    user: "root",
    parent: None,
};

/// Requests through a front proxy: the proxy's certificate plus identity headers.
struct Front {
    http: reqwest::Client,
    url: String,
}

/// The watch events a stream carried until it ended at its timeout, and its text.
async fn watched(watch: reqwest::Response) -> (Vec<Value>, String) {
    let text = tokio::time::timeout(Duration::from_secs(20), watch.text())
        .await
        .expect("the watch ends at its timeout")
        .unwrap();
    let seen = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (seen, text)
}

impl Front {
    /// Opens a watch of `path` from the resourceVersion of `list`, ending after
    /// `timeout_secs`.
    async fn watch(
        &self,
        t: Tenant,
        path: &str,
        list: &Value,
        timeout_secs: u64,
    ) -> reqwest::Response {
        let rv = list["metadata"]["resourceVersion"].as_str().unwrap();
        let watch = self
            .req(
                t,
                reqwest::Method::GET,
                &format!("{path}?watch=true&resourceVersion={rv}&timeoutSeconds={timeout_secs}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(watch.status(), 200);
        watch
    }

    fn req(&self, t: Tenant, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("X-Remote-User", t.user)
            .header("X-Remote-Group", "system:authenticated");
        if let Some((ty, name)) = t.parent {
            r = r
                .header(format!("X-Remote-Extra-{PARENT_TYPE}"), ty)
                .header(format!("X-Remote-Extra-{PARENT_NAME}"), name);
        }
        r
    }

    async fn send(
        &self,
        t: Tenant,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.req(t, method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn names(&self, t: Tenant, path: &str) -> Vec<String> {
        let (code, list) = self.send(t, reqwest::Method::GET, path, None).await;
        assert_eq!(code, 200, "{list}");
        let mut names: Vec<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }
}

fn core_event(name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "involvedObject": {"kind": "Pod", "name": format!("pod-{name}"), "namespace": "default"},
        "reason": "Started", "message": format!("{name} started"), "type": "Normal",
        "source": {"component": "kubelet"},
    })
}

/// Config lines for weir B: embedded store on TLS, trusting only `weir-proxy`
/// certificates from the proxies CA as a front proxy, scope-inject on writes.
fn b_config(certs: &Certs) -> String {
    let (cert, key) = certs.server("weir-b");
    [
        format!("tls: {{ cert: {cert}, key: {key} }}"),
        "authentication:".to_owned(),
        format!(
            "  request_header: {{ client_ca: {}, allowed_names: [weir-proxy] }}",
            certs.path("proxies-ca.pem")
        ),
        "events_api: { enabled: true }".to_owned(),
        "filters:".to_owned(),
        format!("  scope-inject: {{ path: {} }}", wasm::SCOPE_INJECT),
        "sinks:".to_owned(),
        "  stored: { type: file, path: stored.jsonl }".to_owned(),
        "routes:".to_owned(),
        "  - { name: events, from: [k8s], filters: [scope-inject], to: [stored] }".to_owned(),
    ]
    .join("\n")
}

/// Config lines for weir A: proxy mode to `provider`, user certificates from the users
/// CA, the test's `front-proxy` certificate trusted for request headers.
fn a_config(certs: &Certs, provider: &str, retries: u32) -> String {
    let (cert, key) = certs.server("weir-a");
    let (ccert, ckey) = certs.pair("weir-proxy", certs.proxies.issue("weir-proxy", &[]));
    [
        format!(
            "tls: {{ cert: {cert}, key: {key}, client_ca: {} }}",
            certs.path("users-ca.pem")
        ),
        "authentication:".to_owned(),
        format!(
            "  request_header: {{ client_ca: {}, allowed_names: [front-proxy] }}",
            certs.path("proxies-ca.pem")
        ),
        "feature_gates: { EventsProxy: true }".to_owned(),
        "events_api:".to_owned(),
        format!(
            "  provider: {{ url: \"{provider}\", ca_file: {}, client_cert: {ccert}, client_key: {ckey}, timeout_seconds: 5, retries: {retries} }}",
            certs.path("servers-ca.pem")
        ),
        "filters:".to_owned(),
        format!("  scope-inject: {{ path: {} }}", wasm::SCOPE_INJECT),
        "sinks:".to_owned(),
        "  forwarded: { type: file, path: forwarded.jsonl }".to_owned(),
        "routes:".to_owned(),
        "  - { name: events, from: [k8s], filters: [scope-inject], to: [forwarded] }".to_owned(),
    ]
    .join("\n")
}

fn localhost(url: &str) -> String {
    url.replace("127.0.0.1", "localhost")
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_forwards_every_verb_to_an_embedded_weir_with_scope_isolation() {
    use reqwest::Method;
    let b_dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(b_dir.path());
    let b = Weir::start_in(b_dir, &b_config(&certs));
    assert!(b.url.starts_with("https://"), "{}", b.url);
    let a_dir = tempfile::tempdir().unwrap();
    let a = Weir::start_in(a_dir, &a_config(&certs, &localhost(&b.url), 3));
    let front_id = certs.proxies.issue("front-proxy", &[]);
    let front = Front {
        http: client(&certs, Some(&front_id)),
        url: localhost(&a.url),
    };
    let events = "/api/v1/namespaces/default/events";

    // Writes: a tampered scope annotation is overwritten with the caller's own scope.
    let tampered = json!({SCOPE_TYPE: "Project", SCOPE_NAME: "p2", "keep": "me"});
    let (code, e1) = front
        .send(P1, Method::POST, events, Some(core_event("e1", tampered)))
        .await;
    assert_eq!(code, 201, "{e1}");
    let ann = &e1["metadata"]["annotations"];
    assert_eq!(
        (ann[SCOPE_TYPE].as_str(), ann[SCOPE_NAME].as_str()),
        (Some("Project"), Some("p1")),
        "{e1}"
    );
    assert_eq!(ann["keep"], "me");
    for (t, name) in [(P2, "e2"), (O1, "e3"), (PLATFORM, "e4")] {
        let (code, body) = front
            .send(t, Method::POST, events, Some(core_event(name, json!({}))))
            .await;
        assert_eq!(code, 201, "{body}");
    }
    // The events.k8s.io/v1 API through the proxy too.
    let ev1 = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "e5", "namespace": "default", "annotations": {SCOPE_NAME: "o1"}},
        "eventTime": "2026-11-22T04:00:00.000000Z", "reportingController": "tests",
        "reportingInstance": "t-1", "action": "Started", "reason": "Started", "type": "Normal",
        "regarding": {"kind": "Pod", "name": "pod-e5", "namespace": "default"},
    });
    let (code, e5) = front
        .send(
            P1,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/default/events",
            Some(ev1),
        )
        .await;
    assert_eq!(code, 201, "{e5}");
    assert_eq!(e5["metadata"]["annotations"][SCOPE_NAME], "p1", "{e5}");

    // Reads are scoped: projects and organisations see their own, the platform all.
    assert_eq!(front.names(P1, events).await, ["e1", "e5"]);
    assert_eq!(front.names(P2, events).await, ["e2"]);
    assert_eq!(front.names(O1, "/api/v1/events").await, ["e3"]);
    assert_eq!(
        front.names(PLATFORM, events).await,
        ["e1", "e2", "e3", "e4", "e5"]
    );
    // Activity's EventQuery (forwarded to B) is scoped alike.
    let query = json!({"apiVersion": "activity.miloapis.com/v1alpha1", "kind": "EventQuery",
        "spec": {"startTime": "1970-01-01T00:00:00Z", "endTime": "now"}});
    for (t, want) in [
        (P2, vec!["e2"]),
        (P1, vec!["e1", "e5"]),
        (PLATFORM, vec!["e1", "e2", "e3", "e4", "e5"]),
    ] {
        let (code, answer) = front
            .send(
                t,
                Method::POST,
                "/apis/activity.miloapis.com/v1alpha1/eventqueries",
                Some(query.clone()),
            )
            .await;
        assert_eq!(code, 201, "{answer}");
        let mut got: Vec<&str> = answer["status"]["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["metadata"]["name"].as_str().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, want, "{answer}");
    }
    let (code, _) = front
        .send(P1, Method::GET, &format!("{events}/e2"), None)
        .await;
    assert_eq!(code, 404, "another project's event is not found");
    let (code, got) = front
        .send(P1, Method::GET, &format!("{events}/e1"), None)
        .await;
    assert_eq!((code, got["reason"].as_str()), (200, Some("Started")));
    // Field selectors pass through.
    assert_eq!(
        front
            .names(
                PLATFORM,
                &format!("{events}?fieldSelector=involvedObject.name%3Dpod-e3")
            )
            .await,
        ["e3"]
    );

    // A watch through the proxy sees only the caller's scope.
    let (_, list) = front.send(P1, Method::GET, events, None).await;
    let watch = front.watch(P1, events, &list, 5).await;
    for (t, name) in [(P2, "w-p2"), (P1, "w-p1")] {
        let (code, body) = front
            .send(t, Method::POST, events, Some(core_event(name, json!({}))))
            .await;
        assert_eq!(code, 201, "{body}");
    }
    let (seen, text) = watched(watch).await;
    let names: Vec<&str> = seen
        .iter()
        .map(|w| w["object"]["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["w-p1"], "{text}");
    assert_eq!(seen[0]["type"], "ADDED");

    // Update and patch keep the scope whatever the client sends.
    let mut changed = e1.clone();
    changed["message"] = json!("updated");
    changed["metadata"]["annotations"][SCOPE_NAME] = json!("p2");
    let (code, put) = front
        .send(P1, Method::PUT, &format!("{events}/e1"), Some(changed))
        .await;
    assert_eq!(code, 200, "{put}");
    assert_eq!(
        (
            put["message"].as_str(),
            put["metadata"]["annotations"][SCOPE_NAME].as_str()
        ),
        (Some("updated"), Some("p1"))
    );
    let patch =
        json!({"message": "patched", "metadata": {"annotations": {SCOPE_TYPE: "Organization"}}});
    let resp = front
        .req(P1, Method::PATCH, &format!("{events}/e1"))
        .header("content-type", "application/merge-patch+json")
        .body(patch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let patched: Value = resp.json().await.unwrap();
    assert_eq!(patched["message"], "patched");
    assert_eq!(
        patched["metadata"]["annotations"][SCOPE_TYPE], "Project",
        "{patched}"
    );
    let resp = front
        .req(P1, Method::PATCH, &format!("{events}/e2"))
        .header("content-type", "application/merge-patch+json")
        .body("{\"message\":\"mine now\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "patching another project's event");

    // Delete and deletecollection stay within scope.
    let (code, _) = front
        .send(P1, Method::DELETE, &format!("{events}/e2"), None)
        .await;
    assert_eq!(code, 404);
    let (code, body) = front
        .send(P1, Method::DELETE, &format!("{events}/e1"), None)
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = front.send(O1, Method::DELETE, events, None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(
        front.names(PLATFORM, events).await,
        ["e2", "e4", "e5", "w-p1", "w-p2"]
    );

    // Non-transient errors come back as the provider's Status, at once.
    let (code, body) = front
        .send(P2, Method::POST, events, Some(core_event("e2", json!({}))))
        .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("AlreadyExists")),
        "{body}"
    );
    let resp = front
        .req(P1, Method::POST, events)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let status: Value = resp.json().await.unwrap();
    assert_eq!(status["kind"], "Status");

    // Authentication: B trusts only A's certificate as a front proxy; A refuses callers
    // without credentials and ignores identity headers from a user certificate.
    let (code, _) = front.send(PLATFORM, Method::GET, events, None).await;
    assert_eq!(code, 200);
    let direct = Front {
        http: client(&certs, Some(&front_id)),
        url: localhost(&b.url),
    };
    let (code, body) = direct.send(PLATFORM, Method::GET, events, None).await;
    assert_eq!(
        code, 401,
        "B must not trust the front proxy's certificate: {body}"
    );
    let anonymous = client(&certs, None)
        .get(format!("{}{events}", localhost(&a.url)))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let user = certs.users.issue_with("alice", &["team-a"], &[]);
    let spoof = client(&certs, Some(&user))
        .get(format!("{}{events}", localhost(&a.url)))
        .header("X-Remote-User", "mallory")
        .header(format!("X-Remote-Extra-{PARENT_TYPE}"), "Project")
        .header(format!("X-Remote-Extra-{PARENT_NAME}"), "p2")
        .send()
        .await
        .unwrap();
    assert_eq!(spoof.status(), 200);
    let list: Value = spoof.json().await.unwrap();
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        5,
        "alice (a user certificate) is a platform caller: {list}"
    );

    // Real kubectl through the proxy with a client certificate.
    let kdir = a.dir.path();
    let (ucert, ukey) = certs.pair("alice", user);
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster: {{ server: \"{}\", certificate-authority: {} }}\nusers:\n- name: alice\n  user: {{ client-certificate: {ucert}, client-key: {ukey} }}\ncontexts:\n- name: a\n  context: {{ cluster: a, user: alice, namespace: default }}\ncurrent-context: a\n",
        localhost(&a.url),
        certs.path("servers-ca.pem"),
    );
    std::fs::write(kdir.join("kubeconfig"), kubeconfig).unwrap();
    let out = std::process::Command::new("kubectl")
        .args(["get", "events", "-o", "json"])
        .arg(format!("--cache-dir={}", kdir.join("kube-cache").display()))
        .env("KUBECONFIG", kdir.join("kubeconfig"))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 5);

    // Both routers handed the writes on to their `k8s` routes.
    let stored = b.jsonl("stored.jsonl");
    let forwarded = a.jsonl("forwarded.jsonl");
    assert!(
        stored.len() >= 9 && forwarded.len() >= 9,
        "B {} A {}",
        stored.len(),
        forwarded.len()
    );
    assert!(forwarded
        .iter()
        .all(|e| e["type"] == "io.k8s.core.v1.Event"));
}

/// What a scripted peer answers, attempt by attempt: a status and a `Retry-After`.
/// Status 0 answers nothing for longer than an attempt may take (a provider that
/// received the request and stalls).
type Script = Vec<(u16, Option<&'static str>)>;

/// A scripted HTTPS peer standing in for a failing provider (B cannot be made to answer
/// 503 or 429 on demand): it answers each path from a script and records what arrived.
/// Code 0 stalls (30 s); code 1 keeps the request's body ("stored") and then stalls (the
/// answer is lost); code 2 answers 200 with the body kept; code 3 answers 200 with
/// another event of the same name.
struct Scripted {
    url: String,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<axum::http::HeaderMap>>>,
    script: Arc<Mutex<Script>>,
}

impl Scripted {
    /// Answers from `script` from now on, counting attempts from zero.
    fn play(&self, script: Script) {
        *self.script.lock().unwrap() = script;
        self.hits.store(0, Ordering::SeqCst);
        self.seen.lock().unwrap().clear();
    }
}

async fn scripted(certs: &Certs, script: Script) -> Scripted {
    let (cert, key) = certs.server("scripted");
    let tls = weir::tls::server_config(
        &weir::tls::TlsSettings {
            cert: cert.into(),
            key: key.into(),
            client_ca: Some(certs.path("proxies-ca.pem").into()),
        },
        &[],
    )
    .unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (h, s) = (hits.clone(), seen.clone());
    let script = Arc::new(Mutex::new(script));
    let played = script.clone();
    let kept = Arc::new(Mutex::new(axum::body::Bytes::new()));
    let app = axum::Router::new().fallback(
        move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
        let (h, s, script, kept) = (h.clone(), s.clone(), played.clone(), kept.clone());
        async move {
            let n = h.fetch_add(1, Ordering::SeqCst);
            s.lock().unwrap().push(headers);
            let (code, retry_after) = {
                let script = script.lock().unwrap();
                script[n.min(script.len() - 1)]
            };
            if code == 1 {
                *kept.lock().unwrap() = body;
            }
            if code <= 1 {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            if code == 2 || code == 3 {
                let mut event: Value = serde_json::from_slice(&kept.lock().unwrap()).unwrap_or(json!({}));
                if code == 3 {
                    event = core_event("x", json!({}));
                    event["message"] = json!("somebody else's event");
                }
                event["metadata"]["resourceVersion"] = json!("42");
                event["metadata"]["uid"] = json!("u-1");
                return axum::response::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(event.to_string()))
                    .unwrap();
            }
            let code = code.max(200);
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": if code < 300 {"Success"} else {"Failure"}, "code": code});
            let mut r = axum::response::Response::builder()
                .status(code)
                .header("content-type", "application/json");
            if let Some(ra) = retry_after {
                r = r.header("retry-after", ra);
            }
            r.body(axum::body::Body::from(status.to_string())).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(weir::listener::serve(
        listener,
        Some(weir::listener::Tls {
            config: tls,
            trust: None,
        }),
        app,
        std::future::pending(),
        Default::default(),
    ));
    Scripted {
        url,
        hits,
        seen,
        script,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_retries_transient_failures_only_and_sends_the_callers_identity() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path());
    let front_id = certs.proxies.issue("front-proxy", &[]);
    let events = "/api/v1/namespaces/default/events";

    // 503, 503, 429 (Retry-After: 1), then 200: retried to success, honouring Retry-After.
    let flaky = scripted(
        &certs,
        vec![(503, None), (503, None), (429, Some("1")), (200, None)],
    )
    .await;
    let a = Weir::start_in(dir, &a_config(&certs, &flaky.url, 3));
    let front = Front {
        http: client(&certs, Some(&front_id)),
        url: localhost(&a.url),
    };
    let started = Instant::now();
    let (code, body) = front.send(P1, reqwest::Method::GET, events, None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(flaky.hits.load(Ordering::SeqCst), 4);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    // The caller's identity as request headers, extras escaped as client-go does.
    let headers = flaky.seen.lock().unwrap()[0].clone();
    assert_eq!(headers["x-remote-user"], "pat");
    assert_eq!(headers["x-remote-group"], "system:authenticated");
    assert_eq!(
        headers["x-remote-extra-iam.miloapis.com%2fparent-type"],
        "Project"
    );
    assert_eq!(
        headers["x-remote-extra-iam.miloapis.com%2fparent-name"],
        "p1"
    );
    drop(a);

    // 409, 400, 403, 404 are answered at once: exactly one attempt each.
    for code in [409u16, 400, 403, 404] {
        let dir = tempfile::tempdir().unwrap();
        let certs2 = Certs::new(dir.path());
        let front_id = certs2.proxies.issue("front-proxy", &[]);
        let peer = scripted(&certs2, vec![(code, None), (200, None)]).await;
        let a = Weir::start_in(dir, &a_config(&certs2, &peer.url, 3));
        let front = Front {
            http: client(&certs2, Some(&front_id)),
            url: localhost(&a.url),
        };
        let (got, _) = front
            .send(
                PLATFORM,
                reqwest::Method::POST,
                events,
                Some(core_event("x", json!({}))),
            )
            .await;
        assert_eq!(got, code);
        assert_eq!(
            peer.hits.load(Ordering::SeqCst),
            1,
            "{code} must not be retried"
        );
    }

    // Retries exhausted on 503: the provider's last answer is passed on.
    let dir = tempfile::tempdir().unwrap();
    let certs3 = Certs::new(dir.path());
    let front_id = certs3.proxies.issue("front-proxy", &[]);
    let down = scripted(&certs3, vec![(503, Some("0"))]).await;
    let a = Weir::start_in(dir, &a_config(&certs3, &down.url, 2));
    let front = Front {
        http: client(&certs3, Some(&front_id)),
        url: localhost(&a.url),
    };
    let (code, _) = front
        .send(PLATFORM, reqwest::Method::GET, events, None)
        .await;
    assert_eq!(code, 503);
    assert_eq!(
        down.hits.load(Ordering::SeqCst),
        3,
        "one attempt and two retries"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_repeats_creates_only_after_reading_them_back_and_deletes_only_when_not_acted_on() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path());
    let front_id = certs.proxies.issue("front-proxy", &[]);
    let peer = scripted(&certs, vec![(200, None)]).await;
    // One attempt may take 5 s (a_config's timeout_seconds).
    let a = Weir::start_in(dir, &a_config(&certs, &peer.url, 3));
    let front = Front {
        http: client(&certs, Some(&front_id)),
        url: localhost(&a.url),
    };
    let events = "/api/v1/namespaces/default/events";
    let one = format!("{events}/x");
    let cases: [(Method, &str, Script, u16, usize); 11] = [
        // Refused before processing (429, 503): repeated, the create goes through.
        (
            Method::POST,
            events,
            vec![(503, None), (429, Some("0")), (201, None)],
            201,
            3,
        ),
        // The provider may have stored it (a 500, a 502 from a gateway, a stalled
        // answer): the proxy reads the event before anything else. Not there: sent again.
        (
            Method::POST,
            events,
            vec![(500, None), (404, None), (201, None)],
            201,
            3,
        ),
        // There, as sent: the create succeeded, answered 201, never sent twice.
        (Method::POST, events, vec![(1, None), (2, None)], 201, 2),
        // There, but another event: the name was taken.
        (Method::POST, events, vec![(502, None), (3, None)], 409, 2),
        // A create the proxy cannot read back by name (generateName) is not repeated.
        (
            Method::POST,
            "generate",
            vec![(500, None), (201, None)],
            500,
            1,
        ),
        // Deletes alike.
        (Method::DELETE, &one, vec![(503, None), (200, None)], 200, 2),
        (Method::DELETE, &one, vec![(500, None), (200, None)], 500, 1),
        (Method::DELETE, events, vec![(0, None), (200, None)], 504, 1),
        // A read is repeated after a stall.
        (Method::GET, &one, vec![(0, None), (200, None)], 200, 2),
        // A 409 on the first attempt is the provider's answer: the name was taken before.
        (Method::POST, events, vec![(409, None)], 409, 1),
        // Every attempt uncertain and nothing readable: the last answer, no guess.
        (Method::POST, events, vec![(500, None)], 500, 4),
    ];
    for (method, path, script, want, attempts) in cases {
        peer.play(script.clone());
        let (path, body) = match (&method, path) {
            (&Method::POST, "generate") => {
                let mut e = core_event("x", json!({}));
                e["metadata"] = json!({"generateName": "x-", "namespace": "default"});
                (events, Some(e))
            }
            (&Method::POST, path) => (path, Some(core_event("x", json!({})))),
            (_, path) => (path, None),
        };
        let (code, answer) = front.send(PLATFORM, method.clone(), path, body).await;
        assert_eq!(code, want, "{method} {path} {script:?}: {answer}");
        assert_eq!(
            peer.hits.load(Ordering::SeqCst),
            attempts,
            "{method} {path} {script:?}: attempts"
        );
    }
    // The timeout (5 s) bounds the whole request, retries included: a provider that
    // never answers is tried more than once, and the caller hears 504 within it.
    peer.play(vec![(0, None)]);
    let started = Instant::now();
    let (code, answer) = front.send(PLATFORM, Method::GET, &one, None).await;
    let took = started.elapsed();
    assert_eq!(code, 504, "{answer}");
    assert!(
        took < Duration::from_millis(5_800),
        "answered after {took:?}, past the 5 s budget"
    );
    assert!(peer.hits.load(Ordering::SeqCst) >= 2, "a stall is retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_names_anonymous_callers_as_the_apiserver_does() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path());
    let peer = scripted(&certs, vec![(200, None)]).await;
    let config = a_config(&certs, &peer.url, 0)
        .replace("authentication:\n", "authentication:\n  anonymous: true\n");
    assert!(config.contains("anonymous: true"));
    let a = Weir::start_in(dir, &config);
    // No client certificate, no identity headers of any standing.
    let resp = client(&certs, None)
        .get(format!(
            "{}/api/v1/namespaces/default/events",
            localhost(&a.url)
        ))
        .header("X-Remote-User", "mallory")
        .header(format!("X-Remote-Extra-{PARENT_TYPE}"), "Project")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let headers = peer.seen.lock().unwrap()[0].clone();
    let all = |name: &str| -> Vec<&str> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    assert_eq!(all("x-remote-user"), ["system:anonymous"]);
    assert_eq!(all("x-remote-group"), ["system:unauthenticated"]);
    assert!(
        !headers
            .keys()
            .any(|k| k.as_str().starts_with("x-remote-extra-")),
        "{headers:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_rides_out_a_provider_restart() {
    let b_dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(b_dir.path());
    let b = Weir::start_in(b_dir, &b_config(&certs));
    let b_listen = b.url.trim_start_matches("https://").to_owned();
    let a_dir = tempfile::tempdir().unwrap();
    let a = Weir::start_in(a_dir, &a_config(&certs, &localhost(&b.url), 8));
    let front_id = certs.proxies.issue("front-proxy", &[]);
    let front = Front {
        http: client(&certs, Some(&front_id)),
        url: localhost(&a.url),
    };
    let events = "/api/v1/namespaces/default/events";
    let (code, _) = front
        .send(
            P1,
            reqwest::Method::POST,
            events,
            Some(core_event("before", json!({}))),
        )
        .await;
    assert_eq!(code, 201);
    // B goes away; a create sent now is retried until B is back on the same port.
    let b_dir = b.kill();
    let create = tokio::spawn(async move {
        let started = Instant::now();
        let (code, body) = front
            .send(
                P1,
                reqwest::Method::POST,
                events,
                Some(core_event("during", json!({}))),
            )
            .await;
        (code, body, started.elapsed(), front)
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Meanwhile readiness names the provider as down, without taking A out of service.
    let readyz = || async {
        let resp = client(&certs, None)
            .get(format!("{}/readyz?verbose", localhost(&a.url)))
            .header("authorization", a.admin_auth())
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    let (status, checks) = readyz().await;
    assert_eq!(status, 200, "{checks}");
    assert!(
        checks.contains("[-]events-api/provider failed (informational): the last request failed"),
        "{checks}"
    );
    let b = Weir::start_at(b_dir, &b_listen, &b_config(&certs));
    let (code, body, took, front) = create.await.unwrap();
    assert_eq!(code, 201, "{body}");
    assert!(
        took >= Duration::from_millis(1000),
        "the create waited for B: {took:?}"
    );
    assert_eq!(front.names(P1, events).await, ["before", "during"]);
    let (_, checks) = readyz().await;
    assert!(checks.contains("[+]events-api/provider ok"), "{checks}");
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_api_answers_filter_refusals_with_403_and_422() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path());
    let (cert, key) = certs.server("weir");
    let config = [
        format!(
            "tls: {{ cert: {cert}, key: {key}, client_ca: {} }}",
            certs.path("users-ca.pem")
        ),
        "authentication:".to_owned(),
        "  anonymous: true".to_owned(),
        format!(
            "  request_header: {{ client_ca: {}, allowed_names: [front-proxy] }}",
            certs.path("proxies-ca.pem")
        ),
        "events_api: { enabled: true }".to_owned(),
        "filters:".to_owned(),
        format!(
            "  scope-inject: {{ path: {}, config: {{ unauthenticated: drop }} }}",
            wasm::SCOPE_INJECT
        ),
        "routes:".to_owned(),
        "  - { name: events, from: [k8s], filters: [scope-inject], to: [tail] }".to_owned(),
    ]
    .join("\n");
    let weir = Weir::start_in(dir, &config);
    let url = format!("{}/api/v1/namespaces/default/events", localhost(&weir.url));

    // Anonymous callers are let in, and the filter drops their writes: 403 with its reason.
    let resp = client(&certs, None)
        .post(&url)
        .json(&core_event("anon", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let status: Value = resp.json().await.unwrap();
    assert_eq!(status["reason"], "Forbidden");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("no authenticated principal"),
        "{status}"
    );

    // A parent type without a parent name: the filter reports an error, 422 names it.
    let front = Front {
        http: client(&certs, Some(&certs.proxies.issue("front-proxy", &[]))),
        url: localhost(&weir.url),
    };
    let resp = front
        .req(
            PLATFORM,
            reqwest::Method::POST,
            "/api/v1/namespaces/default/events",
        )
        .header(format!("X-Remote-Extra-{PARENT_TYPE}"), "Project")
        .json(&core_event("half", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let status: Value = resp.json().await.unwrap();
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("rejected by filter `scope-inject`"),
        "{status}"
    );
    assert!(
        message.contains("no iam.miloapis.com/parent-name"),
        "{status}"
    );

    // A user certificate (CN alice, O team-a) writes as a platform caller; nothing refused
    // was stored.
    let alice = certs.users.issue_with("alice", &["team-a"], &[]);
    let resp = client(&certs, Some(&alice))
        .post(&url)
        .json(&core_event("by-alice", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let list: Value = client(&certs, None)
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["by-alice"]);

    // SIGTERM with keep-alive TLS connections open: they are closed gracefully, the routes
    // drain and the router stops cleanly.
    let logs = weir.logs.clone();
    let (clean, _dir) = weir.terminate();
    let logs = logs.lock().unwrap().join("\n");
    assert!(clean, "{logs}");
    assert!(logs.contains("stopped"), "{logs}");
    assert!(!logs.contains("still referenced"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn feature_gate_and_provider_flags_select_proxy_mode_from_the_command_line() {
    let b_dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(b_dir.path());
    let b = Weir::start_in(b_dir, &b_config(&certs));
    // A's file says nothing about proxying: the source system's flags switch it on.
    let a_dir = tempfile::tempdir().unwrap();
    let (cert, key) = certs.server("weir-a");
    let (ccert, ckey) = certs.pair("weir-proxy", certs.proxies.issue("weir-proxy", &[]));
    let config = [
        "listen: 127.0.0.1:0".to_owned(),
        format!("data_dir: {}", a_dir.path().join("data").display()),
        format!("tls: {{ cert: {cert}, key: {key} }}"),
        "authentication:".to_owned(),
        format!(
            "  request_header: {{ client_ca: {}, allowed_names: [front-proxy] }}",
            certs.path("proxies-ca.pem")
        ),
        "routes:".to_owned(),
        "  - { name: r, to: [tail] }".to_owned(),
    ]
    .join("\n");
    let config_path = a_dir.path().join("weir.yaml");
    std::fs::write(&config_path, config).unwrap();
    let config_arg = config_path.display().to_string();
    let provider = format!("--events-provider-url={}", localhost(&b.url));
    let ca = format!("--events-provider-ca-file={}", certs.path("servers-ca.pem"));
    let client_cert = format!("--events-provider-client-cert={ccert}");
    let client_key = format!("--events-provider-client-key={ckey}");
    let args = [
        "serve",
        "--config",
        &config_arg,
        "--feature-gates=EventsProxy=true",
        &provider,
        &ca,
        &client_cert,
        &client_key,
        "--events-provider-timeout=10",
        "--events-provider-retries=1",
        "--events-forward-extras=iam.miloapis.com/parent-type",
        "--events-forward-extras=iam.miloapis.com/parent-name",
    ];
    let a = Weir::spawn(a_dir, &args);
    let front = Front {
        http: client(&certs, Some(&certs.proxies.issue("front-proxy", &[]))),
        url: localhost(&a.url),
    };
    let events = "/api/v1/namespaces/default/events";
    let (code, created) = front
        .send(
            P1,
            reqwest::Method::POST,
            events,
            Some(core_event("via-flags", json!({}))),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    // B stored it with the scope B derived from the forwarded extras.
    let direct = Front {
        http: client(&certs, Some(&certs.proxies.issue("weir-proxy", &[]))),
        url: localhost(&b.url),
    };
    let (code, stored) = direct
        .send(
            PLATFORM,
            reqwest::Method::GET,
            &format!("{events}/via-flags"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{stored}");
    assert_eq!(stored["metadata"]["annotations"][SCOPE_NAME], "p1");

    // A misspelt gate is refused before anything starts, naming the known ones.
    let out = std::process::Command::new(weir_bin())
        .args([
            "serve",
            "--config",
            &config_arg,
            "--feature-gates=EventProxy=true",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown feature gate `EventProxy` (known: EventsProxy)"),
        "{err}"
    );
    // The gate without a provider: a configuration error naming the field.
    let out = std::process::Command::new(weir_bin())
        .args([
            "serve",
            "--config",
            &config_arg,
            "--feature-gates=EventsProxy=true",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("events_api.provider"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_is_charged_once_against_its_tenants_rate_limit() {
    // Two routes take the API's writes: `scoped` admits them, `audit` runs its own chain
    // on each stored change. The default tenant may take 3 events/s (a burst of 3).
    let config = [
        "tenants:".to_owned(),
        "  default: { limits: { events_per_sec: 3 } }".to_owned(),
        "events_api: { enabled: true, route: scoped }".to_owned(),
        "filters:".to_owned(),
        format!("  scope-inject: {{ path: {} }}", wasm::SCOPE_INJECT),
        "routes:".to_owned(),
        "  - { name: scoped, from: [k8s], filters: [scope-inject], to: [tail] }".to_owned(),
        "  - { name: audit, from: [k8s], to: [tail] }".to_owned(),
    ]
    .join("\n");
    let weir = Weir::start(&config);
    let url = format!("{}/api/v1/namespaces/default/events", weir.url);
    let http = reqwest::Client::new();
    let mut codes = Vec::new();
    for i in 0..4 {
        let resp = http
            .post(&url)
            .json(&core_event(&format!("e{i}"), json!({})))
            .send()
            .await
            .unwrap();
        codes.push(resp.status().as_u16());
    }
    // Three writes fit the burst (one token each, not one per route); the fourth waits.
    assert_eq!(codes, [201, 201, 201, 429]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admission_route_gets_only_the_changes_its_condition_takes() {
    // The route that admits writes takes only `default/keep-*` events; its chain stamps.
    let config = [
        "events_api: { enabled: true }".to_owned(),
        "filters:".to_owned(),
        format!(
            "  stamp: {{ path: {}, config: {{ stamp: s }} }}",
            wasm::STAMP
        ),
        "sinks:".to_owned(),
        "  taken: { type: file, path: taken.jsonl }".to_owned(),
        "routes:".to_owned(),
        "  - name: events".to_owned(),
        "    from: [k8s]".to_owned(),
        "    when: [ { prefix: { k8sname: keep- } } ]".to_owned(),
        "    filters: [stamp]".to_owned(),
        "    to: [taken]".to_owned(),
    ]
    .join("\n");
    let weir = Weir::start(&config);
    let url = format!("{}/api/v1/namespaces/default/events", weir.url);
    let http = reqwest::Client::new();
    for name in ["keep-1", "skip-1"] {
        let resp = http
            .post(&url)
            .json(&core_event(name, json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{name}");
    }
    // Stored whether the route takes them or not; updated and deleted alike.
    let resp = http
        .patch(format!("{url}/skip-1"))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"message":"changed"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for name in ["keep-1", "skip-1"] {
        let resp = http.delete(format!("{url}/{name}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{name}");
    }
    let taken = weir.jsonl("taken.jsonl");
    let seen: Vec<(&str, &str)> = taken
        .iter()
        .map(|e| {
            (
                e["k8sname"].as_str().unwrap(),
                e["k8schange"].as_str().unwrap(),
            )
        })
        .collect();
    // The create went to the sinks once (admission ran the chain); nothing of skip-1
    // arrived; the deletion, never admitted, ran the chain on its way (stamped).
    assert_eq!(
        seen,
        [("keep-1", "ADDED"), ("keep-1", "DELETED")],
        "{taken:?}"
    );
    assert_eq!(taken[1]["stamps"], "s", "{taken:?}");
}

/// `api: activity`: the proxy sends every request to the provider's
/// `activity.miloapis.com/v1alpha1` paths (an embedded weir serves them), converting
/// events.k8s.io/v1 bodies and answers — lists, patches and watch streams — on the way, so
/// clients of either Kubernetes API never see the provider's group.
#[tokio::test(flavor = "multi_thread")]
async fn proxy_in_activity_mode_converts_both_apis_to_and_from_the_activity_paths() {
    use reqwest::Method;
    let b_dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(b_dir.path());
    let b = Weir::start_in(b_dir, &b_config(&certs));
    let a_dir = tempfile::tempdir().unwrap();
    let config = a_config(&certs, &localhost(&b.url), 3)
        .replace("retries: 3 }", "retries: 3, api: activity }");
    assert!(config.contains("api: activity"), "{config}");
    let a = Weir::start_in(a_dir, &config);
    let front_id = certs.proxies.issue("front-proxy", &[]);
    let front = Front {
        http: client(&certs, Some(&front_id)),
        url: localhost(&a.url),
    };
    let core = "/api/v1/namespaces/default/events";
    let events = "/apis/events.k8s.io/v1/namespaces/default/events";

    let (code, c1) = front
        .send(P1, Method::POST, core, Some(core_event("c1", json!({}))))
        .await;
    assert_eq!(code, 201, "{c1}");
    assert_eq!(c1["apiVersion"], "v1", "{c1}");
    let ev = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "n1", "namespace": "default"},
        "eventTime": "2026-12-06T04:00:00.000000Z", "reportingController": "tests",
        "reportingInstance": "t-1", "action": "Started", "reason": "Started", "type": "Normal",
        "note": "started", "regarding": {"kind": "Pod", "name": "pod-n1", "namespace": "default"},
    });
    let (code, n1) = front.send(P1, Method::POST, events, Some(ev)).await;
    assert_eq!(code, 201, "{n1}");
    assert_eq!(n1["apiVersion"], "events.k8s.io/v1", "{n1}");
    assert_eq!(n1["regarding"]["name"], "pod-n1", "{n1}");
    assert_eq!(
        n1["metadata"]["annotations"][SCOPE_NAME], "p1",
        "admitted: {n1}"
    );

    // Lists and gets answer in the request's version.
    let (code, list) = front.send(P1, Method::GET, events, None).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["apiVersion"], "events.k8s.io/v1");
    let regarding: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["regarding"]["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(regarding.len(), 2, "{list}");
    assert!(
        regarding.contains(&"pod-n1") && !regarding.contains(&""),
        "every item has `regarding`: {list}"
    );
    let (code, got) = front
        .send(P1, Method::GET, &format!("{core}/n1"), None)
        .await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(
        (got["apiVersion"].as_str(), got["message"].as_str()),
        (Some("v1"), Some("started"))
    );

    // A merge patch in events.k8s.io terms.
    let response = front
        .req(P1, Method::PATCH, &format!("{events}/n1"))
        .header("content-type", "application/merge-patch+json")
        .body(json!({"note": "patched"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let patched: Value = response.json().await.unwrap();
    assert_eq!(patched["note"], "patched", "{patched}");

    // A watch through the events.k8s.io path streams converted events.
    let watch = front.watch(P1, events, &list, 4).await;
    let (code, body) = front
        .send(P1, Method::POST, core, Some(core_event("w1", json!({}))))
        .await;
    assert_eq!(code, 201, "{body}");
    let (seen, text) = watched(watch).await;
    let w1 = seen
        .iter()
        .find(|w| w["object"]["metadata"]["name"] == "w1")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(w1["object"]["apiVersion"], "events.k8s.io/v1", "{text}");
    assert!(w1["object"].get("regarding").is_some(), "{text}");
    assert!(w1["object"].get("involvedObject").is_none(), "{text}");
    drop(b);
}
