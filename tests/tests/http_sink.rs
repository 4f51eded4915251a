//! The HTTP CloudEvents sink against a real HTTP receiver on loopback (axum, served over
//! TLS by weir's own listener code): binary, structured and batch modes, mutual TLS and a
//! bearer token, refusals that are not retried, and an outage (dead letters, the circuit
//! opening, an admin reset, `weir replay`).

#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use common::pki::Pki;
use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

/// One request the receiver took.
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    /// The client certificate's common name, when one was presented.
    client: Option<String>,
}

#[derive(Default)]
struct Inbox {
    seen: Mutex<Vec<Seen>>,
    /// The status to answer with (0: 202 Accepted).
    answer: AtomicU16,
    /// The bearer token required, if any.
    token: Option<String>,
}

/// A receiver recording what arrives; `tls` serves it over TLS with client certificates.
async fn receiver(inbox: Arc<Inbox>, tls: Option<weir::tls::TlsSettings>) -> String {
    async fn take(State(inbox): State<Arc<Inbox>>, request: Request) -> StatusCode {
        let (parts, body) = request.into_parts();
        if let Some(token) = &inbox.token {
            let sent = parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            if sent != Some(&format!("Bearer {token}")) {
                return StatusCode::UNAUTHORIZED;
            }
        }
        let answer = inbox.answer.load(Ordering::SeqCst);
        if answer != 0 {
            return StatusCode::from_u16(answer).unwrap();
        }
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        inbox.seen.lock().unwrap().push(Seen {
            path: parts.uri.path().to_owned(),
            headers: parts.headers,
            body,
            client: parts
                .extensions
                .get::<weir::tls::PeerIdentity>()
                .and_then(|p| p.common_name.clone()),
        });
        StatusCode::ACCEPTED
    }
    let app = axum::Router::new().fallback(take).with_state(inbox);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    match tls {
        Some(tls) => {
            let config = weir::tls::server_config(&tls, &[]).unwrap();
            tokio::spawn(weir::listener::serve(
                listener,
                Some(weir::listener::Tls {
                    config,
                    trust: None,
                }),
                app,
                std::future::pending(),
                Default::default(),
            ));
            format!("https://localhost:{port}")
        }
        None => {
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://127.0.0.1:{port}")
        }
    }
}

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_binding_mode_reaches_a_receiver_over_mutual_tls_with_a_bearer_token() {
    let pki_dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = pki_dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let servers = Pki::new("servers CA");
    let clients = Pki::new("clients CA");
    let servers_ca = write("servers-ca.pem", &servers.ca_pem);
    let clients_ca = write("clients-ca.pem", &clients.ca_pem);
    let (cert, key) = servers.issue("receiver", &["localhost"]);
    let (server_cert, server_key) = (write("receiver.pem", &cert), write("receiver.key", &key));
    let (cert, key) = clients.issue("weir-sink", &[]);
    let (client_cert, client_key) = (write("client.pem", &cert), write("client.key", &key));
    let token_file = write("token", "s3cret\n");
    let inbox = Arc::new(Inbox {
        token: Some("s3cret".into()),
        ..Inbox::default()
    });
    let url = receiver(
        inbox.clone(),
        Some(weir::tls::TlsSettings {
            cert: server_cert.into(),
            key: server_key.into(),
            client_ca: Some(clients_ca.into()),
        }),
    )
    .await;
    let sink = |path: &str, mode: &str, token: bool| {
        format!(
            "  {path}:\n    type: http\n    url: {url}/{path}\n    mode: {mode}\n    tls: {{ ca: {servers_ca}, cert: {client_cert}, key: {client_key} }}\n{}",
            if token { format!("    token: {{ file: {token_file} }}\n") } else { String::new() }
        )
    };
    let config = format!(
        "sinks:\n{}{}{}{}  dlq: {{ type: file, path: dlq.jsonl }}\n\
routes:\n  - name: main\n    to: [binary, structured, batch]\n    dead_letter: dlq\n  - name: tokenless\n    to: [no-token]\n    dead_letter: dlq\n",
        sink("binary", "binary", true),
        sink("structured", "structured", true),
        sink("batch", "batch", true),
        sink("no-token", "binary", false),
    );
    let weir = Weir::start(&config);
    let events = json!([
        event(
            "e1",
            "io.weir.test",
            json!({"subject": "pods/a", "myext": "v 1", "datacontenttype": "application/json", "data": {"n": 1}})
        ),
        event(
            "e2",
            "io.weir.test",
            json!({"datacontenttype": "text/plain", "data": "two"})
        ),
        event("e3", "io.weir.test", json!({})),
    ]);
    let (status, answer) = post(
        &format!("{}/v1/routes/main/events", weir.url),
        &[("content-type", "application/cloudevents-batch+json")],
        events.to_string(),
    )
    .await;
    assert_eq!(
        (status, answer["delivered"].as_u64()),
        (202, Some(3)),
        "{answer}"
    );
    {
        let seen = inbox.seen.lock().unwrap();
        assert!(
            seen.iter()
                .all(|s| s.client.as_deref() == Some("weir-sink")),
            "mutual TLS"
        );
        let on = |path: &str| -> Vec<&Seen> { seen.iter().filter(|s| s.path == path).collect() };
        let mut binary = on("/binary");
        binary.sort_by_key(|s| header(s, "ce-id").map(str::to_owned));
        assert_eq!(binary.len(), 3);
        assert_eq!(header(binary[0], "ce-id"), Some("e1"));
        assert_eq!(header(binary[0], "ce-type"), Some("io.weir.test"));
        assert_eq!(header(binary[0], "ce-subject"), Some("pods/a"));
        assert_eq!(
            header(binary[0], "ce-myext"),
            Some("v%201"),
            "percent-encoded"
        );
        assert_eq!(header(binary[0], "content-type"), Some("application/json"));
        assert_eq!(
            serde_json::from_slice::<Value>(&binary[0].body).unwrap(),
            json!({"n": 1})
        );
        assert_eq!(&binary[1].body[..], b"two");
        assert!(binary[2].body.is_empty());
        let structured = on("/structured");
        assert_eq!(structured.len(), 3);
        for s in &structured {
            assert_eq!(
                header(s, "content-type"),
                Some("application/cloudevents+json")
            );
        }
        let mut ids: Vec<String> = structured
            .iter()
            .map(|s| {
                serde_json::from_slice::<Value>(&s.body).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        ids.sort();
        assert_eq!(ids, ["e1", "e2", "e3"]);
        let batch = on("/batch");
        assert_eq!(batch.len(), 1, "one request for the batch");
        assert_eq!(
            header(batch[0], "content-type"),
            Some("application/cloudevents-batch+json")
        );
        let body: Value = serde_json::from_slice(&batch[0].body).unwrap();
        assert_eq!(body.as_array().unwrap().len(), 3);
        assert_eq!(body[0]["data"], json!({"n": 1}));
        assert_eq!(body[1]["data"], json!("two"));
    }
    // Without the token the receiver answers 401: a refusal, dead-lettered, not retried.
    let (status, answer) = post(
        &format!("{}/v1/routes/tokenless/events", weir.url),
        &[("content-type", "application/cloudevents+json")],
        event("e4", "io.weir.test", json!({})).to_string(),
    )
    .await;
    assert_eq!(
        (status, answer["dead_lettered"].as_u64()),
        (202, Some(1)),
        "{answer}"
    );
    let letters = weir.jsonl("dlq.jsonl");
    assert!(reason(&letters[0]).contains("401"), "{}", letters[0]);
    let (_, metrics) = get_text(&format!("{}/metrics", weir.url)).await;
    assert_eq!(
        metric_sum(&metrics, "weir_sink_retries_total{sink=\"no-token\"}"),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "weir_sink_circuit_state{sink=\"no-token\"}"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_outage_dead_letters_opens_the_circuit_and_replay_delivers() {
    let inbox = Arc::new(Inbox::default());
    let url = receiver(inbox.clone(), None).await;
    let config = format!(
        "sinks:\n  out:\n    type: http\n    url: {url}/in\n    retry: {{ max_retries: 1, initial_backoff_ms: 1, max_backoff_ms: 5 }}\n    circuit_breaker: {{ failure_threshold: 2, recovery_timeout_ms: 600000 }}\n  dlq: {{ type: file, path: dlq.jsonl }}\n\
routes:\n  - name: main\n    to: [out]\n    dead_letter: dlq\n"
    );
    let weir = Weir::start(&config);
    // The receiver is down (503): each write is tried twice, then dead-lettered; after two
    // failed writes the circuit opens and the third is refused at once.
    inbox.answer.store(503, Ordering::SeqCst);
    for id in ["o1", "o2", "o3"] {
        let (status, answer) =
            post_batch(&weir.url, &json!([event(id, "t", json!({"data": id}))])).await;
        assert_eq!(
            (status, answer["dead_lettered"].as_u64()),
            (202, Some(1)),
            "{answer}"
        );
    }
    let letters = weir.jsonl("dlq.jsonl");
    assert!(reason(&letters[0]).contains("503"), "{}", letters[0]);
    assert!(
        reason(&letters[2]).contains("circuit open"),
        "{}",
        letters[2]
    );
    let (_, metrics) = get_text(&format!("{}/metrics", weir.url)).await;
    assert_eq!(
        metric(&metrics, "weir_sink_retries_total{sink=\"out\"}"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "weir_sink_circuit_state{sink=\"out\"}"),
        Some(1.0)
    );
    assert!(inbox.seen.lock().unwrap().is_empty());

    // The receiver is back; an admin closes the circuit and replays the dead letters.
    inbox.answer.store(0, Ordering::SeqCst);
    let (status, _) = post(
        &format!("{}/v1/sinks/out/circuit/reset", weir.url),
        &[("authorization", &weir.admin_auth())],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let out = weir.replay_dlq("dlq.jsonl", "main");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = inbox.seen.lock().unwrap();
    let mut ids: Vec<&str> = seen.iter().filter_map(|s| header(s, "ce-id")).collect();
    ids.sort();
    assert_eq!(ids, ["o1", "o2", "o3"], "every dead letter delivered once");
    assert!(
        seen.iter().all(|s| header(s, "ce-weirreplay").is_some()),
        "marked as replayed"
    );
    let o1 = seen
        .iter()
        .find(|s| header(s, "ce-id") == Some("o1"))
        .unwrap();
    assert_eq!(&o1.body[..], b"\"o1\"");
}
