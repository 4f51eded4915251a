//! The Toggle sink: events leave the router in `EventBatch`es to the upstream Toggle
//! service, through a bounded memory buffer that spills to disk.
//!
//! **Guarantee.** A write returns only when each of its events is either acknowledged by
//! Toggle or written to a spill file (fsync, rename) — so a source that acknowledges after
//! the sink (the gRPC and HTTP sources do) never acknowledges an event that only lives in
//! memory, and a crash loses nothing acknowledged. A write waits at most `max_block`: when
//! Toggle is slow or down, events are written to disk instead. Writes fail only when the
//! disk refuses them too (the route then dead-letters them).
//!
//! **Order.** One task (the flusher) owns the connection. Events leave the buffer front
//! first, one request at a time; every batch gets a strictly increasing UUIDv7 when it is
//! cut, and a spilled batch keeps it as its file name. While spill files wait, new events
//! go to disk behind them, and files are replayed oldest first, so Toggle sees events in
//! the order the sink took them (per source: in the order the source sent them).
//!
//! **Duplicates.** A file is deleted only after Toggle acknowledged it; a crash between the
//! acknowledgement and the deletion resends that one file (the batch in flight).

use super::client::ToggleClient;
use super::mapping::{from_cloudevent, validate};
use super::pb;
use super::settings::ToggleSettings;
use super::spill::{next_batch_id, SpillDir, SpillError};
use crate::metrics::{ToggleMetrics, ToggleSinkMetrics};
use crate::settings::ToggleSinkConfig;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tonic::Code;
use weir_core::dead_letter::DeadLetter;
use weir_core::sink::{BuildSink, Capabilities, ConfigProblem, Sink, SinkContext, SinkError};
use weir_core::Event;

/// A Toggle sink.
pub struct ToggleSink {
    shared: Arc<Shared>,
}

struct Shared {
    name: String,
    settings: ToggleSettings,
    buffer: Mutex<Buffer>,
    /// Writers wait here for room or for their events to be resolved.
    changed: Condvar,
    /// Wakes the flusher.
    wake: Notify,
    spill: SpillDir,
    metrics: ToggleSinkMetrics,
}

/// A buffered event and when it arrived.
struct Queued {
    event: pb::Event,
    since: Instant,
}

/// Events are numbered in arrival order. `[resolved, front)` are cut into batches being
/// sent or spilled; `[front, next)` wait in `queue`.
#[derive(Default)]
struct Buffer {
    queue: VecDeque<Queued>,
    next: u64,
    front: u64,
    /// Every event below this is resolved (delivered, spilled or failed).
    resolved: u64,
    /// Resolved ranges above `resolved` (a queue spilled while an older batch is in flight).
    resolved_ahead: BTreeMap<u64, u64>,
    /// Ranges that failed, with why (kept for a while so writers can read them).
    failures: VecDeque<(u64, u64, Arc<str>)>,
    shutdown: bool,
    stopped: bool,
}

impl Buffer {
    fn held(&self) -> usize {
        (self.next - self.resolved) as usize
    }
}

/// A batch cut from the buffer, encoded once: the events `[start, end)`.
struct Cut {
    start: u64,
    end: u64,
    id: uuid::Uuid,
    bytes: bytes::Bytes,
}

/// What the flusher should do with the queue now.
enum Due {
    Now,
    At(Instant),
    Idle,
}

impl ToggleSink {
    /// Starts the sink: its spill directory is indexed and its flusher spawned on the
    /// current tokio runtime (replaying what a previous run left on disk).
    pub fn start(
        name: &str,
        settings: ToggleSettings,
        client: ToggleClient,
        spill: SpillDir,
        metrics: ToggleSinkMetrics,
    ) -> Self {
        metrics.buffer_capacity.set(settings.buffer_size as i64);
        metrics.flush_threshold.set(settings.flush_threshold as i64);
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            settings,
            buffer: Mutex::new(Buffer::default()),
            changed: Condvar::new(),
            wake: Notify::new(),
            spill,
            metrics,
        });
        shared.publish_gauges(&shared.lock());
        let (files, _, events) = shared.spill.totals();
        if files > 0 {
            tracing::info!(
                sink = name,
                files,
                events,
                "spill files from an earlier run will be replayed first"
            );
        }
        tokio::spawn(Flusher::new(shared.clone(), client).run());
        Self { shared }
    }

    /// The GetStats figures (and spill, replay and quarantine counts) as JSON.
    pub fn stats(&self) -> serde_json::Value {
        let m = &self.shared.metrics;
        serde_json::json!({
            "type": "toggle",
            "buffer_size": m.buffer_events.get(),
            "max_buffer_size": m.buffer_capacity.get(),
            "flush_threshold": m.flush_threshold.get(),
            "pending_events": m.pending_events.get(),
            "is_shutdown": m.shutdown.get() == 1,
            "batch_size": self.shared.settings.batch_size,
            "spill_files": m.spill_files.get(),
            "spill_bytes": m.spill_bytes.get(),
            "sent_events": m.sent_events.get(),
            "send_failures": m.send_failures.get(),
            "spilled_files": m.spilled_files.get(),
            "spilled_events": m.spilled_events.get(),
            "spilled_bytes": m.spilled_bytes.get(),
            "replayed_files": m.replayed_files.get(),
            "replayed_events": m.replayed_events.get(),
            "quarantined_files": m.quarantined_files.get(),
            "dropped_files": m.dropped_files.get(),
            "dropped_events": m.dropped_events.get(),
            "rejected_events": m.rejected_events.get(),
        })
    }

    fn error(&self, reason: String) -> SinkError {
        SinkError::Refused {
            sink: self.shared.name.clone(),
            reason,
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish_gauges(&self, b: &Buffer) {
        let (files, bytes, events) = self.spill.totals();
        let held = b.held() as i64;
        self.metrics.buffer_events.set(held);
        self.metrics.pending_events.set(held + events as i64);
        self.metrics.spill_files.set(files as i64);
        self.metrics.spill_bytes.set(bytes as i64);
    }

    /// Cuts the oldest queued events into a batch of at most `max_events` events and the
    /// request size limit.
    fn cut(&self, max_events: usize) -> Option<Cut> {
        let mut b = self.lock();
        if b.queue.is_empty() {
            return None;
        }
        let limit = self.settings.max_message_bytes.saturating_sub(64);
        let mut bytes = 0;
        let mut n = 0;
        for q in b.queue.iter().take(max_events) {
            let size = prost::Message::encoded_len(&q.event) + 4;
            if n > 0 && bytes + size > limit {
                break;
            }
            bytes += size;
            n += 1;
        }
        let events: Vec<pb::Event> = b.queue.drain(..n).map(|q| q.event).collect();
        let start = b.front;
        b.front += n as u64;
        // Batch ids are taken under the lock so that they follow the buffer's order.
        let id = next_batch_id();
        drop(b);
        let batch = pb::EventBatch {
            batch_id: id.to_string(),
            events,
        };
        Some(Cut {
            start,
            end: start + n as u64,
            id,
            bytes: prost::Message::encode_to_vec(&batch).into(),
        })
    }

    /// Marks `[start, end)` resolved (with a failure reason, or delivered/durable) and
    /// wakes the writers.
    fn resolve(&self, start: u64, end: u64, failure: Option<String>) {
        let mut b = self.lock();
        if let Some(reason) = failure {
            b.failures.push_back((start, end, reason.into()));
            let horizon = b
                .resolved
                .saturating_sub(4 * self.settings.buffer_size as u64);
            while b.failures.front().is_some_and(|f| f.1 < horizon) {
                b.failures.pop_front();
            }
        }
        b.resolved_ahead.insert(start, end);
        while let Some(end) = {
            let at = b.resolved;
            b.resolved_ahead.remove(&at)
        } {
            b.resolved = end;
        }
        self.publish_gauges(&b);
        drop(b);
        self.changed.notify_all();
    }

    /// When the queue must go to disk: in backlog mode (spill files wait) at once, so
    /// writers wait only for the disk; while a live request is in flight, at the flush
    /// threshold or when the oldest event waited `max_block`.
    fn spill_due(&self, backlog: bool) -> Due {
        let b = self.lock();
        let Some(oldest) = b.queue.front() else {
            return Due::Idle;
        };
        if backlog || b.shutdown || b.held() >= self.settings.flush_threshold {
            return Due::Now;
        }
        let at = oldest.since + self.settings.max_block;
        if at <= Instant::now() {
            Due::Now
        } else {
            Due::At(at)
        }
    }

    /// When the next live batch should be sent.
    fn send_due(&self) -> Due {
        let b = self.lock();
        let Some(oldest) = b.queue.front() else {
            return Due::Idle;
        };
        if b.shutdown || b.queue.len() >= self.settings.batch_size {
            return Due::Now;
        }
        let at = oldest.since + self.settings.batch_timeout;
        if at <= Instant::now() {
            Due::Now
        } else {
            Due::At(at)
        }
    }

    /// Writes a cut batch to disk and resolves it.
    async fn spill(self: &Arc<Self>, cut: Cut) {
        let spill = self.spill.clone();
        let Cut {
            start,
            end,
            id,
            bytes,
        } = cut;
        let n = end - start;
        let written = tokio::task::spawn_blocking(move || spill.write_encoded(id, n, &bytes))
            .await
            .unwrap_or_else(|e| {
                Err(SpillError::Io {
                    path: Default::default(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
        match written {
            Ok(spilled) => {
                let m = &self.metrics;
                m.spilled_files.inc();
                m.spilled_events.inc_by(n);
                m.spilled_bytes.inc_by(spilled.bytes);
                if spilled.dropped_files > 0 {
                    m.dropped_files.inc_by(spilled.dropped_files as u64);
                    m.dropped_events.inc_by(spilled.dropped_events);
                }
                tracing::debug!(sink = %self.name, events = n, file = %spilled.path.display(), "spilled to disk");
                self.resolve(start, end, None);
            }
            Err(e) => {
                tracing::error!(sink = %self.name, events = n, "cannot spill: {e}");
                self.resolve(start, end, Some(format!("Toggle unavailable and {e}")));
            }
        }
    }

    /// Writes everything queued to disk, in files of at most the flush threshold.
    async fn spill_queue(self: &Arc<Self>) {
        while let Some(cut) = self.cut(self.settings.flush_threshold) {
            self.spill(cut).await;
        }
    }
}

/// Whether a failed request may succeed later (network, timeouts, overload, auth that an
/// operator can fix) or never will for this batch.
fn transient(status: &tonic::Status) -> bool {
    !matches!(
        status.code(),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange | Code::Unimplemented
    )
}

/// Exponential backoff from 100 ms to the configured maximum, with ±25 % jitter: the
/// attempt count behind [`weir_core::util::backoff`].
struct Backoff {
    attempt: u32,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);

    fn step(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        weir_core::util::backoff(self.attempt, Self::FIRST.min(self.max), self.max)
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The task that owns the connection to Toggle.
struct Flusher {
    shared: Arc<Shared>,
    client: ToggleClient,
    backoff: Backoff,
    retry_at: Instant,
}

/// Marks the flusher stopped (also when it panics) so no writer waits forever.
struct StopGuard(Arc<Shared>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        let mut b = self.0.lock();
        b.stopped = true;
        self.0.metrics.shutdown.set(1);
        self.0.publish_gauges(&b);
        drop(b);
        self.0.changed.notify_all();
    }
}

impl Flusher {
    fn new(shared: Arc<Shared>, client: ToggleClient) -> Self {
        let max = shared.settings.retry_max.max(Backoff::FIRST);
        Self {
            shared,
            client,
            backoff: Backoff { attempt: 0, max },
            retry_at: Instant::now(),
        }
    }

    async fn run(mut self) {
        let _guard = StopGuard(self.shared.clone());
        loop {
            if self.shared.lock().shutdown {
                self.finish().await;
                return;
            }
            if !self.shared.spill.is_empty() {
                self.backlog_step().await;
            } else {
                self.live_step().await;
            }
        }
    }

    /// Spill files wait: replay the oldest (when the backoff allows), sending new events
    /// to disk behind the backlog meanwhile.
    async fn backlog_step(&mut self) {
        if Instant::now() < self.retry_at {
            let until = self.retry_at;
            self.watching(true, tokio::time::sleep_until(until.into()))
                .await;
            return;
        }
        let Some(file) = self.shared.spill.oldest() else {
            return;
        };
        let spill = self.shared.spill.clone();
        let path = file.path.clone();
        let read = tokio::task::spawn_blocking(move || spill.read_encoded(&path)).await;
        let (bytes, n) = match read {
            Ok(Ok(file)) => file,
            Ok(Err(SpillError::Corrupt { .. })) => {
                self.shared.metrics.quarantined_files.inc();
                self.shared.publish_gauges(&self.shared.lock());
                return;
            }
            Ok(Err(e)) => {
                tracing::error!(sink = %self.shared.name, "cannot read spill file: {e}");
                self.retry_at = Instant::now() + self.backoff.step();
                return;
            }
            Err(e) => {
                tracing::error!(sink = %self.shared.name, "spill reader failed: {e}");
                return;
            }
        };
        let timeout = self.shared.settings.replay_timeout;
        let mut client = self.client.clone();
        let shared = self.shared.clone();
        let send = send(&mut client, bytes, n, timeout, &shared);
        let Some(answer) = self.watching(true, send).await else {
            return;
        };
        match answer {
            Ok(()) => {
                self.backoff.reset();
                if let Err(e) = self.shared.spill.remove(&file.path) {
                    tracing::error!(sink = %self.shared.name, "replayed spill file not deleted: {e}");
                }
                self.shared.metrics.replayed_files.inc();
                self.shared.metrics.replayed_events.inc_by(n);
                self.shared.publish_gauges(&self.shared.lock());
                tracing::debug!(sink = %self.shared.name, events = n, "replayed a spill file");
            }
            Err(status) if !transient(&status) => {
                self.shared.spill.quarantine(
                    &file.path,
                    &format!("Toggle refused it: {}", status.message()),
                );
                self.shared.metrics.quarantined_files.inc();
                self.shared.publish_gauges(&self.shared.lock());
            }
            Err(status) => {
                let pause = self.backoff.step();
                tracing::warn!(sink = %self.shared.name, code = ?status.code(), retry_ms = pause.as_millis() as u64, "Toggle unavailable, replay paused: {}", status.message());
                self.retry_at = Instant::now() + pause;
            }
        }
    }

    /// No backlog: send the next batch when it is full or has waited long enough.
    async fn live_step(&mut self) {
        match self.shared.send_due() {
            Due::Idle => self.shared.wake.notified().await,
            Due::At(at) => {
                tokio::select! {
                    () = self.shared.wake.notified() => {}
                    () = tokio::time::sleep_until(at.into()) => {}
                }
            }
            Due::Now => {
                let Some(cut) = self.shared.cut(self.shared.settings.batch_size) else {
                    return;
                };
                self.send_live(cut).await;
            }
        }
    }

    async fn send_live(&mut self, cut: Cut) {
        let timeout = self.shared.settings.max_block;
        let mut client = self.client.clone();
        let shared = self.shared.clone();
        let n = cut.end - cut.start;
        // `Bytes` clones share the buffer: a failed request spills the same bytes.
        let send = send(&mut client, cut.bytes.clone(), n, timeout, &shared);
        // Live mode never abandons its request.
        let Some(answer) = self.watching(false, send).await else {
            return;
        };
        match answer {
            Ok(()) => {
                self.backoff.reset();
                self.shared.metrics.sent_events.inc_by(n);
                self.shared.resolve(cut.start, cut.end, None);
            }
            Err(status) if !transient(&status) => {
                tracing::error!(sink = %self.shared.name, code = ?status.code(), events = n, "Toggle refused a batch: {}", status.message());
                self.shared.resolve(
                    cut.start,
                    cut.end,
                    Some(format!("Toggle refused the batch: {}", status.message())),
                );
            }
            Err(status) => {
                let pause = self.backoff.step();
                tracing::warn!(sink = %self.shared.name, code = ?status.code(), events = n, retry_ms = pause.as_millis() as u64, "Toggle unavailable, spilling to disk: {}", status.message());
                self.retry_at = Instant::now() + pause;
                self.shared.spill(cut).await;
                // Everything queued now belongs behind the spilled batch.
                self.shared.spill_queue().await;
            }
        }
    }

    /// Runs `work` while writing the queue to disk whenever it is due, so writers never
    /// wait on a slow request beyond `max_block`. In backlog mode, shutdown abandons the
    /// work (a replay's file stays for the next start) and gives `None`.
    async fn watching<T>(&self, backlog: bool, work: impl Future<Output = T>) -> Option<T> {
        tokio::pin!(work);
        loop {
            if backlog && self.shared.lock().shutdown {
                return None;
            }
            let at = match self.shared.spill_due(backlog) {
                Due::Now => {
                    self.shared.spill_queue().await;
                    continue;
                }
                Due::At(at) => Some(at),
                Due::Idle => None,
            };
            tokio::select! {
                out = &mut work => return Some(out),
                () = self.shared.wake.notified() => {}
                () = sleep_until(at) => {}
            }
        }
    }

    /// After shutdown: what is still queued goes to Toggle within the grace period when no
    /// backlog waits, else (or on failure) to disk.
    async fn finish(&mut self) {
        let grace = Instant::now() + self.shared.settings.shutdown_grace;
        while self.shared.spill.is_empty() && Instant::now() < grace {
            let Some(cut) = self.shared.cut(self.shared.settings.batch_size) else {
                break;
            };
            self.send_live(cut).await;
        }
        self.shared.spill_queue().await;
        tracing::info!(sink = %self.shared.name, spill_files = self.shared.spill.totals().0, "Toggle sink stopped");
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Sends one encoded batch of `n` events with a deadline; `Ok` once Toggle acknowledged it.
async fn send(
    client: &mut ToggleClient,
    batch: bytes::Bytes,
    n: u64,
    timeout: Duration,
    shared: &Shared,
) -> Result<(), tonic::Status> {
    let answer = client.send_encoded(batch, timeout).await;
    match answer {
        Ok(r) => {
            if r.rejected > 0 {
                shared.metrics.rejected_events.inc_by(u64::from(r.rejected));
                tracing::warn!(sink = %shared.name, rejected = r.rejected, first = r.errors.first().map(String::as_str).unwrap_or(""), "Toggle refused events of a batch");
            }
            if u64::from(r.accepted) + u64::from(r.rejected) != n {
                tracing::warn!(sink = %shared.name, sent = n, accepted = r.accepted, rejected = r.rejected, "Toggle's acknowledgement does not add up");
            }
            Ok(())
        }
        Err(status) => {
            shared.metrics.send_failures.inc();
            Err(status)
        }
    }
}

impl Sink for ToggleSink {
    fn write(&self, events: &[&Event]) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut mapped = Vec::with_capacity(events.len());
        for e in events {
            let event = from_cloudevent(e)
                .and_then(|event| validate(&event).map(|()| event))
                .map_err(|err| {
                    self.error(format!("event `{}` is not a Toggle event: {err}", e.id))
                })?;
            mapped.push(event);
        }
        let s = &self.shared;
        let n = mapped.len();
        let deadline = Instant::now() + s.settings.max_block;
        let mut b = s.lock();
        loop {
            if b.shutdown || b.stopped {
                return Err(self.error("the sink is shut down".into()));
            }
            let held = b.held();
            if held == 0 || held + n <= s.settings.buffer_size {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.error(format!(
                    "buffer full ({held} of {} events) for {} ms",
                    s.settings.buffer_size,
                    s.settings.max_block.as_millis()
                )));
            }
            b = s
                .changed
                .wait_timeout(b, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let start = b.next;
        b.next += n as u64;
        let end = b.next;
        let since = Instant::now();
        b.queue
            .extend(mapped.into_iter().map(|event| Queued { event, since }));
        s.publish_gauges(&b);
        drop(b);
        s.wake.notify_one();
        // Wait until every event is at Toggle or on disk. The flusher bounds this by
        // `max_block` plus a disk write; the limit below only guards against a bug.
        let limit = Instant::now() + s.settings.max_block * 4 + s.settings.replay_timeout;
        let mut b = s.lock();
        while b.resolved < end {
            let now = Instant::now();
            if b.stopped || now >= limit {
                return Err(self.error(
                    "events were neither acknowledged by Toggle nor written to disk".into(),
                ));
            }
            b = s
                .changed
                .wait_timeout(b, limit - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let failed = b
            .failures
            .iter()
            .find(|(fs, fe, _)| *fs < end && *fe > start)
            .map(|(_, _, reason)| reason.clone());
        drop(b);
        match failed {
            Some(reason) => Err(self.error(reason.to_string())),
            None => Ok(()),
        }
    }

    fn write_dead_letters(&self, _: &[DeadLetter<'_>]) -> Result<(), SinkError> {
        Err(self.error("a Toggle sink cannot hold dead letters".into()))
    }

    fn close(&self) {
        let s = &self.shared;
        let mut b = s.lock();
        b.shutdown = true;
        drop(b);
        s.wake.notify_one();
        let limit = Instant::now() + s.settings.shutdown_grace + s.settings.max_block * 2;
        let mut b = s.lock();
        while !b.stopped && Instant::now() < limit {
            b = s
                .changed
                .wait_timeout(b, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if !b.stopped {
            tracing::error!(sink = %s.name, "Toggle sink did not stop in time");
        }
    }

    fn stats(&self) -> Option<serde_json::Value> {
        Some(ToggleSink::stats(self))
    }
}
impl BuildSink for ToggleSinkConfig {
    fn capabilities(&self) -> Capabilities {
        Capabilities::EVENTS
    }

    fn problems(&self) -> Vec<ConfigProblem> {
        match self.settings() {
            Ok(_) => Vec::new(),
            Err(message) => vec![ConfigProblem::new(message)],
        }
    }

    fn build(&self, cx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
        use crate::client;
        let name = cx.name;
        let settings = self
            .settings()
            .map_err(|reason| SinkError::setup_msg(name, reason))?;
        let token = self
            .token
            .as_ref()
            .map(client::read_token)
            .transpose()
            .map_err(|e| SinkError::setup(name, "token", e))?;
        let client = client::connect_lazy(&client::Target {
            url: &self.url,
            tls: self.tls.as_ref(),
            token,
            max_message_bytes: settings.max_message_bytes,
        })
        .map_err(|e| SinkError::setup(name, "client", e))?;
        let dir = match &self.spill.dir {
            Some(dir) => cx.data_dir.join(dir),
            None => cx.data_dir.join("spill").join(name),
        };
        let spill = SpillDir::open(&dir, settings.spill_max_bytes, settings.when_full)
            .map_err(|e| SinkError::setup(name, "spill directory", e))?;
        let metrics = ToggleMetrics::new(cx.metrics).for_sink(name);
        Ok(Arc::new(ToggleSink::start(
            name, settings, client, spill, metrics,
        )))
    }
}
