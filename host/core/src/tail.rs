//! The in-process event stream behind `GET /v1/tail` and `weir tail`.
//!
//! Each reader has its own queue, bounded in bytes: a reader that stops reading while
//! lines pile up past the bound is dropped (its stream ends, and a counter says so)
//! rather than pinning memory. Closing the hub ends every stream, so open tails never
//! hold up a shutdown. A reader may be limited to one tenant: it gets only lines
//! published for that tenant.

use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The default bound of one reader's queue: 8 MiB.
pub const DEFAULT_READER_BYTES: usize = 8 << 20;

/// The most readers at once (so at most 64 × the reader bound is held in all).
pub const MAX_READERS: usize = 64;

/// The in-process stream behind `GET /v1/tail` and `weir tail`: JSON lines, dropped when
/// nobody listens, never blocking the route.
#[derive(Clone)]
pub struct TailHub {
    inner: Arc<Inner>,
}

struct Inner {
    readers: Mutex<Vec<Reader>>,
    /// Set once: no new readers, every stream ended.
    closed: AtomicBool,
    max_reader_bytes: usize,
    /// Called with the number of readers dropped for being too slow.
    on_drop: Box<dyn Fn(u64) + Send + Sync>,
}

/// The hub's side of one reader.
struct Reader {
    tx: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
    /// Only this tenant's lines; `None`: every line.
    tenant: Option<Arc<str>>,
}

/// One reader's stream of JSON lines; it ends when the hub closes or drops the reader.
pub struct TailStream {
    rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
}

impl futures_core::Stream for TailStream {
    type Item = Bytes;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Bytes>> {
        let polled = self.rx.poll_recv(cx);
        if let std::task::Poll::Ready(Some(line)) = &polled {
            self.queued.fetch_sub(line.len(), Ordering::Relaxed);
        }
        polled
    }
}

impl Default for TailHub {
    fn default() -> Self {
        Self::new(DEFAULT_READER_BYTES, |_| {})
    }
}

impl TailHub {
    /// A hub whose readers may each fall `max_reader_bytes` behind; `on_drop` counts the
    /// readers dropped for falling further.
    pub fn new(max_reader_bytes: usize, on_drop: impl Fn(u64) + Send + Sync + 'static) -> Self {
        Self {
            inner: Arc::new(Inner {
                readers: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
                max_reader_bytes: max_reader_bytes.max(1),
                on_drop: Box::new(on_drop),
            }),
        }
    }

    fn readers(&self) -> std::sync::MutexGuard<'_, Vec<Reader>> {
        self.inner.readers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new reader of every line (its stream is empty and ended at once when the hub is
    /// closed); `None` when [`MAX_READERS`] are reading already.
    pub fn subscribe(&self) -> Option<TailStream> {
        self.subscribe_to(None)
    }

    /// A new reader of the lines published for `tenant` (every line with `None`), like
    /// [`TailHub::subscribe`].
    pub fn subscribe_to(&self, tenant: Option<Arc<str>>) -> Option<TailStream> {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        if !self.inner.closed.load(Ordering::Acquire) {
            let mut readers = self.readers();
            if readers.len() >= MAX_READERS {
                return None;
            }
            readers.push(Reader {
                tx,
                queued: queued.clone(),
                tenant,
            });
        }
        Some(TailStream { rx, queued })
    }

    /// How many readers are connected.
    pub fn readers_count(&self) -> usize {
        self.readers().len()
    }

    /// Ends every reader's stream and takes no new ones (at shutdown).
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.readers().clear();
    }

    /// Sends the JSON lines `fill` writes, for `tenant` (`None`: of no known tenant), to
    /// every reader of that tenant or of all (nothing when none listens). A reader whose
    /// queue would pass its bound is dropped.
    pub fn publish(&self, tenant: Option<&str>, fill: impl FnOnce(&mut Vec<u8>)) {
        let reads = |reader: &Reader| match (&reader.tenant, tenant) {
            (None, _) => true,
            (Some(wanted), Some(t)) => **wanted == *t,
            (Some(_), None) => false,
        };
        if !self.readers().iter().any(reads) {
            return;
        }
        let mut buf = Vec::new();
        fill(&mut buf);
        let buf = Bytes::from(buf);
        let mut lines = Vec::new();
        let mut start = 0;
        for (i, b) in buf.iter().enumerate() {
            if *b == b'\n' {
                lines.push(buf.slice(start..=i));
                start = i + 1;
            }
        }
        if start < buf.len() {
            lines.push(buf.slice(start..));
        }
        let bytes: usize = lines.iter().map(Bytes::len).sum();
        let max = self.inner.max_reader_bytes;
        let mut dropped = 0u64;
        self.readers().retain(|reader| {
            if !reads(reader) {
                return !reader.tx.is_closed();
            }
            let queued = reader.queued.load(Ordering::Relaxed);
            // A reader that has read everything takes the next publish whatever its size.
            if (queued > 0 && queued.saturating_add(bytes) > max) || reader.tx.is_closed() {
                dropped += u64::from(!reader.tx.is_closed());
                return false;
            }
            reader.queued.fetch_add(bytes, Ordering::Relaxed);
            lines
                .iter()
                .all(|line| reader.tx.send(line.clone()).is_ok())
        });
        if dropped > 0 {
            (self.inner.on_drop)(dropped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    #[test]
    fn readers_are_capped() {
        let hub = TailHub::default();
        let readers: Vec<_> = (0..MAX_READERS).map(|_| hub.subscribe()).collect();
        assert!(readers.iter().all(Option::is_some));
        assert!(hub.subscribe().is_none());
    }

    #[tokio::test]
    async fn a_reader_that_falls_too_far_behind_is_dropped_and_counted() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let counter = dropped.clone();
        let hub = TailHub::new(1000, move |n| {
            counter.fetch_add(n as usize, Ordering::Relaxed);
        });
        let mut fast = hub.subscribe().expect("room");
        let slow = hub.subscribe().expect("room");
        for i in 0..20 {
            hub.publish(None, |b| {
                b.extend_from_slice(format!("{{\"n\":{i:090}}}\n").as_bytes())
            });
            // The fast reader keeps up; the slow one never reads.
            assert!(fast.next().await.is_some());
        }
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
        assert_eq!(hub.readers_count(), 1);
        // The slow reader gets what was queued before it was dropped, then the end.
        let got: Vec<Bytes> = slow.collect().await;
        assert!(got.len() < 20 && !got.is_empty(), "{}", got.len());
    }

    #[tokio::test]
    async fn closing_ends_every_stream_and_refuses_new_readers() {
        let hub = TailHub::default();
        let reader = hub.subscribe().expect("room");
        hub.publish(None, |b| b.extend_from_slice(b"{}\n{}\n"));
        hub.close();
        assert_eq!(reader.collect::<Vec<_>>().await.len(), 2);
        assert!(hub.subscribe().expect("ended").next().await.is_none());
        hub.publish(None, |_| panic!("nobody listens: nothing is written"));
    }

    #[tokio::test]
    async fn a_tenant_reader_gets_only_its_tenants_lines() {
        let hub = TailHub::default();
        let acme = hub.subscribe_to(Some(Arc::from("acme"))).expect("room");
        let all = hub.subscribe().expect("room");
        hub.publish(Some("acme"), |b| b.extend_from_slice(b"{\"t\":\"acme\"}\n"));
        hub.publish(Some("globex"), |b| {
            b.extend_from_slice(b"{\"t\":\"globex\"}\n")
        });
        hub.publish(None, |b| b.extend_from_slice(b"{\"t\":null}\n"));
        let acme_only = hub.subscribe_to(Some(Arc::from("acme"))).expect("room");
        hub.publish(Some("globex"), |_| {});
        drop(acme_only);
        hub.close();
        let acme: Vec<Bytes> = acme.collect().await;
        assert_eq!(acme, vec![Bytes::from_static(b"{\"t\":\"acme\"}\n")]);
        assert_eq!(all.collect::<Vec<_>>().await.len(), 3);
    }
}
