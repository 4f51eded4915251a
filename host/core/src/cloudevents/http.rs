//! The CloudEvents HTTP binding: binary, structured and batched modes.

use super::json::{self, JsonFormatError};
use crate::event::{valid_attribute_name, Event, EventError, ExtKind, Extension};
use axum::http::HeaderMap;
use bytes::Bytes;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// Media type of the structured JSON format.
pub const STRUCTURED_JSON: &str = "application/cloudevents+json";
/// Media type of the batch JSON format.
pub const BATCH_JSON: &str = "application/cloudevents-batch+json";

/// How a request carries its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Attributes in `ce-` headers, data in the body.
    Binary,
    /// One JSON-format event in the body.
    Structured,
    /// A JSON array of events in the body.
    Batch,
}

/// Why a request's events were refused; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    /// The content type names a format weir does not read (415).
    #[error("unsupported content type `{0}`: send application/cloudevents+json, application/cloudevents-batch+json, or binary mode with ce-specversion, ce-id, ce-source and ce-type headers")]
    UnsupportedMediaType(String),
    /// The events are malformed (400).
    #[error(transparent)]
    Json(#[from] JsonFormatError),
    /// A binary-mode header is malformed (400).
    #[error("header `{header}`: {reason}")]
    Header {
        /// The header name.
        header: String,
        /// What is wrong.
        reason: String,
    },
    /// The event breaks a CloudEvents rule (400).
    #[error(transparent)]
    Event(#[from] EventError),
}

impl BindingError {
    /// The HTTP status code for this error.
    pub fn status(&self) -> u16 {
        match self {
            BindingError::UnsupportedMediaType(_) => 415,
            _ => 400,
        }
    }
}

/// Decides the mode from the `Content-Type` header and the presence of `ce-specversion`.
pub fn detect_mode(headers: &HeaderMap) -> Result<Mode, BindingError> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media.starts_with("application/cloudevents-batch") {
        return if media == BATCH_JSON {
            Ok(Mode::Batch)
        } else {
            Err(BindingError::UnsupportedMediaType(content_type.to_owned()))
        };
    }
    if media.starts_with("application/cloudevents") {
        return if media == STRUCTURED_JSON {
            Ok(Mode::Structured)
        } else {
            Err(BindingError::UnsupportedMediaType(content_type.to_owned()))
        };
    }
    if headers.contains_key("ce-specversion") {
        Ok(Mode::Binary)
    } else {
        Err(BindingError::UnsupportedMediaType(content_type.to_owned()))
    }
}

/// Reads the events of a request.
pub fn parse_request(headers: &HeaderMap, body: Bytes) -> Result<Vec<Event>, BindingError> {
    match detect_mode(headers)? {
        Mode::Structured => Ok(vec![json::parse_event(&body)?]),
        Mode::Batch => Ok(json::parse_batch(&body)?),
        Mode::Binary => Ok(vec![parse_binary(headers, body)?]),
    }
}

/// Undoes the optional RFC 7230 quoting, then one round of percent-decoding.
pub fn decode_header_value(header: &str, raw: &[u8]) -> Result<String, BindingError> {
    let bad = |reason: &str| BindingError::Header {
        header: header.to_owned(),
        reason: reason.to_owned(),
    };
    let text = std::str::from_utf8(raw).map_err(|_| bad("value is not valid UTF-8"))?;
    let unquoted;
    let text = if text.len() >= 2 && text.starts_with('"') && text.ends_with('"') {
        let mut out = String::with_capacity(text.len());
        let mut chars = text[1..text.len() - 1].chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        unquoted = out;
        unquoted.as_str()
    } else {
        text
    };
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| bad("percent-decoded value is not valid UTF-8"))
}

fn parse_binary(headers: &HeaderMap, body: Bytes) -> Result<Event, BindingError> {
    let mut event = Event::default();
    let mut specversion = None;
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let value = decode_header_value(name.as_str(), value.as_bytes())?;
        match attr {
            "specversion" => specversion = Some(value),
            "id" => event.id = value,
            "source" => event.source = value,
            "type" => event.ty = value,
            "subject" => event.subject = Some(value),
            "time" => event.time = Some(value),
            "dataschema" => event.dataschema = Some(value),
            "datacontenttype" => {
                return Err(BindingError::Header {
                    header: name.as_str().to_owned(),
                    reason: "binary mode carries datacontenttype in Content-Type".into(),
                })
            }
            ext if valid_attribute_name(ext) => event.extensions.push(Extension {
                name: ext.to_owned(),
                value,
                kind: ExtKind::String,
            }),
            _ => return Err(EventError::BadName(attr.to_owned()).into()),
        }
    }
    match specversion.as_deref() {
        Some("1.0") => {}
        Some(other) => return Err(EventError::SpecVersion(other.to_owned()).into()),
        None => return Err(EventError::Missing("specversion").into()),
    }
    event.datacontenttype = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if !body.is_empty() || event.datacontenttype.is_some() {
        event.data = Some(body);
    }
    event.validate()?;
    Ok(event)
}

/// Characters percent-encoded in binary-mode header values: controls, space, `"`, `%`
/// and everything outside printable ASCII.
const HEADER_ENCODE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// The binary-mode headers for an event: `(name, value)` pairs, `Content-Type` included
/// when the event has a `datacontenttype`.
pub fn binary_headers(event: &Event) -> Vec<(String, String)> {
    let enc = |v: &str| utf8_percent_encode(v, HEADER_ENCODE).to_string();
    let mut out = vec![
        ("ce-specversion".to_owned(), "1.0".to_owned()),
        ("ce-id".to_owned(), enc(&event.id)),
        ("ce-source".to_owned(), enc(&event.source)),
        ("ce-type".to_owned(), enc(&event.ty)),
    ];
    for (name, value) in [
        ("subject", &event.subject),
        ("time", &event.time),
        ("dataschema", &event.dataschema),
    ] {
        if let Some(v) = value {
            out.push((format!("ce-{name}"), enc(v)));
        }
    }
    for ext in &event.extensions {
        out.push((format!("ce-{}", ext.name), enc(&ext.value)));
    }
    if let Some(ct) = &event.datacontenttype {
        out.push(("content-type".to_owned(), ct.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn binary_mode_decodes_percent_and_quotes() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
            ("ce-subject", "Euro%20%E2%82%AC%20%F0%9F%98%80"),
            ("ce-tenant", "\"acme\""),
            ("content-type", "application/json"),
        ]);
        let events = parse_request(&h, Bytes::from_static(b"{\"a\":1}")).expect("valid");
        assert_eq!(events[0].subject.as_deref(), Some("Euro € 😀"));
        assert_eq!(events[0].extension("tenant"), Some("acme"));
        assert_eq!(
            events[0].datacontenttype.as_deref(),
            Some("application/json")
        );
        let back = binary_headers(&events[0]);
        assert!(back.contains(&(
            "ce-subject".into(),
            "Euro%20%E2%82%AC%20%F0%9F%98%80".into()
        )));
    }

    #[test]
    fn modes_and_media_types() {
        let bad = |pairs: &[(&str, &str)]| parse_request(&headers(pairs), Bytes::new());
        assert_eq!(
            bad(&[("content-type", "application/cloudevents+avro")])
                .err()
                .map(|e| e.status()),
            Some(415)
        );
        assert_eq!(
            bad(&[("content-type", "text/plain")])
                .err()
                .map(|e| e.status()),
            Some(415)
        );
        assert_eq!(
            bad(&[("ce-specversion", "0.3")]).err().map(|e| e.status()),
            Some(400)
        );
        let err = bad(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/s"),
        ])
        .expect_err("no type");
        assert!(err.to_string().contains("`type`"));
        let h = headers(&[(
            "content-type",
            "application/cloudevents-batch+json; charset=utf-8",
        )]);
        let body = br#"[{"specversion":"1.0","id":"1","source":"/s","type":"t"},{"specversion":"1.0","id":"2","source":"/s","type":"t"}]"#;
        assert_eq!(
            parse_request(&h, Bytes::from_static(body))
                .expect("batch")
                .len(),
            2
        );
    }
}
