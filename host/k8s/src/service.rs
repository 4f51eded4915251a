//! The Events API as a service on the main HTTP listener: embedded (the store on disk or
//! in ClickHouse) or, with `EventsProxy`, forwarding to the provider. Writes pass the
//! admission route's filters either way.

use crate::admission::Admitter;
use crate::auth::Authenticator;
use crate::authz::Authorizer;
use crate::backend::Backend;
use crate::settings::{EventsApiConfig, RequestHeaderConfig};
use std::path::Path;
use std::sync::{Arc, Weak};
use weir_router::Router;

/// What the Events API is served from.
pub struct EventsApiSetup<'a> {
    /// The Events API's own settings.
    pub config: &'a EventsApiConfig,
    /// Proxy mode (`EventsProxy=true`): forward every request to `config.provider`.
    pub proxy: bool,
    /// Whether callers without credentials are served (as `system:anonymous`).
    pub anonymous_allowed: bool,
    /// The trusted front proxy's headers, when configured.
    pub request_header: Option<RequestHeaderConfig>,
    /// The routes fed by `k8s`.
    pub fed_routes: Vec<String>,
    /// The route whose filters admit writes (see `events_api.route`).
    pub admission_route: Option<String>,
    /// The router's data directory (the embedded store is `events.redb` in it).
    pub data_dir: &'a Path,
    /// Where the store's or the provider's health check goes (`/readyz?verbose`).
    pub health: &'a weir_core::health::HealthChecks,
}

/// Why the Events API could not start.
#[derive(Debug, thiserror::Error)]
pub enum EventsApiError {
    /// Proxy mode without a provider.
    #[error("EventsProxy=true needs events_api.provider")]
    NoProvider,
    /// The proxy's client could not be built.
    #[error("Events API proxy: {0}")]
    Proxy(#[source] crate::proxy::ProxyError),
    /// The authorization webhook's kubeconfig is unusable.
    #[error("Events API authorization: {0}")]
    Authorization(#[source] crate::authz::AuthzError),
    /// The store could not be opened.
    #[error("Events API store: {0}")]
    Store(#[source] crate::store::StoreError),
}

/// The Events API's HTTP routes, to merge into the main listener's application.
pub async fn events_api(
    setup: EventsApiSetup<'_>,
    router: Weak<Router>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<axum::Router, EventsApiError> {
    let config = setup.config;
    let authorizer = Authorizer::new(config.authorization.as_ref())
        .await
        .map_err(EventsApiError::Authorization)?;
    let auth = Arc::new(
        Authenticator::new(
            setup.anonymous_allowed,
            setup.request_header.clone(),
            config.scope.clone(),
        )
        .with_authorizer(authorizer),
    );
    if setup.admission_route.is_none() && !setup.anonymous_allowed {
        tracing::warn!("callers are authenticated but no route admits Events API writes: scope annotations are stored as clients send them (add a route `from: [k8s]` with the scope-inject filter)");
    }
    let others = setup
        .fed_routes
        .iter()
        .filter(|r| Some(*r) != setup.admission_route.as_ref())
        .cloned()
        .collect();
    let admitter = Arc::new(match setup.fed_routes.is_empty() {
        true => Admitter::none(),
        false => Admitter::new(Some(router), setup.admission_route.clone(), others),
    });
    if setup.proxy {
        let provider = config.provider.as_ref().ok_or(EventsApiError::NoProvider)?;
        // Informational: the rest of the router's traffic does not need the provider.
        let peer = Arc::new(weir_core::health::PeerHealth::default());
        setup
            .health
            .register("events-api/provider", false, peer.check());
        let proxy = crate::proxy::EventsProxy::new(provider, auth, admitter, shutdown, peer)
            .map_err(EventsApiError::Proxy)?;
        tracing::info!(provider = %provider.url, "Events API in proxy mode (EventsProxy=true)");
        return Ok(crate::proxy::routes(Arc::new(proxy)));
    }
    let retention = std::time::Duration::from_secs(config.retention_hours.saturating_mul(3600));
    let settings = crate::store::StoreSettings {
        retention,
        max_events: config.max_events,
        watch_history: config.watch_history,
    };
    let store = match &config.clickhouse {
        Some(ch) => Backend::ClickHouse(
            crate::clickhouse::ClickHouseStore::open(
                ch,
                &config.scope,
                retention,
                config.watch_history,
                {
                    let peer = Arc::new(weir_core::health::PeerHealth::default());
                    setup
                        .health
                        .register("events-api/clickhouse", false, peer.check());
                    peer
                },
            )
            .await
            .map_err(EventsApiError::Store)?,
        ),
        None => Backend::Embedded(
            crate::store::EventStore::open(&setup.data_dir.join("events.redb"), settings.clone())
                .map_err(EventsApiError::Store)?,
        ),
    };
    let mut routes = crate::api::routes(store, shutdown.clone(), auth.clone(), admitter.clone());
    if config.workspaces.enabled {
        let workspaces = crate::workspaces::Workspaces::new(
            setup.data_dir.join("workspaces"),
            settings,
            shutdown,
            auth,
            admitter,
            config.workspaces.max,
        );
        routes = routes.merge(crate::workspaces::routes(Arc::new(workspaces)));
    }
    Ok(routes)
}
