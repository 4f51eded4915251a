//! The upstream sink (`type: kubernetes`): writes core/v1 Events to an upstream
//! Kubernetes API with kube-rs — a cluster, or a kcp logical cluster, where the server URL
//! is `…/clusters/<workspace>` and the workspace comes from the sink's configuration or,
//! per event, from an extension (`k8sworkspace`, set by the cluster watch).
//!
//! An event is created with `resourceVersion` and `uid` cleared. An event whose name the
//! upstream already holds — a repeat of an aggregated or counted event, or the same event
//! from a second weir replica — is patched instead (`count`, `lastTimestamp`, `series`,
//! `message`, labels and annotations), so names chosen deterministically upstream never
//! duplicate: `409 AlreadyExists` on create becomes a patch. Events of one involved
//! object are written in order; different objects in parallel. Network errors, timeouts,
//! 5xx and 429 are transient (retried by the contract's backoff and breaker); other
//! refusals are final and go to the route's dead letters.

use crate::convert;
use crate::kubeclient;
use futures_util::StreamExt as _;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use prometheus::IntCounterVec;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir_core::dead_letter::DeadLetter;
use weir_core::resilience::{BreakerConfig, Resilience, RetryConfig};
use weir_core::sink::{BuildSink, Capabilities, ConfigProblem, Sink, SinkContext, SinkError};
use weir_core::Event;

/// The most workspaces with a client kept at once (clients of others are made again).
const MAX_WORKSPACE_CLIENTS: usize = 256;
/// The most event names remembered as existing upstream (patched without a create first).
const MAX_KNOWN_NAMES: usize = 100_000;

/// An upstream Kubernetes API (`type: kubernetes`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSinkConfig {
    /// The upstream's kubeconfig (server URL, CA, client certificate or token); without
    /// one, the in-cluster service account or the default kubeconfig.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[serde(default)]
    pub context: Option<String>,
    /// The kcp workspace events go to when they name none (default: the server URL as
    /// it is).
    #[serde(default)]
    pub workspace: Option<String>,
    /// The extension naming an event's workspace (default `k8sworkspace`).
    #[serde(default = "default_workspace_extension")]
    pub workspace_extension: String,
    /// The workspaces an event may name by that extension (default: those of
    /// `k8s_watch.clusters`). An event naming another is refused and dead-lettered, so a
    /// producer cannot steer writes into a workspace the configuration does not name.
    #[serde(default)]
    pub workspaces: Option<Vec<String>>,
    /// Requests in flight at once for one write (default 16).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Deadline of one request, milliseconds (default 10000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries of transient failures (default on: 3 retries, 100 ms to 5 s).
    #[serde(default)]
    pub retry: RetryConfig,
    /// The circuit breaker (default on: 5 failed writes open it for 30 s).
    #[serde(default)]
    pub circuit_breaker: BreakerConfig,
}

fn default_workspace_extension() -> String {
    "k8sworkspace".into()
}

fn default_max_in_flight() -> usize {
    16
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl BuildSink for UpstreamSinkConfig {
    /// Events only: an API server is no place for dead letters.
    fn capabilities(&self) -> Capabilities {
        Capabilities::EVENTS
    }

    fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if let Some(ws) = &self.workspace {
            if !kubeclient::valid_workspace(ws) {
                problems.push(ConfigProblem::at(
                    "workspace",
                    format!("`{ws}` is not a workspace path (`root:org:team`)"),
                ));
            }
        }
        for (i, ws) in self.workspaces.iter().flatten().enumerate() {
            if !kubeclient::valid_workspace(ws) {
                problems.push(ConfigProblem::at(
                    format!("workspaces[{i}]"),
                    format!("`{ws}` is not a workspace path (`root:org:team`)"),
                ));
            }
        }
        if self.max_in_flight == 0 {
            problems.push(ConfigProblem::at("max_in_flight", "must be at least 1"));
        }
        if self.timeout_ms == 0 {
            problems.push(ConfigProblem::at("timeout_ms", "must be at least 1"));
        }
        problems
    }

    fn resilience(&self) -> Resilience {
        Resilience {
            retry: Some(self.retry),
            breaker: Some(self.circuit_breaker),
        }
    }

    fn build(&self, cx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| SinkError::setup(cx.name, "a kubernetes sink needs a tokio runtime", e))?;
        // Reading a kubeconfig may run an exec credential plugin: on a thread of its own,
        // whatever thread builds the sink.
        let (kubeconfig, context) = (self.kubeconfig.clone(), self.context.clone());
        let handle = runtime.clone();
        let loaded = std::thread::spawn(move || {
            handle.block_on(kubeclient::load(kubeconfig.as_deref(), context.as_deref()))
        })
        .join()
        .map_err(|_| SinkError::setup_msg(cx.name, "reading the kubeconfig panicked"))?
        .map_err(|e| SinkError::setup(cx.name, "cannot read the upstream's kubeconfig", e))?;
        let sink = Upstream {
            name: cx.name.to_owned(),
            runtime,
            base: loaded,
            kubeconfig: self.kubeconfig.clone(),
            workspace: self.workspace.clone(),
            workspace_extension: self.workspace_extension.clone(),
            allowed: self.workspaces.iter().flatten().cloned().collect(),
            max_in_flight: self.max_in_flight.max(1),
            timeout: Duration::from_millis(self.timeout_ms.max(1)),
            clients: Mutex::new(HashMap::new()),
            known: Mutex::new(HashSet::new()),
            resource: ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Event")),
            writes: cx.metrics.counter(
                "weir_k8s_upstream_writes_total",
                "Events written to an upstream Kubernetes API, by sink and outcome (created, patched, unchanged: it already held as high a count, failed).",
                &["sink", "outcome"],
            ),
        };
        // Every outcome's series from the start, so a dashboard sees 0 rather than none.
        for outcome in ["created", "patched", "unchanged", "failed"] {
            sink.writes.with_label_values(&[cx.name, outcome]).inc_by(0);
        }
        // The default workspace's client now, so a bad TLS setting stops the start.
        sink.client(sink.workspace.as_deref())
            .map_err(|e| SinkError::setup(cx.name, "cannot build the upstream client", e))?;
        Ok(Arc::new(UpstreamSink(Arc::new(sink))))
    }
}

/// See [`UpstreamSinkConfig`]. Its writes run as a task on the runtime, so that the
/// route's thread only waits for them and the runtime's threads do the HTTP and JSON work.
struct UpstreamSink(Arc<Upstream>);

/// The upstream's clients and what is known of it.
struct Upstream {
    name: String,
    /// Route threads are not the runtime's: requests run on it through this handle.
    runtime: tokio::runtime::Handle,
    /// The kubeconfig's settings; a workspace's client adds `/clusters/<ws>` to its URL.
    base: kube::Config,
    kubeconfig: Option<PathBuf>,
    workspace: Option<String>,
    workspace_extension: String,
    /// The workspaces an event may name.
    allowed: HashSet<String>,
    max_in_flight: usize,
    timeout: Duration,
    /// Workspace ("" for none) → client.
    clients: Mutex<HashMap<String, kube::Client>>,
    /// `workspace/namespace/name` of events known to exist upstream: patched at once.
    known: Mutex<HashSet<String>>,
    resource: ApiResource,
    writes: IntCounterVec,
}

/// What a repeat of an event changes upstream: `count`, `lastTimestamp`, `series`,
/// `message`, `eventTime`, and its labels and annotations.
fn repeat_fields(core: &Map<String, Value>) -> Map<String, Value> {
    let mut patch = Map::new();
    for field in ["count", "lastTimestamp", "series", "message", "eventTime"] {
        if let Some(v) = core.get(field) {
            patch.insert(field.into(), v.clone());
        }
    }
    let mut m = Map::new();
    if let Some(meta) = convert::metadata(core) {
        for field in ["labels", "annotations"] {
            if let Some(v) = meta.get(field) {
                m.insert(field.into(), v.clone());
            }
        }
    }
    patch.insert("metadata".into(), Value::Object(m));
    patch
}

/// Why one event was not written.
enum Failure {
    /// May succeed if tried again.
    Transient(String),
    /// Will not: the upstream's status code, when it answered.
    Refused(Option<u16>, String),
}

/// What a write did.
enum Written {
    Created,
    Patched,
    /// The upstream already held as high a count.
    Unchanged,
}

impl Upstream {
    /// The client of `workspace` (the configured URL for `None`).
    fn client(&self, workspace: Option<&str>) -> Result<kube::Client, kubeclient::KubeClientError> {
        let key = workspace.unwrap_or("");
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(key) {
            return Ok(client.clone());
        }
        let config = match workspace {
            Some(ws) => kubeclient::in_workspace(&self.base, ws),
            None => self.base.clone(),
        };
        let _runtime = self.runtime.enter();
        let client = kubeclient::client(config, self.kubeconfig.as_ref())?;
        if clients.len() >= MAX_WORKSPACE_CLIENTS {
            clients.clear();
        }
        clients.insert(key.to_owned(), client.clone());
        Ok(client)
    }

    /// An event's workspace: its extension, else the configured one; `Err` for a name
    /// that is not a workspace path.
    fn workspace_of<'e>(&'e self, event: &'e Event) -> Result<Option<&'e str>, Failure> {
        match event.extension(&self.workspace_extension) {
            Some(ws) if self.workspace.as_deref() == Some(ws) || self.allowed.contains(ws) => {
                Ok(Some(ws))
            }
            Some(ws) if kubeclient::valid_workspace(ws) => Err(Failure::Refused(
                None,
                format!(
                    "`{}` = `{ws}` is not a workspace this sink writes to (its `workspaces`)",
                    self.workspace_extension
                ),
            )),
            Some(ws) => Err(Failure::Refused(
                None,
                format!(
                    "`{}` = `{ws}` is not a workspace path",
                    self.workspace_extension
                ),
            )),
            None => Ok(self.workspace.as_deref()),
        }
    }

    /// Writes one event: create, or patch when the name exists.
    async fn put(
        &self,
        client: kube::Client,
        ws: &str,
        mut core: Map<String, Value>,
    ) -> Result<Written, Failure> {
        let meta = match core.get_mut("metadata") {
            Some(Value::Object(meta)) => meta,
            _ => return Err(Failure::Refused(None, "the event has no metadata".into())),
        };
        for field in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
            "selfLink",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            meta.remove(field);
        }
        let namespace = match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() => ns.to_owned(),
            _ => "default".to_owned(),
        };
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        core.insert("apiVersion".into(), "v1".into());
        core.insert("kind".into(), "Event".into());
        let repeat = repeat_fields(&core);
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &namespace, &self.resource);
        let key = format!("{ws}/{namespace}/{name}");
        let known = !name.is_empty() && self.known().contains(&key);
        if known {
            match self.patch(&api, &name, &repeat).await {
                Err(Failure::Refused(Some(404), _)) => {}
                other => return other,
            }
        }
        // The object as it is, and the answer not decoded: a create needs only its status.
        let body = serde_json::to_vec(&core)
            .map_err(|e| Failure::Refused(None, format!("not a Kubernetes object: {e}")))?;
        let url = <DynamicObject as kube::Resource>::url_path(&self.resource, Some(&namespace));
        let request = kube::core::Request::new(url)
            .create(&PostParams::default(), body)
            .map_err(|e| Failure::Refused(None, format!("cannot make the create: {e}")))?;
        let created = self.bounded(client.request_text(request)).await;
        match created {
            Ok(_) => {
                self.remember(key);
                Ok(Written::Created)
            }
            Err(Failure::Refused(Some(409), _)) if !name.is_empty() => {
                let patched = self.patch(&api, &name, &repeat).await;
                if patched.is_ok() {
                    self.remember(key);
                }
                patched
            }
            Err(other) => Err(other),
        }
    }

    /// Patches the existing upstream event `name` with what a repeat changes — unless
    /// it already holds as high a count (another replica, or a later write, got there
    /// first): counts only go up. The patch carries the resourceVersion it was decided
    /// on, so a concurrent change makes it try again rather than lower the count.
    async fn patch(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        repeat: &Map<String, Value>,
    ) -> Result<Written, Failure> {
        let want = repeat.get("count").and_then(Value::as_u64);
        // Replicas patching one event race; each round reads afresh, so a few settle it.
        for _ in 0..8 {
            let current = self.bounded(api.get(name)).await?;
            let have = current
                .data
                .get("count")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if want.is_some_and(|want| want <= have) {
                return Ok(Written::Unchanged);
            }
            let mut patch = repeat.clone();
            if let (Some(rv), Some(Value::Object(m))) = (
                &current.metadata.resource_version,
                patch.get_mut("metadata"),
            ) {
                m.insert("resourceVersion".into(), rv.clone().into());
            }
            let patch = Patch::Merge(Value::Object(patch));
            match self
                .bounded(api.patch(name, &PatchParams::default(), &patch))
                .await
            {
                Ok(_) => return Ok(Written::Patched),
                Err(Failure::Refused(Some(409), _)) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(Failure::Transient(format!(
            "the upstream event {name} kept changing while it was patched"
        )))
    }

    /// One request within the timeout, its failure classified.
    async fn bounded<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.timeout, request).await {
            Err(_) => Err(Failure::Transient(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(kube::Error::Api(status))) => {
                let why = format!("{} {}: {}", status.code, status.reason, status.message);
                if status.code == 429 || status.code >= 500 {
                    Err(Failure::Transient(why))
                } else {
                    Err(Failure::Refused(Some(status.code), why))
                }
            }
            Ok(Err(e)) => Err(Failure::Transient(weir_core::util::error_chain(&e))),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, key: String) {
        let mut known = self.known();
        if known.len() >= MAX_KNOWN_NAMES {
            known.clear();
        }
        known.insert(key);
    }

    /// What a write of `event` needs, taken from it on the route's thread: its
    /// workspace and data.
    fn prepare(&self, event: &Event) -> Result<(Option<String>, bytes::Bytes), Failure> {
        let ws = self.workspace_of(event)?.map(str::to_owned);
        match &event.data {
            Some(data) => Ok((ws, data.clone())),
            None => Err(not_an_event()),
        }
    }

    /// One event's write: decoded, routed to its workspace's client, written.
    async fn write_one(&self, ws: Option<&str>, data: &[u8]) -> Result<Written, Failure> {
        let core = match serde_json::from_slice::<Value>(data) {
            Ok(Value::Object(core)) => core,
            _ => return Err(not_an_event()),
        };
        let client = self
            .client(ws)
            .map_err(|e| Failure::Refused(None, weir_core::util::error_chain(&e)))?;
        self.put(client, ws.unwrap_or(""), core).await
    }
}

fn not_an_event() -> Failure {
    Failure::Refused(
        None,
        "the event's data is not a core/v1 Event (JSON object)".into(),
    )
}

impl Sink for UpstreamSink {
    fn write(&self, events: &[&Event]) -> Result<(), SinkError> {
        let sink = &self.0;
        if events.is_empty() {
            return Ok(());
        }
        // Events of one involved object in order; objects in parallel.
        type Prepared = (usize, Result<(Option<String>, bytes::Bytes), Failure>);
        let mut groups: Vec<Vec<Prepared>> = Vec::new();
        let mut by_object: HashMap<&str, usize> = HashMap::new();
        for (i, event) in events.iter().enumerate() {
            let object = event.subject.as_deref().unwrap_or("");
            let item = (i, sink.prepare(event));
            match by_object.get(object) {
                Some(&g) => groups[g].push(item),
                None => {
                    by_object.insert(object, groups.len());
                    groups.push(vec![item]);
                }
            }
        }
        let writer = sink.clone();
        let task = sink.runtime.spawn(async move {
            let max_in_flight = writer.max_in_flight;
            futures_util::stream::iter(groups.into_iter().map(|group| {
                let writer = writer.clone();
                async move {
                    let mut out = Vec::with_capacity(group.len());
                    for (i, item) in group {
                        let written = match item {
                            Ok((ws, data)) => writer.write_one(ws.as_deref(), &data).await,
                            Err(failure) => Err(failure),
                        };
                        out.push((i, written));
                    }
                    out
                }
            }))
            .buffer_unordered(max_in_flight)
            .collect::<Vec<Vec<(usize, Result<Written, Failure>)>>>()
            .await
        });
        let answers = match sink.runtime.block_on(task) {
            Ok(answers) => answers,
            Err(e) => {
                return Err(SinkError::Unavailable {
                    sink: sink.name.clone(),
                    reason: format!("the writing task failed: {e}"),
                })
            }
        };
        let (mut failed, mut retry, mut reason) = (Vec::new(), Vec::new(), None);
        let (mut created, mut patched, mut unchanged) = (0u64, 0u64, 0u64);
        for (i, answer) in answers.into_iter().flatten() {
            match answer {
                Ok(Written::Created) => created += 1,
                Ok(Written::Patched) => patched += 1,
                Ok(Written::Unchanged) => unchanged += 1,
                Err(Failure::Transient(why)) => {
                    failed.push(i);
                    retry.push(i);
                    reason.get_or_insert(why);
                }
                Err(Failure::Refused(_, why)) => {
                    failed.push(i);
                    reason.get_or_insert(why);
                }
            }
        }
        sink.writes
            .with_label_values(&[&sink.name, "created"])
            .inc_by(created);
        sink.writes
            .with_label_values(&[&sink.name, "patched"])
            .inc_by(patched);
        sink.writes
            .with_label_values(&[&sink.name, "unchanged"])
            .inc_by(unchanged);
        if failed.is_empty() {
            return Ok(());
        }
        sink.writes
            .with_label_values(&[&sink.name, "failed"])
            .inc_by(failed.len() as u64);
        failed.sort_unstable();
        retry.sort_unstable();
        let reason = reason.unwrap_or_default();
        if failed.len() == events.len() && retry.len() == failed.len() {
            return Err(SinkError::Unavailable {
                sink: sink.name.clone(),
                reason,
            });
        }
        Err(SinkError::Partial {
            sink: sink.name.clone(),
            failed,
            retry,
            reason,
        })
    }

    fn write_dead_letters(&self, _: &[DeadLetter<'_>]) -> Result<(), SinkError> {
        Err(SinkError::Refused {
            sink: self.0.name.clone(),
            reason: "a kubernetes sink holds no dead letters".into(),
        })
    }
}
