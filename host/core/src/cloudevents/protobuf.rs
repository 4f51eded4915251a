//! The CloudEvents Protobuf Event Format (`proto/io/cloudevents/v1/cloudevents.proto`):
//! weir's [`Event`] to and from `io.cloudevents.v1.CloudEvent`.
//!
//! Mapping: `time` travels as `ce_timestamp` and comes back as RFC 3339 in UTC (the
//! instant is kept, a numeric offset is not); `dataschema` is `ce_uri`; `subject`,
//! `datacontenttype` and string extensions are `ce_string`; boolean and integer
//! extensions keep their types; `ce_bytes`, `ce_uri_ref` and timestamp extensions are read
//! into their canonical string forms. Data that is UTF-8 and of a JSON or textual content
//! type (or of none, which means JSON) is `text_data`; other data `binary_data`, byte for
//! byte either way. Extensions come back ordered by name (the format's attributes are a
//! map).

use crate::cloudevents::json::{is_json_media_type, is_text_media_type};
use crate::event::{Event, EventError, ExtKind, Extension};
use crate::pb::io::cloudevents::v1::{
    cloud_event::{cloud_event_attribute_value::Attr, CloudEventAttributeValue, Data},
    CloudEvent,
};
use bytes::Bytes;

/// Why a protobuf CloudEvent cannot become an event.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufFormatError {
    /// `spec_version` is not 1.0.
    #[error("spec_version `{0}` is not supported (only 1.0)")]
    SpecVersion(String),
    /// `proto_data` (a `google.protobuf.Any`) has no byte form weir could carry.
    #[error("proto_data of type `{0}` is not supported: send binary_data")]
    ProtoData(String),
    /// A timestamp is outside the range RFC 3339 can write.
    #[error("attribute `{0}` holds a timestamp out of range")]
    Timestamp(String),
    /// An attribute has no value set.
    #[error("attribute `{0}` has no value")]
    Empty(String),
    /// An attribute has a type the CloudEvents spec does not allow for it.
    #[error("attribute `{name}` must be a {expected}")]
    Type {
        /// The attribute.
        name: String,
        /// What it must be.
        expected: &'static str,
    },
    /// The event breaks a CloudEvents rule.
    #[error(transparent)]
    Event(#[from] EventError),
}

fn string(value: &str) -> CloudEventAttributeValue {
    CloudEventAttributeValue {
        attr: Some(Attr::CeString(value.to_owned())),
    }
}

fn timestamp(time: &str) -> CloudEventAttributeValue {
    let attr = match chrono::DateTime::parse_from_rfc3339(time) {
        Ok(t) => Attr::CeTimestamp(prost_types::Timestamp {
            seconds: t.timestamp(),
            // A leap second (`:60`) reads as 1e9 ns or more, which a protobuf Timestamp
            // may not hold: it becomes the last instant of the second before.
            nanos: i32::try_from(t.timestamp_subsec_nanos().min(999_999_999))
                .unwrap_or(999_999_999),
        }),
        // Validated at ingest by form; a date that does not exist (30 February) stays text.
        Err(_) => Attr::CeString(time.to_owned()),
    };
    CloudEventAttributeValue { attr: Some(attr) }
}

/// An event in the protobuf format.
pub fn to_proto(e: &Event) -> CloudEvent {
    let mut attributes = std::collections::BTreeMap::new();
    for (name, value) in [
        ("subject", &e.subject),
        ("datacontenttype", &e.datacontenttype),
    ] {
        if let Some(v) = value {
            attributes.insert(name.to_owned(), string(v));
        }
    }
    if let Some(time) = &e.time {
        attributes.insert("time".to_owned(), timestamp(time));
    }
    if let Some(schema) = &e.dataschema {
        attributes.insert(
            "dataschema".to_owned(),
            CloudEventAttributeValue {
                attr: Some(Attr::CeUri(schema.clone())),
            },
        );
    }
    for ext in &e.extensions {
        let attr = match ext.kind {
            ExtKind::Bool => Attr::CeBoolean(ext.value == "true"),
            ExtKind::Integer => match ext.value.parse::<i32>() {
                Ok(i) => Attr::CeInteger(i),
                Err(_) => Attr::CeString(ext.value.clone()),
            },
            ExtKind::String => Attr::CeString(ext.value.clone()),
        };
        attributes.insert(
            ext.name.clone(),
            CloudEventAttributeValue { attr: Some(attr) },
        );
    }
    let data = e.data.as_ref().map(|data| {
        let textual = e
            .datacontenttype
            .as_deref()
            .is_none_or(|ct| is_json_media_type(ct) || is_text_media_type(ct));
        match (textual, std::str::from_utf8(data)) {
            (true, Ok(text)) => Data::TextData(text.to_owned()),
            _ => Data::BinaryData(data.clone()),
        }
    });
    CloudEvent {
        id: e.id.clone(),
        source: e.source.clone(),
        spec_version: "1.0".to_owned(),
        r#type: e.ty.clone(),
        attributes,
        data,
    }
}

fn rfc3339(name: &str, t: &prost_types::Timestamp) -> Result<String, ProtobufFormatError> {
    let nanos = u32::try_from(t.nanos).map_err(|_| ProtobufFormatError::Timestamp(name.into()))?;
    chrono::DateTime::from_timestamp(t.seconds, nanos)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .ok_or_else(|| ProtobufFormatError::Timestamp(name.into()))
}

/// An attribute's canonical string form and its weir kind.
fn canonical(name: &str, attr: Attr) -> Result<(String, ExtKind), ProtobufFormatError> {
    use base64::Engine as _;
    Ok(match attr {
        Attr::CeBoolean(b) => (b.to_string(), ExtKind::Bool),
        Attr::CeInteger(i) => (i.to_string(), ExtKind::Integer),
        Attr::CeString(s) | Attr::CeUri(s) | Attr::CeUriRef(s) => (s, ExtKind::String),
        Attr::CeBytes(b) => (
            base64::engine::general_purpose::STANDARD.encode(b),
            ExtKind::String,
        ),
        Attr::CeTimestamp(t) => (rfc3339(name, &t)?, ExtKind::String),
    })
}

/// An event from the protobuf format, validated as at ingest.
pub fn from_proto(p: CloudEvent) -> Result<Event, ProtobufFormatError> {
    if p.spec_version != "1.0" {
        return Err(ProtobufFormatError::SpecVersion(p.spec_version));
    }
    let mut e = Event::new(p.id, p.source, p.r#type);
    for (name, value) in p.attributes {
        let attr = value
            .attr
            .ok_or_else(|| ProtobufFormatError::Empty(name.clone()))?;
        // The core attributes' types are the spec's (weir itself writes `time` as a
        // string only for a date that does not exist).
        let expected = match (name.as_str(), &attr) {
            ("subject" | "datacontenttype", Attr::CeString(_))
            | ("dataschema", Attr::CeUri(_) | Attr::CeString(_))
            | ("time", Attr::CeTimestamp(_) | Attr::CeString(_)) => None,
            ("subject" | "datacontenttype", _) => Some("string"),
            ("dataschema", _) => Some("URI"),
            ("time", _) => Some("timestamp"),
            _ => None,
        };
        if let Some(expected) = expected {
            return Err(ProtobufFormatError::Type { name, expected });
        }
        let (value, kind) = canonical(&name, attr)?;
        let core = match name.as_str() {
            "subject" => Some(&mut e.subject),
            "time" => Some(&mut e.time),
            "datacontenttype" => Some(&mut e.datacontenttype),
            "dataschema" => Some(&mut e.dataschema),
            _ => None,
        };
        match core {
            Some(slot) => *slot = Some(value),
            None => e.extensions.push(Extension { name, value, kind }),
        }
    }
    e.data = match p.data {
        None => None,
        Some(Data::BinaryData(b)) => Some(b),
        Some(Data::TextData(t)) => Some(Bytes::from(t)),
        Some(Data::ProtoData(any)) => return Err(ProtobufFormatError::ProtoData(any.type_url)),
    };
    e.validate()?;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn sample() -> Event {
        let mut e = Event::new("e-1", "/tests/pb", "io.weir.test");
        e.subject = Some("s".into());
        e.time = Some("2026-12-01T10:00:00.250Z".into());
        e.datacontenttype = Some("application/json".into());
        e.dataschema = Some("https://example.com/schema".into());
        e.extensions = vec![
            Extension {
                name: "alpha".into(),
                value: "true".into(),
                kind: ExtKind::Bool,
            },
            Extension {
                name: "count".into(),
                value: "-42".into(),
                kind: ExtKind::Integer,
            },
            Extension {
                name: "tenant".into(),
                value: "acme".into(),
                kind: ExtKind::String,
            },
        ];
        e.data = Some(Bytes::from_static(br#"{"a": [1, 2]}"#));
        e
    }

    #[test]
    fn round_trips_attributes_kinds_and_data_through_bytes() {
        let e = sample();
        let wire = to_proto(&e).encode_to_vec();
        let back = from_proto(CloudEvent::decode(wire.as_slice()).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn time_is_a_timestamp_and_comes_back_in_utc() {
        let mut e = sample();
        e.time = Some("2026-12-01T12:00:00+02:00".into());
        let p = to_proto(&e);
        assert!(matches!(
            p.attributes["time"].attr,
            Some(Attr::CeTimestamp(prost_types::Timestamp { nanos: 0, .. }))
        ));
        assert_eq!(
            from_proto(p).unwrap().time.as_deref(),
            Some("2026-12-01T10:00:00Z")
        );
    }

    #[test]
    fn a_leap_second_becomes_a_valid_timestamp() {
        let mut e = sample();
        e.time = Some("2016-12-31T23:59:60Z".into());
        match to_proto(&e).attributes["time"].attr {
            Some(Attr::CeTimestamp(t)) => assert!((0..1_000_000_000).contains(&t.nanos)),
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn binary_data_stays_binary_and_text_stays_text() {
        let mut e = sample();
        e.datacontenttype = Some("application/octet-stream".into());
        e.data = Some(Bytes::from_static(&[0, 159, 146, 150]));
        let p = to_proto(&e);
        assert!(matches!(p.data, Some(Data::BinaryData(_))));
        assert_eq!(from_proto(p).unwrap().data, e.data);
        e.datacontenttype = Some("text/plain".into());
        e.data = Some(Bytes::from_static(b"hello"));
        let p = to_proto(&e);
        assert!(matches!(p.data, Some(Data::TextData(ref t)) if t == "hello"));
    }

    #[test]
    fn refuses_what_is_not_a_valid_event_with_the_reason() {
        let mut p = to_proto(&sample());
        p.spec_version = "0.3".into();
        assert!(matches!(
            from_proto(p),
            Err(ProtobufFormatError::SpecVersion(_))
        ));
        let mut p = to_proto(&sample());
        p.id.clear();
        assert!(matches!(
            from_proto(p),
            Err(ProtobufFormatError::Event(EventError::Missing("id")))
        ));
        let mut p = to_proto(&sample());
        p.attributes.insert(
            "subject".into(),
            CloudEventAttributeValue {
                attr: Some(Attr::CeInteger(1)),
            },
        );
        let err = from_proto(p).unwrap_err().to_string();
        assert!(err.contains("subject"), "{err}");
        let mut p = to_proto(&sample());
        p.data = Some(Data::ProtoData(prost_types::Any {
            type_url: "type.googleapis.com/x.Y".into(),
            value: Vec::new(),
        }));
        assert!(from_proto(p).unwrap_err().to_string().contains("x.Y"));
        let mut p = to_proto(&sample());
        p.attributes.insert(
            "Bad-Name".into(),
            CloudEventAttributeValue {
                attr: Some(Attr::CeString("x".into())),
            },
        );
        assert!(matches!(
            from_proto(p),
            Err(ProtobufFormatError::Event(EventError::BadName(_)))
        ));
    }
}
