//! `weir replay`: resends what was left aside.
//!
//! `--spill DIR --to URL` resends the spill files a Toggle sink left on disk to Toggle (or
//! to any `rodent.RodentService` endpoint, such as another weir's gRPC source), oldest first,
//! deleting each file once every event in it was acknowledged. `--dlq FILE`,
//! `--dlq-topic TOPIC` and `--topic TOPIC` resend dead-lettered or consumed events through
//! a route of a running router (see [`super::replay_events`]).

#[cfg(feature = "toggle")]
mod spill;

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `weir replay`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["spill", "dlq", "dlq_topic", "topic"])))]
pub struct ReplayArgs {
    /// A Toggle spill directory (`<data dir>/spill/<sink>`): its `.pb` files are sent
    /// oldest first to the rodent.RodentService endpoint --to; corrupt ones are moved to its
    /// `quarantine/`.
    #[arg(long, value_name = "DIR")]
    spill: Option<PathBuf>,
    /// With --spill: the rodent.RodentService endpoint, `http://host:port` or `https://host:port`.
    /// Otherwise: the router's base URL (default http://127.0.0.1:8080).
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    #[command(flatten)]
    events: super::replay_events::EventReplayArgs,
    #[command(flatten)]
    tls: super::filter::ClientTlsArgs,
    /// The name to verify the endpoint's certificate against (default: the URL's host).
    #[arg(long)]
    domain: Option<String>,
    /// A file holding a bearer token.
    #[arg(long, value_name = "FILE", conflicts_with = "token_env")]
    token_file: Option<PathBuf>,
    /// An environment variable holding a bearer token.
    #[arg(long, value_name = "VAR")]
    token_env: Option<String>,
    /// Keep the files after they were acknowledged.
    #[arg(long)]
    keep: bool,
    /// Deadline of one request, seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

/// Runs the replay.
pub async fn run(args: ReplayArgs) -> Result<ExitCode> {
    let Some(spill_dir) = args.spill.clone() else {
        return super::replay_events::run(
            &args.events,
            args.to.as_deref(),
            args.tls.client()?,
            args.tls.cert.is_some(),
        )
        .await;
    };
    #[cfg(feature = "toggle")]
    return spill::run(args, spill_dir).await;
    #[cfg(not(feature = "toggle"))]
    {
        let _ = spill_dir;
        anyhow::bail!("--spill needs weir built with the `toggle` feature")
    }
}
