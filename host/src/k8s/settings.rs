//! Settings of the Events API beyond its store: who callers are (client certificates and
//! a trusted front proxy's request headers), how scope is read, and the remote provider
//! that proxy mode (`EventsProxy`) forwards to.

use serde::Deserialize;
use std::path::PathBuf;

/// The feature gate that makes the Events API a proxy to a remote provider.
pub const EVENTS_PROXY_GATE: &str = "EventsProxy";

/// Feature gates weir knows.
pub const KNOWN_GATES: [&str; 1] = [EVENTS_PROXY_GATE];

/// How callers of the main listener are authenticated.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthenticationConfig {
    /// Serve requests that carry no credentials, as an anonymous caller. Default: yes when
    /// no authenticator is configured (plain HTTP on loopback), no otherwise.
    #[serde(default)]
    pub anonymous: Option<bool>,
    /// Trust identities sent in request headers by a front proxy whose client certificate
    /// verifies against `client_ca` (the Kubernetes request-header scheme).
    #[serde(default)]
    pub request_header: Option<RequestHeaderConfig>,
}

/// The Kubernetes request-header ("front proxy") authenticator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestHeaderConfig {
    /// CA bundle (PEM) the front proxy's client certificate must chain to. Do not reuse the
    /// CA that signs user certificates.
    pub client_ca: PathBuf,
    /// Common names the proxy certificate may have (empty: any from `client_ca`).
    #[serde(default)]
    pub allowed_names: Vec<String>,
    /// Headers naming the user, first non-empty wins (default `X-Remote-User`).
    #[serde(default = "default_user_headers")]
    pub username_headers: Vec<String>,
    /// Headers naming groups, one value per header line (default `X-Remote-Group`).
    #[serde(default = "default_group_headers")]
    pub group_headers: Vec<String>,
    /// Prefixes of extra-attribute headers (default `X-Remote-Extra-`).
    #[serde(default = "default_extra_prefixes")]
    pub extra_headers_prefix: Vec<String>,
}

fn default_user_headers() -> Vec<String> {
    vec!["X-Remote-User".into()]
}

fn default_group_headers() -> Vec<String> {
    vec!["X-Remote-Group".into()]
}

fn default_extra_prefixes() -> Vec<String> {
    vec!["X-Remote-Extra-".into()]
}

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
    /// Timeout of one attempt, in seconds (watches: their own `timeoutSeconds` plus this).
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
