//! The in-process event stream behind `GET /v1/tail` and `weir tail`.

use bytes::Bytes;
use tokio::sync::broadcast;

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

    /// Sends the JSON lines `fill` writes to every reader (nothing when nobody listens).
    pub fn publish(&self, fill: impl FnOnce(&mut Vec<u8>)) {
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
