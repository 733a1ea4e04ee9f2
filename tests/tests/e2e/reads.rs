//! The HTTP API's reads and batch publish on the local stack, through the
//! real publish function: history in pages up to the head with the gap
//! when the start is no longer retained, presence of a joined client, a
//! channel's state, and a batch that is all or nothing.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use agentwire_core::clock::{Clock, ManualClock};
use agentwire_e2e::{Stack, StackOptions};
use serde_json::{Value, json};

fn seqs(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_presence_and_the_channel_are_read_over_http() {
    let stack = Stack::start().await;
    let reader = stack.token("ui", &["agent-*"]);
    let mut sub = stack.client(&stack.token("viewer", &["agent-*"])).await;
    sub.hello().await;
    let joined = sub.join(json!(["agent-1"])).await;
    assert_eq!(joined["type"], "joined");
    for i in 1..=5 {
        stack.publish("agent-1", "status", json!({ "i": i })).await;
    }
    let live = sub.events(5).await;
    let epoch = live[4]["epoch"].as_str().unwrap().to_owned();

    // Paged: 2, 2, 1, following next_after to the head.
    let mut after = 0;
    let mut pages = vec![];
    loop {
        let (status, page) = stack
            .http_get(
                &reader,
                &format!("/v1/channels/agent-1/events?after={after}&limit=2"),
            )
            .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(
            (page["head"].as_u64(), page["oldest"].as_u64()),
            (Some(5), Some(1))
        );
        assert_eq!(page["epoch"], epoch.as_str());
        assert_eq!(page["gap"], Value::Null);
        pages.push(seqs(&page));
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(pages, vec![vec![1, 2], vec![3, 4], vec![5]]);
    let (_, page) = stack.http_get(&reader, "/v1/channels/agent-1/events").await;
    let first = &page["events"][0];
    assert_eq!(first["data"], json!({"i": 1}));
    assert_eq!(first["id"], live[0]["id"]);
    assert_eq!(first["kind"], "status");

    let (status, presence) = stack
        .http_get(&reader, "/v1/channels/agent-1/presence")
        .await;
    assert_eq!(status, 200, "{presence}");
    assert_eq!(
        presence,
        json!({"channel": "agent-1", "count": 1, "principals": ["viewer"]})
    );
    let (status, info) = stack.http_get(&reader, "/v1/channels/agent-1").await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(
        (info["head"].as_u64(), info["epoch"].as_str()),
        (Some(5), Some(epoch.as_str()))
    );
    assert_eq!(
        info["retention_s"].as_u64(),
        Some(stack.config.retention.as_secs())
    );
    assert_eq!(info["webhook"], Value::Null);

    // Refusals: typed, never a 500.
    let (status, e) = stack.http_get(&reader, "/v1/channels/ops/events").await;
    assert_eq!((status, e["code"].as_str()), (403, Some("forbidden")));
    let (status, e) = stack
        .http_get(&reader, "/v1/channels/agent-1/events?limit=0")
        .await;
    assert_eq!((status, e["code"].as_str()), (400, Some("invalid_request")));
    let (status, _, e) = stack
        .http(
            reqwest::Method::GET,
            "/v1/channels/agent-1/presence",
            None,
            None,
        )
        .await;
    assert_eq!((status, e["code"].as_str()), (401, Some("unauthorized")));
    let publisher = stack.publisher_token("bot", &["agent-*"]);
    let (status, e) = stack.http_get(&publisher, "/v1/channels/agent-1").await;
    assert_eq!(
        (status, e["code"].as_str()),
        (403, Some("forbidden")),
        "a publish grant does not read"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_from_before_the_retained_start_reports_the_gap() {
    let clock = Arc::new(ManualClock::new());
    let stack = Stack::start_with(StackOptions {
        clock: Some(clock.clone()),
        retention: Some(Duration::from_secs(60)),
        ..StackOptions::default()
    })
    .await;
    let reader = stack.token_with(
        "ui",
        &["agent-*"],
        clock.epoch_s(),
        Duration::from_secs(3600),
    );
    for i in 1..=3 {
        stack.publish("agent-2", "status", json!({ "i": i })).await;
    }
    assert!(
        stack
            .eventually(Duration::from_secs(20), || async {
                stack.stored_events("agent-2").await.len() == 3
            })
            .await
    );
    clock.advance(Duration::from_secs(120)); // 1-3 are past their retention
    for i in 4..=5 {
        stack.publish("agent-2", "status", json!({ "i": i })).await;
    }
    assert!(
        stack
            .eventually(Duration::from_secs(20), || async {
                stack.stored_events("agent-2").await.len() == 5
            })
            .await
    );
    let (status, page) = stack
        .http_get(&reader, "/v1/channels/agent-2/events?after=1")
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["gap"], json!({"from": 2, "to": 3}));
    assert_eq!(page["oldest"].as_u64(), Some(4));
    assert_eq!(seqs(&page), vec![4, 5]);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_published_all_or_nothing_and_delivered_in_order() {
    let stack = Stack::start().await;
    let mut sub = stack.client(&stack.token("viewer", &["agent-*"])).await;
    sub.hello().await;
    assert_eq!(sub.join(json!(["agent-3"])).await["type"], "joined");
    let publisher = stack.publisher_token("bot", &["agent-*"]);
    let batch = |events: Value| json!({ "events": events });

    // One bad event: 400, nothing enqueued.
    let (status, _, e) = stack
        .http(
            reqwest::Method::POST,
            "/v1/channels/agent-3/events:batch",
            Some(&publisher),
            Some(&batch(json!([{"kind": "a", "id": "b-1"}, {"kind": ""}]))),
        )
        .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("invalid_event")),
        "{e}"
    );

    let (status, _, ok) = stack
        .http(
            reqwest::Method::POST,
            "/v1/channels/agent-3/events:batch",
            Some(&publisher),
            Some(&batch(json!([
                {"kind": "a", "data": 1, "id": "b-1"},
                {"kind": "b", "data": 2, "id": "b-2"},
                {"kind": "c", "data": 3}
            ]))),
        )
        .await;
    assert_eq!(status, 201, "{ok}");
    let seqs: Vec<u64> = ok["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3], "{ok}");
    let ids: Vec<String> = ok["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    // The keys behind the publisher's tag.
    let scoped = |k| agentwire_core::usecases::publish::publisher_scoped_id("bot", k).unwrap();
    assert_eq!(&ids[..2], [scoped("b-1"), scoped("b-2")]);
    // The same batch again (a client's retry): committed once.
    let (status, _, _) = stack
        .http(
            reqwest::Method::POST,
            "/v1/channels/agent-3/events:batch",
            Some(&publisher),
            Some(&batch(json!([
                {"kind": "a", "data": 1, "id": "b-1"},
                {"kind": "b", "data": 2, "id": "b-2"}
            ]))),
        )
        .await;
    assert_eq!(status, 200, "every key already committed: a repeat");
    // A marker after the retry: what arrives before it is the batch, each
    // event with its one seq (a repeat is delivered again with its seq, as
    // a redelivered message is; clients drop what they have by seq).
    let marker = stack.publish("agent-3", "marker", json!({})).await;
    let mut got = sub
        .frames_until(|f| f.iter().any(|e| e["id"] == marker.as_str()))
        .await
        .into_iter()
        .filter(|e| e["type"] == "event")
        .collect::<Vec<_>>();
    got.sort_by_key(|e| e["seq"].as_u64());
    got.dedup_by_key(|e| e["seq"].as_u64());
    let kinds: Vec<&str> = got.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["a", "b", "c", "marker"]);
    let got_ids: Vec<&str> = got[..3].iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(got_ids, ids.iter().map(String::as_str).collect::<Vec<_>>());
    stack.shutdown().await;
}
