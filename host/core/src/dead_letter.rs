//! Dead letters: events (or input records) that could not be delivered, with why and
//! where they failed.
//!
//! In protobuf (`proto/weir/v1/dead_letter.proto`): how a `file` sink with
//! `format: protobuf` writes them, and how `weir replay --dlq` reads them back. A file is a
//! stream of length-delimited messages (varint size, then the message), so appending is
//! cheap and a reader can tell a torn last write from a complete file.

use crate::cloudevents::json::Structured;
use crate::cloudevents::protobuf::to_proto as event_to_proto;
use crate::event::Event;
use crate::pb::weir::v1 as pb;
use bytes::{Buf as _, Bytes};
use prost::Message as _;
use serde::Serialize;

/// An event that could not be delivered, with why and where it failed.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter<'a> {
    /// The route it travelled (`kafka:<source>` for records that never became events).
    pub route: &'a str,
    /// Its tenant.
    pub tenant: &'a str,
    /// The stage that failed (a filter's name, a sink's name, `route`, or `decode`).
    pub stage: &'a str,
    /// The version of the failing filter, when the stage is a filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_version: Option<u32>,
    /// What went wrong.
    pub reason: &'a str,
    /// The event as it was when it failed; none when the input was not an event.
    #[serde(serialize_with = "structured", skip_serializing_if = "Option::is_none")]
    pub event: Option<&'a Event>,
    /// The input record as it arrived, for input that never became an event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<&'a RawRecord>,
}

fn structured<S: serde::Serializer>(e: &Option<&Event>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => Structured(e).serialize(s),
        None => s.serialize_none(),
    }
}

/// An input record kept byte for byte (a Kafka record that is not a valid CloudEvent),
/// so a dead letter loses nothing. In JSON, text stays text and other bytes are base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// The topic it was read from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    /// Its key.
    pub key: Option<Bytes>,
    /// Its headers in order (a header may have no value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Its value.
    pub payload: Option<Bytes>,
}

impl Serialize for RawRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        fn bytes_entry<M: SerializeMap>(
            m: &mut M,
            name: &str,
            bytes: Option<&[u8]>,
        ) -> Result<(), M::Error> {
            use base64::Engine as _;
            match bytes {
                None => Ok(()),
                Some(b) => match std::str::from_utf8(b) {
                    Ok(text) => m.serialize_entry(name, text),
                    Err(_) => m.serialize_entry(
                        &format!("{name}_base64"),
                        &base64::engine::general_purpose::STANDARD.encode(b),
                    ),
                },
            }
        }
        struct Header<'a>(&'a str, Option<&'a [u8]>);
        impl Serialize for Header<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("key", self.0)?;
                bytes_entry(&mut m, "value", self.1)?;
                m.end()
            }
        }
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("topic", &self.topic)?;
        m.serialize_entry("partition", &self.partition)?;
        m.serialize_entry("offset", &self.offset)?;
        if let Some(t) = self.timestamp_ms {
            m.serialize_entry("timestamp_ms", &t)?;
        }
        bytes_entry(&mut m, "key", self.key.as_deref())?;
        let headers: Vec<Header<'_>> = self
            .headers
            .iter()
            .map(|(k, v)| Header(k, v.as_deref()))
            .collect();
        m.serialize_entry("headers", &headers)?;
        bytes_entry(&mut m, "payload", self.payload.as_deref())?;
        m.end()
    }
}

/// A dead letter as its protobuf message.
pub fn to_proto(letter: &DeadLetter<'_>) -> pb::DeadLetter {
    pb::DeadLetter {
        route: letter.route.to_owned(),
        tenant: letter.tenant.to_owned(),
        stage: letter.stage.to_owned(),
        filter_version: letter.filter_version,
        reason: letter.reason.to_owned(),
        event: letter.event.map(event_to_proto),
        original: letter.original.map(record_to_proto),
    }
}

fn record_to_proto(r: &RawRecord) -> pb::RawRecord {
    pb::RawRecord {
        topic: r.topic.clone(),
        partition: r.partition,
        offset: r.offset,
        timestamp_ms: r.timestamp_ms,
        key: r.key.clone(),
        headers: r
            .headers
            .iter()
            .map(|(key, value)| pb::Header {
                key: key.clone(),
                value: value.as_deref().map(Bytes::copy_from_slice),
            })
            .collect(),
        payload: r.payload.clone(),
    }
}

/// Appends dead letters to `buf`, each length-delimited.
pub fn encode_delimited(letters: &[DeadLetter<'_>], buf: &mut Vec<u8>) {
    for letter in letters {
        // Writing into a Vec cannot run out of space.
        let _ = to_proto(letter).encode_length_delimited(buf);
    }
}

/// The largest message a reader takes: far above any dead letter weir writes (events are
/// bounded by the ingest limits), so a larger length is damage, not a cut-off write.
pub const MAX_MESSAGE_BYTES: u64 = 64 << 20;

/// Why a dead-letter file cannot be read on.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file ends inside a message: its last write was cut short (a crash mid-write).
    /// (A damaged length that still points past the end looks the same.)
    #[error("the file ends inside dead letter {index} (byte {offset}): an interrupted write")]
    Torn {
        /// Zero-based number of the message.
        index: usize,
        /// Byte offset where it starts.
        offset: usize,
    },
    /// A message's length is impossible (zero, or above [`MAX_MESSAGE_BYTES`]).
    #[error("dead letter {index} (byte {offset}) has an impossible length of {len} bytes")]
    BadLength {
        /// Zero-based number of the message.
        index: usize,
        /// Byte offset where it starts.
        offset: usize,
        /// The length read.
        len: u64,
    },
    /// A message is not a dead letter.
    #[error("dead letter {index} (byte {offset}) is corrupt: {source}")]
    Corrupt {
        /// Zero-based number of the message.
        index: usize,
        /// Byte offset where it starts.
        offset: usize,
        /// What the decoder said.
        source: prost::DecodeError,
    },
}

/// A message's length prefix: `Ok(Some((header bytes, body length)))`, `Ok(None)` when
/// the stream ends inside the prefix (a torn write), `Err` for an impossible length.
fn length_prefix(rest: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
    let mut probe = rest;
    match prost::encoding::decode_varint(&mut probe) {
        Ok(0) => Err(FrameError::Length(0)),
        Ok(len) if len > MAX_MESSAGE_BYTES => Err(FrameError::Length(len)),
        // Bounded by MAX_MESSAGE_BYTES above, so this fits any usize weir runs on.
        Ok(len) => usize::try_from(len)
            .map(|len| Some((rest.len() - probe.len(), len)))
            .map_err(|_| FrameError::Length(len)),
        // A varint cut off by the end of the stream is a torn write too.
        Err(_) if rest.len() < 10 && rest.iter().all(|b| b & 0x80 != 0) => Ok(None),
        Err(e) => Err(FrameError::Varint(e)),
    }
}

/// Where the next message of a length-delimited stream lies: `Ok(Some((header, len)))`,
/// `Ok(None)` when the stream ends inside the message (torn), `Err` for damage.
fn frame(rest: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
    Ok(length_prefix(rest)?.filter(|(header, len)| header + len <= rest.len()))
}

enum FrameError {
    Length(u64),
    Varint(prost::DecodeError),
}

/// Reads a length-delimited dead-letter file's messages in order; the iterator ends after
/// the first error (nothing after a bad length can be trusted).
pub fn read_delimited(file: Bytes) -> impl Iterator<Item = Result<pb::DeadLetter, ReadError>> {
    let total = file.len();
    let mut rest = file;
    let mut index = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || rest.is_empty() {
            return None;
        }
        let offset = total - rest.len();
        let item = match frame(&rest) {
            Ok(Some((header, len))) => {
                rest.advance(header);
                let body = rest.split_to(len);
                pb::DeadLetter::decode(body).map_err(|source| ReadError::Corrupt {
                    index,
                    offset,
                    source,
                })
            }
            Ok(None) => Err(ReadError::Torn { index, offset }),
            Err(FrameError::Length(len)) => Err(ReadError::BadLength { index, offset, len }),
            Err(FrameError::Varint(source)) => Err(ReadError::Corrupt {
                index,
                offset,
                source,
            }),
        };
        failed = item.is_err();
        index += 1;
        Some(item)
    })
}

/// The length of the whole messages at the start of a length-delimited file: where a
/// torn last write begins, or the file's length when there is none. Damage before the
/// end stops the scan there too (the reader reports it).
pub fn complete_prefix(file: &mut (impl std::io::Read + std::io::Seek)) -> std::io::Result<u64> {
    use std::io::SeekFrom;
    let total = file.seek(SeekFrom::End(0))?;
    let mut at = 0u64;
    let mut header = [0u8; 10];
    while at < total {
        file.seek(SeekFrom::Start(at))?;
        let want = usize::try_from((total - at).min(10)).unwrap_or(10);
        file.read_exact(&mut header[..want])?;
        let Ok(Some((header_len, len))) = length_prefix(&header[..want]) else {
            return Ok(at);
        };
        let next = at + (header_len + len) as u64;
        if next > total {
            return Ok(at);
        }
        at = next;
    }
    Ok(at)
}

/// A dead letter of `event` from a filter stage, for tests.
#[cfg(test)]
pub(crate) fn letter_for(event: &crate::event::Event) -> DeadLetter<'_> {
    DeadLetter {
        route: "r",
        tenant: "t",
        stage: "s",
        filter_version: None,
        reason: "x",
        event: Some(event),
        original: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn letters() -> (Event, RawRecord) {
        let mut e = Event::new("e-1", "/t", "io.weir.t");
        e.data = Some(Bytes::from_static(b"{}"));
        let raw = RawRecord {
            topic: "in".into(),
            partition: 2,
            offset: 7,
            timestamp_ms: Some(1),
            key: Some(Bytes::from_static(&[0xff, 0])),
            headers: vec![("h".into(), None), ("x".into(), Some(vec![1, 2]))],
            payload: Some(Bytes::from_static(b"not json")),
        };
        (e, raw)
    }

    #[test]
    fn writes_and_reads_back_events_and_raw_records() {
        let (e, raw) = letters();
        let mut buf = Vec::new();
        encode_delimited(
            &[
                DeadLetter {
                    route: "r",
                    tenant: "t",
                    stage: "sink",
                    filter_version: None,
                    reason: "down",
                    event: Some(&e),
                    original: None,
                },
                DeadLetter {
                    route: "kafka:in",
                    tenant: "",
                    stage: "decode",
                    filter_version: None,
                    reason: "bad json",
                    event: None,
                    original: Some(&raw),
                },
            ],
            &mut buf,
        );
        let read: Vec<_> = read_delimited(Bytes::from(buf))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].stage, "sink");
        let back = crate::cloudevents::protobuf::from_proto(read[0].event.clone().unwrap());
        assert_eq!(back.unwrap(), e);
        let original = read[1].original.as_ref().unwrap();
        assert_eq!(original.key.as_deref(), Some(&[0xff, 0][..]));
        assert_eq!(original.headers[0].value, None);
        assert_eq!(original.headers[1].value.as_deref(), Some(&[1, 2][..]));
        assert_eq!(original.offset, 7);
    }

    #[test]
    fn a_torn_tail_and_a_corrupt_message_are_told_apart() {
        let (e, _) = letters();
        let letter = letter_for(&e);
        let mut buf = Vec::new();
        encode_delimited(&[letter.clone(), letter], &mut buf);
        let whole = buf.len();
        let torn = Bytes::copy_from_slice(&buf[..whole - 3]);
        let read: Vec<_> = read_delimited(torn).collect();
        assert_eq!(read.len(), 2);
        assert!(read[0].is_ok());
        assert!(matches!(read[1], Err(ReadError::Torn { index: 1, .. })));
        // Garbage inside a message of the right length.
        let mut bad = buf.clone();
        bad[1..8].fill(0xff);
        let read: Vec<_> = read_delimited(Bytes::from(bad)).collect();
        assert!(matches!(read[0], Err(ReadError::Corrupt { index: 0, .. })));
        assert_eq!(read.len(), 1, "nothing is read past a corrupt message");
        // A zero length (zeros left by a power loss) and an impossible length are damage.
        let mut zeros = buf.clone();
        zeros.extend_from_slice(&[0, 0, 0]);
        let read: Vec<_> = read_delimited(Bytes::from(zeros)).collect();
        assert!(matches!(
            read[2],
            Err(ReadError::BadLength {
                index: 2,
                len: 0,
                ..
            })
        ));
        let mut huge = buf[..whole].to_vec();
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        let read: Vec<_> = read_delimited(Bytes::from(huge)).collect();
        assert!(matches!(read[2], Err(ReadError::BadLength { .. })));
    }

    #[test]
    fn the_complete_prefix_ends_where_a_torn_write_begins() {
        let (e, _) = letters();
        let letter = letter_for(&e);
        let mut one = Vec::new();
        encode_delimited(std::slice::from_ref(&letter), &mut one);
        let mut buf = Vec::new();
        encode_delimited(&[letter.clone(), letter], &mut buf);
        let whole = buf.len() as u64;
        let prefix = |bytes: &[u8]| complete_prefix(&mut std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(prefix(&buf), whole);
        assert_eq!(prefix(&[]), 0);
        for cut in [1, 3, buf.len() - one.len() - 1] {
            assert_eq!(
                prefix(&buf[..buf.len() - cut]),
                one.len() as u64,
                "cut {cut}"
            );
        }
        assert_eq!(prefix(&buf[..1]), 0);
    }
}
