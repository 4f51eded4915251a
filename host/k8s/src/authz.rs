//! The authorization step between authentication and the request, as in the apiserver's
//! chain (Authentication → Authorization → REST) and in Milo's: what a request asks to do
//! (verb, resource, namespace, name) is read from its method, path and query, then the
//! configured rules are asked, then a SubjectAccessReview webhook. The first that allows
//! it lets it through; a webhook's explicit denial, or no allowance at all, is 403.
//!
//! Without an `authorization` section every authenticated caller may do everything
//! within its scope (the scope still limits which events it sees).

use super::kubeclient::{self, KubeClientError};
use super::settings::{AccessRule, AuthorizationConfig, WebhookConfig};
use super::status::ApiError;
use axum::http::Method;
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use weir_router::Principal;

/// The group every authenticated caller is in.
const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// The most webhook answers kept; beyond it the expired go, then all.
const CACHE_CAPACITY: usize = 10_000;

/// Why the authorizer could not be set up: the webhook's kubeconfig is unusable.
#[derive(Debug, thiserror::Error)]
#[error("authorization webhook")]
pub struct AuthzError(#[source] KubeClientError);

/// Why a review got no answer (the request is then refused).
#[derive(Debug, thiserror::Error)]
enum ReviewError {
    #[error("the review could not be built")]
    Request(#[source] axum::http::Error),
    #[error("no answer within {0} s")]
    Timeout(u64),
    #[error("the webhook failed")]
    Webhook(#[source] kube::Error),
    #[error("the answer holds no status")]
    NoStatus,
}

/// What a request asks to do, in the apiserver's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: &'static str,
    /// The API group (`""` for core).
    pub group: String,
    /// The API version.
    pub version: String,
    /// `events`, `eventqueries`, `eventfacetqueries`.
    pub resource: String,
    /// The namespace; `None` across all namespaces.
    pub namespace: Option<String>,
    /// The object's name, when the path names one.
    pub name: Option<String>,
}

/// Whether a query value is true as Go's `strconv.ParseBool` reads it (what the
/// apiserver and the Activity provider use for `watch`).
pub fn go_true(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// Whether a query asks for a watch: any `watch` parameter that is true once decoded,
/// so that no reading of a repeated or encoded parameter is a watch the authorizer did
/// not see.
pub fn asks_watch(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            decode(k) == "watch" && go_true(&decode(v))
        })
    })
}

fn decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// The attributes of an Events API request; `None` for a path that is not a resource
/// (discovery, OpenAPI), which every caller may read.
pub fn attributes(method: &Method, path: &str, query: Option<&str>) -> Option<Attributes> {
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let (group, version, rest) = match segments.as_slice() {
        [api, v, rest @ ..] if api == "api" => (String::new(), v.clone(), rest),
        [apis, g, v, rest @ ..] if apis == "apis" => (g.clone(), v.clone(), rest),
        _ => return None,
    };
    let (namespace, resource, name) = match rest {
        [r] => (None, r.clone(), None),
        [r, n] => (None, r.clone(), Some(n.clone())),
        [ns, n, r] if ns == "namespaces" => (Some(n.clone()), r.clone(), None),
        [ns, n, r, name] if ns == "namespaces" => (Some(n.clone()), r.clone(), Some(name.clone())),
        _ => return None,
    };
    let verb = match (method, name.is_some()) {
        (&Method::GET | &Method::HEAD, _) if asks_watch(query) => "watch",
        (&Method::GET | &Method::HEAD, true) => "get",
        (&Method::GET | &Method::HEAD, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        // Any other method is answered 405 by the routes; it asks for nothing here.
        _ => return None,
    };
    Some(Attributes {
        verb,
        group,
        version,
        resource,
        namespace,
        name,
    })
}

/// The configured authorization step.
pub struct Authorizer {
    /// `None`: no authorization configured; every authenticated caller is allowed.
    config: Option<Configured>,
}

struct Configured {
    rules: Vec<AccessRule>,
    webhook: Option<Webhook>,
}

/// What one authorizer says of a request.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Allow,
    Deny(String),
    NoOpinion(String),
}

impl Authorizer {
    /// Every authenticated caller may do everything within its scope.
    pub fn allow_all() -> Self {
        Self { config: None }
    }

    /// The authorizer `config` describes (`None`: allow all); reads the webhook's
    /// kubeconfig.
    pub async fn new(config: Option<&AuthorizationConfig>) -> Result<Self, AuthzError> {
        let Some(config) = config else {
            return Ok(Self::allow_all());
        };
        let webhook = match &config.webhook {
            Some(w) => Some(Webhook::new(w).await?),
            None => None,
        };
        Ok(Self {
            config: Some(Configured {
                rules: config.rules.clone(),
                webhook,
            }),
        })
    }

    /// Whether `principal` may make the request `attributes` describes: `Ok` or 403.
    /// An authenticated principal is also in `system:authenticated`; an anonymous one
    /// comes as the apiserver names it (`system:anonymous` in `system:unauthenticated`).
    pub async fn authorize(
        &self,
        principal: &Principal,
        authenticated: bool,
        attributes: &Attributes,
    ) -> Result<(), ApiError> {
        let Some(config) = &self.config else {
            return Ok(());
        };
        let subject = Subject::of(principal, authenticated);
        if config
            .rules
            .iter()
            .any(|rule| rule_allows(rule, &subject, attributes))
        {
            return Ok(());
        }
        let decision = match &config.webhook {
            Some(webhook) => webhook.review(&subject, attributes).await,
            None => Decision::NoOpinion(String::new()),
        };
        match decision {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) | Decision::NoOpinion(reason) => {
                let mut message = forbidden_message(&subject.user, attributes);
                if !reason.is_empty() {
                    message.push_str(": ");
                    message.push_str(&reason);
                }
                Err(ApiError::forbidden(
                    attributes.name.as_deref().unwrap_or(""),
                    message,
                ))
            }
        }
    }
}

/// The user, groups and extras a request is authorized as.
struct Subject {
    user: String,
    groups: Vec<String>,
    extra: Vec<(String, Vec<String>)>,
    uid: String,
}

impl Subject {
    fn of(p: &Principal, authenticated: bool) -> Self {
        let mut groups = p.groups.clone();
        if authenticated && !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            groups.push(AUTHENTICATED_GROUP.to_owned());
        }
        Self {
            user: p.user.clone(),
            groups,
            extra: p.extra.clone(),
            uid: String::new(),
        }
    }
}

/// The apiserver's wording of a refusal.
fn forbidden_message(user: &str, a: &Attributes) -> String {
    let place = match &a.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_owned(),
    };
    format!(
        "{} is forbidden: User \"{user}\" cannot {} resource \"{}\" in API group \"{}\" {place}",
        a.resource, a.verb, a.resource, a.group
    )
}

fn rule_allows(rule: &AccessRule, subject: &Subject, a: &Attributes) -> bool {
    let any = |list: &[String], value: &str| list.iter().any(|x| x == "*" || x == value);
    let who =
        any(&rule.users, &subject.user) || subject.groups.iter().any(|g| any(&rule.groups, g));
    let namespace = match &a.namespace {
        Some(ns) => any(&rule.namespaces, ns),
        // Across namespaces only with every namespace.
        None => rule.namespaces.iter().any(|n| n == "*"),
    };
    who && namespace && any(&rule.verbs, a.verb) && any(&rule.resources, &a.resource)
}

/// A SubjectAccessReview webhook with the apiserver's answer cache.
struct Webhook {
    client: kube::Client,
    /// The path of the webhook's URL (requests go to exactly that URL).
    path: String,
    timeout: Duration,
    allowed_ttl: Duration,
    denied_ttl: Duration,
    /// Review (JSON) → allowed, reason, expiry.
    cache: Mutex<HashMap<String, (bool, String, Instant)>>,
}

impl Webhook {
    async fn new(config: &WebhookConfig) -> Result<Self, AuthzError> {
        let mut kube_config = kubeclient::load(Some(&config.kubeconfig), None)
            .await
            .map_err(AuthzError)?;
        let timeout = Duration::from_secs(config.timeout_seconds.max(1));
        // The client joins request paths to the server URL's path; the review is sent
        // to exactly the URL the kubeconfig names, so the client gets only its origin.
        let url = kube_config.cluster_url.clone();
        let webhook_path = url
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        let mut origin = axum::http::uri::Builder::new();
        if let Some(scheme) = url.scheme() {
            origin = origin.scheme(scheme.clone());
        }
        if let Some(authority) = url.authority() {
            origin = origin.authority(authority.clone());
        }
        kube_config.cluster_url = origin.path_and_query("/").build().unwrap_or(url);
        kube_config.connect_timeout = Some(timeout);
        kube_config.read_timeout = Some(timeout);
        kube_config.write_timeout = Some(timeout);
        let client =
            kubeclient::client(kube_config, Some(&config.kubeconfig)).map_err(AuthzError)?;
        Ok(Self {
            client,
            path: webhook_path,
            timeout,
            allowed_ttl: Duration::from_secs(config.authorized_ttl_seconds),
            denied_ttl: Duration::from_secs(config.unauthorized_ttl_seconds),
            cache: Mutex::new(HashMap::new()),
        })
    }

    async fn review(&self, subject: &Subject, a: &Attributes) -> Decision {
        let mut resource = json!({
            "verb": a.verb,
            "group": a.group,
            "version": a.version,
            "resource": a.resource,
        });
        if let Some(ns) = &a.namespace {
            resource["namespace"] = json!(ns);
        }
        if let Some(name) = &a.name {
            resource["name"] = json!(name);
        }
        let extra: serde_json::Map<String, Value> = subject
            .extra
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let mut spec = json!({
            "resourceAttributes": resource,
            "user": subject.user,
            "groups": subject.groups,
        });
        if !extra.is_empty() {
            spec["extra"] = Value::Object(extra);
        }
        if !subject.uid.is_empty() {
            spec["uid"] = json!(subject.uid);
        }
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": spec,
        });
        let key = review.to_string();
        if let Some(decision) = self.cached(&key) {
            return decision;
        }
        match self.ask(key.clone().into_bytes()).await {
            Ok(status) => {
                let allowed = status.get("allowed").and_then(Value::as_bool) == Some(true);
                let denied = status.get("denied").and_then(Value::as_bool) == Some(true);
                let reason = status
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                self.remember(key, allowed, &reason);
                if allowed && !denied {
                    Decision::Allow
                } else if denied {
                    Decision::Deny(reason)
                } else {
                    Decision::NoOpinion(reason)
                }
            }
            Err(why) => {
                let why = weir_core::util::error_chain(&why);
                tracing::warn!(%why, "authorization webhook failed; the request is refused");
                Decision::NoOpinion("the authorization webhook could not be reached".into())
            }
        }
    }

    /// Sends a review; its `status`.
    async fn ask(&self, body: Vec<u8>) -> Result<Value, ReviewError> {
        let request = axum::http::Request::post(self.path.as_str())
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(body)
            .map_err(ReviewError::Request)?;
        let mut answer = tokio::time::timeout(self.timeout, self.client.request::<Value>(request))
            .await
            .map_err(|_| ReviewError::Timeout(self.timeout.as_secs()))?
            .map_err(ReviewError::Webhook)?;
        match answer.get_mut("status") {
            Some(status) => Ok(status.take()),
            None => Err(ReviewError::NoStatus),
        }
    }

    fn cached(&self, key: &str) -> Option<Decision> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let (allowed, reason, expiry) = cache.get(key)?;
        (*expiry > Instant::now()).then(|| match allowed {
            true => Decision::Allow,
            false => Decision::NoOpinion(reason.clone()),
        })
    }

    fn remember(&self, key: String, allowed: bool, reason: &str) {
        let ttl = if allowed {
            self.allowed_ttl
        } else {
            self.denied_ttl
        };
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let Some(expiry) = now.checked_add(ttl) else {
            return;
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, (_, _, e)| *e > now);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(key, (allowed, reason.to_owned(), expiry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: Method, uri: &str) -> Option<Attributes> {
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        attributes(&method, path, Some(query))
    }

    #[test]
    fn requests_read_as_the_apiserver_reads_them() {
        let a = attrs(Method::GET, "/api/v1/namespaces/default/events").unwrap();
        assert_eq!(
            (
                a.verb,
                a.group.as_str(),
                a.version.as_str(),
                a.resource.as_str()
            ),
            ("list", "", "v1", "events")
        );
        assert_eq!(a.namespace.as_deref(), Some("default"));
        let a = attrs(Method::GET, "/apis/events.k8s.io/v1/events?watch=1").unwrap();
        assert_eq!(
            (a.verb, a.group.as_str(), a.namespace),
            ("watch", "events.k8s.io", None)
        );
        let a = attrs(Method::GET, "/api/v1/namespaces/a/events/x").unwrap();
        assert_eq!((a.verb, a.name.as_deref()), ("get", Some("x")));
        for (method, uri, verb) in [
            (Method::POST, "/api/v1/namespaces/a/events", "create"),
            (Method::PUT, "/api/v1/namespaces/a/events/x", "update"),
            (Method::PATCH, "/api/v1/namespaces/a/events/x", "patch"),
            (Method::DELETE, "/api/v1/namespaces/a/events/x", "delete"),
            (
                Method::DELETE,
                "/api/v1/namespaces/a/events",
                "deletecollection",
            ),
            (
                Method::POST,
                "/apis/activity.miloapis.com/v1alpha1/eventqueries",
                "create",
            ),
        ] {
            assert_eq!(attrs(method, uri).unwrap().verb, verb, "{uri}");
        }
        // Percent-encoded names and namespaces are decoded; discovery asks for nothing.
        let a = attrs(Method::GET, "/api/v1/namespaces/d%65fault/events").unwrap();
        assert_eq!(a.namespace.as_deref(), Some("default"));
        assert_eq!(attrs(Method::GET, "/apis/events.k8s.io/v1"), None);
        assert_eq!(attrs(Method::GET, "/openapi/v3"), None);
    }

    #[test]
    fn any_reading_of_watch_that_is_true_is_a_watch() {
        for q in [
            "watch=true",
            "watch=1",
            "watch=True",
            "watch=t",
            "watch=%74rue",
            "watch=false&watch=true",
            "limit=5&w%61tch=1",
        ] {
            assert!(asks_watch(Some(q)), "{q}");
        }
        for q in ["watch=false", "watch=0", "watch=", "watching=true", ""] {
            assert!(!asks_watch(Some(q)), "{q}");
        }
    }

    fn rule(yaml: &str) -> AccessRule {
        serde_norway::from_str(yaml).unwrap()
    }

    fn caller(user: &str, groups: &[&str]) -> (Principal, bool) {
        let principal = Principal {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            extra: Vec::new(),
        };
        (principal, true)
    }

    #[tokio::test]
    async fn rules_allow_by_user_group_verb_resource_and_namespace() {
        let config = AuthorizationConfig {
            rules: vec![
                rule("{users: [pat], verbs: [get, list, watch], namespaces: [team-a]}"),
                rule("{groups: [auditors], verbs: [list, watch]}"),
                rule(
                    "{groups: [system:authenticated], verbs: [create], resources: [eventqueries]}",
                ),
            ],
            webhook: None,
        };
        let authz = Authorizer::new(Some(&config)).await.unwrap();
        let check = |(who, known): (Principal, bool), method: Method, uri: &'static str| {
            let authz = &authz;
            async move {
                authz
                    .authorize(&who, known, &attrs(method, uri).unwrap())
                    .await
            }
        };
        let pat = || caller("pat", &[]);
        assert!(
            check(pat(), Method::GET, "/api/v1/namespaces/team-a/events")
                .await
                .is_ok()
        );
        let refused = check(pat(), Method::GET, "/api/v1/namespaces/team-b/events")
            .await
            .unwrap_err();
        assert_eq!(refused.code, 403);
        assert!(
            refused.message.contains("User \"pat\" cannot list resource \"events\" in API group \"\" in the namespace \"team-b\""),
            "{}",
            refused.message
        );
        // A cluster-wide list needs every namespace.
        assert!(check(pat(), Method::GET, "/api/v1/events").await.is_err());
        assert!(
            check(pat(), Method::POST, "/api/v1/namespaces/team-a/events")
                .await
                .is_err()
        );
        let auditor = || caller("ann", &["auditors"]);
        assert!(check(
            auditor(),
            Method::GET,
            "/apis/events.k8s.io/v1/events?watch=true"
        )
        .await
        .is_ok());
        assert!(
            check(auditor(), Method::DELETE, "/api/v1/namespaces/x/events/y")
                .await
                .is_err()
        );
        // system:authenticated holds every authenticated caller, never anonymous ones.
        let query = "/apis/activity.miloapis.com/v1alpha1/eventqueries";
        assert!(check(caller("zed", &[]), Method::POST, query).await.is_ok());
        let anonymous = Principal {
            user: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            extra: Vec::new(),
        };
        assert!(check((anonymous, false), Method::POST, query)
            .await
            .is_err());
        // No configuration: today's behaviour.
        let open = Authorizer::allow_all();
        let a = attrs(Method::DELETE, "/api/v1/namespaces/x/events").unwrap();
        let (anyone, known) = caller("anyone", &[]);
        assert!(open.authorize(&anyone, known, &a).await.is_ok());
    }
}
