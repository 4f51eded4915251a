//! `weir filter new|build|test`.

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use weir::runtime::{
    apply_verdicts, wit, EngineOptions, FilterEngine, FilterInstance, FilterMetrics, InstanceIdent,
    Limits, StateStore,
};
use weir_abi::BatchWriter;
use weir_core::metrics::MetricsRegistry;

/// How to reach a running router's admin API.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The router's base URL.
    #[arg(long, env = "WEIR_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Bearer token (default: the token file the router generated).
    #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the token, when --token is not given. Default: `admin-token` in
    /// WEIR_DATA_DIR, else the file a router on this machine recorded for --url (in
    /// ~/.config/weir/routers.json), else ./weir-data/admin-token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

/// How a CLI command reaches a TLS endpoint (the router's admin listener, Toggle).
#[derive(Debug, clap::Args)]
pub struct ClientTlsArgs {
    /// PEM CA bundle the endpoint's certificate must chain to (an `https://` admin
    /// listener; with --spill, Toggle's, turning TLS on).
    #[arg(long, env = "WEIR_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate for an endpoint that asks for one (with --key); the admin
    /// listener maps its common name to a role, so no token is needed.
    #[arg(long, env = "WEIR_CLIENT_CERT", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, env = "WEIR_CLIENT_KEY", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// An HTTP client trusting the CA (and nothing else) and presenting the certificate:
    /// the same TLS settings the router's own clients use (`weir_core::tls`).
    pub fn client(&self) -> Result<reqwest::Client> {
        let builder = reqwest::Client::builder().use_rustls_tls();
        let builder = match &self.ca {
            Some(ca) => {
                let settings = weir::tls::ClientTlsSettings {
                    ca: ca.clone(),
                    cert: self.cert.clone(),
                    key: self.key.clone(),
                };
                let config = weir::tls::client_config(&settings)
                    .with_context(|| format!("TLS settings with CA {}", ca.display()))?;
                builder.use_preconfigured_tls(config)
            }
            None if self.cert.is_some() || self.key.is_some() => {
                anyhow::bail!(
                    "--cert and --key need --ca: the CA the endpoint's certificate chains to"
                )
            }
            None => builder,
        };
        builder.build().context("cannot set up the HTTP client")
    }
}

/// The file holding the admin token of the router at `url`: the one given, else the one
/// a router on this machine recorded for `url`, else (for a router on loopback only: a
/// local data directory's token never goes elsewhere) `admin-token` in `WEIR_DATA_DIR` or
/// `./weir-data`.
pub fn token_file(given: Option<&Path>, url: &str) -> PathBuf {
    if let Some(file) = given {
        return file.to_owned();
    }
    if let Some(recorded) = weir::known_routers::token_file(url) {
        return recorded;
    }
    let local_dir = std::env::var_os("WEIR_DATA_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("weir-data"));
    if is_loopback(url) {
        local_dir.join(weir::tokens::TOKEN_FILE)
    } else {
        // Nothing to read: the error names what to give instead.
        PathBuf::from("(--token or --token-file: the router is not on this machine)")
    }
}

/// Whether `url` names this machine (`localhost` or a loopback address).
fn is_loopback(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The admin token: the one given (flag or WEIR_TOKEN), else the contents of `file`
/// (the token the router generated).
pub fn admin_token(given: Option<&str>, file: &std::path::Path) -> Result<String> {
    match given {
        Some(t) => Ok(t.to_owned()),
        None => std::fs::read_to_string(file)
            .map(|t| t.trim().to_owned())
            .with_context(|| {
                format!(
                    "no admin token given (flag or WEIR_TOKEN), and cannot read {}",
                    file.display()
                )
            }),
    }
}

impl AdminArgs {
    pub fn token(&self) -> Result<String> {
        let file = token_file(self.token_file.as_deref(), &self.url);
        admin_token(self.token.as_deref(), &file)
    }

    /// The HTTP client for the admin API (its CA and client certificate when given).
    pub fn client(&self) -> Result<reqwest::Client> {
        self.tls.client()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }

    /// Sends an admin request with the token (none needed with a client certificate)
    /// and prints the router's answer.
    pub fn call(&self, request: reqwest::RequestBuilder) -> Result<ExitCode> {
        let request = match (self.token(), &self.tls.cert) {
            (Ok(token), _) => request.bearer_auth(token),
            (Err(_), Some(_)) => request,
            (Err(e), None) => return Err(e),
        };
        super::runtime()?.block_on(async move {
            let response = request.send().await.context("cannot reach the router")?;
            answer(response).await
        })
    }
}

/// Prints the router's JSON answer; fails on an error status.
async fn answer(response: reqwest::Response) -> Result<ExitCode> {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let pretty = serde_json::from_str::<serde_json::Value>(&text)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or(text);
    if status.is_success() {
        println!("{pretty}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} {pretty}", status.as_u16());
        Ok(ExitCode::FAILURE)
    }
}

/// Filter commands.
#[derive(Debug, Subcommand)]
pub enum FilterCommand {
    /// Upload a component to a running router as the new active version of a filter.
    Push {
        /// The component (.wasm).
        wasm: PathBuf,
        /// The filter's name.
        #[arg(long)]
        name: String,
        /// The filter's configuration (JSON).
        #[arg(long, default_value = "{}")]
        config: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the filters of a running router with their versions.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make an earlier version active again (the previous one, or --version).
    Rollback {
        /// The filter's name.
        name: String,
        /// The version to activate.
        #[arg(long)]
        version: Option<u32>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove a filter and all its versions (refused while a route uses it).
    Rm {
        /// The filter's name.
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Create a new filter crate that builds and tests out of the box.
    New {
        /// The filter's name (also the crate and directory name).
        name: String,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Path of a weir-guest SDK crate to use (e.g. one `weir sdk` unpacked) instead of
        /// the copy this binary carries, which is written into the filter's `weir-sdk/`.
        #[arg(long, env = "WEIR_GUEST_SDK")]
        sdk: Option<PathBuf>,
    },
    /// Build a filter crate into a component (`cargo build --target wasm32-wasip2 --release`)
    /// and print the path of the `.wasm`.
    Build {
        /// The filter crate's directory.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Develop a filter against a running router: build it, print the verdicts it gives
    /// the sample events, push it as a new version, and do it again on every save (of
    /// `src/`, `Cargo.toml` or the sample). A build or test that fails is shown and
    /// nothing is pushed. Ctrl-C stops.
    Dev {
        /// The filter crate's directory.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// The filter's name on the router (default: the crate's directory name).
        #[arg(long)]
        name: Option<String>,
        /// Sample events, structured CloudEvents one JSON object per line.
        #[arg(long, short)]
        input: PathBuf,
        /// The filter's configuration (JSON).
        #[arg(long, default_value = "{}")]
        config: String,
        /// Build, test and push once, then exit (for scripts).
        #[arg(long)]
        once: bool,
        /// Only build and print verdicts; push nothing.
        #[arg(long)]
        no_push: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Run a component over events and print each verdict as a JSON line; nothing is
    /// delivered anywhere.
    Test {
        /// The component.
        wasm: PathBuf,
        /// Structured CloudEvents, one JSON object per line ("-" for stdin).
        #[arg(long, short)]
        input: PathBuf,
        /// The filter's configuration (JSON).
        #[arg(long, default_value = "{}")]
        config: String,
        /// Tenant in the filter context.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Principal user in the filter context.
        #[arg(long)]
        user: Option<String>,
        /// Principal extra attributes, `key=value` (repeatable).
        #[arg(long = "extra")]
        extra: Vec<String>,
    },
}

/// Runs a filter command.
pub fn run(cmd: FilterCommand) -> Result<ExitCode> {
    match cmd {
        FilterCommand::Push {
            wasm,
            name,
            config,
            admin,
        } => {
            let bytes =
                std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
            serde_json::from_str::<serde_json::Value>(&config).context("--config must be JSON")?;
            let client = admin.client()?;
            admin.call(
                client
                    .put(admin.url(&format!("/v1/filters/{name}")))
                    .header("content-type", "application/wasm")
                    .header(weir::admin::CONFIG_HEADER, config)
                    .body(bytes),
            )
        }
        FilterCommand::List { admin } => admin.call(admin.client()?.get(admin.url("/v1/filters"))),
        FilterCommand::Rollback {
            name,
            version,
            admin,
        } => {
            let body = match version {
                Some(v) => serde_json::json!({ "version": v }).to_string(),
                None => String::new(),
            };
            admin.call(
                admin
                    .client()?
                    .post(admin.url(&format!("/v1/filters/{name}/rollback")))
                    .body(body),
            )
        }
        FilterCommand::Rm { name, admin } => admin.call(
            admin
                .client()?
                .delete(admin.url(&format!("/v1/filters/{name}"))),
        ),
        FilterCommand::New { name, dir, sdk } => new(&name, dir, sdk),
        FilterCommand::Build { path } => {
            let wasm = build(&path)?;
            println!("{}", wasm.display());
            Ok(ExitCode::SUCCESS)
        }
        FilterCommand::Test {
            wasm,
            input,
            config,
            tenant,
            user,
            extra,
        } => test(&wasm, &input, config, tenant, user, &extra),
        FilterCommand::Dev {
            path,
            name,
            input,
            config,
            once,
            no_push,
            admin,
        } => {
            let name = match name {
                Some(name) => name,
                None => path
                    .canonicalize()
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .context("name the filter with --name")?,
            };
            let dev = Dev {
                path,
                name,
                input,
                config,
                push: !no_push,
                admin,
            };
            dev.run(once)
        }
    }
}

fn new(name: &str, dir: Option<PathBuf>, sdk: Option<PathBuf>) -> Result<ExitCode> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_lowercase());
    if !valid {
        bail!(
            "filter name `{name}`: use lower-case letters, digits, - and _, starting with a letter"
        );
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    std::fs::create_dir_all(dir.join("src"))?;
    // The SDK the binary carries goes into the filter's own folder, named relatively: the
    // folder builds wherever it is moved.
    let sdk = match sdk {
        Some(sdk) => sdk
            .canonicalize()
            .with_context(|| format!("weir-guest SDK not found at {}", sdk.display()))?,
        None => {
            super::sdk::unpack(&dir.join("weir-sdk"))?;
            PathBuf::from("weir-sdk/weir-guest")
        }
    };
    std::fs::write(
        dir.join("Cargo.toml"),
        TEMPLATE_MANIFEST
            .replace("{name}", name)
            .replace("{sdk}", &sdk.display().to_string().replace('\\', "/")),
    )?;
    std::fs::write(dir.join("Cargo.lock"), super::sdk::LOCK)?;
    std::fs::write(dir.join("src/lib.rs"), TEMPLATE_LIB)?;
    std::fs::write(dir.join(".gitignore"), "/target\n")?;
    println!("created filter `{name}` in {}", dir.display());
    println!("  test:  cd {} && cargo test", dir.display());
    println!("  build: weir filter build {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

const TEMPLATE_MANIFEST: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
weir-guest = { path = "{sdk}" }
serde = { version = "1", features = ["derive"] }

[dev-dependencies]
serde_json = "1"

# A filter is its own workspace.
[workspace]
"#;

const TEMPLATE_LIB: &str = r##"//! A weir filter. Config: `{"drop_types": ["com.example.noise"], "tag": "seen"}`.
//! Drops events whose type is listed and tags every other event with an extension.

use serde::Deserialize;
use weir_guest::{Context, Event, Filter, Patch, Verdict};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    drop_types: Vec<String>,
    #[serde(default = "default_tag")]
    tag: String,
}

fn default_tag() -> String {
    "filtered".into()
}

pub struct MyFilter {
    config: Config,
}

impl Filter for MyFilter {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Self { config })
    }

    fn process(&mut self, _ctx: &Context, event: &Event<'_>) -> Verdict {
        if self.config.drop_types.iter().any(|t| t == event.ty()) {
            return Verdict::drop("type is on the drop list");
        }
        Verdict::Patch(Patch::new().set(self.config.tag.as_str(), "true"))
    }
}

weir_guest::export_filter!(MyFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_guest::testing::Harness;
    use weir_guest::OwnedEvent;

    #[test]
    fn drops_listed_types_and_tags_the_rest() {
        let mut h = Harness::<MyFilter>::new(r#"{"drop_types":["noise"]}"#).unwrap();
        let out = h.run(&[
            OwnedEvent::new("1", "/src", "noise"),
            OwnedEvent::new("2", "/src", "signal"),
        ]);
        assert!(out[0].is_drop());
        assert_eq!(out[1].kept().unwrap().extension("filtered"), Some("true"));
    }
}
"##;

/// Builds the crate at `path` for wasm32-wasip2 and returns the component's path.
pub fn build(path: &Path) -> Result<PathBuf> {
    let manifest = path.join("Cargo.toml");
    if !manifest.exists() {
        bail!("{} has no Cargo.toml", path.display());
    }
    let output = Command::new("cargo")
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let manifest = manifest.canonicalize()?;
    let package = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["manifest_path"]
                .as_str()
                .and_then(|m| Path::new(m).canonicalize().ok())
                .is_some_and(|m| m == manifest)
        })
        .context("cargo metadata does not list this package")?;
    let name = package["name"].as_str().context("package without name")?;
    let lib = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| {
            t["crate_types"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c == "cdylib"))
        })
        .context(
            "the crate has no cdylib target: add `[lib] crate-type = [\"cdylib\", \"rlib\"]`",
        )?;
    let lib_name = lib["name"].as_str().unwrap_or(name).replace('-', "_");
    let status = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            name,
            "--manifest-path",
        ])
        .arg(&manifest)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build failed (is the target installed? `rustup target add wasm32-wasip2`)");
    }
    let target_dir = meta["target_directory"]
        .as_str()
        .context("no target directory")?;
    let wasm = Path::new(target_dir)
        .join("wasm32-wasip2/release")
        .join(format!("{lib_name}.wasm"));
    if !wasm.exists() {
        bail!("the build finished but {} is missing", wasm.display());
    }
    Ok(wasm)
}

/// `weir filter dev`: one filter crate, its sample and the router it goes to.
struct Dev {
    path: PathBuf,
    name: String,
    input: PathBuf,
    config: String,
    push: bool,
    admin: AdminArgs,
}

impl Dev {
    /// Rounds of build, test and push; after the first, one per change to the sources.
    fn run(&self, once: bool) -> Result<ExitCode> {
        serde_json::from_str::<serde_json::Value>(&self.config).context("--config must be JSON")?;
        let mut seen = self.fingerprint();
        let mut pushed = None;
        loop {
            let ok = self.round(&mut pushed);
            if once {
                return Ok(if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            eprintln!(
                "==> watching {} for changes (Ctrl-C stops)",
                self.path.display()
            );
            // Polled modification times: works on every filesystem and editor (atomic
            // renames included), at a cost of one `stat` per source file twice a second.
            loop {
                std::thread::sleep(std::time::Duration::from_millis(500));
                let now = self.fingerprint();
                if now != seen {
                    seen = now;
                    break;
                }
            }
        }
    }

    /// The files whose change starts a round, with their modification times.
    fn fingerprint(&self) -> Vec<(PathBuf, Option<std::time::SystemTime>)> {
        let mut files = vec![self.path.join("Cargo.toml"), self.input.clone()];
        let mut dirs = vec![self.path.join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        files.sort();
        files
            .into_iter()
            .map(|f| {
                let modified = std::fs::metadata(&f).and_then(|m| m.modified()).ok();
                (f, modified)
            })
            .collect()
    }

    /// Builds, prints the sample's verdicts and pushes (unless `pushed`, the hash of the
    /// last component and configuration pushed, says the router has them already); says
    /// what failed and returns false when a step does.
    fn round(&self, pushed: &mut Option<String>) -> bool {
        eprintln!("==> building {}", self.path.display());
        let wasm = match build(&self.path) {
            Ok(wasm) => wasm,
            Err(e) => {
                eprintln!("build failed: {}", weir::error_chain(e.as_ref()));
                return false;
            }
        };
        eprintln!("==> verdicts for {}", self.input.display());
        let tested = test(
            &wasm,
            &self.input,
            self.config.clone(),
            "default".to_owned(),
            None,
            &[],
        );
        if let Err(e) = tested {
            eprintln!(
                "the filter failed on the sample, not pushing it: {}",
                weir::error_chain(e.as_ref())
            );
            return false;
        }
        if !self.push {
            return true;
        }
        eprintln!("==> pushing `{}` to {}", self.name, self.admin.url);
        let bytes = match std::fs::read(&wasm) {
            Ok(bytes) => bytes,
            Err(e) => {
                eprintln!("cannot read {}: {e}", wasm.display());
                return false;
            }
        };
        // Only the sample changed (or a save changed nothing the build sees): the router
        // runs this version already.
        let hash = weir::runtime::content_hash(&[&bytes[..], self.config.as_bytes()].concat());
        if pushed.as_deref() == Some(hash.as_str()) {
            eprintln!("==> `{}` unchanged: not pushed again", self.name);
            return true;
        }
        let answer = self.admin.client().and_then(|client| {
            self.admin.call(
                client
                    .put(self.admin.url(&format!("/v1/filters/{}", self.name)))
                    .header("content-type", "application/wasm")
                    .header(weir::admin::CONFIG_HEADER, self.config.clone())
                    .body(bytes),
            )
        });
        match answer {
            Ok(code) if code == ExitCode::SUCCESS => {
                *pushed = Some(hash);
                true
            }
            Ok(_) => false,
            Err(e) => {
                eprintln!("push failed: {}", weir::error_chain(e.as_ref()));
                false
            }
        }
    }
}

fn test(
    wasm: &Path,
    input: &Path,
    config: String,
    tenant: String,
    user: Option<String>,
    extra: &[String],
) -> Result<ExitCode> {
    let events = super::read_events(input)?;
    let engine = FilterEngine::new(EngineOptions::default())?;
    let compiled = Arc::new(engine.load_file(wasm)?);
    let metrics = Arc::new(FilterMetrics::new(&MetricsRegistry::new()));
    let state = StateStore::in_memory().tenant(&tenant, 16 << 20);
    let mut instance = FilterInstance::new(
        &engine,
        compiled,
        config,
        Limits::default(),
        InstanceIdent {
            tenant: Arc::from(tenant.as_str()),
            filter: Arc::from("test"),
        },
        state,
        metrics,
    )?;
    let mut extras: Vec<(String, Vec<String>)> = Vec::new();
    for kv in extra {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--extra {kv}: expected key=value");
        };
        match extras.iter_mut().find(|(key, _)| key == k) {
            Some((_, values)) => values.push(v.to_owned()),
            None => extras.push((k.to_owned(), vec![v.to_owned()])),
        }
    }
    let principal = (user.is_some() || !extras.is_empty()).then(|| wit::Principal {
        user: user.unwrap_or_default(),
        groups: Vec::new(),
        extra: extras,
    });
    let ctx = wit::Context {
        tenant,
        route: "test".into(),
        source_kind: "cli".into(),
        principal,
    };
    let mut writer = BatchWriter::new();
    for e in &events {
        writer.push(&e.core(), e.extension_pairs(), e.data.as_deref());
    }
    let answer = instance.process(&ctx, writer.as_bytes())?;
    let decisions = apply_verdicts(events, &answer).map_err(|(_, e)| e)?;
    for (i, d) in decisions.iter().enumerate() {
        let mut line = weir::admin::decision_json(d);
        line["index"] = i.into();
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
