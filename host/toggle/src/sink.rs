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
//! cut, and a spilled batch keeps it as its file name. Files are replayed oldest first.
//! While Toggle is down, new events go to disk behind the backlog. Once Toggle answers
//! again, by default (`recovery: direct`) new events are sent directly while the backlog
//! replays between them, as the Rodent agent does; with `recovery: ordered` they keep
//! going to disk behind the backlog until it is empty, so Toggle sees events in the order
//! the sink took them (per source: in the order the source sent them).
//!
//! **Answers.** `success: true` is an acknowledgement. `success: false` is Toggle saying
//! it received the batch but had problems with it: logged and counted
//! (`weir_toggle_problem_batches_total`), never resent. A gRPC error is a failed send.
//!
//! **Duplicates.** A file is deleted only after Toggle answered it; a crash between the
//! answer and the deletion resends that one file (the batch in flight). Every batch
//! carries its UUIDv7 as `batch_id`, so Toggle can drop the repeat.

use super::client::ToggleClient;
use super::mapping::{from_cloudevent, validate};
use super::settings::ToggleSettings;
use super::spill::{next_batch_id, SpillDir, SpillError};
use super::wire::{WireBatch, WireEvent};
use crate::metrics::{ToggleMetrics, ToggleSinkMetrics};
use crate::settings::{Recovery, ToggleSinkConfig};
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
    event: WireEvent,
    since: Instant,
    /// The event's W3C Trace Context, while tracing is on (a batch's call carries its
    /// first event's).
    trace: Option<weir_core::trace::W3c>,
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
    /// The trace context the call continues (its first event's).
    trace: Option<weir_core::trace::W3c>,
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
            "problem_batches": m.problem_batches.get(),
            "recovery": match self.shared.settings.recovery {
                Recovery::Direct => "direct",
                Recovery::Ordered => "ordered",
            },
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
        let trace = b.queue.front().and_then(|q| q.trace.clone());
        let events: Vec<WireEvent> = b.queue.drain(..n).map(|q| q.event).collect();
        let start = b.front;
        b.front += n as u64;
        // Batch ids are taken under the lock so that they follow the buffer's order.
        let id = next_batch_id();
        drop(b);
        let batch = WireBatch {
            events,
            batch_timestamp: weir_core::util::now_ms() as i64,
            batch_id: id.to_string(),
        };
        Some(Cut {
            start,
            end: start + n as u64,
            id,
            bytes: prost::Message::encode_to_vec(&batch).into(),
            trace,
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
            ..
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
    /// Whether Toggle answered the last request (unknown at start: no).
    healthy: bool,
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
            healthy: false,
        }
    }

    async fn run(mut self) {
        let _guard = StopGuard(self.shared.clone());
        loop {
            if self.shared.lock().shutdown {
                self.finish().await;
                return;
            }
            if self.shared.spill.is_empty() {
                self.live_step().await;
            } else if self.direct() && matches!(self.shared.send_due(), Due::Now) {
                // Toggle answers and a live batch is due: it goes before the next file.
                if let Some(cut) = self.shared.cut(self.shared.settings.batch_size) {
                    self.send_live(cut).await;
                }
            } else {
                self.backlog_step().await;
            }
        }
    }

    /// Whether new events go straight to Toggle while spill files wait: with `recovery:
    /// direct`, once Toggle answered again.
    fn direct(&self) -> bool {
        self.shared.settings.recovery == Recovery::Direct && self.healthy
    }

    /// Spill files wait: replay the oldest (when the backoff allows). New events go to
    /// disk behind the backlog meanwhile, unless recovery is direct and Toggle answers.
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
        let send = send(&mut client, bytes, None, n, timeout, &shared);
        let Some(answer) = self.watching(!self.direct(), send).await else {
            return;
        };
        match answer {
            Ok(()) => {
                self.backoff.reset();
                self.healthy = true;
                if let Err(e) = self.shared.spill.remove(&file.path) {
                    tracing::error!(sink = %self.shared.name, "replayed spill file not deleted: {e}");
                }
                self.shared.metrics.replayed_files.inc();
                self.shared.metrics.replayed_events.inc_by(n);
                self.shared.publish_gauges(&self.shared.lock());
                tracing::debug!(sink = %self.shared.name, events = n, "replayed a spill file");
            }
            Err(status) if !transient(&status) => {
                self.healthy = true;
                self.shared.spill.quarantine(
                    &file.path,
                    &format!("Toggle refused it: {}", status.message()),
                );
                self.shared.metrics.quarantined_files.inc();
                self.shared.publish_gauges(&self.shared.lock());
            }
            Err(status) => {
                self.healthy = false;
                let pause = self.backoff.step();
                tracing::warn!(sink = %self.shared.name, code = ?status.code(), retry_ms = pause.as_millis() as u64, "Toggle unavailable, replay paused: {}", status.message());
                self.retry_at = Instant::now() + pause;
                // New events now belong behind the backlog again.
                self.shared.spill_queue().await;
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
        let send = send(
            &mut client,
            cut.bytes.clone(),
            cut.trace.as_ref(),
            n,
            timeout,
            &shared,
        );
        // Live mode never abandons its request.
        let Some(answer) = self.watching(false, send).await else {
            return;
        };
        match answer {
            Ok(()) => {
                self.backoff.reset();
                self.healthy = true;
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
                self.healthy = false;
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

/// Sends one encoded batch of `n` events with a deadline; `Ok` once Toggle answered it
/// (`success: false` is logged and counted, not resent).
async fn send(
    client: &mut ToggleClient,
    batch: bytes::Bytes,
    trace: Option<&weir_core::trace::W3c>,
    n: u64,
    timeout: Duration,
    shared: &Shared,
) -> Result<(), tonic::Status> {
    match client.send_encoded(batch, trace, timeout).await {
        Ok(answer) => {
            if !answer.success {
                shared.metrics.problem_batches.inc();
                tracing::warn!(sink = %shared.name, events = n, "Toggle received a batch with problems (not resent): {}", answer.message);
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
        let traced = weir_core::trace::enabled();
        b.queue
            .extend(mapped.into_iter().zip(events).map(|(event, e)| Queued {
                event,
                since,
                trace: traced.then(|| weir_core::trace::of_event(e)).flatten(),
            }));
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

/// The buffer's bookkeeping without a network: cutting batches by count and bytes,
/// resolving ranges out of order, failures reaching exactly the writers they concern,
/// and when the flusher must send or spill.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::spill::WhenFull;
    use weir_core::metrics::MetricsRegistry;

    fn settings() -> ToggleSettings {
        ToggleSettings {
            buffer_size: 100,
            flush_threshold: 90,
            batch_size: 10,
            batch_timeout: Duration::from_millis(200),
            max_block: Duration::from_secs(5),
            replay_timeout: Duration::from_secs(30),
            max_message_bytes: 4 << 20,
            retry_max: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(1),
            spill_max_bytes: 1 << 30,
            when_full: WhenFull::DropOldest,
            recovery: Recovery::Direct,
        }
    }

    fn shared(dir: &std::path::Path, settings: ToggleSettings) -> Arc<Shared> {
        let registry = MetricsRegistry::new();
        Arc::new(Shared {
            name: "toggle".into(),
            buffer: Mutex::new(Buffer::default()),
            changed: Condvar::new(),
            wake: Notify::new(),
            spill: SpillDir::open(dir, settings.spill_max_bytes, settings.when_full).unwrap(),
            metrics: ToggleMetrics::new(&registry).for_sink("toggle"),
            settings,
        })
    }

    /// Queues `n` events whose ids are `e<k>` padded to `pad` bytes, arrived at `since`.
    fn push(s: &Shared, n: usize, pad: usize, since: Instant) {
        let mut b = s.lock();
        for _ in 0..n {
            let k = b.next;
            b.next += 1;
            let event = WireEvent {
                event_id: format!("e{k:0>pad$}"),
                ..Default::default()
            };
            b.queue.push_back(Queued {
                event,
                since,
                trace: None,
            });
        }
    }

    fn ids(cut: &Cut) -> Vec<String> {
        let batch: WireBatch = prost::Message::decode(cut.bytes.clone()).unwrap();
        batch.events.into_iter().map(|e| e.event_id).collect()
    }

    #[test]
    fn cuts_follow_arrival_order_with_increasing_batch_ids() {
        let dir = tempfile::tempdir().unwrap();
        let s = shared(dir.path(), settings());
        assert!(s.cut(10).is_none(), "nothing queued");
        push(&s, 25, 1, Instant::now());
        let a = s.cut(10).unwrap();
        let b = s.cut(10).unwrap();
        let c = s.cut(10).unwrap();
        assert!(s.cut(10).is_none());
        assert_eq!(
            (a.start, a.end, b.start, b.end, c.start, c.end),
            (0, 10, 10, 20, 20, 25)
        );
        assert_eq!(ids(&a).first().map(String::as_str), Some("e0"));
        assert_eq!(ids(&c).last().map(String::as_str), Some("e24"));
        assert!(
            a.id < b.id && b.id < c.id,
            "UUIDv7 ids follow the buffer's order"
        );
        let batch: WireBatch = prost::Message::decode(b.bytes.clone()).unwrap();
        assert_eq!(batch.batch_id, b.id.to_string());
    }

    #[test]
    fn a_cut_stays_under_the_request_size_but_always_takes_one_event() {
        let dir = tempfile::tempdir().unwrap();
        let s = shared(dir.path(), settings_with_limit(64 + 2_500));
        push(&s, 5, 1_000, Instant::now());
        let first = s.cut(10).unwrap();
        assert_eq!(
            first.end - first.start,
            2,
            "three ~1 kB events exceed the limit"
        );
        assert!(first.bytes.len() <= 2_500);
        // One event larger than the limit still leaves (Toggle judges it), alone.
        let dir2 = tempfile::tempdir().unwrap();
        let s2 = shared(dir2.path(), settings_with_limit(100));
        push(&s2, 3, 1_000, Instant::now());
        let cut = s2.cut(10).unwrap();
        assert_eq!(cut.end - cut.start, 1);
    }

    fn settings_with_limit(bytes: usize) -> ToggleSettings {
        ToggleSettings {
            max_message_bytes: bytes,
            ..settings()
        }
    }

    #[test]
    fn ranges_resolved_out_of_order_release_writers_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = shared(dir.path(), settings());
        push(&s, 30, 1, Instant::now());
        let (a, b, c) = (s.cut(10).unwrap(), s.cut(10).unwrap(), s.cut(10).unwrap());
        assert_eq!(s.lock().held(), 30);
        // The newest range (spilled) resolves first, then the middle one: the horizon
        // waits for the oldest.
        s.resolve(c.start, c.end, None);
        s.resolve(b.start, b.end, None);
        assert_eq!(s.lock().resolved, 0);
        assert_eq!(
            s.lock().held(),
            30,
            "unresolved events still count against the buffer"
        );
        s.resolve(a.start, a.end, None);
        let buf = s.lock();
        assert_eq!(buf.resolved, 30);
        assert!(buf.resolved_ahead.is_empty());
        assert_eq!(buf.held(), 0);
        assert_eq!(s.metrics.buffer_events.get(), 0);
    }

    #[test]
    fn a_failure_is_kept_for_its_range_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = shared(dir.path(), settings());
        push(&s, 20, 1, Instant::now());
        let (a, b) = (s.cut(10).unwrap(), s.cut(10).unwrap());
        s.resolve(a.start, a.end, Some("Toggle refused the batch: bad".into()));
        s.resolve(b.start, b.end, None);
        let buf = s.lock();
        let hits = |start: u64, end: u64| {
            buf.failures
                .iter()
                .filter(|(fs, fe, _)| *fs < end && *fe > start)
                .count()
        };
        assert_eq!(hits(0, 10), 1);
        assert_eq!(hits(5, 6), 1);
        assert_eq!(hits(10, 20), 0, "the next batch's writers see success");
    }

    #[test]
    fn old_failures_are_forgotten_behind_the_horizon() {
        let dir = tempfile::tempdir().unwrap();
        let s = shared(dir.path(), settings());
        // 4 × buffer_size events past a failure, it is dropped when the next one lands.
        push(&s, 1, 1, Instant::now());
        let first = s.cut(1).unwrap();
        s.resolve(first.start, first.end, Some("old".into()));
        push(&s, 450, 1, Instant::now());
        while let Some(cut) = s.cut(10) {
            s.resolve(cut.start, cut.end, None);
        }
        push(&s, 1, 1, Instant::now());
        let last = s.cut(1).unwrap();
        s.resolve(last.start, last.end, Some("new".into()));
        let reasons: Vec<String> = s.lock().failures.iter().map(|f| f.2.to_string()).collect();
        assert_eq!(reasons, ["new"]);
    }

    #[test]
    fn sending_is_due_when_a_batch_is_full_or_lingered() {
        let dir = tempfile::tempdir().unwrap();
        let s = shared(dir.path(), settings());
        assert!(matches!(s.send_due(), Due::Idle));
        let now = Instant::now();
        push(&s, 3, 1, now);
        match s.send_due() {
            Due::At(at) => assert_eq!(at, now + Duration::from_millis(200)),
            _ => panic!("a partial batch waits for its linger"),
        }
        push(&s, 7, 1, now);
        assert!(
            matches!(s.send_due(), Due::Now),
            "a full batch goes at once"
        );
        s.cut(10).unwrap();
        push(&s, 1, 1, now - Duration::from_secs(1));
        assert!(
            matches!(s.send_due(), Due::Now),
            "a batch that lingered goes"
        );
        s.cut(10).unwrap();
        push(&s, 1, 1, Instant::now());
        s.lock().shutdown = true;
        assert!(matches!(s.send_due(), Due::Now), "shutdown flushes at once");
    }

    #[test]
    fn spilling_is_due_in_backlog_at_the_threshold_or_after_max_block() {
        let dir = tempfile::tempdir().unwrap();
        let s = shared(dir.path(), settings());
        assert!(matches!(s.spill_due(true), Due::Idle));
        let now = Instant::now();
        push(&s, 1, 1, now);
        assert!(
            matches!(s.spill_due(true), Due::Now),
            "behind a backlog: to disk at once"
        );
        match s.spill_due(false) {
            Due::At(at) => assert_eq!(at, now + Duration::from_secs(5)),
            _ => panic!("in flight: wait up to max_block"),
        }
        push(&s, 89, 1, now);
        assert!(
            matches!(s.spill_due(false), Due::Now),
            "at the flush threshold"
        );
        s.spill_queue_blocking();
        assert_eq!(s.lock().held(), 0);
        assert_eq!(
            s.spill.totals(),
            (1, s.spill.totals().1, 90),
            "one file of 90 events"
        );
        push(&s, 1, 1, now - Duration::from_secs(6));
        assert!(
            matches!(s.spill_due(false), Due::Now),
            "the oldest waited max_block"
        );
    }

    impl Shared {
        fn spill_queue_blocking(self: &Arc<Self>) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(self.spill_queue());
        }
    }
}
