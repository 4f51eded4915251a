//! A real Kafka-protocol broker for the tests: `tansu` (installed by `scripts/setup`),
//! started on a free loopback port with in-memory storage, plus rdkafka clients to
//! create topics, produce input and read output. [`Broker::start_tls`] puts it behind a
//! TLS terminator that requires client certificates ([`super::tls_proxy`]).

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tansu binary: `$TANSU_BIN`, else on the PATH, else in cargo's bin directory.
pub fn tansu_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("TANSU_BIN") {
        return bin.into();
    }
    if let Ok(out) = Command::new("sh").args(["-c", "command -v tansu"]).output() {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !path.is_empty() {
            return path.into();
        }
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    home.join("bin").join("tansu")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running broker, killed on drop. Its storage is in memory: a restart starts empty.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    log: PathBuf,
    /// With [`Broker::start_tls`]: the terminator clients must go through, and the PEM
    /// files of a client certificate it accepts.
    pub tls: Option<(super::tls_proxy::TlsProxy, ClientFiles)>,
    dir: tempfile::TempDir,
}

/// PEM files for a Kafka client over TLS: the CA of the broker's certificate, and a
/// client certificate (common name `tests`) with its key.
pub struct ClientFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Broker {
    /// Starts a broker on a free port and waits until it answers metadata requests.
    pub fn start() -> Broker {
        Self::start_on(free_port())
    }

    /// A broker reachable only over TLS with a client certificate from `pki`: tansu
    /// listens on a loopback port nobody is told about and advertises the port of a TLS
    /// terminator (`localhost:<port>`) that forwards to it. Clients see only the TLS port.
    pub fn start_tls(pki: &super::pki::Pki) -> Broker {
        let port = free_port();
        let (cert, key) = pki.issue("kafka", &["localhost"]);
        let config = super::tls_proxy::server_config(&cert, &key, &pki.ca_pem);
        let proxy = super::tls_proxy::TlsProxy::start(config, port);
        let advertised = format!("tcp://localhost:{}", proxy.port);
        let mut broker = Self::launch(port, &advertised);
        let (client_cert, client_key) = pki.issue("tests", &[]);
        let write = |name: &str, text: &str| {
            let path = broker.dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let files = ClientFiles {
            ca: write("ca.pem", &pki.ca_pem),
            cert: write("client.pem", &client_cert),
            key: write("client.key", &client_key),
        };
        broker.tls = Some((proxy, files));
        broker.wait_ready();
        broker
    }

    /// Starts a broker on this port (a restart keeps the port clients know).
    pub fn start_on(port: u16) -> Broker {
        let broker = Self::launch(port, &format!("tcp://127.0.0.1:{port}"));
        broker.wait_ready();
        broker
    }

    /// Starts tansu on `127.0.0.1:port`, advertising `advertised`, and waits until it
    /// accepts connections.
    fn launch(port: u16, advertised: &str) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tansu.log");
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                advertised,
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("tansu.err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start tansu ({}): {e}; scripts/setup installs it",
                    tansu_bin().display()
                )
            });
        let broker = Broker {
            child: Some(child),
            port,
            log,
            tls: None,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    fn wait_ready(&self) {
        let consumer: BaseConsumer = self.client().create().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while consumer
            .fetch_metadata(None, Duration::from_secs(2))
            .is_err()
        {
            assert!(Instant::now() < deadline, "tansu did not answer metadata");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `127.0.0.1:PORT`, or `localhost:TLS_PORT` behind the terminator.
    pub fn addr(&self) -> String {
        match &self.tls {
            Some((proxy, _)) => format!("localhost:{}", proxy.port),
            None => format!("127.0.0.1:{}", self.port),
        }
    }

    /// A client config pointing at this broker (over TLS with the tests' client
    /// certificate when the broker is behind the terminator).
    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.addr());
        if let Some((_, files)) = &self.tls {
            c.set("security.protocol", "ssl")
                .set("ssl.ca.location", files.ca.display().to_string())
                .set("ssl.certificate.location", files.cert.display().to_string())
                .set("ssl.key.location", files.key.display().to_string());
        }
        c
    }

    /// Creates topics with this many partitions (tansu does not auto-create topics).
    pub async fn create_topics(&self, names: &[&str], partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.client().create().unwrap();
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
            .collect();
        let results = admin
            .create_topics(&topics, &AdminOptions::new())
            .await
            .unwrap();
        for r in results {
            if let Err((topic, code)) = r {
                assert!(
                    code == rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                    "create topic {topic}: {code:?}"
                );
            }
        }
    }

    /// A producer; `one_per_batch` makes every record its own batch (see [`produce`]).
    pub fn producer(&self, one_per_batch: bool) -> FutureProducer {
        let mut c = self.client();
        c.set("linger.ms", "5").set("enable.idempotence", "true");
        if one_per_batch {
            c.set("batch.num.messages", "1");
        }
        c.create().unwrap()
    }

    /// Stops the broker (SIGKILL; its memory storage is gone).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The broker's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One record as the tests write or read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub payload: Option<Vec<u8>>,
    pub partition: i32,
    pub offset: i64,
}

impl Record {
    /// A header's value as text.
    pub fn header(&self, key: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// A record to produce: `(key, headers, value)`.
pub type Input = (Option<Vec<u8>>, Vec<(String, Vec<u8>)>, Option<Vec<u8>>);

/// A binary-mode CloudEvent record: `(key, headers, payload)`.
pub fn binary_event(id: &str, ty: &str, severity: &str, key: Option<&str>, data: &[u8]) -> Input {
    let h = |k: &str, v: &str| (k.to_owned(), v.as_bytes().to_vec());
    (
        key.map(|k| k.as_bytes().to_vec()),
        vec![
            h("ce_specversion", "1.0"),
            h("ce_id", id),
            h("ce_source", "/tests/kafka"),
            h("ce_type", ty),
            h("ce_severity", severity),
            h("ce_time", "2026-12-01T10:00:00Z"),
            h("content-type", "application/json"),
        ],
        Some(data.to_vec()),
    )
}

/// Produces records and waits for every acknowledgement.
pub async fn produce(producer: &FutureProducer, topic: &str, records: Vec<Input>) {
    let mut pending = Vec::with_capacity(records.len());
    for (key, headers, payload) in &records {
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (k, v) in headers {
            owned = owned.insert(Header {
                key: k,
                value: Some(v.as_slice()),
            });
        }
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(owned);
        if let Some(k) = key {
            rec = rec.key(k.as_slice());
        }
        if let Some(p) = payload {
            rec = rec.payload(p.as_slice());
        }
        loop {
            match producer.send_result(rec) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((_, back)) => {
                    rec = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        if pending.len() >= 10_000 {
            for f in pending.drain(..) {
                f.await.unwrap().unwrap();
            }
        }
    }
    for f in pending {
        f.await.unwrap().unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Reads every record of a topic's partitions from the start until `want` records were
/// read or `timeout` passed with nothing new.
pub fn read_all(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    want: usize,
    idle: Duration,
) -> Vec<Record> {
    let mut c = broker.client();
    c.set("group.id", format!("reader-{}", uuid_like()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = c.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut last = Instant::now();
    while out.len() < want && last.elapsed() < idle {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last = Instant::now();
                out.push(Record {
                    key: m.key().map(<[u8]>::to_vec),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default(),
                    payload: m.payload().map(<[u8]>::to_vec),
                    partition: m.partition(),
                    offset: m.offset(),
                });
            }
            Some(Err(e)) => panic!("read {topic}: {e}"),
            None => {}
        }
    }
    out
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
