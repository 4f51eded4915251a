//! The HTTP sink's configuration and its checks.

use serde::Deserialize;
use weir_core::auth::TokenSource;
use weir_core::resilience::{BreakerConfig, Resilience, RetryConfig};
use weir_core::sink::ConfigProblem;
use weir_core::tls::ClientTlsSettings;

/// How events are put into requests (the CloudEvents HTTP binding's modes).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HttpMode {
    /// One request per event: attributes in `ce-` headers, the data as the body (default).
    #[default]
    Binary,
    /// One request per event: the event as `application/cloudevents+json`.
    Structured,
    /// One request per batch: `application/cloudevents-batch+json`.
    Batch,
}

/// An HTTP sink (`type: http`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Where events are POSTed: `http://…` or `https://…`.
    pub url: String,
    /// `binary` (default), `structured` or `batch`.
    #[serde(default)]
    pub mode: HttpMode,
    /// TLS: the CA bundle the receiver's certificate chains to (needed for `https://`),
    /// and a client certificate and key for mutual TLS.
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
    /// A bearer token sent as `Authorization: Bearer …`: `{ file: PATH }` or
    /// `{ env: VAR }`, read once at start.
    #[serde(default)]
    pub token: Option<TokenSource>,
    /// Deadline of one request, connection included, milliseconds (default 10000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Requests in flight at once for one write in binary and structured mode (default 16).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Retries of transient failures: connection errors, timeouts, 5xx and 429 (default on:
    /// 3 retries, 100 ms to 5 s). Other 4xx answers are refusals and are not retried.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The circuit breaker (default on: 5 failed writes open it for 30 s).
    #[serde(default)]
    pub circuit_breaker: BreakerConfig,
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_max_in_flight() -> usize {
    16
}

impl HttpSinkConfig {
    /// Retries and the breaker, as configured.
    pub fn resilience(&self) -> Resilience {
        Resilience {
            retry: Some(self.retry),
            breaker: Some(self.circuit_breaker),
        }
    }

    /// Every problem of the configuration.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let https = self.url.starts_with("https://");
        if !https && !self.url.starts_with("http://") {
            problems.push(ConfigProblem::at(
                "url",
                format!("`{}`: an http:// or https:// URL", self.url),
            ));
        } else if reqwest::Url::parse(&self.url).is_err() {
            problems.push(ConfigProblem::at(
                "url",
                format!("`{}` is not a valid URL", self.url),
            ));
        }
        match (&self.tls, https) {
            (None, true) => problems.push(ConfigProblem::at(
                "tls.ca",
                "an https:// receiver needs tls.ca, the CA bundle its certificate chains to",
            )),
            (Some(_), false) => problems.push(ConfigProblem::at(
                "tls",
                "TLS settings need an https:// URL",
            )),
            (Some(tls), true) if tls.cert.is_some() != tls.key.is_some() => problems.push(
                ConfigProblem::at("tls", "a client certificate needs both `cert` and `key`"),
            ),
            _ => {}
        }
        if !(1..=600_000).contains(&self.timeout_ms) {
            problems.push(ConfigProblem::at(
                "timeout_ms",
                "between 1 and 600000 (10 minutes)",
            ));
        }
        if !(1..=256).contains(&self.max_in_flight) {
            problems.push(ConfigProblem::at("max_in_flight", "between 1 and 256"));
        }
        problems.extend(self.resilience().problems());
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> HttpSinkConfig {
        serde_norway::from_str(yaml).expect("parses")
    }

    #[test]
    fn defaults_and_problems() {
        let c = parse("url: http://127.0.0.1:9000/events");
        assert_eq!(c.mode, HttpMode::Binary);
        assert_eq!(c.retry.max_retries, 3);
        assert!(c.circuit_breaker.enabled);
        assert_eq!(c.circuit_breaker.failure_threshold, 5);
        assert_eq!(c.circuit_breaker.recovery_timeout_ms, 30_000);
        assert!(c.problems().is_empty());
        let fields = |yaml: &str| -> Vec<String> {
            parse(yaml)
                .problems()
                .into_iter()
                .map(|p| p.field)
                .collect()
        };
        assert_eq!(fields("url: ftp://x"), ["url"]);
        assert_eq!(fields("url: https://x"), ["tls.ca"]);
        assert_eq!(fields("url: http://x\ntls: { ca: ca.pem }"), ["tls"]);
        assert_eq!(
            fields("url: https://x\ntls: { ca: ca.pem, cert: c.pem }"),
            ["tls"]
        );
        assert_eq!(
            fields("url: http://x\ntimeout_ms: 0\nmax_in_flight: 1000"),
            ["timeout_ms", "max_in_flight"]
        );
        assert_eq!(
            fields("url: http://x\nretry: { initial_backoff_ms: 9000, max_backoff_ms: 10 }"),
            ["retry.initial_backoff_ms"]
        );
        assert!(serde_norway::from_str::<HttpSinkConfig>("url: x\nmode: stream").is_err());
    }
}
