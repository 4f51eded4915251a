//! `weir replay --dlq FILE | --dlq-topic TOPIC | --topic TOPIC`: resends events through a
//! route of a running router (`POST /v1/replay/{route}`, admin token), in batches, with a
//! progress bar and a summary. Every resent event carries the extension `weirreplay`
//! naming where it came from. Dead letters that never were events (Kafka records that
//! were not CloudEvents) cannot be replayed and are counted apart.

use anyhow::{bail, Context as _, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
#[cfg(feature = "kafka")]
use rdkafka::consumer::{BaseConsumer, Consumer};
#[cfg(feature = "kafka")]
use rdkafka::{Message, Offset, TopicPartitionList};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use weir::cloudevents::http::BATCH_JSON;
use weir::cloudevents::json::{parse_event, Structured};
use weir::cloudevents::protobuf::from_proto;
use weir::dead_letter::{read_delimited, ReadError};
use weir::event::Event;
#[cfg(feature = "kafka")]
use weir::kafka::binding::{decode, RecordView};
#[cfg(feature = "kafka")]
use weir::kafka::settings::ClusterConfig;

/// The event-replay half of `weir replay`'s arguments.
#[derive(Debug, Args)]
pub struct EventReplayArgs {
    /// A dead-letter file, as a `file` sink used as `dead_letter` writes it: JSON lines or
    /// length-delimited protobuf (`weir.v1.DeadLetter`), told apart by its first bytes.
    #[arg(long, value_name = "FILE")]
    dlq: Option<PathBuf>,
    /// A dead-letter topic (as a `kafka` sink used as `dead_letter` writes), read from the
    /// start to its end.
    #[arg(long, value_name = "TOPIC")]
    dlq_topic: Option<String>,
    /// A topic to re-read, from --from-offset (default: the start) to --to-offset
    /// (default: its end), keeping records within --from-time and --to-time.
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// Only this partition of the topic (default: all).
    #[arg(long)]
    partition: Option<i32>,
    /// First offset to read (inclusive), in every partition read.
    #[arg(long, value_name = "N")]
    from_offset: Option<i64>,
    /// Last offset to read (inclusive), in every partition read.
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
    /// Keep records with a timestamp at or after this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    from_time: Option<String>,
    /// Keep records with a timestamp at or before this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    to_time: Option<String>,
    /// The route to send the events through (required for these modes).
    #[arg(long)]
    route: Option<String>,
    /// Kafka brokers, `host:port,...` (or take `kafka.cluster` from --config).
    #[arg(long, value_name = "LIST")]
    brokers: Option<String>,
    /// The router's configuration file, for its `kafka.cluster` (TLS, SASL).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// With a topic: the read ends when no record has come for this many seconds (the
    /// end of the log, or of --to-offset, whichever comes first).
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
    /// Events per request to the router.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Admin bearer token of the router.
    #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// File holding the admin token, when --admin-token is not given (default as for
    /// `weir filter`: WEIR_DATA_DIR, the file a local router recorded, ./weir-data).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
}

/// What was read: events to resend, and inputs that cannot be.
struct Input {
    events: Vec<Event>,
    not_events: u64,
    label: String,
    /// The file ended inside a dead letter (a write cut short): where, for the summary.
    torn: Option<String>,
}

impl Input {
    fn new(label: String) -> Self {
        Self {
            events: Vec::new(),
            not_events: 0,
            label,
            torn: None,
        }
    }
}

fn tagged(mut event: Event, origin: &str) -> Event {
    event.set_extension("weirreplay", origin);
    event
}

/// The part of a dead letter a replay needs: its event, kept as raw JSON.
#[derive(serde::Deserialize)]
struct Letter<'a> {
    #[serde(borrow, default)]
    event: Option<&'a serde_json::value::RawValue>,
}

fn read_dlq_file(path: &PathBuf) -> Result<Input> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut input = Input::new(path.display().to_string());
    let origin = format!("file:{}", path.display());
    let bytes = bytes::Bytes::from(bytes);
    // Protobuf when the first message is a whole dead letter naming its route and stage
    // (which weir always writes); JSON lines otherwise.
    let protobuf = matches!(
        read_delimited(bytes.clone()).next(),
        Some(Ok(letter)) if !letter.route.is_empty() && !letter.stage.is_empty()
    );
    if protobuf {
        read_dlq_protobuf(path, bytes, &origin, &mut input)?;
    } else {
        let text = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&bytes);
        read_dlq_jsonl(path, text, &origin, &mut input)?;
    }
    Ok(input)
}

fn read_dlq_jsonl(path: &Path, bytes: &[u8], origin: &str, input: &mut Input) -> Result<()> {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        // Cut inside a character by an interrupted write: the whole lines before it.
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("{}: neither JSON lines nor protobuf", path.display()))
        }
    };
    let complete = text.ends_with('\n') && text.len() == bytes.len();
    let lines: Vec<&str> = text.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let letter: Letter<'_> = match serde_json::from_str(line) {
            Ok(letter) => letter,
            // The last line, cut short by an interrupted write.
            Err(_) if n + 1 == lines.len() && !complete => {
                input.torn = Some(format!("line {}", n + 1));
                break;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("{}:{}: not a JSON dead letter", path.display(), n + 1)
                })
            }
        };
        match letter.event {
            Some(event) => {
                let event = parse_event(event.get().as_bytes()).with_context(|| {
                    format!("{}:{}: the dead letter's event", path.display(), n + 1)
                })?;
                input.events.push(tagged(event, origin));
            }
            None => input.not_events += 1,
        }
    }
    if input.torn.is_none() && text.len() < bytes.len() {
        input.torn = Some(format!("byte {}", text.len()));
    }
    Ok(())
}

fn read_dlq_protobuf(
    path: &Path,
    bytes: bytes::Bytes,
    origin: &str,
    input: &mut Input,
) -> Result<()> {
    for (n, letter) in read_delimited(bytes).enumerate() {
        let letter = match letter {
            Ok(letter) => letter,
            Err(ReadError::Torn { offset, .. }) => {
                input.torn = Some(format!("byte {offset}"));
                break;
            }
            Err(e) => return Err(e).with_context(|| format!("{}", path.display())),
        };
        match letter.event {
            Some(event) => {
                let event = from_proto(event)
                    .with_context(|| format!("{}: dead letter {n}'s event", path.display()))?;
                input.events.push(tagged(event, origin));
            }
            None => input.not_events += 1,
        }
    }
    Ok(())
}

#[cfg(feature = "kafka")]
fn cluster(args: &EventReplayArgs) -> Result<ClusterConfig> {
    if let Some(brokers) = &args.brokers {
        return Ok(ClusterConfig {
            brokers: brokers.split(',').map(str::to_owned).collect(),
            security: Default::default(),
            client: Default::default(),
        });
    }
    if let Some(path) = &args.config {
        let config = weir::config::Config::load(path)?;
        if let Some(c) = config.kafka.cluster {
            return Ok(c);
        }
        bail!("{} has no kafka.cluster", path.display());
    }
    bail!("Kafka modes need --brokers or --config")
}

#[cfg(feature = "kafka")]
fn parse_time(t: &Option<String>) -> Result<Option<i64>> {
    t.as_ref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| d.timestamp_millis())
                .with_context(|| format!("`{t}` is not an RFC 3339 time"))
        })
        .transpose()
}

/// Without the Kafka connector there is no topic to read.
#[cfg(not(feature = "kafka"))]
fn read_topic(_: &EventReplayArgs, _: &str, _: bool) -> Result<Input> {
    bail!("--dlq-topic and --topic need weir built with the `kafka` feature")
}

/// Reads a topic range. Timestamps filter while reading (brokers' time-to-offset lookup
/// is not relied on: the test broker answers it wrongly).
#[cfg(feature = "kafka")]
fn read_topic(args: &EventReplayArgs, topic: &str, dlq: bool) -> Result<Input> {
    let mut props = cluster(args)?.client_config()?;
    props
        .set("group.id", "weir-replay")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = props.create().context("cannot create a Kafka consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("cannot read metadata of `{topic}`"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .filter(|p| args.partition.is_none_or(|want| want == *p))
        .collect();
    if partitions.is_empty() {
        bail!("topic `{topic}` has no such partitions (does it exist?)");
    }
    let (from_ms, to_ms) = (parse_time(&args.from_time)?, parse_time(&args.to_time)?);
    let mut tpl = TopicPartitionList::new();
    // Per partition: first offset, and the offset past the last one (None: to the end of
    // the log, known when no record comes for a while — the test broker's high
    // watermark is not the log's end, so it is not relied on).
    let mut open: Vec<(i32, i64, Option<i64>)> = Vec::new();
    for &p in &partitions {
        let start = args.from_offset.unwrap_or(0).max(0);
        let end = args.to_offset.map(|o| o + 1);
        if end.is_some_and(|e| e <= start) {
            continue;
        }
        // From the log's start, ask for the beginning rather than offset 0 (an offset
        // below the log's start would be reset to its end).
        let from = if start == 0 {
            Offset::Beginning
        } else {
            Offset::Offset(start)
        };
        tpl.add_partition_offset(topic, p, from)?;
        open.push((p, start, end));
    }
    let origin = if dlq {
        format!("kafka-dlq:{topic}")
    } else {
        format!("kafka:{topic}")
    };
    let mut input = Input::new(format!("topic {topic}"));
    if open.is_empty() {
        return Ok(input);
    }
    consumer.assign(&tpl)?;
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} reading {pos} records ({per_sec})")
            .context("progress template")?,
    );
    let quiet = Duration::from_secs(args.idle_secs.max(1));
    let mut idle = Instant::now();
    while !open.is_empty() && idle.elapsed() < quiet {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                idle = Instant::now();
                bar.inc(1);
                let p = m.partition();
                let Some(&(_, start, end)) = open.iter().find(|(q, _, _)| *q == p) else {
                    continue;
                };
                if m.offset() < start {
                    continue;
                }
                if end.is_some_and(|e| m.offset() >= e) {
                    open.retain(|(q, _, _)| *q != p);
                    continue;
                }
                if end.is_some_and(|e| m.offset() + 1 >= e) {
                    open.retain(|(q, _, _)| *q != p);
                }
                let ts = m.timestamp().to_millis();
                let in_time = ts.is_none_or(|ts| {
                    from_ms.is_none_or(|f| ts >= f) && to_ms.is_none_or(|t| ts <= t)
                });
                if !in_time {
                    continue;
                }
                match decode(&RecordView {
                    headers: m.headers(),
                    key: m.key(),
                    payload: m.payload(),
                }) {
                    Ok(event) => input.events.push(tagged(event, &origin)),
                    Err(_) => input.not_events += 1,
                }
            }
            Some(Err(e)) => bail!("reading `{topic}`: {e}"),
            None => {}
        }
    }
    bar.finish_and_clear();
    Ok(input)
}

/// Runs an event replay.
/// `client` reaches the router (its CA and client certificate when given); with a client
/// certificate (`with_cert`), no admin token is needed.
pub async fn run(
    args: &EventReplayArgs,
    to: Option<&str>,
    client: reqwest::Client,
    with_cert: bool,
) -> Result<ExitCode> {
    let Some(route) = &args.route else {
        bail!("--route is needed: the route to send the events through");
    };
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let base = to.unwrap_or("http://127.0.0.1:8080").trim_end_matches('/');
    let token_file = super::filter::token_file(args.admin_token_file.as_deref(), base);
    let token = match super::filter::admin_token(args.admin_token.as_deref(), &token_file) {
        Ok(token) => Some(token),
        Err(_) if with_cert => None,
        Err(e) => return Err(e),
    };
    let input = match (&args.dlq, &args.dlq_topic, &args.topic) {
        (Some(file), _, _) => read_dlq_file(file)?,
        (None, Some(topic), _) => {
            let (a, t) = (args, topic.clone());
            tokio::task::block_in_place(|| read_topic(a, &t, true))?
        }
        (None, None, Some(topic)) => {
            let (a, t) = (args, topic.clone());
            tokio::task::block_in_place(|| read_topic(a, &t, false))?
        }
        _ => bail!("one of --spill, --dlq, --dlq-topic or --topic is needed"),
    };
    if let Some(at) = &input.torn {
        eprintln!(
            "warning: {} ends inside a dead letter at {at} (a write cut short, e.g. by a crash); that one is not replayed",
            input.label
        );
    }
    let total = input.events.len() as u64;
    eprintln!(
        "replaying {total} events from {} through route `{route}` of {base}{}",
        input.label,
        if input.not_events > 0 {
            format!(
                " ({} dead letters are not CloudEvents and cannot be replayed)",
                input.not_events
            )
        } else {
            String::new()
        }
    );
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .context("progress template")?,
    );
    let url = format!("{base}/v1/replay/{route}");
    let started = Instant::now();
    let mut counts = [0u64; 5];
    let names = ["delivered", "routed", "dropped", "dead_lettered", "skipped"];
    let mut sent = 0u64;
    for chunk in input.events.chunks(args.batch_size) {
        let body: Vec<Structured<'_>> = chunk.iter().map(Structured).collect();
        let body = bytes::Bytes::from(serde_json::to_vec(&body)?);
        let mut attempt = 0;
        let answer = loop {
            let mut request = client.post(&url);
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            let response = request
                .header("content-type", BATCH_JSON)
                .body(body.clone())
                .send()
                .await;
            match response {
                Ok(r) if r.status().is_success() => {
                    break r.json::<serde_json::Value>().await.unwrap_or_default()
                }
                Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                    attempt += 1;
                    if attempt > 5 {
                        bar.finish_and_clear();
                        bail!(
                            "stopped after {sent} of {total} events: the router answered {}",
                            r.status()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    bar.finish_and_clear();
                    bail!("stopped after {sent} of {total} events: {status} {text}");
                }
                Err(e) => {
                    bar.finish_and_clear();
                    bail!("stopped after {sent} of {total} events: cannot reach {url}: {e}");
                }
            }
        };
        for (i, name) in names.iter().enumerate() {
            counts[i] += answer.get(*name).and_then(|v| v.as_u64()).unwrap_or(0);
        }
        sent += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "replayed {sent} events in {secs:.2} s ({:.0} events/s): {} delivered, {} routed, {} dropped, {} dead-lettered, {} skipped by the route's condition; {} not replayable",
        sent as f64 / secs.max(1e-9),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4],
        input.not_events
    );
    Ok(ExitCode::SUCCESS)
}
