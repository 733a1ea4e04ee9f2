//! The reconnecting client (`agentwire-client`) against the local stack,
//! with faults injected through the dev gateway: dropped connections while
//! events are published, short connection lifetimes, a gateway outage
//! longer than the backoff cap, an unsupported version, and a token that
//! expires while connected.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agentwire_client::{Backoff, Client, ClientError, ClientEvent, Options, ProtocolRange};
use agentwire_e2e::{Stack, StackOptions};
use agentwire_protocol::ErrorCode;
use serde_json::json;

/// Fast reconnects for tests: 0.1 s doubling to 1 s; a handshake that
/// hangs (a port still open while the gateway shuts down) is given up
/// after 2 s.
fn quick() -> Options {
    Options {
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
        handshake_timeout: Duration::from_secs(2),
        ack_debounce: Some(Duration::from_millis(200)),
        ..Options::default()
    }
}

fn client(stack: &Stack, token: String, channel: &str, options: Options) -> Client {
    Client::builder()
        .url(stack.gateway.ws_url())
        .token(token)
        .channel(channel)
        .options(options)
        .connect()
        .unwrap()
}

/// What a client delivered, for the assertions.
#[derive(Default, Debug)]
struct Seen {
    seqs: Vec<u64>,
    /// The channel of each of `seqs`.
    channels: Vec<String>,
    /// Channels confirmed by `Joined`, in order.
    joined: Vec<String>,
    gaps: Vec<(u64, u64)>,
    /// Messages reassembled from chunks, and the ids of those lost.
    messages: Vec<agentwire_protocol::chunks::Message>,
    lost: Vec<String>,
    connected: usize,
    disconnects: Vec<String>,
    reconnecting: Vec<(u32, Duration)>,
    errors: Vec<ClientError>,
    /// Everything, in order, for failure messages.
    log: Vec<String>,
}

impl Seen {
    fn seqs_of(&self, channel: &str) -> Vec<u64> {
        self.seqs
            .iter()
            .zip(&self.channels)
            .filter(|(_, c)| *c == channel)
            .map(|(s, _)| *s)
            .collect()
    }

    fn record(&mut self, ev: ClientEvent) {
        self.log.push(match &ev {
            ClientEvent::Event(e) => format!("event {}", e.seq),
            ClientEvent::Message(m) => format!("message {} at {}", m.id, m.seq),
            other => format!("{other:?}"),
        });
        match ev {
            ClientEvent::Event(e) => {
                self.seqs.push(e.seq);
                self.channels.push(e.channel);
            }
            ClientEvent::Gap { from, to, .. } => self.gaps.push((from, to)),
            ClientEvent::Connected { .. } => self.connected += 1,
            ClientEvent::Disconnected { reason } => self.disconnects.push(reason),
            ClientEvent::Reconnecting { attempt, delay, .. } => {
                self.reconnecting.push((attempt, delay))
            }
            ClientEvent::Error(e) => self.errors.push(e),
            ClientEvent::Joined { channels } => {
                self.joined.extend(channels.into_iter().map(|c| c.name))
            }
            ClientEvent::Left { .. } => {}
            ClientEvent::Message(m) => self.messages.push(m),
            ClientEvent::MessageLost { id, .. } => self.lost.push(id),
        }
    }
}

/// Reads events until `done`, within `limit`.
async fn until(
    client: &mut Client,
    seen: &mut Seen,
    limit: Duration,
    done: impl Fn(&Seen) -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done(seen) {
        match tokio::time::timeout_at(deadline, client.next()).await {
            Ok(Some(ev)) => seen.record(ev),
            Ok(None) => panic!("the client stopped: {seen:?}"),
            Err(_) => panic!("not done within {limit:?}: {seen:?}"),
        }
    }
}

/// The first `joined` arrived: the subscription is recorded and every
/// event committed after the head it reported is delivered live.
fn joined(s: &Seen) -> bool {
    !s.joined.is_empty()
}

/// A client following `ch`, its first `joined` received.
async fn following(stack: &Stack, token: String, ch: &str, options: Options) -> (Client, Seen) {
    let mut c = client(stack, token, ch, options);
    let mut seen = Seen::default();
    until(&mut c, &mut seen, Duration::from_secs(10), joined).await;
    (c, seen)
}

/// Publishes `1..=n` to `ch`, `every` apart.
async fn publish_paced(stack: &Stack, ch: &str, n: u64, every: Duration) {
    for i in 1..=n {
        stack.publish(ch, "tick", json!({ "i": i })).await;
        tokio::time::sleep(every).await;
    }
}

/// Publishes a marker after the `n` events of `ch` and waits for it (seq
/// `n + 1`): whatever the client would deliver before it, a duplicate
/// included, has then arrived. The marker is taken off `seen`.
async fn settle(stack: &Stack, ch: &str, n: u64, c: &mut Client, seen: &mut Seen) {
    stack.publish(ch, "marker", json!({})).await;
    until(c, seen, Duration::from_secs(20), |s| {
        s.seqs.last() == Some(&(n + 1))
    })
    .await;
    seen.seqs.pop();
    seen.channels.pop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_mid_stream_lose_and_repeat_nothing() {
    let stack = Stack::start().await;
    let ch = "agent-1";
    let (mut c, mut seen) = following(&stack, stack.token("ana", &[ch]), ch, quick()).await;

    let publisher = publish_paced(&stack, ch, 60, Duration::from_millis(40));
    let consumer = async {
        for cut in [12, 30, 45] {
            until(&mut c, &mut seen, Duration::from_secs(30), |s| {
                s.seqs.len() >= cut
            })
            .await;
            stack.gateway.hub().close_all(1011, "injected fault");
        }
        until(&mut c, &mut seen, Duration::from_secs(60), |s| {
            s.seqs.len() >= 60
        })
        .await;
    };
    tokio::join!(publisher, consumer);
    settle(&stack, ch, 60, &mut c, &mut seen).await;
    assert_eq!(
        seen.seqs,
        (1..=60).collect::<Vec<u64>>(),
        "each seq once, in order"
    );
    assert!(seen.gaps.is_empty(), "no gap: {:?}", seen.gaps);
    assert!(
        seen.connected >= 4,
        "reconnected after each of 3 cuts: {seen:?}"
    );
    assert!(
        seen.disconnects.iter().any(|r| r.contains("1011")),
        "{:?}",
        seen.disconnects
    );
    assert!(seen.errors.is_empty(), "{:?}", seen.errors);
    c.close().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_maximum_connection_duration_rolls_over_without_gap_or_duplicate() {
    let mut options = StackOptions::default();
    options.gateway.max_duration = Duration::from_secs(3);
    let stack = Stack::start_with(options).await;
    let ch = "agent-2";
    let (mut c, mut seen) = following(&stack, stack.token("ben", &[ch]), ch, quick()).await;
    let publisher = publish_paced(&stack, ch, 40, Duration::from_millis(250));
    let consumer = until(&mut c, &mut seen, Duration::from_secs(60), |s| {
        s.seqs.len() >= 40
    });
    tokio::join!(publisher, consumer);
    settle(&stack, ch, 40, &mut c, &mut seen).await;
    assert_eq!(seen.seqs, (1..=40).collect::<Vec<u64>>());
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
    assert!(
        seen.connected >= 3,
        "the gateway's 3 s limit cut it several times: {seen:?}"
    );
    assert!(
        seen.disconnects.iter().all(|r| r.contains("1001")),
        "{:?}",
        seen.disconnects
    );
    c.close().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_rolls_over_by_itself_before_its_age_limit() {
    let stack = Stack::start().await;
    let ch = "agent-3";
    let options = Options {
        max_connection_age: Some(Duration::from_secs(2)),
        ..quick()
    };
    let (mut c, mut seen) = following(&stack, stack.token("cai", &[ch]), ch, options).await;
    let publisher = publish_paced(&stack, ch, 25, Duration::from_millis(250));
    let consumer = until(&mut c, &mut seen, Duration::from_secs(60), |s| {
        s.seqs.len() >= 25
    });
    tokio::join!(publisher, consumer);
    assert_eq!(seen.seqs, (1..=25).collect::<Vec<u64>>());
    assert!(seen.gaps.is_empty(), "{seen:?}");
    let rollovers = seen
        .disconnects
        .iter()
        .filter(|r| r.contains("age limit"))
        .count();
    assert!(rollovers >= 2, "{:?}", seen.disconnects);
    assert!(
        seen.reconnecting.is_empty(),
        "a rollover reconnects at once, without backoff: {:?}",
        seen.reconnecting
    );
    c.close().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_outage_longer_than_the_backoff_cap_is_survived() {
    let mut stack = Stack::start().await;
    let ch = "agent-4";
    let (mut c, mut seen) = following(&stack, stack.token("dee", &["agent-4*"]), ch, quick()).await;
    for i in 1..=5 {
        stack.publish(ch, "tick", json!({ "i": i })).await;
    }
    until(&mut c, &mut seen, Duration::from_secs(20), |s| {
        s.seqs.len() >= 5
    })
    .await;

    stack.gateway_down().await;
    for i in 6..=15 {
        stack.publish(ch, "tick", json!({ "i": i })).await;
    }
    // Issued while disconnected: applied by the re-join after the outage.
    c.handle().join("agent-4b").unwrap();
    // Down for 5 s, five times the 1 s cap: several failed attempts.
    let outage = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(ev)) = tokio::time::timeout_at(outage, c.next()).await {
        seen.record(ev);
    }
    assert!(seen.reconnecting.len() >= 3, "{:?}", seen.reconnecting);
    assert!(
        seen.reconnecting
            .iter()
            .all(|(_, d)| *d <= Duration::from_secs(1)),
        "delays stay under the cap: {:?}",
        seen.reconnecting
    );
    stack.gateway_up().await;
    until(&mut c, &mut seen, Duration::from_secs(30), |s| {
        s.joined.iter().any(|n| n == "agent-4b")
    })
    .await;
    stack.publish("agent-4b", "tick", json!({ "i": 1 })).await;
    for i in 16..=20 {
        stack.publish(ch, "tick", json!({ "i": i })).await;
    }
    until(&mut c, &mut seen, Duration::from_secs(40), |s| {
        s.seqs.len() >= 21
    })
    .await;
    assert_eq!(seen.seqs_of(ch), (1..=20).collect::<Vec<u64>>());
    assert_eq!(
        seen.seqs_of("agent-4b"),
        vec![1],
        "the join made while down"
    );
    assert!(seen.gaps.is_empty());
    assert_eq!(seen.connected, 2);
    assert!(seen.errors.is_empty(), "{:?}", seen.errors);
    c.close().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_version_is_a_typed_error_and_no_retry() {
    let stack = Stack::start().await;
    let options = Options {
        protocol: ProtocolRange { min: 2, max: 3 },
        ..quick()
    };
    let mut c = client(&stack, stack.token("eve", &["x"]), "x", options);
    let mut events = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .expect("the client stops by itself")
    {
        events.push(ev);
    }
    match events.as_slice() {
        [ClientEvent::Error(e @ ClientError::VersionUnsupported { supported, .. })] => {
            assert_eq!(*supported, Some(ProtocolRange { min: 1, max: 1 }));
            assert!(e.is_fatal());
            assert!(e.to_string().contains("2..=3"), "{e}");
        }
        other => panic!("expected one VersionUnsupported error, got {other:?}"),
    }
    assert_eq!(stack.connections_of("eve").await, 0, "nothing recorded");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_while_connected_is_replaced_by_the_provider_on_reconnect() {
    let clock = Arc::new(agentwire_core::clock::ManualClock::new());
    let stack = Arc::new(
        Stack::start_with(StackOptions {
            clock: Some(clock.clone()),
            ..StackOptions::default()
        })
        .await,
    );
    let ch = "agent-5";
    // Each token expires 1 s after it is minted (plus the gateway's 5 s
    // leeway for clock skew), at the gateway's time.
    let mint = {
        let stack = stack.clone();
        move || {
            let now = stack.clock.epoch_s();
            stack.token_with("fay", &[ch], now - 60, Duration::from_secs(61))
        }
    };
    let first = mint();
    let asked = Arc::new(AtomicUsize::new(0));
    let provider = {
        let (asked, mint) = (asked.clone(), mint.clone());
        move || {
            asked.fetch_add(1, Ordering::SeqCst);
            let t = mint();
            async move { Ok::<_, String>(t) }
        }
    };
    let mut renewing = Client::builder()
        .url(stack.gateway.ws_url())
        .token_provider(provider)
        .channel(ch)
        .options(quick())
        .connect()
        .unwrap();
    let mut fixed = client(&stack, first, ch, quick());
    let (mut seen, mut seen_fixed) = (Seen::default(), Seen::default());
    until(&mut renewing, &mut seen, Duration::from_secs(10), joined).await;
    until(&mut fixed, &mut seen_fixed, Duration::from_secs(10), joined).await;
    stack.publish(ch, "tick", json!({ "i": 1 })).await;
    until(&mut renewing, &mut seen, Duration::from_secs(20), |s| {
        !s.seqs.is_empty()
    })
    .await;

    // Both tokens in hand are now expired; the connections are dropped.
    clock.advance(Duration::from_secs(7));
    stack.gateway.hub().close_all(1001, "Going away");
    stack.publish(ch, "tick", json!({ "i": 2 })).await;
    until(&mut renewing, &mut seen, Duration::from_secs(20), |s| {
        s.seqs.len() >= 2
    })
    .await;
    assert_eq!(seen.seqs, vec![1, 2]);
    assert_eq!(seen.connected, 2);
    assert!(
        asked.load(Ordering::SeqCst) >= 2,
        "a fresh token for the reconnect"
    );
    assert!(seen.errors.is_empty(), "{:?}", seen.errors);

    // The same situation with a fixed token ends in a typed error, once.
    let mut rest = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(20), fixed.next())
        .await
        .expect("the fixed-token client stops by itself")
    {
        rest.push(ev);
    }
    assert!(
        matches!(
            rest.last(),
            Some(ClientEvent::Error(ClientError::Unauthorized {
                code: ErrorCode::TokenExpired,
                ..
            }))
        ),
        "{rest:?}"
    );
    let retries = rest
        .iter()
        .filter(|e| matches!(e, ClientEvent::Reconnecting { .. }))
        .count();
    assert_eq!(
        retries, 1,
        "one attempt after the drop, no hammering: {rest:?}"
    );
    renewing.close().await;
    drop(mint);
    match Arc::try_unwrap(stack) {
        Ok(stack) => stack.shutdown().await,
        Err(_) => panic!("the stack is still shared"),
    }
}
