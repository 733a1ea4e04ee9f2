//! Big and stable channels on the real path (issue 14, parts 2 and 5):
//! a channel at or above the fan-out threshold is posted to by the fan-out
//! function, one job per shard range, and every client still gets every
//! seq; a stable channel's subscribers are listed once, not per event, and
//! clients that join while events are being committed miss nothing after
//! the head their `joined` named. Raw WebSocket clients: a seq missed live
//! would never arrive (they do not recover from the log), so the wait for
//! it fails the test.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use agentwire_core::usecases::FanoutPolicy;
use agentwire_e2e::{Stack, StackOptions, WsClient};
use serde_json::json;

/// Every seq in `from..=to` among the event frames of `frames`.
fn has_all(frames: &[serde_json::Value], from: u64, to: u64) -> bool {
    let seen: BTreeSet<u64> = frames
        .iter()
        .filter(|f| f["type"] == "event")
        .filter_map(|f| f["seq"].as_u64())
        .collect();
    (from..=to).all(|s| seen.contains(&s))
}

/// A client joined to `ch`, the head its `joined` named, and the events
/// that arrived before `joined` did (a live post may overtake the answer).
async fn joined(stack: &Stack, token: &str, ch: &str) -> (WsClient, u64, Vec<serde_json::Value>) {
    let mut c = stack.client(token).await;
    c.hello().await;
    c.send_json(json!({"action":"join","id":"j","channels":[ch]}))
        .await;
    let mut frames = c
        .frames_until(|f| f.last().is_some_and(|v| v["type"] != "event"))
        .await;
    let j = frames.pop().expect("an answer");
    assert_eq!(j["type"], "joined", "{j}");
    let head = j["channels"][0]["head"].as_u64().expect("head");
    (c, head, frames)
}

#[tokio::test]
async fn a_big_channel_is_fanned_out_by_shard_and_every_client_gets_every_seq() {
    const CLIENTS: usize = 12;
    const EVENTS: u64 = 30;
    let stack = Stack::start_with(StackOptions {
        count_dynamodb_calls: true,
        fanout: Some(FanoutPolicy {
            threshold: 8,
            per_job: 3,
        }),
        ..StackOptions::default()
    })
    .await;
    let ch = "fleet";
    let token = stack.token("agent", &[ch]);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (c, head, early) = joined(&stack, &token, ch).await;
        assert_eq!((head, early.len()), (0, 0));
        clients.push(c);
    }
    stack.calls.reset();
    // Every other event over HTTP: the publish function commits it and
    // hands the big channel to the fan-out queue as the dispatcher does.
    let publisher = stack.publisher_token("bot", &[ch]);
    for n in 0..EVENTS {
        if n % 2 == 0 {
            stack.publish(ch, "config", json!({"n": n})).await;
        } else {
            let body = json!({"kind": "config", "data": {"n": n}});
            let (status, _, answer) = stack.post_event(&publisher, ch, &body).await;
            assert_eq!(status, 201, "{answer}");
        }
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let frames = c.frames_until(|f| has_all(f, 1, EVENTS)).await;
        let seqs: Vec<u64> = frames.iter().filter_map(|f| f["seq"].as_u64()).collect();
        assert!(
            seqs.iter().all(|s| (1..=EVENTS).contains(s)),
            "client {i}: {seqs:?}"
        );
    }
    let calls = stack.calls.by_table();
    // 12 subscribers at 3 per job: 4 jobs per committed run, each one
    // shard-range Query by the fan-out function; neither the dispatcher nor
    // the publish function lists anyone.
    assert!(
        calls
            .get("fanout:Query:agentwire-subscriptions")
            .copied()
            .unwrap_or(0)
            >= 4,
        "{calls:?}"
    );
    for f in ["dispatcher", "publish"] {
        assert_eq!(
            calls.get(&format!("{f}:Query:agentwire-subscriptions")),
            None,
            "{calls:?}"
        );
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn a_stable_channel_is_not_re_listed_and_joins_during_commits_miss_nothing() {
    const STABLE: usize = 10;
    const WARM: u64 = 5;
    const RACE_EVENTS: u64 = 60;
    const JOINERS: usize = 20;
    let stack = Stack::start_with(StackOptions {
        count_dynamodb_calls: true,
        ..StackOptions::default()
    })
    .await;
    let ch = "dashboard";
    let token = stack.token("operator", &[ch]);
    let mut stable = Vec::new();
    for _ in 0..STABLE {
        stable.push(joined(&stack, &token, ch).await.0);
    }

    // A stable channel: after the first run lists it, each run reads the
    // membership item only.
    stack.publish(ch, "warm", json!({})).await;
    for c in stable.iter_mut() {
        c.frames_until(|f| has_all(f, 1, 1)).await;
    }
    stack.calls.reset();
    for n in 1..WARM {
        stack.publish(ch, "tick", json!({"n": n})).await;
    }
    for c in stable.iter_mut() {
        c.frames_until(|f| has_all(f, 2, WARM)).await;
    }
    let calls = stack.calls.by_function();
    let items = stack.calls.items_by_function();
    assert_eq!(calls.get("dispatcher:Query"), None, "{calls:?}");
    let gets = calls.get("dispatcher:GetItem").copied().unwrap_or(0);
    // Per run: the channel's head, the membership, the channel's and the
    // tenant's webhook.
    assert!(
        gets <= 4 * (WARM - 1),
        "no more than four item reads per run: {calls:?} {items:?}"
    );
    eprintln!(
        "stable channel, {} runs: calls {calls:?}, items {items:?}",
        WARM - 1
    );

    // Joins while events are being committed: each joiner must get every
    // seq after the head its `joined` named, live.
    let publishing = async {
        for n in 0..RACE_EVENTS {
            stack.publish(ch, "tick", json!({"n": n})).await;
        }
    };
    // Each join once the log has grown by about three more events, so the
    // joins are spread over the commits.
    let joining = async {
        let mut joiners = Vec::new();
        for i in 0..JOINERS as u64 {
            let target = (WARM + 3 * i) as usize;
            assert!(
                stack
                    .eventually(std::time::Duration::from_secs(30), || async {
                        stack.stored_events(ch).await.len() >= target
                    })
                    .await,
                "the log reached {target} events"
            );
            joiners.push(joined(&stack, &token, ch).await);
        }
        joiners
    };
    let ((), mut joiners) = tokio::join!(publishing, joining);
    let last = WARM + RACE_EVENTS;
    let heads: Vec<u64> = joiners.iter().map(|(_, h, _)| *h).collect();
    assert!(
        heads.iter().any(|h| *h > WARM && *h < last),
        "some joins happened while the channel was being committed: {heads:?}"
    );
    for (c, head, early) in joiners.iter_mut() {
        let from = *head + 1;
        let early = std::mem::take(early);
        c.frames_until(|f| has_all(&[early.as_slice(), f].concat(), from, last))
            .await;
    }
    for c in stable.iter_mut() {
        c.frames_until(|f| has_all(f, WARM + 1, last)).await;
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn the_dev_gateway_settings_change_while_running_and_refuse_bad_input() {
    let stack = Stack::start().await;
    let url = format!("{}/@dev/settings", stack.gateway.http_url());
    let http = reqwest::Client::new();
    let post = |body: &'static str| http.post(&url).body(body).send();
    let ok =
        post(r#"{"connections_latency_ms": 30, "fanout_threshold": 2, "fanout_invocations": 3}"#)
            .await
            .unwrap();
    assert_eq!(ok.status(), 200);
    let now: serde_json::Value = serde_json::from_str(&ok.text().await.unwrap()).unwrap();
    assert_eq!(
        (
            now["connections_latency_ms"].as_u64(),
            now["connections_jitter_ms"].as_u64()
        ),
        (Some(30), Some(0))
    );
    assert_eq!(now["fanout_invocations"].as_u64(), Some(3));
    let none = post(r#"{"fanout_invocations": 0}"#).await.unwrap();
    assert_eq!(none.status(), 400);
    assert!(
        none.text().await.unwrap().contains("at least 1"),
        "a typed refusal"
    );
    let bad = post(r#"{"latency": 30}"#).await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok()),
        Some("BadRequestException")
    );
    let body: serde_json::Value = serde_json::from_str(&bad.text().await.unwrap()).unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("unknown field"),
        "{body}"
    );
    stack.shutdown().await;
}
