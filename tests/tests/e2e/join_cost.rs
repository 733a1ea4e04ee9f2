//! A join costs what it replays, and no more: finding the oldest retained
//! seq does not walk expired (not yet TTL-deleted) events one round trip at
//! a time. Counted with the SDK interceptor on the real DynamoDB adapter.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use agentwire_aws::DynamoLog;
use agentwire_core::clock::{Clock, SystemClock, rfc3339};
use agentwire_core::model::{ChannelKey, Envelope};
use agentwire_core::ports::ChannelLog;
use agentwire_e2e::{Stack, StackOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_over_5000_expired_events_and_one_live_one_uses_at_most_5_queries() {
    let stack = Stack::start_with(StackOptions {
        count_dynamodb_calls: true,
        ..StackOptions::default()
    })
    .await;
    let ch = "history";
    let log = DynamoLog::new(
        stack.ddb(),
        stack.config.tables.clone(),
        stack.clock.clone(),
    );
    let key = ChannelKey::new(&stack.tenant, ch);
    let now = SystemClock.epoch_s();
    let env = |i: u64| Envelope {
        tenant: stack.tenant.clone(),
        channel: ch.into(),
        id: format!("e{i}"),
        kind: "status".into(),
        data: json!({ "i": i }),
        ts: rfc3339(std::time::SystemTime::now()),
    };
    // 5,000 events committed with an expiry already past (retention ran
    // out, TTL has not deleted them yet), then one live event.
    let state = log.ensure_channel(&key).await.unwrap();
    let expired: Vec<Envelope> = (1..=5000).map(env).collect();
    log.import(&key, &state, &expired, now - 1).await.unwrap();
    let state = log.ensure_channel(&key).await.unwrap();
    assert_eq!(state.head, 5000);
    log.append(&key, &state, &[env(5001)], now + 3600)
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
