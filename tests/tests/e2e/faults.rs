//! Faults injected by the dev gateway: the functions meet throttling, 5xx
//! and time-outs from AWS, and failing `@connections` posts. Transient
//! failures are retried, never dead-lettered, and the channel's order
//! holds; only a poison message reaches the dead-letter queue, with its
//! reason; a client whose posts fail at random still gets every event
//! once, in order.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agentwire_client::{Backoff, Client, ClientEvent, Options};
use agentwire_e2e::Stack;
use agentwire_local::faults::FaultSettings;
use serde_json::json;

fn injected(stack: &Stack, key: &str) -> u64 {
    stack
        .gateway
        .faults()
        .injected()
        .get(key)
        .copied()
        .unwrap_or(0)
}

/// Every commit throttled (after the SDK's own retries) for at least three
/// receives of the messages: the dispatcher's rule that dead-letters a
/// message failing for good from its third receive must not take them.
/// Then the store recovers: each event commits once, in publish order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_commits_are_retried_in_order_and_never_dead_lettered() {
    let stack = Stack::start().await;
    let ch = "agent-throttled";
    let mut c = stack.client(&stack.token("ana", &[ch])).await;
    c.hello().await;
    assert_eq!(c.join(json!([ch])).await["type"], "joined");

    stack
        .gateway
        .faults()
        .set(
            FaultSettings::parse(r#"{"aws": {"dynamodb:TransactWriteItems": {"throttle": 1}}}"#)
                .unwrap(),
        )
        .unwrap();
    let group = format!("{}#{ch}", stack.tenant);
    for i in 0..5 {
        if i == 2 {
            // A poison message in the same group: dead-lettered at once.
            stack
                .send_raw(r#"{"tenant":"bad"}"#, &group, "poison")
                .await;
        }
        let id = format!("e{i}");
        stack
            .send_raw(
                &stack.envelope(ch, &id, "step", json!({ "i": i })),
                &group,
                &id,
            )
            .await;
    }
    // Each receive of a message makes at least one transaction (the SDK
    // tries it 3 times): 45 throttled attempts over 5 messages mean some
    // message was received at least 3 times.
    let key = "dynamodb:TransactWriteItems throttle";
    assert!(
        stack
            .eventually(Duration::from_secs(120), || async {
                injected(&stack, key) >= 45
            })
            .await,
        "throttled attempts: {}",
        injected(&stack, key)
    );
    stack
        .gateway
        .faults()
        .set(FaultSettings::default())
        .unwrap();

    let events = c.events(5).await;
    let got: Vec<(u64, u64)> = events
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e["data"]["i"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        got,
        [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4)],
        "once each, in order"
    );

    // All five committed, so none of them was dead-lettered: the DLQ holds
    // the poison message alone, with its reason.
    let dead = stack.drain_dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, r#"{"tenant":"bad"}"#);
    let reason = &dead[0].1;
    assert!(reason.starts_with("invalid_event"), "{reason}");
    stack.shutdown().await;
}

/// Posts answered 429, 500 or 410 at random (beyond the dispatcher's
/// retries for some), 5xx and time-outs from DynamoDB's reads: the client
/// reconnects when a post is given up on, resumes, and has every event
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_posts_fail_at_random_gets_every_event_once_in_order() {
    let stack = Stack::start().await;
    let ch = "agent-flaky";
    let mut c = Client::builder()
        .url(stack.gateway.ws_url())
        .token(stack.token("ana", &[ch]))
        .channel_since(ch, agentwire_protocol::Since::Head)
        .options(Options {
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(500)),
            ack_debounce: None,
            ..Options::default()
        })
        .connect()
        .unwrap();
    while !matches!(next(&mut c).await, ClientEvent::Joined { .. }) {}

    stack
        .gateway
        .faults()
        .set(
            FaultSettings::parse(
                r#"{"aws": {"dynamodb:Query": {"5xx": 0.2, "timeout": 0.1}},
                    "connections": {"429": 0.3, "500": 0.2, "410": 0.02}}"#,
            )
            .unwrap(),
        )
        .unwrap();
    // One event at a time, the next once the client has the last: each
    // is its own post (no batch), so each meets the faults.
    let published = 40u64;
    let mut seqs = Vec::new();
    let mut connected = 0;
    for i in 1..=published {
        stack.publish(ch, "tick", json!({ "i": i })).await;
        while seqs.last() != Some(&i) {
            match next(&mut c).await {
                ClientEvent::Event(e) => seqs.push(e.seq),
                ClientEvent::Connected { .. } => connected += 1,
                ClientEvent::Gap { from, to, .. } => {
                    panic!("a gap {from}..{to}: nothing expired")
                }
                _ => {}
            }
        }
    }
    let faults = stack.gateway.faults().injected();
    stack
        .gateway
        .faults()
        .set(FaultSettings::default())
        .unwrap();
    assert_eq!(
        seqs,
        (1..=published).collect::<Vec<_>>(),
        "once each, in order"
    );
    let posts_failed: u64 = ["connections 429", "connections 500", "connections 410"]
        .iter()
        .map(|k| faults.get(*k).copied().unwrap_or(0))
        .sum();
    assert!(posts_failed > 0, "faults were injected: {faults:?}");
    println!("injected {faults:?}; reconnections {connected}");
    c.close().await;
    stack.shutdown().await;
}

async fn next(c: &mut Client) -> ClientEvent {
    tokio::time::timeout(Duration::from_secs(30), c.next())
        .await
        .expect("an event within 30 s")
        .expect("the client runs")
}

/// The rates are set over HTTP while the gateway runs, and read back with
/// what was injected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_rates_are_changed_while_running_over_http() {
    let stack = Stack::start().await;
    let http = reqwest::Client::new();
    let base = stack.gateway.http_url();
    let set = |body: serde_json::Value| {
        let http = http.clone();
        let url = format!("{base}/@dev/settings");
        async move { http.post(url).body(body.to_string()).send().await.unwrap() }
    };
    // The commit's writes and the queue, its fallback, all throttled.
    let ok = set(json!({"faults": {"aws": {
        "sqs:SendMessage": {"throttle": 1.0},
        "dynamodb:PutItem": {"throttle": 1.0},
        "dynamodb:TransactWriteItems": {"throttle": 1.0}
    }}}))
    .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(
        stack.gateway.faults().settings().aws["sqs:SendMessage"].throttle,
        1.0
    );
    // The publish function can neither commit nor queue: a 503, retryable.
    let (status, _, body) = stack
        .http(
            reqwest::Method::POST,
            "/v1/channels/agent-1/events",
            Some(&stack.publisher_token("bot", &["agent-*"])),
            Some(&json!({"kind": "k", "data": {}})),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    let bad = set(json!({"faults": {"aws": {"*": {"throttle": 1.5}}}})).await;
    assert_eq!(bad.status(), 400);
    let read: serde_json::Value = serde_json::from_str(
        &http
            .get(format!("{base}/@dev/faults"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(
        read["injected"]["dynamodb:PutItem throttle"]
            .as_u64()
            .unwrap_or(0)
            + read["injected"]["dynamodb:TransactWriteItems throttle"]
                .as_u64()
                .unwrap_or(0)
            >= 1,
        "{read}"
    );
    assert_eq!(read["settings"]["aws"]["sqs:SendMessage"]["throttle"], 1.0);
    set(json!({"faults": {}})).await;
    stack.shutdown().await;
}
