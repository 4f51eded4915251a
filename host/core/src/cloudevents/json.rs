//! The CloudEvents JSON event format (`application/cloudevents+json`) and its batch form.
//!
//! JSON `data` is kept as the exact text that arrived (no parse-and-reprint), so an event
//! leaves byte-identical to how it came.

use crate::event::{Event, EventError, ExtKind, Extension};
use base64::Engine as _;
use bytes::Bytes;
use serde::ser::{SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::BTreeMap;

/// Why a JSON document is not a CloudEvent.
#[derive(Debug, thiserror::Error)]
pub enum JsonFormatError {
    /// The body is not JSON of the right shape.
    #[error("invalid JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    /// An attribute has the wrong JSON type.
    #[error("attribute `{name}` must be {expected}")]
    Type {
        /// The attribute.
        name: String,
        /// What it must be.
        expected: &'static str,
    },
    /// Both `data` and `data_base64` are present.
    #[error("`data` and `data_base64` must not both be present")]
    BothData,
    /// `data_base64` does not decode.
    #[error("`data_base64` is not valid base64: {0}")]
    Base64(String),
    /// The event breaks a CloudEvents rule.
    #[error(transparent)]
    Event(#[from] EventError),
    /// The event at a position of a batch is invalid.
    #[error("event {index} of the batch: {source}")]
    InBatch {
        /// Zero-based position in the batch.
        index: usize,
        /// What is wrong with it.
        source: Box<JsonFormatError>,
    },
}

/// Whether a media type is text that can travel as a JSON string (`text/*`, XML, YAML,
/// form data); anything else that is not JSON travels as `data_base64`.
pub fn is_text_media_type(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media.starts_with("text/")
        || media.ends_with("/xml")
        || media.ends_with("+xml")
        || media.ends_with("/yaml")
        || media == "application/x-www-form-urlencoded"
}

/// Whether a media type (parameters allowed) denotes JSON: `*/json` or `*/*+json`.
pub fn is_json_media_type(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    let media = media.to_ascii_lowercase();
    media.ends_with("/json") || media.ends_with("+json")
}

fn string_attr(name: &str, raw: &RawValue) -> Result<Option<String>, JsonFormatError> {
    match serde_json::from_str::<Option<String>>(raw.get()) {
        Ok(v) => Ok(v),
        Err(_) => Err(JsonFormatError::Type {
            name: name.to_owned(),
            expected: "a string",
        }),
    }
}

/// Parses one structured-mode event.
pub fn parse_event(body: &[u8]) -> Result<Event, JsonFormatError> {
    let members: BTreeMap<String, &RawValue> = serde_json::from_slice(body)?;
    from_members(members)
}

/// Parses a batch (`application/cloudevents-batch+json`): a JSON array of events.
pub fn parse_batch(body: &[u8]) -> Result<Vec<Event>, JsonFormatError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let items: Vec<&RawValue> = serde_json::from_slice(body)?;
    items
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            serde_json::from_str::<BTreeMap<String, &RawValue>>(raw.get())
                .map_err(JsonFormatError::from)
                .and_then(from_members)
                .map_err(|e| JsonFormatError::InBatch {
                    index,
                    source: Box::new(e),
                })
        })
        .collect()
}

fn from_members(mut m: BTreeMap<String, &RawValue>) -> Result<Event, JsonFormatError> {
    let mut take = |name: &str| -> Result<Option<String>, JsonFormatError> {
        match m.remove(name) {
            Some(raw) => string_attr(name, raw),
            None => Ok(None),
        }
    };
    let specversion = take("specversion")?.ok_or(EventError::Missing("specversion"))?;
    if specversion != "1.0" {
        return Err(EventError::SpecVersion(specversion).into());
    }
    let id = take("id")?.ok_or(EventError::Missing("id"))?;
    let source = take("source")?.ok_or(EventError::Missing("source"))?;
    let ty = take("type")?.ok_or(EventError::Missing("type"))?;
    let subject = take("subject")?;
    let time = take("time")?;
    let mut datacontenttype = take("datacontenttype")?;
    let dataschema = take("dataschema")?;
    let data_base64 = m.remove("data_base64");
    let data_json = m.remove("data");
    let data = match (data_json, data_base64) {
        (Some(_), Some(b64)) if b64.get() != "null" => return Err(JsonFormatError::BothData),
        (_, Some(b64)) if b64.get() != "null" => {
            let text = string_attr("data_base64", b64)?.unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(|e| JsonFormatError::Base64(e.to_string()))?;
            Some(Bytes::from(bytes))
        }
        (Some(raw), _) => {
            let json = datacontenttype.as_deref().is_none_or(is_json_media_type);
            if json {
                if datacontenttype.is_none() {
                    datacontenttype = Some("application/json".to_owned());
                }
                Some(Bytes::copy_from_slice(raw.get().as_bytes()))
            } else {
                match serde_json::from_str::<Option<String>>(raw.get()) {
                    Ok(Some(text)) => Some(Bytes::from(text.into_bytes())),
                    Ok(None) => None,
                    Err(_) => {
                        return Err(JsonFormatError::Type {
                            name: "data".into(),
                            expected: "a string when datacontenttype is not JSON",
                        })
                    }
                }
            }
        }
        (None, _) => None,
    };
    let mut extensions = Vec::with_capacity(m.len());
    for (name, raw) in m {
        let value: Value = serde_json::from_str(raw.get())?;
        let (value, kind) = match value {
            Value::Null => continue,
            Value::String(s) => (s, ExtKind::String),
            Value::Bool(b) => (b.to_string(), ExtKind::Bool),
            Value::Number(n) => match n.as_i64().and_then(|i| i32::try_from(i).ok()) {
                Some(i) => (i.to_string(), ExtKind::Integer),
                None => {
                    return Err(EventError::BadValue {
                        name,
                        reason: "integers must be 32-bit whole numbers".into(),
                    }
                    .into())
                }
            },
            Value::Array(_) | Value::Object(_) => {
                return Err(JsonFormatError::Type {
                    name,
                    expected: "a string, boolean or integer",
                })
            }
        };
        extensions.push(Extension { name, value, kind });
    }
    let event = Event {
        id,
        source,
        ty,
        subject,
        time,
        datacontenttype,
        dataschema,
        extensions,
        data,
    };
    event.validate()?;
    Ok(event)
}

/// Serialises an event in the JSON format.
pub struct Structured<'a>(pub &'a Event);

impl serde::Serialize for Structured<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("specversion", "1.0")?;
        map.serialize_entry("id", &e.id)?;
        map.serialize_entry("source", &e.source)?;
        map.serialize_entry("type", &e.ty)?;
        for (name, value) in [
            ("subject", &e.subject),
            ("time", &e.time),
            ("datacontenttype", &e.datacontenttype),
            ("dataschema", &e.dataschema),
        ] {
            if let Some(value) = value {
                map.serialize_entry(name, value)?;
            }
        }
        for ext in &e.extensions {
            match ext.kind {
                ExtKind::Bool => map.serialize_entry(&ext.name, &(ext.value == "true"))?,
                ExtKind::Integer => match ext.value.parse::<i64>() {
                    Ok(i) => map.serialize_entry(&ext.name, &i)?,
                    Err(_) => map.serialize_entry(&ext.name, &ext.value)?,
                },
                ExtKind::String => map.serialize_entry(&ext.name, &ext.value)?,
            }
        }
        if let Some(data) = &e.data {
            let json = e.datacontenttype.as_deref().is_none_or(is_json_media_type);
            let raw = json
                .then(|| std::str::from_utf8(data).ok())
                .flatten()
                .and_then(|text| serde_json::from_str::<&RawValue>(text).ok());
            let textual = e.datacontenttype.as_deref().is_some_and(is_text_media_type);
            if let Some(raw) = raw {
                map.serialize_entry("data", raw)?;
            } else if let (true, Ok(text)) = (textual, std::str::from_utf8(data)) {
                map.serialize_entry("data", text)?;
            } else {
                let b64 = base64::engine::general_purpose::STANDARD.encode(data);
                map.serialize_entry("data_base64", &b64)?;
            }
        }
        map.end()
    }
}

/// Appends an event as one JSON line (structured format plus `\n`) to `out`.
pub fn write_json_line(out: &mut Vec<u8>, event: &Event) {
    // Serialising into a Vec cannot fail: every key is a string and every value is
    // representable.
    if serde_json::to_writer(&mut *out, &Structured(event)).is_ok() {
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reprints_json_data_byte_exact() {
        let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","severity":"warning","count":3,"flag":true,"data":{"b": [1, 2],"a":"x"}}"#;
        let e = parse_event(body).expect("valid");
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(e.data.as_deref(), Some(&br#"{"b": [1, 2],"a":"x"}"#[..]));
        assert_eq!(e.extension("count"), Some("3"));
        let mut line = Vec::new();
        write_json_line(&mut line, &e);
        let text = String::from_utf8(line).expect("utf8");
        assert!(text.contains(r#""data":{"b": [1, 2],"a":"x"}"#), "{text}");
        assert!(text.contains(r#""count":3"#) && text.contains(r#""flag":true"#));
        let again = parse_event(text.trim_end().as_bytes()).expect("round trip");
        assert_eq!(again, e);
    }

    #[test]
    fn binary_and_text_data_round_trip() {
        let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/octet-stream","data_base64":"AAEC/w=="}"#;
        let e = parse_event(body).expect("valid");
        assert_eq!(e.data.as_deref(), Some(&[0u8, 1, 2, 255][..]));
        let mut line = Vec::new();
        write_json_line(&mut line, &e);
        assert_eq!(parse_event(&line).expect("again"), e);
        let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":"hello"}"#;
        let e = parse_event(body).expect("valid");
        assert_eq!(e.data.as_deref(), Some(&b"hello"[..]));
        let mut line = Vec::new();
        write_json_line(&mut line, &e);
        assert!(String::from_utf8_lossy(&line).contains(r#""data":"hello""#));
        // Binary that happens to be valid UTF-8 still travels as base64.
        let mut proto = e.clone();
        proto.datacontenttype = Some("application/protobuf".into());
        proto.data = Some(Bytes::from_static(b"\n\x05hello"));
        let mut line = Vec::new();
        write_json_line(&mut line, &proto);
        assert!(
            String::from_utf8_lossy(&line).contains("data_base64"),
            "{}",
            String::from_utf8_lossy(&line)
        );
        assert_eq!(parse_event(&line).expect("again"), proto);
    }

    #[test]
    fn rejects_with_reasons() {
        let cases: [(&[u8], &str); 6] = [
            (
                br#"{"specversion":"0.3","id":"1","source":"/s","type":"t"}"#,
                "specversion",
            ),
            (br#"{"specversion":"1.0","source":"/s","type":"t"}"#, "`id`"),
            (
                br#"{"specversion":"1.0","id":1,"source":"/s","type":"t"}"#,
                "`id` must be a string",
            ),
            (
                br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","Bad":"x"}"#,
                "Bad",
            ),
            (
                br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","time":"now"}"#,
                "RFC 3339",
            ),
            (b"{not json", "invalid JSON"),
        ];
        for (body, needle) in cases {
            let err = parse_event(body).expect_err("must fail").to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
        let err = parse_batch(br#"[{"specversion":"1.0","id":"1","source":"/s","type":"t"},{}]"#)
            .expect_err("second is bad")
            .to_string();
        assert!(err.starts_with("event 1 of the batch"), "{err}");
        assert!(parse_batch(b"  ").expect("empty batch").is_empty());
    }
}
