//! Sinks: where events leave the router. Written to from route workers, a batch at a time.

use crate::cloudevents::json::{write_json_line, Structured};
use crate::cloudevents::protobuf::to_proto;
use crate::config::{FileFormat, SinkConfig};
use crate::event::Event;
use bytes::Bytes;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Why a sink could not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing failed.
    #[error("sink `{sink}`: {source}")]
    Io {
        /// The sink.
        sink: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The sink refused the events, saying why.
    #[error("sink `{sink}`: {reason}")]
    Refused {
        /// The sink.
        sink: String,
        /// Why.
        reason: String,
    },
    /// Some events of the batch were not written (the others were).
    #[error("sink `{sink}`: {} events not written: {reason}", failed.len())]
    Partial {
        /// The sink.
        sink: String,
        /// Indices (in the batch given) of the events not written, ascending.
        failed: Vec<usize>,
        /// Why.
        reason: String,
    },
    /// The sink could not be set up.
    #[error("sink `{sink}`: {reason}")]
    Setup {
        /// The sink.
        sink: String,
        /// What is wrong.
        reason: String,
    },
}

/// An event that could not be delivered, with why and where it failed.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter<'a> {
    /// The route it travelled (`kafka:<source>` for records that never became events).
    pub route: &'a str,
    /// Its tenant.
    pub tenant: &'a str,
    /// The stage that failed (a filter's name, a sink's name, `route`, or `decode`).
    pub stage: &'a str,
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

/// A destination for events.
pub trait Sink: Send + Sync {
    /// Writes a batch of events; returns only when they are written (or failed).
    fn write(&self, events: &[&Event]) -> Result<(), SinkError>;
    /// Writes dead letters.
    fn write_dead_letters(&self, letters: &[DeadLetter<'_>]) -> Result<(), SinkError>;
    /// Delivers or persists what the sink still holds; called once after every route
    /// has drained.
    fn close(&self) {}
    /// Figures for `GET /v1/stats`, for sinks that have any.
    fn stats(&self) -> Option<serde_json::Value> {
        None
    }
}

/// Appends events or dead letters to a file, as JSON lines or length-delimited protobuf.
pub struct FileSink {
    name: String,
    path: PathBuf,
    fsync: bool,
    format: FileFormat,
    file: Mutex<(BufWriter<File>, Vec<u8>)>,
}

impl FileSink {
    /// Opens (creating) the file for appending.
    pub fn open(
        name: &str,
        path: &Path,
        fsync: bool,
        format: FileFormat,
    ) -> Result<Self, SinkError> {
        let io = |source| SinkError::Io {
            sink: name.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        set_aside_torn_tail(path, format).map_err(io)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(Self {
            name: name.to_owned(),
            path: path.to_owned(),
            fsync,
            format,
            file: Mutex::new((BufWriter::with_capacity(1 << 16, file), Vec::new())),
        })
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&self, fill: impl FnOnce(&mut Vec<u8>)) -> Result<(), SinkError> {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let (writer, buf) = &mut *guard;
        buf.clear();
        fill(buf);
        let result = writer
            .write_all(buf)
            .and_then(|()| writer.flush())
            .and_then(|()| {
                if self.fsync {
                    writer.get_ref().sync_data()
                } else {
                    Ok(())
                }
            });
        result.map_err(|source| SinkError::Io {
            sink: self.name.clone(),
            source,
        })
    }
}

/// Where the whole records of a file end: after the last complete length-delimited
/// message, or after the last newline of JSON lines.
fn complete_prefix(file: &mut File, format: FileFormat) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    match format {
        FileFormat::Protobuf => crate::dead_letters::complete_prefix(file),
        FileFormat::Jsonl => {
            let total = file.seek(SeekFrom::End(0))?;
            let mut end = total;
            let mut chunk = vec![0u8; 1 << 16];
            while end > 0 {
                let start = end.saturating_sub(chunk.len() as u64);
                let n = usize::try_from(end - start).unwrap_or(chunk.len());
                file.seek(SeekFrom::Start(start))?;
                file.read_exact(&mut chunk[..n])?;
                if let Some(i) = chunk[..n].iter().rposition(|b| *b == b'\n') {
                    return Ok(start + i as u64 + 1);
                }
                end = start;
            }
            Ok(0)
        }
    }
}

/// A write cut short by a crash leaves a partial record at the end of the file; appending
/// after it would merge it with the next record and make both unreadable. The partial
/// bytes are moved to `<file>.torn-<offset>` (kept, not lost) and the file is cut back
/// to its whole records.
fn set_aside_torn_tail(path: &Path, format: FileFormat) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let total = file.seek(SeekFrom::End(0))?;
    let whole = complete_prefix(&mut file, format)?;
    if whole == total {
        return Ok(());
    }
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(whole))?;
    file.read_to_end(&mut tail)?;
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".torn-{whole}"));
    std::fs::write(&aside, &tail)?;
    file.set_len(whole)?;
    file.sync_all()?;
    tracing::warn!(
        file = %path.display(),
        bytes = tail.len(),
        kept_in = %Path::new(&aside).display(),
        "the file ended in a partial record (a write cut short); it was set aside and the file cut back to its whole records"
    );
    Ok(())
}

impl Sink for FileSink {
    fn write(&self, events: &[&Event]) -> Result<(), SinkError> {
        self.append(|buf| match self.format {
            FileFormat::Jsonl => {
                for e in events {
                    write_json_line(buf, e);
                }
            }
            FileFormat::Protobuf => {
                for e in events {
                    // Writing into a Vec cannot run out of space.
                    let _ = prost::Message::encode_length_delimited(&to_proto(e), buf);
                }
            }
        })
    }

    fn write_dead_letters(&self, letters: &[DeadLetter<'_>]) -> Result<(), SinkError> {
        self.append(|buf| match self.format {
            FileFormat::Jsonl => {
                for letter in letters {
                    if serde_json::to_writer(&mut *buf, letter).is_ok() {
                        buf.push(b'\n');
                    }
                }
            }
            FileFormat::Protobuf => crate::dead_letters::encode_delimited(letters, buf),
        })
    }
}

/// The in-process stream behind `GET /v1/tail` and `weir tail`: JSON lines, dropped when
/// nobody listens, never blocking the route (slow readers miss lines and are told so).
#[derive(Clone)]
pub struct TailHub {
    tx: broadcast::Sender<Bytes>,
}

impl Default for TailHub {
    fn default() -> Self {
        Self::new()
    }
}

impl TailHub {
    /// A hub buffering up to 16k lines per reader.
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(1 << 14).0,
        }
    }

    /// A new reader.
    pub fn subscribe(&self) -> broadcast::Receiver<Bytes> {
        self.tx.subscribe()
    }

    fn publish(&self, fill: impl FnOnce(&mut Vec<u8>)) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let mut buf = Vec::new();
        fill(&mut buf);
        for line in buf.split_inclusive(|b| *b == b'\n') {
            // No receivers between the check and here is fine: the line is not needed.
            let _ = self.tx.send(Bytes::copy_from_slice(line));
        }
    }
}

/// A sink writing to the tail hub.
pub struct TailSink(pub TailHub);

impl Sink for TailSink {
    fn write(&self, events: &[&Event]) -> Result<(), SinkError> {
        self.0.publish(|buf| {
            for e in events {
                write_json_line(buf, e);
            }
        });
        Ok(())
    }

    fn write_dead_letters(&self, letters: &[DeadLetter<'_>]) -> Result<(), SinkError> {
        self.0.publish(|buf| {
            for letter in letters {
                if serde_json::to_writer(&mut *buf, letter).is_ok() {
                    buf.push(b'\n');
                }
            }
        });
        Ok(())
    }
}

/// Discards everything.
pub struct NullSink;

impl Sink for NullSink {
    fn write(&self, _: &[&Event]) -> Result<(), SinkError> {
        Ok(())
    }
    fn write_dead_letters(&self, _: &[DeadLetter<'_>]) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Opens every configured sink (sinks with background tasks need a tokio runtime).
pub fn open_all(
    configs: &BTreeMap<String, SinkConfig>,
    kafka: Option<&crate::kafka::settings::ClusterConfig>,
    data_dir: &Path,
    tail: &TailHub,
    metrics: &crate::metrics::Metrics,
) -> Result<BTreeMap<String, Arc<dyn Sink>>, SinkError> {
    configs
        .iter()
        .map(|(name, config)| {
            let sink: Arc<dyn Sink> = match config {
                SinkConfig::File {
                    path,
                    fsync,
                    format,
                } => Arc::new(FileSink::open(name, &data_dir.join(path), *fsync, *format)?),
                SinkConfig::Tail => Arc::new(TailSink(tail.clone())),
                SinkConfig::Null => Arc::new(NullSink),
                SinkConfig::Toggle(toggle) => {
                    Arc::new(open_toggle(name, toggle, data_dir, metrics)?)
                }
                SinkConfig::Kafka(sink) => {
                    let cluster =
                        sink.cluster
                            .as_ref()
                            .or(kafka)
                            .ok_or_else(|| SinkError::Setup {
                                sink: name.clone(),
                                reason:
                                    "no Kafka cluster: set `kafka.cluster` or the sink's `cluster`"
                                        .into(),
                            })?;
                    Arc::new(crate::kafka::sink::KafkaSink::open(
                        name, sink, cluster, metrics,
                    )?)
                }
            };
            Ok((name.clone(), sink))
        })
        .collect()
}

fn open_toggle(
    name: &str,
    config: &crate::toggle::settings::ToggleSinkConfig,
    data_dir: &Path,
    metrics: &crate::metrics::Metrics,
) -> Result<crate::toggle::sink::ToggleSink, SinkError> {
    use crate::toggle::{client, spill::SpillDir};
    let setup = |reason: String| SinkError::Setup {
        sink: name.to_owned(),
        reason,
    };
    let settings = config.settings().map_err(setup)?;
    let token = config
        .token
        .as_ref()
        .map(client::read_token)
        .transpose()
        .map_err(|e| setup(e.to_string()))?;
    let client = client::connect_lazy(&client::Target {
        url: &config.url,
        tls: config.tls.as_ref(),
        token,
        max_message_bytes: settings.max_message_bytes,
    })
    .map_err(|e| setup(e.to_string()))?;
    let dir = match &config.spill.dir {
        Some(dir) => data_dir.join(dir),
        None => data_dir.join("spill").join(name),
    };
    let spill = SpillDir::open(&dir, settings.spill_max_bytes, settings.when_full)
        .map_err(|e| setup(e.to_string()))?;
    Ok(crate::toggle::sink::ToggleSink::start(
        name,
        settings,
        client,
        spill,
        metrics.toggle.for_sink(name),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_record_is_set_aside_before_appending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dlq.jsonl");
        std::fs::write(&path, b"{\"a\":1}\n{\"b\":").expect("write");
        let sink = FileSink::open("dlq", &path, false, FileFormat::Jsonl).expect("opens");
        sink.write(&[&Event::new("e", "/s", "t")]).expect("writes");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0], "{\"a\":1}");
        assert!(lines[1].contains("\"id\":\"e\""), "{text}");
        let aside = dir.path().join("dlq.jsonl.torn-8");
        assert_eq!(std::fs::read(aside).expect("kept"), b"{\"b\":");

        let path = dir.path().join("dlq.pb");
        let e = Event::new("e", "/s", "t");
        let letter = crate::dead_letters::letter_for(&e);
        let mut buf = Vec::new();
        crate::dead_letters::encode_delimited(std::slice::from_ref(&letter), &mut buf);
        let whole = buf.len();
        buf.extend_from_within(..whole / 2);
        std::fs::write(&path, &buf).expect("write");
        let sink = FileSink::open("dlq", &path, false, FileFormat::Protobuf).expect("opens");
        sink.write_dead_letters(&[letter]).expect("writes");
        let file = std::fs::read(&path).expect("read");
        let read: Vec<_> = crate::dead_letters::read_delimited(file.into())
            .collect::<Result<_, _>>()
            .expect("every record whole");
        assert_eq!(read.len(), 2);
        assert!(dir.path().join(format!("dlq.pb.torn-{whole}")).exists());
    }
}
