//! The event a filter sees: every field borrowed from the batch buffer, no copies.

use crate::OwnedEvent;
use weir_abi::EventView;

/// One CloudEvent of the batch being processed.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    view: EventView<'a>,
}

impl<'a> Event<'a> {
    pub(crate) fn from_view(view: EventView<'a>) -> Self {
        Self { view }
    }

    /// `id`.
    pub fn id(&self) -> &'a str {
        self.view.core.id
    }

    /// `source`.
    pub fn source(&self) -> &'a str {
        self.view.core.source
    }

    /// `type`.
    pub fn ty(&self) -> &'a str {
        self.view.core.ty
    }

    /// `subject`.
    pub fn subject(&self) -> Option<&'a str> {
        self.view.core.subject
    }

    /// `time` (RFC 3339 text).
    pub fn time(&self) -> Option<&'a str> {
        self.view.core.time
    }

    /// `datacontenttype`.
    pub fn datacontenttype(&self) -> Option<&'a str> {
        self.view.core.datacontenttype
    }

    /// `dataschema`.
    pub fn dataschema(&self) -> Option<&'a str> {
        self.view.core.dataschema
    }

    /// An extension attribute's value.
    pub fn extension(&self, name: &str) -> Option<&'a str> {
        self.view.extension(name)
    }

    /// All extension attributes, in order.
    pub fn extensions(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.view.extensions()
    }

    /// Any attribute, core or extension, by its CloudEvents name.
    pub fn attribute(&self, name: &str) -> Option<&'a str> {
        self.view.attribute(name)
    }

    /// The data bytes.
    pub fn data(&self) -> Option<&'a [u8]> {
        self.view.data
    }

    /// Whether the data is JSON according to `datacontenttype` (absent counts as JSON).
    pub fn is_json(&self) -> bool {
        match self.datacontenttype() {
            None => true,
            Some(ct) => {
                let media = ct.split(';').next().unwrap_or("").trim();
                media.ends_with("/json") || media.ends_with("+json")
            }
        }
    }

    /// The data parsed as JSON into `T`.
    pub fn json<T: serde::Deserialize<'a>>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self.data().unwrap_or(b"null"))
    }

    /// The data parsed as a JSON value.
    pub fn json_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        self.json()
    }

    /// A copy of the event that the filter can change and return.
    pub fn to_owned_event(&self) -> OwnedEvent {
        let core = &self.view.core;
        OwnedEvent {
            id: core.id.into(),
            source: core.source.into(),
            ty: core.ty.into(),
            subject: core.subject.map(Into::into),
            time: core.time.map(Into::into),
            datacontenttype: core.datacontenttype.map(Into::into),
            dataschema: core.dataschema.map(Into::into),
            extensions: self
                .extensions()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            data: self.data().map(<[u8]>::to_vec),
        }
    }
}
