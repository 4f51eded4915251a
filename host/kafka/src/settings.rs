//! Configuration of the Kafka source and sinks: the cluster connection (brokers, TLS,
//! SASL/SCRAM with the password from a file or an environment variable), consumer groups,
//! producer settings, retries and the circuit breaker. Turned into librdkafka properties
//! here, so every client weir makes (source, sink, replay) speaks to the cluster alike.

use rdkafka::ClientConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The top-level `kafka:` section: the cluster and the consumers fed from it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// The cluster every Kafka source and sink uses unless a sink names its own.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// Consumer groups by name, each feeding the routes with `from: [kafka]`.
    #[serde(default)]
    pub sources: BTreeMap<String, KafkaSourceConfig>,
    /// Whether and how weir creates missing topics at start-up.
    #[serde(default)]
    pub topics: TopicsConfig,
}

/// Topic provisioning (the Roost Keeper's `topics.autoCreate`, `defaultPartitions`,
/// `replicationFactor`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// Create the topics the Kafka sources name literally (not `^` patterns) and the Kafka
    /// sinks write, when missing, at start-up (default false).
    #[serde(default)]
    pub auto_create: bool,
    /// Partitions of a created topic (default 3).
    #[serde(default = "default_partitions")]
    pub default_partitions: i32,
    /// Replicas of each partition of a created topic (default 1: a single broker; a
    /// production cluster wants 3). Must not exceed the brokers in the cluster.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            auto_create: false,
            default_partitions: default_partitions(),
            replication_factor: default_replication(),
        }
    }
}

impl TopicsConfig {
    /// What is wrong with the settings, if anything.
    pub fn check(&self) -> Result<(), KafkaSettingsError> {
        if self.default_partitions < 1 || self.replication_factor < 1 {
            return Err(KafkaSettingsError(
                "default_partitions and replication_factor must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

fn default_partitions() -> i32 {
    3
}
fn default_replication() -> i32 {
    1
}

/// How to reach a Kafka cluster.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// TLS and SASL.
    #[serde(default)]
    pub security: SecurityConfig,
    /// Further librdkafka properties, passed as they are (e.g. `socket.keepalive.enable`).
    /// Properties weir sets for its guarantees cannot be overridden here.
    #[serde(default)]
    pub client: BTreeMap<String, String>,
}

/// `security.protocol`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// No TLS, no SASL (default).
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Plaintext => "plaintext",
            Protocol::Ssl => "ssl",
            Protocol::SaslPlaintext => "sasl_plaintext",
            Protocol::SaslSsl => "sasl_ssl",
        }
    }

    fn sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }

    fn tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }
}

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum Mechanism {
    /// SCRAM with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    /// Plain user and password (over TLS only, please).
    #[serde(rename = "PLAIN")]
    Plain,
}

impl Mechanism {
    fn as_str(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::Plain => "PLAIN",
        }
    }
}

/// Where a secret comes from: a file or an environment variable (exactly one), never the
/// configuration itself; never logged.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// A file holding the secret (surrounding whitespace is ignored).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// An environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
}

impl SecretSource {
    /// Reads the secret.
    pub fn read(&self) -> Result<String, KafkaSettingsError> {
        let secret = match (&self.file, &self.env) {
            (Some(path), None) => std::fs::read_to_string(path).map_err(|e| {
                KafkaSettingsError(format!("cannot read secret file {}: {e}", path.display()))
            })?,
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                KafkaSettingsError(format!("environment variable {var} is not set"))
            })?,
            _ => {
                return Err(KafkaSettingsError(
                    "a secret names exactly one of `file` and `env`".into(),
                ))
            }
        };
        let secret = secret.trim().to_owned();
        if secret.is_empty() {
            return Err(KafkaSettingsError("the secret is empty".into()));
        }
        Ok(secret)
    }
}

/// TLS and SASL settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default)]
    pub protocol: Protocol,
    /// `SCRAM-SHA-256`, `SCRAM-SHA-512` or `PLAIN` (with a SASL protocol).
    #[serde(default)]
    pub mechanism: Option<Mechanism>,
    /// The SASL user.
    #[serde(default)]
    pub username: Option<String>,
    /// The SASL password, from a file or an environment variable.
    #[serde(default)]
    pub password: Option<SecretSource>,
    /// PEM CA bundle the brokers' certificates must chain to (default: the system's).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `key`).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Check the brokers' host names against their certificates (default true).
    #[serde(default = "yes")]
    pub verify_hostname: bool,
}

fn yes() -> bool {
    true
}

/// Where a new consumer group starts when it has no committed offset.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    /// The oldest retained message.
    Earliest,
    /// Only messages produced from now on (default, as librdkafka's).
    #[default]
    Latest,
}

/// A Kafka source: one consumer group reading topics into the routes.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Topics to read. A name starting with `^` is a regular expression matching topics.
    pub topics: Vec<String>,
    /// The consumer group (default `weir`).
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Where to start without a committed offset.
    #[serde(default)]
    pub auto_offset_reset: OffsetReset,
    /// Consumers of the group in this router (default 1); the group shares the partitions
    /// among them and among other routers with the same group id.
    #[serde(default = "one")]
    pub instances: usize,
    /// Only this route takes the messages (default: every route with `from: [kafka]`).
    #[serde(default)]
    pub route: Option<String>,
    /// The sink for messages that are not valid CloudEvents (default `dead-letter`).
    #[serde(default = "default_dead_letter")]
    pub dead_letter: String,
    /// Most messages handed to the routes at once (default 1000).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Longest a batch waits to fill, milliseconds (default 5).
    #[serde(default = "default_batch_linger")]
    pub batch_linger_ms: u64,
    /// Batches handed on before the oldest is done (default 4). Offsets are committed in
    /// order, whatever order the batches finish in.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// How often stored offsets are committed, milliseconds (default 1000). Records
    /// finished since the last commit are read again after a crash.
    #[serde(default = "default_commit_interval")]
    pub commit_interval_ms: u64,
    /// The longest a fetch may wait at the broker for data, milliseconds (librdkafka's
    /// `fetch.wait.max.ms`; default 100, librdkafka's own is 500). A Kafka broker answers
    /// as soon as data is there, so a shorter wait costs only idle requests (up to 10 a
    /// second per broker at 100); a broker that holds a fetch to its wait time (the tests'
    /// `tansu` does, when a partition of the request has nothing new) stalls the source
    /// that long: with 500 weir drained a backlog at 78k records/s, with 100 at 110–126k.
    /// `fetch.wait.max.ms` under the cluster's `client:` wins over this.
    #[serde(default = "default_fetch_wait")]
    pub fetch_wait_max_ms: u64,
    /// Largest message accepted, bytes (default: the HTTP ingest's `max_event_bytes`);
    /// larger ones are dead-lettered.
    #[serde(default)]
    pub max_message_bytes: Option<usize>,
    /// The cluster, when not the top-level one.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

fn default_group() -> String {
    "weir".into()
}
fn one() -> usize {
    1
}
fn default_dead_letter() -> String {
    "dead-letter".into()
}
fn default_max_batch() -> usize {
    1000
}
fn default_batch_linger() -> u64 {
    5
}
fn default_in_flight() -> usize {
    4
}
fn default_commit_interval() -> u64 {
    1000
}
fn default_fetch_wait() -> u64 {
    100
}

/// How a sink writes CloudEvents into records.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BindingMode {
    /// Attributes in `ce_` headers, data as the value (default).
    #[default]
    Binary,
    /// The JSON event format as the value (`application/cloudevents+json`).
    Structured,
}

/// When a write to a Kafka sink returns.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Publish {
    /// When the brokers acknowledged every record (`acks=all`); at-least-once (default).
    #[default]
    Sync,
    /// When the records are queued in the client; failures are counted and logged but
    /// the source has already been told the events were written.
    Async,
}

/// Compression codec of produced batches.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// None (default).
    #[default]
    None,
    /// gzip.
    Gzip,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
    /// Snappy.
    Snappy,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Snappy => "snappy",
        }
    }
}

pub use weir_core::resilience::{BreakerConfig, RetryConfig};

/// A Kafka sink (`type: kafka`): a producer writing CloudEvents to one topic.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// The topic. A filter's `route` verdict picks another sink, and so another topic.
    pub topic: String,
    /// Binary (default) or structured records.
    #[serde(default)]
    pub mode: BindingMode,
    /// Sync (default: wait for the brokers) or async publishing.
    #[serde(default)]
    pub publish: Publish,
    /// Batch compression.
    #[serde(default)]
    pub compression: Compression,
    /// How long the client waits to fill a batch, milliseconds (default 5).
    #[serde(default = "default_linger")]
    pub linger_ms: u64,
    /// Most bytes in one produce batch (default 1 MB).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Most records in one produce batch (default 10000).
    #[serde(default = "default_batch_records")]
    pub batch_num_messages: usize,
    /// How long a record may take to be acknowledged, librdkafka's own retries included,
    /// milliseconds (default 30000).
    #[serde(default = "default_message_timeout")]
    pub message_timeout_ms: u64,
    /// Retries of records that still failed.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The circuit breaker.
    #[serde(default)]
    pub circuit_breaker: BreakerConfig,
    /// The cluster, when not the top-level one.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

fn default_linger() -> u64 {
    5
}
fn default_batch_size() -> usize {
    1_000_000
}
fn default_batch_records() -> usize {
    10_000
}
fn default_message_timeout() -> u64 {
    30_000
}

/// A Kafka setting that cannot be used, saying why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KafkaSettingsError(pub String);

/// librdkafka properties that weir sets for its delivery guarantee; `client:` may not
/// change them.
const RESERVED: [&str; 9] = [
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "enable.auto.offset.store",
    "enable.auto.commit",
    "group.id",
    "bootstrap.servers",
    "sasl.password",
    "partition.assignment.strategy",
];

impl ClusterConfig {
    /// Checks the settings that can be checked without connecting.
    pub fn check(&self) -> Result<(), KafkaSettingsError> {
        if self.brokers.is_empty() {
            return Err(KafkaSettingsError("brokers: at least one is needed".into()));
        }
        let s = &self.security;
        if s.protocol.sasl() {
            if s.mechanism.is_none() || s.username.is_none() || s.password.is_none() {
                return Err(KafkaSettingsError(format!(
                    "security: protocol `{}` needs mechanism, username and password",
                    s.protocol.as_str()
                )));
            }
            if let Some(p) = &s.password {
                if p.file.is_some() == p.env.is_some() {
                    return Err(KafkaSettingsError(
                        "security.password: name exactly one of `file` and `env`".into(),
                    ));
                }
            }
        } else if s.mechanism.is_some() || s.username.is_some() || s.password.is_some() {
            return Err(KafkaSettingsError(format!(
                "security: mechanism, username and password need protocol sasl_plaintext or sasl_ssl (protocol is `{}`)",
                s.protocol.as_str()
            )));
        }
        if !s.protocol.tls() && (s.ca.is_some() || s.cert.is_some() || s.key.is_some()) {
            return Err(KafkaSettingsError(
                "security: ca, cert and key need protocol ssl or sasl_ssl".into(),
            ));
        }
        if s.cert.is_some() != s.key.is_some() {
            return Err(KafkaSettingsError(
                "security: cert and key go together".into(),
            ));
        }
        if let Some(key) = self.client.keys().find(|k| RESERVED.contains(&k.as_str())) {
            return Err(KafkaSettingsError(format!(
                "client: `{key}` is set by weir (for its delivery guarantee or from `security`)"
            )));
        }
        Ok(())
    }

    /// The librdkafka properties for a client of this cluster, secrets read now.
    pub fn client_config(&self) -> Result<ClientConfig, KafkaSettingsError> {
        self.check()?;
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.join(","));
        let s = &self.security;
        c.set("security.protocol", s.protocol.as_str());
        if let (Some(mechanism), Some(user), Some(password)) =
            (s.mechanism, &s.username, &s.password)
        {
            c.set("sasl.mechanisms", mechanism.as_str());
            c.set("sasl.username", user);
            c.set("sasl.password", password.read()?);
        }
        let path = |p: &PathBuf| p.display().to_string();
        if let Some(ca) = &s.ca {
            c.set("ssl.ca.location", path(ca));
        }
        if let (Some(cert), Some(key)) = (&s.cert, &s.key) {
            c.set("ssl.certificate.location", path(cert));
            c.set("ssl.key.location", path(key));
        }
        if s.protocol.tls() && !s.verify_hostname {
            c.set("ssl.endpoint.identification.algorithm", "none");
        }
        for (k, v) in &self.client {
            c.set(k, v);
        }
        Ok(c)
    }
}

impl KafkaSourceConfig {
    /// Checks the source's own settings.
    pub fn check(&self) -> Result<(), KafkaSettingsError> {
        if self.topics.is_empty() {
            return Err(KafkaSettingsError("topics: at least one is needed".into()));
        }
        if self.instances == 0 || self.instances > 64 {
            return Err(KafkaSettingsError("instances: between 1 and 64".into()));
        }
        if self.max_batch == 0 || self.max_in_flight == 0 {
            return Err(KafkaSettingsError(
                "max_batch and max_in_flight must be at least 1".into(),
            ));
        }
        if self.group_id.is_empty() {
            return Err(KafkaSettingsError("group_id must not be empty".into()));
        }
        // librdkafka wants socket.timeout.ms (60 s) above fetch.wait.max.ms + 1 s.
        if self.fetch_wait_max_ms > 59_000 {
            return Err(KafkaSettingsError(
                "fetch_wait_max_ms: at most 59000 (the client's socket timeout is 60 s)".into(),
            ));
        }
        Ok(())
    }

    /// The consumer's properties on top of the cluster's: manual offset store with
    /// background commits of what was stored, cooperative rebalancing, statistics for the
    /// lag metric.
    pub fn consumer_config(
        &self,
        cluster: &ClusterConfig,
        instance: usize,
    ) -> Result<ClientConfig, KafkaSettingsError> {
        let mut c = cluster.client_config()?;
        c.set("group.id", &self.group_id)
            .set("client.id", format!("weir-{}-{instance}", self.group_id))
            .set("enable.auto.commit", "true")
            .set(
                "auto.commit.interval.ms",
                self.commit_interval_ms.max(1).to_string(),
            )
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "auto.offset.reset",
                match self.auto_offset_reset {
                    OffsetReset::Earliest => "earliest",
                    OffsetReset::Latest => "latest",
                },
            );
        if !cluster.client.contains_key("statistics.interval.ms") {
            c.set("statistics.interval.ms", "5000");
        }
        if !cluster.client.contains_key("fetch.wait.max.ms") {
            c.set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string());
        }
        Ok(c)
    }

    /// How long a batch waits to fill.
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }
}

impl KafkaSinkConfig {
    /// Checks the sink's own settings.
    pub fn check(&self) -> Result<(), KafkaSettingsError> {
        if self.topic.is_empty() {
            return Err(KafkaSettingsError("topic must not be empty".into()));
        }
        if self.message_timeout_ms == 0 {
            return Err(KafkaSettingsError(
                "message_timeout_ms must be positive".into(),
            ));
        }
        if self.circuit_breaker.enabled && self.circuit_breaker.failure_threshold == 0 {
            return Err(KafkaSettingsError(
                "circuit_breaker.failure_threshold must be at least 1".into(),
            ));
        }
        if self.retry.initial_backoff_ms > self.retry.max_backoff_ms {
            return Err(KafkaSettingsError(
                "retry.initial_backoff_ms must not exceed retry.max_backoff_ms".into(),
            ));
        }
        Ok(())
    }

    /// The producer's properties on top of the cluster's: idempotent, `acks=all`.
    pub fn producer_config(
        &self,
        cluster: &ClusterConfig,
    ) -> Result<ClientConfig, KafkaSettingsError> {
        let mut c = cluster.client_config()?;
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.codec", self.compression.as_str())
            .set("linger.ms", self.linger_ms.to_string())
            .set("batch.size", self.batch_size.to_string())
            .set("batch.num.messages", self.batch_num_messages.to_string())
            .set("message.timeout.ms", self.message_timeout_ms.to_string());
        if !cluster.client.contains_key("statistics.interval.ms") {
            c.set("statistics.interval.ms", "0");
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(yaml: &str) -> ClusterConfig {
        serde_norway::from_str(yaml).expect("parses")
    }

    #[test]
    fn scram_over_tls_reads_the_password_from_the_environment() {
        std::env::set_var("WEIR_TEST_KAFKA_PASSWORD", " s3cret \n");
        let c = cluster(
            "brokers: [a:9093, b:9093]\nsecurity:\n  protocol: sasl_ssl\n  mechanism: SCRAM-SHA-512\n  username: roost\n  password:\n    env: WEIR_TEST_KAFKA_PASSWORD\n  ca: /etc/ca.pem",
        );
        let props = c.client_config().expect("valid");
        assert_eq!(props.get("bootstrap.servers"), Some("a:9093,b:9093"));
        assert_eq!(props.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(props.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(props.get("sasl.username"), Some("roost"));
        assert_eq!(props.get("sasl.password"), Some("s3cret"));
        assert_eq!(props.get("ssl.ca.location"), Some("/etc/ca.pem"));
        // rdkafka's Debug of a client config hides the password.
        assert!(!format!("{props:?}").contains("s3cret"));
    }

    #[test]
    fn inconsistent_security_is_refused_with_the_field() {
        let e = cluster("brokers: [a:1]\nsecurity: {protocol: sasl_ssl, username: u}")
            .check()
            .expect_err("no mechanism");
        assert!(e.0.contains("mechanism, username and password"), "{e}");
        let e = cluster("brokers: [a:1]\nsecurity: {username: u}")
            .check()
            .expect_err("plaintext with a user");
        assert!(e.0.contains("sasl_plaintext or sasl_ssl"), "{e}");
        let e = cluster("brokers: [a:1]\nclient: {enable.idempotence: 'false'}")
            .check()
            .expect_err("reserved");
        assert!(e.0.contains("enable.idempotence"), "{e}");
        let missing = cluster(
            "brokers: [a:1]\nsecurity:\n  protocol: sasl_plaintext\n  mechanism: SCRAM-SHA-256\n  username: u\n  password:\n    env: WEIR_TEST_NOT_SET_ANYWHERE",
        );
        let e = missing.client_config().expect_err("unset variable");
        assert!(e.0.contains("WEIR_TEST_NOT_SET_ANYWHERE"), "{e}");
        assert!(serde_norway::from_str::<ClusterConfig>("brokers: [a]\nbroker: x").is_err());
    }

    #[test]
    fn producer_is_idempotent_with_acks_all() {
        let sink: KafkaSinkConfig =
            serde_norway::from_str("topic: out\ncompression: zstd").expect("parses");
        let props = sink
            .producer_config(&cluster("brokers: [a:1]"))
            .expect("valid");
        assert_eq!(props.get("enable.idempotence"), Some("true"));
        assert_eq!(props.get("acks"), Some("all"));
        assert_eq!(props.get("compression.codec"), Some("zstd"));
        let source: KafkaSourceConfig =
            serde_norway::from_str("topics: [in]\nauto_offset_reset: earliest").expect("parses");
        let props = source
            .consumer_config(&cluster("brokers: [a:1]"), 0)
            .expect("valid");
        assert_eq!(props.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(props.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(
            props.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        assert_eq!(props.get("fetch.wait.max.ms"), Some("100"));
    }

    #[test]
    fn the_fetch_wait_is_the_sources_unless_the_cluster_client_sets_it() {
        let source: KafkaSourceConfig = serde_norway::from_str(
            "topics: [in]
fetch_wait_max_ms: 20",
        )
        .expect("parses");
        let props = source
            .consumer_config(&cluster("brokers: [a:1]"), 0)
            .expect("valid");
        assert_eq!(props.get("fetch.wait.max.ms"), Some("20"));
        let props = source
            .consumer_config(
                &cluster("brokers: [a:1]\nclient: { fetch.wait.max.ms: \"250\" }"),
                0,
            )
            .expect("valid");
        assert_eq!(props.get("fetch.wait.max.ms"), Some("250"));
    }
}
