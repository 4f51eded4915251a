//! `weir serve`: wires configuration, engine, sinks, routes, sources and the HTTP listener
//! together, and takes them down gracefully (stop accepting, drain routes, flush sinks).
//! Wiring only: each connector builds itself from its configuration.

use crate::config::Config;
use crate::state::AppState;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weir_core::listener::Tls;
use weir_core::metrics::MetricsRegistry;
use weir_core::resilience::Resilient;
use weir_core::sink::{Sink, SinkContext, SinkError};
use weir_core::tail::TailHub;
use weir_router::source::{SourceContext, SourceError};
use weir_router::{Metrics, Router, RouterError, TenantDirectory, TICK_INTERVAL};
use weir_runtime::registry::FilterRegistry;
use weir_runtime::{EngineError, EngineOptions, FilterEngine, StateStore};

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory is unusable.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The wasm engine could not be set up.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The filter store could not be opened, or a configured filter could not be claimed
    /// or stored.
    #[error("filter `{name}` ({path})")]
    Registry {
        /// The filter (`*`: the whole store).
        name: String,
        /// Its file, or the data directory.
        path: String,
        /// What failed.
        #[source]
        source: weir_runtime::registry::RegistryError,
    },
    /// Routes or filters could not be started.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// A sink could not be opened.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A source could not be started.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The stored tenants could not be read.
    #[error(transparent)]
    Tenants(#[from] weir_router::TenantStoreError),
    /// The filter state store could not be opened.
    #[error(transparent)]
    State(#[from] weir_runtime::StateError),
    /// A listener's TLS settings are unusable.
    #[error("tls: {0}")]
    Tls(#[source] weir_core::tls::TlsError),
    /// Kafka topics could not be created.
    #[cfg(feature = "kafka")]
    #[error(transparent)]
    Topics(#[from] weir_kafka::ProvisionError),
    /// The Events API could not start.
    #[cfg(feature = "k8s")]
    #[error(transparent)]
    EventsApi(#[from] weir_k8s::EventsApiError),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// Opens the filter registry and makes every filter file named in the configuration the
/// active version of its filter (a no-op when it already is).
fn open_registry(
    config: &Config,
    engine: Arc<FilterEngine>,
    metrics: &Metrics,
) -> Result<Arc<FilterRegistry>, ServeError> {
    let registry = FilterRegistry::open(
        engine,
        &config.data_dir,
        config.admin.max_component_bytes,
        metrics.filters.clone(),
    )
    .map_err(|source| ServeError::Registry {
        name: "*".into(),
        path: config.data_dir.display().to_string(),
        source,
    })?;
    // Every name the configuration gives belongs to its owner before any upload can
    // take it (the `weir filter push` workflow names a filter without a path).
    for (name, fc) in &config.filters {
        registry
            .claim(name, fc.owner.as_deref())
            .map_err(|source| ServeError::Registry {
                name: name.clone(),
                path: config.data_dir.display().to_string(),
                source,
            })?;
    }
    for (name, fc) in &config.filters {
        let Some(path) = &fc.path else { continue };
        let config_json = fc
            .config
            .as_ref()
            .map_or_else(|| "{}".to_owned(), |v| v.to_string());
        registry
            .seed(name, path, &config_json)
            .map_err(|source| ServeError::Registry {
                name: name.clone(),
                path: path.display().to_string(),
                source,
            })?;
    }
    Ok(Arc::new(registry))
}

/// Opens every configured sink.
fn open_sinks(
    config: &Config,
    metrics: &MetricsRegistry,
    tail: &TailHub,
) -> Result<BTreeMap<String, Arc<dyn Sink>>, SinkError> {
    config
        .sinks
        .iter()
        .map(|(name, sink)| {
            let cx = SinkContext {
                name,
                data_dir: &config.data_dir,
                metrics,
                tail,
            };
            let builder = sink.builder();
            let built = Resilient::wrap(name, builder.build(&cx)?, builder.resilience(), metrics);
            Ok((name.clone(), built))
        })
        .collect()
}

/// Binds a listener and tells the address it got (port 0 picks a free one).
async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServeError> {
    let err = |source| ServeError::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}

/// A listener's TLS configuration and which CA each client certificate chains to.
type ListenerTls = (Arc<rustls::ServerConfig>, Arc<weir_core::tls::PeerTrust>);

/// The main listener's TLS configuration and client-certificate trust, when configured.
fn main_listener_tls(config: &Config) -> Result<Option<ListenerTls>, ServeError> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let proxy_ca = config
        .authentication
        .request_header
        .as_ref()
        .map(|rh| (rh.client_ca.as_path(), rh.allowed_names.clone()));
    let extra: Vec<&std::path::Path> = proxy_ca.iter().map(|(ca, _)| *ca).collect();
    let server = weir_core::tls::server_config(tls, &extra).map_err(ServeError::Tls)?;
    let trust = weir_core::tls::PeerTrust::new(tls.client_ca.as_deref(), proxy_ca)
        .map_err(ServeError::Tls)?;
    Ok(Some((server, Arc::new(trust))))
}

/// The Events API's routes, when it is served.
#[cfg(feature = "k8s")]
async fn events_api(
    config: &Config,
    router: &Arc<Router>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    health: &weir_core::health::HealthChecks,
) -> Result<Option<axum::Router>, ServeError> {
    if !config.events_api_served() {
        return Ok(None);
    }
    let setup = weir_k8s::EventsApiSetup {
        config: &config.events_api,
        proxy: config.events_proxy(),
        anonymous_allowed: config.anonymous_allowed(),
        request_header: config.authentication.request_header.clone(),
        fed_routes: config
            .routes
            .iter()
            .filter(|r| r.from.iter().any(|f| f == "k8s"))
            .map(|r| r.name.clone())
            .collect(),
        admission_route: config.events_admission_route().map(str::to_owned),
        data_dir: &config.data_dir,
        health,
    };
    let routes = weir_k8s::events_api(setup, Arc::downgrade(router), shutdown).await?;
    Ok(Some(routes))
}

/// The router's own checks for `/readyz?verbose`: each route (critical: every filter of
/// its chains has an active version) and each sink (informational: its circuit is
/// closed; an open circuit sends events to dead letters, the router still serves).
fn register_checks(
    health: &weir_core::health::HealthChecks,
    config: &Config,
    state: &Arc<AppState>,
) {
    for route in &config.routes {
        let state = Arc::downgrade(state);
        let name = route.name.clone();
        health.register(
            format!("route/{}", route.name),
            true,
            Arc::new(move || {
                let Some(state) = state.upgrade() else {
                    return Err("stopped".to_owned());
                };
                let Some(route) = state.routes.iter().find(|r| r.name == name) else {
                    return Err("not configured".to_owned());
                };
                let mut chains = vec![route.enforced.around(&route.filters)];
                for settings in state.tenants.all().values() {
                    if let Some(own) = settings.routes.get(&name) {
                        chains.push(route.enforced.around(own));
                    }
                }
                let mut missing: Vec<&String> = chains
                    .iter()
                    .flatten()
                    .filter(|f| state.registry.active(f).is_none())
                    .collect();
                missing.sort();
                missing.dedup();
                match missing.is_empty() {
                    true => Ok(()),
                    false => Err(format!("filters without an active version: {missing:?}")),
                }
            }),
        );
    }
    for (name, sink) in &state.sinks {
        if sink.circuit().is_none() {
            continue;
        }
        let sink = Arc::downgrade(sink);
        health.register(
            format!("sink/{name}"),
            false,
            Arc::new(move || {
                let state = sink.upgrade().and_then(|s| s.circuit().map(|c| c.state()));
                match state {
                    Some(weir_core::breaker::CircuitState::Closed) => Ok(()),
                    Some(other) => Err(format!(
                        "circuit {}: writes go to the dead-letter sink",
                        other.name()
                    )),
                    None => Err("the sink is stopped".to_owned()),
                }
            }),
        );
    }
}

/// Starts the sources that run on their own (the gRPC listener, Kafka consumers); they
/// stop when `cx.shutdown` turns.
async fn start_sources(
    config: &Config,
    cx: &SourceContext,
) -> Result<(Vec<JoinHandle<()>>, Option<SocketAddr>), ServeError> {
    #[cfg(feature = "toggle")]
    #[allow(unused_mut)]
    let (mut tasks, grpc_addr) = {
        use weir_router::source::StartSource;
        let grpc = config.grpc.start("grpc", cx.clone()).await?;
        (grpc.tasks, grpc.addr)
    };
    #[cfg(not(feature = "toggle"))]
    #[allow(unused_mut)]
    let (mut tasks, grpc_addr) = (Vec::new(), None);
    #[cfg(feature = "kafka")]
    if config.kafka.topics.auto_create {
        tasks.extend(provision_topics(config, cx).await?);
    }
    #[cfg(feature = "kafka")]
    for (name, source) in &config.kafka.sources {
        use weir_router::source::StartSource;
        tasks.extend(source.start(name, cx.clone()).await?.tasks);
    }
    #[cfg(feature = "k8s")]
    {
        use weir_router::source::StartSource;
        tasks.extend(config.k8s_watch.start("k8s_watch", cx.clone()).await?.tasks);
    }
    let _ = (config, cx);
    Ok((tasks, grpc_addr))
}

/// Creates the missing Kafka topics before the sources start. A topic the brokers refuse
/// (e.g. more replicas than brokers) stops the start with their reason; a cluster that
/// does not answer yet is retried in the background (with backoff, until shutdown), so
/// weir starts while Kafka is down and the topics appear when it is back.
#[cfg(feature = "kafka")]
async fn provision_topics(
    config: &Config,
    cx: &SourceContext,
) -> Result<Vec<JoinHandle<()>>, ServeError> {
    let settings = config.kafka.topics.clone();
    let mut retrying = Vec::new();
    for (cluster, topics) in config.kafka_topics() {
        match weir_kafka::provision(&cluster, &topics, &settings).await {
            Ok(created) => {
                if !created.is_empty() {
                    tracing::info!(
                        ?created,
                        partitions = settings.default_partitions,
                        replication = settings.replication_factor,
                        "created Kafka topics"
                    );
                }
            }
            Err(weir_kafka::ProvisionError::Admin(e)) => {
                tracing::warn!(
                    ?topics,
                    "cannot create Kafka topics yet, retrying in the background: {e}"
                );
                let (settings, mut stopped) = (settings.clone(), cx.shutdown.clone());
                retrying.push(tokio::spawn(async move {
                    let mut attempt = 0u32;
                    loop {
                        attempt = attempt.saturating_add(1);
                        let pause = weir_core::util::backoff(
                            attempt,
                            std::time::Duration::from_secs(1),
                            std::time::Duration::from_secs(60),
                        );
                        tokio::select! {
                            _ = stopped.changed() => return,
                            () = tokio::time::sleep(pause) => {}
                        }
                        match weir_kafka::provision(&cluster, &topics, &settings).await {
                            Ok(created) => {
                                tracing::info!(?created, "created Kafka topics");
                                return;
                            }
                            Err(e) => {
                                tracing::warn!(?topics, attempt, "cannot create Kafka topics: {e}")
                            }
                        }
                    }
                }));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(retrying)
}

/// A started router.
pub struct Running {
    /// The address the HTTP listener is bound to.
    pub addr: SocketAddr,
    /// The admin API's own listener, when configured.
    pub admin_addr: Option<SocketAddr>,
    /// The gRPC (Toggle) source's listener, when configured.
    pub grpc_addr: Option<SocketAddr>,
    /// The file holding the admin token generated because none was configured.
    pub admin_token_file: Option<std::path::PathBuf>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Shuts down gracefully and waits until every route has drained.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop.send(());
        self.task.await.map_err(std::io::Error::other)?
    }

    /// A handle that triggers the graceful shutdown.
    pub fn into_parts(self) -> (oneshot::Sender<()>, JoinHandle<std::io::Result<()>>) {
        (self.stop, self.task)
    }
}

/// Starts everything the configuration describes.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    let data_err = |source| ServeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(data_err)?;
    let tenants = Arc::new(TenantDirectory::open(
        &config.tenants,
        &config.routes,
        &config.data_dir,
    )?);
    // The pool's memory slots must fit the largest tenant limit, including limits raised
    // later through the admin API (up to this size).
    let max_memory = tenants
        .all()
        .values()
        .map(|t| t.limits.memory_mb)
        .max()
        .unwrap_or(64)
        .max(256);
    let engine = Arc::new(FilterEngine::new(EngineOptions {
        cache_dir: Some(config.data_dir.join("cache")),
        max_memory_bytes: usize::try_from(max_memory << 20).unwrap_or(usize::MAX),
        max_instances: config.engine.max_instances,
        ..EngineOptions::default()
    })?);
    let registry_of_metrics = Arc::new(MetricsRegistry::with_event_types(
        config.metrics.event_types.iter().cloned(),
    ));
    let metrics = Arc::new(Metrics::new(registry_of_metrics.clone()));
    let tail_dropped = registry_of_metrics
        .counter(
            "weir_tail_readers_dropped_total",
            "Readers of GET /v1/tail dropped for falling more than 8 MiB behind.",
            &[],
        )
        .with_label_values(&[] as &[&str]);
    let tail = TailHub::new(weir_core::tail::DEFAULT_READER_BYTES, move |n| {
        tail_dropped.inc_by(n)
    });
    let sinks = open_sinks(&config, &registry_of_metrics, &tail)?;
    let state_path = config.data_dir.join("state.redb");
    let state = Arc::new(tokio::task::block_in_place(|| {
        StateStore::open(&state_path, weir_core::util::now_ms())
    })?);
    let started = std::time::Instant::now();
    let registry = tokio::task::block_in_place(|| open_registry(&config, engine, &metrics))?;
    let filter_files: BTreeMap<String, std::path::PathBuf> = config
        .filters
        .iter()
        .filter_map(|(name, f)| Some((name.clone(), f.path.clone()?)))
        .collect();
    let router = Arc::new(tokio::task::block_in_place(|| {
        Router::start(
            &config.routes,
            &config.tenancy,
            &filter_files,
            registry.clone(),
            tenants.clone(),
            sinks.clone(),
            metrics.clone(),
            state,
        )
    })?);
    let tokens =
        crate::tokens::Tokens::from_config(&config.admin, &config.data_dir).map_err(data_err)?;
    tracing::info!(
        filters = config.filters.len(),
        routes = config.routes.len(),
        ms = started.elapsed().as_millis() as u64,
        "filters loaded"
    );
    let main_tls = main_listener_tls(&config)?;
    let (listener, addr) = bind(config.listen).await?;
    let health = weir_core::health::HealthChecks::default();
    let app_state = Arc::new(AppState {
        router: router.clone(),
        registry,
        tenants,
        tokens,
        routes: config.routes.clone(),
        max_memory_mb: max_memory,
        max_component_bytes: config.admin.max_component_bytes,
        metrics,
        tail,
        tenant_header: config.tenancy.header.clone(),
        max_event_bytes: config.ingest.max_event_bytes,
        max_request_bytes: config.ingest.max_request_bytes,
        ready: Default::default(),
        sinks: sinks.clone(),
        health: health.clone(),
        anonymous_allowed: config.anonymous_allowed(),
        started,
        history: Default::default(),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let source_cx = SourceContext {
        router: router.clone(),
        shutdown: shutdown_rx.clone(),
        metrics: registry_of_metrics,
        data_dir: config.data_dir.clone(),
        max_event_bytes: config.ingest.max_event_bytes,
        max_request_bytes: config.ingest.max_request_bytes,
        dead_letter_sinks: sinks
            .iter()
            .filter(|(name, _)| config.sinks[*name].builder().capabilities().dead_letters)
            .map(|(name, sink)| (name.clone(), sink.clone()))
            .collect(),
        health: health.clone(),
        connections: config.connections,
    };
    // The admin API on its own listener (TLS with client certificates when configured).
    let (admin_addr, admin_task) = match config.admin.listen {
        Some(admin_listen) => {
            let (admin_listener, admin_addr) = bind(admin_listen).await?;
            let app = crate::admin::routes()
                .route("/healthz", axum::routing::get(|| async { "ok\n" }))
                .with_state(app_state.clone());
            let done = source_cx.stopped();
            let tls = match &config.admin.tls {
                Some(tls) => Some(Tls {
                    config: weir_core::tls::server_config(tls, &[]).map_err(ServeError::Tls)?,
                    trust: None,
                }),
                None => None,
            };
            let task = tokio::spawn(weir_core::listener::serve(
                admin_listener,
                tls,
                app,
                done,
                config.connections,
            ));
            (Some(admin_addr), Some(task))
        }
        None => (None, None),
    };
    let admin_token_file = app_state
        .tokens
        .generated_file()
        .map(std::path::Path::to_path_buf);
    register_checks(&health, &config, &app_state);
    let (source_tasks, grpc_addr) = start_sources(&config, &source_cx).await?;
    let mut main_routes = crate::server::routes();
    if config.admin.listen.is_none() {
        main_routes = main_routes.merge(crate::admin::routes());
    }
    #[allow(unused_mut)]
    let mut main_app = main_routes.with_state(app_state.clone());
    #[cfg(feature = "k8s")]
    if let Some(api) = events_api(&config, &router, shutdown_rx.clone(), &health).await? {
        main_app = main_app.merge(api);
    }
    let ticker_router = router.clone();
    let ticker = tokio::spawn(async move {
        let mut interval = tokio::time::interval(TICK_INTERVAL);
        loop {
            interval.tick().await;
            ticker_router.tick();
        }
    });
    let sampled = app_state.clone();
    let sampler = tokio::spawn(async move {
        let mut interval = tokio::time::interval(crate::throughput::HISTORY_INTERVAL);
        loop {
            interval.tick().await;
            sampled.history.sample(sampled.metrics.registry());
        }
    });
    let main_done = source_cx.stopped();
    let connections = config.connections;
    drop(source_cx);
    let task = tokio::spawn(async move {
        app_state.ready.store(true, Ordering::Relaxed);
        let shutdown_state = app_state.clone();
        tokio::spawn(async move {
            let _ = stopped.await;
            shutdown_state.ready.store(false, Ordering::Relaxed);
            // Open tails would hold the listener's graceful shutdown forever.
            shutdown_state.tail.close();
            tracing::info!("shutting down: no new requests, draining routes");
            let _ = shutdown_tx.send(true);
        });
        let result = weir_core::listener::serve(
            listener,
            main_tls.map(|(config, trust)| Tls {
                config,
                trust: Some(trust),
            }),
            main_app,
            main_done,
            connections,
        )
        .await;
        if let Some(task) = admin_task {
            let _ = task.await;
        }
        // Sources finish their batches in flight (Kafka consumers commit) before the
        // routes go.
        for task in source_tasks {
            let _ = task.await;
        }
        ticker.abort();
        let _ = ticker.await;
        sampler.abort();
        let _ = sampler.await;
        // Every handler and source has finished: drain and join the routes.
        let draining = router.clone();
        let _ = tokio::task::spawn_blocking(move || draining.shutdown()).await;
        // Routes are drained: sinks deliver or persist what they hold (the Toggle sink
        // flushes its buffer to Toggle or to disk).
        let _ = tokio::task::spawn_blocking(move || {
            for sink in sinks.values() {
                sink.close();
            }
        })
        .await;
        tracing::info!("stopped");
        result
    });
    tracing::info!(%addr, admin = ?admin_addr, "weir is serving");
    Ok(Running {
        addr,
        admin_addr,
        grpc_addr,
        admin_token_file,
        stop,
        task,
    })
}
