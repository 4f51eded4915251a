//! `weir send`: post CloudEvents to a router.

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use weir::cloudevents::http::{binary_headers, BATCH_JSON, STRUCTURED_JSON};
use weir::cloudevents::json::Structured;
use weir::event::Event;

/// How to put events on the wire.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// One request per event, attributes in ce- headers.
    Binary,
    /// One request per event, JSON format.
    Structured,
    /// One request per batch of events.
    Batch,
}

/// Arguments of `weir send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The router's base URL.
    #[arg(long, env = "WEIR_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A file of structured CloudEvents, one JSON object per line ("-" for stdin).
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// HTTP binding mode.
    #[arg(long, value_enum, default_value = "batch")]
    mode: Mode,
    /// Events per request in batch mode.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Event type (when not sending a file).
    #[arg(long = "type", short = 't')]
    ty: Option<String>,
    /// Event source.
    #[arg(long, default_value = "weir-cli")]
    source: String,
    /// Event id (default: a fresh UUIDv7).
    #[arg(long)]
    id: Option<String>,
    /// Subject.
    #[arg(long)]
    subject: Option<String>,
    /// JSON data.
    #[arg(long)]
    data: Option<String>,
    /// Extension attributes, `name=value` (repeatable).
    #[arg(long = "ext", short = 'e')]
    extensions: Vec<String>,
}

fn events_from(args: &SendArgs) -> Result<Vec<Event>> {
    if let Some(path) = &args.file {
        return super::read_events(path);
    }
    let Some(ty) = &args.ty else {
        bail!("give --file, or at least --type to build one event from flags");
    };
    let mut event = Event::new(
        args.id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        args.source.clone(),
        ty.clone(),
    );
    event.subject = args.subject.clone();
    for ext in &args.extensions {
        let Some((name, value)) = ext.split_once('=') else {
            bail!("--ext {ext}: expected name=value");
        };
        event.set_extension(name, value);
    }
    if let Some(data) = &args.data {
        serde_json::from_str::<serde_json::Value>(data).context("--data must be JSON")?;
        event.datacontenttype = Some("application/json".into());
        event.data = Some(bytes::Bytes::from(data.clone().into_bytes()));
    }
    event.validate()?;
    Ok(vec![event])
}

/// Sends the events and prints the router's answers.
pub async fn run(args: SendArgs) -> Result<ExitCode> {
    let events = events_from(&args)?;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/events", args.url.trim_end_matches('/'));
    let mut requests: Vec<reqwest::RequestBuilder> = Vec::new();
    match args.mode {
        Mode::Batch => {
            for chunk in events.chunks(args.batch_size.max(1)) {
                let body = serde_json::to_vec(&chunk.iter().map(Structured).collect::<Vec<_>>())?;
                requests.push(
                    client
                        .post(&url)
                        .header("content-type", BATCH_JSON)
                        .body(body),
                );
            }
        }
        Mode::Structured => {
            for e in &events {
                let body = serde_json::to_vec(&Structured(e))?;
                requests.push(
                    client
                        .post(&url)
                        .header("content-type", STRUCTURED_JSON)
                        .body(body),
                );
            }
        }
        Mode::Binary => {
            for e in &events {
                let mut req = client.post(&url);
                for (k, v) in binary_headers(e) {
                    req = req.header(k, v);
                }
                requests.push(req.body(e.data.clone().unwrap_or_default()));
            }
        }
    }
    let mut failed = 0;
    for req in requests {
        let response = req
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        println!("{} {}", status.as_u16(), body.trim());
        if !status.is_success() {
            failed += 1;
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
