//! The dispatcher Lambda, on the FIFO events queue: hands the batch to the
//! dispatch use case and reports the messages that must come back as
//! `batchItemFailures` (the event source mapping has `ReportBatchItemFailures`).

use agentwire_aws::deps::Deps;
use agentwire_core::config::ConfigError;
use agentwire_core::usecases::{Dispatcher, QueueMessage};
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};

/// The handler, holding its use case (and SDK clients) across invocations.
pub struct DispatcherFunction {
    dispatcher: Dispatcher,
}

impl DispatcherFunction {
    pub fn new(deps: &Deps) -> Result<Self, ConfigError> {
        Ok(Self::with(deps.dispatcher()?))
    }

    /// Around a use case built elsewhere (tests, the dev gateway).
    pub fn with(dispatcher: Dispatcher) -> Self {
        Self { dispatcher }
    }

    /// The use case (the dev gateway adjusts its fan-out threshold).
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    pub async fn handle(&self, event: SqsEvent) -> Result<SqsBatchResponse, lambda_runtime::Error> {
        let mut messages = Vec::with_capacity(event.records.len());
        for m in event.records {
            // Without a message id a failure could not be reported; SQS always sends one.
            let message_id = m.message_id.ok_or("SQS record has no messageId")?;
            messages.push(QueueMessage {
                message_id,
                group_id: m.attributes.get("MessageGroupId").cloned(),
                body: m.body.unwrap_or_default(),
                receive_count: m
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
            });
        }
        let count = messages.len();
        let report = self.dispatcher.dispatch(messages).await;
        tracing::info!(
            messages = count,
            committed = report.committed,
            duplicates = report.duplicates,
            dead_lettered = report.dead_lettered,
            posted = report.delivery.posts.posted,
            gone = report.delivery.posts.gone,
            post_failures = report.delivery.posts.post_failures,
            post_retries = report.delivery.posts.post_retries,
            token_expired = report.delivery.posts.token_expired,
            failed = report.failed.len(),
            "dispatched batch"
        );
        let mut resp = SqsBatchResponse::default();
        resp.batch_item_failures = report
            .failed
            .into_iter()
            .map(|id| {
                let mut f = BatchItemFailure::default();
                f.item_identifier = id;
                f
            })
            .collect();
        Ok(resp)
    }
}
