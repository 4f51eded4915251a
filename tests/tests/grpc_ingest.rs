//! The gRPC source speaking the public `rodent.RodentService` contract, against the real
//! binary with tonic clients generated from the same `.proto` a Rodent agent uses:
//! `SendEvents` batches arrive as CloudEvents that map back exactly, invalid events are
//! refused one by one (`success: false`, named), oversize batches are refused whole; and
//! `Register` and `Connect` pass through to the upstream Toggle with the agent's metadata.

#![allow(clippy::unwrap_used)]

mod common;

use common::toggle::{agent_client, batch_of, transfer_event, Recorder, ToggleServer};
use common::*;
use tonic::metadata::MetadataValue;
use weir::toggle::mapping::from_cloudevent;
use weir::toggle::pb;
use weir::toggle::pb::events::{Event, EventLevel};

fn transfer(id: &str, level: EventLevel) -> Event {
    transfer_event(id, "rodent://node-1", level)
}

#[tokio::test(flavor = "multi_thread")]
async fn rodent_batches_flow_as_cloudevents_and_bad_events_are_refused_with_reasons() {
    let config = format!(
        "grpc:\n  listen: 127.0.0.1:0\n  max_batch_events: 100\nfilters:\n{}\
sinks:\n  out: {{ type: file, path: out.jsonl }}\n\
routes:\n  - name: toggle\n    from: [grpc]\n    filters: [severity]\n    to: [out]\n",
        filter_yaml("severity", wasm::SEVERITY, "{ min: warning }"),
    );
    let weir = Weir::start(&config);
    let url = weir.grpc_url().expect("grpc listener announced");
    let mut client = agent_client(url).await.unwrap();

    let warn = transfer("w1", EventLevel::Warn);
    let info = transfer("i1", EventLevel::Info);
    let trace = transfer("t1", EventLevel::Trace);
    let essential = transfer("e1", EventLevel::Essential);
    let unknown_category = Event {
        category: 42,
        ..transfer("bad-cat", EventLevel::Error)
    };
    let no_payload = Event {
        event_payload: None,
        ..transfer("no-payload", EventLevel::Error)
    };
    let no_id = Event {
        event_id: String::new(),
        ..transfer("", EventLevel::Error)
    };
    let batch = batch_of(
        "b1",
        vec![
            warn.clone(),
            unknown_category,
            info,
            no_payload,
            trace,
            no_id,
            essential.clone(),
        ],
    );
    let answer = client.send_events(batch).await.unwrap().into_inner();
    assert!(!answer.success, "{answer:?}");
    let m = &answer.message;
    assert!(m.starts_with("3 of 7 events refused"), "{m}");
    assert!(
        m.contains("`bad-cat`: `category` is invalid: unknown category 42"),
        "{m}"
    );
    assert!(m.contains("`no-payload`: `payload` is required"), "{m}");
    assert!(m.contains("``: `event_id` is required"), "{m}");

    // An agent sends its Toggle JWT with every call: with no producer credentials
    // configured it is not weir's to judge, and the batch is taken.
    let critical = transfer("c1", EventLevel::Critical);
    let mut request = tonic::Request::new(batch_of("b2", vec![critical.clone()]));
    let jwt: MetadataValue<_> = "Bearer agent-jwt-123".parse().unwrap();
    request.metadata_mut().insert("authorization", jwt);
    let answer = client.send_events(request).await.unwrap().into_inner();
    assert!(answer.success && answer.message.is_empty(), "{answer:?}");

    // Too large: refused whole.
    let big = batch_of(
        "big",
        (0..101)
            .map(|i| transfer(&format!("x{i}"), EventLevel::Error))
            .collect(),
    );
    let status = client.send_events(big).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status
        .message()
        .contains("101 events exceeds the limit of 100"));

    // Without an upstream, the other methods say so.
    let status = client
        .register(pb::RegisterRequest::default())
        .await
        .expect_err("no upstream");
    assert_eq!(status.code(), tonic::Code::Unimplemented);

    // WARN, ESSENTIAL and CRITICAL passed `min: warning` (INFO and TRACE did not); they
    // map back exactly, payload bytes included.
    let out = weir.jsonl("out.jsonl");
    assert_eq!(out.len(), 3, "{out:?}");
    let back: Vec<Event> = out
        .iter()
        .map(|line| {
            let ce = weir::cloudevents::json::parse_event(line.to_string().as_bytes()).unwrap();
            assert_eq!(ce.ty, "io.toggle.storage.transfer");
            assert_eq!(
                ce.dataschema.as_deref(),
                Some("proto:rodent.events.StorageEvent")
            );
            let wire = from_cloudevent(&ce).unwrap();
            prost::Message::decode(prost::Message::encode_to_vec(&wire).as_slice()).unwrap()
        })
        .collect();
    assert_eq!(back, vec![warn, essential, critical]);
    let severities: Vec<&str> = out
        .iter()
        .map(|e| e["severity"].as_str().unwrap())
        .collect();
    assert_eq!(severities, ["warning", "essential", "critical"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn register_and_connect_pass_through_to_toggle_with_the_agents_metadata() {
    let mut toggle = ToggleServer::new(common::toggle::free_addr(), Recorder::default(), None);
    toggle.restart().await;
    let config = format!(
        "grpc:\n  listen: 127.0.0.1:0\n  upstream: {{ url: {} }}\n\
sinks:\n  out: {{ type: file, path: out.jsonl }}\n\
routes:\n  - name: toggle\n    from: [grpc]\n    to: [out]\n",
        toggle.url()
    );
    let weir = Weir::start(&config);
    let url = weir.grpc_url().expect("grpc listener announced");
    let mut client = agent_client(url).await.unwrap();
    let jwt: MetadataValue<_> = "Bearer agent-jwt-123".parse().unwrap();

    // Register: unary, through weir, answered by Toggle.
    let mut request = tonic::Request::new(pb::RegisterRequest {
        system_info: Some(pb::SystemInfo {
            cpu_usage: 12.5,
            ..Default::default()
        }),
    });
    request.metadata_mut().insert("authorization", jwt.clone());
    let answer = client.register(request).await.unwrap().into_inner();
    assert!(answer.success);
    assert_eq!(answer.domain, "node-7.toggle.test");
    assert_eq!(answer.message, "registered; cpu 12.5");

    // Connect: Toggle sends a command down the stream, the node answers, Toggle acks.
    let (to_toggle, node_stream) = tokio::sync::mpsc::channel::<pb::RodentRequest>(4);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(node_stream));
    request.metadata_mut().insert("authorization", jwt);
    let mut from_toggle = client.connect(request).await.unwrap().into_inner();
    let command = tokio::time::timeout(std::time::Duration::from_secs(10), from_toggle.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(pb::toggle_request::Payload::Command(cmd)) = command.payload else {
        panic!("expected a command, got {command:?}");
    };
    assert_eq!(cmd.command_type, "system.status");
    for i in 0..3 {
        to_toggle
            .send(pb::RodentRequest {
                request_id: format!("r{i}"),
                payload: Some(pb::rodent_request::Payload::CommandResponse(
                    pb::CommandResponse {
                        request_id: command.request_id.clone(),
                        success: true,
                        message: format!("status {i}"),
                        payload: br#"{"ok":true}"#.to_vec().into(),
                        error: None,
                    },
                )),
            })
            .await
            .unwrap();
        let ack = tokio::time::timeout(std::time::Duration::from_secs(10), from_toggle.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ack.request_id, format!("ack-r{i}"), "{ack:?}");
    }
    drop(to_toggle);
    let seen = toggle.recorder.from_nodes.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        *toggle.recorder.seen_auth.lock().unwrap(),
        ["Bearer agent-jwt-123", "Bearer agent-jwt-123"],
        "the agent's token reached Toggle on both calls"
    );

    // SendEvents on the same address is weir's own.
    let answer = client
        .send_events(batch_of("b", vec![transfer("s1", EventLevel::Info)]))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.success);
    assert_eq!(
        toggle.recorder.count(),
        0,
        "SendEvents went to the routes, not upstream"
    );
    assert_eq!(
        weir.jsonl("out.jsonl").len(),
        1,
        "delivered before the answer"
    );

    // Toggle gone: the pass-through answers UNAVAILABLE, SendEvents still works.
    toggle.stop().await;
    let status = client
        .register(pb::RegisterRequest::default())
        .await
        .expect_err("upstream down");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let answer = client
        .send_events(batch_of("c", vec![transfer("s2", EventLevel::Info)]))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.success);
}
