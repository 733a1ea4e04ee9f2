//! A token's expiry means something after `$connect`: live delivery to a
//! connection whose token expired stops with a `token_expired` error, joins
//! and acks are refused with it, and a client with a token provider comes
//! back on a fresh token without losing its place.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use agentwire_client::{Backoff, Client, ClientEvent, Options};
use agentwire_core::clock::ManualClock;
use agentwire_e2e::{Stack, StackOptions};
use serde_json::json;

/// A token valid for `ttl` from the stack's now (plus the gateway's 5 s leeway).
fn mint(stack: &Stack, ch: &str, ttl: u64) -> String {
    let now = stack.clock.epoch_s();
    stack.token_with("ida", &[ch], now - 60, Duration::from_secs(60 + ttl))
}

/// A stack whose gateway reads `clock`: the test moves it past a token's
/// expiry instead of waiting.
async fn stack_on(clock: &Arc<ManualClock>) -> Stack {
    Stack::start_with(StackOptions {
        clock: Some(clock.clone()),
        ..StackOptions::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_stops_at_expiry_and_the_provider_resumes_it_from_the_last_seq() {
    let clock = Arc::new(ManualClock::new());
    let stack = Arc::new(stack_on(&clock).await);
    let ch = "agent-exp";
    let provider = {
        let stack = stack.clone();
        move || {
            let t = mint(&stack, ch, 1);
            async move { Ok::<_, String>(t) }
        }
    };
    let mut c = Client::builder()
        .url(stack.gateway.ws_url())
        .token_provider(provider)
        .channel(ch)
        .options(Options {
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
            ..Options::default()
        })
        .connect()
        .unwrap();
    let (mut seqs, mut gaps, mut connected, mut reasons) = (Vec::new(), 0, 0, Vec::new());
    let next = async |c: &mut Client| {
        tokio::time::timeout(Duration::from_secs(20), c.next())
            .await
            .expect("an event within 20 s")
            .expect("the client runs")
    };
    // Joined on the first connection, then seq 1 live.
    loop {
        if let ClientEvent::Joined { .. } = next(&mut c).await {
            break;
        }
    }
    stack.publish(ch, "tick", json!({ "i": 1 })).await;
    while seqs.is_empty() {
        if let ClientEvent::Event(e) = next(&mut c).await {
            seqs.push(e.seq);
        }
    }
    // The token (1 s + 5 s leeway) runs out while connected.
    clock.advance(Duration::from_secs(7));
    stack.publish(ch, "tick", json!({ "i": 2 })).await;
    while seqs.len() < 2 {
        match next(&mut c).await {
            ClientEvent::Event(e) => seqs.push(e.seq),
            ClientEvent::Gap { .. } => gaps += 1,
            ClientEvent::Connected { .. } => connected += 1,
            ClientEvent::Disconnected { reason } => reasons.push(reason),
            _ => {}
        }
    }
    assert_eq!(seqs, vec![1, 2], "nothing lost, nothing twice");
    assert_eq!(gaps, 0);
    assert_eq!(connected, 1, "one reconnect, on a fresh token");
    // The client refreshes in band before `exp`; the provider here only
    // ever mints tokens expiring a second on, so the connection ends on
    // the expiry (a `token_expired` frame, or the last refresh refused for
    // it) and the client comes back on a fresh token.
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("token expired") || r.contains("(token_expired)")),
        "{reasons:?}"
    );
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_connection_is_refused_joins_and_acks_with_token_expired() {
    let clock = Arc::new(ManualClock::new());
    let stack = stack_on(&clock).await;
    let ch = "agent-exp2";
    let mut ws = stack.client(&mint(&stack, ch, 1)).await;
    ws.hello().await;
    stack.publish(ch, "tick", json!({ "i": 1 })).await;
    clock.advance(Duration::from_secs(7));
    let answer = ws.join(json!([ch])).await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "token_expired", "{answer}");
    ws.ack(ch, 1).await;
    let answer = ws.recv().await;
    assert_eq!(answer["code"], "token_expired", "{answer}");
    stack.shutdown().await;
}
