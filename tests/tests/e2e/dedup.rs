//! Idempotency is per channel, never across tenants: the same event id in
//! two tenants (or two channels) is two events on the FIFO queue, the same
//! id twice in one channel is one; and an id whose dedup record expired is
//! committed again rather than dropped.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use agentwire_aws::{DynamoLog, SqsEventQueue};
use agentwire_core::clock::{Clock, SystemClock, rfc3339};
use agentwire_core::model::{ChannelKey, Envelope};
use agentwire_core::ports::{ChannelLog, Dedup, EventQueue};
use agentwire_e2e::Stack;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use serde_json::json;

fn envelope(tenant: &str, channel: &str, id: &str) -> Envelope {
    Envelope {
        tenant: tenant.into(),
        channel: channel.into(),
        id: id.into(),
        kind: "status".into(),
        data: json!({ "tenant": tenant }).into(),
        ts: rfc3339(std::time::SystemTime::now()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_in_two_tenants_is_two_messages_on_the_queue() {
    let stack = Stack::start().await;
    // Inspect the queue itself: the gateway must not consume it (a
    // receive already under way finishes first).
    stack.gateway.pause_event_source().await;
    let queue = SqsEventQueue::new(stack.sqs(), &stack.queue_url);
    let key = "run-7/final";
    for (tenant, channel) in [
        ("acme", "agent-1"),
        ("globex", "agent-1"),
        ("acme", "agent-2"),
    ] {
        queue.send(&envelope(tenant, channel, key)).await.unwrap();
    }
    // A retry of acme's publish: the queue drops it.
    queue.send(&envelope("acme", "agent-1", key)).await.unwrap();

    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < 3 && tokio::time::Instant::now() < deadline {
        let out = stack
            .sqs()
            .receive_message()
            .queue_url(&stack.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        // A message seen before (its visibility timeout ran out) once.
        for m in out.messages.unwrap_or_default() {
            if !got
                .iter()
                .any(|g: &aws_sdk_sqs::types::Message| g.message_id == m.message_id)
            {
                got.push(m);
            }
        }
    }
    let attr = |m: &aws_sdk_sqs::types::Message, a: MessageSystemAttributeName| {
        m.attributes().and_then(|x| x.get(&a)).cloned().unwrap()
    };
    let groups: BTreeSet<String> = got
        .iter()
        .map(|m| attr(m, MessageSystemAttributeName::MessageGroupId))
        .collect();
    let dedup: BTreeSet<String> = got
        .iter()
        .map(|m| attr(m, MessageSystemAttributeName::MessageDeduplicationId))
        .collect();
    assert_eq!(got.len(), 3, "three events, the retry dropped: {got:?}");
    assert_eq!(
        groups,
        BTreeSet::from([
            "acme#agent-1".into(),
            "acme#agent-2".into(),
            "globex#agent-1".into()
        ])
    );
    assert_eq!(
        dedup.len(),
        3,
        "one deduplication id per tenant and channel: {dedup:?}"
    );
    assert!(
        dedup.contains(&ChannelKey::new("globex", "agent-1").scoped_id(key)),
        "{dedup:?}"
    );
    assert!(
        !dedup.contains(key),
        "never the raw id, which other tenants share"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_whose_dedup_record_expired_is_committed_again_not_dropped() {
    let stack = Stack::start().await;
    let log = DynamoLog::new(
        stack.ddb(),
        stack.config.tables.clone(),
        stack.clock.clone(),
    );
    let key = ChannelKey::new(&stack.tenant, "agent-9");
    let now = SystemClock.epoch_s();
    let env = envelope(&stack.tenant, "agent-9", "same-key");

    let state = log.ensure_channel(&key).await.unwrap();
    let first = log
        .append(
            &key,
            &state,
            std::slice::from_ref(&env),
            Dedup::Record,
            now - 1,
        )
        .await
        .unwrap();
    assert_eq!(first[0].seq, 1);
    assert!(
        log.find_by_id(&key, "same-key").await.unwrap().is_none(),
        "expired: not found, whether or not TTL deleted it yet"
    );
    let state = log.ensure_channel(&key).await.unwrap();
    let again = log
        .append(
            &key,
            &state,
            std::slice::from_ref(&env),
            Dedup::Record,
            now + 3600,
        )
        .await
        .expect("an expired dedup record does not block the id");
    assert_eq!(again[0].seq, 2);
    assert_eq!(
        log.find_by_id(&key, "same-key").await.unwrap().unwrap().seq,
        2
    );

    // A live record still resolves a redelivery to its seq.
    let state = log.ensure_channel(&key).await.unwrap();
    let dup = log
        .append(&key, &state, &[env], Dedup::Record, now + 3600)
        .await;
    assert!(
        matches!(dup, Err(agentwire_core::ports::AppendError::Duplicate(ref ids)) if ids == &["same-key".to_string()]),
        "{dup:?}"
    );
    stack.shutdown().await;
}
