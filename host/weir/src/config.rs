//! The router's configuration: YAML, environment overrides, validation before anything
//! starts, and errors that name the file, line and field.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use weir_core::auth::AuthenticationConfig;
use weir_core::sink::BuildSink;
use weir_core::tls::TlsSettings;
#[cfg(feature = "k8s")]
use weir_k8s::settings::{EventsApiConfig, EVENTS_PROXY_GATE, KNOWN_GATES};
pub use weir_router::settings::{
    BatchConfig, FailurePolicy, RouteConfig, SourceMapping, TenancyConfig, TenantConfig,
    TenantRoute,
};
use weir_router::sinks::{FileFormat, FileSinkConfig, NullSinkConfig, TailSinkConfig};
pub use weir_runtime::Limits;

/// The feature gate of the Events API's proxy mode (the Events API is not built in).
#[cfg(not(feature = "k8s"))]
const EVENTS_PROXY_GATE: &str = "EventsProxy";
/// Feature gates this build knows: none without the Events API.
#[cfg(not(feature = "k8s"))]
const KNOWN_GATES: [&str; 0] = [];

/// Prefix of environment variables that override configuration fields:
/// `WEIR__LISTEN=0.0.0.0:8080`, `WEIR__INGEST__MAX_EVENT_BYTES=65536`
/// (double underscores separate levels; names are lower-cased).
pub const ENV_PREFIX: &str = "WEIR__";

/// The name the embedded defaults go by in configuration errors.
pub const EMBEDDED: &str = "embedded defaults";

/// The `WEIR__…` variables of the environment, as `(name, value)` pairs.
pub fn env_overrides() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect()
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Metric settings.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// OpenTelemetry tracing (off unless configured here or by `OTEL_*` variables).
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetryConfig,
    /// The bounds of every HTTP listener's connections (the main and admin listeners) and
    /// of the gRPC listener's.
    #[serde(default)]
    pub connections: weir_core::listener::ConnectionLimits,
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
    /// The gRPC source serving `rodent.RodentService` (the Rodent → Toggle contract).
    #[cfg(feature = "toggle")]
    #[serde(default)]
    pub grpc: weir_toggle::settings::GrpcConfig,
    /// The WebAssembly engine.
    #[serde(default)]
    pub engine: EngineConfig,
    /// The Kubernetes Events API on the HTTP listener.
    #[cfg(feature = "k8s")]
    #[serde(default)]
    pub events_api: EventsApiConfig,
    /// The cluster watch: downstream clusters' Events, to routes taking `k8s-watch`.
    #[cfg(feature = "k8s")]
    #[serde(default)]
    pub k8s_watch: weir_k8s::watch::WatchConfig,
    /// TLS for the main listener; with `client_ca`, client certificates authenticate
    /// callers (subject CN = user, O = groups).
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// How callers of the main listener are authenticated.
    #[serde(default)]
    pub authentication: AuthenticationConfig,
    /// Kafka: the cluster, and consumer groups feeding the routes with `from: [kafka]`.
    #[cfg(feature = "kafka")]
    #[serde(default)]
    pub kafka: weir_kafka::settings::KafkaConfig,
    /// Feature gates by name: `EventsProxy: true` makes the Events API forward every
    /// request to `events_api.provider` (as `--feature-gates=EventsProxy=true` does).
    #[serde(default)]
    pub feature_gates: BTreeMap<String, bool>,
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
    pub tls: Option<TlsSettings>,
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

/// Metric settings (`metrics`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// The event types that may appear as `type` label values; any other type is counted
    /// as `other`, so producers cannot grow the series without end.
    #[serde(default)]
    pub event_types: Vec<String>,
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
    /// The tenant that owns the name and may upload its versions (default: the
    /// platform, whose versions only admins upload).
    #[serde(default)]
    pub owner: Option<String>,
}

const MIXED_PROTOBUF_FILE: &str = "a protobuf file sink cannot hold both events and dead letters (the two message types carry no tag); name another file";

/// Parses `--feature-gates` text: `Name=true,Other=false`.
pub fn parse_feature_gates(text: &str) -> Result<Vec<(String, bool)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}`: expected Name=true|false"))?;
            let value = match value.trim() {
                "true" => true,
                "false" => false,
                other => return Err(format!("`{name}`: `{other}` is not true or false")),
            };
            let name = name.trim();
            if !KNOWN_GATES.contains(&name) {
                return Err(format!(
                    "unknown feature gate `{name}` (known: {})",
                    KNOWN_GATES.join(", ")
                ));
            }
            Ok((name.to_owned(), value))
        })
        .collect()
}

/// Declares the sink connectors: the `type` each is named by, its configuration struct
/// (which implements [`BuildSink`]) and the cargo feature it needs. Adding a sink is one
/// line here.
macro_rules! sink_connectors {
    ($( $(#[doc = $doc:literal])* $(#[cfg($cfg:meta)])? $kind:literal => $variant:ident($config:ty), )*) => {
        /// A sink: the `type` key names the connector; each connector's configuration
        /// checks itself, says what it can do and builds its sink ([`BuildSink`]).
        #[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
        #[serde(tag = "type", deny_unknown_fields)]
        pub enum SinkConfig {
            $(
                $(#[doc = $doc])*
                $(#[cfg($cfg)])?
                #[serde(rename = $kind)]
                $variant(Box<$config>),
            )*
        }

        impl SinkConfig {
            /// The connector's configuration.
            pub fn builder(&self) -> &dyn BuildSink {
                match self {
                    $( $(#[cfg($cfg)])? SinkConfig::$variant(c) => &**c, )*
                }
            }

            /// The connector's name, as the `type` key says it.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( $(#[cfg($cfg)])? SinkConfig::$variant(_) => $kind, )*
                }
            }
        }
    };
}

sink_connectors! {
    /// Events (or dead letters) appended to a file, as JSON lines or protobuf.
    "file" => File(FileSinkConfig),
    /// The in-process stream that `weir tail` reads.
    "tail" => Tail(TailSinkConfig),
    /// Discards events (counted in metrics).
    "null" => Null(NullSinkConfig),
    /// The upstream Toggle service over gRPC, with a memory buffer spilling to disk.
    #[cfg(feature = "toggle")]
    "toggle" => Toggle(weir_toggle::settings::ToggleSinkConfig),
    /// A Kafka topic (CloudEvents Kafka binding), behind retries and a circuit breaker.
    #[cfg(feature = "kafka")]
    "kafka" => Kafka(weir_kafka::settings::KafkaSinkConfig),
    /// An HTTP receiver (CloudEvents HTTP binding), behind retries and a circuit breaker.
    #[cfg(feature = "http")]
    "http" => Http(weir_http::HttpSinkConfig),
    /// An upstream Kubernetes API (or kcp workspace): Events created, repeats patched.
    #[cfg(feature = "k8s")]
    "kubernetes" => Kubernetes(weir_k8s::upstream::UpstreamSinkConfig),
}

/// Source kinds a route may name: `http` always, the others when their connector is
/// built in.
pub fn source_kinds() -> Vec<&'static str> {
    let mut kinds = vec!["http"];
    if cfg!(feature = "toggle") {
        kinds.push("grpc");
    }
    if cfg!(feature = "k8s") {
        kinds.push("k8s");
        kinds.push("k8s-watch");
    }
    if cfg!(feature = "kafka") {
        kinds.push("kafka");
    }
    kinds
}

/// One problem in a configuration, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
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

impl fmt::Display for ConfigIssue {
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

/// Why a configuration was refused: every problem found (a file that does not parse has
/// one), each naming its file, line and field. Displayed one problem a line.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order of the checks.
    pub issues: Vec<ConfigIssue>,
}

impl ConfigError {
    fn one(issue: ConfigIssue) -> Self {
        Self {
            issues: vec![issue],
        }
    }

    /// The first problem (there is always one).
    pub fn first(&self) -> &ConfigIssue {
        &self.issues[0]
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// The problems validation finds, located in the file's text as they are added.
struct Issues<'a> {
    origin: &'a str,
    text: &'a str,
    found: Vec<ConfigIssue>,
}

impl Issues<'_> {
    /// A problem at `field`, on the first line where `needle` stands as a whole token.
    fn add(&mut self, field: impl Into<String>, needle: &str, message: impl Into<String>) {
        self.found.push(ConfigIssue {
            origin: self.origin.to_owned(),
            line: find_line(self.text, needle),
            column: None,
            field: field.into(),
            message: message.into(),
        });
    }
}

impl Config {
    /// The configuration `weir serve` runs without a file: HTTP on 127.0.0.1:8080, data in
    /// `./weir-data`, the Kubernetes Events API from the embedded store, and the example
    /// filters from `filters_dir` on the default route (scope injection, severity at
    /// `info` and above, redaction) into `events.jsonl` and the tail stream. `overrides`
    /// (`WEIR__…`, see [`env_overrides`]) apply to it as they do to a file.
    pub fn embedded(
        filters_dir: &Path,
        overrides: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        // JSON strings are YAML strings: any path quotes safely.
        let wasm = |name: &str| {
            let path = filters_dir.join(format!("{name}.wasm"));
            serde_json::Value::String(path.display().to_string()).to_string()
        };
        let text = format!(
            "filters:\n  \
scope-inject: {{ path: {}, config: {{}} }}\n  \
severity: {{ path: {}, config: {{ min: info }} }}\n  \
redact: {{ path: {}, config: {{}} }}\n\
sinks:\n  file: {{ type: file, path: events.jsonl }}\n\
{events_api}\
routes:\n  - {{ name: default, filters: [scope-inject, severity, redact], to: [file, tail] }}\n",
            wasm("scope_inject"),
            wasm("severity"),
            wasm("redact"),
            events_api = if cfg!(feature = "k8s") {
                "events_api: { enabled: true }\n"
            } else {
                ""
            },
        );
        Self::parse(EMBEDDED, &text, overrides)
    }

    /// Adds the `default` tenant and the `tail` and `dead-letter` sinks unless configured,
    /// and gives Kafka sinks and sources without a cluster of their own `kafka.cluster`.
    fn with_builtins(mut self) -> Self {
        self.tenants.entry("default".into()).or_default();
        self.sinks
            .entry("tail".into())
            .or_insert(SinkConfig::Tail(Box::default()));
        self.sinks
            .entry("dead-letter".into())
            .or_insert(SinkConfig::File(Box::new(FileSinkConfig {
                path: "dead-letter.jsonl".into(),
                fsync: false,
                format: FileFormat::Jsonl,
                retry: None,
                circuit_breaker: None,
            })));
        #[cfg(feature = "kafka")]
        if let Some(cluster) = &self.kafka.cluster {
            for sink in self.sinks.values_mut() {
                if let SinkConfig::Kafka(kafka) = sink {
                    kafka.cluster.get_or_insert_with(|| cluster.clone());
                }
            }
            for source in self.kafka.sources.values_mut() {
                source.cluster.get_or_insert_with(|| cluster.clone());
            }
        }
        // A kubernetes sink takes by default the workspaces the watched clusters name.
        #[cfg(feature = "k8s")]
        {
            let watched: Vec<String> = self
                .k8s_watch
                .clusters
                .iter()
                .filter_map(|c| c.workspace.clone())
                .collect();
            for sink in self.sinks.values_mut() {
                if let SinkConfig::Kubernetes(k8s) = sink {
                    k8s.workspaces.get_or_insert_with(|| watched.clone());
                }
            }
        }
        self
    }

    /// Reads, overrides from the environment ([`env_overrides`]), and validates a
    /// configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::one(ConfigIssue {
                origin: origin.clone(),
                line: None,
                column: None,
                field: String::new(),
                message: format!("cannot read: {e}"),
            })
        })?;
        let mut config = Self::parse(&origin, &text, &env_overrides())?;
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

    /// Checks every cross-reference and limit, and reports every problem found.
    pub fn validate(&self, origin: &str, text: &str) -> Result<(), ConfigError> {
        let mut issues = Issues {
            origin,
            text,
            found: Vec::new(),
        };
        self.check_routes(&mut issues);
        self.check_filter_owners(&mut issues);
        for (field, message) in self.connections.problems() {
            issues.add(format!("connections.{field}"), field, message);
        }
        self.check_sinks(&mut issues);
        #[cfg(feature = "kafka")]
        self.check_kafka(&mut issues);
        #[cfg(feature = "toggle")]
        self.check_grpc(&mut issues);
        self.check_tenants_and_admin(&mut issues);
        self.check_listener(&mut issues);
        #[cfg(feature = "k8s")]
        self.check_events_api(&mut issues);
        if issues.found.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                issues: issues.found,
            })
        }
    }

    #[cfg(feature = "toggle")]
    fn check_grpc(&self, issues: &mut Issues<'_>) {
        if let Some(upstream) = &self.grpc.upstream {
            if let Err(message) = upstream.problem() {
                issues.add("grpc.upstream.url", &upstream.url, message);
            }
        }
    }

    /// A filter's `owner` names a configured tenant.
    fn check_filter_owners(&self, issues: &mut Issues<'_>) {
        for (name, filter) in &self.filters {
            if let Some(owner) = &filter.owner {
                if !self.tenants.contains_key(owner) {
                    let defined: Vec<&str> = self.tenants.keys().map(String::as_str).collect();
                    issues.add(
                        format!("filters.{name}.owner"),
                        owner,
                        format!("unknown tenant `{owner}` (defined: {})", defined.join(", ")),
                    );
                }
            }
        }
    }

    fn check_routes(&self, issues: &mut Issues<'_>) {
        let known = |names: Vec<&String>| {
            names
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.routes.is_empty() {
            issues.add("routes", "routes", "at least one route is needed");
        }
        let kinds = source_kinds();
        let mut names = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            if names.contains(&&route.name) {
                issues.add(
                    format!("routes[{i}].name"),
                    &route.name,
                    format!("route `{}` is defined twice", route.name),
                );
            }
            names.push(&route.name);
            for (j, from) in route.from.iter().enumerate() {
                if !kinds.contains(&from.as_str()) {
                    issues.add(
                        format!("routes[{i}].from[{j}]"),
                        from,
                        format!("unknown source `{from}` (known: {})", kinds.join(", ")),
                    );
                } else if from == "k8s" && !self.events_api_served() {
                    issues.add(
                        format!("routes[{i}].from[{j}]"),
                        from,
                        "source `k8s` needs `events_api: { enabled: true }`",
                    );
                } else if from == "k8s-watch" && !self.watches_clusters() {
                    issues.add(
                        format!("routes[{i}].from[{j}]"),
                        from,
                        "source `k8s-watch` needs `k8s_watch.clusters`",
                    );
                }
            }
            let chains = [
                (String::new(), &route.filters),
                (".enforced.before".to_owned(), &route.enforced.before),
                (".enforced.after".to_owned(), &route.enforced.after),
            ]
            .into_iter()
            .chain(
                route
                    .tenants
                    .iter()
                    .map(|(t, r)| (format!(".tenants.{t}"), &r.filters)),
            );
            for (prefix, chain) in chains {
                for (j, f) in chain.iter().enumerate() {
                    if !self.filters.contains_key(f) {
                        issues.add(
                            format!("routes[{i}]{prefix}.filters[{j}]"),
                            f,
                            format!(
                                "unknown filter `{f}` (defined: {})",
                                known(self.filters.keys().collect())
                            ),
                        );
                    }
                }
            }
            for tenant in route.tenants.keys() {
                if !self.tenants.contains_key(tenant) {
                    issues.add(
                        format!("routes[{i}].tenants.{tenant}"),
                        tenant,
                        format!(
                            "unknown tenant `{tenant}` (defined: {})",
                            known(self.tenants.keys().collect())
                        ),
                    );
                }
            }
            for (j, sink) in route.routable.iter().enumerate() {
                if !self.sinks.contains_key(sink) {
                    issues.add(
                        format!("routes[{i}].routable[{j}]"),
                        sink,
                        format!(
                            "unknown sink `{sink}` (defined: {})",
                            known(self.sinks.keys().collect())
                        ),
                    );
                }
            }
            for (j, sink) in route.to.iter().enumerate() {
                if !self.sinks.contains_key(sink) {
                    issues.add(
                        format!("routes[{i}].to[{j}]"),
                        sink,
                        format!(
                            "unknown sink `{sink}` (defined: {})",
                            known(self.sinks.keys().collect())
                        ),
                    );
                }
            }
            self.check_dead_letter_sink(
                issues,
                &format!("routes[{i}].dead_letter"),
                &route.dead_letter,
            );
            if let Err((j, e)) = weir_core::cesql::Condition::compile(&route.when) {
                let needle = match &route.when[j] {
                    weir_core::cesql::Dialect::Cesql(src) => src.as_str(),
                    _ => "when",
                };
                issues.add(format!("routes[{i}].when[{j}]"), needle, e.to_string());
            }
            if route.filter_retries > 10 {
                issues.add(
                    format!("routes[{i}].filter_retries"),
                    "filter_retries",
                    "at most 10",
                );
            }
            if route.batch.max_events == 0 || route.batch.max_bytes < 1024 {
                issues.add(
                    format!("routes[{i}].batch"),
                    "batch",
                    "max_events must be at least 1 and max_bytes at least 1024",
                );
            }
        }
    }

    /// A `dead_letter` setting (at `field`) must name a sink that can hold dead letters,
    /// and a sink that keeps them apart from events must not also be a route's
    /// destination.
    fn check_dead_letter_sink(&self, issues: &mut Issues<'_>, field: &str, name: &str) {
        let Some(sink) = self.sinks.get(name) else {
            issues.add(
                field,
                name,
                format!(
                    "unknown sink `{name}` (defined: {})",
                    self.sinks
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            return;
        };
        let can = sink.builder().capabilities();
        if !can.dead_letters {
            issues.add(
                field,
                name,
                format!(
                    "a {} sink cannot hold dead letters; name a file sink{}",
                    sink.kind(),
                    if cfg!(feature = "kafka") {
                        " or a kafka sink"
                    } else {
                        ""
                    }
                ),
            );
        } else if can.dead_letters_apart
            && self.routes.iter().any(|r| r.to.iter().any(|s| s == name))
        {
            issues.add(field, name, MIXED_PROTOBUF_FILE);
        }
    }

    fn check_sinks(&self, issues: &mut Issues<'_>) {
        for (name, sink) in &self.sinks {
            for problem in sink.builder().problems() {
                let field = match problem.field.as_str() {
                    "" => format!("sinks.{name}"),
                    f => format!("sinks.{name}.{f}"),
                };
                issues.add(field, name, problem.message);
            }
        }
    }

    /// Checks the Kafka section: the cluster, each source's settings, its route and its
    /// dead-letter sink, and that `from: [kafka]` has a source.
    /// The topics `kafka.topics.auto_create` provisions, by cluster: those the Kafka
    /// sources name literally (not `^` patterns) and those the Kafka sinks write.
    #[cfg(feature = "kafka")]
    pub fn kafka_topics(&self) -> Vec<(weir_kafka::ClusterConfig, Vec<String>)> {
        let mut by_cluster: Vec<(weir_kafka::ClusterConfig, Vec<String>)> = Vec::new();
        let mut add = |cluster: &weir_kafka::ClusterConfig, topic: &str| {
            let at = match by_cluster.iter().position(|(c, _)| c == cluster) {
                Some(at) => at,
                None => {
                    by_cluster.push((cluster.clone(), Vec::new()));
                    by_cluster.len() - 1
                }
            };
            let topics = &mut by_cluster[at].1;
            if !topics.iter().any(|t| t == topic) {
                topics.push(topic.to_owned());
            }
        };
        for source in self.kafka.sources.values() {
            if let Some(cluster) = &source.cluster {
                for topic in source.topics.iter().filter(|t| !t.starts_with('^')) {
                    add(cluster, topic);
                }
            }
        }
        for sink in self.sinks.values() {
            if let SinkConfig::Kafka(kafka) = sink {
                if let Some(cluster) = &kafka.cluster {
                    add(cluster, &kafka.topic);
                }
            }
        }
        by_cluster
    }

    #[cfg(feature = "kafka")]
    fn check_kafka(&self, issues: &mut Issues<'_>) {
        let k = &self.kafka;
        if let Err(e) = k.topics.check() {
            issues.add("kafka.topics", "topics", e.0);
        }
        if let Some(cluster) = &k.cluster {
            if let Err(e) = cluster.check() {
                issues.add("kafka.cluster", "cluster", e.0);
            }
        }
        for (name, source) in &k.sources {
            let field = format!("kafka.sources.{name}");
            if let Err(e) = source.check() {
                issues.add(field.clone(), name, e.0);
            }
            match &source.cluster {
                Some(c) => {
                    if let Err(e) = c.check() {
                        issues.add(format!("{field}.cluster"), name, e.0);
                    }
                }
                None => issues.add(
                    field.clone(),
                    name,
                    "a Kafka source needs a cluster: set `kafka.cluster` or the source's `cluster`",
                ),
            }
            self.check_dead_letter_sink(
                issues,
                &format!("{field}.dead_letter"),
                &source.dead_letter,
            );
            if let Some(route) = &source.route {
                let fed = self
                    .routes
                    .iter()
                    .any(|r| &r.name == route && r.from.iter().any(|f| f == "kafka"));
                if !fed {
                    issues.add(
                        format!("{field}.route"),
                        route,
                        format!("no route `{route}` with `from: [kafka]`"),
                    );
                }
            }
        }
        let wants_kafka = self
            .routes
            .iter()
            .position(|r| r.from.iter().any(|f| f == "kafka"));
        if let (Some(i), true) = (wants_kafka, k.sources.is_empty()) {
            issues.add(
                format!("routes[{i}].from"),
                "kafka",
                "source `kafka` needs a consumer under `kafka.sources`",
            );
        }
    }

    fn check_tenants_and_admin(&self, issues: &mut Issues<'_>) {
        for (name, tenant) in &self.tenants {
            let l = tenant.limits;
            if l.timeout_ms == 0 || l.memory_mb == 0 || l.output_mb == 0 {
                issues.add(
                    format!("tenants.{name}.limits"),
                    name,
                    "timeout_ms, memory_mb and output_mb must be positive",
                );
            }
            if l.memory_mb > 4096 {
                issues.add(
                    format!("tenants.{name}.limits.memory_mb"),
                    "memory_mb",
                    "at most 4096 MiB (a 32-bit guest cannot address more)",
                );
            }
        }
        for (i, p) in self.tenancy.producers.iter().enumerate() {
            let field = |f: &str| format!("tenancy.producers[{i}].{f}");
            if !self.tenants.contains_key(&p.tenant) {
                issues.add(
                    field("tenant"),
                    &p.tenant,
                    format!("unknown tenant `{}`", p.tenant),
                );
            }
            let kinds = [p.sha256.is_some(), p.user.is_some(), p.group.is_some()];
            if kinds.iter().filter(|k| **k).count() != 1 {
                issues.add(
                    field("name"),
                    &p.name,
                    "give exactly one of `sha256`, `user` or `group`",
                );
            }
            if let Some(hash) = &p.sha256 {
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    issues.add(
                        field("sha256"),
                        hash,
                        "a SHA-256 is 64 hex digits (`printf %s \"$TOKEN\" | sha256sum`)",
                    );
                }
                let same = |other: &str| other.eq_ignore_ascii_case(hash);
                let earlier = self.tenancy.producers[..i]
                    .iter()
                    .any(|q| q.sha256.as_deref().is_some_and(same));
                if earlier || self.admin.tokens.iter().any(|t| same(&t.sha256)) {
                    issues.add(
                        field("sha256"),
                        hash,
                        "this token is configured already (a producer's or an admin token): one token, one meaning",
                    );
                }
            }
            for (kind, value) in [("user", &p.user), ("group", &p.group)] {
                if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                    issues.add(
                        field(kind),
                        kind,
                        format!("an empty {kind} would match callers without one"),
                    );
                }
            }
        }
        #[cfg(feature = "k8s")]
        if self.events_api_served()
            && !self.tenancy.producers.is_empty()
            && self.authentication.anonymous.is_none()
            && self.authentication.request_header.is_none()
            && self.tls.as_ref().is_none_or(|t| t.client_ca.is_none())
        {
            issues.add(
                "tenancy.producers",
                "producers",
                "producer credentials turn anonymous access off, and the Events API authenticates only client certificates and a front proxy: with neither configured no one could reach it. Set tls.client_ca or authentication.request_header, or authentication.anonymous",
            );
        }
        for (i, m) in self.tenancy.sources.iter().enumerate() {
            if !self.tenants.contains_key(&m.tenant) {
                issues.add(
                    format!("tenancy.sources[{i}].tenant"),
                    &m.tenant,
                    format!("unknown tenant `{}`", m.tenant),
                );
            }
        }
        if self.admin.tls.is_some() && self.admin.listen.is_none() {
            issues.add(
                "admin.tls",
                "tls",
                "TLS is for the admin API's own listener: set admin.listen too",
            );
        }
        let has_client_ca = self
            .admin
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca.is_some());
        if !self.admin.client_certs.is_empty() && !has_client_ca {
            issues.add(
                "admin.client_certs",
                "client_certs",
                "client certificates need admin.tls.client_ca to verify them",
            );
        }
        let role_ok = |role: &str| {
            role == "admin"
                || role
                    .strip_prefix("tenant:")
                    .is_some_and(|t| self.tenants.contains_key(t))
        };
        for (i, c) in self.admin.client_certs.iter().enumerate() {
            if !role_ok(&c.role) {
                issues.add(
                    format!("admin.client_certs[{i}].role"),
                    &c.role,
                    format!(
                        "role `{}` must be `admin` or `tenant:<configured tenant>`",
                        c.role
                    ),
                );
            }
        }
        for (i, token) in self.admin.tokens.iter().enumerate() {
            let hex_ok =
                token.sha256.len() == 64 && token.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex_ok {
                issues.add(
                    format!("admin.tokens[{i}].sha256"),
                    &token.name,
                    "must be the 64-digit hex SHA-256 of the token",
                );
            }
            if !role_ok(&token.role) {
                issues.add(
                    format!("admin.tokens[{i}].role"),
                    &token.role,
                    format!(
                        "role `{}` must be `admin` or `tenant:<configured tenant>`",
                        token.role
                    ),
                );
            }
        }
        if !(1..=8192).contains(&self.engine.max_instances) {
            issues.add(
                "engine.max_instances",
                "max_instances",
                "must be between 1 and 8192",
            );
        }
    }

    fn check_listener(&self, issues: &mut Issues<'_>) {
        if self.ingest.max_event_bytes == 0
            || self.ingest.max_request_bytes < self.ingest.max_event_bytes
        {
            issues.add(
                "ingest",
                "ingest",
                "max_event_bytes must be positive and at most max_request_bytes",
            );
        }
        for gate in self.feature_gates.keys() {
            if !KNOWN_GATES.contains(&gate.as_str()) {
                issues.add(
                    format!("feature_gates.{gate}"),
                    gate,
                    format!(
                        "unknown feature gate `{gate}` (known: {})",
                        KNOWN_GATES.join(", ")
                    ),
                );
            }
        }
        if self.authentication.request_header.is_some() && self.tls.is_none() {
            issues.add(
                "authentication.request_header",
                "request_header",
                "request-header authentication needs `tls` on the listener: the front proxy's client certificate is verified first",
            );
        }
    }

    /// Checks the Events API: its own settings, and the route that admits its writes.
    #[cfg(feature = "k8s")]
    fn check_events_api(&self, issues: &mut Issues<'_>) {
        for problem in self.k8s_watch.problems() {
            let needle = problem
                .field
                .rsplit('.')
                .next()
                .unwrap_or("k8s_watch")
                .to_owned();
            issues.add(
                format!("k8s_watch.{}", problem.field),
                &needle,
                problem.message,
            );
        }
        for problem in self.events_api.problems(self.events_proxy()) {
            let needle = problem
                .field
                .rsplit('.')
                .next()
                .unwrap_or("events_api")
                .to_owned();
            issues.add(
                format!("events_api.{}", problem.field),
                &needle,
                problem.message,
            );
        }
        if let Some(route) = &self.events_api.route {
            let fed = self
                .routes
                .iter()
                .any(|r| &r.name == route && r.from.iter().any(|f| f == "k8s"));
            if !fed {
                issues.add(
                    "events_api.route",
                    route,
                    format!("`{route}` must name a route with `from: [k8s]`"),
                );
            }
        } else if self.events_api_served() {
            let fed = self
                .routes
                .iter()
                .filter(|r| r.from.iter().any(|f| f == "k8s"))
                .count();
            if fed > 1 {
                issues.add(
                    "events_api.route",
                    "events_api",
                    "several routes take `from: [k8s]`: name the one whose filters admit writes in events_api.route",
                );
            }
        }
    }

    /// Whether proxy mode is on (`feature_gates: { EventsProxy: true }`).
    pub fn events_proxy(&self) -> bool {
        self.feature_gates
            .get(EVENTS_PROXY_GATE)
            .copied()
            .unwrap_or(false)
    }

    /// Whether the Events API is served (embedded, or as a proxy).
    #[cfg(feature = "k8s")]
    pub fn events_api_served(&self) -> bool {
        self.events_api.enabled || self.events_proxy()
    }

    /// Whether the cluster watch has clusters to watch.
    #[cfg(feature = "k8s")]
    pub fn watches_clusters(&self) -> bool {
        self.k8s_watch.enabled()
    }

    /// Whether the cluster watch has clusters to watch: never without the `k8s` feature.
    #[cfg(not(feature = "k8s"))]
    pub fn watches_clusters(&self) -> bool {
        false
    }

    /// Whether the Events API is served: never without the `k8s` feature.
    #[cfg(not(feature = "k8s"))]
    pub fn events_api_served(&self) -> bool {
        false
    }

    /// The route admitting Events API writes: the configured one, else the only route
    /// fed by `k8s`.
    #[cfg(feature = "k8s")]
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

    /// Whether the main listener serves callers without credentials: as configured,
    /// else only when nothing authenticates its callers (no front proxy, no client
    /// certificates, no producer credentials).
    pub fn anonymous_allowed(&self) -> bool {
        let has_authenticator = self.authentication.request_header.is_some()
            || self.tls.as_ref().is_some_and(|t| t.client_ca.is_some())
            || !self.tenancy.producers.is_empty();
        self.authentication.anonymous.unwrap_or(!has_authenticator)
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
        ConfigError::one(ConfigIssue {
            origin: origin.to_owned(),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            field,
            message,
        })
    })
}

fn apply_overrides(
    origin: &str,
    text: &str,
    overrides: &[(String, String)],
) -> Result<Config, ConfigError> {
    let mut tree: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
        ConfigError::one(ConfigIssue {
            origin: origin.to_owned(),
            line: None,
            column: None,
            field: String::new(),
            message: e.to_string(),
        })
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
    serde_path_to_error::deserialize(tree).map_err(|e| {
        ConfigError::one(ConfigIssue {
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

    #[cfg(feature = "k8s")]
    #[test]
    fn feature_gates_parse_and_unknown_ones_are_refused() {
        assert_eq!(
            parse_feature_gates("EventsProxy=true").expect("valid"),
            vec![("EventsProxy".to_owned(), true)]
        );
        assert!(parse_feature_gates("EventsProxy=yes")
            .unwrap_err()
            .contains("not true or false"));
        assert!(parse_feature_gates("EventProxy=true")
            .unwrap_err()
            .contains("unknown feature gate"));
    }

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
        let e = e.first();
        assert_eq!(e.field, "routes[0].dead_letter", "{e}");
        assert!(e.message.contains("cannot hold both"), "{e}");
        let text = format!("{sinks}{}", GOOD.replace("    to: [tail]", "    to: [pb]"));
        Config::parse("weir.yaml", &text, &[]).expect("events only");
    }

    #[test]
    fn typos_name_file_line_and_field() {
        let text = GOOD.replace("    to: [tail]", "    to: [tail]\n    on_falure: drop");
        let e = Config::parse("weir.yaml", &text, &[]).expect_err("typo");
        let e = e.first();
        assert_eq!(e.line, Some(10), "{e}");
        assert!(e.to_string().starts_with("weir.yaml:10:"), "{e}");
        assert!(e.message.contains("on_falure"), "{e}");
        let text = GOOD.replace("filters: [severity]", "filters: [severty]");
        let e = Config::parse("weir.yaml", &text, &[]).expect_err("unknown filter");
        let e = e.first();
        assert_eq!(e.line, Some(8), "{e}");
        assert_eq!(e.field, "routes[0].filters[0]");
        assert!(e.message.contains("unknown filter `severty`"), "{e}");
        let text = GOOD.replace("listen: 127.0.0.1:9000", "listen: nowhere");
        let e = Config::parse("weir.yaml", &text, &[]).expect_err("bad address");
        let e = e.first();
        assert_eq!((e.line, e.field.as_str()), (Some(1), "listen"), "{e}");
    }

    #[test]
    fn producer_credentials_name_a_tenant_and_exactly_one_credential() {
        let with = |producers: &str| {
            format!("{GOOD}tenants: {{ acme: {{}} }}\ntenancy:\n  producers:\n{producers}")
        };
        let hash = "ab".repeat(32);
        let good = format!("    - {{ name: a, tenant: acme, sha256: {hash} }}\n    - {{ name: b, tenant: acme, group: writers }}\n");
        let config = Config::parse("weir.yaml", &with(&good), &[]).expect("valid");
        assert!(
            !config.anonymous_allowed(),
            "credentials end anonymous access"
        );
        let bad = format!(
            "    - {{ name: a, tenant: initech, sha256: {hash} }}\n    - {{ name: b, tenant: acme, user: u, group: g }}\n    - {{ name: c, tenant: acme, sha256: not-hex }}\n"
        );
        let e = Config::parse("weir.yaml", &with(&bad), &[]).expect_err("invalid");
        let fields: Vec<&str> = e.issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "tenancy.producers[0].tenant",
                "tenancy.producers[1].name",
                "tenancy.producers[2].sha256"
            ],
            "{e}"
        );
        // One token, one meaning; an empty user would match callers without one.
        let twice = format!(
            "    - {{ name: a, tenant: acme, sha256: {hash} }}\n    - {{ name: b, tenant: acme, sha256: {} }}\n    - {{ name: c, tenant: acme, user: \"\" }}\n",
            hash.to_uppercase()
        );
        let e = Config::parse("weir.yaml", &with(&twice), &[]).expect_err("invalid");
        let fields: Vec<&str> = e.issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            ["tenancy.producers[1].sha256", "tenancy.producers[2].user"],
            "{e}"
        );
        // The Events API authenticates only certificates and a front proxy: producer
        // credentials without either would lock everyone out of it.
        let locked = format!("{}events_api: {{ enabled: true }}\n", with(&good));
        let e = Config::parse("weir.yaml", &locked, &[]).expect_err("locked out");
        assert_eq!(e.first().field, "tenancy.producers", "{e}");
        let open = format!("{locked}authentication: {{ anonymous: true }}\n");
        Config::parse("weir.yaml", &open, &[]).expect("anonymous said explicitly");
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
        let e = e.first();
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
        let e = e.first();
        assert!(e.message.contains("`example.com/tenant-type`"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = GOOD
            .replace("filters: [severity]", "filters: [severty]")
            .replace(
                "    to: [tail]",
                "    to: [tial]\n    batch: { max_events: 0 }",
            );
        let e = Config::parse("weir.yaml", &text, &[]).expect_err("three problems");
        let fields: Vec<&str> = e.issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            ["routes[0].filters[0]", "routes[0].to[0]", "routes[0].batch"],
            "{e}"
        );
        assert_eq!(e.to_string().lines().count(), 3, "{e}");
        assert!(e.issues.iter().all(|i| i.line.is_some()), "{e}");
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
        let e = e.first();
        assert!(e.to_string().contains("WEIR__LISTEN"), "{e}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// Every example configuration in `examples/` must stay valid.
    #[test]
    fn example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
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
