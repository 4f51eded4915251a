//! Producer authentication and enforced filters, against the real binary: a producer's
//! credential binds its events to its tenant (over HTTP and gRPC), an event naming
//! another tenant is refused whole with 403, a protected tenant takes no anonymous events,
//! the route's enforced filters run for every tenant whatever its chain, and the main
//! listener's own endpoints (tail, stats, metrics, verbose readiness) honour its
//! authentication, a tenant's tail showing only its events.

#![allow(clippy::unwrap_used)]

mod common;

use common::toggle::{agent_client, batch_of, transfer_event};
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use weir::tokens::hash_token;

const ADMIN: &str = "admin-secret";
const ACME_ADMIN: &str = "acme-admin-secret";
const ACME: &str = "acme-producer-secret";
const GLOBEX: &str = "globex-producer-secret";

/// Tenants acme and globex with producer tokens, `open` without; a route whose enforced
/// filters stamp `B` before and `A` after each tenant's chain (`d`, `a`, `g`).
fn config(extra: &str) -> String {
    format!(
        "{extra}\
tenants:\n  acme: {{}}\n  globex: {{}}\n  open: {{}}\n\
tenancy:\n  header: x-weir-tenant\n  sources:\n    - {{ prefix: /clusters/globex/, tenant: globex }}\n    - {{ prefix: \"rodent://globex-\", tenant: globex }}\n  \
producers:\n    - {{ name: acme-ingest, tenant: acme, sha256: {} }}\n    - {{ name: globex-ingest, tenant: globex, sha256: {} }}\n\
admin:\n  tokens:\n    - {{ name: ops, sha256: {}, role: admin }}\n    - {{ name: acme-ci, sha256: {}, role: \"tenant:acme\" }}\n\
filters:\n{}{}{}{}{}{}\
sinks:\n  out: {{ type: file, path: out.jsonl }}\n\
routes:\n  - name: main\n    from: [http, grpc]\n    enforced: {{ before: [e-before], after: [e-after] }}\n    filters: [s-default]\n    tenants:\n      acme: {{ filters: [s-acme] }}\n      globex: {{ filters: [s-globex, g-router] }}\n    to: [out, tail]\n",
        hash_token(ACME),
        hash_token(GLOBEX),
        hash_token(ADMIN),
        hash_token(ACME_ADMIN),
        filter_yaml("e-before", wasm::STAMP, "{ stamp: B }"),
        filter_yaml("e-after", wasm::STAMP, "{ stamp: A }"),
        filter_yaml("s-default", wasm::STAMP, "{ stamp: d }"),
        filter_yaml("s-acme", wasm::STAMP, "{ stamp: a }"),
        filter_yaml("s-globex", wasm::STAMP, "{ stamp: g }"),
        filter_yaml(
            "g-router",
            wasm::TRIGGER_ROUTE,
            "{ prefix: \"t.\", routes: { x: out } }"
        ),
    )
}

/// POSTs one structured event with an optional bearer token and extra headers.
async fn send(
    weir: &Weir,
    token: Option<&str>,
    headers: &[(&str, &str)],
    e: Value,
) -> (u16, Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut all = vec![("content-type", "application/cloudevents-batch+json")];
    if let Some(b) = &bearer {
        all.push(("authorization", b.as_str()));
    }
    all.extend_from_slice(headers);
    let batch = match e {
        Value::Array(_) => e,
        one => json!([one]),
    };
    post(&format!("{}/v1/events", weir.url), &all, batch.to_string()).await
}

/// The stamps of the delivered events by id.
fn stamps(weir: &Weir) -> BTreeMap<String, String> {
    weir.jsonl("out.jsonl")
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["stamps"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_producer_speaks_only_for_its_tenant_and_enforced_filters_run_for_everyone() {
    let weir = Weir::start(&config(""));

    // Credentials are configured: the listener takes no anonymous producer.
    let (status, answer) = send(&weir, None, &[], event("anon", "t", json!({}))).await;
    assert_eq!(status, 401, "{answer}");
    let (status, _) = send(&weir, Some("nobody"), &[], event("x", "t", json!({}))).await;
    assert_eq!(status, 401);

    // acme's producer: its events are acme's, inside the enforced filters.
    let (status, answer) = send(&weir, Some(ACME), &[], event("a1", "t", json!({}))).await;
    assert_eq!(status, 202, "{answer}");
    let (status, _) = send(
        &weir,
        Some(ACME),
        &[],
        event("a2", "t", json!({"tenant": "acme"})),
    )
    .await;
    assert_eq!(status, 202, "naming its own tenant is fine");

    // Claiming another tenant, any way, refuses the whole request.
    let mut mapped = event("claim-source", "t", json!({}));
    mapped["source"] = json!("/clusters/globex/ns");
    let claims = [
        (
            json!([
                event("ok-in-bad-batch", "t", json!({})),
                event("claim-ext", "t", json!({"tenant": "globex"}))
            ]),
            vec![],
        ),
        (json!([mapped]), vec![]),
        (
            json!([event("claim-header", "t", json!({}))]),
            vec![("x-weir-tenant", "globex")],
        ),
        (
            json!([event("claim-unknown", "t", json!({"tenant": "initech"}))]),
            vec![],
        ),
    ];
    for (batch, headers) in claims {
        let (status, answer) = send(&weir, Some(ACME), &headers, batch.clone()).await;
        assert_eq!(status, 403, "{batch}: {answer}");
        assert_eq!(answer["error"], "tenant_refused", "{answer}");
        assert!(
            answer["reason"]
                .as_str()
                .unwrap()
                .contains("speaks for tenant `acme`"),
            "{answer}"
        );
    }

    // globex's producer, and an admin token (the platform) naming acme.
    let (status, _) = send(
        &weir,
        Some(GLOBEX),
        &[],
        event("g1", "t", json!({"tenant": "globex"})),
    )
    .await;
    assert_eq!(status, 202);
    // globex's own filter routes this one straight to `out`: it still passes the
    // enforced filter after the chain.
    let (status, answer) = send(
        &weir,
        Some(GLOBEX),
        &[],
        event("g-routed", "t.x", json!({})),
    )
    .await;
    assert_eq!(
        (status, answer["routed"].as_u64()),
        (202, Some(1)),
        "{answer}"
    );
    let (status, _) = send(
        &weir,
        Some(ADMIN),
        &[],
        event("p1", "t", json!({"tenant": "acme"})),
    )
    .await;
    assert_eq!(status, 202, "the platform may send any tenant's events");
    // A tenant's admin token speaks for its tenant too.
    let (status, _) = send(
        &weir,
        Some(ACME_ADMIN),
        &[],
        event("c1", "t", json!({"tenant": "globex"})),
    )
    .await;
    assert_eq!(status, 403);

    // A producer token is no admin credential.
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/filters", weir.url))
        .bearer_auth(ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // acme empties its own chain: the enforced filters still run.
    let resp = reqwest::Client::new()
        .put(format!("{}/v1/tenants/acme", weir.url))
        .bearer_auth(ACME_ADMIN)
        .body(json!({"routes": {"main": []}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
    let (status, _) = send(&weir, Some(ACME), &[], event("a3", "t", json!({}))).await;
    assert_eq!(status, 202);

    let got = stamps(&weir);
    let expected: BTreeMap<String, String> = [
        ("a1", "B.a.A"),
        ("a2", "B.a.A"),
        ("g1", "B.g.A"),
        ("g-routed", "B.g.A"),
        ("p1", "B.a.A"),
        ("a3", "B.A"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(
        got, expected,
        "nothing refused was delivered, in part or whole"
    );
    let (_, metrics) = get_text_as(&format!("{}/metrics", weir.url), Some(ADMIN)).await;
    assert_eq!(
        metric(
            &metrics,
            "weir_events_rejected_total{reason=\"tenant_refused\",source=\"http\"}"
        ),
        Some(5.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_producers_cannot_reach_a_protected_tenant_even_when_allowed() {
    let weir = Weir::start(&config("authentication: { anonymous: true }\n"));
    for (id, tenant) in [("x-acme", "acme"), ("x-globex", "globex")] {
        let (status, answer) =
            send(&weir, None, &[], event(id, "t", json!({"tenant": tenant}))).await;
        assert_eq!(status, 403, "{answer}");
        assert!(
            answer["reason"]
                .as_str()
                .unwrap()
                .contains("only from its authenticated producers"),
            "{answer}"
        );
    }
    let mut mapped = event("x-mapped", "t", json!({}));
    mapped["source"] = json!("/clusters/globex/ns");
    let (status, _) = send(&weir, None, &[], mapped).await;
    assert_eq!(
        status, 403,
        "a source mapped to a protected tenant is refused"
    );
    let (status, _) = send(
        &weir,
        None,
        &[],
        event("o1", "t", json!({"tenant": "open"})),
    )
    .await;
    assert_eq!(status, 202, "a tenant without credentials stays open");
    let (status, _) = send(&weir, None, &[], event("d1", "t", json!({}))).await;
    assert_eq!(status, 202);
    let got = stamps(&weir);
    assert_eq!(
        got.keys().map(String::as_str).collect::<Vec<_>>(),
        ["d1", "o1"]
    );
    assert_eq!(got["o1"], "B.d.A", "open has no chain of its own");
    // Anonymous callers read figures, but no tail: it would show protected tenants' events.
    let (status, _) = get_text(&format!("{}/metrics", weir.url)).await;
    assert_eq!(status, 200);
    let tail = reqwest::get(format!("{}/v1/tail", weir.url)).await.unwrap();
    assert_eq!(tail.status().as_u16(), 401);
}

/// Reads a tail until `want` lines arrived (or 10 s passed).
async fn tail_lines(tail: &mut reqwest::Response, want: usize) -> Vec<Value> {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while text.lines().count() < want {
        match tokio::time::timeout_at(deadline, tail.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(std::str::from_utf8(&chunk).unwrap()),
            _ => break,
        }
    }
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_listeners_endpoints_honour_its_authentication_and_a_tenants_tail_is_its_own() {
    let weir = Weir::start(&config(""));
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut req = client.get(format!("{}{path}", weir.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    // The probes stay open; what names peers and tenants does not.
    assert_eq!(get("/healthz", None).await.unwrap().status().as_u16(), 200);
    assert_eq!(get("/readyz", None).await.unwrap().status().as_u16(), 200);
    for (path, token, expected) in [
        ("/readyz?verbose", None, 401),
        ("/readyz?verbose", Some(ACME), 200),
        ("/metrics", None, 401),
        ("/metrics", Some(ACME), 403),
        ("/metrics", Some(ACME_ADMIN), 403),
        ("/metrics", Some(ADMIN), 200),
        ("/v1/stats", None, 401),
        ("/v1/stats", Some(GLOBEX), 403),
        ("/v1/stats", Some(ADMIN), 200),
        ("/v1/tail", None, 401),
        ("/v1/tail", Some("nobody"), 401),
    ] {
        let status = get(path, token).await.unwrap().status().as_u16();
        assert_eq!(status, expected, "{path} with {token:?}");
    }

    let mut acme_tail = get("/v1/tail", Some(ACME)).await.unwrap();
    assert_eq!(acme_tail.status().as_u16(), 200);
    let mut admin_tail = get("/v1/tail", Some(ADMIN)).await.unwrap();
    assert_eq!(admin_tail.status().as_u16(), 200);
    // Let both readers subscribe before anything is published.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (token, id) in [(GLOBEX, "g1"), (ACME, "a1"), (GLOBEX, "g2"), (ACME, "a2")] {
        let (status, _) = send(&weir, Some(token), &[], event(id, "t", json!({}))).await;
        assert_eq!(status, 202);
    }
    let ids = |lines: &[Value]| -> Vec<String> {
        lines
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = tail_lines(&mut admin_tail, 4).await;
    assert_eq!(ids(&all), ["g1", "a1", "g2", "a2"]);
    // acme's reader got its two and nothing of globex's (read past them with a marker).
    let (status, _) = send(&weir, Some(ACME), &[], event("a3", "t", json!({}))).await;
    assert_eq!(status, 202);
    let mine = tail_lines(&mut acme_tail, 3).await;
    assert_eq!(ids(&mine), ["a1", "a2", "a3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_producers_are_bound_by_their_token() {
    let weir = Weir::start(&format!("grpc:\n  listen: 127.0.0.1:0\n{}", config("")));
    let mut client = agent_client(weir.grpc_url().unwrap()).await.unwrap();
    let call = |token: Option<&str>, id: &str, source: &str| {
        let mut request = tonic::Request::new(batch_of(
            id,
            vec![transfer_event(
                id,
                source,
                weir::toggle::pb::events::EventLevel::Warn,
            )],
        ));
        if let Some(t) = token {
            let value: MetadataValue<_> = format!("Bearer {t}").parse().unwrap();
            request.metadata_mut().insert("authorization", value);
        }
        request
    };
    let refused = client
        .send_events(call(None, "n1", "rodent://node-1"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    let refused = client
        .send_events(call(Some("nobody"), "n2", "rodent://node-1"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let answer = client
        .send_events(call(Some(ACME), "r-acme", "rodent://acme-node"))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.success, "{}", answer.message);
    let refused = client
        .send_events(call(Some(ACME), "r-claim", "rodent://globex-node"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
    let answer = client
        .send_events(call(Some(GLOBEX), "r-globex", "rodent://globex-node"))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.success);
    let got = stamps(&weir);
    let expected: BTreeMap<String, String> = [("r-acme", "B.a.A"), ("r-globex", "B.g.A")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_api_writers_are_bound_by_their_user_or_group() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (servers, users) = (
        common::pki::Pki::new("servers CA"),
        common::pki::Pki::new("users CA"),
    );
    std::fs::write(d.join("users-ca.pem"), &users.ca_pem).unwrap();
    let (cert, key) = servers.issue("weir", &["localhost"]);
    std::fs::write(d.join("weir.pem"), cert).unwrap();
    std::fs::write(d.join("weir.key"), key).unwrap();
    let config = format!(
        "tls: {{ cert: {dir}/weir.pem, key: {dir}/weir.key, client_ca: {dir}/users-ca.pem }}\n\
events_api: {{ enabled: true }}\n\
tenants:\n  acme: {{}}\n  globex: {{}}\n\
tenancy:\n  sources:\n    - {{ prefix: /api/v1/namespaces/team-g/, tenant: globex }}\n  \
producers:\n    - {{ name: pat, tenant: acme, user: pat }}\n    - {{ name: globex-writers, tenant: globex, group: globex-writers }}\n\
filters:\n{}{}{}\
sinks: {{ stored: {{ type: file, path: out.jsonl }} }}\n\
routes:\n  - name: events\n    from: [k8s]\n    filters: [s-default]\n    tenants:\n      acme: {{ filters: [s-acme] }}\n      globex: {{ filters: [s-globex] }}\n    to: [stored]\n",
        filter_yaml("s-default", wasm::STAMP, "{ stamp: d }"),
        filter_yaml("s-acme", wasm::STAMP, "{ stamp: a }"),
        filter_yaml("s-globex", wasm::STAMP, "{ stamp: g }"),
        dir = d.display(),
    );
    let weir = Weir::start_in(dir, &config);
    let base = weir.url.replace("127.0.0.1", "localhost");
    let create = |client: reqwest::Client, name: &'static str, ns: &'static str| {
        let url = format!("{base}/api/v1/namespaces/{ns}/events");
        let body = k8s_event(name, ns);
        async move {
            let resp = client.post(url).json(&body).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        }
    };
    let pat = servers.https_client(Some((&users, "pat", &[])));
    let gil = servers.https_client(Some((&users, "gil", &["globex-writers"])));
    let uma = servers.https_client(Some((&users, "uma", &[])));

    let (status, body) = create(pat.clone(), "pat-a", "team-a").await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = create(pat.clone(), "pat-g", "team-g").await;
    assert_eq!(
        status, 403,
        "pat speaks for acme, team-g is globex's: {body}"
    );
    assert!(body.contains("speaks for tenant `acme`"), "{body}");
    let (status, body) = create(gil.clone(), "gil-g", "team-g").await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = create(uma.clone(), "uma-g", "team-g").await;
    assert_eq!(
        status, 403,
        "an unmapped user cannot write a protected tenant's: {body}"
    );
    let (status, body) = create(uma.clone(), "uma-a", "team-a").await;
    assert_eq!(status, 201, "{body}");

    let stored: Vec<String> = weir
        .jsonl("out.jsonl")
        .iter()
        .map(|e| e["k8sname"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, ["pat-a", "gil-g", "uma-a"]);
    // Which tenant's chain admitted each write (the refused ones reached none).
    let admin = servers.https_client(None);
    let metrics = admin
        .get(format!("{base}/metrics"))
        .header("authorization", weir.admin_auth())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (filter, tenant) in [
        ("s-acme", "acme"),
        ("s-globex", "globex"),
        ("s-default", "default"),
    ] {
        let calls = metric_sum(
            &metrics,
            &format!("weir_filter_verdicts_total{{filter=\"{filter}\",tenant=\"{tenant}\""),
        );
        assert_eq!(calls, 1.0, "{filter} for {tenant}: {metrics}");
    }
    assert_eq!(
        metric_sum(&metrics, "weir_filter_verdicts_total"),
        3.0,
        "{metrics}"
    );

    // Deletes are bound too: only globex's producers (and the platform) delete in team-g.
    let delete = |client: reqwest::Client, path: &'static str| {
        let url = format!("{base}{path}");
        async move { client.delete(url).send().await.unwrap().status().as_u16() }
    };
    let gil_g = "/api/v1/namespaces/team-g/events/gil-g";
    assert_eq!(delete(pat.clone(), gil_g).await, 403);
    assert_eq!(delete(uma.clone(), gil_g).await, 403);
    assert_eq!(
        delete(pat.clone(), "/api/v1/namespaces/team-g/events").await,
        403
    );
    assert_eq!(delete(gil.clone(), gil_g).await, 200);
    assert_eq!(
        delete(pat, "/api/v1/namespaces/team-a/events/pat-a").await,
        200
    );
}
