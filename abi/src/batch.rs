//! Batches of events: written by the host, read by the guest.

use crate::{
    len32, patch_count, put_header, put_opt_str32, put_str16, put_u16, put_u32, Cursor,
    DecodeError, BATCH_MAGIC,
};

/// The CloudEvents context attributes every event has or may have, borrowed.
///
/// `specversion` is not carried: weir only moves CloudEvents 1.0 events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CoreAttrs<'a> {
    /// `id` (required, non-empty).
    pub id: &'a str,
    /// `source` (required, non-empty URI-reference).
    pub source: &'a str,
    /// `type` (required, non-empty).
    pub ty: &'a str,
    /// `subject`, when set.
    pub subject: Option<&'a str>,
    /// `time` (RFC 3339), when set.
    pub time: Option<&'a str>,
    /// `datacontenttype`, when set.
    pub datacontenttype: Option<&'a str>,
    /// `dataschema`, when set.
    pub dataschema: Option<&'a str>,
}

impl<'a> CoreAttrs<'a> {
    /// The value of a core attribute by its CloudEvents name; `None` for extensions.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        Some(match name {
            "id" => Some(self.id),
            "source" => Some(self.source),
            "type" => Some(self.ty),
            "subject" => self.subject,
            "time" => self.time,
            "datacontenttype" => self.datacontenttype,
            "dataschema" => self.dataschema,
            "specversion" => Some("1.0"),
            _ => return None,
        })
    }
}

/// Appends one event record to `out`.
pub(crate) fn write_event<'e>(
    out: &mut Vec<u8>,
    core: &CoreAttrs<'_>,
    extensions: impl IntoIterator<Item = (&'e str, &'e str)>,
    data: Option<&[u8]>,
) {
    put_opt_str32(out, Some(core.id));
    put_opt_str32(out, Some(core.source));
    put_opt_str32(out, Some(core.ty));
    put_opt_str32(out, core.subject);
    put_opt_str32(out, core.time);
    put_opt_str32(out, core.datacontenttype);
    put_opt_str32(out, core.dataschema);
    let count_at = out.len();
    put_u16(out, 0);
    let mut count: u16 = 0;
    for (name, value) in extensions {
        if count == u16::MAX {
            break;
        }
        put_str16(out, name);
        put_u32(out, len32(value.len()));
        out.extend_from_slice(value.as_bytes());
        count += 1;
    }
    out[count_at..count_at + 2].copy_from_slice(&count.to_le_bytes());
    match data {
        Some(data) => {
            out.push(1);
            put_u32(out, len32(data.len()));
            out.extend_from_slice(data);
        }
        None => out.push(0),
    }
}

/// Reads one event record at the cursor.
pub(crate) fn read_event<'a>(cur: &mut Cursor<'a>) -> Result<EventView<'a>, DecodeError> {
    let at = cur.pos;
    let required = |v: Option<&'a str>| v.ok_or(DecodeError::MissingRequired(at));
    let id = required(cur.opt_str32()?)?;
    let source = required(cur.opt_str32()?)?;
    let ty = required(cur.opt_str32()?)?;
    let core = CoreAttrs {
        id,
        source,
        ty,
        subject: cur.opt_str32()?,
        time: cur.opt_str32()?,
        datacontenttype: cur.opt_str32()?,
        dataschema: cur.opt_str32()?,
    };
    let ext_count = cur.u16()?;
    let ext_start = cur.pos;
    for _ in 0..ext_count {
        cur.str16()?;
        cur.str32()?;
    }
    let ext_raw = &cur.buf[ext_start..cur.pos];
    let data = match cur.u8()? {
        0 => None,
        1 => Some(cur.bytes32()?),
        tag => {
            return Err(DecodeError::UnknownTag {
                tag,
                at: cur.pos - 1,
            })
        }
    };
    Ok(EventView {
        core,
        ext_raw,
        ext_count,
        data,
    })
}

/// Builds a packed batch. Reuse one writer (and its buffer) across batches.
#[derive(Debug)]
pub struct BatchWriter {
    buf: Vec<u8>,
    count: u32,
}

impl Default for BatchWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchWriter {
    /// An empty batch.
    pub fn new() -> Self {
        Self::with_buffer(Vec::new())
    }

    /// An empty batch written into `buf` (its contents are discarded, its capacity kept).
    pub fn with_buffer(mut buf: Vec<u8>) -> Self {
        buf.clear();
        put_header(&mut buf, BATCH_MAGIC, 0);
        Self { buf, count: 0 }
    }

    /// Starts a new batch in the same buffer.
    pub fn clear(&mut self) {
        self.buf.truncate(0);
        put_header(&mut self.buf, BATCH_MAGIC, 0);
        self.count = 0;
    }

    /// Appends an event. Text must be valid UTF-8 (it is `&str`), so a guest may read it
    /// without validating again.
    pub fn push<'e>(
        &mut self,
        core: &CoreAttrs<'_>,
        extensions: impl IntoIterator<Item = (&'e str, &'e str)>,
        data: Option<&[u8]>,
    ) {
        write_event(&mut self.buf, core, extensions, data);
        self.count += 1;
    }

    /// How many events the batch holds.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the batch holds no events.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished buffer, valid until the next `push` or `clear`.
    pub fn as_bytes(&mut self) -> &[u8] {
        patch_count(&mut self.buf, self.count);
        &self.buf
    }

    /// The finished buffer, taken out of the writer.
    pub fn finish(mut self) -> Vec<u8> {
        patch_count(&mut self.buf, self.count);
        self.buf
    }
}

/// Reads a packed batch event by event, borrowing from the buffer.
#[derive(Clone)]
pub struct BatchReader<'a> {
    cur: Cursor<'a>,
    total: u32,
    remaining: u32,
}

impl<'a> BatchReader<'a> {
    /// Reads a batch from an untrusted producer, validating every text field.
    pub fn new(buf: &'a [u8]) -> Result<Self, DecodeError> {
        Self::open(buf, false)
    }

    /// Reads a batch written by [`BatchWriter`] without validating UTF-8 again.
    ///
    /// # Safety
    /// Every text field in `buf` must be valid UTF-8. [`BatchWriter`] guarantees that (it
    /// only takes `&str`), so a guest may call this on the buffer the weir host passed it.
    #[allow(unsafe_code)]
    pub unsafe fn new_trusted(buf: &'a [u8]) -> Result<Self, DecodeError> {
        Self::open(buf, true)
    }

    fn open(buf: &'a [u8], trusted_utf8: bool) -> Result<Self, DecodeError> {
        let mut cur = Cursor {
            buf,
            pos: 0,
            trusted_utf8,
        };
        let total = cur.header(BATCH_MAGIC)?;
        Ok(Self {
            cur,
            total,
            remaining: total,
        })
    }

    /// The number of events the batch declares.
    pub fn len(&self) -> usize {
        self.total as usize
    }

    /// Whether the batch declares no events.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl<'a> Iterator for BatchReader<'a> {
    type Item = Result<EventView<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            let left = self.cur.remaining();
            return (left > 0).then(|| {
                self.cur.pos = self.cur.buf.len();
                Err(DecodeError::Trailing(left))
            });
        }
        self.remaining -= 1;
        let event = read_event(&mut self.cur);
        if event.is_err() {
            // Nothing after a malformed record can be located: stop here.
            self.remaining = 0;
            self.cur.pos = self.cur.buf.len();
        }
        Some(event)
    }
}

/// One event of a packed buffer, every field borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct EventView<'a> {
    /// The context attributes.
    pub core: CoreAttrs<'a>,
    ext_raw: &'a [u8],
    ext_count: u16,
    /// The event's data, when it has any.
    pub data: Option<&'a [u8]>,
}

impl<'a> EventView<'a> {
    /// The extension attributes in the order they were written.
    pub fn extensions(&self) -> ExtensionIter<'a> {
        ExtensionIter {
            cur: Cursor {
                buf: self.ext_raw,
                pos: 0,
                // Validated when the event was read.
                trusted_utf8: true,
            },
            remaining: self.ext_count,
        }
    }

    /// The value of an extension attribute.
    pub fn extension(&self, name: &str) -> Option<&'a str> {
        self.extensions().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The value of any attribute, core or extension, by its CloudEvents name.
    pub fn attribute(&self, name: &str) -> Option<&'a str> {
        match self.core.get(name) {
            Some(core) => core,
            None => self.extension(name),
        }
    }

    /// How many extension attributes the event has.
    pub fn extension_count(&self) -> usize {
        self.ext_count as usize
    }
}

/// Iterates `(name, value)` extension attributes of an [`EventView`].
#[derive(Clone)]
pub struct ExtensionIter<'a> {
    cur: Cursor<'a>,
    remaining: u16,
}

impl<'a> Iterator for ExtensionIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // The region was fully parsed when the event was read, so these reads cannot fail.
        let name = self.cur.str16().ok()?;
        let value = self.cur.str32().ok()?;
        Some((name, value))
    }
}

impl ExactSizeIterator for ExtensionIter<'_> {}

impl std::fmt::Debug for ExtensionIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: usize) -> (String, Vec<(String, String)>, Vec<u8>) {
        (
            format!("id-{i}"),
            vec![
                ("tenant".into(), format!("t{i}")),
                ("severity".into(), "warning".into()),
            ],
            format!("{{\"n\":{i}}}").into_bytes(),
        )
    }

    #[test]
    fn round_trips_a_batch() {
        let mut w = BatchWriter::new();
        let items: Vec<_> = (0..3).map(sample).collect();
        for (id, exts, data) in &items {
            let core = CoreAttrs {
                id,
                source: "/s",
                ty: "t",
                subject: Some("sub"),
                datacontenttype: Some("application/json"),
                ..Default::default()
            };
            w.push(
                &core,
                exts.iter().map(|(a, b)| (a.as_str(), b.as_str())),
                Some(data),
            );
        }
        let buf = w.finish();
        let r = BatchReader::new(&buf).expect("header");
        assert_eq!(r.len(), 3);
        let events: Vec<_> = r.collect::<Result<_, _>>().expect("decode");
        assert_eq!(events.len(), 3);
        assert_eq!(events[1].core.id, "id-1");
        assert_eq!(events[1].core.subject, Some("sub"));
        assert_eq!(events[1].core.time, None);
        assert_eq!(events[1].extension("tenant"), Some("t1"));
        assert_eq!(events[1].attribute("type"), Some("t"));
        assert_eq!(events[2].data, Some(&b"{\"n\":2}"[..]));
        assert_eq!(events[0].extensions().count(), 2);
    }

    #[test]
    fn rejects_truncation_bad_magic_and_invalid_utf8() {
        let mut w = BatchWriter::new();
        w.push(
            &CoreAttrs {
                id: "a",
                source: "b",
                ty: "c",
                ..Default::default()
            },
            [],
            None,
        );
        let buf = w.finish();
        for cut in 0..buf.len() {
            let result: Result<Vec<_>, _> = BatchReader::new(&buf[..cut]).and_then(|r| r.collect());
            assert!(result.is_err(), "a batch cut at {cut} must not decode");
        }
        let mut bad = buf.clone();
        bad[0] = b'X';
        assert_eq!(BatchReader::new(&bad).err(), Some(DecodeError::BadMagic));
        let mut bad = buf.clone();
        let id_at = 12 + 4;
        bad[id_at] = 0xff;
        let result: Result<Vec<_>, _> = BatchReader::new(&bad).and_then(|r| r.collect());
        assert!(matches!(result, Err(DecodeError::InvalidUtf8(_))));
        let mut long = buf.clone();
        long.push(0);
        let result: Result<Vec<_>, _> = BatchReader::new(&long).and_then(|r| r.collect());
        assert_eq!(result.err(), Some(DecodeError::Trailing(1)));
    }
}
