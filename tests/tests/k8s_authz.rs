//! The Events API's authorization step (Authentication → Authorization → REST): rules
//! from the config, then a SubjectAccessReview webhook reached through a kubeconfig
//! (HTTPS with the webhook's CA, weir's bearer token), as kube-apiserver's
//! `--authorization-webhook-config-file`. Callers authenticate with client certificates
//! (CN = user, O = groups); real `kubectl` is one of them. The webhook is a small HTTPS
//! server in the test that answers reviews by a fixed policy: no real webhook
//! authorizer runs here.

#![allow(clippy::unwrap_used)]

mod common;

use common::pki::Pki;
use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const TOKEN: &str = "hook-token-7c1";

/// The test's webhook: allows `wanda` to read, denies `mallory` outright, has no opinion
/// on anything else; refuses (401) any caller without weir's token.
struct Hook {
    url: String,
    reviews: Arc<Mutex<Vec<Value>>>,
    hits: Arc<AtomicUsize>,
    /// Set: the webhook fails every review (500).
    broken: Arc<std::sync::atomic::AtomicBool>,
}

async fn hook(servers: &Pki, dir: &std::path::Path) -> Hook {
    let (cert, key) = servers.issue("hook", &["localhost"]);
    std::fs::write(dir.join("hook.pem"), cert).unwrap();
    std::fs::write(dir.join("hook.key"), key).unwrap();
    let tls = weir::tls::server_config(
        &weir::tls::TlsSettings {
            cert: dir.join("hook.pem"),
            key: dir.join("hook.key"),
            client_ca: None,
        },
        &[],
    )
    .unwrap();
    let reviews = Arc::new(Mutex::new(Vec::new()));
    let hits = Arc::new(AtomicUsize::new(0));
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (r, h, b) = (reviews.clone(), hits.clone(), broken.clone());
    let app = axum::Router::new().route(
        "/authorize",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (r, h, b) = (r.clone(), h.clone(), b.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    if b.load(Ordering::SeqCst) {
                        return (
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            axum::Json(json!({})),
                        );
                    }
                    if headers.get("authorization").and_then(|v| v.to_str().ok())
                        != Some(&format!("Bearer {TOKEN}"))
                    {
                        return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({})));
                    }
                    let mut review: Value = serde_json::from_slice(&body).unwrap();
                    r.lock().unwrap().push(review.clone());
                    let user = review["spec"]["user"].as_str().unwrap_or("").to_owned();
                    let verb = review["spec"]["resourceAttributes"]["verb"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    review["status"] = match (user.as_str(), verb.as_str()) {
                        ("wanda", "get" | "list" | "watch") => json!({"allowed": true}),
                        ("mallory", _) => {
                            json!({"allowed": false, "denied": true, "reason": "mallory is banned"})
                        }
                        _ => json!({"allowed": false, "reason": "no policy says so"}),
                    };
                    (axum::http::StatusCode::OK, axum::Json(review))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}/authorize",
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
    Hook {
        url,
        reviews,
        hits,
        broken,
    }
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = http.request(method, format!("{base}{path}"));
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

#[tokio::test(flavor = "multi_thread")]
async fn rules_then_the_webhook_decide_and_a_refusal_is_403_with_the_apiservers_words() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let (servers, users) = (Pki::new("servers CA"), Pki::new("users CA"));
    let d = dir.path();
    let hook = hook(&servers, d).await;
    std::fs::write(d.join("servers-ca.pem"), &servers.ca_pem).unwrap();
    std::fs::write(d.join("users-ca.pem"), &users.ca_pem).unwrap();
    let (cert, key) = servers.issue("weir", &["localhost"]);
    std::fs::write(d.join("weir.pem"), cert).unwrap();
    std::fs::write(d.join("weir.key"), key).unwrap();
    std::fs::write(
        d.join("hook.kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: hook\n  cluster: {{ server: \"{}\", certificate-authority: {} }}\nusers:\n- name: weir\n  user: {{ token: {TOKEN} }}\ncontexts:\n- name: hook\n  context: {{ cluster: hook, user: weir }}\ncurrent-context: hook\n",
            hook.url,
            d.join("servers-ca.pem").display()
        ),
    )
    .unwrap();
    let tls = format!(
        "tls: {{ cert: {0}/weir.pem, key: {0}/weir.key, client_ca: {0}/users-ca.pem }}",
        d.display()
    );
    let hook_config = format!(
        "    webhook: {{ kubeconfig: {}/hook.kubeconfig, unauthorized_ttl_seconds: 0 }}",
        d.display()
    );
    let config = [
        tls.as_str(),
        "events_api:",
        "  enabled: true",
        "  authorization:",
        "    rules:",
        "      - { users: [pat], verbs: [get, list, watch, create], namespaces: [team-a] }",
        "      - { groups: [auditors], verbs: [list, watch] }",
        hook_config.as_str(),
        "sinks: { stored: { type: file, path: stored.jsonl } }",
        "routes: [ { name: events, from: [k8s], to: [stored] } ]",
    ]
    .join("\n");
    let d_path = d.to_owned();
    let weir = Weir::start_in(dir, &config);
    let base = weir.url.replace("127.0.0.1", "localhost");
    let pat = servers.https_client(Some((&users, "pat", &[])));
    let ann = servers.https_client(Some((&users, "ann", &["auditors"])));
    let wanda = servers.https_client(Some((&users, "wanda", &[])));
    let mallory = servers.https_client(Some((&users, "mallory", &["auditors-not"])));
    let team_a = "/api/v1/namespaces/team-a/events";

    // Rules: pat within team-a only; a cluster-wide list needs every namespace.
    let (code, body) = call(
        &pat,
        &base,
        Method::POST,
        team_a,
        Some(k8s_event("e1", "team-a")),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = call(
        &pat,
        &base,
        Method::POST,
        "/api/v1/namespaces/team-b/events",
        Some(k8s_event("e2", "team-b")),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["reason"], "Forbidden");
    assert!(
        body["message"].as_str().unwrap().starts_with(
            "events is forbidden: User \"pat\" cannot create resource \"events\" in API group \"\" in the namespace \"team-b\""
        ),
        "{body}"
    );
    assert_eq!(call(&pat, &base, Method::GET, team_a, None).await.0, 200);
    let (code, body) = call(
        &pat,
        &base,
        Method::GET,
        "/apis/events.k8s.io/v1/events",
        None,
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("at the cluster scope"),
        "{body}"
    );
    // A group's rule: auditors list everywhere and may not delete.
    let (code, list) = call(&ann, &base, Method::GET, "/api/v1/events", None).await;
    assert_eq!(
        (code, list["items"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{list}"
    );
    let (code, _) = call(&ann, &base, Method::DELETE, &format!("{team_a}/e1"), None).await;
    assert_eq!(code, 403);
    // Nothing the rules allowed reached the webhook.
    let asked = hook.hits.load(Ordering::SeqCst);
    assert_eq!(
        asked, 3,
        "only the three requests no rule allowed were reviewed"
    );

    // The webhook: wanda may read (answers cached), not write.
    let (code, body) = call(&wanda, &base, Method::GET, team_a, None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(call(&wanda, &base, Method::GET, team_a, None).await.0, 200);
    assert_eq!(
        hook.hits.load(Ordering::SeqCst),
        asked + 1,
        "the second read was answered from the cache"
    );
    let review = hook.reviews.lock().unwrap().last().unwrap().clone();
    assert_eq!(review["apiVersion"], "authorization.k8s.io/v1");
    assert_eq!(review["kind"], "SubjectAccessReview");
    assert_eq!(review["spec"]["user"], "wanda");
    assert!(review["spec"]["groups"]
        .as_array()
        .unwrap()
        .contains(&json!("system:authenticated")));
    assert_eq!(
        review["spec"]["resourceAttributes"],
        json!({"verb": "list", "group": "", "version": "v1", "resource": "events", "namespace": "team-a"})
    );
    assert!(review["spec"]["extra"]["authentication.kubernetes.io/credential-id"].is_array());
    let (code, body) = call(
        &wanda,
        &base,
        Method::POST,
        team_a,
        Some(k8s_event("w", "team-a")),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with(": no policy says so"),
        "{body}"
    );
    // An explicit denial, with its reason.
    let (code, body) = call(&mallory, &base, Method::GET, team_a, None).await;
    assert_eq!(code, 403);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with(": mallory is banned"),
        "{body}"
    );

    // Real kubectl as pat: its namespace, and a refusal elsewhere.
    let kdir = weir.dir.path();
    let (ucert, ukey) = users.issue_with("pat", &[], &[]);
    std::fs::write(kdir.join("pat.pem"), ucert).unwrap();
    std::fs::write(kdir.join("pat.key"), ukey).unwrap();
    std::fs::write(
        kdir.join("kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: w\n  cluster: {{ server: \"{base}\", certificate-authority: {} }}\nusers:\n- name: pat\n  user: {{ client-certificate: {}, client-key: {} }}\ncontexts:\n- name: w\n  context: {{ cluster: w, user: pat }}\ncurrent-context: w\n",
            kdir.join("servers-ca.pem").display(),
            kdir.join("pat.pem").display(),
            kdir.join("pat.key").display()
        ),
    )
    .unwrap();
    let kubectl = |ns: &str| {
        std::process::Command::new("kubectl")
            .args(["get", "events", "-o", "name", "-n", ns])
            .arg(format!("--cache-dir={}", kdir.join("kube-cache").display()))
            .env("KUBECONFIG", kdir.join("kubeconfig"))
            .output()
            .expect("kubectl runs")
    };
    let out = kubectl("team-a");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "event/e1");
    let out = kubectl("team-b");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Forbidden") && err.contains("cannot list resource \"events\""),
        "{err}"
    );

    // kube-apiserver's flag alone: the webhook is the whole authorization step.
    let flag_dir = tempfile::tempdir().unwrap();
    let plain = format!(
        "{}\n{}",
        tls, "routes: [ { name: r, to: [tail] } ]\nevents_api: { enabled: true }"
    );
    let plain_path = d_path.join("plain.yaml");
    std::fs::write(&plain_path, plain).unwrap();
    let data = format!("--data-dir={}", flag_dir.path().display());
    let config_arg = plain_path.display().to_string();
    let flag = format!(
        "--authorization-webhook-config-file={}",
        d_path.join("hook.kubeconfig").display()
    );
    let args = [
        "serve",
        "--config",
        &config_arg,
        &data,
        "--listen=127.0.0.1:0",
        &flag,
    ];
    let by_flag = Weir::spawn(flag_dir, &args);
    let flag_base = by_flag.url.replace("127.0.0.1", "localhost");
    assert_eq!(
        call(&wanda, &flag_base, Method::GET, team_a, None).await.0,
        200
    );
    let (code, body) = call(&pat, &flag_base, Method::GET, team_a, None).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with(": no policy says so"),
        "{body}"
    );
    drop(by_flag);
    // A kubeconfig that is not there stops start-up with the file's name.
    let missing = format!(
        "--authorization-webhook-config-file={}",
        d_path.join("nowhere.kubeconfig").display()
    );
    let out = std::process::Command::new(weir_bin())
        .args([
            "serve",
            "--config",
            &config_arg,
            &data,
            "--listen=127.0.0.1:0",
            &missing,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("nowhere.kubeconfig"), "{err}");

    // The webhook failing: what it has not answered is refused, and weir goes on serving.
    hook.broken.store(true, Ordering::SeqCst);
    let (code, body) = call(
        &wanda,
        &base,
        Method::GET,
        "/api/v1/namespaces/other/events",
        None,
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("could not be reached"),
        "{body}"
    );
    assert_eq!(call(&pat, &base, Method::GET, team_a, None).await.0, 200);
}
