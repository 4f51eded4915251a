//! Who is calling the Events API, and which events that caller may see.
//!
//! Authenticators run in the apiserver's order: a front proxy's request headers (only on a
//! connection whose client certificate chains to the request-header CA and has an
//! allowed name), then the client certificate itself (CN = user, O = groups), then
//! anonymous access when allowed. The caller's scope comes from its extra attributes:
//! without a parent type it is a platform caller and sees everything; otherwise it sees
//! the events whose scope annotations name its parent.

use super::authz::{attributes, Authorizer};
use super::settings::{RequestHeaderConfig, ScopeConfig};
use super::status::ApiError;
use axum::http::HeaderMap;
use serde_json::{Map, Value};
use std::sync::Arc;
use weir_core::tls::PeerIdentity;
use weir_router::Principal;

/// The extra attribute holding a certificate's credential id, as Kubernetes sets it.
const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// The user Kubernetes names an anonymous caller.
pub const ANONYMOUS_USER: &str = "system:anonymous";

/// The group Kubernetes puts anonymous callers in.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";

/// An anonymous caller as the apiserver names it to others (`system:anonymous` in
/// `system:unauthenticated`, no extras).
pub fn anonymous_principal() -> Principal {
    Principal {
        user: ANONYMOUS_USER.to_owned(),
        groups: vec![UNAUTHENTICATED_GROUP.to_owned()],
        extra: Vec::new(),
    }
}

/// What a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every event.
    Platform,
    /// Events whose scope annotations are this type and name.
    Parent {
        /// `Organization`, `Project`, ...
        kind: String,
        /// The parent's name.
        name: String,
    },
}

/// An authenticated (or anonymous) caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The principal handed to filters; `None` for anonymous callers.
    pub principal: Option<Arc<Principal>>,
    /// What the caller may see.
    pub scope: Scope,
}

/// The Events API's authenticators, scope rules and authorization step.
pub struct Authenticator {
    anonymous: bool,
    request_header: Option<RequestHeaderConfig>,
    scope: ScopeConfig,
    authorizer: Authorizer,
}

impl Authenticator {
    /// Authenticators from configuration; header names are matched case-insensitively.
    pub fn new(
        anonymous: bool,
        request_header: Option<RequestHeaderConfig>,
        scope: ScopeConfig,
    ) -> Self {
        let request_header = request_header.map(|mut rh| {
            for list in [
                &mut rh.username_headers,
                &mut rh.group_headers,
                &mut rh.extra_headers_prefix,
            ] {
                for h in list.iter_mut() {
                    *h = h.to_ascii_lowercase();
                }
            }
            rh
        });
        Self {
            anonymous,
            request_header,
            scope,
            authorizer: Authorizer::allow_all(),
        }
    }

    /// These authenticators followed by `authorizer`.
    pub fn with_authorizer(mut self, authorizer: Authorizer) -> Self {
        self.authorizer = authorizer;
        self
    }

    /// The caller of a request once authenticated (401 otherwise) and authorized for what
    /// the request asks to do (403 otherwise): the one check every Events API request
    /// passes, in the embedded API and the proxy alike.
    pub async fn admit(&self, parts: &axum::http::request::Parts) -> Result<Caller, ApiError> {
        let caller = self.authenticate(&parts.headers, parts.extensions.get::<PeerIdentity>())?;
        if let Some(attributes) = attributes(&parts.method, parts.uri.path(), parts.uri.query()) {
            match &caller.principal {
                Some(p) => self.authorizer.authorize(p, true, &attributes).await?,
                None => {
                    let anonymous = anonymous_principal();
                    self.authorizer
                        .authorize(&anonymous, false, &attributes)
                        .await?
                }
            }
        }
        Ok(caller)
    }

    /// The caller of a request, or 401 when it cannot be authenticated.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<&PeerIdentity>,
    ) -> Result<Caller, ApiError> {
        if let (Some(rh), Some(peer)) = (&self.request_header, peer) {
            if peer.front_proxy {
                if let Some(principal) = from_headers(rh, headers)? {
                    return Ok(self.caller(Some(principal)));
                }
            }
        }
        if let Some(peer) = peer.filter(|p| p.user) {
            if let Some(cn) = peer.common_name.as_ref().filter(|cn| !cn.is_empty()) {
                return Ok(self.caller(Some(Principal {
                    user: cn.clone(),
                    groups: peer.organizations.clone(),
                    extra: vec![(
                        CREDENTIAL_ID.to_owned(),
                        vec![format!("X509SHA256={}", peer.fingerprint)],
                    )],
                })));
            }
        }
        if self.anonymous {
            return Ok(self.caller(None));
        }
        Err(ApiError::unauthorized(
            "Unauthorized: present a client certificate, or come through the trusted front proxy",
        ))
    }

    fn caller(&self, principal: Option<Principal>) -> Caller {
        // Present at all means scoped (an empty or missing value sees nothing): a caller
        // never becomes a platform caller by sending an empty parent type.
        let extra = |key: &str| {
            principal.as_ref().and_then(|p| {
                p.extra.iter().find(|(k, _)| k == key).map(|(_, v)| {
                    v.iter()
                        .find(|x| !x.is_empty())
                        .cloned()
                        .unwrap_or_default()
                })
            })
        };
        let scope = match extra(&self.scope.parent_type_extra) {
            None => Scope::Platform,
            // A parent type without a name sees nothing rather than everything.
            Some(kind) => Scope::Parent {
                kind,
                name: extra(&self.scope.parent_name_extra).unwrap_or_default(),
            },
        };
        Caller {
            principal: principal.map(Arc::new),
            scope,
        }
    }

    /// Whether `caller` may see a stored event (core/v1 object).
    pub fn visible(&self, caller: &Caller, event: &Map<String, Value>) -> bool {
        match &caller.scope {
            Scope::Platform => true,
            Scope::Parent { kind, name } => {
                let annotation = |key: &str| super::convert::annotation(event, key);
                annotation(&self.scope.type_annotation) == Some(kind.as_str())
                    && annotation(&self.scope.name_annotation) == Some(name.as_str())
            }
        }
    }
}

/// The principal a front proxy names in its headers (`None` without a user header).
/// The principal the front proxy names; `Err` (403) when an extra attribute cannot be
/// read (not visible ASCII): skipping it could drop the caller's scope and make it a
/// platform caller, so the request is refused instead.
fn from_headers(
    rh: &RequestHeaderConfig,
    headers: &HeaderMap,
) -> Result<Option<Principal>, ApiError> {
    let values = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let Some(user) = rh
        .username_headers
        .iter()
        .find_map(|h| values(h).into_iter().next())
    else {
        return Ok(None);
    };
    let groups = rh.group_headers.iter().flat_map(|h| values(h)).collect();
    let mut extra: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in headers {
        let name = name.as_str(); // lower case already
        let Some(key) = rh
            .extra_headers_prefix
            .iter()
            .find_map(|p| name.strip_prefix(p.as_str()))
        else {
            continue;
        };
        let key = percent_encoding::percent_decode_str(key)
            .decode_utf8()
            .map_or_else(|_| key.to_owned(), |k| k.into_owned());
        let Ok(value) = value.to_str() else {
            return Err(ApiError::forbidden_request(format!(
                "the extra attribute `{key}` from the front proxy is not visible ASCII"
            )));
        };
        match extra.iter_mut().find(|(k, _)| *k == key) {
            Some((_, values)) => values.push(value.to_owned()),
            None => extra.push((key, vec![value.to_owned()])),
        }
    }
    Ok(Some(Principal {
        user,
        groups,
        extra,
    }))
}

/// Header names of the request-header scheme, as a proxy sends them.
pub mod remote {
    /// The user.
    pub const USER: &str = "x-remote-user";
    /// One group per header line.
    pub const GROUP: &str = "x-remote-group";
    /// Prefix of extra attributes.
    pub const EXTRA_PREFIX: &str = "x-remote-extra-";
}

/// Bytes escaped in an extra key: everything but RFC 7230 token characters, and `%`.
const EXTRA_KEY_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'*')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// The `X-Remote-*` headers naming `principal` to a provider, as client-go's
/// `SetAuthProxyHeaders` writes them: the user, one group per header, and one
/// `X-Remote-Extra-<escaped key>` per value of each forwarded extra.
pub fn remote_headers(
    principal: &Principal,
    forward_extras: &[String],
) -> Vec<(axum::http::HeaderName, axum::http::HeaderValue)> {
    use axum::http::{HeaderName, HeaderValue};
    let mut out = Vec::new();
    let mut push = |name: &str, value: &str| {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            out.push((n, v));
        }
    };
    push(remote::USER, &principal.user);
    for g in &principal.groups {
        push(remote::GROUP, g);
    }
    for (key, values) in &principal.extra {
        if !forward_extras.iter().any(|f| f.eq_ignore_ascii_case(key)) {
            continue;
        }
        let name = format!(
            "{}{}",
            remote::EXTRA_PREFIX,
            percent_encoding::utf8_percent_encode(key, EXTRA_KEY_ESCAPES)
        );
        for v in values {
            push(&name, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rh() -> RequestHeaderConfig {
        serde_norway::from_str("client_ca: ca.pem").expect("valid")
    }

    fn peer(front_proxy: bool, user: bool) -> PeerIdentity {
        PeerIdentity {
            common_name: Some("cn".into()),
            organizations: vec!["o1".into()],
            fingerprint: "ab".into(),
            user,
            front_proxy,
        }
    }

    #[test]
    fn request_headers_are_read_as_the_documented_example() {
        let auth = Authenticator::new(false, Some(rh()), ScopeConfig::default());
        let mut h = HeaderMap::new();
        h.insert("X-Remote-User", "alice".parse().expect("valid"));
        h.append("X-Remote-Group", "g1".parse().expect("valid"));
        h.append("X-Remote-Group", "g2,g3".parse().expect("valid"));
        h.append(
            "X-Remote-Extra-Acme.com%2Fproject",
            "some-project".parse().expect("valid"),
        );
        h.append("X-Remote-Extra-Scopes", "openid".parse().expect("valid"));
        h.append("X-Remote-Extra-Scopes", "profile".parse().expect("valid"));
        let caller = auth
            .authenticate(&h, Some(&peer(true, false)))
            .expect("authenticated");
        let p = caller.principal.expect("principal");
        assert_eq!(p.user, "alice");
        assert_eq!(p.groups, vec!["g1", "g2,g3"]);
        assert!(p
            .extra
            .contains(&("acme.com/project".into(), vec!["some-project".into()])));
        assert!(p
            .extra
            .contains(&("scopes".into(), vec!["openid".into(), "profile".into()])));
        assert_eq!(caller.scope, Scope::Platform);
    }

    #[test]
    fn headers_count_only_from_a_front_proxy_and_anonymous_needs_permission() {
        let auth = Authenticator::new(false, Some(rh()), ScopeConfig::default());
        let mut h = HeaderMap::new();
        h.insert("X-Remote-User", "mallory".parse().expect("valid"));
        // A user certificate: its subject is the caller, the header is ignored.
        let caller = auth
            .authenticate(&h, Some(&peer(false, true)))
            .expect("cert user");
        assert_eq!(caller.principal.expect("principal").user, "cn");
        // No certificate at all, anonymous off: 401.
        assert_eq!(auth.authenticate(&h, None).unwrap_err().code, 401);
        let open = Authenticator::new(true, None, ScopeConfig::default());
        assert!(open
            .authenticate(&h, None)
            .expect("anonymous")
            .principal
            .is_none());
    }

    #[test]
    fn an_unreadable_extra_refuses_the_request_instead_of_dropping_the_scope() {
        let auth = Authenticator::new(false, Some(rh()), ScopeConfig::default());
        let mut h = HeaderMap::new();
        h.insert("X-Remote-User", "bob".parse().expect("valid"));
        h.insert(
            "X-Remote-Extra-Iam.miloapis.com%2Fparent-type",
            axum::http::HeaderValue::from_bytes(b"Organiza\xc3\xa7\xc3\xa3o").expect("obs-text"),
        );
        let refused = auth
            .authenticate(&h, Some(&peer(true, false)))
            .expect_err("refused");
        assert_eq!(refused.code, 403);
    }

    #[test]
    fn scope_comes_from_extras_and_limits_visibility() {
        let auth = Authenticator::new(false, Some(rh()), ScopeConfig::default());
        let mut h = HeaderMap::new();
        h.insert("X-Remote-User", "bob".parse().expect("valid"));
        h.insert(
            "X-Remote-Extra-Iam.miloapis.com%2Fparent-Type",
            "Project".parse().expect("valid"),
        );
        h.insert(
            "X-Remote-Extra-iam.miloapis.com%2fparent-name",
            "p1".parse().expect("valid"),
        );
        let caller = auth
            .authenticate(&h, Some(&peer(true, false)))
            .expect("authenticated");
        assert_eq!(
            caller.scope,
            Scope::Parent {
                kind: "Project".into(),
                name: "p1".into()
            }
        );
        let event = |ty: &str, name: &str| {
            serde_json::json!({"metadata": {"annotations": {
                "platform.miloapis.com/scope.type": ty,
                "platform.miloapis.com/scope.name": name,
            }}})
            .as_object()
            .cloned()
            .expect("object")
        };
        assert!(auth.visible(&caller, &event("Project", "p1")));
        assert!(!auth.visible(&caller, &event("Project", "p2")));
        assert!(!auth.visible(&caller, &event("Organization", "p1")));
        assert!(!auth.visible(&caller, &Map::new()));
    }

    #[test]
    fn an_empty_parent_type_is_scoped_and_sees_nothing() {
        let auth = Authenticator::new(false, Some(rh()), ScopeConfig::default());
        let mut h = HeaderMap::new();
        h.insert("X-Remote-User", "eve".parse().expect("valid"));
        h.insert(
            "X-Remote-Extra-iam.miloapis.com%2Fparent-type",
            "".parse().expect("valid"),
        );
        let caller = auth
            .authenticate(&h, Some(&peer(true, false)))
            .expect("authenticated");
        assert_ne!(caller.scope, Scope::Platform);
        assert!(!auth.visible(&caller, &Map::new()));
    }

    #[test]
    fn remote_headers_escape_extra_keys_like_client_go() {
        let p = Principal {
            user: "alice".into(),
            groups: vec!["a".into(), "b".into()],
            extra: vec![
                (
                    "iam.miloapis.com/parent-type".into(),
                    vec!["Project".into()],
                ),
                ("100%".into(), vec!["x".into()]),
                ("secret".into(), vec!["no".into()]),
            ],
        };
        let forward = vec!["iam.miloapis.com/parent-type".to_owned(), "100%".to_owned()];
        let headers: Vec<(String, String)> = remote_headers(&p, &forward)
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_owned()))
            .collect();
        assert_eq!(
            headers,
            vec![
                ("x-remote-user".into(), "alice".into()),
                ("x-remote-group".into(), "a".into()),
                ("x-remote-group".into(), "b".into()),
                // Header names travel in lower case (HTTP/2 requires it; the receiver
                // lower-cases before decoding anyway), so `%2F` arrives as `%2f`.
                (
                    "x-remote-extra-iam.miloapis.com%2fparent-type".into(),
                    "Project".into()
                ),
                ("x-remote-extra-100%25".into(), "x".into()),
            ]
        );
    }
}
