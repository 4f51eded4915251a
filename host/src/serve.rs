//! `weir serve`: wires configuration, engine, sinks, routes and the HTTP listener together,
//! and takes them down gracefully (stop accepting, drain routes, flush sinks).

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::{Router, RouterError, TICK_INTERVAL};
use crate::registry::FilterRegistry;
use crate::runtime::{EngineOptions, FilterEngine, StateStore};
use crate::server::{serve, AppState};
use crate::sinks::{open_all, TailHub};
use crate::tenants::TenantDirectory;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory is unusable.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The wasm engine could not be set up.
    #[error(transparent)]
    Engine(#[from] crate::runtime::engine::EngineError),
    /// Routes, filters or sinks could not be started.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// The filter state store could not be opened.
    #[error("{0}")]
    State(String),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
}

fn data_err_owned(config: &Config) -> impl FnOnce(std::io::Error) -> ServeError + '_ {
    move |source| ServeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    }
}

/// Opens the filter registry and makes every filter file named in the configuration the
/// active version of its filter (a no-op when it already is).
fn open_registry(
    config: &Config,
    engine: Arc<FilterEngine>,
    metrics: &Arc<Metrics>,
) -> Result<Arc<FilterRegistry>, ServeError> {
    let registry = FilterRegistry::open(
        engine,
        &config.data_dir,
        config.admin.max_component_bytes,
        metrics.clone(),
    )
    .map_err(|e| RouterError::Filter {
        name: "*".into(),
        path: config.data_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    for (name, fc) in &config.filters {
        let Some(path) = &fc.path else { continue };
        let config_json = fc
            .config
            .as_ref()
            .map_or_else(|| "{}".to_owned(), |v| v.to_string());
        registry
            .seed(name, path, &config_json)
            .map_err(|e| RouterError::Filter {
                name: name.clone(),
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
    }
    Ok(Arc::new(registry))
}

/// Binds a listener and tells the address it got (port 0 picks a free one).
async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServeError> {
    let err = |source| ServeError::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}

/// A listener's TLS configuration and which CA each client certificate chains to.
type ListenerTls = (Arc<rustls::ServerConfig>, Arc<crate::tls::PeerTrust>);

/// The main listener's TLS configuration and client-certificate trust, when configured.
fn main_listener_tls(config: &Config) -> Result<Option<ListenerTls>, ServeError> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let tls_err = |e: crate::tls::TlsError| ServeError::State(format!("tls: {e}"));
    let proxy_ca = config
        .authentication
        .request_header
        .as_ref()
        .map(|rh| (rh.client_ca.as_path(), rh.allowed_names.clone()));
    let extra: Vec<&std::path::Path> = proxy_ca.iter().map(|(ca, _)| *ca).collect();
    let server = crate::tls::server_config(tls, &extra).map_err(tls_err)?;
    let trust = crate::tls::PeerTrust::new(tls.client_ca.as_deref(), proxy_ca).map_err(tls_err)?;
    Ok(Some((server, Arc::new(trust))))
}

/// The Events API's routes: embedded (store on disk) or, with `EventsProxy`, forwarding
/// to the provider; writes pass the admission route's filters either way.
async fn events_api(
    config: &Config,
    app_state: &Arc<AppState>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<axum::Router, ServeError> {
    use crate::k8s::{admission::Admitter, auth::Authenticator};
    let auth = Arc::new(Authenticator::new(
        config.anonymous_allowed(),
        config.authentication.request_header.clone(),
        config.events_api.scope.clone(),
    ));
    let fed: Vec<String> = config
        .routes
        .iter()
        .filter(|r| r.from.iter().any(|f| f == "k8s"))
        .map(|r| r.name.clone())
        .collect();
    let admission = config.events_admission_route().map(str::to_owned);
    if admission.is_none() && !config.anonymous_allowed() {
        tracing::warn!("callers are authenticated but no route admits Events API writes: scope annotations are stored as clients send them (add a route `from: [k8s]` with the scope-inject filter)");
    }
    let others = fed
        .iter()
        .filter(|r| Some(*r) != admission.as_ref())
        .cloned()
        .collect();
    let admitter = Arc::new(match fed.is_empty() {
        true => Admitter::none(),
        false => Admitter::new(Some(Arc::downgrade(app_state)), admission, others),
    });
    if config.events_proxy() {
        let provider = config.events_api.provider.as_ref().ok_or_else(|| {
            ServeError::State("EventsProxy=true needs events_api.provider".into())
        })?;
        let proxy = crate::k8s::proxy::EventsProxy::new(provider, auth, admitter, shutdown)
            .map_err(|e| ServeError::State(e.to_string()))?;
        tracing::info!(provider = %provider.url, "Events API in proxy mode (EventsProxy=true)");
        return Ok(crate::k8s::proxy::routes(Arc::new(proxy)));
    }
    let e = &config.events_api;
    let retention = std::time::Duration::from_secs(e.retention_hours.saturating_mul(3600));
    let store = match &e.clickhouse {
        Some(ch) => crate::k8s::backend::Backend::ClickHouse(
            crate::k8s::clickhouse::ClickHouseStore::open(ch, &e.scope, retention, e.watch_history)
                .await
                .map_err(|e| ServeError::State(e.to_string()))?,
        ),
        None => crate::k8s::backend::Backend::Embedded(
            crate::k8s::store::EventStore::open(
                &config.data_dir.join("events.redb"),
                crate::k8s::store::StoreSettings {
                    retention,
                    max_events: e.max_events,
                    watch_history: e.watch_history,
                },
            )
            .map_err(|e| ServeError::State(e.to_string()))?,
        ),
    };
    Ok(crate::k8s::api::routes(store, shutdown, auth, admitter))
}

/// Starts the consumers of every Kafka source; they stop reading when `shutdown` turns.
fn start_kafka_sources(
    config: &Config,
    app_state: &Arc<AppState>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, ServeError> {
    let mut tasks = Vec::new();
    for (name, source) in &config.kafka.sources {
        let cluster = source
            .cluster
            .as_ref()
            .or(config.kafka.cluster.as_ref())
            .ok_or_else(|| ServeError::State(format!("kafka source `{name}` has no cluster")))?;
        let dead_letter = app_state
            .sinks
            .get(&source.dead_letter)
            .cloned()
            .ok_or_else(|| {
                ServeError::State(format!(
                    "kafka source `{name}`: no sink `{}`",
                    source.dead_letter
                ))
            })?;
        tasks.extend(
            crate::kafka::source::start(
                name,
                source,
                cluster,
                app_state.clone(),
                dead_letter,
                shutdown.clone(),
            )
            .map_err(|e| ServeError::State(e.to_string()))?,
        );
    }
    Ok(tasks)
}

/// A started router.
pub struct Running {
    /// The address the HTTP listener is bound to.
    pub addr: SocketAddr,
    /// The admin API's own listener, when configured.
    pub admin_addr: Option<SocketAddr>,
    /// The gRPC (Toggle) source's listener, when configured.
    pub grpc_addr: Option<SocketAddr>,
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
    let tenants = Arc::new(
        TenantDirectory::open(&config, &config.data_dir)
            .map_err(|e| ServeError::State(e.to_string()))?,
    );
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
    let metrics = Arc::new(Metrics::new());
    let tail = TailHub::new();
    let sinks = open_all(
        &config.sinks,
        config.kafka.cluster.as_ref(),
        &config.data_dir,
        &tail,
        &metrics,
    )
    .map_err(RouterError::from)?;
    let open_sinks = sinks.clone();
    let state_path = config.data_dir.join("state.redb");
    let state = Arc::new(
        tokio::task::block_in_place(|| StateStore::open(&state_path, crate::runtime::now_ms()))
            .map_err(|e| ServeError::State(e.to_string()))?,
    );
    let started = std::time::Instant::now();
    let registry = tokio::task::block_in_place(|| open_registry(&config, engine, &metrics))?;
    let router = tokio::task::block_in_place(|| {
        Router::start(
            &config,
            registry.clone(),
            tenants.clone(),
            sinks.clone(),
            metrics.clone(),
            state,
        )
    })?;
    let tokens = crate::admin::Tokens::from_config(&config.admin, &config.data_dir)
        .map_err(data_err_owned(&config))?;
    tracing::info!(
        filters = config.filters.len(),
        routes = config.routes.len(),
        ms = started.elapsed().as_millis() as u64,
        "filters loaded"
    );
    let main_tls = main_listener_tls(&config)?;
    let (listener, addr) = bind(config.listen).await?;
    let app_state = Arc::new(AppState {
        router,
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
        sinks,
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let watches_end = shutdown_rx.clone();
    let shutdown_rx_kafka = shutdown_rx.clone();
    let shutdown_signal = move || {
        let mut rx = shutdown_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    // The admin API on its own listener (TLS with client certificates when configured).
    let (admin_addr, admin_task) = match config.admin.listen {
        Some(admin_listen) => {
            let (admin_listener, admin_addr) = bind(admin_listen).await?;
            let app = crate::server::admin_app(app_state.clone());
            let done = shutdown_signal();
            let task = match &config.admin.tls {
                Some(tls) => {
                    let tls = crate::tls::server_config(tls, &[])
                        .map_err(|e| ServeError::State(e.to_string()))?;
                    tokio::spawn(crate::tls::serve_tls(admin_listener, tls, app, done, None))
                }
                None => tokio::spawn(serve(admin_listener, app, done)),
            };
            (Some(admin_addr), Some(task))
        }
        None => (None, None),
    };
    // The gRPC (Toggle) source.
    let (grpc_addr, grpc_task) = match config.grpc.listen {
        Some(grpc_listen) => {
            let (grpc_listener, grpc_addr) = bind(grpc_listen).await?;
            let service = crate::toggle::pb::toggle_events_server::ToggleEventsServer::new(
                crate::toggle::ingest::GrpcIngest::new(
                    app_state.clone(),
                    config.grpc.type_prefix.clone(),
                    config.grpc.max_batch_events,
                ),
            )
            .max_decoding_message_size(config.ingest.max_request_bytes);
            let done = shutdown_signal();
            let task = tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
                        done,
                    )
                    .await
                    .map_err(std::io::Error::other)
            });
            (Some(grpc_addr), Some(task))
        }
        None => (None, None),
    };
    let kafka_tasks = start_kafka_sources(&config, &app_state, shutdown_rx_kafka)?;
    let mut main_app = crate::server::app(app_state.clone(), config.admin.listen.is_none());
    if config.events_api_served() {
        main_app = main_app.merge(events_api(&config, &app_state, watches_end).await?);
    }
    let ticker_state = app_state.clone();
    let ticker = tokio::spawn(async move {
        let mut interval = tokio::time::interval(TICK_INTERVAL);
        loop {
            interval.tick().await;
            ticker_state.router.tick();
        }
    });
    let serving = app_state.clone();
    let main_done = shutdown_signal();
    let task = tokio::spawn(async move {
        serving.ready.store(true, Ordering::Relaxed);
        let shutdown_state = serving.clone();
        drop(serving);
        tokio::spawn(async move {
            let _ = stopped.await;
            shutdown_state.ready.store(false, Ordering::Relaxed);
            tracing::info!("shutting down: no new requests, draining routes");
            let _ = shutdown_tx.send(true);
        });
        let result = match main_tls {
            Some((tls, trust)) => {
                crate::tls::serve_tls(listener, tls, main_app, main_done, Some(trust)).await
            }
            None => serve(listener, main_app, main_done).await,
        };
        for task in [admin_task, grpc_task].into_iter().flatten() {
            let _ = task.await;
        }
        // Kafka consumers finish their batches in flight and commit before the routes go.
        for task in kafka_tasks {
            let _ = task.await;
        }
        ticker.abort();
        let _ = ticker.await;
        // Every handler has finished: this is the last reference, so the routes can be
        // drained and joined.
        match Arc::try_unwrap(app_state) {
            Ok(state) => {
                let _ = tokio::task::spawn_blocking(move || state.router.shutdown()).await;
            }
            Err(_) => {
                tracing::warn!("routes still referenced at shutdown; they stop when released")
            }
        }
        // Routes are drained: sinks deliver or persist what they hold (the Toggle sink
        // flushes its buffer to Toggle or to disk).
        let _ = tokio::task::spawn_blocking(move || {
            for sink in open_sinks.values() {
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
        stop,
        task,
    })
}
