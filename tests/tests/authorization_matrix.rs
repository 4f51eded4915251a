//! The authorization matrix: every endpoint of the main listener (with the admin API on
//! it) and of the Events API, called as every role, against the real binary. Each cell
//! says whether the role is let through (`A`: any answer but 401 and 403), refused as a
//! stranger (`U`: 401) or refused as known but not allowed (`F`: 403). The tables are the
//! policy: a change in who may do what fails this test.

#![allow(clippy::unwrap_used)]

mod common;

use common::pki::Pki;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use weir::tokens::hash_token;

/// How a role is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    /// Let through (the handler answered: 2xx, or a 4xx/5xx about the request itself).
    A,
    /// 401: not a known credential.
    U,
    /// 403: known, not allowed.
    F,
}
use Cell::{A, F, U};

fn classify(status: u16) -> Cell {
    match status {
        401 => U,
        403 => F,
        _ => A,
    }
}

const ADMIN: &str = "matrix-admin";
const ACME: &str = "matrix-acme-tenant";
const GLOBEX: &str = "matrix-globex-tenant";
const PRODUCER: &str = "matrix-acme-producer";

/// The roles of the token matrix, in column order: anonymous, an unknown token, admin,
/// `tenant:acme`, `tenant:globex`, acme's producer.
const ROLES: [(&str, Option<&str>); 6] = [
    ("anonymous", None),
    ("unknown", Some("no-such-token")),
    ("admin", Some(ADMIN)),
    ("acme", Some(ACME)),
    ("globex", Some(GLOBEX)),
    ("producer", Some(PRODUCER)),
];

fn token_config(producers: bool) -> String {
    let producers = if producers {
        format!(
            "  producers:\n    - {{ name: acme-ingest, tenant: acme, sha256: {} }}\n",
            hash_token(PRODUCER)
        )
    } else {
        String::new()
    };
    format!(
        "tenants:\n  acme: {{}}\n  globex: {{}}\n\
tenancy:\n  sources: []\n{producers}\
admin:\n  tokens:\n    - {{ name: ops, sha256: {}, role: admin }}\n    - {{ name: acme-ci, sha256: {}, role: \"tenant:acme\" }}\n    - {{ name: globex-ci, sha256: {}, role: \"tenant:globex\" }}\n\
filters:\n{}  acme-policy: {{ owner: acme }}\n\
sinks:\n  out: {{ type: file, path: out.jsonl }}\n\
routes:\n  - name: main\n    filters: [stamp]\n    to: [out, tail]\n",
        hash_token(ADMIN),
        hash_token(ACME),
        hash_token(GLOBEX),
        filter_yaml("stamp", wasm::STAMP, "{ stamp: s }"),
    )
}

/// One endpoint call: method, path, body, content type.
struct Call {
    method: Method,
    path: &'static str,
    body: Option<String>,
    content_type: &'static str,
}

fn call(method: Method, path: &'static str) -> Call {
    Call {
        method,
        path,
        body: None,
        content_type: "application/json",
    }
}

fn with(method: Method, path: &'static str, content_type: &'static str, body: Value) -> Call {
    Call {
        method,
        path,
        body: Some(match body {
            Value::String(s) => s,
            other => other.to_string(),
        }),
        content_type,
    }
}

/// Sends a call and tells how it was answered (a streamed answer is judged by its status
/// and not read).
async fn status_of(client: &reqwest::Client, base: &str, c: &Call, token: Option<&str>) -> u16 {
    let mut req = client
        .request(c.method.clone(), format!("{base}{}", c.path))
        .timeout(Duration::from_secs(30));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(body) = &c.body {
        req = req
            .header("content-type", c.content_type)
            .body(body.clone());
    }
    req.send().await.unwrap().status().as_u16()
}

fn batch(tenant: Option<&str>) -> Value {
    let extra = match tenant {
        Some(t) => json!({ "tenant": t }),
        None => json!({}),
    };
    json!([event("m1", "matrix", extra)])
}

/// Checks every row against every role and reports all mismatches at once.
async fn check(base: &str, rows: Vec<(Call, [Cell; 6])>) {
    let client = reqwest::Client::new();
    let mut wrong = Vec::new();
    for (c, expected) in &rows {
        for ((role, token), want) in ROLES.iter().zip(expected) {
            let status = status_of(&client, base, c, *token).await;
            if classify(status) != *want {
                wrong.push(format!(
                    "{} {} as {role}: {status}, expected {want:?}",
                    c.method, c.path
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

const CE_BATCH: &str = "application/cloudevents-batch+json";

#[tokio::test(flavor = "multi_thread")]
async fn every_main_listener_and_admin_endpoint_as_every_role() {
    let weir = Weir::start(&token_config(true));
    use Method as M;
    let rows = vec![
        // Ingest: producers, admins and tenants; a tenant's credential only for itself.
        (
            with(M::POST, "/v1/events", CE_BATCH, batch(None)),
            [U, U, A, A, A, A],
        ),
        (
            with(M::POST, "/v1/events", CE_BATCH, batch(Some("acme"))),
            [U, U, A, A, F, A],
        ),
        (
            with(M::POST, "/v1/events", CE_BATCH, batch(Some("globex"))),
            [U, U, A, F, A, F],
        ),
        (
            with(M::POST, "/v1/routes/main/events", CE_BATCH, batch(None)),
            [U, U, A, A, A, A],
        ),
        // What the listener shows: a tail per credential, figures for admins.
        (call(M::GET, "/v1/tail"), [U, U, A, A, A, A]),
        (call(M::GET, "/metrics"), [U, U, A, F, F, F]),
        (call(M::GET, "/v1/stats"), [U, U, A, F, F, F]),
        // The status page holds no data; its JSON is scoped to the caller's tenant.
        (call(M::GET, "/"), [A, A, A, A, A, A]),
        (call(M::GET, "/v1/status"), [U, U, A, A, A, A]),
        (call(M::GET, "/healthz"), [A, A, A, A, A, A]),
        (call(M::GET, "/readyz"), [A, A, A, A, A, A]),
        (call(M::GET, "/readyz?verbose"), [U, U, A, A, A, A]),
        // The admin API: admin and tenant tokens, a tenant only for what it owns; a
        // producer token is no admin credential.
        (call(M::GET, "/v1/filters"), [U, U, A, A, A, U]),
        (call(M::GET, "/v1/filters/acme-policy"), [U, U, A, A, F, U]),
        (call(M::GET, "/v1/filters/stamp"), [U, U, A, F, F, U]),
        (
            with(
                M::PUT,
                "/v1/filters/acme-policy",
                "application/wasm",
                json!("not wasm"),
            ),
            [U, U, A, A, F, U],
        ),
        (
            with(
                M::PUT,
                "/v1/filters/stamp",
                "application/wasm",
                json!("not wasm"),
            ),
            [U, U, A, F, F, U],
        ),
        (
            call(M::POST, "/v1/filters/acme-policy/rollback"),
            [U, U, A, A, F, U],
        ),
        (
            call(M::POST, "/v1/filters/stamp/rollback"),
            [U, U, A, F, F, U],
        ),
        (
            with(M::POST, "/v1/filters/stamp/test", CE_BATCH, batch(None)),
            [U, U, A, F, F, U],
        ),
        (
            with(
                M::POST,
                "/v1/filters/acme-policy/test",
                CE_BATCH,
                batch(None),
            ),
            [U, U, A, A, F, U],
        ),
        // `stamp` is in use: the admin's delete is answered 409 and removes nothing.
        (call(M::DELETE, "/v1/filters/stamp"), [U, U, A, F, F, U]),
        (call(M::GET, "/v1/tenants"), [U, U, A, A, A, U]),
        (call(M::GET, "/v1/tenants/acme"), [U, U, A, A, F, U]),
        (
            with(
                M::PUT,
                "/v1/tenants/acme",
                "application/json",
                json!({"routes": {"main": ["stamp"]}}),
            ),
            [U, U, A, A, F, U],
        ),
        (call(M::DELETE, "/v1/tenants/acme"), [U, U, A, F, F, U]),
        (
            with(M::POST, "/v1/replay/main", CE_BATCH, batch(None)),
            [U, U, A, F, F, U],
        ),
        (
            call(M::POST, "/v1/sinks/out/circuit/reset"),
            [U, U, A, F, F, U],
        ),
    ];
    check(&weir.url, rows).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_listener_open_to_anonymous_callers_only_the_admin_api_needs_a_token() {
    // No producer credentials, no client certificates: the embedded defaults' stance.
    let weir = Weir::start(&token_config(false));
    use Method as M;
    // The producer column is an unknown token here (no producers are configured).
    let rows = vec![
        (
            with(M::POST, "/v1/events", CE_BATCH, batch(None)),
            [A, U, A, A, A, U],
        ),
        (
            with(M::POST, "/v1/events", CE_BATCH, batch(Some("globex"))),
            [A, U, A, F, A, U],
        ),
        (call(M::GET, "/v1/tail"), [A, U, A, A, A, U]),
        (call(M::GET, "/metrics"), [A, U, A, F, F, U]),
        (call(M::GET, "/v1/stats"), [A, U, A, F, F, U]),
        (call(M::GET, "/v1/status"), [A, U, A, A, A, U]),
        (call(M::GET, "/readyz?verbose"), [A, U, A, A, A, U]),
        (call(M::GET, "/v1/filters"), [U, U, A, A, A, U]),
        (call(M::GET, "/v1/tenants/acme"), [U, U, A, A, F, U]),
        (
            call(M::POST, "/v1/sinks/out/circuit/reset"),
            [U, U, A, F, F, U],
        ),
    ];
    check(&weir.url, rows).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_events_api_endpoint_as_every_role() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (servers, users) = (Pki::new("servers CA"), Pki::new("users CA"));
    std::fs::write(d.join("users-ca.pem"), &users.ca_pem).unwrap();
    let (cert, key) = servers.issue("weir", &["localhost"]);
    std::fs::write(d.join("weir.pem"), cert).unwrap();
    std::fs::write(d.join("weir.key"), key).unwrap();
    // ops may do everything; viewers read everywhere; pat writes in team-a and is acme's
    // producer; team-g belongs to globex.
    let config = [
        format!(
            "tls: {{ cert: {0}/weir.pem, key: {0}/weir.key, client_ca: {0}/users-ca.pem }}",
            d.display()
        ),
        "tenants: { acme: {}, globex: {} }".into(),
        "tenancy:".into(),
        "  sources: [ { prefix: /api/v1/namespaces/team-g/, tenant: globex } ]".into(),
        "  producers: [ { name: pat, tenant: acme, user: pat } ]".into(),
        "events_api:".into(),
        "  enabled: true".into(),
        "  authorization:".into(),
        "    rules:".into(),
        "      - { users: [ops], verbs: [\"*\"], namespaces: [\"*\"] }".into(),
        "      - { groups: [viewers], verbs: [get, list, watch], namespaces: [\"*\"] }".into(),
        "      - { users: [pat], verbs: [get, list, watch, create, update, patch, delete], namespaces: [team-a, team-g] }".into(),
        "sinks: { stored: { type: file, path: stored.jsonl } }".into(),
        "routes: [ { name: events, from: [k8s], to: [stored] } ]".into(),
    ]
    .join("\n");
    let weir = Weir::start_in(dir, &config);
    let base = weir.url.replace("127.0.0.1", "localhost");
    let roles: Vec<(&str, reqwest::Client)> = vec![
        ("anonymous", servers.https_client(None)),
        ("ops", servers.https_client(Some((&users, "ops", &[])))),
        (
            "viewer",
            servers.https_client(Some((&users, "vic", &["viewers"]))),
        ),
        ("pat", servers.https_client(Some((&users, "pat", &[])))),
        ("nobody", servers.https_client(Some((&users, "nora", &[])))),
    ];
    // Something to read, update and delete, in both namespaces.
    let ops = &roles[1].1;
    for ns in ["team-a", "team-g"] {
        for name in ["seed", "doomed"] {
            let resp = ops
                .post(format!("{base}/api/v1/namespaces/{ns}/events"))
                .json(&k8s_event(name, ns))
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.status().as_u16(),
                201,
                "{}",
                resp.text().await.unwrap()
            );
        }
    }
    use Method as M;
    let core = "/api/v1";
    let ev = "/apis/events.k8s.io/v1";
    let act = "/apis/activity.miloapis.com/v1alpha1";
    let query = json!({"apiVersion": "activity.miloapis.com/v1alpha1", "kind": "EventQuery", "spec": {"startTime": "now-1h", "endTime": "now"}});
    let facets = json!({"apiVersion": "activity.miloapis.com/v1alpha1", "kind": "EventFacetQuery", "spec": {"facets": [{"field": "reason"}]}});
    let merge = "application/merge-patch+json";
    // (method, path, body, content type) × [anonymous, ops, viewer, pat, nobody]
    let rows: Vec<EventsApiRow> = vec![
        (M::GET, "/version".into(), None, "", [U, A, A, A, A]),
        (M::GET, "/api".into(), None, "", [U, A, A, A, A]),
        (M::GET, "/apis".into(), None, "", [U, A, A, A, A]),
        (M::GET, format!("{core}/events"), None, "", [U, A, A, F, F]),
        (M::GET, format!("{ev}/events"), None, "", [U, A, A, F, F]),
        (
            M::GET,
            format!("{core}/namespaces/team-a/events"),
            None,
            "",
            [U, A, A, A, F],
        ),
        (
            M::GET,
            format!("{ev}/namespaces/team-a/events"),
            None,
            "",
            [U, A, A, A, F],
        ),
        (
            M::GET,
            format!("{core}/namespaces/team-a/events?watch=1&timeoutSeconds=1"),
            None,
            "",
            [U, A, A, A, F],
        ),
        (
            M::GET,
            format!("{core}/namespaces/team-a/events/seed"),
            None,
            "",
            [U, A, A, A, F],
        ),
        (
            M::GET,
            format!("{ev}/namespaces/team-a/events/seed"),
            None,
            "",
            [U, A, A, A, F],
        ),
        (
            M::POST,
            format!("{core}/namespaces/team-a/events"),
            Some(k8s_event("new-a", "team-a")),
            "application/json",
            [U, A, F, A, F],
        ),
        // pat may write in team-g by the rules, but it speaks for acme and team-g is
        // globex's: the producer binding refuses it.
        (
            M::POST,
            format!("{core}/namespaces/team-g/events"),
            Some(k8s_event("new-g", "team-g")),
            "application/json",
            [U, A, F, F, F],
        ),
        (
            M::PATCH,
            format!("{core}/namespaces/team-a/events/seed"),
            Some(json!({"message": "patched"})),
            merge,
            [U, A, F, A, F],
        ),
        (
            M::PUT,
            format!("{core}/namespaces/team-a/events/seed"),
            Some(k8s_event("seed", "team-a")),
            "application/json",
            [U, A, F, A, F],
        ),
        (
            M::DELETE,
            format!("{core}/namespaces/team-a/events/doomed"),
            None,
            "",
            [U, A, F, A, F],
        ),
        (
            M::DELETE,
            format!("{core}/namespaces/team-g/events"),
            None,
            "",
            [U, A, F, F, F],
        ),
        (
            M::POST,
            format!("{act}/eventqueries"),
            Some(query),
            "application/json",
            [U, A, F, F, F],
        ),
        (
            M::POST,
            format!("{act}/eventfacetqueries"),
            Some(facets),
            "application/json",
            [U, A, F, F, F],
        ),
    ];
    let mut wrong = Vec::new();
    for (method, path, body, content_type, expected) in &rows {
        for ((role, client), want) in roles.iter().zip(expected) {
            let mut req = client
                .request(method.clone(), format!("{base}{path}"))
                .timeout(Duration::from_secs(30));
            if let Some(b) = body {
                req = req
                    .header("content-type", *content_type)
                    .body(b.to_string());
            }
            let status = req.send().await.unwrap().status().as_u16();
            if classify(status) != *want {
                wrong.push(format!(
                    "{method} {path} as {role}: {status}, expected {want:?}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// An Events API call (method, path, body, content type) and how each role is answered:
/// anonymous, ops, a viewer, pat, a user no rule names.
type EventsApiRow = (Method, String, Option<Value>, &'static str, [Cell; 5]);
