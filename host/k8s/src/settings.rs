//! Settings of the Events API beyond its store: who callers are (client certificates and
//! a trusted front proxy's request headers), how scope is read, and the remote provider
//! that proxy mode (`EventsProxy`) forwards to.

use serde::Deserialize;
use std::path::PathBuf;

/// The feature gate that makes the Events API a proxy to a remote provider.
pub const EVENTS_PROXY_GATE: &str = "EventsProxy";

/// Feature gates weir knows.
pub const KNOWN_GATES: [&str; 1] = [EVENTS_PROXY_GATE];

pub use weir_core::auth::{AuthenticationConfig, RequestHeaderConfig};

/// Where a caller's tenancy scope comes from and where events carry it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeConfig {
    /// The caller's extra attribute naming its parent type (`Organization`, `Project`);
    /// callers without it are platform callers and see every event.
    #[serde(default = "default_parent_type")]
    pub parent_type_extra: String,
    /// The caller's extra attribute naming its parent.
    #[serde(default = "default_parent_name")]
    pub parent_name_extra: String,
    /// The event annotation holding the scope type (set by the `scope-inject` filter).
    #[serde(default = "default_type_annotation")]
    pub type_annotation: String,
    /// The event annotation holding the scope name.
    #[serde(default = "default_name_annotation")]
    pub name_annotation: String,
}

impl Default for ScopeConfig {
    fn default() -> Self {
        Self {
            parent_type_extra: default_parent_type(),
            parent_name_extra: default_parent_name(),
            type_annotation: default_type_annotation(),
            name_annotation: default_name_annotation(),
        }
    }
}

fn default_parent_type() -> String {
    "iam.miloapis.com/parent-type".into()
}

fn default_parent_name() -> String {
    "iam.miloapis.com/parent-name".into()
}

fn default_type_annotation() -> String {
    "platform.miloapis.com/scope.type".into()
}

fn default_name_annotation() -> String {
    "platform.miloapis.com/scope.name".into()
}

/// The remote Activity-style server every Events API request is forwarded to in proxy
/// mode, over HTTPS with a client certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Base URL (`https://activity.example:443`); request paths are appended as they are.
    pub url: String,
    /// CA bundle (PEM) the provider's server certificate must chain to.
    pub ca_file: PathBuf,
    /// Client certificate chain (PEM) presented to the provider.
    pub client_cert: PathBuf,
    /// The client certificate's private key (PEM).
    pub client_key: PathBuf,
    /// Timeout of a whole request in seconds, retries included (a watch may stream its own
    /// `timeoutSeconds` on top). Each attempt but the last may use half of what remains.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Retries of transient failures (network errors, timeouts, 5xx, 429; for creates and
    /// deletes only those the provider did not act on: unreachable, 429, 503).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The caller's extra attributes forwarded as `X-Remote-Extra-*` headers; must include
    /// the `scope` parent type and name extras (checked at load).
    #[serde(default = "default_forward_extras")]
    pub forward_extras: Vec<String>,
    /// Which paths the provider serves Events at: `core` (default) forwards each request
    /// to its own path (`/api/v1/...`, `/apis/events.k8s.io/v1/...`), as Milo's proxy does
    /// and as the current Activity server serves them; `activity` sends every request to
    /// `/apis/activity.miloapis.com/v1alpha1/...` (core/v1 objects), converting
    /// events.k8s.io/v1 bodies and answers — watch streams included — on the way.
    #[serde(default)]
    pub api: ProviderApi,
}

/// See [`ProviderConfig::api`].
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProviderApi {
    /// Each request to its own group and version.
    #[default]
    Core,
    /// Every request to `activity.miloapis.com/v1alpha1`.
    Activity,
}

fn default_timeout() -> u64 {
    30
}

fn default_retries() -> u32 {
    3
}

/// The extras the source system forwards by default.
pub fn default_forward_extras() -> Vec<String> {
    vec![
        "iam.miloapis.com/parent-type".into(),
        "iam.miloapis.com/parent-name".into(),
        "iam.miloapis.com/parent-api-group".into(),
    ]
}

/// A ClickHouse server holding the events instead of the embedded store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// The HTTP interface (`http://127.0.0.1:8123`).
    pub url: String,
    /// The database (must exist).
    #[serde(default = "default_database")]
    pub database: String,
    /// The table, created when missing.
    #[serde(default = "default_table")]
    pub table: String,
    /// The user (default `default`).
    #[serde(default = "default_user")]
    pub user: String,
    /// The environment variable holding the password (never written in the file).
    #[serde(default)]
    pub password_env: Option<String>,
    /// Timeout of one request, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

fn default_database() -> String {
    "default".into()
}

fn default_table() -> String {
    "k8s_events".into()
}

fn default_user() -> String {
    "default".into()
}

/// The Kubernetes-compatible Events API and its embedded store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsApiConfig {
    /// Serve `/api/v1/.../events`, `/apis/events.k8s.io/v1/...` and discovery.
    #[serde(default)]
    pub enabled: bool,
    /// Events unchanged for this many hours are deleted (default 720: 30 days).
    #[serde(default = "default_retention_hours")]
    pub retention_hours: u64,
    /// The most events kept; beyond it the least recently changed go (default 1,000,000).
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Recent changes kept for watches that resume from a resourceVersion (default 50,000).
    #[serde(default = "default_watch_history")]
    pub watch_history: usize,
    /// The route whose filter chain admits every create and update (e.g. `scope-inject`)
    /// before it is stored. Default: the route taking `from: [k8s]`, when there is one.
    #[serde(default)]
    pub route: Option<String>,
    /// Where callers' scopes and events' scope annotations are.
    #[serde(default)]
    pub scope: ScopeConfig,
    /// The remote provider that proxy mode forwards to.
    #[serde(default)]
    pub provider: Option<ProviderConfig>,
    /// Keep events in ClickHouse instead of the embedded store (retention drops whole
    /// days: `retention_hours` rounded up to days, counted from each event's creation).
    #[serde(default)]
    pub clickhouse: Option<ClickHouseConfig>,
    /// Which authenticated callers may do what. Without it every authenticated caller may
    /// do everything within its scope.
    #[serde(default)]
    pub authorization: Option<AuthorizationConfig>,
    /// kcp-style logical clusters: `/clusters/<workspace>/…` (embedded store only).
    #[serde(default)]
    pub workspaces: WorkspacesConfig,
}

/// kcp-style logical clusters on the embedded Events API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspacesConfig {
    /// Serve `/clusters/<workspace>/…`, each workspace its own event space.
    #[serde(default)]
    pub enabled: bool,
    /// The most workspaces (default 64); created on first use.
    #[serde(default = "default_max_workspaces")]
    pub max: usize,
}

impl Default for WorkspacesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max: default_max_workspaces(),
        }
    }
}

fn default_max_workspaces() -> usize {
    64
}

/// The authorization step between authentication and the request, as in the
/// apiserver's chain: the rules first, then the webhook; a request neither allows is
/// refused with 403.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationConfig {
    /// Rules that allow requests (nothing here denies: a request no rule allows goes on
    /// to the webhook, or is refused).
    #[serde(default)]
    pub rules: Vec<AccessRule>,
    /// A SubjectAccessReview webhook, as kube-apiserver's
    /// `--authorization-webhook-config-file`.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

/// Users and groups allowed verbs on resources in namespaces. `*` matches anything.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// User names (`system:anonymous` for anonymous callers).
    #[serde(default)]
    pub users: Vec<String>,
    /// Groups (`system:authenticated` holds every authenticated caller,
    /// `system:unauthenticated` anonymous ones).
    #[serde(default)]
    pub groups: Vec<String>,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verbs: Vec<String>,
    /// `events`, `eventqueries`, `eventfacetqueries` (default all).
    #[serde(default = "everything")]
    pub resources: Vec<String>,
    /// Namespaces (default all). Requests across all namespaces (a cluster-wide list or
    /// watch, a query) need `*`.
    #[serde(default = "everything")]
    pub namespaces: Vec<String>,
}

fn everything() -> Vec<String> {
    vec!["*".into()]
}

/// The verbs rules may name.
pub const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// The resources rules may name.
pub const RESOURCES: [&str; 3] = ["events", "eventqueries", "eventfacetqueries"];

/// A SubjectAccessReview (`authorization.k8s.io/v1`) webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A kubeconfig whose current context's cluster is the webhook (its `server` URL,
    /// CA) and whose user is weir's credential (client certificate or token).
    pub kubeconfig: PathBuf,
    /// How long one review may take, in seconds; a review that fails refuses the request.
    #[serde(default = "default_webhook_timeout")]
    pub timeout_seconds: u64,
    /// How long an allowed answer is reused, in seconds (kube-apiserver: 300).
    #[serde(default = "default_authorized_ttl")]
    pub authorized_ttl_seconds: u64,
    /// How long a refusal is reused, in seconds (kube-apiserver: 30).
    #[serde(default = "default_unauthorized_ttl")]
    pub unauthorized_ttl_seconds: u64,
}

impl WebhookConfig {
    /// The webhook `kubeconfig` names, with the default timeout and cache times.
    pub fn new(kubeconfig: PathBuf) -> Self {
        Self {
            kubeconfig,
            timeout_seconds: default_webhook_timeout(),
            authorized_ttl_seconds: default_authorized_ttl(),
            unauthorized_ttl_seconds: default_unauthorized_ttl(),
        }
    }
}

fn default_webhook_timeout() -> u64 {
    5
}

fn default_authorized_ttl() -> u64 {
    300
}

fn default_unauthorized_ttl() -> u64 {
    30
}

impl Default for EventsApiConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            retention_hours: default_retention_hours(),
            max_events: default_max_events(),
            watch_history: default_watch_history(),
            route: None,
            scope: ScopeConfig::default(),
            provider: None,
            clickhouse: None,
            authorization: None,
            workspaces: WorkspacesConfig::default(),
        }
    }
}

fn default_retention_hours() -> u64 {
    720
}

fn default_max_events() -> usize {
    1_000_000
}

fn default_watch_history() -> usize {
    50_000
}

impl EventsApiConfig {
    /// Every problem of these settings; `proxy` says whether proxy mode is on. Fields are
    /// relative to `events_api`.
    pub fn problems(&self, proxy: bool) -> Vec<weir_core::sink::ConfigProblem> {
        use weir_core::sink::ConfigProblem;
        let mut problems = Vec::new();
        if proxy {
            match &self.provider {
                None => problems.push(ConfigProblem::at(
                    "provider",
                    "EventsProxy=true needs events_api.provider (url, ca_file, client_cert, client_key) or --events-provider-url and friends",
                )),
                Some(provider) => {
                    if !provider.url.starts_with("https://") {
                        problems.push(ConfigProblem::at(
                            "provider.url",
                            format!("`{}`: the provider is reached over HTTPS with mutual TLS; use an https:// URL", provider.url),
                        ));
                    }
                    if provider.timeout_seconds == 0 {
                        problems.push(ConfigProblem::at(
                            "provider.timeout_seconds",
                            "must be at least 1",
                        ));
                    }
                    // The provider scopes callers by the extras it is sent: a caller
                    // forwarded without its parent type would be a platform caller there
                    // and see every tenant's events, so this is an error, not a warning.
                    let scope = &self.scope;
                    for (setting, key) in [
                        ("parent_type_extra", &scope.parent_type_extra),
                        ("parent_name_extra", &scope.parent_name_extra),
                    ] {
                        if !provider
                            .forward_extras
                            .iter()
                            .any(|f| f.eq_ignore_ascii_case(key))
                        {
                            problems.push(ConfigProblem::at(
                                "provider.forward_extras",
                                format!(
                                    "must include `{key}` (events_api.scope.{setting}): without it the provider cannot scope callers and would serve a scoped caller as a platform caller"
                                ),
                            ));
                        }
                    }
                }
            }
        }
        if self.workspaces.enabled && (self.clickhouse.is_some() || proxy) {
            problems.push(ConfigProblem::at(
                "workspaces.enabled",
                "workspaces are served from the embedded store only (not with clickhouse or in proxy mode)",
            ));
        }
        if let Some(authz) = &self.authorization {
            if authz.rules.is_empty() && authz.webhook.is_none() {
                problems.push(ConfigProblem::at(
                    "authorization",
                    "names neither rules nor a webhook, so it would refuse every request; remove it to let every authenticated caller in, or add rules",
                ));
            }
            for (i, rule) in authz.rules.iter().enumerate() {
                let at = |field: &str| format!("authorization.rules[{i}].{field}");
                if rule.users.is_empty() && rule.groups.is_empty() {
                    problems.push(ConfigProblem::at(
                        at("users"),
                        "a rule names the users or groups it allows (`*` for anyone)",
                    ));
                }
                for (field, values, known) in [
                    ("verbs", &rule.verbs, &VERBS[..]),
                    ("resources", &rule.resources, &RESOURCES[..]),
                ] {
                    if values.is_empty() {
                        problems.push(ConfigProblem::at(
                            at(field),
                            "is empty: the rule allows nothing",
                        ));
                    }
                    for v in values {
                        if v != "*" && !known.contains(&v.as_str()) {
                            problems.push(ConfigProblem::at(
                                at(field),
                                format!("`{v}` is not one of {} or `*`", known.join(", ")),
                            ));
                        }
                    }
                }
            }
            if let Some(webhook) = &authz.webhook {
                if webhook.timeout_seconds == 0 {
                    problems.push(ConfigProblem::at(
                        "authorization.webhook.timeout_seconds",
                        "must be at least 1",
                    ));
                }
            }
        }
        if let Some(ch) = &self.clickhouse {
            let ident_ok = |s: &str| {
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            };
            if !ident_ok(&ch.database) || !ident_ok(&ch.table) {
                problems.push(ConfigProblem::at(
                    "clickhouse",
                    "database and table must be plain identifiers (letters, digits, _)",
                ));
            }
            if !(ch.url.starts_with("http://") || ch.url.starts_with("https://")) {
                problems.push(ConfigProblem::at(
                    "clickhouse.url",
                    format!(
                        "`{}`: the ClickHouse HTTP interface, http:// or https://",
                        ch.url
                    ),
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        let config: EventsApiConfig = serde_norway::from_str(yaml).unwrap();
        config
            .problems(false)
            .into_iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect()
    }

    #[test]
    fn authorization_problems_name_their_field() {
        assert!(
            problems("authorization: { rules: [ { users: [pat], verbs: [get] } ] }").is_empty()
        );
        let found = problems("authorization: {}");
        assert!(
            found[0].starts_with("authorization: names neither rules nor a webhook"),
            "{found:?}"
        );
        let found = problems(
            "authorization: { rules: [ { verbs: [get] }, { users: ['*'], verbs: [read], resources: [pods] } ] }",
        );
        assert!(
            found[0].starts_with("authorization.rules[0].users: "),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("authorization.rules[1].verbs: `read` is not one of get, list"),
            "{found:?}"
        );
        assert!(
            found[2].starts_with("authorization.rules[1].resources: `pods`"),
            "{found:?}"
        );
        assert_eq!(found.len(), 3, "{found:?}");
        let found = problems("authorization: { webhook: { kubeconfig: k, timeout_seconds: 0 } }");
        assert_eq!(
            found,
            ["authorization.webhook.timeout_seconds: must be at least 1"]
        );
    }
}
