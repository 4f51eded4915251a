//! The spill directory of the Toggle sink: when Toggle is unreachable or slow, buffered
//! events are written as `.pb` files holding one `EventBatch` each, named by UUIDv7 so
//! names sort by time, and replayed oldest first when Toggle is back.
//!
//! Writes are crash-safe (temporary name, fsync, rename). A file that does not decode is
//! moved to `quarantine/` and counted; it never stops the replay of the others. A disk cap
//! either drops the oldest files (counted) or refuses new ones.

use super::wire::WireBatch as EventBatch;
use prost::Message;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// What to do when the spill directory is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// Delete the oldest files to make room: the events in them are lost, though the
    /// router may have acknowledged them to their producers long ago.
    DropOldest,
    /// Refuse the new batch (default): the write fails and the route dead-letters it, so
    /// nothing acknowledged is lost.
    #[default]
    RefuseNewest,
}

/// Why spilling or reading a spill file failed.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A spill file could not be written.
    #[error(transparent)]
    Write(#[from] weir_core::util::FileError),
    /// The file is truncated or corrupt; it was moved to quarantine.
    #[error("{path}: corrupt spill file moved to quarantine: {reason}")]
    Corrupt {
        /// Where it was.
        path: PathBuf,
        /// The decoder's complaint.
        reason: String,
    },
    /// The directory is at its cap and the policy refuses new files.
    #[error("spill directory is full ({used} of {cap} bytes)")]
    Full {
        /// Bytes in use.
        used: u64,
        /// The cap.
        cap: u64,
    },
}

/// What writing a spill file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spilled {
    /// The new file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Older files deleted to make room.
    pub dropped_files: usize,
    /// Events those dropped files held.
    pub dropped_events: u64,
}

/// A spill file waiting for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Events it holds (from its name: `<batch id>-<events>.pb`).
    pub events: u64,
}

/// The files waiting for replay, oldest first, with running totals (the sink reads the
/// totals on every write, so they are kept rather than summed).
#[derive(Debug, Default)]
struct Index {
    files: VecDeque<SpillFile>,
    bytes: u64,
    events: u64,
}

impl Index {
    fn insert_sorted(&mut self, file: SpillFile) {
        // A batch cut earlier may be spilled after a later one.
        let at = self.files.partition_point(|f| f.path < file.path);
        self.bytes += file.bytes;
        self.events += file.events;
        self.files.insert(at, file);
    }

    fn pop_front(&mut self) -> Option<SpillFile> {
        let file = self.files.pop_front()?;
        self.bytes -= file.bytes;
        self.events -= file.events;
        Some(file)
    }

    fn remove(&mut self, path: &Path) {
        if let Some(at) = self.files.iter().position(|f| f.path == path) {
            if let Some(file) = self.files.remove(at) {
                self.bytes -= file.bytes;
                self.events -= file.events;
            }
        }
    }
}

/// A spill directory. Clones share one index of the files in it.
#[derive(Debug, Clone)]
pub struct SpillDir {
    dir: PathBuf,
    cap_bytes: u64,
    when_full: WhenFull,
    index: Arc<Mutex<Index>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpillError + '_ {
    move |source| SpillError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A new batch id: a UUIDv7, strictly greater than every id this process made before, so
/// spill files named by it sort in the order their batches were cut.
pub fn next_batch_id() -> Uuid {
    static LAST: Mutex<u128> = Mutex::new(0);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let now = Uuid::now_v7().as_u128();
    *last = if now > *last { now } else { *last + 1 };
    Uuid::from_u128(*last)
}

/// The events a spill file holds, from its name.
fn events_in_name(path: &Path) -> u64 {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.rsplit_once('-'))
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

impl SpillDir {
    /// Opens (creating) `dir` and its `quarantine/`, removing temporary files a crash left
    /// and indexing the files waiting for replay.
    pub fn open(dir: &Path, cap_bytes: u64, when_full: WhenFull) -> Result<Self, SpillError> {
        let quarantine = dir.join("quarantine");
        std::fs::create_dir_all(&quarantine).map_err(io(&quarantine))?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
            let path = entry.path();
            let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if extension.starts_with("tmp") {
                let _ = std::fs::remove_file(&path);
            } else if extension == "pb" {
                let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
                let events = events_in_name(&path);
                files.push(SpillFile {
                    path,
                    bytes,
                    events,
                });
            }
        }
        let mut index = Index::default();
        for file in files {
            index.insert_sorted(file);
        }
        Ok(Self {
            dir: dir.to_owned(),
            cap_bytes,
            when_full,
            index: Arc::new(Mutex::new(index)),
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The spill files waiting for replay, oldest first.
    pub fn pending(&self) -> Vec<PathBuf> {
        self.index().files.iter().map(|f| f.path.clone()).collect()
    }

    /// The oldest file waiting for replay.
    pub fn oldest(&self) -> Option<SpillFile> {
        self.index().files.front().cloned()
    }

    /// Whether no file waits for replay.
    pub fn is_empty(&self) -> bool {
        self.index().files.is_empty()
    }

    /// `(files, bytes, events)` waiting for replay.
    pub fn totals(&self) -> (usize, u64, u64) {
        let index = self.index();
        (index.files.len(), index.bytes, index.events)
    }

    /// Writes a batch as a new spill file named by its batch id (a batch whose id is not
    /// a UUID gets a new one, written into it); see [`SpillDir::write_encoded`].
    pub fn write(&self, batch: &EventBatch) -> Result<Spilled, SpillError> {
        let n = batch.events.len() as u64;
        match Uuid::parse_str(&batch.batch_id) {
            Ok(id) => self.write_encoded(id, n, &batch.encode_to_vec()),
            Err(_) => {
                let id = next_batch_id();
                let mut named = batch.clone();
                named.batch_id = id.to_string();
                self.write_encoded(id, n, &named.encode_to_vec())
            }
        }
    }

    /// Writes an encoded `EventBatch` of `events` events as the spill file `<id>-<events>.pb`,
    /// crash-safe (temporary name, fsync, rename), making room under the cap as the
    /// policy says.
    pub fn write_encoded(
        &self,
        id: Uuid,
        events: u64,
        bytes: &[u8],
    ) -> Result<Spilled, SpillError> {
        let size = bytes.len() as u64;
        let mut dropped_files = 0;
        let mut dropped_events = 0;
        let mut index = self.index();
        let mut used = index.bytes;
        if used + size > self.cap_bytes {
            match self.when_full {
                WhenFull::RefuseNewest => {
                    return Err(SpillError::Full {
                        used,
                        cap: self.cap_bytes,
                    })
                }
                WhenFull::DropOldest => {
                    while used + size > self.cap_bytes {
                        let Some(old) = index.pop_front() else { break };
                        let _ = std::fs::remove_file(&old.path);
                        used = used.saturating_sub(old.bytes);
                        dropped_files += 1;
                        dropped_events += old.events;
                        tracing::warn!(file = %old.path.display(), events = old.events, "spill directory full: dropped the oldest file");
                    }
                }
            }
        }
        let path = self.dir.join(format!("{id}-{events}.pb"));
        weir_core::util::write_atomically(&path, bytes)?;
        index.insert_sorted(SpillFile {
            path: path.clone(),
            bytes: size,
            events,
        });
        Ok(Spilled {
            path,
            bytes: size,
            dropped_files,
            dropped_events,
        })
    }

    /// Reads a spill file for sending as it is: its bytes, after checking that they
    /// decode, and its event count. A file that does not decode is quarantined.
    pub fn read_encoded(&self, path: &Path) -> Result<(bytes::Bytes, u64), SpillError> {
        let bytes = self.read_bytes(path)?;
        let batch = self.decode_or_quarantine(path, &bytes)?;
        Ok((bytes.into(), batch.events.len() as u64))
    }

    /// Reads a spill file; a file that does not decode is moved to `quarantine/` and
    /// leaves the index.
    pub fn read(&self, path: &Path) -> Result<EventBatch, SpillError> {
        let bytes = self.read_bytes(path)?;
        self.decode_or_quarantine(path, &bytes)
    }

    /// A file's bytes; a file that vanished leaves the index.
    fn read_bytes(&self, path: &Path) -> Result<Vec<u8>, SpillError> {
        std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                self.forget(path);
            }
            SpillError::Io {
                path: path.to_owned(),
                source,
            }
        })
    }

    fn decode_or_quarantine(&self, path: &Path, bytes: &[u8]) -> Result<EventBatch, SpillError> {
        match decode_checked(path, bytes) {
            Ok(batch) => Ok(batch),
            Err(reason) => {
                self.quarantine(path, &reason);
                Err(SpillError::Corrupt {
                    path: path.to_owned(),
                    reason,
                })
            }
        }
    }

    /// Moves a file to `quarantine/` (it will never be replayed) and logs why.
    pub fn quarantine(&self, path: &Path, reason: &str) {
        let target = self
            .dir
            .join("quarantine")
            .join(path.file_name().unwrap_or_default());
        let _ = std::fs::rename(path, &target);
        self.forget(path);
        tracing::error!(file = %path.display(), moved_to = %target.display(), "spill file quarantined: {reason}");
    }

    fn forget(&self, path: &Path) {
        self.index().remove(path);
    }

    /// Deletes a replayed file.
    pub fn remove(&self, path: &Path) -> Result<(), SpillError> {
        self.forget(path);
        std::fs::remove_file(path).map_err(io(path))
    }

    /// Files moved to quarantine.
    pub fn quarantined(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.join("quarantine"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

/// Reads any `.pb` spill file (for `weir spill inspect`), without quarantining it.
pub fn read_file(path: &Path) -> Result<EventBatch, SpillError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    decode_checked(path, &bytes).map_err(|reason| SpillError::Corrupt {
        path: path.to_owned(),
        reason,
    })
}

/// Decodes a spill file and checks it against its name `<batch id>-<events>.pb`. A file
/// cut short can still decode (protobuf has no length of its own, and a cut between
/// fields leaves a valid shorter message); its batch id (the last field) or its event
/// count then differ from the name.
fn decode_checked(path: &Path, bytes: &[u8]) -> Result<EventBatch, String> {
    let batch = EventBatch::decode(bytes).map_err(|e| e.to_string())?;
    if let Some((id, events)) = name_parts(path) {
        if batch.batch_id != id || batch.events.len() as u64 != events {
            return Err(format!(
                "holds batch `{}` of {} events where its name says `{id}` of {events}: \
                 truncated or replaced",
                batch.batch_id,
                batch.events.len()
            ));
        }
    }
    Ok(batch)
}

/// The batch id and event count a spill file's name `<UUID>-<events>.pb` states.
fn name_parts(path: &Path) -> Option<(String, u64)> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".pb")?;
    let (id, events) = stem.rsplit_once('-')?;
    let id = Uuid::parse_str(id).ok()?;
    Some((id.to_string(), events.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::WireEvent;

    /// A batch of `n` events with ids `<tag>-<i>`; `id` is its batch id.
    fn batch_with(n: usize, tag: &str, id: &str) -> EventBatch {
        EventBatch {
            batch_id: id.into(),
            batch_timestamp: 1_765_000_000_000,
            events: (0..n)
                .map(|i| WireEvent {
                    event_id: format!("{tag}-{i}"),
                    level: 1,
                    category: 2,
                    source: "rodent://n".into(),
                    timestamp: i as i64,
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// A batch with a fresh UUIDv7 as its id.
    fn batch(n: usize, tag: &str) -> EventBatch {
        batch_with(n, tag, &next_batch_id().to_string())
    }

    #[test]
    fn writes_in_time_order_reads_back_and_quarantines_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spill = SpillDir::open(dir.path(), 1 << 30, WhenFull::DropOldest).expect("open");
        let (batch_a, batch_b, batch_c) = (batch(3, "a"), batch(2, "b"), batch(1, "c"));
        let a = spill.write(&batch_a).expect("write");
        let b = spill.write(&batch_b).expect("write");
        let c = spill.write(&batch_c).expect("write");
        assert_eq!(
            spill.pending(),
            vec![a.path.clone(), b.path.clone(), c.path.clone()]
        );
        assert_eq!(spill.read(&a.path).expect("read"), batch_a);
        // Cut b short by its last field (the batch id): it still decodes, but no longer
        // matches its name, so it goes to quarantine; c still reads.
        let bytes = std::fs::read(&b.path).expect("read");
        std::fs::write(&b.path, &bytes[..bytes.len() - 38]).expect("truncate");
        assert!(EventBatch::decode(&bytes[..bytes.len() - 38]).is_ok());
        assert!(matches!(
            spill.read(&b.path),
            Err(SpillError::Corrupt { .. })
        ));
        assert_eq!(spill.quarantined().len(), 1);
        assert_eq!(spill.read(&c.path).expect("read"), batch_c);
        spill.remove(&a.path).expect("remove");
        spill.remove(&c.path).expect("remove");
        assert!(spill.pending().is_empty());
        // A temporary file a crash left is cleaned at open.
        std::fs::write(dir.path().join("x.tmp-42"), b"half").expect("write");
        SpillDir::open(dir.path(), 1 << 30, WhenFull::DropOldest).expect("reopen");
        assert!(!dir.path().join("x.tmp-42").exists());
    }

    #[test]
    fn files_are_named_by_batch_id_and_sorted_by_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spill = SpillDir::open(dir.path(), 1 << 30, WhenFull::DropOldest).expect("open");
        let earlier = next_batch_id().to_string();
        let later = next_batch_id().to_string();
        assert!(earlier < later);
        // The later batch reaches the disk first; the earlier one still replays first.
        spill.write(&batch_with(2, "l", &later)).expect("write");
        spill.write(&batch_with(3, "e", &earlier)).expect("write");
        let oldest = spill.oldest().expect("a file");
        assert!(oldest.path.ends_with(format!("{earlier}-3.pb")));
        assert_eq!(oldest.events, 3);
        // A reopened directory knows its files and their event counts.
        let reopened = SpillDir::open(dir.path(), 1 << 30, WhenFull::DropOldest).expect("open");
        assert_eq!(reopened.totals().0, 2);
        assert_eq!(reopened.totals().2, 5);
        assert_eq!(reopened.pending(), spill.pending());
    }

    #[test]
    fn the_cap_drops_oldest_or_refuses_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = batch(10, "x").encode_to_vec().len() as u64;
        let spill = SpillDir::open(dir.path(), one * 2 + 1, WhenFull::DropOldest).expect("open");
        let first = spill.write(&batch(10, "x")).expect("1");
        spill.write(&batch(10, "y")).expect("2");
        let third = spill.write(&batch(10, "z")).expect("3");
        assert_eq!(third.dropped_files, 1);
        assert!(!first.path.exists());
        assert_eq!(spill.pending().len(), 2);
        let refusing =
            SpillDir::open(dir.path(), one * 2 + 1, WhenFull::RefuseNewest).expect("open");
        assert!(matches!(
            refusing.write(&batch(10, "w")),
            Err(SpillError::Full { .. })
        ));
    }
}

#[cfg(test)]
mod default_tests {
    #[test]
    fn a_full_spill_refuses_by_default_and_loses_nothing_acknowledged() {
        assert_eq!(super::WhenFull::default(), super::WhenFull::RefuseNewest);
    }
}
