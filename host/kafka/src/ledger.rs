//! The offset ledger of one consumer: which batches are in flight for which partitions,
//! and which offsets may be stored for commit.
//!
//! A partition's offset moves only past batches that are finished, in the order they
//! were read (per partition: a batch finishing early waits for the older ones of the
//! same partition, not for other partitions). A batch abandoned at shutdown stops its
//! partitions' offsets where they are. The consumer's rebalance callback waits here for
//! the batches of the partitions it gives up, so they are committed before another
//! consumer takes them over — the normal path repeats nothing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A partition: topic and number.
pub type Partition = (Arc<str>, i32);

/// What a batch holds of one partition: the offset to commit once it is done (its last
/// record's offset + 1) and how many records that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The next offset to read after the batch.
    pub next: i64,
    /// Records of the partition in the batch.
    pub records: u64,
}

/// Offsets that may be stored: per partition, the offset and the records it moves past.
pub type Ready = Vec<(Partition, Span)>;

/// How a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Done,
    Abandoned,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    states: HashMap<u64, State>,
    /// Per partition: the batches holding its records, oldest first, with what each
    /// holds of it.
    queues: HashMap<Partition, VecDeque<(u64, Span)>>,
    /// Partitions given up since a batch began reading (see [`Ledger::revoked_since`]).
    revoked: HashSet<Partition>,
    revocations: u64,
    in_flight: usize,
    /// The last offset handed out by [`Ledger::ready`] per partition.
    stored: HashMap<Partition, i64>,
}

/// The ledger, shared by the consumer's task, its batches and its rebalance callback.
#[derive(Default)]
pub struct Ledger {
    inner: Mutex<Inner>,
    changed: Condvar,
    /// Wakes the consumer's task when a batch ends.
    pub wake: tokio::sync::Notify,
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a batch handed on, with the next offset of each of its partitions.
    pub fn begin(&self, spans: &HashMap<Partition, Span>) -> u64 {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.states.insert(id, State::Pending);
        inner.in_flight += 1;
        for (partition, span) in spans {
            inner
                .queues
                .entry(partition.clone())
                .or_default()
                .push_back((id, *span));
        }
        id
    }

    /// Records how a batch ended (`done`: everything taken care of; else abandoned).
    pub fn finish(&self, id: u64, done: bool) {
        let mut inner = self.lock();
        if let Some(state) = inner.states.get_mut(&id) {
            *state = if done { State::Done } else { State::Abandoned };
            inner.in_flight = inner.in_flight.saturating_sub(1);
        }
        drop(inner);
        self.changed.notify_all();
        self.wake.notify_one();
    }

    /// Batches not yet ended.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// The offsets that may be stored now: per partition, past every finished batch at
    /// the front of its queue. Those batches leave the ledger.
    pub fn ready(&self) -> Ready {
        let mut inner = self.lock();
        let Inner {
            states,
            queues,
            stored,
            ..
        } = &mut *inner;
        let mut out = Vec::new();
        for (partition, queue) in queues.iter_mut() {
            let mut moved: Option<Span> = None;
            while let Some(&(id, span)) = queue.front() {
                if states.get(&id) != Some(&State::Done) {
                    break;
                }
                queue.pop_front();
                let records = moved.map_or(0, |m| m.records) + span.records;
                moved = Some(Span {
                    next: span.next,
                    records,
                });
            }
            if let Some(span) = moved {
                stored.insert(partition.clone(), span.next);
                out.push((partition.clone(), span));
            }
        }
        queues.retain(|_, q| !q.is_empty());
        let live: HashSet<u64> = queues.values().flatten().map(|(id, _)| *id).collect();
        states.retain(|id, s| *s == State::Pending || live.contains(id));
        out
    }

    /// The offsets last handed out for these partitions (what a commit should hold).
    pub fn stored(&self, partitions: &HashSet<Partition>) -> Vec<(Partition, i64)> {
        let inner = self.lock();
        partitions
            .iter()
            .filter_map(|p| inner.stored.get(p).map(|o| (p.clone(), *o)))
            .collect()
    }

    /// Waits (at most `limit`) until no batch holding records of `partitions` is still
    /// running; answers whether that happened in time.
    pub fn wait_for(&self, partitions: &HashSet<Partition>, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut inner = self.lock();
        loop {
            let busy = partitions.iter().any(|p| {
                inner.queues.get(p).is_some_and(|q| {
                    q.iter()
                        .any(|(id, _)| inner.states.get(id) == Some(&State::Pending))
                })
            });
            if !busy {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            inner = self
                .changed
                .wait_timeout(inner, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Forgets partitions given up: their batches still running will not move their
    /// offsets, and records of them read before the revocation are dropped by
    /// [`Ledger::revoked_since`].
    pub fn revoke(&self, partitions: &HashSet<Partition>) {
        let mut inner = self.lock();
        for p in partitions {
            inner.queues.remove(p);
            inner.stored.remove(p);
            inner.revoked.insert(p.clone());
        }
        inner.revocations += 1;
    }

    /// Partitions (re)assigned: their records are this consumer's again.
    pub fn assign(&self, partitions: &HashSet<Partition>) {
        let mut inner = self.lock();
        for p in partitions {
            inner.revoked.remove(p);
        }
    }

    /// A mark to hand to [`Ledger::revoked_since`] when a batch starts reading.
    pub fn mark(&self) -> u64 {
        self.lock().revocations
    }

    /// Whether `partition` was given up since `mark` (its records read meanwhile belong
    /// to its new owner).
    pub fn revoked_since(&self, mark: u64, partition: &Partition) -> bool {
        let inner = self.lock();
        inner.revocations != mark && inner.revoked.contains(partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> Partition {
        (Arc::from("t"), n)
    }

    fn offsets(pairs: &[(i32, i64)]) -> HashMap<Partition, Span> {
        pairs
            .iter()
            .map(|(n, o)| {
                (
                    p(*n),
                    Span {
                        next: *o,
                        records: 2,
                    },
                )
            })
            .collect()
    }

    fn next(ready: Ready) -> Vec<(Partition, i64)> {
        let mut out: Vec<(Partition, i64)> = ready.into_iter().map(|(p, s)| (p, s.next)).collect();
        out.sort();
        out
    }

    #[test]
    fn offsets_move_in_read_order_per_partition() {
        let l = Ledger::default();
        let a = l.begin(&offsets(&[(0, 10), (1, 5)]));
        let b = l.begin(&offsets(&[(0, 20)]));
        let c = l.begin(&offsets(&[(1, 9)]));
        l.finish(b, true);
        assert!(l.ready().is_empty(), "b waits for a on partition 0");
        l.finish(c, true);
        assert!(l.ready().is_empty(), "c waits for a on partition 1");
        l.finish(a, true);
        let mut ready = l.ready();
        ready.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            ready.iter().map(|(_, s)| s.records).collect::<Vec<_>>(),
            [4, 4],
            "two batches of two records passed on each partition"
        );
        assert_eq!(next(ready), [(p(0), 20), (p(1), 9)]);
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn an_abandoned_batch_stops_its_partitions() {
        let l = Ledger::default();
        let a = l.begin(&offsets(&[(0, 10)]));
        let b = l.begin(&offsets(&[(0, 20), (1, 3)]));
        l.finish(a, false);
        l.finish(b, true);
        assert_eq!(
            next(l.ready()),
            [(p(1), 3)],
            "partition 0 stays before the abandoned batch"
        );
    }

    #[test]
    fn revocation_waits_for_the_partitions_batches_only() {
        let l = Arc::new(Ledger::default());
        let a = l.begin(&offsets(&[(0, 10)]));
        let _b = l.begin(&offsets(&[(1, 10)]));
        let gone: HashSet<Partition> = [p(0)].into();
        assert!(
            !l.wait_for(&gone, Duration::from_millis(20)),
            "a still runs"
        );
        let l2 = l.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            l2.finish(a, true);
        });
        assert!(l.wait_for(&gone, Duration::from_secs(5)));
        t.join().expect("thread");
        assert_eq!(next(l.ready()), [(p(0), 10)]);
        let mark = l.mark();
        l.revoke(&gone);
        assert!(l.revoked_since(mark, &p(0)));
        assert!(!l.revoked_since(mark, &p(1)));
        assert!(
            !l.revoked_since(l.mark(), &p(0)),
            "no revocation since the new mark"
        );
        l.assign(&gone);
        assert!(!l.revoked_since(mark, &p(0)), "assigned again");
    }
}
