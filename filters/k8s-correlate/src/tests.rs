use super::*;
use serde_json::json;
use weir_guest::testing::{with_mock_host, Harness, Outcome};

const MIN: u64 = 60_000;

/// A downstream event: `uid` and `count` as the watch hands it on.
fn event(uid: &str, object: &str, reason: &str, message: &str, count: u64) -> OwnedEvent {
    OwnedEvent::new(format!("{uid}.{count}"), "/clusters/east/api/v1/namespaces/default/events", "io.k8s.core.v1.Event")
        .with_json(&json!({
            "metadata": {"name": format!("{object}.{uid}"), "namespace": "default", "uid": uid},
            "involvedObject": {"kind": "Pod", "name": object, "namespace": "default", "uid": format!("pod-{object}")},
            "reason": reason, "message": message, "type": "Warning",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2026-12-06T10:00:00Z", "lastTimestamp": "2026-12-06T10:00:00Z",
            "count": count,
        }))
        .with("subject", format!("Pod/default/{object}"))
        .with("k8scluster", "east")
}

fn at(ms: u64) {
    with_mock_host(|m| m.now_ms = ms);
}

fn kept(out: &[Outcome]) -> Vec<serde_json::Value> {
    out.iter()
        .filter_map(|o| o.kept().map(|e| e.json_value().expect("json")))
        .collect()
}

#[test]
fn ten_different_messages_within_the_window_are_combined_and_flushed_by_tick() {
    at(1_000 * MIN);
    let mut h = Harness::<Correlate>::new("{}").expect("config");
    let storm: Vec<OwnedEvent> = (0..15)
        .map(|i| {
            event(
                &format!("u{i}"),
                "web",
                "BackOff",
                &format!("back-off {i}"),
                1,
            )
        })
        .collect();
    let out = h.run(&storm);
    // Nine pass as they are; from the tenth different message on they are folded.
    let passed = kept(&out);
    assert_eq!(passed.len(), 9);
    assert!(out[9..]
        .iter()
        .all(|o| matches!(o, Outcome::Drop(r) if r.contains("folded into web."))));
    let aggregate_name = passed[0]["metadata"]["annotations"][AGGREGATE_ANNOTATION]
        .as_str()
        .expect("linked")
        .to_owned();
    // Nothing is emitted before a tick; the tick emits the aggregate once.
    let emitted = h.tick(1_000 * MIN);
    assert_eq!(emitted.len(), 1);
    let a = emitted[0].json_value().expect("json");
    assert_eq!(a["metadata"]["name"], aggregate_name);
    assert_eq!(a["count"], 6);
    assert_eq!(a["message"], "(combined from similar events): back-off 14");
    assert_eq!(a["reason"], "BackOff");
    assert_eq!(a["involvedObject"]["name"], "web");
    assert_eq!(emitted[0].extension("k8scluster"), Some("east"));
    assert_eq!(emitted[0].subject.as_deref(), Some("Pod/default/web"));
    assert!(h.tick(1_000 * MIN + 1_000).is_empty(), "nothing new");
    // More of the storm: the same aggregate, its count up, after flush_seconds.
    at(1_000 * MIN + 2_000);
    h.run(&[
        event("u20", "web", "BackOff", "back-off 20", 1),
        event("u21", "web", "BackOff", "back-off 21", 1),
    ]);
    assert!(
        h.tick(1_000 * MIN + 5_000).is_empty(),
        "flushed at most every 10 s"
    );
    let again = h.tick(1_000 * MIN + 12_000);
    assert_eq!(again.len(), 1);
    let a = again[0].json_value().expect("json");
    assert_eq!(
        (a["metadata"]["name"].as_str(), a["count"].as_u64()),
        (Some(aggregate_name.as_str()), Some(8))
    );
    // Eleven minutes of quiet: the window closes and the group starts afresh.
    at(1_012 * MIN);
    let out = h.run(&[event("u30", "web", "BackOff", "back-off 30", 1)]);
    assert_eq!(kept(&out).len(), 1);
    assert!(h.tick(1_012 * MIN).is_empty());
}

#[test]
fn the_same_event_again_is_counted_under_its_first_name_and_duplicates_are_dropped() {
    at(2_000 * MIN);
    let mut h = Harness::<Correlate>::new("{}").expect("config");
    let out = h.run(&[
        event("a1", "db", "Unhealthy", "probe failed", 1),
        // The same downstream event, its count grown to 3: two more occurrences.
        event("a1", "db", "Unhealthy", "probe failed", 3),
        // Seen again at the same count (a relist): a duplicate.
        event("a1", "db", "Unhealthy", "probe failed", 3),
        // Another downstream event with the same key: counted under the first name.
        event("a2", "db", "Unhealthy", "probe failed", 1),
    ]);
    let passed = kept(&out);
    assert_eq!(passed.len(), 3);
    assert!(matches!(&out[2], Outcome::Drop(r) if r.contains("already seen")));
    let counts: Vec<u64> = passed
        .iter()
        .map(|e| e["count"].as_u64().expect("count"))
        .collect();
    assert_eq!(counts, [1, 3, 4]);
    assert!(
        passed.iter().all(|e| e["metadata"]["name"] == "db.a1"),
        "{passed:?}"
    );
    assert!(passed
        .iter()
        .all(|e| e["firstTimestamp"] == "2026-12-06T10:00:00Z"));
    assert_eq!(
        out[3].kept().and_then(|e| e.extension("k8scount")),
        Some("4")
    );
}

#[test]
fn a_source_and_object_get_25_events_then_one_per_five_minutes() {
    at(3_000 * MIN);
    let mut h = Harness::<Correlate>::new("{}").expect("config");
    // Identical messages never aggregate; the spam filter still limits them.
    let burst: Vec<OwnedEvent> = (0..30)
        .map(|i| event(&format!("s{i}"), "flappy", "Pulled", "pulled", 1))
        .collect();
    let out = h.run(&burst);
    assert_eq!(kept(&out).len(), 25);
    assert!(matches!(&out[29], Outcome::Drop(r) if r.contains("spam")));
    at(3_000 * MIN + 5 * MIN);
    let out = h.run(&[
        event("s40", "flappy", "Pulled", "pulled", 1),
        event("s41", "flappy", "Pulled", "pulled", 1),
    ]);
    assert_eq!(kept(&out).len(), 1, "one token in five minutes");
    // Another object has its own budget.
    assert_eq!(
        kept(&h.run(&[event("o1", "other", "Pulled", "pulled", 1)])).len(),
        1
    );
}

#[test]
fn a_pending_aggregate_survives_a_new_instance_and_clusters_group_only_when_asked() {
    at(4_000 * MIN);
    let storm = |cluster: &str, from: usize| -> Vec<OwnedEvent> {
        (from..from + 6)
            .map(|i| {
                event(
                    &format!("{cluster}{i}"),
                    "api",
                    "Failed",
                    &format!("failure {i}"),
                    1,
                )
                .with("k8scluster", cluster)
            })
            .collect()
    };
    let config = r#"{"across_clusters": true, "max_events": 10}"#;
    let mut h = Harness::<Correlate>::new(config).expect("config");
    // Six different messages from each of two clusters: one group across clusters.
    let mut all = storm("east", 0);
    all.extend(storm("west", 6));
    let out = h.run(&all);
    assert_eq!(kept(&out).len(), 9);
    // A new instance (a restart, or a new version) finds the pending aggregate in state.
    drop(h);
    let mut h = Harness::<Correlate>::new(config).expect("config");
    let emitted = h.tick(4_000 * MIN);
    assert_eq!(emitted.len(), 1);
    assert_eq!(emitted[0].json_value().expect("json")["count"], 3);
    // Per cluster (the default), the same storm makes no aggregate at all.
    at(5_000 * MIN);
    let mut h = Harness::<Correlate>::new("{}").expect("config");
    let mut all = storm("north", 100);
    all.extend(storm("south", 200));
    assert_eq!(kept(&h.run(&all)).len(), 12);
}

#[test]
fn aggregate_names_are_the_same_for_every_replica() {
    at(6_000 * MIN);
    let names = || {
        let mut h = Harness::<Correlate>::new("{}").expect("config");
        let storm: Vec<OwnedEvent> = (0..12)
            .map(|i| event(&format!("r{i}"), "same", "BackOff", &format!("m{i}"), 1))
            .collect();
        h.run(&storm);
        let e = h.tick(6_000 * MIN);
        e[0].json_value().expect("json")["metadata"]["name"].clone()
    };
    let first = names();
    // A second replica: its own state, the same input, the same name.
    with_mock_host(|m| m.state.clear());
    assert_eq!(names(), first);
}
