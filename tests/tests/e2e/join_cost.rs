//! A join costs what it replays, and no more: finding the oldest retained
//! seq does not walk expired (not yet TTL-deleted) events one round trip at
//! a time. Counted with the SDK interceptor on the real DynamoDB adapter.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use agentwire_aws::DynamoLog;
use agentwire_core::clock::{Clock, SystemClock, rfc3339};
use agentwire_core::model::{ChannelKey, Envelope};
use agentwire_core::ports::{ChannelLog, Dedup};
use agentwire_e2e::{Stack, StackOptions};
use serde_json::json;

/// A stack counting its DynamoDB calls, whose channel holds events
/// committed with an expiry already past (retention ran out, TTL has not
/// deleted them yet).
struct Expired {
    stack: Stack,
    log: DynamoLog,
    key: ChannelKey,
    now: u64,
}

impl Expired {
    async fn on(ch: &str, expired: u64) -> Self {
        let stack = Stack::start_with(StackOptions {
            count_dynamodb_calls: true,
            ..StackOptions::default()
        })
        .await;
        let log = DynamoLog::new(
            stack.ddb(),
            stack.config.tables.clone(),
            stack.clock.clone(),
        );
        let key = ChannelKey::new(&stack.tenant, ch);
        let now = SystemClock.epoch_s();
        let state = log.ensure_channel(&key).await.unwrap();
        let events: Vec<Envelope> = (1..=expired).map(|i| envelope(&stack, ch, i)).collect();
        log.import(&key, &state, &events, now - 1).await.unwrap();
        Self {
            stack,
            log,
            key,
            now,
        }
    }
}

fn envelope(stack: &Stack, ch: &str, i: u64) -> Envelope {
    Envelope {
        tenant: stack.tenant.clone(),
        channel: ch.into(),
        id: format!("e{i}"),
        kind: "status".into(),
        data: json!({ "i": i }).into(),
        ts: rfc3339(std::time::SystemTime::now()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_over_5000_expired_events_and_one_live_one_uses_at_most_5_queries() {
    // 5,000 events committed with an expiry already past, then one live
    // event.
    let ch = "history";
    let Expired {
        stack,
        log,
        key,
        now,
    } = Expired::on(ch, 5000).await;
    let env = |i: u64| envelope(&stack, ch, i);
    let state = log.ensure_channel(&key).await.unwrap();
    assert_eq!(state.head, 5000);
    log.append(&key, &state, &[env(5001)], Dedup::Record, now + 3600)
        .await
        .unwrap();

    let mut c = stack.client(&stack.token("ana", &[ch])).await;
    c.hello().await;
    stack.calls.reset();
    let joined = c.join(json!([{ "name": ch, "since": "head" }])).await;
    let queries = stack.calls.snapshot().get("Query").copied().unwrap_or(0);
    println!("join calls: {:?}", stack.calls.snapshot());
    assert_eq!(joined["health"]["channels"][ch]["oldest"], 5001, "{joined}");
    assert_eq!(joined["health"]["channels"][ch]["head"], 5001, "{joined}");
    assert!(
        queries <= 5,
        "the join made {queries} queries: {:?}",
        stack.calls.snapshot()
    );
    stack.shutdown().await;
}

/// 20,000 events of which 19,990 have an expiry in the past but are still
/// stored (as DynamoDB's TTL leaves them, for up to days): finding the
/// oldest retained seq takes one `Query` and a few `BatchGetItem` probes
/// for a join and for a history read, and both start at the first live
/// event with the right gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_seq_over_19990_expired_events_costs_a_few_calls() {
    oldest_seq_past("long-run", 19_990).await;
}

/// The same with 1,000 expired events before the 10 live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_seq_over_1000_expired_events_costs_a_few_calls() {
    oldest_seq_past("shorter-run", 1_000).await;
}

/// `expired` events past their expiry and 10 live ones after them: a join
/// from seq 0 and a history read from `after=0` each make at most 2
/// `Query` and 3 `BatchGetItem` calls, and start at the first live event
/// after a gap of exactly the expired range.
async fn oldest_seq_past(ch: &str, expired: u64) {
    let Expired {
        stack,
        log,
        key,
        now,
    } = Expired::on(ch, expired).await;
    let state = log.ensure_channel(&key).await.unwrap();
    let live: Vec<Envelope> = (expired + 1..=expired + 10)
        .map(|i| envelope(&stack, ch, i))
        .collect();
    log.import(&key, &state, &live, now + 3600).await.unwrap();

    let mut c = stack.client(&stack.token("ana", &[ch])).await;
    c.hello().await;
    stack.calls.reset();
    let joined = c
        .join(json!([{ "name": ch, "since": {"epoch": state.epoch, "seq": 0} }]))
        .await;
    let join_calls = stack.calls.snapshot();
    assert_eq!(
        joined["health"]["channels"][ch]["oldest"],
        expired + 1,
        "{joined}"
    );
    let gap = c.expect("gap").await;
    assert_eq!(
        (gap["from"].as_u64(), gap["to"].as_u64()),
        (Some(1), Some(expired))
    );
    let events = c.events(10).await;
    assert_eq!(events[0]["seq"], expired + 1);
    let probes = |calls: &std::collections::BTreeMap<String, u64>| {
        (
            calls.get("Query").copied().unwrap_or(0),
            calls.get("BatchGetItem").copied().unwrap_or(0),
        )
    };
    let (q, b) = probes(&join_calls);
    println!("{expired} expired: join calls: {join_calls:?}");
    // The oldest seq: 1 Query and at most 3 BatchGetItem; the replay of 10
    // events: 1 more Query.
    assert!(
        q <= 2 && b <= 3,
        "the join made {q} queries and {b} batch gets"
    );

    stack.calls.reset();
    let reader = stack.token("ana", &[ch]);
    let (status, page) = stack
        .http_get(
            &reader,
            &format!("/v1/channels/{ch}/events?after=0&limit=50"),
        )
        .await;
    let read_calls = stack.calls.snapshot();
    println!("{expired} expired: history calls: {read_calls:?}");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["oldest"], expired + 1);
    assert_eq!(page["gap"], json!({"from": 1, "to": expired}));
    let (q, b) = probes(&read_calls);
    assert!(
        q <= 2 && b <= 3,
        "the history read made {q} queries and {b} batch gets"
    );
    stack.shutdown().await;
}

/// Items a join reads on a channel of `crowd` subscribers (imported, as
/// joins would have left them), counted by the SDK interceptor.
async fn join_reads(crowd: usize) -> (u64, serde_json::Value) {
    use agentwire_aws::DynamoRegistry;
    use agentwire_core::model::Subscriber;
    let stack = Stack::start_with(StackOptions {
        count_dynamodb_calls: true,
        ..StackOptions::default()
    })
    .await;
    let ch = "crowd";
    let registry = DynamoRegistry::new(
        stack.ddb(),
        stack.config.tables.clone(),
        stack.clock.clone(),
    );
    let subs: Vec<Subscriber> = (0..crowd)
        .map(|i| Subscriber {
            connection_id: format!("conn-{i:05}"),
            principal: format!("p{i:05}"),
            token_exp: 0,
            gzip: false,
        })
        .collect();
    registry
        .import_subscribers(
            &ChannelKey::new(&stack.tenant, ch),
            &subs,
            SystemClock.epoch_s() + 3600,
        )
        .await
        .unwrap();
    let mut c = stack.client(&stack.token("ana", &[ch])).await;
    c.hello().await;
    stack.calls.reset();
    let joined = c.join(json!([ch])).await;
    let items: u64 = stack.calls.items().values().sum();
    println!(
        "join on {crowd} subscribers: calls {:?}, items read {:?}",
        stack.calls.snapshot(),
        stack.calls.items()
    );
    stack.shutdown().await;
    (items, joined)
}

/// Presence comes from a kept count and a bounded sample, both on one item:
/// a join reads the same items on a channel of 2, 200 and 2,000 subscribers
/// (the connection, the channel, the cursor, the presence item, the
/// oldest-event query). (Before, a join read every subscription: 2,001
/// items here; then 25, with a `Limit 21` query of the presence item and
/// the first subscriptions.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_reads_a_bounded_number_of_items_however_big_the_channel() {
    let (small, joined_small) = join_reads(2).await;
    let (mid, _) = join_reads(200).await;
    let (big, joined_big) = join_reads(2000).await;
    assert_eq!(
        joined_small["presence"]["crowd"]["count"], 3,
        "{joined_small}"
    );
    assert_eq!(
        joined_big["presence"]["crowd"]["count"], 2001,
        "{joined_big}"
    );
    assert_eq!(
        joined_big["presence"]["crowd"]["principals"]
            .as_array()
            .unwrap()
            .len(),
        20,
        "{joined_big}"
    );
    assert_eq!(
        joined_small["presence"]["crowd"]["principals"],
        json!(["ana", "p00000", "p00001"]),
        "a small channel's sample is everyone: {joined_small}"
    );
    assert_eq!(
        (small, mid),
        (big, big),
        "the same items read at 2, 200 and 2,000 subscribers"
    );
    assert!(big <= 6, "a join read {big} items");
}
