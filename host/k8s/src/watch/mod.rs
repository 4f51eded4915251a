//! The cluster watch (`k8s_watch`): the Events of downstream Kubernetes clusters, read with
//! kube-rs watches (list, then watch; relist after `410 Gone`; backoff while an API is
//! down), handed to the routes fed by `k8s-watch` as CloudEvents of the shape of
//! [`crate::ce`] with `k8scluster`, `k8ssynctarget` and `k8sworkspace` added.
//!
//! Each event is handed on once per resourceVersion: what was delivered is remembered
//! durably ([`seen`]), so a relist or a restart re-emits nothing already delivered, while
//! a changed event (its count went up) flows again. Batches are submitted one after the
//! other per cluster, so events of one involved object keep their order; an event is
//! remembered only once the routes took its batch (at-least-once).

mod seen;

use crate::ce::event_view;
use crate::convert::{self, ApiVersion};
use crate::kubeclient;
use futures_util::StreamExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt as _;
use prometheus::{IntCounterVec, IntGaugeVec};
use seen::Seen;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use weir_core::metrics::MetricsRegistry;
use weir_core::sink::ConfigProblem;
use weir_core::Event;
use weir_router::source::{RunningSource, SourceContext, SourceError, StartSource};
use weir_router::{Origin, Outcome, Producer, Refused, RouterError};

/// How often a failing cluster is asked whether it answers again.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// The source kind routes name to take the watched events.
pub const SOURCE_KIND: &str = "k8s-watch";

/// The cluster watch's settings (`k8s_watch`). Off while `clusters` is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// The downstream clusters.
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    /// The most events in one batch handed to the routes (default 1000).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long a batch waits for more events before it goes, ms (default 50).
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// The most delivered events remembered per cluster (default 1,000,000).
    #[serde(default = "default_remember")]
    pub remember: usize,
    /// How long a delivered event is remembered, hours (default 24; Kubernetes keeps
    /// events for one hour by default, so a relist never finds one older).
    #[serde(default = "default_remember_hours")]
    pub remember_hours: u64,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            clusters: Vec::new(),
            max_batch: default_max_batch(),
            linger_ms: default_linger_ms(),
            remember: default_remember(),
            remember_hours: default_remember_hours(),
        }
    }
}

fn default_max_batch() -> usize {
    1000
}

fn default_linger_ms() -> u64 {
    50
}

fn default_remember() -> usize {
    1_000_000
}

fn default_remember_hours() -> u64 {
    24
}

/// One downstream cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's name (`k8scluster`, metric label): letters, digits, `-`, `.`, `_`.
    pub name: String,
    /// Its kubeconfig (TLS client certificates, bearer tokens); without one, the
    /// in-cluster service account or the default kubeconfig.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[serde(default)]
    pub context: Option<String>,
    /// The sync target's name (`k8ssynctarget`; default the cluster's name).
    #[serde(default)]
    pub sync_target: Option<String>,
    /// The upstream workspace (kcp logical cluster) its events go to (`k8sworkspace`).
    #[serde(default)]
    pub workspace: Option<String>,
    /// Which API to watch: `core` (core/v1, default) or `events` (events.k8s.io/v1,
    /// handed on as core/v1). The two show the same events: watch one.
    #[serde(default)]
    pub api: WatchApi,
}

/// See [`ClusterConfig::api`].
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WatchApi {
    /// core/v1 Events.
    #[default]
    Core,
    /// events.k8s.io/v1 Events.
    Events,
}

impl WatchConfig {
    /// Whether any cluster is configured.
    pub fn enabled(&self) -> bool {
        !self.clusters.is_empty()
    }

    /// Every problem of the settings; fields relative to `k8s_watch`.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            let ok = !c.name.is_empty()
                && c.name.len() <= 63
                && c.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if !ok {
                problems.push(ConfigProblem::at(
                    format!("clusters[{i}].name"),
                    "1 to 63 letters, digits, `-`, `.` or `_`",
                ));
            } else if !names.insert(c.name.as_str()) {
                problems.push(ConfigProblem::at(
                    format!("clusters[{i}].name"),
                    format!("`{}` is named twice", c.name),
                ));
            }
            if let Some(ws) = &c.workspace {
                if !kubeclient::valid_workspace(ws) {
                    problems.push(ConfigProblem::at(
                        format!("clusters[{i}].workspace"),
                        format!("`{ws}` is not a workspace path (`root:org:team`: lower-case letters, digits, `-`, `:`)"),
                    ));
                }
            }
        }
        if self.max_batch == 0 {
            problems.push(ConfigProblem::at("max_batch", "must be at least 1"));
        }
        problems
    }
}

/// The watch's metric families (`weir_k8s_watch_*`), labelled by the configured cluster.
struct WatchMetrics {
    events: IntCounterVec,
    up: IntGaugeVec,
    remembered: IntGaugeVec,
    relists: IntCounterVec,
    errors: IntCounterVec,
    routed: IntCounterVec,
}

impl WatchMetrics {
    fn new(r: &MetricsRegistry) -> Self {
        Self {
            events: r.counter(
                "weir_k8s_watch_events_total",
                "Events read from a downstream cluster, by cluster and outcome (delivered: handed to the routes; deduplicated: already delivered at this resourceVersion; undecodable).",
                &["cluster", "outcome"],
            ),
            up: r.gauge(
                "weir_k8s_watch_up",
                "1 while a cluster's watch is listed and watching, 0 while it is failing or relisting.",
                &["cluster"],
            ),
            remembered: r.gauge(
                "weir_k8s_watch_remembered",
                "Delivered events remembered to keep relists from re-emitting them (bounded by k8s_watch.remember).",
                &["cluster"],
            ),
            relists: r.counter(
                "weir_k8s_watch_relists_total",
                "Lists of a cluster's events: the first, and each after a 410 Gone or a broken watch.",
                &["cluster"],
            ),
            routed: r.counter(
                "weir_k8s_watch_routed_total",
                "What the routes made of a cluster's delivered events, by cluster and outcome: written (by the routes' sinks; an event two routes take counts once per route), routed (to a sink a filter named), dropped (by a filter: filtered out, folded into an aggregate, over a rate or spam budget, a duplicate; the filters' own counters say which), dead_lettered, skipped (no route's condition matched).",
                &["cluster", "outcome"],
            ),
            errors: r.counter(
                "weir_k8s_watch_errors_total",
                "Failed list or watch calls to a cluster (retried with backoff).",
                &["cluster"],
            ),
        }
    }
}

impl StartSource for WatchConfig {
    async fn start(&self, name: &str, cx: SourceContext) -> Result<RunningSource, SourceError> {
        let mut running = RunningSource::default();
        if !self.enabled() {
            return Ok(running);
        }
        let seen = Arc::new(
            Seen::open(
                &cx.data_dir.join("k8s-watch").join("seen.redb"),
                self.remember,
                self.remember_hours.saturating_mul(3_600_000),
            )
            .map_err(|e| SourceError::new(name, "cannot open the seen-event memory", e))?,
        );
        let metrics = Arc::new(WatchMetrics::new(&cx.metrics));
        for cluster in &self.clusters {
            let config =
                kubeclient::load(cluster.kubeconfig.as_deref(), cluster.context.as_deref())
                    .await
                    .map_err(|e| {
                        SourceError::new(name, format!("cluster `{}`", cluster.name), e)
                    })?;
            let client = kubeclient::client(config, cluster.kubeconfig.as_ref())
                .map_err(|e| SourceError::new(name, format!("cluster `{}`", cluster.name), e))?;
            metrics.up.with_label_values(&[&cluster.name]).set(0);
            let health = Arc::new(ClusterHealth::default());
            let check = health.clone();
            cx.health.register(
                format!("k8s-watch/{}", cluster.name),
                false,
                Arc::new(move || check.check()),
            );
            let watch = ClusterWatch {
                health,
                cluster: cluster.clone(),
                batching: Batching {
                    max: self.max_batch.max(1),
                    linger: Duration::from_millis(self.linger_ms),
                },
                seen: seen.clone(),
                metrics: metrics.clone(),
                cx: cx.clone(),
            };
            running.tasks.push(tokio::spawn(watch.run(client)));
        }
        tracing::info!(
            clusters = self.clusters.len(),
            "watching downstream clusters' events"
        );
        Ok(running)
    }
}

#[derive(Clone, Copy)]
struct Batching {
    max: usize,
    linger: Duration,
}

/// Whether a cluster's watch is listed and watching, and if not, why.
#[derive(Default)]
struct ClusterHealth {
    up: std::sync::atomic::AtomicBool,
    why: std::sync::Mutex<String>,
}

impl ClusterHealth {
    fn set(&self, up: bool, why: &str) {
        self.up.store(up, std::sync::atomic::Ordering::Relaxed);
        if !up {
            *self.why.lock().unwrap_or_else(|p| p.into_inner()) = why.to_owned();
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.up.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let why = self.why.lock().unwrap_or_else(|p| p.into_inner());
        Err(if why.is_empty() {
            "not listed yet".to_owned()
        } else {
            why.clone()
        })
    }
}

/// One cluster's watch.
struct ClusterWatch {
    health: Arc<ClusterHealth>,
    cluster: ClusterConfig,
    batching: Batching,
    seen: Arc<Seen>,
    metrics: Arc<WatchMetrics>,
    cx: SourceContext,
}

/// A batch being gathered.
#[derive(Default)]
struct Pending {
    events: Vec<Event>,
}

/// The `(uid, resourceVersion)` each watched event stands for, from its id.
fn versions_of(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| e.id.rsplit_once('.'))
        .map(|(uid, version)| (uid.to_owned(), version.to_owned()))
        .collect()
}

/// A watched Event as the API sent it: its JSON object (without `managedFields`), read
/// in one pass, and the metadata the watcher keeps track of. `DynamicObject` would read
/// it through serde's buffered `flatten` and need converting back to JSON.
#[derive(Clone, Debug)]
struct WatchedEvent {
    metadata: ObjectMeta,
    object: Map<String, Value>,
}

impl<'de> Deserialize<'de> for WatchedEvent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut object = Map::deserialize(d)?;
        if let Some(Value::Object(meta)) = object.get_mut("metadata") {
            meta.remove("managedFields");
        }
        let field = |key: &str| {
            Some(convert::meta_str(&object, key))
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let metadata = ObjectMeta {
            name: field("name"),
            namespace: field("namespace"),
            uid: field("uid"),
            resource_version: field("resourceVersion"),
            ..ObjectMeta::default()
        };
        Ok(Self { metadata, object })
    }
}

impl kube::Resource for WatchedEvent {
    type DynamicType = ApiResource;
    type Scope = kube::core::DynamicResourceScope;

    fn kind(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.kind.as_str().into()
    }

    fn group(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.group.as_str().into()
    }

    fn version(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.version.as_str().into()
    }

    fn api_version(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.api_version.as_str().into()
    }

    fn plural(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// How many batches of one cluster may be with the routes at once. The routes take them
/// in order (so per-object order holds), and the watch reads the next while the routes
/// filter and write the last.
const BATCHES_IN_FLIGHT: usize = 4;

/// A batch the routes took and are working on.
struct InFlight {
    outcome:
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Outcome, RouterError>> + Send>>,
    versions: Vec<(String, String)>,
}

/// What woke the watch loop. Lives on the stack for one turn of the loop: boxing the
/// large variant would cost an allocation per watched event.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Stopped,
    /// The next watch item; `None` when the batch's linger ran out.
    Item(Option<Option<Result<watcher::Event<WatchedEvent>, watcher::Error>>>),
    /// The API answered a probe while the watch was failing.
    Answers(bool),
    /// The oldest batch in flight is done.
    Done(Result<Outcome, RouterError>),
}

/// Why a watch stream ended.
enum Ended {
    /// The router stopped or the stream ended: the watch is over.
    Stopped,
    /// A batch was not written: the watch lists again (after a pause), which hands on
    /// everything not remembered as delivered.
    Relist,
}

impl ClusterWatch {
    async fn run(self, client: kube::Client) {
        let (api_version, gvk) = match self.cluster.api {
            WatchApi::Core => (ApiVersion::Core, GroupVersionKind::gvk("", "v1", "Event")),
            WatchApi::Events => (
                ApiVersion::Events,
                GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
            ),
        };
        let resource = ApiResource::from_gvk(&gvk);
        let name = self.cluster.name.as_str();
        let mut relists = 0u32;
        loop {
            let api: Api<WatchedEvent> = Api::all_with(client.clone(), &resource);
            match self.watch(api, client.clone(), api_version).await {
                Ended::Stopped => break,
                Ended::Relist => {
                    relists = relists.saturating_add(1);
                    let pause = weir_core::util::backoff(
                        relists,
                        Duration::from_millis(500),
                        Duration::from_secs(30),
                    );
                    let mut stopped = self.cx.shutdown.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stopped.wait_for(|s| *s) => break,
                    }
                }
            }
        }
        self.metrics.up.with_label_values(&[name]).set(0);
        self.health.set(false, "stopped");
    }

    /// One watch stream, from its list until the router stops or a batch fails.
    async fn watch(
        &self,
        api: Api<WatchedEvent>,
        probe_client: kube::Client,
        api_version: ApiVersion,
    ) -> Ended {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let stopped = self.cx.stopped();
        let mut stopped = std::pin::pin!(stopped);
        let name = self.cluster.name.as_str();
        let mut pending = Pending::default();
        let mut in_flight: std::collections::VecDeque<InFlight> = Default::default();
        // Versions handed to the routes but not yet remembered as delivered.
        let mut unrecorded: HashSet<(String, String)> = HashSet::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut failing = false;
        let ended = loop {
            let full = in_flight.len() >= BATCHES_IN_FLIGHT;
            let failing_now = failing;
            let wake = {
                let next = async {
                    match deadline {
                        Some(at) => tokio::time::timeout_at(at, stream.next()).await.ok(),
                        None => Some(stream.next().await),
                    }
                };
                // While failing, the API is asked every 2 s whether it answers again: a
                // watch that resumes where it was (no relist) yields nothing to say so.
                let probe = async {
                    if failing_now {
                        tokio::time::sleep(PROBE_EVERY).await;
                        probe_client.apiserver_version().await.is_ok()
                    } else {
                        std::future::pending().await
                    }
                };
                let done = async {
                    match in_flight.front_mut() {
                        Some(f) => f.outcome.as_mut().await,
                        None => std::future::pending().await,
                    }
                };
                // The routes' answers come first: a full pipeline reads nothing new.
                if full {
                    tokio::select! {
                        _ = &mut stopped => Wake::Stopped,
                        outcome = done => Wake::Done(outcome),
                    }
                } else {
                    tokio::select! {
                        biased;
                        _ = &mut stopped => Wake::Stopped,
                        outcome = done => Wake::Done(outcome),
                        item = next => Wake::Item(item),
                        answers = probe => Wake::Answers(answers),
                    }
                }
            };
            let item = match wake {
                Wake::Stopped => break Ended::Stopped,
                Wake::Answers(answers) => {
                    if answers {
                        self.metrics.up.with_label_values(&[name]).set(1);
                        self.health.set(true, "");
                        tracing::info!(cluster = name, "the cluster answers again");
                        failing = false;
                    }
                    continue;
                }
                Wake::Done(outcome) => {
                    let Some(batch) = in_flight.pop_front() else {
                        continue;
                    };
                    match self.delivered(outcome, batch, &mut unrecorded) {
                        Ok(()) => continue,
                        Err(ended) => break ended,
                    }
                }
                Wake::Item(item) => item,
            };
            match item {
                // The linger ran out: the batch goes.
                None => {}
                Some(None) => break Ended::Stopped,
                Some(Some(Err(e))) => {
                    self.metrics.errors.with_label_values(&[name]).inc();
                    self.metrics.up.with_label_values(&[name]).set(0);
                    self.health.set(false, &weir_core::util::error_chain(&e));
                    if !failing {
                        tracing::warn!(
                            cluster = name,
                            "watching the cluster's events failed; retrying with backoff: {}",
                            weir_core::util::error_chain(&e)
                        );
                        failing = true;
                    }
                    continue;
                }
                Some(Some(Ok(event))) => {
                    match event {
                        watcher::Event::Init => {
                            self.metrics.relists.with_label_values(&[name]).inc();
                            self.metrics.up.with_label_values(&[name]).set(0);
                            self.health.set(false, "listing");
                        }
                        watcher::Event::InitDone => {
                            self.metrics.up.with_label_values(&[name]).set(1);
                            self.health.set(true, "");
                            failing = false;
                        }
                        watcher::Event::InitApply(object) | watcher::Event::Apply(object) => {
                            self.take(object, api_version, &mut pending, &mut unrecorded);
                        }
                        // The syncer copies events; a downstream deletion (expiry) is
                        // not copied upstream, where retention is the upstream's own.
                        watcher::Event::Delete(_) => {}
                    }
                    if pending.events.len() < self.batching.max {
                        if !pending.events.is_empty() && deadline.is_none() {
                            deadline = Some(tokio::time::Instant::now() + self.batching.linger);
                        }
                        continue;
                    }
                }
            }
            deadline = None;
            match self.hand_on(std::mem::take(&mut pending)).await {
                Ok(batches) => in_flight.extend(batches),
                Err(ended) => break ended,
            }
        };
        // What was gathered is still handed on, and what is in flight waited for (at
        // shutdown the routes finish what they hold).
        if matches!(ended, Ended::Stopped) && !pending.events.is_empty() {
            if let Ok(batches) = self.hand_on(pending).await {
                in_flight.extend(batches);
            }
        }
        while let Some(mut batch) = in_flight.pop_front() {
            let outcome = batch.outcome.as_mut().await;
            // A failure here is logged; the relist (or restart) hands the batch on again.
            let _ = self.delivered(outcome, batch, &mut unrecorded);
        }
        ended
    }

    /// Adds one watched object to the batch, unless it was delivered already.
    /// `unrecorded` holds what was taken but is not yet remembered as delivered.
    fn take(
        &self,
        object: WatchedEvent,
        api: ApiVersion,
        pending: &mut Pending,
        unrecorded: &mut HashSet<(String, String)>,
    ) {
        let name = self.cluster.name.as_str();
        let WatchedEvent { metadata, object } = object;
        let (Some(uid), Some(version)) = (metadata.uid, metadata.resource_version) else {
            self.metrics
                .events
                .with_label_values(&[name, "undecodable"])
                .inc();
            return;
        };
        let key = (uid, version);
        // Delivered before, or already taken (a relist right after a change).
        if self.seen.delivered(name, &key.0, &key.1) || unrecorded.contains(&key) {
            self.metrics
                .events
                .with_label_values(&[name, "deduplicated"])
                .inc();
            return;
        }
        let core = match api {
            ApiVersion::Core => object,
            other => convert::to_core(object, other),
        };
        pending.events.push(self.cloud_event(&core, &key.0, &key.1));
        unrecorded.insert(key);
    }

    /// A watched event as a CloudEvent.
    fn cloud_event(&self, core: &Map<String, Value>, uid: &str, version: &str) -> Event {
        let cluster = &self.cluster;
        let mut event = event_view(core);
        event.id = format!("{uid}.{version}");
        event.source = format!(
            "/clusters/{}/api/v1/namespaces/{}/events",
            cluster.name,
            convert::meta_str(core, "namespace")
        );
        event.set_extension("k8scluster", cluster.name.as_str());
        event.set_extension(
            "k8ssynctarget",
            cluster.sync_target.as_deref().unwrap_or(&cluster.name),
        );
        if let Some(ws) = &cluster.workspace {
            event.set_extension("k8sworkspace", ws.as_str());
        }
        event.datacontenttype = Some("application/json".into());
        event.data = serde_json::to_vec(core).ok().map(Into::into);
        event
    }

    /// Hands a batch to the routes, retrying while they refuse it for now. A batch
    /// larger than a tenant's events-per-second limit can never pass whole: it is split
    /// into pieces the limit takes, handed on in order.
    async fn hand_on(&self, pending: Pending) -> Result<Vec<InFlight>, Ended> {
        let name = self.cluster.name.as_str();
        let mut pieces = std::collections::VecDeque::from([pending.events]);
        let mut taken = Vec::new();
        let mut attempt = 0u32;
        while let Some(events) = pieces.pop_front() {
            if events.is_empty() {
                continue;
            }
            let origin = Origin {
                source_kind: SOURCE_KIND,
                // A cluster the operator configured.
                producer: Producer::Platform,
                ..Default::default()
            };
            // What each event stands for, from its id (`<uid>.<resourceVersion>`).
            let versions = versions_of(&events);
            let refused = match self.cx.router.enqueue_to(origin, events).await {
                Ok(submission) => {
                    taken.push(InFlight {
                        outcome: Box::pin(submission.outcome()),
                        versions,
                    });
                    attempt = 0;
                    continue;
                }
                Err(refused) => refused,
            };
            let Refused {
                error,
                events: back,
            } = refused;
            if matches!(error, RouterError::Stopped(_)) {
                return Err(Ended::Stopped);
            }
            if back.is_empty() {
                // Part of it was queued: the relist hands on what is not remembered.
                tracing::warn!(
                    cluster = name,
                    "the routes took part of a batch of watched events: {error}; listing again"
                );
                return Err(Ended::Relist);
            }
            attempt = attempt.saturating_add(1);
            let pause = match &error {
                RouterError::RateLimited {
                    retry_after_secs,
                    limit,
                    ..
                } => {
                    let most = usize::try_from(*limit).unwrap_or(usize::MAX).max(1);
                    let mut split = Vec::new();
                    let mut rest = back;
                    while rest.len() > most {
                        let tail = rest.split_off(most);
                        split.push(std::mem::replace(&mut rest, tail));
                    }
                    split.push(rest);
                    for piece in split.into_iter().rev() {
                        pieces.push_front(piece);
                    }
                    Duration::from_secs((*retry_after_secs).clamp(1, 60))
                }
                _ => {
                    pieces.push_front(back);
                    weir_core::util::backoff(
                        attempt,
                        Duration::from_millis(100),
                        Duration::from_secs(10),
                    )
                }
            };
            tracing::warn!(
                cluster = name,
                ?pause,
                "the routes did not take a batch of watched events: {error}; retrying"
            );
            let mut stopped = self.cx.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stopped.wait_for(|s| *s) => return Err(Ended::Stopped),
            }
        }
        Ok(taken)
    }

    /// Remembers a batch the routes are done with; a batch they could not write (not
    /// even as dead letters) makes the watch list again.
    fn delivered(
        &self,
        outcome: Result<Outcome, RouterError>,
        batch: InFlight,
        unrecorded: &mut HashSet<(String, String)>,
    ) -> Result<(), Ended> {
        let name = self.cluster.name.as_str();
        for key in &batch.versions {
            unrecorded.remove(key);
        }
        match outcome {
            Ok(outcome) => {
                for (label, n) in [
                    ("written", outcome.delivered),
                    ("routed", outcome.routed),
                    ("dropped", outcome.dropped),
                    ("dead_lettered", outcome.dead_lettered),
                    ("skipped", outcome.skipped),
                ] {
                    if n > 0 {
                        self.metrics
                            .routed
                            .with_label_values(&[name, label])
                            .inc_by(n);
                    }
                }
            }
            Err(RouterError::Stopped(_)) => return Err(Ended::Stopped),
            Err(e) => {
                tracing::warn!(
                    cluster = name,
                    "the routes could not write a batch of watched events: {e}; listing again"
                );
                return Err(Ended::Relist);
            }
        }
        self.metrics
            .events
            .with_label_values(&[name, "delivered"])
            .inc_by(batch.versions.len() as u64);
        // A commit waits for the disk: the runtime moves its other work off this thread.
        let recorded = tokio::task::block_in_place(|| {
            self.seen
                .record(name, &batch.versions, weir_core::util::now_ms())
        });
        self.metrics
            .remembered
            .with_label_values(&[name])
            .set(i64::try_from(self.seen.len(name)).unwrap_or(i64::MAX));
        if let Err(e) = recorded {
            tracing::error!(
                cluster = name,
                "cannot remember delivered events (a restart may hand them on again): {}",
                weir_core::util::error_chain(&e)
            );
        }
        Ok(())
    }
}
