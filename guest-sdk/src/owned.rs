//! An owned event: what a filter builds to replace or fan out, and what tests feed in.

use weir_abi::CoreAttrs;

/// A CloudEvent owned by the filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedEvent {
    /// `id`.
    pub id: String,
    /// `source`.
    pub source: String,
    /// `type`.
    pub ty: String,
    /// `subject`.
    pub subject: Option<String>,
    /// `time`.
    pub time: Option<String>,
    /// `datacontenttype`.
    pub datacontenttype: Option<String>,
    /// `dataschema`.
    pub dataschema: Option<String>,
    /// Extension attributes, in order.
    pub extensions: Vec<(String, String)>,
    /// Data bytes.
    pub data: Option<Vec<u8>>,
}

impl OwnedEvent {
    /// An event with the three required attributes.
    pub fn new(id: impl Into<String>, source: impl Into<String>, ty: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            source: source.into(),
            ty: ty.into(),
            ..Self::default()
        }
    }

    /// Sets an attribute (core or extension) and returns the event.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.set(name, value.into());
        self
    }

    /// Sets JSON data (and `datacontenttype: application/json`) and returns the event.
    pub fn with_json(mut self, value: &serde_json::Value) -> Self {
        self.data = Some(value.to_string().into_bytes());
        self.datacontenttype = Some("application/json".into());
        self
    }

    /// Sets an attribute, core or extension, by its CloudEvents name.
    pub fn set(&mut self, name: &str, value: String) {
        match name {
            "id" => self.id = value,
            "source" => self.source = value,
            "type" => self.ty = value,
            "subject" => self.subject = Some(value),
            "time" => self.time = Some(value),
            "datacontenttype" => self.datacontenttype = Some(value),
            "dataschema" => self.dataschema = Some(value),
            _ => match self.extensions.iter_mut().find(|(k, _)| k == name) {
                Some((_, v)) => *v = value,
                None => self.extensions.push((name.to_owned(), value)),
            },
        }
    }

    /// Removes an optional attribute or an extension (required ones stay).
    pub fn remove(&mut self, name: &str) {
        match name {
            "subject" => self.subject = None,
            "time" => self.time = None,
            "datacontenttype" => self.datacontenttype = None,
            "dataschema" => self.dataschema = None,
            "id" | "source" | "type" => {}
            _ => self.extensions.retain(|(k, _)| k != name),
        }
    }

    /// An extension attribute's value.
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.extensions
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The data parsed as a JSON value.
    pub fn json_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(self.data.as_deref().unwrap_or(b"null"))
    }

    /// The core attributes, borrowed for the packed writers.
    pub fn core(&self) -> CoreAttrs<'_> {
        CoreAttrs {
            id: &self.id,
            source: &self.source,
            ty: &self.ty,
            subject: self.subject.as_deref(),
            time: self.time.as_deref(),
            datacontenttype: self.datacontenttype.as_deref(),
            dataschema: self.dataschema.as_deref(),
        }
    }

    /// Extension attributes as borrowed pairs.
    pub fn extension_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.extensions
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}
