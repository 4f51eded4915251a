//! Credentials: how callers of the main listener are authenticated (client certificates,
//! and a trusted front proxy's request headers, the Kubernetes request-header scheme), and
//! where a client's bearer token comes from ([`TokenSource`]).

use serde::Deserialize;
use std::path::PathBuf;

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

/// The token of an `Authorization` header value (or gRPC `authorization` metadata):
/// `Bearer <token>`, surrounding whitespace ignored.
pub fn bearer(value: &str) -> Option<&str> {
    value.strip_prefix("Bearer ").map(str::trim)
}

/// Where a secret (a bearer token) comes from: `{ file: PATH }` or `{ env: VAR }`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum TokenSource {
    /// A file holding the token (surrounding whitespace is ignored).
    File(PathBuf),
    /// An environment variable holding the token.
    Env(String),
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("token file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The environment variable is not set (or not Unicode).
    #[error("environment variable {0} is not set")]
    Env(String),
    /// The secret is empty or not UTF-8.
    #[error("the token from {0} is empty or not UTF-8")]
    Unusable(String),
}

impl TokenSource {
    /// The secret, trimmed; an empty one is an error.
    pub fn read(&self) -> Result<String, SecretError> {
        let (token, from) = match self {
            TokenSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?;
                let from = path.display().to_string();
                (
                    String::from_utf8(bytes).map_err(|_| SecretError::Unusable(from.clone()))?,
                    from,
                )
            }
            TokenSource::Env(var) => (
                std::env::var(var).map_err(|_| SecretError::Env(var.clone()))?,
                var.clone(),
            ),
        };
        let token = token.trim().to_owned();
        if token.is_empty() {
            return Err(SecretError::Unusable(from));
        }
        Ok(token)
    }
}
