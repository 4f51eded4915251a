//! `EventBatch` and `Event` as weir moves them: the same wire format as
//! `rodent.EventBatch` and `rodent.events.Event`, but the category wrapper (fields 10–19)
//! stays encoded. Decoding a batch never touches the payload bytes, and encoding one writes
//! them back exactly as the agent sent them — including fields a newer agent added that
//! this build does not know.

use bytes::Bytes;
use std::collections::BTreeMap;

/// A `rodent.events.Event` with its payload kept as bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireEvent {
    /// A UUIDv7 from the agent.
    #[prost(string, tag = "1")]
    pub event_id: String,
    /// `rodent.events.EventLevel` (open: unknown values are kept).
    #[prost(int32, tag = "2")]
    pub level: i32,
    /// `rodent.events.EventCategory` (open).
    #[prost(int32, tag = "3")]
    pub category: i32,
    /// The agent module that raised the event.
    #[prost(string, tag = "4")]
    pub source: String,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "5")]
    pub timestamp: i64,
    /// Free-form context (ordered, so encoding is deterministic).
    #[prost(btree_map = "string, string", tag = "6")]
    pub metadata: BTreeMap<String, String>,
    /// The category wrapper, encoded.
    #[prost(oneof = "WirePayload", tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19")]
    pub event_payload: Option<WirePayload>,
}

/// The `event_payload` oneof with each wrapper message left encoded.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum WirePayload {
    /// `SystemEvent system_event = 10`.
    #[prost(bytes = "bytes", tag = "10")]
    System(Bytes),
    /// `StorageEvent storage_event = 11`.
    #[prost(bytes = "bytes", tag = "11")]
    Storage(Bytes),
    /// `NetworkEvent network_event = 12`.
    #[prost(bytes = "bytes", tag = "12")]
    Network(Bytes),
    /// `SecurityEvent security_event = 13`.
    #[prost(bytes = "bytes", tag = "13")]
    Security(Bytes),
    /// `ServiceEvent service_event = 14`.
    #[prost(bytes = "bytes", tag = "14")]
    Service(Bytes),
    /// `IdentityEvent identity_event = 15`.
    #[prost(bytes = "bytes", tag = "15")]
    Identity(Bytes),
    /// `AccessEvent access_event = 16`.
    #[prost(bytes = "bytes", tag = "16")]
    Access(Bytes),
    /// `SharingEvent sharing_event = 17`.
    #[prost(bytes = "bytes", tag = "17")]
    Sharing(Bytes),
    /// `UsageEvent usage_event = 18`.
    #[prost(bytes = "bytes", tag = "18")]
    Usage(Bytes),
    /// `DataTransferEvent data_transfer_event = 19`.
    #[prost(bytes = "bytes", tag = "19")]
    DataTransfer(Bytes),
}

impl WirePayload {
    /// The field number in `Event` and the encoded wrapper.
    pub fn parts(&self) -> (u32, &Bytes) {
        match self {
            WirePayload::System(b) => (10, b),
            WirePayload::Storage(b) => (11, b),
            WirePayload::Network(b) => (12, b),
            WirePayload::Security(b) => (13, b),
            WirePayload::Service(b) => (14, b),
            WirePayload::Identity(b) => (15, b),
            WirePayload::Access(b) => (16, b),
            WirePayload::Sharing(b) => (17, b),
            WirePayload::Usage(b) => (18, b),
            WirePayload::DataTransfer(b) => (19, b),
        }
    }

    /// The payload for field number `field` of `Event`.
    pub fn from_parts(field: u32, bytes: Bytes) -> Option<Self> {
        Some(match field {
            10 => WirePayload::System(bytes),
            11 => WirePayload::Storage(bytes),
            12 => WirePayload::Network(bytes),
            13 => WirePayload::Security(bytes),
            14 => WirePayload::Service(bytes),
            15 => WirePayload::Identity(bytes),
            16 => WirePayload::Access(bytes),
            17 => WirePayload::Sharing(bytes),
            18 => WirePayload::Usage(bytes),
            19 => WirePayload::DataTransfer(bytes),
            _ => return None,
        })
    }
}

/// A `rodent.EventBatch` of [`WireEvent`]s: what the sink sends and a spill file holds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireBatch {
    /// The events.
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<WireEvent>,
    /// When the batch was made, milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub batch_timestamp: i64,
    /// Unique per batch (weir: a UUIDv7, also the spill file's name).
    #[prost(string, tag = "3")]
    pub batch_id: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pb;
    use prost::Message;

    #[test]
    fn the_wire_types_read_and_write_the_contract_exactly() {
        use pb::events::{storage_event, StorageEvent, StorageSnapshotPayload};
        let typed = pb::EventBatch {
            events: vec![pb::events::Event {
                event_id: "0193e0a0-0000-7000-8000-000000000001".into(),
                level: pb::events::EventLevel::Trace as i32,
                category: pb::events::EventCategory::Storage as i32,
                source: "zfs".into(),
                timestamp: 1_765_000_000_123,
                metadata: [("pool".to_owned(), "tank".to_owned())].into(),
                event_payload: Some(pb::events::event::EventPayload::StorageEvent(
                    StorageEvent {
                        event_type: Some(storage_event::EventType::SnapshotEvent(
                            StorageSnapshotPayload {
                                snapshot_name: "tank/a@1".into(),
                                dataset_name: "tank/a".into(),
                                creation_time: 1_765_000_000,
                                size_bytes: 4096,
                                operation: 1,
                            },
                        )),
                    },
                )),
            }],
            batch_timestamp: 1_765_000_000_200,
            batch_id: "0193e0a0-0000-7000-8000-0000000000ff".into(),
        };
        let bytes = typed.encode_to_vec();
        let wire = WireBatch::decode(bytes.as_slice()).unwrap();
        assert_eq!(wire.encode_to_vec(), bytes, "re-encoding changes nothing");
        let (field, payload) = wire.events[0].event_payload.as_ref().unwrap().parts();
        assert_eq!(field, 11);
        let Some(pb::events::event::EventPayload::StorageEvent(storage)) =
            &typed.events[0].event_payload
        else {
            unreachable!()
        };
        assert_eq!(payload.as_ref(), storage.encode_to_vec().as_slice());
        assert_eq!(pb::EventBatch::decode(bytes.as_slice()).unwrap(), typed);
    }

    #[test]
    fn fields_this_build_does_not_know_survive_inside_the_payload() {
        // A newer agent's StorageEvent with an extra field 15 (varint 7) after the payload.
        let storage = pb::events::StorageEvent::default().encode_to_vec();
        let mut newer = storage.clone();
        newer.extend_from_slice(&[15 << 3, 7]);
        let event = WireEvent {
            event_id: "e".into(),
            event_payload: Some(WirePayload::Storage(Bytes::from(newer.clone()))),
            ..Default::default()
        };
        let back = WireEvent::decode(event.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            back.event_payload.unwrap().parts().1.as_ref(),
            newer.as_slice()
        );
    }
}
