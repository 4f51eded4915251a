//! The spill directory of the Toggle sink: when Toggle is unreachable or slow, buffered
//! events are written as `.pb` files holding one `EventBatch` each, named by UUIDv7 so
//! names sort by time, and replayed oldest first when Toggle is back.
//!
//! Writes are crash-safe (temporary name, fsync, rename). A file that does not decode is
//! moved to `quarantine/` and counted; it never stops the replay of the others. A disk cap
//! either drops the oldest files (counted) or refuses new ones.

use super::pb::EventBatch;
use prost::Message;
use std::path::{Path, PathBuf};

/// What to do when the spill directory is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// Delete the oldest files to make room (default).
    #[default]
    DropOldest,
    /// Refuse the new batch.
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
    /// Older files deleted to make room, and the events they held.
    pub dropped_files: usize,
}

/// A spill directory.
#[derive(Debug, Clone)]
pub struct SpillDir {
    dir: PathBuf,
    cap_bytes: u64,
    when_full: WhenFull,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpillError + '_ {
    move |source| SpillError::Io {
        path: path.to_owned(),
        source,
    }
}

impl SpillDir {
    /// Opens (creating) `dir` and its `quarantine/`, removing temporary files a crash left.
    pub fn open(dir: &Path, cap_bytes: u64, when_full: WhenFull) -> Result<Self, SpillError> {
        let quarantine = dir.join("quarantine");
        std::fs::create_dir_all(&quarantine).map_err(io(&quarantine))?;
        for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
            let path = entry.path();
            let temporary = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.starts_with("tmp"));
            if temporary {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            cap_bytes,
            when_full,
        })
    }

    /// The spill files waiting for replay, oldest first.
    pub fn pending(&self) -> Result<Vec<PathBuf>, SpillError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "pb"))
            .collect();
        files.sort();
        Ok(files)
    }

    /// Bytes held by pending files.
    pub fn used_bytes(&self) -> u64 {
        self.pending()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    /// Writes a batch as a new spill file (temporary name, fsync, rename), making room
    /// under the cap as the policy says.
    pub fn write(&self, batch: &EventBatch) -> Result<Spilled, SpillError> {
        let bytes = batch.encode_to_vec();
        let size = bytes.len() as u64;
        let mut dropped_files = 0;
        let mut used = self.used_bytes();
        if used + size > self.cap_bytes {
            match self.when_full {
                WhenFull::RefuseNewest => {
                    return Err(SpillError::Full {
                        used,
                        cap: self.cap_bytes,
                    })
                }
                WhenFull::DropOldest => {
                    for old in self.pending()? {
                        if used + size <= self.cap_bytes {
                            break;
                        }
                        let len = old.metadata().map(|m| m.len()).unwrap_or(0);
                        if std::fs::remove_file(&old).is_ok() {
                            used = used.saturating_sub(len);
                            dropped_files += 1;
                            tracing::warn!(file = %old.display(), "spill directory full: dropped the oldest file");
                        }
                    }
                }
            }
        }
        let path = self.dir.join(format!("{}.pb", uuid::Uuid::now_v7()));
        crate::registry::store::write_atomically(&path, &bytes).map_err(|e| SpillError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(Spilled {
            path,
            bytes: size,
            dropped_files,
        })
    }

    /// Reads a spill file; a file that does not decode is moved to `quarantine/`.
    pub fn read(&self, path: &Path) -> Result<EventBatch, SpillError> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        match EventBatch::decode(bytes.as_slice()) {
            Ok(batch) => Ok(batch),
            Err(e) => {
                let target = self
                    .dir
                    .join("quarantine")
                    .join(path.file_name().unwrap_or_default());
                let _ = std::fs::rename(path, &target);
                tracing::error!(file = %path.display(), "corrupt spill file quarantined: {e}");
                Err(SpillError::Corrupt {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })
            }
        }
    }

    /// Deletes a replayed file.
    pub fn remove(&self, path: &Path) -> Result<(), SpillError> {
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
    EventBatch::decode(bytes.as_slice()).map_err(|e| SpillError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toggle::pb;

    fn batch(n: usize, tag: &str) -> EventBatch {
        EventBatch {
            batch_id: tag.into(),
            events: (0..n)
                .map(|i| pb::Event {
                    event_id: format!("{tag}-{i}"),
                    level: 1,
                    category: 2,
                    source: "rodent://n".into(),
                    timestamp_ms: i as i64,
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn writes_in_time_order_reads_back_and_quarantines_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spill = SpillDir::open(dir.path(), 1 << 30, WhenFull::DropOldest).expect("open");
        let a = spill.write(&batch(3, "a")).expect("write");
        let b = spill.write(&batch(2, "b")).expect("write");
        let c = spill.write(&batch(1, "c")).expect("write");
        assert_eq!(
            spill.pending().expect("list"),
            vec![a.path.clone(), b.path.clone(), c.path.clone()]
        );
        assert_eq!(spill.read(&a.path).expect("read"), batch(3, "a"));
        // Truncate b: it goes to quarantine, c still reads.
        let bytes = std::fs::read(&b.path).expect("read");
        std::fs::write(&b.path, &bytes[..bytes.len() - 3]).expect("truncate");
        assert!(matches!(
            spill.read(&b.path),
            Err(SpillError::Corrupt { .. })
        ));
        assert_eq!(spill.quarantined().len(), 1);
        assert_eq!(spill.read(&c.path).expect("read"), batch(1, "c"));
        spill.remove(&a.path).expect("remove");
        spill.remove(&c.path).expect("remove");
        assert!(spill.pending().expect("list").is_empty());
        // A temporary file a crash left is cleaned at open.
        std::fs::write(dir.path().join("x.tmp-42"), b"half").expect("write");
        SpillDir::open(dir.path(), 1 << 30, WhenFull::DropOldest).expect("reopen");
        assert!(!dir.path().join("x.tmp-42").exists());
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
        assert_eq!(spill.pending().expect("list").len(), 2);
        let refusing =
            SpillDir::open(dir.path(), one * 2 + 1, WhenFull::RefuseNewest).expect("open");
        assert!(matches!(
            refusing.write(&batch(10, "w")),
            Err(SpillError::Full { .. })
        ));
    }
}
