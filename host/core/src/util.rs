//! Small helpers more than one part of the router needs, each written once.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 before it, saturating far after it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A file operation that failed, with the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// What failed.
    #[source]
    pub source: std::io::Error,
}

/// Makes `path` exist as the owner's only file (mode 0600 from its creation, on Unix;
/// an existing file is tightened to it), keeping what it holds: for a database that
/// opens the file itself, so it is never readable by others, not even for a moment.
pub fn create_private(path: &Path) -> Result<(), FileError> {
    let err = |source| FileError {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let file = options.open(path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err)?;
    }
    drop(file);
    Ok(())
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the
/// directory. A reader sees the old contents or the new, never a mix. The file is the
/// owner's only (mode 0600 from its creation, on Unix): the data directory holds tokens,
/// events and filter code.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| FileError { path, source }
    };
    // A name of this write's own: two writers of one path never share a temporary file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp-{}-{n}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(err(&tmp))?;
    file.write_all(bytes).map_err(err(&tmp))?;
    file.sync_all().map_err(err(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(err(path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename itself durable; a failure to is the write's failure.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err(dir))?;
    }
    Ok(())
}

/// The pause before retry `attempt` (1-based): `initial` doubling per attempt up to
/// `max`, with ±25 % jitter so that many writers do not retry in step.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let base = exp.min(max).as_secs_f64();
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    Duration::from_secs_f64(base * jitter)
}

/// An error and its causes, `outer: inner: innermost` (HTTP clients keep the I/O reason
/// in an error's sources). A cause whose words an outer message already holds (errors
/// that print their source as well as return it) is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let cause = s.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chains_say_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Repeats(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Keeps(#[source] std::io::Error);
        let io = || std::io::Error::other("disk on fire");
        assert_eq!(error_chain(&Repeats(io())), "outer: disk on fire");
        assert_eq!(error_chain(&Keeps(io())), "outer: disk on fire");
    }

    #[test]
    fn backoff_doubles_within_jitter_and_stops_at_the_maximum() {
        let (i, m) = (Duration::from_millis(100), Duration::from_millis(1000));
        for attempt in 1..=40u32 {
            let expected = (100.0 * 2f64.powi(attempt.min(21) as i32 - 1)).min(1000.0);
            let got = backoff(attempt, i, m).as_secs_f64() * 1000.0;
            assert!(
                got >= expected * 0.74 && got <= expected * 1.26,
                "{attempt}: {got}"
            );
        }
    }

    #[test]
    fn an_error_chain_names_every_cause() {
        let inner = std::io::Error::other("connection refused");
        let outer = FileError {
            path: "/x".into(),
            source: inner,
        };
        assert_eq!(error_chain(&outer), "/x: connection refused");
    }

    #[test]
    fn writing_atomically_replaces_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        write_atomically(&path, b"one").expect("write");
        write_atomically(&path, b"two").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn files_written_atomically_are_the_owners_only_from_the_start() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin-token");
        write_atomically(&path, b"secret").expect("write");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    #[test]
    fn two_writers_of_one_file_never_share_a_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shared.cwasm");
        let writers: Vec<_> = [b'a', b'b']
            .into_iter()
            .map(|byte| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        write_atomically(&path, &[byte; 4096]).expect("every write succeeds");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        let got = std::fs::read(&path).expect("read");
        assert!(
            got == [b'a'; 4096] || got == [b'b'; 4096],
            "one whole write, never a mix"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn private_files_keep_their_contents_and_are_tightened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        std::fs::write(&path, b"kept").expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            create_private(&path).expect("private");
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        assert_eq!(std::fs::read(&path).expect("read"), b"kept");
    }
}
