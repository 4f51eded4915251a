//! The packed layout in which weir moves a batch of events into a guest filter and the
//! guest's verdicts back out (layout version 1).
//!
//! The WIT contract (`wit/filter.wit`) passes a batch as one `list<u8>` and receives one
//! `list<u8>`: one copy into guest memory per batch instead of one allocation per string
//! per event. The guest reads events as borrowed slices of that buffer and answers with a
//! verdict byte per event plus, when it changes something, a small patch that the host
//! applies to its own copy of the event. Both sides depend on this crate so the layout
//! cannot drift.
//!
//! All integers are little-endian. A batch:
//!
//! ```text
//! "WEIB" version:u8 0 0 0 count:u32  event*count
//! event  := id source type subject time datacontenttype dataschema   (each: len:u32 bytes;
//!           len = u32::MAX means absent)  ext_count:u16 (name_len:u16 name value_len:u32 value)*
//!           has_data:u8 [data_len:u32 data]
//! ```
//!
//! The verdicts:
//!
//! ```text
//! "WEIV" version:u8 0 0 0 count:u32  verdict*count
//! verdict := 0 patch | 1 reason | 2 event | 3 n:u32 event*n | 4 sink:str16 patch | 5 reason
//!            (keep, drop, replace, fan-out, route, error)
//! patch   := op_count:u16 op*   op := 1 name:str16 value:str32 | 2 name:str16
//!                                    | 3 data:bytes32 | 4            (set, remove, set data, remove data)
//! ```

mod batch;
mod verdict;

pub use batch::{BatchReader, BatchWriter, CoreAttrs, EventView, ExtensionIter};
pub use verdict::{PatchOp, PatchReader, VerdictReader, VerdictView, VerdictWriter};

/// The layout version written into every buffer; a reader refuses any other.
pub const LAYOUT_VERSION: u8 = 1;

const BATCH_MAGIC: &[u8; 4] = b"WEIB";
const VERDICT_MAGIC: &[u8; 4] = b"WEIV";
const ABSENT: u32 = u32::MAX;

/// Why a packed buffer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer ended in the middle of a field.
    #[error("packed buffer truncated at byte {0}")]
    Truncated(usize),
    /// The buffer does not start with the expected magic bytes.
    #[error("packed buffer has the wrong magic bytes")]
    BadMagic,
    /// The buffer was written with a layout version this reader does not know.
    #[error("packed layout version {0} is not supported (expected {LAYOUT_VERSION})")]
    BadVersion(u8),
    /// A text field is not valid UTF-8.
    #[error("field at byte {0} is not valid UTF-8")]
    InvalidUtf8(usize),
    /// A tag byte has no meaning in this layout version.
    #[error("unknown tag {tag} at byte {at}")]
    UnknownTag {
        /// The tag value read.
        tag: u8,
        /// Where it was read.
        at: usize,
    },
    /// A required attribute (id, source or type) is marked absent.
    #[error("required attribute missing at byte {0}")]
    MissingRequired(usize),
    /// Bytes were left over after the declared number of items.
    #[error("{0} trailing bytes after the last item")]
    Trailing(usize),
}

/// A cursor over a packed buffer; every read checks bounds.
#[derive(Clone)]
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Skip UTF-8 validation: set only when the producer has already validated every field.
    trusted_utf8: bool,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or(DecodeError::Truncated(self.pos))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn str_of(&mut self, len: usize) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        let bytes = self.take(len)?;
        if self.trusted_utf8 {
            // SAFETY: `trusted_utf8` is only set through `BatchReader::new_trusted`, whose
            // caller guarantees that every text field was validated as UTF-8 when written.
            #[allow(unsafe_code)]
            Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
        } else {
            std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8(at))
        }
    }

    fn str16(&mut self) -> Result<&'a str, DecodeError> {
        let len = self.u16()? as usize;
        self.str_of(len)
    }

    fn str32(&mut self) -> Result<&'a str, DecodeError> {
        let len = self.u32()? as usize;
        self.str_of(len)
    }

    fn opt_str32(&mut self) -> Result<Option<&'a str>, DecodeError> {
        let len = self.u32()?;
        if len == ABSENT {
            return Ok(None);
        }
        self.str_of(len as usize).map(Some)
    }

    fn bytes32(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn header(&mut self, magic: &[u8; 4]) -> Result<u32, DecodeError> {
        if self.take(4)? != magic {
            return Err(DecodeError::BadMagic);
        }
        let version = self.u8()?;
        if version != LAYOUT_VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        self.take(3)?;
        self.u32()
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Lengths are bounded by the writers' callers (events are capped far below 4 GiB and
/// attribute names below 64 KiB); saturating keeps a bug from writing a wrong length.
fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(ABSENT - 1)
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    put_u16(out, bytes.len() as u16);
    out.extend_from_slice(bytes);
}

fn put_bytes32(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, len32(b.len()));
    out.extend_from_slice(b);
}

fn put_opt_str32(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_bytes32(out, s.as_bytes()),
        None => put_u32(out, ABSENT),
    }
}

fn put_header(out: &mut Vec<u8>, magic: &[u8; 4], count: u32) {
    out.extend_from_slice(magic);
    out.extend_from_slice(&[LAYOUT_VERSION, 0, 0, 0]);
    put_u32(out, count);
}

const COUNT_OFFSET: usize = 8;

fn patch_count(buf: &mut [u8], count: u32) {
    buf[COUNT_OFFSET..COUNT_OFFSET + 4].copy_from_slice(&count.to_le_bytes());
}
