//! `trigger-route`: sends trigger events to the sink (a handler topic) named for their
//! kind, the way Roost Keeper's consumer dispatched `io.roost-keeper.trigger.*` events to
//! its teardown, scale and update handlers.
//!
//! An event whose type is `<prefix><kind>` with a configured kind is routed to that
//! kind's sink; a trigger of an unknown kind is kept (default) or dropped; any other
//! event is kept and goes on along the route.
//!
//! Config: `{"prefix": "io.roost-keeper.trigger.", "routes": {"teardown":
//! "teardown-handler", "scale": "scale-handler"}, "unknown": "keep"}`.

use serde::Deserialize;
use std::collections::BTreeMap;
use weir_guest::{Context, Event, Filter, Verdict};

/// What happens to a trigger whose kind has no sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unknown {
    /// Let it go on along the route (default).
    #[default]
    Keep,
    /// Drop it, saying why.
    Drop,
}

/// Configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The type prefix of trigger events.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Sink per trigger kind (the type after the prefix).
    pub routes: BTreeMap<String, String>,
    /// Triggers of other kinds.
    #[serde(default)]
    pub unknown: Unknown,
}

fn default_prefix() -> String {
    "io.roost-keeper.trigger.".into()
}

/// The filter.
pub struct TriggerRoute {
    config: Config,
}

impl Filter for TriggerRoute {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.routes.is_empty() {
            return Err("routes: name at least one trigger kind and its sink".into());
        }
        if let Some((kind, _)) = config.routes.iter().find(|(_, sink)| sink.is_empty()) {
            return Err(format!("routes.{kind}: the sink name is empty"));
        }
        Ok(Self { config })
    }

    fn process(&mut self, _ctx: &Context, event: &Event<'_>) -> Verdict {
        let Some(kind) = event.ty().strip_prefix(self.config.prefix.as_str()) else {
            return Verdict::Keep;
        };
        match (self.config.routes.get(kind), self.config.unknown) {
            (Some(sink), _) => Verdict::route(sink.clone()),
            (None, Unknown::Keep) => Verdict::Keep,
            (None, Unknown::Drop) => Verdict::drop("trigger of a kind no handler takes"),
        }
    }
}

weir_guest::export_filter!(TriggerRoute);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_guest::testing::{Harness, Outcome};
    use weir_guest::OwnedEvent;

    fn sinks(config: &str, types: &[&str]) -> Vec<Option<String>> {
        let mut h = Harness::<TriggerRoute>::new(config).expect("config");
        let events: Vec<OwnedEvent> = types
            .iter()
            .map(|t| OwnedEvent::new("1", "/roost-keeper", *t))
            .collect();
        h.run(&events)
            .into_iter()
            .map(|o| match o {
                Outcome::Route { sink, .. } => Some(sink),
                Outcome::Keep(_) => None,
                Outcome::Drop(reason) => Some(format!("dropped: {reason}")),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn triggers_go_to_their_handler_sinks() {
        let out = sinks(
            r#"{"routes": {"teardown": "teardown-handler", "scale": "scale-handler"}}"#,
            &[
                "io.roost-keeper.trigger.teardown",
                "io.roost-keeper.trigger.scale",
                "io.roost-keeper.trigger.update",
                "io.roost-keeper.roost.lifecycle.created",
            ],
        );
        assert_eq!(
            out,
            [
                Some("teardown-handler".to_owned()),
                Some("scale-handler".to_owned()),
                None,
                None
            ]
        );
        let strict = sinks(
            r#"{"routes": {"scale": "s"}, "unknown": "drop"}"#,
            &["io.roost-keeper.trigger.update"],
        );
        assert!(strict[0]
            .as_deref()
            .is_some_and(|s| s.starts_with("dropped")));
    }

    #[test]
    fn empty_routes_are_refused() {
        assert!(Harness::<TriggerRoute>::new(r#"{"routes": {}}"#).is_err());
        assert!(Harness::<TriggerRoute>::new(r#"{"route": {}}"#).is_err());
    }
}
