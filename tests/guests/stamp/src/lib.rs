//! Appends the configured stamp to the `stamps` extension, so a test can see which
//! versions processed an event (and that no event was processed twice).

use serde::Deserialize;
use weir_guest::{Context, Event, Filter, Patch, Verdict};

/// Configuration: `{"stamp": "v3"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    stamp: String,
}

/// The filter.
pub struct Stamp(Config);

impl Filter for Stamp {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.stamp.is_empty() {
            return Err("stamp must not be empty".into());
        }
        Ok(Self(config))
    }

    fn process(&mut self, _ctx: &Context, event: &Event<'_>) -> Verdict {
        let stamps = match event.extension("stamps") {
            Some(prev) => format!("{prev}.{}", self.0.stamp),
            None => self.0.stamp.clone(),
        };
        Verdict::Patch(Patch::new().set("stamps", stamps))
    }
}

weir_guest::export_filter!(Stamp);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_guest::testing::Harness;
    use weir_guest::OwnedEvent;

    #[test]
    fn appends_stamps() {
        let mut h = Harness::<Stamp>::new(r#"{"stamp":"v2"}"#).expect("config");
        let out = h.run(&[
            OwnedEvent::new("1", "/s", "t"),
            OwnedEvent::new("2", "/s", "t").with("stamps", "v1"),
        ]);
        assert_eq!(
            out[0].kept().and_then(|e| e.extension("stamps")),
            Some("v2")
        );
        assert_eq!(
            out[1].kept().and_then(|e| e.extension("stamps")),
            Some("v1.v2")
        );
        assert!(Harness::<Stamp>::new(r#"{"stamp":""}"#).is_err());
    }
}
