//! Configuration of the Toggle sink: where Toggle is, how to authenticate, and the buffer
//! and batching settings, given as a named profile that any field may override.

use super::spill::WhenFull;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A Toggle sink as written in the configuration (`type: toggle`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ToggleSinkConfig {
    /// Toggle's gRPC endpoint, `http://host:port` or `https://host:port`.
    pub url: String,
    /// TLS settings (implied for `https://` URLs).
    #[serde(default)]
    pub tls: Option<ClientTls>,
    /// A bearer token sent as `authorization: Bearer ...`, read from a file or an
    /// environment variable (never from the configuration itself, never logged). Only
    /// over `https://`, unless `allow_token_over_plaintext`.
    #[serde(default)]
    pub token: Option<TokenSource>,
    /// Send the token over a plain `http://` URL anyway (anyone on the path can read it).
    #[serde(default)]
    pub allow_token_over_plaintext: bool,
    /// Named preset of buffer and batching settings.
    #[serde(default)]
    pub profile: Profile,
    /// Events held in memory before writers wait (profile default).
    #[serde(default)]
    pub buffer_size: Option<usize>,
    /// Buffered events that make the sink write the buffer to disk (profile default).
    #[serde(default)]
    pub flush_threshold: Option<usize>,
    /// Events per request to Toggle (profile default).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Longest an event waits for its batch to fill, milliseconds (profile default). Writes
    /// wait for Toggle's acknowledgement, so this is latency added to a partial batch.
    #[serde(default)]
    pub batch_timeout_ms: Option<u64>,
    /// Longest a write waits before its events are made durable on disk instead of at
    /// Toggle, milliseconds; also the deadline of a live request (default 5000).
    #[serde(default)]
    pub max_block_ms: Option<u64>,
    /// Deadline of a request replaying a spill file, milliseconds (default 30000).
    #[serde(default)]
    pub replay_timeout_ms: Option<u64>,
    /// Largest request sent to Toggle, bytes; spill files are cut to it (default 4 MiB,
    /// gRPC's usual limit).
    #[serde(default)]
    pub max_message_bytes: Option<usize>,
    /// Longest pause between attempts while Toggle is down, milliseconds (default 5000;
    /// attempts back off from 100 ms with jitter).
    #[serde(default)]
    pub retry_max_ms: Option<u64>,
    /// How long shutdown may try to deliver the buffer before writing it to disk,
    /// milliseconds (default 5000).
    #[serde(default)]
    pub shutdown_grace_ms: Option<u64>,
    /// The spill directory.
    #[serde(default)]
    pub spill: SpillConfig,
    /// How the sink recovers once Toggle answers again while spill files wait: `direct`
    /// (default) sends new events at once while the backlog replays beside them;
    /// `ordered` queues new events on disk behind the backlog, so Toggle sees every event
    /// in the order the sink took it.
    #[serde(default)]
    pub recovery: Recovery,
}

/// See [`ToggleSinkConfig::recovery`].
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Recovery {
    /// New events go to Toggle directly; the backlog replays oldest first meanwhile.
    #[default]
    Direct,
    /// New events wait on disk behind the backlog (strict order).
    Ordered,
}

/// Client TLS for the connection to Toggle.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM CA bundle that Toggle's certificate must chain to.
    pub ca: PathBuf,
    /// PEM client certificate for mutual TLS (with `key`).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The name to verify Toggle's certificate against (default: the URL's host).
    #[serde(default)]
    pub domain: Option<String>,
}

pub use weir_core::auth::TokenSource;

/// The spill directory's settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct SpillConfig {
    /// The directory (default `<data dir>/spill/<sink name>`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Most bytes of spill files kept (default 1 GiB).
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// What happens at the cap: `refuse-newest` (default: the write fails and is
    /// dead-lettered, nothing acknowledged is lost) or `drop-oldest` (spilled events go).
    #[serde(default)]
    pub when_full: WhenFull,
}

/// Named presets of buffer and batching settings.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// 20,000 buffered, flush to disk at 18,000, 100 per request, 10 ms linger.
    #[default]
    Default,
    /// 100,000 buffered, flush at 90,000, 1,000 per request, 50 ms linger.
    HighThroughput,
    /// 5,000 buffered, flush at 4,500, 10 per request, 1 ms linger.
    LowLatency,
    /// 1,000 buffered, flush at 900, 50 per request, 100 ms linger (small devices).
    Minimal,
}

impl Profile {
    /// `(buffer_size, flush_threshold, batch_size, batch_timeout_ms)` of the profile.
    pub fn preset(self) -> (usize, usize, usize, u64) {
        match self {
            Profile::Default => (20_000, 18_000, 100, 10),
            Profile::HighThroughput => (100_000, 90_000, 1_000, 50),
            Profile::LowLatency => (5_000, 4_500, 10, 1),
            Profile::Minimal => (1_000, 900, 50, 100),
        }
    }
}

/// The sink's settings after the profile and overrides are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToggleSettings {
    /// Events held in memory.
    pub buffer_size: usize,
    /// Buffered events that trigger a write to disk.
    pub flush_threshold: usize,
    /// Events per request.
    pub batch_size: usize,
    /// Linger for a batch to fill.
    pub batch_timeout: Duration,
    /// Longest a write waits; deadline of a live request.
    pub max_block: Duration,
    /// Deadline of a replay request.
    pub replay_timeout: Duration,
    /// Largest request, bytes.
    pub max_message_bytes: usize,
    /// Longest pause between attempts while Toggle is down.
    pub retry_max: Duration,
    /// How long shutdown tries Toggle before writing to disk.
    pub shutdown_grace: Duration,
    /// Spill cap, bytes.
    pub spill_max_bytes: u64,
    /// Spill cap policy.
    pub when_full: WhenFull,
    /// Recovery order.
    pub recovery: Recovery,
}

impl ToggleSinkConfig {
    /// Applies the profile and the overrides, checking that the result makes sense.
    pub fn settings(&self) -> Result<ToggleSettings, String> {
        let (buffer, flush, batch, linger) = self.profile.preset();
        let s = ToggleSettings {
            buffer_size: self.buffer_size.unwrap_or(buffer),
            flush_threshold: self.flush_threshold.unwrap_or_else(|| {
                // An overridden buffer keeps the profile's 90 % threshold.
                self.buffer_size.map_or(flush, |b| b / 10 * 9)
            }),
            batch_size: self.batch_size.unwrap_or(batch),
            batch_timeout: Duration::from_millis(self.batch_timeout_ms.unwrap_or(linger)),
            max_block: Duration::from_millis(self.max_block_ms.unwrap_or(5_000)),
            replay_timeout: Duration::from_millis(self.replay_timeout_ms.unwrap_or(30_000)),
            max_message_bytes: self.max_message_bytes.unwrap_or(4 << 20),
            retry_max: Duration::from_millis(self.retry_max_ms.unwrap_or(5_000)),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms.unwrap_or(5_000)),
            spill_max_bytes: self.spill.max_bytes.unwrap_or(1 << 30),
            when_full: self.spill.when_full,
            recovery: self.recovery,
        };
        if s.buffer_size == 0 || s.batch_size == 0 {
            return Err("buffer_size and batch_size must be at least 1".into());
        }
        if s.flush_threshold == 0 || s.flush_threshold > s.buffer_size {
            return Err(format!(
                "flush_threshold must be between 1 and buffer_size ({})",
                s.buffer_size
            ));
        }
        if s.batch_size > s.buffer_size {
            return Err(format!(
                "batch_size must not exceed buffer_size ({})",
                s.buffer_size
            ));
        }
        if s.max_block.is_zero() || s.replay_timeout.is_zero() {
            return Err("max_block_ms and replay_timeout_ms must be positive".into());
        }
        if s.max_message_bytes < 1024 {
            return Err("max_message_bytes must be at least 1024".into());
        }
        check_endpoint(&self.url, self.tls.as_ref())?;
        if self.token.is_some()
            && self.url.starts_with("http://")
            && !self.allow_token_over_plaintext
        {
            return Err(format!(
                "the token would go in clear to `{}`: use https:// (or set allow_token_over_plaintext)",
                self.url
            ));
        }
        Ok(s)
    }
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
    /// The upstream Toggle that `Register` and `Connect` are passed through to, unchanged
    /// and with the agent's metadata, so an agent uses weir's address for all three calls.
    /// Without it those calls answer `UNIMPLEMENTED`.
    #[serde(default)]
    pub upstream: Option<Upstream>,
    /// Take `SendEvents` calls without a producer token (`authorization: Bearer` metadata
    /// matching `tenancy.producers`). Default: only when no producer credential is
    /// configured.
    #[serde(default)]
    pub anonymous: Option<bool>,
}

/// Where the gRPC source passes `Register` and `Connect` through to.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Toggle's gRPC endpoint, `http://host:port` or `https://host:port`.
    pub url: String,
    /// TLS settings (implied for `https://` URLs).
    #[serde(default)]
    pub tls: Option<ClientTls>,
}

impl Upstream {
    /// What is wrong with it, if anything.
    pub fn problem(&self) -> Result<(), String> {
        check_endpoint(&self.url, self.tls.as_ref())
    }
}

/// What is wrong with a Toggle endpoint's URL and TLS settings, if anything.
fn check_endpoint(url: &str, tls: Option<&ClientTls>) -> Result<(), String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("url `{url}` must start with http:// or https://"));
    }
    if tls.is_some_and(|t| t.cert.is_some() != t.key.is_some()) {
        return Err("tls.cert and tls.key go together".into());
    }
    Ok(())
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: None,
            type_prefix: default_type_prefix(),
            max_batch_events: default_grpc_batch(),
            upstream: None,
            anonymous: None,
        }
    }
}

fn default_type_prefix() -> String {
    crate::mapping::DEFAULT_TYPE_PREFIX.to_owned()
}

fn default_grpc_batch() -> usize {
    20_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> ToggleSinkConfig {
        serde_norway::from_str(yaml).expect("parses")
    }

    #[test]
    fn profiles_are_presets_that_fields_override() {
        let d = parse("url: http://t:1").settings().expect("valid");
        assert_eq!(
            (d.buffer_size, d.flush_threshold, d.batch_size),
            (20_000, 18_000, 100)
        );
        let h = parse("url: http://t:1\nprofile: high-throughput\nbatch_size: 500")
            .settings()
            .expect("valid");
        assert_eq!(
            (h.buffer_size, h.flush_threshold, h.batch_size),
            (100_000, 90_000, 500)
        );
        let m = parse("url: http://t:1\nprofile: minimal\nbuffer_size: 2000")
            .settings()
            .expect("valid");
        assert_eq!((m.buffer_size, m.flush_threshold), (2000, 1800));
        let l = parse("url: http://t:1\nprofile: low-latency")
            .settings()
            .expect("valid");
        assert_eq!(l.batch_timeout, Duration::from_millis(1));
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        let bad = parse("url: http://t:1\nbuffer_size: 10\nflush_threshold: 20").settings();
        assert!(bad.expect_err("invalid").contains("flush_threshold"));
        let clear = parse("url: http://t:1\ntoken: !env TOGGLE_TOKEN").settings();
        assert!(clear.expect_err("refused").contains("in clear"));
        let allowed =
            parse("url: http://t:1\ntoken: !env TOGGLE_TOKEN\nallow_token_over_plaintext: true");
        assert!(allowed.settings().is_ok());
        let tls = parse("url: https://t:1\ntoken: !env TOGGLE_TOKEN");
        assert!(tls.settings().is_ok());
        let bad = parse("url: t:1").settings();
        assert!(bad.expect_err("invalid").contains("http://"));
        assert!(serde_norway::from_str::<ToggleSinkConfig>("url: x\nbuffer: 1").is_err());
    }
}
