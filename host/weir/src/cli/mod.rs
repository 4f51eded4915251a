//! Command-line interface (`anyhow` lives here, at the binary's edge).

mod bench;
mod filter;
mod replay;
mod replay_events;
mod sdk;
mod send;
#[cfg(feature = "toggle")]
mod spill;
mod tail;
mod tenant;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use weir::config::Config;

/// weir — a WebAssembly-extensible event router.
///
/// A native host moves CloudEvents between sources and sinks; sandboxed WebAssembly
/// filters decide what happens to each event (keep, drop, rewrite, fan out, route).
#[derive(Debug, Parser)]
#[command(name = "weir", version, propagate_version = true)]
pub struct Cli {
    /// Log filter (e.g. `info`, `weir=debug`); also read from WEIR_LOG.
    #[arg(long, global = true, env = "WEIR_LOG", default_value = "info")]
    log: String,
    /// Write logs as JSON lines: one object per line with `timestamp`, `level`, `target`
    /// and `fields` (the message and the event's fields).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the router. Without --config: HTTP on 127.0.0.1:8080 (ingest at POST /v1/events,
    /// GET /v1/tail, /healthz, /readyz, /metrics), data in ./weir-data, and the example
    /// filters (scope-inject, severity >= info, redact) on the default route, writing to
    /// ./weir-data/events.jsonl and the tail stream.
    Serve(ServeArgs),
    /// Create, build and test filters.
    #[command(subcommand)]
    Filter(filter::FilterCommand),
    /// Set a tenant's limits and filter chains on a running router.
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// Inspect Toggle spill files.
    #[cfg(feature = "toggle")]
    #[command(subcommand)]
    Spill(spill::SpillCommand),
    /// Resend events left aside, with progress and a summary: `--spill DIR` replays a
    /// Toggle sink's spill files to a rodent.RodentService endpoint; `--dlq FILE`, `--dlq-topic T`
    /// and `--topic T` (an offset or time range) resend events through a router's route.
    Replay(Box<replay::ReplayArgs>),
    /// Send CloudEvents to a router (from a JSON-lines file or from flags).
    Send(send::SendArgs),
    /// Unpack the guest SDK this binary carries (weir-guest, weir-abi and the WIT world)
    /// into DIR, for filters kept outside the folder `weir filter new` makes.
    Sdk {
        /// Where to unpack it.
        dir: std::path::PathBuf,
    },
    /// Print events as they leave the router's `tail` sinks.
    Tail(tail::TailArgs),
    /// Load-test HTTP ingest → filters → file sink in one process on loopback (bounded:
    /// stops after --events) and print events/s, latency percentiles and peak RSS.
    Bench(bench::BenchArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// YAML configuration file (see examples/). Fields can be overridden with
    /// WEIR__<FIELD>__<SUBFIELD>=value environment variables.
    #[arg(long, short, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, overriding the configuration.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Data directory, overriding the configuration (the CLI's other commands find the
    /// generated admin token through the same WEIR_DATA_DIR).
    #[arg(long, env = "WEIR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where the example filter components are, for the embedded defaults.
    #[arg(long, env = "WEIR_FILTERS_DIR")]
    filters_dir: Option<PathBuf>,
    /// Feature gates, `Name=true|false,...`: `EventsProxy=true` forwards every Events API
    /// request to the provider over mTLS instead of storing events here.
    #[arg(long, value_name = "GATES")]
    feature_gates: Option<String>,
    /// A kubeconfig naming a SubjectAccessReview webhook that authorizes the Events API
    /// requests no `events_api.authorization.rules` allow, as kube-apiserver's flag of the
    /// same name (sets `events_api.authorization.webhook.kubeconfig`).
    #[arg(long, value_name = "KUBECONFIG")]
    authorization_webhook_config_file: Option<PathBuf>,
    #[command(flatten)]
    provider: ProviderArgs,
}

/// The Events API provider for proxy mode (names as in the Activity proxy they replace);
/// each overrides `events_api.provider` in the configuration.
#[derive(Debug, Args)]
struct ProviderArgs {
    /// Provider base URL (https://...).
    #[arg(long)]
    events_provider_url: Option<String>,
    /// CA bundle (PEM) the provider's certificate must chain to.
    #[arg(long)]
    events_provider_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) presented to the provider.
    #[arg(long)]
    events_provider_client_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long)]
    events_provider_client_key: Option<PathBuf>,
    /// Seconds a request may take, retries included [default: 30].
    #[arg(long)]
    events_provider_timeout: Option<u64>,
    /// Retries of transient failures within that time [default: 3].
    #[arg(long)]
    events_provider_retries: Option<u32>,
    /// Caller extra attributes forwarded as X-Remote-Extra-* (repeatable) [default: the
    /// iam.miloapis.com parent-type, parent-name and parent-api-group].
    #[arg(long)]
    events_forward_extras: Vec<String>,
}

impl ProviderArgs {
    /// Applies the flags to the configuration's provider settings.
    fn apply(self, config: &mut Config) -> Result<()> {
        let given = self.events_provider_url.is_some()
            || self.events_provider_ca_file.is_some()
            || self.events_provider_client_cert.is_some()
            || self.events_provider_client_key.is_some()
            || self.events_provider_timeout.is_some()
            || self.events_provider_retries.is_some()
            || !self.events_forward_extras.is_empty();
        if !given {
            return Ok(());
        }
        self.apply_provider(config)
    }

    #[cfg(not(feature = "k8s"))]
    fn apply_provider(self, _: &mut Config) -> Result<()> {
        anyhow::bail!("the --events-provider-* flags need weir built with the `k8s` feature")
    }

    #[cfg(feature = "k8s")]
    fn apply_provider(self, config: &mut Config) -> Result<()> {
        let provider = match config.events_api.provider.take() {
            Some(p) => p,
            None => {
                let missing = |flag: &str| {
                    anyhow::anyhow!(
                        "--{flag} is required when the configuration has no events_api.provider"
                    )
                };
                weir::k8s::settings::ProviderConfig {
                    url: self
                        .events_provider_url
                        .clone()
                        .ok_or_else(|| missing("events-provider-url"))?,
                    ca_file: self
                        .events_provider_ca_file
                        .clone()
                        .ok_or_else(|| missing("events-provider-ca-file"))?,
                    client_cert: self
                        .events_provider_client_cert
                        .clone()
                        .ok_or_else(|| missing("events-provider-client-cert"))?,
                    client_key: self
                        .events_provider_client_key
                        .clone()
                        .ok_or_else(|| missing("events-provider-client-key"))?,
                    timeout_seconds: 30,
                    retries: 3,
                    forward_extras: weir::k8s::settings::default_forward_extras(),
                    api: Default::default(),
                }
            }
        };
        let mut p = provider;
        if let Some(v) = self.events_provider_url {
            p.url = v;
        }
        if let Some(v) = self.events_provider_ca_file {
            p.ca_file = v;
        }
        if let Some(v) = self.events_provider_client_cert {
            p.client_cert = v;
        }
        if let Some(v) = self.events_provider_client_key {
            p.client_key = v;
        }
        if let Some(v) = self.events_provider_timeout {
            p.timeout_seconds = v;
        }
        if let Some(v) = self.events_provider_retries {
            p.retries = v;
        }
        if !self.events_forward_extras.is_empty() {
            p.forward_extras = self.events_forward_extras;
        }
        config.events_api.provider = Some(p);
        Ok(())
    }
}

#[cfg(not(feature = "k8s"))]
fn set_authorization_webhook(_: &mut Config, _: PathBuf) -> Result<()> {
    anyhow::bail!("--authorization-webhook-config-file needs weir built with the `k8s` feature")
}

/// `--authorization-webhook-config-file`: the webhook's kubeconfig, other settings as
/// configured or defaulted.
#[cfg(feature = "k8s")]
fn set_authorization_webhook(config: &mut Config, kubeconfig: PathBuf) -> Result<()> {
    let authz = config
        .events_api
        .authorization
        .get_or_insert_with(Default::default);
    match &mut authz.webhook {
        Some(webhook) => webhook.kubeconfig = kubeconfig,
        None => authz.webhook = Some(weir::k8s::settings::WebhookConfig::new(kubeconfig)),
    }
    Ok(())
}

/// weir's OpenTelemetry layer, exporting the spans of target `weir_otel`.
#[cfg(feature = "otel")]
type OtelLayer = tracing_opentelemetry::OpenTelemetryLayer<
    tracing_subscriber::Registry,
    opentelemetry_sdk::trace::SdkTracer,
>;
/// Without the `otel` feature there is no such layer.
#[cfg(not(feature = "otel"))]
type OtelLayer = tracing_subscriber::layer::Identity;

/// The log subscriber: `tracing` output on stderr, colours only when stderr is a terminal
/// (a log file or collector gets plain text), and weir's spans (target `weir_otel`) to
/// `otel` only, never to the log.
fn subscriber(
    log: &str,
    json: bool,
    otel: Option<OtelLayer>,
) -> impl tracing::Subscriber + Send + Sync {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_new(log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let filter = match format!("{}=off", weir::trace::TARGET).parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let otel = otel.with_filter(
        tracing_subscriber::filter::Targets::new()
            .with_target(weir::trace::TARGET, tracing::Level::TRACE),
    );
    tracing_subscriber::registry()
        .with(otel)
        .with(fmt.with_filter(filter))
}

/// Sets up logging for a command other than `serve` (which sets it up once it knows
/// whether it exports traces).
fn init_logging(cli: &Cli) {
    use tracing_subscriber::util::SubscriberInitExt as _;
    subscriber(&cli.log, cli.log_json, None).init();
}

/// Starts the OpenTelemetry exporter when the configuration or the `OTEL_*` variables
/// ask for it; call it inside the runtime (batches are exported on it).
#[cfg(feature = "otel")]
fn start_tracing(
    config: &weir::config::Config,
) -> Result<
    Option<(
        weir::telemetry::Tracing,
        OtelLayer,
        weir::telemetry::Resolved,
    )>,
> {
    let env = |name: &str| std::env::var(name).ok();
    let Some(settings) = weir::telemetry::resolve(&config.telemetry.tracing, &env)? else {
        return Ok(None);
    };
    let tracing = weir::telemetry::start(&settings)?;
    let layer = tracing_opentelemetry::layer().with_tracer(tracing.tracer.clone());
    Ok(Some((tracing, layer, settings)))
}

/// Runs the chosen command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    if !matches!(cli.command, Command::Serve(_)) {
        init_logging(&cli);
    }
    match cli.command {
        Command::Serve(args) => serve(args, &cli.log, cli.log_json),
        Command::Filter(cmd) => filter::run(cmd),
        Command::Sdk { dir } => sdk::run(&dir),
        Command::Tenant(cmd) => tenant::run(cmd),
        #[cfg(feature = "toggle")]
        Command::Spill(cmd) => spill::run(cmd),
        Command::Replay(args) => runtime()?.block_on(replay::run(*args)),
        Command::Send(args) => runtime()?.block_on(send::run(args)),
        Command::Tail(args) => runtime()?.block_on(tail::run(args)),
        Command::Bench(args) => runtime()?.block_on(bench::run(args)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The directory the example filters are built into by `scripts/serve`:
/// `$CARGO_TARGET_DIR/wasm32-wasip2/release`, else `target/wasm32-wasip2/release`.
fn default_filters_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("wasm32-wasip2/release")
}

fn serve(args: ServeArgs, log: &str, log_json: bool) -> Result<ExitCode> {
    // Logs while the configuration is read go to this thread's subscriber; the process's
    // own is set once the exporter (if any) is running.
    let reading = subscriber(log, log_json, None);
    let config = tracing::subscriber::with_default(reading, || read_config(args))?;
    let admin_tls = config.admin.tls.is_some();
    let main_tls = config.tls.is_some();
    let runtime = runtime()?;
    #[cfg(feature = "otel")]
    let (exporter, layer, settings) = {
        let _inside = runtime.enter();
        match start_tracing(&config)? {
            Some((exporter, layer, settings)) => (Some(exporter), Some(layer), Some(settings)),
            None => (None, None, None),
        }
    };
    #[cfg(not(feature = "otel"))]
    let layer = {
        if weir::telemetry::resolve(&config.telemetry.tracing, &|n| std::env::var(n).ok())?
            .is_some()
        {
            return Err(weir::telemetry::TelemetryError::NotBuilt.into());
        }
        None
    };
    {
        use tracing_subscriber::util::SubscriberInitExt as _;
        subscriber(log, log_json, layer).init();
    }
    #[cfg(feature = "otel")]
    if let Some(settings) = settings {
        tracing::info!(
            endpoint = %settings.endpoint,
            protocol = if settings.grpc { "grpc" } else { "http/protobuf" },
            sampler = %settings.sampler,
            "exporting traces over OTLP"
        );
    }
    // Where the router listens, on stderr: a JSON log line under --log-json, so that
    // stream stays one JSON object per line.
    let announce = move |line: String| {
        if log_json {
            tracing::info!("{line}");
        } else {
            eprintln!("{line}");
        }
    };
    runtime.block_on(async move {
        // SIGTERM is caught from before the router says it listens: a supervisor that
        // stops it at once still gets a graceful shutdown.
        #[cfg(unix)]
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot catch SIGTERM")?;
        let running = weir::serve::start(config).await?;
        if let Some(token_file) = &running.admin_token_file {
            // The CLI on this machine finds the token by the admin API's URL, from any
            // folder (recorded before the router says it listens).
            let (tls, addr) = match running.admin_addr {
                Some(admin) => (admin_tls, admin),
                None => (main_tls, running.addr),
            };
            let url = weir::known_routers::local_url(if tls { "https" } else { "http" }, addr);
            if let Err(e) = weir::known_routers::remember(&url, token_file) {
                tracing::debug!("cannot record the admin token's file for the CLI: {e}");
            }
        }
        let (addr, admin_addr, grpc_addr) = (running.addr, running.admin_addr, running.grpc_addr);
        let (stop, task) = running.into_parts();
        tokio::spawn(async move {
            #[cfg(unix)]
            shutdown_signal(term).await;
            #[cfg(not(unix))]
            shutdown_signal().await;
            let _ = stop.send(());
        });
        if let Some(admin) = admin_addr {
            let scheme = if admin_tls { "https" } else { "http" };
            announce(format!("weir admin listening on {scheme}://{admin}"));
        }
        if let Some(grpc) = grpc_addr {
            announce(format!("weir grpc listening on http://{grpc}"));
        }
        let scheme = if main_tls { "https" } else { "http" };
        announce(format!("weir listening on {scheme}://{addr}"));
        let stopped = task.await;
        // The spans still buffered go out before the process ends, whatever it ends with.
        #[cfg(feature = "otel")]
        if let Some(exporter) = exporter {
            if let Err(e) = exporter.provider.shutdown() {
                tracing::warn!("cannot flush the last spans: {e}");
            }
        }
        stopped??;
        Ok(ExitCode::SUCCESS)
    })
}

/// The configuration `serve` runs: the file (or the embedded defaults), then the flags.
fn read_config(args: ServeArgs) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => {
            let dir = args.filters_dir.clone().unwrap_or_else(default_filters_dir);
            let config = Config::embedded(&dir, &weir::config::env_overrides())?;
            for path in config.filters.values().filter_map(|f| f.path.as_ref()) {
                if !path.exists() {
                    anyhow::bail!(
                        "example filter {} not found: build the filters first \
                         (`scripts/serve` does, or `cargo build --target wasm32-wasip2 --release -p severity -p scope-inject -p redact`), \
                         or point --filters-dir at them",
                        path.display()
                    );
                }
            }
            config
        }
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(gates) = &args.feature_gates {
        let gates = weir::config::parse_feature_gates(gates)
            .map_err(|e| anyhow::anyhow!("--feature-gates: {e}"))?;
        config.feature_gates.extend(gates);
    }
    args.provider.apply(&mut config)?;
    if let Some(kubeconfig) = args.authorization_webhook_config_file {
        set_authorization_webhook(&mut config, kubeconfig)?;
    }
    // Flags may have changed what the file said: check the result again.
    config.validate("command line", "")?;
    Ok(config)
}

/// Waits for Ctrl-C or SIGTERM (`term`, registered before the router started).
#[cfg(unix)]
async fn shutdown_signal(mut term: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// Waits for Ctrl-C.
#[cfg(not(unix))]
async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Reads structured CloudEvents, one JSON object per line, from a file or stdin (`-`);
/// errors name the file and line.
pub fn read_events(path: &std::path::Path) -> Result<Vec<weir::event::Event>> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            weir::cloudevents::json::parse_event(l.as_bytes())
                .with_context(|| format!("{}:{}: not a CloudEvent", path.display(), i + 1))
        })
        .collect()
}
