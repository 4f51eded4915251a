//! A real ClickHouse server (Debian's `clickhouse-server`, installed by `scripts/setup`)
//! started on free loopback ports with its data in a temporary directory, killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ClickHouse {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the server answers `GET /ping` with `Ok.`.
fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /ping HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.contains("Ok.")
}

impl ClickHouse {
    pub fn start() -> ClickHouse {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (http, tcp) = (free_port(), free_port());
        let config = format!(
            "<?xml version=\"1.0\"?>\n<yandex>\n  <logger><level>warning</level><console>1</console></logger>\n  <http_port>{http}</http_port>\n  <tcp_port>{tcp}</tcp_port>\n  <listen_host>127.0.0.1</listen_host>\n  <path>{d}/</path>\n  <tmp_path>{d}/tmp/</tmp_path>\n  <user_files_path>{d}/user_files/</user_files_path>\n  <format_schema_path>{d}/format_schemas/</format_schema_path>\n  <users_config>/etc/clickhouse-server/users.xml</users_config>\n  <default_profile>default</default_profile>\n  <default_database>default</default_database>\n  <mark_cache_size>268435456</mark_cache_size>\n</yandex>\n",
            d = data.display()
        );
        let config_path = dir.path().join("config.xml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("clickhouse-server")
            .arg(format!("--config-file={}", config_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clickhouse-server runs (scripts/setup installs Debian's clickhouse-server)");
        let url = format!("http://127.0.0.1:{http}");
        let started = Instant::now();
        loop {
            let ok = ping(http);
            if ok {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "clickhouse-server did not answer on {url}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        ClickHouse {
            child,
            url,
            _dir: dir,
        }
    }

    /// Runs a query; returns the answer text (panics on an error status).
    pub async fn query(&self, sql: &str) -> String {
        let resp = reqwest::Client::new()
            .post(&self.url)
            .body(sql.to_owned())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{sql}: {text}");
        text
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
