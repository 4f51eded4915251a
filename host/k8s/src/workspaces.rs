//! kcp-style logical clusters on the embedded Events API: `/clusters/<workspace>/…` serves
//! the whole API — discovery, core/v1, events.k8s.io/v1, Activity's group — over an
//! event space of that workspace's own (its own store file), so one weir can play "a kcp"
//! for the cluster syncer and a client pointed at `https://weir/clusters/root:org` sees
//! only that workspace. The same authentication, authorization and admission apply as on
//! the root paths. Workspaces are created on first use, at most `max_workspaces`.

use crate::admission::Admitter;
use crate::auth::Authenticator;
use crate::backend::Backend;
use crate::kubeclient::valid_workspace;
use crate::status::ApiError;
use crate::store::{EventStore, StoreError, StoreSettings};
use axum::extract::{Path, Request, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tower::ServiceExt as _;

/// What every workspace's API is built from.
pub struct Workspaces {
    /// Where workspace stores live (`<data_dir>/workspaces/<name>/events.redb`).
    dir: PathBuf,
    settings: StoreSettings,
    shutdown: tokio::sync::watch::Receiver<bool>,
    auth: Arc<Authenticator>,
    admitter: Arc<Admitter>,
    max: usize,
    /// Workspace → its API.
    open: Mutex<HashMap<String, axum::Router>>,
}

impl Workspaces {
    /// Workspaces under `dir`, each an embedded store with `settings`.
    pub fn new(
        dir: PathBuf,
        settings: StoreSettings,
        shutdown: tokio::sync::watch::Receiver<bool>,
        auth: Arc<Authenticator>,
        admitter: Arc<Admitter>,
        max: usize,
    ) -> Self {
        Self {
            dir,
            settings,
            shutdown,
            auth,
            admitter,
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The API of `workspace`, opened on first use.
    fn api(&self, workspace: &str) -> Result<axum::Router, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(api) = open.get(workspace) {
            return Ok(api.clone());
        }
        if open.len() >= self.max {
            return Err(ApiError::too_many_requests(
                format!(
                    "this server holds at most {} workspaces (events_api.workspaces.max)",
                    self.max
                ),
                60,
            ));
        }
        let path = self
            .dir
            .join(workspace.replace(':', "_"))
            .join("events.redb");
        let store = open_store(path, &self.settings).map_err(|e| {
            ApiError::internal(format!(
                "cannot open workspace `{workspace}`: {}",
                weir_core::util::error_chain(&e)
            ))
        })?;
        let api = crate::api::routes(
            Backend::Embedded(store),
            self.shutdown.clone(),
            self.auth.clone(),
            self.admitter.clone(),
        );
        open.insert(workspace.to_owned(), api.clone());
        Ok(api)
    }
}

/// Why a workspace's store could not be opened.
#[derive(Debug, thiserror::Error)]
enum WorkspaceError {
    #[error("cannot create its folder")]
    Dir(#[source] std::io::Error),
    #[error("cannot open its store")]
    Store(#[source] StoreError),
}

fn open_store(path: PathBuf, settings: &StoreSettings) -> Result<Arc<EventStore>, WorkspaceError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(WorkspaceError::Dir)?;
    }
    EventStore::open(&path, settings.clone()).map_err(WorkspaceError::Store)
}

/// The routes: `/clusters/<workspace>` and everything under it.
pub fn routes(workspaces: Arc<Workspaces>) -> axum::Router {
    axum::Router::new()
        .route("/clusters/{workspace}", axum::routing::any(in_workspace))
        .route(
            "/clusters/{workspace}/{*rest}",
            axum::routing::any(in_workspace),
        )
        .with_state(workspaces)
}

async fn in_workspace(
    State(workspaces): State<Arc<Workspaces>>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
) -> Response {
    let workspace = params.get("workspace").map(String::as_str).unwrap_or("");
    if !valid_workspace(workspace) {
        return ApiError::not_found(workspace).into_response();
    }
    // The request as the workspace's API sees it: the prefix gone.
    let (mut parts, body) = request.into_parts();
    let prefix_len = "/clusters/".len() + workspace.len();
    let rest = parts.uri.path().get(prefix_len..).unwrap_or("");
    let rest = if rest.is_empty() { "/" } else { rest };
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    parts.uri = match path_and_query.parse::<Uri>() {
        Ok(uri) => uri,
        Err(_) => return ApiError::bad_request("unusable path").into_response(),
    };
    // The outer route's matched parameters must not reach the inner routes; the caller's
    // TLS identity must.
    let peer = parts.extensions.remove::<weir_core::tls::PeerIdentity>();
    parts.extensions = axum::http::Extensions::new();
    if let Some(peer) = peer {
        parts.extensions.insert(peer);
    }
    // Who asks, and whether they may, is settled before a workspace is opened (or made):
    // an unauthenticated client must not use up `max` or leave stores behind.
    if let Err(e) = workspaces.auth.admit(&parts).await {
        return e.into_response();
    }
    // Opening a store reads and writes files: off the runtime's threads.
    let api = match tokio::task::block_in_place(|| workspaces.api(workspace)) {
        Ok(api) => api,
        Err(e) => return e.into_response(),
    };
    match api.oneshot(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
