//! A problem in one connector's configuration, before the loader locates it in the file.

/// A problem in one connector's configuration: the field below the connector's own
/// (empty for the connector as a whole) and what is wrong. The configuration loader adds
/// the file, the line and the path down to the connector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigProblem {
    /// The field, relative to the connector's configuration (`cluster`, `tls.ca`, ...).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigProblem {
    /// A problem with the whole connector configuration.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            field: String::new(),
            message: message.into(),
        }
    }

    /// A problem with one field.
    pub fn at(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
