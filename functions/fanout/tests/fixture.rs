//! The function fed a recorded batch from the fan-out queue
//! (`aws_lambda_events` JSON), on in-memory ports: the job's frame reaches
//! every subscriber of its shards once, and the message that is not a job
//! is reported for the queue's redrive, alone.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use agentwire_core::clock::SystemClock;
use agentwire_core::memory::{MemoryPusher, MemoryRegistry, connection};
use agentwire_core::model::ChannelKey;
use agentwire_core::ports::ConnectionRegistry;
use agentwire_core::usecases::FanoutWorker;
use agentwire_fn_fanout::FanoutFunction;
use aws_lambda_events::sqs::SqsEvent;

const EVENT: &[u8] = include_bytes!("fixtures/sqs-fanout-jobs.json");

#[tokio::test]
async fn a_recorded_job_reaches_its_shards_and_a_bad_message_is_failed_alone() {
    let reg = Arc::new(MemoryRegistry::default());
    let pusher = Arc::new(MemoryPusher::default());
    let key = ChannelKey::new("acme", "fleet");
    for i in 0..30 {
        let c = connection(&format!("agent-{i}"), "acme", "agent", &["*"]);
        reg.put_connection(&c).await.unwrap();
        reg.subscribe(&c, &key, u64::MAX).await.unwrap();
    }
    let f = FanoutFunction::with(FanoutWorker::new(
        reg,
        pusher.clone(),
        Arc::new(SystemClock),
        8,
    ));
    let event: SqsEvent = serde_json::from_slice(EVENT).unwrap();
    let resp = f.handle(event).await.unwrap();
    assert_eq!(
        resp.batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect::<Vec<_>>(),
        ["5b0f3c3e-2d7e-4c55-9d8e-7f1f3a0c9a02"]
    );
    for i in 0..30 {
        let posts = pusher.posts(&format!("agent-{i}"));
        assert_eq!(posts.len(), 1, "agent-{i}");
        let v: serde_json::Value = serde_json::from_str(&posts[0]).unwrap();
        assert_eq!(
            (v["seq"].as_u64(), v["id"].as_str()),
            (Some(7), Some("cfg-7"))
        );
    }
}
