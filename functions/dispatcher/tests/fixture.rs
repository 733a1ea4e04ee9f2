//! The function fed a recorded batch from the FIFO events queue
//! (`aws_lambda_events` JSON), on in-memory ports: a valid envelope is
//! committed and posted, a malformed one dead-lettered, and neither is
//! reported as a batch item failure.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use agentwire_core::clock::SystemClock;
use agentwire_core::memory::{
    MemoryDeadLetters, MemoryLog, MemoryPusher, MemoryRegistry, connection,
};
use agentwire_core::model::ChannelKey;
use agentwire_core::ports::ConnectionRegistry;
use agentwire_core::usecases::Dispatcher;
use agentwire_fn_dispatcher::DispatcherFunction;
use aws_lambda_events::sqs::SqsEvent;

const EVENT: &[u8] = include_bytes!("fixtures/sqs-events.json");

#[tokio::test]
async fn a_recorded_batch_is_committed_posted_and_dead_lettered_without_failures() {
    let registry = Arc::new(MemoryRegistry::default());
    let log = Arc::new(MemoryLog::default());
    let pusher = Arc::new(MemoryPusher::default());
    let dead = Arc::new(MemoryDeadLetters::default());
    let conn = connection("c1", "acme", "ana", &["agent-*"]);
    registry.put_connection(&conn).await.unwrap();
    let key = ChannelKey::new("acme", "agent-7");
    assert!(registry.subscribe(&conn, &key, u64::MAX).await.unwrap());
    let f = DispatcherFunction::with(Dispatcher::new(
        log.clone(),
        registry,
        pusher.clone(),
        dead.clone(),
        Arc::new(SystemClock),
        Duration::from_secs(3600),
        8,
    ));
    let event: SqsEvent = serde_json::from_slice(EVENT).unwrap();
    let resp = f.handle(event).await.unwrap();
    assert!(resp.batch_item_failures.is_empty());
    let events = log.events(&key);
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].seq, events[0].id.as_str()), (1, "run-1/final"));
    let posts = pusher.posts("c1");
    assert_eq!(posts.len(), 1);
    assert!(posts[0].contains(r#""seq":1"#), "{}", posts[0]);
    let records = dead.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].0, "22d6ee51-4cc7-4302-9e22-7cd8afdaadf5");
    assert_eq!(records[0].1, "not an envelope");
}
