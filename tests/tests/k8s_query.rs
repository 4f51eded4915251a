//! Activity's query resources (`EventQuery`, `EventFacetQuery` under
//! `activity.miloapis.com/v1alpha1`) against both stores — the embedded one and a real
//! `clickhouse-server` — through kube-rs' dynamic client: time ranges (RFC 3339 and
//! `now-…`), newest first, namespace and field selectors (both API versions' labels), a
//! CloudEvents SQL filter, paging with `continue`, facets with counts, and 422s naming the
//! field.

#![allow(clippy::unwrap_used)]

mod common;

use common::clickhouse::ClickHouse;
use common::*;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{json, Value};

fn client(url: &str) -> kube::Client {
    kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap()
}

fn ago(minutes: i64) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - minutes * 60;
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn create_event(
    url: &str,
    ns: &str,
    name: &str,
    pod: &str,
    reason: &str,
    ty: &str,
    minutes_ago: i64,
) {
    let body = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": ns},
        "reason": reason, "message": format!("{reason} {pod}"), "type": ty,
        "source": {"component": "kubelet"},
        "firstTimestamp": ago(minutes_ago), "lastTimestamp": ago(minutes_ago), "count": 1,
    });
    let (code, answer) = post(
        &format!("{url}/api/v1/namespaces/{ns}/events"),
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await;
    assert_eq!(code, 201, "{answer}");
}

async fn run(
    client: &kube::Client,
    kind: &str,
    plural: &str,
    spec: Value,
) -> Result<Value, kube::Error> {
    let gvk = GroupVersionKind::gvk("activity.miloapis.com", "v1alpha1", kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let mut q = DynamicObject::new("q", &ar);
    q.data = json!({ "spec": spec });
    let answer = api.create(&PostParams::default(), &q).await?;
    Ok(answer.data)
}

async fn names(client: &kube::Client, spec: Value) -> (Vec<String>, Option<String>) {
    let answer = run(client, "EventQuery", "eventqueries", spec)
        .await
        .unwrap();
    let results = answer["status"]["results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for r in &results {
        assert_eq!(r["kind"], "EventRecord");
        assert_eq!(r["event"]["apiVersion"], "events.k8s.io/v1", "{r}");
        assert!(r["event"].get("regarding").is_some(), "{r}");
    }
    let names = results
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let cont = answer["status"]["continue"].as_str().map(str::to_owned);
    (names, cont)
}

async fn scenario(url: &str) {
    create_event(url, "prod", "e1", "a", "BackOff", "Warning", 120).await;
    create_event(url, "prod", "e2", "a", "Pulled", "Normal", 30).await;
    create_event(url, "dev", "e3", "b", "BackOff", "Warning", 10).await;
    create_event(url, "prod", "e4", "c", "Scheduled", "Normal", 3 * 24 * 60).await;
    let client = client(url);

    // The last hour, newest first.
    let (got, cont) = names(&client, json!({"startTime": "now-1h", "endTime": "now"})).await;
    assert_eq!(got, ["e3", "e2"]);
    assert_eq!(cont, None);
    // RFC 3339 bounds, a namespace, field selectors in both APIs' labels.
    let (got, _) = names(
        &client,
        json!({"startTime": ago(180), "endTime": ago(0), "namespace": "prod"}),
    )
    .await;
    assert_eq!(got, ["e2", "e1"]);
    let (got, _) = names(
        &client,
        json!({"startTime": "now-7d", "endTime": "now", "fieldSelector": "regarding.name=b"}),
    )
    .await;
    assert_eq!(got, ["e3"]);
    let (got, _) = names(&client, json!({"startTime": "now-7d", "endTime": "now", "fieldSelector": "involvedObject.name=a,type=Warning"})).await;
    assert_eq!(got, ["e1"]);
    // The whole retention, a CESQL filter over the event as a CloudEvent.
    let (got, _) = names(
        &client,
        json!({"startTime": "now-30d", "endTime": "now",
        "filter": "k8stype = 'Warning' AND subject LIKE 'Pod/%'"}),
    )
    .await;
    assert_eq!(got, ["e3", "e1"]);
    // Paging: one at a time, each page's cursor bound to the query.
    let spec = json!({"startTime": "now-7d", "endTime": "now", "limit": 1});
    let mut all = Vec::new();
    let mut cont: Option<String> = None;
    for _ in 0..10 {
        let mut s = spec.clone();
        if let Some(c) = &cont {
            s["continue"] = c.clone().into();
        }
        let (page, next) = names(&client, s).await;
        all.extend(page);
        cont = next;
        if cont.is_none() {
            break;
        }
    }
    assert_eq!(all, ["e3", "e2", "e1", "e4"]);
    // The same with a filter (paged after filtering).
    let (page, next) = names(&client, json!({"startTime": "now-7d", "endTime": "now", "limit": 1, "filter": "k8sreason = 'BackOff'"})).await;
    assert_eq!(page, ["e3"]);
    let (page, next) = names(&client, json!({"startTime": "now-7d", "endTime": "now", "limit": 1, "filter": "k8sreason = 'BackOff'", "continue": next.unwrap()})).await;
    assert_eq!((page, next), (vec!["e1".to_owned()], None));

    // Mistakes are 422s naming the field.
    for (spec, field) in [
        (json!({"endTime": "now"}), "spec.startTime"),
        (
            json!({"startTime": "now", "endTime": "now-1h"}),
            "spec.endTime",
        ),
        (
            json!({"startTime": "now-1h", "endTime": "now+1h"}),
            "spec.endTime",
        ),
        (
            json!({"startTime": "now-1h", "endTime": "now", "limit": 5000}),
            "spec.limit",
        ),
        (
            json!({"startTime": "now-1h", "endTime": "now", "filter": "k8stype ="}),
            "spec.filter",
        ),
        (
            json!({"startTime": "now-1h", "endTime": "now", "continue": "bogus"}),
            "spec.continue",
        ),
    ] {
        match run(&client, "EventQuery", "eventqueries", spec.clone()).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{spec}: {status:?}");
                assert!(status.message.contains(field), "{spec}: {}", status.message);
            }
            other => panic!("{spec}: {other:?}"),
        }
    }

    // Facets: counts, most first, then by value.
    let answer = run(
        &client,
        "EventFacetQuery",
        "eventfacetqueries",
        json!({
            "timeRange": {"start": "now-7d"},
            "facets": [{"field": "reason"}, {"field": "type"}, {"field": "regarding.kind"},
                       {"field": "namespace", "limit": 1}, {"field": "source.component"}],
        }),
    )
    .await
    .unwrap();
    let facets = &answer["status"]["facets"];
    let values = |i: usize| facets[i]["values"].clone();
    assert_eq!(
        values(0),
        json!([{"value": "BackOff", "count": 2}, {"value": "Pulled", "count": 1}, {"value": "Scheduled", "count": 1}])
    );
    assert_eq!(
        values(1),
        json!([{"value": "Normal", "count": 2}, {"value": "Warning", "count": 2}])
    );
    assert_eq!(values(2), json!([{"value": "Pod", "count": 4}]));
    assert_eq!(values(3), json!([{"value": "prod", "count": 3}]));
    assert_eq!(values(4), json!([{"value": "kubelet", "count": 4}]));
    let only_recent = run(
        &client,
        "EventFacetQuery",
        "eventfacetqueries",
        json!({
            "timeRange": {"start": "now-1h"}, "facets": [{"field": "reason"}],
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        only_recent["status"]["facets"][0]["values"],
        json!([{"value": "BackOff", "count": 1}, {"value": "Pulled", "count": 1}])
    );
    match run(
        &client,
        "EventFacetQuery",
        "eventfacetqueries",
        json!({"facets": [{"field": "message"}]}),
    )
    .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 422),
        other => panic!("{other:?}"),
    }

    // Discovery names both resources as create-only and cluster-scoped.
    let (code, text) = get_text(&format!("{url}/apis/activity.miloapis.com/v1alpha1")).await;
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&text).unwrap();
    let q = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "eventqueries")
        .unwrap();
    assert_eq!(
        (q["namespaced"].clone(), q["verbs"].clone()),
        (json!(false), json!(["create"]))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn event_queries_and_facets_on_the_embedded_store() {
    let weir = Weir::start("events_api: { enabled: true }\nroutes:\n  - { name: r, to: [tail] }\n");
    scenario(&weir.url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn event_queries_and_facets_on_clickhouse_run_as_sql() {
    let ch = ClickHouse::start();
    let config = format!(
        "events_api:\n  enabled: true\n  clickhouse: {{ url: \"{}\", table: queries }}\nroutes:\n  - {{ name: r, to: [tail] }}\n",
        ch.url
    );
    let weir = Weir::start(&config);
    scenario(&weir.url).await;
}
