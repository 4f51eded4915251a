//! The Events API on the ClickHouse store, against a real `clickhouse-server` (Debian's
//! 18.16, started on loopback by the test): create/get/list/update/patch/delete/watch,
//! field selectors answered by SQL, paging, restarts keeping objects and growing
//! resourceVersions, and retention dropping whole days.

#![allow(clippy::unwrap_used)]

mod common;

use common::clickhouse::ClickHouse;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn config(ch: &ClickHouse, table: &str) -> String {
    [
        "events_api:".to_owned(),
        "  enabled: true".to_owned(),
        format!("  clickhouse: {{ url: \"{}\", table: {table} }}", ch.url),
        "sinks:".to_owned(),
        "  activity: { type: file, path: activity.jsonl }".to_owned(),
        "routes:".to_owned(),
        "  - { name: activity, from: [k8s], to: [activity] }".to_owned(),
    ]
    .join("\n")
}

fn event(ns: &str, name: &str, pod: &str, reason: &str, ty: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": ns},
        "reason": reason, "message": format!("{reason} on {pod}"), "type": ty,
        "source": {"component": "kubelet"},
    })
}

async fn send(method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = reqwest::Client::new().request(method, url);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

async fn names(url: &str) -> Vec<String> {
    let (code, list) = send(reqwest::Method::GET, url, None).await;
    assert_eq!(code, 200, "{list}");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_store_serves_every_verb_with_sql_selectors_and_survives_restart() {
    use reqwest::Method;
    let ch = ClickHouse::start();
    let dir = tempfile::tempdir().unwrap();
    let weir = Weir::start_in(dir, &config(&ch, "events_a"));
    let base = format!("{}/api/v1", weir.url);
    // 30 events in two namespaces: pods 0-4, reasons Started/BackOff, every third a Warning.
    for i in 0..30 {
        let (ns, ty) = (
            if i % 2 == 0 { "default" } else { "team-b" },
            if i % 3 == 0 { "Warning" } else { "Normal" },
        );
        let reason = if i % 3 == 0 { "BackOff" } else { "Started" };
        let app = if i < 10 { "web" } else { "db" };
        let e = event(
            ns,
            &format!("e{i:02}"),
            &format!("pod-{}", i % 5),
            reason,
            ty,
            app,
        );
        let (code, body) = send(
            Method::POST,
            &format!("{base}/namespaces/{ns}/events"),
            Some(e),
        )
        .await;
        assert_eq!(code, 201, "{body}");
    }
    let (code, dup) = send(
        Method::POST,
        &format!("{base}/namespaces/default/events"),
        Some(event("default", "e00", "pod-0", "Started", "Normal", "web")),
    )
    .await;
    assert_eq!((code, dup["reason"].as_str()), (409, Some("AlreadyExists")));

    // Lists and selectors (SQL on columns; labels checked on the rows).
    assert_eq!(names(&format!("{base}/events")).await.len(), 30);
    assert_eq!(
        names(&format!("{base}/namespaces/team-b/events"))
            .await
            .len(),
        15
    );
    let pod3 = names(&format!(
        "{base}/events?fieldSelector=involvedObject.name%3Dpod-3"
    ))
    .await;
    // (namespace, name) order: default (even i) first.
    assert_eq!(pod3, ["e08", "e18", "e28", "e03", "e13", "e23"]);
    let warnings = names(&format!(
        "{base}/namespaces/default/events?fieldSelector=type%3DWarning,reason%3DBackOff"
    ))
    .await;
    assert_eq!(warnings, ["e00", "e06", "e12", "e18", "e24"]);
    let not_normal = names(&format!("{base}/events?fieldSelector=type!%3DNormal")).await;
    assert_eq!(not_normal.len(), 10);
    let web_warnings = names(&format!(
        "{base}/events?fieldSelector=type%3DWarning&labelSelector=app%3Dweb"
    ))
    .await;
    assert_eq!(web_warnings, ["e00", "e06", "e03", "e09"]);
    let (code, bad) = send(
        Method::GET,
        &format!("{base}/events?fieldSelector=nope%3D1"),
        None,
    )
    .await;
    assert_eq!((code, bad["reason"].as_str()), (400, Some("BadRequest")));

    // Paging with limit/continue visits everything once, in order.
    let mut seen = Vec::new();
    let mut cont = String::new();
    loop {
        let (code, page) = send(
            Method::GET,
            &format!("{base}/events?limit=7&continue={cont}"),
            None,
        )
        .await;
        assert_eq!(code, 200, "{page}");
        for e in page["items"].as_array().unwrap() {
            seen.push(e["metadata"]["name"].as_str().unwrap().to_owned());
        }
        match page["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => cont = c.to_owned(),
            _ => break,
        }
    }
    assert_eq!(seen.len(), 30);
    let mut sorted = seen.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), 30);

    // Get, update with a stale and a current resourceVersion, patch, delete.
    let one = format!("{base}/namespaces/default/events/e02");
    let (code, e02) = send(Method::GET, &one, None).await;
    assert_eq!(code, 200);
    let rv: u64 = e02["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (_, list) = send(Method::GET, &format!("{base}/events"), None).await;
    let list_rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let watch = reqwest::Client::new()
        .get(format!("{base}/namespaces/default/events?watch=true&resourceVersion={list_rv}&timeoutSeconds=3"))
        .send()
        .await
        .unwrap();
    let mut stale = e02.clone();
    stale["metadata"]["resourceVersion"] = json!((rv - 1).to_string());
    stale["message"] = json!("stale");
    let (code, _) = send(Method::PUT, &one, Some(stale)).await;
    assert_eq!(code, 409);
    let mut fresh = e02.clone();
    fresh["message"] = json!("updated");
    let (code, updated) = send(Method::PUT, &one, Some(fresh)).await;
    assert_eq!(code, 200, "{updated}");
    let new_rv: u64 = updated["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(new_rv > rv);
    let resp = reqwest::Client::new()
        .patch(&one)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"message":"patched","count":3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (code, _) = send(
        Method::DELETE,
        &format!("{base}/namespaces/default/events/e04"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = send(
        Method::GET,
        &format!("{base}/namespaces/default/events/e04"),
        None,
    )
    .await;
    assert_eq!(code, 404);
    let (code, got) = send(Method::GET, &one, None).await;
    assert_eq!(
        (code, got["message"].as_str(), got["count"].as_i64()),
        (200, Some("patched"), Some(3))
    );
    let text = tokio::time::timeout(Duration::from_secs(20), watch.text())
        .await
        .unwrap()
        .unwrap();
    let kinds: Vec<(String, String)> = text
        .lines()
        .map(|l| {
            let w: Value = serde_json::from_str(l).unwrap();
            (
                w["type"].as_str().unwrap().to_owned(),
                w["object"]["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("MODIFIED", "e02"), ("MODIFIED", "e02"), ("DELETED", "e04")]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    // FINAL reads see each event's newest row; a deletion is a tombstone row.
    let rows = ch.query("SELECT count() FROM events_a FINAL").await;
    assert_eq!(rows.trim(), "30", "29 live events and 1 tombstone");
    let live = ch
        .query("SELECT count() FROM events_a FINAL WHERE deleted = 0")
        .await;
    assert_eq!(live.trim(), "29");

    // A restart keeps the events, and resourceVersions keep growing.
    let (_, dir) = weir.terminate();
    let weir = Weir::start_in(dir, &config(&ch, "events_a"));
    let base = format!("{}/api/v1", weir.url);
    assert_eq!(names(&format!("{base}/events")).await.len(), 29);
    let (code, created) = send(
        Method::POST,
        &format!("{base}/namespaces/default/events"),
        Some(event(
            "default",
            "after-restart",
            "pod-9",
            "Started",
            "Normal",
            "web",
        )),
    )
    .await;
    assert_eq!(code, 201);
    let after: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(after > new_rv, "{after} > {new_rv}");
    // Every change went on to the k8s route too: 30 creates, 2 updates, 1 deletion, and
    // the create after the restart.
    let changes = weir.jsonl("activity.jsonl");
    assert_eq!(changes.len(), 34);
    assert_eq!(changes[33]["k8sname"], "after-restart");
    assert_eq!(changes[33]["k8snamespace"], "default");
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_retention_drops_days_past_the_retention_period() {
    let ch = ClickHouse::start();
    let dir = tempfile::tempdir().unwrap();
    let weir = Weir::start_in(dir, &config(&ch, "events_r"));
    let base = format!("{}/api/v1/namespaces/default/events", weir.url);
    let (code, _) = send(
        reqwest::Method::POST,
        &base,
        Some(event("default", "today", "p", "Started", "Normal", "web")),
    )
    .await;
    assert_eq!(code, 201);
    // An event created 40 days ago (written as the store writes rows; the API always
    // stamps creation with now).
    let old = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "old", "namespace": "default", "resourceVersion": "1", "creationTimestamp": "2026-10-01T00:00:00Z"}, "involvedObject": {"kind": "Pod", "name": "p"}, "reason": "Old", "type": "Normal"});
    let row = json!({"namespace": "default", "name": "old", "rv": 1, "deleted": 0, "created": "2026-10-01", "reason": "Old", "ev_type": "Normal", "object": old.to_string()});
    ch.query(&format!("INSERT INTO events_r FORMAT JSONEachRow {row}"))
        .await;
    assert_eq!(names(&base).await, ["old", "today"]);
    // Retention (30 days by default) runs at start and hourly: a restart drops the old day.
    let (_, dir) = weir.terminate();
    let weir = Weir::start_in(dir, &config(&ch, "events_r"));
    let base = format!("{}/api/v1/namespaces/default/events", weir.url);
    assert_eq!(names(&base).await, ["today"]);
    let parts = ch
        .query("SELECT DISTINCT partition FROM system.parts WHERE table = 'events_r' AND active")
        .await;
    assert!(!parts.contains("20261001"), "{parts}");
}
