//! The canonical envelope every source maps into and every sink maps out of: a
//! CloudEvents 1.0 event.
//!
//! weir keeps its own compact type rather than `cloudevents-sdk`'s `Event`: that type parses
//! `time` into a `chrono` value and `source` into a `Url` and re-renders them, which is
//! neither free on the hot path nor byte-exact; weir moves attribute text as it arrived
//! (after validating it once, at ingest) and data as raw bytes.

use bytes::Bytes;
use weir_abi::{CoreAttrs, PatchOp};

/// The JSON type an extension attribute had when it arrived, so it leaves the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExtKind {
    /// A string (also URI, URI-reference, Timestamp, Binary).
    #[default]
    String,
    /// `true` / `false`.
    Bool,
    /// A 32-bit signed integer.
    Integer,
}

/// One extension attribute: canonical string form plus the type it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// Lower-case a-z0-9 name.
    pub name: String,
    /// Canonical string value.
    pub value: String,
    /// Its CloudEvents type.
    pub kind: ExtKind,
}

/// A CloudEvents 1.0 event (`specversion` is implied).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// `id`.
    pub id: String,
    /// `source`.
    pub source: String,
    /// `type`.
    pub ty: String,
    /// `subject`.
    pub subject: Option<String>,
    /// `time` (RFC 3339).
    pub time: Option<String>,
    /// `datacontenttype`.
    pub datacontenttype: Option<String>,
    /// `dataschema`.
    pub dataschema: Option<String>,
    /// Extension attributes in arrival order.
    pub extensions: Vec<Extension>,
    /// Data bytes, when present.
    pub data: Option<Bytes>,
}

/// Why an event is not a valid CloudEvent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// A required attribute is missing or empty.
    #[error("required attribute `{0}` is missing or empty")]
    Missing(&'static str),
    /// `specversion` is not 1.0.
    #[error("specversion `{0}` is not supported (only 1.0)")]
    SpecVersion(String),
    /// An attribute name breaks the naming rules.
    #[error("attribute name `{0}` is invalid: names are 1-20 lower-case letters and digits")]
    BadName(String),
    /// An attribute appears twice.
    #[error("attribute `{0}` appears more than once")]
    Duplicate(String),
    /// `time` is not RFC 3339.
    #[error("time `{0}` is not an RFC 3339 timestamp")]
    BadTime(String),
    /// A value holds control characters.
    #[error("attribute `{0}` holds control characters")]
    ControlChars(String),
    /// An attribute has a value of the wrong type.
    #[error("attribute `{name}` has an invalid value: {reason}")]
    BadValue {
        /// The attribute.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// The core attribute names, which may not be used as extension names.
pub const CORE_ATTRIBUTES: [&str; 9] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
];

/// Whether `name` is a valid attribute name (lower-case ASCII letters and digits, 1-20).
pub fn valid_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 20
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn has_control_chars(s: &str) -> bool {
    s.chars()
        .any(|c| matches!(c as u32, 0x00..=0x1f | 0x7f..=0x9f))
}

/// Whether `s` is an RFC 3339 timestamp: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|d| d.len() == r.len() && d.iter().all(u8::is_ascii_digit))
    };
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || !matches!(b[10], b'T' | b't' | b' ')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(99);
    if !(1..=12).contains(&num(5..7))
        || !(1..=31).contains(&num(8..10))
        || num(11..13) > 23
        || num(14..16) > 59
        || num(17..19) > 60
    {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            i + 6 == b.len() && digits(i + 1..i + 3) && b[i + 3] == b':' && digits(i + 4..i + 6)
        }
        _ => false,
    }
}

impl Event {
    /// An event with the three required attributes.
    pub fn new(id: impl Into<String>, source: impl Into<String>, ty: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            source: source.into(),
            ty: ty.into(),
            ..Self::default()
        }
    }

    /// Checks the CloudEvents rules weir enforces at ingest: required attributes present and
    /// non-empty, attribute names valid and unique, `time` RFC 3339, no control characters.
    pub fn validate(&self) -> Result<(), EventError> {
        for (name, value) in [
            ("id", &self.id),
            ("source", &self.source),
            ("type", &self.ty),
        ] {
            if value.is_empty() {
                return Err(EventError::Missing(name));
            }
            if has_control_chars(value) {
                return Err(EventError::ControlChars(name.into()));
            }
        }
        if let Some(time) = &self.time {
            if !is_rfc3339(time) {
                return Err(EventError::BadTime(time.clone()));
            }
        }
        for (name, value) in [
            ("subject", &self.subject),
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
        ] {
            if value.as_deref().is_some_and(has_control_chars) {
                return Err(EventError::ControlChars(name.into()));
            }
        }
        for (i, ext) in self.extensions.iter().enumerate() {
            if !valid_attribute_name(&ext.name) || CORE_ATTRIBUTES.contains(&ext.name.as_str()) {
                return Err(EventError::BadName(ext.name.clone()));
            }
            if self.extensions[..i].iter().any(|e| e.name == ext.name) {
                return Err(EventError::Duplicate(ext.name.clone()));
            }
            if has_control_chars(&ext.value) {
                return Err(EventError::ControlChars(ext.name.clone()));
            }
        }
        Ok(())
    }

    /// The core attributes, borrowed for the packed writer.
    pub fn core(&self) -> CoreAttrs<'_> {
        CoreAttrs {
            id: &self.id,
            source: &self.source,
            ty: &self.ty,
            subject: self.subject.as_deref(),
            time: self.time.as_deref(),
            datacontenttype: self.datacontenttype.as_deref(),
            dataschema: self.dataschema.as_deref(),
        }
    }

    /// Extension attributes as borrowed `(name, value)` pairs.
    pub fn extension_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.extensions
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
    }

    /// An extension attribute's value.
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.extensions
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value.as_str())
    }

    /// Sets an extension attribute (as a string).
    pub fn set_extension(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.extensions.iter_mut().find(|e| e.name == name) {
            Some(ext) => {
                ext.value = value;
                ext.kind = ExtKind::String;
            }
            None => self.extensions.push(Extension {
                name: name.to_owned(),
                value,
                kind: ExtKind::String,
            }),
        }
    }

    /// The approximate size of the event in bytes (attributes plus data).
    pub fn size(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        self.id.len()
            + self.source.len()
            + self.ty.len()
            + opt(&self.subject)
            + opt(&self.time)
            + opt(&self.datacontenttype)
            + opt(&self.dataschema)
            + self
                .extensions
                .iter()
                .map(|e| e.name.len() + e.value.len())
                .sum::<usize>()
            + self.data.as_ref().map_or(0, Bytes::len)
    }

    /// Applies one patch operation from a filter. Renaming a required attribute to the
    /// empty string or using an invalid extension name is refused.
    pub fn apply(&mut self, op: PatchOp<'_>) -> Result<(), EventError> {
        match op {
            PatchOp::Set { name, value } => {
                let slot = match name {
                    "id" | "source" | "type" if value.is_empty() => {
                        return Err(EventError::Missing(match name {
                            "id" => "id",
                            "source" => "source",
                            _ => "type",
                        }))
                    }
                    "id" => &mut self.id,
                    "source" => &mut self.source,
                    "type" => &mut self.ty,
                    "subject" => self.subject.get_or_insert_with(String::new),
                    "time" => {
                        if !is_rfc3339(value) {
                            return Err(EventError::BadTime(value.to_owned()));
                        }
                        self.time.get_or_insert_with(String::new)
                    }
                    "datacontenttype" => self.datacontenttype.get_or_insert_with(String::new),
                    "dataschema" => self.dataschema.get_or_insert_with(String::new),
                    _ => {
                        if !valid_attribute_name(name) || CORE_ATTRIBUTES.contains(&name) {
                            return Err(EventError::BadName(name.to_owned()));
                        }
                        self.set_extension(name, value);
                        return Ok(());
                    }
                };
                slot.clear();
                slot.push_str(value);
            }
            PatchOp::Remove { name } => match name {
                "subject" => self.subject = None,
                "time" => self.time = None,
                "datacontenttype" => self.datacontenttype = None,
                "dataschema" => self.dataschema = None,
                "id" | "source" | "type" | "specversion" => {
                    return Err(EventError::BadValue {
                        name: name.to_owned(),
                        reason: "required attributes cannot be removed".into(),
                    })
                }
                _ => self.extensions.retain(|e| e.name != name),
            },
            PatchOp::SetData(data) => self.data = Some(Bytes::copy_from_slice(data)),
            PatchOp::RemoveData => self.data = None,
        }
        Ok(())
    }

    /// Builds an owned event from a packed view a filter returned (replace / fan-out),
    /// validating it like an ingested event.
    pub fn from_view(view: &weir_abi::EventView<'_>) -> Result<Self, EventError> {
        let core = &view.core;
        let event = Self {
            id: core.id.to_owned(),
            source: core.source.to_owned(),
            ty: core.ty.to_owned(),
            subject: core.subject.map(str::to_owned),
            time: core.time.map(str::to_owned),
            datacontenttype: core.datacontenttype.map(str::to_owned),
            dataschema: core.dataschema.map(str::to_owned),
            extensions: view
                .extensions()
                .map(|(name, value)| Extension {
                    name: name.to_owned(),
                    value: value.to_owned(),
                    kind: ExtKind::String,
                })
                .collect(),
            data: view.data.map(Bytes::copy_from_slice),
        };
        event.validate()?;
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_accepts_and_rejects() {
        for ok in [
            "2026-11-22T10:00:00Z",
            "2026-11-22T10:00:00.123456789+01:00",
            "1985-04-12t23:20:50.52z",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "2026-11-22",
            "2026-13-22T10:00:00Z",
            "2026-11-22T10:00:00",
            "2026-11-22T10:00:00.Z",
            "2026-11-22T10:00:00+0100",
            "yesterday at noon!!!",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let mut e = Event::new("1", "/s", "t");
        assert_eq!(e.validate(), Ok(()));
        e.extensions.push(Extension {
            name: "Bad-Name".into(),
            value: "x".into(),
            kind: ExtKind::String,
        });
        assert_eq!(e.validate(), Err(EventError::BadName("Bad-Name".into())));
        let e = Event::new("", "/s", "t");
        assert_eq!(e.validate(), Err(EventError::Missing("id")));
        let mut e = Event::new("1", "/s", "t");
        e.set_extension("a", "1");
        e.extensions.push(e.extensions[0].clone());
        assert_eq!(e.validate(), Err(EventError::Duplicate("a".into())));
    }

    #[test]
    fn patches_apply_and_guard_required_attributes() {
        let mut e = Event::new("1", "/s", "t");
        e.apply(PatchOp::Set {
            name: "subject",
            value: "x",
        })
        .expect("set");
        e.apply(PatchOp::Set {
            name: "tenant",
            value: "acme",
        })
        .expect("ext");
        e.apply(PatchOp::SetData(b"{}")).expect("data");
        assert_eq!(e.subject.as_deref(), Some("x"));
        assert_eq!(e.extension("tenant"), Some("acme"));
        assert!(e.apply(PatchOp::Remove { name: "id" }).is_err());
        assert!(e
            .apply(PatchOp::Set {
                name: "type",
                value: ""
            })
            .is_err());
        assert!(e
            .apply(PatchOp::Set {
                name: "BAD",
                value: ""
            })
            .is_err());
        e.apply(PatchOp::Remove { name: "tenant" }).expect("remove");
        assert_eq!(e.extension("tenant"), None);
    }
}
