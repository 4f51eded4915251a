//! Shared helpers: the real `weir` binary started on a free loopback port with a config,
//! the guest components built by `build.rs`, and small HTTP helpers.

#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod clickhouse;
pub mod kafka;
pub mod pki;
pub mod tls_proxy;
pub mod toggle;

/// Paths of the guest components built for this test run.
pub mod wasm {
    pub const SEVERITY: &str = env!("WEIR_WASM_SEVERITY");
    pub const SCOPE_INJECT: &str = env!("WEIR_WASM_SCOPE_INJECT");
    pub const REDACT: &str = env!("WEIR_WASM_REDACT");
    pub const HOSTILE: &str = env!("WEIR_WASM_HOSTILE");
    pub const STAMP: &str = env!("WEIR_WASM_STAMP");
    pub const DEDUP: &str = env!("WEIR_WASM_DEDUP");
    pub const RATE_LIMIT: &str = env!("WEIR_WASM_RATE_LIMIT");
    pub const OTHER_WORLD: &str = env!("WEIR_WASM_OTHER_WORLD");
    pub const TRIGGER_ROUTE: &str = env!("WEIR_WASM_TRIGGER_ROUTE");
    pub const K8S_TRANSFORM: &str = env!("WEIR_WASM_K8S_TRANSFORM");
    pub const K8S_FILTER: &str = env!("WEIR_WASM_K8S_FILTER");
    pub const K8S_CORRELATE: &str = env!("WEIR_WASM_K8S_CORRELATE");
}

/// The workspace root (from the runtime environment cargo and nextest set, so a test
/// binary reused from another checkout's shared target directory looks at this one).
pub fn root() -> PathBuf {
    let manifest_dir =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    Path::new(&manifest_dir).parent().unwrap().to_owned()
}

/// The `weir` binary of this build. The workspace test build (`scripts/test`) produces
/// it with the same features as these tests (host/tests makes cargo build it); when it is
/// missing (e.g. `cargo test -p weir-tests` alone), it is built here.
pub fn weir_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // The test executable lives in <target>/<profile>/deps/.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
        let bin = profile_dir.join("weir");
        if bin.exists() {
            return bin;
        }
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root())
            .args(["build", "--quiet", "-p", "weir", "--bin", "weir"])
            .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap())
            .status()
            .expect("run cargo build for the weir binary");
        assert!(status.success(), "building the weir binary failed");
        bin
    })
    .clone()
}

/// A log line's message: the line itself, or under `--log-json` its `fields.message`.
pub fn message(line: &str) -> String {
    serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v["fields"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| line.to_owned())
}

/// A running `weir serve` process, killed on drop.
pub struct Weir {
    child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Weir {
    /// Starts `weir serve --config` with `config` (YAML); `{data}` in it is replaced by the
    /// data directory. The listener binds to 127.0.0.1:0; the address is read from stderr.
    pub fn start(config: &str) -> Weir {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, config)
    }

    /// Like [`Weir::start`] in a given directory (restarts keep their data).
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Weir {
        Self::start_at(dir, "127.0.0.1:0", config)
    }

    /// Like [`Weir::start_in`] on a given listen address (a restart on the same port).
    pub fn start_at(dir: tempfile::TempDir, listen: &str, config: &str) -> Weir {
        Self::start_with(dir, listen, config, &[])
    }

    /// Like [`Weir::start`], with these environment variables set.
    pub fn start_env(config: &str, env: &[(&str, &str)]) -> Weir {
        Self::start_with(tempfile::tempdir().unwrap(), "127.0.0.1:0", config, env)
    }

    fn start_with(
        dir: tempfile::TempDir,
        listen: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> Weir {
        let data = dir.path().join("data");
        let text = format!("listen: {listen}\ndata_dir: {}\n{}", data.display(), config);
        let config_path = dir.path().join("weir.yaml");
        std::fs::write(&config_path, text).unwrap();
        let config_arg = config_path.display().to_string();
        Self::spawn_env(dir, &["serve", "--config", &config_arg], env)
    }

    /// Runs `weir` with these arguments (a `serve` that prints its address).
    pub fn spawn(dir: tempfile::TempDir, args: &[&str]) -> Weir {
        Self::spawn_env(dir, args, &[])
    }

    /// Like [`Weir::spawn`], with these environment variables set.
    pub fn spawn_env(dir: tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> Weir {
        let mut child = Command::new(weir_bin())
            .args(args)
            // A generated admin token's file is recorded here, not in the user's home.
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .envs(env.iter().copied())
            .env(
                "WEIR_LOG",
                std::env::var("WEIR_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start weir");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = message(&line).strip_prefix("weir listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("weir did not start:\n{}", logs.lock().unwrap().join("\n"));
            }
        };
        Weir {
            child,
            url,
            dir,
            logs,
        }
    }

    pub fn data(&self, file: &str) -> PathBuf {
        self.dir.path().join("data").join(file)
    }

    /// Runs `weir replay --dlq` on a dead-letter file of the data directory, through
    /// `route` of this router, with its admin token.
    pub fn replay_dlq(&self, file: &str, route: &str) -> std::process::Output {
        std::process::Command::new(weir_bin())
            .args(["replay", "--dlq"])
            .arg(self.data(file))
            .args(["--route", route, "--to", &self.url, "--admin-token-file"])
            .arg(self.data("admin-token"))
            .output()
            .unwrap()
    }

    /// `Authorization: Bearer <token>` with the admin token `weir serve` generated.
    pub fn admin_auth(&self) -> String {
        let token = std::fs::read_to_string(self.data("admin-token")).unwrap();
        format!("Bearer {}", token.trim())
    }

    /// Lines of a JSON-lines file in the data directory (empty when missing).
    pub fn jsonl(&self, file: &str) -> Vec<Value> {
        read_jsonl(&self.data(file))
    }

    /// The admin listener's URL, when the router has a separate one.
    pub fn admin_url(&self) -> Option<String> {
        self.logs.lock().unwrap().iter().find_map(|l| {
            message(l)
                .strip_prefix("weir admin listening on ")
                .map(|u| u.trim().to_owned())
        })
    }

    /// The gRPC source's URL, when the router serves one.
    pub fn grpc_url(&self) -> Option<String> {
        self.logs.lock().unwrap().iter().find_map(|l| {
            message(l)
                .strip_prefix("weir grpc listening on ")
                .map(|u| u.trim().to_owned())
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process with SIGKILL (no shutdown at all) and keeps its directory.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status's success.
    pub fn terminate(mut self) -> (bool, tempfile::TempDir) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        let ok = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (ok, dir)
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- weir log ---\n{}", self.logs.lock().unwrap().join("\n"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// POSTs a body with headers; returns status and the JSON answer (Null when not JSON).
pub async fn post(
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(body).send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A dead letter's reason (empty when it has none).
pub fn reason(letter: &Value) -> &str {
    letter["reason"].as_str().unwrap_or_default()
}

/// A structured CloudEvent as JSON.
pub fn event(id: &str, ty: &str, extra: Value) -> Value {
    let mut e = serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "/tests",
        "type": ty,
    });
    if let (Some(obj), Value::Object(more)) = (e.as_object_mut(), extra) {
        obj.extend(more);
    }
    e
}

/// A core/v1 Event for the Events API: `name` in `ns`, about a pod `p`.
pub fn k8s_event(name: &str, ns: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": ns},
        "reason": "Started", "message": "started", "type": "Normal",
    })
}

/// The YAML for a filter entry.
pub fn filter_yaml(name: &str, path: &str, config: &str) -> String {
    format!("  {name}:\n    path: {path}\n    config: {config}\n")
}

/// The value of a Prometheus sample whose line starts with `prefix` (labels included).
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of every series whose line starts with `prefix` (a family over its labels).
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Posts events as one `application/cloudevents-batch+json` request to `{base}/v1/events`.
pub async fn post_batch(base: &str, events: &Value) -> (u16, Value) {
    post(
        &format!("{base}/v1/events"),
        &[("content-type", "application/cloudevents-batch+json")],
        events.to_string(),
    )
    .await
}

pub async fn get_text(url: &str) -> (u16, String) {
    get_text_as(url, None).await
}

/// Like [`get_text`], with a bearer token when given.
pub async fn get_text_as(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("request");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}
