//! The sinks every router has, whatever connectors it was built with: `file`, `tail` and
//! `null`.

mod file;
mod tail;

pub use file::{FileFormat, FileSink, FileSinkConfig};
pub use tail::{NullSink, NullSinkConfig, TailSink, TailSinkConfig};
