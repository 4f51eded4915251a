//! What routes and tenants are configured as: the router's part of the configuration
//! file. The binary's configuration embeds these types; the router is built from them.

use serde::Deserialize;
use std::collections::BTreeMap;
use weir_runtime::Limits;

/// How an event's tenant is told, in order: a source mapping, the `tenant` extension, a
/// request header; else `default`. Names that are not configured tenants are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenancyConfig {
    /// CloudEvents `source` prefixes mapped to tenants (first match wins; wins over the
    /// extension, so a producer cannot claim another tenant by setting it).
    #[serde(default)]
    pub sources: Vec<SourceMapping>,
    /// An HTTP request header naming the tenant of every event in the request, used when
    /// no mapping and no `tenant` extension decide.
    #[serde(default)]
    pub header: Option<String>,
    /// Producer credentials, each bound to one tenant. A producer presenting one sends
    /// only that tenant's events (an event naming another is refused with 403), and a
    /// tenant that has one takes events only from its own producers and the platform.
    /// Any credential here makes the listeners refuse anonymous producers unless
    /// `authentication.anonymous` (HTTP) or `grpc.anonymous` says otherwise.
    #[serde(default)]
    pub producers: Vec<ProducerCredential>,
}

/// A credential speaking for one tenant: exactly one of `sha256` (a bearer token, sent as
/// `Authorization: Bearer` over HTTP or `authorization` metadata over gRPC), `user` (a
/// client certificate's CN on the HTTP listener, a Kubernetes user on the Events API) or
/// `group` (a certificate's O, a Kubernetes group).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerCredential {
    /// A name for logs.
    pub name: String,
    /// The tenant it speaks for.
    pub tenant: String,
    /// Hex SHA-256 of the bearer token (`printf %s "$TOKEN" | sha256sum`).
    #[serde(default)]
    pub sha256: Option<String>,
    /// A user name.
    #[serde(default)]
    pub user: Option<String>,
    /// A group.
    #[serde(default)]
    pub group: Option<String>,
}

/// One source-prefix mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceMapping {
    /// The prefix of `source`.
    pub prefix: String,
    /// The tenant.
    pub tenant: String,
}

/// A tenant.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Per-call limits for this tenant's filters.
    #[serde(default)]
    pub limits: Limits,
}

/// What happens to a batch whose filter failed (trap, timeout, memory, bad output), and
/// to events a filter answered with an error verdict.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Send them to the route's dead-letter sink with the reason (default).
    #[default]
    DeadLetter,
    /// Let them continue as if the filter had kept them.
    Pass,
    /// Drop them (counted).
    Drop,
}

/// A route: which sources feed it, which filters run, where events go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The route's name (metrics, logs, filter context).
    pub name: String,
    /// Source kinds feeding the route (`http`, `grpc`, `k8s`: events written through the
    /// Kubernetes Events API, after they are stored).
    #[serde(default = "default_from")]
    pub from: Vec<String>,
    /// Conditions an event must meet to enter the route (Knative trigger filter dialects,
    /// ANDed; evaluated natively before any filter runs). Empty: every event.
    #[serde(default)]
    pub when: Vec<weir_core::cesql::Dialect>,
    /// The default filter chain, run in order.
    #[serde(default)]
    pub filters: Vec<String>,
    /// Per-tenant chains replacing the default chain for that tenant.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantRoute>,
    /// Filters run for every tenant around its chain (the default chain or its own),
    /// which no tenant's chain replaces: the platform's policy (e.g. `redact`).
    #[serde(default)]
    pub enforced: EnforcedFilters,
    /// Sinks receiving kept events.
    pub to: Vec<String>,
    /// The sinks a filter's `route` verdict may send an event to, besides `to` (default
    /// none). An event routed anywhere else is dead-lettered: a tenant's filter cannot
    /// write into sinks its route was not given.
    #[serde(default)]
    pub routable: Vec<String>,
    /// The sink for dead letters.
    #[serde(default = "default_dead_letter")]
    pub dead_letter: String,
    /// The failure policy.
    #[serde(default)]
    pub on_failure: FailurePolicy,
    /// How many times a batch whose filter failed (trap, timeout, memory, error, output
    /// over the limit) is run again, on a fresh instance, before `on_failure` applies
    /// (default 0; at most 10). The Roost Keeper's `deadLetterQueue.maxRetries`. A
    /// stateful filter may see the batch's state writes twice.
    #[serde(default)]
    pub filter_retries: u32,
    /// Batching limits for filter calls.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Sets the `weirfilters` extension on the events the route delivers: the
    /// `name@version` of each filter that passed them on, in order, comma-separated
    /// (replacing any value an event arrived with). Default off.
    #[serde(default)]
    pub record_filters: bool,
}

impl RouteConfig {
    /// A route fed by `http` through `filters` to `to`, with every other setting at its
    /// default.
    pub fn new(name: &str, filters: Vec<String>, to: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            from: default_from(),
            when: Vec::new(),
            filters,
            tenants: BTreeMap::new(),
            enforced: EnforcedFilters::default(),
            to,
            routable: Vec::new(),
            dead_letter: default_dead_letter(),
            on_failure: FailurePolicy::default(),
            filter_retries: 0,
            record_filters: false,
            batch: BatchConfig::default(),
        }
    }
}

fn default_from() -> Vec<String> {
    vec!["http".to_owned()]
}

fn default_dead_letter() -> String {
    "dead-letter".to_owned()
}

/// Filters a route runs for every tenant, whatever its chain.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnforcedFilters {
    /// Run first, before the tenant's chain.
    #[serde(default)]
    pub before: Vec<String>,
    /// Run last, after the tenant's chain.
    #[serde(default)]
    pub after: Vec<String>,
}

impl EnforcedFilters {
    /// `chain` with the enforced filters around it.
    pub fn around(&self, chain: &[String]) -> Vec<String> {
        let mut all = Vec::with_capacity(self.before.len() + chain.len() + self.after.len());
        all.extend_from_slice(&self.before);
        all.extend_from_slice(chain);
        all.extend_from_slice(&self.after);
        all
    }
}

/// A tenant's chain on one route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRoute {
    /// The chain for this tenant.
    pub filters: Vec<String>,
}

/// Batching limits.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// The most events in one filter call.
    #[serde(default = "default_batch_events")]
    pub max_events: usize,
    /// The most bytes of events in one filter call (guest memory grows to the largest batch).
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_events: default_batch_events(),
            max_bytes: default_batch_bytes(),
        }
    }
}

fn default_batch_events() -> usize {
    1000
}

fn default_batch_bytes() -> usize {
    4 << 20
}
