//! Routes: each route is a worker thread that batches incoming events, runs every
//! tenant's filter chain over them in packed batches, applies the verdicts, and writes the
//! survivors to the route's sinks before acknowledging the source.

use crate::metrics::Metrics;
use crate::producers::{Producer, Producers};
use crate::settings::{BatchConfig, EnforcedFilters, FailurePolicy, RouteConfig, TenancyConfig};
use crate::tenants::TenantDirectory;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use weir_abi::BatchWriter;
use weir_core::cesql::Condition;
use weir_core::dead_letter::DeadLetter;
use weir_core::sink::{Sink, SinkError};
use weir_core::Event;
use weir_runtime::registry::FilterRegistry;
use weir_runtime::wit;
use weir_runtime::{
    for_each_decision, Decision, FilterError, FilterInstance, InstanceIdent, StateStore,
};

/// The source kind of events an operator resends (`weir replay`): they go to the route
/// the origin names, whichever sources feed it.
pub const REPLAY_SOURCE: &str = "replay";

/// How often filters' `tick` is called.
pub const TICK_INTERVAL: Duration = Duration::from_secs(1);

/// Why the router could not be built or could not take events.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A filter component could not be loaded.
    #[error("filter `{name}` ({path}): {reason}")]
    Filter {
        /// The filter.
        name: String,
        /// Its file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A filter a chain names could not be instantiated at start.
    #[error("filter `{name}` ({path}) for tenant `{tenant}`")]
    Instantiate {
        /// The filter.
        name: String,
        /// Its file, or `uploaded`.
        path: String,
        /// The tenant whose limits it was instantiated with.
        tenant: String,
        /// What failed.
        #[source]
        source: FilterError,
    },
    /// A sink could not be opened.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The tenant is over its events-per-second limit; nothing was taken.
    #[error(
        "tenant `{tenant}` is over its limit of {limit} events/s; retry in {retry_after_secs} s"
    )]
    RateLimited {
        /// The tenant.
        tenant: String,
        /// Its limit.
        limit: u32,
        /// When to retry.
        retry_after_secs: u64,
    },
    /// The producer may not send events to the tenant an event names (or is mapped to);
    /// nothing was taken.
    #[error("{reason}")]
    TenantRefused {
        /// Why, naming the tenant.
        reason: String,
    },
    /// No route of that name is fed by the source.
    #[error("no route `{0}` takes events from this source")]
    UnknownRoute(String),
    /// The route worker has stopped (shutting down).
    #[error("route `{0}` is shutting down")]
    Stopped(String),
    /// Neither the sinks nor the dead-letter sink took the events.
    #[error("route `{route}` could not write its events: {reason}")]
    Delivery {
        /// The route.
        route: String,
        /// What failed.
        reason: String,
    },
}

/// An authenticated caller, as sources report it.
pub type Principal = wit::Principal;

/// What happened to the events of one submission.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// Written to the route's sinks (fan-out counts each produced event).
    pub delivered: u64,
    /// Sent to a sink named by a filter.
    pub routed: u64,
    /// Dropped by a filter (or by the drop failure policy).
    pub dropped: u64,
    /// Written to the dead-letter sink.
    pub dead_lettered: u64,
    /// Not taken by the route: its `when` condition did not match.
    pub skipped: u64,
}

impl Outcome {
    fn add(&mut self, other: &Outcome) {
        self.delivered += other.delivered;
        self.routed += other.routed;
        self.dropped += other.dropped;
        self.dead_lettered += other.dead_lettered;
        self.skipped += other.skipped;
    }
}

/// Where a submission comes from.
#[derive(Debug, Clone, Default)]
pub struct Origin<'a> {
    /// The source kind (`http`, ...): routes listing it in `from` take the events.
    pub source_kind: &'static str,
    /// Only this route (else every route fed by the source kind).
    pub route: Option<&'a str>,
    /// The authenticated caller.
    pub principal: Option<Arc<Principal>>,
    /// A tenant named by the source (e.g. a configured request header).
    pub tenant_hint: Option<&'a str>,
    /// Who sent the events, as far as tenancy goes (default: [`Producer::Unbound`]).
    pub producer: Producer,
}

/// A submission the routes did not queue, with its events when none was queued (a rate
/// limit, an unknown route), so that the source can offer them again.
#[derive(Debug)]
pub struct Refused {
    /// Why.
    pub error: RouterError,
    /// The events, in their order per tenant; empty when some were queued already.
    pub events: Vec<Event>,
}

/// Events queued on the routes' lanes ([`Router::enqueue_to`]), to be waited on.
#[must_use = "a submission is done only once its outcome was awaited"]
pub struct Submission {
    /// Per route lane: the route's name and where its answer comes.
    waits: Vec<(Arc<str>, Answer)>,
}

/// Where a lane answers a job.
type Answer = oneshot::Receiver<Result<Outcome, RouterError>>;

impl Submission {
    /// Waits until every route has written the events (or dead-lettered them).
    pub async fn outcome(self) -> Result<Outcome, RouterError> {
        let mut total = Outcome::default();
        for (name, wait) in self.waits {
            let outcome = wait
                .await
                .map_err(|_| RouterError::Stopped(name.to_string()))??;
            total.add(&outcome);
        }
        Ok(total)
    }
}

struct Job {
    events: Vec<Event>,
    /// The span the job was submitted in (a source's receive span), while tracing is on.
    span: tracing::Span,
    principal: Option<Arc<Principal>>,
    source_kind: &'static str,
    mode: JobMode,
    done: oneshot::Sender<Result<Outcome, RouterError>>,
}

/// What a route does with a job's events.
enum JobMode {
    /// The route's condition and filters, then its sinks (the normal path).
    Full,
    /// The condition and filters only; what they make of each event is sent back
    /// instead of being delivered. Any filter failure refuses the event, whatever the
    /// route's failure policy (a write must never pass unchecked).
    Admit(oneshot::Sender<Vec<Admission>>),
    /// The sinks only: the events were admitted by these filters already.
    SinksOnly,
}

/// What a route's filters made of one event submitted with [`Router::admit`].
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Kept, perhaps changed by the filters.
    Admitted(Event),
    /// Not taken by the route's condition: no filter ran, the event is admitted as it
    /// is, and the route's sinks are not its destination.
    NotTaken(Event),
    /// A filter dropped it, for this reason.
    Refused(String),
    /// A filter failed on it or answered with an error.
    Failed {
        /// The filter.
        stage: String,
        /// What went wrong.
        reason: String,
    },
    /// A filter turned it into several events.
    FannedOut(usize),
}

enum Msg {
    Job(Job),
    Tick,
}

/// What a route is, shared by its lanes.
struct RouteSpec {
    name: Arc<str>,
    from: Vec<String>,
    when: Condition,
    default_chain: Vec<String>,
    /// Run for every tenant around its chain.
    enforced: EnforcedFilters,
    to: Vec<String>,
    /// Sinks a `route` verdict may name besides `to`.
    routable: Vec<String>,
    dead_letter: String,
    policy: FailurePolicy,
    filter_retries: u32,
    batch: BatchConfig,
    /// Whether delivered events carry the [`FILTERS_EXTENSION`] chain.
    record_filters: bool,
}

/// A route: one lane (worker thread with its own queue and filter instances) per tenant,
/// started on the tenant's first event, so a tenant whose filter is slow or stuck only
/// holds up its own lane; the threads share the CPU.
struct RouteHandle {
    spec: Arc<RouteSpec>,
    lanes: std::sync::Mutex<HashMap<String, mpsc::Sender<Msg>>>,
}

/// A tenant's ingest token bucket: tokens and when it was last refilled.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The running routes.
pub struct Router {
    routes: Vec<RouteHandle>,
    shared: Arc<Shared>,
    buckets: std::sync::Mutex<HashMap<String, Bucket>>,
    workers: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Everything a route worker shares with the rest of the router.
struct Shared {
    registry: Arc<FilterRegistry>,
    sinks: BTreeMap<String, Arc<dyn Sink>>,
    metrics: Arc<Metrics>,
    state: Arc<StateStore>,
    tenants: Arc<TenantDirectory>,
    tenancy: TenancyConfig,
    producers: Producers,
}

impl Router {
    /// Starts one worker thread per route. Every filter a chain names is instantiated
    /// once first with each tenant's limits, so a filter whose `init` rejects its
    /// configuration fails start-up, not the first batch. A declared filter without an
    /// active version is only warned about: until one is uploaded, its batches follow
    /// the route's failure policy.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        routes: &[RouteConfig],
        tenancy: &TenancyConfig,
        filter_files: &BTreeMap<String, PathBuf>,
        registry: Arc<FilterRegistry>,
        tenants: Arc<TenantDirectory>,
        sinks: BTreeMap<String, Arc<dyn Sink>>,
        metrics: Arc<Metrics>,
        state: Arc<StateStore>,
    ) -> Result<Self, RouterError> {
        let shared = Arc::new(Shared {
            registry,
            sinks,
            metrics,
            state,
            tenants,
            tenancy: tenancy.clone(),
            producers: Producers::new(&tenancy.producers),
        });
        let mut chains: Vec<(String, Vec<String>)> = routes
            .iter()
            .map(|r| ("default".to_owned(), r.enforced.around(&r.filters)))
            .collect();
        for (tenant, settings) in shared.tenants.all() {
            for (route, chain) in settings.routes {
                let enforced = routes.iter().find(|r| r.name == route).map(|r| &r.enforced);
                let chain = match enforced {
                    Some(e) => e.around(&chain),
                    None => chain,
                };
                chains.push((tenant.clone(), chain));
            }
        }
        for (tenant, chain) in &chains {
            let tenant = tenant.clone();
            for name in chain {
                if shared.registry.active(name).is_none() {
                    tracing::warn!(filter = %name, "filter has no active version yet; upload one with `weir filter push`");
                    continue;
                }
                instantiate(&shared, &tenant, name).map_err(|source| RouterError::Instantiate {
                    name: name.clone(),
                    path: filter_files
                        .get(name)
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "uploaded".into()),
                    tenant: tenant.clone(),
                    source,
                })?;
            }
        }
        let routes = routes
            .iter()
            .map(|rc| -> Result<RouteHandle, RouterError> {
                Ok(RouteHandle {
                    spec: Arc::new(RouteSpec {
                        name: Arc::from(rc.name.as_str()),
                        from: rc.from.clone(),
                        // Validated with the configuration; an invalid one cannot get here.
                        when: Condition::compile(&rc.when).map_err(|(j, e)| {
                            RouterError::Filter {
                                name: format!("routes.{}.when[{j}]", rc.name),
                                path: "configuration".into(),
                                reason: e.to_string(),
                            }
                        })?,
                        default_chain: rc.filters.clone(),
                        enforced: rc.enforced.clone(),
                        to: rc.to.clone(),
                        routable: rc.routable.clone(),
                        dead_letter: rc.dead_letter.clone(),
                        policy: rc.on_failure,
                        filter_retries: rc.filter_retries,
                        batch: rc.batch,
                        record_filters: rc.record_filters,
                    }),
                    lanes: Default::default(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            routes,
            shared,
            buckets: Default::default(),
            workers: Default::default(),
        })
    }

    /// The queue of a route's lane for a tenant, starting the lane on first use.
    fn lane(&self, route: &RouteHandle, tenant: &str) -> Result<mpsc::Sender<Msg>, RouterError> {
        let mut lanes = route.lanes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = lanes.get(tenant) {
            return Ok(tx.clone());
        }
        let (tx, rx) = mpsc::channel(1024);
        let worker = RouteWorker {
            spec: route.spec.clone(),
            tenant: tenant.to_owned(),
            shared: self.shared.clone(),
            instances: HashMap::new(),
            ran_versions: HashMap::new(),
            writer: BatchWriter::new(),
            seen_tenants: self.shared.tenants.generation(),
            strict: Vec::new(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("weir-{}-{tenant}", route.spec.name))
            .spawn(move || worker.run(rx))
            .map_err(|e| RouterError::Stopped(format!("{}: {e}", route.spec.name)))?;
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
        lanes.insert(tenant.to_owned(), tx.clone());
        Ok(tx)
    }

    /// Sends events from a source through every route fed by it and waits until each
    /// route has written them (or dead-lettered them).
    pub async fn submit(
        &self,
        source_kind: &'static str,
        events: Vec<Event>,
        principal: Option<Arc<Principal>>,
    ) -> Result<Outcome, RouterError> {
        let origin = Origin {
            source_kind,
            route: None,
            principal,
            tenant_hint: None,
            producer: Producer::Platform,
        };
        self.submit_to(origin, events).await
    }

    /// The tenant of an event: a configured source mapping, else its `tenant` extension,
    /// else the source's hint (a configured request header), each only when it names a
    /// known tenant; else `default`.
    fn tenant_of<'a>(&'a self, event: &'a Event, hint: Option<&'a str>) -> &'a str {
        if let Some(m) = self
            .shared
            .tenancy
            .sources
            .iter()
            .find(|m| event.source.starts_with(&m.prefix))
        {
            return &m.tenant;
        }
        let known = |t: &&str| self.shared.tenants.contains(t);
        event
            .extension("tenant")
            .filter(known)
            .or(hint.filter(known))
            .unwrap_or("default")
    }

    /// The tenant of an event sent by `producer`: a bound producer's own tenant (refused
    /// when the event names or is mapped to another), else as [`Router::tenant_of`] tells
    /// it (refused for an unbound producer when that tenant is protected).
    fn tenant_for<'a>(
        &'a self,
        producer: &'a Producer,
        event: &'a Event,
        hint: Option<&'a str>,
    ) -> Result<&'a str, RouterError> {
        match producer {
            Producer::Platform => Ok(self.tenant_of(event, hint)),
            Producer::Unbound => {
                let tenant = self.tenant_of(event, hint);
                if self.shared.producers.protects(tenant) {
                    return Err(RouterError::TenantRefused {
                        reason: format!(
                            "tenant `{tenant}` takes events only from its authenticated producers"
                        ),
                    });
                }
                Ok(tenant)
            }
            Producer::Tenant(own) => {
                let mapped = self
                    .shared
                    .tenancy
                    .sources
                    .iter()
                    .find(|m| event.source.starts_with(&m.prefix))
                    .map(|m| (m.tenant.as_str(), "its source is mapped to"));
                let claims = [
                    mapped,
                    event.extension("tenant").map(|t| (t, "it names")),
                    hint.map(|t| (t, "the request names")),
                ];
                if let Some((other, how)) = claims.into_iter().flatten().find(|(t, _)| t != &&**own)
                {
                    return Err(RouterError::TenantRefused {
                        reason: format!(
                            "event `{}`: {how} tenant `{}`, but its producer speaks for tenant `{own}`",
                            event.id,
                            other.escape_debug()
                        ),
                    });
                }
                Ok(own)
            }
        }
    }

    /// Whether `producer` may send `event` (its tenant as [`Router::submit_to`] would tell
    /// it): for a source that must refuse before it stores or forwards anything.
    pub fn check_producer(&self, producer: &Producer, event: &Event) -> Result<(), RouterError> {
        self.tenant_for(producer, event, None).map(|_| ())
    }

    /// The configured producer credentials (sources authenticate their callers with
    /// them).
    pub fn producers(&self) -> &Producers {
        &self.shared.producers
    }

    /// Like [`Router::submit`], with everything the source knows about the events.
    pub async fn submit_to(
        &self,
        origin: Origin<'_>,
        events: Vec<Event>,
    ) -> Result<Outcome, RouterError> {
        self.enqueue_to(origin, events)
            .await
            .map_err(|r| r.error)?
            .outcome()
            .await
    }

    /// Hands events to the routes like [`Router::submit_to`] but returns once they are
    /// queued on the routes' lanes, with the [`Submission`] to wait on. A source can so
    /// keep several batches in flight: lanes take them in the order they were queued, so
    /// order is kept across submissions of one caller that queues one after the other.
    pub async fn enqueue_to(
        &self,
        origin: Origin<'_>,
        events: Vec<Event>,
    ) -> Result<Submission, Refused> {
        self.enqueue(origin, events, true, || JobMode::Full).await
    }

    /// Runs one event through the filters of the route `origin.route` (its condition
    /// and chain, with the caller as principal) without delivering it, and tells what
    /// they made of it: how an API admits a write before storing it.
    pub async fn admit(&self, origin: Origin<'_>, event: Event) -> Result<Admission, RouterError> {
        let Some(route) = origin.route.map(str::to_owned) else {
            return Err(RouterError::UnknownRoute(String::new()));
        };
        let (tx, rx) = oneshot::channel();
        let mut slot = Some(tx);
        self.dispatch(origin, vec![event], true, || match slot.take() {
            Some(tx) => JobMode::Admit(tx),
            None => JobMode::Full,
        })
        .await?;
        // A refusal or failure of any copy refuses the write.
        let answers = rx.await.map_err(|_| RouterError::Stopped(route.clone()))?;
        let refusal = answers
            .iter()
            .position(|a| matches!(a, Admission::Failed { .. } | Admission::Refused(_)));
        let mut answers = answers;
        match refusal {
            Some(i) => Ok(answers.swap_remove(i)),
            None => answers.pop().ok_or(RouterError::Stopped(route)),
        }
    }

    /// Delivers events to the sinks of the route `origin.route` without running its
    /// condition or filters: they were admitted through [`Router::admit`] already, and
    /// the route took them ([`Admission::Admitted`], not [`Admission::NotTaken`]).
    pub async fn deliver_admitted(
        &self,
        origin: Origin<'_>,
        events: Vec<Event>,
    ) -> Result<Outcome, RouterError> {
        // Taken (rate limit, intake metric) when they were admitted: not counted twice.
        self.dispatch(origin, events, false, || JobMode::SinksOnly)
            .await
    }

    /// Runs events already charged at admission through another route's whole chain (a
    /// stored change going on to the other `k8s` routes): not charged or counted again.
    pub async fn run_admitted(
        &self,
        origin: Origin<'_>,
        events: Vec<Event>,
    ) -> Result<Outcome, RouterError> {
        self.dispatch(origin, events, false, || JobMode::Full).await
    }

    /// [`Router::enqueue`], then waits for the routes to be done with the events.
    async fn dispatch(
        &self,
        origin: Origin<'_>,
        events: Vec<Event>,
        intake: bool,
        mode: impl FnMut() -> JobMode,
    ) -> Result<Outcome, RouterError> {
        self.enqueue(origin, events, intake, mode)
            .await
            .map_err(|r| r.error)?
            .outcome()
            .await
    }

    /// Splits events by tenant and hands them to the lanes of the routes fed by the
    /// source; `intake` charges the tenants' rate limits and counts them as received.
    async fn enqueue(
        &self,
        origin: Origin<'_>,
        events: Vec<Event>,
        intake: bool,
        mut mode: impl FnMut() -> JobMode,
    ) -> Result<Submission, Refused> {
        let Origin {
            source_kind,
            route,
            principal,
            tenant_hint,
            producer,
        } = origin;
        let received = events.len() as u64;
        let targets: Vec<&RouteHandle> = self
            .routes
            .iter()
            // A replay names its route and goes there whatever feeds it.
            .filter(|r| {
                (source_kind == REPLAY_SOURCE && route.is_some())
                    || r.spec.from.iter().any(|f| f == source_kind)
            })
            .filter(|r| route.is_none_or(|name| &*r.spec.name == name))
            .collect();
        if let (Some(name), true) = (route, targets.is_empty()) {
            return Err(Refused {
                error: RouterError::UnknownRoute(name.to_owned()),
                events,
            });
        }
        // Split by tenant once; every route gets each tenant's share on that tenant's lane.
        let mut by_tenant: Vec<(String, Vec<Event>)> = Vec::new();
        // Events of one request nearly always name the same tenant: resolve each distinct
        // (source, tenant extension) once instead of reading the directory per event.
        let mut last: Option<(String, Option<String>, String)> = None;
        let mut events = events.into_iter();
        while let Some(event) = events.next() {
            let ext = event.extension("tenant");
            let tenant = match &last {
                Some((src, e, t)) if *src == event.source && e.as_deref() == ext => t.as_str(),
                _ => {
                    let t = match self.tenant_for(&producer, &event, tenant_hint) {
                        Ok(t) => t.to_owned(),
                        Err(error) => {
                            // Refused whole, before anything is taken or queued: every
                            // event is handed back (their order per tenant kept).
                            let mut all: Vec<Event> =
                                by_tenant.into_iter().flat_map(|(_, e)| e).collect();
                            all.push(event);
                            all.extend(events);
                            return Err(Refused { error, events: all });
                        }
                    };
                    let entry = last.insert((event.source.clone(), ext.map(str::to_owned), t));
                    entry.2.as_str()
                }
            };
            match by_tenant.iter().position(|(t, _)| t == tenant) {
                Some(i) => by_tenant[i].1.push(event),
                None => {
                    let tenant = tenant.to_owned();
                    by_tenant.push((tenant, vec![event]));
                }
            }
        }
        if intake {
            if let Err(error) = self.take_tokens(&by_tenant) {
                let events = by_tenant.into_iter().flat_map(|(_, e)| e).collect();
                return Err(Refused { error, events });
            }
            self.shared
                .metrics
                .received
                .with_label_values(&[source_kind])
                .inc_by(received);
        }
        let mut waits = Vec::new();
        for (i, route) in targets.iter().enumerate() {
            let last_route = i + 1 == targets.len();
            for (tenant, events) in by_tenant.iter_mut() {
                let batch = if last_route {
                    std::mem::take(events)
                } else {
                    events.clone()
                };
                let (done, wait) = oneshot::channel();
                let job = Job {
                    events: batch,
                    span: weir_core::trace::span(tracing::Span::current),
                    principal: principal.clone(),
                    source_kind,
                    mode: mode(),
                    done,
                };
                let stopped = || Refused {
                    error: RouterError::Stopped(route.spec.name.to_string()),
                    events: Vec::new(),
                };
                self.lane(route, tenant)
                    .map_err(|error| Refused {
                        error,
                        events: Vec::new(),
                    })?
                    .send(Msg::Job(job))
                    .await
                    .map_err(|_| stopped())?;
                waits.push((route.spec.name.clone(), wait));
            }
        }
        Ok(Submission { waits })
    }

    /// Takes each tenant's events from its events-per-second bucket (a burst of one
    /// second's worth), or refuses the whole submission without taking anything.
    fn take_tokens(&self, by_tenant: &[(String, Vec<Event>)]) -> Result<(), RouterError> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut wanted = Vec::new();
        for (tenant, events) in by_tenant {
            let limit = self.shared.tenants.limits(tenant).events_per_sec;
            if limit == 0 {
                continue;
            }
            let rate = f64::from(limit);
            let bucket = buckets.entry(tenant.clone()).or_insert(Bucket {
                tokens: rate,
                at: now,
            });
            bucket.tokens =
                (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate);
            bucket.at = now;
            let n = events.len() as f64;
            if n > bucket.tokens {
                let retry_after_secs =
                    ((n.min(rate) - bucket.tokens) / rate).ceil().max(1.0) as u64;
                return Err(RouterError::RateLimited {
                    tenant: tenant.clone(),
                    limit,
                    retry_after_secs,
                });
            }
            wanted.push((tenant.clone(), n));
        }
        for (tenant, n) in wanted {
            if let Some(b) = buckets.get_mut(&tenant) {
                b.tokens -= n;
            }
        }
        Ok(())
    }

    /// Asks every lane to run its filters' `tick`.
    pub fn tick(&self) {
        for r in &self.routes {
            for tx in r.lanes.lock().unwrap_or_else(|e| e.into_inner()).values() {
                // A full queue means the lane is busy; the next tick will do.
                let _ = tx.try_send(Msg::Tick);
            }
        }
    }

    /// The router's metrics (sources count what they refuse and dead-letter here).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Stops accepting events, lets every lane finish what it holds, and waits for it.
    /// Submissions after this are refused.
    pub fn shutdown(&self) {
        for r in &self.routes {
            r.lanes.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in workers {
            let _ = w.join();
        }
    }
}

/// A new instance of the filter's active version for a tenant, with the version.
fn instantiate(shared: &Shared, tenant: &str, filter: &str) -> Result<LaneFilter, FilterError> {
    let active = shared.registry.active(filter).ok_or_else(|| {
        FilterError::Instantiate(format!("filter `{filter}` has no active version"))
    })?;
    let limits = shared.tenants.limits(tenant);
    let state_cap = usize::try_from(limits.state_mb << 20).unwrap_or(usize::MAX);
    let instance = FilterInstance::new(
        shared.registry.engine(),
        active.compiled.clone(),
        active.config.clone(),
        limits,
        InstanceIdent {
            tenant: Arc::from(tenant),
            filter: Arc::from(filter),
        },
        shared.state.tenant(tenant, state_cap),
        shared.metrics.filters.clone(),
    )?;
    Ok(LaneFilter {
        version: active.version,
        version_label: Arc::from(active.version.to_string()),
        instance,
    })
}

/// An event in flight, with the submission it belongs to (`NO_JOB` for tick output).
struct Item {
    event: Event,
    job: usize,
}

/// The extension a route with `record_filters` sets on the events it delivers: the
/// `name@version` of each filter that passed them on, in order, comma-separated.
pub const FILTERS_EXTENSION: &str = "weirfilters";

/// Appends `stamp` (`name@version`) to the event's [`FILTERS_EXTENSION`].
fn stamp_filter(event: &mut Event, stamp: &str) {
    let chain = match event.extension(FILTERS_EXTENSION) {
        Some(chain) if !chain.is_empty() => format!("{chain},{stamp}"),
        _ => stamp.to_owned(),
    };
    event.set_extension(FILTERS_EXTENSION, chain);
}

/// An event that failed at a stage, on its way to the dead-letter sink.
struct Dead {
    item: Item,
    /// The failing filter or sink, or a fixed word (`unroutable`).
    stage: String,
    /// The failing filter's version, when the stage is a filter.
    filter_version: Option<u32>,
    reason: String,
}

/// The filter (and version) a batch or event failed at.
struct FailedAt<'a> {
    filter: &'a str,
    /// Unknown when the filter has no active version.
    version: Option<u32>,
    /// `version` as text (empty when unknown), for metric labels.
    version_label: &'a str,
}

/// A filter instance of a lane, with the version it runs.
struct LaneFilter {
    version: u32,
    /// `version` as text, for metric labels (shared: taken per batch without copying).
    version_label: Arc<str>,
    instance: FilterInstance,
}

const NO_JOB: usize = usize::MAX;

/// The dead-letter stage of an event a filter routed to a sink its route may not use.
const UNROUTABLE: &str = "unroutable";

/// What a chain run produced.
#[derive(Default)]
struct Results {
    kept: Vec<Item>,
    routed: Vec<(String, Item)>,
    dead: Vec<Dead>,
    dropped: Vec<(usize, Arc<str>)>,
}

impl Results {
    /// Adds `other`'s routed, dead-lettered and dropped events (not its kept ones).
    fn absorb(&mut self, other: Results) {
        self.routed.extend(other.routed);
        self.dead.extend(other.dead);
        self.dropped.extend(other.dropped);
    }
}

/// One lane: a route's work for one tenant.
struct RouteWorker {
    spec: Arc<RouteSpec>,
    tenant: String,
    shared: Arc<Shared>,
    /// Live instances of this lane's tenant by filter name, with the version each runs.
    instances: HashMap<String, LaneFilter>,
    /// The version label each filter last ran with in this lane (kept when instances are
    /// dropped), so a version change forgets the old version's series.
    ran_versions: HashMap<String, String>,
    writer: BatchWriter,
    /// The tenant directory's generation the instances were built for.
    seen_tenants: u64,
    /// Per job of the round being processed: whether it is an admission (failures
    /// refuse its events whatever the failure policy).
    strict: Vec<bool>,
}

impl RouteWorker {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        while let Some(msg) = rx.blocking_recv() {
            let mut jobs = Vec::new();
            let mut tick = false;
            let mut queued = 0;
            let mut next = Some(msg);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Job(job) => {
                        queued += job.events.len();
                        jobs.push(job);
                    }
                    Msg::Tick => tick = true,
                }
                if queued < self.spec.batch.max_events {
                    next = rx.try_recv().ok();
                }
            }
            // A bug in host code must not take the route down: the jobs of the failed
            // round are answered with an error (their senders are dropped) and the route
            // goes on with fresh filter instances.
            let round = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if !jobs.is_empty() {
                    self.process_jobs(jobs);
                }
                if tick {
                    self.tick();
                }
            }));
            if round.is_err() {
                tracing::error!(route = %self.spec.name, "internal error while processing a batch; its submitters were told it failed");
                self.instances.clear();
            }
        }
        tracing::info!(route = %self.spec.name, "route stopped");
    }

    /// The tenant's chain (its own or the route's default) inside the enforced filters.
    fn chain(&self, tenant: &str) -> Vec<String> {
        let own = self.shared.tenants.chain(tenant, &self.spec.name);
        self.spec
            .enforced
            .around(own.as_deref().unwrap_or(&self.spec.default_chain))
    }

    /// Rebuilds instances (lazily) when a tenant's limits or chain changed.
    fn follow_tenant_changes(&mut self) {
        let generation = self.shared.tenants.generation();
        if generation != self.seen_tenants {
            self.seen_tenants = generation;
            self.instances.clear();
        }
    }

    fn process_jobs(&mut self, mut jobs: Vec<Job>) {
        self.follow_tenant_changes();
        // One span for the round, the child of its first job's receive span and linked to
        // the others'; filter and sink spans are its children.
        let round = weir_core::trace::span(|| {
            tracing::info_span!(
                target: weir_core::trace::TARGET,
                "weir.route",
                weir.route = %self.spec.name,
                weir.tenant = %self.tenant,
                weir.events = jobs.iter().map(|j| j.events.len()).sum::<usize>(),
            )
        });
        if let Some((first, rest)) = jobs.split_first() {
            let others: Vec<&tracing::Span> = rest.iter().map(|j| &j.span).collect();
            weir_core::trace::follow(&round, &first.span, &others);
        }
        let _round = round.enter();
        let mut outcomes = vec![Outcome::default(); jobs.len()];
        let mut failures: Vec<Option<String>> = vec![None; jobs.len()];
        let mut admissions: Vec<Vec<Admission>> = vec![Vec::new(); jobs.len()];
        self.strict = jobs
            .iter()
            .map(|j| matches!(j.mode, JobMode::Admit(_)))
            .collect();
        let tenant = self.tenant.clone();
        // Admitted events go straight to the sinks.
        let mut direct = Results::default();
        for (j, job) in jobs.iter_mut().enumerate() {
            if matches!(job.mode, JobMode::SinksOnly) {
                direct
                    .kept
                    .extend(job.events.drain(..).map(|event| Item { event, job: j }));
            }
        }
        if !direct.kept.is_empty() {
            self.deliver(&tenant, direct, &mut outcomes, &mut failures);
        }
        if !self.spec.when.is_empty() {
            let mut skipped_total = 0;
            for (j, (job, outcome)) in jobs.iter_mut().zip(outcomes.iter_mut()).enumerate() {
                let before = job.events.len();
                let (taken, skipped): (Vec<Event>, Vec<Event>) = std::mem::take(&mut job.events)
                    .into_iter()
                    .partition(|e| self.spec.when.matches(e));
                job.events = taken;
                if self.strict[j] {
                    // Not this route's business: admitted as it is.
                    admissions[j].extend(skipped.into_iter().map(Admission::NotTaken));
                }
                outcome.skipped = (before - job.events.len()) as u64;
                skipped_total += outcome.skipped;
            }
            if skipped_total > 0 {
                self.shared
                    .metrics
                    .route_events
                    .with_label_values(&[&*self.spec.name, "unmatched"])
                    .inc_by(skipped_total);
            }
        }
        // One filter context per caller: jobs of the same caller (or anonymous jobs of the
        // same source) share batches.
        let callers: Vec<usize> = (0..jobs.len())
            .map(|j| {
                (0..=j)
                    .find(|&i| same_caller(&jobs[i], &jobs[j]))
                    .unwrap_or(j)
            })
            .collect();
        let mut groups: Vec<(usize, Vec<Item>)> = Vec::new();
        let record_filters = self.spec.record_filters;
        for (j, job) in jobs.iter_mut().enumerate() {
            let items = job.events.drain(..).map(|mut event| {
                if record_filters {
                    // The chain is this route's own, whatever an event arrived claiming.
                    event.extensions.retain(|e| e.name != FILTERS_EXTENSION);
                }
                Item { event, job: j }
            });
            match groups.iter_mut().find(|(c, _)| *c == callers[j]) {
                Some((_, group)) => group.extend(items),
                None => groups.push((callers[j], items.collect())),
            }
        }
        let chain = self.chain(&tenant);
        for (caller, items) in groups {
            if items.is_empty() {
                continue;
            }
            let job = &jobs[caller];
            let ctx = wit::Context {
                tenant: tenant.clone(),
                route: self.spec.name.to_string(),
                source_kind: job.source_kind.to_owned(),
                principal: job.principal.as_deref().cloned(),
            };
            let results = self.run_chain(&tenant, &ctx, &chain, 0, items);
            let results = self.take_admissions(results, &mut admissions);
            self.deliver(&tenant, results, &mut outcomes, &mut failures);
        }
        for (j, job) in jobs.into_iter().enumerate() {
            if let JobMode::Admit(reply) = job.mode {
                let _ = reply.send(std::mem::take(&mut admissions[j]));
            }
            let result = match failures[j].take() {
                Some(reason) => Err(RouterError::Delivery {
                    route: self.spec.name.to_string(),
                    reason,
                }),
                None => Ok(outcomes[j]),
            };
            // The submitter may have gone away (client disconnected); nothing to tell.
            let _ = job.done.send(result);
        }
    }

    /// Moves the results of admission jobs out of `results` into `admissions`; the rest
    /// is left for delivery.
    fn take_admissions(&self, results: Results, admissions: &mut [Vec<Admission>]) -> Results {
        if !self.strict.iter().any(|s| *s) {
            return results;
        }
        let strict = |job: usize| self.strict.get(job).copied().unwrap_or(false);
        let Results {
            kept,
            routed,
            dead,
            dropped,
        } = results;
        let mut rest = Results::default();
        let mut admitted: Vec<Vec<Event>> = vec![Vec::new(); admissions.len()];
        for item in kept {
            match strict(item.job) {
                true => admitted[item.job].push(item.event),
                false => rest.kept.push(item),
            }
        }
        // A write names no sink: a route verdict admits it to the route's sinks.
        for (sink, item) in routed {
            match strict(item.job) {
                true => admitted[item.job].push(item.event),
                false => rest.routed.push((sink, item)),
            }
        }
        for dead in dead {
            match strict(dead.item.job) {
                true => admissions[dead.item.job].push(Admission::Failed {
                    stage: dead.stage,
                    reason: dead.reason,
                }),
                false => rest.dead.push(dead),
            }
        }
        for (job, reason) in dropped {
            match strict(job) {
                true => admissions[job].push(Admission::Refused(reason.to_string())),
                false => rest.dropped.push((job, reason)),
            }
        }
        for (job, mut events) in admitted.into_iter().enumerate() {
            match events.len() {
                0 => {}
                1 => admissions[job].extend(events.pop().map(Admission::Admitted)),
                n => admissions[job].push(Admission::FannedOut(n)),
            }
        }
        rest
    }

    /// Runs `items` through `chain[start..]` for one tenant and caller.
    /// Runs `items` through `chain` from filter `start` on. The route's enforced `after`
    /// filters end every chain: an event an earlier filter routes to a sink still passes
    /// them first, so no filter of the tenant's steers an event around them.
    fn run_chain(
        &mut self,
        tenant: &str,
        ctx: &wit::Context,
        chain: &[String],
        start: usize,
        items: Vec<Item>,
    ) -> Results {
        let after_start = chain.len().saturating_sub(self.spec.enforced.after.len());
        let start = start.min(chain.len());
        if start >= after_start || after_start == chain.len() {
            return self.run_filters(tenant, ctx, &chain[start..], items);
        }
        let enforced = &chain[after_start..];
        let mut results = self.run_filters(tenant, ctx, &chain[start..after_start], items);
        let routed = std::mem::take(&mut results.routed);
        let kept = std::mem::take(&mut results.kept);
        let mut last = self.run_filters(tenant, ctx, enforced, kept);
        results.kept = std::mem::take(&mut last.kept);
        results.absorb(last);
        // Routed events, per sink they were routed to (in the order they were routed).
        let mut by_sink: Vec<(String, Vec<Item>)> = Vec::new();
        for (sink, item) in routed {
            match by_sink.iter_mut().find(|(s, _)| *s == sink) {
                Some((_, items)) => items.push(item),
                None => by_sink.push((sink, vec![item])),
            }
        }
        for (sink, items) in by_sink {
            let mut passed = self.run_filters(tenant, ctx, enforced, items);
            let kept = std::mem::take(&mut passed.kept);
            results
                .routed
                .extend(kept.into_iter().map(|item| (sink.clone(), item)));
            results.absorb(passed);
        }
        results
    }

    /// Runs `items` through each filter of `filters` in turn.
    fn run_filters(
        &mut self,
        tenant: &str,
        ctx: &wit::Context,
        filters: &[String],
        items: Vec<Item>,
    ) -> Results {
        let mut results = Results::default();
        let mut current = items;
        for filter in filters {
            let mut next = Vec::with_capacity(current.len());
            let mut pending = current.into_iter().peekable();
            while pending.peek().is_some() {
                let mut batch = Vec::new();
                let mut bytes = 0;
                while let Some(item) = pending.next_if(|item| {
                    batch.is_empty()
                        || (batch.len() < self.spec.batch.max_events
                            && bytes + item.event.size() <= self.spec.batch.max_bytes)
                }) {
                    bytes += item.event.size();
                    batch.push(item);
                }
                self.run_filter(tenant, ctx, filter, batch, &mut next, &mut results);
            }
            current = next;
        }
        results.kept = current;
        results
    }

    /// Records that the lane now runs (or tried to run) `filter` at version `label`, and
    /// forgets the series of the version it ran before: a filter's many uploads do not
    /// grow the metrics without end.
    fn ran_version(&mut self, tenant: &str, filter: &str, label: String) {
        match self.ran_versions.insert(filter.to_owned(), label.clone()) {
            Some(old) if old != label => {
                self.shared
                    .metrics
                    .forget_filter_version(&self.spec.name, filter, &old, tenant)
            }
            _ => {}
        }
    }

    /// One packed batch through one filter; survivors go to `next`.
    fn run_filter(
        &mut self,
        tenant: &str,
        ctx: &wit::Context,
        filter: &str,
        batch: Vec<Item>,
        next: &mut Vec<Item>,
        results: &mut Results,
    ) {
        self.writer.clear();
        for item in &batch {
            let e = &item.event;
            self.writer
                .push(&e.core(), e.extension_pairs(), e.data.as_deref());
        }
        let started = Instant::now();
        // Hot swap happens here, between batches: a batch runs entirely on the version
        // that was active when it started.
        let active_version = self.shared.registry.active(filter).map(|a| a.version);
        let current = self.instances.get(filter).map(|f| f.version);
        if current.is_none() || current != active_version {
            match instantiate(&self.shared, tenant, filter) {
                Ok(fresh) => {
                    let label = fresh.version_label.to_string();
                    self.instances.insert(filter.to_owned(), fresh);
                    self.ran_version(tenant, filter, label);
                }
                Err(e) => {
                    self.instances.remove(filter);
                    let version = active_version.map(|v| v.to_string()).unwrap_or_default();
                    // A version that cannot start counts its failures under its own label,
                    // which goes like any other once the lane moves on.
                    self.ran_version(tenant, filter, version.clone());
                    let at = FailedAt {
                        filter,
                        version: active_version,
                        version_label: &version,
                    };
                    self.fail_batch(tenant, &at, &e, batch, next, results);
                    return;
                }
            }
        }
        let Some(lane_filter) = self.instances.get_mut(filter) else {
            return;
        };
        let version = lane_filter.version;
        let span = weir_core::trace::span(|| {
            tracing::info_span!(
                target: weir_core::trace::TARGET,
                "weir.filter",
                weir.filter = filter,
                weir.filter.version = version,
                weir.tenant = tenant,
                weir.batch = batch.len(),
                weir.outcome = tracing::field::Empty,
            )
        });
        let _span = span.enter();
        let version_label = lane_filter.version_label.clone();
        let instance = &mut lane_filter.instance;
        let mut answer = instance.process(ctx, self.writer.as_bytes());
        let mut tries = 0;
        while let Err(e) = &answer {
            if tries >= self.spec.filter_retries {
                break;
            }
            tries += 1;
            self.shared
                .metrics
                .filter_retries
                .with_label_values(&[&*self.spec.name, filter, &*version_label, tenant])
                .inc();
            tracing::debug!(route = %self.spec.name, tenant, filter, version, attempt = tries, "filter failed, running the batch again: {e}");
            answer = instance.process(ctx, self.writer.as_bytes());
        }
        // State written during the batch becomes durable before its events move on.
        if let Err(e) = instance.state().flush() {
            tracing::error!(route = %self.spec.name, tenant, filter, version, "cannot persist filter state: {e}");
        }
        let metrics = &self.shared.metrics;
        metrics
            .filter_seconds
            .with_label_values(&[filter, &*version_label, tenant])
            .observe(started.elapsed().as_secs_f64());
        let at = FailedAt {
            filter,
            version: Some(version),
            version_label: &version_label,
        };
        let answer = match answer {
            Ok(answer) => {
                span.record("weir.outcome", "ok");
                answer
            }
            Err(e) => {
                span.record("weir.outcome", e.kind());
                return self.fail_batch(tenant, &at, &e, batch, next, results);
            }
        };
        let stamp = self
            .spec
            .record_filters
            .then(|| format!("{filter}@{version}"));
        let (events, jobs): (Vec<Event>, Vec<usize>) =
            batch.into_iter().map(|i| (i.event, i.job)).unzip();
        let mut counts: [(&str, u64); 5] = crate::metrics::VERDICTS.map(|v| (v, 0));
        let this = &*self;
        let applied = for_each_decision(events, &answer, |i, decision| {
            let job = jobs[i];
            if let Some(slot) = counts.iter_mut().find(|(l, _)| *l == decision.label()) {
                slot.1 += 1;
            }
            let passed = |mut event: Event| {
                if let Some(stamp) = &stamp {
                    stamp_filter(&mut event, stamp);
                }
                Item { event, job }
            };
            match decision {
                Decision::Keep(event) => next.push(passed(event)),
                Decision::Drop { reason, .. } => results.dropped.push((job, reason)),
                Decision::FanOut(events) => next.extend(events.into_iter().map(passed)),
                Decision::Route { sink, event } => {
                    if this.shared.sinks.contains_key(&sink) {
                        results.routed.push((sink, passed(event)));
                    } else {
                        let reason = format!("route verdict names unknown sink `{sink}`");
                        this.fail_one(&at, &reason, Item { event, job }, next, results);
                    }
                }
                Decision::Error { event, reason } => {
                    this.fail_one(&at, &reason, Item { event, job }, next, results)
                }
            }
        });
        if let Err((events, e)) = applied {
            if let Some(lane_filter) = self.instances.get_mut(filter) {
                lane_filter.instance.recycle();
            }
            let batch = events
                .into_iter()
                .zip(jobs)
                .map(|(event, job)| Item { event, job })
                .collect();
            return self.fail_batch(tenant, &at, &e, batch, next, results);
        }
        for (label, n) in counts {
            if n > 0 {
                metrics
                    .filter_verdicts
                    .with_label_values(&[filter, &*version_label, tenant, label])
                    .inc_by(n);
            }
        }
    }

    fn fail_batch(
        &self,
        tenant: &str,
        at: &FailedAt<'_>,
        error: &FilterError,
        batch: Vec<Item>,
        next: &mut Vec<Item>,
        results: &mut Results,
    ) {
        self.shared
            .metrics
            .filter_failures
            .with_label_values(&[
                &*self.spec.name,
                at.filter,
                at.version_label,
                tenant,
                error.kind(),
            ])
            .inc();
        tracing::warn!(route = %self.spec.name, tenant, filter = at.filter, version = at.version, events = batch.len(), policy = ?self.spec.policy, "filter failed: {error}");
        let reason = error.to_string();
        for item in batch {
            self.fail_one(at, &reason, item, next, results);
        }
    }

    fn fail_one(
        &self,
        at: &FailedAt<'_>,
        reason: &str,
        item: Item,
        next: &mut Vec<Item>,
        results: &mut Results,
    ) {
        let strict = self.strict.get(item.job).copied().unwrap_or(false);
        let dead = |item| Dead {
            item,
            stage: at.filter.to_owned(),
            filter_version: at.version,
            reason: reason.to_owned(),
        };
        match self.spec.policy {
            _ if strict => results.dead.push(dead(item)),
            FailurePolicy::DeadLetter => results.dead.push(dead(item)),
            FailurePolicy::Pass => next.push(item),
            FailurePolicy::Drop => results.dropped.push((item.job, Arc::from(reason))),
        }
    }

    /// Writes a chain's results to the sinks and counts them per submission.
    fn deliver(
        &self,
        tenant: &str,
        results: Results,
        outcomes: &mut [Outcome],
        failures: &mut [Option<String>],
    ) {
        let Results {
            kept,
            routed,
            mut dead,
            dropped,
        } = results;
        let metrics = &self.shared.metrics;
        let count = |outcomes: &mut [Outcome], job: usize, f: fn(&mut Outcome)| {
            if let Some(o) = outcomes.get_mut(job) {
                f(o)
            }
        };
        for (job, _) in &dropped {
            count(outcomes, *job, |o| o.dropped += 1);
        }
        let (mut delivered, mut routed_n, mut dead_n) = (0u64, 0u64, 0u64);
        // Route sinks: every sink must take each event, or that event is dead-lettered
        // (a sink may fail part of a batch and say which events).
        if !kept.is_empty() {
            let events: Vec<&Event> = kept.iter().map(|i| &i.event).collect();
            let mut failed: Vec<Option<(String, String)>> = Vec::new();
            for name in &self.spec.to {
                if let Some(sink) = self.shared.sinks.get(name) {
                    let span = weir_core::trace::span(|| {
                        tracing::info_span!(
                            target: weir_core::trace::TARGET,
                            "weir.sink",
                            otel.kind = "producer",
                            weir.sink = %name,
                            weir.events = events.len(),
                        )
                    });
                    let _span = span.enter();
                    let (written, failure) = match sink.write_tenant(tenant, &events) {
                        Ok(()) => (events.len(), None),
                        Err(SinkError::Partial {
                            failed: which,
                            reason,
                            ..
                        }) => (
                            events.len().saturating_sub(which.len()),
                            Some((which, reason)),
                        ),
                        Err(e) => (0, Some(((0..events.len()).collect(), e.to_string()))),
                    };
                    if written > 0 {
                        metrics
                            .sink_events
                            .with_label_values(&[name])
                            .inc_by(written as u64);
                    }
                    if let Some((which, reason)) = failure {
                        metrics.sink_errors.with_label_values(&[name]).inc();
                        if failed.is_empty() {
                            failed.resize(events.len(), None);
                        }
                        for i in which {
                            if let Some(slot) = failed.get_mut(i).filter(|s| s.is_none()) {
                                *slot = Some((name.clone(), reason.clone()));
                            }
                        }
                    }
                }
            }
            drop(events);
            for (i, item) in kept.into_iter().enumerate() {
                match failed.get_mut(i).and_then(Option::take) {
                    None => {
                        delivered += 1;
                        count(outcomes, item.job, |o| o.delivered += 1);
                    }
                    Some((sink, reason)) => dead.push(Dead {
                        item,
                        stage: sink,
                        filter_version: None,
                        reason,
                    }),
                }
            }
        }
        for (sink_name, item) in routed {
            if !self.spec.to.contains(&sink_name) && !self.spec.routable.contains(&sink_name) {
                let reason = format!(
                    "route `{}` may not send events to sink `{sink_name}` (list it in the route's `routable`)",
                    self.spec.name
                );
                // The stage is a metric label: a fixed word, not the filter's sink name.
                dead.push(Dead {
                    item,
                    stage: UNROUTABLE.to_owned(),
                    filter_version: None,
                    reason,
                });
                continue;
            }
            let written = self
                .shared
                .sinks
                .get(&sink_name)
                .map(|sink| sink.write_tenant(tenant, &[&item.event]));
            match written {
                Some(Ok(())) => {
                    routed_n += 1;
                    metrics.sink_events.with_label_values(&[&sink_name]).inc();
                    count(outcomes, item.job, |o| o.routed += 1);
                }
                Some(Err(e)) => dead.push(Dead {
                    item,
                    stage: sink_name,
                    filter_version: None,
                    reason: e.to_string(),
                }),
                None => dead.push(Dead {
                    item,
                    stage: UNROUTABLE.to_owned(),
                    filter_version: None,
                    reason: format!("unknown sink `{sink_name}`"),
                }),
            }
        }
        if !dead.is_empty() {
            let letters: Vec<DeadLetter<'_>> = dead
                .iter()
                .map(|dead| DeadLetter {
                    route: &self.spec.name,
                    tenant,
                    stage: &dead.stage,
                    filter_version: dead.filter_version,
                    reason: &dead.reason,
                    event: Some(&dead.item.event),
                    original: None,
                })
                .collect();
            let written = self
                .shared
                .sinks
                .get(&self.spec.dead_letter)
                .map(|sink| sink.write_dead_letters(&letters));
            match written {
                Some(Ok(())) => {
                    dead_n = dead.len() as u64;
                    metrics.dead_lettered(
                        &self.spec.dead_letter,
                        dead.iter().map(|dead| dead.stage.as_str()),
                    );
                    for Dead { item, .. } in &dead {
                        count(outcomes, item.job, |o| o.dead_lettered += 1);
                    }
                }
                other => {
                    let reason = match other {
                        Some(Err(e)) => e.to_string(),
                        _ => format!("dead-letter sink `{}` is missing", self.spec.dead_letter),
                    };
                    tracing::error!(route = %self.spec.name, "cannot write dead letters: {reason}");
                    for Dead { item, .. } in &dead {
                        if let Some(slot) = failures.get_mut(item.job) {
                            *slot = Some(reason.clone());
                        }
                    }
                }
            }
        }
        let route = &*self.spec.name;
        for (label, n) in [
            ("delivered", delivered),
            ("routed", routed_n),
            ("dropped", dropped.len() as u64),
            ("dead_lettered", dead_n),
        ] {
            if n > 0 {
                metrics
                    .route_events
                    .with_label_values(&[route, label])
                    .inc_by(n);
            }
        }
    }

    /// Calls `tick` on every live instance; emitted events run the rest of their chain.
    fn tick(&mut self) {
        let now = weir_core::util::now_ms();
        let keys: Vec<String> = self.instances.keys().cloned().collect();
        let tenant = self.tenant.clone();
        for filter in keys {
            let (emitted, version, version_label) = match self.instances.get_mut(&filter) {
                Some(f) => (f.instance.tick(now), f.version, f.version_label.clone()),
                None => continue,
            };
            let events = match emitted {
                Ok(events) if events.is_empty() => continue,
                Ok(events) => events,
                Err(e) => {
                    self.shared
                        .metrics
                        .filter_failures
                        .with_label_values(&[
                            &*self.spec.name,
                            filter.as_str(),
                            &*version_label,
                            tenant.as_str(),
                            e.kind(),
                        ])
                        .inc();
                    tracing::warn!(route = %self.spec.name, tenant, filter, version, "tick failed: {e}");
                    continue;
                }
            };
            let items: Vec<Item> = events
                .into_iter()
                .filter_map(|e| match weir_runtime::event_from_wit(e) {
                    Ok(mut event) => {
                        if self.spec.record_filters {
                            event.extensions.retain(|e| e.name != FILTERS_EXTENSION);
                            stamp_filter(&mut event, &format!("{filter}@{version}"));
                        }
                        Some(Item { event, job: NO_JOB })
                    }
                    Err(err) => {
                        tracing::warn!(route = %self.spec.name, tenant, filter, version, "tick emitted an invalid event: {err}");
                        None
                    }
                })
                .collect();
            let chain = self.chain(&tenant);
            let start = chain
                .iter()
                .position(|f| *f == filter)
                .map_or(chain.len(), |p| p + 1);
            let ctx = wit::Context {
                tenant: tenant.clone(),
                route: self.spec.name.to_string(),
                source_kind: "tick".to_owned(),
                principal: None,
            };
            let results = self.run_chain(&tenant, &ctx, &chain, start, items);
            self.deliver(&tenant, results, &mut [], &mut []);
        }
    }
}

fn same_caller(a: &Job, b: &Job) -> bool {
    a.source_kind == b.source_kind
        && match (&a.principal, &b.principal) {
            (None, None) => true,
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            _ => false,
        }
}

#[cfg(test)]
mod tests;
