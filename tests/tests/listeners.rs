//! The HTTP listener against hostile clients (raw sockets): a client that trickles its
//! headers or its body is cut off at the configured deadlines, and at the connection cap
//! nothing more is served until a connection closes.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

fn config(connections: &str) -> String {
    format!("connections: {connections}\nroutes:\n  - {{ name: r, to: [tail] }}\n")
}

async fn connect(weir: &Weir) -> TcpStream {
    TcpStream::connect(weir.url.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server answers or closes (at most `limit`); what it sent.
async fn answer(socket: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(limit, async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_trickling_its_headers_is_cut_off() {
    let weir = Weir::start(&config("{ header_timeout_ms: 500 }"));
    let mut socket = connect(&weir).await;
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // The rest of the headers never come: the connection ends (hyper may say 408).
    let got = answer(&mut socket, Duration::from_secs(10))
        .await
        .expect("the connection was cut off");
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A kept-alive connection left idle goes the same way.
    let mut idle = connect(&weir).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let first = answer(&mut idle, Duration::from_secs(5)).await.unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let mut rest = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(1), idle.read(&mut rest)).await;
    let end = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut rest))
        .await
        .expect("an idle connection is closed");
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_pausing_in_its_body_gets_an_error_instead_of_holding_the_request() {
    let weir = Weir::start(&config("{ body_timeout_ms: 500 }"));
    let mut socket = connect(&weir).await;
    socket
        .write_all(
            b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/cloudevents+json\r\ncontent-length: 1000\r\n\r\n{\"specversion\"",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let got = answer(&mut socket, Duration::from_secs(10))
        .await
        .expect("answered or closed");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 4"), "{got}");
    // The router keeps serving.
    let (status, _) = get_text(&format!("{}/healthz", weir.url)).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_connection_cap_nothing_more_is_served_until_one_closes() {
    let weir = Weir::start(&config("{ max_connections: 2, header_timeout_ms: 60000 }"));
    // Two connections that say nothing hold both slots.
    let first = connect(&weir).await;
    let _second = connect(&weir).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let url = format!("{}/healthz", weir.url);
    assert!(
        client.get(&url).send().await.is_err(),
        "a third connection is not served while two are open"
    );
    drop(first);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let resp = client
        .get(&url)
        .send()
        .await
        .expect("served once a slot is free");
    assert_eq!(resp.status(), 200);
}
