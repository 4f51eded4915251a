//! The CloudEvents Kafka protocol binding: records to events and back.
//!
//! A record whose `content-type` header starts with `application/cloudevents` is in
//! structured mode (the JSON event format as its value); any other record is in binary
//! mode (attributes in `ce_` headers, data as the value, `content-type` as
//! `datacontenttype`). Header values are UTF-8 strings as they are: the Kafka binding
//! defines no percent-encoding. The record key becomes the `partitionkey` extension when
//! the event has none (and a sink's record key is `partitionkey`), as the binding's
//! partitioning extension describes.

use rdkafka::message::{Header, Headers, OwnedHeaders};
use weir_core::cloudevents::json::{self, JsonFormatError, Structured};
use weir_core::event::{valid_attribute_name, Event, EventError, ExtKind, Extension};

/// Media type of structured records.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json; charset=UTF-8";

/// Why a record is not a CloudEvent.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The structured value is not a valid JSON-format event.
    #[error("structured value: {0}")]
    Json(#[from] JsonFormatError),
    /// A `ce_` header is malformed.
    #[error("header `{header}`: {reason}")]
    Header {
        /// The header.
        header: String,
        /// What is wrong.
        reason: String,
    },
    /// The event breaks a CloudEvents rule.
    #[error(transparent)]
    Event(#[from] EventError),
    /// The batch format has no Kafka binding.
    #[error("content type `{0}`: the Kafka binding has no batch mode")]
    Batch(String),
    /// Neither mode: no `ce_specversion` header and no CloudEvents content type.
    #[error("not a CloudEvent: no ce_specversion header and content type is {0}")]
    NotCloudEvent(String),
}

/// A record's parts as the binding reads them.
pub struct RecordView<'a, H: Headers> {
    /// The record's headers.
    pub headers: Option<&'a H>,
    /// The record key.
    pub key: Option<&'a [u8]>,
    /// The record value.
    pub payload: Option<&'a [u8]>,
}

fn header_text<'h>(header: &Header<'h, &'h [u8]>) -> Result<&'h str, RecordError> {
    std::str::from_utf8(header.value.unwrap_or_default()).map_err(|_| RecordError::Header {
        header: header.key.to_owned(),
        reason: "value is not valid UTF-8".into(),
    })
}

/// Reads a record as a CloudEvent in whichever mode its content type says.
pub fn decode<H: Headers>(record: &RecordView<'_, H>) -> Result<Event, RecordError> {
    let mut content_type = None;
    if let Some(headers) = record.headers {
        for h in headers.iter() {
            if h.key.eq_ignore_ascii_case("content-type") {
                content_type = Some(header_text(&h)?);
            }
        }
    }
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let mut event = if media.starts_with("application/cloudevents-batch") {
        return Err(RecordError::Batch(content_type.unwrap_or("").to_owned()));
    } else if media.starts_with("application/cloudevents") {
        json::parse_event(record.payload.unwrap_or_default())?
    } else {
        decode_binary(record, content_type)?
    };
    if let Some(key) = record.key.filter(|k| !k.is_empty()) {
        if event.extension("partitionkey").is_none() {
            // A key that is not text cannot be a String attribute; it stays the key only.
            if let Ok(key) = std::str::from_utf8(key) {
                if !key.chars().any(char::is_control) {
                    event.set_extension("partitionkey", key);
                }
            }
        }
    }
    event.validate()?;
    Ok(event)
}

fn decode_binary<H: Headers>(
    record: &RecordView<'_, H>,
    content_type: Option<&str>,
) -> Result<Event, RecordError> {
    let mut event = Event::default();
    let mut specversion = None;
    if let Some(headers) = record.headers {
        for h in headers.iter() {
            let Some(attr) = h
                .key
                .strip_prefix("ce_")
                .or_else(|| h.key.strip_prefix("ce-"))
            else {
                continue;
            };
            let value = header_text(&h)?.to_owned();
            let set = |slot: &mut Option<String>, value: String| match slot {
                Some(_) => Err(EventError::Duplicate(attr.to_owned())),
                None => {
                    *slot = Some(value);
                    Ok(())
                }
            };
            match attr {
                "specversion" => set(&mut specversion, value)?,
                "id" => event.id = value,
                "source" => event.source = value,
                "type" => event.ty = value,
                "subject" => set(&mut event.subject, value)?,
                "time" => set(&mut event.time, value)?,
                "dataschema" => set(&mut event.dataschema, value)?,
                "datacontenttype" => {
                    return Err(RecordError::Header {
                        header: h.key.to_owned(),
                        reason: "binary mode carries datacontenttype in the content-type header"
                            .into(),
                    })
                }
                ext if valid_attribute_name(ext) => {
                    if event.extension(ext).is_some() {
                        return Err(EventError::Duplicate(ext.to_owned()).into());
                    }
                    event.extensions.push(Extension {
                        name: ext.to_owned(),
                        value,
                        kind: ExtKind::String,
                    })
                }
                _ => return Err(EventError::BadName(attr.to_owned()).into()),
            }
        }
    }
    match specversion.as_deref() {
        Some("1.0") => {}
        Some(other) => return Err(EventError::SpecVersion(other.to_owned()).into()),
        None => {
            return Err(RecordError::NotCloudEvent(
                content_type.map_or_else(|| "not set".to_owned(), |c| format!("`{c}`")),
            ))
        }
    }
    event.datacontenttype = content_type.map(str::to_owned);
    if let Some(payload) = record.payload {
        event.data = Some(bytes::Bytes::copy_from_slice(payload));
    }
    Ok(event)
}

/// A record made from an event: headers, key and value.
pub struct EncodedRecord {
    /// Headers (`ce_` attributes in binary mode, `content-type` in both).
    pub headers: OwnedHeaders,
    /// The key: the `partitionkey` extension.
    pub key: Option<String>,
    /// The value; `None` is a tombstone (a binary event without data). Shares the
    /// event's data bytes in binary mode.
    pub payload: Option<bytes::Bytes>,
}

/// Adds a text header.
pub fn put(headers: OwnedHeaders, key: &str, value: &str) -> OwnedHeaders {
    headers.insert(Header {
        key,
        value: Some(value.as_bytes()),
    })
}

/// Writes an event as a binary-mode record.
pub fn encode_binary(event: &Event) -> EncodedRecord {
    let attrs = 4 + event.extensions.len() + 4;
    let mut headers = OwnedHeaders::new_with_capacity(attrs);
    headers = put(headers, "ce_specversion", "1.0");
    headers = put(headers, "ce_id", &event.id);
    headers = put(headers, "ce_source", &event.source);
    headers = put(headers, "ce_type", &event.ty);
    for (name, value) in [
        ("ce_subject", &event.subject),
        ("ce_time", &event.time),
        ("ce_dataschema", &event.dataschema),
    ] {
        if let Some(v) = value {
            headers = put(headers, name, v);
        }
    }
    let mut name = String::with_capacity(24);
    for ext in &event.extensions {
        name.clear();
        name.push_str("ce_");
        name.push_str(&ext.name);
        headers = put(headers, &name, &ext.value);
    }
    if let Some(ct) = &event.datacontenttype {
        headers = put(headers, "content-type", ct);
    }
    EncodedRecord {
        headers,
        key: event.extension("partitionkey").map(str::to_owned),
        payload: event.data.clone(),
    }
}

/// Writes an event as a structured-mode record (the JSON format as the value).
pub fn encode_structured(event: &Event) -> EncodedRecord {
    let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
        key: "content-type",
        value: Some(STRUCTURED_CONTENT_TYPE.as_bytes()),
    });
    // Serializing our own event type to a Vec cannot fail.
    let payload = serde_json::to_vec(&Structured(event)).unwrap_or_default();
    EncodedRecord {
        headers,
        key: event.extension("partitionkey").map(str::to_owned),
        payload: Some(payload.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(
        headers: &'a OwnedHeaders,
        key: Option<&'a [u8]>,
        payload: Option<&'a [u8]>,
    ) -> RecordView<'a, OwnedHeaders> {
        RecordView {
            headers: Some(headers),
            key,
            payload,
        }
    }

    fn sample() -> Event {
        let mut e = Event::new("e-1", "/roost-keeper", "io.roost-keeper.trigger.teardown");
        e.subject = Some("roost/default/my roost €".into());
        e.time = Some("2026-12-01T10:00:00Z".into());
        e.datacontenttype = Some("application/json".into());
        e.set_extension("partitionkey", "default/my-roost");
        e.set_extension("roostkeeperroost", "my-roost");
        e.data = Some(bytes::Bytes::from_static(br#"{"reason":"expired"}"#));
        e
    }

    #[test]
    fn both_modes_round_trip_every_attribute() {
        let event = sample();
        for record in [encode_binary(&event), encode_structured(&event)] {
            assert_eq!(record.key.as_deref(), Some("default/my-roost"));
            let back = decode(&view(
                &record.headers,
                record.key.as_deref().map(str::as_bytes),
                record.payload.as_deref(),
            ))
            .expect("decodes");
            assert_eq!(back, event);
        }
    }

    #[test]
    fn the_key_becomes_partitionkey_when_absent() {
        let mut event = sample();
        event.extensions.retain(|e| e.name != "partitionkey");
        let record = encode_binary(&event);
        let back = decode(&view(
            &record.headers,
            Some(b"k-9"),
            record.payload.as_deref(),
        ))
        .expect("decodes");
        assert_eq!(back.extension("partitionkey"), Some("k-9"));
        let back = decode(&view(
            &record.headers,
            Some(&[0xffu8, 0xfe][..]),
            record.payload.as_deref(),
        ))
        .expect("a binary key is not an attribute");
        assert_eq!(back.extension("partitionkey"), None);
    }

    #[test]
    fn poison_records_are_refused_with_reasons() {
        let none = OwnedHeaders::new();
        let e = decode(&view(&none, None, Some(b"hello"))).expect_err("plain bytes");
        assert!(e.to_string().contains("no ce_specversion"), "{e}");
        let structured = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some(STRUCTURED_CONTENT_TYPE.as_bytes()),
        });
        let e = decode(&view(&structured, None, Some(b"{not json"))).expect_err("bad json");
        assert!(e.to_string().starts_with("structured value"), "{e}");
        let e = decode(&view(
            &structured,
            None,
            Some(br#"{"specversion":"1.0","id":"1","source":"/s"}"#),
        ))
        .expect_err("no type");
        assert!(e.to_string().contains("`type`"), "{e}");
        let bad_utf8 = OwnedHeaders::new()
            .insert(Header {
                key: "ce_specversion",
                value: Some(&b"1.0"[..]),
            })
            .insert(Header {
                key: "ce_id",
                value: Some(&[0xc0u8, 0xa0][..]),
            });
        let e = decode(&view(&bad_utf8, None, None)).expect_err("bad header");
        assert!(e.to_string().contains("ce_id"), "{e}");
        let batch = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some(&b"application/cloudevents-batch+json"[..]),
        });
        assert!(matches!(
            decode(&view(&batch, None, Some(b"[]"))),
            Err(RecordError::Batch(_))
        ));
    }

    #[test]
    fn an_event_without_data_is_a_tombstone_in_binary_mode_only() {
        let event = Event::new("1", "/s", "t");
        assert!(encode_binary(&event).payload.is_none());
        assert!(encode_structured(&event).payload.is_some());
        let r = encode_binary(&event);
        assert_eq!(
            decode(&view(&r.headers, None, None)).expect("decodes"),
            event
        );
    }
}
