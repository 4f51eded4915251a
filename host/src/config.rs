//! The router's configuration: YAML, environment overrides, validation before anything
//! starts, and errors that name the file, line and field.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Prefix of environment variables that override configuration fields:
/// `WEIR__LISTEN=0.0.0.0:8080`, `WEIR__INGEST__MAX_EVENT_BYTES=65536`
/// (double underscores separate levels; names are lower-cased).
pub const ENV_PREFIX: &str = "WEIR__";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP listener (ingest, tail, health, metrics).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the router keeps its files (sinks, dead letters, compiled filter cache).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Limits on what the HTTP source accepts.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Filter components by name.
    #[serde(default)]
    pub filters: BTreeMap<String, FilterConfig>,
    /// Tenants and their limits (`default` always exists).
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Sinks by name (`tail` and `dead-letter` exist unless redefined).
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// Routes from sources through filters to sinks.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The admin API (filter uploads).
    #[serde(default)]
    pub admin: AdminConfig,
    /// How an event's tenant is told.
    #[serde(default)]
    pub tenancy: TenancyConfig,
    /// The gRPC source serving the Toggle `ToggleEvents` service.
    #[serde(default)]
    pub grpc: GrpcConfig,
    /// The WebAssembly engine.
    #[serde(default)]
    pub engine: EngineConfig,
    /// The Kubernetes Events API on the HTTP listener.
    #[serde(default)]
    pub events_api: EventsApiConfig,
    /// TLS for the main listener; with `client_ca`, client certificates authenticate
    /// callers (subject CN = user, O = groups).
    #[serde(default)]
    pub tls: Option<crate::tls::TlsSettings>,
    /// How callers of the main listener are authenticated.
    #[serde(default)]
    pub authentication: crate::k8s::settings::AuthenticationConfig,
    /// Kafka: the cluster, and consumer groups feeding the routes with `from: [kafka]`.
    #[serde(default)]
    pub kafka: crate::kafka::settings::KafkaConfig,
    /// Feature gates by name: `EventsProxy: true` makes the Events API forward every
    /// request to `events_api.provider` (as `--feature-gates=EventsProxy=true` does).
    #[serde(default)]
    pub feature_gates: BTreeMap<String, bool>,
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
    pub scope: crate::k8s::settings::ScopeConfig,
    /// The remote provider that proxy mode forwards to.
    #[serde(default)]
    pub provider: Option<crate::k8s::settings::ProviderConfig>,
    /// Keep events in ClickHouse instead of the embedded store (retention drops whole
    /// days: `retention_hours` rounded up to days, counted from each event's creation).
    #[serde(default)]
    pub clickhouse: Option<crate::k8s::settings::ClickHouseConfig>,
}

impl Default for EventsApiConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            retention_hours: default_retention_hours(),
            max_events: default_max_events(),
            watch_history: default_watch_history(),
            route: None,
            scope: crate::k8s::settings::ScopeConfig::default(),
            provider: None,
            clickhouse: None,
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

/// The WebAssembly engine's pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// How many filter instances may exist at once: one per route × tenant lane × filter,
    /// plus a few for uploads and dry runs. The pool reserves address space for each.
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_instances: default_max_instances(),
        }
    }
}

fn default_max_instances() -> u32 {
    256
}

/// The gRPC (Toggle) source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Listen address; the source is off without one.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Prefix of the CloudEvent types made from Toggle events.
    #[serde(default = "default_type_prefix")]
    pub type_prefix: String,
    /// The largest batch accepted (more is refused whole).
    #[serde(default = "default_grpc_batch")]
    pub max_batch_events: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: None,
            type_prefix: default_type_prefix(),
            max_batch_events: default_grpc_batch(),
        }
    }
}

fn default_type_prefix() -> String {
    crate::toggle::mapping::DEFAULT_TYPE_PREFIX.to_owned()
}

fn default_grpc_batch() -> usize {
    20_000
}

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

/// The admin API: who may call it and what it accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer tokens, stored as SHA-256 hashes. With none configured, `weir serve`
    /// generates an admin token at start-up and writes it to `<data_dir>/admin-token`.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// The largest component accepted, in bytes.
    #[serde(default = "default_max_component_bytes")]
    pub max_component_bytes: usize,
    /// Serve the admin API on its own listener (and not on the ingest listener).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// TLS for the admin listener (needs `listen`); with `client_ca`, client
    /// certificates authenticate callers.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsSettings>,
    /// Client certificate common names and their roles (needs `tls.client_ca`).
    #[serde(default)]
    pub client_certs: Vec<ClientCertRole>,
}

/// A client certificate subject and its role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertRole {
    /// The certificate's subject CN.
    pub common_name: String,
    /// `admin` or `tenant:<id>`.
    pub role: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            max_component_bytes: default_max_component_bytes(),
            listen: None,
            tls: None,
            client_certs: Vec::new(),
        }
    }
}

fn default_max_component_bytes() -> usize {
    32 << 20
}

/// One bearer token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs.
    pub name: String,
    /// Hex SHA-256 of the token (`printf %s TOKEN | sha256sum`).
    pub sha256: String,
    /// `admin`, or `tenant:<id>` for one tenant's filters only.
    pub role: String,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./weir-data")
}

/// Limits of the HTTP source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// The largest single event accepted, in bytes (attributes plus data).
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// The largest request body accepted, in bytes.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_event_bytes: default_max_event_bytes(),
            max_request_bytes: default_max_request_bytes(),
        }
    }
}

fn default_max_event_bytes() -> usize {
    1 << 20
}

fn default_max_request_bytes() -> usize {
    16 << 20
}

/// One filter. With a `path`, the file is made the active version at start-up (unless it
/// already is); without one, the filter is only declared and its versions are uploaded
/// through the admin API (`weir filter push`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Path of the `.wasm` component (relative paths are relative to the config file).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Configuration passed to the filter's `init`, as JSON.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

/// A tenant.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Per-call limits for this tenant's filters.
    #[serde(default)]
    pub limits: Limits,
}

/// Limits on every filter call.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock budget for one batch call, in milliseconds (epoch deadline).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The most linear memory one instance may grow to, in MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// The largest verdict buffer one batch call may return, in MiB.
    #[serde(default = "default_output_mb")]
    pub output_mb: u64,
    /// The most key-value state the tenant may hold, in MiB.
    #[serde(default = "default_state_mb")]
    pub state_mb: u64,
    /// The most events per second the tenant may submit (0: unlimited); a request over
    /// it is refused whole with `429` and `Retry-After`.
    #[serde(default)]
    pub events_per_sec: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_ms: default_timeout_ms(),
            memory_mb: default_memory_mb(),
            output_mb: default_output_mb(),
            state_mb: default_state_mb(),
            events_per_sec: 0,
        }
    }
}

fn default_timeout_ms() -> u64 {
    200
}

fn default_memory_mb() -> u64 {
    64
}

fn default_output_mb() -> u64 {
    16
}

fn default_state_mb() -> u64 {
    16
}

const MIXED_PROTOBUF_FILE: &str = "a protobuf file sink cannot hold both events and dead letters (the two message types carry no tag); name another file";

/// How a `file` sink writes.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// One JSON object a line: structured CloudEvents, or dead letters with the event
    /// or original record inside.
    #[default]
    Jsonl,
    /// Length-delimited protobuf messages: `io.cloudevents.v1.CloudEvent` for events,
    /// `weir.v1.DeadLetter` for dead letters (`proto/`).
    Protobuf,
}

/// A sink.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SinkConfig {
    /// Events (or dead letters) appended to a file, as JSON lines or protobuf.
    File {
        /// The file (relative paths are inside the data directory).
        path: PathBuf,
        /// fsync after every batch (slower, survives power loss).
        #[serde(default)]
        fsync: bool,
        /// `jsonl` (default) or `protobuf`.
        #[serde(default)]
        format: FileFormat,
    },
    /// The in-process stream that `weir tail` reads.
    Tail,
    /// Discards events (counted in metrics).
    Null,
    /// The upstream Toggle service over gRPC, with a memory buffer spilling to disk.
    Toggle(Box<crate::toggle::settings::ToggleSinkConfig>),
    /// A Kafka topic (CloudEvents Kafka binding), behind retries and a circuit breaker.
    Kafka(Box<crate::kafka::settings::KafkaSinkConfig>),
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
    pub when: Vec<crate::cesql::Dialect>,
    /// The default filter chain, run in order.
    #[serde(default)]
    pub filters: Vec<String>,
    /// Per-tenant chains replacing the default chain for that tenant.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantRoute>,
    /// Sinks receiving kept events.
    pub to: Vec<String>,
    /// The sink for dead letters.
    #[serde(default = "default_dead_letter")]
    pub dead_letter: String,
    /// The failure policy.
    #[serde(default)]
    pub on_failure: FailurePolicy,
    /// Batching limits for filter calls.
    #[serde(default)]
    pub batch: BatchConfig,
}

fn default_from() -> Vec<String> {
    vec!["http".to_owned()]
}

fn default_dead_letter() -> String {
    "dead-letter".to_owned()
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

/// Source kinds a route may name.
pub const SOURCE_KINDS: [&str; 4] = ["http", "grpc", "k8s", "kafka"];

/// A configuration error, naming where it is.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file, or the environment variable, at fault.
    pub origin: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The field path (e.g. `routes[0].filters[1]`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if !self.field.is_empty() && self.field != "." && self.field != "?" {
            write!(f, ": field `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Config {
    /// The configuration `weir serve` runs without a file: HTTP on 127.0.0.1:8080, data in
    /// `./weir-data`, and the example filters from `filters_dir` on the default route
    /// (scope injection, severity at `info` and above, redaction) into `events.jsonl` and
    /// the tail stream.
    pub fn embedded(filters_dir: &Path) -> Self {
        let filter = |name: &str, config: serde_json::Value| {
            (
                name.to_owned(),
                FilterConfig {
                    path: Some(filters_dir.join(format!("{}.wasm", name.replace('-', "_")))),
                    config: Some(config),
                },
            )
        };
        let mut config = Self::empty();
        config.filters = [
            filter("scope-inject", serde_json::json!({})),
            filter("severity", serde_json::json!({ "min": "info" })),
            filter("redact", serde_json::json!({})),
        ]
        .into_iter()
        .collect();
        config.sinks.insert(
            "file".into(),
            SinkConfig::File {
                path: "events.jsonl".into(),
                fsync: false,
                format: FileFormat::Jsonl,
            },
        );
        config.routes.push(RouteConfig {
            name: "default".into(),
            from: default_from(),
            when: Vec::new(),
            filters: vec!["scope-inject".into(), "severity".into(), "redact".into()],
            tenants: BTreeMap::new(),
            to: vec!["file".into(), "tail".into()],
            dead_letter: default_dead_letter(),
            on_failure: FailurePolicy::DeadLetter,
            batch: BatchConfig::default(),
        });
        config.with_builtins()
    }

    fn empty() -> Self {
        Self {
            listen: default_listen(),
            data_dir: default_data_dir(),
            ingest: IngestConfig::default(),
            filters: BTreeMap::new(),
            tenants: BTreeMap::new(),
            sinks: BTreeMap::new(),
            routes: Vec::new(),
            admin: AdminConfig::default(),
            tenancy: TenancyConfig::default(),
            grpc: GrpcConfig::default(),
            engine: EngineConfig::default(),
            events_api: EventsApiConfig::default(),
            tls: None,
            authentication: Default::default(),
            kafka: Default::default(),
            feature_gates: BTreeMap::new(),
        }
    }

    /// Adds the `default` tenant and the `tail` and `dead-letter` sinks unless configured.
    fn with_builtins(mut self) -> Self {
        self.tenants.entry("default".into()).or_default();
        self.sinks.entry("tail".into()).or_insert(SinkConfig::Tail);
        self.sinks
            .entry("dead-letter".into())
            .or_insert(SinkConfig::File {
                path: "dead-letter.jsonl".into(),
                fsync: false,
                format: FileFormat::Jsonl,
            });
        self
    }

    /// Reads, overrides from the environment, and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: None,
            column: None,
            field: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        let overrides: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        let mut config = Self::parse(&origin, &text, &overrides)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for filter in config.filters.values_mut() {
            if let Some(path) = filter.path.as_mut().filter(|p| p.is_relative()) {
                *path = base.join(&*path);
            }
        }
        Ok(config)
    }

    /// Parses and validates configuration text; `overrides` are `(WEIR__A__B, value)` pairs.
    pub fn parse(
        origin: &str,
        text: &str,
        overrides: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let config: Config = deserialize_located(origin, text)?;
        let config = if overrides.is_empty() {
            config
        } else {
            apply_overrides(origin, text, overrides)?
        };
        let config = config.with_builtins();
        config.validate(origin, text)?;
        Ok(config)
    }

    /// Checks every cross-reference and limit.
    pub fn validate(&self, origin: &str, text: &str) -> Result<(), ConfigError> {
        let err = |field: String, needle: &str, message: String| ConfigError {
            origin: origin.to_owned(),
            line: find_line(text, needle),
            column: None,
            field,
            message,
        };
        let known = |map: Vec<&String>| {
            map.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.routes.is_empty() {
            return Err(err(
                "routes".into(),
                "routes",
                "at least one route is needed".into(),
            ));
        }
        let mut names = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            if names.contains(&&route.name) {
                return Err(err(
                    format!("routes[{i}].name"),
                    &route.name,
                    format!("route `{}` is defined twice", route.name),
                ));
            }
            names.push(&route.name);
            for (j, from) in route.from.iter().enumerate() {
                if from == "k8s" && !self.events_api_served() {
                    return Err(err(
                        format!("routes[{i}].from[{j}]"),
                        from,
                        "source `k8s` needs `events_api: { enabled: true }`".into(),
                    ));
                }
                if !SOURCE_KINDS.contains(&from.as_str()) {
                    return Err(err(
                        format!("routes[{i}].from[{j}]"),
                        from,
                        format!(
                            "unknown source `{from}` (known: {})",
                            SOURCE_KINDS.join(", ")
                        ),
                    ));
                }
            }
            let chains = std::iter::once((String::new(), &route.filters)).chain(
                route
                    .tenants
                    .iter()
                    .map(|(t, r)| (format!(".tenants.{t}"), &r.filters)),
            );
            for (prefix, chain) in chains {
                for (j, f) in chain.iter().enumerate() {
                    if !self.filters.contains_key(f) {
                        return Err(err(
                            format!("routes[{i}]{prefix}.filters[{j}]"),
                            f,
                            format!(
                                "unknown filter `{f}` (defined: {})",
                                known(self.filters.keys().collect())
                            ),
                        ));
                    }
                }
            }
            for tenant in route.tenants.keys() {
                if !self.tenants.contains_key(tenant) {
                    return Err(err(
                        format!("routes[{i}].tenants.{tenant}"),
                        tenant,
                        format!(
                            "unknown tenant `{tenant}` (defined: {})",
                            known(self.tenants.keys().collect())
                        ),
                    ));
                }
            }
            let sinks = route
                .to
                .iter()
                .enumerate()
                .map(|(j, s)| (format!("routes[{i}].to[{j}]"), s))
                .chain(std::iter::once((
                    format!("routes[{i}].dead_letter"),
                    &route.dead_letter,
                )));
            for (field, sink) in sinks {
                if !self.sinks.contains_key(sink) {
                    return Err(err(
                        field,
                        sink,
                        format!(
                            "unknown sink `{sink}` (defined: {})",
                            known(self.sinks.keys().collect())
                        ),
                    ));
                }
            }
            if let Err((j, e)) = crate::cesql::Condition::compile(&route.when) {
                let needle = match &route.when[j] {
                    crate::cesql::Dialect::Cesql(src) => src.as_str(),
                    _ => "when",
                };
                return Err(err(format!("routes[{i}].when[{j}]"), needle, e.to_string()));
            }
            if route.batch.max_events == 0 || route.batch.max_bytes < 1024 {
                return Err(err(
                    format!("routes[{i}].batch"),
                    "batch",
                    "max_events must be at least 1 and max_bytes at least 1024".into(),
                ));
            }
        }
        for (name, sink) in &self.sinks {
            if let SinkConfig::Toggle(toggle) = sink {
                if let Err(message) = toggle.settings() {
                    return Err(err(format!("sinks.{name}"), name, message));
                }
            }
            if let SinkConfig::Kafka(kafka) = sink {
                if let Err(e) = kafka.check() {
                    return Err(err(format!("sinks.{name}"), name, e.0));
                }
                match kafka.cluster.as_ref().or(self.kafka.cluster.as_ref()) {
                    Some(cluster) => {
                        if let Err(e) = cluster.check() {
                            return Err(err(format!("sinks.{name}.cluster"), name, e.0));
                        }
                    }
                    None => return Err(err(
                        format!("sinks.{name}"),
                        name,
                        "a Kafka sink needs a cluster: set `kafka.cluster` or the sink's `cluster`"
                            .into(),
                    )),
                }
            }
        }
        if let Err((field, needle, message)) = self.validate_kafka() {
            return Err(err(field, &needle, message));
        }
        for (i, route) in self.routes.iter().enumerate() {
            if let Some(SinkConfig::Toggle(_)) = self.sinks.get(&route.dead_letter) {
                return Err(err(
                    format!("routes[{i}].dead_letter"),
                    &route.dead_letter,
                    "a Toggle sink cannot hold dead letters; name a file sink".into(),
                ));
            }
            if self.mixes_events_and_dead_letters(&route.dead_letter) {
                return Err(err(
                    format!("routes[{i}].dead_letter"),
                    &route.dead_letter,
                    MIXED_PROTOBUF_FILE.into(),
                ));
            }
        }
        for (name, tenant) in &self.tenants {
            let l = tenant.limits;
            if l.timeout_ms == 0 || l.memory_mb == 0 || l.output_mb == 0 {
                return Err(err(
                    format!("tenants.{name}.limits"),
                    name,
                    "timeout_ms, memory_mb and output_mb must be positive".into(),
                ));
            }
            if l.memory_mb > 4096 {
                return Err(err(
                    format!("tenants.{name}.limits.memory_mb"),
                    "memory_mb",
                    "at most 4096 MiB (a 32-bit guest cannot address more)".into(),
                ));
            }
        }
        for (i, m) in self.tenancy.sources.iter().enumerate() {
            if !self.tenants.contains_key(&m.tenant) {
                return Err(err(
                    format!("tenancy.sources[{i}].tenant"),
                    &m.tenant,
                    format!("unknown tenant `{}`", m.tenant),
                ));
            }
        }
        if self.admin.tls.is_some() && self.admin.listen.is_none() {
            return Err(err(
                "admin.tls".into(),
                "tls",
                "TLS is for the admin API's own listener: set admin.listen too".into(),
            ));
        }
        let has_client_ca = self
            .admin
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca.is_some());
        if !self.admin.client_certs.is_empty() && !has_client_ca {
            return Err(err(
                "admin.client_certs".into(),
                "client_certs",
                "client certificates need admin.tls.client_ca to verify them".into(),
            ));
        }
        let role_ok = |role: &str| {
            role == "admin"
                || role
                    .strip_prefix("tenant:")
                    .is_some_and(|t| self.tenants.contains_key(t))
        };
        for (i, c) in self.admin.client_certs.iter().enumerate() {
            if !role_ok(&c.role) {
                return Err(err(
                    format!("admin.client_certs[{i}].role"),
                    &c.role,
                    format!(
                        "role `{}` must be `admin` or `tenant:<configured tenant>`",
                        c.role
                    ),
                ));
            }
        }
        for (i, token) in self.admin.tokens.iter().enumerate() {
            let hex_ok =
                token.sha256.len() == 64 && token.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex_ok {
                return Err(err(
                    format!("admin.tokens[{i}].sha256"),
                    &token.name,
                    "must be the 64-digit hex SHA-256 of the token".into(),
                ));
            }
            let role_ok = token.role == "admin"
                || token
                    .role
                    .strip_prefix("tenant:")
                    .is_some_and(|t| self.tenants.contains_key(t));
            if !role_ok {
                return Err(err(
                    format!("admin.tokens[{i}].role"),
                    &token.role,
                    format!(
                        "role `{}` must be `admin` or `tenant:<configured tenant>`",
                        token.role
                    ),
                ));
            }
        }
        if !(1..=8192).contains(&self.engine.max_instances) {
            return Err(err(
                "engine.max_instances".into(),
                "max_instances",
                "must be between 1 and 8192".into(),
            ));
        }
        if self.ingest.max_event_bytes == 0
            || self.ingest.max_request_bytes < self.ingest.max_event_bytes
        {
            return Err(err(
                "ingest".into(),
                "ingest",
                "max_event_bytes must be positive and at most max_request_bytes".into(),
            ));
        }
        if let Err((field, needle, message)) = self.validate_events_api() {
            return Err(err(field, needle, message));
        }
        Ok(())
    }

    /// Checks the Kafka section: the cluster, each source's settings, its route and its
    /// dead-letter sink, and that `from: [kafka]` has a source.
    /// Whether `dead_letter` names a protobuf file sink that a route also writes events
    /// to: the file would mix two message types that carry no tag.
    fn mixes_events_and_dead_letters(&self, dead_letter: &str) -> bool {
        let protobuf_file = matches!(
            self.sinks.get(dead_letter),
            Some(SinkConfig::File {
                format: FileFormat::Protobuf,
                ..
            })
        );
        protobuf_file
            && self
                .routes
                .iter()
                .any(|r| r.to.iter().any(|sink| sink == dead_letter))
    }

    fn validate_kafka(&self) -> Result<(), (String, String, String)> {
        let k = &self.kafka;
        if let Some(cluster) = &k.cluster {
            cluster
                .check()
                .map_err(|e| ("kafka.cluster".into(), "cluster".into(), e.0))?;
        }
        for (name, source) in &k.sources {
            let field = format!("kafka.sources.{name}");
            source
                .check()
                .map_err(|e| (field.clone(), name.clone(), e.0))?;
            match source.cluster.as_ref().or(k.cluster.as_ref()) {
                Some(c) => c
                    .check()
                    .map_err(|e| (format!("{field}.cluster"), name.clone(), e.0))?,
                None => return Err((
                    field,
                    name.clone(),
                    "a Kafka source needs a cluster: set `kafka.cluster` or the source's `cluster`"
                        .into(),
                )),
            }
            if !self.sinks.contains_key(&source.dead_letter) {
                return Err((
                    format!("{field}.dead_letter"),
                    source.dead_letter.clone(),
                    format!("unknown sink `{}`", source.dead_letter),
                ));
            }
            if let Some(SinkConfig::Toggle(_)) = self.sinks.get(&source.dead_letter) {
                return Err((
                    format!("{field}.dead_letter"),
                    source.dead_letter.clone(),
                    "a Toggle sink cannot hold dead letters; name a file or kafka sink".into(),
                ));
            }
            if self.mixes_events_and_dead_letters(&source.dead_letter) {
                return Err((
                    format!("{field}.dead_letter"),
                    source.dead_letter.clone(),
                    MIXED_PROTOBUF_FILE.into(),
                ));
            }
            if let Some(route) = &source.route {
                let fed = self
                    .routes
                    .iter()
                    .any(|r| &r.name == route && r.from.iter().any(|f| f == "kafka"));
                if !fed {
                    return Err((
                        format!("{field}.route"),
                        route.clone(),
                        format!("no route `{route}` with `from: [kafka]`"),
                    ));
                }
            }
        }
        let wants_kafka = self
            .routes
            .iter()
            .position(|r| r.from.iter().any(|f| f == "kafka"));
        if let (Some(i), true) = (wants_kafka, k.sources.is_empty()) {
            return Err((
                format!("routes[{i}].from"),
                "kafka".into(),
                "source `kafka` needs a consumer under `kafka.sources`".into(),
            ));
        }
        Ok(())
    }

    /// Whether proxy mode is on (`feature_gates: { EventsProxy: true }`).
    pub fn events_proxy(&self) -> bool {
        self.feature_gates
            .get(crate::k8s::settings::EVENTS_PROXY_GATE)
            .copied()
            .unwrap_or(false)
    }

    /// Whether the Events API is served (embedded, or as a proxy).
    pub fn events_api_served(&self) -> bool {
        self.events_api.enabled || self.events_proxy()
    }

    /// The route admitting Events API writes: the configured one, else the only route
    /// fed by `k8s`.
    pub fn events_admission_route(&self) -> Option<&str> {
        if let Some(route) = &self.events_api.route {
            return Some(route);
        }
        let mut fed = self
            .routes
            .iter()
            .filter(|r| r.from.iter().any(|f| f == "k8s"));
        match (fed.next(), fed.next()) {
            (Some(only), None) => Some(&only.name),
            _ => None,
        }
    }

    /// Whether unauthenticated callers are served.
    pub fn anonymous_allowed(&self) -> bool {
        let has_authenticator = self.authentication.request_header.is_some()
            || self.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        self.authentication.anonymous.unwrap_or(!has_authenticator)
    }

    /// Checks the Events API, listener TLS, authentication and feature gate settings:
    /// `(field, text to find the line by, message)`.
    fn validate_events_api(&self) -> Result<(), (String, &str, String)> {
        use crate::k8s::settings::KNOWN_GATES;
        for gate in self.feature_gates.keys() {
            if !KNOWN_GATES.contains(&gate.as_str()) {
                return Err((
                    format!("feature_gates.{gate}"),
                    gate,
                    format!(
                        "unknown feature gate `{gate}` (known: {})",
                        KNOWN_GATES.join(", ")
                    ),
                ));
            }
        }
        if self.authentication.request_header.is_some() && self.tls.is_none() {
            return Err((
                "authentication.request_header".into(),
                "request_header",
                "request-header authentication needs `tls` on the listener: the front proxy's client certificate is verified first".into(),
            ));
        }
        if self.events_proxy() {
            let Some(provider) = &self.events_api.provider else {
                return Err((
                    "events_api.provider".into(),
                    "EventsProxy",
                    "EventsProxy=true needs events_api.provider (url, ca_file, client_cert, client_key) or --events-provider-url and friends".into(),
                ));
            };
            if !provider.url.starts_with("https://") {
                return Err((
                    "events_api.provider.url".into(),
                    "url",
                    format!("`{}`: the provider is reached over HTTPS with mutual TLS; use an https:// URL", provider.url),
                ));
            }
            if provider.timeout_seconds == 0 {
                return Err((
                    "events_api.provider.timeout_seconds".into(),
                    "timeout_seconds",
                    "must be at least 1".into(),
                ));
            }
            // The provider scopes callers by the extras it is sent: a caller forwarded
            // without its parent type would be a platform caller there and see every
            // tenant's events, so this is an error, not a warning.
            let scope = &self.events_api.scope;
            for (setting, key) in [
                ("parent_type_extra", &scope.parent_type_extra),
                ("parent_name_extra", &scope.parent_name_extra),
            ] {
                if !provider
                    .forward_extras
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(key))
                {
                    return Err((
                        "events_api.provider.forward_extras".into(),
                        "forward_extras",
                        format!(
                            "must include `{key}` (events_api.scope.{setting}): without it the provider cannot scope callers and would serve a scoped caller as a platform caller"
                        ),
                    ));
                }
            }
        }
        if let Some(ch) = &self.events_api.clickhouse {
            let ident_ok = |s: &str| {
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            };
            if !ident_ok(&ch.database) || !ident_ok(&ch.table) {
                return Err((
                    "events_api.clickhouse".into(),
                    "clickhouse",
                    "database and table must be plain identifiers (letters, digits, _)".into(),
                ));
            }
            if !(ch.url.starts_with("http://") || ch.url.starts_with("https://")) {
                return Err((
                    "events_api.clickhouse.url".into(),
                    "url",
                    format!(
                        "`{}`: the ClickHouse HTTP interface, http:// or https://",
                        ch.url
                    ),
                ));
            }
        }
        if let Some(route) = &self.events_api.route {
            let fed = self
                .routes
                .iter()
                .any(|r| &r.name == route && r.from.iter().any(|f| f == "k8s"));
            if !fed {
                return Err((
                    "events_api.route".into(),
                    route,
                    format!("`{route}` must name a route with `from: [k8s]`"),
                ));
            }
        } else if self.events_api_served() {
            let fed = self
                .routes
                .iter()
                .filter(|r| r.from.iter().any(|f| f == "k8s"))
                .count();
            if fed > 1 {
                return Err((
                    "events_api.route".into(),
                    "events_api",
                    "several routes take `from: [k8s]`: name the one whose filters admit writes in events_api.route".into(),
                ));
            }
        }
        Ok(())
    }

    /// The limits of a tenant (the `default` tenant's when unknown).
    pub fn limits(&self, tenant: &str) -> Limits {
        self.tenants
            .get(tenant)
            .or_else(|| self.tenants.get("default"))
            .map(|t| t.limits)
            .unwrap_or_default()
    }
}

fn deserialize_located<T: serde::de::DeserializeOwned>(
    origin: &str,
    text: &str,
) -> Result<T, ConfigError> {
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let location = inner.location();
        let message = inner.to_string();
        // serde_norway appends " at line L column C"; the prefix already says it.
        let message = match message.find(" at line ") {
            Some(at) => message[..at].to_owned(),
            None => message,
        };
        ConfigError {
            origin: origin.to_owned(),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            field,
            message,
        }
    })
}

fn apply_overrides(
    origin: &str,
    text: &str,
    overrides: &[(String, String)],
) -> Result<Config, ConfigError> {
    let mut tree: serde_norway::Value = serde_norway::from_str(text).map_err(|e| ConfigError {
        origin: origin.to_owned(),
        line: None,
        column: None,
        field: String::new(),
        message: e.to_string(),
    })?;
    if tree.is_null() {
        tree = serde_norway::Value::Mapping(Default::default());
    }
    for (var, value) in overrides {
        let path: Vec<String> = var[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        let parsed: serde_norway::Value = serde_norway::from_str(value)
            .unwrap_or_else(|_| serde_norway::Value::String(value.clone()));
        let mut node = &mut tree;
        for key in &path {
            let map = match node {
                serde_norway::Value::Mapping(m) => m,
                other => {
                    *other = serde_norway::Value::Mapping(Default::default());
                    match other {
                        serde_norway::Value::Mapping(m) => m,
                        _ => unreachable!("just assigned a mapping"),
                    }
                }
            };
            node = map
                .entry(serde_norway::Value::String(key.clone()))
                .or_insert(serde_norway::Value::Null);
        }
        *node = parsed;
    }
    serde_path_to_error::deserialize(tree).map_err(|e| ConfigError {
        origin: format!(
            "{origin} with environment overrides ({})",
            overrides
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        line: None,
        column: None,
        field: e.path().to_string(),
        message: e.into_inner().to_string(),
    })
}

/// The first line on which `needle` appears as a whole token.
fn find_line(text: &str, needle: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            line.match_indices(needle).any(|(at, _)| {
                let before = line[..at].chars().next_back();
                let after = line[at + needle.len()..].chars().next();
                let sep = |c: Option<char>| {
                    c.is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '_'))
                };
                sep(before) && sep(after)
            })
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
listen: 127.0.0.1:9000
filters:
  severity:
    path: severity.wasm
    config: { min: error }
routes:
  - name: main
    filters: [severity]
    to: [tail]
";

    #[test]
    fn parses_and_fills_builtins() {
        let c = Config::parse("weir.yaml", GOOD, &[]).expect("valid");
        assert_eq!(c.listen.port(), 9000);
        assert!(c.sinks.contains_key("dead-letter"));
        assert!(c.tenants.contains_key("default"));
        assert_eq!(c.routes[0].on_failure, FailurePolicy::DeadLetter);
    }

    #[test]
    fn a_protobuf_file_holds_either_events_or_dead_letters() {
        let sinks = "sinks:\n  pb: { type: file, path: out.pb, format: protobuf }\n";
        let text = format!(
            "{sinks}{}",
            GOOD.replace("    to: [tail]", "    to: [pb]\n    dead_letter: pb")
        );
        let e = Config::parse("weir.yaml", &text, &[]).expect_err("mixed");
        assert_eq!(e.field, "routes[0].dead_letter", "{e}");
        assert!(e.message.contains("cannot hold both"), "{e}");
        let text = format!("{sinks}{}", GOOD.replace("    to: [tail]", "    to: [pb]"));
        Config::parse("weir.yaml", &text, &[]).expect("events only");
    }

    #[test]
    fn typos_name_file_line_and_field() {
        let text = GOOD.replace("    to: [tail]", "    to: [tail]\n    on_falure: drop");
        let e = Config::parse("weir.yaml", &text, &[]).expect_err("typo");
        assert_eq!(e.line, Some(10), "{e}");
        assert!(e.to_string().starts_with("weir.yaml:10:"), "{e}");
        assert!(e.message.contains("on_falure"), "{e}");
        let text = GOOD.replace("filters: [severity]", "filters: [severty]");
        let e = Config::parse("weir.yaml", &text, &[]).expect_err("unknown filter");
        assert_eq!(e.line, Some(8), "{e}");
        assert_eq!(e.field, "routes[0].filters[0]");
        assert!(e.message.contains("unknown filter `severty`"), "{e}");
        let text = GOOD.replace("listen: 127.0.0.1:9000", "listen: nowhere");
        let e = Config::parse("weir.yaml", &text, &[]).expect_err("bad address");
        assert_eq!((e.line, e.field.as_str()), (Some(1), "listen"), "{e}");
    }

    #[test]
    fn k8s_proxy_forward_extras_must_carry_the_scope_extras() {
        let proxy = |extras: &str, scope: &str| {
            format!(
                "{GOOD}feature_gates: {{ EventsProxy: true }}\nevents_api:\n{scope}  provider:\n    url: https://provider:443\n    ca_file: ca.pem\n    client_cert: c.pem\n    client_key: c.key\n{extras}"
            )
        };
        // The defaults forward both scope extras.
        Config::parse("weir.yaml", &proxy("", ""), &[]).expect("defaults");
        let only_type = "    forward_extras: [iam.miloapis.com/parent-type]\n";
        let e = Config::parse("weir.yaml", &proxy(only_type, ""), &[]).expect_err("no name");
        assert_eq!(e.field, "events_api.provider.forward_extras", "{e}");
        assert!(e.message.contains("`iam.miloapis.com/parent-name`"), "{e}");
        assert!(
            e.message.contains("events_api.scope.parent_name_extra"),
            "{e}"
        );
        assert_eq!(e.line, Some(17), "{e}");
        // Keys are compared as header names are: case-insensitively.
        let both =
            "    forward_extras: [Iam.miloapis.com/Parent-Type, iam.miloapis.com/parent-name]\n";
        Config::parse("weir.yaml", &proxy(both, ""), &[]).expect("both, any case");
        // The scope settings say which extras are needed.
        let scope = "  scope: { parent_type_extra: example.com/tenant-type }\n";
        let e = Config::parse("weir.yaml", &proxy(both, scope), &[]).expect_err("custom");
        assert!(e.message.contains("`example.com/tenant-type`"), "{e}");
    }

    #[test]
    fn environment_overrides_win_and_are_named_when_wrong() {
        let o = vec![(
            "WEIR__INGEST__MAX_EVENT_BYTES".to_owned(),
            "2048".to_owned(),
        )];
        let c = Config::parse("weir.yaml", GOOD, &o).expect("valid");
        assert_eq!(c.ingest.max_event_bytes, 2048);
        let o = vec![("WEIR__LISTEN".to_owned(), "not an address".to_owned())];
        let e = Config::parse("weir.yaml", GOOD, &o).expect_err("bad override");
        assert!(e.to_string().contains("WEIR__LISTEN"), "{e}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// Every example configuration in `examples/` must stay valid.
    #[test]
    fn example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("examples/") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).expect("read");
                if let Err(e) = Config::parse(&path.display().to_string(), &text, &[]) {
                    panic!("{e}");
                }
                seen += 1;
            }
        }
        assert!(seen > 0);
    }
}
