//! The HTTP publish route (`POST /v1/channels/{channel}/events`) on the
//! local stack: the dev gateway serves it through the real publish
//! function, which puts the event on the real events queue.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agentwire_e2e::Stack;
use serde_json::{Value, json};

async fn post(
    stack: &Stack,
    channel: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let url = format!("{}/v1/channels/{channel}/events", stack.gateway.http_url());
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let resp = req.send().await.expect("the gateway answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body, got {text:?}"));
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_event_reaches_a_subscriber() {
    let stack = Stack::start().await;
    let mut sub = stack.client(&stack.token("viewer", &["agent-*"])).await;
    sub.hello().await;
    assert_eq!(sub.join(json!(["agent-1"])).await["type"], "joined");
    let token = stack.publisher_token("bot", &["agent-*"]);
    let body = json!({"kind": "status", "data": {"text": "over HTTP"}});
    let (status, answer) = post(
        &stack,
        "agent-1",
        Some(&token),
        None,
        body.to_string().into_bytes(),
    )
    .await;
    // Committed by the publish function itself: the answer has the seq.
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["seq"], 1, "{answer}");
    assert!(
        answer["epoch"].as_str().is_some_and(|e| !e.is_empty()),
        "{answer}"
    );
    let id = answer["id"].as_str().unwrap().to_owned();
    let got = sub.events(1).await;
    assert_eq!(got[0]["seq"], 1);
    assert_eq!(got[0]["epoch"], answer["epoch"]);
    assert_eq!(got[0]["id"], id.as_str());
    assert_eq!(got[0]["kind"], "status");
    assert_eq!(got[0]["data"]["text"], "over HTTP");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_twice_makes_one_event() {
    use agentwire_core::usecases::publish::publisher_scoped_id;
    let stack = Stack::start().await;
    let mut sub = stack.client(&stack.token("viewer", &["agent-*"])).await;
    sub.hello().await;
    assert_eq!(sub.join(json!(["agent-2"])).await["type"], "joined");
    let token = stack.publisher_token("bot", &["agent-2"]);
    let other_token = stack.publisher_token("bot-2", &["agent-2"]);
    let id = |k: &str| publisher_scoped_id("bot", k).unwrap();
    let body = || {
        json!({"kind": "final", "data": {"n": 1}})
            .to_string()
            .into_bytes()
    };
    let first = post(&stack, "agent-2", Some(&token), Some("order-42"), body()).await;
    let again = post(&stack, "agent-2", Some(&token), Some("order-42"), body()).await;
    assert_eq!(
        (first.0, again.0),
        (201, 200),
        "committed, then a repeat: {first:?} {again:?}"
    );
    assert_eq!((&first.1["seq"], &again.1["seq"]), (&json!(1), &json!(1)));
    assert_eq!(first.1["id"], id("order-42").as_str());
    assert_eq!(again.1["id"], id("order-42").as_str());
    // Another publisher's same key is its own event, not a retry of bot's.
    let theirs = post(
        &stack,
        "agent-2",
        Some(&other_token),
        Some("order-42"),
        body(),
    )
    .await;
    assert_eq!((theirs.0, &theirs.1["seq"]), (201, &json!(2)));
    let their_id = publisher_scoped_id("bot-2", "order-42").unwrap();
    assert_eq!(theirs.1["id"], their_id.as_str());
    let other = post(&stack, "agent-2", Some(&token), Some("order-43"), body()).await;
    assert_eq!((other.0, &other.1["seq"]), (201, &json!(3)));
    // The retry may reach the dispatcher after the first was processed (moto
    // deduplicates a FIFO message only while it is on the queue; SQS for
    // 5 minutes): it resolves to seq 1 and its frame may be sent again with
    // that seq (docs/protocol.md). One event, never a second seq.
    let got = sub
        .frames_until(|f| f.iter().any(|e| e["id"] == id("order-43").as_str()))
        .await;
    let mut events: Vec<(u64, String)> = got
        .iter()
        .filter(|e| e["type"] == "event")
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // A marker after them: once it arrives, anything the retry could still
    // have produced (a second seq) would have arrived before it.
    let marker = post(&stack, "agent-2", Some(&token), Some("marker"), body()).await;
    assert_eq!(marker.0, 201);
    let rest = sub
        .frames_until(|f| f.iter().any(|e| e["id"] == id("marker").as_str()))
        .await;
    events.extend(rest.iter().filter(|e| e["type"] == "event").map(|e| {
        (
            e["seq"].as_u64().unwrap(),
            e["id"].as_str().unwrap().to_owned(),
        )
    }));
    events.dedup();
    assert_eq!(
        events,
        vec![
            (1, id("order-42")),
            (2, their_id),
            (3, id("order-43")),
            (4, id("marker"))
        ]
    );
    assert_eq!(stack.stored_events("agent-2").await.len(), 4);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_and_a_typed_error_body() {
    let stack = Stack::start().await;
    let publisher = stack.publisher_token("bot", &["agent-*"]);
    let reader = stack.token("viewer", &["agent-*"]);
    let ok_body = || json!({"kind": "status"}).to_string().into_bytes();

    let (s, e) = post(&stack, "agent-3", Some(&reader), None, ok_body()).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (403, Some("forbidden")),
        "no publish grant: {e}"
    );
    let (s, e) = post(&stack, "agent-3", None, None, ok_body()).await;
    assert_eq!((s, e["code"].as_str()), (401, Some("unauthorized")), "{e}");
    let big = json!({"kind": "status", "data": "x".repeat(200 * 1024)})
        .to_string()
        .into_bytes();
    let (s, e) = post(&stack, "agent-3", Some(&publisher), None, big).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (413, Some("message_too_large")),
        "{e}"
    );
    let (s, e) = post(
        &stack,
        "agent-3",
        Some(&publisher),
        None,
        b"{\"kind\": ".to_vec(),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("bad_json")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("kind"), "{e}");
    // Nothing refused reached the log: a valid event after them is the
    // channel's first.
    let (s, _) = post(
        &stack,
        "agent-3",
        Some(&publisher),
        Some("marker"),
        ok_body(),
    )
    .await;
    assert_eq!(s, 201);
    assert!(
        stack
            .eventually(Duration::from_secs(20), || async {
                !stack.stored_events("agent-3").await.is_empty()
            })
            .await
    );
    assert_eq!(
        stack.stored_events("agent-3").await,
        vec![(
            1,
            agentwire_core::usecases::publish::publisher_scoped_id("bot", "marker").unwrap()
        )]
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_of_ours_answers_a_generic_message_with_a_request_id_never_internals() {
    let stack = Stack::start().await;
    // The commit cannot be made (DynamoDB throttled), and the events queue,
    // the fallback, is gone: the publish function's SendMessage fails with
    // SQS's own text (queue URL, account id).
    stack
        .gateway
        .faults()
        .set(
            serde_json::from_value(json!({"aws": {
                "dynamodb:PutItem": {"throttle": 1.0},
                "dynamodb:TransactWriteItems": {"throttle": 1.0}
            }}))
            .unwrap(),
        )
        .unwrap();
    stack
        .sqs()
        .delete_queue()
        .queue_url(&stack.queue_url)
        .send()
        .await
        .unwrap();
    let token = stack.publisher_token("bot", &["agent-*"]);
    let body = json!({"kind": "status", "data": {"text": "lost?"}});
    let (status, answer) = post(
        &stack,
        "agent-1",
        Some(&token),
        None,
        body.to_string().into_bytes(),
    )
    .await;
    assert!(status == 500 || status == 503, "{status} {answer}");
    assert_eq!(answer["code"], "internal", "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains("request id "), "{message}");
    let queue_name = stack.queue_url.rsplit('/').next().unwrap();
    for secret in [queue_name, "123456789012", "arn:", "Queue", "sqs"] {
        assert!(
            !message.contains(secret),
            "{secret:?} leaked into the client's answer: {message}"
        );
    }
    stack.shutdown().await;
}

/// A publish the publish function cannot commit now (DynamoDB throttled)
/// is refused with a retryable 503 and `Retry-After`, never parked where a
/// later event could overtake it; the publisher's retry with the same key
/// commits it once (201), and another retry resolves to it (200).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_that_cannot_be_committed_now_is_retryable_and_its_retry_is_one_event() {
    use agentwire_core::usecases::publish::publisher_scoped_id;
    let stack = Stack::start().await;
    let mut sub = stack.client(&stack.token("viewer", &["agent-*"])).await;
    sub.hello().await;
    assert_eq!(sub.join(json!(["agent-7"])).await["type"], "joined");
    let token = stack.publisher_token("bot", &["agent-*"]);
    let body = json!({"kind": "final", "data": {"n": 7}});
    let throttled: agentwire_local::faults::FaultSettings = serde_json::from_value(json!({"aws": {
        "dynamodb:PutItem": {"throttle": 1.0},
        "dynamodb:TransactWriteItems": {"throttle": 1.0}
    }}))
    .unwrap();
    stack.gateway.faults().set(throttled).unwrap();
    let send = || {
        stack.http_with(
            reqwest::Method::POST,
            "/v1/channels/agent-7/events",
            Some(&token),
            Some(&body),
            &[("idempotency-key", "order-7")],
        )
    };
    let (status, retry_after, answer) = send().await;
    assert_eq!(
        (status, retry_after.as_deref()),
        (503, Some("1")),
        "{answer}"
    );
    assert_eq!(answer["code"], "internal", "{answer}");
    let injected = stack.gateway.faults().injected();
    assert!(
        injected.keys().any(|k| k.starts_with("dynamodb:")),
        "the commit met the throttling: {injected:?}"
    );
    assert!(
        stack.stored_events("agent-7").await.is_empty(),
        "nothing committed"
    );
    // The store is back: the retry commits the event, once.
    stack.gateway.faults().set(Default::default()).unwrap();
    let (status, _, first) = send().await;
    assert_eq!((status, &first["seq"]), (201, &json!(1)), "{first}");
    let (status, _, again) = send().await;
    assert_eq!((status, &again["seq"]), (200, &json!(1)), "{again}");
    assert_eq!(again["epoch"], first["epoch"]);
    let id = publisher_scoped_id("bot", "order-7").unwrap();
    let got = sub.events(1).await;
    assert_eq!(
        (got[0]["seq"].as_u64(), got[0]["id"].as_str()),
        (Some(1), Some(id.as_str()))
    );
    assert_eq!(stack.stored_events("agent-7").await, vec![(1, id)]);
    stack.shutdown().await;
}

/// HTTP publishers (committed by the publish function, one conditional
/// put per event) and a queue publisher (committed by the dispatcher in
/// transactions) write one channel at once: the seqs are 1..=n without a
/// gap or a repeat, each event once, and each publisher's events in its
/// order. The race is made to happen: the writers interleave, and the
/// publish function's cached head goes stale each time the dispatcher
/// commits, so it is refused and catches the head up (counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_and_queue_publishers_on_one_channel_get_one_gap_free_sequence() {
    let stack = std::sync::Arc::new(
        Stack::start_with(agentwire_e2e::StackOptions {
            count_dynamodb_calls: true,
            ..Default::default()
        })
        .await,
    );
    let token = stack.publisher_token("bot", &["race"]);
    stack.calls.reset();
    let per_writer = 15;
    let mut tasks: Vec<tokio::task::JoinHandle<Vec<String>>> = Vec::new();
    for w in 0..2 {
        let (stack, token) = (stack.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..per_writer {
                let body = json!({"kind": format!("http-{w}"), "data": {"i": i}});
                let (status, _, answer) = stack.post_event(&token, "race", &body).await;
                assert!(status == 201 || status == 202, "{status} {answer}");
                ids.push(answer["id"].as_str().unwrap().to_owned());
            }
            ids
        }));
    }
    {
        let stack = stack.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..per_writer {
                ids.push(stack.publish("race", "queue", json!({"i": i})).await);
            }
            ids
        }));
    }
    let mut writers = Vec::new();
    for t in tasks {
        writers.push(t.await.unwrap());
    }
    let n = 3 * per_writer;
    assert!(
        stack
            .eventually(Duration::from_secs(60), || async {
                stack.stored_events("race").await.len() >= n
            })
            .await,
        "all {n} events committed"
    );
    let events = stack.stored_events("race").await;
    let seqs: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(
        seqs,
        (1..=n as u64).collect::<Vec<_>>(),
        "gap-free, no repeat"
    );
    let seq_of: std::collections::HashMap<&str, u64> =
        events.iter().map(|(seq, id)| (id.as_str(), *seq)).collect();
    assert_eq!(seq_of.len(), n, "each event once");
    for ids in &writers {
        let order: Vec<u64> = ids.iter().map(|id| seq_of[id.as_str()]).collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "a publisher that waits for each answer sees its events in its order: {order:?}"
        );
    }
    let calls = stack.calls.by_table();
    let caught_up = calls
        .get("publish:Query:agentwire-events")
        .copied()
        .unwrap_or(0);
    assert!(
        caught_up > 0,
        "the race happened: the publish function found its seq taken and caught the head up ({calls:?}, {:?})",
        stack.calls.by_function()
    );
    std::sync::Arc::try_unwrap(stack)
        .ok()
        .expect("the tasks are done")
        .shutdown()
        .await;
}

/// A subscriber whose connection is gone (API Gateway answers 410) is
/// pruned by the publish function's delivery, as by the dispatcher's: its
/// connection and subscription are removed and the channel's presence
/// counts no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_subscriber_met_by_an_http_publish_is_removed() {
    let stack = Stack::start().await;
    let mut sub = stack.client(&stack.token("viewer", &["agent-*"])).await;
    sub.hello().await;
    assert_eq!(sub.join(json!(["agent-5"])).await["type"], "joined");
    let reader = stack.token("ui", &["agent-*"]);
    let (_, before) = stack
        .http_get(&reader, "/v1/channels/agent-5/presence")
        .await;
    assert_eq!(before["count"], 1, "{before}");
    let gone: agentwire_local::faults::FaultSettings =
        serde_json::from_value(json!({"connections": {"410": 1.0}})).unwrap();
    stack.gateway.faults().set(gone).unwrap();
    let token = stack.publisher_token("bot", &["agent-*"]);
    let body = json!({"kind": "status", "data": {}});
    let (status, _, answer) = stack.post_event(&token, "agent-5", &body).await;
    assert_eq!(status, 201, "{answer}");
    stack.gateway.faults().set(Default::default()).unwrap();
    // The post met 410 before the answer: the subscriber is gone already.
    let (_, after) = stack
        .http_get(&reader, "/v1/channels/agent-5/presence")
        .await;
    assert_eq!(after["count"], 0, "{after}");
    let injected = stack.gateway.faults().injected();
    assert!(
        injected.get("connections 410").copied().unwrap_or(0) >= 1,
        "{injected:?}"
    );
    stack.shutdown().await;
}
