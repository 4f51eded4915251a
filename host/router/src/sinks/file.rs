//! The `file` sink: events or dead letters appended to a file, as JSON lines or as
//! length-delimited protobuf.

use serde::Deserialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use weir_core::cloudevents::json::write_json_line;
use weir_core::cloudevents::protobuf::to_proto;
use weir_core::dead_letter::{self, DeadLetter};
use weir_core::resilience::{BreakerConfig, Resilience, RetryConfig};
use weir_core::sink::{BuildSink, Capabilities, ConfigProblem, Sink, SinkContext, SinkError};
use weir_core::Event;

/// A `file` sink's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file (relative paths are inside the data directory).
    pub path: PathBuf,
    /// fsync after every batch (slower, survives power loss).
    #[serde(default)]
    pub fsync: bool,
    /// `jsonl` (default) or `protobuf`.
    #[serde(default)]
    pub format: FileFormat,
    /// Retries of failed writes (a full disk, an I/O error); none by default.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// A circuit breaker in front of the file; none by default.
    #[serde(default)]
    pub circuit_breaker: Option<BreakerConfig>,
}

impl BuildSink for FileSinkConfig {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dead_letters: true,
            dead_letters_apart: self.format == FileFormat::Protobuf,
        }
    }

    fn problems(&self) -> Vec<ConfigProblem> {
        self.resilience().problems()
    }

    fn resilience(&self) -> Resilience {
        Resilience {
            retry: self.retry,
            breaker: self.circuit_breaker,
        }
    }

    fn build(&self, cx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
        let sink = FileSink::open(
            cx.name,
            &cx.data_dir.join(&self.path),
            self.fsync,
            self.format,
        )?;
        Ok(Arc::new(sink))
    }
}

/// How a `file` sink writes.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// One JSON object a line: structured CloudEvents, or dead letters with the event
    /// or original record inside.
    #[default]
    Jsonl,
    /// Length-delimited protobuf messages: `io.cloudevents.v1.CloudEvent` for events,
    /// `weir.v1.DeadLetter` for dead letters (`proto/`).
    Protobuf,
}

/// Appends events or dead letters to a file, as JSON lines or length-delimited protobuf.
pub struct FileSink {
    name: String,
    path: PathBuf,
    fsync: bool,
    format: FileFormat,
    /// The file, the buffer a batch is encoded into before one write, and where the
    /// file's whole records end.
    file: Mutex<(File, Vec<u8>, u64)>,
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
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        // Events are tenants' data: the file is the owner's only from its creation.
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let file = options.open(path).map_err(io)?;
        let end = file.metadata().map_err(io)?.len();
        Ok(Self {
            name: name.to_owned(),
            path: path.to_owned(),
            fsync,
            format,
            file: Mutex::new((file, Vec::new(), end)),
        })
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Encodes a batch with `fill` and appends it in one write. A write that fails part
    /// way is cut back off the file, so a retry never follows a torn record.
    fn append(&self, fill: impl FnOnce(&mut Vec<u8>)) -> Result<(), SinkError> {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let (file, buf, end) = &mut *guard;
        buf.clear();
        fill(buf);
        let result =
            file.write_all(buf)
                .and_then(|()| if self.fsync { file.sync_data() } else { Ok(()) });
        match result {
            Ok(()) => {
                *end += buf.len() as u64;
                Ok(())
            }
            Err(source) => {
                // Best effort: devices (e.g. /dev/full) have no length to restore.
                let _ = file.set_len(*end);
                Err(SinkError::Io {
                    sink: self.name.clone(),
                    source,
                })
            }
        }
    }
}

/// Where the whole records of a file end: after the last complete length-delimited
/// message, or after the last newline of JSON lines.
fn complete_prefix(file: &mut File, format: FileFormat) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    match format {
        FileFormat::Protobuf => dead_letter::complete_prefix(file),
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
            FileFormat::Protobuf => dead_letter::encode_delimited(letters, buf),
        })
    }
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
        let letter = DeadLetter {
            route: "r",
            tenant: "t",
            stage: "s",
            filter_version: Some(3),
            reason: "x",
            event: Some(&e),
            original: None,
        };
        let mut buf = Vec::new();
        dead_letter::encode_delimited(std::slice::from_ref(&letter), &mut buf);
        let whole = buf.len();
        buf.extend_from_within(..whole / 2);
        std::fs::write(&path, &buf).expect("write");
        let sink = FileSink::open("dlq", &path, false, FileFormat::Protobuf).expect("opens");
        sink.write_dead_letters(&[letter]).expect("writes");
        let file = std::fs::read(&path).expect("read");
        let read: Vec<_> = dead_letter::read_delimited(file.into())
            .collect::<Result<_, _>>()
            .expect("every record whole");
        assert_eq!(read.len(), 2);
        assert!(dir.path().join(format!("dlq.pb.torn-{whole}")).exists());
    }
}
