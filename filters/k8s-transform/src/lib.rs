//! `k8s-transform`: puts Kubernetes Events synced from a downstream cluster into the
//! upstream's terms, as the kcp event syncer's `transformEvent` does.
//!
//! - `metadata.namespace` and `involvedObject.namespace` are mapped by `namespaces` (an
//!   explicit map, which must be one-to-one) or else by `namespace_prefix` (prepended).
//!   Both are reversible ([`Transform::upstream_namespace`] and
//!   [`Transform::downstream_namespace`]); a namespace neither names stays as it is.
//! - The name becomes `<sync-target>-<name>` (`rename`, default on), so events of several
//!   clusters never collide upstream and the same event always gets the same name.
//! - Labels `kcp.io/sync-target` and `kcp.io/workspace`; annotations
//!   `kcp.io/source-cluster`, `kcp.io/synced-at` (RFC 3339, the host clock) and
//!   `kcp.io/workspace` (the exact workspace path); plus `labels` and `annotations` from the
//!   configuration. The sync target, cluster and workspace come from the cluster watch's
//!   extensions `k8ssynctarget`, `k8scluster`, `k8sworkspace`, else from the
//!   configuration's `sync_target`, `cluster`, `workspace`.
//! - The extensions `k8snamespace` and `k8sname` and the `subject` follow the new
//!   namespace and name, so later filters and routes see what the upstream will hold.
//!
//! Differences from the source, on purpose: a workspace path such as `root:org:team` is
//! not a valid label value (`:`), so the label holds it with `:` written `_` and the
//! exact path is in the `kcp.io/workspace` annotation; the source cluster annotation is
//! the cluster's own name (the source wrote the sync target's name there too). Events
//! whose data is not a JSON object pass untouched.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use weir_guest::{host, Context, Event, Filter, Patch, Verdict};

/// The label naming the sync target.
pub const SYNC_TARGET_LABEL: &str = "kcp.io/sync-target";
/// The label (and annotation) naming the workspace.
pub const WORKSPACE_KEY: &str = "kcp.io/workspace";
/// The annotation naming the source cluster.
pub const SOURCE_CLUSTER: &str = "kcp.io/source-cluster";
/// The annotation holding when the event was synced.
pub const SYNCED_AT: &str = "kcp.io/synced-at";

/// Configuration.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Downstream namespace → upstream namespace (one-to-one).
    #[serde(default)]
    pub namespaces: BTreeMap<String, String>,
    /// Prepended to namespaces the map does not name.
    #[serde(default)]
    pub namespace_prefix: Option<String>,
    /// Name events `<sync-target>-<name>` (default true).
    #[serde(default = "yes")]
    pub rename: bool,
    /// Labels added to every event.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to every event.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The sync target when an event has no `k8ssynctarget`.
    #[serde(default)]
    pub sync_target: Option<String>,
    /// The cluster when an event has no `k8scluster`.
    #[serde(default)]
    pub cluster: Option<String>,
    /// The workspace when an event has no `k8sworkspace`.
    #[serde(default)]
    pub workspace: Option<String>,
}

fn yes() -> bool {
    true
}

/// The filter.
pub struct Transform {
    config: Config,
    /// Upstream namespace → downstream namespace (the map reversed).
    reverse: BTreeMap<String, String>,
}

impl Transform {
    /// The upstream namespace of downstream namespace `ns`.
    pub fn upstream_namespace(&self, ns: &str) -> String {
        if let Some(mapped) = self.config.namespaces.get(ns) {
            return mapped.clone();
        }
        match &self.config.namespace_prefix {
            Some(prefix) => format!("{prefix}{ns}"),
            None => ns.to_owned(),
        }
    }

    /// The downstream namespace of upstream namespace `ns` (the mapping undone).
    pub fn downstream_namespace(&self, ns: &str) -> String {
        if let Some(original) = self.reverse.get(ns) {
            return original.clone();
        }
        match &self.config.namespace_prefix {
            Some(prefix) => ns.strip_prefix(prefix.as_str()).unwrap_or(ns).to_owned(),
            None => ns.to_owned(),
        }
    }

    fn map_namespace(&self, object: &mut Map<String, Value>, path: &str) -> Option<String> {
        let Some(Value::Object(holder)) = object.get_mut(path) else {
            return None;
        };
        let ns = holder.get("namespace").and_then(Value::as_str)?;
        if ns.is_empty() {
            return None;
        }
        let mapped = self.upstream_namespace(ns);
        holder.insert("namespace".into(), Value::String(mapped.clone()));
        Some(mapped)
    }
}

/// `value` as a label value: at most 63 of letters, digits, `-`, `_`, `.`, others `_`.
fn label_value(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '_',
        })
        .take(63)
        .collect()
}

fn string_map<'a>(meta: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = meta
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

impl Filter for Transform {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let mut reverse = BTreeMap::new();
        for (down, up) in &config.namespaces {
            if let Some(other) = reverse.insert(up.clone(), down.clone()) {
                return Err(format!(
                    "namespaces: `{other}` and `{down}` both map to `{up}`: the mapping must be reversible"
                ));
            }
        }
        Ok(Self { config, reverse })
    }

    fn process(&mut self, _ctx: &Context, event: &Event<'_>) -> Verdict {
        if !event.is_json() {
            return Verdict::Keep;
        }
        let Ok(Value::Object(mut object)) = event.json_value() else {
            return Verdict::Keep;
        };
        let config = &self.config;
        let sync_target = event
            .extension("k8ssynctarget")
            .or(config.sync_target.as_deref());
        let cluster = event.extension("k8scluster").or(config.cluster.as_deref());
        let workspace = event
            .extension("k8sworkspace")
            .or(config.workspace.as_deref());
        let namespace = self.map_namespace(&mut object, "metadata");
        let object_namespace = self.map_namespace(&mut object, "involvedObject");
        let mut patch = Patch::new();
        let Some(Value::Object(meta)) = object.get_mut("metadata") else {
            return Verdict::Keep;
        };
        if let (true, Some(target)) = (config.rename, sync_target) {
            if let Some(name) = meta.get("name").and_then(Value::as_str) {
                let prefix = format!("{target}-");
                if !name.starts_with(&prefix) {
                    let mut renamed = format!("{prefix}{name}");
                    weir_guest::k8s::cut_name(&mut renamed, weir_guest::k8s::MAX_NAME);
                    patch = patch.set("k8sname", renamed.as_str());
                    meta.insert("name".into(), Value::String(renamed));
                }
            }
        }
        let labels = string_map(meta, "labels");
        if let Some(target) = sync_target {
            labels.insert(SYNC_TARGET_LABEL.into(), label_value(target).into());
        }
        if let Some(ws) = workspace {
            labels.insert(WORKSPACE_KEY.into(), label_value(ws).into());
        }
        for (k, v) in &config.labels {
            labels.insert(k.clone(), v.clone().into());
        }
        let annotations = string_map(meta, "annotations");
        if let Some(source) = cluster.or(sync_target) {
            annotations.insert(SOURCE_CLUSTER.into(), source.into());
        }
        if let Some(ws) = workspace {
            annotations.insert(WORKSPACE_KEY.into(), ws.into());
        }
        let now = i64::try_from(host::now_ms()).unwrap_or(i64::MAX);
        let synced_at = chrono::DateTime::from_timestamp_millis(now)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        annotations.insert(SYNCED_AT.into(), synced_at.into());
        for (k, v) in &config.annotations {
            annotations.insert(k.clone(), v.clone().into());
        }
        if let Some(ns) = &namespace {
            patch = patch.set("k8snamespace", ns.as_str());
        }
        if let (Some(ns), Some(subject)) = (&object_namespace, event.subject()) {
            // `kind/namespace/name`: the namespace part follows the mapping.
            let mut parts = subject.splitn(3, '/');
            if let (Some(kind), Some(_), Some(name)) = (parts.next(), parts.next(), parts.next()) {
                patch = patch.set("subject", format!("{kind}/{ns}/{name}"));
            }
        }
        Verdict::Patch(patch.json(&Value::Object(object)))
    }
}

weir_guest::export_filter!(Transform);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use weir_guest::testing::Harness;
    use weir_guest::OwnedEvent;

    fn synced(ns: &str, name: &str) -> OwnedEvent {
        OwnedEvent::new(
            "u1.7",
            "/clusters/east/api/v1/namespaces/x/events",
            "io.k8s.core.v1.Event",
        )
        .with_json(&json!({
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"}},
            "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": ns},
            "reason": "BackOff", "type": "Warning", "count": 3,
        }))
        .with("subject", format!("Pod/{ns}/web-1"))
        .with("k8scluster", "east")
        .with("k8ssynctarget", "east-1")
        .with("k8sworkspace", "root:acme:prod")
    }

    fn run(config: &str, event: OwnedEvent) -> OwnedEvent {
        let mut h = Harness::<Transform>::new(config).expect("config");
        let out = h.run(&[event]);
        out[0].kept().expect("kept").clone()
    }

    #[test]
    fn names_namespaces_labels_and_annotations_follow_the_kcp_syncer() {
        let out = run(
            r#"{"namespace_prefix": "east-", "labels": {"team": "sre"}, "annotations": {"note": "x"}}"#,
            synced("shop", "web-1.17a"),
        );
        let e = out.json_value().expect("json");
        assert_eq!(e["metadata"]["name"], "east-1-web-1.17a");
        assert_eq!(e["metadata"]["namespace"], "east-shop");
        assert_eq!(e["involvedObject"]["namespace"], "east-shop");
        let labels = &e["metadata"]["labels"];
        assert_eq!(labels["app"], "web", "kept");
        assert_eq!(labels[SYNC_TARGET_LABEL], "east-1");
        assert_eq!(
            labels[WORKSPACE_KEY], "root_acme_prod",
            "a valid label value"
        );
        assert_eq!(labels["team"], "sre");
        let annotations = &e["metadata"]["annotations"];
        assert_eq!(annotations[SOURCE_CLUSTER], "east");
        assert_eq!(annotations[WORKSPACE_KEY], "root:acme:prod");
        assert_eq!(annotations["note"], "x");
        assert!(annotations[SYNCED_AT].as_str().expect("set").ends_with('Z'));
        assert_eq!(e["count"], 3, "the rest untouched");
        assert_eq!(out.extension("k8sname"), Some("east-1-web-1.17a"));
        assert_eq!(out.extension("k8snamespace"), Some("east-shop"));
        assert_eq!(out.subject.as_deref(), Some("Pod/east-shop/web-1"));
        // Renaming twice does not stack prefixes.
        let again = run(
            r#"{"namespace_prefix": "east-"}"#,
            synced("shop", "east-1-web-1.17a"),
        );
        assert_eq!(
            again.json_value().expect("json")["metadata"]["name"],
            "east-1-web-1.17a"
        );
    }

    #[test]
    fn the_namespace_mapping_is_reversible_and_must_be_one_to_one() {
        let config = r#"{"namespaces": {"shop": "acme-shop", "db": "acme-db"}, "namespace_prefix": "east-"}"#;
        let t = Transform::new(serde_json::from_str(config).expect("config")).expect("valid");
        for ns in ["shop", "db", "other"] {
            let up = t.upstream_namespace(ns);
            assert_eq!(t.downstream_namespace(&up), ns, "{ns} → {up}");
        }
        assert_eq!(t.upstream_namespace("other"), "east-other");
        let clash =
            serde_json::from_str(r#"{"namespaces": {"a": "x", "b": "x"}}"#).expect("parses");
        let err = Transform::new(clash).err().expect("refused");
        assert!(err.contains("both map to `x`"), "{err}");
    }

    #[test]
    fn without_extensions_the_configuration_names_them_and_non_json_passes() {
        let event = OwnedEvent::new("1", "/x", "io.k8s.core.v1.Event")
            .with_json(&json!({"metadata": {"name": "e", "namespace": "a"}}));
        let out = run(
            r#"{"sync_target": "edge", "cluster": "edge-cluster", "rename": false}"#,
            event,
        );
        let e = out.json_value().expect("json");
        assert_eq!(e["metadata"]["name"], "e", "rename off");
        assert_eq!(e["metadata"]["labels"][SYNC_TARGET_LABEL], "edge");
        assert_eq!(e["metadata"]["annotations"][SOURCE_CLUSTER], "edge-cluster");
        assert!(e["metadata"]["labels"].get(WORKSPACE_KEY).is_none());
        let mut text = OwnedEvent::new("2", "/x", "t").with("datacontenttype", "text/plain");
        text.data = Some(b"hello".to_vec());
        let mut h = Harness::<Transform>::new("{}").expect("config");
        assert_eq!(h.run(std::slice::from_ref(&text))[0].kept(), Some(&text));
    }
}
