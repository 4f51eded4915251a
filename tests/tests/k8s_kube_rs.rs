//! kube-rs against weir's Events API: typed create and list in both API versions (the same
//! stored events seen through each), field selectors, and the `watcher` — which keeps
//! following across a restart of weir on the same port, and re-lists when the
//! resourceVersion it resumes from is older than weir's watch history (in-stream 410).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn config(history: usize) -> String {
    format!("events_api: {{ enabled: true, watch_history: {history} }}\nroutes:\n  - {{ name: r, to: [tail] }}\n")
}

fn client(url: &str) -> kube::Client {
    kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap()
}

fn core_event(name: &str, pod: &str, reason: &str) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("Pod".into()),
            name: Some(pod.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(format!("{reason} {pod}")),
        type_: Some("Normal".into()),
        ..Default::default()
    }
}

async fn wait_for(what: &str, names: &Arc<Mutex<BTreeSet<String>>>, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        {
            let seen = names.lock().unwrap();
            if want.iter().all(|w| seen.contains(*w)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: watcher saw {seen:?}, wanted {want:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_clients_and_the_watcher_follow_the_store_across_restarts_and_410s() {
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let weir = Weir::start_at(tempfile::tempdir().unwrap(), &listen, &config(3));
    let kube = client(&weir.url);
    let core: Api<Event> = Api::namespaced(kube.clone(), "default");
    core.create(&PostParams::default(), &core_event("a", "web-1", "Started"))
        .await
        .unwrap();
    core.create(&PostParams::default(), &core_event("b", "web-2", "Pulled"))
        .await
        .unwrap();

    // events.k8s.io/v1 writes, core/v1 reads: the same store, field by field.
    let v1: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(kube.clone(), "default");
    let modern: k8s_openapi::api::events::v1::Event = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "c", "namespace": "default"},
        "eventTime": "2026-11-22T04:00:00.000000Z",
        "reportingController": "example.com/ctl", "reportingInstance": "ctl-1",
        "action": "Reconcile", "reason": "Synced", "type": "Normal", "note": "synced web-1",
        "regarding": {"kind": "Pod", "name": "web-1", "namespace": "default"},
    }))
    .unwrap();
    v1.create(&PostParams::default(), &modern).await.unwrap();
    let as_core = core.get("c").await.unwrap();
    assert_eq!(as_core.message.as_deref(), Some("synced web-1"));
    assert_eq!(
        as_core.reporting_component.as_deref(),
        Some("example.com/ctl")
    );
    assert_eq!(as_core.involved_object.name.as_deref(), Some("web-1"));
    let as_v1 = v1.get("a").await.unwrap();
    assert_eq!(as_v1.note.as_deref(), Some("Started web-1"));
    assert_eq!(as_v1.regarding.unwrap().name.as_deref(), Some("web-1"));

    let about_web1 = core
        .list(&ListParams::default().fields("involvedObject.name=web-1"))
        .await
        .unwrap();
    let names: BTreeSet<String> = about_web1
        .items
        .iter()
        .filter_map(|e| e.metadata.name.clone())
        .collect();
    assert_eq!(names, BTreeSet::from(["a".to_owned(), "c".to_owned()]));
    let by_regarding = v1
        .list(&ListParams::default().fields("regarding.name=web-2"))
        .await
        .unwrap();
    assert_eq!(by_regarding.items.len(), 1);
    // Pages of one (kube follows continue tokens itself through `list` with limit).
    let page = core.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(page
        .metadata
        .continue_
        .as_deref()
        .is_some_and(|c| !c.is_empty()));

    // The watcher: initial list, then live changes.
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let inits = Arc::new(Mutex::new(0usize));
    let stream = watcher(core.clone(), watcher::Config::default()).default_backoff();
    let (s, i) = (seen.clone(), inits.clone());
    let follower = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e)) => {
                    s.lock()
                        .unwrap()
                        .insert(e.metadata.name.unwrap_or_default());
                }
                Ok(watcher::Event::Delete(e)) => {
                    s.lock()
                        .unwrap()
                        .remove(&e.metadata.name.unwrap_or_default());
                }
                Ok(watcher::Event::Init) => *i.lock().unwrap() += 1,
                Ok(watcher::Event::InitDone) | Err(_) => {}
            }
        }
    });
    wait_for("initial list", &seen, &["a", "b", "c"]).await;
    core.create(&PostParams::default(), &core_event("d", "web-3", "Killing"))
        .await
        .unwrap();
    wait_for("a live ADDED", &seen, &["d"]).await;
    core.delete("b", &Default::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().contains("b") {
        assert!(
            Instant::now() < deadline,
            "the watcher never saw the DELETED"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Restart weir on the same port: the watcher resumes; its resourceVersion is current,
    // so it just carries on.
    let (clean, dir) = weir.terminate();
    assert!(clean);
    let weir = Weir::start_at(dir, &listen, &config(3));
    core.create(&PostParams::default(), &core_event("e", "web-4", "Started"))
        .await
        .unwrap();
    wait_for("an event after the restart", &seen, &["a", "c", "d", "e"]).await;

    // Restart again, and change more than the watch history (3) holds before the watcher
    // is back: its resourceVersion is too old, weir answers 410 in the stream, and kube-rs
    // re-lists — it still ends up with every event.
    let inits_before = *inits.lock().unwrap();
    let (clean, dir) = weir.terminate();
    assert!(clean);
    let weir = Weir::start_at(dir, &listen, &config(3));
    let fresh = client(&weir.url);
    let core2: Api<Event> = Api::namespaced(fresh, "default");
    for n in ["f", "g", "h", "i", "j"] {
        core2
            .create(&PostParams::default(), &core_event(n, "web-5", "Started"))
            .await
            .unwrap();
    }
    wait_for(
        "every event after a 410",
        &seen,
        &["a", "c", "d", "e", "f", "g", "h", "i", "j"],
    )
    .await;
    let logs = weir.logs.lock().unwrap().join("\n");
    if logs.contains("410 Expired") {
        assert!(
            *inits.lock().unwrap() > inits_before,
            "a 410 makes kube-rs re-list"
        );
    } else {
        // The watcher reconnected in the instant between weir starting and the first
        // create; it then saw the creates live. Either way nothing was missed.
        eprintln!("the watcher came back before the history overflowed (no 410 this run)");
    }
    // The 410 itself, deterministically: a watch from resourceVersion 1 is long gone.
    let resp = reqwest::get(format!(
        "{}/api/v1/namespaces/default/events?watch=true&resourceVersion=1",
        weir.url
    ))
    .await
    .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "reported in the stream, as the apiserver does"
    );
    let text = resp.text().await.unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "ERROR");
    assert_eq!(first["object"]["code"], 410);
    assert_eq!(first["object"]["reason"], "Expired");
    follower.abort();
}

/// Milo's Activity API on weir: the same stored events under
/// `activity.miloapis.com/v1alpha1` (core/v1 objects), found through discovery, written and
/// read with kube-rs' dynamic client, watched, and visible through core/v1 too — so a weir
/// can be the events provider of a Milo (or of another weir) that uses Activity's paths.
#[tokio::test(flavor = "multi_thread")]
async fn the_activity_api_serves_the_same_events_with_discovery_and_watch() {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    use kube::discovery::Discovery;
    let weir = Weir::start(&config(1000));
    let client = client(&weir.url);

    // Discovery names the group, its version and the `events` resource.
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let group = discovery
        .get("activity.miloapis.com")
        .expect("the activity group is discovered");
    let (resource, caps) = group
        .recommended_resources()
        .into_iter()
        .find(|(r, _)| r.plural == "events")
        .expect("events under activity.miloapis.com");
    assert_eq!(resource.api_version, "activity.miloapis.com/v1alpha1");
    assert_eq!(resource.kind, "Event");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);

    let gvk = GroupVersionKind::gvk("activity.miloapis.com", "v1alpha1", "Event");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "events");
    let activity: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let mut obj = DynamicObject::new("a1", &ar).within("default");
    obj.data = serde_json::json!({
        "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default"},
        "reason": "Scheduled",
        "message": "Scheduled web-1",
        "type": "Normal",
        "source": {"component": "scheduler"},
    });
    let created = activity.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(
        created.types.as_ref().unwrap().api_version,
        "activity.miloapis.com/v1alpha1"
    );
    assert_eq!(created.data["involvedObject"]["name"], "web-1");

    // A core/v1 client sees the same event, and an Activity list sees core's.
    let core: Api<Event> = Api::namespaced(client.clone(), "default");
    let seen = core.get("a1").await.unwrap();
    assert_eq!(seen.reason.as_deref(), Some("Scheduled"));
    core.create(&PostParams::default(), &core_event("c1", "web-2", "Pulled"))
        .await
        .unwrap();
    let list = activity
        .list(&ListParams::default().fields("involvedObject.name=web-2"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("c1"));

    // Watch through the Activity path.
    let names = Arc::new(Mutex::new(BTreeSet::new()));
    let seen = names.clone();
    let watch = tokio::spawn(async move {
        let mut stream = watcher(activity, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(e)) = stream.next().await {
            if let Some(name) = e.metadata.name {
                seen.lock().unwrap().insert(name);
            }
        }
    });
    core.create(
        &PostParams::default(),
        &core_event("c2", "web-3", "Started"),
    )
    .await
    .unwrap();
    wait_for("the Activity watch", &names, &["a1", "c1", "c2"]).await;
    watch.abort();

    // A body claiming another group is refused at the Activity path.
    let (status, body) = post(
        &format!(
            "{}/apis/activity.miloapis.com/v1alpha1/namespaces/default/events",
            weir.url
        ),
        &[("content-type", "application/json")],
        serde_json::json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "x"}})
            .to_string(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}
