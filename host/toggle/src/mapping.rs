//! Toggle `Event` ⇄ CloudEvent, losslessly.
//!
//! | Toggle | CloudEvent |
//! | --- | --- |
//! | `event_id` | `id` |
//! | `source` | `source` |
//! | `category`, payload kind | `type` = `<prefix>.<category>.<kind>` (e.g. `io.toggle.storage.transfer`) |
//! | `timestamp_ms` | `time` (RFC 3339, milliseconds, UTC) |
//! | `level` | extension `level` (`INFO`, `WARN`, `ERROR`, `CRITICAL`) |
//! | `category` | extension `category` (`SYSTEM`, ...) |
//! | `metadata` | extension `togglemeta`: the map as a JSON object |
//! | payload | `data` = the payload message's protobuf bytes, `datacontenttype: application/protobuf`, `dataschema: proto:toggle.v1.<Message>` |
//!
//! Enum values this build does not know (proto3 enums are open) travel as their number.

use super::pb::{self, event::Payload, EventCategory, EventLevel};
use bytes::Bytes;
use prost::Message;
use std::collections::BTreeMap;
use weir_core::event::{Event, ExtKind, Extension};

/// The default prefix of CloudEvent types made from Toggle events.
pub const DEFAULT_TYPE_PREFIX: &str = "io.toggle";
/// `datacontenttype` of mapped events.
pub const PROTOBUF: &str = "application/protobuf";
const SCHEMA_PREFIX: &str = "proto:toggle.v1.";

/// Why an event cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// A field every event needs is empty.
    #[error("`{0}` is required")]
    Missing(&'static str),
    /// The payload is not a message this contract knows.
    #[error("unknown payload schema `{0}`")]
    UnknownSchema(String),
    /// The payload bytes do not decode as the named message.
    #[error("payload is not a valid {schema}: {reason}")]
    BadPayload {
        /// The message.
        schema: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// An attribute does not hold what the mapping expects.
    #[error("`{name}` is invalid: {reason}")]
    BadAttribute {
        /// The attribute.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The payload's message name and type suffix (`<kind>` in the CloudEvent type).
fn payload_names(p: &Payload) -> (&'static str, &'static str) {
    match p {
        Payload::SystemStartup(_) => ("SystemStartupPayload", "startup"),
        Payload::SystemShutdown(_) => ("SystemShutdownPayload", "shutdown"),
        Payload::SystemConfigChange(_) => ("SystemConfigChangePayload", "config_change"),
        Payload::SystemUser(_) => ("SystemUserPayload", "user"),
        Payload::StoragePool(_) => ("StoragePoolPayload", "pool"),
        Payload::StorageDataset(_) => ("StorageDatasetPayload", "dataset"),
        Payload::StorageTransfer(_) => ("StorageTransferPayload", "transfer"),
        Payload::ServiceStatus(_) => ("ServiceStatusPayload", "status"),
        Payload::NetworkConnection(_) => ("NetworkConnectionPayload", "connection"),
    }
}

fn encode_payload(p: &Payload) -> Vec<u8> {
    match p {
        Payload::SystemStartup(m) => m.encode_to_vec(),
        Payload::SystemShutdown(m) => m.encode_to_vec(),
        Payload::SystemConfigChange(m) => m.encode_to_vec(),
        Payload::SystemUser(m) => m.encode_to_vec(),
        Payload::StoragePool(m) => m.encode_to_vec(),
        Payload::StorageDataset(m) => m.encode_to_vec(),
        Payload::StorageTransfer(m) => m.encode_to_vec(),
        Payload::ServiceStatus(m) => m.encode_to_vec(),
        Payload::NetworkConnection(m) => m.encode_to_vec(),
    }
}

fn decode_payload(message: &str, data: &[u8]) -> Result<Payload, MappingError> {
    fn d<M: Message + Default>(data: &[u8], schema: &str) -> Result<M, MappingError> {
        M::decode(data).map_err(|e| MappingError::BadPayload {
            schema: schema.to_owned(),
            reason: e.to_string(),
        })
    }
    Ok(match message {
        "SystemStartupPayload" => Payload::SystemStartup(d(data, message)?),
        "SystemShutdownPayload" => Payload::SystemShutdown(d(data, message)?),
        "SystemConfigChangePayload" => Payload::SystemConfigChange(d(data, message)?),
        "SystemUserPayload" => Payload::SystemUser(d(data, message)?),
        "StoragePoolPayload" => Payload::StoragePool(d(data, message)?),
        "StorageDatasetPayload" => Payload::StorageDataset(d(data, message)?),
        "StorageTransferPayload" => Payload::StorageTransfer(d(data, message)?),
        "ServiceStatusPayload" => Payload::ServiceStatus(d(data, message)?),
        "NetworkConnectionPayload" => Payload::NetworkConnection(d(data, message)?),
        other => return Err(MappingError::UnknownSchema(other.to_owned())),
    })
}

fn level_name(level: i32) -> String {
    match EventLevel::try_from(level) {
        Ok(l) => l
            .as_str_name()
            .trim_start_matches("EVENT_LEVEL_")
            .to_owned(),
        Err(_) => level.to_string(),
    }
}

fn category_name(category: i32) -> String {
    match EventCategory::try_from(category) {
        Ok(c) => c
            .as_str_name()
            .trim_start_matches("EVENT_CATEGORY_")
            .to_owned(),
        Err(_) => category.to_string(),
    }
}

fn parse_enum(
    name: &'static str,
    value: Option<&str>,
    prefix: &str,
    from_name: fn(&str) -> Option<i32>,
) -> Result<i32, MappingError> {
    let Some(value) = value else {
        return Ok(0);
    };
    if let Ok(n) = value.parse::<i32>() {
        return Ok(n);
    }
    from_name(&format!("{prefix}{}", value.to_ascii_uppercase())).ok_or_else(|| {
        MappingError::BadAttribute {
            name,
            reason: format!("unknown value `{value}`"),
        }
    })
}

fn ext(name: &str, value: String) -> Extension {
    Extension {
        name: name.to_owned(),
        value,
        kind: ExtKind::String,
    }
}

/// A Toggle event as a CloudEvent.
pub fn to_cloudevent(e: &pb::Event, type_prefix: &str) -> Result<Event, MappingError> {
    if e.event_id.is_empty() {
        return Err(MappingError::Missing("event_id"));
    }
    if e.source.is_empty() {
        return Err(MappingError::Missing("source"));
    }
    let time = chrono::DateTime::from_timestamp_millis(e.timestamp_ms)
        .ok_or(MappingError::BadAttribute {
            name: "timestamp_ms",
            reason: "out of range".into(),
        })?
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let category = category_name(e.category);
    let kind = e.payload.as_ref().map_or("none", |p| payload_names(p).1);
    let mut out = Event::new(
        e.event_id.clone(),
        e.source.clone(),
        format!("{type_prefix}.{}.{kind}", category.to_ascii_lowercase()),
    );
    out.time = Some(time);
    out.extensions.push(ext("level", level_name(e.level)));
    out.extensions.push(ext("category", category));
    if !e.metadata.is_empty() {
        let sorted: BTreeMap<&String, &String> = e.metadata.iter().collect();
        let json = serde_json::to_string(&sorted).map_err(|err| MappingError::BadAttribute {
            name: "metadata",
            reason: err.to_string(),
        })?;
        out.extensions.push(ext("togglemeta", json));
    }
    if let Some(p) = &e.payload {
        out.datacontenttype = Some(PROTOBUF.to_owned());
        out.dataschema = Some(format!("{SCHEMA_PREFIX}{}", payload_names(p).0));
        out.data = Some(Bytes::from(encode_payload(p)));
    }
    Ok(out)
}

/// Checks what Toggle requires of an event: a known category and level, and a payload.
pub fn validate(e: &pb::Event) -> Result<(), MappingError> {
    if e.category == 0 || EventCategory::try_from(e.category).is_err() {
        return Err(MappingError::BadAttribute {
            name: "category",
            reason: format!("unknown category {}", e.category),
        });
    }
    if e.level == 0 || EventLevel::try_from(e.level).is_err() {
        return Err(MappingError::BadAttribute {
            name: "level",
            reason: format!("unknown level {}", e.level),
        });
    }
    if e.payload.is_none() {
        return Err(MappingError::Missing("payload"));
    }
    Ok(())
}

/// A CloudEvent (made by [`to_cloudevent`], possibly changed by filters) as a Toggle event.
pub fn from_cloudevent(e: &Event) -> Result<pb::Event, MappingError> {
    let timestamp_ms = match &e.time {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|err| MappingError::BadAttribute {
                name: "time",
                reason: err.to_string(),
            })?
            .timestamp_millis(),
        None => 0,
    };
    let level = parse_enum("level", e.extension("level"), "EVENT_LEVEL_", |s| {
        EventLevel::from_str_name(s).map(|l| l as i32)
    })?;
    let category = parse_enum(
        "category",
        e.extension("category"),
        "EVENT_CATEGORY_",
        |s| EventCategory::from_str_name(s).map(|c| c as i32),
    )?;
    let metadata = match e.extension("togglemeta") {
        Some(json) => serde_json::from_str(json).map_err(|err| MappingError::BadAttribute {
            name: "togglemeta",
            reason: err.to_string(),
        })?,
        None => Default::default(),
    };
    let payload = match (&e.dataschema, &e.data) {
        (Some(schema), Some(data)) => {
            let message = schema
                .strip_prefix(SCHEMA_PREFIX)
                .ok_or_else(|| MappingError::UnknownSchema(schema.clone()))?;
            Some(decode_payload(message, data)?)
        }
        _ => None,
    };
    Ok(pb::Event {
        event_id: e.id.clone(),
        level,
        category,
        source: e.source.clone(),
        timestamp_ms,
        metadata,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::*;

    fn every_payload() -> Vec<Payload> {
        vec![
            Payload::SystemStartup(SystemStartupPayload {
                boot_time_seconds: 1_763_800_000,
                services_started: vec!["rodent-controller".into(), "zfs".into()],
                operation: system_startup_payload::Operation::SystemStartupOperationRegistered
                    as i32,
            }),
            Payload::SystemShutdown(SystemShutdownPayload {
                reason: "maintenance".into(),
                uptime_seconds: 86_400,
                operation: system_shutdown_payload::Operation::SystemShutdownOperationRequested
                    as i32,
            }),
            Payload::SystemConfigChange(SystemConfigChangePayload {
                key: "ntp.server".into(),
                old_value: "a".into(),
                new_value: "b".into(),
                changed_by: "admin".into(),
            }),
            Payload::SystemUser(SystemUserPayload {
                username: "bob".into(),
                uid: 1001,
                groups: vec!["wheel".into()],
                operation: system_user_payload::Operation::SystemUserOperationCreated as i32,
            }),
            Payload::StoragePool(StoragePoolPayload {
                pool_name: "tank".into(),
                health: "DEGRADED".into(),
                size_bytes: 1 << 40,
                free_bytes: 1 << 39,
                operation: storage_pool_payload::Operation::StoragePoolOperationDegraded as i32,
            }),
            Payload::StorageDataset(StorageDatasetPayload {
                dataset_name: "tank/home".into(),
                properties: [("compression".to_owned(), "zstd".to_owned())].into(),
                operation:
                    storage_dataset_payload::Operation::StorageDatasetOperationPropertyChanged
                        as i32,
            }),
            Payload::StorageTransfer(StorageTransferPayload {
                source: "tank/test@snap1".into(),
                destination: "backup/test".into(),
                size_bytes: 1 << 20,
                operation: storage_transfer_payload::Operation::StorageTransferOperationStarted
                    as i32,
                error: String::new(),
            }),
            Payload::ServiceStatus(ServiceStatusPayload {
                service_name: "rodent-controller".into(),
                status: "running".into(),
                pid: 4242,
                operation: service_status_payload::Operation::ServiceStatusOperationStarted as i32,
            }),
            Payload::NetworkConnection(NetworkConnectionPayload {
                interface_name: "eth0".into(),
                addresses: vec!["10.0.0.2/24".into(), "fe80::1/64".into()],
                mtu: 9000,
                operation: network_connection_payload::Operation::NetworkConnectionOperationUp
                    as i32,
            }),
        ]
    }

    #[test]
    fn every_payload_type_round_trips_exactly() {
        for (i, payload) in every_payload().into_iter().enumerate() {
            let original = pb::Event {
                event_id: format!("0193-{i}"),
                level: (i % 4 + 1) as i32,
                category: (i % 8 + 1) as i32,
                source: "rodent://node-7".into(),
                timestamp_ms: 1_763_800_000_123 + i as i64,
                metadata: [
                    ("transfer_id".to_owned(), format!("t{i}")),
                    ("a b".to_owned(), "\"q\"".to_owned()),
                ]
                .into(),
                payload: Some(payload),
            };
            let ce = to_cloudevent(&original, DEFAULT_TYPE_PREFIX).expect("maps");
            ce.validate().expect("a valid CloudEvent");
            assert!(ce.ty.starts_with("io.toggle."), "{}", ce.ty);
            assert_eq!(ce.datacontenttype.as_deref(), Some(PROTOBUF));
            // Through the JSON format and back, as a sink or spill file would carry it.
            let mut line = Vec::new();
            weir_core::cloudevents::json::write_json_line(&mut line, &ce);
            let reparsed = weir_core::cloudevents::json::parse_event(&line).expect("json");
            assert_eq!(
                from_cloudevent(&reparsed).expect("back"),
                original,
                "payload {i}"
            );
        }
    }

    #[test]
    fn names_types_levels_and_refuses_garbage() {
        let e = pb::Event {
            event_id: "1".into(),
            level: EventLevel::Warn as i32,
            category: EventCategory::Storage as i32,
            source: "rodent://n".into(),
            timestamp_ms: 0,
            metadata: Default::default(),
            payload: every_payload().into_iter().nth(6),
        };
        let ce = to_cloudevent(&e, "io.toggle").expect("maps");
        assert_eq!(ce.ty, "io.toggle.storage.transfer");
        assert_eq!(ce.extension("level"), Some("WARN"));
        assert_eq!(ce.time.as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(
            ce.dataschema.as_deref(),
            Some("proto:toggle.v1.StorageTransferPayload")
        );
        let unknown_enum = pb::Event {
            level: 99,
            ..e.clone()
        };
        assert_eq!(
            from_cloudevent(&to_cloudevent(&unknown_enum, "x").expect("maps")).expect("back"),
            unknown_enum
        );
        let mut bad = ce.clone();
        bad.data = Some(Bytes::from_static(&[0xff, 0xff, 0xff]));
        assert!(matches!(
            from_cloudevent(&bad),
            Err(MappingError::BadPayload { .. })
        ));
        assert_eq!(
            to_cloudevent(
                &pb::Event {
                    event_id: String::new(),
                    ..e
                },
                "x"
            ),
            Err(MappingError::Missing("event_id"))
        );
    }
}
