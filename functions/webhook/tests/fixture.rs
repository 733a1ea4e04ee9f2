//! The function fed a recorded batch from the webhook job queue
//! (`aws_lambda_events` JSON), on in-memory ports: a message that is not a
//! job is dead-lettered as it came, and not reported as a failure.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use agentwire_core::clock::SystemClock;
use agentwire_core::memory::{MemoryWebhookJobs, MemoryWebhooks, ScriptedSender};
use agentwire_core::usecases::delivery::webhook::Deliverer;
use agentwire_core::webhook::{RetrySchedule, UrlPolicy};
use agentwire_fn_webhook::WebhookFunction;
use aws_lambda_events::sqs::SqsEvent;

const EVENT: &[u8] = include_bytes!("fixtures/sqs-webhook-jobs.json");

#[tokio::test]
async fn a_recorded_message_that_is_not_a_job_is_dead_lettered_not_failed() {
    let store = Arc::new(MemoryWebhooks::default());
    let jobs = Arc::new(MemoryWebhookJobs::default());
    let sender = Arc::new(ScriptedSender::new(vec![]));
    let deliverer = Deliverer::new(
        store.clone(),
        store,
        UrlPolicy::default(),
        sender.clone(),
        jobs.clone(),
        RetrySchedule::new(vec![Duration::ZERO]),
        Arc::new(SystemClock),
    );
    let f = WebhookFunction::with(deliverer, Duration::from_secs(10));
    let event: SqsEvent = serde_json::from_slice(EVENT).unwrap();
    let resp = f.handle(event).await.unwrap();
    assert!(resp.batch_item_failures.is_empty());
    let dead = jobs.dead_letter_queue();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, r#"{"job": false}"#);
    assert!(dead[0].1.starts_with("not a webhook job"), "{}", dead[0].1);
    assert!(sender.sent().is_empty());
}

#[tokio::test]
async fn a_job_that_cannot_finish_before_the_deadline_comes_back_untouched() {
    let store = Arc::new(MemoryWebhooks::default());
    let jobs = Arc::new(MemoryWebhookJobs::default());
    let deliverer = Deliverer::new(
        store.clone(),
        store,
        UrlPolicy::default(),
        Arc::new(ScriptedSender::new(vec![])),
        jobs.clone(),
        RetrySchedule::new(vec![Duration::ZERO]),
        Arc::new(SystemClock),
    );
    let f = WebhookFunction::with(deliverer, Duration::from_secs(10));
    let event: SqsEvent = serde_json::from_slice(EVENT).unwrap();
    let resp = f
        .handle_until(event, tokio::time::Instant::now() + Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        resp.batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect::<Vec<_>>(),
        ["33d6ee51-4cc7-4302-9e22-7cd8afdaadf5"]
    );
    assert!(jobs.dead_letter_queue().is_empty(), "untouched");
}
