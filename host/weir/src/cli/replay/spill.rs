//! `weir replay --spill DIR --to URL`: a Toggle sink's spill files, oldest first, to a
//! `rodent.RodentService` endpoint.

use super::ReplayArgs;
use anyhow::{bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use weir::toggle::client::{connect_lazy, read_token, Target};
use weir::toggle::settings::{ClientTls, TokenSource};
use weir::toggle::spill::{SpillDir, SpillError, WhenFull};

/// Sends a spill directory's files to a rodent.RodentService endpoint, oldest first.
pub async fn run(args: ReplayArgs, spill_dir: PathBuf) -> Result<ExitCode> {
    let Some(to) = args.to.clone() else {
        bail!("--spill needs --to, the rodent.RodentService endpoint");
    };
    if !spill_dir.is_dir() {
        bail!("{} is not a directory", spill_dir.display());
    }
    if args.tls.ca.is_none() && (args.tls.cert.is_some() || args.domain.is_some()) {
        bail!("--cert and --domain need --ca");
    }
    let tls = args.tls.ca.clone().map(|ca| ClientTls {
        ca,
        cert: args.tls.cert.clone(),
        key: args.tls.key.clone(),
        domain: args.domain.clone(),
    });
    let token = match (&args.token_file, &args.token_env) {
        (Some(file), _) => Some(read_token(&TokenSource::File(file.clone()))?),
        (None, Some(var)) => Some(read_token(&TokenSource::Env(var.clone()))?),
        (None, None) => None,
    };
    let mut client = connect_lazy(&Target {
        url: &to,
        tls: tls.as_ref(),
        token,
        max_message_bytes: 64 << 20,
    })?;
    let spill = SpillDir::open(&spill_dir, u64::MAX, WhenFull::DropOldest)?;
    let (files, bytes, events) = spill.totals();
    if files == 0 {
        eprintln!("{}: no spill files to replay", spill_dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "replaying {files} files ({events} events, {:.1} MiB) from {} to {}",
        bytes as f64 / (1 << 20) as f64,
        spill_dir.display(),
        to
    );
    let bar = ProgressBar::new(events.max(files as u64)).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .context("progress template")?,
    );
    let started = Instant::now();
    let (mut sent_files, mut sent_events, mut quarantined, mut problems) = (0u64, 0u64, 0u64, 0u64);
    let mut failure = None;
    for path in spill.pending() {
        let (batch, n) = match spill.read_encoded(&path) {
            Ok(file) => file,
            Err(SpillError::Corrupt { reason, .. }) => {
                bar.suspend(|| eprintln!("{}: corrupt, quarantined: {reason}", path.display()));
                quarantined += 1;
                continue;
            }
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        };
        match client
            .send_encoded(batch, None, Duration::from_secs(args.timeout))
            .await
        {
            Ok(answer) => {
                if !answer.success {
                    problems += 1;
                    bar.suspend(|| {
                        eprintln!(
                            "{}: received with problems (not resent): {}",
                            path.display(),
                            answer.message
                        )
                    });
                }
                if !args.keep {
                    spill.remove(&path)?;
                }
                sent_files += 1;
                sent_events += n;
                bar.inc(n.max(1));
            }
            Err(status) => {
                failure = Some(format!(
                    "{}: {:?}: {}",
                    path.display(),
                    status.code(),
                    status.message()
                ));
                break;
            }
        }
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "replayed {sent_events} events from {sent_files} files in {secs:.2} s ({:.0} events/s); \
         {quarantined} files quarantined; {problems} files received with problems; {} files left",
        sent_events as f64 / secs.max(1e-9),
        spill.totals().0
    );
    match failure {
        Some(reason) => {
            eprintln!("stopped: {reason} (the file was kept; run again to resume)");
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}
