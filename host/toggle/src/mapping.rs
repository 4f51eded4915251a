//! Rodent `Event` ⇄ CloudEvent, losslessly.
//!
//! | Rodent (`rodent.events.Event`) | CloudEvent |
//! | --- | --- |
//! | `event_id` | `id` |
//! | `source` | `source` |
//! | `category`, payload | `type` = `<prefix>.<category>.<payload>`, e.g. `io.toggle.storage.transfer`, `io.toggle.data_transfer.transfer`, `io.toggle.system.config_changed` |
//! | `timestamp` (ms) | `time` (RFC 3339, milliseconds, UTC) |
//! | `level` | extension `level` (`INFO`, `WARN`, `ERROR`, `CRITICAL`, `ESSENTIAL`, `DEBUG`, `TRACE`) and extension `severity` (`info`, `warning`, `error`, `critical`, `essential`, `debug`, `trace`) |
//! | `category` | extension `category` (`SYSTEM` … `DATA_TRANSFER`) |
//! | `metadata` | extension `togglemeta`: the map as a JSON object |
//! | `event_payload` | `data` = the category wrapper's protobuf bytes exactly as received, `datacontenttype: application/protobuf`, `dataschema: proto:rodent.events.<Wrapper>` (e.g. `StorageEvent`) |
//!
//! Back from a CloudEvent, `level` is authoritative (`severity` is derived from it) and
//! the wrapper is taken from `dataschema`. Enum values this build does not know (proto3
//! enums are open) travel as their number.

use super::pb::events::{self as ev, EventCategory, EventLevel};
use super::wire::{WireEvent, WirePayload};
use bytes::Bytes;
use prost::Message;
use std::collections::BTreeMap;
use weir_core::event::{Event, ExtKind, Extension};

/// The default prefix of CloudEvent types made from Rodent events.
pub const DEFAULT_TYPE_PREFIX: &str = "io.toggle";
/// `datacontenttype` of mapped events.
pub const PROTOBUF: &str = "application/protobuf";
const SCHEMA_PREFIX: &str = "proto:rodent.events.";

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
    #[error("payload is not a valid {schema}: {source}")]
    BadPayload {
        /// The message.
        schema: &'static str,
        /// The decoder's complaint.
        #[source]
        source: prost::DecodeError,
    },
    /// The CloudEvent made of it is not valid (e.g. control characters in its id or
    /// source).
    #[error(transparent)]
    Invalid(#[from] weir_core::event::EventError),
    /// An attribute does not hold what the mapping expects.
    #[error("`{name}` is invalid: {reason}")]
    BadAttribute {
        /// The attribute.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Declares the ten category wrappers: their field number in `Event`, message, category
/// name, and payload names by oneof case (the field name without `_event`).
macro_rules! wrappers {
    ($( $field:literal $module:ident $wrapper:ident $category:literal {
        $( $case:ident = $payload:literal ),+ $(,)?
    } )+) => {
        /// The wrapper message and category name of `Event` field `field`.
        fn wrapper(field: u32) -> Option<(&'static str, &'static str)> {
            match field {
                $( $field => Some((stringify!($wrapper), $category)), )+
                _ => None,
            }
        }

        /// The `Event` field number of a wrapper message.
        fn wrapper_field(message: &str) -> Option<u32> {
            match message {
                $( stringify!($wrapper) => Some($field), )+
                _ => None,
            }
        }

        /// Decodes a wrapper (checking it) and names its payload (`None`: the wrapper is
        /// empty, or holds a case this build does not know).
        fn payload_name(field: u32, bytes: &[u8]) -> Result<Option<&'static str>, MappingError> {
            match field {
                $( $field => {
                    let w = ev::$wrapper::decode(bytes).map_err(|source| MappingError::BadPayload {
                        schema: stringify!($wrapper),
                        source,
                    })?;
                    Ok(w.event_type.map(|t| match t {
                        $( ev::$module::EventType::$case(_) => $payload, )+
                    }))
                } )+
                _ => Err(MappingError::UnknownSchema(field.to_string())),
            }
        }
    };
}

wrappers! {
    10 system_event SystemEvent "system" {
        Startup = "startup", Shutdown = "shutdown", ConfigChanged = "config_changed",
        UserEvent = "user",
    }
    11 storage_event StorageEvent "storage" {
        PoolEvent = "pool", DatasetEvent = "dataset", TransferEvent = "transfer",
        SnapshotEvent = "snapshot",
    }
    12 network_event NetworkEvent "network" {
        InterfaceEvent = "interface", ConnectionEvent = "connection",
    }
    13 security_event SecurityEvent "security" {
        AuthEvent = "auth", KeyEvent = "key", CertificateEvent = "certificate",
    }
    14 service_event ServiceEvent "service" { StatusEvent = "status" }
    15 identity_event IdentityEvent "identity" {
        UserEvent = "user", GroupEvent = "group", ComputerEvent = "computer",
    }
    16 access_event AccessEvent "access" { AclEvent = "acl", PermissionEvent = "permission" }
    17 sharing_event SharingEvent "sharing" {
        ShareEvent = "share", ConnectionEvent = "connection", FileAccessEvent = "file_access",
    }
    18 usage_event UsageEvent "usage" {
        QuotaEvent = "quota", ResourceEvent = "resource", ThresholdEvent = "threshold",
    }
    19 data_transfer_event DataTransferEvent "data_transfer" { TransferEvent = "transfer" }
}

/// The level's name (`WARN`), or its number when this build does not know it.
fn level_name(level: i32) -> String {
    match EventLevel::try_from(level) {
        Ok(l) => l
            .as_str_name()
            .trim_start_matches("EVENT_LEVEL_")
            .to_owned(),
        Err(_) => level.to_string(),
    }
}

/// The CloudEvents `severity` a level means, in the vocabulary weir's filters share.
pub fn severity(level: i32) -> Option<&'static str> {
    Some(match EventLevel::try_from(level).ok()? {
        EventLevel::Unspecified => return None,
        EventLevel::Trace => "trace",
        EventLevel::Debug => "debug",
        EventLevel::Info => "info",
        EventLevel::Warn => "warning",
        EventLevel::Error => "error",
        EventLevel::Critical => "critical",
        EventLevel::Essential => "essential",
    })
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

/// A Rodent event as a CloudEvent. The payload is checked (it must decode as its
/// wrapper) and kept byte for byte.
pub fn to_cloudevent(e: &WireEvent, type_prefix: &str) -> Result<Event, MappingError> {
    if e.event_id.is_empty() {
        return Err(MappingError::Missing("event_id"));
    }
    if e.source.is_empty() {
        return Err(MappingError::Missing("source"));
    }
    let time = chrono::DateTime::from_timestamp_millis(e.timestamp)
        .ok_or(MappingError::BadAttribute {
            name: "timestamp",
            reason: "out of range".into(),
        })?
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let category = category_name(e.category);
    let (kind, payload) = match &e.event_payload {
        Some(p) => {
            let (field, bytes) = p.parts();
            let (wrapper, wrapper_category) =
                wrapper(field).ok_or(MappingError::Missing("payload"))?;
            let name = payload_name(field, bytes)?.unwrap_or("unknown");
            (format!("{wrapper_category}.{name}"), Some((wrapper, bytes)))
        }
        None => (format!("{}.none", category.to_ascii_lowercase()), None),
    };
    let mut out = Event::new(
        e.event_id.clone(),
        e.source.clone(),
        format!("{type_prefix}.{kind}"),
    );
    out.time = Some(time);
    out.extensions.push(ext("level", level_name(e.level)));
    if let Some(severity) = severity(e.level) {
        out.extensions.push(ext("severity", severity.to_owned()));
    }
    out.extensions.push(ext("category", category));
    if !e.metadata.is_empty() {
        let json =
            serde_json::to_string(&e.metadata).map_err(|err| MappingError::BadAttribute {
                name: "metadata",
                reason: err.to_string(),
            })?;
        out.extensions.push(ext("togglemeta", json));
    }
    if let Some((wrapper, bytes)) = payload {
        out.datacontenttype = Some(PROTOBUF.to_owned());
        out.dataschema = Some(format!("{SCHEMA_PREFIX}{wrapper}"));
        out.data = Some(bytes.clone());
    }
    // What any other source refuses (control characters in the id or source, ...) is
    // refused here too.
    out.validate()?;
    Ok(out)
}

/// Checks what Toggle requires of an event: a known category and level, and a payload.
pub fn validate(e: &WireEvent) -> Result<(), MappingError> {
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
    if e.event_payload.is_none() {
        return Err(MappingError::Missing("payload"));
    }
    Ok(())
}

/// A CloudEvent (made by [`to_cloudevent`], possibly changed by filters) as a Rodent event.
pub fn from_cloudevent(e: &Event) -> Result<WireEvent, MappingError> {
    let timestamp = match &e.time {
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
    let metadata: BTreeMap<String, String> = match e.extension("togglemeta") {
        Some(json) => serde_json::from_str(json).map_err(|err| MappingError::BadAttribute {
            name: "togglemeta",
            reason: err.to_string(),
        })?,
        None => BTreeMap::new(),
    };
    let event_payload = match (&e.dataschema, &e.data) {
        (Some(schema), Some(data)) => {
            let field = schema
                .strip_prefix(SCHEMA_PREFIX)
                .and_then(wrapper_field)
                .ok_or_else(|| MappingError::UnknownSchema(schema.clone()))?;
            payload_name(field, data)?;
            WirePayload::from_parts(field, Bytes::clone(data))
        }
        _ => None,
    };
    Ok(WireEvent {
        event_id: e.id.clone(),
        level,
        category,
        source: e.source.clone(),
        timestamp,
        metadata,
        event_payload,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pb::events::event::EventPayload;
    use ev::*;

    /// One event of every payload case of every category.
    fn every_payload() -> Vec<(EventCategory, EventPayload)> {
        use EventCategory as C;
        use EventPayload as P;
        vec![
            (
                C::System,
                P::SystemEvent(SystemEvent {
                    event_type: Some(system_event::EventType::Startup(SystemStartupPayload {
                        boot_time_seconds: 1_765_000_000,
                        services_started: vec!["rodent".into(), "zfs".into()],
                        operation: 5,
                    })),
                }),
            ),
            (
                C::System,
                P::SystemEvent(SystemEvent {
                    event_type: Some(system_event::EventType::Shutdown(SystemShutdownPayload {
                        operation: 2,
                        reason: "upgrade".into(),
                        graceful: true,
                    })),
                }),
            ),
            (
                C::System,
                P::SystemEvent(SystemEvent {
                    event_type: Some(system_event::EventType::ConfigChanged(
                        SystemConfigChangePayload {
                            config_section: "ntp".into(),
                            changed_keys: vec!["server".into()],
                            operation: 1,
                        },
                    )),
                }),
            ),
            (
                C::System,
                P::SystemEvent(SystemEvent {
                    event_type: Some(system_event::EventType::UserEvent(SystemUserPayload {
                        username: "bob".into(),
                        display_name: "Bob".into(),
                        uid: 1001,
                        groups: vec!["wheel".into()],
                        operation: 4,
                    })),
                }),
            ),
            (
                C::Storage,
                P::StorageEvent(StorageEvent {
                    event_type: Some(storage_event::EventType::PoolEvent(StoragePoolPayload {
                        pool_name: "tank".into(),
                        devices: vec!["sda".into(), "sdb".into()],
                        raid_type: "mirror".into(),
                        size_bytes: 1 << 40,
                        used_bytes: 1 << 39,
                        operation: 4,
                    })),
                }),
            ),
            (
                C::Storage,
                P::StorageEvent(StorageEvent {
                    event_type: Some(storage_event::EventType::DatasetEvent(
                        StorageDatasetPayload {
                            dataset_name: "tank/home".into(),
                            pool_name: "tank".into(),
                            r#type: "filesystem".into(),
                            mountpoint: "/home".into(),
                            size_bytes: 42,
                            operation: 5,
                        },
                    )),
                }),
            ),
            (
                C::Storage,
                P::StorageEvent(StorageEvent {
                    event_type: Some(storage_event::EventType::TransferEvent(
                        StorageTransferPayload {
                            source: "tank/a@1".into(),
                            destination: "backup/a".into(),
                            size_bytes: 1 << 20,
                            transferred_bytes: 1 << 19,
                            progress_percent: 50,
                            operation: 2,
                        },
                    )),
                }),
            ),
            (
                C::Storage,
                P::StorageEvent(StorageEvent {
                    event_type: Some(storage_event::EventType::SnapshotEvent(
                        StorageSnapshotPayload {
                            snapshot_name: "tank/a@1".into(),
                            dataset_name: "tank/a".into(),
                            creation_time: 1_765_000_000,
                            size_bytes: 4096,
                            operation: 3,
                        },
                    )),
                }),
            ),
            (
                C::Network,
                P::NetworkEvent(NetworkEvent {
                    event_type: Some(network_event::EventType::InterfaceEvent(
                        NetworkInterfacePayload {
                            interface_name: "eth0".into(),
                            ip_address: "10.0.0.2".into(),
                            mac_address: "02:00:00:00:00:01".into(),
                            is_up: true,
                            operation: 1,
                        },
                    )),
                }),
            ),
            (
                C::Network,
                P::NetworkEvent(NetworkEvent {
                    event_type: Some(network_event::EventType::ConnectionEvent(
                        NetworkConnectionPayload {
                            source_ip: "10.0.0.2".into(),
                            destination_ip: "10.0.0.3".into(),
                            source_port: 50_000,
                            destination_port: 445,
                            protocol: "tcp".into(),
                            operation: 4,
                        },
                    )),
                }),
            ),
            (
                C::Security,
                P::SecurityEvent(SecurityEvent {
                    event_type: Some(security_event::EventType::AuthEvent(SecurityAuthPayload {
                        username: "alice".into(),
                        method: "ssh-key".into(),
                        source_ip: "192.0.2.7".into(),
                        operation: 2,
                    })),
                }),
            ),
            (
                C::Security,
                P::SecurityEvent(SecurityEvent {
                    event_type: Some(security_event::EventType::KeyEvent(SecurityKeyPayload {
                        key_id: "k1".into(),
                        key_type: "ed25519".into(),
                        username: "alice".into(),
                        expiry_time: 1_800_000_000,
                        operation: 1,
                    })),
                }),
            ),
            (
                C::Security,
                P::SecurityEvent(SecurityEvent {
                    event_type: Some(security_event::EventType::CertificateEvent(
                        SecurityCertificatePayload {
                            cert_id: "c1".into(),
                            domain: "node.example".into(),
                            issued_time: 1_765_000_000,
                            expiry_time: 1_800_000_000,
                            operation: 3,
                        },
                    )),
                }),
            ),
            (
                C::Service,
                P::ServiceEvent(ServiceEvent {
                    event_type: Some(service_event::EventType::StatusEvent(
                        ServiceStatusPayload {
                            service_name: "smbd".into(),
                            status: "running".into(),
                            pid: 4242,
                            uptime_seconds: 60,
                            operation: 5,
                        },
                    )),
                }),
            ),
            (
                C::Identity,
                P::IdentityEvent(IdentityEvent {
                    event_type: Some(identity_event::EventType::UserEvent(IdentityUserPayload {
                        username: "carol".into(),
                        display_name: "Carol".into(),
                        email: "c@example.org".into(),
                        groups: vec!["staff".into()],
                        domain: "AD".into(),
                        enabled: true,
                        operation: 6,
                    })),
                }),
            ),
            (
                C::Identity,
                P::IdentityEvent(IdentityEvent {
                    event_type: Some(identity_event::EventType::GroupEvent(
                        IdentityGroupPayload {
                            group_name: "staff".into(),
                            description: "All".into(),
                            members: vec!["carol".into()],
                            domain: "AD".into(),
                            operation: 4,
                        },
                    )),
                }),
            ),
            (
                C::Identity,
                P::IdentityEvent(IdentityEvent {
                    event_type: Some(identity_event::EventType::ComputerEvent(
                        IdentityComputerPayload {
                            computer_name: "ws1".into(),
                            ip_address: "10.0.0.9".into(),
                            os_version: "11".into(),
                            domain: "AD".into(),
                            enabled: false,
                            operation: 5,
                        },
                    )),
                }),
            ),
            (
                C::Access,
                P::AccessEvent(AccessEvent {
                    event_type: Some(access_event::EventType::AclEvent(AccessAclPayload {
                        resource_path: "/tank/a".into(),
                        principal: "staff".into(),
                        permissions: vec!["read".into()],
                        operation: 1,
                    })),
                }),
            ),
            (
                C::Access,
                P::AccessEvent(AccessEvent {
                    event_type: Some(access_event::EventType::PermissionEvent(
                        AccessPermissionPayload {
                            resource_path: "/tank/a".into(),
                            username: "bob".into(),
                            permission: "write".into(),
                            granted: false,
                            operation: 3,
                        },
                    )),
                }),
            ),
            (
                C::Sharing,
                P::SharingEvent(SharingEvent {
                    event_type: Some(sharing_event::EventType::ShareEvent(SharingSharePayload {
                        share_name: "home".into(),
                        path: "/tank/home".into(),
                        protocol: "smb".into(),
                        allowed_users: vec!["bob".into()],
                        read_only: true,
                        operation: 1,
                    })),
                }),
            ),
            (
                C::Sharing,
                P::SharingEvent(SharingEvent {
                    event_type: Some(sharing_event::EventType::ConnectionEvent(
                        SharingConnectionPayload {
                            share_name: "home".into(),
                            username: "bob".into(),
                            client_ip: "10.0.0.5".into(),
                            protocol: "smb".into(),
                            operation: 2,
                        },
                    )),
                }),
            ),
            (
                C::Sharing,
                P::SharingEvent(SharingEvent {
                    event_type: Some(sharing_event::EventType::FileAccessEvent(
                        SharingFileAccessPayload {
                            file_path: "/tank/home/x".into(),
                            username: "bob".into(),
                            operation_type: "rename".into(),
                            file_size: 12,
                            operation: 4,
                        },
                    )),
                }),
            ),
            (
                C::Usage,
                P::UsageEvent(UsageEvent {
                    event_type: Some(usage_event::EventType::QuotaEvent(UsageQuotaPayload {
                        organization_id: "org-1".into(),
                        resource_type: "bytes".into(),
                        current_usage: 95,
                        quota_limit: 100,
                        usage_percentage: 95.0,
                        operation: 1,
                    })),
                }),
            ),
            (
                C::Usage,
                P::UsageEvent(UsageEvent {
                    event_type: Some(usage_event::EventType::ResourceEvent(
                        UsageResourcePayload {
                            resource_id: "tank/a".into(),
                            resource_type: "dataset".into(),
                            bytes_used: 1 << 30,
                            objects_count: 12,
                            operation: 2,
                        },
                    )),
                }),
            ),
            (
                C::Usage,
                P::UsageEvent(UsageEvent {
                    event_type: Some(usage_event::EventType::ThresholdEvent(
                        UsageThresholdPayload {
                            threshold_name: "cpu".into(),
                            metric_name: "cpu_usage".into(),
                            current_value: 0.91,
                            threshold_value: 0.9,
                            operation: 2,
                        },
                    )),
                }),
            ),
            (
                C::DataTransfer,
                P::DataTransferEvent(DataTransferEvent {
                    event_type: Some(data_transfer_event::EventType::TransferEvent(
                        DataTransferTransferPayload {
                            source: "tank/a@1".into(),
                            destination: "remote:backup/a".into(),
                            size_bytes: 1 << 30,
                            transferred_bytes: 1 << 30,
                            progress_percent: 100,
                            operation: 3,
                        },
                    )),
                }),
            ),
        ]
    }

    fn wire(typed: &ev::Event) -> WireEvent {
        WireEvent::decode(typed.encode_to_vec().as_slice()).unwrap()
    }

    #[test]
    fn every_payload_of_every_category_round_trips_exactly() {
        let cases = every_payload();
        assert_eq!(cases.len(), 26, "every payload case of the contract");
        let mut categories = std::collections::BTreeSet::new();
        for (i, (category, payload)) in cases.into_iter().enumerate() {
            categories.insert(category as i32);
            let typed = ev::Event {
                event_id: format!("0193-{i}"),
                level: (i % 7 + 1) as i32,
                category: category as i32,
                source: "rodent://node-7".into(),
                timestamp: 1_765_000_000_123 + i as i64,
                metadata: [
                    ("transfer_id".to_owned(), format!("t{i}")),
                    ("a b".to_owned(), "\"q\"".to_owned()),
                ]
                .into(),
                event_payload: Some(payload),
            };
            let original = wire(&typed);
            validate(&original).unwrap();
            let ce = to_cloudevent(&original, DEFAULT_TYPE_PREFIX).expect("maps");
            ce.validate().expect("a valid CloudEvent");
            assert!(!ce.ty.ends_with(".unknown"), "{}", ce.ty);
            assert_eq!(ce.datacontenttype.as_deref(), Some(PROTOBUF));
            assert!(ce.extension("severity").is_some());
            // Through the JSON format and back, as a sink or spill file would carry it.
            let mut line = Vec::new();
            weir_core::cloudevents::json::write_json_line(&mut line, &ce);
            let reparsed = weir_core::cloudevents::json::parse_event(&line).expect("json");
            let back = from_cloudevent(&reparsed).expect("back");
            assert_eq!(back, original, "payload {i}");
            assert_eq!(
                ev::Event::decode(back.encode_to_vec().as_slice()).unwrap(),
                typed,
                "payload {i} as the typed contract"
            );
        }
        assert_eq!(categories.len(), 10, "all ten categories");
    }

    #[test]
    fn names_types_levels_and_severities() {
        let expect = [
            (EventLevel::Trace, "TRACE", "trace"),
            (EventLevel::Debug, "DEBUG", "debug"),
            (EventLevel::Info, "INFO", "info"),
            (EventLevel::Warn, "WARN", "warning"),
            (EventLevel::Error, "ERROR", "error"),
            (EventLevel::Critical, "CRITICAL", "critical"),
            (EventLevel::Essential, "ESSENTIAL", "essential"),
        ];
        let (_, payload) = every_payload().swap_remove(25);
        for (level, name, severity) in expect {
            let e = wire(&ev::Event {
                event_id: "1".into(),
                level: level as i32,
                category: EventCategory::DataTransfer as i32,
                source: "transfers".into(),
                timestamp: 0,
                metadata: Default::default(),
                event_payload: Some(payload.clone()),
            });
            let ce = to_cloudevent(&e, "io.toggle").unwrap();
            assert_eq!(ce.ty, "io.toggle.data_transfer.transfer");
            assert_eq!(ce.extension("level"), Some(name));
            assert_eq!(ce.extension("severity"), Some(severity));
            assert_eq!(ce.extension("category"), Some("DATA_TRANSFER"));
            assert_eq!(ce.time.as_deref(), Some("1970-01-01T00:00:00.000Z"));
            assert_eq!(
                ce.dataschema.as_deref(),
                Some("proto:rodent.events.DataTransferEvent")
            );
        }
    }

    #[test]
    fn unknown_values_travel_and_garbage_is_refused() {
        let (_, payload) = every_payload().swap_remove(6);
        let e = wire(&ev::Event {
            event_id: "1".into(),
            level: 99,
            category: 42,
            source: "zfs".into(),
            timestamp: 5,
            metadata: Default::default(),
            event_payload: Some(payload),
        });
        assert!(validate(&e).is_err(), "Toggle needs known values");
        for (id, source) in [("1\n2", "zfs"), ("1", "zfs\u{1b}[31m")] {
            let mut forged = e.clone();
            forged.event_id = id.into();
            forged.source = source.into();
            assert!(
                matches!(
                    to_cloudevent(&forged, "x"),
                    Err(MappingError::Invalid(
                        weir_core::event::EventError::ControlChars(_)
                    ))
                ),
                "control characters in {id:?} {source:?}"
            );
        }
        let ce = to_cloudevent(&e, "x").unwrap();
        assert_eq!(ce.extension("level"), Some("99"));
        assert_eq!(ce.extension("severity"), None);
        assert_eq!(from_cloudevent(&ce).unwrap(), e);

        let mut bad = ce.clone();
        bad.data = Some(Bytes::from_static(&[0xff, 0xff, 0xff]));
        assert!(matches!(
            from_cloudevent(&bad),
            Err(MappingError::BadPayload {
                schema: "StorageEvent",
                ..
            })
        ));
        let mut other = ce.clone();
        other.dataschema = Some("proto:toggle.v1.StorageTransferPayload".into());
        assert!(matches!(
            from_cloudevent(&other),
            Err(MappingError::UnknownSchema(_))
        ));
        let mut level = ce;
        level.extensions.retain(|x| x.name != "level");
        level.extensions.push(ext("level", "LOUD".into()));
        assert!(matches!(
            from_cloudevent(&level),
            Err(MappingError::BadAttribute { name: "level", .. })
        ));
        assert_eq!(
            to_cloudevent(
                &WireEvent {
                    event_id: String::new(),
                    ..e
                },
                "x"
            ),
            Err(MappingError::Missing("event_id"))
        );
    }
}
