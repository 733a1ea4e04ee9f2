//! Crowds reconnect without losing anything: a thousand clients on one
//! channel, all dropped at once by the gateway while the channel publishes,
//! each resume from its last seq and end with every seq exactly once, in
//! order. The time until the last one is back is printed (not asserted:
//! speed is measured in the bench, not timed in tests).
//!
//! A binary of its own, so that `cargo test` runs it alone: a thousand
//! clients reconnecting at once saturate the shared local endpoint (its
//! accept queue overflows and calls time out while connecting), and the
//! e2e tests running beside it would measure that load instead of their
//! own behaviour (a 20 s stalled subscriber, say, waits out redeliveries
//! that the storm caused).
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agentwire_client::{Client, ClientEvent, Options};
use agentwire_e2e::Stack;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What one client saw: its seqs in order, its gaps, and when it was
/// joined again after the drop.
#[derive(Debug, Default)]
struct Seen {
    seqs: Vec<u64>,
    gaps: usize,
    rejoined_at: Option<Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_dropped_at_once_all_resume_with_every_seq_once_in_order() {
    const CLIENTS: usize = 1000;
    const EVENTS: u64 = 20;
    let stack = Stack::start().await;
    let ch = "storm";
    let token = stack.token("crowd", &[ch]);

    // Every client joined before anything is published.
    let (joined_tx, mut joined_rx) = mpsc::unbounded_channel::<()>();
    let mut tasks = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut c = Client::builder()
            .url(stack.gateway.ws_url())
            .token(token.clone())
            .channel(ch)
            .options(Options {
                ack_debounce: None,
                ..Options::default()
            })
            .connect()
            .unwrap();
        let joined_tx = joined_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut joins = 0;
            while (seen.seqs.len() as u64) < EVENTS {
                // A hang guard, not a speed check: with the endpoint
                // saturated, a client's connects time out and it backs off
                // (up to 30 s between attempts) before it is back.
                let ev = tokio::time::timeout(Duration::from_secs(300), c.next())
                    .await
                    .expect("an event within 300 s")
                    .expect("the client runs");
                match ev {
                    ClientEvent::Joined { .. } => {
                        joins += 1;
                        if joins == 1 {
                            let _ = joined_tx.send(());
                        } else {
                            seen.rejoined_at.get_or_insert_with(Instant::now);
                        }
                    }
                    ClientEvent::Event(e) => seen.seqs.push(e.seq),
                    ClientEvent::Gap { .. } => seen.gaps += 1,
                    _ => {}
                }
            }
            c.close().await;
            seen
        }));
    }
    drop(joined_tx);
    for _ in 0..CLIENTS {
        tokio::time::timeout(Duration::from_secs(180), joined_rx.recv())
            .await
            .expect("every client joins within 180 s")
            .expect("a client ended before joining");
    }

    // Half the events, then the gateway drops every connection at once,
    // then the rest while the crowd reconnects.
    for i in 1..=EVENTS / 2 {
        stack.publish(ch, "tick", json!({ "i": i })).await;
    }
    let dropped_at = Instant::now();
    stack.gateway.hub().close_all(1001, "Going away");
    for i in EVENTS / 2 + 1..=EVENTS {
        stack.publish(ch, "tick", json!({ "i": i })).await;
    }

    let mut last_back = dropped_at;
    let mut resumed = 0;
    for t in tasks {
        let seen = t.await.unwrap();
        assert_eq!(
            seen.seqs,
            (1..=EVENTS).collect::<Vec<_>>(),
            "every seq once, in order"
        );
        assert_eq!(seen.gaps, 0);
        if let Some(at) = seen.rejoined_at {
            resumed += 1;
            last_back = last_back.max(at);
        }
    }
    assert_eq!(resumed, CLIENTS, "every client was dropped and came back");
    println!(
        "{CLIENTS} clients dropped at once: all joined again after {:.1} s",
        (last_back - dropped_at).as_secs_f64()
    );
    stack.shutdown().await;
}
