//! A push that fails is recovered from the log, never reported as lost:
//! posts to a subscriber fail (injected 500s, as many as the dispatcher's
//! attempts), and a subscriber stops reading for 20 s while 9 MB of large
//! events are published (its outbound buffer fills and `@connections`
//! answers 429 `LimitExceededException`). The gateway closes a connection
//! that missed a post, so each client learns at once, with nothing more
//! published: it reconnects, resumes from its last seq, and ends with every
//! seq exactly once, in order, and no `Gap`.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agentwire_client::{Backoff, Client, ClientEvent, Options};
use agentwire_e2e::{Stack, StackOptions};
use serde_json::json;

fn options() -> Options {
    Options {
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
        ack_debounce: None,
        ..Options::default()
    }
}

/// What the client delivered and how it got there.
#[derive(Default, Debug)]
struct Seen {
    seqs: Vec<u64>,
    gaps: Vec<(u64, u64)>,
    connection_id: Option<String>,
    connected: usize,
    /// `Joined` answers: the first join and every re-join.
    joins: usize,
    errors: Vec<String>,
}

impl Seen {
    fn record(&mut self, ev: ClientEvent) {
        match ev {
            ClientEvent::Event(e) => self.seqs.push(e.seq),
            ClientEvent::Gap { from, to, .. } => self.gaps.push((from, to)),
            ClientEvent::Connected { connection_id, .. } => {
                self.connected += 1;
                self.connection_id = Some(connection_id);
            }
            ClientEvent::Joined { .. } => self.joins += 1,
            ClientEvent::Error(e) => self.errors.push(e.to_string()),
            ClientEvent::Disconnected { .. }
            | ClientEvent::Reconnecting { .. }
            | ClientEvent::Left { .. }
            | ClientEvent::Message(_)
            | ClientEvent::MessageLost { .. } => {}
        }
    }

    fn has(&self, seq: u64) -> bool {
        self.seqs.last().is_some_and(|&l| l >= seq)
    }
}

/// Every seq `1..=last` exactly once, in order, no `Gap`, no error, all on
/// the first connection unless `reconnected` (then on more than one).
fn assert_whole(seen: &Seen, last: u64, reconnected: bool) {
    assert_eq!(
        seen.seqs,
        (1..=last).collect::<Vec<u64>>(),
        "each seq once, in order"
    );
    assert!(seen.gaps.is_empty(), "no gap: {:?}", seen.gaps);
    assert!(seen.errors.is_empty(), "{:?}", seen.errors);
    if reconnected {
        assert!(
            seen.connected >= 2,
            "the connection that missed a post was closed: {seen:?}"
        );
    } else {
        assert_eq!(
            seen.connected, 1,
            "the same connection throughout: {seen:?}"
        );
    }
}

/// Reads until `done` or `limit`; `false` on time-out.
async fn read_until(
    c: &mut Client,
    seen: &mut Seen,
    limit: Duration,
    done: impl Fn(&Seen) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !done(seen) {
        match tokio::time::timeout_at(deadline, c.next()).await {
            Ok(Some(ev)) => seen.record(ev),
            Ok(None) => panic!("the client stopped: {seen:?}"),
            Err(_) => return false,
        }
    }
    true
}

/// Publishes markers until the client delivered the latest one: a post that
/// failed for good leaves a hole that only a later frame reveals. Returns
/// the last seq published.
async fn catch_up(stack: &Stack, c: &mut Client, seen: &mut Seen, ch: &str, mut last: u64) -> u64 {
    for _ in 0..10 {
        stack
            .publish(ch, "marker", json!({ "marker": last + 1 }))
            .await;
        last += 1;
        if read_until(c, seen, Duration::from_secs(10), |s| s.has(last)).await {
            return last;
        }
    }
    panic!("the client never caught up with seq {last}: {seen:?}");
}

async fn following(stack: &Stack, ch: &str, options: Options) -> (Client, Seen) {
    let mut c = Client::builder()
        .url(stack.gateway.ws_url())
        .token(stack.token("ana", &[ch]))
        .channel_since(ch, agentwire_protocol::Since::Head)
        .options(options)
        .connect()
        .unwrap();
    let mut seen = Seen::default();
    assert!(read_until(&mut c, &mut seen, Duration::from_secs(10), |s| s.joins >= 1).await);
    (c, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_that_fail_are_fetched_from_the_log_not_reported_as_a_gap() {
    let stack = Stack::start().await;
    let ch = "agent-faulty";
    let (mut c, mut seen) = following(&stack, ch, options()).await;
    let conn = seen.connection_id.clone().unwrap();
    let mut last = catch_up(&stack, &mut c, &mut seen, ch, 0).await;

    // As many failed posts as the dispatcher's 4 attempts: the first event
    // of the run is given up on, and the connection closed. Nothing is
    // published after the five: the client learns from the close.
    stack.gateway.hub().fail_next_posts(&conn, 4);
    for i in 0..5 {
        stack.publish(ch, "tick", json!({ "i": i })).await;
        last += 1;
    }
    assert!(
        read_until(&mut c, &mut seen, Duration::from_secs(30), |s| s.has(last)).await,
        "the missed events within 30 s, nothing published after: {seen:?}"
    );
    assert_whole(&seen, last, true);
    assert_ne!(seen.connection_id.as_deref(), Some(conn.as_str()));
    c.close().await;
    stack.shutdown().await;
}

/// A replay longer than one join's budget (here 50 events) is paged: the
/// client joins again from where each page ended, on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_longer_than_the_join_budget_arrives_whole_in_pages() {
    use agentwire_aws::DynamoLog;
    use agentwire_core::model::{ChannelKey, Envelope};
    use agentwire_core::ports::ChannelLog;
    let stack = Stack::start_with(StackOptions {
        replay_max_events: Some(50),
        ..StackOptions::default()
    })
    .await;
    let ch = "agent-history";
    let key = ChannelKey::new(&stack.tenant, ch);
    let log = DynamoLog::new(
        stack.ddb(),
        stack.config.tables.clone(),
        stack.clock.clone(),
    );
    let state = log.ensure_channel(&key).await.unwrap();
    let history: Vec<Envelope> = (1..=300)
        .map(|i| Envelope {
            tenant: stack.tenant.clone(),
            channel: ch.into(),
            id: format!("h{i}"),
            kind: "status".into(),
            data: json!({ "i": i }).into(),
            ts: "2026-11-23T09:00:00.000Z".into(),
        })
        .collect();
    log.import(&key, &state, &history, u64::from(u32::MAX))
        .await
        .unwrap();
    let mut c = Client::builder()
        .url(stack.gateway.ws_url())
        .token(stack.token("ana", &[ch]))
        .channel_since(
            ch,
            agentwire_protocol::Since::Position {
                epoch: state.epoch.clone(),
                seq: 0,
            },
        )
        .options(options())
        .connect()
        .unwrap();
    let mut seen = Seen::default();
    assert!(
        read_until(&mut c, &mut seen, Duration::from_secs(60), |s| s.has(300)).await,
        "{seen:?}"
    );
    let last = catch_up(&stack, &mut c, &mut seen, ch, 300).await;
    assert_whole(&seen, last, false);
    assert!(seen.joins >= 6, "300 events in pages of 50: {seen:?}");
    c.close().await;
    stack.shutdown().await;
}

/// The slow consumer: a client whose application stops reading for 20 s
/// while 150 events of 60 KB (9 MB) are published. Its outbound buffer
/// fills, a post fails after its retries and the gateway closes the
/// connection; once the application reads again the client reconnects and
/// resumes, and has all 150 within 40 s, with nothing published after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_for_20_s_misses_nothing() {
    let mut stack_options = StackOptions::default();
    stack_options.gateway.outbound_buffer_bytes = 256 * 1024;
    let stack = Stack::start_with(stack_options).await;
    let ch = "agent-slow";
    // A one-event buffer: an application that stops reading stops the
    // client reading its socket.
    let (mut c, mut seen) = following(
        &stack,
        ch,
        Options {
            buffer: 1,
            ..options()
        },
    )
    .await;
    let big = "x".repeat(60 * 1024);
    let published = 150u64;
    let stalled = tokio::time::Instant::now();
    for i in 0..published {
        stack
            .publish(ch, "output", json!({ "i": i, "text": big }))
            .await;
    }
    // The application does not read for 20 s in all (the scenario, not a
    // wait for something to happen).
    tokio::time::sleep_until(stalled + Duration::from_secs(20)).await;
    let resumed = tokio::time::Instant::now();
    assert!(
        read_until(&mut c, &mut seen, Duration::from_secs(40), |s| s
            .has(published))
        .await,
        "all {published} within 40 s of resuming, nothing published after: {} of them, {seen:?}",
        seen.seqs.len()
    );
    println!(
        "slow consumer: {published} events of 60 KB caught up {:.1} s after resuming ({} connections)",
        resumed.elapsed().as_secs_f64(),
        seen.connected
    );
    assert_whole(&seen, published, true);
    c.close().await;
    stack.shutdown().await;
}

/// A client that stops reading blocks only its connection's writer: once a
/// post to it fails after its retries the gateway closes it though nothing
/// can be written to it (the close does not wait behind the queued frames),
/// and `$disconnect` runs. The idle timer (10 minutes here) plays no part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_though_its_writer_is_stuck() {
    let mut stack_options = StackOptions::default();
    stack_options.gateway.outbound_buffer_bytes = 256 * 1024;
    stack_options.gateway.idle_timeout = Duration::from_secs(600);
    let stack = Stack::start_with(stack_options).await;
    let ch = "agent-stuck";
    let mut ws = stack.client(&stack.token("ana", &[ch])).await;
    let welcome = ws.hello().await;
    let conn = welcome["connection_id"].as_str().unwrap().to_owned();
    assert_eq!(ws.join(serde_json::json!([ch])).await["type"], "joined");
    // From here on the client reads nothing and sends nothing.
    let big = "x".repeat(60 * 1024);
    let mut published = 0;
    while stack.gateway.hub().get(&conn).is_some() {
        assert!(
            published < 2000,
            "never closed: {:?}",
            stack.gateway.hub().post_stats(&conn)
        );
        for _ in 0..20 {
            stack.publish(ch, "output", json!({ "text": big })).await;
        }
        published += 20;
    }
    // Closed while its writer was stuck; $disconnect removes its record.
    let removed = stack
        .eventually(Duration::from_secs(30), || {
            let stack = &stack;
            let conn = conn.clone();
            async move { !stack.connection_recorded(&conn).await }
        })
        .await;
    assert!(removed, "$disconnect ran for the closed connection");
    ws.drop_abruptly();
    stack.shutdown().await;
}
