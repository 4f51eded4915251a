//! Who may call the admin API: bearer tokens (stored as SHA-256 hashes) and client
//! certificates, each with a role (`admin`, or `tenant:<id>` for one tenant's filters);
//! and who calls the main listener's own endpoints ([`ListenerCaller`]: ingest, tail,
//! stats, metrics), by those and by the producer credentials.

use crate::config::AdminConfig;
use axum::http::{header, HeaderMap};
use std::collections::HashMap;
use std::path::Path as FsPath;
use std::sync::Arc;
use weir_core::tls::PeerIdentity;
use weir_router::{Producer, Producers};
use weir_runtime::registry::FilterRecord;

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Only filters owned by this tenant.
    Tenant(String),
}

impl Role {
    pub(crate) fn may_touch(&self, record: &FilterRecord) -> bool {
        match self {
            Role::Admin => true,
            Role::Tenant(t) => record.owner.as_deref() == Some(t),
        }
    }
}

/// The accepted credentials: bearer tokens (by the hex SHA-256 of the token) and client
/// certificate common names.
pub struct Tokens {
    by_hash: HashMap<String, (String, Role)>,
    by_cert: HashMap<String, Role>,
    /// The file holding the generated token, when none was configured.
    generated: Option<std::path::PathBuf>,
}

fn parse_role(role: &str) -> Role {
    match role.strip_prefix("tenant:") {
        Some(tenant) => Role::Tenant(tenant.to_owned()),
        None => Role::Admin,
    }
}

/// The name of the token file written when no tokens are configured.
pub const TOKEN_FILE: &str = "admin-token";

impl Tokens {
    /// The configured tokens; with none, a fresh random admin token written to
    /// `<data_dir>/admin-token` (mode 0600) for the local operator and the CLI.
    pub fn from_config(admin: &AdminConfig, data_dir: &FsPath) -> std::io::Result<Self> {
        let mut by_hash = HashMap::new();
        for t in &admin.tokens {
            by_hash.insert(
                t.sha256.to_ascii_lowercase(),
                (t.name.clone(), parse_role(&t.role)),
            );
        }
        let by_cert: HashMap<String, Role> = admin
            .client_certs
            .iter()
            .map(|c| (c.common_name.clone(), parse_role(&c.role)))
            .collect();
        let mut generated = None;
        if by_hash.is_empty() && by_cert.is_empty() {
            let token = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            let path = data_dir.join(TOKEN_FILE);
            // Created 0600: never readable by others, not even for a moment.
            weir_core::util::write_atomically(&path, token.as_bytes()).map_err(|e| e.source)?;
            tracing::info!(path = %path.display(), "no admin tokens configured: generated one");
            by_hash.insert(hash_token(&token), ("generated".into(), Role::Admin));
            generated = Some(path);
        }
        Ok(Self {
            by_hash,
            by_cert,
            generated,
        })
    }

    /// The file holding the token generated because none was configured.
    pub fn generated_file(&self) -> Option<&FsPath> {
        self.generated.as_deref()
    }

    /// The caller's name and role, or why the caller is not authenticated: a bearer
    /// token, else a verified client certificate whose CN is mapped to a role.
    pub(crate) fn check(
        &self,
        headers: &HeaderMap,
        peer: Option<&PeerIdentity>,
    ) -> Result<(String, Role), &'static str> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(weir_core::auth::bearer);
        let Some(token) = presented else {
            // Only a certificate that names its holder (not a front proxy's).
            let cn = peer
                .filter(|p| p.user)
                .and_then(|p| p.common_name.as_deref());
            return match cn.and_then(|cn| self.by_cert.get(cn).map(|r| (cn, r))) {
                Some((cn, role)) => Ok((format!("cert:{cn}"), role.clone())),
                None if cn.is_some() => Err("the client certificate is not mapped to a role"),
                None => Err("send `Authorization: Bearer <token>` or a client certificate"),
            };
        };
        self.by_hash
            .get(&hash_token(token))
            .cloned()
            .ok_or("unknown token")
    }
}

/// A caller of the main listener's own endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerCaller {
    /// An admin (token or client certificate): every tenant.
    Admin,
    /// A tenant's admin or producer token, or a client certificate mapped to a tenant.
    Tenant(Arc<str>),
    /// A verified client certificate mapped to no tenant and no role.
    Unbound,
    /// No credentials, on a listener that serves anonymous callers.
    Anonymous,
}

impl ListenerCaller {
    /// Who the caller is, or why it is refused (`401`): a bearer token (a producer's, else
    /// an admin API token), else a verified client certificate, else anonymous when the
    /// listener allows it. A token that matches nothing is refused even then.
    pub(crate) fn authenticate(
        tokens: &Tokens,
        producers: &Producers,
        anonymous_allowed: bool,
        headers: &HeaderMap,
        peer: Option<&PeerIdentity>,
    ) -> Result<Self, &'static str> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(weir_core::auth::bearer);
        if let Some(tenant) = bearer.and_then(|token| producers.by_token(token)) {
            return Ok(Self::Tenant(tenant));
        }
        let verified = peer.filter(|p| p.user);
        // A role the admin configuration gives (token or certificate) comes first, then a
        // certificate's producer mapping.
        match tokens.check(headers, verified) {
            Ok((_, Role::Admin)) => Ok(Self::Admin),
            Ok((_, Role::Tenant(t))) => Ok(Self::Tenant(Arc::from(t))),
            Err(why) if bearer.is_some() => Err(why),
            Err(_) => match verified {
                Some(p) => Ok(p
                    .common_name
                    .as_deref()
                    .filter(|cn| !cn.is_empty())
                    .and_then(|cn| producers.by_identity(cn, &p.organizations))
                    .map_or(Self::Unbound, Self::Tenant)),
                None if anonymous_allowed => Ok(Self::Anonymous),
                None => Err("send `Authorization: Bearer <token>` or a client certificate"),
            },
        }
    }

    /// The caller as a producer of events.
    pub(crate) fn producer(&self) -> Producer {
        match self {
            Self::Admin => Producer::Platform,
            Self::Tenant(t) => Producer::Tenant(t.clone()),
            Self::Unbound | Self::Anonymous => Producer::Unbound,
        }
    }

    /// Whether the caller may read figures about every tenant (stats, metrics): an admin,
    /// or anyone on a listener open to anonymous callers.
    pub(crate) fn reads_everything(&self) -> bool {
        matches!(self, Self::Admin | Self::Anonymous)
    }
}

/// Hex SHA-256 of a token, as the configuration holds it.
pub fn hash_token(token: &str) -> String {
    weir_runtime::content_hash(token.as_bytes())
}
