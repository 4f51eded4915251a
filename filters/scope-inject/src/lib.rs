//! `scope-inject`: stamps the caller's tenancy scope onto Kubernetes Events.
//!
//! From the principal's extra attributes `iam.miloapis.com/parent-type` and
//! `iam.miloapis.com/parent-name` it sets the annotations `platform.miloapis.com/scope.type`
//! and `platform.miloapis.com/scope.name` on the Event carried as JSON data, overwriting
//! whatever the client sent, so a caller can never claim another scope. It also sets the
//! CloudEvents extensions `scopetype` and `scopename` for routing downstream.
//!
//! Events whose data is not a JSON object get the extensions only. Platform-scoped
//! principals (no parent type) pass untouched. Events without any
//! principal have client-sent scope annotations removed (`unauthenticated: strip`, the
//! default), are passed as they are (`keep`), or dropped (`drop`).

use serde::Deserialize;
use weir_guest::{k8s, Context, Event, Filter, Patch, Verdict};

/// The principal's extra attribute naming its parent type.
pub const PARENT_TYPE: &str = "iam.miloapis.com/parent-type";
/// The principal's extra attribute naming its parent.
pub const PARENT_NAME: &str = "iam.miloapis.com/parent-name";
/// What both scope annotations start with.
const SCOPE_PREFIX: &[u8] = b"platform.miloapis.com/scope.";
/// The scope type annotation.
pub const SCOPE_TYPE: &str = "platform.miloapis.com/scope.type";
/// The scope name annotation.
pub const SCOPE_NAME: &str = "platform.miloapis.com/scope.name";

/// What to do with events that arrive without an authenticated principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unauthenticated {
    /// Remove client-sent scope annotations (default).
    #[default]
    Strip,
    /// Pass unchanged.
    Keep,
    /// Drop the event.
    Drop,
}

/// Configuration.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Policy for events without a principal.
    #[serde(default)]
    pub unauthenticated: Unauthenticated,
}

/// The filter.
pub struct ScopeInject {
    config: Config,
}

impl ScopeInject {
    /// Sets (or, without a scope, removes) the scope on the event: always as extensions,
    /// and as annotations when the data is a JSON object (a Kubernetes Event).
    fn rewrite(event: &Event<'_>, scope: Option<(&str, &str)>) -> Verdict {
        // Removing needs a parse only when the annotation can be there at all.
        let worth_parsing = |data: &[u8]| {
            scope.is_some() || data.windows(SCOPE_PREFIX.len()).any(|w| w == SCOPE_PREFIX)
        };
        let object = event
            .data()
            .filter(|data| event.is_json() && worth_parsing(data))
            .and_then(|_| event.json_value().ok())
            .filter(serde_json::Value::is_object);
        let had_ext =
            event.extension("scopetype").is_some() || event.extension("scopename").is_some();
        let mut patch = match scope {
            Some((ty, name)) => Patch::new().set("scopetype", ty).set("scopename", name),
            None if had_ext => Patch::new().remove("scopetype").remove("scopename"),
            None => Patch::new(),
        };
        if let Some(mut object) = object {
            let changed = match scope {
                Some((ty, name)) => {
                    k8s::set_annotation(&mut object, SCOPE_TYPE, ty);
                    k8s::set_annotation(&mut object, SCOPE_NAME, name);
                    true
                }
                None => {
                    let had_type = k8s::remove_annotation(&mut object, SCOPE_TYPE);
                    let had_name = k8s::remove_annotation(&mut object, SCOPE_NAME);
                    had_type || had_name
                }
            };
            if changed {
                patch = patch.json(&object);
            }
        }
        if patch.is_empty() {
            Verdict::Keep
        } else {
            Verdict::Patch(patch)
        }
    }
}

impl Filter for ScopeInject {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Self { config })
    }

    fn process(&mut self, ctx: &Context, event: &Event<'_>) -> Verdict {
        let Some(principal) = &ctx.principal else {
            return match self.config.unauthenticated {
                Unauthenticated::Keep => Verdict::Keep,
                Unauthenticated::Drop => Verdict::drop("no authenticated principal"),
                Unauthenticated::Strip => Self::rewrite(event, None),
            };
        };
        let Some(parent_type) = principal.extra_first(PARENT_TYPE).filter(|t| !t.is_empty()) else {
            // Platform scope: sees and writes everything as it is.
            return Verdict::Keep;
        };
        let Some(parent_name) = principal.extra_first(PARENT_NAME).filter(|n| !n.is_empty()) else {
            return Verdict::Error(format!(
                "principal {} has {PARENT_TYPE} but no {PARENT_NAME}",
                principal.user
            ));
        };
        Self::rewrite(event, Some((parent_type, parent_name)))
    }
}

weir_guest::export_filter!(ScopeInject);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use weir_guest::testing::{Harness, Outcome};
    use weir_guest::{OwnedEvent, Principal};

    fn kube_event(annotations: serde_json::Value) -> OwnedEvent {
        OwnedEvent::new("1", "/k8s", "k8s.event").with_json(&json!({
            "metadata": {"name": "e1", "namespace": "default", "annotations": annotations},
            "type": "Normal",
            "reason": "Created",
        }))
    }

    fn principal(extra: &[(&str, &str)]) -> Principal {
        Principal {
            user: "alice".into(),
            groups: vec!["dev".into()],
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect(),
        }
    }

    fn annotations(o: &Outcome) -> serde_json::Value {
        let e = o.kept().expect("kept");
        e.json_value().expect("json")["metadata"]["annotations"].clone()
    }

    #[test]
    fn injects_scope_and_overwrites_tampering() {
        let mut h = Harness::<ScopeInject>::new("{}").expect("config");
        h.context.principal = Some(principal(&[(PARENT_TYPE, "Project"), (PARENT_NAME, "p1")]));
        let tampered =
            kube_event(json!({SCOPE_TYPE: "Organization", SCOPE_NAME: "victim", "keep": "me"}));
        let out = h.run(&[kube_event(json!({})), tampered]);
        for o in &out {
            let a = annotations(o);
            assert_eq!(a[SCOPE_TYPE], "Project");
            assert_eq!(a[SCOPE_NAME], "p1");
            assert_eq!(o.kept().and_then(|e| e.extension("scopename")), Some("p1"));
        }
        assert_eq!(annotations(&out[1])["keep"], "me");
    }

    #[test]
    fn platform_principals_pass_untouched() {
        let mut h = Harness::<ScopeInject>::new("{}").expect("config");
        h.context.principal = Some(principal(&[]));
        let input = kube_event(json!({SCOPE_TYPE: "Organization", SCOPE_NAME: "o"}));
        let out = h.run(std::slice::from_ref(&input));
        assert_eq!(out[0], Outcome::Keep(input));
    }

    #[test]
    fn unauthenticated_claims_are_stripped_and_a_half_scope_is_an_error() {
        let mut h = Harness::<ScopeInject>::new("{}").expect("config");
        let out = h.run(&[
            kube_event(json!({SCOPE_TYPE: "Organization", "other": "x"})),
            OwnedEvent::new("2", "/x", "t").with_json(&json!([1, 2])),
        ]);
        let a = annotations(&out[0]);
        assert!(a.get(SCOPE_TYPE).is_none());
        assert_eq!(a["other"], "x");
        // Not a Kubernetes Event: nothing to strip, passed as it is.
        assert_eq!(
            out[1],
            Outcome::Keep(OwnedEvent::new("2", "/x", "t").with_json(&json!([1, 2])))
        );
        let mut h = Harness::<ScopeInject>::new("{}").expect("config");
        h.context.principal = Some(principal(&[(PARENT_TYPE, "Project")]));
        assert!(matches!(
            h.run(&[kube_event(json!({}))])[0],
            Outcome::Error(_)
        ));
    }
}
