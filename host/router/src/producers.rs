//! Producer authentication: which credentials speak for which tenant, and what a
//! submission's producer may claim ([`Producer`]).
//!
//! A credential bound to a tenant makes every event its producer sends that tenant's; an
//! event naming another tenant (its `tenant` extension, a source mapping, the tenant
//! header) is refused whole. A tenant that has credentials is *protected*: only its own
//! producers and the platform may send it events, so an anonymous producer cannot spend
//! its rate limit, write its filter state or run its chain.

use crate::settings::ProducerCredential;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Who sent a submission, as far as tenancy goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Producer {
    /// A caller bound to no tenant (anonymous, or authenticated by a credential that
    /// names no tenant): the events' tenant is told as configured, but it may not be a
    /// protected tenant.
    #[default]
    Unbound,
    /// The platform (an admin, a configured Kafka topic, a watched cluster, a replay): the
    /// events' tenant is told as configured, any tenant.
    Platform,
    /// A producer authenticated as this tenant: every event is this tenant's.
    Tenant(Arc<str>),
}

/// The configured producer credentials.
#[derive(Debug, Default)]
pub struct Producers {
    /// By the hex SHA-256 of the bearer token.
    tokens: HashMap<String, Arc<str>>,
    /// By user name (a client certificate's CN, a Kubernetes user).
    users: HashMap<String, Arc<str>>,
    /// By group (a client certificate's O, a Kubernetes group).
    groups: HashMap<String, Arc<str>>,
    /// The tenants that have a credential.
    protected: HashSet<Arc<str>>,
}

impl Producers {
    /// The credentials from the configuration (checked there: each names exactly one of
    /// `sha256`, `user`, `group`).
    pub fn new(credentials: &[ProducerCredential]) -> Self {
        let mut producers = Self::default();
        for c in credentials {
            let tenant: Arc<str> = Arc::from(c.tenant.as_str());
            producers.protected.insert(tenant.clone());
            if let Some(hash) = &c.sha256 {
                producers
                    .tokens
                    .insert(hash.to_ascii_lowercase(), tenant.clone());
            }
            if let Some(user) = &c.user {
                producers.users.insert(user.clone(), tenant.clone());
            }
            if let Some(group) = &c.group {
                producers.groups.insert(group.clone(), tenant);
            }
        }
        producers
    }

    /// Whether no producer credential is configured.
    pub fn is_empty(&self) -> bool {
        self.protected.is_empty()
    }

    /// The tenant of a bearer token, when it is a producer token.
    pub fn by_token(&self, token: &str) -> Option<Arc<str>> {
        self.tokens
            .get(&weir_runtime::content_hash(token.as_bytes()))
            .cloned()
    }

    /// The tenant of an identity: its user's, else the first of its groups that has one.
    pub fn by_identity(&self, user: &str, groups: &[String]) -> Option<Arc<str>> {
        self.users
            .get(user)
            .or_else(|| groups.iter().find_map(|g| self.groups.get(g)))
            .cloned()
    }

    /// Whether a tenant takes events only from its own producers and the platform.
    pub fn protects(&self, tenant: &str) -> bool {
        self.protected.contains(tenant)
    }
}
