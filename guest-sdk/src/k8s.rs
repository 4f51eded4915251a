//! Helpers for Kubernetes Event objects carried as JSON data (core/v1 and events.k8s.io/v1).

use serde_json::{Map, Value};

/// The longest object name Kubernetes takes (a DNS subdomain).
pub const MAX_NAME: usize = 253;

/// Cuts `name` to at most `max` bytes, at a character boundary (a name may hold
/// multi-byte characters the apiserver did not refuse; cutting inside one would panic).
pub fn cut_name(name: &mut String, max: usize) {
    if name.len() > max {
        let mut at = max;
        while !name.is_char_boundary(at) {
            at -= 1;
        }
        name.truncate(at);
    }
}

/// The event's `type` ("Normal" or "Warning").
pub fn event_type(event: &Value) -> Option<&str> {
    event.get("type").and_then(Value::as_str)
}

/// The event's `reason`.
pub fn reason(event: &Value) -> Option<&str> {
    event.get("reason").and_then(Value::as_str)
}

/// The object the event is about: `regarding` (events.k8s.io/v1) or `involvedObject` (core/v1).
pub fn regarding(event: &Value) -> Option<&Value> {
    event
        .get("regarding")
        .or_else(|| event.get("involvedObject"))
}

/// An annotation's value.
pub fn annotation<'a>(event: &'a Value, key: &str) -> Option<&'a str> {
    event
        .get("metadata")?
        .get("annotations")?
        .get(key)?
        .as_str()
}

/// Sets an annotation, creating `metadata.annotations` as needed. Returns false when the
/// value is not an object (nothing changed).
pub fn set_annotation(event: &mut Value, key: &str, value: &str) -> bool {
    let Some(obj) = event.as_object_mut() else {
        return false;
    };
    let metadata = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    let Some(metadata) = metadata.as_object_mut() else {
        return false;
    };
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !annotations.is_object() {
        *annotations = Value::Object(Map::new());
    }
    match annotations.as_object_mut() {
        Some(map) => {
            map.insert(key.to_owned(), Value::String(value.to_owned()));
            true
        }
        None => false,
    }
}

/// Removes an annotation; returns whether it was there.
pub fn remove_annotation(event: &mut Value, key: &str) -> bool {
    event
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
        .map(|a| a.remove(key).is_some())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sets_annotations_on_bare_and_existing_metadata() {
        let mut e = json!({"type": "Warning", "involvedObject": {"kind": "Pod"}});
        assert!(set_annotation(&mut e, "a/b", "c"));
        assert_eq!(annotation(&e, "a/b"), Some("c"));
        assert!(set_annotation(&mut e, "a/b", "d"));
        assert_eq!(annotation(&e, "a/b"), Some("d"));
        assert_eq!(event_type(&e), Some("Warning"));
        assert_eq!(
            regarding(&e).and_then(|r| r.get("kind")),
            Some(&json!("Pod"))
        );
        assert!(remove_annotation(&mut e, "a/b"));
        assert!(!set_annotation(&mut json!([1]), "a", "b"));
    }
}

#[cfg(test)]
mod cut_tests {
    use super::*;

    #[test]
    fn names_are_cut_at_a_character_boundary() {
        let mut name = format!("{}é", "a".repeat(252));
        cut_name(&mut name, MAX_NAME);
        assert_eq!(name.len(), 252);
        let mut short = "web".to_owned();
        cut_name(&mut short, MAX_NAME);
        assert_eq!(short, "web");
    }
}
