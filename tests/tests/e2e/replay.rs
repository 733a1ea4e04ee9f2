//! Nothing missed: exactly-once sequencing, replay from a cursor, durable
//! acks, the gap signal and the resume snapshot, on the local stack.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use agentwire_core::ports::{Dedup, PushError, Pusher};
use agentwire_core::usecases::QueueMessage;
use agentwire_e2e::{Stack, StackOptions};
use serde_json::{Value, json};

fn event_seqs(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["type"] == "event")
        .map(|f| f["seq"].as_u64().unwrap())
        .collect()
}

fn has_seq(frames: &[Value], seq: u64) -> bool {
    event_seqs(frames).contains(&seq)
}

async fn publish_n(stack: &Stack, channel: &str, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        stack.publish(channel, "status", json!({ "i": i })).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_back_on_a_new_connection_gets_everything_since_its_last_ack_once_in_order() {
    let stack = Stack::start().await;
    let token = stack.token("ana", &["agent-*"]);
    let mut first = stack.client(&token).await;
    first.hello().await;
    assert_eq!(first.join(json!(["agent-7"])).await["type"], "joined");
    publish_n(&stack, "agent-7", 1..=5).await;
    assert_eq!(event_seqs(&first.events(5).await), vec![1, 2, 3, 4, 5]);
    first.ack("agent-7", 5).await;
    first.ack("agent-7", 3).await; // older: never moves the cursor back
    // The acks have no answer; a `hello` after them proves they were
    // handled (the session function takes a connection's messages in
    // order; a `ping` would not: API Gateway answers it without a function).
    first.hello().await;
    first.ws.close(None).await.unwrap();

    publish_n(&stack, "agent-7", 6..=20).await;
    // Wait until all are committed before reconnecting, so this is replay.
    assert!(
        stack
            .eventually(Duration::from_secs(20), || async {
                stack.stored_events("agent-7").await.len() == 20
            })
            .await
    );

    let mut back = stack.client(&token).await;
    back.hello().await;
    back.send_json(json!({"action":"join","id":"again","channels":["agent-7"]}))
        .await;
    let frames = back.frames_until(|f| has_seq(f, 20)).await;
    assert_eq!(frames[0]["type"], "joined", "{}", frames[0]);
    let ch = &frames[0]["channels"][0];
    assert_eq!(
        (
            ch["head"].as_u64(),
            ch["replayed"].as_u64(),
            ch["recovered"].as_bool()
        ),
        (Some(20), Some(15), Some(true))
    );
    assert_eq!(
        frames[0]["health"]["channels"]["agent-7"],
        json!({"head": 20, "oldest": 1})
    );
    assert_eq!(
        frames[0]["presence"]["agent-7"],
        json!({"count": 1, "principals": ["ana"]})
    );
    assert_eq!(
        event_seqs(&frames),
        (6..=20).collect::<Vec<u64>>(),
        "exactly 6-20, once each, in order"
    );
    // A marker: nothing of 6-20 comes again before it.
    publish_n(&stack, "agent-7", 21..=21).await;
    assert_eq!(event_seqs(&back.events(1).await), vec![21]);
    stack.shutdown().await;
}

/// A pusher that crashes the dispatcher, as a Lambda that dies after its
/// commit and before its fan-out.
struct Crash;

#[async_trait::async_trait]
impl Pusher for Crash {
    async fn post(&self, _: &str, _: &str) -> Result<(), PushError> {
        panic!("injected crash after commit, before fan-out");
    }

    async fn close(&self, _: &str) -> Result<(), PushError> {
        Err(PushError::Gone)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_that_dies_after_its_commit_loses_nothing_and_the_redelivery_keeps_the_seq() {
    let stack = Stack::start_with(StackOptions {
        visibility_timeout: Duration::from_secs(2),
        ..StackOptions::default()
    })
    .await;
    // Waits for a receive already under way to finish before the publish.
    stack.gateway.pause_event_source().await;
    let mut c = stack.client(&stack.token("ana", &["*"])).await;
    c.hello().await;
    c.join(json!(["jobs"])).await;
    let id = stack.publish("jobs", "final", json!({"answer": 42})).await;

    // The crashing invocation: real tables, the real message, then a panic.
    let out = stack
        .sqs()
        .receive_message()
        .queue_url(&stack.queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(5)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap();
    let msgs: Vec<QueueMessage> = out
        .messages()
        .iter()
        .map(|m| QueueMessage {
            message_id: m.message_id().unwrap().into(),
            group_id: m.attributes().and_then(|a| {
                a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
                    .cloned()
            }),
            body: m.body().unwrap().into(),
            receive_count: 1,
        })
        .collect();
    assert_eq!(msgs.len(), 1);
    let dispatcher = stack.dispatcher(Arc::new(Crash));
    let crashed = tokio::spawn(async move { dispatcher.dispatch(msgs).await }).await;
    assert!(crashed.is_err(), "the invocation died");
    assert_eq!(
        stack.stored_events("jobs").await,
        vec![(1, id.clone())],
        "committed before the crash"
    );
    // Nothing was posted: the next frame is the answer to a ping.
    c.send_json(json!({"action":"ping"})).await;
    c.expect("pong").await;

    // The message was never deleted: after its visibility timeout SQS
    // redelivers it, and the re-enabled dispatcher delivers the same seq.
    stack.gateway.set_event_source_enabled(true);
    let got = c.events(1).await;
    assert_eq!(
        (got[0]["seq"].as_u64(), got[0]["id"].as_str()),
        (Some(1), Some(id.as_str()))
    );
    assert_eq!(got[0]["data"], json!({"answer": 42}));
    assert_eq!(stack.stored_events("jobs").await.len(), 1, "no second seq");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_retention_gets_recovered_false_and_the_exact_gap() {
    let clock = Arc::new(agentwire_core::clock::ManualClock::new());
    let stack = Stack::start_with(StackOptions {
        retention: Some(Duration::from_secs(3)),
        clock: Some(clock.clone()),
        ..StackOptions::default()
    })
    .await;
    let token = stack.token("ana", &["*"]);
    let mut c = stack.client(&token).await;
    c.hello().await;
    c.join(json!(["ops"])).await;
    publish_n(&stack, "ops", 1..=5).await;
    assert_eq!(event_seqs(&c.events(5).await), vec![1, 2, 3, 4, 5]);
    c.ack("ops", 2).await;
    c.hello().await; // the ack was handled (see above)
    c.ws.close(None).await.unwrap();

    // Events 1-5 outlive their retention; DynamoDB's TTL has not deleted
    // them (it deletes late), the reads filter them out.
    clock.advance(Duration::from_secs(5));
    publish_n(&stack, "ops", 6..=8).await;
    assert!(
        stack
            .eventually(Duration::from_secs(10), || async {
                stack.stored_events("ops").await.len() == 8
            })
            .await
    );

    let mut back = stack.client(&token).await;
    back.hello().await;
    back.send_json(json!({"action":"join","channels":["ops"]}))
        .await;
    let frames = back.frames_until(|f| has_seq(f, 8)).await;
    assert_eq!(frames[0]["type"], "joined");
    assert_eq!(frames[0]["channels"][0]["recovered"], false);
    assert_eq!(
        frames[0]["health"]["channels"]["ops"],
        json!({"head": 8, "oldest": 6})
    );
    assert_eq!(
        frames[1],
        json!({"type":"gap","channel":"ops","from":3,"to":5})
    );
    assert_eq!(event_seqs(&frames), vec![6, 7, 8]);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_during_a_replay_still_ends_with_every_seq_once() {
    let stack = Stack::start().await;
    let token = stack.token("ana", &["*"]);
    let mut seed = stack.client(&token).await;
    seed.hello().await;
    let joined = seed.join(json!([{"name":"live","since":"head"}])).await;
    let epoch = joined["channels"][0]["epoch"].as_str().unwrap().to_owned();
    publish_n(&stack, "live", 1..=120).await;
    assert!(
        stack
            .eventually(Duration::from_secs(30), || async {
                stack.stored_events("live").await.len() == 120
            })
            .await
    );

    let publisher = {
        let queue = stack.queue_url.clone();
        let sqs = stack.sqs();
        let bodies: Vec<String> = (121..=180)
            .map(|i| stack.envelope("live", &format!("e{i}"), "status", json!({"i": i})))
            .collect();
        let group = format!("{}#live", stack.tenant);
        tokio::spawn(async move {
            for (n, body) in bodies.into_iter().enumerate() {
                sqs.send_message()
                    .queue_url(&queue)
                    .message_body(body)
                    .message_group_id(&group)
                    .message_deduplication_id(format!("e{}", n + 121))
                    .send()
                    .await
                    .unwrap();
            }
        })
    };
    let mut c = stack.client(&token).await;
    c.hello().await;
    c.send_json(
        json!({"action":"join","channels":[{"name":"live","since":{"epoch":epoch,"seq":0}}]}),
    )
    .await;
    let frames = c.frames_until(|f| (1..=180).all(|s| has_seq(f, s))).await;
    publisher.await.unwrap();
    // Subscribed before the head was read, the connection may get live
    // events even before its `joined`.
    assert_eq!(frames.iter().filter(|f| f["type"] == "joined").count(), 1);
    let seqs = event_seqs(&frames);
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(
        unique,
        (1..=180).collect::<BTreeSet<u64>>(),
        "every seq arrived"
    );
    // Subscribe-then-replay may deliver a seq twice (live and replayed), never a hole.
    let dupes = seqs.len() - unique.len();
    assert!(dupes <= 180, "{dupes} duplicates");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_from_another_epoch_replays_the_current_log_unrecovered() {
    let stack = Stack::start().await;
    let mut c = stack.client(&stack.token("ana", &["*"])).await;
    c.hello().await;
    c.join(json!([{"name":"e","since":"head"}])).await;
    publish_n(&stack, "e", 1..=3).await;
    c.events(3).await;
    c.send_json(
        json!({"action":"join","channels":[{"name":"e","since":{"epoch":"not-this-one","seq":2}}]}),
    )
    .await;
    let frames = c.frames_until(|f| has_seq(f, 3)).await;
    assert_eq!(frames[0]["type"], "joined");
    assert_eq!(frames[0]["channels"][0]["recovered"], false);
    assert_eq!(event_seqs(&frames), vec![1, 2, 3]);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_can_keep_its_events_for_less_or_longer_than_the_deployment() {
    use agentwire_aws::DynamoLog;
    use agentwire_core::model::ChannelKey;
    use agentwire_core::usecases::ChannelAdmin;
    let stack = Stack::start().await;
    // A floor of 5 minutes here (2 hours by default): the test waits for
    // nothing, it reads the expiry the commit wrote.
    let log = ChannelAdmin::new(
        Arc::new(DynamoLog::new(
            stack.ddb(),
            stack.config.tables.clone(),
            stack.clock.clone(),
        )),
        Duration::from_secs(300),
    );
    let key = ChannelKey::new(&stack.tenant, "brief");
    let refused = log
        .set_retention(&key, Some(Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            agentwire_core::usecases::RetentionError::BelowFloor { .. }
        ),
        "{refused}"
    );
    let state = log
        .set_retention(&key, Some(Duration::from_secs(600)))
        .await
        .unwrap();
    assert_eq!(state.retention_s, Some(600));
    let mut c = stack.client(&stack.token("ana", &["*"])).await;
    c.hello().await;
    c.join(json!(["brief", "normal"])).await;
    stack.publish("brief", "status", json!({})).await;
    stack.publish("normal", "status", json!({})).await;
    c.events(2).await;
    let lifetime = |channel: &'static str| {
        let stack = &stack;
        async move {
            let out = stack
                .ddb()
                .get_item()
                .table_name(&stack.config.tables.events)
                .key(
                    "pk",
                    aws_sdk_dynamodb::types::AttributeValue::S(
                        agentwire_aws::dynamo::item::channel_pk(
                            &agentwire_core::model::ChannelKey::new(&stack.tenant, channel),
                        ),
                    ),
                )
                .key("sk", aws_sdk_dynamodb::types::AttributeValue::N("1".into()))
                .send()
                .await
                .unwrap();
            let item = out.item().unwrap();
            let n = |k: &str| item[k].as_n().unwrap().parse::<u64>().unwrap();
            n("expires_at") - n("committed_at")
        }
    };
    assert!((599..=601).contains(&lifetime("brief").await));
    assert!((72 * 3600 - 1..=72 * 3600 + 1).contains(&lifetime("normal").await));
    let state = log.set_retention(&key, None).await.unwrap();
    assert_eq!(state.retention_s, None);
    stack.shutdown().await;
}

/// A pusher for dispatchers that only commit (no subscriber in this test).
struct Nowhere;

#[async_trait::async_trait]
impl Pusher for Nowhere {
    async fn post(&self, _: &str, _: &str) -> Result<(), PushError> {
        Err(PushError::Gone)
    }

    async fn close(&self, _: &str) -> Result<(), PushError> {
        Err(PushError::Gone)
    }
}

/// A writer that read the head before another writer committed is refused
/// by the real conditional transaction, and the dispatcher retries cleanly.
/// (Staged in sequence: moto does not serialise concurrent transactions, and
/// its rollback restores whole-table snapshots, so truly concurrent
/// conflicting commits are shown on the in-memory log, whose rules are the
/// same: `concurrent_writers_never_share_or_skip_a_seq`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_writer_is_refused_and_the_retry_takes_the_next_seq() {
    use agentwire_aws::DynamoLog;
    use agentwire_core::model::{ChannelKey, Envelope};
    use agentwire_core::ports::{AppendError, ChannelLog};
    let stack = Stack::start().await;
    let log = DynamoLog::new(
        stack.ddb(),
        stack.config.tables.clone(),
        stack.clock.clone(),
    );
    let key = ChannelKey::new(&stack.tenant, "race");
    let group = format!("{}#race", stack.tenant);
    let message = |id: &str| QueueMessage {
        message_id: format!("m-{id}"),
        group_id: Some(group.clone()),
        body: stack.envelope("race", id, "status", json!({ "id": id })),
        receive_count: 1,
    };
    let stale = log.ensure_channel(&key).await.unwrap();
    assert_eq!(stale.head, 0);

    // Writer B commits first.
    let b = stack.dispatcher(Arc::new(Nowhere));
    assert!(b.dispatch(vec![message("from-b")]).await.failed.is_empty());

    // Writer A still holds head 0: its commit is refused and writes nothing.
    let env: Envelope =
        serde_json::from_str(&stack.envelope("race", "from-a", "status", json!({}))).unwrap();
    let refused = log
        .append(
            &key,
            &stale,
            std::slice::from_ref(&env),
            Dedup::Record,
            u64::MAX,
        )
        .await;
    assert_eq!(refused, Err(AppendError::HeadMoved));
    assert_eq!(
        stack.stored_events("race").await,
        vec![(1, "from-b".to_string())]
    );

    // An id that already has a seq is refused as a duplicate, naming it.
    let fresh = log.ensure_channel(&key).await.unwrap();
    let dup: Envelope =
        serde_json::from_str(&stack.envelope("race", "from-b", "status", json!({}))).unwrap();
    assert_eq!(
        log.append(&key, &fresh, &[dup], Dedup::Record, u64::MAX)
            .await,
        Err(AppendError::Duplicate(vec!["from-b".to_string()]))
    );

    // The dispatcher re-reads the head and takes the next seq.
    let a = stack.dispatcher(Arc::new(Nowhere));
    let report = a.dispatch(vec![message("from-a")]).await;
    assert!(report.failed.is_empty());
    assert_eq!(report.committed, 1);
    assert_eq!(
        stack.stored_events("race").await,
        vec![(1, "from-b".to_string()), (2, "from-a".to_string())]
    );
    stack.shutdown().await;
}
