//! Verdicts: written by the guest, read (untrusted) by the host.

use crate::batch::{read_event, write_event, CoreAttrs, EventView};
use crate::{
    patch_count, put_bytes32, put_header, put_str16, put_u16, put_u32, Cursor, DecodeError,
    VERDICT_MAGIC,
};

const TAG_KEEP: u8 = 0;
const TAG_DROP: u8 = 1;
const TAG_REPLACE: u8 = 2;
const TAG_FAN_OUT: u8 = 3;
const TAG_ROUTE: u8 = 4;
const TAG_ERROR: u8 = 5;

const OP_SET: u8 = 1;
const OP_REMOVE: u8 = 2;
const OP_SET_DATA: u8 = 3;
const OP_REMOVE_DATA: u8 = 4;

/// One change to an event's attributes or data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOp<'a> {
    /// Set an attribute (core or extension) to a value.
    Set {
        /// The attribute name.
        name: &'a str,
        /// The new value.
        value: &'a str,
    },
    /// Remove an optional attribute or an extension.
    Remove {
        /// The attribute name.
        name: &'a str,
    },
    /// Replace the data.
    SetData(&'a [u8]),
    /// Remove the data.
    RemoveData,
}

fn write_patch(out: &mut Vec<u8>, patch: &[PatchOp<'_>]) {
    let n = patch.len().min(u16::MAX as usize);
    put_u16(out, n as u16);
    for op in &patch[..n] {
        match op {
            PatchOp::Set { name, value } => {
                out.push(OP_SET);
                put_str16(out, name);
                put_bytes32(out, value.as_bytes());
            }
            PatchOp::Remove { name } => {
                out.push(OP_REMOVE);
                put_str16(out, name);
            }
            PatchOp::SetData(data) => {
                out.push(OP_SET_DATA);
                put_bytes32(out, data);
            }
            PatchOp::RemoveData => out.push(OP_REMOVE_DATA),
        }
    }
}

fn read_op<'a>(cur: &mut Cursor<'a>) -> Result<PatchOp<'a>, DecodeError> {
    let at = cur.pos;
    Ok(match cur.u8()? {
        OP_SET => PatchOp::Set {
            name: cur.str16()?,
            value: cur.str32()?,
        },
        OP_REMOVE => PatchOp::Remove { name: cur.str16()? },
        OP_SET_DATA => PatchOp::SetData(cur.bytes32()?),
        OP_REMOVE_DATA => PatchOp::RemoveData,
        tag => return Err(DecodeError::UnknownTag { tag, at }),
    })
}

/// Builds the verdict buffer of one batch: exactly one verdict per input event, in order.
#[derive(Debug)]
pub struct VerdictWriter {
    buf: Vec<u8>,
    count: u32,
}

impl VerdictWriter {
    /// An empty verdict buffer with room for about `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(16));
        put_header(&mut buf, VERDICT_MAGIC, 0);
        Self { buf, count: 0 }
    }

    /// Keep the event, applying `patch` (empty: unchanged).
    pub fn keep(&mut self, patch: &[PatchOp<'_>]) {
        self.buf.push(TAG_KEEP);
        write_patch(&mut self.buf, patch);
        self.count += 1;
    }

    /// Drop the event, saying why.
    pub fn drop_event(&mut self, reason: &str) {
        self.buf.push(TAG_DROP);
        put_bytes32(&mut self.buf, reason.as_bytes());
        self.count += 1;
    }

    /// Replace the event with another one.
    pub fn replace<'e>(
        &mut self,
        core: &CoreAttrs<'_>,
        extensions: impl IntoIterator<Item = (&'e str, &'e str)>,
        data: Option<&[u8]>,
    ) {
        self.buf.push(TAG_REPLACE);
        write_event(&mut self.buf, core, extensions, data);
        self.count += 1;
    }

    /// Replace the event with `n` events; exactly `n` calls of [`Self::fan_out_event`]
    /// must follow before the next verdict.
    pub fn begin_fan_out(&mut self, n: u32) {
        self.buf.push(TAG_FAN_OUT);
        put_u32(&mut self.buf, n);
        self.count += 1;
    }

    /// One event of the fan-out begun by [`Self::begin_fan_out`].
    pub fn fan_out_event<'e>(
        &mut self,
        core: &CoreAttrs<'_>,
        extensions: impl IntoIterator<Item = (&'e str, &'e str)>,
        data: Option<&[u8]>,
    ) {
        write_event(&mut self.buf, core, extensions, data);
    }

    /// Send the event (with `patch` applied) to the named sink instead of the route's sinks.
    pub fn route(&mut self, sink: &str, patch: &[PatchOp<'_>]) {
        self.buf.push(TAG_ROUTE);
        put_str16(&mut self.buf, sink);
        write_patch(&mut self.buf, patch);
        self.count += 1;
    }

    /// The filter could not process this event (e.g. its data did not parse); the host
    /// applies the route's failure policy to it.
    pub fn error(&mut self, reason: &str) {
        self.buf.push(TAG_ERROR);
        put_bytes32(&mut self.buf, reason.as_bytes());
        self.count += 1;
    }

    /// How many verdicts were written.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no verdict was written.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished buffer.
    pub fn finish(mut self) -> Vec<u8> {
        patch_count(&mut self.buf, self.count);
        self.buf
    }
}

/// The validated patch of a keep or route verdict.
#[derive(Clone)]
pub struct PatchReader<'a> {
    cur: Cursor<'a>,
    remaining: u16,
}

impl<'a> PatchReader<'a> {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    fn read(cur: &mut Cursor<'a>) -> Result<Self, DecodeError> {
        let n = cur.u16()?;
        let start = cur.pos;
        for _ in 0..n {
            read_op(cur)?;
        }
        Ok(Self {
            cur: Cursor {
                buf: &cur.buf[start..cur.pos],
                pos: 0,
                trusted_utf8: true,
            },
            remaining: n,
        })
    }
}

impl<'a> Iterator for PatchReader<'a> {
    type Item = PatchOp<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // Validated in `read`, so this cannot fail.
        read_op(&mut self.cur).ok()
    }
}

impl std::fmt::Debug for PatchReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

/// One decoded verdict.
#[derive(Debug, Clone)]
pub enum VerdictView<'a> {
    /// Keep the event with the patch applied.
    Keep(PatchReader<'a>),
    /// Drop the event for the reason given.
    Drop(&'a str),
    /// Replace the event.
    Replace(EventView<'a>),
    /// Replace the event with these events (possibly none).
    FanOut(Vec<EventView<'a>>),
    /// Deliver the patched event to the named sink only.
    Route {
        /// The sink's name.
        sink: &'a str,
        /// Changes to apply first.
        patch: PatchReader<'a>,
    },
    /// The filter failed on this event.
    Error(&'a str),
}

/// Reads a verdict buffer from an untrusted guest, validating everything.
pub struct VerdictReader<'a> {
    cur: Cursor<'a>,
    total: u32,
    remaining: u32,
}

impl<'a> VerdictReader<'a> {
    /// Opens a verdict buffer.
    pub fn new(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut cur = Cursor {
            buf,
            pos: 0,
            trusted_utf8: false,
        };
        let total = cur.header(VERDICT_MAGIC)?;
        Ok(Self {
            cur,
            total,
            remaining: total,
        })
    }

    /// The number of verdicts the buffer declares.
    pub fn len(&self) -> usize {
        self.total as usize
    }

    /// Whether the buffer declares no verdicts.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    fn read_one(&mut self) -> Result<VerdictView<'a>, DecodeError> {
        let cur = &mut self.cur;
        let at = cur.pos;
        Ok(match cur.u8()? {
            TAG_KEEP => VerdictView::Keep(PatchReader::read(cur)?),
            TAG_DROP => VerdictView::Drop(cur.str32()?),
            TAG_REPLACE => VerdictView::Replace(read_event(cur)?),
            TAG_FAN_OUT => {
                let n = cur.u32()?;
                // Each record is at least 30 bytes: refuse counts the buffer cannot hold
                // before allocating for them.
                if n as usize > cur.remaining() / 30 {
                    return Err(DecodeError::Truncated(cur.pos));
                }
                let mut events = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    events.push(read_event(cur)?);
                }
                VerdictView::FanOut(events)
            }
            TAG_ROUTE => VerdictView::Route {
                sink: cur.str16()?,
                patch: PatchReader::read(cur)?,
            },
            TAG_ERROR => VerdictView::Error(cur.str32()?),
            tag => return Err(DecodeError::UnknownTag { tag, at }),
        })
    }
}

impl<'a> Iterator for VerdictReader<'a> {
    type Item = Result<VerdictView<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            let left = self.cur.remaining();
            return (left > 0).then(|| {
                self.cur.pos = self.cur.buf.len();
                Err(DecodeError::Trailing(left))
            });
        }
        self.remaining -= 1;
        let verdict = self.read_one();
        if verdict.is_err() {
            self.remaining = 0;
            self.cur.pos = self.cur.buf.len();
        }
        Some(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_verdict() {
        let mut w = VerdictWriter::with_capacity(64);
        w.keep(&[]);
        w.keep(&[
            PatchOp::Set {
                name: "subject",
                value: "x",
            },
            PatchOp::Remove { name: "tenant" },
            PatchOp::SetData(b"{}"),
            PatchOp::RemoveData,
        ]);
        w.drop_event("too quiet");
        let core = CoreAttrs {
            id: "n",
            source: "s",
            ty: "t",
            ..Default::default()
        };
        w.replace(&core, [("a", "b")], Some(b"d"));
        w.begin_fan_out(2);
        w.fan_out_event(&core, [], None);
        w.fan_out_event(&core, [("k", "v")], None);
        w.route(
            "alerts",
            &[PatchOp::Set {
                name: "x",
                value: "y",
            }],
        );
        w.error("bad json");
        let buf = w.finish();
        let r = VerdictReader::new(&buf).expect("header");
        assert_eq!(r.len(), 7);
        let v: Vec<_> = r.collect::<Result<_, _>>().expect("decode");
        assert!(matches!(&v[0], VerdictView::Keep(p) if p.is_empty()));
        match &v[1] {
            VerdictView::Keep(p) => assert_eq!(p.clone().count(), 4),
            other => panic!("{other:?}"),
        }
        assert!(matches!(v[2], VerdictView::Drop("too quiet")));
        assert!(matches!(&v[3], VerdictView::Replace(e) if e.extension("a") == Some("b")));
        assert!(matches!(&v[4], VerdictView::FanOut(e) if e.len() == 2));
        assert!(matches!(&v[5], VerdictView::Route { sink: "alerts", .. }));
        assert!(matches!(v[6], VerdictView::Error("bad json")));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut w = VerdictWriter::with_capacity(16);
        w.begin_fan_out(u32::MAX);
        let buf = w.finish();
        let result: Result<Vec<_>, _> = VerdictReader::new(&buf).and_then(|r| r.collect());
        assert!(result.is_err());
        let mut w = VerdictWriter::with_capacity(16);
        w.keep(&[]);
        let mut buf = w.finish();
        buf[12] = 99;
        let result: Result<Vec<_>, _> = VerdictReader::new(&buf).and_then(|r| r.collect());
        assert!(matches!(
            result,
            Err(DecodeError::UnknownTag { tag: 99, .. })
        ));
    }
}
