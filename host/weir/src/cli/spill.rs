//! `weir spill inspect FILE`: a spill file's events, as CloudEvents JSON lines.

use anyhow::{Context as _, Result};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use weir::cloudevents::json::write_json_line;
use weir::toggle::mapping::{to_cloudevent, DEFAULT_TYPE_PREFIX};

/// Spill-file commands.
#[derive(Debug, Subcommand)]
pub enum SpillCommand {
    /// Print the events of a `.pb` spill file (one `EventBatch`) as CloudEvents JSON lines.
    Inspect {
        /// The spill file.
        file: PathBuf,
    },
}

/// Runs a spill command.
pub fn run(cmd: SpillCommand) -> Result<ExitCode> {
    match cmd {
        SpillCommand::Inspect { file } => {
            let batch = weir::toggle::spill::read_file(&file)?;
            eprintln!(
                "{}: batch {} with {} events",
                file.display(),
                batch.batch_id,
                batch.events.len()
            );
            let mut out = Vec::new();
            for e in &batch.events {
                let ce = to_cloudevent(e, DEFAULT_TYPE_PREFIX)
                    .with_context(|| format!("event `{}`", e.event_id))?;
                write_json_line(&mut out, &ce);
            }
            std::io::Write::write_all(&mut std::io::stdout().lock(), &out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
