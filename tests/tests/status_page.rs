//! The status page in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `scripts/setup --test-peers`) loads `GET /` from the real binary, runs its script
//! against `GET /v1/status`, and the rendered page is read back with `--dump-dom`. It
//! shows the configured routes with each tenant's chain and filter versions, its numbers
//! agree with `/metrics` after a known load, it asks for a credential where the listener
//! needs one, and a tenant's token shows only that tenant.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Command;
use weir::tokens::hash_token;

const ADMIN: &str = "status-admin-token";
const ACME: &str = "status-acme-token";

/// The page as Chromium renders it once its script has fetched the status.
fn render(url: &str, profile: &std::path::Path) -> String {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok())
        .expect("headless chromium is needed for this test: run scripts/setup --test-peers");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Virtual time runs the page's timers and waits for its fetches.
            "--virtual-time-budget=4000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The text of the element with `id` in the rendered page.
fn cell<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(&rest[start..start + end])
}

/// A cell's number (the page writes thousands with commas).
fn number(dom: &str, id: &str) -> f64 {
    cell(dom, id)
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"))
        .replace(',', "")
        .parse()
        .unwrap_or_else(|e| panic!("#{id} is not a number ({e}):\n{dom}"))
}

fn config(tokens: bool) -> String {
    let mut lines = Vec::new();
    if tokens {
        lines.push("admin:".to_owned());
        lines.push("  tokens:".to_owned());
        lines.push(format!(
            "    - {{ name: ops, sha256: {}, role: admin }}",
            hash_token(ADMIN)
        ));
        lines.push(format!(
            "    - {{ name: acme-ci, sha256: {}, role: \"tenant:acme\" }}",
            hash_token(ACME)
        ));
        // The main listener too needs a credential.
        lines.push("authentication: { anonymous: false }".to_owned());
    }
    lines.extend([
        "tenants:".to_owned(),
        "  acme: {}".to_owned(),
        "  globex: {}".to_owned(),
        "filters:".to_owned(),
        filter_yaml("stamp", wasm::STAMP, "{ stamp: base }"),
        filter_yaml("acme-stamp", wasm::STAMP, "{ stamp: acme }"),
        filter_yaml("globex-stamp", wasm::STAMP, "{ stamp: globex }"),
        "sinks:".to_owned(),
        "  out: { type: file, path: out.jsonl }".to_owned(),
        "routes:".to_owned(),
        "  - name: main".to_owned(),
        "    filters: [stamp]".to_owned(),
        "    tenants:".to_owned(),
        "      acme: { filters: [acme-stamp] }".to_owned(),
        "      globex: { filters: [globex-stamp] }".to_owned(),
        "    to: [out]".to_owned(),
    ]);
    lines.join("\n") + "\n"
}

/// Sends `n` events of `tenant` (the default one when `None`), with `token` if given.
async fn send(weir: &Weir, token: Option<&str>, n: usize, tenant: Option<&str>) {
    let batch: Vec<Value> = (0..n)
        .map(|i| {
            let extra = match tenant {
                Some(t) => json!({ "tenant": t }),
                None => json!({}),
            };
            event(&format!("{}-{i}", tenant.unwrap_or("d")), "t", extra)
        })
        .collect();
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/cloudevents-batch+json")];
    headers.extend(auth.as_deref().map(|a| ("authorization", a)));
    let (status, answer) = post(
        &format!("{}/v1/events", weir.url),
        &headers,
        Value::Array(batch).to_string(),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_shows_routes_chains_and_versions_and_its_numbers_agree_with_metrics() {
    let weir = Weir::start(&config(true));
    // A second version of acme's filter, uploaded at run time.
    let upload = reqwest::Client::new()
        .put(format!("{}/v1/filters/acme-stamp", weir.url))
        .bearer_auth(ADMIN)
        .header("x-weir-filter-config", r#"{"stamp":"acme2"}"#)
        .body(std::fs::read(wasm::STAMP).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status().as_u16(), 201);
    // A known load: 37 default events, 12 of acme's, 5 of globex's.
    send(&weir, Some(ADMIN), 37, None).await;
    send(&weir, Some(ADMIN), 12, Some("acme")).await;
    send(&weir, Some(ADMIN), 5, Some("globex")).await;
    let profile = tempfile::tempdir().unwrap();

    // Without a credential the page asks for one and shows nothing.
    let dom = render(&format!("{}/", weir.url), profile.path());
    assert_eq!(cell(&dom, "meta"), Some("credential needed"), "{dom}");
    assert!(cell(&dom, "route-main-delivered").is_none(), "{dom}");

    // An admin sees every tenant's chain with versions, and the numbers of /metrics.
    let dom = render(&format!("{}/#token={ADMIN}", weir.url), profile.path());
    assert!(dom.contains("data-loaded=\"true\""), "{dom}");
    for chip in ["stamp@1", "acme-stamp@2", "globex-stamp@1"] {
        assert!(dom.contains(&format!(">{chip}<")), "{chip} missing:\n{dom}");
    }
    assert_eq!(cell(&dom, "filter-acme-stamp-version"), Some("v2"));
    let (_, metrics) = get_text_as(&format!("{}/metrics", weir.url), Some(ADMIN)).await;
    let delivered = metric(
        &metrics,
        "weir_route_events_total{outcome=\"delivered\",route=\"main\"}",
    )
    .unwrap();
    assert_eq!(delivered, 54.0, "{metrics}");
    assert_eq!(number(&dom, "route-main-delivered"), delivered);
    assert_eq!(
        number(&dom, "sink-out-events"),
        metric(&metrics, "weir_sink_events_total{sink=\"out\"}").unwrap()
    );
    assert_eq!(
        number(&dom, "received-http"),
        metric(&metrics, "weir_events_received_total{source=\"http\"}").unwrap()
    );
    for (tenant, n) in [("default", 37.0), ("acme", 12.0), ("globex", 5.0)] {
        let keep = metric_sum(
            &metrics,
            &format!(
                "weir_filter_verdicts_total{{filter=\"{}\",tenant=\"{tenant}\",verdict=\"keep\"",
                match tenant {
                    "default" => "stamp",
                    "acme" => "acme-stamp",
                    _ => "globex-stamp",
                }
            ),
        );
        assert_eq!(keep, n, "{metrics}");
        assert_eq!(number(&dom, &format!("verdicts-{tenant}-keep")), keep);
    }

    // A tenant's token: its own chain and verdicts only, none of the platform's figures.
    let dom = render(&format!("{}/#token={ACME}", weir.url), profile.path());
    assert!(
        cell(&dom, "meta").unwrap().ends_with("tenant:acme"),
        "{dom}"
    );
    assert!(dom.contains(">acme-stamp@2<"), "{dom}");
    assert!(
        !dom.contains("globex"),
        "another tenant leaks into acme's page:\n{dom}"
    );
    assert!(!dom.contains(">stamp@1<"), "{dom}");
    assert_eq!(number(&dom, "verdicts-acme-keep"), 12.0);
    assert!(cell(&dom, "verdicts-default-keep").is_none(), "{dom}");
    assert!(cell(&dom, "sink-out-events").is_none(), "{dom}");

    // The JSON behind it follows the listener's authentication too.
    let (status, _) = get_text(&format!("{}/v1/status", weir.url)).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_listener_without_credentials_the_page_opens_without_a_login() {
    let weir = Weir::start(&config(false));
    send(&weir, None, 3, None).await;
    let profile = tempfile::tempdir().unwrap();
    let dom = render(&format!("{}/", weir.url), profile.path());
    assert!(dom.contains("data-loaded=\"true\""), "{dom}");
    assert_ne!(cell(&dom, "meta"), Some("credential needed"), "{dom}");
    assert_eq!(number(&dom, "route-main-delivered"), 3.0);
    assert!(dom.contains(">stamp@1<"), "{dom}");
}
