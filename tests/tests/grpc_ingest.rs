//! The gRPC (Toggle) source against the real binary, with a tonic client: valid events
//! arrive as CloudEvents that map back exactly, invalid ones are refused one by one with
//! reasons, oversize batches are refused whole.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use weir::toggle::mapping::from_cloudevent;
use weir::toggle::pb::{
    self, event::Payload, toggle_events_client::ToggleEventsClient, EventCategory, EventLevel,
};

fn transfer(id: &str, level: EventLevel) -> pb::Event {
    pb::Event {
        event_id: id.into(),
        level: level as i32,
        category: EventCategory::Storage as i32,
        source: "rodent://node-1".into(),
        timestamp_ms: 1_763_800_000_000,
        metadata: [("transfer_id".to_owned(), id.to_owned())].into(),
        payload: Some(Payload::StorageTransfer(pb::StorageTransferPayload {
            source: "tank/a@s1".into(),
            destination: "backup/a".into(),
            size_bytes: 4096,
            operation: 1,
            error: String::new(),
        })),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn toggle_batches_flow_as_cloudevents_and_bad_events_are_refused_with_reasons() {
    let config = format!(
        "grpc:\n  listen: 127.0.0.1:0\n  max_batch_events: 100\nfilters:\n{}\
sinks:\n  out: {{ type: file, path: out.jsonl }}\n\
routes:\n  - name: toggle\n    from: [grpc]\n    filters: [severity]\n    to: [out]\n",
        filter_yaml("severity", wasm::SEVERITY, "{ min: warning }"),
    );
    let weir = Weir::start(&config);
    let url = weir.grpc_url().expect("grpc listener announced");
    let mut client = ToggleEventsClient::connect(url).await.unwrap();

    let warn = transfer("w1", EventLevel::Warn);
    let info = transfer("i1", EventLevel::Info);
    let unknown_category = pb::Event {
        category: 42,
        ..transfer("bad-cat", EventLevel::Error)
    };
    let no_payload = pb::Event {
        payload: None,
        ..transfer("no-payload", EventLevel::Error)
    };
    let no_id = pb::Event {
        event_id: String::new(),
        ..transfer("", EventLevel::Error)
    };
    let batch = pb::EventBatch {
        batch_id: "b1".into(),
        events: vec![warn.clone(), unknown_category, info, no_payload, no_id],
    };
    let answer = client.send_events(batch).await.unwrap().into_inner();
    assert_eq!((answer.accepted, answer.rejected), (2, 3), "{answer:?}");
    assert!(
        answer.errors[0].starts_with("bad-cat: ")
            && answer.errors[0].contains("unknown category 42"),
        "{answer:?}"
    );
    assert!(
        answer.errors[1].contains("`payload` is required"),
        "{answer:?}"
    );
    assert!(
        answer.errors[2].contains("`event_id` is required"),
        "{answer:?}"
    );

    // A stream of batches.
    let critical = transfer("c1", EventLevel::Critical);
    let stream = tokio_stream_of(vec![
        pb::EventBatch {
            batch_id: "b2".into(),
            events: vec![critical.clone()],
        },
        pb::EventBatch {
            batch_id: "b3".into(),
            events: vec![transfer("i2", EventLevel::Info)],
        },
    ]);
    let answer = client.stream_events(stream).await.unwrap().into_inner();
    assert_eq!((answer.accepted, answer.rejected), (2, 0));

    // Too large: refused whole.
    let big = pb::EventBatch {
        batch_id: "big".into(),
        events: (0..101)
            .map(|i| transfer(&format!("x{i}"), EventLevel::Error))
            .collect(),
    };
    let status = client.send_events(big).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status
        .message()
        .contains("101 events exceeds the limit of 100"));

    // Only WARN and CRITICAL passed the severity filter; they map back exactly.
    let out = weir.jsonl("out.jsonl");
    assert_eq!(out.len(), 2, "{out:?}");
    let back: Vec<pb::Event> = out
        .iter()
        .map(|line| {
            let ce = weir::cloudevents::json::parse_event(line.to_string().as_bytes()).unwrap();
            assert_eq!(ce.ty, "io.toggle.storage.transfer");
            from_cloudevent(&ce).unwrap()
        })
        .collect();
    assert_eq!(back, vec![warn, critical]);
}

fn tokio_stream_of(
    batches: Vec<pb::EventBatch>,
) -> impl tonic::codegen::tokio_stream::Stream<Item = pb::EventBatch> {
    tonic::codegen::tokio_stream::iter(batches)
}
