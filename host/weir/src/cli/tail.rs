//! `weir tail`: print events as they leave the router.

use anyhow::{Context as _, Result};
use clap::Args;
use futures_util::StreamExt;
use std::io::Write;
use std::process::ExitCode;

/// Arguments of `weir tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The router's base URL.
    #[arg(long, env = "WEIR_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Stop after this many events.
    #[arg(long, short = 'n')]
    count: Option<u64>,
}

/// Streams `GET /v1/tail` to stdout, one JSON event per line.
pub async fn run(args: TailArgs) -> Result<ExitCode> {
    let url = format!("{}/v1/tail", args.url.trim_end_matches('/'));
    let response = reqwest::get(&url)
        .await
        .with_context(|| format!("cannot reach {url}"))?
        .error_for_status()?;
    let mut stream = response.bytes_stream();
    let mut seen = 0u64;
    let mut pending = Vec::new();
    let stdout = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        pending.extend_from_slice(&chunk.context("tail stream broke")?);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let mut out = stdout.lock();
            out.write_all(&line)?;
            out.flush()?;
            seen += 1;
            if args.count.is_some_and(|n| seen >= n) {
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
