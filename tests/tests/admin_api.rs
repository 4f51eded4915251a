//! The admin API against the real binary: validated uploads, hot swap under load,
//! durability across restarts, token scoping.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use weir::tokens::hash_token;

const ADMIN: &str = "admin-secret-token";
const ACME: &str = "acme-secret-token";
const GLOBEX: &str = "globex-secret-token";

fn config(max_component_bytes: usize) -> String {
    [
        "tenants:".to_owned(),
        "  acme: {}".to_owned(),
        "  globex: {}".to_owned(),
        "admin:".to_owned(),
        format!("  max_component_bytes: {max_component_bytes}"),
        "  tokens:".to_owned(),
        format!(
            "    - {{ name: ops, sha256: {}, role: admin }}",
            hash_token(ADMIN)
        ),
        format!(
            "    - {{ name: acme-ci, sha256: {}, role: \"tenant:acme\" }}",
            hash_token(ACME)
        ),
        format!(
            "    - {{ name: globex-ci, sha256: {}, role: \"tenant:globex\" }}",
            hash_token(GLOBEX)
        ),
        "filters:".to_owned(),
        "  stamp: {}".to_owned(),
        "sinks:".to_owned(),
        "  out: { type: file, path: out.jsonl }".to_owned(),
        "routes:".to_owned(),
        "  - name: main".to_owned(),
        "    filters: [stamp]".to_owned(),
        "    to: [out]".to_owned(),
        "    record_filters: true".to_owned(),
    ]
    .join("\n")
        + "\n"
}

struct Admin {
    url: String,
    client: reqwest::Client,
}

impl Admin {
    fn new(weir: &Weir) -> Self {
        Self {
            url: weir.url.clone(),
            client: reqwest::Client::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder, token: Option<&str>) -> (u16, Value) {
        let req = match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn upload(&self, name: &str, wasm: Vec<u8>, config: &str, token: &str) -> (u16, Value) {
        let req = self
            .client
            .put(format!("{}/v1/filters/{name}", self.url))
            .header("x-weir-filter-config", config)
            .body(wasm);
        self.send(req, Some(token)).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(self.client.get(format!("{}{path}", self.url)), token)
            .await
    }

    /// A text endpoint (`/metrics`) with the admin token.
    async fn get_text(&self, path: &str) -> (u16, String) {
        let resp = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    async fn post(&self, path: &str, body: String, token: &str) -> (u16, Value) {
        self.send(
            self.client.post(format!("{}{path}", self.url)).body(body),
            Some(token),
        )
        .await
    }

    async fn put_json(&self, path: &str, body: Value, token: &str) -> (u16, Value) {
        let req = self
            .client
            .put(format!("{}{path}", self.url))
            .body(body.to_string());
        self.send(req, Some(token)).await
    }

    async fn delete(&self, path: &str, token: &str) -> (u16, Value) {
        self.send(
            self.client.delete(format!("{}{path}", self.url)),
            Some(token),
        )
        .await
    }
}

fn stamp_wasm() -> Vec<u8> {
    std::fs::read(wasm::STAMP).unwrap()
}

async fn send_events(weir: &Weir, ids: std::ops::Range<usize>) -> Value {
    let batch: Vec<Value> = ids
        .map(|i| event(&format!("e{i}"), "t", json!({})))
        .collect();
    let (status, answer) = post(
        &format!("{}/v1/routes/main/events", weir.url),
        &[("content-type", "application/cloudevents-batch+json")],
        Value::Array(batch).to_string(),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    answer
}

/// (case, component, config, status, error code, text the reason must contain)
type Refusal<'a> = (&'a str, Vec<u8>, &'a str, u16, &'a str, &'a str);

#[tokio::test(flavor = "multi_thread")]
async fn uploads_are_validated_and_refusals_change_nothing() {
    let limit = 8 << 20;
    let weir = Weir::start(&config(limit));
    let admin = Admin::new(&weir);
    // Declared but not uploaded yet: batches follow the failure policy.
    let answer = send_events(&weir, 0..2).await;
    assert_eq!(answer["dead_lettered"], 2, "{answer}");

    let (status, v1) = admin
        .upload("stamp", stamp_wasm(), r#"{"stamp":"v1"}"#, ADMIN)
        .await;
    assert_eq!(status, 201, "{v1}");
    assert_eq!(v1["version"], 1);

    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let oversize = vec![0u8; limit + 1];
    let cases: Vec<Refusal<'_>> = vec![
        (
            "random bytes",
            random,
            "{}",
            400,
            "not_a_component",
            "magic number",
        ),
        (
            "core module",
            core_module,
            "{}",
            400,
            "not_a_component",
            "core WebAssembly module",
        ),
        (
            "other world",
            std::fs::read(wasm::OTHER_WORLD).unwrap(),
            "{}",
            422,
            "wrong_world",
            "weir:filter",
        ),
        (
            "init rejects",
            stamp_wasm(),
            r#"{"stamp":""}"#,
            422,
            "config_rejected",
            "stamp must not be empty",
        ),
        (
            "unknown field",
            stamp_wasm(),
            r#"{"stomp":"x"}"#,
            422,
            "config_rejected",
            "unknown field",
        ),
        (
            "config not JSON",
            stamp_wasm(),
            "{nope",
            400,
            "bad_config",
            "not valid JSON",
        ),
        ("too large", oversize, "{}", 413, "too_large", "limit"),
    ];
    for (name, bytes, config, status, code, reason) in cases {
        let (got, answer) = admin.upload("stamp", bytes, config, ADMIN).await;
        assert_eq!(got, status, "{name}: {answer}");
        assert_eq!(answer["error"], code, "{name}: {answer}");
        let text = answer["reason"].as_str().unwrap_or_default();
        assert!(
            text.contains(reason),
            "{name}: `{text}` should mention `{reason}`"
        );
        let (_, record) = admin.get("/v1/filters/stamp", Some(ADMIN)).await;
        assert_eq!(record["active"], 1, "{name}: active version unchanged");
        assert_eq!(record["versions"].as_array().unwrap().len(), 1, "{name}");
    }
    let answer = send_events(&weir, 2..4).await;
    assert_eq!(answer["delivered"], 2, "{answer}");
    let out = weir.jsonl("out.jsonl");
    assert!(out.iter().all(|e| e["stamps"] == "v1"), "{out:?}");

    // Dry run: verdicts, nothing delivered.
    let (status, answer) = admin
        .post(
            "/v1/filters/stamp/test",
            json!([event("dry", "t", json!({}))]).to_string(),
            ADMIN,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["verdicts"][0]["verdict"], "keep");
    assert_eq!(answer["verdicts"][0]["event"]["stamps"], "v1");
    assert_eq!(weir.jsonl("out.jsonl").len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn hot_swap_under_load_processes_every_event_exactly_once_by_one_version() {
    let weir = Weir::start(&config(32 << 20));
    let admin = Admin::new(&weir);
    let (status, _) = admin
        .upload("stamp", stamp_wasm(), r#"{"stamp":"v1"}"#, ADMIN)
        .await;
    assert_eq!(status, 201);
    // The stamp each version writes, by version number.
    let mut by_version: BTreeMap<u64, String> = BTreeMap::from([(1, "v1".to_owned())]);
    const TOTAL: usize = 100_000;
    const BATCH: usize = 500;
    let url = weir.url.clone();
    let sender = tokio::spawn(async move {
        let client = reqwest::Client::new();
        for b in 0..TOTAL / BATCH {
            let batch: Vec<Value> = (b * BATCH..(b + 1) * BATCH)
                .map(|i| event(&format!("e{i}"), "t", json!({})))
                .collect();
            let resp = client
                .post(format!("{url}/v1/routes/main/events"))
                .header("content-type", "application/cloudevents-batch+json")
                .body(Value::Array(batch).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 202);
        }
    });
    // 10 swaps and 2 rollbacks while the stream runs.
    let mut stamps = vec!["v1".to_owned()];
    for i in 2..=13 {
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        if i == 6 || i == 11 {
            let (status, answer) = admin
                .post("/v1/filters/stamp/rollback", String::new(), ADMIN)
                .await;
            assert_eq!(status, 200, "{answer}");
        } else {
            let stamp = format!("v{i}");
            let (status, answer) = admin
                .upload(
                    "stamp",
                    stamp_wasm(),
                    &json!({ "stamp": stamp }).to_string(),
                    ADMIN,
                )
                .await;
            assert_eq!(status, 201, "{answer}");
            by_version.insert(answer["version"].as_u64().unwrap(), stamp.clone());
            stamps.push(stamp);
        }
    }
    sender.await.unwrap();
    let out = weir.jsonl("out.jsonl");
    assert_eq!(out.len(), TOTAL, "every event delivered exactly once");
    let ids: HashSet<&str> = out.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), TOTAL, "no duplicates");
    let mut per_version: BTreeMap<String, usize> = BTreeMap::new();
    for e in &out {
        let s = e["stamps"].as_str().unwrap();
        assert!(!s.contains('.'), "processed by more than one version: {s}");
        assert!(stamps.iter().any(|k| k == s), "unknown stamp {s}");
        // `record_filters`: the event names the filter version that processed it.
        let chain = e["weirfilters"].as_str().unwrap();
        let version: u64 = chain.strip_prefix("stamp@").unwrap().parse().unwrap();
        assert_eq!(by_version.get(&version), Some(&s.to_owned()), "{e}");
        *per_version.entry(s.to_owned()).or_default() += 1;
    }
    eprintln!("events per version: {per_version:?}");
    assert!(
        per_version.len() >= 3,
        "the swaps happened during the stream: {per_version:?}"
    );
    let (_, record) = admin.get("/v1/filters/stamp", Some(ADMIN)).await;
    assert_eq!(record["versions"].as_array().unwrap().len(), 11, "{record}");

    // One more event after the last swap: the verdict series are the active version's
    // only (the versions the lane stopped running are forgotten).
    let active = record["active"].as_u64().unwrap();
    send_events(&weir, TOTAL..TOTAL + 1).await;
    let (_, metrics) = admin.get_text("/metrics").await;
    let versions: HashSet<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("weir_filter_verdicts_total{"))
        .filter_map(|l| l.split("version=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        versions,
        HashSet::from([active.to_string().as_str()]),
        "{metrics}"
    );
    // An event that arrives claiming a chain gets the route's own.
    let (status, _) = post(
        &format!("{}/v1/routes/main/events", weir.url),
        &[("content-type", "application/cloudevents+json")],
        event("claims", "t", json!({"weirfilters": "trusted@1"})).to_string(),
    )
    .await;
    assert_eq!(status, 202);
    let out = weir.jsonl("out.jsonl");
    let claimed = out.iter().find(|e| e["id"] == "claims").unwrap();
    assert_eq!(
        claimed["weirfilters"],
        format!("stamp@{active}"),
        "{claimed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_and_versions_survive_a_restart() {
    let weir = Weir::start(&config(32 << 20));
    let admin = Admin::new(&weir);
    for stamp in ["v1", "v2"] {
        let (status, _) = admin
            .upload(
                "stamp",
                stamp_wasm(),
                &json!({ "stamp": stamp }).to_string(),
                ADMIN,
            )
            .await;
        assert_eq!(status, 201);
    }
    let (status, _) = admin
        .post(
            "/v1/filters/stamp/rollback",
            json!({"version": 1}).to_string(),
            ADMIN,
        )
        .await;
    assert_eq!(status, 200);
    let (clean, dir) = weir.terminate();
    assert!(clean);
    let weir = Weir::start_in(dir, &config(32 << 20));
    let admin = Admin::new(&weir);
    let (_, record) = admin.get("/v1/filters/stamp", Some(ADMIN)).await;
    assert_eq!(record["active"], 1, "{record}");
    assert_eq!(record["versions"].as_array().unwrap().len(), 2);
    assert_eq!(
        record["used_by"],
        json!([{"route": "main", "tenant": "default"}])
    );
    let answer = send_events(&weir, 0..3).await;
    assert_eq!(answer["delivered"], 3, "no re-upload needed: {answer}");
    assert!(weir.jsonl("out.jsonl").iter().all(|e| e["stamps"] == "v1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_tokens_only_reach_their_own_filters() {
    let weir = Weir::start(&config(32 << 20));
    let admin = Admin::new(&weir);
    let (status, _) = admin
        .upload("acme-stamp", stamp_wasm(), r#"{"stamp":"a"}"#, ACME)
        .await;
    assert_eq!(status, 201);
    let (status, answer) = admin.get("/v1/filters/acme-stamp", Some(ACME)).await;
    assert_eq!((status, answer["owner"].as_str()), (200, Some("acme")));

    let (status, _) = admin.get("/v1/filters/acme-stamp", Some(GLOBEX)).await;
    assert_eq!(status, 403);
    let (status, _) = admin
        .upload("acme-stamp", stamp_wasm(), r#"{"stamp":"g"}"#, GLOBEX)
        .await;
    assert_eq!(status, 403);
    let (status, _) = admin.delete("/v1/filters/acme-stamp", GLOBEX).await;
    assert_eq!(status, 403);
    let (status, _) = admin
        .post("/v1/filters/acme-stamp/rollback", String::new(), GLOBEX)
        .await;
    assert_eq!(status, 403);
    let (_, list) = admin.get("/v1/filters", Some(GLOBEX)).await;
    assert_eq!(
        list["filters"],
        json!([]),
        "globex sees none of acme's filters"
    );
    // A tenant cannot take over a platform filter either.
    let (status, _) = admin
        .upload("stamp", stamp_wasm(), r#"{"stamp":"x"}"#, ADMIN)
        .await;
    assert_eq!(status, 201);
    let (status, _) = admin
        .upload("stamp", stamp_wasm(), r#"{"stamp":"y"}"#, ACME)
        .await;
    assert_eq!(status, 403);

    let (status, answer) = admin.get("/v1/filters", None).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, _) = admin.get("/v1/filters", Some("not-a-token")).await;
    assert_eq!(status, 401);

    let (_, list) = admin.get("/v1/filters", Some(ADMIN)).await;
    assert_eq!(list["filters"].as_array().unwrap().len(), 2);
    let (status, answer) = admin.delete("/v1/filters/stamp", ADMIN).await;
    assert_eq!(status, 409, "in use by route main: {answer}");
    let (status, _) = admin.delete("/v1/filters/acme-stamp", ACME).await;
    assert_eq!(status, 200);
    let (status, _) = admin.get("/v1/filters/acme-stamp", Some(ADMIN)).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_chains_change_at_runtime_persist_and_are_scoped() {
    let weir = Weir::start(&config(32 << 20));
    let admin = Admin::new(&weir);
    let (status, _) = admin
        .upload("stamp", stamp_wasm(), r#"{"stamp":"platform"}"#, ADMIN)
        .await;
    assert_eq!(status, 201);
    let (status, _) = admin
        .upload("acme-stamp", stamp_wasm(), r#"{"stamp":"acme"}"#, ACME)
        .await;
    assert_eq!(status, 201);
    // acme sets its own chain on route main: its events run its filter from now on.
    let (status, answer) = admin
        .put_json(
            "/v1/tenants/acme",
            json!({"routes": {"main": ["acme-stamp"]}}),
            ACME,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let batch = json!([
        event("a1", "t", json!({"tenant": "acme"})),
        event("g1", "t", json!({"tenant": "globex"})),
    ]);
    let (status, answer) = post(
        &format!("{}/v1/routes/main/events", weir.url),
        &[("content-type", "application/cloudevents-batch+json")],
        batch.to_string(),
    )
    .await;
    assert_eq!(
        (status, answer["delivered"].as_u64()),
        (202, Some(2)),
        "{answer}"
    );
    let stamps: BTreeMap<String, String> = weir
        .jsonl("out.jsonl")
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["stamps"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(stamps["a1"], "acme");
    assert_eq!(stamps["g1"], "platform");

    // Scoping: limits are admin business; other tenants are off limits; filters of other
    // tenants cannot be borrowed.
    let (status, _) = admin
        .put_json(
            "/v1/tenants/acme",
            json!({"limits": {"timeout_ms": 5}}),
            ACME,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = admin
        .put_json("/v1/tenants/globex", json!({"routes": {"main": []}}), ACME)
        .await;
    assert_eq!(status, 403);
    let (status, _) = admin
        .put_json(
            "/v1/tenants/globex",
            json!({"routes": {"main": ["acme-stamp"]}}),
            GLOBEX,
        )
        .await;
    assert_eq!(status, 403);
    let (status, answer) = admin
        .put_json("/v1/tenants/acme", json!({"routes": {"nope": []}}), ACME)
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (422, Some("unknown_route"))
    );
    let (status, answer) = admin
        .put_json(
            "/v1/tenants/acme",
            json!({"routes": {"main": ["ghost"]}}),
            ACME,
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (422, Some("unknown_filter"))
    );
    let (status, answer) = admin
        .put_json(
            "/v1/tenants/acme",
            json!({"limits": {"timeout_ms": 50}}),
            ADMIN,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["limits"]["timeout_ms"], 50);
    assert_eq!(
        answer["routes"]["main"],
        json!(["acme-stamp"]),
        "routes kept"
    );
    let (status, _) = admin.delete("/v1/filters/acme-stamp", ACME).await;
    assert_eq!(status, 409, "acme's chain uses it");

    // Restart: the tenant settings are back.
    let (clean, dir) = weir.terminate();
    assert!(clean);
    let weir = Weir::start_in(dir, &config(32 << 20));
    let admin = Admin::new(&weir);
    let (status, answer) = admin.get("/v1/tenants/acme", Some(ACME)).await;
    assert_eq!(status, 200);
    assert_eq!(answer["limits"]["timeout_ms"], 50);
    assert_eq!(answer["routes"]["main"], json!(["acme-stamp"]));
    let (_, list) = admin.get("/v1/tenants", Some(GLOBEX)).await;
    assert_eq!(
        list["tenants"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["globex"]
    );
}

/// Every admin endpoint, as (method, path): the authorization matrix below covers each.
const ENDPOINTS: [(&str, &str); 13] = [
    ("GET", "/v1/filters"),
    ("PUT", "/v1/filters/stamp"),
    ("GET", "/v1/filters/stamp"),
    ("DELETE", "/v1/filters/stamp"),
    ("POST", "/v1/filters/stamp/rollback"),
    ("POST", "/v1/filters/stamp/test"),
    ("GET", "/v1/tenants"),
    ("PUT", "/v1/tenants/acme"),
    ("GET", "/v1/tenants/acme"),
    ("DELETE", "/v1/tenants/acme"),
    ("POST", "/v1/replay/main"),
    ("POST", "/v1/sinks/out/circuit/reset"),
    ("GET", "/v1/tenants/globex"),
];

#[tokio::test(flavor = "multi_thread")]
async fn every_admin_endpoint_needs_a_known_credential_and_admin_only_ones_refuse_tenants() {
    let weir = Weir::start(&config(1 << 20));
    let client = reqwest::Client::new();
    let call = |method: &str, path: &str, token: Option<&str>| {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = client.request(method, format!("{}{path}", weir.url));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Without a credential, or with an unknown one, nothing answers but 401.
    for (method, path) in ENDPOINTS {
        for token in [None, Some("not-a-token")] {
            assert_eq!(
                call(method, path, token).await,
                401,
                "{method} {path} {token:?}"
            );
        }
    }
    // A tenant's token is refused (403) where only admins may act, and where the
    // resource is another tenant's.
    let admin_only = [
        ("DELETE", "/v1/tenants/acme"),
        ("POST", "/v1/replay/main"),
        ("POST", "/v1/sinks/out/circuit/reset"),
        ("GET", "/v1/tenants/globex"),
    ];
    for (method, path) in admin_only {
        assert_eq!(
            call(method, path, Some(ACME)).await,
            403,
            "{method} {path} as acme"
        );
        assert_ne!(
            call(method, path, Some(ADMIN)).await,
            403,
            "{method} {path} as admin"
        );
        assert_ne!(
            call(method, path, Some(ADMIN)).await,
            401,
            "{method} {path} as admin"
        );
    }
    // Every endpoint takes the admin's token (whatever it then says of the request).
    for (method, path) in ENDPOINTS {
        let status = call(method, path, Some(ADMIN)).await;
        assert!(
            status != 401 && status != 403,
            "{method} {path} as admin: {status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn names_the_configuration_gives_cannot_be_squatted_and_owners_are_decided_under_the_lock() {
    let with_owned = config(32 << 20).replace(
        "  stamp: {}\n",
        "  stamp: {}\n  acme-policy: { owner: acme }\n",
    );
    let weir = Weir::start(&with_owned);
    let admin = Admin::new(&weir);
    // `stamp` is named by the configuration without a path (the `weir filter push`
    // workflow): it belongs to the platform before anyone uploads it.
    let (status, answer) = admin
        .upload("stamp", stamp_wasm(), r#"{"stamp":"g"}"#, GLOBEX)
        .await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = admin.get("/v1/filters/stamp", Some(ADMIN)).await;
    assert_eq!((status, &answer["owner"]), (200, &Value::Null), "{answer}");
    // A name the configuration gives to acme: acme may push it, globex may not.
    let (status, answer) = admin
        .upload("acme-policy", stamp_wasm(), r#"{"stamp":"g"}"#, GLOBEX)
        .await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = admin
        .upload("acme-policy", stamp_wasm(), r#"{"stamp":"a"}"#, ACME)
        .await;
    assert_eq!(status, 201, "{answer}");

    // Two tenants creating the same new name at once: one gets it, the other a 403
    // (a check before the upload's lock would let both add versions).
    for i in 0..6 {
        let name = format!("race-{i}");
        let (a, g) = tokio::join!(
            admin.upload(&name, stamp_wasm(), r#"{"stamp":"a"}"#, ACME),
            admin.upload(&name, stamp_wasm(), r#"{"stamp":"g"}"#, GLOBEX),
        );
        let mut statuses = [a.0, g.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 403], "{name}: {a:?} {g:?}");
        let winner = if a.0 == 201 { "acme" } else { "globex" };
        let (_, record) = admin.get(&format!("/v1/filters/{name}"), Some(ADMIN)).await;
        assert_eq!(record["owner"], winner, "{record}");
        assert_eq!(
            record["versions"].as_array().map(Vec::len),
            Some(1),
            "{record}"
        );
    }

    // A name globex took before the configuration named it changes hands at the next
    // start, and globex's code no longer runs under it.
    let (status, _) = admin
        .upload("late", stamp_wasm(), r#"{"stamp":"g"}"#, GLOBEX)
        .await;
    assert_eq!(status, 201);
    let dir = weir.kill();
    let renamed = with_owned.replace("  stamp: {}\n", "  stamp: {}\n  late: {}\n");
    let weir = Weir::start_in(dir, &renamed);
    let admin = Admin::new(&weir);
    let (status, record) = admin.get("/v1/filters/late", Some(ADMIN)).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["owner"], Value::Null, "{record}");
    assert_eq!(record["versions"], json!([]), "{record}");
    let (status, _) = admin
        .upload("late", stamp_wasm(), r#"{"stamp":"g"}"#, GLOBEX)
        .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_without_a_credential_is_refused_before_its_body_is_read() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let weir = Weir::start(&config(32 << 20));
    let addr = weir.url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // A 30 MB upload that sends 1 KB and then nothing: an answer can only come from
    // a server that did not wait for the body.
    let head = format!(
        "PUT /v1/filters/stamp HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 30000000\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&[0u8; 1024]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), socket.read(&mut answer))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}
