//! How callers of the main listener are authenticated: client certificates, and a trusted
//! front proxy's request headers (the Kubernetes request-header scheme).

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
